//! The shared stores at work in a fleet of processes, measured once per run and written as a
//! flat JSON object for `cargo xtask bench` (issue #13). For Redis and PostgreSQL each:
//!
//! - `fleet_adopt_p99_ms_{backend}`: eight processes share one rotating tenant whose session is
//!   a second long and call `access_token()` every millisecond; at each expiry one of them wins
//!   the lease and refreshes (the emulator takes [`ADOPT_LATENCY`] to answer, so the others are
//!   waiting on the lease by then) and the seven others adopt what it stored. The figure is the
//!   99th percentile, over every (expiry, loser) pair, of the time from the winner's save
//!   returning (its `put` through the store, timed by a wrapper around it) to the loser's first
//!   `access_token()` that returned the new token, both as `SystemTime` in µs (one machine, one
//!   clock). Also `_p50_ms_`, `_max_ms_`, `_expiries_`, `_samples_`, `_missed_` (pairs where a
//!   loser never held a generation, having skipped to the next) and `_token_requests_` (one per
//!   expiry, or a loser refreshed). `fleet_adopt_p99_ms_sqlite` is the same on a store whose
//!   watch is not live (polled), for context.
//! - `fleet_refresh_ratio_{backend}`: 10,000 tenants falling due at once are refreshed by eight
//!   worker processes, each running the background refresher (`BackgroundConfig` with
//!   [`WORKER_CONCURRENCY`] refreshes at once, attempts spread over [`SPREAD`]), against the
//!   emulator (rotation on). Their throughput (10,000 over the time from the opening of the
//!   tenants' refresh window to the last save) over the emulator's raw refresh-grant
//!   throughput, measured just before by a plain reqwest client in a process of its own posting
//!   10,000 other refresh tokens at the same concurrency (eight times [`WORKER_CONCURRENCY`]).
//!   `fleet_refresh_token_requests_{backend}` is the emulator's count of refresh grants during
//!   the fleet run (exactly 10,000 is the target), with `_s_`, `_raw_s_`, `_saves_`,
//!   `_adopted_`, `_skipped_`, `_worker_cpu_s_` (the CPU time the eight workers used from
//!   ready to stop, which a loaded machine's wall time hides) and
//!   `_store_operations_per_refresh_` (every store call of every worker from ready to stop,
//!   over the tenants refreshed; the run prints them by kind) to read it by.
//!
//!   Why [`SPREAD`] is short here. The spread is a pacing window: each worker puts each
//!   tenant's attempt off by its own offset in it, so that when a few tenants fall due, one
//!   worker's attempt comes first and the others find its tokens instead of all trying the
//!   lease at once. It is no capacity: every attempt starts within it, so the burst lasts at
//!   least the spread, and counted from the window's opening (as the ratio must, to count
//!   every attempt) a one-second spread alone would cap the ratio at the raw baseline's
//!   0.3-0.5 s over one second. In production that floor costs nobody anything, since the
//!   window closes at the tenants' refresh deadline, before any token is due. Nor should the
//!   spread grow with the number of due tenants: what keeps 10,000 due tenants from becoming a
//!   herd is not the window but that every worker, its concurrency saturated, works through
//!   them in its own order (its offsets, ties broken by its own hash of the key), so each
//!   tenant still meets one worker first. So the figure uses a spread well below the burst
//!   (100 ms, against 0.3-0.9 s raw), and measures the fleet's capacity rather than its
//!   pacing.
//! - `store_get_ratio_{backend}`: the median of our `get` of one sealed record (the read,
//!   decryption and decoding) over the median of a raw read of the same stored bytes through the
//!   same client library on the same server (redis-rs `HMGET` of the record's hash, sqlx
//!   `SELECT` of its row), measured interleaved; with `store_get_us_` and `store_get_raw_us_`.
//!
//! A server that does not answer is skipped with a loud message and its figures are missing
//! (`cargo xtask bench` reports them missing). Servers: `SFAUTH_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`) and `SFAUTH_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); everything written there is under a prefix or
//! schema of this run's own, removed at the end.
//!
//! The processes are this benchmark binary run again with `SFAUTH_BENCH_FLEET_CHILD` set (as
//! `tests/fleet.rs` does with its test binary): each prints a ready line, waits for the
//! parent's word on stdin, and reports what it saw as one JSON line.
//!
//! Environment: `SFAUTH_BENCH_FLEET` (default: `fleet.json` in the bench directory, see
//! `common::bench_dir`) receives the figures; `SFAUTH_BENCH_FLEET_EXPIRIES` sets the expiries
//! per store of the adoption figure (default [`ADOPT_EXPIRIES`]); `SFAUTH_BENCH_FLEET_BACKENDS`
//! (a comma-separated list of `redis`, `postgres`, `sqlite`) and `SFAUTH_BENCH_FLEET_FIGURES`
//! (of `get`, `adopt`, `refresh`) measure only those, for profiling one figure (default: all).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark fails by panicking"
)]
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports its figures"
)]

mod common;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::str::FromStr as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use sfauth::oauth::{ConnectedApp, LoginHost, OAuthClient, TokenKey, TokenSet};
use sfauth::storage::{
    Changes, EntryPage, HeaderPage, Key, Keyring, Lease, ListPage, ListQuery, RecordHeader,
    Result as StoreResult, TokenRecord, TokenStore, Watch,
};
use sfauth::transport::ReqwestTransport;
use sfauth::{
    BackgroundConfig, PostgresStore, RedisStore, RefreshPolicy, SqliteStore, TokenManager,
};
use sfauth_emulator::Emulator;

/// Processes sharing a store.
const PROCESSES: usize = 8;

