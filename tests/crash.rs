//! SIGKILL at random moments: a child process refreshes one rotating tenant in a loop against
//! the emulator, the parent kills it, and after every kill the login must still be there.
//!
//! The child is this very test binary, run again with `--exact <this test>` and
//! `SFAUTH_CRASH_CHILD` set: the same test function then plays the child instead of the parent
//! (no cargo, no rebuild, no extra test in the list). It opens the same store (the same
//! directory or SQLite file, the same key), builds a `TokenManager` on the emulator and calls
//! `refresh` until it is killed, or until [`CHILD_DEADLINE`] passes or its parent goes away, so
//! that nothing outlives a parent that died.
//!
//! After each kill the parent lets the emulator finish whatever the child had sent (Salesforce
//! completes a rotation whether or not its client is still there), reads the record with a fresh
//! store handle, as the next process would, and asks the emulator where the stored refresh token
//! stands, without spending it:
//!
//! - **active**: nothing was lost, and every rotation the emulator made during the child's life
//!   has its successor saved (`refresh_count` moved by exactly the emulator's rotation count);
//! - **rotated out**: a loss. It must be explained: the record carries the write-ahead mark and
//!   the emulator rotated exactly once more than the store saved, i.e. the kill landed after
//!   Salesforce rotated and before the new token was durable. The tenant must then end as a
//!   clean `ReauthorizationRequired` saying an earlier request "may have rotated" the token
//!   (after one careful attempt, within a bounded time), and a new login restores it;
//! - anything else is an unexplained loss and fails the test.
//!
//! Kills are spread over the child's first [`KILL_WINDOW_MS`] after it is ready to refresh, and
//! one in four over its first [`STARTUP_WINDOW_MS`] (seeded; the seed is printed and
//! `SFAUTH_CRASH_SEED` replays the choices), and every third kill the emulator answers refreshes slowly,
//! after or before it commits the rotation, so that many kills land between rotation and answer.
//! `SFAUTH_CRASH_KILLS` sets the number of kills per store (default [`DEFAULT_KILLS`], small
//! enough for CI; the full run is `SFAUTH_CRASH_KILLS=1000`).
//!
//! `SFAUTH_CRASH_SHOW_CHILD=1` prints what each child wrote (progress lines and its warnings,
//! nothing secret), for a failure that needs a closer look.
//!
//! Linux only: finding that the killed child is gone (to take its lease over) and knowing that
//! the emulator has read every byte the child wrote both read `/proc`.

#![cfg(target_os = "linux")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test fails by panicking and reports its counts on the console"
)]

use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use sfauth::oauth::{Cause, ConnectedApp, LoginHost, OAuthClient, TokenKey};
use sfauth::storage::{Key, Keyring, RecordStatus, TokenRecord, TokenStore};
use sfauth::{ErrorKind, FileStore, SqliteStore, TokenManager};
use sfauth_emulator::{Counters, LatencyPlacement, RefreshTokenStatus};
use sfauth_tests::Env;

/// Kills per store when `SFAUTH_CRASH_KILLS` is not set.
const DEFAULT_KILLS: u64 = 40;
/// Most kills land uniformly within this many milliseconds of the child being ready.
const KILL_WINDOW_MS: u64 = 300;
/// The others land uniformly within this many milliseconds of its start.
const STARTUP_WINDOW_MS: u64 = 60;
/// The slow emulator's refresh latency, in milliseconds: wide enough that kills land between
/// rotation and answer often, short enough that the child still refreshes several times.
const SLOW_REFRESH_MS: u64 = 40;
/// A child exits on its own after this long, in case nobody kills it.
const CHILD_DEADLINE: Duration = Duration::from_secs(20);
/// The bound on every wait of the parent: reaping, the emulator settling, a resolution.
const WAIT_BOUND: Duration = Duration::from_secs(60);
/// The label the tenant is stored under.
const LABEL: &str = "crash";

