//! No secret leaves its place: every flow of the library and every command of the `sfauth`
//! binary, run against the emulator over TCP with tracing at TRACE captured, must leave no access
//! token, refresh token, client secret, password, security token, passphrase, private key,
//! authorization code, PKCE verifier, device code or bearer assertion in any log line, error
//! (`Display`, `Debug`, `{:#?}`, its sources), `Debug` of a token, record or manager type, panic
//! message, stdout other than `sfauth token`'s, or file at rest; and every file the stores and
//! the CLI write is 0600, every directory 0700.
//!
//! A secret counts as leaked when any 12 consecutive characters of it show up (see [`Secrets`]):
//! a redaction that keeps a long prefix, or an excerpt that keeps a short token whole, is a leak.
//! The secrets are the configured ones (the seeded app's secret, the user's password and security
//! token, the private key's lines, the export passphrase) and every token the test saw issued
//! (taken from the responses, and for the CLI from its store, read with its key after each
//! command).
//!
//! Each check is its own test, so a failure names what leaked where; the failure message shows
//! the place and a context with the secret itself masked.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sfauth::storage::{Key, Keyring, ListQuery, TokenStore, TokenStoreExt as _};
use sfauth::{FileStore, MemoryStore, Renewal, SqliteStore, TokenManager};
use sfauth_core::flows::{
    AuthorizeParams, DevicePoll, IdTokenCheck, JwtBearer, RevokeMethod, TokenExchange,
    TokenTypeHint, token_type,
};
use sfauth_core::format::ResponseFormat;
use sfauth_core::{AccessToken, OAuthClient, Password, PrivateKey, SecretValue, TokenSet};
use sfauth_emulator::{
    Clock, Emulator, Endpoint, Fault, FaultKind, SEED_CLIENT_PRIVATE_KEY, assertions,
};
use sfauth_tests::Env;

/// A leak is this many consecutive characters of a secret.
const WINDOW: usize = 12;

/// The label of a store's encryption key among the secrets: it may be in its key file only.
const STORE_KEY: &str = "store key";

// ------------------------------------------------------------------------------------------
// Capture: every tracing event and span field of this process, and every panic message.
// ------------------------------------------------------------------------------------------

mod capture {
    use std::fmt::Write as _;
    use std::sync::{Mutex, Once};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Subscriber};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
    use tracing_subscriber::registry::LookupSpan;

    static LINES: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    static TEST_THREADS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static PANICS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    static INSTALL: Once = Once::new();

    /// Installs, once per process, a global subscriber at TRACE that keeps every event and
    /// every span field, and a panic hook that keeps every panic message. Global, so that events
    /// from any thread (runtime workers, blocking pools, SQLite's worker) are kept.
    pub(crate) fn install() {
        INSTALL.call_once(|| {
            let subscriber = tracing_subscriber::registry().with(Keep);
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in this test binary");
            let default = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let message = info
                    .payload()
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let thread = thread();
                PANICS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((thread, format!("{message} at {:?}", info.location())));
                default(info);
            }));
        });
    }

    /// Marks the current thread as a test's own: lines logged on it belong to that test.
    pub(crate) fn register_test_thread() {
        let me = thread();
        let mut threads = TEST_THREADS.lock().unwrap_or_else(|e| e.into_inner());
        if !threads.contains(&me) {
            threads.push(me);
        }
    }

    /// Every captured line that may be the current test's: logged on its thread, or on a
    /// thread no test owns (runtime workers, blocking pools, SQLite's worker), since a line
    /// there cannot be told apart.
    pub(crate) fn lines() -> Vec<String> {
        let me = thread();
        let tests = TEST_THREADS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        LINES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(thread, _)| *thread == me || !tests.contains(thread))
            .map(|(_, line)| line.clone())
            .collect()
    }

    /// The name of the current thread (libtest names each test's thread after the test).
    pub(crate) fn thread() -> String {
        std::thread::current().name().unwrap_or("").to_owned()
    }

    /// Every panic so far: the thread's name and the message.
    pub(crate) fn panics() -> Vec<(String, String)> {
        PANICS.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn keep(line: String) {
        LINES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((thread(), line));
    }

    /// The emulator plays Salesforce; what it logs is the server's business, not ours.
    fn ours(target: &str) -> bool {
        !target.starts_with("sfauth_emulator")
    }

    struct Keep;

    struct Fields<'a>(&'a mut String);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let _ = write!(self.0, " {}={:?}", field.name(), value);
        }

        fn record_str(&mut self, field: &Field, value: &str) {
            // Raw, so that no escaping hides a value.
            let _ = write!(self.0, " {}={}", field.name(), value);
        }

        fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
            let _ = write!(self.0, " {}={} ({:?})", field.name(), value, value);
            let mut source = value.source();
            while let Some(error) = source {
                let _ = write!(self.0, " caused by {error} ({error:?})");
                source = error.source();
            }
        }
    }

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Keep {
        fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
            let meta = attrs.metadata();
            if !ours(meta.target()) {
                return;
            }
            let mut line = format!("SPAN {} {} {}:", meta.level(), meta.target(), meta.name());
            attrs.record(&mut Fields(&mut line));
            keep(line);
        }

        fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
            let Some(span) = ctx.span(id) else { return };
            let meta = span.metadata();
            if !ours(meta.target()) {
                return;
            }
            let mut line = format!("RECORD {} {}:", meta.target(), meta.name());
            values.record(&mut Fields(&mut line));
            keep(line);
        }

        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let meta = event.metadata();
            if !ours(meta.target()) {
                return;
            }
            let mut line = format!("{} {}:", meta.level(), meta.target());
            event.record(&mut Fields(&mut line));
            keep(line);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Secrets and where they must not be.
// ------------------------------------------------------------------------------------------

/// Every secret a test met, and every 12-character window of each.
///
/// Windows that also occur in a public value (org id, user id, consumer key, username, URLs)
/// or that have fewer than four distinct characters (`000000000000`) are not evidence of a
/// leak and are left out. For a session id (`00D…!AQ…`) only the part after `!` is secret: the
/// part before it is the org id.
#[derive(Default)]
struct Secrets {
    labels: Vec<String>,
    windows: HashMap<[u8; WINDOW], usize>,
    public: Vec<String>,
}

impl Secrets {
    fn public(&mut self, value: &str) {
        self.public.push(value.to_owned());
    }

    /// Adds `value` under `label` (the label names the secret in a failure, never its value).
    fn add(&mut self, label: &str, value: &str) {
        let secret = match value.split_once('!') {
            Some((org, rest)) if org.starts_with("00D") => rest,
            _ => value,
        };
        let index = self.labels.len();
        self.labels.push(label.to_owned());
        for window in secret.as_bytes().windows(WINDOW) {
            let mut distinct = window.to_vec();
            distinct.sort_unstable();
            distinct.dedup();
            if distinct.len() < 4 {
                continue;
            }
            let text = String::from_utf8_lossy(window);
            if self.public.iter().any(|p| p.contains(text.as_ref())) {
                continue;
            }
            self.windows
                .entry(window.try_into().unwrap())
                .or_insert(index);
        }
    }

    /// A JWT's header and claims are public knowledge; its signature makes it a credential.
    fn add_jwt(&mut self, label: &str, jwt: &str) {
        self.add(label, jwt.rsplit('.').next().unwrap_or(jwt));
    }

    /// Every line of a PEM key between its armour lines.
    fn add_pem(&mut self, label: &str, pem: &str) {
        for (n, line) in pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .enumerate()
        {
            self.add(&format!("{label} line {n}"), line.trim());
        }
    }

    fn add_tokens(&mut self, label: &str, tokens: &TokenSet) {
        self.add(
            &format!("{label} access token"),
            tokens.access_token.expose_secret(),
        );
        if let Some(refresh) = &tokens.refresh_token {
            self.add(&format!("{label} refresh token"), refresh.expose_secret());
        }
        if let Some(id_token) = &tokens.id_token {
            self.add_jwt(&format!("{label} id token"), id_token.expose_secret());
        }
    }

