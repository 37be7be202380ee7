//! Tokens: minting, approval families, refresh with rotation and reuse detection, refresh-token
//! policies, revocation, and the liveness of access tokens.

use super::{AccessToken, Family, Issued, RefreshState, RefreshToken, State, User, bump};
use crate::format::OAuthError;
use crate::ids;
use crate::model::RefreshTokenPolicy;

const THIRTY_DAYS_MS: i64 = 30 * 24 * 60 * 60 * 1000;

/// Where a refresh token stands at the emulator, as [`Emulator::refresh_token_status`] reads it
/// without spending it.
///
/// [`Emulator::refresh_token_status`]: crate::Emulator::refresh_token_status
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefreshTokenStatus {
    /// A refresh with it would be accepted now.
    Active,
    /// Retired by rotation: presenting it is refused and revokes its whole family.
    RotatedOut,
    /// Revoked (by the revoke endpoint, reuse detection, an admin action, the approval cap, a
    /// blocked app or an expiry already noticed): refused.
    Revoked,
    /// Its app's refresh-token policy expired it at the current clock: refused (and its family
    /// revoked) when presented.
    Expired,
    /// Its user or org is frozen or inactive: refused with `inactive_user` / `inactive_org`.
    Inactive,
    /// Never issued by this emulator.
    Unknown,
}

impl RefreshTokenStatus {
    /// Whether a refresh with the token would be accepted now.
    pub fn is_accepted(self) -> bool {
        self == Self::Active
    }
}

impl State {
    fn new_access_string(&mut self, org_id: &str) -> String {
        format!(
            "{}!AQ{}",
            ids::to_15(org_id),
            ids::random_string(94, &mut self.rng)
        )
    }

    fn new_refresh_string(&mut self) -> String {
        format!("5Aep861{}", ids::random_string(80, &mut self.rng))
    }

    /// A random string for codes and tickets.
    pub(crate) fn random(&mut self, n: usize) -> String {
        ids::random_string(n, &mut self.rng)
    }

    /// Mints an access token (and, with `with_refresh`, a refresh token opening a new approval).
    pub(crate) fn issue(
        &mut self,
        client_id: &str,
        user_id: &str,
        scopes: Vec<String>,
        with_refresh: bool,
        now: i64,
    ) -> Issued {
        let family = if with_refresh {
            Some(self.new_family(client_id, user_id, &scopes, now))
        } else {
            None
        };
        let access_token = self.mint_access(client_id, user_id, &scopes, family, now);
        let refresh_token = family.map(|f| self.mint_refresh(f));
        Issued {
            access_token,
            refresh_token,
            issued_ms: now,
            scopes,
            client_id: client_id.to_owned(),
            user_id: user_id.to_owned(),
        }
    }

    fn new_family(&mut self, client_id: &str, user_id: &str, scopes: &[String], now: i64) -> u64 {
        let id = self.next_family;
        // 2^64 approvals cannot happen; saturating only keeps the arithmetic panic-free.
        self.next_family = self.next_family.saturating_add(1);
        self.families.insert(
            id,
            Family {
                client_id: client_id.to_owned(),
                user_id: user_id.to_owned(),
                scopes: scopes.to_vec(),
                created_ms: now,
                last_used_ms: now,
                revoked: false,
            },
        );
        // The approval cap: a new approval beyond the limit revokes the oldest one.
        let max = self
            .app(client_id)
            .map_or(5, |a| a.config.policy.max_approvals_per_user)
            .max(1);
        let live: Vec<u64> = self
            .families
            .iter()
            .filter(|(_, f)| !f.revoked && f.client_id == client_id && f.user_id == user_id)
            .map(|(id, _)| *id)
            .collect();
        let excess = live.len().saturating_sub(max);
        for old in live.iter().take(excess) {
            self.revoke_family(*old);
        }
        id
    }

    fn mint_access(
        &mut self,
        client_id: &str,
        user_id: &str,
        scopes: &[String],
        family: Option<u64>,
        now: i64,
    ) -> String {
        let org_id = self
            .user(user_id)
            .map(|u| u.org_id.clone())
            .unwrap_or_default();
        // A SOAP `login()` session has no app: the org's default session timeout, 2 hours.
        let timeout_s = self
            .app(client_id)
            .map_or(7200, |a| a.config.policy.session_timeout_secs);
        let token = self.new_access_string(&org_id);
        let timeout_ms = i64::try_from(timeout_s.saturating_mul(1000)).unwrap_or(i64::MAX);
        self.access.insert(
            token.clone(),
            AccessToken {
                client_id: client_id.to_owned(),
                user_id: user_id.to_owned(),
                scopes: scopes.to_vec(),
                issued_ms: now,
                expires_ms: now.saturating_add(timeout_ms),
                family,
                revoked: false,
            },
        );
        bump(&mut self.counters.access_tokens_issued);
        token
    }

