//! The emulator's in-memory state and the pure token logic: issue, refresh, revoke, policies.
//!
//! Nothing here does I/O; the HTTP layer holds a [`State`] behind a mutex and calls into it.

use std::collections::{BTreeMap, HashMap, HashSet};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rsa::RsaPublicKey;

use crate::crypto;
use crate::faults::Fault;
use crate::format::OAuthError;
use crate::ids;
use crate::model::{
    AppConfig, EmulatorConfig, RefreshTokenPolicy, Settings, UserConfig, UserStatus,
};

const THIRTY_DAYS_MS: i64 = 30 * 24 * 60 * 60 * 1000;

/// Scopes granted when a request names none.
const DEFAULT_SCOPES: [&str; 4] = ["api", "id", "refresh_token", "web"];

/// Every scope the emulator knows (the discovery document's list, shortened).
pub(crate) const KNOWN_SCOPES: [&str; 16] = [
    "api",
    "web",
    "full",
    "id",
    "openid",
    "profile",
    "email",
    "address",
    "phone",
    "refresh_token",
    "offline_access",
    "chatter_api",
    "visualforce",
    "lightning",
    "content",
    "custom_permissions",
];

/// An org at runtime.
#[derive(Debug, Clone)]
pub(crate) struct Org {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) instance_url: Option<String>,
    pub(crate) inactive: bool,
}

/// A user at runtime.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) id: String,
    pub(crate) org_id: String,
    pub(crate) config: UserConfig,
}

impl User {
    pub(crate) fn is_active(&self) -> bool {
        self.config.status == UserStatus::Active
    }
}

/// A connected app at runtime.
#[derive(Debug, Clone)]
pub(crate) struct App {
    pub(crate) org_id: String,
    pub(crate) config: AppConfig,
    pub(crate) blocked: bool,
    pub(crate) key: Option<RsaPublicKey>,
}

/// An issued access token.
#[derive(Debug, Clone)]
pub(crate) struct AccessToken {
    pub(crate) client_id: String,
    pub(crate) user_id: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) issued_ms: i64,
    pub(crate) expires_ms: i64,
    pub(crate) family: Option<u64>,
    pub(crate) revoked: bool,
}

/// Where a refresh token stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefreshState {
    Active,
    /// Replaced by rotation; presenting it again revokes the family.
    RotatedOut,
    Revoked,
}

/// An issued refresh token.
#[derive(Debug, Clone)]
pub(crate) struct RefreshToken {
    pub(crate) family: u64,
    pub(crate) state: RefreshState,
}

/// One approval: the chain of refresh tokens descending from one authorization.
#[derive(Debug, Clone)]
pub(crate) struct Family {
    pub(crate) client_id: String,
    pub(crate) user_id: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) created_ms: i64,
    pub(crate) last_used_ms: i64,
    pub(crate) revoked: bool,
}

/// An authorization code waiting to be exchanged.
#[derive(Debug, Clone)]
pub(crate) struct AuthCode {
    pub(crate) client_id: String,
    pub(crate) user_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) scopes: Vec<String>,
    /// The S256 challenge (a `plain` challenge is stored after hashing).
    pub(crate) challenge: Option<String>,
    pub(crate) nonce: Option<String>,
    pub(crate) expires_ms: i64,
    pub(crate) used: bool,
}

/// Where a device authorization stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeviceStatus {
    Pending,
    Approved(String),
    Denied,
    Consumed,
}

/// A device authorization.
#[derive(Debug, Clone)]
pub(crate) struct DeviceGrant {
    pub(crate) device_code: String,
    pub(crate) user_code: String,
    pub(crate) client_id: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) expires_ms: i64,
    pub(crate) last_poll_ms: Option<i64>,
    pub(crate) status: DeviceStatus,
}

