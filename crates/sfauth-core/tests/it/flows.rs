//! Wire-level tests of every flow: a scripted closure transport asserts the exact method, URL,
//! headers, form body and retry safety of each request and answers with a canned response from
//! `tests/fixtures/` (JSON, urlencoded, XML) or with one of the error bodies of §7 of the
//! protocol reference.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] functions panic on unexpected input by design"
)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sfauth_core::error::ServerError;
use sfauth_core::flows::{
    AuthorizeParams, DevicePoll, IdTokenCheck, JwtBearer, RevokeMethod, TokenExchange,
    TokenTypeHint, token_type,
};
use sfauth_core::format::ResponseFormat;
use sfauth_core::http::{
    HttpRequest, HttpResponse, HttpTransport, RetrySafety, TransportError, TransportErrorKind,
};
use sfauth_core::{
    AuthorizationCode, Cause, ClientAuth, ConnectedApp, Error, ErrorKind, ExpirySource, IdToken,
    LoginHost, OAuthClient, Password, PkceVerifier, PrivateKey, RefreshToken, SecretValue,
    TokenSet,
};

const CLIENT_ID: &str = "3MVG9FakeConsumerKey";
const SECRET: &str = "test-consumer-secret";
/// `printf '%s' '3MVG9FakeConsumerKey:test-consumer-secret' | base64`
const BASIC: &str = "Basic M01WRzlGYWtlQ29uc3VtZXJLZXk6dGVzdC1jb25zdW1lci1zZWNyZXQ=";
const PROD_TOKEN: &str = "https://login.salesforce.com/services/oauth2/token";
const REDIRECT: &str = "http://localhost:1717/OauthRedirect";
const ANY: &str = "<any>";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A text fixture with every `from` replaced by `to`.
fn fixture_replacing(name: &str, from: &str, to: &str) -> String {
    String::from_utf8(fixture(name)).unwrap().replace(from, to)
}

fn app() -> ConnectedApp {
    ConnectedApp::new(CLIENT_ID)
        .with_secret(SECRET)
        .with_redirect_uri(REDIRECT)
        .unwrap()
}

fn client() -> OAuthClient {
    OAuthClient::new(LoginHost::Production, app())
}

/// What one request must look like.
#[derive(Clone, Debug)]
struct Expect {
    method: &'static str,
    url: String,
    /// Headers that must be present with exactly this value.
    headers: Vec<(&'static str, String)>,
    /// Headers that must be absent.
    absent: Vec<&'static str>,
    /// The exact set of form fields; a value of [`ANY`] matches anything.
    form: Vec<(&'static str, String)>,
    safety: RetrySafety,
}

impl Expect {
    fn token(form: &[(&'static str, &str)], safety: RetrySafety) -> Self {
        Self {
            method: "POST",
            url: PROD_TOKEN.to_owned(),
            headers: vec![
                (
                    "content-type",
                    "application/x-www-form-urlencoded".to_owned(),
                ),
                ("accept", "application/json".to_owned()),
            ],
            absent: vec!["authorization"],
            form: form.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            safety,
        }
    }

    fn url(mut self, url: &str) -> Self {
        self.url = url.to_owned();
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.to_owned()));
        self.absent.retain(|n| *n != name);
        self
    }

    fn assert(&self, request: &HttpRequest) {
        assert_eq!(request.method().as_str(), self.method, "method");
        assert_eq!(request.uri().to_string(), self.url, "url");
        for (name, value) in &self.headers {
            assert_eq!(
                request.headers().get(*name).and_then(|v| v.to_str().ok()),
                Some(value.as_str()),
                "header {name}"
            );
        }
        for name in &self.absent {
            assert!(
                request.headers().get(*name).is_none(),
                "header {name} must be absent"
            );
        }
        assert_eq!(RetrySafety::of(request), self.safety, "retry safety");
        if let Some(authorization) = request.headers().get("authorization") {
            assert!(
                authorization.is_sensitive(),
                "authorization header must be marked sensitive"
            );
            let debug = format!("{:?}", request.headers());
            assert!(!debug.contains(authorization.to_str().unwrap()), "{debug}");
        }
        let mut form: Vec<(String, String)> = serde_urlencoded::from_bytes(request.body()).unwrap();
        form.sort();
        let mut expected = self.form.clone();
        expected.sort();
        let names =
            |pairs: &mut dyn Iterator<Item = &str>| pairs.map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            names(&mut form.iter().map(|(k, _)| k.as_str())),
            names(&mut expected.iter().map(|(k, _)| *k)),
            "form field names"
        );
        for ((name, value), (_, expected)) in form.iter().zip(&expected) {
            if expected != ANY {
                assert_eq!(value, expected, "form field {name}");
            }
        }
    }
}

/// A canned answer.
#[derive(Clone, Debug)]
struct Reply {
    status: u16,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
}

impl Reply {
    fn new(status: u16, content_type: Option<&'static str>, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self::new(status, Some("application/json;charset=UTF-8"), body)
    }

    fn fixture(name: &str) -> Self {
        let content_type = match name.rsplit('.').next() {
            Some("json") => "application/json;charset=UTF-8",
            Some("xml") => "application/xml;charset=UTF-8",
            _ => "application/x-www-form-urlencoded;charset=UTF-8",
        };
        Self::new(200, Some(content_type), fixture(name))
    }

    fn response(&self) -> HttpResponse {
        let mut builder = http::Response::builder().status(self.status);
        if let Some(content_type) = self.content_type {
            builder = builder.header("content-type", content_type);
        }
        for (name, value) in &self.headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Bytes::from(self.body.clone())).unwrap()
    }
}

/// A scripted exchange: each request must match the next step's [`Expect`] and gets its
/// [`Reply`]; dropping the script checks that every step was used.
/// One scripted step: the expectation (none for a transport failure) and the answer.
type Step = (Option<Expect>, Result<Reply, TransportErrorKind>);

struct Script(Arc<Mutex<VecDeque<Step>>>);

impl Script {
    fn new(steps: Vec<(Expect, Reply)>) -> Self {
        Self(Arc::new(Mutex::new(
            steps.into_iter().map(|(e, r)| (Some(e), Ok(r))).collect(),
        )))
    }

    fn failing(kind: TransportErrorKind) -> Self {
        Self(Arc::new(Mutex::new(VecDeque::from([(None, Err(kind))]))))
    }

    fn transport(&self) -> impl HttpTransport + use<> {
        let steps = Arc::clone(&self.0);
        move |request: HttpRequest| {
            let step = steps.lock().unwrap().pop_front();
            async move {
                let (expect, reply) = step.expect("unexpected extra request");
                if let Some(expect) = expect {
                    expect.assert(&request);
                }
                match reply {
                    Ok(reply) => Ok(reply.response()),
                    Err(kind) => Err(TransportError::new(kind, "scripted failure")),
                }
            }
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert!(
                self.0.lock().unwrap().is_empty(),
                "not every scripted request was sent"
            );
        }
    }
}

/// Every token-endpoint grant, so that one table can drive them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grant {
    Refresh,
    Password,
    ClientCredentials,
    Code,
    JwtBearer,
    TokenExchange,
    Saml,
    DevicePoll,
}

const ALL_GRANTS: [Grant; 8] = [
    Grant::Refresh,
    Grant::Password,
    Grant::ClientCredentials,
    Grant::Code,
    Grant::JwtBearer,
    Grant::TokenExchange,
    Grant::Saml,
    Grant::DevicePoll,
];

impl Grant {
    fn host(self) -> LoginHost {
        match self {
            Self::ClientCredentials => {
                LoginHost::my_domain("https://acme.my.salesforce.com").unwrap()
            }
            _ => LoginHost::Production,
        }
    }