    fn mint_refresh(&mut self, family: u64) -> String {
        let token = self.new_refresh_string();
        self.refresh.insert(
            token.clone(),
            RefreshToken {
                family,
                state: RefreshState::Active,
            },
        );
        bump(&mut self.counters.refresh_tokens_issued);
        token
    }

    /// Registers an externally minted access token (a JWT access token) under the same rules.
    pub(crate) fn replace_access_token(&mut self, old: &str, new: String) {
        if let Some(record) = self.access.remove(old) {
            self.access.insert(new, record);
        }
    }

    /// Revokes an approval: every refresh token of the family and every access token from it.
    pub(crate) fn revoke_family(&mut self, family: u64) {
        if let Some(f) = self.families.get_mut(&family) {
            f.revoked = true;
        }
        for rt in self.refresh.values_mut().filter(|r| r.family == family) {
            rt.state = RefreshState::Revoked;
        }
        for at in self
            .access
            .values_mut()
            .filter(|a| a.family == Some(family))
        {
            at.revoked = true;
        }
    }

    /// Revokes every token matching `pred(client_id, user_id)`.
    pub(crate) fn revoke_where(&mut self, pred: impl Fn(&str, &str) -> bool) -> usize {
        let families: Vec<u64> = self
            .families
            .iter()
            .filter(|(_, f)| !f.revoked && pred(&f.client_id, &f.user_id))
            .map(|(id, _)| *id)
            .collect();
        for f in &families {
            self.revoke_family(*f);
        }
        let mut n = families.len();
        for at in self
            .access
            .values_mut()
            .filter(|a| !a.revoked && pred(&a.client_id, &a.user_id))
        {
            at.revoked = true;
            n = n.saturating_add(1);
        }
        n
    }

    /// Whether a refresh family has expired under its app's policy at `now`.
    pub(crate) fn family_expired(
        policy: &crate::model::AppPolicy,
        family: &Family,
        now: i64,
    ) -> bool {
        let secs_ms = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let idle = now.saturating_sub(family.last_used_ms);
        let age = now.saturating_sub(family.created_ms);
        let capped = policy.idle_ttl_cap_30_days && idle >= THIRTY_DAYS_MS;
        match policy.refresh_token_policy {
            RefreshTokenPolicy::ExpireImmediately => true,
            RefreshTokenPolicy::ValidUntilRevoked => capped,
            RefreshTokenPolicy::ExpireAfter { secs } => age >= secs_ms(secs) || capped,
            RefreshTokenPolicy::ExpireIfUnused { secs } => idle >= secs_ms(secs) || capped,
        }
    }

    /// `grant_type=refresh_token` after client authentication, without the concurrency lock
    /// (the HTTP layer holds that).
    pub(crate) fn redeem_refresh(
        &mut self,
        token: &str,
        client_id: &str,
        now: i64,
    ) -> Result<Issued, OAuthError> {
        let result = self.redeem_refresh_inner(token, client_id, now);
        if result.is_err() {
            bump(&mut self.counters.refresh_tokens_rejected);
        }
        result
    }

