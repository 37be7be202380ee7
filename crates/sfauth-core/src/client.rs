//! [`OAuthClient`]: a login host plus a connected app, the receiver of every flow.
//!
//! It holds no state beyond its configuration and does no I/O of its own: each flow method
//! builds a request, sends it over the `&dyn HttpTransport` it is given, and parses the answer.
//! The request building and response parsing shared by all token-endpoint grants live here, once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};

use crate::app::{ClientAuth, ConnectedApp, SecretSlot};
use crate::error::{Cause, Context, Error, RejectedTokens};
use crate::format::{Fields, ResponseFormat, read_response};
use crate::host::{Endpoints, LoginHost};
use crate::http::{HttpRequest, HttpResponse, HttpTransport, RetrySafety};
use crate::secret::{AccessToken, ClientSecret, IdToken, RefreshToken};
use crate::token::{IdentityUrl, TokenSet, from_millis};

/// A login host and a connected app: everything a flow needs besides its own inputs.
///
/// ```
/// use sfauth_core::{ConnectedApp, LoginHost, OAuthClient};
/// use sfauth_core::format::ResponseFormat;
/// use std::time::Duration;
///
/// let client = OAuthClient::new(LoginHost::Sandbox, ConnectedApp::new("3MVG9.key"))
///     .with_format(ResponseFormat::Json)
///     .with_session_timeout(Duration::from_secs(2 * 3600));
/// assert_eq!(client.endpoints().token.as_str(), "https://test.salesforce.com/services/oauth2/token");
/// ```
#[derive(Clone, Debug)]
pub struct OAuthClient {
    host: LoginHost,
    endpoints: Endpoints,
    app: ConnectedApp,
    format: ResponseFormat,
    session_timeout: Option<Duration>,
    /// Which of two secrets goes first, learned from Salesforce's answers and shared by clones,
    /// so that a manager's refreshes and its logins stop sending a retired secret together.
    secrets: Arc<SecretChoice>,
}

/// What a client learned about its two secrets (the one runtime state a client has).
#[derive(Debug, Default)]
struct SecretChoice {
    next_first: AtomicBool,
    switches: AtomicU64,
}

impl OAuthClient {
    /// A client for `app` on `host`, asking for JSON responses, with no session timeout.
    pub fn new(host: LoginHost, app: ConnectedApp) -> Self {
        Self {
            endpoints: host.endpoints(),
            host,
            app,
            format: ResponseFormat::Json,
            session_timeout: None,
            secrets: Arc::default(),
        }
    }

    /// Asks for responses in `format` (`format` parameter and `Accept` header).
    #[must_use]
    pub fn with_format(mut self, format: ResponseFormat) -> Self {
        self.format = format;
        self
    }