/// Environment variables the parent hands to the child.
mod var {
    pub(crate) const CHILD: &str = "SFAUTH_CRASH_CHILD";
    pub(crate) const STORE_PATH: &str = "SFAUTH_CRASH_STORE_PATH";
    pub(crate) const STORE_KEY: &str = "SFAUTH_CRASH_STORE_KEY";
    pub(crate) const TOKEN_KEY: &str = "SFAUTH_CRASH_TOKEN_KEY";
    pub(crate) const LOGIN_URL: &str = "SFAUTH_CRASH_LOGIN_URL";
    pub(crate) const CLIENT_ID: &str = "SFAUTH_CRASH_CLIENT_ID";
    pub(crate) const CLIENT_SECRET: &str = "SFAUTH_CRASH_CLIENT_SECRET";
    pub(crate) const CALLBACK: &str = "SFAUTH_CRASH_CALLBACK";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_keeps_the_login_through_sigkills() {
    run(Backend::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_keeps_the_login_through_sigkills() {
    run(Backend::Sqlite).await;
}

/// The parent, or the child when `SFAUTH_CRASH_CHILD` says so.
async fn run(backend: Backend) {
    match std::env::var(var::CHILD) {
        Ok(name) => {
            assert_eq!(
                name,
                backend.name(),
                "the child runs the test it was started for"
            );
            child(backend).await
        }
        Err(_) => parent(backend).await,
    }
}

/// Every store that persists across processes. A new backend adds a variant here and a test
/// above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    File,
    Sqlite,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Sqlite => "sqlite",
        }
    }

    /// The test whose function plays this backend's child.
    fn test_name(self) -> &'static str {
        match self {
            Self::File => "file_store_keeps_the_login_through_sigkills",
            Self::Sqlite => "sqlite_store_keeps_the_login_through_sigkills",
        }
    }

    fn location(self, dir: &Path) -> PathBuf {
        match self {
            Self::File => dir.join("tokens"),
            Self::Sqlite => dir.join("tokens.db"),
        }
    }

    async fn open(self, path: &Path, key: &str) -> Opened {
        let keyring = Keyring::new(Key::from_base64(key).unwrap());
        match self {
            Self::File => Opened::File(Arc::new(FileStore::open(path, keyring).unwrap())),
            Self::Sqlite => {
                Opened::Sqlite(Arc::new(SqliteStore::open(path, keyring).await.unwrap()))
            }
        }
    }
}

/// A store handle, closable where the backend holds connections.
enum Opened {
    File(Arc<FileStore>),
    Sqlite(Arc<SqliteStore>),
}

impl Opened {
    fn store(&self) -> Arc<dyn TokenStore> {
        match self {
            Self::File(store) => store.clone(),
            Self::Sqlite(store) => store.clone(),
        }
    }

    async fn close(self) {
        if let Self::Sqlite(store) = self {
            store.close().await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The child.

/// Refreshes the tenant until killed. Prints one line per saved refresh and nothing secret; any
/// error ends the process with status 3, which the parent reports as a failure.
async fn child(backend: Backend) -> ! {
    watchdog();
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .try_init();
    let get = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let opened = backend
        .open(Path::new(&get(var::STORE_PATH)), &get(var::STORE_KEY))
        .await;
    let key: TokenKey = get(var::TOKEN_KEY).parse().unwrap();
    let app = ConnectedApp::new(get(var::CLIENT_ID))
        .with_secret(get(var::CLIENT_SECRET))
        .with_redirect_uri(&get(var::CALLBACK))
        .unwrap();
    let client = OAuthClient::new(LoginHost::my_domain(&get(var::LOGIN_URL)).unwrap(), app);
    // Production defaults throughout: the default transport, policy and holder name (the one
    // that lets the next process take a dead holder's lease over).
    let manager = TokenManager::builder(client)
        .store(opened.store())
        .build()
        .await
        .unwrap();
    let started = Instant::now();
    println!("crash-child: ready");
    let mut refreshes = 0u64;
    loop {
        match manager.refresh(&key).await {
            Ok(_) => {
                refreshes += 1;
                println!(
                    "crash-child: refreshed {refreshes} after {} ms",
                    started.elapsed().as_millis()
                );
            }
            Err(error) => {
                eprintln!(
                    "crash-child: refresh failed ({}): {}",
                    error.kind().as_str(),
                    chain(&error)
                );
                std::process::exit(3);
            }
        }
    }
}

/// Ends the child once [`CHILD_DEADLINE`] has passed or its parent is gone, whatever the
/// runtime is doing.
fn watchdog() {
    let parent = std::os::unix::process::parent_id();
    let started = Instant::now();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(50));
            if std::os::unix::process::parent_id() != parent {
                eprintln!("crash-child: the parent is gone; exiting");
                std::process::exit(124);
            }
            if started.elapsed() > CHILD_DEADLINE {
                eprintln!("crash-child: nobody killed me within {CHILD_DEADLINE:?}; exiting");
                std::process::exit(124);
            }
        }
    });
}

