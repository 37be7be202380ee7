//! [`ReqwestTransport`]: the production transport, reqwest over rustls.

use std::error::Error as StdError;
use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::BytesMut;
use sfauth_core::host::is_loopback;
use sfauth_core::http::{
    BodyTruncated, HttpRequest, HttpResponse, HttpTransport, TransportError, TransportErrorKind,
};
use tracing::Instrument;

use crate::proxy::Proxy;

/// The `user-agent` sent when a request carries none of its own.
pub const DEFAULT_USER_AGENT: &str = concat!("sfauth/", env!("CARGO_PKG_VERSION"), " (rust)");

/// The largest response body accepted by default: token responses are a few kilobytes, so a
/// megabyte leaves ample room while stopping a misbehaving server from filling memory.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends requests with reqwest over rustls, with pooled connections.
///
/// Every request is checked before it leaves: plain `http` is refused for any host but loopback,
/// since token requests carry credentials. Responses are read with a size cap enforced while the
/// body streams in: a 2xx over the cap is a [`TransportErrorKind::BodyTooLarge`] error carrying
/// its status, and any other status over the cap is returned cut at the cap and marked with
/// [`BodyTruncated`], so that it is still classified by its status. Each request gets a
/// `tracing` span (`http.request`) with method, host,
/// path, status and duration, never headers, query strings or bodies.
///
/// Redirects are not followed: Salesforce may answer a token POST on the login pool with a 302 to
/// the user's My Domain, and re-posting credentials to wherever a `Location` points is a decision
/// for the flow, not for the transport.
///
/// ```no_run
/// use std::time::Duration;
/// use sfauth_core::http::HttpTransport;
/// use sfauth_transport::ReqwestTransport;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let transport = ReqwestTransport::builder()
///     .timeout(Duration::from_secs(20))
///     .max_body_bytes(256 * 1024)
///     .build()?;
/// let request = http::Request::get("https://login.salesforce.com/.well-known/openid-configuration")
///     .body(bytes::Bytes::new())?;
/// let response = transport.send(request).await?;
/// println!("{}", response.status());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ReqwestTransport {
    client: reqwest::Client,
    max_body_bytes: usize,
}

impl ReqwestTransport {
    /// A transport with the defaults: 10 s to connect, 30 s for the whole exchange, a 1 MiB body
    /// cap and the sfauth user-agent.
    pub fn new() -> Result<Self, TransportError> {
        Self::builder().build()
    }

    /// A builder to change the defaults.
    pub fn builder() -> ReqwestTransportBuilder {
        ReqwestTransportBuilder::default()
    }

    /// The body cap in bytes.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    async fn send_checked(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let request = reqwest::Request::try_from(request).map_err(|error| {
            TransportError::new(
                TransportErrorKind::InsecureOrInvalidUrl,
                "request cannot be sent",
            )
            .with_source(error.without_url())
        })?;
        // Checked after the conversion, on the URL reqwest will actually connect to.
        check_url(request.url())?;
        let mut response = self
            .client
            .execute(request)
            .await
            .map_err(map_reqwest_error)?;

        // The status is known before the body: every failure from here on carries it, and an
        // error status is never turned into a different error by its body (a 503 with a 2 MiB
        // maintenance page is still a 503).
        let status = response.status();
        let limit = self.max_body_bytes;
        let declared_too_large = response
            .content_length()
            .is_some_and(|length| u64::try_from(limit).is_ok_and(|limit| length > limit));
        if declared_too_large && status.is_success() {
            return Err(body_too_large(limit, status));
        }
        let mut body = BytesMut::new();
        let mut truncated = false;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| map_reqwest_error(error).with_status(status.as_u16()))?
        {
            let room = limit.saturating_sub(body.len());
            if chunk.len() > room {
                if status.is_success() {
                    // A success that cannot be read whole is unusable, and the server has acted
                    // on the request: the error says so through its status.
                    return Err(body_too_large(limit, status));
                }
                body.extend_from_slice(chunk.get(..room).unwrap_or_default());
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }

        let mut builder = http::Response::builder()
            .status(status)
            .version(response.version());
        if let Some(headers) = builder.headers_mut() {
            *headers = std::mem::take(response.headers_mut());
        }
        if truncated {
            builder = builder.extension(BodyTruncated::new(limit));
        }
        builder.body(body.freeze()).map_err(|error| {
            TransportError::new(TransportErrorKind::Other, "invalid response")
                .with_status(status.as_u16())
                .with_source(error)
        })
    }
}