    /// The session timeout configured for the app or org, used as the last resort for
    /// [`TokenSet::expires_at`]; see [`crate::token`].
    #[must_use]
    pub fn with_session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = Some(timeout);
        self
    }

    /// The login host.
    pub fn host(&self) -> &LoginHost {
        &self.host
    }

    /// The endpoints requests go to.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The connected app.
    pub fn app(&self) -> &ConnectedApp {
        &self.app
    }

    /// The configured session timeout, if any.
    pub fn session_timeout(&self) -> Option<Duration> {
        self.session_timeout
    }

    /// The requested response format.
    pub fn format(&self) -> ResponseFormat {
        self.format
    }

    /// The consumer secret requests are authenticated with first: the current one until
    /// Salesforce refuses it and accepts the next one (see
    /// [`ConnectedApp::with_next_secret`]), then the next one. `None` for a public client.
    /// Clones of a client share what it learned.
    ///
    /// ```
    /// use sfauth_core::{ConnectedApp, LoginHost, OAuthClient, SecretSlot};
    ///
    /// let app = ConnectedApp::new("3MVG9.key").with_secret("old").with_next_secret("new");
    /// let client = OAuthClient::new(LoginHost::Production, app);
    /// assert_eq!(client.secret_in_use(), Some(SecretSlot::Current));
    /// assert_eq!(client.secret_switches(), 0);
    /// ```
    pub fn secret_in_use(&self) -> Option<SecretSlot> {
        match (self.app.client_secret(), self.app.next_secret()) {
            (None, None) => None,
            (Some(_), None) => Some(SecretSlot::Current),
            (None, Some(_)) => Some(SecretSlot::Next),
            (Some(_), Some(_)) if self.secrets.next_first.load(Ordering::Acquire) => {
                Some(SecretSlot::Next)
            }
            (Some(_), Some(_)) => Some(SecretSlot::Current),
        }
    }

    /// How many times this client (or a clone) switched secrets because Salesforce refused one
    /// and accepted the other.
    pub fn secret_switches(&self) -> u64 {
        self.secrets.switches.load(Ordering::Acquire)
    }

    /// Sends `request` authenticated with the secret in use; when Salesforce refuses that secret
    /// in its own words and the app has another, sends it once more with the other and, if that
    /// one is accepted, keeps using it. Safe for single-use grants: a request refused at client
    /// authentication was not carried out (see [`crate::app`]).
    pub(crate) async fn with_secret_fallback<T, F, Fut>(
        &self,
        authenticate: bool,
        mut send: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Option<SecretSlot>) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let slot = if authenticate {
            self.secret_in_use()
        } else {
            None
        };
        let first = send(slot).await;
        let (Some(slot), Err(error)) = (slot, &first) else {
            return first;
        };
        let other = slot.other();
        if !secret_refused(error) || self.app.secret(other).is_none() {
            return first;
        }
        let second = send(Some(other)).await;
        let accepted = match &second {
            Ok(_) | Err(Error::TokensRejected(_)) => true,
            // Any other answer in Salesforce's words came after client authentication passed.
            Err(error) => error.is_salesforce_answer() && !secret_refused(error),
        };
        if accepted {
            self.secrets
                .next_first
                .store(other == SecretSlot::Next, Ordering::Release);
            self.secrets.switches.fetch_add(1, Ordering::AcqRel);
        }
        second
    }

    /// A form POST to `url` with client authentication (when `authenticate`) and the `Accept`
    /// header of the configured format, marked with `safety`.
    ///
    /// Values are borrowed, not owned: most are secrets (refresh tokens, passwords, codes,
    /// assertions, the client secret) that live in zeroizing types, and an owned copy here
    /// would outlive the request unzeroized. The encoded body is the one copy left.
    pub(crate) fn form_post<'a>(
        &'a self,
        url: &url::Url,
        params: Vec<(&'a str, &'a str)>,
        authenticate: bool,
        safety: RetrySafety,
    ) -> Result<HttpRequest, Error> {
        let slot = if authenticate {
            Some(self.secret_in_use())
        } else {
            None
        };
        self.form_post_as(url, params, slot, safety)
    }

    /// [`form_post`](Self::form_post) with the secret in `slot`: `None` does not authenticate,
    /// `Some(None)` sends the client id only (a public client).
    pub(crate) fn form_post_as<'a>(
        &'a self,
        url: &url::Url,
        mut params: Vec<(&'a str, &'a str)>,
        slot: Option<Option<SecretSlot>>,
        safety: RetrySafety,
    ) -> Result<HttpRequest, Error> {
        let mut builder = http::Request::post(url.as_str())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, self.format.accept());
        if let Some(slot) = slot {
            let secret = slot.and_then(|slot| self.app.secret(slot));
            match (self.app.client_auth(), secret) {
                (ClientAuth::Basic, Some(secret)) => {
                    // RFC 6749 §2.3.1: id and secret are form-urlencoded before base64, so that
                    // a `:` or non-ASCII in either survives; Salesforce accepts both forms,
                    // strict servers only this one.
                    let encode = |text: &str| -> String {
                        url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
                    };
                    let credentials = format!(
                        "{}:{}",
                        encode(self.app.client_id()),
                        encode(secret.expose_secret())
                    );
                    let encoded =
                        base64::engine::general_purpose::STANDARD.encode(credentials.as_bytes());
                    builder =
                        builder.header(AUTHORIZATION, sensitive(&format!("Basic {encoded}"))?);
                }
                (_, secret) => {
                    params.push(("client_id", self.app.client_id()));
                    if let Some(secret) = secret {
                        params.push(("client_secret", secret.expose_secret()));
                    }
                }
            }
        }
        let body = serde_urlencoded::to_string(&params)
            .map_err(|_| Error::config("request parameters cannot be form-encoded"))?;
        let mut request = builder
            .body(Bytes::from(body))
            .map_err(|e| Error::config(format!("invalid request url: {e}")))?;
        request.extensions_mut().insert(safety);
        Ok(request)
    }

    /// Sends a token-endpoint grant and parses the answer into a [`TokenSet`].
    /// With two secrets configured, a refused secret is tried once with the other
    /// ([`with_secret_fallback`](Self::with_secret_fallback)).
    pub(crate) async fn token_grant(
        &self,
        transport: &dyn HttpTransport,
        mut grant_params: Vec<(&str, &str)>,
        authenticate: bool,
        safety: RetrySafety,
        context: Context,
    ) -> Result<TokenSet, Error> {
        grant_params.push(("format", self.format.param()));
        let grant_params = &grant_params;
        self.with_secret_fallback(authenticate, |slot| async move {
            let auth = authenticate.then_some(slot);
            let request =
                self.form_post_as(&self.endpoints.token, grant_params.clone(), auth, safety)?;
            let response = transport.send(request).await?;
            let secret = slot.and_then(|slot| self.app.secret(slot));
            self.parse_token_response(&response, context, secret)
        })
        .await
    }

    /// Parses a token endpoint's answer, checks its signature with `secret` (the one the
    /// request was authenticated with: Salesforce signs with the secret it was sent) when there
    /// is one, and learns its expiry.
    pub(crate) fn parse_token_response(
        &self,
        response: &HttpResponse,
        context: Context,
        secret: Option<&ClientSecret>,
    ) -> Result<TokenSet, Error> {
        let fields = read_response(response, context)?;
        let status = response.status().as_u16();
        self.token_set_from_fields(
            fields,
            status,
            response.body(),
            SystemTime::now(),
            &[secret],
        )
    }

    /// Builds a [`TokenSet`] from response fields (a token endpoint body or a user-agent
    /// fragment); `status` and `body` only feed error messages.
    ///
    /// Once the fields hold tokens, Salesforce has acted (with rotation on, the refresh token
    /// sent is spent), so nothing after reading them may lose them:
    ///
    /// - hints that can be wrong without harm are read leniently: an unreadable `issued_at`,
    ///   `expires_in`, `sfdc_community_url` or `api_instance_url` is dropped (the signature
    ///   covers `issued_at` as sent, so dropping it weakens nothing), and expiry arithmetic
    ///   cannot fail (see [`crate::token`]);
    /// - a check that must be able to fail (the signature; a missing or invalid `id` or
    ///   `instance_url`, without which there is no token set) fails with
    ///   [`Error::TokensRejected`], which carries the token set, or at least the refresh token.
    ///
    /// The signature is checked against `secrets`: it passes when any of them signed it (the
    /// user-agent flow sends no secret, so either secret of a rotation may have signed).
    pub(crate) fn token_set_from_fields(
        &self,
        mut fields: Fields,
        status: u16,
        body: &[u8],
        now: SystemTime,
        secrets: &[Option<&ClientSecret>],
    ) -> Result<TokenSet, Error> {
        let missing =
            |field: &str| Error::parse(status, format!("token response has no {field}"), body);
        let invalid = |field: &str| {
            Error::parse(
                status,
                format!("token response has an invalid {field}"),
                body,
            )
        };
        // Taken first, so that no failure below can drop it.
        let refresh_token = fields.take("refresh_token").map(RefreshToken::new);
        let rejected = |reason: Error, tokens: Option<TokenSet>, refresh_token| match (
            &tokens,
            &refresh_token,
        ) {
            (None, None) => reason,
            _ => {
                Error::TokensRejected(Box::new(RejectedTokens::new(reason, tokens, refresh_token)))
            }
        };
        let Some(access_token) = fields.take("access_token") else {
            return Err(rejected(missing("access_token"), None, refresh_token));
        };
        let Some(id_raw) = fields.take("id") else {
            return Err(rejected(missing("id"), None, refresh_token));
        };
        let Ok(identity) = id_raw.parse::<IdentityUrl>() else {
            return Err(rejected(invalid("id"), None, refresh_token));
        };
        let Some(instance_url) = fields.take("instance_url") else {
            return Err(rejected(missing("instance_url"), None, refresh_token));
        };
        let Some(instance_url) = parse_url(&instance_url) else {
            return Err(rejected(invalid("instance_url"), None, refresh_token));
        };
        let issued_at_raw = fields.take("issued_at");
        let signature = fields.take("signature");
        let verified = match &signature {
            Some(signature) => {
                let mut result = Ok(());
                for secret in secrets.iter().flatten() {
                    result = crate::signature::verify(
                        secret,
                        &id_raw,
                        issued_at_raw.as_deref().unwrap_or_default(),
                        signature,
                    );
                    if result.is_ok() {
                        break;
                    }
                }
                result
            }
            None => Ok(()),
        };
        let mut tokens = TokenSet::new(AccessToken::new(access_token), instance_url, identity);
        tokens.refresh_token = refresh_token;
        tokens.issued_at = issued_at_raw
            .as_deref()
            .and_then(|raw| raw.trim().parse::<u64>().ok())
            .and_then(from_millis);
        tokens.signature = signature;
        tokens.scope = fields.take("scope");
        tokens.token_type = fields.take("token_type");
        tokens.id_token = fields.take("id_token").map(IdToken::new);
        tokens.community_url = fields
            .take("sfdc_community_url")
            .and_then(|raw| parse_url(&raw));
        tokens.community_id = fields.take("sfdc_community_id");
        tokens.api_instance_url = fields
            .take("api_instance_url")
            .and_then(|raw| parse_url(&raw));
        let expires_in = fields.take("expires_in").and_then(|raw| seconds(&raw));
        tokens.learn_expiry(expires_in, self.session_timeout, now);
        match verified {
            Ok(()) => Ok(tokens),
            Err(reason) => Err(rejected(reason, Some(tokens), None)),
        }
    }
}

