//! ID token validation (`OAuthClient::validate_id_token`, which fetches the JWKS and hands it to
//! `validate_id_token_with_jwks`) on any token and any JWKS document: a validated token or a
//! typed error, never a panic, and never the token in an error.
//!
//! The JWKS is served as bytes through a closure transport rather than passed as a
//! `jsonwebtoken::jwk::JwkSet`, so this crate's jsonwebtoken (used only to sign test tokens) need
//! not be the version sfauth-core validates with.
//!
//! Three kinds of input: any text as a token against the fixture JWKS; any JWKS document with
//! any token; and fuzzed claims signed with the fixture's private key, so that the checks behind
//! the signature (audience, issuer, expiry, nonce, the claims' types) are reached at all. For
//! those the outcome is checked both ways: a token that validates carries the claims that were
//! signed and passes every documented check, and a token that meets every check validates.

#![no_main]

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use sfauth_core::flows::IdTokenCheck;
use sfauth_core::http::{HttpRequest, HttpResponse, TransportError};
use sfauth_core::{ConnectedApp, IdToken, LoginHost, OAuthClient};

const CLIENT_ID: &str = "3MVG9.fuzz";
const ISSUER: &str = "https://login.salesforce.com";
/// The `kid` of the fixture JWKS's only key.
const KID: &str = "230";

// sfauth-core's own fixture: the JWKS was made with openssl from this key.
static PEM: &[u8] = include_bytes!("../../crates/sfauth-core/tests/fixtures/jwt_key.pem");
static JWKS_JSON: &str = include_str!("../../crates/sfauth-core/tests/fixtures/jwks.json");

static KEY: LazyLock<EncodingKey> =
    LazyLock::new(|| EncodingKey::from_rsa_pem(PEM).expect("the fixture key"));
static CLIENT: LazyLock<OAuthClient> =
    LazyLock::new(|| OAuthClient::new(LoginHost::Production, ConnectedApp::new(CLIENT_ID)));

#[derive(Arbitrary, Debug)]
enum Input {
    Raw(String),
    Jwks { jwks: String, token: String },
    Signed(Signed),
}

#[derive(Arbitrary, Debug)]
struct Signed {
    kid: Kid,
    sub: Option<Claim>,
    iss: Option<Claim>,
    aud: Option<Claim>,
    exp: Option<Claim>,
    iat: Option<Claim>,
    nonce: Option<Claim>,
    expected_nonce: Option<String>,
    extra: Vec<(String, Claim)>,
}

#[derive(Arbitrary, Debug)]
enum Kid {
    None,
    Fixture,
    Other(String),
}

#[derive(Arbitrary, Debug, Clone)]
enum Claim {
    Text(String),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Bool(bool),
    Null,
    List(Vec<String>),
    /// Now plus this many seconds, for `exp` and `iat`.
    FromNow(i32),
    /// This app's client id, as a string or in a list.
    ClientId(bool),
    /// The login host, the issuer a default check accepts.
    Issuer,
    /// The expected nonce, if there is one.
    ExpectedNonce,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Claim {
    fn json(&self, now: i64, expected_nonce: Option<&str>) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Self::Text(text) => Value::from(text.as_str()),
            Self::Unsigned(n) => Value::from(*n),
            Self::Signed(n) => Value::from(*n),
            Self::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Self::Bool(b) => Value::from(*b),
            Self::Null => Value::Null,
            Self::List(items) => Value::from(items.clone()),
            Self::FromNow(delta) => Value::from(now.saturating_add(i64::from(*delta))),
            Self::ClientId(false) => Value::from(CLIENT_ID),
            Self::ClientId(true) => Value::from(vec![CLIENT_ID]),
            Self::Issuer => Value::from(ISSUER),
            Self::ExpectedNonce => expected_nonce.map_or(Value::Null, Value::from),
        }
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw(token) => {
            validate(JWKS_JSON.as_bytes(), &token, &IdTokenCheck::default());
        }
        Input::Jwks { jwks, token } => {
            validate(jwks.as_bytes(), &token, &IdTokenCheck::default());
        }
        Input::Signed(signed) => signed_token(&signed),
    }
});