    fn redeem_refresh_inner(
        &mut self,
        token: &str,
        client_id: &str,
        now: i64,
    ) -> Result<Issued, OAuthError> {
        let Some(rt) = self.refresh.get(token).cloned() else {
            return Err(OAuthError::expired_token());
        };
        let Some(family) = self.families.get(&rt.family).cloned() else {
            return Err(OAuthError::expired_token());
        };
        if family.client_id != client_id {
            return Err(OAuthError::expired_token());
        }
        match rt.state {
            RefreshState::Revoked => return Err(OAuthError::expired_token()),
            RefreshState::RotatedOut => {
                // Reuse detection: a retired token coming back means it leaked or a client raced;
                // Salesforce revokes the whole family.
                bump(&mut self.counters.refresh_tokens_reused);
                self.revoke_family(rt.family);
                return Err(OAuthError::expired_token());
            }
            RefreshState::Active => {}
        }
        if family.revoked {
            return Err(OAuthError::expired_token());
        }
        let Some(app) = self.app(client_id) else {
            return Err(OAuthError::invalid_client_id());
        };
        if app.blocked {
            return Err(OAuthError::expired_token());
        }
        let policy = app.config.policy.effective();
        if Self::family_expired(&policy, &family, now) {
            self.revoke_family(rt.family);
            return Err(OAuthError::expired_token());
        }
        self.check_user(&family.user_id)?;
        if let Some(f) = self.families.get_mut(&rt.family) {
            f.last_used_ms = now;
        }
        let access_token = self.mint_access(
            client_id,
            &family.user_id,
            &family.scopes,
            Some(rt.family),
            now,
        );
        let refresh_token = if policy.rotation {
            if let Some(old) = self.refresh.get_mut(token) {
                old.state = RefreshState::RotatedOut;
            }
            bump(&mut self.counters.refresh_tokens_rotated);
            Some(self.mint_refresh(rt.family))
        } else {
            None
        };
        Ok(Issued {
            access_token,
            refresh_token,
            issued_ms: now,
            scopes: family.scopes,
            client_id: client_id.to_owned(),
            user_id: family.user_id,
        })
    }

    /// A live access token: known, not revoked, not expired, its user and org active.
    pub(crate) fn live_access(&self, token: &str, now: i64) -> Option<&AccessToken> {
        let at = self.access.get(token)?;
        if at.revoked || now >= at.expires_ms {
            return None;
        }
        // A SOAP `login()` session belongs to no app.
        if !at.client_id.is_empty() && self.app(&at.client_id).is_none_or(|a| a.blocked) {
            return None;
        }
        let user = self.user(&at.user_id)?;
        if !user.is_active() || self.org(&user.org_id).is_none_or(|o| o.inactive) {
            return None;
        }
        Some(at)
    }

    /// Records a use of a live access token: with a sliding session its expiry moves forward.
    pub(crate) fn touch_access(&mut self, token: &str, now: i64) {
        let Some(at) = self.access.get(token) else {
            return;
        };
        let Some(app) = self.app(&at.client_id) else {
            return;
        };
        if !app.config.policy.sliding_session {
            return;
        }
        let timeout = app.config.policy.session_timeout_secs.saturating_mul(1000);
        let expires = now.saturating_add(i64::try_from(timeout).unwrap_or(i64::MAX));
        if let Some(at) = self.access.get_mut(token) {
            at.expires_ms = at.expires_ms.max(expires);
        }
    }

    /// A live refresh token and its family.
    pub(crate) fn live_refresh(&self, token: &str, now: i64) -> Option<&Family> {
        let rt = self.refresh.get(token)?;
        let family = self.families.get(&rt.family)?;
        let app = self.app(&family.client_id)?;
        let live = rt.state == RefreshState::Active
            && !family.revoked
            && !app.blocked
            && !Self::family_expired(&app.config.policy.effective(), family, now)
            && self.user(&family.user_id).is_some_and(User::is_active);
        live.then_some(family)
    }

    /// Where a refresh token stands, read without spending it. The checks are those of
    /// [`State::redeem_refresh`], in its order.
    pub(crate) fn refresh_status(&self, token: &str, now: i64) -> RefreshTokenStatus {
        let Some(rt) = self.refresh.get(token) else {
            return RefreshTokenStatus::Unknown;
        };
        let Some(family) = self.families.get(&rt.family) else {
            return RefreshTokenStatus::Unknown;
        };
        match rt.state {
            RefreshState::Revoked => return RefreshTokenStatus::Revoked,
            RefreshState::RotatedOut => return RefreshTokenStatus::RotatedOut,
            RefreshState::Active => {}
        }
        let Some(app) = self.app(&family.client_id) else {
            return RefreshTokenStatus::Revoked;
        };
        if family.revoked || app.blocked {
            return RefreshTokenStatus::Revoked;
        }
        if Self::family_expired(&app.config.policy.effective(), family, now) {
            return RefreshTokenStatus::Expired;
        }
        if self.check_user(&family.user_id).is_err() {
            return RefreshTokenStatus::Inactive;
        }
        RefreshTokenStatus::Active
    }

