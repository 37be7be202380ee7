//! The fleet: eight OS processes share one store and one rotating tenant, each calling
//! `access_token()` in a loop and each running the background refresher, across many expiries
//! of a short session. Fleet-wide, each expiry must cost exactly one token request.
//!
//! The children are this test binary run again with `--exact <test>` and `SFAUTH_FLEET_CHILD`
//! set (as in `crash.rs`): no cargo, no extra binary. Each opens the same store, builds a
//! `TokenManager` with production defaults except the margins a two-second session needs, and
//! reports what it saw as one JSON line.
//!
//! Pass, per store: zero refresh tokens reused or refused at the emulator (a second refresh of
//! one generation would be one or the other, with rotation on), exactly as many refresh grants
//! as rotations, at most one refresh per session lifetime of wall time (plus one), at least one
//! per two lifetimes (refreshes happened), the stored refresh token the one the emulator holds
//! current, and not a single caller error. Midway, the process holding the refresh lease is
//! SIGKILLed (while a slowed refresh is in flight when the timing allows): the others take the
//! lease over and go on; a rotation lost with it must show as the write-ahead mark, and is
//! counted, never silent. In that one case the survivors make exactly one careful attempt with
//! the stored token once the access token is dying, which Salesforce refuses as rotated out
//! (one reuse, one refusal, one grant without rotation), and the tenant is marked for
//! re-authorization.
//!
//! `SFAUTH_FLEET_EXPIRIES` sets the number of session lifetimes per store (default
//! [`DEFAULT_EXPIRIES`], small for CI; the full run is 200).

#![cfg(target_os = "linux")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::arithmetic_side_effects,
    reason = "a test fails by panicking and reports its counts on the console"
)]

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sfauth::oauth::{ConnectedApp, LoginHost, OAuthClient, TokenKey};
use sfauth::storage::{Key, Keyring, TokenStore};
use sfauth::{
    BackgroundConfig, FileStore, PostgresStore, RedisStore, RefreshPolicy, SqliteStore,
    TokenManager,
};
use sfauth_emulator::{Clock, RefreshTokenStatus};
use sfauth_tests::Env;

/// Session lifetimes per store when `SFAUTH_FLEET_EXPIRIES` is not set.
const DEFAULT_EXPIRIES: u64 = 12;
/// Processes sharing the store.
const PROCESSES: usize = 8;
/// The emulator's session timeout, and what the clients are told.
const SESSION: Duration = Duration::from_secs(2);
/// How long before the end of a session it is refreshed, and up to how much earlier.
const MARGIN: Duration = Duration::from_millis(700);
const JITTER: Duration = Duration::from_millis(100);
/// How often each child's background refresher scans (and so its spread).
const SCAN: Duration = Duration::from_millis(100);

mod var {
    pub(crate) const CHILD: &str = "SFAUTH_FLEET_CHILD";
    pub(crate) const LOCATION: &str = "SFAUTH_FLEET_LOCATION";
    pub(crate) const STORE_KEY: &str = "SFAUTH_FLEET_STORE_KEY";
    pub(crate) const TOKEN_KEY: &str = "SFAUTH_FLEET_TOKEN_KEY";
    pub(crate) const LOGIN_URL: &str = "SFAUTH_FLEET_LOGIN_URL";
    pub(crate) const CLIENT_ID: &str = "SFAUTH_FLEET_CLIENT_ID";
    pub(crate) const CLIENT_SECRET: &str = "SFAUTH_FLEET_CLIENT_SECRET";
    pub(crate) const RUN_MS: &str = "SFAUTH_FLEET_RUN_MS";
    pub(crate) const REDIS: &str = "SFAUTH_TEST_REDIS_URL";
    pub(crate) const POSTGRES: &str = "SFAUTH_TEST_POSTGRES_URL";
}

const REDIS_DEFAULT: &str = "redis://127.0.0.1:6379";
const POSTGRES_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Clone, Copy, Debug)]
enum Backend {
    File,
    Sqlite,
    /// The location is a key prefix on the server of `SFAUTH_TEST_REDIS_URL`.
    Redis,
    /// The location is a schema on the server of `SFAUTH_TEST_POSTGRES_URL`.
    Postgres,
}

