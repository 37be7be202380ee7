//! Soak: a thousand tenants, sessions that die every few seconds, and a token endpoint that
//! answers one request in five with a 503, a timeout, a reset, a malformed or HTML body or an
//! oversized one. The fleet must keep working: no API call may fail while a valid token exists,
//! token requests stay within one refresh (and its allowed retries) per expiry, nothing panics,
//! memory stays flat, and every login the library loses must be explained by a rotation whose
//! answer really was lost.
//!
//! # The world
//!
//! The emulator runs in a process of its own (this very test binary, run again with `--exact
//! <this test>` and [`CHILD_ENV`] set, as in `crash.rs`), so that the resident memory measured
//! here is the library's and its callers', not the emulator's, which keeps every token it ever
//! issued. It is driven over its admin API; its clock is the system clock, so sessions really
//! expire every few seconds of wall time, on the same clock the manager reads.
//!
//! Two orgs, each with two connected apps; every user of an org has one tenant on each app of
//! its org (its own approval, well inside the five-approval cap). Four fleets of equal size:
//!
//! | fleet | rotation | session | the manager knows the timeout |
//! |---|---|---|---|
//! | 0 | on | 6 s | yes: refreshes 1 to 2 s before expiry |
//! | 1 | off | 8 s | no: refreshes when an API call gets 401 |
//! | 2 | on | 8 s | no |
//! | 3 | off | 6 s | yes |
//!
//! One `TokenManager` per app over one shared `MemoryStore`; policy: 1 s margin, 1 s jitter,
//! [`ATTEMPTS`] attempts, failure backoff 200 ms to 2 s (the defaults are sized for sessions of
//! hours). Its transport is the production `ReqwestTransport` (no retrying wrapper: zero
//! transport retries) with a [`CLIENT_TIMEOUT`], inside an observer that classifies every
//! token-endpoint answer and attributes each refresh to its tenant by the refresh token sent.
//!
//! # The faults
//!
//! The emulator tries only the first fault rule matching a request, so several rules with a
//! probability each would never mix (only the first would ever fire). Instead the child keeps
//! one rule on the token endpoint, firing with probability [`FAULT_RATE`], and changes its kind
//! every [`FAULT_WINDOW_MS`] (through its own handle: fault documents over the admin API are too
//! slow to keep up on a loaded machine). The kinds come in seeded shuffled batches of
//! [`SCHEDULE`]: bare 503, HTML 503 page, malformed 200, connection reset, oversized 200 and
//! oversized 503 (over the transport's 1 MiB cap), and timeouts, half with the latency before
//! the emulator acts (it still acts after the client gave up) and half after it committed (the
//! answer is lost). Only the timeouts let the emulator carry the request
//! out; with rotation on, they lose a rotation, and the tenant then needs a new login: the test
//! plays the human and logs it in again (through the same faulty endpoint), and counts it.
//!
//! # What is measured, and how
//!
//! - **No API call fails while a valid token exists.** A few hundred workers make REST calls for
//!   random tenants with tokens from the manager; a 401 is reported with `session_expired` and
//!   the call is retried once. When a call fails, every access token delivered to the tenant
//!   before the failing step began (seen by the observer, or by the human's login) is tried
//!   against the emulator at once: one that still works is a violation. Tokens only ever die, so
//!   one that works after the failure worked during it; a token that died between the failure
//!   and the probe is missed, so the measure can under-count, never over-count. Tokens the
//!   emulator minted but nobody received (a lost answer) are not seen: the emulator has no API to
//!   list a user's live access tokens.
//! - **Token requests ≤ expiries × (1 + attempts)**, per tenant and in total, where a tenant's
//!   expiries are the session lifetimes that elapsed while it existed (plus one per new login)
//!   and the requests are the refresh requests attributed to it. The emulator's own request count
//!   must equal what the observers saw.
//! - **Re-authorizations** happen only on rotating fleets, each after a timeout of that tenant's
//!   refresh since its last login, and no more often than the emulator saw a rotated-out refresh
//!   token come back (`refresh_tokens_reused`), which itself happens no more often than refresh
//!   timeouts on rotating tenants (no re-spend without a lost answer). Faults the emulator never
//!   carries out (503, HTML, malformed, reset, oversized) must never cause one.
//! - **Afterwards every tenant works** once the faults stop (a tenant left stuck fails), and the
//!   refresh token each holds is accepted by the emulator.
//! - **No panic** anywhere (a panic hook counts them, spawned tasks included).
//! - **Memory flat:** `VmRSS` after the warm-up and at the end; the end may not exceed 1.5 × the
//!   start (the machine is shared and noisy, so the bound is generous). No timing is asserted.
//!
//! `SFAUTH_SOAK_SECS` sets the load duration (default [`DEFAULT_SECS`], CI included),
//! `SFAUTH_SOAK_TENANTS` the fleet (default 1,000, a multiple of four), `SFAUTH_SOAK_WORKERS`
//! the callers (default [`DEFAULT_WORKERS`]) and `SFAUTH_SOAK_SEED` the fault order. Run with
//! `--nocapture` to see the summary.

#![cfg(target_os = "linux")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test fails by panicking and reports its counts on the console"
)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use sfauth::oauth::flows::AuthorizeParams;
use sfauth::oauth::http::{
    BodyTruncated, HttpRequest, HttpResponse, HttpTransport, RetrySafety, TransportError,
    TransportErrorKind,
};
use sfauth::oauth::{AccessToken, Cause, ConnectedApp, LoginHost, OAuthClient, TokenKey, TokenSet};
use sfauth::{Error, MemoryStore, RefreshPolicy, TokenManager, TokenStore};
use sfauth_emulator::{
    AppConfig, AppPolicy, Clock, Emulator, EmulatorConfig, Endpoint, Fault, FaultKind, OrgConfig,
    UserConfig,
};
use sfauth_tests::{API_VERSION, vm_rss_kib};
use sfauth_transport::ReqwestTransport;
use tokio::task::JoinSet;
use url::Url;

/// This test's name: the child process is started with `--exact` on it.
const TEST: &str = "a_thousand_tenants_ride_out_token_endpoint_faults";
/// Set in the child: the path of the emulator configuration it serves.
const CHILD_ENV: &str = "SFAUTH_SOAK_EMULATOR_CONFIG";
/// What starts every line the child writes for the parent (`listening on <url>`, and its
/// answers to `faults on` and `faults off` on its stdin).
const MARK: &str = "soak-emulator: ";

/// Seconds of load when `SFAUTH_SOAK_SECS` is not set.
const DEFAULT_SECS: u64 = 75;
/// Tenants when `SFAUTH_SOAK_TENANTS` is not set.
const DEFAULT_TENANTS: usize = 1_000;
/// Concurrent API callers when `SFAUTH_SOAK_WORKERS` is not set.
const DEFAULT_WORKERS: usize = 250;
/// Mean pause of a worker between two API calls: it paces the load so that a debug build on a
/// shared two-core machine keeps up, while every tenant is still called about once a second.
const WORKER_PAUSE_MS: u64 = 200;

