//! Property tests: the response parsers never panic, whatever the bytes, and the JSON,
//! urlencoded and XML encodings of one token response parse to equal token sets.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] functions panic on unexpected input by design"
)]

use bytes::Bytes;
use proptest::prelude::*;
use sfauth_core::format::ResponseFormat;
use sfauth_core::http::{HttpRequest, HttpResponse, TransportError};
use sfauth_core::{ConnectedApp, Error, LoginHost, OAuthClient, RefreshToken, TokenSet};

fn run(content_type: Option<&'static str>, status: u16, body: Vec<u8>) -> Result<TokenSet, Error> {
    let transport = move |_request: HttpRequest| {
        let mut builder = http::Response::builder().status(status);
        if let Some(content_type) = content_type {
            builder = builder.header("content-type", content_type);
        }
        let response: HttpResponse = builder.body(Bytes::from(body.clone())).unwrap();
        async move { Ok::<_, TransportError>(response) }
    };
    let client = OAuthClient::new(
        LoginHost::Production,
        ConnectedApp::new("3MVG9.key").with_secret("s"),
    )
    .with_format(ResponseFormat::Json);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(client.refresh(&transport, &RefreshToken::new("5Aep")))
}

const CONTENT_TYPES: [Option<&str>; 5] = [
    None,
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    Some("application/xml"),
    Some("text/html"),
];

proptest! {
    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        content_type in 0..CONTENT_TYPES.len(),
        status in prop_oneof![Just(200u16), Just(400u16), Just(401u16), Just(503u16)],
    ) {
        let result = run(CONTENT_TYPES[content_type], status, body);
        // Arbitrary bytes are almost never a valid token response; either way, no panic.
        if let Err(error) = result {
            let _ = (error.kind(), error.to_string(), format!("{error:?}"));
        }
    }

    #[test]
    fn parsers_never_panic_on_structured_garbage(
        prefix in prop_oneof![Just("{"), Just("<OAuth>"), Just("access_token="), Just("[")],
        rest in "[ -~]{0,200}",
        content_type in 0..CONTENT_TYPES.len(),
    ) {
        let _ = run(CONTENT_TYPES[content_type], 200, format!("{prefix}{rest}").into_bytes());
    }

    #[test]
    fn three_encodings_parse_to_equal_token_sets(
        access in "[A-Za-z0-9!._]{10,60}",
        refresh in proptest::option::of("[A-Za-z0-9._]{10,40}"),
        scope in proptest::option::of("[a-z_]{2,10}( [a-z_]{2,10}){0,3}"),
        issued_at in 1_000_000_000_000u64..2_000_000_000_000u64,
        host in "[a-z]{1,10}",
        community_id in proptest::option::of("[A-Za-z0-9]{15}"),
    ) {
        let mut fields = vec![
            ("access_token", access),
            ("instance_url", format!("https://{host}.my.salesforce.com")),
            ("id", "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK".to_owned()),
            ("issued_at", issued_at.to_string()),
        ];
        fields.extend(refresh.map(|r| ("refresh_token", r)));
        fields.extend(scope.map(|s| ("scope", s)));
        fields.extend(community_id.map(|c| ("sfdc_community_id", c)));
        let json: serde_json::Map<String, serde_json::Value> =
            fields.iter().map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(v.clone()))).collect();
        let json = serde_json::to_vec(&json).unwrap();
        let form = serde_urlencoded::to_string(&fields).unwrap().into_bytes();
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><OAuth>{}</OAuth>",
            fields.iter().map(|(k, v)| format!("<{k}>{v}</{k}>")).collect::<String>()
        )
        .into_bytes();
        let from_json = run(Some("application/json"), 200, json).unwrap();
        let from_form = run(Some("application/x-www-form-urlencoded"), 200, form).unwrap();
        let from_xml = run(Some("application/xml"), 200, xml).unwrap();
        prop_assert_eq!(&from_json, &from_form);
        prop_assert_eq!(&from_json, &from_xml);
    }
}