/// An error and its sources, one after the other.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        text.push_str(": ");
        text.push_str(&next.to_string());
        source = next.source();
    }
    text
}

// ---------------------------------------------------------------------------------------------
// The parent.

/// How the emulator answers refreshes during one child's life.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// At once.
    Prompt,
    /// Rotates, then waits [`SLOW_REFRESH_MS`] before answering.
    SlowAnswer,
    /// Waits [`SLOW_REFRESH_MS`], then rotates and answers.
    SlowCommit,
}

const MODES: [Mode; 3] = [Mode::Prompt, Mode::SlowAnswer, Mode::SlowCommit];

/// What the kills of one store came to.
#[derive(Debug, Default)]
struct Tally {
    kills: u64,
    /// Killed with no write-ahead mark in the record: before a refresh began or after its
    /// tokens were saved.
    no_mark: u64,
    /// Killed mid-refresh (the mark was written) with the stored token still unspent.
    unspent_mid_refresh: u64,
    /// Losses whose answer the emulator never delivered (the child died before it was ready).
    lost_unanswered: u64,
    /// Losses whose answer was delivered, the child dying before the save was durable.
    lost_before_save: u64,
    /// Tenants that ended as `ReauthorizationRequired` and were logged in again.
    reauths: u64,
    /// Refreshes the children reported done.
    child_refreshes: u64,
    /// Children that took over a dead predecessor's lease.
    takeovers: u64,
    /// Children that made the careful attempt on a mark left by a predecessor and succeeded.
    careful_recoveries: u64,
    /// Losses per [`Mode`], in the order of [`MODES`].
    losses_by_mode: [u64; 3],
    /// Kills that landed before the child had built its manager.
    before_ready: u64,
    /// Kills after which the emulator still had bytes of the child's to read.
    unread_after_kill: u64,
    /// The slowest resolution of a loss into `ReauthorizationRequired`.
    slowest_resolution: Duration,
}

impl Tally {
    fn losses(&self) -> u64 {
        self.lost_unanswered + self.lost_before_save
    }
}

/// Everything a kill round needs to know about the world.
struct World {
    env: Env,
    backend: Backend,
    path: PathBuf,
    store_key: String,
    key: TokenKey,
    listening: Listening,
}

/// The record as a new process would read it, and the emulator's counters, together.
struct Snapshot {
    record: TokenRecord,
    counters: Counters,
}