/// The share of token requests that meet a fault.
const FAULT_RATE: f64 = 0.2;
/// How long one kind of fault stays on before the next takes its place.
const FAULT_WINDOW_MS: u64 = 100;
/// The manager's (and the human's) token-request timeout.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
/// The injected latency: longer than [`CLIENT_TIMEOUT`], so it always ends in a timeout.
const FAULT_LATENCY_MS: u64 = 4_000;
/// Oversized bodies: over the transport's 1 MiB cap.
const OVERSIZED_BYTES: usize = (1 << 20) + (16 << 10);
/// `RefreshPolicy::attempts`.
const ATTEMPTS: u32 = 3;

const LABEL: &str = "soak";
const CALLBACK: &str = "http://localhost:1717/OauthRedirect";

/// One fleet: a connected app and how its tenants live.
struct FleetSpec {
    name: &'static str,
    org: usize,
    rotation: bool,
    /// Whether the manager is told the session timeout (and so refreshes before expiry).
    proactive: bool,
    session_secs: u64,
}

const FLEETS: [FleetSpec; 4] = [
    FleetSpec {
        name: "rotating, expiry known",
        org: 0,
        rotation: true,
        proactive: true,
        session_secs: 6,
    },
    FleetSpec {
        name: "static, 401-driven",
        org: 0,
        rotation: false,
        proactive: false,
        session_secs: 8,
    },
    FleetSpec {
        name: "rotating, 401-driven",
        org: 1,
        rotation: true,
        proactive: false,
        session_secs: 8,
    },
    FleetSpec {
        name: "static, expiry known",
        org: 1,
        rotation: false,
        proactive: true,
        session_secs: 6,
    },
];

fn client_id(fleet: usize) -> String {
    format!("3MVG9soakFleet{fleet}ConnectedAppConsumerKey")
}

fn client_secret(fleet: usize) -> String {
    format!("soak-consumer-secret-{fleet}")
}

/// Tenant `t` belongs to fleet `t % 4` and is user `t / 4` of that fleet's org.
fn username(t: usize) -> String {
    format!("soak-{}-{}@soak.test", FLEETS[t % 4].org, t / 4)
}

const USER_PASSWORD: &str = "soak-password-1";

/// What the emulator is told to do to a token request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum FaultPlan {
    Plain503,
    Html503,
    Malformed200,
    Reset,
    Oversized200,
    Oversized503,
    TimeoutBeforeCommit,
    TimeoutAfterCommit,
}

/// One batch of faults, shuffled before each use: the six kinds of the issue in equal shares,
/// timeouts and oversized bodies each split between their two variants.
const SCHEDULE: [FaultPlan; 12] = [
    FaultPlan::Plain503,
    FaultPlan::Plain503,
    FaultPlan::Html503,
    FaultPlan::Html503,
    FaultPlan::Malformed200,
    FaultPlan::Malformed200,
    FaultPlan::Reset,
    FaultPlan::Reset,
    FaultPlan::Oversized200,
    FaultPlan::Oversized503,
    FaultPlan::TimeoutBeforeCommit,
    FaultPlan::TimeoutAfterCommit,
];

impl FaultPlan {
    /// The rule the emulator applies, firing with probability [`FAULT_RATE`].
    fn fault(self) -> Fault {
        let latency = Duration::from_millis(FAULT_LATENCY_MS);
        let kind = match self {
            Self::Plain503 => FaultKind::Status(503),
            Self::Html503 => FaultKind::HtmlErrorPage,
            Self::Malformed200 => FaultKind::MalformedBody,
            Self::Reset => FaultKind::ConnectionReset,
            Self::Oversized200 => FaultKind::Response {
                status: 200,
                content_type: "application/json;charset=UTF-8".to_owned(),
                body: format!("{{\"access_token\":\"{}\"}}", "A".repeat(OVERSIZED_BYTES)),
            },
            Self::Oversized503 => FaultKind::Response {
                status: 503,
                content_type: "text/html;charset=UTF-8".to_owned(),
                body: format!(
                    "<!DOCTYPE html><html><body><h1>Service Unavailable</h1>{}</body></html>",
                    "<p>down for maintenance</p>".repeat(OVERSIZED_BYTES / 26 + 1)
                ),
            },
            Self::TimeoutBeforeCommit => FaultKind::Latency(latency),
            Self::TimeoutAfterCommit => FaultKind::LatencyAfterCommit(latency),
        };
        Fault::new(Endpoint::Token, kind).probability(FAULT_RATE)
    }
}

/// What came back from one token request, as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Tokens,
    /// An OAuth error document (4xx): Salesforce's own words.
    Refused,
    Plain503,
    Html503,
    Oversized503,
    Malformed200,
    Oversized200,
    Reset,
    Timeout,
    OtherStatus,
    OtherError,
}

const OUTCOMES: [Outcome; 11] = [
    Outcome::Tokens,
    Outcome::Refused,
    Outcome::Plain503,
    Outcome::Html503,
    Outcome::Oversized503,
    Outcome::Malformed200,
    Outcome::Oversized200,
    Outcome::Reset,
    Outcome::Timeout,
    Outcome::OtherStatus,
    Outcome::OtherError,
];

impl Outcome {
    fn of(result: &Result<HttpResponse, TransportError>) -> Self {
        match result {
            Ok(response) => match response.status().as_u16() {
                200 => {
                    let parsed = serde_json::from_slice::<serde_json::Value>(response.body());
                    if parsed.is_ok_and(|v| v.get("access_token").is_some()) {
                        Self::Tokens
                    } else {
                        Self::Malformed200
                    }
                }
                503 if BodyTruncated::of(response).is_some() => Self::Oversized503,
                503 => {
                    let html = response
                        .headers()
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.starts_with("text/html"));
                    if html { Self::Html503 } else { Self::Plain503 }
                }
                400..500 => Self::Refused,
                _ => Self::OtherStatus,
            },
            Err(error) => match error.kind() {
                TransportErrorKind::Timeout => Self::Timeout,
                TransportErrorKind::BodyTooLarge => Self::Oversized200,
                TransportErrorKind::Other => Self::Reset,
                _ => Self::OtherError,
            },
        }
    }

    /// Whether an injected fault produced it (a genuine emulator answer is tokens or an OAuth
    /// error; a genuine timeout would be counted here too, and is just as ambiguous).
    fn is_fault(self) -> bool {
        !matches!(
            self,
            Self::Tokens | Self::Refused | Self::OtherStatus | Self::OtherError
        )
    }

    fn index(self) -> usize {
        OUTCOMES.iter().position(|o| *o == self).unwrap()
    }
}

/// An access token some client received, and when (in [`Book::seq`] order).
struct Delivery {
    seq: u64,
    token: AccessToken,
    /// When the emulator expires it: its `issued_at` plus the app's session timeout, in ms.
    expires_ms: u64,
    /// A refresh token of its family (revoking the family kills the access token too).
    family: String,
}