/// Validates `token`; an error never shows it.
fn validate(
    jwks: &[u8],
    token: &str,
    check: &IdTokenCheck,
) -> Option<sfauth_core::flows::IdTokenClaims> {
    let served = Bytes::copy_from_slice(jwks);
    let transport = move |_request: HttpRequest| {
        let response = Ok::<_, TransportError>(HttpResponse::new(served.clone()));
        async move { response }
    };
    let validated = sfauth_fuzz::runtime().block_on(CLIENT.validate_id_token(
        &transport,
        &IdToken::new(token),
        check,
    ));
    match validated {
        Ok(claims) => Some(claims),
        Err(error) => {
            let text = format!("{error} {error:?}");
            // The JWKS document is not a secret and errors may quote it (escaped, in `Debug`); a
            // token that shares a run with it would make an honest quote look like a leak, so
            // such inputs are not checked for leaks.
            let jwks_echo = sfauth_fuzz::quoted_forms(&String::from_utf8_lossy(jwks));
            if token.len() >= 16 && sfauth_fuzz::secret_run_in(&jwks_echo, token, 16).is_none() {
                sfauth_fuzz::assert_no_secret_in(&text, token, 16, "the id token");
            }
            assert_eq!(error.kind(), sfauth_core::ErrorKind::Protocol, "{error}");
            None
        }
    }
}

fn signed_token(signed: &Signed) {
    let now = now();
    let expected_nonce = signed.expected_nonce.as_deref();
    let mut claims = serde_json::Map::new();
    let named = [
        ("sub", &signed.sub),
        ("iss", &signed.iss),
        ("aud", &signed.aud),
        ("exp", &signed.exp),
        ("iat", &signed.iat),
        ("nonce", &signed.nonce),
    ];
    for (name, claim) in named {
        if let Some(claim) = claim {
            claims.insert(name.to_owned(), claim.json(now, expected_nonce));
        }
    }
    for (name, claim) in &signed.extra {
        claims
            .entry(name.clone())
            .or_insert_with(|| claim.json(now, expected_nonce));
    }
    let mut header = Header::new(Algorithm::RS256);
    header.kid = match &signed.kid {
        Kid::None => None,
        Kid::Fixture => Some(KID.to_owned()),
        Kid::Other(kid) => Some(kid.clone()),
    };
    let Ok(token) = jsonwebtoken::encode(&header, &serde_json::Value::Object(claims.clone()), &KEY)
    else {
        return;
    };
    let check = IdTokenCheck {
        nonce: signed.expected_nonce.clone(),
        ..IdTokenCheck::default()
    };
    let result = validate(JWKS_JSON.as_bytes(), &token, &check);

    let get = |name: &str| claims.get(name);
    let is_client = |aud: &serde_json::Value| match aud {
        serde_json::Value::String(aud) => aud == CLIENT_ID,
        serde_json::Value::Array(auds) => auds.iter().any(|aud| aud == CLIENT_ID),
        _ => false,
    };
    if let Some(validated) = &result {
        assert_eq!(
            Some(&serde_json::Value::from(validated.sub.as_str())),
            get("sub")
        );
        assert_eq!(
            Some(&serde_json::Value::from(validated.iss.as_str())),
            get("iss")
        );
        assert_eq!(validated.iss, ISSUER, "an issuer the check does not accept");
        assert!(
            is_client(&validated.aud),
            "an audience other than this client"
        );
        assert_eq!(
            get("exp").and_then(serde_json::Value::as_u64),
            Some(validated.exp)
        );
        let exp = i64::try_from(validated.exp).unwrap_or(i64::MAX);
        assert!(exp.saturating_add(60) >= now, "an expired token validates");
        if let Some(nonce) = expected_nonce {
            assert_eq!(
                validated.nonce.as_deref(),
                Some(nonce),
                "a wrong nonce validates"
            );
        }
        assert!(
            matches!(signed.kid, Kid::None | Kid::Fixture),
            "a token of another key validates"
        );
    }

    // Every documented check met, with claims of the documented types: it must validate. `nbf`
    // is left out (it has rules of its own), and so is a nonce that is not a string.
    let meets_every_check = matches!(signed.kid, Kid::None | Kid::Fixture)
        && get("sub").is_some_and(serde_json::Value::is_string)
        && get("iss").is_some_and(|iss| iss == ISSUER)
        && get("aud").is_some_and(is_client)
        && get("exp")
            .and_then(serde_json::Value::as_u64)
            .is_some_and(|exp| i64::try_from(exp).is_ok_and(|exp| exp >= now.saturating_add(120)))
        && get("iat").is_none_or(|iat| iat.is_null() || iat.is_u64())
        && get("nonce").is_none_or(|nonce| nonce.is_null() || nonce.is_string())
        && expected_nonce
            .is_none_or(|expected| get("nonce").is_some_and(|nonce| nonce == expected))
        && !claims.contains_key("nbf");
    if meets_every_check {
        assert!(
            result.is_some(),
            "a token that meets every check is refused: {claims:?}"
        );
    }
}