    fn url(self) -> &'static str {
        match self {
            Self::ClientCredentials => "https://acme.my.salesforce.com/services/oauth2/token",
            _ => PROD_TOKEN,
        }
    }

    /// The form fields of the grant itself, without client authentication and `format`.
    fn form(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Self::Refresh => vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", "5Aep861OldRefresh"),
            ],
            Self::Password => vec![
                ("grant_type", "password"),
                ("username", "user@example.com"),
                ("password", "hunter2XXXXXXXXXX"),
            ],
            Self::ClientCredentials => vec![("grant_type", "client_credentials")],
            Self::Code => vec![
                ("grant_type", "authorization_code"),
                ("code", "aPrxFakeCode=="),
                ("redirect_uri", REDIRECT),
                (
                    "code_verifier",
                    "verifier-0123456789-0123456789-0123456789-01",
                ),
            ],
            Self::JwtBearer => vec![
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", ANY),
            ],
            Self::TokenExchange => vec![
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("subject_token", "external-subject-token"),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:JWT"),
                ("scope", "api"),
            ],
            Self::Saml => vec![
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:saml2-bearer",
                ),
                ("assertion", "PHNhbWw6QXNzZXJ0aW9uPg"),
            ],
            Self::DevicePoll => vec![
                ("grant_type", "device"),
                ("code", "M2FkZGM0ZDctZmFrZS1kZXZpY2UtY29kZQ"),
            ],
        }
    }

    /// Whether the grant authenticates the client (the bearer assertions authenticate
    /// themselves).
    fn authenticates(self) -> bool {
        !matches!(self, Self::JwtBearer | Self::Saml)
    }

    fn safety(self) -> RetrySafety {
        match self {
            Self::Password | Self::ClientCredentials | Self::JwtBearer => {
                RetrySafety::CallerRetries
            }
            _ => RetrySafety::SingleUse,
        }
    }

    fn expect(self, client_auth: ClientAuth, format: ResponseFormat) -> Expect {
        let mut form = self.form();
        if self.authenticates() && client_auth == ClientAuth::RequestBody {
            form.extend([("client_id", CLIENT_ID), ("client_secret", SECRET)]);
        }
        form.push(("format", format.param()));
        let mut expect = Expect::token(&form, self.safety())
            .url(self.url())
            .header("accept", format.accept());
        if self.authenticates() && client_auth == ClientAuth::Basic {
            expect = expect.header("authorization", BASIC);
        }
        expect
    }

    async fn run(
        self,
        client: &OAuthClient,
        transport: &dyn HttpTransport,
    ) -> Result<TokenSet, Error> {
        match self {
            Self::Refresh => {
                client
                    .refresh(transport, &RefreshToken::new("5Aep861OldRefresh"))
                    .await
            }
            Self::Password => {
                client
                    .password(
                        transport,
                        "user@example.com",
                        &Password::new("hunter2XXXXXXXXXX"),
                    )
                    .await
            }
            Self::ClientCredentials => client.client_credentials(transport).await,
            Self::Code => {
                let verifier = PkceVerifier::new("verifier-0123456789-0123456789-0123456789-01");
                client
                    .exchange_code(
                        transport,
                        &AuthorizationCode::new("aPrxFakeCode=="),
                        Some(&verifier),
                    )
                    .await
            }
            Self::JwtBearer => {
                let jwt = JwtBearer::new(
                    "user@example.com",
                    PrivateKey::new(String::from_utf8(fixture("jwt_key.pem")).unwrap()),
                );
                client.jwt_bearer(transport, &jwt).await
            }
            Self::TokenExchange => {
                let mut exchange =
                    TokenExchange::new(SecretValue::new("external-subject-token"), token_type::JWT);
                exchange.scope = Some("api".into());
                client.token_exchange(transport, &exchange).await
            }
            Self::Saml => {
                client
                    .saml_bearer(transport, &SecretValue::new("PHNhbWw6QXNzZXJ0aW9uPg"))
                    .await
            }
            Self::DevicePoll => {
                let authorization = device_authorization(client, transport).await;
                match client.device_poll(transport, &authorization).await? {
                    DevicePoll::Complete(tokens) => Ok(*tokens),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }
}

/// The device authorization used by [`Grant::DevicePoll`]: built from the fixture through a
/// start request, so that polling starts from what the parser produced.
async fn device_authorization(
    client: &OAuthClient,
    _transport: &dyn HttpTransport,
) -> sfauth_core::flows::DeviceAuthorization {
    let script = Script::new(vec![(
        Expect::token(
            &[
                ("response_type", "device_code"),
                ("client_id", CLIENT_ID),
                ("scope", "refresh_token web api"),
                ("format", client.format().param()),
            ],
            RetrySafety::Idempotent,
        )
        .header("accept", client.format().accept()),
        Reply::fixture("device_start.json"),
    )]);
    client
        .device_start(&script.transport(), Some("refresh_token web api"))
        .await
        .unwrap()
}

/// Runs `grant` with `client_auth` and `format` against `reply`, asserting the request.
async fn check(
    grant: Grant,
    client_auth: ClientAuth,
    format: ResponseFormat,
    reply: Reply,
) -> Result<TokenSet, Error> {
    let client =
        OAuthClient::new(grant.host(), app().with_client_auth(client_auth)).with_format(format);
    run_once(&client, grant, grant.expect(client_auth, format), reply).await
}

/// Runs `grant` through `client` against a single scripted step: `expect`, answered by `reply`.
async fn run_once(
    client: &OAuthClient,
    grant: Grant,
    expect: Expect,
    reply: Reply,
) -> Result<TokenSet, Error> {
    let script = Script::new(vec![(expect, reply)]);
    grant.run(client, &script.transport()).await
}

/// [`check`] with the defaults: client authentication in the body, JSON responses.
async fn check_json(grant: Grant, reply: Reply) -> Result<TokenSet, Error> {
    check(grant, ClientAuth::RequestBody, ResponseFormat::Json, reply).await
}

#[tokio::test]
async fn every_grant_sends_the_exact_request_and_parses_success() {
    for grant in ALL_GRANTS {
        for client_auth in [ClientAuth::RequestBody, ClientAuth::Basic] {
            let fixture = match grant {
                Grant::JwtBearer => "token_jwt_bearer.json",
                Grant::ClientCredentials => "token_client_credentials.json",
                _ => "token_success.json",
            };
            let tokens = check(
                grant,
                client_auth,
                ResponseFormat::Json,
                Reply::fixture(fixture),
            )
            .await
            .unwrap_or_else(|e| panic!("{grant:?}: {e}"));
            assert_eq!(
                tokens.instance_url.as_str(),
                "https://acme.my.salesforce.com/",
                "{grant:?}"
            );
            assert_eq!(tokens.identity.org_id().as_str(), "00D5e000000AbcdEAC");
            assert_eq!(tokens.identity.user_id().as_str(), "0055e000001XyZaAAK");
            assert_eq!(tokens.token_type.as_deref(), Some("Bearer"));
        }
    }
}

#[tokio::test]
async fn success_fields_are_all_read() {
    let tokens = check_json(Grant::Code, Reply::fixture("token_success.json"))
        .await
        .unwrap();
    assert_eq!(
        tokens.access_token.expose_secret(),
        "00D5e000000Abcd!AQ4AQFakeAccessTokenValue"
    );
    assert_eq!(
        tokens.refresh_token.as_ref().unwrap().expose_secret(),
        "5Aep861FakeRefreshTokenValue"
    );
    assert_eq!(tokens.issued_at_millis(), Some(1_700_000_000_123));
    assert_eq!(
        tokens.scopes().collect::<Vec<_>>(),
        ["refresh_token", "api", "id"]
    );
    assert_eq!(tokens.expires_at, None, "salesforce sends no expires_in");
    let cc = check_json(
        Grant::ClientCredentials,
        Reply::fixture("token_client_credentials.json"),
    )
    .await
    .unwrap();
    assert_eq!(
        cc.api_instance_url.unwrap().as_str(),
        "https://api.salesforce.com/"
    );
    assert!(cc.refresh_token.is_none());
}

#[tokio::test]
async fn three_formats_give_the_same_token_set() {
    let mut sets = Vec::new();
    for (format, fixture) in [
        (ResponseFormat::Json, "token_success.json"),
        (ResponseFormat::UrlEncoded, "token_success.txt"),
        (ResponseFormat::Xml, "token_success.xml"),
    ] {
        let tokens = check(
            Grant::Refresh,
            ClientAuth::RequestBody,
            format,
            Reply::fixture(fixture),
        )
        .await
        .unwrap_or_else(|e| panic!("{format:?}: {e}"));
        sets.push(tokens);
    }
    assert_eq!(sets[0], sets[1]);
    assert_eq!(sets[0], sets[2]);
    // Without a content type the format is sniffed.
    for fixture in [
        "token_success.json",
        "token_success.txt",
        "token_success.xml",
    ] {
        let reply = Reply::new(200, None, self::fixture(fixture));
        let tokens = check_json(Grant::Refresh, reply).await.unwrap();
        assert_eq!(tokens, sets[0], "{fixture}");
    }
}

#[tokio::test]
async fn refresh_keeps_the_old_refresh_token_unless_rotated() {
    let body = fixture_replacing(
        "token_success.json",
        r#""refresh_token":"5Aep861FakeRefreshTokenValue","#,
        "",
    );
    let tokens = check_json(Grant::Refresh, Reply::json(200, body))
        .await
        .unwrap();
    assert_eq!(
        tokens.refresh_token.unwrap().expose_secret(),
        "5Aep861OldRefresh"
    );
    let rotated = check_json(Grant::Refresh, Reply::fixture("token_success.json"))
        .await
        .unwrap();
    assert_eq!(
        rotated.refresh_token.unwrap().expose_secret(),
        "5Aep861FakeRefreshTokenValue"
    );
}

#[tokio::test]
async fn experience_cloud_site_with_basic_auth() {
    let host = LoginHost::site("https://acme.my.site.com/customers").unwrap();
    let client = OAuthClient::new(host, app().with_client_auth(ClientAuth::Basic));
    let expect = Grant::Refresh
        .expect(ClientAuth::Basic, ResponseFormat::Json)
        .url("https://acme.my.site.com/customers/services/oauth2/token");
    run_once(
        &client,
        Grant::Refresh,
        expect,
        Reply::fixture("token_success.json"),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn signature_mismatch_is_a_typed_error() {
    let body = fixture_replacing("token_success.json", "1700000000123", "1700000000124");
    let error = check_json(Grant::Refresh, Reply::json(200, body))
        .await
        .unwrap_err();
    // The tokens were issued (the refresh token sent is spent): the error carries them.
    let Error::TokensRejected(rejected) = &error else {
        panic!("expected rejected tokens, got {error}");
    };
    assert!(
        matches!(rejected.reason(), Error::SignatureMismatch),
        "{error}"
    );
    assert_eq!(error.kind(), ErrorKind::Protocol);
    assert!(error.may_have_been_spent());
    assert!(!error.is_salesforce_answer());
    assert_eq!(
        error.issued_refresh_token().unwrap().expose_secret(),
        "5Aep861FakeRefreshTokenValue"
    );
    let tokens = error.issued_tokens().unwrap();
    assert_eq!(
        tokens.access_token.expose_secret(),
        "00D5e000000Abcd!AQ4AQFakeAccessTokenValue"
    );
    let shown = format!("{error} {error:?}");
    for secret in ["AQ4AQFake", "5Aep861Fake", "PA02u5S0Jljy"] {
        assert!(!shown.contains(secret), "{secret} leaked in {shown}");
    }
    // Without rotation the refresh token sent is the live one, and is what the error carries.
    let body = fixture_replacing("token_success.json", "1700000000123", "1700000000124")
        .replace(r#""refresh_token":"5Aep861FakeRefreshTokenValue","#, "");
    let error = check_json(Grant::Refresh, Reply::json(200, body))
        .await
        .unwrap_err();
    assert_eq!(
        error.issued_refresh_token().unwrap().expose_secret(),
        "5Aep861OldRefresh"
    );
    let Error::TokensRejected(rejected) = error else {
        panic!("expected rejected tokens");
    };
    let (reason, tokens, refresh_token) = rejected.into_parts();
    assert!(matches!(reason, Error::SignatureMismatch));
    assert_eq!(
        tokens.unwrap().refresh_token.unwrap().expose_secret(),
        "5Aep861OldRefresh"
    );
    assert_eq!(refresh_token.unwrap().expose_secret(), "5Aep861OldRefresh");
    // Without a secret the signature cannot be checked, and is not.
    let client = OAuthClient::new(LoginHost::Production, ConnectedApp::new(CLIENT_ID));
    let body = fixture_replacing("token_success.json", "1700000000123", "1700000000124");
    let expect = Expect::token(
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "5Aep861OldRefresh"),
            ("client_id", CLIENT_ID),
            ("format", "json"),
        ],
        RetrySafety::SingleUse,
    );
    let script = Script::new(vec![(expect, Reply::json(200, body))]);
    client
        .refresh(&script.transport(), &RefreshToken::new("5Aep861OldRefresh"))
        .await
        .unwrap();
}

/// Every documented token-endpoint error (§7.1 of the reference), with its expected kind and
/// cause.
const ERRORS: &[(&str, Option<&str>, ErrorKind, Cause)] = &[
    (
        "invalid_grant",
        Some("expired access/refresh token"),
        ErrorKind::ReauthorizationRequired,
        Cause::TokenExpiredOrRevoked,
    ),
    (
        "invalid_grant",
        Some("authentication failure"),
        ErrorKind::ReauthorizationRequired,
        Cause::AuthenticationFailure,
    ),
    (
        "invalid_grant",
        Some("invalid user credentials"),
        ErrorKind::ReauthorizationRequired,
        Cause::AuthenticationFailure,
    ),
    (
        "invalid_grant",
        Some("IP restricted or invalid login hours"),
        ErrorKind::ReauthorizationRequired,
        Cause::IpOrLoginHoursRestricted,
    ),
    (
        "invalid_grant",
        Some("ip restricted or invalid login hours"),
        ErrorKind::ReauthorizationRequired,
        Cause::IpOrLoginHoursRestricted,
    ),
    (
        "invalid_grant",
        Some("user hasn't approved this consumer"),
        ErrorKind::ReauthorizationRequired,
        Cause::NotApproved,
    ),
    (
        "invalid_grant",
        Some("audience is invalid"),
        ErrorKind::Config,
        Cause::AudienceInvalid,
    ),
    (
        "invalid_grant",
        Some("Audience validation failed"),
        ErrorKind::Config,
        Cause::AudienceInvalid,
    ),
    (
        "invalid_grant",
        Some("token request is already being processed"),
        ErrorKind::RefreshInProgress,
        Cause::RequestInProgress,
    ),
    (
        "invalid_grant",
        Some("no client credentials user enabled"),
        ErrorKind::Config,
        Cause::NoClientCredentialsUser,
    ),
    (
        "invalid_grant",
        Some("request not supported on this domain"),
        ErrorKind::Config,
        Cause::WrongHost,
    ),
    (
        "invalid_client_id",
        Some("client identifier invalid"),
        ErrorKind::InvalidClient,
        Cause::Other,
    ),
    (
        "invalid_client",
        Some("invalid client credentials"),
        ErrorKind::InvalidClient,
        Cause::ClientSecretRejected,
    ),
    (
        "invalid_client_credentials",
        None,
        ErrorKind::InvalidClient,
        Cause::ClientSecretRejected,
    ),
    (
        "invalid_request",
        Some("HTTPS required"),
        ErrorKind::InvalidRequest,
        Cause::Other,
    ),
    (
        "unsupported_response_type",
        Some("Response type not supported"),
        ErrorKind::InvalidRequest,
        Cause::Other,
    ),
    (
        "unsupported_grant_type",
        Some("grant type not supported"),
        ErrorKind::InvalidRequest,
        Cause::Other,
    ),
    (
        "inactive_user",
        Some("User is inactive"),
        ErrorKind::ReauthorizationRequired,
        Cause::UserInactive,
    ),
    (
        "inactive_org",
        Some("Org is locked, closed, or suspended"),
        ErrorKind::ReauthorizationRequired,
        Cause::OrgInactive,
    ),
    (
        "rate_limit_exceeded",
        Some("Number of logins exceeded"),
        ErrorKind::RateLimited,
        Cause::LoginRateExceeded,
    ),
    (
        "invalid_scope",
        Some("Requested scope is invalid, unknown, or malformed"),
        ErrorKind::InvalidRequest,
        Cause::Other,
    ),
];

fn error_body(format: ResponseFormat, error: &str, description: Option<&str>) -> Reply {
    let mut pairs = vec![("error", error)];
    if let Some(description) = description {
        pairs.push(("error_description", description));
    }
    match format {
        ResponseFormat::Json => {
            let object: serde_json::Map<String, serde_json::Value> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
                .collect();
            Reply::json(400, serde_json::to_vec(&object).unwrap())
        }
        ResponseFormat::UrlEncoded => Reply::new(
            400,
            Some("application/x-www-form-urlencoded"),
            serde_urlencoded::to_string(&pairs).unwrap(),
        ),
        _ => {
            let escape = |s: &str| s.replace('&', "&amp;").replace('\'', "&apos;");
            let fields: String = pairs
                .iter()
                .map(|(k, v)| format!("<{k}>{}</{k}>", escape(v)))
                .collect();
            Reply::new(
                400,
                Some("application/xml"),
                format!("<?xml version=\"1.0\"?><OAuth>{fields}</OAuth>"),
            )
        }
    }
}

#[tokio::test]
async fn every_documented_error_maps_to_its_kind_in_every_format() {
    for format in [
        ResponseFormat::Json,
        ResponseFormat::UrlEncoded,
        ResponseFormat::Xml,
    ] {
        for (code, description, kind, cause) in ERRORS {
            let error = check(
                Grant::Password,
                ClientAuth::RequestBody,
                format,
                error_body(format, code, *description),
            )
            .await
            .unwrap_err();
            let server = error
                .server()
                .unwrap_or_else(|| panic!("{format:?} {code}: {error}"));
            assert_eq!(server.status(), 400);
            assert_eq!(server.error(), *code);
            assert_eq!(server.description(), *description);
            assert_eq!(
                (error.kind(), server.cause()),
                (*kind, *cause),
                "{format:?} {code} {description:?}"
            );
        }
    }
}

#[tokio::test]
async fn expired_authorization_code_depends_on_the_grant() {
    let reply = || {
        Reply::json(
            400,
            r#"{"error":"invalid_grant","error_description":"expired authorization code"}"#,
        )
    };
    let refresh = check_json(Grant::Refresh, reply()).await.unwrap_err();
    assert_eq!(
        refresh.kind(),
        ErrorKind::RefreshInProgress,
        "pre-Winter '25 wording of a concurrent refresh"
    );
    let code = check_json(Grant::Code, reply()).await.unwrap_err();
    assert_eq!(code.kind(), ErrorKind::ReauthorizationRequired);
    assert_eq!(
        code.server().unwrap().cause(),
        Cause::AuthorizationCodeExpired
    );
}

#[tokio::test]
async fn status_and_transport_failures() {
    let mut cases: Vec<(Reply, ErrorKind, Option<Duration>)> = vec![
        (
            Reply {
                headers: vec![("retry-after", "30")],
                ..Reply::new(
                    503,
                    Some("text/html"),
                    "<html><body>Service Unavailable</body></html>",
                )
            },
            ErrorKind::Transient,
            Some(Duration::from_secs(30)),
        ),
        (
            Reply {
                headers: vec![("retry-after", "7")],
                ..Reply::new(429, None, "")
            },
            ErrorKind::RateLimited,
            Some(Duration::from_secs(7)),
        ),
        (
            Reply::json(500, r#"{"error":"server_error"}"#),
            ErrorKind::Transient,
            None,
        ),
        (
            Reply {
                headers: vec![(
                    "location",
                    "https://acme.my.salesforce.com/services/oauth2/token",
                )],
                ..Reply::new(302, None, "")
            },
            ErrorKind::Protocol,
            None,
        ),
    ];
    cases.push((
        Reply::new(401, Some("text/html"), "Unauthorized"),
        ErrorKind::InvalidClient,
        None,
    ));
    cases.push((Reply::new(403, None, ""), ErrorKind::Protocol, None));
    for (reply, kind, retry_after) in cases {
        let status = reply.status;
        let error = check_json(Grant::JwtBearer, reply).await.unwrap_err();
        assert_eq!(error.kind(), kind, "{status}: {error}");
        assert_eq!(error.retry_after(), retry_after, "{status}");
    }
    for (kind, expected) in [
        (TransportErrorKind::Connect, ErrorKind::Transient),
        (TransportErrorKind::Timeout, ErrorKind::Transient),
        (TransportErrorKind::Tls, ErrorKind::Config),
        (TransportErrorKind::BodyTooLarge, ErrorKind::Protocol),
    ] {
        let script = Script::failing(kind);
        let error = client()
            .refresh(&script.transport(), &RefreshToken::new("5Aep"))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Transport(_)));
        assert_eq!(error.kind(), expected, "{kind}");
    }
}

/// `Retry-After` in its HTTP-date form counts too, on a bare 429 and on an OAuth error body:
/// Salesforce's edge may send either form, and both mean "wait until then".
#[tokio::test]
async fn http_date_retry_after_on_a_429_is_reported() {
    let in_an_hour = std::time::SystemTime::now() + Duration::from_secs(3600);
    let date: &'static str = httpdate::fmt_http_date(in_an_hour).leak();
    let oauth_body = r#"{"error":"rate_limit_exceeded","error_description":"slow down"}"#;
    for reply in [Reply::new(429, None, ""), Reply::json(429, oauth_body)] {
        let reply = Reply {
            headers: vec![("retry-after", date)],
            ..reply
        };
        let error = check_json(Grant::JwtBearer, reply).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::RateLimited, "{error}");
        let wait = error
            .retry_after()
            .expect("an http-date retry-after is read");
        // The date has whole seconds and the test takes some time, so allow a little under.
        assert!(
            wait > Duration::from_secs(3500) && wait <= Duration::from_secs(3600),
            "{wait:?}"
        );
    }
    let past: &'static str =
        httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(60)).leak();
    let reply = Reply {
        headers: vec![("retry-after", past)],
        ..Reply::new(429, None, "")
    };
    let error = check_json(Grant::JwtBearer, reply).await.unwrap_err();
    assert_eq!(error.retry_after(), Some(Duration::ZERO));
}