    /// Every leaked run in `text`: where it starts and ends, and the secret's label index.
    fn runs(&self, text: &str) -> Vec<(usize, usize, usize)> {
        let bytes = text.as_bytes();
        let mut runs = Vec::new();
        let mut i = 0;
        while i + WINDOW <= bytes.len() {
            let window: [u8; WINDOW] = bytes[i..i + WINDOW].try_into().unwrap();
            let Some(&index) = self.windows.get(&window) else {
                i += 1;
                continue;
            };
            // The leaked run: as long as consecutive windows stay secret.
            let mut end = i + WINDOW;
            while end < bytes.len() {
                let next: [u8; WINDOW] = bytes[end + 1 - WINDOW..=end].try_into().unwrap();
                if !self.windows.contains_key(&next) {
                    break;
                }
                end += 1;
            }
            runs.push((floor(text, i), ceil(text, end), index));
            i = end;
        }
        runs
    }

    /// `text` with every leaked run replaced by `<<N chars of LABEL>>`, and the labels of the
    /// secrets found (none: `text` is clean).
    fn masked(&self, text: &str) -> (String, Vec<String>) {
        let mut masked = String::new();
        let mut labels = Vec::new();
        let mut last = 0;
        for (start, end, index) in self.runs(text) {
            masked.push_str(&text[last..start]);
            masked.push_str(&format!(
                "<<{} chars of {}>>",
                end - start,
                self.labels[index]
            ));
            if !labels.contains(&self.labels[index]) {
                labels.push(self.labels[index].clone());
            }
            last = end;
        }
        masked.push_str(&text[last..]);
        (masked, labels)
    }

    /// The leak in `text`, if any: the secrets' labels and a context around the leaks in which
    /// every secret is masked, so that a failure message never repeats a secret.
    fn find(&self, text: &str) -> Option<(Vec<String>, String)> {
        let (masked, labels) = self.masked(text);
        if labels.is_empty() {
            return None;
        }
        let first = masked.find("<<").unwrap_or(0);
        let last = masked.rfind(">>").map_or(masked.len(), |at| at + 2);
        let from = floor(&masked, first.saturating_sub(80));
        let to = ceil(&masked, (last + 80).min(masked.len()).min(from + 600));
        Some((labels, masked[from..to].replace('\n', "\\n")))
    }
}

