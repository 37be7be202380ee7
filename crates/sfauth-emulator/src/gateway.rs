//! A gateway in front of the emulator (or any upstream): the load balancer, corporate proxy or
//! API gateway that can let Salesforce act and still answer 502, 503 or 504.
//!
//! Such an answer says nothing about whether the origin processed the request: a refresh may
//! have rotated the refresh token behind a 502. [`Gateway`] reproduces that on its own loopback
//! port. Without rules it relays every request and answer unchanged; a [`GatewayRule`] picks the
//! requests (by [`Endpoint`], how many times) and what happens to them ([`GatewayAction`]).
//!
//! Bodies are relayed byte for byte: a token response still names the upstream's
//! `instance_url`, so a client that sends only its token requests through the gateway calls the
//! REST API directly at the upstream, as when an egress proxy guards only the login host.
//! Nothing is rewritten.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::faults::Endpoint;
use crate::state::bump;
use crate::{Error, Result};

/// The largest request or upstream answer the gateway buffers.
const MAX_BODY: usize = 16 << 20;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the ones the
/// gateway sets itself on each hop.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::CONTENT_LENGTH,
];

/// What the gateway does with a request a [`GatewayRule`] matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GatewayAction {
    /// Forward the request and relay the upstream's answer unchanged.
    PassThrough,
    /// Forward the request, wait for the upstream's whole answer (so the upstream acted: a
    /// refresh rotated), discard it, and answer this status (502, 503, 504...) with the
    /// gateway's own HTML error page.
    ForwardThenFail(u16),
    /// Answer this status with the gateway's HTML error page without forwarding: the request
    /// never reached the upstream.
    FailWithoutForwarding(u16),
}

/// A gateway rule: which requests, what to do with them, how often, how slowly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRule {
    endpoint: Endpoint,
    action: GatewayAction,
    remaining: Option<u32>,
    delay: Duration,
}

impl GatewayRule {
    /// A rule for requests to `endpoint` ([`Endpoint::Any`]: every request), applied to every
    /// matching request until cleared.
    pub fn new(endpoint: Endpoint, action: GatewayAction) -> Self {
        Self {
            endpoint,
            action,
            remaining: None,
            delay: Duration::ZERO,
        }
    }

    /// Apply only to the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.remaining = Some(n);
        self
    }

    /// Wait this long before answering (after the upstream answered, when forwarding).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// What the gateway did, for tests that assert it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GatewayCounters {
    /// Requests received.
    pub requests: u64,
    /// Requests forwarded whose whole answer came back from the upstream (relayed or replaced).
    pub forwarded: u64,
    /// Upstream answers discarded and replaced by a gateway error ([`GatewayAction::ForwardThenFail`]).
    pub replaced: u64,
    /// Requests answered with a gateway error without being forwarded
    /// ([`GatewayAction::FailWithoutForwarding`]).
    pub not_forwarded: u64,
    /// Forwarded requests that got no whole answer (upstream unreachable, reset, or slower than
    /// [`GatewayBuilder::upstream_timeout`]): answered 502, or 504 on a timeout.
    pub upstream_errors: u64,
}

#[derive(Debug)]
struct Inner {
    rules: Vec<GatewayRule>,
    counters: GatewayCounters,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    upstream: String,
    client: reqwest::Client,
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    /// A panic elsewhere cannot leave rules or counters in a state worth refusing to serve.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The action for a request to `path`, consuming one use of the matching rule.
    fn take(&self, path: &str) -> (GatewayAction, Duration) {
        let endpoint = classify(path);
        let mut inner = self.lock();
        bump(&mut inner.counters.requests);
        let found = inner
            .rules
            .iter()
            .position(|r| r.endpoint == Endpoint::Any || endpoint.is_some_and(|e| e == r.endpoint));
        let Some(index) = found else {
            return (GatewayAction::PassThrough, Duration::ZERO);
        };
        let Some(rule) = inner.rules.get_mut(index) else {
            return (GatewayAction::PassThrough, Duration::ZERO);
        };
        let taken = (rule.action, rule.delay);
        if let Some(n) = rule.remaining.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.rules.remove(index);
            }
        }
        taken
    }

    async fn pause(&self, delay: Duration) {
        if delay.is_zero() {
            return;
        }
        let mut stop = self.shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|down| *down) => {}
        }
    }
}