async fn parent(backend: Backend) {
    let kills = std::env::var("SFAUTH_CRASH_KILLS")
        .ok()
        .map_or(DEFAULT_KILLS, |n| {
            n.parse().expect("SFAUTH_CRASH_KILLS is a count")
        });
    let seed = std::env::var("SFAUTH_CRASH_SEED").ok().map_or_else(
        || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        },
        |seed| seed.parse().expect("SFAUTH_CRASH_SEED is a number"),
    );
    println!(
        "crash[{}]: {kills} kills, seed {seed} (SFAUTH_CRASH_SEED={seed} replays it)",
        backend.name()
    );
    let mut rng = StdRng::seed_from_u64(seed);

    let env = Env::start().await.unwrap();
    let client_id = env.creds().client_id.clone();
    env.emulator
        .set_policy(&client_id, |p| p.rotation = true)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = backend.location(dir.path());
    let store_key = Key::generate().to_base64().to_string();
    let listening = Listening::of(env.emulator.base_url());

    let opened = backend.open(&path, &store_key).await;
    let manager = in_process_manager(&env, opened.store()).await;
    let key = env.store_login(&manager, LABEL).await.unwrap();
    drop(manager);
    opened.close().await;
    let world = World {
        env,
        backend,
        path,
        store_key,
        key,
        listening,
    };

    let mut tally = Tally::default();
    for round in 0..kills {
        let mode = MODES[(round % 3) as usize];
        // One kill in four lands during start-up, the others while the child refreshes.
        let kill = if rng.random_range(0..4) == 0 {
            Kill::AfterStart(Duration::from_millis(
                rng.random_range(0..STARTUP_WINDOW_MS),
            ))
        } else {
            Kill::AfterReady(Duration::from_millis(rng.random_range(0..KILL_WINDOW_MS)))
        };
        kill_round(&world, &mut tally, round, mode, kill, seed).await;
    }
    finish(&world, &tally).await;

    println!(
        "crash[{}]: seed {seed}: {} kills ({} prompt, {} slow answer, {} slow commit): \
         {} with no mark, {} mid-refresh and unspent, {} losses ({} answer never delivered, \
         {} answer delivered but not yet durable; every one explained and resolved), \
         {} reauthorizations; {} refreshes by the children, {} lease take-overs, \
         {} careful recoveries; losses by mode {:?}; {} kills before the child was ready; \
         {} kills left bytes unread by the emulator; slowest resolution {} ms",
        backend.name(),
        tally.kills,
        kills.div_ceil(3),
        (kills + 1) / 3,
        kills / 3,
        tally.no_mark,
        tally.unspent_mid_refresh,
        tally.losses(),
        tally.lost_unanswered,
        tally.lost_before_save,
        tally.reauths,
        tally.child_refreshes,
        tally.takeovers,
        tally.careful_recoveries,
        tally.losses_by_mode,
        tally.before_ready,
        tally.unread_after_kill,
        tally.slowest_resolution.as_millis(),
    );
    assert!(
        tally.child_refreshes > 0,
        "no child ever refreshed: the kills tested nothing"
    );
}

