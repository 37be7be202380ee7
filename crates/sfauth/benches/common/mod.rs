//! Setup shared by the `manager`, `figures`, `startup` and `fleet` benchmarks: tenants with
//! realistic key and token sizes, managers whose transport fails every request (so that nothing
//! timed in a hot loop can reach a network), and a login at the emulator for the benchmarks that
//! do talk to it.

#![allow(dead_code, reason = "each benchmark binary uses part of the setup")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use sfauth::{MemoryStore, TokenManager, TokenStore};
use sfauth_core::flows::AuthorizeParams;
use sfauth_core::http::TransportErrorKind;
use sfauth_core::http::{HttpRequest, HttpResponse, HttpTransport, TransportError};
use sfauth_core::{
    AccessToken, ConnectedApp, IdentityUrl, LoginHost, OAuthClient, RefreshToken, TokenKey,
    TokenSet,
};

/// A consumer key as long as a real one (85 characters): the key's longest string.
pub(crate) const CLIENT_ID: &str =
    "3MVG9rZjd7MXFdLhCdFwXyCc0Kz1JMl3sP1bq6M.Yzm4pxAm3vgK5G8rPzE2TtBw_HgLq0U8n3Yk2WbC7dJeR";

/// How long the seeded access tokens live: far beyond any benchmark run, but known, so the hot
/// path has a deadline to check against the clock.
pub(crate) const TOKEN_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// The identity URL of tenant `i`: one org and one user per tenant.
pub(crate) fn identity(i: usize) -> IdentityUrl {
    format!("https://login.salesforce.com/id/00D{i:012}/005{i:012}")
        .parse()
        .expect("a valid identity url")
}

/// The key of tenant `i` on the production login host, label `default`.
pub(crate) fn key(i: usize) -> TokenKey {
    TokenKey::new(&LoginHost::Production, &identity(i), CLIENT_ID, "default")
}

/// A token set for tenant `i` shaped like Salesforce's: a 112-character session id, a refresh
/// token, `issued_at` now and a known expiry [`TOKEN_LIFETIME`] away.
pub(crate) fn tokens(i: usize) -> TokenSet {
    let now = SystemTime::now();
    let mut tokens = TokenSet::new(
        AccessToken::new(access_token(i)),
        format!("https://tenant{i}.my.salesforce.com")
            .parse()
            .expect("a valid instance url"),
        identity(i),
    );
    tokens.refresh_token = Some(RefreshToken::new(format!(
        "5Aep861{i:012}dQJsZ3aVMZyPq8fGcWn9hYt2oKbE1rLxU4mS0vTiR6jN7uHgF.Dwz3kCy"
    )));
    tokens.issued_at = Some(now);
    tokens.expires_at = Some(now + TOKEN_LIFETIME);
    tokens.scope = Some("api refresh_token id".to_owned());
    tokens.token_type = Some("Bearer".to_owned());
    tokens
}

/// A Salesforce-shaped session id (org id prefix, `!`, then opaque characters): 112 bytes.
pub(crate) fn access_token(i: usize) -> String {
    const FILLER: &str = "Hx9cT2mYb7GkLw3sEo8VrN1pZaJdQ6uFiK0nWc5tRgXyB4hMvD2lSe9oUjA7qCz3.PkI1fTbH8wGmYxN5sRd0LvEc6aJuQ2Zr4";
    let mut token = format!("00D{i:012}!AQ4AQ");
    let missing = ACCESS_TOKEN_LEN.saturating_sub(token.len());
    token.push_str(&FILLER[..missing]);
    token
}

/// The length of [`access_token`]'s tokens, as Salesforce's session ids.
pub(crate) const ACCESS_TOKEN_LEN: usize = 112;

/// A transport that refuses every request: the benchmarks' managers must never refresh.
pub(crate) fn offline_transport() -> Arc<dyn HttpTransport> {
    Arc::new(|_request: HttpRequest| async {
        Err::<HttpResponse, _>(TransportError::new(
            TransportErrorKind::Connect,
            "benchmarks make no requests",
        ))
    })
}