/// A count of seconds as a server may spell it: digits (saturating at `u64::MAX` when there
/// are too many), or a negative count, read as 0. Anything else is `None`.
fn seconds(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    let (negative, digits) = match raw.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, raw.strip_prefix('+').unwrap_or(raw)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if negative {
        return Some(0);
    }
    Some(digits.parse::<u64>().unwrap_or(u64::MAX))
}

/// Whether Salesforce itself refused the request's consumer secret (not a gateway's 401).
fn secret_refused(error: &Error) -> bool {
    error.server().is_some_and(|server| {
        server.is_salesforce_answer() && server.cause() == Cause::ClientSecretRejected
    })
}

/// A header value marked sensitive, so that `http`'s `Debug` of the request hides it.
pub(crate) fn sensitive(value: &str) -> Result<http::HeaderValue, Error> {
    let mut value = http::HeaderValue::from_str(value)
        .map_err(|_| Error::config("credential contains characters not allowed in a header"))?;
    value.set_sensitive(true);
    Ok(value)
}

fn parse_url(raw: &str) -> Option<url::Url> {
    url::Url::parse(raw.trim())
        .ok()
        .filter(|url| matches!(url.scheme(), "https" | "http"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConnectedApp, LoginHost};

    #[test]
    fn seconds_as_servers_spell_them() {
        for (raw, expected) in [
            ("3600", Some(3600)),
            (" 0 ", Some(0)),
            ("+5", Some(5)),
            ("-5", Some(0)),
            ("18446744073709551615", Some(u64::MAX)),
            ("99999999999999999999999999", Some(u64::MAX)),
            ("-99999999999999999999999999", Some(0)),
            ("1.5", None),
            ("soon", None),
            ("-", None),
            ("", None),
        ] {
            assert_eq!(seconds(raw), expected, "{raw}");
        }
    }

    /// Borrowed values are form-encoded exactly as the owned ones were: reserved characters in
    /// a secret are percent-encoded, and the client credentials follow the grant's fields.
    #[test]
    fn basic_auth_form_urlencodes_id_and_secret_before_base64() {
        let app = ConnectedApp::new("id:1+é")
            .with_secret("s&e=c r%t:")
            .with_client_auth(ClientAuth::Basic);
        let client = OAuthClient::new(LoginHost::Production, app);
        let url = url::Url::parse("https://login.salesforce.com/services/oauth2/token").unwrap();
        let request = client
            .form_post(
                &url,
                vec![("grant_type", "x")],
                true,
                RetrySafety::Idempotent,
            )
            .unwrap();
        let header = request.headers()[AUTHORIZATION].to_str().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(header.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            "id%3A1%2B%C3%A9:s%26e%3Dc+r%25t%3A"
        );
        assert_eq!(request.body().as_ref(), b"grant_type=x");
    }

    /// A token endpoint that accepts only `accepted` as the secret (from the body), refusing
    /// others as Salesforce does, and records the secret of every request.
    fn endpoint(
        accepted: &'static str,
        seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    ) -> impl Fn(HttpRequest) -> std::future::Ready<Result<HttpResponse, crate::http::TransportError>>
    {
        move |request: HttpRequest| {
            let secret = url::form_urlencoded::parse(request.body())
                .find(|(name, _)| name == "client_secret")
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default();
            seen.lock().unwrap().push(secret.clone());
            let (status, body) = if secret == accepted {
                (
                    200,
                    r#"{"access_token":"00D5e000000Abcd!AQ4AQ","instance_url":"https://acme.my.salesforce.com","id":"https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK","token_type":"Bearer"}"#,
                )
            } else {
                (
                    400,
                    r#"{"error":"invalid_client","error_description":"invalid client credentials"}"#,
                )
            };
            let mut response = HttpResponse::new(Bytes::from_static(body.as_bytes()));
            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
            response.headers_mut().insert(
                CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            std::future::ready(Ok(response))
        }
    }

    #[tokio::test]
    async fn a_refused_secret_is_retried_once_with_the_other_which_then_goes_first() {
        let app = ConnectedApp::new("id")
            .with_secret("old")
            .with_next_secret("new");
        let client = OAuthClient::new(LoginHost::Production, app);
        let seen = std::sync::Arc::default();
        let transport = endpoint("new", std::sync::Arc::clone(&seen));
        let token = RefreshToken::new("5Aep861");
        client.refresh(&transport, &token).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), ["old", "new"]);
        assert_eq!(client.secret_in_use(), Some(SecretSlot::Next));
        assert_eq!(client.secret_switches(), 1);
        // A clone (the manager's, the CLI's) sends the one that worked first, once.
        client.clone().refresh(&transport, &token).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), ["old", "new", "new"]);

        // Both refused: one retry, no switch, Salesforce's own words come back.
        let app = ConnectedApp::new("id")
            .with_secret("a")
            .with_next_secret("b");
        let client = OAuthClient::new(LoginHost::Production, app);
        let seen = std::sync::Arc::default();
        let error = client
            .refresh(&endpoint("c", std::sync::Arc::clone(&seen)), &token)
            .await
            .unwrap_err();
        assert_eq!(*seen.lock().unwrap(), ["a", "b"]);
        assert_eq!(
            error.server().map(|s| s.cause()),
            Some(Cause::ClientSecretRejected)
        );
        assert_eq!(client.secret_in_use(), Some(SecretSlot::Current));
        assert_eq!(client.secret_switches(), 0);

        // One secret: nothing to fall back to.
        let client = OAuthClient::new(
            LoginHost::Production,
            ConnectedApp::new("id").with_secret("a"),
        );
        let seen = std::sync::Arc::default();
        client
            .refresh(&endpoint("b", std::sync::Arc::clone(&seen)), &token)
            .await
            .unwrap_err();
        assert_eq!(*seen.lock().unwrap(), ["a"]);
    }

    #[tokio::test]
    async fn only_salesforce_refusing_the_secret_triggers_the_other() {
        let app = ConnectedApp::new("id")
            .with_secret("old")
            .with_next_secret("new");
        let client = OAuthClient::new(LoginHost::Production, app);
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for body in [
            r#"{"error":"invalid_grant","error_description":"expired access/refresh token"}"#,
            // A gateway's bare 401 is not Salesforce refusing the secret.
            "<html>401</html>",
        ] {
            let counted = std::sync::Arc::clone(&calls);
            let transport = move |_request: HttpRequest| {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut response = HttpResponse::new(Bytes::from_static(body.as_bytes()));
                *response.status_mut() =
                    http::StatusCode::from_u16(if body.starts_with('<') { 401 } else { 400 })
                        .unwrap();
                std::future::ready(Ok::<_, crate::http::TransportError>(response))
            };
            client
                .refresh(&transport, &RefreshToken::new("5Aep861"))
                .await
                .unwrap_err();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(client.secret_switches(), 0);
    }

    #[test]
    fn form_post_encodes_borrowed_secrets() {
        let app = ConnectedApp::new("id+1").with_secret("s&e=c r%t");
        let client = OAuthClient::new(LoginHost::Production, app);
        let password = String::from("p@ss&word=1 +tok");
        let url = url::Url::parse("https://login.salesforce.com/services/oauth2/token").unwrap();
        let request = client
            .form_post(
                &url,
                vec![("grant_type", "password"), ("password", password.as_str())],
                true,
                RetrySafety::Idempotent,
            )
            .unwrap();
        assert_eq!(
            request.body().as_ref(),
            b"grant_type=password&password=p%40ss%26word%3D1+%2Btok\
              &client_id=id%2B1&client_secret=s%26e%3Dc+r%25t"
        );
        let decoded: Vec<(String, String)> = url::form_urlencoded::parse(request.body())
            .into_owned()
            .collect();
        let expected = [
            ("grant_type", "password"),
            ("password", password.as_str()),
            ("client_id", "id+1"),
            ("client_secret", "s&e=c r%t"),
        ];
        assert_eq!(decoded.len(), expected.len());
        for ((key, value), (want_key, want_value)) in decoded.iter().zip(expected) {
            assert_eq!((key.as_str(), value.as_str()), (want_key, want_value));
        }
        assert_eq!(RetrySafety::of(&request), RetrySafety::Idempotent);
        assert!(request.headers().get(AUTHORIZATION).is_none());
    }
}
