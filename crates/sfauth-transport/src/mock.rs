//! [`MockHttpTransport`]: a mockall mock of `HttpTransport`, behind the `mock` feature.

use async_trait::async_trait;
use sfauth_core::http::{HttpRequest, HttpResponse, HttpTransport, TransportError};

mockall::mock! {
    /// A mockall mock of [`HttpTransport`], for tests that set expectations on the requests a
    /// piece of code sends (how many, in what order, with what body).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use sfauth_core::http::{HttpResponse, HttpTransport};
    /// use sfauth_transport::MockHttpTransport;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut mock = MockHttpTransport::new();
    /// mock.expect_send()
    ///     .withf(|request| request.uri().path() == "/services/oauth2/revoke")
    ///     .times(1)
    ///     .returning(|_| Ok(HttpResponse::new(Bytes::new())));
    /// let request = http::Request::post("https://login.salesforce.com/services/oauth2/revoke")
    ///     .body(Bytes::new())?;
    /// assert_eq!(mock.send(request).await?.status(), 200);
    /// # Ok(())
    /// # }
    /// ```
    pub HttpTransport {}

    #[async_trait]
    impl HttpTransport for HttpTransport {
        async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError>;
    }
}

/// The retry story at the wire: what `Retry` re-sends of what the flows of `sfauth-core` send,
/// counted by the mock's expectations rather than by hand.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use mockall::Sequence;
    use sfauth_core::http::{RetrySafety, TransportErrorKind};
    use sfauth_core::{ConnectedApp, ErrorKind, LoginHost, OAuthClient, Password, RefreshToken};

    use super::*;
    use crate::{Retry, RetryPolicy};

    fn client() -> OAuthClient {
        OAuthClient::new(
            LoginHost::my_domain("https://acme.my.salesforce.com").unwrap(),
            ConnectedApp::new("3MVG9.key").with_secret("app-secret"),
        )
    }

    fn answer(status: u16, body: &'static str) -> HttpResponse {
        http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Bytes::from_static(body.as_bytes()))
            .unwrap()
    }

    const TOKENS: &str = r#"{"access_token":"00D5e000000AbcdEAC!AQ4AQnew","refresh_token":"5Aep861new","instance_url":"https://acme.my.salesforce.com","id":"https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK","issued_at":"1700000000000","token_type":"Bearer"}"#;

    fn no_pause() -> RetryPolicy {
        RetryPolicy::default()
            .base_delay(Duration::ZERO)
            .max_delay(Duration::ZERO)
    }

    /// A refresh is single-use: one POST to the token endpoint with the refresh grant, and a
    /// bare 503 (which a gateway may send after Salesforce rotated the token) is never re-sent
    /// by the transport: the manager alone decides that, knowing what is at stake.
    #[tokio::test]
    async fn a_refresh_is_sent_once_and_a_503_is_not_resent() {
        let mut mock = MockHttpTransport::new();
        mock.expect_send()
            .withf(|request| {
                let body = String::from_utf8_lossy(request.body());
                request.method() == http::Method::POST
                    && request.uri() == "https://acme.my.salesforce.com/services/oauth2/token"
                    && RetrySafety::of(request) == RetrySafety::SingleUse
                    && body.contains("grant_type=refresh_token")
                    && body.contains("refresh_token=5Aep861old")
            })
            .times(1)
            .returning(|_| Ok(answer(503, "<html>Service Unavailable</html>")));
        let retry = Retry::new(mock, no_pause());
        let error = client()
            .refresh(&retry, &RefreshToken::new("5Aep861old"))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Transient);
        assert!(!format!("{error} {error:?}").contains("5Aep861old"));
    }

    /// A login that provably never left (connect refused) is re-sent, once it can be, and its
    /// answer parsed; a login that timed out is not (the caller retries, knowing the password
    /// may have been tried).
    #[tokio::test]
    async fn a_login_is_resent_only_when_it_never_left() {
        let mut mock = MockHttpTransport::new();
        let mut order = Sequence::new();
        mock.expect_send()
            .times(1)
            .in_sequence(&mut order)
            .returning(|_| Err(TransportError::new(TransportErrorKind::Connect, "refused")));
        mock.expect_send()
            .withf(|request| {
                String::from_utf8_lossy(request.body()).contains("grant_type=password")
            })
            .times(1)
            .in_sequence(&mut order)
            .returning(|_| Ok(answer(200, TOKENS)));
        let retry = Retry::new(mock, no_pause());
        let password = Password::new("hunter2TOKEN");
        let tokens = client()
            .password(&retry, "admin@acme.example", &password)
            .await
            .unwrap();
        assert_eq!(
            tokens.access_token.expose_secret(),
            "00D5e000000AbcdEAC!AQ4AQnew"
        );

        let mut mock = MockHttpTransport::new();
        mock.expect_send().times(1).returning(|_| {
            Err(TransportError::new(
                TransportErrorKind::Timeout,
                "no answer",
            ))
        });
        let retry = Retry::new(mock, no_pause());
        let error = client()
            .password(&retry, "admin@acme.example", &password)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Transient);
    }
}