#[tokio::test]
async fn malformed_huge_and_truncated_bodies_are_parse_errors_with_redacted_excerpts() {
    let full = String::from_utf8(fixture("token_success.json")).unwrap();
    let truncated = full[..full.len() / 2].to_owned();
    let xml = String::from_utf8(fixture("token_success.xml")).unwrap();
    let truncated_xml = xml[..xml.len() - 20].to_owned();
    let huge = format!(r#"{{"access_token":"{}"}}"#, "A".repeat(300 * 1024));
    let cases: Vec<(Reply, &str)> = vec![
        (Reply::json(200, truncated), "invalid json"),
        (
            Reply::new(200, Some("application/xml"), truncated_xml),
            "xml",
        ),
        (Reply::json(200, huge), "exceeds"),
        (Reply::json(200, "[]"), "not an object"),
        (Reply::new(200, Some("text/plain"), "hello"), "neither"),
        (Reply::new(200, None, ""), "empty"),
        (Reply::json(200, vec![0xff, 0xfe, b'{']), "invalid json"),
    ];
    for (reply, reason) in cases {
        let error = check_json(Grant::Refresh, reply).await.unwrap_err();
        let Error::Parse {
            reason: got,
            excerpt,
            ..
        } = &error
        else {
            panic!("expected a parse error, got {error}");
        };
        assert!(got.contains(reason), "{got} should mention {reason}");
        assert!(excerpt.chars().count() <= 121, "{excerpt}");
        let shown = format!("{error} {error:?}");
        for secret in [
            "AQ4AQFakeAccessTokenValue",
            "5Aep861FakeRefreshTokenValue",
            SECRET,
            "AAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked in {shown}");
        }
        assert_eq!(error.kind(), ErrorKind::Protocol);
    }
}

