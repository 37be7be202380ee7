//! A tenant's state in memory, the leaf every other module of the manager stands on: the
//! cached token every caller reads ([`Cached`] behind an `ArcSwap`), and [`TenantState`], which
//! adds the single-flight lock, the renewal, tokens waiting to be saved and the failure pause.
//! It knows nothing of the manager, the store's protocol or Salesforce.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use sfauth_core::backoff::Backoff;
use sfauth_core::error::Cause;
use sfauth_core::{AccessToken, TokenKey};
use sfauth_storage::{RecordHeader, RecordStatus, TokenRecord};
use url::Url;

use crate::clock;
use crate::error::{Error, ErrorKind};
use crate::renewal::Renewal;

/// Deadline value meaning "not known": the hot path then skips the clock altogether.
pub(crate) const NEVER: u64 = u64::MAX;

/// One immutable view of a tenant's tokens, swapped whole on every change.
///
/// It keeps only what callers and the refresher read in memory: with thousands of tenants, the
/// whole `TokenSet` (identity URL, signature, scopes, ID token) would more than double the
/// memory per tenant, and the store has it when it is wanted
/// ([`TokenManager::tokens`](crate::TokenManager::tokens)).
pub(crate) struct Cached {
    pub(crate) access_token: AccessToken,
    pub(crate) instance_url: Url,
    pub(crate) issued_at: Option<SystemTime>,
    /// The store version these tokens were read or written at.
    pub(crate) version: u64,
    /// Bumped on every swap in this process; a caller that saw generation `g` and finds
    /// another one knows somebody else already dealt with the token it saw.
    pub(crate) generation: u64,
    /// Refresh when the coarse clock reaches this (ms since the epoch), or [`NEVER`].
    pub(crate) refresh_at_ms: u64,
    /// The access token is dead from this moment, or [`NEVER`] if unknown.
    pub(crate) expires_at_ms: u64,
    /// When the tokens were last obtained (refresh, renewal or login), for keep-alive.
    pub(crate) obtained_at_ms: u64,
    pub(crate) state: CachedState,
}

pub(crate) enum CachedState {
    Active,
    /// Boxed: rare, and it would otherwise widen every tenant's entry.
    Reauth(Box<Reauth>),
    /// Known by the record's clear header only: the times are known, the tokens are still
    /// sealed in the store. A warm start lists tenants so, and the background refresher seals
    /// a tenant again when another process stored newer tokens (`Refresher::seal_if_newer`),
    /// so that a worker decrypts only what it serves. Never served: the first call that needs
    /// the tenant opens its record (`Engine::open`).
    Sealed,
    /// The tenant was removed from the manager (or the manager dropped): the token is gone
    /// from memory, and whatever still holds the tenant (a [`Tenant`] handle, a thread's table
    /// of recent tenants) finds nothing to serve.
    Removed,
}

pub(crate) struct Reauth {
    pub(crate) reason: String,
    pub(crate) cause: Option<Cause>,
}

impl Cached {
    /// Whether the token can be handed out without a refresh. With no known deadline this
    /// reads no clock: it is one comparison.
    #[inline]
    pub(crate) fn is_fresh(&self) -> bool {
        matches!(self.state, CachedState::Active)
            && (self.refresh_at_ms == NEVER || clock::now_ms() < self.refresh_at_ms)
    }

    /// Whether the tenant is neither waiting for a login nor removed.
    pub(crate) fn is_active(&self) -> bool {
        matches!(self.state, CachedState::Active)
    }

    /// Whether the token is still accepted by Salesforce as far as we know, even if a refresh is
    /// due: such a token may be served while a refresh is failing.
    pub(crate) fn is_usable(&self) -> bool {
        matches!(self.state, CachedState::Active)
            && (self.expires_at_ms == NEVER || clock::precise_ms() < self.expires_at_ms)
    }

    /// The error to fail with instead of refreshing, for a tenant that needs a new login or was
    /// removed.
    pub(crate) fn unavailable_error(&self, key: &TokenKey) -> Option<Error> {
        match &self.state {
            CachedState::Reauth(reauth) => Some(Error::ReauthorizationRequired {
                key: Box::new(key.clone()),
                reason: reauth.reason.clone(),
                cause: reauth.cause,
            }),
            CachedState::Removed => Some(Error::unknown_tenant(key)),
            // Nothing stands in the way: the record is opened before anything is served (a
            // sealed view holds no token; whatever was served before it came from the store).
            CachedState::Active | CachedState::Sealed => None,
        }
    }