fn floor(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn ceil(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

/// What one test collects: its secrets, and every text that must hold none of them.
struct Audit {
    secrets: Secrets,
    /// Where, what, and the labels of secrets allowed there (the store key in its key file).
    texts: Vec<(String, String, Vec<String>)>,
    /// Checked and found to hold something: proof that the capture is not empty by mistake.
    required_logs: Vec<&'static str>,
    /// What is wrong besides a leak: a file mode, a panic.
    problems: Vec<String>,
}

impl Audit {
    fn new() -> Self {
        capture::install();
        capture::register_test_thread();
        let mut secrets = Secrets::default();
        for public in [
            sfauth_emulator::SEED_ORG_ID,
            sfauth_emulator::SEED_USER_ID,
            sfauth_emulator::SEED_CLIENT_ID,
            sfauth_emulator::SEED_USERNAME,
            sfauth_emulator::SEED_CALLBACK_URL,
        ] {
            secrets.public(public);
        }
        secrets.add("client secret", sfauth_emulator::SEED_CLIENT_SECRET);
        secrets.add("password", sfauth_emulator::SEED_PASSWORD);
        secrets.add("security token", sfauth_emulator::SEED_SECURITY_TOKEN);
        secrets.add(
            "password with security token",
            &format!(
                "{}{}",
                sfauth_emulator::SEED_PASSWORD,
                sfauth_emulator::SEED_SECURITY_TOKEN
            ),
        );
        secrets.add_pem("private key", SEED_CLIENT_PRIVATE_KEY);
        Self {
            secrets,
            texts: Vec::new(),
            required_logs: vec!["http.request"],
            problems: Vec::new(),
        }
    }

    fn for_env(env: &Env) -> Self {
        let mut audit = Self::new();
        let creds = env.creds();
        for public in [
            creds.org_id.as_str(),
            creds.user_id.as_str(),
            creds.client_id.as_str(),
            creds.username.as_str(),
            creds.instance_url.as_str(),
            env.emulator.base_url(),
        ] {
            audit.secrets.public(public);
        }
        audit.secrets.add("client secret", &creds.client_secret);
        audit.secrets.add("password", &creds.password);
        audit.secrets.add("security token", &creds.security_token);
        audit
    }

    fn problem(&mut self, problem: String) {
        self.problems.push(problem);
    }

    fn text(&mut self, place: impl Into<String>, text: impl Into<String>) {
        self.texts.push((place.into(), text.into(), Vec::new()));
    }

    /// `value`'s `{:?}` and `{:#?}`.
    fn debug(&mut self, place: &str, value: &dyn Debug) {
        self.text(format!("{place} ({{:?}})"), format!("{value:?}"));
        self.text(format!("{place} ({{:#?}})"), format!("{value:#?}"));
    }

    /// `error`'s `Display`, `{:?}`, `{:#?}`, and the same of every source.
    fn error(&mut self, place: &str, error: &(dyn std::error::Error + 'static)) {
        self.text(format!("{place} (Display)"), error.to_string());
        self.debug(place, &error);
        let mut depth = 0;
        let mut source = error.source();
        while let Some(inner) = source {
            depth += 1;
            self.text(
                format!("{place} source {depth} (Display)"),
                inner.to_string(),
            );
            self.debug(&format!("{place} source {depth}"), &inner);
            source = inner.source();
        }
    }

    fn tokens(&mut self, label: &str, tokens: &TokenSet) {
        self.secrets.add_tokens(label, tokens);
        self.debug(&format!("TokenSet from {label}"), tokens);
        self.debug(&format!("AccessToken from {label}"), &tokens.access_token);
        if let Some(refresh) = &tokens.refresh_token {
            self.debug(&format!("RefreshToken from {label}"), refresh);
        }
    }

    /// Fails with every leak found in the collected texts, the captured logs and the panics
    /// of this process, and with every problem noted; also fails on a panic on this test's
    /// thread or a runtime worker.
    #[track_caller]
    fn assert_clean(self) {
        let mut leaks = Vec::new();
        for problem in &self.problems {
            leaks.push(mask(&self.secrets, problem));
        }
        for (place, text, allowed) in &self.texts {
            if let Some((labels, context)) = self.secrets.find(text)
                && labels.iter().any(|label| !allowed.contains(label))
            {
                leaks.push(format!("{place}: {}: {context}", labels.join(", ")));
            }
        }
        let lines = capture::lines();
        for required in &self.required_logs {
            assert!(
                lines.iter().any(|line| line.contains(required)),
                "the capture holds no {required:?} line: tracing is not captured"
            );
        }
        for line in &lines {
            if let Some((labels, context)) = self.secrets.find(line) {
                leaks.push(format!("log line: {}: {context}", labels.join(", ")));
            }
        }
        let me = capture::thread();
        for (thread, message) in capture::panics() {
            if let Some((labels, context)) = self.secrets.find(&message) {
                leaks.push(format!(
                    "panic message on {thread:?}: {}: {context}",
                    labels.join(", ")
                ));
            }
            if thread == me || thread.starts_with("tokio-") {
                leaks.push(format!(
                    "a panic on {thread:?} (there should be none): {}",
                    mask(&self.secrets, &message)
                ));
            }
        }
        leaks.dedup();
        assert!(
            leaks.is_empty(),
            "{} leak(s) of secrets or other problems:\n{}",
            leaks.len(),
            leaks.join("\n")
        );
    }
}

/// `text` with every secret masked.
fn mask(secrets: &Secrets, text: &str) -> String {
    secrets.masked(text).0
}

fn now_secs() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// An emulator of its own for each test, with a seed no other test of this run uses: the
/// emulator's tokens follow from its seed, and two tests holding the same token could not tell
/// whose leak a log line is.
async fn env(rotation: bool) -> Env {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let seed = sfauth_tests::SEED + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Env::start_with(|b| {
        b.seed(seed)
            .app_policy(|p| p.rotation = rotation)
            .settings(|s| s.device_interval_secs = 1)
    })
    .await
    .unwrap()
}

// ------------------------------------------------------------------------------------------
// Library: every flow, the token manager, and error bodies that carry secrets.
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn web_server_user_agent_and_device_flows() {
    let env = env(true).await;
    let mut audit = Audit::for_env(&env);
    let client = env.client().unwrap();
    audit.debug("OAuthClient", &client);
    audit.debug("ConnectedApp", client.app());

    // Web server flow with PKCE, an ID token, and its validation.
    let params = AuthorizeParams {
        nonce: Some("n-secrets".into()),
        ..AuthorizeParams::scopes(["api", "id", "refresh_token", "openid"])
    };
    let request = client.authorize_url(&params).unwrap();
    let verifier = request.pkce_verifier.clone().unwrap();
    audit.secrets.add("pkce verifier", verifier.expose_secret());
    audit.debug("AuthorizationRequest", &request);
    let callback = env.follow_authorize(&request.url).await.unwrap();
    let code = client.parse_callback(&callback, &request.state).unwrap();
    audit
        .secrets
        .add("authorization code", code.expose_secret());
    audit.debug("AuthorizationCode", &code);
    let tokens = client
        .exchange_code(&env.transport, &code, Some(&verifier))
        .await
        .unwrap();
    audit.tokens("web server flow", &tokens);
    let check = IdTokenCheck {
        nonce: Some("n-secrets".into()),
        ..IdTokenCheck::default()
    };
    let claims = client
        .validate_id_token(&env.transport, tokens.id_token.as_ref().unwrap(), &check)
        .await
        .unwrap();
    audit.debug("IdTokenClaims", &claims);

    // The code is spent: exchanging it again is an error that must not echo it.
    let error = client
        .exchange_code(&env.transport, &code, Some(&verifier))
        .await
        .unwrap_err();
    audit.error("exchanging a spent code", &error);
    // A state mismatch.
    let error = client
        .parse_callback(&callback, "another-state")
        .unwrap_err();
    audit.error("callback state mismatch", &error);

    // User-agent flow: the tokens arrive in the fragment.
    let (request, redirect) = env
        .user_agent_redirect(&client, &["api", "refresh_token"])
        .await
        .unwrap();
    let tokens = client.parse_fragment(&redirect, &request.state).unwrap();
    audit.tokens("user-agent flow", &tokens);

    // Device flow: pending, approved, then spent.
    let authorization = client
        .device_start(&env.transport, Some("api refresh_token"))
        .await
        .unwrap();
    audit
        .secrets
        .add("device code", authorization.device_code.expose_secret());
    audit.debug("DeviceAuthorization", &authorization);
    let pending = client
        .device_poll(&env.transport, &authorization)
        .await
        .unwrap();
    audit.debug("DevicePoll pending", &pending);
    env.emulator
        .approve_device(&authorization.user_code, &env.creds().username)
        .unwrap();
    env.emulator.advance(authorization.interval);
    let DevicePoll::Complete(tokens) = client
        .device_poll(&env.transport, &authorization)
        .await
        .unwrap()
    else {
        panic!("an approved device code completes");
    };
    audit.tokens("device flow", &tokens);
    let error = client
        .device_poll(&env.transport, &authorization)
        .await
        .unwrap_err();
    audit.error("polling a spent device code", &error);

    audit.assert_clean();
}

#[tokio::test]
async fn bearer_password_client_credentials_and_exchange_flows() {
    let env = env(true).await;
    let mut audit = Audit::for_env(&env);
    let creds = env.creds().clone();
    let client = env.client().unwrap();

    // Username-password, right and wrong.
    let tokens = env.password_login(&client).await.unwrap();
    audit.tokens("password flow", &tokens);
    let wrong = "not-the-password-but-secret-all-the-same";
    audit.secrets.add("wrong password", wrong);
    let error = client
        .password(&env.transport, &creds.username, &Password::new(wrong))
        .await
        .unwrap_err();
    audit.error("password flow with a wrong password", &error);

    // JWT bearer with the seeded key, and with a damaged key.
    let jwt = env.seeded_jwt();
    audit.debug("JwtBearer", &jwt);
    let assertion = jwt
        .assertion(
            &creds.client_id,
            "https://login.salesforce.com",
            SystemTime::now(),
        )
        .unwrap();
    audit
        .secrets
        .add_jwt("jwt assertion", assertion.expose_secret());
    let key_only = env.key_only_client(env.host().unwrap());
    let tokens = key_only.jwt_bearer(&env.transport, &jwt).await.unwrap();
    audit.tokens("jwt bearer flow", &tokens);
    let damaged = SEED_CLIENT_PRIVATE_KEY.replacen("MII", "MIJ", 1);
    audit.secrets.add_pem("damaged private key", &damaged);
    let error = key_only
        .jwt_bearer(
            &env.transport,
            &JwtBearer::new(creds.username.clone(), PrivateKey::new(damaged)),
        )
        .await
        .unwrap_err();
    audit.error("jwt bearer flow with a damaged key", &error);

    // Client credentials, with the right and a wrong secret.
    let tokens = client.client_credentials(&env.transport).await.unwrap();
    audit.tokens("client credentials flow", &tokens);
    let wrong_secret = "WRONG0CONSUMER0SECRET0abcdefghijklmnop";
    audit.secrets.add("wrong client secret", wrong_secret);
    let wrong_app = sfauth_core::ConnectedApp::new(creds.client_id.clone())
        .with_secret(wrong_secret)
        .with_redirect_uri(&creds.callback_url)
        .unwrap();
    audit.debug("ConnectedApp with a wrong secret", &wrong_app);
    let error = OAuthClient::new(env.host().unwrap(), wrong_app)
        .client_credentials(&env.transport)
        .await
        .unwrap_err();
    audit.error("client credentials with a wrong secret", &error);

    // Token exchange of every subject type, and a refused one.
    let original = env
        .web_server_login(&client, &["api", "openid", "refresh_token"])
        .await
        .unwrap();
    audit.tokens("login for token exchange", &original);
    let saml = assertions::saml(
        &creds.client_id,
        &creds.username,
        "https://login.salesforce.com",
        now_secs() + 300,
    );
    audit.secrets.add("saml assertion", &saml);
    let signed = assertions::jwt(
        SEED_CLIENT_PRIVATE_KEY,
        &serde_json::json!({"iss": "https://idp.example.com", "sub": creds.username, "exp": now_secs() + 300}),
    )
    .unwrap();
    audit.secrets.add_jwt("subject jwt", &signed);
    let exchanges = [
        (
            "refresh token",
            TokenExchange::new(
                SecretValue::from(original.refresh_token.clone().unwrap()),
                token_type::REFRESH_TOKEN,
            ),
        ),
        (
            "access token",
            TokenExchange::new(
                SecretValue::from(original.access_token.clone()),
                token_type::ACCESS_TOKEN,
            ),
        ),
        (
            "id token",
            TokenExchange::new(
                SecretValue::new(original.id_token.as_ref().unwrap().expose_secret()),
                token_type::ID_TOKEN,
            ),
        ),
        (
            "saml",
            TokenExchange::new(SecretValue::new(saml.clone()), token_type::SAML2),
        ),
        (
            "jwt",
            TokenExchange::new(SecretValue::new(signed), token_type::JWT),
        ),
    ];
    for (subject, exchange) in &exchanges {
        audit.debug(&format!("TokenExchange of a {subject}"), exchange);
        let tokens = client
            .token_exchange(&env.transport, exchange)
            .await
            .unwrap();
        audit.tokens(&format!("token exchange of a {subject}"), &tokens);
    }
    let bogus = format!("{}!AQbogusSubjectTokenThatIsSecret0123", creds.org_id);
    audit.secrets.add("refused subject token", &bogus);
    let error = client
        .token_exchange(
            &env.transport,
            &TokenExchange::new(SecretValue::new(bogus), token_type::ACCESS_TOKEN),
        )
        .await
        .unwrap_err();
    audit.error("token exchange of an unknown subject", &error);

    // SAML bearer, fresh and stale.
    let tokens = client
        .saml_bearer(&env.transport, &SecretValue::new(saml))
        .await
        .unwrap();
    audit.tokens("saml bearer flow", &tokens);
    let stale = assertions::saml(
        &creds.client_id,
        &creds.username,
        "https://login.salesforce.com",
        now_secs() - 1,
    );
    audit.secrets.add("stale saml assertion", &stale);
    let error = client
        .saml_bearer(&env.transport, &SecretValue::new(stale))
        .await
        .unwrap_err();
    audit.error("saml bearer flow with a stale assertion", &error);

    audit.assert_clean();
}

#[tokio::test]
async fn refresh_rotation_revoke_introspect_and_identity() {
    let env = env(true).await;
    let mut audit = Audit::for_env(&env);
    let client = env.client().unwrap();

    // Refresh with rotation, in every response format.
    let first = env.login().await.unwrap();
    audit.tokens("login", &first);
    let mut current = first.clone();
    for format in [
        ResponseFormat::Json,
        ResponseFormat::UrlEncoded,
        ResponseFormat::Xml,
    ] {
        let next = client
            .clone()
            .with_format(format)
            .refresh(&env.transport, current.refresh_token.as_ref().unwrap())
            .await
            .unwrap();
        audit.tokens(&format!("refresh in {format:?}"), &next);
        current = next;
    }

    // Introspection, userinfo and the identity URL.
    for (hint, token) in [
        (
            Some(TokenTypeHint::AccessToken),
            SecretValue::from(current.access_token.clone()),
        ),
        (
            Some(TokenTypeHint::RefreshToken),
            SecretValue::from(current.refresh_token.clone().unwrap()),
        ),
        (None, SecretValue::from(first.access_token.clone())),
    ] {
        let introspection = client
            .introspect(&env.transport, &token, hint)
            .await
            .unwrap();
        audit.debug(&format!("Introspection with hint {hint:?}"), &introspection);
    }
    let user = client
        .userinfo(&env.transport, &current.access_token)
        .await
        .unwrap();
    audit.debug("UserInfo", &user);
    let identity = client.identity(&env.transport, &current).await.unwrap();
    audit.debug("IdentityInfo", &identity);

    // Revoke the access token by POST, then again (an error); userinfo with it (an error).
    client
        .revoke(
            &env.transport,
            &SecretValue::from(current.access_token.clone()),
            RevokeMethod::Post,
        )
        .await
        .unwrap();
    let error = client
        .revoke(
            &env.transport,
            &SecretValue::from(current.access_token.clone()),
            RevokeMethod::Post,
        )
        .await
        .unwrap_err();
    audit.error("revoking a revoked access token", &error);
    let error = client
        .userinfo(&env.transport, &current.access_token)
        .await
        .unwrap_err();
    audit.error("userinfo with a revoked token", &error);
    let error = client.identity(&env.transport, &current).await.unwrap_err();
    audit.error("identity with a revoked token", &error);

    // Reuse of a rotated-out refresh token: refused, and the family dies.
    let error = client
        .refresh(&env.transport, first.refresh_token.as_ref().unwrap())
        .await
        .unwrap_err();
    audit.error("refresh with a rotated-out token", &error);

    // Revoke a refresh token by GET (the token travels in the query string).
    let other = env.login().await.unwrap();
    audit.tokens("second login", &other);
    client
        .revoke(
            &env.transport,
            &SecretValue::from(other.refresh_token.clone().unwrap()),
            RevokeMethod::Get,
        )
        .await
        .unwrap();
    let error = client
        .refresh(&env.transport, other.refresh_token.as_ref().unwrap())
        .await
        .unwrap_err();
    audit.error("refresh with a revoked refresh token", &error);

    audit.assert_clean();
}

/// The token manager over `store`: logins, access tokens, a dead session, forced refreshes with
/// rotation, renewal by flow, and the re-authorization path.
async fn token_manager_over(env: &Env, audit: &mut Audit, store: Arc<dyn TokenStore>) {
    let client = env
        .client()
        .unwrap()
        .with_session_timeout(Duration::from_secs(3600));
    let manager: TokenManager = env
        .manager_builder(client)
        .store(store.clone())
        .build()
        .await
        .unwrap();
    audit.debug("TokenManager", &manager);

    let login = env.login().await.unwrap();
    audit.tokens("manager login", &login);
    let key = manager.store_tokens(login, "default").await.unwrap();
    let guard = manager.access_token(&key).await.unwrap();
    audit.debug("AccessTokenGuard", &guard);
    let stale: AccessToken = guard.access_token().clone();
    drop(guard);

    // The org kills the session: the manager refreshes (rotation) once.
    env.emulator.expire_access_tokens();
    let guard = manager.session_expired(&key, &stale).await.unwrap();
    audit.debug("AccessTokenGuard after session_expired", &guard);
    drop(guard);
    audit.tokens(
        "after session_expired",
        &manager.tokens(&key).await.unwrap(),
    );
    for n in 0..2 {
        let guard = manager.refresh(&key).await.unwrap();
        drop(guard);
        audit.tokens(
            &format!("after forced refresh {n}"),
            &manager.tokens(&key).await.unwrap(),
        );
    }
    let mut tenant = manager.tenant(&key).await.unwrap();
    audit.debug("Tenant", &tenant);
    {
        let token = tenant.access_token().await.unwrap();
        audit.debug("TokenRef", &token);
    }
    let record = store.get(&key).await.unwrap().unwrap();
    audit.debug("TokenRecord", &record);

    // Tenants without a refresh token, renewed by their flow.
    let cc = manager
        .client()
        .client_credentials(&env.transport)
        .await
        .unwrap();
    audit.tokens("manager client credentials", &cc);
    let cc_key = manager.store_tokens(cc, "integration").await.unwrap();
    manager
        .set_renewal(&cc_key, Renewal::ClientCredentials)
        .await
        .unwrap();
    let guard = manager.refresh(&cc_key).await.unwrap();
    drop(guard);
    audit.tokens(
        "client credentials renewal",
        &manager.tokens(&cc_key).await.unwrap(),
    );
    let jwt = env.seeded_jwt();
    let renewal = Renewal::JwtBearer(jwt.clone());
    audit.debug("Renewal", &renewal);
    let tokens = manager
        .client()
        .jwt_bearer(&env.transport, &jwt)
        .await
        .unwrap();
    audit.tokens("manager jwt bearer", &tokens);
    let jwt_key = manager.store_tokens(tokens, "jwt").await.unwrap();
    manager.set_renewal(&jwt_key, renewal).await.unwrap();
    let guard = manager.refresh(&jwt_key).await.unwrap();
    drop(guard);
    audit.tokens("jwt renewal", &manager.tokens(&jwt_key).await.unwrap());

    // The re-authorization path: an admin revokes; refresh and later calls fail.
    let stale = manager
        .access_token(&key)
        .await
        .unwrap()
        .access_token()
        .clone();
    env.emulator
        .revoke_user_tokens(&env.creds().username)
        .unwrap();
    let error = manager.session_expired(&key, &stale).await.unwrap_err();
    audit.error("manager session_expired after revocation", &error);
    let error = manager.access_token(&key).await.unwrap_err();
    audit.error("manager access_token needing reauthorization", &error);
    let record = store.get(&key).await.unwrap().unwrap();
    audit.debug("TokenRecord needing reauthorization", &record);
    audit.debug("TokenManager at the end", &manager);
    audit.debug("Stats", &manager.stats());
}

/// Every file under `dir`: no secret in its bytes, mode 0600; every directory 0700. Files in
/// `inputs` were given to the code under test, not written by it: their content is not
/// checked (their mode is).
fn audit_at_rest(audit: &mut Audit, dir: &Path, inputs: &[&Path]) {
    use std::os::unix::fs::PermissionsExt as _;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            if mode != 0o700 {
                audit.problem(format!(
                    "directory {} has mode {mode:o}, not 700",
                    path.display()
                ));
            }
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        } else {
            if mode != 0o600 {
                audit.problem(format!(
                    "file {} has mode {mode:o}, not 600",
                    path.display()
                ));
            }
            if inputs.contains(&path.as_path()) {
                continue;
            }
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            let place = format!("file at rest {}", path.display());
            // A key file holds the store key, and nothing else.
            if path.extension().is_some_and(|ext| ext == "key") {
                audit.texts.push((place, text, vec![STORE_KEY.to_owned()]));
            } else {
                audit.text(place, text);
            }
        }
    }
}

/// A new store key, known to `audit` as a secret, in a keyring.
fn store_keyring(audit: &mut Audit) -> Keyring {
    let key = Key::generate();
    audit.secrets.add(STORE_KEY, &key.to_base64());
    audit.debug("Key", &key);
    let keyring = Keyring::new(key);
    audit.debug("Keyring", &keyring);
    keyring
}

#[tokio::test]
async fn token_manager_with_a_file_store() {
    let env = env(true).await;
    let mut audit = Audit::for_env(&env);
    let dir = private_tempdir();
    let path = dir.path().join("store");
    let keyring = store_keyring(&mut audit);
    let store = FileStore::open(&path, keyring).unwrap();
    audit.debug("FileStore", &store);
    token_manager_over(&env, &mut audit, Arc::new(store)).await;
    audit_at_rest(&mut audit, dir.path(), &[]);
    audit.assert_clean();
}

#[tokio::test]
async fn token_manager_with_a_sqlite_store() {
    let env = env(true).await;
    let mut audit = Audit::for_env(&env);
    let dir = private_tempdir();
    let keyring = store_keyring(&mut audit);
    let store = SqliteStore::open(dir.path().join("tokens.db"), keyring)
        .await
        .unwrap();
    audit.debug("SqliteStore", &store);
    let store: Arc<dyn TokenStore> = Arc::new(store);
    token_manager_over(&env, &mut audit, store.clone()).await;
    drop(store);
    audit_at_rest(&mut audit, dir.path(), &[]);
    audit.assert_clean();
}

/// A fresh login on `env`, stored in a manager over a memory store; each call of `fault` then
/// answers the next token requests (a direct refresh and the manager's refresh, with its
/// retries) with the fault, and every error they give is audited.
async fn refresh_against(
    env: &Env,
    audit: &mut Audit,
    name: &str,
    fault: impl Fn(&TokenSet) -> FaultKind,
) {
    let client = env.client().unwrap();
    let manager = env
        .manager_builder(client.clone())
        .store(Arc::new(MemoryStore::new()))
        .build()
        .await
        .unwrap();
    let tokens = env.login().await.unwrap();
    audit.tokens(&format!("login before {name}"), &tokens);
    let key = manager
        .store_tokens(tokens.clone(), "default")
        .await
        .unwrap();
    let kind = fault(&tokens);

    env.emulator
        .inject_fault(Fault::new(Endpoint::Token, kind.clone()));
    let error = client
        .refresh(&env.transport, tokens.refresh_token.as_ref().unwrap())
        .await
        .unwrap_err();
    audit.error(&format!("OAuthClient::refresh answered {name}"), &error);
    let error = manager.refresh(&key).await.unwrap_err();
    audit.error(&format!("TokenManager::refresh answered {name}"), &error);
    env.emulator.clear_faults();

    // The same answer from userinfo and introspection.
    env.emulator
        .inject_fault(Fault::new(Endpoint::UserInfo, kind.clone()));
    if let Err(error) = client.userinfo(&env.transport, &tokens.access_token).await {
        audit.error(&format!("userinfo answered {name}"), &error);
    }
    env.emulator
        .inject_fault(Fault::new(Endpoint::Introspect, kind));
    if let Err(error) = client
        .introspect(
            &env.transport,
            &SecretValue::from(tokens.access_token.clone()),
            None,
        )
        .await
    {
        audit.error(&format!("introspect answered {name}"), &error);
    }
    env.emulator.clear_faults();
}

#[tokio::test]
async fn an_error_description_that_echoes_tokens_and_the_secret() {
    let env = env(false).await;
    let mut audit = Audit::for_env(&env);
    let secret = env.creds().client_secret.clone();
    for (status, error) in [
        (400, "invalid_grant"),
        (400, "invalid_request"),
        (401, "invalid_client"),
    ] {
        refresh_against(&env, &mut audit, &format!("{status} {error}"), |tokens| {
            FaultKind::OAuthError {
                status,
                error: error.into(),
                description: format!(
                    "expired access/refresh token: session {} refresh_token={} client_secret={}",
                    tokens.access_token.expose_secret(),
                    tokens.refresh_token.as_ref().unwrap().expose_secret(),
                    secret
                ),
            }
        })
        .await;
    }
    audit.assert_clean();
}

#[tokio::test]
async fn a_5xx_html_page_that_carries_the_refresh_token() {
    let env = env(false).await;
    let mut audit = Audit::for_env(&env);
    for status in [500, 502, 503, 504] {
        refresh_against(&env, &mut audit, &format!("{status} html"), |tokens| {
            FaultKind::Response {
                status,
                content_type: "text/html".into(),
                body: format!(
                    "<html><body><h1>Bad gateway</h1><p>upstream refused \
                     grant_type=refresh_token&refresh_token={}</p><p>session {}</p></body></html>",
                    tokens.refresh_token.as_ref().unwrap().expose_secret(),
                    tokens.access_token.expose_secret()
                ),
            }
        })
        .await;
    }
    audit.assert_clean();
}

/// A response body made from the tokens it echoes.
type Body = fn(&TokenSet) -> String;

#[tokio::test]
async fn unparsable_success_bodies_that_carry_tokens() {
    let env = env(false).await;
    let mut audit = Audit::for_env(&env);
    let bodies: [(&str, &str, Body); 4] = [
        ("truncated json", "application/json", |t| {
            format!(
                r#"{{"access_token":"{}","refresh_token":"{}","instance_url":"#,
                t.access_token.expose_secret(),
                t.refresh_token.as_ref().unwrap().expose_secret()
            )
        }),
        ("json without an id", "application/json", |t| {
            format!(
                r#"{{"access_token":"{}","refresh_token":"{}","token_type":"Bearer"}}"#,
                t.access_token.expose_secret(),
                t.refresh_token.as_ref().unwrap().expose_secret()
            )
        }),
        (
            "broken urlencoded",
            "application/x-www-form-urlencoded",
            |t| {
                format!(
                    "access_token={}&refresh_token={}&instance_url=%%%",
                    t.access_token.expose_secret(),
                    t.refresh_token.as_ref().unwrap().expose_secret()
                )
            },
        ),
        ("broken xml", "application/xml", |t| {
            format!(
                "<OAuth><access_token>{}</access_token><refresh_token>{}</refresh_token><instance_url>",
                t.access_token.expose_secret(),
                t.refresh_token.as_ref().unwrap().expose_secret()
            )
        }),
    ];
    for (name, content_type, body) in bodies {
        refresh_against(&env, &mut audit, &format!("200 {name}"), |tokens| {
            FaultKind::Response {
                status: 200,
                content_type: content_type.into(),
                body: body(tokens),
            }
        })
        .await;
    }
    audit.assert_clean();
}

/// Issue #11, defect 4: body redaction masked only runs of 16+ characters, so a short secret
/// (`access_token=00DLEAKED2`) got through. Here the bodies carry 13 to 15 characters of real
/// tokens and of the client secret, in shapes Salesforce's secrets have.
#[tokio::test]
async fn short_fragments_of_secrets_in_error_bodies() {
    let env = env(false).await;
    let mut audit = Audit::for_env(&env);
    let secret = env.creds().client_secret.clone();
    refresh_against(&env, &mut audit, "bodies with short fragments", |tokens| {
        let access = tokens.access_token.expose_secret();
        let (_, session) = access.split_once('!').unwrap();
        let refresh = tokens.refresh_token.as_ref().unwrap().expose_secret();
        FaultKind::Response {
            status: 400,
            content_type: "text/plain".into(),
            body: format!(
                "bad request: access_token=!{} refresh_token={} client_secret={} code=aPrx{}",
                &session[..14],
                &refresh[..15],
                &secret[4..17],
                &refresh[20..33],
            ),
        }
    })
    .await;
    refresh_against(
        &env,
        &mut audit,
        "an oauth error with short fragments",
        |tokens| {
            let refresh = tokens.refresh_token.as_ref().unwrap().expose_secret();
            FaultKind::OAuthError {
                status: 400,
                error: "invalid_grant".into(),
                description: format!("token {} is not valid", &refresh[..13]),
            }
        },
    )
    .await;
    audit.assert_clean();
}

// ------------------------------------------------------------------------------------------
// The `sfauth` binary.
// ------------------------------------------------------------------------------------------

/// The `sfauth` binary, built once per test run with the same cargo and profile as this test
/// (`CARGO_BIN_EXE_*` exists only within the CLI's own package). `SFAUTH_BIN` overrides it.
fn sfauth_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("SFAUTH_BIN") {
            return PathBuf::from(path);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let exe = std::env::current_exe().unwrap();
        // target/<profile>/deps/secrets-HASH
        let profile_dir = exe.parent().and_then(Path::parent).unwrap();
        let mut command = Command::new(cargo);
        command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--quiet", "-p", "sfauth-cli", "--bin", "sfauth"])
            .arg("--message-format=json-render-diagnostics")
            .stderr(Stdio::inherit());
        // What cargo sets for this test process describes this package; build scripts that
        // track it (ring's does) would otherwise rebuild for the nested build and again after.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                    "OUT_DIR",
                ]
                .contains(&name.as_ref())
            {
                command.env_remove(name.as_ref());
            }
        }
        if profile_dir
            .file_name()
            .is_some_and(|name| name == "release")
        {
            command.arg("--release");
        }
        if std::env::var_os("CARGO_TARGET_DIR").is_none()
            && let Some(target) = profile_dir.parent()
        {
            command.env("CARGO_TARGET_DIR", target);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "cargo build -p sfauth-cli failed");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|message| message["target"]["name"] == "sfauth")
            .find_map(|message| message["executable"].as_str().map(PathBuf::from))
            .expect("cargo names the sfauth executable")
    })
}

