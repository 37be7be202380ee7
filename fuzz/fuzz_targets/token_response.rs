//! Any bytes from the token endpoint, under any content type and status: the client answers
//! with a token set or a typed error, never a panic; no error text holds the request's refresh
//! token; a token set that parsed hides its secrets in `Debug` and loads back from its stored
//! form (`sfauth_fuzz::check_token_set`).
//!
//! The three formats are told apart by the content type or sniffed from the first byte, so
//! JSON, urlencoded and XML bodies all reach their parsers from here; `token_formats` builds
//! well-formed responses in each format and checks that they read alike.

#![no_main]

use std::sync::LazyLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sfauth_core::format::ResponseFormat;
use sfauth_core::http::{HttpRequest, HttpResponse, TransportError};
use sfauth_core::{ConnectedApp, LoginHost, OAuthClient, RefreshToken};

const CONTENT_TYPES: [Option<&str>; 6] = [
    None,
    Some("application/json"),
    Some("application/json; charset=UTF-8"),
    Some("application/x-www-form-urlencoded"),
    Some("application/xml"),
    Some("text/html"),
];
const STATUSES: [u16; 6] = [200, 302, 400, 401, 429, 503];
const REFRESH: &str = "5Aep861FUZZREFRESHTOKEN";

// Built once, not per input: it holds no state between calls that an input could change, and
// building it for every input spent the run's time on setup instead of on the parser.
static CLIENT: LazyLock<OAuthClient> = LazyLock::new(|| {
    OAuthClient::new(
        LoginHost::Production,
        ConnectedApp::new("3MVG9.fuzz").with_secret("fuzz-secret"),
    )
    .with_format(ResponseFormat::Json)
});

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(selector % 6)];
    let status = STATUSES[usize::from(selector / 6 % 6)];
    let body = Bytes::copy_from_slice(body);
    let transport = move |_request: HttpRequest| {
        let mut builder = http::Response::builder().status(status);
        if let Some(content_type) = content_type {
            builder = builder.header("content-type", content_type);
        }
        let response: Result<HttpResponse, TransportError> =
            builder.body(body.clone()).map_err(|e| {
                TransportError::new(sfauth_core::http::TransportErrorKind::Other, e.to_string())
            });
        async move { response }
    };
    match sfauth_fuzz::runtime().block_on(CLIENT.refresh(&transport, &RefreshToken::new(REFRESH))) {
        Ok(tokens) => sfauth_fuzz::check_token_set(&tokens),
        Err(error) => {
            let text = format!("{error} {error:?}");
            assert!(
                !text.contains(REFRESH),
                "the refresh token leaked into an error"
            );
            let _ = error.kind();
        }
    }
});