/// Request and token counters, for tests that assert "exactly one refresh".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Requests per endpoint name (`token`, `authorize`, `revoke`, `introspect`, `userinfo`,
    /// `identity`, `rest`, `discovery`, `keys`).
    pub requests: BTreeMap<String, u64>,
    /// Token-endpoint requests per grant (`authorization_code`, `refresh_token`, `password`,
    /// `client_credentials`, `jwt_bearer`, `device`, `device_code`, `token_exchange`,
    /// `saml_bearer`, or the unknown `grant_type` as sent).
    pub grants: BTreeMap<String, u64>,
    /// Access tokens issued.
    pub access_tokens_issued: u64,
    /// Refresh tokens issued (new approvals and rotations).
    pub refresh_tokens_issued: u64,
    /// Refresh tokens retired by rotation.
    pub refresh_tokens_rotated: u64,
    /// Refresh requests rejected (unknown, expired, revoked, reused, or locked).
    pub refresh_tokens_rejected: u64,
    /// Rotated-out refresh tokens presented again (each revoked its whole family). Also counted
    /// in `refresh_tokens_rejected`.
    pub refresh_tokens_reused: u64,
    /// Requests per endpoint name whose client was gone (timed out, disconnected) by the time
    /// the answer was ready. Each was still processed to its end, as Salesforce does; the answer
    /// went nowhere.
    pub answers_abandoned: BTreeMap<String, u64>,
    /// Rotations whose answer no client received (the client was gone when it was ready): the
    /// old refresh token is retired and the new one was never delivered. Also counted in
    /// `refresh_tokens_rotated`.
    pub refresh_tokens_rotated_unanswered: u64,
}

/// Adds one to a counter. Counters saturate rather than wrap (or panic): a test reading one
/// never sees it drop back to zero.
pub(crate) fn bump(counter: &mut u64) {
    *counter = counter.saturating_add(1);
}

impl Counters {
    /// Requests seen by `endpoint`.
    pub fn requests(&self, endpoint: &str) -> u64 {
        self.requests.get(endpoint).copied().unwrap_or(0)
    }

    /// Token requests seen for `grant`.
    pub fn grant(&self, grant: &str) -> u64 {
        self.grants.get(grant).copied().unwrap_or(0)
    }

    /// Answers of `endpoint` whose client was gone when they were ready.
    pub fn abandoned(&self, endpoint: &str) -> u64 {
        self.answers_abandoned.get(endpoint).copied().unwrap_or(0)
    }
}

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

/// Tokens minted for one successful grant.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    pub(crate) access_token: String,
    pub(crate) refresh_token: Option<String>,
    pub(crate) issued_ms: i64,
    pub(crate) scopes: Vec<String>,
    pub(crate) client_id: String,
    pub(crate) user_id: String,
}