/// What one run of the binary gave.
#[derive(Debug)]
struct Run {
    args: String,
    code: i32,
    stdout: String,
    stderr: String,
}

/// A running process of the binary, from [`Cli::start_interactive`].
struct Interactive {
    args: Vec<String>,
    child: std::process::Child,
    reader: std::thread::JoinHandle<String>,
}

/// The store the CLI writes to, and how the test reads it back.
#[derive(Clone, Copy, PartialEq)]
enum StoreKind {
    File,
    Sqlite,
}

/// An emulator, a private home with config and store, and the binary with tracing at TRACE.
struct Cli {
    emulator: Emulator,
    home: tempfile::TempDir,
    kind: StoreKind,
    runs: Vec<Run>,
    /// Standard outputs of `sfauth token`, which must hold one access token and nothing else.
    tokens_printed: Vec<String>,
    /// Every token found in the store after a command, with its alias.
    seen: Vec<(String, TokenSet)>,
}

impl Cli {
    async fn start(kind: StoreKind) -> Self {
        let emulator = Emulator::builder()
            .auto_approve(true)
            .clock(Clock::manual_now())
            .app_policy(|p| p.rotation = true)
            .settings(|s| s.device_interval_secs = 1)
            .start()
            .await
            .unwrap();
        let home = private_tempdir();
        let cli = Self {
            emulator,
            home,
            kind,
            runs: Vec::new(),
            tokens_printed: Vec::new(),
            seen: Vec::new(),
        };
        let config = cli.home.path().join("config").join("sfauth");
        create_private_dir(&config);
        write_private(&config.join("config.toml"), "session_timeout_secs = 7200\n");
        cli
    }

