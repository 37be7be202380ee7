//! What the manager believes about an org's session lifetime, and from which evidence.
//!
//! Salesforce sends no `expires_in`, so the lifetime is learned. Two kinds of evidence differ in
//! weight:
//!
//! - **About the timeout itself** (strong): an introspection's or a JWT access token's `exp`.
//!   One such value is believed at once.
//! - **A token that died** (weak): a 401 at some age. A token killed by a revocation, an admin
//!   action or a password change dies at any age and says nothing about the session timeout, so
//!   one death teaches nothing. A lifetime is believed only when at least [`QUORUM`] deaths at
//!   *different moments* agree on the age: an org-wide revocation kills many tokens at one
//!   moment at many ages, which never agrees; a session timeout kills tokens at one age at many
//!   moments.
//!
//! A lifetime learned from deaths is forgotten after [`Lifetimes::new`]'s `relearn_after`, so
//! that a wrong one (or a timeout an admin has since raised) recovers: expiry is then unknown
//! again and handled on the next 401, which is evidence again.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use sfauth_core::OrgId;

use crate::clock::duration_ms;
use crate::state::lock;

type Map<K, V> = papaya::HashMap<K, V, foldhash::fast::RandomState>;

/// Deaths that must agree before a lifetime is believed.
pub(crate) const QUORUM: usize = 3;
/// Deaths remembered per org.
const WINDOW: usize = 8;
/// Two deaths closer together than this count as one event (one revocation, one restart).
const SAME_MOMENT_MS: u64 = 5_000;

/// Per-org lifetime knowledge.
pub(crate) struct Lifetimes {
    orgs: Map<OrgId, Mutex<Org>>,
    min_ms: u64,
    max_ms: u64,
    relearn_after_ms: u64,
}

#[derive(Default)]
struct Org {
    /// From `exp` claims: believed at once, never forgotten (only replaced).
    strong: Option<u64>,
    /// Agreed by deaths, and when that was concluded.
    agreed: Option<(u64, u64)>,
    /// Recent deaths: (age at death, moment of death), both in ms.
    deaths: VecDeque<(u64, u64)>,
}

impl Lifetimes {
    /// Lifetimes are kept within `[min, max]`; one agreed from deaths is forgotten after
    /// `relearn_after`.
    pub(crate) fn new(min: Duration, max: Duration, relearn_after: Duration) -> Self {
        let min_ms = duration_ms(min);
        Self {
            orgs: Map::default(),
            min_ms,
            max_ms: duration_ms(max).max(min_ms),
            relearn_after_ms: duration_ms(relearn_after),
        }
    }

    /// The lifetime believed for `org` at `now_ms`, if any.
    pub(crate) fn get(&self, org: &OrgId, now_ms: u64) -> Option<u64> {
        let orgs = self.orgs.pin();
        let org = lock(orgs.get(org)?);
        org.strong.or_else(|| {
            org.agreed
                .filter(|(_, at)| now_ms.saturating_sub(*at) < self.relearn_after_ms)
                .map(|(lifetime, _)| lifetime)
        })
    }

    /// The lifetime read from an `exp` claim for `org`, if any.
    pub(crate) fn strong_of(&self, org: &OrgId) -> Option<u64> {
        let orgs = self.orgs.pin();
        lock(orgs.get(org)?).strong
    }

    /// A lifetime read from an `exp` claim.
    pub(crate) fn strong(&self, org: &OrgId, lifetime_ms: u64) {
        if lifetime_ms == 0 {
            return;
        }
        let lifetime = lifetime_ms.clamp(self.min_ms, self.max_ms);
        self.with(org, |org| org.strong = Some(lifetime));
    }

    /// A token of `org` was refused at `age_ms`, at `now_ms`. Returns the lifetime now agreed,
    /// if this death completed a quorum.
    pub(crate) fn death(&self, org: &OrgId, age_ms: u64, now_ms: u64) -> Option<u64> {
        let (min, max) = (self.min_ms, self.max_ms);
        self.with(org, |org| {
            if org
                .deaths
                .iter()
                .any(|(_, at)| at.abs_diff(now_ms) < SAME_MOMENT_MS)
            {
                // Part of an event already counted: a revocation or a restart of many tokens.
                return None;
            }
            if org.deaths.len() == WINDOW {
                org.deaths.pop_front();
            }
            org.deaths.push_back((age_ms, now_ms));
            let agreed = agreement(org.deaths.iter().map(|(age, _)| *age))?;
            let lifetime = agreed.clamp(min, max);
            org.agreed = Some((lifetime, now_ms));
            Some(lifetime)
        })
    }

