//! [`Retry`]: re-sends what is safe to re-send, with exponential backoff and full jitter.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use http::StatusCode;
use sfauth_core::backoff::Backoff;
use sfauth_core::http::{
    HttpRequest, HttpResponse, HttpTransport, RetrySafety, TransportError, retry_after,
};

/// How many times and how patiently [`Retry`] tries.
///
/// ```
/// use std::time::Duration;
/// use sfauth_transport::RetryPolicy;
///
/// let policy = RetryPolicy::default()
///     .max_attempts(5)
///     .base_delay(Duration::from_millis(100))
///     .max_delay(Duration::from_secs(5));
/// assert_eq!(policy.attempts(), 5);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// Three attempts, backoff from 200 ms capped at 5 s, and a server's `Retry-After` honoured
    /// up to 30 s.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The total number of attempts, the first included; at least 1.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The backoff before the first retry, before jitter; it doubles with every retry.
    pub fn base_delay(mut self, delay: Duration) -> Self {
        self.base_delay = delay;
        self
    }

    /// The ceiling on the computed backoff.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// The longest `Retry-After` the wrapper will wait out. A server asking for more gets its
    /// response handed back to the caller instead of a stalled task.
    pub fn max_retry_after(mut self, delay: Duration) -> Self {
        self.max_retry_after = delay;
        self
    }

    /// The configured number of attempts.
    pub fn attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The backoff between attempts: from `base_delay`, doubling, capped at `max_delay`; the
    /// actual delay is drawn with full jitter ([`Backoff::jittered`]).
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.base_delay, self.max_delay)
    }

    /// The ceiling of the backoff before retry number `retry` (0 for the first retry):
    /// `min(max_delay, base_delay * 2^retry)`.
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        self.backoff().ceiling(retry)
    }
}

/// What one attempt produced, and what to do about it.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Done,
    RetryAfterBackoff,
    RetryAfter(Duration),
}

/// Wraps a transport and re-sends failed requests when that is both useful and safe.
///
/// What may be re-sent depends on the request's [`RetrySafety`]:
///
/// | outcome | `Idempotent` | `SingleUse`, `CallerRetries` |
/// |---|---|---|
/// | connect error (never left the client) | retried | retried |
/// | timeout, broken connection | retried | returned |
/// | 429, 503 | retried, honouring `Retry-After` | returned |
/// | 502, 504 | retried | returned |
/// | any other status (400, 401, 500, ...) | returned | returned |
///
/// A single-use request is never re-sent once it may have reached Salesforce: re-presenting a
/// rotated refresh token makes Salesforce revoke the whole token family. A login
/// (`CallerRetries`) is retried by whoever sent it, never also here, so that retries do not
/// multiply into a login rate limit.
///
/// ```
/// use bytes::Bytes;
/// use sfauth_core::http::{HttpRequest, HttpResponse, HttpTransport, RetrySafety, TransportError};
/// use sfauth_transport::{Retry, RetryPolicy};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let inner = |_request: HttpRequest| async {
///     Ok::<_, TransportError>(HttpResponse::new(Bytes::from_static(b"{}")))
/// };
/// let transport = Retry::new(inner, RetryPolicy::default());
/// let mut request = http::Request::post("https://login.salesforce.com/services/oauth2/introspect")
///     .body(Bytes::new())?;
/// request.extensions_mut().insert(RetrySafety::Idempotent);
/// assert_eq!(transport.send(request).await?.status(), 200);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Retry<T> {
    inner: T,
    policy: RetryPolicy,
}

impl<T> Retry<T> {
    /// Wraps `inner` with `policy`.
    pub fn new(inner: T, policy: RetryPolicy) -> Self {
        Self { inner, policy }
    }

    /// The wrapped transport.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The policy in force.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Unwraps the inner transport.
    pub fn into_inner(self) -> T {
        self.inner
    }

