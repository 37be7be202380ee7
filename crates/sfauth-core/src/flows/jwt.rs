//! The JWT bearer flow: an RS256 assertion signed with the key whose certificate is uploaded to
//! the connected app.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::client::OAuthClient;
use crate::error::Error;
use crate::http::{HttpTransport, RetrySafety};
use crate::secret::{PrivateKey, SecretValue};
use crate::token::TokenSet;

/// The inputs of the JWT bearer flow.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct JwtBearer {
    /// The Salesforce username (`sub`).
    pub username: String,
    /// The PEM RSA private key that signs the assertion.
    pub private_key: PrivateKey,
    /// `aud`; `None` uses [`LoginHost::jwt_audience`](crate::LoginHost::jwt_audience). Set it
    /// when posting to a My Domain of a sandbox or GovCloud org whose audience the host does
    /// not reveal.
    pub audience: Option<String>,
    /// How long the assertion is valid; Salesforce accepts at most 3 minutes.
    pub lifetime: Duration,
}

impl JwtBearer {
    /// An assertion for `username`, signed with `private_key`, valid for 3 minutes, with the
    /// audience taken from the login host.
    pub fn new(username: impl Into<String>, private_key: PrivateKey) -> Self {
        Self {
            username: username.into(),
            private_key,
            audience: None,
            lifetime: Duration::from_secs(180),
        }
    }

    /// Overrides `aud`.
    #[must_use]
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// The signed assertion for `client_id`, with `default_audience` unless overridden, expiring
    /// `lifetime` after `now`.
    pub fn assertion(
        &self,
        client_id: &str,
        default_audience: &str,
        now: SystemTime,
    ) -> Result<SecretValue, Error> {
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            sub: &'a str,
            aud: &'a str,
            exp: u64,
        }
        let exp = now
            .checked_add(self.lifetime)
            .ok_or_else(|| Error::config("jwt assertion lifetime is too long"))?
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Error::config("clock is before the unix epoch"))?
            .as_secs();
        let claims = Claims {
            iss: client_id,
            sub: &self.username,
            aud: self.audience.as_deref().unwrap_or(default_audience),
            exp,
        };
        let key = EncodingKey::from_rsa_pem(self.private_key.expose_secret().as_bytes())
            .map_err(|_| Error::config("private key is not a pem rsa key"))?;
        let mut header = Header::new(Algorithm::RS256);
        header.typ = None;
        let token = jsonwebtoken::encode(&header, &claims, &key).map_err(|e| {
            Error::config(format!(
                "cannot sign jwt assertion: {}",
                signing_failure(&e)
            ))
        })?;
        Ok(SecretValue::new(token))
    }
}

/// A reason for a signing failure that names no key material.
fn signing_failure(error: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match error.kind() {
        K::InvalidRsaKey(_) | K::InvalidKeyFormat => "invalid rsa key",
        K::RsaFailedSigning => "rsa signing failed",
        _ => "jwt error",
    }
}

impl OAuthClient {
    /// JWT bearer flow: `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` with a fresh
    /// RS256 assertion (`iss` = client id, `sub` = username, `aud` from the login host, `exp` =
    /// now + lifetime). No client secret is sent; the user must have approved the app or been
    /// pre-authorized. Idempotent. Issues no refresh token.
    pub async fn jwt_bearer(
        &self,
        transport: &dyn HttpTransport,
        jwt: &JwtBearer,
    ) -> Result<TokenSet, Error> {
        let assertion = jwt.assertion(
            self.app().client_id(),
            &self.host().jwt_audience(),
            SystemTime::now(),
        )?;
        self.assertion_grant(
            transport,
            "urn:ietf:params:oauth:grant-type:jwt-bearer",
            assertion.expose_secret(),
            RetrySafety::CallerRetries,
        )
        .await
    }
}
