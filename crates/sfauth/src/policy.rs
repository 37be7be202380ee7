//! [`RefreshPolicy`]: when and how patiently the manager refreshes.

use std::time::Duration;

use sfauth_core::backoff::Backoff;

/// When to refresh, and how long to wait on others.
///
/// ```
/// use std::time::Duration;
/// use sfauth::RefreshPolicy;
///
/// let policy = RefreshPolicy::default()
///     .margin(Duration::from_secs(120))
///     .lease_ttl(Duration::from_secs(90));
/// assert_eq!(policy.margin, Duration::from_secs(120));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefreshPolicy {
    /// Refresh this long before a known expiry; when this and [`Self::jitter`] together reach
    /// a token's whole lifetime, a quarter of the lifetime instead (a one-minute session is
    /// refreshed at 37 to 45 seconds of age, not at every call).
    pub margin: Duration,
    /// Up to this much earlier again, drawn at random per token, so that thousands of tenants
    /// issued at once do not all refresh in the same second; an eighth of the token's lifetime
    /// when [`Self::margin`] is scaled down.
    pub jitter: Duration,
    /// How long a tenant's refresh lease lasts without renewal. A refresher renews it every
    /// third of this while it is really at work, so a slow refresh never outlives its lease,
    /// and the lease of a refresher that died lapses this soon after (or at once, when the
    /// holder was a process on this host that is gone). Size it above one token request's
    /// timeout, so a refresher stalled in a request loses the lease only by dying.
    pub lease_ttl: Duration,
    /// How long a caller waits for another process that holds the lease before giving up with
    /// [`ErrorKind::RefreshInProgress`](crate::ErrorKind::RefreshInProgress).
    pub lease_wait: Duration,
    /// Attempts at a refresh that Salesforce answered with a 5xx or 429 (the refresh token was
    /// not consumed, so re-sending it is safe). Transport-level retries of requests that never
    /// left are the transport's business.
    pub attempts: u32,
    /// The first pause between those attempts; it doubles each time, and a `Retry-After` from
    /// the server takes precedence.
    pub backoff: Duration,
    /// After a failed refresh, how long callers are served the still-valid cached token (or the
    /// failure) before the next attempt; doubles with each consecutive failure up to
    /// [`Self::max_failure_backoff`].
    pub failure_backoff: Duration,
    /// The ceiling of [`Self::failure_backoff`].
    pub max_failure_backoff: Duration,
    /// The shortest session lifetime the manager will learn (JWT-based access tokens can live
    /// one minute since API 65.0; a revoked token can die sooner). Lifetimes are learned only from
    /// evidence about the timeout: an `exp` claim, or several tokens dying at the same age at
    /// different moments; a single early death (a revocation) teaches nothing.
    pub min_learned_lifetime: Duration,
    /// How long a lifetime learned from dying tokens is believed before it is learned anew (a
    /// wrong one, or a timeout an admin has since changed, then recovers).
    pub relearn_after: Duration,
    /// After each refresh whose expiry is not known from the response, introspect the new
    /// access token to learn its `exp` (one extra request per refresh; needs the app's secret).
    /// The lifetime learned this way is kept per org and used for every tenant of the org.
    pub learn_from_introspection: bool,
    /// The refresh-token idle limit tenants are measured against ([`Idle`](crate::Idle),
    /// [`TokenManager::idle`](crate::TokenManager::idle)), and past which an `expired
    /// access/refresh token` is reported as most likely an idle expiry: the app's "expire
    /// refresh token if not used for" setting, 30 days under the partner-app mandate.
    pub idle_limit: Duration,
}

impl Default for RefreshPolicy {
    /// Refresh 60 s (plus up to 30 s of jitter) before a known expiry, or a quarter (plus up to
    /// an eighth) of the lifetime before it for a token that lives 90 s or less; lease 45 s (renewed
    /// every 15 s while a refresh runs; the default transport gives a request 30 s); wait up to
    /// 30 s for another process; 3 attempts from 250 ms; back off 1 s to 60 s after failures;
    /// learn lifetimes of at least 1 minute, relearned daily; no introspection; a 30-day idle
    /// limit.
    fn default() -> Self {
        Self {
            margin: Duration::from_secs(60),
            jitter: Duration::from_secs(30),
            lease_ttl: Duration::from_secs(45),
            lease_wait: Duration::from_secs(30),
            attempts: 3,
            backoff: Duration::from_millis(250),
            failure_backoff: Duration::from_secs(1),
            max_failure_backoff: Duration::from_secs(60),
            min_learned_lifetime: Duration::from_secs(60),
            relearn_after: Duration::from_secs(24 * 3600),
            learn_from_introspection: false,
            idle_limit: crate::idle::PARTNER_IDLE_LIMIT,
        }
    }
}

impl RefreshPolicy {
    /// Sets [`Self::margin`].
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// Sets [`Self::jitter`].
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets [`Self::lease_ttl`].
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Sets [`Self::lease_wait`].
    pub fn lease_wait(mut self, wait: Duration) -> Self {
        self.lease_wait = wait;
        self
    }

    /// Sets [`Self::attempts`] (at least 1).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Sets [`Self::backoff`].
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets [`Self::failure_backoff`] and [`Self::max_failure_backoff`].
    pub fn failure_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.failure_backoff = first;
        self.max_failure_backoff = max.max(first);
        self
    }

    /// Sets [`Self::learn_from_introspection`].
    pub fn learn_from_introspection(mut self, on: bool) -> Self {
        self.learn_from_introspection = on;
        self
    }

    /// Sets [`Self::idle_limit`].
    pub fn idle_limit(mut self, limit: Duration) -> Self {
        self.idle_limit = limit;
        self
    }

    /// Sets [`Self::relearn_after`].
    pub fn relearn_after(mut self, after: Duration) -> Self {
        self.relearn_after = after;
        self
    }

    /// Sets [`Self::min_learned_lifetime`].
    pub fn min_learned_lifetime(mut self, lifetime: Duration) -> Self {
        self.min_learned_lifetime = lifetime;
        self
    }
}

impl RefreshPolicy {
    /// The pause between token requests of one refresh that Salesforce answered with a 5xx or
    /// 429: from [`Self::backoff`], doubling, never more than the lease lasts.
    pub(crate) fn retry_backoff(&self) -> Backoff {
        Backoff::new(self.backoff, self.lease_ttl)
    }

    /// The pause after consecutive failed refreshes: [`Self::failure_backoff`] up to
    /// [`Self::max_failure_backoff`].
    pub(crate) fn failure_pause(&self) -> Backoff {
        Backoff::new(self.failure_backoff, self.max_failure_backoff)
    }
}