/// The adoption figure: the emulator's session (and what the clients are told), how long
/// before its end the tenant is refreshed (no jitter, so that every process falls due at the
/// same moment), and how long the emulator takes to answer a refresh.
const ADOPT_SESSION: Duration = Duration::from_secs(1);
const ADOPT_MARGIN: Duration = Duration::from_millis(600);
const ADOPT_LATENCY: Duration = Duration::from_millis(30);
/// Expiries per store when `SFAUTH_BENCH_FLEET_EXPIRIES` is not set.
const ADOPT_EXPIRIES: u64 = 40;

/// The refresh figure: tenants, refreshes at once per worker, the refresher's scan interval
/// and the window its attempts are spread over.
const TENANTS: usize = 10_000;
const WORKER_CONCURRENCY: usize = 8;
const SCAN_INTERVAL: Duration = Duration::from_millis(500);
/// Short against the burst: see the module doc.
const SPREAD: Duration = Duration::from_millis(100);
/// The refresh policy's margin for the refresh figure (the default's).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// How long the fleet may make no progress before the refresh figure gives up on it.
const STALL: Duration = Duration::from_secs(30);
/// The emulator's session for the refresh figure: refreshed tokens are never due again.
const LONG_SESSION: Duration = Duration::from_secs(2 * 3600);

/// Reads of one record per side for the store figure.
const GET_ROUNDS: usize = 4_000;

/// The fields of a Redis record hash, as `RedisStore` reads them.
const REDIS_RECORD_FIELDS: [&str; 7] = [
    "version",
    "sealed",
    "org_id",
    "user_id",
    "client_id",
    "status",
    "key_id",
];

mod var {
    pub(crate) const CHILD: &str = "SFAUTH_BENCH_FLEET_CHILD";
    pub(crate) const BACKEND: &str = "SFAUTH_BENCH_FLEET_BACKEND";
    pub(crate) const LOCATION: &str = "SFAUTH_BENCH_FLEET_LOCATION";
    pub(crate) const STORE_KEY: &str = "SFAUTH_BENCH_FLEET_STORE_KEY";
    pub(crate) const TOKEN_KEY: &str = "SFAUTH_BENCH_FLEET_TOKEN_KEY";
    pub(crate) const LOGIN_URL: &str = "SFAUTH_BENCH_FLEET_LOGIN_URL";
    pub(crate) const CLIENT_ID: &str = "SFAUTH_BENCH_FLEET_CLIENT_ID";
    pub(crate) const CLIENT_SECRET: &str = "SFAUTH_BENCH_FLEET_CLIENT_SECRET";
    pub(crate) const TOKEN_URL: &str = "SFAUTH_BENCH_FLEET_TOKEN_URL";
    pub(crate) const EXPIRIES: &str = "SFAUTH_BENCH_FLEET_EXPIRIES";
    pub(crate) const BACKENDS: &str = "SFAUTH_BENCH_FLEET_BACKENDS";
    pub(crate) const FIGURES: &str = "SFAUTH_BENCH_FLEET_FIGURES";
    pub(crate) const REDIS: &str = "SFAUTH_TEST_REDIS_URL";
    pub(crate) const POSTGRES: &str = "SFAUTH_TEST_POSTGRES_URL";
}

const REDIS_DEFAULT: &str = "redis://127.0.0.1:6379";
const POSTGRES_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";