/// Milliseconds since the Unix epoch, on the clock the emulator reads too.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// What the test knows about one tenant. Bounded: a long soak must not grow it.
#[derive(Default)]
struct TenantLog {
    /// The last few access tokens delivered to it.
    deliveries: VecDeque<Delivery>,
    /// The last few refresh tokens it was given (to forget them in [`Book::owners`]).
    refresh_tokens: VecDeque<String>,
    /// Its login: 0 for the first, one more at each new login.
    generation: u64,
    relogin_pending: bool,
    refresh_requests: u64,
    timeouts: u64,
    /// Refresh timeouts since its last login.
    timeouts_this_login: u64,
    relogins: u64,
    reauths: u64,
    /// Re-authorizations not preceded by a refresh timeout since the tenant's last login.
    unexplained_reauths: u64,
}

/// Every tenant's log, and which tenant a refresh token belongs to.
struct Book {
    seq: AtomicU64,
    owners: Mutex<HashMap<String, usize>>,
    logs: Vec<Mutex<TenantLog>>,
}

impl Book {
    fn new(tenants: usize) -> Self {
        Self {
            seq: AtomicU64::new(0),
            owners: Mutex::new(HashMap::new()),
            logs: (0..tenants).map(|_| Mutex::default()).collect(),
        }
    }

    fn log(&self, t: usize) -> std::sync::MutexGuard<'_, TenantLog> {
        self.logs[t].lock().unwrap()
    }

    fn seq(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    fn generation(&self, t: usize) -> u64 {
        self.log(t).generation
    }

    fn owner(&self, refresh_token: &str) -> Option<usize> {
        self.owners.lock().unwrap().get(refresh_token).copied()
    }

    /// Remembers that `refresh_token` is tenant `t`'s, forgetting its oldest ones.
    fn own(&self, t: usize, refresh_token: &str) {
        let mut owners = self.owners.lock().unwrap();
        owners.insert(refresh_token.to_owned(), t);
        let mut log = self.log(t);
        log.refresh_tokens.push_back(refresh_token.to_owned());
        while log.refresh_tokens.len() > 3 {
            if let Some(old) = log.refresh_tokens.pop_front() {
                owners.remove(&old);
            }
        }
    }

    fn deliver(&self, t: usize, token: AccessToken, issued_ms: u64, family: &str) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let expires_ms = issued_ms + FLEETS[t % 4].session_secs * 1000;
        let mut log = self.log(t);
        log.deliveries.push_back(Delivery {
            seq,
            token,
            expires_ms,
            family: family.to_owned(),
        });
        while log.deliveries.len() > 4 {
            log.deliveries.pop_front();
        }
    }

    /// The access tokens delivered to `t` up to `seq`, with their expiry and family.
    fn delivered_by(&self, t: usize, seq: u64) -> Vec<(AccessToken, u64, String)> {
        self.log(t)
            .deliveries
            .iter()
            .filter(|d| d.seq <= seq)
            .map(|d| (d.token.clone(), d.expires_ms, d.family.clone()))
            .collect()
    }

    /// Records a login's tokens as delivered to `t`: its refresh token is `t`'s from now on.
    fn own_login(&self, t: usize, tokens: &TokenSet) -> (AccessToken, u64, String) {
        let family = tokens
            .refresh_token
            .as_ref()
            .unwrap()
            .expose_secret()
            .to_owned();
        self.own(t, &family);
        let issued_ms = tokens.issued_at.map_or_else(now_ms, |at| {
            at.duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
        });
        (tokens.access_token.clone(), issued_ms, family)
    }
}

/// Counts of [`Outcome`]s.
#[derive(Default)]
struct OutcomeCounts([AtomicU64; OUTCOMES.len()]);

impl OutcomeCounts {
    fn add(&self, outcome: Outcome) {
        self.0[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self, outcome: Outcome) -> u64 {
        self.0[outcome.index()].load(Ordering::Relaxed)
    }

    fn total(&self) -> u64 {
        OUTCOMES.iter().map(|o| self.get(*o)).sum()
    }

    fn faults(&self) -> u64 {
        OUTCOMES
            .iter()
            .filter(|o| o.is_fault())
            .map(|o| self.get(*o))
            .sum()
    }
}

/// Wraps the production transport: classifies every token-endpoint answer and, for the
/// manager's traffic, attributes each refresh to its tenant and records the tokens delivered.
/// It passes requests and responses through untouched.
struct Observer {
    inner: ReqwestTransport,
    book: Arc<Book>,
    /// The manager's traffic (`true`) or the human's logins (`false`, recorded by the login).
    library: bool,
    outcomes: OutcomeCounts,
    unattributed: AtomicU64,
}

impl Observer {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        if request.uri().path() != "/services/oauth2/token" || !self.library {
            let result = self.inner.send(request).await;
            if !self.library {
                self.outcomes.add(Outcome::of(&result));
            }
            return result;
        }
        let form: HashMap<String, String> = url::form_urlencoded::parse(request.body())
            .into_owned()
            .collect();
        let sent = form.get("refresh_token");
        let owner = sent.and_then(|rt| {
            let t = self.book.owner(rt)?;
            let mut log = self.book.log(t);
            log.refresh_requests += 1;
            Some((t, log.generation))
        });
        if owner.is_none() {
            self.unattributed.fetch_add(1, Ordering::Relaxed);
        }
        let result = self.inner.send(request).await;
        let outcome = Outcome::of(&result);
        self.outcomes.add(outcome);
        let Some((t, generation)) = owner else {
            return result;
        };
        match (outcome, &result) {
            (Outcome::Timeout, _) => {
                let mut log = self.book.log(t);
                log.timeouts += 1;
                // A request of an earlier login says nothing about this one.
                if log.generation == generation {
                    log.timeouts_this_login += 1;
                }
            }
            (Outcome::Tokens, Ok(response)) => {
                let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
                if let Some(rt) = body["refresh_token"].as_str() {
                    self.book.own(t, rt);
                }
                let access = body["access_token"].as_str().unwrap_or_default();
                let issued_ms = body["issued_at"]
                    .as_str()
                    .and_then(|at| at.parse().ok())
                    .unwrap_or_else(now_ms);
                let family = sent.map_or("", String::as_str);
                self.book
                    .deliver(t, AccessToken::new(access), issued_ms, family);
            }
            _ => {}
        }
        result
    }
}

fn observed(observer: Arc<Observer>) -> Arc<dyn HttpTransport> {
    Arc::new(move |request: HttpRequest| {
        let observer = observer.clone();
        async move { observer.send(request).await }
    })
}

/// The emulator in a child process: this test binary run again as [`CHILD_ENV`] says.
struct EmulatorProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// What the child said, [`MARK`] removed.
    said: Arc<Mutex<std::sync::mpsc::Receiver<String>>>,
    base_url: String,
}

