//! [`Recorder`]: keeps every exchange that passes through it, for tests to inspect.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use sfauth_core::http::{
    HttpRequest, HttpResponse, HttpTransport, RetrySafety, TransportErrorKind,
};

/// One request and what came back, as seen by a [`Recorder`].
///
/// It holds bodies and headers verbatim, credentials included, so tests can assert on the wire
/// format; its `Debug` output shows only method, URL path, safety and outcome.
#[derive(Clone)]
pub struct Exchange {
    /// The request as it was sent.
    pub request: http::Request<Bytes>,
    /// The retry safety the request carried.
    pub safety: RetrySafety,
    /// The response, or the kind of error that replaced it.
    pub outcome: Result<http::Response<Bytes>, TransportErrorKind>,
}

impl Exchange {
    /// The request body decoded as an `application/x-www-form-urlencoded` form.
    pub fn form(&self) -> Vec<(String, String)> {
        form_urlencoded_pairs(self.request.body())
    }
}

fn form_urlencoded_pairs(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body)
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect()
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("method", self.request.method())
            .field("path", &self.request.uri().path())
            .field("safety", &self.safety)
            .field(
                "outcome",
                &self.outcome.as_ref().map(|response| response.status()),
            )
            .finish_non_exhaustive()
    }
}

/// A transport wrapper that records every exchange, in order, then passes it on.
///
/// Cloning a `Recorder` shares its log, so a test can keep one clone and hand the other to the
/// code under test.
///
/// ```
/// use bytes::Bytes;
/// use sfauth_core::http::{HttpRequest, HttpResponse, HttpTransport, TransportError};
/// use sfauth_transport::Recorder;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let inner = |_request: HttpRequest| async {
///     Ok::<_, TransportError>(HttpResponse::new(Bytes::new()))
/// };
/// let recorder = Recorder::new(inner);
/// let request = http::Request::post("https://login.salesforce.com/services/oauth2/token")
///     .body(Bytes::from_static(b"grant_type=refresh_token"))?;
/// recorder.send(request).await?;
/// let exchanges = recorder.exchanges();
/// assert_eq!(exchanges.len(), 1);
/// assert_eq!(exchanges[0].form(), [("grant_type".into(), "refresh_token".into())]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Recorder<T> {
    inner: T,
    log: Arc<Mutex<Vec<Exchange>>>,
}

impl<T> Recorder<T> {
    /// Records what passes through to `inner`.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            log: Arc::default(),
        }
    }

    /// A copy of every exchange so far, oldest first.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets the exchanges recorded so far.
    pub fn clear(&self) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The wrapped transport.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Unwraps the inner transport.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T> fmt::Debug for Recorder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("Recorder")
            .field("exchanges", &count)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<T: HttpTransport> HttpTransport for Recorder<T> {
    async fn send(
        &self,
        request: HttpRequest,
    ) -> Result<HttpResponse, sfauth_core::http::TransportError> {
        // Both halves are `Clone` in http 1.x, extensions included; `Bytes` bodies are shared.
        let copy = request.clone();
        let outcome = self.inner.send(request).await;
        let recorded = match &outcome {
            Ok(response) => Ok(response.clone()),
            Err(error) => Err(error.kind()),
        };
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Exchange {
                // Read from the copy, so the two can never disagree.
                safety: RetrySafety::of(&copy),
                request: copy,
                outcome: recorded,
            });
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sfauth_core::http::TransportError;

    /// A private extension, standing for whatever a caller's layers attach to a request.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Tag(&'static str);

    /// The log holds the request and response whole, extensions included, and the safety it
    /// reports is the one the request carried.
    #[tokio::test]
    async fn records_the_whole_exchange() {
        let inner = |_request: HttpRequest| async {
            let mut response = http::Response::builder()
                .status(201)
                .version(http::Version::HTTP_2)
                .header("x-answer", "42")
                .body(Bytes::from_static(b"{}"))
                .unwrap();
            response.extensions_mut().insert(Tag("response"));
            Ok::<_, TransportError>(response)
        };
        let recorder = Recorder::new(inner);
        let mut request = http::Request::put("https://example.my.salesforce.com/a?b=c")
            .version(http::Version::HTTP_11)
            .header("x-question", "?")
            .body(Bytes::from_static(b"q"))
            .unwrap();
        request.extensions_mut().insert(RetrySafety::SingleUse);
        request.extensions_mut().insert(Tag("request"));
        recorder.send(request).await.unwrap();

        let exchanges = recorder.exchanges();
        assert_eq!(exchanges.len(), 1);
        let exchange = &exchanges[0];
        assert_eq!(exchange.safety, RetrySafety::SingleUse);
        let sent = &exchange.request;
        assert_eq!(sent.method(), http::Method::PUT);
        assert_eq!(sent.uri(), "https://example.my.salesforce.com/a?b=c");
        assert_eq!(sent.version(), http::Version::HTTP_11);
        assert_eq!(sent.headers()["x-question"], "?");
        assert_eq!(sent.body(), &Bytes::from_static(b"q"));
        assert_eq!(sent.extensions().get::<Tag>(), Some(&Tag("request")));
        let received = exchange.outcome.as_ref().unwrap();
        assert_eq!(received.status(), 201);
        assert_eq!(received.version(), http::Version::HTTP_2);
        assert_eq!(received.headers()["x-answer"], "42");
        assert_eq!(received.body(), &Bytes::from_static(b"{}"));
        assert_eq!(received.extensions().get::<Tag>(), Some(&Tag("response")));
    }

    /// A request with no recorded safety is logged with the method's default.
    #[tokio::test]
    async fn safety_defaults_follow_the_request() {
        let inner = |_request: HttpRequest| async {
            Err::<HttpResponse, _>(TransportError::new(TransportErrorKind::Connect, "down"))
        };
        let recorder = Recorder::new(inner);
        let request = http::Request::get("https://example.my.salesforce.com/")
            .body(Bytes::new())
            .unwrap();
        let expected = RetrySafety::of(&request);
        assert!(recorder.send(request).await.is_err());
        let exchanges = recorder.exchanges();
        assert_eq!(exchanges[0].safety, expected);
        assert_eq!(
            exchanges[0].outcome.as_ref().err(),
            Some(&TransportErrorKind::Connect)
        );
    }
}