    fn store_url(&self) -> String {
        match self.kind {
            StoreKind::File => format!("file://{}", self.store_dir().display()),
            StoreKind::Sqlite => {
                format!("sqlite://{}", self.store_dir().join("tokens.db").display())
            }
        }
    }

    fn store_dir(&self) -> PathBuf {
        self.home.path().join("store")
    }

    fn env(&self) -> Vec<(String, String)> {
        let creds = self.emulator.credentials();
        let home = self.home.path();
        vec![
            ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
            ("HOME".into(), home.display().to_string()),
            (
                "XDG_CONFIG_HOME".into(),
                home.join("config").display().to_string(),
            ),
            (
                "XDG_DATA_HOME".into(),
                home.join("data").display().to_string(),
            ),
            (
                "XDG_CACHE_HOME".into(),
                home.join("cache").display().to_string(),
            ),
            ("SFAUTH_STORE".into(), self.store_url()),
            (
                "SFAUTH_INSTANCE".into(),
                self.emulator.base_url().to_owned(),
            ),
            ("SFAUTH_CLIENT_ID".into(), creds.client_id.clone()),
            ("SFAUTH_CLIENT_SECRET".into(), creds.client_secret.clone()),
            ("SFAUTH_LOG".into(), "trace".into()),
            ("RUST_LOG".into(), "trace".into()),
            ("NO_COLOR".into(), "1".into()),
        ]
    }

