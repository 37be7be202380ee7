//! [`BackgroundRefresher`]: a background task that refreshes tenants before they expire, and
//! keeps idle ones alive. It works through the manager's own calls, not its insides.
//!
//! # A fleet of workers
//!
//! Every worker process of a fleet may run a refresher against one shared store, with no
//! membership list and no leader. The store lease already makes that correct (one token
//! request per tenant and expiry, whoever holds the lease); what is added here is that it is
//! also cheap: about one lease attempt per tenant and expiry for the whole fleet, and no
//! worker's permits spent waiting on another worker.
//!
//! - **Spread without membership.** Each refresher draws a random seed when it starts. A
//!   tenant's attempt is put off by an offset in `[0, spread)` hashed from that seed and the
//!   tenant's key: fixed for the key in one refresher (every scan agrees on it), independent
//!   between refreshers. For each tenant, the earliest attempt in the fleet thus falls on a
//!   worker chosen at random, and 10,000 tenants due at once split about evenly over the
//!   workers and over the spread, instead of every worker trying every lease in the same
//!   second. The window of a tenant opens `spread` before its refresh deadline, so that even
//!   the last worker's attempt comes before callers would refresh it in the foreground; a
//!   tenant first seen late (at start-up, after an outage) gets its window from that moment.
//!   The window never reaches past half the access token's remaining life. By default the
//!   spread is the scan interval: a refresher that scans one interval ahead always refreshed
//!   somewhere in the interval before the deadline, so no token is refreshed earlier than
//!   before.
//! - **Adopt before the lease.** An attempt first reads the record's header: if another worker
//!   already stored newer tokens, their times are taken with no lease attempt, as a sealed view
//!   (the record is opened when this worker next uses the tenant, so a worker decrypts only the
//!   tenants it serves; a store without clear headers gives the record, which is adopted).
//!   That is what all the workers but the first do for a tenant, and a read costs a store less
//!   than a lease attempt (a write, and on SQLite the one writer's lock).
//! - **Never wait.** Next the attempt takes the lease if the header showed nobody refreshing
//!   (the usual case for the first worker: one write, no read), and otherwise reads the lease
//!   first: if another refresher holds it, the attempt moves on at once (the holder will
//!   write; callers of this process adopt through the store's watch) and the next scan looks
//!   again. Only a lease believed free is attempted. Waiting,
//!   as a caller does, would hold one of `concurrency` permits for up to `lease_wait` per
//!   tenant that somebody else is refreshing.
//!
//! A worker whose attempt comes while another one refreshes the tenant skips it after two
//! reads and adopts the new tokens at a later scan; only attempts that fall between one
//! worker's lease read and its lease attempt both try for the lease, and one is refused. A
//! spread of seconds makes either rare, and neither costs a second token request.
//! Keep-alive goes through the same window. `Stats::background_adopted` and
//! `Stats::background_skipped` (and `sfauth_refreshes_total{trigger="background"}`) show it at
//! work.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher as _;
use std::sync::Arc;
use std::time::Duration;

use sfauth_core::TokenKey;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::clock::{self, duration_ms};
use crate::engine::Due;
use crate::manager::TokenManager;
use crate::state::{NEVER, TenantState};

/// What the background refresher does.
///
/// ```
/// use std::time::Duration;
/// use sfauth::BackgroundConfig;
///
/// let config = BackgroundConfig::default()
///     .concurrency(16)
///     .spread(Duration::from_secs(20))
///     .keep_alive_after(Some(Duration::from_secs(20 * 24 * 3600)));
/// assert_eq!(config.concurrency, 16);
/// assert_eq!(config.spread, Some(Duration::from_secs(20)));
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
    /// The window over which the workers of a fleet sharing one store spread their attempts
    /// at one tenant (see [`TokenManager::spawn_refresher`]): each refresher puts each tenant off by its
    /// own offset below this, and the window ends at the tenant's refresh deadline, so tokens
    /// are refreshed up to this much before it. `None` (the default) uses [`Self::interval`],
    /// which refreshes no earlier than a scan that looks one interval ahead always did. Longer
    /// spreads the attempts thinner; zero makes every worker try at once (still correct, since
    /// the store's lease admits one, but every worker then makes a lease attempt). With a
    /// single process it only spreads the load.
    pub spread: Option<Duration>,
}

impl Default for BackgroundConfig {
    /// Scan every 10 s, 8 refreshes at once, no keep-alive, attempts spread over the 10 s
    /// before each refresh deadline.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            concurrency: 8,
            keep_alive_after: None,
            spread: None,
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