fn main() {
    if let Ok(role) = std::env::var(var::CHILD) {
        child(&role);
    }
    let runtime = common::runtime();
    let dir = common::bench_dir();
    let mut figures = Map::new();
    let wanted = |var: &str, what: &str| {
        std::env::var(var).map_or(true, |list| list.split(',').any(|item| item.trim() == what))
    };
    runtime.block_on(async {
        for backend in [Backend::Redis, Backend::Postgres] {
            if !wanted(var::BACKENDS, backend.name()) {
                continue;
            }
            let Some(url) = backend.server() else {
                continue;
            };
            let name = backend.name();
            if wanted(var::FIGURES, "get") {
                let started = Instant::now();
                let (ours, raw) = store_get(backend, &url).await;
                figures.insert(format!("store_get_us_{name}"), json!(ours));
                figures.insert(format!("store_get_raw_us_{name}"), json!(raw));
                figures.insert(format!("store_get_ratio_{name}"), json!(ours / raw));
                println!(
                    "{name}: store get in {:.1}s",
                    started.elapsed().as_secs_f64()
                );
            }

            if wanted(var::FIGURES, "adopt") {
                let started = Instant::now();
                figures.extend(adopt(backend).await);
                println!(
                    "{name}: adoption in {:.1}s",
                    started.elapsed().as_secs_f64()
                );
            }

            if wanted(var::FIGURES, "refresh") {
                let started = Instant::now();
                figures.extend(refresh_fleet(backend).await);
                println!(
                    "{name}: fleet refresh in {:.1}s",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        // The same adoption on a store whose watch is never live: the pollers' baseline.
        if wanted(var::BACKENDS, "sqlite") && wanted(var::FIGURES, "adopt") {
            let started = Instant::now();
            figures.extend(adopt(Backend::Sqlite).await);
            println!(
                "sqlite: adoption in {:.1}s",
                started.elapsed().as_secs_f64()
            );
        }
    });
    common::write_figures("SFAUTH_BENCH_FLEET", &dir.join("fleet.json"), &figures);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    /// The location is a key prefix on the server of `SFAUTH_TEST_REDIS_URL`.
    Redis,
    /// The location is a schema on the server of `SFAUTH_TEST_POSTGRES_URL`.
    Postgres,
    /// The location is a file.
    Sqlite,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        }
    }

    fn parse(name: &str) -> Self {
        match name {
            "redis" => Self::Redis,
            "postgres" => Self::Postgres,
            "sqlite" => Self::Sqlite,
            other => panic!("unknown backend {other:?}"),
        }
    }

    fn url(self) -> String {
        let (var, default) = match self {
            Self::Redis => (var::REDIS, REDIS_DEFAULT),
            Self::Postgres => (var::POSTGRES, POSTGRES_DEFAULT),
            Self::Sqlite => return String::new(),
        };
        std::env::var(var).unwrap_or_else(|_| default.to_owned())
    }

    /// The server's URL when something answers on its host and port; otherwise says loudly
    /// that its figures are skipped.
    fn server(self) -> Option<String> {
        let url = self.url();
        let address = sfauth::Url::parse(&url).ok().and_then(|parsed| {
            let host = parsed.host_str()?.to_owned();
            let port = parsed.port().unwrap_or(match self {
                Self::Redis => 6379,
                _ => 5432,
            });
            std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
                .ok()?
                .next()
        });
        let reachable = address.is_some_and(|address| {
            std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok()
        });
        if !reachable {
            eprintln!(
                "\n!!! SKIPPED: {} is not reachable (set {} to point elsewhere); its fleet and \
                 store figures are missing !!!\n",
                self.name(),
                match self {
                    Self::Redis => var::REDIS,
                    _ => var::POSTGRES,
                }
            );
            return None;
        }
        Some(url)
    }

    /// A location of this run's own, `n` telling apart the stores of one run.
    fn location(self, dir: &Path, n: &str) -> String {
        let unique = format!("sfauth_bench_{}_{n}", std::process::id());
        match self {
            Self::Redis => format!("{unique}:"),
            Self::Postgres => unique,
            Self::Sqlite => dir.join(format!("{unique}.db")).display().to_string(),
        }
    }

    async fn open(self, location: &str, key: &str) -> Arc<dyn TokenStore> {
        let keyring = Keyring::new(Key::from_base64(key).unwrap());
        match self {
            Self::Redis => Arc::new(
                RedisStore::builder(&self.url(), keyring)
                    .prefix(location)
                    .connect()
                    .await
                    .unwrap(),
            ),
            // Six connections a process rather than the default ten: eight processes and the
            // parent stay well inside the server's default hundred, which others share.
            Self::Postgres => {
                let options = sqlx::postgres::PgConnectOptions::from_str(&self.url()).unwrap();
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(6)
                    .connect_lazy_with(options);
                Arc::new(
                    PostgresStore::from_pool_with_schema(pool, location, keyring)
                        .await
                        .unwrap(),
                )
            }
            Self::Sqlite => Arc::new(SqliteStore::open(location, keyring).await.unwrap()),
        }
    }

    /// Removes what a run left on the server.
    async fn clean_up(self, location: &str) {
        match self {
            Self::Redis => {
                let client = redis::Client::open(self.url()).unwrap();
                let mut conn = client.get_multiplexed_async_connection().await.unwrap();
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{location}*"))
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                for chunk in keys.chunks(1000) {
                    let _: () = redis::cmd("DEL")
                        .arg(chunk)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                }
            }
            Self::Postgres => {
                use sqlx::Connection as _;
                let mut conn = sqlx::PgConnection::connect(&self.url()).await.unwrap();
                sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{location}\" CASCADE"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            Self::Sqlite => {}
        }
    }
}

/// Microseconds since the Unix epoch: processes on one machine share this clock.
fn now_us() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap()
}

/// A token's stand-in in reports (the same in every process), so that no token is printed.
fn fingerprint(token: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    token.hash(&mut hasher);
    hasher.finish()
}

/// A store that notes when each save of new tokens returned: every `put` of a record without a
/// write-ahead mark, with its access token's fingerprint and the µs before and after.
/// It also counts the operations it forwards, by name, for the refresh figure's store
/// operations per refresh.
struct TimedStore {
    inner: Arc<dyn TokenStore>,
    saves: Mutex<Vec<(u64, i64, i64)>>,
    operations: Mutex<HashMap<&'static str, u64>>,
}

impl TimedStore {
    fn new(inner: Arc<dyn TokenStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            saves: Mutex::new(Vec::new()),
            operations: Mutex::new(HashMap::new()),
        })
    }

    fn saves(&self) -> Vec<(u64, i64, i64)> {
        self.saves.lock().unwrap().clone()
    }

    fn count(&self, operation: &'static str) {
        *self
            .operations
            .lock()
            .unwrap()
            .entry(operation)
            .or_default() += 1;
    }

    fn operations(&self) -> HashMap<&'static str, u64> {
        self.operations.lock().unwrap().clone()
    }

    /// `write`, noting when it returned if it saved new tokens (a record without a mark).
    async fn timed(
        &self,
        record: &TokenRecord,
        write: impl Future<Output = StoreResult<u64>>,
    ) -> StoreResult<u64> {
        let saving = record
            .refresh_in_flight
            .is_none()
            .then(|| fingerprint(record.tokens.access_token.expose_secret()));
        let started = now_us();
        let version = write.await?;
        if let Some(token) = saving {
            self.saves.lock().unwrap().push((token, started, now_us()));
        }
        Ok(version)
    }
}

#[async_trait]
impl TokenStore for TimedStore {
    async fn get(&self, key: &TokenKey) -> StoreResult<Option<TokenRecord>> {
        self.count("get");
        self.inner.get(key).await
    }

    async fn list(&self, query: &ListQuery) -> StoreResult<ListPage> {
        self.inner.list(query).await
    }

    async fn list_entries(&self, query: &ListQuery) -> StoreResult<EntryPage> {
        self.inner.list_entries(query).await
    }