impl Backend {
    fn test_name(self) -> &'static str {
        match self {
            Self::File => "file_store_fleet_refreshes_once_per_expiry",
            Self::Sqlite => "sqlite_store_fleet_refreshes_once_per_expiry",
            Self::Redis => "redis_store_fleet_refreshes_once_per_expiry",
            Self::Postgres => "postgres_store_fleet_refreshes_once_per_expiry",
        }
    }

    /// Where the fleet's store lives, given the test's private directory.
    fn location(self, dir: &std::path::Path) -> String {
        let unique = format!("sfauth_fleet_{}", std::process::id());
        match self {
            Self::File => dir.join("tokens").display().to_string(),
            Self::Sqlite => dir.join("tokens.db").display().to_string(),
            Self::Redis => format!("{unique}:"),
            Self::Postgres => unique,
        }
    }

    /// The server this backend needs, if any; `None` means skip (see `server_url`).
    fn server(self) -> Option<Option<String>> {
        match self {
            Self::File | Self::Sqlite => Some(None),
            Self::Redis => sfauth_tests::server_url(var::REDIS, REDIS_DEFAULT, "Redis").map(Some),
            Self::Postgres => {
                sfauth_tests::server_url(var::POSTGRES, POSTGRES_DEFAULT, "PostgreSQL").map(Some)
            }
        }
    }

    fn url(var: &str, default: &str) -> String {
        std::env::var(var).unwrap_or_else(|_| default.to_owned())
    }

    async fn open(self, location: &str, key: &str) -> Arc<dyn TokenStore> {
        let keyring = Keyring::new(Key::from_base64(key).unwrap());
        match self {
            Self::File => Arc::new(FileStore::open(PathBuf::from(location), keyring).unwrap()),
            Self::Sqlite => Arc::new(SqliteStore::open(location, keyring).await.unwrap()),
            Self::Redis => Arc::new(
                RedisStore::builder(&Self::url(var::REDIS, REDIS_DEFAULT), keyring)
                    .prefix(location)
                    .connect()
                    .await
                    .unwrap(),
            ),
            Self::Postgres => Arc::new(
                PostgresStore::connect_with_schema(
                    &Self::url(var::POSTGRES, POSTGRES_DEFAULT),
                    location,
                    keyring,
                )
                .await
                .unwrap(),
            ),
        }
    }

    /// Removes what a server-backed run left on the server.
    async fn clean_up(self, location: &str) {
        match self {
            Self::File | Self::Sqlite => {}
            Self::Redis => {
                sfauth_tests::remove_redis_prefix(&Self::url(var::REDIS, REDIS_DEFAULT), location)
                    .await
                    .unwrap();
            }
            Self::Postgres => {
                sfauth_tests::drop_postgres_schema(
                    &Self::url(var::POSTGRES, POSTGRES_DEFAULT),
                    location,
                )
                .await
                .unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_fleet_refreshes_once_per_expiry() {
    run(Backend::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_fleet_refreshes_once_per_expiry() {
    run(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_fleet_refreshes_once_per_expiry() {
    run(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_fleet_refreshes_once_per_expiry() {
    run(Backend::Postgres).await;
}

async fn run(backend: Backend) {
    if std::env::var(var::CHILD).is_ok() {
        child(backend).await;
    }
    parent(backend).await;
}

/// What one child saw, as it prints it: counts and a few samples, never every error, so that
/// a run where every call fails still prints a short line (a long one could fill the pipe
/// while the parent waits for the child to exit).
#[derive(Debug, Default)]
struct Report {
    calls: u64,
    /// Errors of any kind.
    errors: u64,
    /// Errors other than `reauthorization_required`.
    other_errors: u64,
    /// The first few distinct error messages.
    samples: Vec<String>,
    token_requests: u64,
}

/// Distinct error messages a child reports at most.
const SAMPLES: usize = 3;

impl Report {
    fn parse(line: &str) -> Self {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        Self {
            calls: value["calls"].as_u64().unwrap(),
            errors: value["errors"].as_u64().unwrap(),
            other_errors: value["other_errors"].as_u64().unwrap(),
            samples: value["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap().to_owned())
                .collect(),
            token_requests: value["token_requests"].as_u64().unwrap(),
        }
    }
}

fn policy() -> RefreshPolicy {
    RefreshPolicy::default()
        .margin(MARGIN)
        .jitter(JITTER)
        .lease_wait(Duration::from_secs(10))
}

async fn child(backend: Backend) -> ! {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .try_init();
    let get = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let store = backend
        .open(&get(var::LOCATION), &get(var::STORE_KEY))
        .await;
    let key: TokenKey = get(var::TOKEN_KEY).parse().unwrap();
    let app = ConnectedApp::new(get(var::CLIENT_ID)).with_secret(get(var::CLIENT_SECRET));
    let client = OAuthClient::new(LoginHost::my_domain(&get(var::LOGIN_URL)).unwrap(), app)
        .with_session_timeout(SESSION);
    let manager = TokenManager::builder(client)
        .store(store)
        .policy(policy())
        .build()
        .await
        .unwrap();
    manager.load_all().await.unwrap();
    let refresher = manager.spawn_refresher(BackgroundConfig::default().interval(SCAN));
    let run_for = Duration::from_millis(get(var::RUN_MS).parse().unwrap());
    let parent = std::os::unix::process::parent_id();
    let started = Instant::now();
    println!("fleet-child: ready");
    let mut report = Report::default();
    while started.elapsed() < run_for && std::os::unix::process::parent_id() == parent {
        report.calls += 1;
        if let Err(error) = manager.access_token(&key).await {
            report.errors += 1;
            if error.kind() != sfauth::ErrorKind::ReauthorizationRequired {
                report.other_errors += 1;
            }
            let sample = format!("{}: {error}", error.kind().as_str());
            if report.samples.len() < SAMPLES && !report.samples.contains(&sample) {
                report.samples.push(sample);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    refresher.shutdown().await;
    manager.shutdown(Duration::from_secs(5)).await;
    report.token_requests = manager.stats().token_requests;
    println!(
        "{}",
        serde_json::json!({
            "calls": report.calls,
            "errors": report.errors,
            "other_errors": report.other_errors,
            "samples": report.samples,
            "token_requests": report.token_requests,
        })
    );
    std::process::exit(0);
}

struct Running {
    child: Child,
    pid: u32,
}

fn expiries() -> u64 {
    std::env::var("SFAUTH_FLEET_EXPIRIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_EXPIRIES)
}

async fn parent(backend: Backend) {
    let Some(server) = backend.server() else {
        return;
    };
    let env = Env::start_with(|builder| builder.clock(Clock::system()))
        .await
        .unwrap();
    let client_id = env.creds().client_id.clone();
    env.emulator
        .set_policy(&client_id, |policy| {
            policy.rotation = true;
            policy.session_timeout_secs = SESSION.as_secs();
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let location = backend.location(dir.path());
    let store_key: String = (*Key::generate().to_base64()).clone();
    let store = backend.open(&location, &store_key).await;
    let client = env.client().unwrap().with_session_timeout(SESSION);
    let manager = env
        .manager_builder(client)
        .store(store.clone())
        .policy(policy())
        .build()
        .await
        .unwrap();
    let token_key = manager
        .store_tokens(env.login().await.unwrap(), "fleet")
        .await
        .unwrap();
    env.emulator.reset_counters();

    let run = SESSION * u32::try_from(expiries()).unwrap();
    let started = Instant::now();
    let mut children: Vec<(Running, BufReader<std::process::ChildStdout>)> = Vec::new();
    for _ in 0..PROCESSES {
        let mut running = spawn_with_reader(
            backend,
            &env,
            &location,
            &store_key,
            &token_key,
            run.as_millis(),
        );
        let reader = running.1.take().unwrap();
        children.push((running.0, reader));
    }

    // Midway, kill whichever child holds the lease (one that is refreshing).
    let killed = kill_the_holder(&store, &token_key, &mut children, started + run / 2).await;

    let mut reports = Vec::new();
    for (mut running, mut reader) in children {
        if Some(running.pid) == killed {
            continue;
        }
        let status = running.child.wait().unwrap();
        assert!(status.success(), "a fleet child failed: {status}");
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 {
            if line.trim_start().starts_with('{') {
                break;
            }
            line.clear();
        }
        reports.push(Report::parse(line.trim()));
    }
    let elapsed = started.elapsed();
    let counters = env.emulator.counters();
    let grants = counters.grant("refresh_token");
    let record = store.get(&token_key).await.unwrap().unwrap();
    let stored = record.tokens.refresh_token.as_ref().unwrap();
    let status = env.emulator.refresh_token_status(stored.expose_secret());
    // Before any assertion, so that a failing run leaves nothing on a shared server.
    if server.is_some() {
        backend.clean_up(&location).await;
    }
    let calls: u64 = reports.iter().map(|r| r.calls).sum();
    let errors: u64 = reports.iter().map(|r| r.errors).sum();
    let other_errors: u64 = reports.iter().map(|r| r.other_errors).sum();
    let samples: Vec<&String> = reports.iter().flat_map(|r| &r.samples).take(4).collect();
    // A generation lives from its issue to its refresh point: the session less the margin, at
    // most the jitter, and at most one scan interval (the background refresher's window opens
    // that long before the point). More refreshes than the wall time holds generations would be
    // waste (a refresh before its time); two of one generation would show as reuse or refusal.
    let shortest = SESSION - MARGIN - JITTER - SCAN;
    let most = elapsed.as_millis() / shortest.as_millis() + 2;
    let least = elapsed.as_millis() / (2 * SESSION.as_millis());
    println!(
        "fleet {backend:?}: {PROCESSES} processes, {calls} calls over {elapsed:?}, {grants} refresh \
         grants (bounds {least}..={most}), {} rotated, {} reused, {} refused, killed holder {killed:?}, \
         stored token {status:?}",
        counters.refresh_tokens_rotated,
        counters.refresh_tokens_reused,
        counters.refresh_tokens_rejected,
    );
    // Careful attempts: re-sends of a refresh token that may have been spent.
    let careful = if status == RefreshTokenStatus::Active {
        assert_eq!(
            errors, 0,
            "callers got {errors} errors, such as {samples:?}"
        );
        0
    } else {
        // The kill landed between Salesforce's rotation and the save: the one window no client
        // can close. It must be explained, not silent: the record says a rotation may have been
        // lost and asks for re-authorization, and that is the only error callers saw. The
        // survivors found the write-ahead mark and, once the access token was dying (nothing
        // left to lose, docs/reliability.md), made exactly one careful attempt with the stored
        // token, which Salesforce refused as rotated out: one reuse, one refusal, never two.
        assert!(killed.is_some(), "a loss without a kill: {status:?}");
        assert_eq!(
            record.status.kind(),
            sfauth::storage::StatusKind::ReauthRequired,
            "{:?}",
            record.status
        );
        assert_eq!(
            other_errors, 0,
            "callers got {other_errors} other errors, such as {samples:?}"
        );
        println!("fleet {backend:?}: 1 loss, explained (killed between rotation and save)");
        1
    };
    assert_eq!(
        counters.refresh_tokens_reused, careful,
        "a rotated-out token was presented other than in the one careful attempt"
    );
    assert_eq!(
        counters.refresh_tokens_rejected, careful,
        "a refresh was refused other than the one careful attempt"
    );
    assert_eq!(
        grants,
        counters.refresh_tokens_rotated + careful,
        "every refresh but the careful attempt rotated once"
    );
    assert!(
        u128::from(grants) <= most,
        "more than one refresh per expiry: {grants} > {most}"
    );
    assert!(
        u128::from(grants) >= least,
        "too few refreshes: {grants} < {least}"
    );
    manager.shutdown(Duration::from_secs(5)).await;
    env.emulator.shutdown().await;
}

fn spawn_with_reader(
    backend: Backend,
    env: &Env,
    location: &str,
    store_key: &str,
    token_key: &TokenKey,
    run_ms: u128,
) -> (Running, Option<BufReader<std::process::ChildStdout>>) {
    let creds = env.creds();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            backend.test_name(),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(var::CHILD, "1")
        .env(var::LOCATION, location)
        .env(var::STORE_KEY, store_key)
        .env(var::TOKEN_KEY, token_key.to_string())
        .env(var::LOGIN_URL, env.emulator.base_url())
        .env(var::CLIENT_ID, &creds.client_id)
        .env(var::CLIENT_SECRET, &creds.client_secret)
        .env(var::RUN_MS, run_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("a child ended before it was ready: {:?}", child.wait());
        }
        if line.contains("fleet-child: ready") {
            break;
        }
    }
    (Running { child, pid }, Some(reader))
}

/// From `at` on, watches the lease on `key` and SIGKILLs the child whose pid its holder name
/// carries; gives up after a few seconds (then nobody is killed and the run is only a fleet run).
async fn kill_the_holder(
    store: &Arc<dyn TokenStore>,
    key: &TokenKey,
    children: &mut [(Running, BufReader<std::process::ChildStdout>)],
    at: Instant,
) -> Option<u32> {
    tokio::time::sleep_until(at.into()).await;
    let deadline = Instant::now() + SESSION * 3;
    while Instant::now() < deadline {
        if let Some(lease) = store.lease(key).await.unwrap() {
            // Holder names are `sfauth:{host}:{pid}:{start}:{random}`.
            let pid: Option<u32> = lease.holder.split(':').nth(2).and_then(|p| p.parse().ok());
            if let Some((running, _)) = children.iter_mut().find(|(c, _)| Some(c.pid) == pid) {
                running.child.kill().unwrap();
                // Reaped at once, as its supervisor would: a zombie keeps its pid, and the others
                // take over only the lease of a process that is gone.
                running.child.wait().unwrap();
                return pid;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}
