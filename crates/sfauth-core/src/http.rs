//! The HTTP boundary: the one trait through which every sfauth flow reaches the network.
//!
//! Core builds requests and parses responses; it never opens a socket. Whatever sends the bytes
//! implements [`HttpTransport`]: `sfauth-transport` ships a reqwest-based one, a retrying
//! wrapper, a mock and a recorder, and a plain closure is one too, which keeps wire-level tests to
//! a line.
//!
//! Whether a request may be sent twice is a property of the request, not of the transport, so the
//! flow that builds it says so with a [`RetrySafety`] in its extensions; a retrying transport
//! reads it back with [`RetrySafety::of`].

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

/// A request as core hands it to a transport: a complete `http::Request` with its body in memory.
pub type HttpRequest = http::Request<Bytes>;

/// A response as a transport hands it back: status, headers and the whole body in memory.
pub type HttpResponse = http::Response<Bytes>;

/// Sends one HTTP request and returns its response.
///
/// # Contract
///
/// - A response with any status, including 4xx and 5xx, is `Ok`: deciding what a status means is
///   the caller's job. `Err` is kept for a request that produced no response at all, or a 2xx
///   whose body could not be read whole.
/// - A body cap, if the transport has one, never turns an error status into an `Err`: a non-2xx
///   response over the cap is returned cut at the cap and marked with [`BodyTruncated`].
/// - The request is sent as given: implementations add transport-level headers (such as
///   `user-agent`) only when the request has none, and never change the method, URL or body.
/// - Implementations never log or otherwise expose request or response headers and bodies, since
///   they carry credentials.
///
/// # Wrappers
///
/// A wrapper (retry, recording, metrics) is itself an `HttpTransport` holding the inner one, in
/// the style of tower: `Wrapper::new(inner)`, `get_ref`, `into_inner`. A wrapper that re-sends a
/// request must honour the request's [`RetrySafety`].
///
/// # Closures
///
/// Any `Fn(HttpRequest) -> impl Future<Output = Result<HttpResponse, TransportError>>` is a
/// transport:
///
/// ```
/// use bytes::Bytes;
/// use sfauth_core::http::{HttpRequest, HttpResponse, HttpTransport, TransportError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let transport = |request: HttpRequest| async move {
///     assert_eq!(request.uri().path(), "/services/oauth2/token");
///     Ok::<_, TransportError>(HttpResponse::new(Bytes::from_static(b"{}")))
/// };
/// let request = http::Request::post("https://login.salesforce.com/services/oauth2/token")
///     .body(Bytes::new())?;
/// let response = transport.send(request).await?;
/// assert_eq!(response.status(), 200);
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait HttpTransport: Send + Sync {
    /// Sends `request` and returns the response, whatever its status.
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError>;
}

#[async_trait]
impl<F, Fut> HttpTransport for F
where
    F: Fn(HttpRequest) -> Fut + Send + Sync,
    Fut: Future<Output = Result<HttpResponse, TransportError>> + Send,
{
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        self(request).await
    }
}

/// Whether a request may be sent more than once.
///
/// Flows put one in the request's extensions. Salesforce revokes a whole token family when a
/// rotated-out refresh token is presented again, so re-sending the wrong request is not a wasted
/// round trip but a lost customer connection.
///
/// ```
/// use bytes::Bytes;
/// use sfauth_core::http::RetrySafety;
///
/// let mut request = http::Request::post("https://login.salesforce.com/services/oauth2/token")
///     .body(Bytes::new())
///     .unwrap();
/// assert_eq!(RetrySafety::of(&request), RetrySafety::SingleUse);
/// request.extensions_mut().insert(RetrySafety::Idempotent);
/// assert_eq!(RetrySafety::of(&request), RetrySafety::Idempotent);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetrySafety {
    /// Sending it twice has the same effect as once (revoke, introspect, GETs): a transport may
    /// re-send it after a timeout or a 429/502/503/504.
    Idempotent,
    /// It spends a single-use credential (an authorization code, a rotating refresh token, a
    /// token-exchange subject): it may be re-sent only when it provably never left the client.
    SingleUse,
    /// A login (JWT bearer, client credentials, username-password): sending it twice is
    /// harmless, but each one counts against the org's login rate limit, so its retries belong
    /// to whoever sent it (the token manager, under its own policy and lease). A transport
    /// re-sends it only when it provably never left the client, so that retries never
    /// multiply (three in the transport under three in the manager would be nine logins).
    CallerRetries,
}