impl EmulatorProcess {
    async fn spawn(config: &Path) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the child's stdout to its end, so that the pipe never fills.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest may have started the line with the test's name.
                if let Some((_, said)) = line.split_once(MARK) {
                    let _ = tx.send(said.trim().to_owned());
                }
            }
        });
        let mut process = Self {
            child,
            stdin,
            said: Arc::new(Mutex::new(rx)),
            base_url: String::new(),
        };
        let listening = process.next_said().await;
        process.base_url = listening
            .strip_prefix("listening on ")
            .expect("the emulator process did not say where it listens")
            .to_owned();
        process
    }

    /// The child's next line for us.
    async fn next_said(&self) -> String {
        let said = self.said.clone();
        tokio::task::spawn_blocking(move || {
            said.lock().unwrap().recv_timeout(Duration::from_secs(120))
        })
        .await
        .unwrap()
        .expect("the emulator process stopped talking")
    }

    /// Sends `command` to the child and returns its answer.
    async fn command(&mut self, command: &str) -> String {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
        let answer = self.next_said().await;
        assert!(answer.starts_with(command), "asked {command}, got {answer}");
        answer
    }

    fn rss_kib(&self) -> Option<u64> {
        vm_rss_kib(Some(self.child.id()))
    }

    /// Closes the child's stdin (it shuts down then) and reaps it, killing it if it lingers.
    async fn stop(mut self) {
        self.stdin.take();
        let started = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(15) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The child: serves the configured emulator, turns the faults on and off as its stdin says,
/// and shuts down when its stdin closes.
async fn serve_emulator(config: PathBuf) {
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(config).unwrap()).unwrap();
    let seed = config["seed"].as_u64().unwrap();
    let emulator: EmulatorConfig = serde_json::from_value(config["emulator"].clone()).unwrap();
    let emulator = Arc::new(
        Emulator::builder()
            .config(emulator)
            .clock(Clock::system())
            .start()
            .await
            .unwrap(),
    );
    println!("{MARK}listening on {}", emulator.base_url());
    let on = Arc::new(Mutex::new(false));
    let windows = Arc::new(Mutex::new(BTreeMap::new()));
    let rotation = tokio::spawn(rotate_faults(
        emulator.clone(),
        on.clone(),
        windows.clone(),
        seed,
    ));
    loop {
        let line = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|_| line)
        })
        .await
        .unwrap()
        .unwrap_or_default();
        match line.trim() {
            "" => break,
            "faults on" => {
                *on.lock().unwrap() = true;
                println!("{MARK}faults on");
            }
            "faults off" => {
                {
                    let mut on = on.lock().unwrap();
                    *on = false;
                    emulator.clear_faults();
                }
                let windows: BTreeMap<String, u64> = windows
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(plan, n): (&FaultPlan, &u64)| (format!("{plan:?}"), *n))
                    .collect();
                println!(
                    "{MARK}faults off {}",
                    serde_json::to_string(&windows).unwrap()
                );
            }
            other => panic!("the soak's emulator does not know {other:?}"),
        }
    }
    rotation.abort();
    let _ = rotation.await;
    Arc::into_inner(emulator).unwrap().shutdown().await;
}

/// In the child, while `on`: one fault rule on the token endpoint, its kind changed every
/// [`FAULT_WINDOW_MS`] along seeded shuffled batches of [`SCHEDULE`]. Counts the windows.
async fn rotate_faults(
    emulator: Arc<Emulator>,
    on: Arc<Mutex<bool>>,
    windows: Arc<Mutex<BTreeMap<FaultPlan, u64>>>,
    seed: u64,
) {
    let faults: BTreeMap<FaultPlan, Fault> = SCHEDULE.iter().map(|p| (*p, p.fault())).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut batch: Vec<FaultPlan> = Vec::new();
    loop {
        {
            // Held while the rule changes, so that `faults off` cannot interleave with it.
            let on = on.lock().unwrap();
            if *on {
                if batch.is_empty() {
                    batch = SCHEDULE.to_vec();
                    for i in (1..batch.len()).rev() {
                        batch.swap(i, rng.random_range(0..=i));
                    }
                }
                let plan = batch.pop().unwrap();
                // A request landing between these two meets no rule: microseconds in a window.
                emulator.clear_faults();
                emulator.inject_fault(faults[&plan].clone());
                *windows.lock().unwrap().entry(plan).or_default() += 1;
            }
        }
        // The window itself: a pause is what is wanted here.
        tokio::time::sleep(Duration::from_millis(FAULT_WINDOW_MS)).await;
    }
}

/// The emulator's admin API.
struct Admin {
    http: reqwest::Client,
    base: String,
}

impl Admin {
    async fn post(&self, path: &str, body: String) -> serde_json::Value {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "admin {path}: {}",
            response.status()
        );
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
    }

    async fn get(&self, path: &str) -> serde_json::Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "admin {path}: {}",
            response.status()
        );
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
    }

    /// Waits until the emulator has carried out every request it received.
    async fn idle(&self) {
        self.get("/__emulator/idle").await;
    }

    async fn counters(&self) -> serde_json::Value {
        self.get("/__emulator/counters").await
    }

    async fn refresh_token_status(&self, token: &str) -> String {
        let answer = self
            .post(
                "/__emulator/refresh-token-status",
                serde_json::json!({"token": token}).to_string(),
            )
            .await;
        answer["result"].as_str().unwrap_or("?").to_owned()
    }
}

struct Plan {
    secs: u64,
    tenants: usize,
    workers: usize,
    seed: u64,
}

impl Plan {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().map(|v| v.parse::<u64>().unwrap());
        let tenants = var("SFAUTH_SOAK_TENANTS").map_or(DEFAULT_TENANTS, |n| n as usize);
        assert!(
            tenants >= 4 && tenants % 4 == 0,
            "SFAUTH_SOAK_TENANTS must be a multiple of four"
        );
        Self {
            secs: var("SFAUTH_SOAK_SECS").unwrap_or(DEFAULT_SECS).max(10),
            tenants,
            workers: var("SFAUTH_SOAK_WORKERS").map_or(DEFAULT_WORKERS, |n| n as usize),
            seed: var("SFAUTH_SOAK_SEED").unwrap_or(20_261_124),
        }
    }
}

fn emulator_config(plan: &Plan) -> EmulatorConfig {
    let mut config = EmulatorConfig {
        seed: Some(plan.seed),
        ..EmulatorConfig::default()
    };
    config.settings.admin_api = true;
    config.settings.auto_approve = true;
    for org in 0..2 {
        let users = (0..plan.tenants / 4)
            .map(|u| UserConfig {
                username: format!("soak-{org}-{u}@soak.test"),
                password: USER_PASSWORD.to_owned(),
                security_token: format!("SOAKTOKEN{org}x{u}"),
                ..UserConfig::default()
            })
            .collect();
        let apps = FLEETS
            .iter()
            .enumerate()
            .filter(|(_, fleet)| fleet.org == org)
            .map(|(f, fleet)| AppConfig {
                name: format!("soak fleet {f}"),
                client_id: client_id(f),
                client_secret: client_secret(f),
                callback_urls: vec![CALLBACK.to_owned()],
                policy: AppPolicy {
                    session_timeout_secs: fleet.session_secs,
                    rotation: fleet.rotation,
                    ..AppPolicy::default()
                },
                ..AppConfig::default()
            })
            .collect();
        config.orgs.push(OrgConfig {
            name: format!("Soak Org {org}"),
            users,
            apps,
            ..OrgConfig::default()
        });
    }
    config
}

/// One fleet at run time.
struct Fleet {
    spec: &'static FleetSpec,
    client: OAuthClient,
    manager: TokenManager,
}