/// One child's life: spawn, kill at `kill`, then check and resolve what it left.
async fn kill_round(
    world: &World,
    tally: &mut Tally,
    round: u64,
    mode: Mode,
    kill: Kill,
    seed: u64,
) {
    let env = &world.env;
    let context = format!(
        "{} round {round} (seed {seed}, {mode:?}, {kill:?})",
        world.backend.name(),
    );
    let (latency, placement) = match mode {
        Mode::Prompt => (0, LatencyPlacement::AfterCommit),
        Mode::SlowAnswer => (SLOW_REFRESH_MS, LatencyPlacement::AfterCommit),
        Mode::SlowCommit => (SLOW_REFRESH_MS, LatencyPlacement::BeforeCommit),
    };
    env.emulator
        .set_policy(&env.creds().client_id, |p| {
            p.refresh_latency_ms = latency;
            p.refresh_latency_placement = placement;
        })
        .unwrap();

    let before = snapshot(world).await;
    let ended = spawn_and_kill(world, kill).await;
    tally.kills += 1;
    let (stdout, stderr) = (&ended.stdout, &ended.stderr);
    assert_eq!(
        ended.status.signal(),
        Some(9),
        "{context}: the child ended on its own ({}) before the kill\nstdout:\n{stdout}\nstderr:\n{stderr}",
        ended.status
    );
    assert!(
        !stderr.contains("panicked"),
        "{context}: the child panicked\n{stderr}"
    );
    tally.child_refreshes += stdout
        .lines()
        .filter(|line| line.starts_with("crash-child: refreshed"))
        .count() as u64;
    tally.takeovers += u64::from(stderr.contains("took over the refresh lease"));
    tally.before_ready += u64::from(!stdout.contains("crash-child: ready"));
    // The lease of a killed predecessor is taken over at once; waiting on it means the dead
    // holder was not recognised (and would stall a real process for the lease's lifetime).
    assert!(
        !stderr.contains("waiting for another refresher"),
        "{context}: the child waited for a lease\n{stderr}"
    );
    if std::env::var_os("SFAUTH_CRASH_SHOW_CHILD").is_some() {
        eprintln!("{context}: child stdout:\n{stdout}child stderr:\n{stderr}");
    }

    tally.unread_after_kill += u64::from(settle(world).await);
    let after = snapshot(world).await;
    let record = &after.record;
    let stored = record
        .tokens
        .refresh_token
        .as_ref()
        .expect("the record keeps a refresh token")
        .expose_secret()
        .to_owned();
    for secret in [
        before
            .record
            .tokens
            .refresh_token
            .as_ref()
            .unwrap()
            .expose_secret(),
        stored.as_str(),
        before.record.tokens.access_token.expose_secret(),
        record.tokens.access_token.expose_secret(),
    ] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{context}: the child printed a token"
        );
    }
    if before.record.refresh_in_flight.is_some()
        && record.refresh_count > before.record.refresh_count
    {
        tally.careful_recoveries += 1;
    }

    let delta = |field: fn(&Counters) -> u64| field(&after.counters) - field(&before.counters);
    let rotated = delta(|c| c.refresh_tokens_rotated);
    let unanswered = delta(|c| c.refresh_tokens_rotated_unanswered);
    let reused = delta(|c| c.refresh_tokens_reused);
    let saved = record.refresh_count - before.record.refresh_count;
    let marked = record.refresh_in_flight.is_some();
    let status = env.emulator.refresh_token_status(&stored);
    let facts = format!(
        "{context}: token {status:?}, mark {marked}, emulator rotations {rotated} \
         (unanswered {unanswered}), saved refreshes {saved}, reuses {reused}"
    );
    assert_eq!(reused, 0, "{facts}: a child re-sent a rotated-out token");
    assert_eq!(
        record.status,
        RecordStatus::Active,
        "{facts}: the child marked the tenant"
    );

    match status {
        RefreshTokenStatus::Active => {
            assert_eq!(
                rotated, saved,
                "{facts}: a rotation's successor is missing though the stored token works"
            );
            assert_eq!(
                unanswered, 0,
                "{facts}: an unanswered rotation left no trace"
            );
            if marked {
                tally.unspent_mid_refresh += 1;
            } else {
                tally.no_mark += 1;
            }
        }
        RefreshTokenStatus::RotatedOut => {
            // The only loss the protocol allows: Salesforce rotated after the mark was
            // written, and the successor never became durable.
            assert!(
                marked,
                "{facts}: UNEXPLAINED LOSS: the token was rotated out with no mark"
            );
            assert_eq!(
                rotated,
                saved + 1,
                "{facts}: UNEXPLAINED LOSS: the rotations do not account for it"
            );
            tally.losses_by_mode[mode as usize] += 1;
            if unanswered == 1 {
                tally.lost_unanswered += 1;
            } else {
                assert_eq!(unanswered, 0, "{facts}");
                tally.lost_before_save += 1;
            }
        }
        other => panic!("{facts}: UNEXPLAINED LOSS: the stored token is {other:?}"),
    }

    if marked {
        // The mark holds the refresh token back while the access token works; with it dead,
        // the next refresher makes its one careful attempt and every case is decided.
        env.emulator.expire_access_tokens();
    }
    if status == RefreshTokenStatus::RotatedOut {
        let took = resolve_loss(world, &stored, &facts).await;
        tally.slowest_resolution = tally.slowest_resolution.max(took);
        tally.reauths += 1;
    }
}

/// When a child is killed.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// This long after it was started: while it starts up, or early in its first refresh.
    AfterStart(Duration),
    /// This long after it said it was ready to refresh, so that a slow start on a loaded
    /// machine does not push every kill before the first refresh.
    AfterReady(Duration),
}