impl RetrySafety {
    /// The safety recorded on `request`, or, when none was, the safe default for its method:
    /// `GET`, `HEAD` and `OPTIONS` are idempotent, anything else is treated as single-use.
    pub fn of<B>(request: &http::Request<B>) -> Self {
        if let Some(safety) = request.extensions().get::<RetrySafety>() {
            return *safety;
        }
        match *request.method() {
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS => Self::Idempotent,
            _ => Self::SingleUse,
        }
    }
}

/// How long a response's `Retry-After` header asks the client to wait, as of `now`.
///
/// The header comes in two forms (RFC 9110 §10.2.3): delta-seconds and an HTTP date. Flows
/// report it through `Error::retry_after` and a retrying transport sleeps on it, so both read it
/// here and cannot disagree on what a server said. A date already past means "now"
/// ([`Duration::ZERO`]); a missing or unparsable header is `None`. `now` is a parameter so the
/// date form can be tested without a clock; callers pass `SystemTime::now()`.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use sfauth_core::http::retry_after;
///
/// let mut headers = http::HeaderMap::new();
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// headers.insert(http::header::RETRY_AFTER, "120".parse().unwrap());
/// assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(120)));
/// headers.insert(http::header::RETRY_AFTER, "Tue, 14 Nov 2023 22:13:27 GMT".parse().unwrap());
/// assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
/// ```
pub fn retry_after(headers: &http::HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// What went wrong when a request produced no response; see [`TransportError::kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// No connection could be made (DNS, refused, unreachable). The request never left the
    /// client, so even a single-use request may be re-sent.
    Connect,
    /// The connect or overall deadline passed. The server may have received and acted on the
    /// request.
    Timeout,
    /// The response body was larger than the transport accepts.
    BodyTooLarge,
    /// The TLS handshake failed (certificate, protocol). Re-sending will not help.
    Tls,
    /// The request was refused before sending because it would have crossed the network in the
    /// clear (plain `http` to a host other than loopback), or its URL cannot be sent at all.
    InsecureOrInvalidUrl,
    /// Anything else: a broken connection mid-exchange, a protocol error.
    Other,
}

impl TransportErrorKind {
    /// Whether trying again later might succeed. This says nothing about whether re-sending is
    /// *safe*; that depends on the request's [`RetrySafety`] and on [`Self::never_sent`].
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Connect | Self::Timeout | Self::Other)
    }

    /// Whether the request provably never reached the server, so even a single-use credential
    /// in it is still unspent.
    pub fn never_sent(self) -> bool {
        matches!(self, Self::Connect | Self::Tls | Self::InsecureOrInvalidUrl)
    }
}

impl fmt::Display for TransportErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::BodyTooLarge => "body too large",
            Self::Tls => "tls",
            Self::InsecureOrInvalidUrl => "insecure or invalid url",
            Self::Other => "other",
        })
    }
}

/// A request that produced no usable response.
///
/// Its message and source never contain URLs with query strings, headers or bodies, so it is safe
/// to log: the message is scrubbed ([`crate::redact`]) when the error is made, as a second line
/// of defence behind the callers' care.
///
/// When the failure came after the response's status line (the body was too large, or broke
/// off), [`TransportError::status`] keeps the status, so that a 503 whose body could not be read
/// is still classified as a 503.
///
/// ```
/// use sfauth_core::http::{TransportError, TransportErrorKind};
///
/// let error = TransportError::new(TransportErrorKind::Timeout, "no response within 30s");
/// assert!(error.kind().is_retryable());
/// assert_eq!(error.to_string(), "http timeout: no response within 30s");
/// ```
#[derive(Debug)]
pub struct TransportError {
    kind: TransportErrorKind,
    message: String,
    status: Option<u16>,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl TransportError {
    /// An error of `kind`, described by `message` (which should not contain secrets; it is
    /// scrubbed all the same).
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = match crate::redact::scrub(&message) {
            std::borrow::Cow::Borrowed(_) => message,
            std::borrow::Cow::Owned(clean) => clean,
        };
        Self {
            kind,
            message,
            status: None,
            source: None,
        }
    }