    fn with<T>(&self, org: &OrgId, f: impl FnOnce(&mut Org) -> T) -> T {
        let orgs = self.orgs.pin();
        let entry = orgs.get_or_insert_with(org.clone(), || Mutex::new(Org::default()));
        f(&mut lock(entry))
    }
}

/// The shortest age among the largest group of at least [`QUORUM`] ages that agree (each within
/// 10 % or 30 s of the group's shortest), if there is one. The shortest, because a token
/// refreshed a little early costs a request, and one served a little late costs a failed call.
fn agreement(ages: impl Iterator<Item = u64>) -> Option<u64> {
    let mut ages: Vec<u64> = ages.collect();
    ages.sort_unstable();
    let mut best: Option<(usize, u64)> = None;
    for (i, &low) in ages.iter().enumerate() {
        let tolerance = (low / 10).max(30_000);
        let high = low.saturating_add(tolerance);
        let count = ages[i..].iter().take_while(|&&age| age <= high).count();
        if count >= QUORUM && best.is_none_or(|(n, _)| count > n) {
            best = Some((count, low));
        }
    }
    best.map(|(_, low)| low)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn lifetimes() -> Lifetimes {
        Lifetimes::new(
            Duration::from_millis(MIN),
            Duration::from_secs(24 * 3600),
            Duration::from_secs(3600),
        )
    }

    fn org() -> OrgId {
        "00D5e000000AbcdEAC".parse().unwrap()
    }

    #[test]
    fn one_death_teaches_nothing() {
        let l = lifetimes();
        assert_eq!(l.death(&org(), 300_000, 1_000_000), None);
        assert_eq!(l.get(&org(), 1_000_000), None);
    }

    #[test]
    fn an_org_wide_revocation_at_one_moment_teaches_nothing() {
        let l = lifetimes();
        // Forty tokens of different ages die within a second of each other.
        for i in 0..40 {
            assert_eq!(
                l.death(&org(), 300_000 + i * 7_000, 10_000_000 + i * 20),
                None
            );
        }
        assert_eq!(l.get(&org(), 10_001_000), None);
    }

    #[test]
    fn deaths_at_one_age_at_different_moments_agree() {
        let l = lifetimes();
        assert_eq!(l.death(&org(), 7_200_000, 10_000_000), None);
        assert_eq!(l.death(&org(), 7_230_000, 20_000_000), None);
        assert_eq!(l.death(&org(), 7_210_000, 30_000_000), Some(7_200_000));
        assert_eq!(l.get(&org(), 30_000_000), Some(7_200_000));
    }

    #[test]
    fn scattered_revocations_never_agree() {
        let l = lifetimes();
        for (i, age) in [300_000u64, 4_000_000, 900_000, 6_500_000, 2_000_000]
            .into_iter()
            .enumerate()
        {
            assert_eq!(l.death(&org(), age, 1_000_000 * (i as u64 + 1) * 60), None);
        }
    }

    #[test]
    fn an_agreed_lifetime_is_forgotten_and_can_be_relearned() {
        let l = lifetimes();
        for i in 1..=3 {
            l.death(&org(), 300_000, i * 600_000);
        }
        assert_eq!(l.get(&org(), 1_800_000), Some(300_000));
        let later = 1_800_000 + 3_600_000;
        assert_eq!(l.get(&org(), later), None, "forgotten after relearn_after");
    }

    #[test]
    fn strong_evidence_wins_and_is_clamped() {
        let l = lifetimes();
        for i in 1..=3 {
            l.death(&org(), 300_000, i * 600_000);
        }
        l.strong(&org(), 7_200_000);
        assert_eq!(l.get(&org(), 1_800_000), Some(7_200_000));
        l.strong(&org(), u64::MAX);
        assert_eq!(l.get(&org(), 0), Some(24 * 3600 * 1000));
        l.strong(&org(), 1);
        assert_eq!(l.get(&org(), 0), Some(MIN));
    }
}
