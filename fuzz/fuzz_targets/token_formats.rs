//! One token endpoint answer, built from fuzzed fields, sent in each of Salesforce's three
//! formats (JSON, urlencoded, XML) and, for a success, as a user-agent redirect fragment: every
//! carrier reads alike (the same token set, or errors of the same kind), a token set that
//! parsed hides its secrets and loads back from its stored form, and no error shows any part
//! of the access or refresh token.
//!
//! `token_response` feeds raw bytes to the same parsers; this target reaches what lies behind
//! a well-formed body (the identity URL, the expiry arithmetic, the signature check, the error
//! classification) far more often, and compares the formats with each other.

#![no_main]

use std::collections::BTreeSet;
use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use sfauth_core::http::{HttpRequest, HttpResponse, TransportError, TransportErrorKind};
use sfauth_core::{ConnectedApp, ExpirySource, LoginHost, OAuthClient, RefreshToken, TokenSet};

/// Random-looking, so that no fixed text of an error message holds a run of it by chance.
const ACCESS: &str = "00DFz9QkWx7Rb2!AQ4AQHx7mLpW2vR8tYc3nBjE5uGs";
const REFRESH: &str = "5Aep861Tq8ZrWk3Lm9XcVb2Nj7HgFd4Sa6PoIu1Ye0Rw";
/// The refresh token the client sends; the answer may rotate it to `REFRESH`.
const SENT: &str = "5Aep861SENTvQ3mZ8kLr2Wx9Tb4Nc7Hy";
const STATE: &str = "fuzz-state";
const REDIRECT: &str = "myapp://oauth/done";
/// How many characters of a secret in a row count as a leak; also the shortest secret sent, as
/// a shorter one could not be told from text that merely looks like it.
const LEAK_WINDOW: usize = 8;

const STATUSES: [u16; 6] = [200, 200, 400, 401, 500, 503];
const HOSTS: [&str; 4] = [
    "https://login.salesforce.com",
    "https://test.salesforce.com",
    "https://acme.my.salesforce.com",
    "http://localhost:8080",
];

#[derive(Arbitrary, Debug)]
struct Input {
    status: u8,
    /// Secrets are fixed (so that a leak can be told from an echo) but their length is not:
    /// short secrets are what a redaction by length lets through.
    access_len: Option<u8>,
    refresh_len: Option<u8>,
    numbers_as_json_numbers: bool,
    with_secret: bool,
    session_timeout_secs: Option<u64>,
    fields: Vec<(Name, Value)>,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    Id,
    InstanceUrl,
    IssuedAt,
    Signature,
    Scope,
    TokenType,
    IdToken,
    ExpiresIn,
    CommunityUrl,
    CommunityId,
    ApiInstanceUrl,
    Error,
    ErrorDescription,
    ErrorUri,
    State,
    Other(u8),
}

