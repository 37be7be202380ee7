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
        crypto_backend()?;
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
        // The backend parses the key's DER only when it signs, so a PEM whose body is not an RSA
        // private key fails here; its message is the backend's, which we do not pass on.
        K::Signing(_) | K::RsaFailedSigning => "rsa key rejected or signing failed",
        _ => "jwt error",
    }
}

/// Fails unless jsonwebtoken has a crypto backend for this process. We enable its `aws_lc_rs`
/// feature, which makes aws-lc-rs the default, but a crate elsewhere in the build that also
/// enables `rust_crypto` leaves jsonwebtoken with no default, and it then panics inside `encode`
/// and `decode`. Checking first turns that build mistake into an error.
pub(crate) fn crypto_backend() -> Result<(), Error> {
    jsonwebtoken::crypto::CryptoProvider::try_get_default()
        .map(|_| ())
        .ok_or_else(|| {
            Error::config(
                "jsonwebtoken has no crypto backend: both or neither of its aws_lc_rs and \
                 rust_crypto features are enabled, and none was installed",
            )
        })
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

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    /// The throwaway test key of `tests/fixtures`, PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    const PKCS1: &str = include_str!("../../tests/fixtures/jwt_key.pem");

    fn der(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        STANDARD.decode(body).unwrap()
    }

    fn pem(label: &str, der: &[u8]) -> String {
        let body = STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    /// A DER length field.
    fn len(n: usize) -> Vec<u8> {
        match n {
            0..=0x7f => vec![u8::try_from(n).unwrap()],
            0x80..=0xff => vec![0x81, u8::try_from(n).unwrap()],
            _ => vec![
                0x82,
                u8::try_from(n >> 8).unwrap(),
                u8::try_from(n & 0xff).unwrap(),
            ],
        }
    }

    /// The same key wrapped as PKCS#8 (`BEGIN PRIVATE KEY`), what `openssl genrsa` writes since
    /// OpenSSL 3 and what most users will upload: version 0, rsaEncryption with NULL parameters,
    /// the PKCS#1 key in an OCTET STRING.
    fn pkcs8(pkcs1_der: &[u8]) -> Vec<u8> {
        let mut body = vec![0x02, 0x01, 0x00];
        body.extend([
            0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05,
            0x00,
        ]);
        body.push(0x04);
        body.extend(len(pkcs1_der.len()));
        body.extend(pkcs1_der);
        let mut out = vec![0x30];
        out.extend(len(body.len()));
        out.extend(body);
        out
    }

    fn sign(key: &str) -> Result<SecretValue, Error> {
        JwtBearer::new("user@example.com", PrivateKey::new(key)).assertion(
            "client",
            "https://login.salesforce.com",
            UNIX_EPOCH
                .checked_add(Duration::from_secs(1_700_000_000))
                .unwrap(),
        )
    }

    #[test]
    fn the_build_has_a_crypto_backend() {
        crypto_backend().unwrap();
    }

    #[test]
    fn pkcs1_and_pkcs8_keys_sign_the_same_assertion() {
        // RS256 (PKCS#1 v1.5) is deterministic, so one key in two wrappings gives one token.
        let from_pkcs1 = sign(PKCS1).unwrap();
        let from_pkcs8 = sign(&pem("PRIVATE KEY", &pkcs8(&der(PKCS1)))).unwrap();
        assert_eq!(from_pkcs1.expose_secret(), from_pkcs8.expose_secret());
        assert_eq!(from_pkcs1.expose_secret().split('.').count(), 3);
    }

    #[test]
    fn a_pem_that_is_not_an_rsa_key_is_a_config_error_naming_no_key_material() {
        // Valid PEM, base64 and DER, but the body is not an RSAPrivateKey (a SEQUENCE of one
        // INTEGER and one OCTET STRING): the backend rejects it only when it signs.
        let secret_bytes = b"0123456789abcdef-not-an-rsa-key-but-secret-bytes";
        let mut body = vec![0x02, 0x01, 0x00, 0x04];
        body.extend(len(secret_bytes.len()));
        body.extend(secret_bytes);
        let mut der = vec![0x30];
        der.extend(len(body.len()));
        der.extend(body);
        let junk = pem("RSA PRIVATE KEY", &der);
        let error = sign(&junk).unwrap_err();
        assert_eq!(error.kind(), crate::ErrorKind::Config, "{error}");
        let shown = format!("{error} {error:?}");
        assert_eq!(
            error.to_string(),
            "invalid configuration: cannot sign jwt assertion: rsa key rejected or signing failed"
        );
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(
            !shown.contains(&STANDARD.encode(secret_bytes)[..16]),
            "{shown}"
        );

        let not_pem = sign("not a key").unwrap_err();
        assert_eq!(not_pem.kind(), crate::ErrorKind::Config, "{not_pem}");
    }
}