#[tokio::test]
async fn client_credentials_refuses_login_pools_before_sending() {
    for host in [LoginHost::Production, LoginHost::Sandbox] {
        let client = OAuthClient::new(host, app());
        let script = Script::new(Vec::new());
        let error = client
            .client_credentials(&script.transport())
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config, "{error}");
    }
}

#[tokio::test]
async fn jwt_bearer_assertion_claims() {
    let jwt = JwtBearer::new(
        "user@example.com",
        PrivateKey::new(String::from_utf8(fixture("jwt_key.pem")).unwrap()),
    );
    let public = jsonwebtoken::DecodingKey::from_rsa_pem(&fixture("jwt_pub.pem")).unwrap();
    for (host, audience) in [
        (LoginHost::Production, "https://login.salesforce.com"),
        (LoginHost::Sandbox, "https://test.salesforce.com"),
        (
            LoginHost::my_domain("https://acme.my.salesforce.com").unwrap(),
            "https://login.salesforce.com",
        ),
        (
            LoginHost::my_domain("https://acme--dev.sandbox.my.salesforce.com").unwrap(),
            "https://test.salesforce.com",
        ),
        (
            LoginHost::site("https://acme.my.site.com/customers").unwrap(),
            "https://acme.my.site.com/customers",
        ),
    ] {
        let now = std::time::SystemTime::now();
        let assertion = jwt.assertion(CLIENT_ID, &host.jwt_audience(), now).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[CLIENT_ID]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            assertion.expose_secret(),
            &public,
            &validation,
        )
        .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(data.claims["sub"], "user@example.com");
        let exp = data.claims["exp"].as_u64().unwrap();
        let now = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert!(
            (now + 179..=now + 180).contains(&exp),
            "exp within 3 minutes"
        );
    }
    let overridden = jwt.clone().audience("https://login.salesforce.com");
    let assertion = overridden
        .assertion(
            CLIENT_ID,
            "https://test.salesforce.com",
            std::time::SystemTime::now(),
        )
        .unwrap();
    let header = jsonwebtoken::decode_header(assertion.expose_secret()).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let bad = JwtBearer::new("u", PrivateKey::new("not a key"));
    assert_eq!(
        bad.assertion(CLIENT_ID, "aud", std::time::SystemTime::now())
            .unwrap_err()
            .kind(),
        ErrorKind::Config
    );
}

