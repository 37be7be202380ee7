//! [`BackgroundRefresher`]: a background task that refreshes tenants before they expire, and
//! keeps idle ones alive. It works through the manager's own calls, not its insides.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::clock::{self, duration_ms};
use crate::manager::TokenManager;

/// What the background refresher does.
///
/// ```
/// use std::time::Duration;
/// use sfauth::BackgroundConfig;
///
/// let config = BackgroundConfig::default()
///     .concurrency(16)
///     .keep_alive_after(Some(Duration::from_secs(20 * 24 * 3600)));
/// assert_eq!(config.concurrency, 16);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackgroundConfig {
    /// How often tenants are scanned.
    pub interval: Duration,
    /// How many refreshes may run at once.
    pub concurrency: usize,
    /// Refresh tenants whose tokens were last obtained this long ago, even without a known
    /// expiry, so that an "expire refresh token if not used for N" policy never kills them.
    /// `None` turns keep-alive off.
    pub keep_alive_after: Option<Duration>,
}

impl Default for BackgroundConfig {
    /// Scan every 10 s, 8 refreshes at once, no keep-alive.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            concurrency: 8,
            keep_alive_after: None,
        }
    }
}

impl BackgroundConfig {
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
pub struct BackgroundRefresher {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl BackgroundRefresher {
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
    pub fn spawn_refresher(&self, config: BackgroundConfig) -> BackgroundRefresher {
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
                let now = clock::precise_ms();
                let horizon = now.saturating_add(duration_ms(config.interval));
                let keep_alive_before = config
                    .keep_alive_after
                    .map(|after| now.saturating_sub(duration_ms(after)));
                for (tenant, generation) in manager.due(horizon, keep_alive_before) {
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        break;
                    };
                    let manager = manager.clone();
                    // The tenant itself, not its key: looking the key up again could find a
                    // tenant removed meanwhile in the store and bring it back. A removed one
                    // has a new generation, so its refresh stops at once.
                    running.spawn(async move {
                        let _permit = permit;
                        if let Err(error) = manager.refresh_due(&tenant, generation).await {
                            tracing::debug!(key = %tenant.key, error = %error, "background refresh failed");
                        }
                    });
                }
            }
            while running.join_next().await.is_some() {}
        });
        BackgroundRefresher { stop, task }
    }
}