    async fn list_headers(&self, query: &ListQuery) -> StoreResult<HeaderPage> {
        self.inner.list_headers(query).await
    }

    async fn header(&self, key: &TokenKey) -> StoreResult<Option<RecordHeader>> {
        self.count("header");
        self.inner.header(key).await
    }

    async fn insert(&self, record: TokenRecord) -> StoreResult<u64> {
        self.inner.insert(record).await
    }

    async fn put<'a>(
        &self,
        record: TokenRecord,
        expected_version: u64,
        lease: Option<&'a Lease>,
    ) -> StoreResult<u64> {
        self.count("put");
        let write = self.inner.put(record.clone(), expected_version, lease);
        self.timed(&record, write).await
    }

    async fn put_and_release<'a>(
        &self,
        record: TokenRecord,
        expected_version: u64,
        lease: &'a Lease,
    ) -> StoreResult<u64> {
        self.count("put_and_release");
        let write = self
            .inner
            .put_and_release(record.clone(), expected_version, lease);
        self.timed(&record, write).await
    }

    async fn delete(&self, key: &TokenKey, expected_version: Option<u64>) -> StoreResult<bool> {
        self.inner.delete(key, expected_version).await
    }

    async fn try_acquire(
        &self,
        key: &TokenKey,
        holder: &str,
        ttl: Duration,
    ) -> StoreResult<Option<Lease>> {
        self.count("try_acquire");
        self.inner.try_acquire(key, holder, ttl).await
    }

    async fn release(&self, lease: &Lease) -> StoreResult<()> {
        self.count("release");
        self.inner.release(lease).await
    }

    async fn lease(&self, key: &TokenKey) -> StoreResult<Option<Lease>> {
        self.count("lease");
        self.inner.lease(key).await
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> StoreResult<Option<Lease>> {
        self.count("renew");
        self.inner.renew(lease, ttl).await
    }

    async fn take_over(
        &self,
        stale: &Lease,
        holder: &str,
        ttl: Duration,
    ) -> StoreResult<Option<Lease>> {
        self.count("take_over");
        self.inner.take_over(stale, holder, ttl).await
    }

    async fn watch(&self, key: &TokenKey) -> StoreResult<Watch> {
        self.inner.watch(key).await
    }

    fn changes(&self) -> Option<Changes> {
        self.inner.changes()
    }
}

// ---------------------------------------------------------------------------------------------
// The children.

fn child(role: &str) -> ! {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(async {
        match role {
            "adopt" => adopt_child().await,
            "refresh" => refresh_child().await,
            "raw" => raw_child().await,
            other => panic!("unknown child role {other:?}"),
        }
    });
    println!("{report}");
    std::process::exit(0);
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// The next line the parent writes, read off the runtime's thread.
async fn parent_says() -> String {
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
        line.trim().to_owned()
    })
    .await
    .unwrap()
}

fn child_client(session: Duration) -> OAuthClient {
    let app = ConnectedApp::new(env(var::CLIENT_ID)).with_secret(env(var::CLIENT_SECRET));
    OAuthClient::new(LoginHost::my_domain(&env(var::LOGIN_URL)).unwrap(), app)
        .with_session_timeout(session)
}