/// The whole mutable state. Its `Debug` shows counts only: the maps are keyed by live tokens.
pub(crate) struct State {
    pub(crate) settings: Settings,
    pub(crate) orgs: Vec<Org>,
    pub(crate) users: Vec<User>,
    pub(crate) apps: Vec<App>,
    pub(crate) access: HashMap<String, AccessToken>,
    pub(crate) refresh: HashMap<String, RefreshToken>,
    pub(crate) families: BTreeMap<u64, Family>,
    next_family: u64,
    pub(crate) codes: HashMap<String, AuthCode>,
    pub(crate) devices: Vec<DeviceGrant>,
    /// Login tickets of the HTML flow: ticket → (user id, expiry).
    pub(crate) tickets: HashMap<String, (String, i64)>,
    /// Refresh tokens with a request in flight (the concurrency lock).
    pub(crate) in_flight: HashSet<String>,
    pub(crate) counters: Counters,
    pub(crate) faults: Vec<Fault>,
    pub(crate) rng: StdRng,
    /// The emulator's own URL, known once bound.
    pub(crate) base_url: String,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("orgs", &self.orgs.len())
            .field("users", &self.users.len())
            .field("apps", &self.apps.len())
            .field("access_tokens", &self.access.len())
            .field("refresh_tokens", &self.refresh.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl State {
    /// Builds the state from a configuration.
    pub(crate) fn new(config: &EmulatorConfig, base_url: String) -> crate::Result<Self> {
        let seed = config.seed.unwrap_or_else(rand::random);
        let mut state = Self {
            settings: config.settings.clone(),
            orgs: Vec::new(),
            users: Vec::new(),
            apps: Vec::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            families: BTreeMap::new(),
            next_family: 1,
            codes: HashMap::new(),
            devices: Vec::new(),
            tickets: HashMap::new(),
            in_flight: HashSet::new(),
            counters: Counters::default(),
            faults: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
            base_url,
        };
        let orgs = if config.orgs.is_empty() {
            EmulatorConfig::seeded().orgs
        } else {
            config.orgs.clone()
        };
        for org in orgs {
            let org_id = state.add_org(org.id.clone(), &org.name, org.instance_url.clone())?;
            if org.inactive {
                state.set_org_inactive(&org_id, true)?;
            }
            for user in org.users {
                state.add_user(&org_id, user)?;
            }
            for app in org.apps {
                state.add_app(&org_id, app)?;
            }
        }
        Ok(state)
    }

    /// Adds an org and returns its id.
    pub(crate) fn add_org(
        &mut self,
        id: Option<String>,
        name: &str,
        instance_url: Option<String>,
    ) -> crate::Result<String> {
        let id = match id {
            Some(id) if ids::is_valid_18(&id) && id.starts_with(ids::ORG_PREFIX) => id,
            Some(id) => {
                return Err(crate::Error::InvalidConfig(format!(
                    "org id {id} is not an 18-character 00D id"
                )));
            }
            None => ids::new_id(ids::ORG_PREFIX, &mut self.rng),
        };
        if self.orgs.iter().any(|o| o.id == id) {
            return Err(crate::Error::InvalidConfig(format!(
                "duplicate org id {id}"
            )));
        }
        self.orgs.push(Org {
            id: id.clone(),
            name: name.to_owned(),
            instance_url,
            inactive: false,
        });
        Ok(id)
    }

    pub(crate) fn set_org_inactive(&mut self, org_id: &str, inactive: bool) -> crate::Result<()> {
        self.org_mut(org_id)?.inactive = inactive;
        Ok(())
    }

    /// Adds a user and returns its id.
    pub(crate) fn add_user(&mut self, org_id: &str, mut user: UserConfig) -> crate::Result<String> {
        if !self.orgs.iter().any(|o| o.id == org_id) {
            return Err(crate::Error::not_found("org", org_id));
        }
        if user.username.is_empty() {
            return Err(crate::Error::InvalidConfig(
                "a user needs a username".to_owned(),
            ));
        }
        if self.user_by_name(&user.username).is_some() {
            return Err(crate::Error::InvalidConfig(format!(
                "duplicate username {}",
                user.username
            )));
        }
        let id = match user.id.take() {
            Some(id) if ids::is_valid_18(&id) && id.starts_with(ids::USER_PREFIX) => id,
            Some(id) => {
                return Err(crate::Error::InvalidConfig(format!(
                    "user id {id} is not an 18-character 005 id"
                )));
            }
            None => ids::new_id(ids::USER_PREFIX, &mut self.rng),
        };
        user.id = Some(id.clone());
        self.users.push(User {
            id: id.clone(),
            org_id: org_id.to_owned(),
            config: user,
        });
        Ok(id)
    }

    /// Adds a connected app.
    pub(crate) fn add_app(&mut self, org_id: &str, config: AppConfig) -> crate::Result<()> {
        if !self.orgs.iter().any(|o| o.id == org_id) {
            return Err(crate::Error::not_found("org", org_id));
        }
        if config.client_id.is_empty() {
            return Err(crate::Error::InvalidConfig(
                "a connected app needs a client_id".to_owned(),
            ));
        }
        if self.app(&config.client_id).is_some() {
            return Err(crate::Error::InvalidConfig(format!(
                "duplicate client_id {}",
                config.client_id
            )));
        }
        let key = config
            .certificate
            .as_deref()
            .map(crypto::public_key_from_pem)
            .transpose()
            .map_err(|e| crate::Error::InvalidConfig(format!("app {}: {e}", config.name)))?;
        self.apps.push(App {
            org_id: org_id.to_owned(),
            config,
            blocked: false,
            key,
        });
        Ok(())
    }

    pub(crate) fn app(&self, client_id: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.config.client_id == client_id)
    }

    pub(crate) fn app_mut(&mut self, client_id: &str) -> crate::Result<&mut App> {
        self.apps
            .iter_mut()
            .find(|a| a.config.client_id == client_id)
            .ok_or_else(|| crate::Error::not_found("connected app", client_id))
    }

    /// Usernames are case-insensitive at Salesforce.
    pub(crate) fn user_by_name(&self, username: &str) -> Option<&User> {
        self.users
            .iter()
            .find(|u| u.config.username.eq_ignore_ascii_case(username))
    }

    pub(crate) fn user_by_name_mut(&mut self, username: &str) -> crate::Result<&mut User> {
        self.users
            .iter_mut()
            .find(|u| u.config.username.eq_ignore_ascii_case(username))
            .ok_or_else(|| crate::Error::not_found("user", username))
    }

    pub(crate) fn user(&self, id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    pub(crate) fn org(&self, id: &str) -> Option<&Org> {
        self.orgs.iter().find(|o| o.id == id)
    }

    pub(crate) fn org_mut(&mut self, id: &str) -> crate::Result<&mut Org> {
        self.orgs
            .iter_mut()
            .find(|o| o.id == id)
            .ok_or_else(|| crate::Error::not_found("org", id))
    }

    /// The instance URL of an org.
    pub(crate) fn instance_url(&self, org_id: &str) -> String {
        self.org(org_id)
            .and_then(|o| o.instance_url.clone())
            .unwrap_or_else(|| self.base_url.clone())
    }

    /// The identity URL of a user, on the login host (the emulator's base URL).
    pub(crate) fn identity_url(&self, user: &User) -> String {
        format!("{}/id/{}/{}", self.base_url, user.org_id, user.id)
    }

    /// Grants `requested` (space separated) or the default scopes, checked against what the
    /// emulator knows.
    pub(crate) fn grant_scopes(requested: Option<&str>) -> Result<Vec<String>, OAuthError> {
        let requested: Vec<String> = requested
            .unwrap_or("")
            .split([' ', '+'])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if requested.is_empty() {
            return Ok(DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect());
        }
        for s in &requested {
            let known =
                KNOWN_SCOPES.contains(&s.as_str()) || s.starts_with("cdp_") || s.ends_with("_api");
            if !known {
                return Err(OAuthError::invalid_scope());
            }
        }
        Ok(requested)
    }

    /// Checks that the user may receive tokens at all.
    pub(crate) fn check_user(&self, user_id: &str) -> Result<(), OAuthError> {
        let user = self
            .user(user_id)
            .ok_or_else(|| OAuthError::invalid_grant("authentication failure"))?;
        if self.org(&user.org_id).is_some_and(|o| o.inactive) {
            return Err(OAuthError::inactive_org());
        }
        if !user.is_active() {
            return Err(OAuthError::inactive_user());
        }
        Ok(())
    }

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
        let (org_id, timeout_s) = match (self.user(user_id), self.app(client_id)) {
            (Some(u), Some(a)) => (u.org_id.clone(), a.config.policy.session_timeout_secs),
            _ => (String::new(), 7200),
        };
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
        let policy = app.config.policy.clone();
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
        if self.app(&at.client_id).is_none_or(|a| a.blocked) {
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
            && !Self::family_expired(&app.config.policy, family, now)
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
        if Self::family_expired(&app.config.policy, family, now) {
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
    use crate::model::{AppPolicy, SEED_CLIENT_ID, SEED_USER_ID};

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

    #[test]
    fn scopes() {
        assert_eq!(
            State::grant_scopes(None).unwrap(),
            vec!["api", "id", "refresh_token", "web"]
        );
        assert_eq!(
            State::grant_scopes(Some("api openid")).unwrap(),
            vec!["api", "openid"]
        );
        assert_eq!(
            State::grant_scopes(Some("api bogus")).unwrap_err(),
            OAuthError::invalid_scope()
        );
    }
}