#[tokio::test]
async fn web_server_flow_end_to_end() {
    let client = client();
    let request = client
        .authorize_url(&AuthorizeParams {
            prompt: Some("login consent".into()),
            login_hint: Some("user@example.com".into()),
            ..AuthorizeParams::scopes(["api", "refresh_token"])
        })
        .unwrap();
    assert_eq!(
        request.url.origin().ascii_serialization(),
        "https://login.salesforce.com"
    );
    assert_eq!(request.url.path(), "/services/oauth2/authorize");
    let query: std::collections::BTreeMap<String, String> =
        request.url.query_pairs().into_owned().collect();
    assert_eq!(query["response_type"], "code");
    assert_eq!(query["client_id"], CLIENT_ID);
    assert_eq!(query["redirect_uri"], REDIRECT);
    assert_eq!(query["scope"], "api refresh_token");
    assert_eq!(query["prompt"], "login consent");
    assert_eq!(query["login_hint"], "user@example.com");
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["state"], request.state);
    // The challenge is base64url(SHA-256(verifier)), checked with an independent SHA-256.
    let verifier = request.pkce_verifier.clone().unwrap();
    let digest = {
        use sha2::Digest as _;
        sha2::Sha256::digest(verifier.expose_secret().as_bytes())
    };
    use base64::Engine as _;
    assert_eq!(
        query["code_challenge"],
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    );
    assert!(!format!("{request:?}").contains(verifier.expose_secret()));

    let callback = url::Url::parse(&format!(
        "{REDIRECT}?code=aPrxFakeCode%3D%3D&state={}",
        request.state
    ))
    .unwrap();
    let code = client.parse_callback(&callback, &request.state).unwrap();
    assert_eq!(code.expose_secret(), "aPrxFakeCode==");
    assert!(matches!(
        client.parse_callback(&callback, "other"),
        Err(Error::StateMismatch)
    ));
    let no_state = url::Url::parse(&format!("{REDIRECT}?code=aPrxFakeCode")).unwrap();
    assert!(matches!(
        client.parse_callback(&no_state, &request.state),
        Err(Error::StateMismatch)
    ));
    let denied = url::Url::parse(&format!(
        "{REDIRECT}?error=access_denied&error_description=end-user+denied+authorization&state={}",
        request.state
    ))
    .unwrap();
    let error = client.parse_callback(&denied, &request.state).unwrap_err();
    assert_eq!(error.server().unwrap().cause(), Cause::AccessDenied);
    assert_eq!(error.kind(), ErrorKind::ReauthorizationRequired);

    let mut form = Grant::Code.form();
    form[1].1 = "aPrxFakeCode==";
    form.extend([
        ("client_id", CLIENT_ID),
        ("client_secret", SECRET),
        ("format", "json"),
    ]);
    let mut expect = Expect::token(&form, RetrySafety::SingleUse);
    expect.form[3].1 = verifier.expose_secret().to_owned();
    let script = Script::new(vec![(expect, Reply::fixture("token_success.json"))]);
    let tokens = client
        .exchange_code(&script.transport(), &code, Some(&verifier))
        .await
        .unwrap();
    assert!(tokens.refresh_token.is_some());
}

#[test]
fn user_agent_flow() {
    let client = client();
    let request = client
        .user_agent_url(&AuthorizeParams {
            nonce: Some("n-0S6_WzA2Mj".into()),
            ..AuthorizeParams::scopes(["openid", "api"])
        })
        .unwrap();
    let query: std::collections::BTreeMap<String, String> =
        request.url.query_pairs().into_owned().collect();
    assert_eq!(query["response_type"], "token id_token");
    assert_eq!(query["nonce"], "n-0S6_WzA2Mj");
    assert!(!query.contains_key("code_challenge"));
    let fragment = String::from_utf8(fixture("token_success.txt")).unwrap();
    let redirect = url::Url::parse(&format!(
        "{REDIRECT}#{fragment}&state={}&sfdc_community_url=https%3A%2F%2Facme.my.site.com%2Fcustomers&sfdc_community_id=0DB5e000000TEST",
        request.state
    ))
    .unwrap();
    let tokens = client.parse_fragment(&redirect, &request.state).unwrap();
    assert_eq!(
        tokens.community_url.unwrap().as_str(),
        "https://acme.my.site.com/customers"
    );
    assert_eq!(tokens.community_id.as_deref(), Some("0DB5e000000TEST"));
    assert!(matches!(
        client.parse_fragment(&redirect, "nope"),
        Err(Error::StateMismatch)
    ));
    let tampered =
        url::Url::parse(&redirect.as_str().replace("1700000000123", "1700000000999")).unwrap();
    let error = client
        .parse_fragment(&tampered, &request.state)
        .unwrap_err();
    let Error::TokensRejected(rejected) = &error else {
        panic!("expected rejected tokens, got {error}");
    };
    assert!(matches!(rejected.reason(), Error::SignatureMismatch));
    assert!(error.issued_refresh_token().is_some());
}

#[tokio::test]
async fn device_flow_waits_through_pending_and_slow_down() {
    let client = OAuthClient::new(LoginHost::Production, ConnectedApp::new(CLIENT_ID));
    let start = Expect::token(
        &[
            ("response_type", "device_code"),
            ("client_id", CLIENT_ID),
            ("scope", "refresh_token web api"),
            ("format", "json"),
        ],
        RetrySafety::Idempotent,
    );
    let poll = Expect::token(
        &[
            ("grant_type", "device"),
            ("code", "M2FkZGM0ZDctZmFrZS1kZXZpY2UtY29kZQ"),
            ("client_id", CLIENT_ID),
            ("format", "json"),
        ],
        RetrySafety::SingleUse,
    );
    let pending = Reply::json(400, r#"{"error":"authorization_pending"}"#);
    let slow = Reply::json(
        400,
        r#"{"error":"slow_down","error_description":"polling too fast"}"#,
    );
    let script = Script::new(vec![
        (start, Reply::fixture("device_start.json")),
        (poll.clone(), pending.clone()),
        (poll.clone(), slow),
        (poll.clone(), pending),
        (poll.clone(), Reply::fixture("token_success.json")),
    ]);
    let transport = script.transport();
    let authorization = client
        .device_start(&transport, Some("refresh_token web api"))
        .await
        .unwrap();
    assert_eq!(authorization.user_code, "ABCD1234");
    assert_eq!(
        authorization.verification_uri.as_str(),
        "https://login.salesforce.com/setup/connect"
    );
    assert_eq!(authorization.interval, Duration::from_secs(5));
    assert!(!format!("{authorization:?}").contains("M2FkZGM0ZDct"));
    let slept = Arc::new(Mutex::new(Vec::new()));
    let sleep = |d: Duration| {
        slept.lock().unwrap().push(d.as_secs());
        std::future::ready(())
    };
    let tokens = client
        .device_wait(&transport, &authorization, sleep)
        .await
        .unwrap();
    assert!(tokens.refresh_token.is_some());
    assert_eq!(*slept.lock().unwrap(), [5, 5, 10, 10]);

    // Refusals end the wait.
    for (body, kind) in [
        (
            r#"{"error":"access_denied"}"#,
            ErrorKind::ReauthorizationRequired,
        ),
        (
            r#"{"error":"expired_token"}"#,
            ErrorKind::ReauthorizationRequired,
        ),
    ] {
        let script = Script::new(vec![(poll.clone(), Reply::json(400, body))]);
        let error = client
            .device_wait(&script.transport(), &authorization, |_| {
                std::future::ready(())
            })
            .await
            .unwrap_err();
        assert_eq!(error.kind(), kind, "{body}");
    }
    // A local deadline that has passed ends it before any poll.
    let mut expired = authorization.clone();
    expired.expires_at = Some(std::time::SystemTime::now() - Duration::from_secs(1));
    let script = Script::new(Vec::new());
    let error = client
        .device_wait(&script.transport(), &expired, |_| std::future::ready(()))
        .await
        .unwrap_err();
    assert_eq!(error.server().unwrap().cause(), Cause::DeviceCodeExpired);
}

#[tokio::test]
async fn revoke_post_and_get() {
    let client = client();
    let post = Expect {
        url: "https://login.salesforce.com/services/oauth2/revoke".into(),
        // RFC 7009 §2.1: a confidential client authenticates its revocations.
        ..Expect::token(
            &[
                ("token", "5Aep861FakeRefreshTokenValue"),
                ("client_id", CLIENT_ID),
                ("client_secret", SECRET),
            ],
            RetrySafety::Idempotent,
        )
    };
    let token = SecretValue::from(RefreshToken::new("5Aep861FakeRefreshTokenValue"));
    let revoke_by_post = |reply| {
        let script = Script::new(vec![(post.clone(), reply)]);
        let (client, token) = (&client, &token);
        async move {
            client
                .revoke(&script.transport(), token, RevokeMethod::Post)
                .await
        }
    };
    revoke_by_post(Reply::new(200, None, "")).await.unwrap();

    let get = Expect {
        method: "GET",
        url: "https://login.salesforce.com/services/oauth2/revoke?token=00D5e000000Abcd%21AQ4AQ"
            .into(),
        headers: Vec::new(),
        absent: vec!["authorization"],
        form: Vec::new(),
        safety: RetrySafety::Idempotent,
    };
    let script = Script::new(vec![(get, Reply::json(200, "{}"))]);
    client
        .revoke(
            &script.transport(),
            &SecretValue::new("00D5e000000Abcd!AQ4AQ"),
            RevokeMethod::Get,
        )
        .await
        .unwrap();

    // Error bodies come as JSON or as form encoding.
    for reply in [
        Reply::json(
            400,
            r#"{"error":"invalid_token","error_description":"Token was invalid"}"#,
        ),
        Reply::new(
            400,
            Some("application/x-www-form-urlencoded"),
            "error=invalid_token&error_description=Token+was+invalid",
        ),
        Reply::new(400, None, "error=invalid_token"),
    ] {
        let error = revoke_by_post(reply).await.unwrap_err();
        assert_eq!(error.server().unwrap().error(), "invalid_token");
        assert_eq!(error.kind(), ErrorKind::InvalidRequest);
    }
    let error = revoke_by_post(Reply::json(
        400,
        r#"{"error":"unsupported_token_type","error_description":"Token type not supported"}"#,
    ))
    .await
    .unwrap_err();
    assert_eq!(
        error.server().unwrap().description(),
        Some("Token type not supported")
    );
}

#[tokio::test]
async fn introspection_and_expiry_from_it() {
    let client = client();
    let expect = Expect {
        url: "https://login.salesforce.com/services/oauth2/introspect".into(),
        ..Expect::token(
            &[
                ("token", "00D5e000000Abcd!AQ4AQFakeAccessTokenValue"),
                ("token_type_hint", "access_token"),
                ("client_id", CLIENT_ID),
                ("client_secret", SECRET),
            ],
            RetrySafety::Idempotent,
        )
    };
    let script = Script::new(vec![
        (expect.clone(), Reply::fixture("introspect_active.json")),
        (expect.clone(), Reply::json(200, r#"{"active":false}"#)),
        (
            expect.clone(),
            Reply::json(
                401,
                r#"{"error":"invalid_client","error_description":"invalid client credentials"}"#,
            ),
        ),
    ]);
    let transport = script.transport();
    let token = SecretValue::new("00D5e000000Abcd!AQ4AQFakeAccessTokenValue");
    let active = client
        .introspect(&transport, &token, Some(TokenTypeHint::AccessToken))
        .await
        .unwrap();
    assert!(active.active);
    assert_eq!(active.exp, Some(1_700_007_200));
    assert_eq!(active.token_type.as_deref(), Some("access_token"));
    assert_eq!(active.username.as_deref(), Some("user@example.com"));
    let inactive = client
        .introspect(&transport, &token, Some(TokenTypeHint::AccessToken))
        .await
        .unwrap();
    assert!(!inactive.active);
    let error = client
        .introspect(&transport, &token, Some(TokenTypeHint::AccessToken))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidClient);

    let mut tokens = check_json(Grant::Refresh, Reply::fixture("token_success.json"))
        .await
        .unwrap();
    tokens.apply_introspection(&inactive);
    assert_eq!(
        tokens.expires_at, None,
        "an inactive result says nothing about expiry"
    );
    // As of the token's issue; an `exp` in the past of `now` would read as expired.
    tokens.apply_introspection_at(
        &active,
        std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    );
    assert_eq!(tokens.expiry_source, Some(ExpirySource::Introspection));
    assert_eq!(
        tokens.expires_at,
        Some(std::time::UNIX_EPOCH + Duration::from_secs(1_700_007_200))
    );
}

#[tokio::test]
async fn session_timeout_is_the_last_resort() {
    let client = client().with_session_timeout(Duration::from_secs(7200));
    let refresh = |reply| {
        let expect = Grant::Refresh.expect(ClientAuth::RequestBody, ResponseFormat::Json);
        run_once(&client, Grant::Refresh, expect, reply)
    };
    let tokens = refresh(Reply::fixture("token_success.json")).await.unwrap();
    assert_eq!(tokens.expiry_source, Some(ExpirySource::SessionTimeout));
    assert_eq!(
        tokens.expires_at,
        Some(std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123 + 7_200_000))
    );
    // expires_in, when a server sends it, wins.
    let body = fixture_replacing(
        "token_success.json",
        r#""token_type""#,
        r#""expires_in":"3600","token_type""#,
    );
    let tokens = refresh(Reply::json(200, body)).await.unwrap();
    assert_eq!(tokens.expiry_source, Some(ExpirySource::ExpiresIn));
    assert_eq!(
        tokens.expires_at,
        Some(std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123 + 3_600_000))
    );
}

