//! `LazyTransport`: the CLI's HTTP transport, built on its first request.
//!
//! Building a reqwest client loads the system's TLS roots (about 150 files opened on a Debian
//! machine), which is most of what `sfauth token` costs on a cached token, a command that makes
//! no request at all. So the client is built when the first request is sent, once, and every
//! later request reuses it (and its connection pool).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use sfauth::oauth::http::{
    HttpRequest, HttpResponse, HttpTransport, TransportError, TransportErrorKind,
};
use sfauth::transport::{Proxy, ReqwestTransport, Retry, RetryPolicy};

/// An `HttpTransport` that builds its `ReqwestTransport` (wrapped in a short `Retry`) on the
/// first `send`.
pub(crate) struct LazyTransport {
    max_body_bytes: usize,
    proxy: Proxy,
    // A failed build is kept too: it would fail the same way again (no TLS roots, a bad
    // setting), and its message is then given to every request.
    inner: OnceLock<Result<Arc<dyn HttpTransport>, String>>,
}

impl LazyTransport {
    /// A transport through `proxy` that accepts response bodies up to `max_body_bytes`.
    pub(crate) fn new(max_body_bytes: usize, proxy: Proxy) -> Self {
        Self {
            max_body_bytes,
            proxy,
            inner: OnceLock::new(),
        }
    }

    fn get(&self) -> Result<&Arc<dyn HttpTransport>, TransportError> {
        self.inner
            .get_or_init(|| {
                ReqwestTransport::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .timeout(Duration::from_secs(30))
                    .max_body_bytes(self.max_body_bytes)
                    .proxy(self.proxy.clone())
                    .user_agent(concat!("sfauth-cli/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map(|reqwest| {
                        Arc::new(Retry::new(reqwest, RetryPolicy::default().max_attempts(2)))
                            as Arc<dyn HttpTransport>
                    })
                    .map_err(|e| format!("cannot set up HTTPS ({e})"))
            })
            .as_ref()
            // Nothing was sent: TLS is the kind that says so and is not retried.
            .map_err(|message| TransportError::new(TransportErrorKind::Tls, message.clone()))
    }
}

#[async_trait]
impl HttpTransport for LazyTransport {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        self.get()?.send(request).await
    }
}