impl fmt::Debug for ReqwestTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestTransport")
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl HttpTransport for ReqwestTransport {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let span = tracing::info_span!(
            "http.request",
            method = %request.method(),
            host = request.uri().host().unwrap_or(""),
            path = request.uri().path(),
            status = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = self.send_checked(request).instrument(span.clone()).await;
        span.record(
            "duration_ms",
            u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        );
        match &result {
            Ok(response) => {
                span.record("status", response.status().as_u16());
            }
            Err(error) => {
                span.record("error", tracing::field::display(error.kind()));
            }
        }
        span.in_scope(|| tracing::debug!("http request finished"));
        result
    }
}

/// Configures a [`ReqwestTransport`].
///
/// ```
/// use std::time::Duration;
/// use sfauth_transport::ReqwestTransport;
///
/// let transport = ReqwestTransport::builder()
///     .connect_timeout(Duration::from_secs(5))
///     .user_agent("my-sync-service/2.1")
///     .build()
///     .unwrap();
/// assert_eq!(transport.max_body_bytes(), 1024 * 1024);
/// ```
#[derive(Clone)]
pub struct ReqwestTransportBuilder {
    connect_timeout: Duration,
    timeout: Duration,
    max_body_bytes: usize,
    user_agent: String,
    pool_idle_timeout: Option<Duration>,
    proxy: Proxy,
    root_certificates: Vec<Vec<u8>>,
}

impl fmt::Debug for ReqwestTransportBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestTransportBuilder")
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("user_agent", &self.user_agent)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("proxy", &self.proxy)
            .field("root_certificates", &self.root_certificates.len())
            .finish()
    }
}

impl Default for ReqwestTransportBuilder {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            user_agent: DEFAULT_USER_AGENT.to_owned(),
            pool_idle_timeout: Some(Duration::from_secs(90)),
            proxy: Proxy::Environment,
            root_certificates: Vec::new(),
        }
    }
}

