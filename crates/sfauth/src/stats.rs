//! Counters the manager keeps, readable as a [`Stats`] snapshot and published through the
//! `metrics` facade.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the manager's counters since it was built.
///
/// ```
/// # async fn run(manager: sfauth::TokenManager) {
/// let stats = manager.stats();
/// println!("{} refreshes, {} callers served by another's refresh", stats.refreshes, stats.coalesced);
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Tenants in memory.
    pub tenants: u64,
    /// Tenants in memory that need re-authorization.
    pub tenants_reauth_required: u64,
    /// Token requests sent to Salesforce (refreshes and renewals, each attempt counted).
    pub token_requests: u64,
    /// Refreshes that ended with new tokens saved.
    pub refreshes: u64,
    /// Refreshes that returned a new refresh token.
    pub rotations: u64,
    /// Refreshes that failed.
    pub refresh_failures: u64,
    /// Callers that needed a refresh and were served by one another caller ran
    /// (the single-flight saving).
    pub coalesced: u64,
    /// Refreshes done by another process and adopted from the store.
    pub adopted: u64,
    /// Tenants newly marked as needing re-authorization.
    pub reauth_required: u64,
    /// Calls served a still-valid token while a refresh was failing.
    pub served_stale: u64,
    /// Background refreshes that found newer tokens another process had stored and adopted
    /// them without a lease attempt (also counted in [`Self::adopted`]). In a fleet whose
    /// workers all run the background refresher, about all but one worker's share per tenant
    /// and expiry.
    pub background_adopted: u64,
    /// Background refreshes left alone because another refresher was at work on the tenant
    /// (another process's lease or write-ahead mark, or a caller of this manager); the next
    /// scan looks again. A few are normal in a fleet; many mean the workers' attempts bunch
    /// up (see [`BackgroundConfig::spread`](crate::BackgroundConfig::spread)).
    pub background_skipped: u64,
    /// The consumer secret requests go out with first
    /// ([`OAuthClient::secret_in_use`](crate::oauth::OAuthClient::secret_in_use)): `Next` once
    /// Salesforce refused the current one and accepted the next, which tells an operator that
    /// a staged rotation was applied and the old secret can be retired. `None` for a public
    /// client.
    pub client_secret_in_use: Option<sfauth_core::SecretSlot>,
    /// How often the client switched secrets that way (also for logins through this manager's
    /// client).
    pub client_secret_switches: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) token_requests: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    pub(crate) rotations: AtomicU64,
    pub(crate) refresh_failures: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) adopted: AtomicU64,
    pub(crate) reauth_required: AtomicU64,
    pub(crate) served_stale: AtomicU64,
    pub(crate) background_adopted: AtomicU64,
    pub(crate) background_skipped: AtomicU64,
}

/// Names of the metrics published through the `metrics` facade.
pub(crate) mod names {
    pub(crate) const REFRESHES: &str = "sfauth_refreshes_total";
    pub(crate) const REFRESH_SECONDS: &str = "sfauth_refresh_duration_seconds";
    pub(crate) const COALESCED: &str = "sfauth_coalesced_callers_total";
    pub(crate) const TOKEN_REQUESTS: &str = "sfauth_token_requests_total";
    pub(crate) const TENANTS: &str = "sfauth_tenants";
    pub(crate) const SECRET_SWITCHES: &str = "sfauth_client_secret_switches_total";
    pub(crate) const SECRET_IN_USE: &str = "sfauth_client_secret_in_use";
}

/// Sets the `sfauth_tenants{status}` gauges.
pub(crate) fn publish_tenant_gauges(tenants: u64, reauth: u64) {
    metrics::gauge!(names::TENANTS, "status" => "active")
        .set(tenants.saturating_sub(reauth) as f64);
    metrics::gauge!(names::TENANTS, "status" => "reauth_required").set(reauth as f64);
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A caller needed a refresh and was served by one another caller ran: counted in the
    /// snapshot and as `sfauth_coalesced_callers_total`, wherever it happens.
    pub(crate) fn coalesced(&self) {
        Self::bump(&self.coalesced);
        metrics::counter!(names::COALESCED).increment(1);
    }

    pub(crate) fn snapshot(&self, tenants: u64, reauth: u64) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            tenants,
            tenants_reauth_required: reauth,
            token_requests: get(&self.token_requests),
            refreshes: get(&self.refreshes),
            rotations: get(&self.rotations),
            refresh_failures: get(&self.refresh_failures),
            coalesced: get(&self.coalesced),
            adopted: get(&self.adopted),
            reauth_required: get(&self.reauth_required),
            served_stale: get(&self.served_stale),
            background_adopted: get(&self.background_adopted),
            background_skipped: get(&self.background_skipped),
            client_secret_in_use: None,
            client_secret_switches: 0,
        }
    }
}