fn bearer_get(url: &str, token: Option<&str>) -> Expect {
    let mut expect = Expect {
        method: "GET",
        url: url.to_owned(),
        headers: vec![("accept", "application/json".to_owned())],
        absent: vec!["authorization"],
        form: Vec::new(),
        safety: RetrySafety::Idempotent,
    };
    if let Some(token) = token {
        expect = expect.header("authorization", &format!("Bearer {token}"));
    }
    expect
}

#[tokio::test]
async fn userinfo_and_identity_url() {
    let client = client();
    let tokens = check_json(Grant::Refresh, Reply::fixture("token_success.json"))
        .await
        .unwrap();
    let access = "00D5e000000Abcd!AQ4AQFakeAccessTokenValue";
    let script = Script::new(vec![
        (
            bearer_get(
                "https://login.salesforce.com/services/oauth2/userinfo",
                Some(access),
            ),
            Reply::fixture("userinfo.json"),
        ),
        (
            bearer_get(
                "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK",
                Some(access),
            ),
            Reply::fixture("identity.json"),
        ),
        (
            bearer_get(
                "https://login.salesforce.com/services/oauth2/userinfo",
                Some(access),
            ),
            Reply::json(
                401,
                r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#,
            ),
        ),
        (
            bearer_get(
                "https://login.salesforce.com/services/oauth2/userinfo",
                Some(access),
            ),
            Reply::json(200, r#"{"sub": tru"#),
        ),
        (
            bearer_get(
                "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK",
                Some(access),
            ),
            Reply::new(403, Some("text/plain"), "Bad_OAuth_Token"),
        ),
        (
            bearer_get(
                "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK",
                Some(access),
            ),
            Reply::new(403, Some("text/plain"), "Wrong_Org"),
        ),
    ]);
    let transport = script.transport();
    let info = client
        .userinfo(&transport, &tokens.access_token)
        .await
        .unwrap();
    assert_eq!(info.preferred_username.as_deref(), Some("user@example.com"));
    assert_eq!(
        info.other["photos"]["thumbnail"],
        "https://acme.file.force.com/profilephoto/005/T"
    );
    let identity = client.identity(&transport, &tokens).await.unwrap();
    assert_eq!(identity.display_name.as_deref(), Some("Ada User"));
    assert_eq!(
        identity.urls["rest"],
        "https://acme.my.salesforce.com/services/data/v{version}/"
    );
    let expired = client
        .userinfo(&transport, &tokens.access_token)
        .await
        .unwrap_err();
    assert!(
        matches!(expired, Error::SessionExpired { status: 401 }),
        "{expired}"
    );
    assert_eq!(expired.kind(), ErrorKind::SessionExpired);
    let malformed = client
        .userinfo(&transport, &tokens.access_token)
        .await
        .unwrap_err();
    assert_eq!(malformed.kind(), ErrorKind::Protocol);
    // The identity service refuses a dead token with 403 Bad_OAuth_Token: a refresh fixes it.
    let bad_token = client.identity(&transport, &tokens).await.unwrap_err();
    assert!(
        matches!(bad_token, Error::SessionExpired { status: 403 }),
        "{bad_token}"
    );
    // Other 403s of the identity service are not about the token's life.
    let wrong_org = client.identity(&transport, &tokens).await.unwrap_err();
    assert_eq!(wrong_org.kind(), ErrorKind::Protocol, "{wrong_org}");
}

fn id_token(claims: serde_json::Value, kid: &str) -> IdToken {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&fixture("jwt_key.pem")).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    IdToken::new(jsonwebtoken::encode(&header, &claims, &key).unwrap())
}

#[tokio::test]
async fn id_token_validation_against_jwks() {
    let client = client();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |iss: &str, aud: &str, exp: u64, nonce: &str| {
        serde_json::json!({
            "sub": "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK",
            "iss": iss, "aud": aud, "exp": exp, "iat": now, "nonce": nonce, "at_hash": "abc",
        })
    };
    let good = id_token(
        claims("https://login.salesforce.com", CLIENT_ID, now + 300, "n1"),
        "230",
    );
    let check_nonce = IdTokenCheck {
        nonce: Some("n1".into()),
        ..IdTokenCheck::default()
    };
    // The JWKS fixture was made with openssl from the same key (modulus and exponent,
    // base64url), not by this crate.
    let script = Script::new(vec![(
        bearer_get("https://login.salesforce.com/id/keys", None),
        Reply::fixture("jwks.json"),
    )]);
    let validated = client
        .validate_id_token(&script.transport(), &good, &check_nonce)
        .await
        .unwrap();
    assert_eq!(
        validated.sub,
        "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK"
    );
    assert_eq!(validated.other["at_hash"], "abc");

    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&fixture("jwks.json")).unwrap();
    let bad = [
        (
            id_token(
                claims("https://evil.example.com", CLIENT_ID, now + 300, "n1"),
                "230",
            ),
            "issuer",
        ),
        (
            id_token(
                claims(
                    "https://login.salesforce.com",
                    "someone-else",
                    now + 300,
                    "n1",
                ),
                "230",
            ),
            "audience",
        ),
        (
            id_token(
                claims("https://login.salesforce.com", CLIENT_ID, now - 3600, "n1"),
                "230",
            ),
            "expired",
        ),
        (
            id_token(
                claims("https://login.salesforce.com", CLIENT_ID, now + 300, "n2"),
                "230",
            ),
            "nonce",
        ),
        (
            id_token(
                claims("https://login.salesforce.com", CLIENT_ID, now + 300, "n1"),
                "999",
            ),
            "kid",
        ),
    ];
    for (token, what) in bad {
        let error = client
            .validate_id_token_with_jwks(&jwks, &token, &check_nonce)
            .unwrap_err();
        assert!(matches!(error, Error::IdToken(_)), "{what}: {error}");
        assert_eq!(error.kind(), ErrorKind::Protocol);
    }
    // Change one character in the middle of the signature (the last one may only carry padding
    // bits).
    let mut forged: Vec<char> = good.expose_secret().chars().collect();
    let at = forged.len() - 10;
    forged[at] = if forged[at] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    let error = client
        .validate_id_token_with_jwks(&jwks, &IdToken::new(forged), &check_nonce)
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid id token: signature does not verify"
    );
}