/// Which endpoint `path` names, at the root or under a site prefix (`/community/services/...`).
fn classify(path: &str) -> Option<Endpoint> {
    Endpoint::classify(path).or_else(|| {
        let rest = path.strip_prefix('/')?;
        let (_, tail) = rest.split_once('/')?;
        Endpoint::classify(&format!("/{tail}"))
    })
}

/// Configures and starts a [`Gateway`].
#[derive(Debug)]
#[must_use]
pub struct GatewayBuilder {
    upstream: String,
    addr: SocketAddr,
    upstream_timeout: Option<Duration>,
}

impl GatewayBuilder {
    /// Listens on this port of 127.0.0.1 (0, the default, picks a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.addr.set_port(port);
        self
    }

    /// Gives up on an upstream answer after this long and answers 504, as a gateway with an
    /// upstream timeout does (the upstream keeps working). None by default.
    pub fn upstream_timeout(mut self, timeout: Duration) -> Self {
        self.upstream_timeout = Some(timeout);
        self
    }

    /// Binds the socket and starts forwarding.
    pub async fn start(self) -> Result<Gateway> {
        let upstream = self.upstream.trim_end_matches('/').to_owned();
        let parsed = url::Url::parse(&upstream)
            .map_err(|e| Error::InvalidConfig(format!("gateway upstream url: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::InvalidConfig(
                "gateway upstream url must be http or https".to_owned(),
            ));
        }
        let mut client = reqwest::Client::builder()
            // An HTTP_PROXY in the environment must not slip a second hop in between.
            .no_proxy()
            // Redirects are the client's business: relayed as they come.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(timeout) = self.upstream_timeout {
            client = client.timeout(timeout);
        }
        let client = client
            .build()
            .map_err(|e| Error::InvalidConfig(format!("gateway http client: {e}")))?;
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .map_err(|source| Error::Bind {
                addr: self.addr.to_string(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| Error::Bind {
            addr: self.addr.to_string(),
            source,
        })?;
        let url = format!("http://127.0.0.1:{}", local.port());
        let (tx, rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                rules: Vec::new(),
                counters: GatewayCounters::default(),
            }),
            upstream,
            client,
            shutdown: rx.clone(),
        });
        let router = Router::new().fallback(relay).with_state(shared.clone());
        let mut stop = rx;
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|down| *down).await;
                })
                .await
        });
        tracing::info!(%url, upstream = %shared.upstream, "gateway listening");
        Ok(Gateway {
            shared,
            url,
            shutdown: tx,
            task: Some(task),
        })
    }
}