/// How a child ended, and what it wrote.
struct Ended {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

/// Starts a child on the store, kills it (SIGKILL) at `kill`, and reaps it, so that the next
/// process finds it gone.
async fn spawn_and_kill(world: &World, kill: Kill) -> Ended {
    let creds = world.env.creds();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            world.backend.test_name(),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(var::CHILD, world.backend.name())
        .env(var::STORE_PATH, &world.path)
        .env(var::STORE_KEY, &world.store_key)
        .env(var::TOKEN_KEY, world.key.to_string())
        .env(var::LOGIN_URL, world.env.emulator.base_url())
        .env(var::CLIENT_ID, &creds.client_id)
        .env(var::CLIENT_SECRET, &creds.client_secret)
        .env(var::CALLBACK, &creds.callback_url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stdout = read_lines(child.stdout.take().unwrap(), Some(ready_tx));
    let stderr = read_lines(child.stderr.take().unwrap(), None);
    match kill {
        Kill::AfterStart(delay) => tokio::time::sleep(delay).await,
        Kill::AfterReady(delay) => {
            let ready = tokio::task::spawn_blocking(move || ready_rx.recv_timeout(WAIT_BOUND))
                .await
                .unwrap();
            match ready {
                Ok(()) => tokio::time::sleep(delay).await,
                // It ended before it was ready: its status and stderr say why, below.
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    panic!("a child was not ready to refresh within {WAIT_BOUND:?}");
                }
            }
        }
    }
    // SIGKILL; a child that already ended is reported by its status.
    let _ = child.kill();
    tokio::time::timeout(
        WAIT_BOUND,
        tokio::task::spawn_blocking(move || Ended {
            status: child.wait().unwrap(),
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
        }),
    )
    .await
    .expect("a killed child is reaped")
    .unwrap()
}

/// Collects what a child writes to `pipe`, and says on `ready` when it is ready to refresh.
fn read_lines(
    pipe: impl std::io::Read + Send + 'static,
    mut ready: Option<std::sync::mpsc::Sender<()>>,
) -> std::thread::JoinHandle<String> {
    use std::io::BufRead as _;
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(pipe);
        let mut text = String::new();
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            let decoded = String::from_utf8_lossy(&line);
            if decoded.contains("crash-child: ready")
                && let Some(ready) = ready.take()
            {
                let _ = ready.send(());
            }
            text.push_str(&decoded);
            line.clear();
        }
        text
    })
}

/// Waits until the emulator has read everything the dead child wrote and has finished (and
/// counted) every request it received.
///
/// `wait_idle` covers requests the emulator has begun; a request still in a socket buffer has
/// not begun, and there is no notification for that. So first the emulator's side of every
/// connection the child closed must be gone: a socket on the emulator's port that is in
/// CLOSE_WAIT (the peer hung up, the emulator has not read to the end) or still has unread
/// bytes may hold a request that would rotate the token after the check. Returns whether there
/// was such a socket.
async fn settle(world: &World) -> bool {
    let unread = unread_connections(&world.listening) > 0;
    tokio::time::timeout(WAIT_BOUND, async {
        while unread_connections(&world.listening) > 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the emulator reads what the killed child sent");
    tokio::time::timeout(WAIT_BOUND, world.env.emulator.wait_idle())
        .await
        .expect("the emulator finishes what the killed child sent");
    unread
}

/// Sockets of the emulator (its address and port) that may hold bytes it has not read yet: in
/// CLOSE_WAIT (0x08) or SYN_RECV (0x03), or established (0x01) with a non-empty receive queue.
fn unread_connections(emulator: &Listening) -> usize {
    let mut count = 0;
    for (table, v4) in [("/proc/net/tcp", true), ("/proc/net/tcp6", false)] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, local, _, state, queues, ..] = fields.as_slice() else {
                continue;
            };
            let Some((address, port)) = local.rsplit_once(':') else {
                continue;
            };
            if u16::from_str_radix(port, 16).ok() != Some(emulator.port)
                || (v4 && emulator.v4.as_deref().is_some_and(|ours| ours != address))
            {
                continue;
            }
            let unread = queues
                .split(':')
                .nth(1)
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                .unwrap_or(0);
            count +=
                usize::from(*state == "08" || *state == "03" || (*state == "01" && unread > 0));
        }
    }
    count
}

/// Where the emulator listens, as `/proc/net/tcp` spells it.
struct Listening {
    port: u16,
    /// The IPv4 address in the kernel's notation (the address's bytes read as one native
    /// 32-bit number, in hex), when the emulator listens on one.
    v4: Option<String>,
}

impl Listening {
    fn of(base_url: &str) -> Self {
        let url = url::Url::parse(base_url).unwrap();
        let v4 = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(format!("{:08X}", u32::from_ne_bytes(ip.octets()))),
            _ => None,
        };
        Self {
            port: url.port_or_known_default().unwrap(),
            v4,
        }
    }
}

async fn snapshot(world: &World) -> Snapshot {
    let opened = world.backend.open(&world.path, &world.store_key).await;
    let record = opened
        .store()
        .get(&world.key)
        .await
        .unwrap()
        .expect("the record is there");
    opened.close().await;
    Snapshot {
        record,
        counters: world.env.emulator.counters(),
    }
}