/// Calls `access_token()` every millisecond until the moment the parent names, noting when
/// each new token was first returned.
async fn adopt_child() -> Value {
    let backend = Backend::parse(&env(var::BACKEND));
    let store = TimedStore::new(
        backend
            .open(&env(var::LOCATION), &env(var::STORE_KEY))
            .await,
    );
    let key: TokenKey = env(var::TOKEN_KEY).parse().unwrap();
    let manager = TokenManager::builder(child_client(ADOPT_SESSION))
        .store(store.clone())
        .policy(
            RefreshPolicy::default()
                .margin(ADOPT_MARGIN)
                .jitter(Duration::ZERO)
                .lease_wait(Duration::from_secs(10)),
        )
        .build()
        .await
        .unwrap();
    manager.load_all().await.unwrap();
    println!("fleet-child: ready");
    let until_us: i64 = parent_says().await.parse().unwrap();
    let mut seen: Vec<(u64, i64)> = Vec::new();
    let mut last = None;
    let mut errors: Vec<String> = Vec::new();
    while now_us() < until_us {
        match manager.access_token(&key).await {
            Ok(token) => {
                let at = now_us();
                let token = fingerprint(token.secret());
                if last != Some(token) {
                    seen.push((token, at));
                    last = Some(token);
                }
            }
            Err(error) => errors.push(format!("{}: {error}", error.kind().as_str())),
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    manager.shutdown(Duration::from_secs(5)).await;
    json!({
        "seen": seen,
        "saves": store.saves(),
        "errors": errors,
        "token_requests": manager.stats().token_requests,
    })
}

/// Loads every tenant, runs the background refresher until the parent says stop, and reports
/// its saves.
async fn refresh_child() -> Value {
    let backend = Backend::parse(&env(var::BACKEND));
    let store = TimedStore::new(
        backend
            .open(&env(var::LOCATION), &env(var::STORE_KEY))
            .await,
    );
    let manager = TokenManager::builder(child_client(LONG_SESSION))
        .store(store.clone())
        .policy(
            RefreshPolicy::default()
                .margin(REFRESH_MARGIN)
                .jitter(Duration::ZERO),
        )
        .build()
        .await
        .unwrap();
    let loaded = manager.load_all().await.unwrap();
    assert_eq!(loaded, TENANTS, "a worker loaded another number of tenants");
    let refresher = manager.spawn_refresher(
        BackgroundConfig::default()
            .interval(SCAN_INTERVAL)
            .concurrency(WORKER_CONCURRENCY)
            .spread(SPREAD),
    );
    let cpu_ready = cpu_seconds();
    // The warm start's reads are not the refresh's.
    let loading = store.operations();
    println!("fleet-child: ready {}", now_us());
    if parent_says().await != "stop" {
        // The parent is gone (it failed): nobody reads a report.
        std::process::exit(1);
    }
    refresher.shutdown().await;
    manager.shutdown(Duration::from_secs(5)).await;
    let saves = store.saves();
    let stats = manager.stats();
    json!({
        "cpu_s": cpu_seconds() - cpu_ready,
        "operations": store
            .operations()
            .into_iter()
            .map(|(name, n)| (name, n - loading.get(name).copied().unwrap_or(0)))
            .collect::<HashMap<_, _>>(),
        "saves": saves.len(),
        "first_save_us": saves.iter().map(|save| save.2).min(),
        "last_save_us": saves.iter().map(|save| save.2).max(),
        "token_requests": stats.token_requests,
        "refresh_failures": stats.refresh_failures,
        "background_adopted": stats.background_adopted,
        "background_skipped": stats.background_skipped,
    })
}

/// The CPU time this process has used, user and system, in seconds (0 where `/proc` is
/// missing): what a worker's part of the refresh figure cost, which a loaded machine's wall
/// time hides.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields 14 and 15 (utime, stime) in clock ticks, counted after the command's closing
    // parenthesis, which may itself contain spaces; Linux's tick is 100 Hz.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Posts the refresh tokens the parent writes (one a line, then an empty line) as refresh
/// grants, [`PROCESSES`] × [`WORKER_CONCURRENCY`] at a time, with a plain reqwest client.
async fn raw_child() -> Value {
    let tokens = tokio::task::spawn_blocking(|| {
        std::io::stdin()
            .lines()
            .map(Result::unwrap)
            .take_while(|line| !line.trim().is_empty())
            .collect::<Vec<String>>()
    })
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let url = env(var::TOKEN_URL);
    let (client_id, client_secret) = (env(var::CLIENT_ID), env(var::CLIENT_SECRET));
    let bodies: Vec<String> = tokens
        .iter()
        .map(|token| {
            sfauth::url::form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", token)
                .append_pair("client_id", &client_id)
                .append_pair("client_secret", &client_secret)
                .finish()
        })
        .collect();
    let bodies = Arc::new(Mutex::new(bodies));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..PROCESSES * WORKER_CONCURRENCY {
        let (client, url, bodies) = (client.clone(), url.clone(), bodies.clone());
        workers.spawn(async move {
            let mut ok = 0u64;
            loop {
                let Some(body) = bodies.lock().unwrap().pop() else {
                    return ok;
                };
                let response = client
                    .post(&url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success(), "{}", response.status());
                // Read to the end, as a client must to use the answer.
                response.bytes().await.unwrap();
                ok += 1;
            }
        });
    }
    let ok: u64 = workers.join_all().await.iter().sum();
    let seconds = started.elapsed().as_secs_f64();
    json!({ "ok": ok, "seconds": seconds })
}

// ---------------------------------------------------------------------------------------------
// The parent.

/// A child process, its stdin and its stdout.
struct Running {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Running {
    /// Starts this binary as a child in `role`, with `envs`, and waits for its ready line (whose
    /// rest it returns).
    fn start(role: &str, envs: &[(&str, String)]) -> (Self, String) {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .env(var::CHILD, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, value) in envs {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut running = Self {
            child,
            stdin,
            stdout,
        };
        let rest = if role == "raw" {
            String::new()
        } else {
            running.line_starting("fleet-child: ready")
        };
        (running, rest)
    }

    /// Reads lines until one starts with `prefix`; returns the rest of it.
    fn line_starting(&mut self, prefix: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line).unwrap() == 0 {
                panic!("a fleet child ended early: {:?}", self.child.wait());
            }
            if let Some(rest) = line.trim().strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
        }
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Waits for the child's report line and its exit.
    fn report(mut self) -> Value {
        let line = self.line_starting("{");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "a fleet child failed: {status}");
        serde_json::from_str(&format!("{{{line}")).unwrap()
    }
}

/// The environment every child of a fleet gets.
fn fleet_env(
    backend: Backend,
    emulator: &Emulator,
    location: &str,
    store_key: &str,
) -> Vec<(&'static str, String)> {
    let creds = emulator.credentials();
    vec![
        (var::BACKEND, backend.name().to_owned()),
        (var::LOCATION, location.to_owned()),
        (var::STORE_KEY, store_key.to_owned()),
        (var::LOGIN_URL, emulator.base_url().to_owned()),
        (var::CLIENT_ID, creds.client_id.clone()),
        (var::CLIENT_SECRET, creds.client_secret.clone()),
        (var::TOKEN_URL, emulator.token_url()),
    ]
}

fn client_of(emulator: &Emulator, session: Duration) -> OAuthClient {
    let creds = emulator.credentials();
    OAuthClient::new(
        LoginHost::my_domain(emulator.base_url()).unwrap(),
        ConnectedApp::new(creds.client_id.clone())
            .with_secret(creds.client_secret.clone())
            .with_redirect_uri(&creds.callback_url)
            .unwrap(),
    )
    .with_session_timeout(session)
}

fn transport() -> Arc<ReqwestTransport> {
    Arc::new(
        ReqwestTransport::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    )
}

/// The `q` quantile of `sorted` (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The adoption figures of `backend` (see the module docs).
async fn adopt(backend: Backend) -> Map<String, Value> {
    let name = backend.name();
    let expiries: u64 = std::env::var(var::EXPIRIES)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(ADOPT_EXPIRIES);
    let emulator = Emulator::builder()
        .auto_approve(true)
        .app_policy(|policy| {
            policy.rotation = true;
            policy.session_timeout_secs = ADOPT_SESSION.as_secs();
            policy.refresh_latency_ms = u64::try_from(ADOPT_LATENCY.as_millis()).unwrap();
        })
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let location = backend.location(dir.path(), "adopt");
    let store_key: String = (*Key::generate().to_base64()).clone();
    let store = backend.open(&location, &store_key).await;
    let client = client_of(&emulator, ADOPT_SESSION);
    let transport = transport();
    let tokens = common::login(&client, transport.as_ref()).await;
    let manager = TokenManager::builder(client)
        .transport(transport)
        .store(store.clone())
        .build()
        .await
        .unwrap();
    let token_key = manager.store_tokens(tokens, "fleet").await.unwrap();
    drop(manager);

    let mut envs = fleet_env(backend, &emulator, &location, &store_key);
    envs.push((var::TOKEN_KEY, token_key.to_string()));
    let mut children: Vec<Running> = (0..PROCESSES)
        .map(|_| Running::start("adopt", &envs).0)
        .collect();
    emulator.reset_counters();
    // A cycle is the time to the refresh point, plus the refresh.
    let cycle = ADOPT_SESSION - ADOPT_MARGIN + ADOPT_LATENCY + Duration::from_millis(20);
    let run_us = i64::try_from((cycle * u32::try_from(expiries).unwrap()).as_micros()).unwrap();
    let until_us = now_us() + run_us;
    for child in &mut children {
        child.say(&until_us.to_string());
    }
    let reports: Vec<Value> = children.into_iter().map(Running::report).collect();
    let grants = emulator.counters().grant("refresh_token");
    emulator.shutdown().await;
    drop(store);
    backend.clean_up(&location).await;

    // Who saved each generation, and when its save returned.
    let mut saved: HashMap<u64, (usize, i64, i64)> = HashMap::new();
    let mut errors: Vec<String> = Vec::new();
    let mut token_requests = 0;
    for (process, report) in reports.iter().enumerate() {
        for save in report["saves"].as_array().unwrap() {
            let token = save[0].as_u64().unwrap();
            let (started, done) = (save[1].as_i64().unwrap(), save[2].as_i64().unwrap());
            let earlier = saved.insert(token, (process, started, done));
            assert!(earlier.is_none(), "one generation saved twice");
        }
        errors.extend(
            report["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap().to_owned()),
        );
        token_requests += report["token_requests"].as_u64().unwrap();
    }
    // Generations saved late in the run may not have reached every loser before it stopped.
    let counted_until = until_us - 200_000;
    let mut delays_ms = Vec::new();
    let mut from_start_ms = Vec::new();
    let mut missed = 0u64;
    let mut counted = 0u64;
    for (&token, &(winner, started, done)) in &saved {
        if done > counted_until {
            continue;
        }
        counted += 1;
        for (process, report) in reports.iter().enumerate() {
            if process == winner {
                continue;
            }
            let first_seen = report["seen"]
                .as_array()
                .unwrap()
                .iter()
                .find(|seen| seen[0].as_u64() == Some(token))
                .map(|seen| seen[1].as_i64().unwrap());
            match first_seen {
                Some(at) => {
                    delays_ms.push((at - done) as f64 / 1000.0);
                    from_start_ms.push((at - started) as f64 / 1000.0);
                }
                None => missed += 1,
            }
        }
    }
    assert!(
        errors.is_empty(),
        "{name}: callers got {} errors, the first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(!delays_ms.is_empty(), "{name}: no generation was adopted");
    delays_ms.sort_by(f64::total_cmp);
    from_start_ms.sort_by(f64::total_cmp);
    println!(
        "{name}: {counted} expiries, {} adoptions, {missed} missed, {grants} refresh grants",
        delays_ms.len()
    );
    let mut figures = Map::new();
    let mut put = |what: &str, value: Value| {
        figures.insert(format!("fleet_adopt_{what}_{name}"), value);
    };
    put("p99_ms", json!(quantile(&delays_ms, 0.99)));
    put("p50_ms", json!(quantile(&delays_ms, 0.50)));
    put("max_ms", json!(delays_ms[delays_ms.len() - 1]));
    put("min_ms", json!(delays_ms[0]));
    put(
        "p99_from_write_start_ms",
        json!(quantile(&from_start_ms, 0.99)),
    );
    put("expiries", json!(counted));
    put("samples", json!(delays_ms.len()));
    put("missed", json!(missed));
    put("token_requests", json!(grants));
    put("manager_token_requests", json!(token_requests));
    figures
}

/// The raw refresh-grant throughput of `emulator`: seconds a plain client took to post
/// `tokens` at the fleet's concurrency, from a process of its own.
async fn raw_refresh_seconds(emulator: &Emulator, tokens: &[String]) -> f64 {
    let envs = fleet_env(Backend::Redis, emulator, "", "");
    let (mut raw, _) = Running::start("raw", &envs);
    let before = emulator.counters().grant("refresh_token");
    for token in tokens {
        raw.say(token);
    }
    raw.say("");
    let report = tokio::task::spawn_blocking(move || raw.report())
        .await
        .unwrap();
    let grants = emulator.counters().grant("refresh_token") - before;
    assert_eq!(report["ok"].as_u64(), Some(tokens.len() as u64));
    assert_eq!(grants, tokens.len() as u64, "the raw client's grants");
    report["seconds"].as_f64().unwrap()
}

/// `n` logins at `emulator`, 32 at a time.
async fn logins(
    client: &OAuthClient,
    transport: &Arc<ReqwestTransport>,
    n: usize,
) -> Vec<TokenSet> {
    const AT_ONCE: usize = 32;
    let mut tasks = tokio::task::JoinSet::new();
    for part in 0..AT_ONCE {
        let (client, transport) = (client.clone(), transport.clone());
        tasks.spawn(async move {
            let mut tokens = Vec::new();
            for _ in (part..n).step_by(AT_ONCE) {
                tokens.push(common::login(&client, transport.as_ref()).await);
            }
            tokens
        });
    }
    tasks.join_all().await.into_iter().flatten().collect()
}

/// The fleet refresh figures of `backend` (see the module docs), with the raw baseline measured
/// just before on the same emulator.
async fn refresh_fleet(backend: Backend) -> Map<String, Value> {
    let name = backend.name();
    let emulator = Emulator::builder()
        .auto_approve(true)
        .app_policy(|policy| {
            policy.rotation = true;
            policy.session_timeout_secs = LONG_SESSION.as_secs();
            policy.max_approvals_per_user = 4 * TENANTS;
        })
        .start()
        .await
        .unwrap();
    let client = client_of(&emulator, LONG_SESSION);
    let transport = transport();

    let started = Instant::now();
    let raw_tokens: Vec<String> = logins(&client, &transport, TENANTS)
        .await
        .into_iter()
        .map(|tokens| tokens.refresh_token.unwrap().expose_secret().to_owned())
        .collect();
    println!(
        "{name}: {TENANTS} logins for the raw baseline in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let raw = raw_refresh_seconds(&emulator, &raw_tokens).await;

    let started = Instant::now();
    let logins = logins(&client, &transport, TENANTS).await;
    println!(
        "{name}: {TENANTS} logins for the fleet in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().unwrap();
    let location = backend.location(dir.path(), "refresh");
    let store_key: String = (*Key::generate().to_base64()).clone();
    let store = backend.open(&location, &store_key).await;

    // Every tenant falls due at `due_us`: far enough ahead for eight workers to load them all.
    // Seeding PostgreSQL is one durable commit per tenant: about 20 s here.
    let lead = Duration::from_secs(match backend {
        Backend::Postgres => 40,
        _ => 15,
    });
    let due = SystemTime::now() + lead;
    let started = Instant::now();
    let mut seeding = tokio::task::JoinSet::new();
    let logins = Arc::new(Mutex::new(
        logins.into_iter().enumerate().collect::<Vec<_>>(),
    ));
    for _ in 0..16 {
        let (store, logins, host) = (store.clone(), logins.clone(), client.host().clone());
        let client_id = client.app().client_id().to_owned();
        seeding.spawn(async move {
            loop {
                let Some((i, mut tokens)) = logins.lock().unwrap().pop() else {
                    return;
                };
                let key = TokenKey::new(&host, &tokens.identity, &client_id, &format!("t{i}"));
                tokens.expires_at = Some(due + REFRESH_MARGIN);
                store
                    .insert(TokenRecord::new(key, tokens, SystemTime::now()))
                    .await
                    .unwrap();
            }
        });
    }
    seeding.join_all().await;
    println!(
        "{name}: {TENANTS} tenants stored in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let envs = fleet_env(backend, &emulator, &location, &store_key);
    // From here on every refresh grant is the fleet's (a worker may start before the last is
    // ready, if loading took longer than the lead).
    emulator.reset_counters();
    let started = Instant::now();
    let mut workers = Vec::new();
    let mut ready_us = 0i64;
    for _ in 0..PROCESSES {
        let (worker, ready) = Running::start("refresh", &envs);
        ready_us = ready_us.max(ready.parse().unwrap());
        workers.push(worker);
    }
    println!(
        "{name}: {PROCESSES} workers loaded the tenants in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let due_us = i64::try_from(due.duration_since(UNIX_EPOCH).unwrap().as_micros()).unwrap();
    let window_us = due_us - i64::try_from(SPREAD.as_micros()).unwrap();
    if ready_us > window_us {
        eprintln!(
            "!!! {name}: the workers were ready {:.1}s after the refresh window opened; the \
             throughput is counted from then !!!",
            (ready_us - window_us) as f64 / 1e6
        );
    }
    let start_us = window_us.max(ready_us);

    // Until every tenant is refreshed, or nothing moved for half a minute (then the figures
    // say how far the fleet got, and the exact count misses its target).
    let start_at =
        Instant::now() + Duration::from_micros(u64::try_from(start_us - now_us()).unwrap_or(0));
    // (grants, when they last changed); `elapsed` is zero until the window opens.
    let mut last = (0, start_at);
    loop {
        let grants = emulator.counters().grant("refresh_token");
        if grants >= TENANTS as u64 {
            break;
        }
        if grants != last.0 {
            last = (grants, Instant::now());
        } else if last.1.elapsed() > STALL {
            eprintln!(
                "!!! {name}: the fleet refreshed {grants} of {TENANTS} tenants and then nothing \
                 for {}s; stopping it there !!!",
                STALL.as_secs()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Room for any superfluous request to show up in the count.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for worker in &mut workers {
        worker.say("stop");
    }
    let reports = tokio::task::spawn_blocking(move || {
        workers.into_iter().map(Running::report).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let counters = emulator.counters();
    emulator.shutdown().await;
    drop(store);
    backend.clean_up(&location).await;

    let sum = |field: &str| -> u64 {
        reports
            .iter()
            .map(|report| report[field].as_u64().unwrap())
            .sum()
    };
    let last_save_us = reports
        .iter()
        .filter_map(|report| report["last_save_us"].as_i64())
        .max()
        .unwrap();
    let seconds = (last_save_us - start_us) as f64 / 1e6;
    let grants = counters.grant("refresh_token");
    let refreshed = sum("saves");
    let cpu: f64 = reports
        .iter()
        .map(|report| report["cpu_s"].as_f64().unwrap_or(0.0))
        .sum();
    // Store operations by kind over the fleet, from ready to stop.
    let mut operations: std::collections::BTreeMap<String, u64> = Default::default();
    for report in &reports {
        for (name, n) in report["operations"].as_object().unwrap() {
            *operations.entry(name.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    let per_refresh = operations.values().sum::<u64>() as f64 / refreshed.max(1) as f64;
    println!("{name}: store operations per refresh {per_refresh:.2}: {operations:?}");
    println!(
        "{name}: {grants} refresh grants, {} rotated, {} reused, {} rejected; {} saves, {} \
         failures, {} adopted, {} skipped; {seconds:.2}s against {raw:.2}s raw; the workers \
         used {cpu:.2}s of CPU from ready to stop",
        counters.refresh_tokens_rotated,
        counters.refresh_tokens_reused,
        counters.refresh_tokens_rejected,
        sum("saves"),
        sum("refresh_failures"),
        sum("background_adopted"),
        sum("background_skipped"),
    );
    let mut figures = Map::new();
    let mut put = |what: &str, value: Value| {
        figures.insert(format!("fleet_refresh_{what}_{name}"), value);
    };
    // Tenants refreshed per second, over the raw client's grants per second.
    put(
        "ratio",
        json!((refreshed as f64 / seconds) / (TENANTS as f64 / raw)),
    );
    put("token_requests", json!(grants));
    put("s", json!(seconds));
    put("raw_s", json!(raw));
    put("saves", json!(sum("saves")));
    put("failures", json!(sum("refresh_failures")));
    put("reused", json!(counters.refresh_tokens_reused));
    put("adopted", json!(sum("background_adopted")));
    put("skipped", json!(sum("background_skipped")));
    put("worker_cpu_s", json!(cpu));
    put("store_operations_per_refresh", json!(per_refresh));
    figures
}

/// Median µs of our `get` of one record and of a raw read of the same stored bytes (see the
/// module docs), measured interleaved.
async fn store_get(backend: Backend, url: &str) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let location = backend.location(dir.path(), "get");
    let store_key: String = (*Key::generate().to_base64()).clone();
    let store = backend.open(&location, &store_key).await;
    let key = common::key(1);
    store
        .insert(TokenRecord::new(
            key.clone(),
            common::tokens(1),
            SystemTime::now(),
        ))
        .await
        .unwrap();
    let name = key.to_string();
    let raw: Box<dyn RawRead> = match backend {
        Backend::Redis => {
            let client = redis::Client::open(url).unwrap();
            Box::new(RawRedis {
                conn: client.get_connection_manager().await.unwrap(),
                key: format!("{location}record:{name}"),
            })
        }
        Backend::Postgres => Box::new(RawPostgres {
            pool: sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await
                .unwrap(),
            sql: format!(
                "SELECT version, status, sealed, org_id, user_id, client_id, key_id \
                 FROM \"{location}\".token_records WHERE key = $1"
            ),
            key: name,
        }),
        Backend::Sqlite => unreachable!("no raw read for SQLite here"),
    };
    let sealed_len = raw.read().await;
    assert!(sealed_len > 0, "the raw read found the record");
    let mut ours = Vec::with_capacity(GET_ROUNDS);
    let mut theirs = Vec::with_capacity(GET_ROUNDS);
    for round in 0..GET_ROUNDS + 200 {
        // Alternate which side goes first, so that neither always follows the other.
        for side in [round % 2, 1 - round % 2] {
            let started = Instant::now();
            if side == 0 {
                let record = store.get(&key).await.unwrap().unwrap();
                std::hint::black_box(record.version);
            } else {
                std::hint::black_box(raw.read().await);
            }
            let micros = started.elapsed().as_secs_f64() * 1e6;
            // The first rounds warm up connections and caches.
            if round >= 200 {
                if side == 0 {
                    ours.push(micros);
                } else {
                    theirs.push(micros);
                }
            }
        }
    }
    drop(raw);
    drop(store);
    backend.clean_up(&location).await;
    ours.sort_by(f64::total_cmp);
    theirs.sort_by(f64::total_cmp);
    (quantile(&ours, 0.5), quantile(&theirs, 0.5))
}

/// A read of one record's stored bytes through the client library alone.
#[async_trait]
trait RawRead: Send + Sync {
    /// Reads the record; returns the sealed bytes' length.
    async fn read(&self) -> usize;
}

struct RawRedis {
    conn: redis::aio::ConnectionManager,
    key: String,
}

#[async_trait]
impl RawRead for RawRedis {
    async fn read(&self) -> usize {
        let mut conn = self.conn.clone();
        let fields: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(&self.key)
            .arg(&REDIS_RECORD_FIELDS)
            .query_async(&mut conn)
            .await
            .unwrap();
        fields[1].as_ref().map_or(0, Vec::len)
    }
}

struct RawPostgres {
    pool: sqlx::PgPool,
    sql: String,
    key: String,
}

#[async_trait]
impl RawRead for RawPostgres {
    async fn read(&self) -> usize {
        use sqlx::Row as _;
        let row = sqlx::query(&self.sql)
            .bind(&self.key)
            .fetch_one(&self.pool)
            .await
            .unwrap();
        // The same columns, out of the row as the store takes them, but not opened.
        let version: i64 = row.get("version");
        let sealed: &[u8] = row.get("sealed");
        let texts: [&str; 5] =
            ["status", "org_id", "user_id", "client_id", "key_id"].map(|column| row.get(column));
        std::hint::black_box((version, texts));
        sealed.len()
    }
}