    /// What replaces `self` when its tenant is removed: no token, never fresh.
    pub(crate) fn removed(&self) -> Self {
        Self {
            access_token: AccessToken::new(String::new()),
            instance_url: self.instance_url.clone(),
            issued_at: None,
            version: self.version,
            generation: self.generation.wrapping_add(1),
            refresh_at_ms: NEVER,
            expires_at_ms: NEVER,
            obtained_at_ms: self.obtained_at_ms,
            state: CachedState::Removed,
        }
    }

    /// The view of a tenant whose record is still sealed in the store: its times from the
    /// record's clear header, no token. See [`CachedState::Sealed`].
    pub(crate) fn from_header(
        header: &RecordHeader,
        generation: u64,
        lifetime_hint_ms: Option<u64>,
        margin_ms: u64,
        jitter_ms: u64,
    ) -> Self {
        let times = Times {
            issued_at: header.issued_at,
            last_refreshed_at: header.last_refreshed_at,
            learned_lifetime: header.learned_lifetime,
            tokens_issued_at: header.tokens_issued_at,
            tokens_expires_at: header.tokens_expires_at,
        };
        let (refresh_at_ms, expires_at_ms, obtained_at_ms) =
            times.deadlines(lifetime_hint_ms, margin_ms, jitter_ms);
        Self {
            access_token: AccessToken::new(String::new()),
            instance_url: SEALED_INSTANCE_URL.clone(),
            issued_at: header.tokens_issued_at,
            version: header.version,
            generation,
            refresh_at_ms,
            expires_at_ms,
            obtained_at_ms,
            state: CachedState::Sealed,
        }
    }

    /// Whether the tenant's record is still sealed in the store (see [`CachedState::Sealed`]).
    pub(crate) fn is_sealed(&self) -> bool {
        matches!(self.state, CachedState::Sealed)
    }

    pub(crate) fn from_record(
        record: &TokenRecord,
        generation: u64,
        lifetime_hint_ms: Option<u64>,
        margin_ms: u64,
        jitter_ms: u64,
    ) -> Self {
        let tokens = &record.tokens;
        let times = Times {
            issued_at: record.issued_at,
            last_refreshed_at: record.last_refreshed_at,
            learned_lifetime: record.learned_lifetime,
            tokens_issued_at: tokens.issued_at,
            tokens_expires_at: tokens.expires_at,
        };
        let (refresh_at_ms, expires_at_ms, obtained_at_ms) =
            times.deadlines(lifetime_hint_ms, margin_ms, jitter_ms);
        let state = match &record.status {
            RecordStatus::ReauthRequired { reason, .. } => CachedState::Reauth(Box::new(Reauth {
                reason: reason.clone(),
                cause: None,
            })),
            _ => CachedState::Active,
        };
        Self {
            access_token: tokens.access_token.clone(),
            instance_url: tokens.instance_url.clone(),
            issued_at: tokens.issued_at,
            version: record.version,
            generation,
            refresh_at_ms,
            expires_at_ms,
            obtained_at_ms,
            state,
        }
    }
}

/// The times a tenant's deadlines are computed from, the same whether they come from an opened
/// record or from its clear header, so that both give one schedule.
struct Times {
    issued_at: SystemTime,
    last_refreshed_at: Option<SystemTime>,
    learned_lifetime: Option<Duration>,
    tokens_issued_at: Option<SystemTime>,
    tokens_expires_at: Option<SystemTime>,
}

impl Times {
    /// When to refresh, when the access token dies and when the tokens were obtained, in ms
    /// since the epoch (`NEVER` when unknown).
    fn deadlines(
        &self,
        lifetime_hint_ms: Option<u64>,
        margin_ms: u64,
        jitter_ms: u64,
    ) -> (u64, u64, u64) {
        let lifetime = self
            .learned_lifetime
            .map(clock::duration_ms)
            .or(lifetime_hint_ms);
        let issued_ms = self.tokens_issued_at.map(clock::to_ms);
        let expires_at_ms = match (self.tokens_expires_at, issued_ms, lifetime) {
            (Some(at), _, _) => clock::to_ms(at),
            (None, Some(issued), Some(lifetime)) => issued.saturating_add(lifetime),
            _ => NEVER,
        };
        let obtained_at_ms = self
            .last_refreshed_at
            .map(clock::to_ms)
            .or(issued_ms)
            .unwrap_or_else(|| clock::to_ms(self.issued_at));
        let refresh_at_ms = if expires_at_ms == NEVER {
            NEVER
        } else {
            let lifetime = expires_at_ms.saturating_sub(issued_ms.unwrap_or(obtained_at_ms));
            let (margin_ms, jitter_ms) = scaled_margin(margin_ms, jitter_ms, lifetime);
            let jitter = if jitter_ms == 0 {
                0
            } else {
                rand::random_range(0..=jitter_ms)
            };
            expires_at_ms.saturating_sub(margin_ms.saturating_add(jitter))
        };
        (refresh_at_ms, expires_at_ms, obtained_at_ms)
    }
}