/// Counts kept while the load runs.
#[derive(Default)]
struct Tally {
    api_calls: AtomicU64,
    api_ok: AtomicU64,
    api_ok_after_401: AtomicU64,
    failed: AtomicU64,
    violations: AtomicU64,
    rest_errors: AtomicU64,
    probe_errors: AtomicU64,
    login_attempts: AtomicU64,
    login_failures: AtomicU64,
    relogins: AtomicU64,
    failures_by_kind: Mutex<BTreeMap<String, u64>>,
    violations_by_kind: Mutex<BTreeMap<String, u64>>,
    reauths_by_cause: Mutex<BTreeMap<String, u64>>,
    reauths_by_fleet: [AtomicU64; 4],
    details: Mutex<Vec<String>>,
}

impl Tally {
    fn note(&self, line: String) {
        let mut details = self.details.lock().unwrap();
        if details.len() < 20 {
            details.push(line);
        }
    }
}

fn bump(map: &Mutex<BTreeMap<String, u64>>, key: String) {
    *map.lock().unwrap().entry(key).or_default() += 1;
}

/// What made an API call fail, at which step.
enum Failure {
    Manager(&'static str, Error),
    Status(&'static str, u16),
    Rest(String),
}

impl Failure {
    fn label(&self) -> String {
        match self {
            Self::Manager(step, error) => match error {
                Error::RecentlyFailed { kind, .. } => {
                    format!("{step}: recently failed ({})", kind.as_str())
                }
                _ => format!("{step}: {}", error.kind().as_str()),
            },
            Self::Status(step, status) => format!("{step}: rest answered {status}"),
            Self::Rest(_) => "rest transport error".to_owned(),
        }
    }
}

struct StepFailure {
    /// [`Book::seq`] when the failing step began.
    start: u64,
    /// When it failed ([`now_ms`]).
    failed_ms: u64,
    generation: u64,
    failure: Failure,
}

struct Ctx {
    plan: Plan,
    fleets: Vec<Fleet>,
    keys: Vec<TokenKey>,
    book: Arc<Book>,
    admin: Arc<Admin>,
    rest: ReqwestTransport,
    base_url: Url,
    browser: reqwest::Client,
    login_transport: Arc<dyn HttpTransport>,
    tally: Tally,
    relogins: Mutex<JoinSet<()>>,
}

impl Ctx {
    fn fleet(&self, t: usize) -> &Fleet {
        &self.fleets[t % 4]
    }

    /// `GET .../query` with `token`: the status.
    async fn rest_status(&self, token: &AccessToken) -> Result<u16, TransportError> {
        let base = self.base_url.as_str().trim_end_matches('/');
        let mut request: HttpRequest = http::Request::get(format!(
            "{base}/services/data/{API_VERSION}/query?q=SELECT+Id+FROM+Account"
        ))
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", token.expose_secret()),
        )
        .body(bytes::Bytes::new())
        .unwrap();
        request.extensions_mut().insert(RetrySafety::Idempotent);
        Ok(self.rest.send(request).await?.status().as_u16())
    }

    /// One API call for tenant `t`: a token from the manager, the call, and on a 401 one
    /// `session_expired` and one retry. `Ok(true)` when it took the retry.
    async fn api_call(&self, t: usize) -> Result<bool, StepFailure> {
        let manager = &self.fleet(t).manager;
        let key = &self.keys[t];
        let generation = self.book.generation(t);
        let fail = |start, failure| StepFailure {
            start,
            failed_ms: now_ms(),
            generation,
            failure,
        };
        let start = self.book.seq();
        let token = match manager.access_token(key).await {
            Ok(guard) => guard.access_token().clone(),
            Err(error) => return Err(fail(start, Failure::Manager("access_token", error))),
        };
        match self.rest_status(&token).await {
            Ok(200) => return Ok(false),
            Ok(401) => {}
            Ok(status) => return Err(fail(start, Failure::Status("call", status))),
            Err(error) => return Err(fail(start, Failure::Rest(error.to_string()))),
        }
        let start = self.book.seq();
        let retry = match manager.session_expired(key, &token).await {
            Ok(guard) => guard.access_token().clone(),
            Err(error) => return Err(fail(start, Failure::Manager("session_expired", error))),
        };
        match self.rest_status(&retry).await {
            Ok(200) => Ok(true),
            Ok(status) => Err(fail(start, Failure::Status("retry after 401", status))),
            Err(error) => Err(fail(start, Failure::Rest(error.to_string()))),
        }
    }

    /// Counts an API call and, when it failed, asks the emulator whether a token delivered to
    /// the tenant before the failing step still works (a violation), and sends the human to log
    /// in again when the tenant needs it.
    async fn account(self: &Arc<Self>, t: usize, result: Result<bool, StepFailure>) {
        let tally = &self.tally;
        tally.api_calls.fetch_add(1, Ordering::Relaxed);
        let step = match result {
            Ok(retried) => {
                tally.api_ok.fetch_add(1, Ordering::Relaxed);
                if retried {
                    tally.api_ok_after_401.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            Err(step) => step,
        };
        tally.failed.fetch_add(1, Ordering::Relaxed);
        bump(&tally.failures_by_kind, step.failure.label());
        if let Failure::Rest(message) = &step.failure {
            tally.rest_errors.fetch_add(1, Ordering::Relaxed);
            tally.note(format!("tenant {t}: rest transport error: {message}"));
        }
        if let Failure::Manager(_, error @ Error::ReauthorizationRequired { .. }) = &step.failure {
            self.reauthorize(t, step.generation, error);
        }
        for (token, expires_ms, family) in self.book.delivered_by(t, step.start) {
            let valid = match self.rest_status(&token).await {
                Ok(200) => Some("still works"),
                // Dead now, but maybe only since: it was valid at the failure if it had not
                // expired by then and its family is still unrevoked (revocation is for good).
                Ok(_) if step.failed_ms + 50 < expires_ms => {
                    match self.admin.refresh_token_status(&family).await.as_str() {
                        "active" | "rotated_out" => Some("had not expired, its family unrevoked"),
                        _ => None,
                    }
                }
                Ok(_) => None,
                Err(_) => {
                    tally.probe_errors.fetch_add(1, Ordering::Relaxed);
                    None
                }
            };
            if let Some(why) = valid {
                tally.violations.fetch_add(1, Ordering::Relaxed);
                bump(&tally.violations_by_kind, step.failure.label());
                let error = match &step.failure {
                    Failure::Manager(_, error) => chain(error),
                    Failure::Status(_, status) => format!("status {status}"),
                    Failure::Rest(message) => message.clone(),
                };
                tally.note(format!(
                    "VIOLATION tenant {t} (fleet {}): the call failed ({}: {error}) while a \
                         token delivered before the step was valid ({why}; it expires {} ms \
                         after the failure)",
                    t % 4,
                    step.failure.label(),
                    expires_ms as i64 - step.failed_ms as i64,
                ));
                break;
            }
        }
    }

    /// Records a re-authorization of `t` seen at login `generation`, checks that it follows a
    /// lost answer, and sends the human to log in again (once per login).
    fn reauthorize(self: &Arc<Self>, t: usize, generation: u64, error: &Error) {
        {
            let mut log = self.book.log(t);
            if log.generation != generation || log.relogin_pending {
                return;
            }
            log.relogin_pending = true;
            log.reauths += 1;
            if log.timeouts_this_login == 0 {
                log.unexplained_reauths += 1;
                self.tally.note(format!(
                    "UNEXPLAINED re-authorization of tenant {t} (fleet {}): no refresh timeout \
                     since its login: {error}",
                    t % 4
                ));
            }
        }
        self.tally.reauths_by_fleet[t % 4].fetch_add(1, Ordering::Relaxed);
        let cause = match error {
            Error::ReauthorizationRequired { reason, cause, .. } => {
                let cause = cause.map_or("no cause", Cause::as_str);
                if reason.contains("may have rotated") {
                    format!("{cause}, after a lost answer (\"may have rotated\")")
                } else {
                    cause.to_owned()
                }
            }
            other => other.kind().as_str().to_owned(),
        };
        bump(&self.tally.reauths_by_cause, cause);
        let ctx = self.clone();
        let mut relogins = self.relogins.lock().unwrap();
        while let Some(done) = relogins.try_join_next() {
            done.unwrap();
        }
        relogins.spawn(async move { ctx.relogin(t).await });
    }

    /// The human: logs tenant `t` in again (through the same faulty token endpoint) until it
    /// works, and stores the result.
    async fn relogin(&self, t: usize) {
        let fleet = self.fleet(t);
        for attempt in 1.. {
            assert!(attempt <= 100, "tenant {t}: 100 logins in a row failed");
            self.tally.login_attempts.fetch_add(1, Ordering::Relaxed);
            let tokens = match log_in(
                &fleet.client,
                &self.browser,
                &*self.login_transport,
                &username(t),
            )
            .await
            {
                Ok(tokens) => tokens,
                Err(_) => {
                    self.tally.login_failures.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (access, issued_ms, family) = self.book.own_login(t, &tokens);
            let key = fleet.manager.store_tokens(tokens, LABEL).await.unwrap();
            assert_eq!(key, self.keys[t]);
            // Delivered once stored: a call that began before could not have used it.
            self.book.deliver(t, access, issued_ms, &family);
            let mut log = self.book.log(t);
            log.generation += 1;
            log.relogin_pending = false;
            log.timeouts_this_login = 0;
            log.relogins += 1;
            self.tally.relogins.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }

    /// Waits for every login the human started.
    async fn finish_relogins(&self) {
        loop {
            let next = self.relogins.lock().unwrap().try_join_next();
            match next {
                Some(done) => done.unwrap(),
                None if self.relogins.lock().unwrap().is_empty() => return,
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// The web server flow as a person would go through it (auto-approve, `login_hint` naming the
/// user), the code exchange through `transport`.
async fn log_in(
    client: &OAuthClient,
    browser: &reqwest::Client,
    transport: &dyn HttpTransport,
    username: &str,
) -> Result<TokenSet, String> {
    let params = AuthorizeParams {
        login_hint: Some(username.to_owned()),
        ..AuthorizeParams::scopes(["api", "id", "refresh_token"])
    };
    let request = client.authorize_url(&params).map_err(|e| e.to_string())?;
    let response = browser
        .get(request.url.as_str())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("authorize answered without a redirect")?;
    let callback = Url::parse(location).map_err(|e| e.to_string())?;
    let code = client
        .parse_callback(&callback, &request.state)
        .map_err(|e| e.to_string())?;
    client
        .exchange_code(transport, &code, request.pkce_verifier.as_ref())
        .await
        .map_err(|e| e.to_string())
}

/// An error and its sources, one after the other (errors here carry no secret).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

static PANICS: AtomicU64 = AtomicU64::new(0);

/// Counts every panic in the process (spawned tasks' included), then reports it as usual.
fn count_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));
}

async fn worker(ctx: Arc<Ctx>, seed: u64, deadline: Instant) {
    let mut rng = StdRng::seed_from_u64(seed);
    let tenants = ctx.keys.len().max(1);
    while Instant::now() < deadline {
        let t = rng.random_range(0..tenants);
        let result = ctx.api_call(t).await;
        ctx.account(t, result).await;
        tokio::time::sleep(Duration::from_millis(
            rng.random_range(0..2 * WORKER_PAUSE_MS),
        ))
        .await;
    }
}

/// After the load: every tenant must work again (logging in once more where it needs to).
/// Returns the tenants that did not.
async fn sweep(ctx: Arc<Ctx>) -> Vec<usize> {
    let next = Arc::new(AtomicU64::new(0));
    let stuck = Arc::new(Mutex::new(Vec::new()));
    let mut sweepers = JoinSet::new();
    for _ in 0..32 {
        let (ctx, next, stuck) = (ctx.clone(), next.clone(), stuck.clone());
        sweepers.spawn(async move {
            loop {
                let t = next.fetch_add(1, Ordering::SeqCst) as usize;
                if t >= ctx.keys.len() {
                    return;
                }
                let started = Instant::now();
                loop {
                    let result = ctx.api_call(t).await;
                    let ok = result.is_ok();
                    ctx.account(t, result).await;
                    if ok {
                        break;
                    }
                    if started.elapsed() > Duration::from_secs(30) {
                        stuck.lock().unwrap().push(t);
                        break;
                    }
                    // A failure backoff or a login in progress: give it time.
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        });
    }
    while let Some(done) = sweepers.join_next().await {
        done.unwrap();
    }
    stuck.lock().unwrap().clone()
}

fn count(value: &serde_json::Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tenants_ride_out_token_endpoint_faults() {
    if let Some(config) = std::env::var_os(CHILD_ENV) {
        serve_emulator(config.into()).await;
        return;
    }
    count_panics();
    let plan = Plan::from_env();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("emulator.json");
    let config = serde_json::json!({
        "emulator": serde_json::to_value(emulator_config(&plan)).unwrap(),
        "seed": plan.seed,
    });
    std::fs::write(&config_path, config.to_string()).unwrap();
    let mut emulator = EmulatorProcess::spawn(&config_path).await;
    let base_url = Url::parse(&emulator.base_url).unwrap();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let admin = Arc::new(Admin {
        http: browser.clone(),
        base: emulator.base_url.clone(),
    });
    let timed = || {
        ReqwestTransport::builder()
            .timeout(CLIENT_TIMEOUT)
            .build()
            .unwrap()
    };
    let book = Arc::new(Book::new(plan.tenants));
    let library = Arc::new(Observer {
        inner: timed(),
        book: book.clone(),
        library: true,
        outcomes: OutcomeCounts::default(),
        unattributed: AtomicU64::new(0),
    });
    let human = Arc::new(Observer {
        inner: timed(),
        book: book.clone(),
        library: false,
        outcomes: OutcomeCounts::default(),
        unattributed: AtomicU64::new(0),
    });
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let policy = RefreshPolicy::default()
        .margin(Duration::from_secs(1))
        .jitter(Duration::from_secs(1))
        .attempts(ATTEMPTS)
        .failure_backoff(Duration::from_millis(200), Duration::from_secs(2));
    let mut fleets = Vec::new();
    for (f, spec) in FLEETS.iter().enumerate() {
        let app = ConnectedApp::new(client_id(f))
            .with_secret(client_secret(f))
            .with_redirect_uri(CALLBACK)
            .unwrap();
        let mut client = OAuthClient::new(LoginHost::my_domain(&emulator.base_url).unwrap(), app);
        if spec.proactive {
            client = client.with_session_timeout(Duration::from_secs(spec.session_secs));
        }
        let manager = TokenManager::builder(client.clone())
            .transport(observed(library.clone()))
            .store(store.clone())
            .policy(policy.clone())
            .build()
            .await
            .unwrap();
        fleets.push(Fleet {
            spec,
            client,
            manager,
        });
    }

    // Every tenant logs in once, before any fault.
    let logins_started = Instant::now();
    let login_transport = observed(human.clone());
    let mut keys: Vec<Option<TokenKey>> = vec![None; plan.tenants];
    let fleets = Arc::new(fleets);
    {
        let next = Arc::new(AtomicU64::new(0));
        let mut loggers = JoinSet::new();
        for _ in 0..16 {
            let (next, fleets, browser, transport, book) = (
                next.clone(),
                fleets.clone(),
                browser.clone(),
                login_transport.clone(),
                book.clone(),
            );
            let tenants = plan.tenants;
            loggers.spawn(async move {
                let mut keys = Vec::new();
                loop {
                    let t = next.fetch_add(1, Ordering::SeqCst) as usize;
                    if t >= tenants {
                        return keys;
                    }
                    let fleet = &fleets[t % 4];
                    let tokens = log_in(&fleet.client, &browser, &*transport, &username(t))
                        .await
                        .unwrap();
                    let (access, issued_ms, family) = book.own_login(t, &tokens);
                    let key = fleet.manager.store_tokens(tokens, LABEL).await.unwrap();
                    book.deliver(t, access, issued_ms, &family);
                    keys.push((t, key));
                }
            });
        }
        while let Some(done) = loggers.join_next().await {
            for (t, key) in done.unwrap() {
                keys[t] = Some(key);
            }
        }
    }
    let fleets = Arc::into_inner(fleets).unwrap();
    let keys: Vec<TokenKey> = keys.into_iter().map(Option::unwrap).collect();
    let initial_logins = plan.tenants as u64;
    let login_secs = logins_started.elapsed().as_secs_f64();

    let ctx = Arc::new(Ctx {
        plan,
        fleets,
        keys,
        book: book.clone(),
        admin: admin.clone(),
        rest: ReqwestTransport::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        base_url,
        browser,
        login_transport,
        tally: Tally::default(),
        relogins: Mutex::new(JoinSet::new()),
    });
    let plan = &ctx.plan;

    // The load, with the faults. The initial logins met none: they stay out of the fault rate.
    let requests_before_faults = human.outcomes.total();
    emulator.command("faults on").await;
    let load_started = Instant::now();
    let deadline = load_started + Duration::from_secs(plan.secs);
    let mut workers = JoinSet::new();
    for w in 0..plan.workers {
        workers.spawn(worker(
            ctx.clone(),
            plan.seed ^ (w as u64 + 1) << 20,
            deadline,
        ));
    }
    let warm_up = Duration::from_secs((plan.secs / 5).clamp(5, 15));
    tokio::time::sleep(warm_up).await;
    let rss_start = vm_rss_kib(None).unwrap();
    let child_rss_start = emulator.rss_kib().unwrap_or(0);
    let mut rss_samples = vec![rss_start];
    while Instant::now() + Duration::from_secs(5) < deadline {
        tokio::time::sleep(Duration::from_secs(5)).await;
        rss_samples.push(vm_rss_kib(None).unwrap());
    }
    let mut worker_panics = 0;
    while let Some(done) = workers.join_next().await {
        if done.is_err() {
            worker_panics += 1;
        }
    }
    let rss_end = vm_rss_kib(None).unwrap();
    let child_rss_end = emulator.rss_kib().unwrap_or(0);
    rss_samples.push(rss_end);
    let load_secs = load_started.elapsed().as_secs_f64();
    let during_load = (
        ctx.tally.api_calls.load(Ordering::Relaxed),
        ctx.tally.failed.load(Ordering::Relaxed),
    );

    // The faults stop; whatever the emulator still holds is carried out.
    let windows = emulator.command("faults off").await;
    let sent_with_faults =
        library.outcomes.total() + human.outcomes.total() - requests_before_faults;
    let faults_seen = library.outcomes.faults() + human.outcomes.faults();
    let windows = windows.trim_start_matches("faults off").trim().to_owned();
    admin.idle().await;
    ctx.finish_relogins().await;
    let stuck = sweep(ctx.clone()).await;
    ctx.finish_relogins().await;
    admin.idle().await;
    let elapsed_secs = logins_started.elapsed().as_secs_f64();

    // Every tenant's stored refresh token must be accepted by the emulator.
    let mut refresh_token_status: BTreeMap<String, u64> = BTreeMap::new();
    for (t, key) in ctx.keys.iter().enumerate() {
        let tokens = ctx.fleet(t).manager.tokens(key).await.unwrap();
        let status = match &tokens.refresh_token {
            Some(rt) => admin.refresh_token_status(rt.expose_secret()).await,
            None => "none stored".to_owned(),
        };
        *refresh_token_status.entry(status).or_default() += 1;
    }
    let counters = admin.counters().await;

    // Per tenant: token requests against expiries.
    let attempts = u64::from(ATTEMPTS);
    let (mut requests, mut expiries, mut over_bound) = (0u64, 0u64, Vec::new());
    let mut worst_ratio = 0f64;
    let (mut timeouts_rotating, mut timeouts_static) = (0u64, 0u64);
    let (mut reauths, mut unexplained, mut relogins) = (0u64, 0u64, 0u64);
    for t in 0..plan.tenants {
        let log = book.log(t);
        let spec = &FLEETS[t % 4];
        let lifetimes = (elapsed_secs / spec.session_secs as f64).ceil() as u64;
        let tenant_expiries = lifetimes + log.relogins;
        requests += log.refresh_requests;
        expiries += tenant_expiries;
        worst_ratio = worst_ratio.max(log.refresh_requests as f64 / tenant_expiries as f64);
        if log.refresh_requests > tenant_expiries * (1 + attempts) {
            over_bound.push((t, log.refresh_requests, tenant_expiries));
        }
        if spec.rotation {
            timeouts_rotating += log.timeouts;
        } else {
            timeouts_static += log.timeouts;
        }
        reauths += log.reauths;
        unexplained += log.unexplained_reauths;
        relogins += log.relogins;
    }

    let tally = &ctx.tally;
    let library_requests = library.outcomes.total();
    let human_requests = human.outcomes.total();
    let token_requests = library_requests + human_requests;
    let emulator_token_requests = count(&counters["requests"]["token"]);
    let reused = count(&counters["refresh_tokens_reused"]);
    let rotated_unanswered = count(&counters["refresh_tokens_rotated_unanswered"]);
    let abandoned = count(&counters["answers_abandoned"]["token"]);
    let timeouts_seen =
        library.outcomes.get(Outcome::Timeout) + human.outcomes.get(Outcome::Timeout);
    let manager_requests: u64 = ctx
        .fleets
        .iter()
        .map(|f| f.manager.stats().token_requests)
        .sum();

    println!("\n===== soak summary =====");
    println!(
        "tenants {} in 4 fleets; {} workers; load {load_secs:.0} s (asked {} s); initial logins {initial_logins} in {login_secs:.1} s; seed {}",
        plan.tenants, plan.workers, plan.secs, plan.seed
    );
    println!(
        "API calls {} (during load {}): ok {}, ok after a 401 and one retry {}, failed {} (during load {}), \
         failed while a valid token existed {}, rest transport errors {}, probe errors {}",
        tally.api_calls.load(Ordering::Relaxed),
        during_load.0,
        tally.api_ok.load(Ordering::Relaxed),
        tally.api_ok_after_401.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        during_load.1,
        tally.violations.load(Ordering::Relaxed),
        tally.rest_errors.load(Ordering::Relaxed),
        tally.probe_errors.load(Ordering::Relaxed),
    );
    for (kind, n) in tally.failures_by_kind.lock().unwrap().iter() {
        println!("  failed calls, {kind}: {n}");
    }
    for (kind, n) in tally.violations_by_kind.lock().unwrap().iter() {
        println!("  failed while a valid token existed, {kind}: {n}");
    }
    println!(
        "token requests {token_requests} (library {library_requests}, logins {human_requests}; emulator counted {emulator_token_requests}); \
         faults seen {faults_seen} = {:.1} % of the {sent_with_faults} sent while faults were on",
        100.0 * faults_seen as f64 / sent_with_faults.max(1) as f64
    );
    println!(
        "refresh requests {requests} for {expiries} expiries: {:.2} per expiry (bound {}), worst tenant {worst_ratio:.2}; manager counted {manager_requests}",
        requests as f64 / expiries.max(1) as f64,
        1 + attempts
    );
    for outcome in OUTCOMES {
        let (l, h) = (library.outcomes.get(outcome), human.outcomes.get(outcome));
        if l + h > 0 {
            println!("  answers {outcome:?}: library {l}, logins {h}");
        }
    }
    println!("fault windows of {FAULT_WINDOW_MS} ms per kind: {windows}");
    println!(
        "timeouts seen {timeouts_seen} (refreshes: rotating fleets {timeouts_rotating}, static fleets {timeouts_static}); \
         emulator: answers abandoned {abandoned}, rotations unanswered {rotated_unanswered}, rotated-out tokens presented again {reused}, \
         rotations {}",
        count(&counters["refresh_tokens_rotated"])
    );
    println!(
        "re-authorizations {reauths} (unexplained {unexplained}); new logins by the human {relogins} in {} attempts ({} failed)",
        tally.login_attempts.load(Ordering::Relaxed),
        tally.login_failures.load(Ordering::Relaxed),
    );
    for (cause, n) in tally.reauths_by_cause.lock().unwrap().iter() {
        println!("  re-authorizations, {cause}: {n}");
    }
    for (f, fleet) in ctx.fleets.iter().enumerate() {
        let stats = fleet.manager.stats();
        println!(
            "fleet {f} ({}): re-authorizations {}, refreshes {}, rotations {}, failures {}, served stale {}, coalesced {}, token requests {}",
            fleet.spec.name,
            tally.reauths_by_fleet[f].load(Ordering::Relaxed),
            stats.refreshes,
            stats.rotations,
            stats.refresh_failures,
            stats.served_stale,
            stats.coalesced,
            stats.token_requests,
        );
    }
    println!(
        "stored refresh tokens at the end, as the emulator sees them: {refresh_token_status:?}"
    );
    println!("tenants stuck after the load: {stuck:?}");
    println!(
        "RSS: start {rss_start} KiB (after {} s of warm-up), end {rss_end} KiB ({:+.1} %); samples {rss_samples:?}; \
         emulator process {child_rss_start} -> {child_rss_end} KiB",
        warm_up.as_secs(),
        100.0 * (rss_end as f64 - rss_start as f64) / rss_start as f64
    );
    println!("panics {}", PANICS.load(Ordering::SeqCst));
    for line in tally.details.lock().unwrap().iter() {
        println!("  {line}");
    }
    println!("========================\n");

    for fleet in &ctx.fleets {
        fleet.manager.shutdown(Duration::from_secs(1)).await;
    }
    ctx.relogins.lock().unwrap().abort_all();
    emulator.stop().await;

    // No panic, anywhere.
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a panic happened");
    assert_eq!(worker_panics, 0, "a worker panicked");
    // No API call failed while a valid (delivered) token existed, and none for a reason of the
    // test's own making.
    assert_eq!(
        tally.violations.load(Ordering::Relaxed),
        0,
        "calls failed while a valid token existed"
    );
    assert_eq!(
        tally.rest_errors.load(Ordering::Relaxed),
        0,
        "REST calls failed in transport"
    );
    // The soak really ran: calls for every tenant many times over, faults at about the rate.
    assert!(
        during_load.0 >= 5 * plan.tenants as u64,
        "too few API calls to say anything"
    );
    let rate = faults_seen as f64 / sent_with_faults as f64;
    assert!((0.15..=0.25).contains(&rate), "fault rate {rate}");
    assert!(requests >= plan.tenants as u64 * 3, "too few refreshes");
    // Token requests: every one accounted for, within one refresh and its retries per expiry.
    assert_eq!(
        emulator_token_requests, token_requests,
        "emulator and client disagree"
    );
    assert_eq!(
        library.unattributed.load(Ordering::Relaxed),
        0,
        "a refresh nobody owned"
    );
    assert_eq!(
        manager_requests, library_requests,
        "the managers' count disagrees"
    );
    assert!(
        over_bound.is_empty(),
        "tenants over expiries × (1 + attempts): {over_bound:?}"
    );
    // Re-authorizations: only after a lost answer on a rotating tenant, each explained by a
    // rotated-out token coming back, each of which follows a refresh timeout.
    assert_eq!(unexplained, 0, "re-authorizations without a lost answer");
    for (f, spec) in FLEETS.iter().enumerate() {
        if !spec.rotation {
            assert_eq!(
                tally.reauths_by_fleet[f].load(Ordering::Relaxed),
                0,
                "a tenant without rotation needed a new login"
            );
        }
    }
    assert!(
        reauths <= reused,
        "more re-authorizations ({reauths}) than reuses ({reused})"
    );
    assert!(
        reused <= timeouts_rotating,
        "rotated-out tokens presented again ({reused}) beyond refresh timeouts ({timeouts_rotating})"
    );
    assert!(
        abandoned <= timeouts_seen,
        "answers abandoned beyond timeouts"
    );
    // Afterwards every tenant works and holds a refresh token the emulator accepts.
    assert!(stuck.is_empty(), "tenants stuck after the load: {stuck:?}");
    assert_eq!(
        refresh_token_status.get("active").copied(),
        Some(plan.tenants as u64),
        "stored refresh tokens not accepted: {refresh_token_status:?}"
    );
    // Memory flat (generous: the machine is shared).
    assert!(
        rss_end * 2 <= rss_start * 3,
        "RSS grew from {rss_start} KiB to {rss_end} KiB"
    );
}