/// Formats every public type holding a secret with `{:?}`, `{:#?}` and (where it has one) `{}`
/// and finds none of the secrets.
#[tokio::test]
async fn no_secret_in_any_debug_or_display() {
    let secrets = [
        SECRET,
        "AQ4AQFakeAccessTokenValue",
        "5Aep861FakeRefreshTokenValue",
        "hunter2XXXXXXXXXX",
        "BEGIN RSA",
        "M2FkZGM0ZDct",
        "aPrxFakeCode",
        "external-subject",
    ];
    let tokens = check_json(Grant::Code, Reply::fixture("token_success.json"))
        .await
        .unwrap();
    let client = client();
    let request = client.authorize_url(&AuthorizeParams::default()).unwrap();
    let mut exchange = TokenExchange::new(
        SecretValue::new("external-subject-token"),
        token_type::ACCESS_TOKEN,
    );
    exchange.actor = Some((
        SecretValue::new("external-subject-actor"),
        token_type::JWT.into(),
    ));
    let jwt = JwtBearer::new(
        "user@example.com",
        PrivateKey::new(String::from_utf8(fixture("jwt_key.pem")).unwrap()),
    );
    let script = Script::new(vec![(
        Grant::DevicePoll.expect(ClientAuth::RequestBody, ResponseFormat::Json),
        Reply::fixture("token_success.json"),
    )]);
    let authorization = device_authorization(&client, &script.transport()).await;
    let poll = client
        .device_poll(&script.transport(), &authorization)
        .await
        .unwrap();
    let error_with_body = check_json(
        Grant::Refresh,
        Reply::json(200, &fixture("token_success.json")[..120]),
    )
    .await
    .unwrap_err();
    let debugs = [
        format!("{tokens:?} {tokens:#?}"),
        format!("{client:?} {client:#?}"),
        format!("{:?}", client.app()),
        format!("{request:?}"),
        format!("{exchange:?}"),
        format!("{jwt:?}"),
        format!("{authorization:?}"),
        format!("{poll:?}"),
        format!("{error_with_body:?} {error_with_body}"),
        format!(
            "{} {}",
            tokens.access_token,
            tokens.refresh_token.as_ref().unwrap()
        ),
        format!(
            "{:?}",
            ServerError::new(400, "invalid_grant", Some("expired access/refresh token"))
        ),
    ];
    for text in debugs {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} leaked in {text}");
        }
    }
}

/// The checker itself: a request that differs from the expectation fails the test.
#[tokio::test]
#[should_panic(expected = "form field refresh_token")]
async fn the_checker_catches_a_wrong_form_value() {
    let client = client();
    let mut expect = Grant::Refresh.expect(ClientAuth::RequestBody, ResponseFormat::Json);
    expect.form[1].1 = "5Aep861SomethingElse".into();
    let script = Script::new(vec![(expect, Reply::fixture("token_success.json"))]);
    let _ = Grant::Refresh.run(&client, &script.transport()).await;
}

#[tokio::test]
#[should_panic(expected = "header authorization must be absent")]
async fn the_checker_catches_a_stray_header() {
    let client = OAuthClient::new(
        LoginHost::Production,
        app().with_client_auth(ClientAuth::Basic),
    );
    let expect = Grant::Refresh.expect(ClientAuth::RequestBody, ResponseFormat::Json);
    let script = Script::new(vec![(expect, Reply::fixture("token_success.json"))]);
    let _ = Grant::Refresh.run(&client, &script.transport()).await;
}

/// A token response without a signature, in `format`, made of `fields`.
fn token_reply(format: ResponseFormat, fields: &[(&str, String)]) -> Reply {
    let body = match format {
        ResponseFormat::Json => {
            let object: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(v.clone())))
                .collect();
            serde_json::to_vec(&object).unwrap()
        }
        ResponseFormat::UrlEncoded => serde_urlencoded::to_string(fields).unwrap().into_bytes(),
        _ => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><OAuth>{}</OAuth>",
            fields
                .iter()
                .map(|(k, v)| format!("<{k}>{v}</{k}>"))
                .collect::<String>()
        )
        .into_bytes(),
    };
    Reply::new(200, Some(format.accept()), body)
}

/// A JWT-shaped access token whose payload is `{"exp":<exp>}` (unsigned: core reads `exp`
/// as a scheduling hint without verifying).
fn jwt_access_token(exp: &str) -> String {
    use base64::Engine as _;
    let payload =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{exp}}}"#));
    format!("eyJhbGciOiJub25lIn0.{payload}.c2ln")
}

/// What the expiry of a parsed token set must be.
#[derive(Clone, Copy, Debug)]
enum Expiry {
    /// Unknown.
    None,
    /// Already expired when parsed.
    Expired,
    /// A day after parsing: the top of the sane range.
    Day,
}

