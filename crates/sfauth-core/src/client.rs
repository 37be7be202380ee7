//! [`OAuthClient`]: a login host plus a connected app, the receiver of every flow.
//!
//! It holds no state beyond its configuration and does no I/O of its own: each flow method
//! builds a request, sends it over the `&dyn HttpTransport` it is given, and parses the answer.
//! The request building and response parsing shared by all token-endpoint grants live here, once.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};

use crate::app::{ClientAuth, ConnectedApp};
use crate::error::{Context, Error, RejectedTokens};
use crate::format::{Fields, ResponseFormat, read_response};
use crate::host::{Endpoints, LoginHost};
use crate::http::{HttpRequest, HttpResponse, HttpTransport, RetrySafety};
use crate::secret::{AccessToken, IdToken, RefreshToken};
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

    /// A form POST to `url` with client authentication (when `authenticate`) and the `Accept`
    /// header of the configured format, marked with `safety`.
    ///
    /// Values are borrowed, not owned: most are secrets (refresh tokens, passwords, codes,
    /// assertions, the client secret) that live in zeroizing types, and an owned copy here
    /// would outlive the request unzeroized. The encoded body is the one copy left.
    pub(crate) fn form_post<'a>(
        &'a self,
        url: &url::Url,
        mut params: Vec<(&'a str, &'a str)>,
        authenticate: bool,
        safety: RetrySafety,
    ) -> Result<HttpRequest, Error> {
        let mut builder = http::Request::post(url.as_str())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, self.format.accept());
        if authenticate {
            match (self.app.client_auth(), self.app.client_secret()) {
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
    pub(crate) async fn token_grant(
        &self,
        transport: &dyn HttpTransport,
        mut grant_params: Vec<(&str, &str)>,
        authenticate: bool,
        safety: RetrySafety,
        context: Context,
    ) -> Result<TokenSet, Error> {
        grant_params.push(("format", self.format.param()));
        let request = self.form_post(&self.endpoints.token, grant_params, authenticate, safety)?;
        let response = transport.send(request).await?;
        self.parse_token_response(&response, context)
    }

    /// Parses a token endpoint's answer, checks its signature when the app has a secret, and
    /// learns its expiry.
    pub(crate) fn parse_token_response(
        &self,
        response: &HttpResponse,
        context: Context,
    ) -> Result<TokenSet, Error> {
        let fields = read_response(response, context)?;
        let status = response.status().as_u16();
        self.token_set_from_fields(fields, status, response.body(), SystemTime::now())
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
    pub(crate) fn token_set_from_fields(
        &self,
        mut fields: Fields,
        status: u16,
        body: &[u8],
        now: SystemTime,
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
        let verified = match (self.app.client_secret(), &signature) {
            (Some(secret), Some(signature)) => crate::signature::verify(
                secret,
                &id_raw,
                issued_at_raw.as_deref().unwrap_or_default(),
                signature,
            ),
            _ => Ok(()),
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
            .form_post(&url, vec![("grant_type", "x")], true, RetrySafety::Idempotent)
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
