//! Token introspection (`POST /services/oauth2/introspect`, RFC 7662) and revocation
//! (`/services/oauth2/revoke`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::client::OAuthClient;
use crate::error::{Context, Error};
use crate::format::{Fields, read_response};
use crate::http::{HttpTransport, RetrySafety};
use crate::secret::SecretValue;
use crate::token::ExpirySource;

/// What the introspection endpoint says about a token.
///
/// `token_type` here is the token's kind (`access_token` or `refresh_token`), not `Bearer`.
/// Fields other than `active` are absent for an inactive token.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Introspection {
    /// Whether the token is currently valid.
    pub active: bool,
    /// Space-separated scopes.
    #[serde(default)]
    pub scope: Option<String>,
    /// The consumer key the token was issued to.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The Salesforce username.
    #[serde(default)]
    pub username: Option<String>,
    /// The identity URL of the user.
    #[serde(default)]
    pub sub: Option<String>,
    /// `access_token` or `refresh_token`.
    #[serde(default)]
    pub token_type: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    #[serde(default)]
    pub exp: Option<u64>,
    /// Issue time, seconds since the Unix epoch.
    #[serde(default)]
    pub iat: Option<u64>,
    /// Not-before time, seconds since the Unix epoch.
    #[serde(default)]
    pub nbf: Option<u64>,
    /// Audience, when sent.
    #[serde(default)]
    pub aud: Option<serde_json::Value>,
    /// Issuer, when sent.
    #[serde(default)]
    pub iss: Option<String>,
}

impl Introspection {
    fn from_fields(fields: &Fields, status: u16, body: &[u8]) -> Result<Self, Error> {
        let number = |field: &str| match fields.get(field) {
            Some(raw) => raw.trim().parse::<u64>().map(Some).map_err(|_| {
                Error::parse(
                    status,
                    format!("introspection has an invalid {field}"),
                    body,
                )
            }),
            None => Ok(None),
        };
        let text = |field: &str| fields.get(field).map(str::to_owned);
        Ok(Self {
            active: match fields.get("active") {
                Some("true") => true,
                Some("false") | None => false,
                Some(_) => {
                    return Err(Error::parse(
                        status,
                        "introspection has an invalid active",
                        body,
                    ));
                }
            },
            scope: text("scope"),
            client_id: text("client_id"),
            username: text("username"),
            sub: text("sub"),
            token_type: text("token_type"),
            exp: number("exp")?,
            iat: number("iat")?,
            nbf: number("nbf")?,
            aud: fields.get("aud").map(|raw| {
                serde_json::from_str(raw)
                    .unwrap_or_else(|_| serde_json::Value::String(raw.to_owned()))
            }),
            iss: text("iss"),
        })
    }
}

/// Which kind of token is being introspected or revoked (`token_type_hint`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenTypeHint {
    /// An access token.
    AccessToken,
    /// A refresh token.
    RefreshToken,
}

impl TokenTypeHint {
    fn as_str(self) -> &'static str {
        match self {
            Self::AccessToken => "access_token",
            Self::RefreshToken => "refresh_token",
        }
    }
}

/// How to send a revocation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RevokeMethod {
    /// `POST` with `token=` in a form body. The default.
    #[default]
    Post,
    /// `GET /services/oauth2/revoke?token=…`. The token ends up in a URL, where proxies and
    /// server logs may keep it: prefer POST.
    Get,
}

impl OAuthClient {
    /// Introspects `token` (`POST /services/oauth2/introspect` with `token`, `token_type_hint`
    /// and client authentication). An inactive token is `Ok` with `active == false`.
    pub async fn introspect(
        &self,
        transport: &dyn HttpTransport,
        token: &SecretValue,
        hint: Option<TokenTypeHint>,
    ) -> Result<Introspection, Error> {
        let mut params = vec![("token", token.expose_secret())];
        if let Some(hint) = hint {
            params.push(("token_type_hint", hint.as_str()));
        }
        let request = self.form_post(
            &self.endpoints().introspect,
            params,
            true,
            RetrySafety::Idempotent,
        )?;
        let response = transport.send(request).await?;
        let fields = read_response(&response, Context::Other)?;
        Introspection::from_fields(&fields, response.status().as_u16(), response.body())
    }

    /// Revokes an access or refresh token (`/services/oauth2/revoke`). With
    /// [`RevokeMethod::Post`], the app's client authentication is sent when it has a secret
    /// (RFC 7009 §2.1 requires it of confidential clients; Salesforce accepts it and does not
    /// need it); a GET carries the token alone. Revoking a refresh token also revokes every access token issued from
    /// it. Any 2xx is success, whatever the body; an error body is read as JSON or form
    /// encoding (`invalid_token`, `unsupported_token_type`).
    pub async fn revoke(
        &self,
        transport: &dyn HttpTransport,
        token: &SecretValue,
        method: RevokeMethod,
    ) -> Result<(), Error> {
        let request = match method {
            RevokeMethod::Post => self.form_post(
                &self.endpoints().revoke,
                vec![("token", token.expose_secret())],
                self.app().client_secret().is_some(),
                RetrySafety::Idempotent,
            )?,
            RevokeMethod::Get => {
                let mut url = self.endpoints().revoke.clone();
                url.query_pairs_mut()
                    .append_pair("token", token.expose_secret());
                let mut request = http::Request::get(url.as_str())
                    .body(bytes::Bytes::new())
                    .map_err(|e| Error::config(format!("invalid revoke url: {e}")))?;
                request.extensions_mut().insert(RetrySafety::Idempotent);
                request
            }
        };
        let response = transport.send(request).await?;
        if response.status().is_success() {
            return Ok(());
        }
        read_response(&response, Context::Other).map(|_| ())
    }
}

/// The fields as JSON, scrubbed ([`crate::redact`]): all of them are what a server sent.
impl std::fmt::Debug for Introspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::redact::debug_scrubbed("Introspection", self, f)
    }
}
// Here rather than in `token.rs`, so that the token types do not depend on the flows.
impl crate::token::TokenSet {
    /// Takes the expiry from an introspection of this access token, unless a stronger source
    /// (`expires_in`, JWT `exp`) already set it. Clamped to `[now, now + 24 h]`; see the
    /// [module docs](crate::token#the-sane-range).
    pub fn apply_introspection(&mut self, introspection: &Introspection) {
        self.apply_introspection_at(introspection, SystemTime::now());
    }

    /// [`Self::apply_introspection`] as of `now`.
    pub fn apply_introspection_at(&mut self, introspection: &Introspection, now: SystemTime) {
        let weaker = matches!(
            self.expiry_source,
            None | Some(ExpirySource::SessionTimeout)
        );
        if let (true, true, Some(exp)) = (weaker, introspection.active, introspection.exp) {
            self.set_expiry(
                UNIX_EPOCH.checked_add(Duration::from_secs(exp)),
                now,
                ExpirySource::Introspection,
            );
        }
    }
}