    /// Records the HTTP status of the response this failure interrupted.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// The HTTP status of the response, when one had arrived before the failure (a body too
    /// large, or cut off).
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// Attaches the underlying error. The caller makes sure it carries no secret (for reqwest,
    /// strip the URL first).
    #[must_use]
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// What kind of failure this was.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http {}: {}", self.kind, self.message)?;
        if let Some(status) = self.status {
            write!(f, " (after http status {status})")?;
        }
        Ok(())
    }
}

/// Put in a response's extensions by a transport that kept only the start of its body.
///
/// A transport caps how much of a body it reads. For a success that cap is an error (the
/// answer cannot be used), but an error status is worth more than its body: a 503 with a
/// 2 MiB maintenance page must still read as a 503, not as "body too large". So a transport
/// hands back a non-2xx response cut at the cap, marked with this; core then classifies it by
/// its status alone and never parses the cut body as an OAuth error document.
///
/// ```
/// use bytes::Bytes;
/// use sfauth_core::http::{BodyTruncated, HttpResponse};
///
/// let mut response = http::Response::builder().status(503).body(Bytes::from_static(b"<html>")).unwrap();
/// response.extensions_mut().insert(BodyTruncated::new(1024 * 1024));
/// assert_eq!(BodyTruncated::of(&response).map(|t| t.limit()), Some(1024 * 1024));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BodyTruncated {
    limit: usize,
}

impl BodyTruncated {
    /// The mark for a body cut at `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }

    /// The cap the body was cut at.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The mark on `response`, if its body was cut.
    pub fn of(response: &HttpResponse) -> Option<&Self> {
        response.extensions().get::<Self>()
    }
}

impl StdError for TransportError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_safety_follows_the_method() {
        let get = http::Request::get("https://x.test/").body(()).unwrap();
        let post = http::Request::post("https://x.test/").body(()).unwrap();
        assert_eq!(RetrySafety::of(&get), RetrySafety::Idempotent);
        assert_eq!(RetrySafety::of(&post), RetrySafety::SingleUse);
    }

    #[test]
    fn retry_after_reads_both_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let with = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::RETRY_AFTER, value.parse().unwrap());
            retry_after(&headers, now)
        };
        let in_ten = httpdate::fmt_http_date(now + Duration::from_secs(10));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(10));
        assert_eq!(with("0"), Some(Duration::ZERO));
        assert_eq!(with(" 42 "), Some(Duration::from_secs(42)));
        assert_eq!(with(&in_ten), Some(Duration::from_secs(10)));
        assert_eq!(with(&past), Some(Duration::ZERO));
        assert_eq!(with("-1"), None);
        assert_eq!(with("1.5"), None);
        assert_eq!(with("soon"), None);
        assert_eq!(with(""), None);
        assert_eq!(retry_after(&http::HeaderMap::new(), now), None);
    }

    #[test]
    fn only_unsent_failures_are_never_sent() {
        use TransportErrorKind::*;
        for kind in [Connect, Tls, InsecureOrInvalidUrl] {
            assert!(kind.never_sent(), "{kind}");
        }
        for kind in [Timeout, BodyTooLarge, Other] {
            assert!(!kind.never_sent(), "{kind}");
        }
        assert!(!Tls.is_retryable());
        assert!(!BodyTooLarge.is_retryable());
    }

    #[test]
    fn messages_are_scrubbed_and_keep_the_status() {
        let error = TransportError::new(
            TransportErrorKind::Other,
            "cannot reach https://acme.my.salesforce.com/cb?code=aPrx4SECRET&state=s1",
        )
        .with_status(503);
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("aPrx4SECRET"), "{shown}");
        assert!(shown.contains("state=s1"), "{shown}");
        assert_eq!(error.status(), Some(503));
        assert!(error.to_string().ends_with("(after http status 503)"));
    }

    #[test]
    fn source_is_exposed() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error =
            TransportError::new(TransportErrorKind::Connect, "cannot connect").with_source(io);
        assert_eq!(
            error.source().map(ToString::to_string).as_deref(),
            Some("refused")
        );
    }
}