/// A manager in this process, as a fresh process would build it: production defaults, its own
/// holder name, over the environment's transport.
async fn in_process_manager(env: &Env, store: Arc<dyn TokenStore>) -> TokenManager {
    env.manager_builder(env.client().unwrap())
        .store(store)
        .build()
        .await
        .unwrap()
}

/// Runs the next refresher on a lost token (its access token dead) and checks that it ends as
/// a clean re-authorization with the lost-rotation cause, after one careful attempt; then logs
/// the tenant in again. Returns how long the refresher took.
async fn resolve_loss(world: &World, lost: &str, facts: &str) -> Duration {
    let env = &world.env;
    let opened = world.backend.open(&world.path, &world.store_key).await;
    let manager = in_process_manager(env, opened.store()).await;
    let before = env.emulator.counters();

    let started = Instant::now();
    let result = tokio::time::timeout(WAIT_BOUND, manager.refresh(&world.key))
        .await
        .unwrap_or_else(|_| panic!("{facts}: the refresher after the loss hangs"));
    let took = started.elapsed();
    let error = match result {
        Ok(_) => panic!("{facts}: a rotated-out token was accepted"),
        Err(error) => error,
    };
    let message = error.to_string();
    let debug = format!("{error:?}");
    assert!(
        !message.contains(lost) && !debug.contains(lost),
        "{facts}: the error shows the refresh token"
    );
    assert_eq!(
        error.kind(),
        ErrorKind::ReauthorizationRequired,
        "{facts}: {message}"
    );
    assert!(
        message.contains("may have rotated"),
        "{facts}: the reason does not name the lost rotation: {message}"
    );
    match &error {
        sfauth::Error::ReauthorizationRequired { cause, .. } => assert_eq!(
            *cause,
            Some(Cause::TokenExpiredOrRevoked),
            "{facts}: {message}"
        ),
        other => panic!("{facts}: {other:?}"),
    }
    env.emulator.wait_idle().await;
    let after = env.emulator.counters();
    assert_eq!(
        after.grant("refresh_token") - before.grant("refresh_token"),
        1,
        "{facts}: one careful attempt, no more"
    );
    assert_eq!(
        after.refresh_tokens_reused - before.refresh_tokens_reused,
        1,
        "{facts}: the careful attempt is the one reuse"
    );
    let record = opened.store().get(&world.key).await.unwrap().unwrap();
    assert!(
        matches!(record.status, RecordStatus::ReauthRequired { .. }),
        "{facts}: the re-authorization is stored"
    );
    assert!(
        record.refresh_in_flight.is_none(),
        "{facts}: the mark is lifted"
    );
    // Decided once: later calls fail at once, without a token request.
    let again = manager.refresh(&world.key).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::ReauthorizationRequired, "{facts}");
    assert_eq!(
        env.refresh_grants(),
        after.grant("refresh_token"),
        "{facts}"
    );

    // A human logs in again; the children carry on with the new login.
    let key = env.store_login(&manager, LABEL).await.unwrap();
    assert_eq!(key, world.key);
    let record = opened.store().get(&world.key).await.unwrap().unwrap();
    assert_eq!(record.status, RecordStatus::Active);
    let fresh = record.tokens.refresh_token.unwrap();
    assert!(
        env.emulator
            .refresh_token_status(fresh.expose_secret())
            .is_accepted()
    );
    drop(manager);
    opened.close().await;
    took
}

/// After the last kill the tenant must still refresh: a mark left by the last child is
/// decided by one careful attempt, which succeeds because its token was unspent.
async fn finish(world: &World, tally: &Tally) {
    let env = &world.env;
    let opened = world.backend.open(&world.path, &world.store_key).await;
    let manager = in_process_manager(env, opened.store()).await;
    let token = tokio::time::timeout(WAIT_BOUND, manager.refresh(&world.key))
        .await
        .expect("the last refresh does not hang")
        .unwrap_or_else(|error| panic!("after {tally:?}: the login was lost: {error}"));
    assert_eq!(env.query_status_with(&token).await.unwrap(), 200);
    let record = opened.store().get(&world.key).await.unwrap().unwrap();
    assert!(record.refresh_in_flight.is_none());
    let stored = record.tokens.refresh_token.unwrap();
    assert!(
        env.emulator
            .refresh_token_status(stored.expose_secret())
            .is_accepted()
    );
    drop(manager);
    opened.close().await;
}
