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
