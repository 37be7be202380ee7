//! Who the user is: the OIDC userinfo endpoint, Salesforce's identity URL, and ID token
//! validation against the JWKS at `/id/keys`.
//!
//! These endpoints return nested JSON (`photos`, `urls`, `address`), so they are read as JSON
//! only; the commonly used fields are typed and the rest is kept in `other`.

use std::collections::BTreeMap;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::client::OAuthClient;
use crate::error::{Context, Error};
use crate::format::{MAX_BODY_LEN, read_response};
use crate::http::{HttpResponse, HttpTransport};
use crate::secret::{AccessToken, IdToken};
use crate::token::TokenSet;

/// The answer of `GET /services/oauth2/userinfo`.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UserInfo {
    /// The identity URL.
    #[serde(default)]
    pub sub: Option<String>,
    /// The user id.
    #[serde(default)]
    pub user_id: Option<String>,
    /// The org id.
    #[serde(default)]
    pub organization_id: Option<String>,
    /// The username.
    #[serde(default)]
    pub preferred_username: Option<String>,
    /// The full name.
    #[serde(default)]
    pub name: Option<String>,
    /// The email address.
    #[serde(default)]
    pub email: Option<String>,
    /// Whether the user is active.
    #[serde(default)]
    pub active: Option<bool>,
    /// `STANDARD`, `PORTAL`, …
    #[serde(default)]
    pub user_type: Option<String>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// The answer of the identity URL (`GET https://login.salesforce.com/id/{org}/{user}`).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct IdentityInfo {
    /// The identity URL itself.
    #[serde(default)]
    pub id: Option<String>,
    /// The user id.
    #[serde(default)]
    pub user_id: Option<String>,
    /// The org id.
    #[serde(default)]
    pub organization_id: Option<String>,
    /// The username.
    #[serde(default)]
    pub username: Option<String>,
    /// The display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The email address.
    #[serde(default)]
    pub email: Option<String>,
    /// Whether the user is active.
    #[serde(default)]
    pub active: Option<bool>,
    /// `STANDARD`, …
    #[serde(default)]
    pub user_type: Option<String>,
    /// API URLs (`rest`, `sobjects`, …), templated with `{version}` unless a version was asked.
    #[serde(default)]
    pub urls: BTreeMap<String, String>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// Claims of a validated ID token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct IdTokenClaims {
    /// The identity URL of the user.
    pub sub: String,
    /// The issuer (login host or My Domain).
    pub iss: String,
    /// The client id (a string or a list of them).
    pub aud: serde_json::Value,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issue time, seconds since the Unix epoch.
    #[serde(default)]
    pub iat: Option<u64>,
    /// The nonce sent in the authorization request.
    #[serde(default)]
    pub nonce: Option<String>,
    /// Every other claim.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// What an ID token must satisfy besides its signature. Build it with struct update syntax from
/// `Default::default()`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdTokenCheck {
    /// Accepted issuers; empty accepts the login host's base URL only.
    pub issuers: Vec<String>,
    /// The nonce sent in the authorization request, which the token must carry.
    pub nonce: Option<String>,
}

impl OAuthClient {
    /// `GET /services/oauth2/userinfo` with the access token as a Bearer header. A dead access
    /// token (401, or the identity service's 403 `Bad_OAuth_Token`) is
    /// [`ErrorKind::SessionExpired`](crate::ErrorKind::SessionExpired).
    pub async fn userinfo(
        &self,
        transport: &dyn HttpTransport,
        access_token: &AccessToken,
    ) -> Result<UserInfo, Error> {
        let request = self.json_get(self.endpoints().userinfo.as_str(), Some(access_token))?;
        let response = transport.send(request).await?;
        read_json(&response)
    }

    /// `GET` the identity URL of `tokens` with its access token. Salesforce serves it on the
    /// login host, as sent in the token response.
    pub async fn identity(
        &self,
        transport: &dyn HttpTransport,
        tokens: &TokenSet,
    ) -> Result<IdentityInfo, Error> {
        let request = self.json_get(tokens.identity.as_str(), Some(&tokens.access_token))?;
        let response = transport.send(request).await?;
        read_json(&response)
    }

    /// Fetches the JWKS (`/id/keys`) and validates `id_token` against it; see
    /// [`validate_id_token_with_jwks`](Self::validate_id_token_with_jwks).
    pub async fn validate_id_token(
        &self,
        transport: &dyn HttpTransport,
        id_token: &IdToken,
        check: &IdTokenCheck,
    ) -> Result<IdTokenClaims, Error> {
        let request = self.json_get(self.endpoints().jwks.as_str(), None)?;
        let response = transport.send(request).await?;
        let jwks: JwkSet = read_json(&response)?;
        self.validate_id_token_with_jwks(&jwks, id_token, check)
    }