/// Issue 11, defect 1: numbers no server should send, in each of the three formats, after
/// which the refresh must still succeed with the rotated refresh token (a panic or an error
/// here loses it), with the expiry clamped to `[now, now + 24 h]`.
#[tokio::test]
async fn hostile_numbers_in_any_format_keep_the_rotated_refresh_token() {
    const HUGE: &str = "18446744073709551615";
    const HUGER: &str = "99999999999999999999999999";
    let never = Duration::from_secs(u64::MAX);
    type Case = (
        &'static str,
        Vec<(&'static str, String)>,
        Option<Duration>,
        Expiry,
    );
    let cases: Vec<Case> = vec![
        (
            "expires_in u64::MAX",
            vec![("expires_in", HUGE.into())],
            None,
            Expiry::Day,
        ),
        (
            "expires_in beyond u64",
            vec![("expires_in", HUGER.into())],
            None,
            Expiry::Day,
        ),
        (
            "expires_in 0",
            vec![("expires_in", "0".into())],
            None,
            Expiry::Expired,
        ),
        (
            "expires_in negative",
            vec![("expires_in", "-30".into())],
            None,
            Expiry::Expired,
        ),
        (
            "expires_in not a number",
            vec![("expires_in", "soon".into())],
            None,
            Expiry::None,
        ),
        (
            "issued_at u64::MAX",
            vec![("issued_at", HUGE.into())],
            None,
            Expiry::None,
        ),
        (
            "issued_at beyond u64",
            vec![("issued_at", HUGER.into())],
            None,
            Expiry::None,
        ),
        (
            "issued_at and expires_in u64::MAX",
            vec![("issued_at", HUGE.into()), ("expires_in", HUGE.into())],
            None,
            Expiry::Day,
        ),
        (
            "jwt exp u64::MAX",
            vec![("access_token", jwt_access_token(HUGE))],
            None,
            Expiry::Day,
        ),
        (
            "jwt exp 0",
            vec![("access_token", jwt_access_token("0"))],
            None,
            Expiry::Expired,
        ),
        ("session timeout u64::MAX", vec![], Some(never), Expiry::Day),
        (
            "session timeout Duration::MAX",
            vec![],
            Some(Duration::MAX),
            Expiry::Day,
        ),
        (
            "session timeout u64::MAX with issued_at u64::MAX",
            vec![("issued_at", HUGE.into())],
            Some(never),
            Expiry::Day,
        ),
        (
            "unreadable optional urls",
            vec![
                ("sfdc_community_url", "not a url".into()),
                ("api_instance_url", "ftp://x".into()),
            ],
            None,
            Expiry::None,
        ),
    ];
    for format in [
        ResponseFormat::Json,
        ResponseFormat::UrlEncoded,
        ResponseFormat::Xml,
    ] {
        for (name, extra, timeout, expiry) in &cases {
            let mut fields: Vec<(&str, String)> = vec![
                (
                    "access_token",
                    "00D5e000000Abcd!AQ4AQFakeAccessTokenValue".into(),
                ),
                ("refresh_token", "5Aep861Rotated".into()),
                ("instance_url", "https://acme.my.salesforce.com".into()),
                (
                    "id",
                    "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK".into(),
                ),
                ("token_type", "Bearer".into()),
            ];
            for (key, value) in extra {
                fields.retain(|(k, _)| k != key);
                fields.push((key, value.clone()));
            }
            let mut client = OAuthClient::new(LoginHost::Production, app()).with_format(format);
            if let Some(timeout) = timeout {
                client = client.with_session_timeout(*timeout);
            }
            let before = std::time::SystemTime::now();
            let tokens = run_once(
                &client,
                Grant::Refresh,
                Grant::Refresh.expect(ClientAuth::RequestBody, format),
                token_reply(format, &fields),
            )
            .await
            .unwrap_or_else(|e| panic!("{format:?} {name}: {e}"));
            let after = std::time::SystemTime::now();
            assert_eq!(
                tokens.refresh_token.unwrap().expose_secret(),
                "5Aep861Rotated",
                "{format:?} {name}"
            );
            let day = Duration::from_secs(86_400);
            let at = tokens.expires_at;
            match expiry {
                Expiry::None => assert_eq!(at, None, "{format:?} {name}"),
                Expiry::Expired => assert!(at.is_some_and(|at| at <= after), "{format:?} {name}"),
                Expiry::Day => assert!(
                    at.is_some_and(|at| before + day <= at && at <= after + day),
                    "{format:?} {name}: {at:?}"
                ),
            }
        }
    }
}

/// Defect 1 after the tokens were read: a 2xx that issued a refresh token but lacks what a
/// token set needs is an error that still carries the refresh token; one that issued nothing
/// is a plain parse error.
#[tokio::test]
async fn a_response_that_issued_a_refresh_token_never_loses_it() {
    let full = String::from_utf8(fixture("token_success.json")).unwrap();
    for (name, body) in [
        ("no id", full.replace(r#""id":"#, r#""idx":"#)),
        (
            "bad id",
            full.replace("/id/00D5e000000AbcdEAC", "/id/00D-bad"),
        ),
        (
            "no instance_url",
            full.replace(r#""instance_url":"#, r#""instance_urlx":"#),
        ),
        (
            "bad instance_url",
            full.replace("https://acme.my.salesforce.com", "javascript:alert(1)"),
        ),
        (
            "no access_token",
            full.replace(r#""access_token":"#, r#""access_tokenx":"#),
        ),
        // Unsigned because unreadable: the signature covers the text as sent.
        ("bad issued_at", full.replace("1700000000123", "yesterday")),
        (
            "an error next to the tokens",
            full.replace(
                r#""scope":"#,
                r#""error":"server_error","error_description":"x","scope":"#,
            ),
        ),
    ] {
        let error = check_json(Grant::Refresh, Reply::json(200, body))
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::TokensRejected(_)),
            "{name}: {error:?}"
        );
        assert_eq!(
            error
                .issued_refresh_token()
                .map(RefreshToken::expose_secret),
            Some("5Aep861FakeRefreshTokenValue"),
            "{name}"
        );
        assert_eq!(error.kind(), ErrorKind::Protocol, "{name}");
        assert!(error.may_have_been_spent(), "{name}");
        assert!(
            !format!("{error} {error:?}").contains("5Aep861Fake"),
            "{name}"
        );
    }
    let nothing = full
        .replace(r#""id":"#, r#""idx":"#)
        .replace(r#""refresh_token":"#, r#""refresh_tokenx":"#);
    let error = check_json(Grant::JwtBearer, Reply::json(200, nothing))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Parse { .. }), "{error:?}");
    assert!(error.issued_refresh_token().is_none());
}

#[tokio::test]
async fn introspection_exp_of_u64_max_is_a_day_at_most() {
    let client = client();
    let expect = Expect {
        url: "https://login.salesforce.com/services/oauth2/introspect".into(),
        ..Expect::token(
            &[
                ("token", ANY),
                ("token_type_hint", "access_token"),
                ("client_id", CLIENT_ID),
                ("client_secret", SECRET),
            ],
            RetrySafety::Idempotent,
        )
    };
    let script = Script::new(vec![(
        expect,
        Reply::json(200, r#"{"active":true,"exp":18446744073709551615}"#),
    )]);
    let introspection = client
        .introspect(
            &script.transport(),
            &SecretValue::new("00D5e000000Abcd!AQ4AQ"),
            Some(TokenTypeHint::AccessToken),
        )
        .await
        .unwrap();
    assert_eq!(introspection.exp, Some(u64::MAX));
    let mut tokens = check_json(Grant::Refresh, Reply::fixture("token_success.json"))
        .await
        .unwrap();
    let before = std::time::SystemTime::now();
    tokens.apply_introspection(&introspection);
    let after = std::time::SystemTime::now();
    let day = Duration::from_secs(86_400);
    let at = tokens.expires_at.unwrap();
    assert!(before + day <= at && at <= after + day, "{at:?}");
}

#[tokio::test]
async fn device_numbers_are_bounded() {
    let client = OAuthClient::new(LoginHost::Production, ConnectedApp::new(CLIENT_ID));
    for (interval, expected) in [
        ("18446744073709551615", sfauth_core::flows::MAX_INTERVAL),
        ("0", sfauth_core::flows::MIN_INTERVAL),
        ("7", Duration::from_secs(7)),
    ] {
        let start = Expect::token(
            &[
                ("response_type", "device_code"),
                ("client_id", CLIENT_ID),
                ("format", "json"),
            ],
            RetrySafety::Idempotent,
        );
        let body = format!(
            r#"{{"device_code":"M2Fk","user_code":"ABCD1234","verification_uri":"https://login.salesforce.com/setup/connect","interval":{interval},"expires_in":18446744073709551615}}"#
        );
        let script = Script::new(vec![(start, Reply::json(200, body))]);
        let before = std::time::SystemTime::now();
        let authorization = client
            .device_start(&script.transport(), None)
            .await
            .unwrap();
        assert_eq!(authorization.interval, expected, "{interval}");
        let expires_at = authorization.expires_at.unwrap();
        assert!(expires_at >= before + sfauth_core::flows::MAX_DEVICE_CODE_LIFETIME);
        assert!(
            expires_at
                <= std::time::SystemTime::now() + sfauth_core::flows::MAX_DEVICE_CODE_LIFETIME
        );
    }
}

/// Issue 11, defect 4: a server that echoes secrets in its `error_description` (the leak that
/// got through was `access_token=00DLEAKED2`) or in a non-OAuth error body has them scrubbed
/// from the error, in every format, while the description is still classified as sent.
#[tokio::test]
async fn secrets_echoed_by_the_server_never_reach_the_error() {
    let leaks = [
        "expired access/refresh token access_token=00DLEAKED2",
        "expired access/refresh token for session 00D5e000000AbcdE!AQ4AQLEAKED3.xyz",
        "expired access/refresh token, refresh_token: \"5Aep861LEAKED4\"",
        "expired access/refresh token <client_secret>LEAKED5</client_secret>",
        "expired access/refresh token Bearer eyJhbGciOiJIUzI1NiJ9.eyJMRUFLRUQ2IjoxfQ.c2ln",
    ];
    for format in [
        ResponseFormat::Json,
        ResponseFormat::UrlEncoded,
        ResponseFormat::Xml,
    ] {
        for description in leaks {
            let reply = error_body(format, "invalid_grant", Some(description));
            let error = check(Grant::Refresh, ClientAuth::RequestBody, format, reply)
                .await
                .unwrap_err();
            let server = error.server().unwrap();
            assert_eq!(
                server.cause(),
                Cause::TokenExpiredOrRevoked,
                "{description}"
            );
            assert!(error.is_salesforce_answer());
            let shown = format!("{error} {error:?} {:?}", server.description());
            assert!(!shown.contains("LEAKED"), "{format:?}: {shown}");
            assert!(!shown.contains("eyJMRUFL"), "{format:?}: {shown}");
            // In XML an unescaped `<client_secret>` is an element of its own, not text.
            let nested = format == ResponseFormat::Xml && description.contains('<');
            assert!(
                nested || shown.contains("[redacted]"),
                "{format:?}: {shown}"
            );
        }
    }
    // Not an OAuth error document: the body excerpt is scrubbed as well, short values included.
    for body in [
        "<html>proxy error for ?code=LEAKED7&state=x</html>",
        "upstream said access_token=00DLEAKED8",
    ] {
        let error = check_json(Grant::Refresh, Reply::new(502, Some("text/html"), body))
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::Status { status: 502, .. }),
            "{error:?}"
        );
        assert!(!error.is_salesforce_answer());
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("LEAKED"), "{shown}");
    }
}

/// Types that hold whatever a server sent print it scrubbed.
#[test]
fn debug_of_server_data_is_scrubbed() {
    let json = r#"{"sub":"x","email":"a@b.c","session":"00D5e000000AbcdE!AQ4AQLEAKED9","access_token":"LEAKED10","urls":{}}"#;
    let userinfo: sfauth_core::flows::UserInfo = serde_json::from_str(json).unwrap();
    let identity: sfauth_core::flows::IdentityInfo = serde_json::from_str(json).unwrap();
    let introspection: sfauth_core::flows::Introspection =
        serde_json::from_str(r#"{"active":true,"username":"access_token=LEAKED11"}"#).unwrap();
    let shown = format!("{userinfo:?} {identity:?} {introspection:?}");
    assert!(!shown.contains("LEAKED"), "{shown}");
    assert!(
        shown.contains("a@b.c") && shown.starts_with("UserInfo {"),
        "{shown}"
    );
}