    /// Sets [`Self::spread`].
    pub fn spread(mut self, spread: Duration) -> Self {
        self.spread = Some(spread);
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
    /// Attempts still waiting for their moment are dropped.
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
    ///
    /// Every worker of a fleet may run one against a shared store: their attempts at each
    /// tenant are spread over [`BackgroundConfig::spread`], a worker adopts the tokens another
    /// one stored instead of refreshing again, and it never waits for a lease another holds.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use sfauth::BackgroundConfig;
    ///
    /// # async fn run(manager: sfauth::TokenManager) -> sfauth::Result<()> {
    /// manager.load_all().await?;
    /// let refresher = manager.spawn_refresher(BackgroundConfig::default());
    /// // ... serve until asked to stop ...
    /// refresher.shutdown().await;
    /// manager.shutdown(Duration::from_secs(5)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn spawn_refresher(&self, config: BackgroundConfig) -> BackgroundRefresher {
        let (stop, stopped) = watch::channel(false);
        let scheduler = Scheduler::new(self.clone(), config, rand::random());
        let task = tokio::spawn(scheduler.run(stopped));
        BackgroundRefresher { stop, task }
    }
}

/// A tenant's place in the queue: its tenant state's address tells tenants apart (it cannot be
/// reused while the queue or a task holds the `Arc`).
type Slot = usize;

/// Where an attempt stands in the queue: its moment, then this refresher's hash of the key
/// (see [`key_hash`]), which orders the attempts of one millisecond differently in every
/// refresher. Ordered by the slot instead, they would follow the order the tenants were loaded
/// in, the same in every worker: with a spread shorter than the work (many tenants due at
/// once), every worker would then start on the same tenants.
type Place = (Instant, u64, Slot);

/// The refresher's state, owned by its task.
struct Scheduler {
    manager: TokenManager,
    config: BackgroundConfig,
    /// This refresher's own seed for the offsets.
    seed: u64,
    permits: Arc<Semaphore>,
    /// Attempts waiting for their moment, earliest first.
    queue: BTreeMap<Place, (Arc<TenantState>, u64)>,
    /// Tenants queued or being refreshed: a scan does not queue them again.
    pending: HashSet<Slot>,
    running: JoinSet<()>,
    /// Which tenant each running task works on, so that its slot is freed however it ends.
    tasks: HashMap<tokio::task::Id, Slot>,
}

impl Scheduler {
    fn new(manager: TokenManager, config: BackgroundConfig, seed: u64) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(config.concurrency.max(1))),
            manager,
            config,
            seed,
            queue: BTreeMap::new(),
            pending: HashSet::new(),
            running: JoinSet::new(),
            tasks: HashMap::new(),
        }
    }

    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        let follower = self
            .manager
            .store_changes()
            .map(|changes| tokio::spawn(follow(self.manager.clone(), changes, self.lead_ms())));
        // `tokio::time::interval` refuses a zero period.
        let mut ticker = tokio::time::interval(self.config.interval.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = self.queue.first_key_value().map(|(&(at, _, _), _)| at);
            tokio::select! {
                biased;
                _ = stopped.changed() => break,
                _ = ticker.tick() => {
                    self.reap();
                    self.scan();
                }
                () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {}
            }
            if !self.launch(&mut stopped).await {
                break;
            }
        }
        if let Some(follower) = follower {
            follower.abort();
        }
        while self.running.join_next().await.is_some() {}
    }

    /// The window the attempts at each tenant are spread over.
    fn spread_ms(&self) -> u64 {
        duration_ms(self.config.spread.unwrap_or(self.config.interval))
    }

    /// How far ahead a scan looks (the next interval and spread): the tenants falling due
    /// within it are the ones this refresher is about to attempt.
    fn lead_ms(&self) -> u64 {
        duration_ms(self.config.interval).saturating_add(self.spread_ms())
    }

    /// Queues the tenants falling due within the next interval and spread, each at this
    /// refresher's moment for it.
    fn scan(&mut self) {
        let now_ms = clock::precise_ms();
        let now = Instant::now();
        let spread_ms = self.spread_ms();
        let horizon = now_ms.saturating_add(self.lead_ms());
        let keep_alive = self.config.keep_alive_after.map(duration_ms);
        for due in self.manager.due(horizon, keep_alive) {
            let slot = Arc::as_ptr(&due.tenant) as Slot;
            if !self.pending.insert(slot) {
                continue;
            }
            let delay = attempt_delay_ms(self.seed, &due.tenant.key, &due, now_ms, spread_ms);
            let at = now.checked_add(Duration::from_millis(delay)).unwrap_or(now);
            let rank = key_hash(self.seed, &due.tenant.key);
            self.queue
                .insert((at, rank, slot), (due.tenant, due.generation));
        }
    }

    /// Starts every queued attempt whose moment has come, as permits free up; `false` if told
    /// to stop meanwhile.
    async fn launch(&mut self, stopped: &mut watch::Receiver<bool>) -> bool {
        let now = Instant::now();
        while let Some((&(at, _, slot), (tenant, generation))) = self.queue.first_key_value() {
            if at > now {
                break;
            }
            if tenant.current.load().generation != *generation {
                // Replaced meanwhile (another worker's tokens, from the store's change feed):
                // nothing left to attempt, and no permit to wait for.
                self.queue.pop_first();
                self.pending.remove(&slot);
                continue;
            }
            let permit = tokio::select! {
                biased;
                _ = stopped.changed() => return false,
                permit = self.permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return false,
                },
            };
            let Some(((_, _, slot), (tenant, generation))) = self.queue.pop_first() else {
                break;
            };
            let manager = self.manager.clone();
            // The tenant itself, not its key: looking the key up again could find a tenant
            // removed meanwhile in the store and bring it back. A removed one has a new
            // generation, so its refresh stops at once.
            let task = self.running.spawn(async move {
                let _permit = permit;
                if let Err(error) = manager.refresh_due(&tenant, generation).await {
                    tracing::debug!(key = %tenant.key, error = %error, "background refresh failed");
                }
            });
            self.tasks.insert(task.id(), slot);
        }
        true
    }

    /// Frees the slots of finished attempts, so that the next scan may queue them again.
    fn reap(&mut self) {
        while let Some(done) = self.running.try_join_next_with_id() {
            let id = match done {
                Ok((id, ())) => id,
                Err(error) => {
                    tracing::warn!(error = %error, "a background refresh ended abnormally");
                    error.id()
                }
            };
            if let Some(slot) = self.tasks.remove(&id) {
                self.pending.remove(&slot);
            }
        }
    }
}

