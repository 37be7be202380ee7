//! [`Refresher`]: a background task that refreshes tenants before they expire, and keeps idle
//! ones alive.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::clock::{self, duration_ms};
use crate::manager::TokenManager;
use crate::stats::publish_tenant_gauges;
use crate::tenant::{CachedState, NEVER, TenantState};

/// What the background refresher does.
///
/// ```
/// use std::time::Duration;
/// use sfauth::RefresherConfig;
///
/// let config = RefresherConfig::default()
///     .concurrency(16)
///     .keep_alive_after(Some(Duration::from_secs(20 * 24 * 3600)));
/// assert_eq!(config.concurrency, 16);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefresherConfig {
    /// How often tenants are scanned.
    pub interval: Duration,
    /// How many refreshes may run at once.
    pub concurrency: usize,
    /// Refresh tenants whose tokens were last obtained this long ago, even without a known
    /// expiry, so that an "expire refresh token if not used for N" policy never kills them.
    /// `None` turns keep-alive off.
    pub keep_alive_after: Option<Duration>,
}

impl Default for RefresherConfig {
    /// Scan every 10 s, 8 refreshes at once, no keep-alive.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            concurrency: 8,
            keep_alive_after: None,
        }
    }
}

impl RefresherConfig {
    /// Sets [`Self::interval`].
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets [`Self::concurrency`] (at least 1).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Sets [`Self::keep_alive_after`].
    pub fn keep_alive_after(mut self, after: Option<Duration>) -> Self {
        self.keep_alive_after = after;
        self
    }
}

/// The running background refresher; see [`TokenManager::spawn_refresher`].
#[derive(Debug)]
pub struct Refresher {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Refresher {
    /// Stops scanning, lets the refreshes under way finish, and returns when they have.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::warn!(error = %error, "background refresher ended abnormally");
        }
    }
}

impl TokenManager {
    /// Starts a background task that refreshes tenants in memory shortly before their known
    /// expiry (and, with keep-alive, tenants idle for long), at most `config.concurrency` at a
    /// time. Call [`load_all`](Self::load_all) first to cover every stored tenant.
    pub fn spawn_refresher(&self, config: RefresherConfig) -> Refresher {
        let (stop, mut stopped) = watch::channel(false);
        let manager = self.clone();
        let task = tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(config.concurrency));
            let mut running = JoinSet::new();
            let mut ticker = tokio::time::interval(config.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = ticker.tick() => {}
                }
                while running.try_join_next().is_some() {}
                for (tenant, generation) in manager.due(&config) {
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        break;
                    };
                    let manager = manager.clone();
                    // The tenant itself, not its key: looking the key up again could find a
                    // tenant removed meanwhile in the store and bring it back. A removed one
                    // has a new generation, so its refresh stops at once.
                    running.spawn(async move {
                        let _permit = permit;
                        if let Err(error) = manager.inner.refresh(&tenant, generation, crate::refresh::Trigger::Background).await {
                            tracing::debug!(key = %tenant.key, error = %error, "background refresh failed");
                        }
                    });
                }
            }
            while running.join_next().await.is_some() {}
        });
        Refresher { stop, task }
    }

    /// Tenants whose refresh is due within one scan interval, or whose keep-alive is due, with
    /// the generation they were seen at. The same pass counts the tenants for the gauges, so
    /// that whoever scrapes the metrics sees them current without a second walk.
    fn due(&self, config: &RefresherConfig) -> Vec<(Arc<TenantState>, u64)> {
        let horizon = clock::precise_ms().saturating_add(duration_ms(config.interval));
        let keep_alive_before = config
            .keep_alive_after
            .map(|after| clock::precise_ms().saturating_sub(duration_ms(after)));
        let pinned = self.inner.tenants.pin();
        let (mut tenants, mut reauth): (u64, u64) = (0, 0);
        let due = pinned
            .values()
            .filter_map(|tenant| {
                let cached = tenant.current.load();
                tenants = tenants.saturating_add(1);
                if matches!(cached.state, CachedState::Reauth(_)) {
                    reauth = reauth.saturating_add(1);
                }
                if !matches!(cached.state, CachedState::Active) || tenant.in_failure_backoff() {
                    return None;
                }
                let expiring = cached.refresh_at_ms != NEVER && cached.refresh_at_ms <= horizon;
                let idle = keep_alive_before.is_some_and(|before| cached.obtained_at_ms <= before);
                (expiring || idle).then(|| (tenant.clone(), cached.generation))
            })
            .collect();
        publish_tenant_gauges(tenants, reauth);
        due
    }
}