impl Name {
    fn as_str(self) -> String {
        match self {
            Self::Id => "id".into(),
            Self::InstanceUrl => "instance_url".into(),
            Self::IssuedAt => "issued_at".into(),
            Self::Signature => "signature".into(),
            Self::Scope => "scope".into(),
            Self::TokenType => "token_type".into(),
            Self::IdToken => "id_token".into(),
            Self::ExpiresIn => "expires_in".into(),
            Self::CommunityUrl => "sfdc_community_url".into(),
            Self::CommunityId => "sfdc_community_id".into(),
            Self::ApiInstanceUrl => "api_instance_url".into(),
            Self::Error => "error".into(),
            Self::ErrorDescription => "error_description".into(),
            Self::ErrorUri => "error_uri".into(),
            Self::State => "state".into(),
            Self::Other(n) => format!("x_field_{n}"),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Value {
    Text(String),
    Number(u64),
    /// An identity URL on one of the hosts, with fuzzed ids.
    Identity(u8, String, String),
    /// A URL on one of the hosts, with a fuzzed path.
    Url(u8, String),
    /// A JWT-shaped value whose payload holds `exp`.
    JwtExp(u64),
    /// One of the token endpoint's error codes.
    ErrorCode(u8),
}

const ERROR_CODES: [&str; 8] = [
    "invalid_grant",
    "invalid_client",
    "invalid_client_id",
    "unsupported_grant_type",
    "inactive_user",
    "inactive_org",
    "rate_limit_exceeded",
    "invalid_request",
];

impl Value {
    /// The value as sent. Trimmed and without control characters: XML trims its text and has no
    /// way to carry most control characters, and that is a property of the format, not a bug.
    fn render(&self) -> String {
        let text = match self {
            Self::Text(text) => text.clone(),
            Self::Number(n) => n.to_string(),
            Self::Identity(host, org, user) => {
                format!(
                    "{}/id/{org}/{user}",
                    HOSTS[usize::from(*host) % HOSTS.len()]
                )
            }
            Self::Url(host, path) => format!("{}/{path}", HOSTS[usize::from(*host) % HOSTS.len()]),
            Self::JwtExp(exp) => {
                use base64::Engine as _;
                let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(format!(r#"{{"exp":{exp}}}"#));
                format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln")
            }
            Self::ErrorCode(n) => ERROR_CODES[usize::from(*n) % ERROR_CODES.len()].into(),
        };
        text.chars()
            .filter(|c| !c.is_control())
            .collect::<String>()
            .trim()
            .to_owned()
    }
}

static CLIENTS: LazyLock<[ConnectedApp; 2]> = LazyLock::new(|| {
    let app = ConnectedApp::new("3MVG9.fuzz")
        .with_redirect_uri(REDIRECT)
        .expect("a valid redirect uri");
    [app.clone(), app.with_secret("fuzz-client-secret")]
});

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn json_body(fields: &[(String, String)], numbers: bool) -> String {
    let object: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(name, value)| {
            let value = match value.parse::<u64>() {
                Ok(n) if numbers && n.to_string() == *value => serde_json::Value::from(n),
                _ => serde_json::Value::from(value.as_str()),
            };
            (name.clone(), value)
        })
        .collect();
    serde_json::Value::Object(object).to_string()
}

fn xml_body(fields: &[(String, String)]) -> String {
    let mut body = String::from(r#"<?xml version="1.0" encoding="UTF-8"?><OAuth>"#);
    for (name, value) in fields {
        body.push_str(&format!("<{name}>{}</{name}>", xml_escape(value)));
    }
    body.push_str("</OAuth>");
    body
}

fn respond(
    client: &OAuthClient,
    status: u16,
    content_type: &'static str,
    body: String,
) -> Result<TokenSet, sfauth_core::Error> {
    let body = Bytes::from(body);
    let transport = move |_request: HttpRequest| {
        let response: Result<HttpResponse, TransportError> = http::Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(body.clone())
            .map_err(|e| TransportError::new(TransportErrorKind::Other, e.to_string()));
        async move { response }
    };
    sfauth_fuzz::runtime().block_on(client.refresh(&transport, &RefreshToken::new(SENT)))
}

/// Two reads of one answer agree. An expiry counted from the moment of parsing (no
/// `issued_at`) differs between two reads by the time between them, so only its source is
/// compared then.
fn assert_same(a: &TokenSet, b: &TokenSet, what: &str) {
    let counted_from_now = a.issued_at.is_none()
        && matches!(
            a.expiry_source,
            Some(ExpirySource::ExpiresIn | ExpirySource::SessionTimeout)
        );
    if counted_from_now {
        let (mut a, mut b) = (a.clone(), b.clone());
        assert_eq!(a.expiry_source, b.expiry_source, "{what}: expiry source");
        a.expires_at = None;
        b.expires_at = None;
        assert_eq!(a, b, "{what}");
    } else {
        assert_eq!(a, b, "{what}");
    }
}

fuzz_target!(|input: Input| {
    let status = STATUSES[usize::from(input.status) % STATUSES.len()];
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut seen = BTreeSet::new();
    if let Some(len) = input.access_len {
        let len = LEAK_WINDOW + usize::from(len) % (ACCESS.len() - LEAK_WINDOW + 1);
        fields.push(("access_token".into(), ACCESS[..len].into()));
        seen.insert("access_token".to_owned());
    }
    if let Some(len) = input.refresh_len {
        let len = LEAK_WINDOW + usize::from(len) % (REFRESH.len() - LEAK_WINDOW + 1);
        fields.push(("refresh_token".into(), REFRESH[..len].into()));
        seen.insert("refresh_token".to_owned());
    }
    for (name, value) in &input.fields {
        let name = name.as_str();
        // One value per name: formats differ on which of several they keep, and Salesforce
        // never repeats a field.
        if seen.insert(name.clone()) {
            fields.push((name, value.render()));
        }
    }
    let secrets: Vec<(&str, &str)> = fields
        .iter()
        .filter_map(|(name, value)| match name.as_str() {
            "access_token" => Some(("the access token", value.as_str())),
            "refresh_token" => Some(("the refresh token", value.as_str())),
            _ => None,
        })
        .collect();
    // A field that itself holds a run of a secret (as it is, or as `Debug` escapes it) would
    // make an honest echo of it look like a leak; such inputs are not checked for leaks.
    let leaks_checkable = secrets.iter().all(|(_, secret)| {
        fields
            .iter()
            .filter(|(name, _)| name != "access_token" && name != "refresh_token")
            .all(|(name, value)| {
                let echo = sfauth_fuzz::quoted_forms(&format!("{name} {value}"));
                sfauth_fuzz::secret_run_in(&echo, secret, LEAK_WINDOW).is_none()
            })
    });

    let app = CLIENTS[usize::from(input.with_secret)].clone();
    let mut client = OAuthClient::new(LoginHost::Production, app);
    if let Some(secs) = input.session_timeout_secs {
        client = client.with_session_timeout(Duration::from_secs(secs));
    }

    let json = respond(
        &client,
        status,
        "application/json",
        json_body(&fields, input.numbers_as_json_numbers),
    );
    let urlencoded = respond(
        &client,
        status,
        "application/x-www-form-urlencoded",
        serde_urlencoded::to_string(&fields).expect("pairs of strings encode"),
    );
    let xml = respond(&client, status, "application/xml", xml_body(&fields));

    for (format, result) in [("json", &json), ("urlencoded", &urlencoded), ("xml", &xml)] {
        match result {
            Ok(tokens) => {
                sfauth_fuzz::check_token_set(tokens);
                assert_eq!(
                    tokens.access_token.expose_secret(),
                    fields
                        .iter()
                        .find(|(name, _)| name == "access_token")
                        .map(|(_, value)| value.as_str())
                        .unwrap_or_default(),
                    "{format}: the access token is not the one sent"
                );
            }
            Err(error) if leaks_checkable => {
                let text = format!("{error} {error:?}");
                for (what, secret) in &secrets {
                    sfauth_fuzz::assert_no_secret_in(&text, secret, LEAK_WINDOW, what);
                }
                sfauth_fuzz::assert_no_secret_in(
                    &text,
                    SENT,
                    LEAK_WINDOW,
                    "the sent refresh token",
                );
            }
            Err(_) => {}
        }
    }
    match (&json, &urlencoded, &xml) {
        (Ok(json), Ok(urlencoded), Ok(xml)) => {
            assert_same(json, urlencoded, "json and urlencoded read differently");
            assert_same(json, xml, "json and xml read differently");
        }
        (Err(a), Err(b), Err(c)) => {
            assert_eq!(
                a.kind(),
                b.kind(),
                "json and urlencoded fail differently: {a} / {b}"
            );
            assert_eq!(
                a.kind(),
                c.kind(),
                "json and xml fail differently: {a} / {c}"
            );
        }
        _ => panic!(
            "the formats disagree: json {:?}, urlencoded {:?}, xml {:?}",
            json.as_ref().map(|_| "ok"),
            urlencoded.as_ref().map(|_| "ok"),
            xml.as_ref().map(|_| "ok")
        ),
    }

    // A user-agent redirect carries the same fields in its fragment, with the state.
    if let Ok(expected) = &json
        && !seen.contains("state")
        && !seen.contains("error")
    {
        let mut with_state = fields.clone();
        with_state.push(("state".into(), STATE.into()));
        let fragment = serde_urlencoded::to_string(&with_state).expect("pairs of strings encode");
        let redirect = url::Url::parse(&format!("{REDIRECT}#{fragment}")).expect("a redirect url");
        match client.parse_fragment(&redirect, STATE) {
            Ok(tokens) => {
                // A refresh answered without a refresh token keeps the one it sent (no
                // rotation); a redirect has only what its fragment carries.
                let mut expected = expected.clone();
                if !seen.contains("refresh_token") {
                    expected.refresh_token = None;
                }
                assert_same(&expected, &tokens, "a fragment reads differently");
            }
            Err(error) => {
                panic!("a fragment fails where the token endpoint's answer parsed: {error}")
            }
        }
    }
});