    fn command(&self, args: &[&str], extra: &[(&str, &str)]) -> Command {
        let mut command = Command::new(sfauth_binary());
        command
            .args(args)
            .env_clear()
            .envs(self.env())
            .envs(extra.iter().copied())
            .stdin(Stdio::null());
        command
    }

    /// Runs the binary off the async threads, so that the emulator keeps serving.
    async fn run(&mut self, args: &[&str], extra: &[(&str, &str)]) -> &Run {
        let mut command = self.command(args, extra);
        let output = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        self.keep(args, output.status.code(), &output.stdout, &output.stderr)
    }

    fn keep(&mut self, args: &[&str], code: Option<i32>, stdout: &[u8], stderr: &[u8]) -> &Run {
        self.runs.push(Run {
            args: format!("sfauth {}", args.join(" ")),
            code: code.unwrap_or(-1),
            stdout: String::from_utf8_lossy(stdout).into_owned(),
            stderr: String::from_utf8_lossy(stderr).into_owned(),
        });
        self.runs.last().unwrap()
    }

    async fn ok(&mut self, args: &[&str], extra: &[(&str, &str)]) {
        let run = self.run(args, extra).await;
        assert_eq!(run.code, 0, "{} failed: {}", run.args, errors(&run.stderr));
    }

    /// `sfauth token ALIAS [ARGS]`, which must succeed; its stdout is kept apart.
    async fn token(&mut self, alias: &str, more: &[&str]) -> String {
        let mut args = vec!["token", alias];
        args.extend_from_slice(more);
        let run = self.run(&args, &[]).await;
        assert_eq!(run.code, 0, "{} failed: {}", run.args, errors(&run.stderr));
        let printed = run.stdout.clone();
        // Not scanned with the other outputs: this one is meant to hold the token.
        self.runs.last_mut().unwrap().stdout.clear();
        self.tokens_printed.push(printed.clone());
        printed.trim().to_owned()
    }