    /// `/services/oauth2/revoke`: an access token alone, or a refresh token with its family.
    pub(crate) fn revoke_token(&mut self, token: &str) -> bool {
        if let Some(at) = self.access.get_mut(token) {
            let was_live = !at.revoked;
            at.revoked = true;
            return was_live;
        }
        if let Some(rt) = self.refresh.get(token) {
            if rt.state == RefreshState::Revoked {
                return false;
            }
            let family = rt.family;
            self.revoke_family(family);
            return true;
        }
        false
    }

    /// Makes every access token expire now.
    pub(crate) fn expire_access_tokens(&mut self, now: i64) {
        for at in self.access.values_mut() {
            at.expires_ms = at.expires_ms.min(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AppPolicy, EmulatorConfig, SEED_CLIENT_ID, SEED_USER_ID, UserStatus};

    fn state() -> State {
        let config = EmulatorConfig {
            seed: Some(1),
            ..EmulatorConfig::seeded()
        };
        State::new(&config, "http://127.0.0.1:1".to_owned()).unwrap()
    }

    fn policy(f: impl FnOnce(&mut AppPolicy)) -> State {
        let mut s = state();
        f(&mut s.app_mut(SEED_CLIENT_ID).unwrap().config.policy);
        s
    }

    fn issue(s: &mut State, now: i64) -> Issued {
        s.issue(
            SEED_CLIENT_ID,
            SEED_USER_ID,
            vec!["api".into(), "refresh_token".into()],
            true,
            now,
        )
    }

    #[test]
    fn token_shapes() {
        let mut s = state();
        let issued = issue(&mut s, 0);
        assert!(issued.access_token.starts_with("00D5e000000EMUl!AQ"));
        assert!(issued.refresh_token.unwrap().starts_with("5Aep861"));
    }

    #[test]
    fn refresh_policies() {
        let hour = 3_600_000;
        // (policy, idle cap, ms after issue of the refresh, accepted?)
        let cases = [
            (
                RefreshTokenPolicy::ValidUntilRevoked,
                false,
                400 * 24 * hour,
                true,
            ),
            (
                RefreshTokenPolicy::ValidUntilRevoked,
                true,
                31 * 24 * hour,
                false,
            ),
            (RefreshTokenPolicy::ExpireImmediately, false, 0, false),
            (
                RefreshTokenPolicy::ExpireAfter { secs: 3600 },
                false,
                hour - 1,
                true,
            ),
            (
                RefreshTokenPolicy::ExpireAfter { secs: 3600 },
                false,
                hour,
                false,
            ),
            (
                RefreshTokenPolicy::ExpireIfUnused { secs: 3600 },
                false,
                hour - 1,
                true,
            ),
            (
                RefreshTokenPolicy::ExpireIfUnused { secs: 3600 },
                false,
                hour,
                false,
            ),
            (
                RefreshTokenPolicy::ExpireIfUnused {
                    secs: 90 * 24 * 3600,
                },
                true,
                31 * 24 * hour,
                false,
            ),
        ];
        for (rtp, cap, after, ok) in cases {
            let mut s = policy(|p| {
                p.refresh_token_policy = rtp;
                p.idle_ttl_cap_30_days = cap;
            });
            let rt = issue(&mut s, 0).refresh_token.unwrap();
            let result = s.redeem_refresh(&rt, SEED_CLIENT_ID, after);
            assert_eq!(result.is_ok(), ok, "{rtp:?} cap={cap} after={after}");
            if !ok {
                assert_eq!(result.unwrap_err(), OAuthError::expired_token());
            }
        }
    }

    #[test]
    fn idle_policy_slides_with_use() {
        let mut s =
            policy(|p| p.refresh_token_policy = RefreshTokenPolicy::ExpireIfUnused { secs: 10 });
        let rt = issue(&mut s, 0).refresh_token.unwrap();
        for t in [9_000, 18_000, 27_000] {
            assert!(s.redeem_refresh(&rt, SEED_CLIENT_ID, t).is_ok(), "{t}");
        }
        assert!(s.redeem_refresh(&rt, SEED_CLIENT_ID, 37_000).is_err());
    }

    #[test]
    fn rotation_and_reuse_detection() {
        let mut s = policy(|p| p.rotation = true);
        let first = issue(&mut s, 0);
        let rt1 = first.refresh_token.unwrap();
        let second = s.redeem_refresh(&rt1, SEED_CLIENT_ID, 1).unwrap();
        let rt2 = second.refresh_token.clone().unwrap();
        assert_ne!(rt1, rt2);
        assert!(s.live_access(&second.access_token, 2).is_some());
        // The old token comes back: everything in the family dies.
        assert_eq!(
            s.redeem_refresh(&rt1, SEED_CLIENT_ID, 2).unwrap_err(),
            OAuthError::expired_token()
        );
        assert!(s.redeem_refresh(&rt2, SEED_CLIENT_ID, 3).is_err());
        assert!(s.live_access(&second.access_token, 3).is_none());
        assert!(s.live_access(&first.access_token, 3).is_none());
        assert_eq!(s.counters.refresh_tokens_rotated, 1);
        assert_eq!(s.counters.refresh_tokens_rejected, 2);
        assert_eq!(s.counters.refresh_tokens_reused, 1);
    }

    #[test]
    fn status_reads_without_spending() {
        let mut s = policy(|p| {
            p.rotation = true;
            p.refresh_token_policy = RefreshTokenPolicy::ExpireIfUnused { secs: 10 };
        });
        assert_eq!(
            s.refresh_status("5Aep861nope", 0),
            RefreshTokenStatus::Unknown
        );
        let rt1 = issue(&mut s, 0).refresh_token.unwrap();
        for _ in 0..3 {
            assert_eq!(s.refresh_status(&rt1, 1), RefreshTokenStatus::Active);
        }
        assert_eq!(
            (
                s.counters.refresh_tokens_rotated,
                s.counters.refresh_tokens_rejected
            ),
            (0, 0)
        );
        assert_eq!(s.refresh_status(&rt1, 10_000), RefreshTokenStatus::Expired);
        let rt2 = s
            .redeem_refresh(&rt1, SEED_CLIENT_ID, 1)
            .unwrap()
            .refresh_token
            .unwrap();
        assert_eq!(s.refresh_status(&rt1, 2), RefreshTokenStatus::RotatedOut);
        assert!(s.refresh_status(&rt2, 2).is_accepted());
        s.user_by_name_mut(crate::model::SEED_USERNAME)
            .unwrap()
            .config
            .status = UserStatus::Frozen;
        assert_eq!(s.refresh_status(&rt2, 2), RefreshTokenStatus::Inactive);
        assert!(s.revoke_token(&rt2));
        assert_eq!(s.refresh_status(&rt2, 2), RefreshTokenStatus::Revoked);
        assert_eq!(s.refresh_status(&rt1, 2), RefreshTokenStatus::Revoked);
    }

    #[test]
    fn no_rotation_keeps_the_token_and_returns_none() {
        let mut s = state();
        let rt = issue(&mut s, 0).refresh_token.unwrap();
        assert!(
            s.redeem_refresh(&rt, SEED_CLIENT_ID, 1)
                .unwrap()
                .refresh_token
                .is_none()
        );
        assert!(s.redeem_refresh(&rt, SEED_CLIENT_ID, 2).is_ok());
    }

    #[test]
    fn sixth_approval_evicts_the_oldest() {
        let mut s = state();
        let tokens: Vec<String> = (0..6)
            .map(|i| issue(&mut s, i).refresh_token.unwrap())
            .collect();
        assert!(s.redeem_refresh(&tokens[0], SEED_CLIENT_ID, 10).is_err());
        for t in &tokens[1..] {
            assert!(s.redeem_refresh(t, SEED_CLIENT_ID, 10).is_ok());
        }
    }

    #[test]
    fn revoking_a_refresh_token_cascades() {
        let mut s = policy(|p| p.rotation = true);
        let first = issue(&mut s, 0);
        let rt = first.refresh_token.unwrap();
        let second = s.redeem_refresh(&rt, SEED_CLIENT_ID, 1).unwrap();
        assert!(s.revoke_token(&second.refresh_token.clone().unwrap()));
        assert!(s.live_access(&first.access_token, 2).is_none());
        assert!(s.live_access(&second.access_token, 2).is_none());
        assert!(!s.revoke_token("nonsense"));
    }

    #[test]
    fn frozen_user_and_expiry() {
        let mut s = state();
        let issued = issue(&mut s, 0);
        assert!(s.live_access(&issued.access_token, 7_199_999).is_some());
        assert!(s.live_access(&issued.access_token, 7_200_000).is_none());
        s.user_by_name_mut(crate::model::SEED_USERNAME)
            .unwrap()
            .config
            .status = UserStatus::Frozen;
        let err = s
            .redeem_refresh(&issued.refresh_token.unwrap(), SEED_CLIENT_ID, 1)
            .unwrap_err();
        assert_eq!(err, OAuthError::inactive_user());
    }
}