/// A running gateway. Dropping it stops the server too; [`Gateway::shutdown`] also waits.
///
/// # Example
///
/// A refresh that rotates at the emulator while its client is told 502:
///
/// ```no_run
/// # async fn demo() -> Result<(), sfauth_emulator::Error> {
/// use sfauth_emulator::{Emulator, Endpoint, Gateway, GatewayAction, GatewayRule};
///
/// let emulator = Emulator::builder().app_policy(|p| p.rotation = true).start().await?;
/// let gateway = Gateway::builder(emulator.base_url()).start().await?;
/// gateway.inject(
///     GatewayRule::new(Endpoint::Token, GatewayAction::ForwardThenFail(502)).times(1),
/// );
/// // POST {gateway.token_url()} grant_type=refresh_token ... answers 502, while the emulator's
/// // counters().refresh_tokens_rotated went up by one and gateway.counters().replaced is 1.
/// gateway.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Gateway {
    shared: Arc<Shared>,
    url: String,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Gateway {
    /// A builder for a gateway in front of `upstream` (for example [`Emulator::base_url`]), on a
    /// free port of 127.0.0.1.
    ///
    /// [`Emulator::base_url`]: crate::Emulator::base_url
    pub fn builder(upstream: impl Into<String>) -> GatewayBuilder {
        GatewayBuilder {
            upstream: upstream.into(),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            upstream_timeout: None,
        }
    }

    /// `http://127.0.0.1:PORT`: point clients here instead of the upstream.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `{url}/services/oauth2/token`.
    pub fn token_url(&self) -> String {
        format!("{}/services/oauth2/token", self.url)
    }

    /// The upstream's base URL, as given (without a trailing slash).
    pub fn upstream(&self) -> &str {
        &self.shared.upstream
    }

    /// Adds a rule; the first rule that matches a request decides, in the order added.
    pub fn inject(&self, rule: GatewayRule) {
        self.shared.lock().rules.push(rule);
    }

    /// Removes every rule: plain pass-through from now on.
    pub fn clear_rules(&self) {
        self.shared.lock().rules.clear();
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> GatewayCounters {
        self.shared.lock().counters.clone()
    }

    /// Sets every counter back to zero.
    pub fn reset_counters(&self) {
        self.shared.lock().counters = GatewayCounters::default();
    }

    /// Stops accepting connections, lets in-flight requests finish, and waits for the server.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "gateway server ended with an error"),
                Err(e) => tracing::warn!(error = %e, "gateway server task failed"),
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Every request. The work runs in a task of its own so that a client giving up does not stop
/// the upstream exchange half-way: the counters then say what really happened.
async fn relay(AxumState(shared): AxumState<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let task = tokio::spawn(async move {
        let (action, delay) = shared.take(req.uri().path());
        match action {
            GatewayAction::FailWithoutForwarding(status) => {
                bump(&mut shared.lock().counters.not_forwarded);
                shared.pause(delay).await;
                error_page(status)
            }
            GatewayAction::PassThrough | GatewayAction::ForwardThenFail(_) => {
                let answer = forward(&shared, req).await;
                let response = match (answer, action) {
                    (Err(timed_out), _) => {
                        bump(&mut shared.lock().counters.upstream_errors);
                        error_page(if timed_out { 504 } else { 502 })
                    }
                    (Ok(_discarded), GatewayAction::ForwardThenFail(status)) => {
                        let mut inner = shared.lock();
                        bump(&mut inner.counters.forwarded);
                        bump(&mut inner.counters.replaced);
                        drop(inner);
                        error_page(status)
                    }
                    (Ok(answer), _) => {
                        bump(&mut shared.lock().counters.forwarded);
                        answer
                    }
                };
                shared.pause(delay).await;
                response
            }
        }
    });
    let response = task
        .await
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    // Method and path only: query strings and bodies carry secrets.
    tracing::info!(%method, %path, status = response.status().as_u16(), "gateway request");
    response
}

/// Sends `req` upstream and reads the whole answer. `Err(true)` on a timeout, `Err(false)` on
/// any other failure (unreachable, reset, unreadable request or answer).
async fn forward(shared: &Shared, req: Request) -> std::result::Result<Response, bool> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| false)?;
    let target = format!(
        "{}{}",
        shared.upstream,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut headers = without_hop_by_hop(&parts.headers);
    headers.remove(header::HOST);
    if let Some(host) = parts.headers.get(header::HOST) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    let answer = shared
        .client
        .request(parts.method, target)
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| e.is_timeout())?;
    let status = answer.status();
    let headers = without_hop_by_hop(answer.headers());
    let bytes: Bytes = answer.bytes().await.map_err(|e| e.is_timeout())?;
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

fn without_hop_by_hop(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    for name in &HOP_BY_HOP {
        out.remove(name);
    }
    out
}

/// The error page of a typical gateway (nginx's wording), never Salesforce's JSON.
fn error_page(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let reason = match status.as_u16() {
        503 => "Service Temporarily Unavailable",
        504 => "Gateway Time-out",
        _ => status.canonical_reason().unwrap_or("Error"),
    };
    let code = status.as_u16();
    let body = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n\
         <center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n\
         </body>\r\n</html>\r\n"
    );
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    response
        .headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("nginx"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_under_a_site_prefix() {
        assert_eq!(classify("/services/oauth2/token"), Some(Endpoint::Token));
        assert_eq!(
            classify("/community/services/oauth2/token"),
            Some(Endpoint::Token)
        );
        assert_eq!(classify("/favicon.ico"), None);
    }

    #[test]
    fn error_pages_look_like_a_gateway() {
        let r = error_page(504);
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/html");
    }
}
