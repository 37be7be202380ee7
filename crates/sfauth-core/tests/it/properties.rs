//! Property tests: the response parsers never panic, whatever the bytes; the JSON,
//! urlencoded and XML encodings of one token response parse to equal token sets; and no number
//! in a token response (or a configured session timeout) can panic the parse or lose the
//! refresh token it carries.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] functions panic on unexpected input by design"
)]

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use proptest::prelude::*;
use sfauth_core::format::ResponseFormat;
use sfauth_core::http::{HttpRequest, HttpResponse, TransportError};
use sfauth_core::{ConnectedApp, Error, LoginHost, OAuthClient, RefreshToken, TokenSet};

fn run(content_type: Option<&'static str>, status: u16, body: Vec<u8>) -> Result<TokenSet, Error> {
    let client = OAuthClient::new(
        LoginHost::Production,
        ConnectedApp::new("3MVG9.key").with_secret("s"),
    )
    .with_format(ResponseFormat::Json);
    run_with(&client, content_type, status, body)
}

fn run_with(
    client: &OAuthClient,
    content_type: Option<&'static str>,
    status: u16,
    body: Vec<u8>,
) -> Result<TokenSet, Error> {
    let transport = move |_request: HttpRequest| {
        let mut builder = http::Response::builder().status(status);
        if let Some(content_type) = content_type {
            builder = builder.header("content-type", content_type);
        }
        let response: HttpResponse = builder.body(Bytes::from(body.clone())).unwrap();
        async move { Ok::<_, TransportError>(response) }
    };
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

    /// Issue 11, defect 1: whatever `expires_in`, `issued_at`, JWT `exp` and session timeout
    /// say, in whichever format, the refresh succeeds with the rotated refresh token and an
    /// expiry no later than a day from now.
    #[test]
    fn numbers_never_panic_or_lose_the_refresh_token(
        expires_in in proptest::option::of(prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            "[-+]?[0-9]{1,30}",
            "[-+0-9a-z. ]{0,12}",
        ]),
        issued_at in proptest::option::of(prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            "[-+]?[0-9]{1,30}",
        ]),
        exp in proptest::option::of(prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            "-?[0-9]{1,30}(\\.[0-9]{1,3})?",
        ]),
        timeout in proptest::option::of(prop_oneof![
            any::<u64>().prop_map(Duration::from_secs),
            Just(Duration::MAX),
            Just(Duration::ZERO),
        ]),
        format in 0..3usize,
    ) {
        let access_token = match &exp {
            Some(exp) => format!(
                "eyJhbGciOiJub25lIn0.{}.c2ln",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{exp}}}"#))
            ),
            None => "00D5e000000Abcd!AQ4AQ".to_owned(),
        };
        let mut fields = vec![
            ("access_token", access_token),
            ("refresh_token", "5Aep861Rotated".to_owned()),
            ("instance_url", "https://acme.my.salesforce.com".to_owned()),
            ("id", "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK".to_owned()),
        ];
        fields.extend(expires_in.map(|v| ("expires_in", v)));
        fields.extend(issued_at.map(|v| ("issued_at", v)));
        let (content_type, body) = match format {
            0 => {
                let json: serde_json::Map<String, serde_json::Value> = fields
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(v.clone())))
                    .collect();
                ("application/json", serde_json::to_vec(&json).unwrap())
            }
            1 => (
                "application/x-www-form-urlencoded",
                serde_urlencoded::to_string(&fields).unwrap().into_bytes(),
            ),
            _ => (
                "application/xml",
                format!(
                    "<OAuth>{}</OAuth>",
                    fields.iter().map(|(k, v)| format!("<{k}>{v}</{k}>")).collect::<String>()
                )
                .into_bytes(),
            ),
        };
        let mut client = OAuthClient::new(
            LoginHost::Production,
            ConnectedApp::new("3MVG9.key").with_secret("s"),
        );
        if let Some(timeout) = timeout {
            client = client.with_session_timeout(timeout);
        }
        let tokens = run_with(&client, Some(content_type), 200, body).unwrap();
        let after = SystemTime::now();
        let refresh_token = tokens.refresh_token.unwrap();
        prop_assert_eq!(refresh_token.expose_secret(), "5Aep861Rotated");
        if let Some(at) = tokens.expires_at {
            prop_assert!(at <= after + Duration::from_secs(86_400), "{:?}", at);
        }
    }

    /// The scrubber takes any text (any Unicode, any bytes as an excerpt) without panicking,
    /// and a secret in any of the shapes it knows never survives, whatever surrounds it.
    #[test]
    fn the_scrubber_never_panics_and_never_lets_a_named_secret_through(
        noise in "\\PC{0,80}",
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        secret in "[A-Za-z0-9!._%~+/-]{0,40}",
        name in prop_oneof![
            Just("access_token"), Just("refresh_token"), Just("client_secret"), Just("password"),
            Just("assertion"), Just("code"), Just("code_verifier"), Just("subject_token"),
            Just("Access_Token"), Just("id_token"), Just("token"),
        ],
        shape in 0..5usize,
    ) {
        // A prefix no template text contains, so that finding the secret means it leaked.
        let secret = format!("Zq{secret}");
        let _ = sfauth_core::redact::scrub(&noise);
        let _ = sfauth_core::redact::excerpt(&bytes);
        let named = match shape {
            0 => format!("{noise} x=1&{name}={secret}&y=2"),
            1 => format!(r#"{{"{name}": "{secret}", "n": "{noise}"}}"#),
            2 => format!("<{name}>{secret}</{name}>{noise}"),
            3 => format!("{noise}?{name}={secret}#frag"),
            _ => format!("Authorization: Bearer {secret}\r\n{noise}"),
        };
        let out = sfauth_core::redact::scrub(&named);
        // The value is gone from where it stood; only the noise around it may repeat it.
        let without_noise = out.replace(noise.as_str(), "");
        prop_assert!(!without_noise.contains(&secret), "{} -> {}", named, out);
    }
}