/// Follows the store's change feed for as long as the refresher runs: a tenant another
/// worker refreshed is taken from the header its save announced, before this refresher's
/// attempt at it would read that header (for every tenant falling due within `lead_ms`, the
/// scan's horizon). Attempts already queued for it are then dropped at launch.
async fn follow(manager: TokenManager, mut changes: sfauth_storage::Changes, lead_ms: u64) {
    while let Some(header) = changes.next().await {
        manager.adopt_notified(&header, clock::precise_ms().saturating_add(lead_ms));
    }
}

/// How long after `now_ms` this refresher (with `seed`) makes its attempt at `due`: at its
/// offset into the tenant's window, which opens `spread_ms` before the tenant falls due (or
/// now, if that is past) and never reaches past half the access token's remaining life.
fn attempt_delay_ms(seed: u64, key: &TokenKey, due: &Due, now_ms: u64, spread_ms: u64) -> u64 {
    let opens = due.due_at_ms.saturating_sub(spread_ms).max(now_ms);
    let spread = if due.expires_at_ms == NEVER {
        spread_ms
    } else {
        spread_ms.min(due.expires_at_ms.saturating_sub(opens) / 2)
    };
    opens
        .saturating_add(offset_ms(seed, key, spread))
        .saturating_sub(now_ms)
}

/// This refresher's hash of `key`: fixed for the key with `seed`, unrelated between seeds.
fn key_hash(seed: u64, key: &TokenKey) -> u64 {
    foldhash::quality::FixedState::with_seed(seed).hash_one(key)
}