    /// Validates `id_token` against `jwks`: RS256 signature by the key named in its `kid`,
    /// `aud` = this app's client id, `iss` among `check.issuers`, not expired (60 s leeway), and
    /// the nonce when one is expected.
    pub fn validate_id_token_with_jwks(
        &self,
        jwks: &JwkSet,
        id_token: &IdToken,
        check: &IdTokenCheck,
    ) -> Result<IdTokenClaims, Error> {
        let token = id_token.expose_secret();
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Error::IdToken("header is not a jwt header".into()))?;
        if header.alg != Algorithm::RS256 {
            return Err(Error::IdToken(format!(
                "algorithm {:?} is not rs256",
                header.alg
            )));
        }
        let jwk = match &header.kid {
            Some(kid) => jwks.find(kid),
            None if jwks.keys.len() == 1 => jwks.keys.first(),
            None => None,
        }
        .ok_or_else(|| Error::IdToken("no key in the jwks matches the token's kid".into()))?;
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|_| Error::IdToken("jwks key is not usable".into()))?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[self.app().client_id()]);
        let issuers = if check.issuers.is_empty() {
            vec![self.host().key()]
        } else {
            check.issuers.clone()
        };
        validation.set_issuer(&issuers);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 60;
        super::jwt::crypto_backend()?;
        let data =
            jsonwebtoken::decode::<IdTokenClaims>(token, &key, &validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                Error::IdToken(
                    match e.kind() {
                        K::InvalidSignature => "signature does not verify",
                        K::ExpiredSignature => "token has expired",
                        K::InvalidAudience => "audience is not this client",
                        K::InvalidIssuer => "issuer is not accepted",
                        K::MissingRequiredClaim(_) => "a required claim is missing",
                        // Also a header marking an extension `crit` (RFC 7515 §4.1.11) that
                        // jsonwebtoken does not implement: it must not be accepted as if absent.
                        _ => "token is malformed",
                    }
                    .into(),
                )
            })?;
        if let Some(expected) = &check.nonce
            && data.claims.nonce.as_deref() != Some(expected.as_str())
        {
            return Err(Error::IdToken("nonce does not match".into()));
        }
        Ok(data.claims)
    }

    fn json_get(
        &self,
        url: &str,
        token: Option<&AccessToken>,
    ) -> Result<crate::http::HttpRequest, Error> {
        let mut builder = http::Request::get(url).header(http::header::ACCEPT, "application/json");
        if let Some(token) = token {
            builder = builder.header(
                http::header::AUTHORIZATION,
                crate::client::sensitive(&format!("Bearer {}", token.expose_secret()))?,
            );
        }
        let mut request = builder
            .body(bytes::Bytes::new())
            .map_err(|e| Error::config(format!("invalid request url: {e}")))?;
        request
            .extensions_mut()
            .insert(crate::http::RetrySafety::Idempotent);
        Ok(request)
    }
}

fn read_json<T: DeserializeOwned>(response: &HttpResponse) -> Result<T, Error> {
    let status = response.status().as_u16();
    let body = response.body();
    if status == 401 || (status == 403 && is_bad_oauth_token(body)) {
        return Err(Error::SessionExpired { status });
    }
    if !response.status().is_success() {
        read_response(response, Context::Other)?;
    }
    if body.len() > MAX_BODY_LEN {
        return Err(Error::parse(status, "response body too large", body));
    }
    serde_json::from_slice(body).map_err(|e| {
        Error::parse(
            status,
            format!("invalid json at line {} column {}", e.line(), e.column()),
            body,
        )
    })
}

/// Whether a 403 body is the identity service's `Bad_OAuth_Token`: Salesforce's userinfo and
/// identity URL answer a dead or unknown access token with 403 and that one word (where the REST
/// API answers 401 `INVALID_SESSION_ID`), and a refresh fixes it. Other 403 codes of the identity
/// service (`Missing_OAuth_Token`, `Wrong_Org`, `No_Oauth_Scope`, …) are not about the token's
/// life and stay errors of their own.
fn is_bad_oauth_token(body: &[u8]) -> bool {
    body.windows(BAD_OAUTH_TOKEN.len())
        .any(|w| w.eq_ignore_ascii_case(BAD_OAUTH_TOKEN))
}

const BAD_OAUTH_TOKEN: &[u8] = b"Bad_OAuth_Token";

/// The fields as JSON, scrubbed ([`crate::redact`]): all of them are what a server sent.
impl std::fmt::Debug for UserInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::redact::debug_scrubbed("UserInfo", self, f)
    }
}

/// The fields as JSON, scrubbed ([`crate::redact`]): all of them are what a server sent.
impl std::fmt::Debug for IdentityInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::redact::debug_scrubbed("IdentityInfo", self, f)
    }
}

/// The fields as JSON, scrubbed ([`crate::redact`]): all of them are what a server sent.
impl std::fmt::Debug for IdTokenClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::redact::debug_scrubbed("IdTokenClaims", self, f)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use jsonwebtoken::{EncodingKey, Header};

    use super::*;
    use crate::{ConnectedApp, LoginHost};

    const CLIENT_ID: &str = "3MVG9FakeConsumerKey";

    fn token(header: &Header) -> IdToken {
        let key =
            EncodingKey::from_rsa_pem(include_bytes!("../../tests/fixtures/jwt_key.pem")).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = serde_json::json!({
            "sub": "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK",
            "iss": "https://login.salesforce.com", "aud": CLIENT_ID, "exp": now.checked_add(300).unwrap(),
        });
        IdToken::new(jsonwebtoken::encode(header, &claims, &key).unwrap())
    }

    #[test]
    fn a_critical_extension_nobody_implements_is_refused() {
        let client = OAuthClient::new(LoginHost::Production, ConnectedApp::new(CLIENT_ID));
        let jwks: JwkSet =
            serde_json::from_slice(include_bytes!("../../tests/fixtures/jwks.json")).unwrap();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("230".into());
        let check = IdTokenCheck::default();
        client
            .validate_id_token_with_jwks(&jwks, &token(&header), &check)
            .unwrap();

        // Same key, same claims; only the header now says "do not accept me unless you
        // understand `exp` as an extension", which a verifier that ignores `crit` would.
        header.crit = Some(vec!["exp".into()]);
        let error = client
            .validate_id_token_with_jwks(&jwks, &token(&header), &check)
            .unwrap_err();
        assert_eq!(error.to_string(), "invalid id token: token is malformed");
        assert_eq!(error.kind(), crate::ErrorKind::Protocol);
    }
}