/// A manager on `store` for [`CLIENT_ID`] on the production host, with the failing transport.
pub(crate) async fn offline_manager(store: Arc<dyn TokenStore>) -> TokenManager {
    TokenManager::builder(OAuthClient::new(
        LoginHost::Production,
        ConnectedApp::new(CLIENT_ID),
    ))
    .store(store)
    .transport(offline_transport())
    .build()
    .await
    .expect("a manager")
}

/// A manager on a [`MemoryStore`] holding tenants `0..tenants`, all cached and fresh.
pub(crate) async fn loaded_manager(tenants: usize) -> TokenManager {
    let manager = offline_manager(Arc::new(MemoryStore::new())).await;
    for i in 0..tenants {
        manager
            .store_tokens_as(key(i), tokens(i))
            .await
            .expect("tokens stored");
    }
    manager
}

/// Polls `future` once, which must finish it: the cached-token paths never wait, so a
/// benchmark needs no runtime (and pays for none) to drive them.
#[inline]
pub(crate) fn ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a cached-token path had to wait"),
    }
}

/// Runs `future` to completion on this thread, parking it while the future waits: the driver
/// of the baselines, whose `tokio::sync::Mutex` does wait when two threads contend. A future
/// that finishes on its first poll costs one poll, as with [`ready`].
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    if let Poll::Ready(output) = future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        return output;
    }
    THREAD_WAKER.with(|waker| {
        let mut context = Context::from_waker(waker);
        loop {
            match future.as_mut().poll(&mut context) {
                Poll::Ready(output) => return output,
                Poll::Pending => std::thread::park(),
            }
        }
    })
}

/// Wakes a parked thread.
struct Unparker(std::thread::Thread);

impl std::task::Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    static THREAD_WAKER: Waker = Waker::from(Arc::new(Unparker(std::thread::current())));
}

/// A two-worker runtime for setup work (loading tenants, the emulator, building authenticators).
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Where prepared data and the figures go: `SFAUTH_BENCH_DIR`, else `target/bench` beside the
/// build output (cargo runs benchmarks from the package directory, so not a relative path).
/// Created if missing.
pub(crate) fn bench_dir() -> PathBuf {
    let dir = match std::env::var_os("SFAUTH_BENCH_DIR") {
        Some(dir) => dir.into(),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(
                || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
                PathBuf::from,
            )
            .join("bench"),
    };
    std::fs::create_dir_all(&dir).expect("the bench directory");
    dir
}

/// Prints `figures` and writes them as JSON to the file named by the variable `env`, else to
/// `default`.
#[allow(clippy::print_stdout, reason = "a benchmark reports its figures")]
pub(crate) fn write_figures(env: &str, default: &Path, figures: &Map<String, Value>) {
    for (name, value) in figures {
        println!("{name:<40} {value}");
    }
    let out = std::env::var_os(env).map_or_else(|| default.to_owned(), PathBuf::from);
    std::fs::write(
        &out,
        serde_json::to_vec_pretty(figures).expect("figures as JSON"),
    )
    .expect("the figures file");
    println!("figures written to {}", out.display());
}

/// The web server flow against the emulator (which approves at once), playing the browser
/// through the transport (which follows no redirect): a token set with a refresh token.
pub(crate) async fn login(client: &OAuthClient, transport: &dyn HttpTransport) -> TokenSet {
    let request = client
        .authorize_url(&AuthorizeParams::scopes(["api", "id", "refresh_token"]))
        .expect("an authorize url");
    let response = transport
        .send(
            http::Request::get(request.url.as_str())
                .body(bytes::Bytes::new())
                .expect("an authorize request"),
        )
        .await
        .expect("the authorize endpoint answers");
    assert_eq!(response.status(), 302, "auto-approve redirects at once");
    let location = response
        .headers()
        .get(http::header::LOCATION)
        .and_then(|location| location.to_str().ok())
        .expect("a redirect location");
    let code = client
        .parse_callback(&location.parse().expect("a callback url"), &request.state)
        .expect("an authorization code");
    client
        .exchange_code(transport, &code, request.pkce_verifier.as_ref())
        .await
        .expect("tokens for the code")
}