    fn verdict(
        &self,
        safety: RetrySafety,
        outcome: &Result<HttpResponse, TransportError>,
        now: SystemTime,
    ) -> Verdict {
        match outcome {
            Err(error) => {
                let kind = error.kind();
                let safe = match safety {
                    RetrySafety::Idempotent => true,
                    _ => kind.never_sent(),
                };
                if kind.is_retryable() && safe {
                    Verdict::RetryAfterBackoff
                } else {
                    Verdict::Done
                }
            }
            Ok(_) if safety != RetrySafety::Idempotent => Verdict::Done,
            Ok(response) => match response.status() {
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                    match retry_after(response.headers(), now) {
                        Some(wait) if wait > self.policy.max_retry_after => Verdict::Done,
                        Some(wait) => Verdict::RetryAfter(wait),
                        None => Verdict::RetryAfterBackoff,
                    }
                }
                StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => Verdict::RetryAfterBackoff,
                _ => Verdict::Done,
            },
        }
    }
}

#[async_trait]
impl<T: HttpTransport> HttpTransport for Retry<T> {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let safety = RetrySafety::of(&request);
        // Attempts made so far; bounded by `max_attempts`, a `u32`, and counted saturating.
        let mut attempts: u32 = 0;
        loop {
            // `http::Request<Bytes>` is `Clone` in http 1.x, extensions included, and cloning
            // `Bytes` is a reference count, so every attempt is the caller's request, whole.
            let attempt = request.clone();
            let outcome = self.inner.send(attempt).await;
            let retry = attempts;
            attempts = attempts.saturating_add(1);
            if attempts >= self.policy.max_attempts {
                return outcome;
            }
            let wait = match self.verdict(safety, &outcome, SystemTime::now()) {
                Verdict::Done => return outcome,
                Verdict::RetryAfterBackoff => self.policy.backoff().jittered(retry),
                Verdict::RetryAfter(wait) => wait,
            };
            tracing::debug!(
                attempt = attempts,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                outcome = %describe(&outcome),
                "retrying http request"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

fn describe(outcome: &Result<HttpResponse, TransportError>) -> String {
    match outcome {
        Ok(response) => response.status().to_string(),
        Err(error) => error.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use sfauth_core::http::TransportErrorKind;

    fn response(status: u16, retry_after: Option<&str>) -> Result<HttpResponse, TransportError> {
        let mut builder = http::Response::builder().status(status);
        if let Some(value) = retry_after {
            builder = builder.header("retry-after", value);
        }
        Ok(builder.body(Bytes::new()).unwrap())
    }

    fn error(kind: TransportErrorKind) -> Result<HttpResponse, TransportError> {
        Err(TransportError::new(kind, "test"))
    }

    /// The whole decision table, one row per line.
    #[test]
    fn verdicts() {
        use RetrySafety::{CallerRetries as C, Idempotent as I, SingleUse as S};
        use TransportErrorKind::*;
        use Verdict::{Done, RetryAfter, RetryAfterBackoff as Backoff};
        let retry = Retry::new((), RetryPolicy::default());
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let in_ten = httpdate::fmt_http_date(now + Duration::from_secs(10));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(10));
        let cases: Vec<(RetrySafety, Result<HttpResponse, TransportError>, Verdict)> = vec![
            (I, error(Connect), Backoff),
            (S, error(Connect), Backoff),
            (I, error(Timeout), Backoff),
            (S, error(Timeout), Done),
            (I, error(Other), Backoff),
            (S, error(Other), Done),
            (I, error(Tls), Done),
            (I, error(BodyTooLarge), Done),
            (I, error(InsecureOrInvalidUrl), Done),
            (I, response(200, None), Done),
            (I, response(400, None), Done),
            (I, response(401, None), Done),
            (I, response(500, None), Done),
            (I, response(502, None), Backoff),
            (I, response(504, None), Backoff),
            (I, response(503, None), Backoff),
            (
                I,
                response(429, Some("2")),
                RetryAfter(Duration::from_secs(2)),
            ),
            (
                I,
                response(503, Some(&in_ten)),
                RetryAfter(Duration::from_secs(10)),
            ),
            (I, response(503, Some(&past)), RetryAfter(Duration::ZERO)),
            (I, response(429, Some("garbage")), Backoff),
            (I, response(429, Some("31")), Done),
            (S, response(429, Some("1")), Done),
            (S, response(503, None), Done),
            (S, response(502, None), Done),
            // Logins: only what never left; their sender owns every other retry.
            (C, error(Connect), Backoff),
            (C, error(Timeout), Done),
            (C, response(503, None), Done),
            (C, response(429, Some("1")), Done),
        ];
        for (safety, outcome, expected) in cases {
            let got = retry.verdict(safety, &outcome, now);
            assert_eq!(got, expected, "{safety:?} {}", describe(&outcome));
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy::default()
            .base_delay(Duration::from_millis(100))
            .max_delay(Duration::from_millis(1000));
        let ceilings: Vec<u64> = (0..6)
            .map(|retry| policy.backoff_ceiling(retry).as_millis() as u64)
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(
            policy.backoff_ceiling(u32::MAX),
            Duration::from_millis(1000)
        );
    }

    #[test]
    fn jitter_stays_within_the_ceiling_and_varies() {
        let policy = RetryPolicy::default()
            .base_delay(Duration::from_millis(100))
            .max_delay(Duration::from_secs(10));
        let draws: Vec<Duration> = (0..200).map(|_| policy.backoff().jittered(3)).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_millis(800)));
        let distinct: std::collections::HashSet<_> = draws.iter().collect();
        assert!(
            distinct.len() > 50,
            "full jitter should spread delays, got {}",
            distinct.len()
        );
    }

    /// A private extension, standing for whatever a caller's layers attach to a request.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Tag(&'static str);

    /// Every re-send is the caller's request, whole: method, URI, version, headers, body and
    /// every extension, not only the ones `Retry` knows about.
    #[tokio::test]
    async fn resends_carry_the_whole_request() {
        use std::sync::{Arc, Mutex};
        let seen: Arc<Mutex<Vec<HttpRequest>>> = Arc::default();
        let log = Arc::clone(&seen);
        let inner = move |request: HttpRequest| {
            let log = Arc::clone(&log);
            async move {
                let first = {
                    let mut log = log.lock().unwrap();
                    log.push(request);
                    log.len() == 1
                };
                let status = if first { 503 } else { 200 };
                Ok::<_, TransportError>(
                    http::Response::builder()
                        .status(status)
                        .body(Bytes::new())
                        .unwrap(),
                )
            }
        };
        let policy = RetryPolicy::default().base_delay(Duration::ZERO);
        let retry = Retry::new(inner, policy);
        let mut request = http::Request::post("https://example.my.salesforce.com/x?y=1")
            .version(http::Version::HTTP_2)
            .header("authorization", "Bearer t")
            .header("x-two", "a")
            .header("x-two", "b")
            .body(Bytes::from_static(b"k=v"))
            .unwrap();
        request.extensions_mut().insert(RetrySafety::Idempotent);
        request.extensions_mut().insert(Tag("kept"));
        let response = retry.send(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        for sent in seen.iter() {
            assert_eq!(sent.method(), http::Method::POST);
            assert_eq!(sent.uri(), "https://example.my.salesforce.com/x?y=1");
            assert_eq!(sent.version(), http::Version::HTTP_2);
            assert_eq!(sent.headers(), seen[0].headers());
            assert_eq!(sent.headers().get_all("x-two").iter().count(), 2);
            assert_eq!(sent.body(), &Bytes::from_static(b"k=v"));
            assert_eq!(sent.extensions().get::<Tag>(), Some(&Tag("kept")));
            assert_eq!(RetrySafety::of(sent), RetrySafety::Idempotent);
        }
    }

    #[test]
    fn at_least_one_attempt() {
        assert_eq!(RetryPolicy::default().max_attempts(0).attempts(), 1);
    }
}