impl ReqwestTransportBuilder {
    /// How long to wait for a connection (including the TLS handshake).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long the whole exchange may take, from connecting to the last byte of the body.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The largest response body read. A 2xx with a larger one is a
    /// [`TransportErrorKind::BodyTooLarge`] error (with its status); any other status is handed
    /// back with its body cut at this size and marked with [`BodyTruncated`].
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }

    /// The `user-agent` sent with requests that carry none of their own.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// How long an idle pooled connection is kept; `None` keeps it until the server closes it.
    pub fn pool_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// Where requests leave from: the environment's proxy variables by default (as curl reads
    /// them), one proxy, or none. See [`Proxy`].
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = proxy;
        self
    }

    /// Also trusts this CA certificate (PEM), besides the system's roots: for a private CA, or
    /// a TLS-inspecting egress proxy. A PEM that does not parse fails [`Self::build`].
    pub fn root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificates.push(pem.into());
        self
    }

    /// Builds the transport.
    pub fn build(self) -> Result<ReqwestTransport, TransportError> {
        self.build_with_env(|name| std::env::var(name).ok())
    }

    fn build_with_env(
        self,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<ReqwestTransport, TransportError> {
        // reqwest would read the environment's proxies itself; it is told not to, so that the
        // rules are the ones `Proxy` documents, whatever reqwest's defaults become.
        let mut builder = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .user_agent(self.user_agent)
            .pool_idle_timeout(self.pool_idle_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        for proxy in self.proxy.resolve(var)? {
            builder = builder.proxy(proxy);
        }
        for pem in &self.root_certificates {
            let certificate = reqwest::Certificate::from_pem(pem).map_err(|error| {
                TransportError::new(TransportErrorKind::Tls, "root certificate is not a pem")
                    .with_source(error)
            })?;
            builder = builder.add_root_certificate(certificate);
        }
        let client = builder.build().map_err(|error| {
            TransportError::new(TransportErrorKind::Tls, "cannot set up the http client")
                .with_source(error)
        })?;
        Ok(ReqwestTransport {
            client,
            max_body_bytes: self.max_body_bytes,
        })
    }
}

/// Refuses URLs that would send credentials in the clear: `https` everywhere, `http` only to a
/// loopback address (the emulator, a local proxy, the CLI's callback listener), by the same
/// [`is_loopback`] rule that login hosts follow.
fn check_url(url: &url::Url) -> Result<(), TransportError> {
    if !url.has_host() {
        return Err(TransportError::new(
            TransportErrorKind::InsecureOrInvalidUrl,
            "url has no host",
        ));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err(TransportError::new(
            TransportErrorKind::InsecureOrInvalidUrl,
            format!(
                "refusing plain http to non-loopback host {}: use https",
                url.host_str().unwrap_or_default()
            ),
        )),
        other => Err(TransportError::new(
            TransportErrorKind::InsecureOrInvalidUrl,
            format!("unsupported url scheme {other}"),
        )),
    }
}

fn body_too_large(limit: usize, status: http::StatusCode) -> TransportError {
    TransportError::new(
        TransportErrorKind::BodyTooLarge,
        format!("response body exceeds the {limit} byte limit"),
    )
    .with_status(status.as_u16())
}

/// Maps a reqwest error to our taxonomy. The URL is stripped first: reqwest puts it in its
/// messages, and a revoke or userinfo URL can carry a token in its query string.
fn map_reqwest_error(error: reqwest::Error) -> TransportError {
    let error = error.without_url();
    let (kind, message) = if is_tls(&error) {
        (TransportErrorKind::Tls, "tls handshake failed")
    } else if error.is_timeout() {
        (TransportErrorKind::Timeout, "request timed out")
    } else if error.is_connect() {
        (TransportErrorKind::Connect, "cannot connect")
    } else if error.is_body() || error.is_decode() {
        (TransportErrorKind::Other, "response body could not be read")
    } else {
        (TransportErrorKind::Other, "request failed")
    };
    TransportError::new(kind, message).with_source(error)
}

/// Whether a rustls error sits anywhere in the chain. `io::Error::source` skips the error it
/// wraps, so each `io::Error` is opened with `get_ref` as well.
fn is_tls(error: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<rustls::Error>() {
            return true;
        }
        if let Some(inner) = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            && is_tls(inner)
        {
            return true;
        }
        current = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_policy() {
        let ok = [
            "https://login.salesforce.com/x",
            "http://127.0.0.1:8080/x",
            "http://127.8.9.1/x",
            "http://[::1]/x",
            "http://localhost/x",
            "http://LOCALHOST/x",
        ];
        for url in ok {
            assert!(check_url(&url.parse().unwrap()).is_ok(), "{url}");
        }
        // `app.localhost` was once allowed here but not for login hosts; the shared rule refuses
        // it, since its resolution is up to DNS.
        let refused = [
            "http://login.salesforce.com/x",
            "http://10.0.0.1/x",
            "http://[::2]/x",
            "http://localhost.evil.com/x",
            "http://app.localhost/x",
            "ftp://127.0.0.1/x",
            "file:///etc/passwd",
        ];
        for url in refused {
            let error = check_url(&url.parse().unwrap()).unwrap_err();
            assert_eq!(
                error.kind(),
                TransportErrorKind::InsecureOrInvalidUrl,
                "{url}"
            );
        }
    }

    /// Refusals happen before any connection: a relative URI cannot become a reqwest request,
    /// and plain `http` off loopback is stopped by the check on the converted URL.
    #[tokio::test]
    async fn refused_requests_never_connect() {
        let transport = ReqwestTransport::new().unwrap();
        for uri in [
            "/relative",
            "http://app.localhost:9/x",
            "http://192.0.2.1:9/x",
        ] {
            let request = http::Request::post(uri).body(bytes::Bytes::new()).unwrap();
            let error = transport.send(request).await.unwrap_err();
            assert_eq!(
                error.kind(),
                TransportErrorKind::InsecureOrInvalidUrl,
                "{uri}"
            );
        }
    }
}