    /// Starts a process that prints a line the test must act on (the login URL, the device
    /// code) before it can finish; returns that line and the running process, for
    /// [`Cli::finish`] once the test acted as a person would.
    async fn start_interactive(
        &self,
        args: &[&str],
        wanted: fn(&str) -> bool,
    ) -> (Option<String>, Interactive) {
        use std::io::BufRead as _;
        let mut command = self.command(args, &[]);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (found, line) = std::sync::mpsc::channel::<Option<String>>();
        // Reads all of stderr, so that the child never blocks on a full pipe.
        let reader = std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(stderr);
            let mut seen = String::new();
            let mut sent = false;
            loop {
                let mut next = String::new();
                if reader.read_line(&mut next).unwrap_or(0) == 0 {
                    if !sent {
                        let _ = found.send(None);
                    }
                    return seen;
                }
                if !sent && wanted(&next) {
                    let _ = found.send(Some(next.trim().to_owned()));
                    sent = true;
                }
                seen.push_str(&next);
            }
        });
        let line = tokio::task::spawn_blocking(move || line.recv().ok().flatten())
            .await
            .unwrap();
        let args = args.iter().map(|a| (*a).to_owned()).collect();
        (
            line,
            Interactive {
                args,
                child,
                reader,
            },
        )
    }

    /// Waits for a process from [`Cli::start_interactive`], which must succeed.
    async fn finish(&mut self, process: Interactive) {
        let Interactive {
            args,
            child,
            reader,
        } = process;
        let (output, stderr) = tokio::task::spawn_blocking(move || {
            let output = child.wait_with_output().unwrap();
            (output, reader.join().unwrap())
        })
        .await
        .unwrap();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = self.keep(
            &args,
            output.status.code(),
            &output.stdout,
            stderr.as_bytes(),
        );
        assert_eq!(run.code, 0, "{} failed: {}", run.args, errors(&run.stderr));
    }

    /// `sfauth login web`, with a plain HTTP client as the browser that follows the redirects
    /// to the CLI's callback listener.
    async fn login_web(&mut self, alias: &str) {
        let (line, process) = self
            .start_interactive(
                &[
                    "login",
                    "web",
                    "--no-browser",
                    "--port",
                    "0",
                    "--alias",
                    alias,
                    "--timeout",
                    "30",
                ],
                |line| line.starts_with("http"),
            )
            .await;
        if let Some(line) = line {
            let url = url::Url::parse(&line).unwrap();
            let redirect = url
                .query_pairs()
                .find(|(k, _)| k == "redirect_uri")
                .map(|(_, v)| v.into_owned())
                .unwrap();
            let client_id = self.emulator.credentials().client_id.clone();
            self.emulator
                .update_app(&client_id, |app| app.callback_urls.push(redirect))
                .unwrap();
            let response = reqwest::Client::new()
                .get(url.as_str())
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success(), "{response:?}");
        }
        self.finish(process).await;
    }

    /// `sfauth login device`, approved on the emulator with the code it shows.
    async fn login_device(&mut self, alias: &str) {
        let (line, process) = self
            .start_interactive(
                &["login", "device", "--alias", alias, "--timeout", "30"],
                |line| line.contains("enter the code"),
            )
            .await;
        if let Some(line) = line {
            let code = line.rsplit(' ').next().unwrap();
            let username = self.emulator.credentials().username.clone();
            self.emulator.approve_device(code, &username).unwrap();
        }
        self.finish(process).await;
    }

    /// Every token in the CLI's store, read with its key file.
    async fn stored_tokens(&self) -> Vec<(String, TokenSet)> {
        let store: Arc<dyn TokenStore> = match self.kind {
            StoreKind::File => {
                let dir = self.store_dir();
                Arc::new(
                    FileStore::open(
                        &dir,
                        Keyring::from_key_file(&dir.join("tokens.key")).unwrap(),
                    )
                    .unwrap(),
                )
            }
            StoreKind::Sqlite => {
                let dir = self.store_dir();
                Arc::new(
                    SqliteStore::open(
                        dir.join("tokens.db"),
                        // The CLI keeps an SQLite store's key beside it, named after the file.
                        Keyring::from_key_file(&dir.join("tokens.db.key")).unwrap(),
                    )
                    .await
                    .unwrap(),
                )
            }
        };
        stored_in(store.as_ref()).await
    }
}