/// This refresher's offset for `key` in `[0, spread_ms)` (0 when the spread is): the same for
/// the key on every call with `seed`, and unrelated between seeds. The fraction of the spread
/// depends on the seed and key only, so a window shortened near expiry keeps the workers'
/// order.
fn offset_ms(seed: u64, key: &TokenKey, spread_ms: u64) -> u64 {
    let hash = key_hash(seed, key);
    // Multiply-shift maps the hash onto the range without a modulo's bias; the product of two
    // u64 fits a u128, and its high half is below `spread_ms`.
    let scaled = u128::from(hash).wrapping_mul(u128::from(spread_ms)) >> 64;
    u64::try_from(scaled).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> TokenKey {
        let identity = format!("https://login.salesforce.com/id/00D{i:015}/005{i:015}")
            .parse()
            .unwrap();
        TokenKey::new(
            &sfauth_core::LoginHost::Production,
            &identity,
            "3MVG9.fleet",
            "default",
        )
    }

    #[test]
    fn offsets_are_fixed_per_refresher_and_key_and_within_the_spread() {
        let spread = 10_000;
        for i in 0..1_000 {
            let key = key(i);
            let offset = offset_ms(7, &key, spread);
            assert!(offset < spread, "{offset}");
            assert_eq!(offset, offset_ms(7, &key, spread), "deterministic");
            assert_eq!(offset, offset_ms(7, &key.clone(), spread), "by value");
            assert_eq!(offset_ms(7, &key, 0), 0, "no spread, no delay");
            assert_eq!(offset_ms(7, &key, 1), 0);
        }
    }

    #[test]
    fn the_first_attempt_falls_on_each_worker_about_equally() {
        // Eight workers, 10,000 tenants: each tenant's earliest offset picks a worker. A fair
        // split gives 1,250 each (a standard deviation of about 33); the offsets themselves
        // should cover the spread evenly too.
        let (workers, tenants, spread) = (8u64, 10_000usize, 10_000u64);
        let seeds: Vec<u64> = (0..workers)
            .map(|w| 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(w + 1))
            .collect();
        let mut first = vec![0u32; seeds.len()];
        let mut deciles = [0u32; 10];
        for i in 0..tenants {
            let key = key(i);
            let offsets: Vec<u64> = seeds.iter().map(|&s| offset_ms(s, &key, spread)).collect();
            let (winner, _) = offsets
                .iter()
                .enumerate()
                .min_by_key(|&(_, offset)| offset)
                .unwrap();
            first[winner] += 1;
            for offset in offsets {
                deciles[(offset * 10 / spread) as usize] += 1;
            }
        }
        for (worker, count) in first.iter().enumerate() {
            assert!(
                (1_100..=1_400).contains(count),
                "worker {worker}: {first:?}"
            );
        }
        for (decile, count) in deciles.iter().enumerate() {
            assert!(
                (7_600..=8_400).contains(count),
                "decile {decile}: {deciles:?}"
            );
        }
    }

    fn due(due_at_ms: u64, expires_at_ms: u64) -> Due {
        let key = Arc::new(key(1));
        let record = sfauth_storage::TokenRecord::new(
            (*key).clone(),
            sfauth_core::TokenSet::new(
                sfauth_core::AccessToken::new("t"),
                "https://acme.my.salesforce.com".parse().unwrap(),
                "https://login.salesforce.com/id/00D000000000000001/005000000000000001"
                    .parse()
                    .unwrap(),
            ),
            std::time::SystemTime::now(),
        );
        let cached = crate::state::Cached::from_record(&record, 0, None, 0, 0);
        Due {
            tenant: Arc::new(TenantState::new(key, cached)),
            generation: 0,
            due_at_ms,
            expires_at_ms,
        }
    }

    /// Every attempt is a task of its own, and most of them (all the workers of a fleet but
    /// one) only read a header and adopt: a future carrying the whole refresh inline (28 KB
    /// once) made each spawn allocate and copy it, and made every queued attempt hold it.
    #[tokio::test]
    async fn an_attempt_is_a_small_future() {
        let client = sfauth_core::OAuthClient::new(
            sfauth_core::LoginHost::Production,
            sfauth_core::ConnectedApp::new("3MVG9.key"),
        );
        let manager = TokenManager::builder(client)
            .store(Arc::new(sfauth_storage::MemoryStore::new()))
            .build()
            .await
            .unwrap();
        let attempt = due(0, NEVER);
        let future = manager.refresh_due(&attempt.tenant, attempt.generation);
        let size = std::mem::size_of_val(&future);
        assert!(
            size <= 4096,
            "a background attempt's future is {size} bytes"
        );
    }

    #[test]
    fn the_window_ends_at_the_deadline_or_starts_now_and_stays_clear_of_expiry() {
        let (now, spread) = (1_000_000u64, 10_000u64);
        let key = key(1);
        for seed in 0..200 {
            // Due in a minute: the attempt comes in the 10 s before the deadline.
            let ahead = attempt_delay_ms(seed, &key, &due(now + 60_000, NEVER), now, spread);
            assert!((50_000..60_000).contains(&ahead), "{ahead}");
            assert_eq!(ahead - 50_000, offset_ms(seed, &key, spread));
            // Overdue: the window opens now.
            let late = attempt_delay_ms(seed, &key, &due(now - 5_000, NEVER), now, spread);
            assert!(late < spread, "{late}");
            // Overdue and dying in 8 s: within the first 4 s.
            let dying = attempt_delay_ms(seed, &key, &due(now - 5_000, now + 8_000), now, spread);
            assert!(dying < 4_000, "{dying}");
            // Dead: at once.
            let dead = attempt_delay_ms(seed, &key, &due(now - 5_000, now - 1), now, spread);
            assert_eq!(dead, 0);
        }
    }
}