/// The instance URL of a sealed tenant's view, never handed out (a sealed view is never
/// served): one parse for the process, a clone per tenant.
#[allow(clippy::expect_used, reason = "a constant that parses")]
static SEALED_INSTANCE_URL: std::sync::LazyLock<Url> = std::sync::LazyLock::new(|| {
    Url::parse("https://sealed.invalid/").expect("a valid url constant")
});

/// The refresh margin and jitter for a token that lives `lifetime_ms`: the policy's, unless
/// together they reach the whole lifetime, and then a quarter (margin) and an eighth (jitter)
/// of it. The policy's minute and a half is nothing to a two-hour session, but it is longer than
/// a one-minute JWT access token lives: unscaled, such a token would be due at issue and every
/// call would refresh; scaled, it is refreshed at 37 to 45 seconds of age. A margin the
/// application chose that still leaves the token some fresh life is kept as it is. A lifetime
/// of 0 (unknown) leaves the policy's.
pub(crate) fn scaled_margin(margin_ms: u64, jitter_ms: u64, lifetime_ms: u64) -> (u64, u64) {
    if lifetime_ms == 0 || margin_ms.saturating_add(jitter_ms) < lifetime_ms {
        return (margin_ms, jitter_ms);
    }
    (
        margin_ms.min(lifetime_ms / 4),
        jitter_ms.min(lifetime_ms / 8),
    )
}

#[cfg(test)]
mod margin_tests {
    use super::scaled_margin;

    #[test]
    fn margins_scale_down_to_short_sessions_only() {
        // A two-hour session keeps the policy's 60 s + 30 s.
        assert_eq!(scaled_margin(60_000, 30_000, 7_200_000), (60_000, 30_000));
        // A one-minute JWT access token: 15 s + up to 7.5 s, refreshed at 37.5 to 45 s of age.
        assert_eq!(scaled_margin(60_000, 30_000, 60_000), (15_000, 7_500));
        // Unknown lifetime: the policy's.
        assert_eq!(scaled_margin(60_000, 30_000, 0), (60_000, 30_000));
        // A margin chosen to refresh early that still leaves fresh life is the application's.
        assert_eq!(scaled_margin(2_700_000, 0, 3_600_000), (2_700_000, 0));
        // Two minutes: 90 s leaves 30 s of fresh life, kept; 90 s: scaled.
        assert_eq!(scaled_margin(60_000, 30_000, 120_000), (60_000, 30_000));
        assert_eq!(scaled_margin(60_000, 30_000, 90_000), (22_500, 11_250));
    }
}

/// Everything the manager keeps for one tenant.
pub(crate) struct TenantState {
    /// Shared with the tenant map's key, so it is stored once.
    pub(crate) key: Arc<TokenKey>,
    /// In its own `Arc` so that a [`Tenant`] handle can keep an `arc_swap::Cache` of it.
    pub(crate) current: Arc<ArcSwap<Cached>>,
    /// Single-flight within the process; the store lease does it across processes.
    pub(crate) refresh_lock: tokio::sync::Mutex<()>,
    // The fields below are used on the slow path only and are almost always empty: boxed, so
    // that an idle tenant pays a pointer for each rather than the whole value.
    renewal: Mutex<Option<Box<Renewal>>>,
    /// Tokens obtained but not yet saved (the store failed): saved before anything else.
    unsaved: Mutex<Option<Box<TokenRecord>>>,
    /// After failed refreshes: the pause, and what failed.
    failures: Failures,
    /// Set once, when the tenant leaves its manager.
    removed: AtomicBool,
}

impl TenantState {
    pub(crate) fn new(key: Arc<TokenKey>, cached: Cached) -> Self {
        Self {
            key,
            current: Arc::new(ArcSwap::from_pointee(cached)),
            refresh_lock: tokio::sync::Mutex::new(()),
            renewal: Mutex::new(None),
            unsaved: Mutex::new(None),
            failures: Failures::default(),
            removed: AtomicBool::new(false),
        }
    }

    /// Drops every secret the tenant holds (its token, tokens waiting to be saved, the
    /// credentials it renews with), for a tenant no longer in its manager. It then stays
    /// removed: [`TenantState::set_current`] will not bring a token back.
    pub(crate) fn forget(&self) {
        self.removed.store(true, Ordering::SeqCst);
        let removed = self.current.load().removed();
        self.current.store(Arc::new(removed));
        *lock(&self.unsaved) = None;
        *lock(&self.renewal) = None;
        *lock(&self.failures.last) = None;
    }