/// The lines of `stderr` that are not log lines: what the CLI says to its user.
fn errors(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|line| !line.starts_with("20"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn stored_in(store: &dyn TokenStore) -> Vec<(String, TokenSet)> {
    store
        .list_all(&ListQuery::new().limit(ListQuery::MAX_LIMIT))
        .await
        .unwrap()
        .into_iter()
        .map(|record| (record.key.label().to_owned(), record.tokens))
        .collect()
}

/// A temporary directory only its owner can open (tempfile leaves the mode to the umask), so
/// that whatever mode is found under it was chosen by the code under test.
fn private_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn create_private_dir(path: &Path) {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .unwrap();
}

fn write_private(path: &Path, text: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

impl Cli {
    /// An audit that knows the configured secrets, and this emulator's ids as public values.
    fn audit(&self) -> Audit {
        let mut audit = Audit::new();
        // The binary logs in its own process: its log lines are checked on its stderr.
        audit.required_logs.clear();
        let creds = self.emulator.credentials();
        for public in [
            creds.org_id.as_str(),
            creds.user_id.as_str(),
            creds.client_id.as_str(),
            creds.username.as_str(),
            self.emulator.base_url(),
        ] {
            audit.secrets.public(public);
        }
        audit
    }

    /// Remembers every token now in the store: the secrets the outputs are checked against.
    async fn collect(&mut self) {
        let stored = self.stored_tokens().await;
        self.seen.extend(stored);
    }

    /// The stored tokens of `alias`.
    async fn stored(&self, alias: &str) -> TokenSet {
        self.stored_tokens()
            .await
            .into_iter()
            .find(|(stored, _)| stored == alias)
            .unwrap_or_else(|| panic!("no stored login named {alias}"))
            .1
    }

    /// Checks everything: the outputs of every run against every token seen, `sfauth token`'s
    /// outputs, no panic, the files under the home directory (content and mode).
    fn assert_clean(self, mut audit: Audit, other_stores: &[(String, TokenSet)], inputs: &[&Path]) {
        for (alias, tokens) in self.seen.iter().chain(other_stores) {
            audit.secrets.add_tokens(&format!("alias {alias}"), tokens);
        }
        for printed in &self.tokens_printed {
            audit
                .secrets
                .add("access token printed by sfauth token", printed.trim());
        }
        // `sfauth token` prints the access token and nothing else.
        let access_tokens: Vec<&str> = self
            .seen
            .iter()
            .chain(other_stores)
            .map(|(_, tokens)| tokens.access_token.expose_secret())
            .collect();
        for printed in &self.tokens_printed {
            let token = printed.strip_suffix('\n').unwrap_or(printed);
            if !access_tokens.contains(&token) {
                audit.problem(format!(
                    "sfauth token printed something other than one stored access token: {}",
                    token.len()
                ));
            }
        }
        let mut logged = false;
        for run in &self.runs {
            audit.text(format!("stdout of `{}`", run.args), run.stdout.clone());
            audit.text(format!("stderr of `{}`", run.args), run.stderr.clone());
            logged |= run.stderr.contains(" TRACE ");
            if run.code == 101 || run.stderr.contains("panicked at") {
                audit.problem(format!("`{}` panicked: {}", run.args, errors(&run.stderr)));
            }
        }
        // A file store keeps `tokens.key`, an SQLite store `tokens.db.key`: every key file the
        // CLI wrote is a secret, so none may be missed by naming only one.
        let mut key_files = 0;
        for dir in [self.store_dir(), self.home.path().join("imported")] {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|ext| ext == "key") {
                    let key = std::fs::read_to_string(&path).unwrap();
                    audit.secrets.add(STORE_KEY, key.trim());
                    key_files += 1;
                }
            }
        }
        if key_files == 0 {
            audit.problem("no store key file was found: the store key is not checked".into());
        }
        if !logged {
            audit.problem(
                "SFAUTH_LOG=trace gave no TRACE line: the binary's logs are not checked".into(),
            );
        }
        audit_at_rest(&mut audit, self.home.path(), inputs);
        audit.assert_clean();
    }
}

/// Every command of the binary against a `kind` store: every login flow, `token` (also with
/// `--verify` after the org killed the session, and from another store), `status` and `list`,
/// `whoami`, `introspect`, `refresh` (one and all), `export` and `import` (also with a wrong
/// passphrase), `revoke`, `completions` and `--help`.
async fn every_command(kind: StoreKind) {
    let mut cli = Cli::start(kind).await;
    let creds = cli.emulator.credentials().clone();
    let mut audit = cli.audit();
    let passphrase = "correct horse battery staple 9";
    let wrong_passphrase = "incorrect donkey battery clip 7";
    audit.secrets.add("export passphrase", passphrase);
    audit
        .secrets
        .add("wrong export passphrase", wrong_passphrase);

    // Every login flow.
    cli.login_web("web").await;
    cli.collect().await;
    cli.ok(
        &[
            "login",
            "password",
            "--username",
            &creds.username,
            "--alias",
            "pw",
        ],
        &[("SFAUTH_PASSWORD", &creds.password_with_token())],
    )
    .await;
    cli.ok(&["login", "client-credentials", "--alias", "cc"], &[])
        .await;
    let key = cli.home.path().join("jwt.pem");
    write_private(&key, SEED_CLIENT_PRIVATE_KEY);
    let key_arg = key.display().to_string();
    cli.ok(
        &[
            "login",
            "jwt",
            "--key",
            &key_arg,
            "--username",
            &creds.username,
            "--alias",
            "jwt",
        ],
        &[],
    )
    .await;
    cli.collect().await;
    let subject = cli.token("pw", &[]).await;
    cli.ok(
        &[
            "login",
            "token-exchange",
            "--subject-token-type",
            "access-token",
            "--alias",
            "tx",
        ],
        &[("SFAUTH_SUBJECT_TOKEN", &subject)],
    )
    .await;
    let web = cli.stored("web").await;
    cli.ok(
        &[
            "login",
            "token-exchange",
            "--subject-token-type",
            "refresh-token",
            "--alias",
            "txr",
        ],
        &[(
            "SFAUTH_SUBJECT_TOKEN",
            web.refresh_token.as_ref().unwrap().expose_secret(),
        )],
    )
    .await;
    cli.login_device("dev").await;
    cli.collect().await;

    // Reading commands.
    for alias in ["web", "pw", "cc", "jwt", "tx", "txr", "dev"] {
        cli.token(alias, &[]).await;
    }
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["list"],
        &["list", "--json"],
        &["whoami", "web"],
        &["whoami", "jwt", "--json"],
        &["introspect", "web"],
        &["introspect", "cc", "--json"],
        &["completions", "bash"],
        &["--help"],
    ] {
        cli.ok(args, &[]).await;
    }

    // Refreshes with rotation, and a session the org killed.
    cli.ok(&["refresh", "web"], &[]).await;
    cli.collect().await;
    cli.ok(&["refresh", "jwt"], &[]).await;
    cli.ok(&["refresh", "cc"], &[]).await;
    // The password login has no refresh token and nothing to renew it with, so `--all` fails
    // for it (its exit code is not this test's subject; a panic would be caught below).
    for args in [&["refresh", "--all", "--json"][..], &["refresh", "--all"]] {
        cli.run(args, &[]).await;
        cli.collect().await;
    }
    cli.emulator.expire_access_tokens();
    cli.token("web", &["--verify"]).await;
    cli.collect().await;

    // Export and import, also with a wrong passphrase.
    let export = cli.home.path().join("logins.sfauth");
    let export_arg = export.display().to_string();
    cli.ok(
        &["export", "--all", "--output", &export_arg],
        &[("SFAUTH_EXPORT_PASSPHRASE", passphrase)],
    )
    .await;
    let imported_dir = cli.home.path().join("imported");
    let imported = format!("file://{}", imported_dir.display());
    let run = cli
        .run(
            &["import", &export_arg, "--store", &imported],
            &[("SFAUTH_EXPORT_PASSPHRASE", wrong_passphrase)],
        )
        .await;
    assert_ne!(run.code, 0, "a wrong passphrase opens nothing");
    cli.ok(
        &["import", &export_arg, "--store", &imported],
        &[("SFAUTH_EXPORT_PASSPHRASE", passphrase)],
    )
    .await;
    cli.token("web", &["--store", &imported]).await;
    let imported_store = FileStore::open(
        &imported_dir,
        Keyring::from_key_file(&imported_dir.join("tokens.key")).unwrap(),
    )
    .unwrap();
    let imported_tokens = stored_in(&imported_store).await;

    // Revoke, and what a revoked alias says.
    cli.ok(&["revoke", "cc"], &[]).await;
    cli.ok(&["revoke", "web"], &[]).await;
    let run = cli.run(&["token", "web"], &[]).await;
    assert_ne!(run.code, 0, "a revoked alias has no token");
    cli.collect().await;

    // The key file given to `login jwt` is the test's input: its content is the key.
    cli.assert_clean(audit, &imported_tokens, &[key.as_path()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cli_command_with_a_file_store() {
    every_command(StoreKind::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cli_command_with_a_sqlite_store() {
    every_command(StoreKind::Sqlite).await;
}

/// `sfauth refresh` and `sfauth token --verify` answered with errors whose body or
/// `error_description` carries the alias's own tokens and the client secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_errors_that_carry_secrets() {
    let mut cli = Cli::start(StoreKind::Sqlite).await;
    let audit = cli.audit();
    let secret = cli.emulator.credentials().client_secret.clone();
    cli.login_web("web").await;
    cli.collect().await;
    let web = cli.stored("web").await;
    let access = web.access_token.expose_secret().to_owned();
    let refresh = web
        .refresh_token
        .as_ref()
        .unwrap()
        .expose_secret()
        .to_owned();
    let faults = [
        FaultKind::OAuthError {
            status: 400,
            error: "invalid_request".into(),
            description: format!(
                "bad request: session {access} refresh_token={refresh} client_secret={secret}"
            ),
        },
        FaultKind::OAuthError {
            status: 400,
            error: "invalid_grant".into(),
            description: format!("expired access/refresh token {refresh}"),
        },
        FaultKind::Response {
            status: 503,
            content_type: "text/html".into(),
            body: format!("<html><p>gateway: refresh_token={refresh}</p><p>{access}</p></html>"),
        },
        FaultKind::Response {
            status: 200,
            content_type: "application/json".into(),
            body: format!(
                r#"{{"access_token":"{access}","refresh_token":"{refresh}","instance_url":"#
            ),
        },
        FaultKind::Response {
            status: 400,
            content_type: "text/plain".into(),
            body: format!(
                "refresh_token={} access_token=!{}",
                &refresh[..15],
                &access[19..33]
            ),
        },
    ];
    for fault in faults {
        for endpoint in [Endpoint::Token, Endpoint::UserInfo] {
            cli.emulator
                .inject_fault(Fault::new(endpoint, fault.clone()));
            let args: &[&str] = match endpoint {
                Endpoint::Token => &["refresh", "web"],
                _ => &["whoami", "web"],
            };
            cli.run(args, &[]).await;
            cli.emulator.clear_faults();
        }
        // A rejected refresh may have marked the login: log in again for the next fault.
        cli.login_web("web").await;
        cli.collect().await;
    }
    cli.assert_clean(audit, &[], &[]);
}

/// `sfauth demo` runs its own emulator, whose tokens this test cannot know: its outputs are
/// checked for the shapes of the emulator's tokens instead (`00D…!AQ…`, `5Aep861…`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_no_token_shaped_value() {
    let mut cli = Cli::start(StoreKind::File).await;
    let run = cli.run(&["demo"], &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let mut shapes = Vec::new();
    for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        for (at, _) in text.match_indices('!') {
            let run_len = text[at + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "._".contains(*c))
                .count();
            if run_len >= WINDOW {
                shapes.push(format!("{stream}: a session id at byte {at}"));
            }
        }
        for (at, _) in text.match_indices("5Aep861") {
            let run_len = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "._".contains(*c))
                .count();
            if run_len >= WINDOW {
                shapes.push(format!("{stream}: a refresh token at byte {at}"));
            }
        }
    }
    assert!(shapes.is_empty(), "{shapes:#?}");
}