    /// Forgets earlier refresh failures (and their pause) after a success or a new login.
    pub(crate) fn clear_failures(&self) {
        self.failures.retry_at_ms.store(0, Ordering::Release);
        self.failures.consecutive.store(0, Ordering::Release);
        self.failures.on_hold.store(false, Ordering::Release);
        *lock(&self.failures.last) = None;
    }

    /// Records a failed refresh: the next attempt waits `backoff`'s wait for the number of
    /// failures in a row, which is returned.
    pub(crate) fn note_failure(&self, failure: Failure, backoff: Backoff) -> Duration {
        let failures = self
            .failures
            .consecutive
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        let retry = u32::try_from(failures.saturating_sub(1)).unwrap_or(u32::MAX);
        let pause = backoff.ceiling(retry);
        self.failures.retry_at_ms.store(
            clock::precise_ms().saturating_add(clock::duration_ms(pause)),
            Ordering::Release,
        );
        *lock(&self.failures.last) = Some(Box::new(failure));
        pause
    }

    /// The failure that started the current pause, if any.
    pub(crate) fn last_failure(&self) -> Option<Failure> {
        lock(&self.failures.last).as_deref().cloned()
    }

    /// Marks the refresh token as held back (possibly spent, the access token still working).
    pub(crate) fn hold(&self) {
        self.failures.on_hold.store(true, Ordering::Release);
    }

    /// Whether the refresh token is held back; see [`hold`](Self::hold).
    pub(crate) fn on_hold(&self) -> bool {
        self.failures.on_hold.load(Ordering::Acquire)
    }

    /// Tokens obtained but not yet saved, if any, taken out to be saved.
    pub(crate) fn take_unsaved(&self) -> Option<TokenRecord> {
        lock(&self.unsaved).take().map(|record| *record)
    }

    /// Whether tokens wait to be saved.
    pub(crate) fn has_unsaved(&self) -> bool {
        lock(&self.unsaved).is_some()
    }

    /// The tenant's own renewal, if one was set.
    pub(crate) fn renewal(&self) -> Option<Renewal> {
        lock(&self.renewal).as_deref().cloned()
    }

    /// Sets the tenant's own renewal.
    pub(crate) fn set_renewal(&self, renewal: Renewal) {
        *lock(&self.renewal) = Some(Box::new(renewal));
    }

    /// Keeps tokens that could not be saved, to save first on the next call; a removed tenant
    /// keeps nothing (its record is gone, and so should its tokens be).
    pub(crate) fn keep_unsaved(&self, record: TokenRecord) {
        *lock(&self.unsaved) = Some(Box::new(record));
        if self.is_removed() {
            *lock(&self.unsaved) = None;
        }
    }

    /// Whether [`forget`](Self::forget) was called.
    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }

    /// Makes `cached` the current token, unless the tenant was removed (a refresh that was in
    /// flight when it was must not bring its token back). Returns what is current afterwards.
    pub(crate) fn set_current(&self, cached: Arc<Cached>) -> Arc<Cached> {
        self.current.store(cached.clone());
        // Checked after the store: a `forget` that ran before it is seen here and done again;
        // one that runs after it replaces the token anyway.
        if self.is_removed() {
            self.forget();
            return self.current.load_full();
        }
        cached
    }

    /// Whether a failure pause is running.
    pub(crate) fn in_failure_backoff(&self) -> bool {
        self.in_failure_backoff_at(clock::precise_ms())
    }

    /// [`in_failure_backoff`](Self::in_failure_backoff) at `now_ms`, for a pass over many
    /// tenants that reads the clock once.
    pub(crate) fn in_failure_backoff_at(&self, now_ms: u64) -> bool {
        now_ms < self.failures.retry_at_ms.load(Ordering::Acquire)
    }
}

/// A failed refresh, as callers meet it while its pause lasts.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub(crate) kind: ErrorKind,
    /// Salesforce's cause, kept as a value so that decisions (serve the old token or not) never
    /// read it back out of the message.
    pub(crate) cause: Option<sfauth_core::Cause>,
    /// Without secrets.
    pub(crate) message: String,
}

/// The failure pause of one tenant.
#[derive(Default)]
struct Failures {
    /// No refresh attempt before this (ms since the epoch).
    retry_at_ms: AtomicU64,
    consecutive: AtomicU64,
    /// Boxed: rare, and it would otherwise widen every tenant.
    last: Mutex<Option<Box<Failure>>>,
    /// The last refresh left the refresh token possibly spent and held it back while the access
    /// token worked: a 401 then means the wait is over, failure pause or not.
    on_hold: AtomicBool,
}

/// Locks a std mutex, recovering from poisoning: the data behind these mutexes is always left
/// consistent (plain replacements), so a panic elsewhere must not wedge a tenant.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
