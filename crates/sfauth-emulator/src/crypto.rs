//! Signatures and keys: the token-response `signature`, PKCE, RS256 JWTs and the JWKS.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The emulator's default id-token signing key: a fixed test key, so that starting is instant
/// and id tokens verify across restarts. It signs nothing of value.
const DEFAULT_SIGNING_KEY: &str = include_str!("../keys/emulator-signing-key.pem");

/// `base64(HMAC-SHA256(client_secret, id + issued_at))`, Salesforce's token-response signature.
pub(crate) fn token_signature(client_secret: &str, id: &str, issued_at: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(client_secret.as_bytes()) else {
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(issued_at.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The PKCE S256 challenge of a verifier: base64url (no padding) of its SHA-256.
pub(crate) fn pkce_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The OpenID Connect `at_hash` of an access token.
pub(crate) fn at_hash(access_token: &str) -> String {
    let digest = Sha256::digest(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// Constant-time string equality, for secrets.
pub(crate) fn secret_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The key the emulator signs id tokens and JWT access tokens with.
pub(crate) struct SigningKeys {
    signing: SigningKey<Sha256>,
    public: RsaPublicKey,
    kid: String,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKeys {
    /// The built-in test key.
    pub(crate) fn default_key() -> Result<Self, String> {
        Self::from_pem(DEFAULT_SIGNING_KEY)
    }

    /// A PKCS#1 or PKCS#8 PEM RSA private key.
    pub(crate) fn from_pem(pem: &str) -> Result<Self, String> {
        let private = RsaPrivateKey::from_pkcs1_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs8_pem(pem))
            .map_err(|e| format!("signing key is not an RSA private key in PEM: {e}"))?;
        let public = private.to_public_key();
        // The kid is derived from the key, so a changed key is visible to caching verifiers.
        let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(public.n().to_bytes_be())[..6]);
        Ok(Self {
            signing: SigningKey::<Sha256>::new(private),
            public,
            kid,
        })
    }

    /// Signs `claims` as an RS256 JWT with extra header fields.
    pub(crate) fn sign_jwt(&self, extra_header: &[(&str, Value)], claims: &Value) -> String {
        let mut header = serde_json::Map::new();
        header.insert("kid".to_owned(), json!(self.kid));
        header.insert("typ".to_owned(), json!("JWT"));
        header.insert("alg".to_owned(), json!("RS256"));
        for (k, v) in extra_header {
            header.insert((*k).to_owned(), v.clone());
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(Value::Object(header).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.signing.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    /// The JWKS document served at `/id/keys`.
    pub(crate) fn jwks(&self) -> Value {
        json!({"keys": [{
            "kty": "RSA",
            "n": URL_SAFE_NO_PAD.encode(self.public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(self.public.e().to_bytes_be()),
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
        }]})
    }

    /// The public half, to verify JWTs the emulator issued (token exchange of id tokens).
    pub(crate) fn public(&self) -> &RsaPublicKey {
        &self.public
    }
}

/// Reads an RSA public key from a PEM certificate, SPKI public key or PKCS#1 public key.
pub(crate) fn public_key_from_pem(pem: &str) -> Result<RsaPublicKey, String> {
    if pem.contains("BEGIN CERTIFICATE") {
        use x509_cert::der::{DecodePem, Encode};
        let cert = x509_cert::Certificate::from_pem(pem.trim().as_bytes())
            .map_err(|e| format!("certificate is not valid PEM X.509: {e}"))?;
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| format!("certificate public key cannot be encoded: {e}"))?;
        return RsaPublicKey::from_public_key_der(&spki)
            .map_err(|e| format!("certificate does not hold an RSA key: {e}"));
    }
    RsaPublicKey::from_public_key_pem(pem)
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem))
        .map_err(|e| format!("not an RSA public key in PEM: {e}"))
}

/// Why a JWT was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JwtError {
    /// Not three base64url parts of JSON.
    Malformed,
    /// The header's `alg` is not RS256.
    Algorithm,
    /// The signature does not verify.
    Signature,
}

/// A decoded JWT.
#[derive(Debug, Clone)]
pub(crate) struct Jwt {
    pub(crate) claims: Value,
}

/// Decodes a JWT without verifying it (to find the issuer first).
pub(crate) fn decode_jwt_unverified(token: &str) -> Result<(Value, Value), JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let decode = |s: &str| -> Result<Value, JwtError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| JwtError::Malformed)?;
        serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
    };
    Ok((decode(h)?, decode(p)?))
}

/// Decodes an RS256 JWT and verifies its signature with `key`.
pub(crate) fn verify_jwt(token: &str, key: &RsaPublicKey) -> Result<Jwt, JwtError> {
    let (header, claims) = decode_jwt_unverified(token)?;
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(JwtError::Algorithm);
    }
    let Some((input, sig)) = token.rsplit_once('.') else {
        return Err(JwtError::Malformed);
    };
    let sig = URL_SAFE_NO_PAD
        .decode(sig.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed)?;
    let sig = Signature::try_from(sig.as_slice()).map_err(|_| JwtError::Signature)?;
    VerifyingKey::<Sha256>::new(key.clone())
        .verify(input.as_bytes(), &sig)
        .map_err(|_| JwtError::Signature)?;
    Ok(Jwt { claims })
}

/// Signs claims with a PEM private key (tests and examples use this to build assertions).
pub(crate) fn sign_with_pem(private_pem: &str, claims: &Value) -> Result<String, String> {
    let private = RsaPrivateKey::from_pkcs8_pem(private_pem)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(private_pem))
        .map_err(|e| format!("not an RSA private key in PEM: {e}"))?;
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "RS256"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = SigningKey::<Sha256>::new(private).sign(input.as_bytes());
    Ok(format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    ))
}

/// Standard base64, tolerant of the URL-safe alphabet and missing padding.
pub(crate) fn decode_base64_lenient(s: &str) -> Option<Vec<u8>> {
    let trimmed: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD
        .decode(&trimmed)
        .ok()
        .or_else(|| URL_SAFE_NO_PAD.decode(trimmed.trim_end_matches('=')).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_documented_algorithm() {
        // Computed independently with: printf '%s' "$id$issued_at" | openssl dgst -sha256 -hmac secret -binary | base64
        let sig = token_signature(
            "secret",
            "https://login.salesforce.com/id/00D000000000062EAA/005000000000000AAA",
            "1278448832702",
        );
        assert_eq!(sig, "gqO6cgtwvV6AZ5YElBt9IGUGj6ePE2cPi21aStuciIw=");
        assert_eq!(sig.len(), 44);
    }

    #[test]
    fn pkce_matches_openssl() {
        // printf %s VERIFIER | openssl dgst -sha256 -binary | base64url
        assert_eq!(
            pkce_s256("dBjftJeZ4CVP-mB92K9uhvk7_fW29BQCEBpSEOjbVRs"),
            "AOeTX9g-zr-9-VtNpwNnSyAoSHZVSjF-XVeOhiziYqg"
        );
    }

    #[test]
    fn jwt_round_trip_and_tamper_detection() {
        let keys = SigningKeys::default_key().unwrap();
        let token = keys.sign_jwt(&[], &json!({"sub": "x"}));
        assert_eq!(
            verify_jwt(&token, keys.public()).unwrap().claims["sub"],
            "x"
        );
        let mut tampered = token.clone();
        tampered.insert(tampered.find('.').unwrap() + 2, 'A');
        assert!(verify_jwt(&tampered, keys.public()).is_err());
        let other =
            public_key_from_pem(include_str!("../tests/fixtures/seed-client-pub.pem")).unwrap();
        assert_eq!(verify_jwt(&token, &other).unwrap_err(), JwtError::Signature);
    }

    #[test]
    fn certificate_and_public_key_give_the_same_key() {
        let from_cert = public_key_from_pem(crate::model::SEED_CLIENT_CERTIFICATE).unwrap();
        let from_spki =
            public_key_from_pem(include_str!("../tests/fixtures/seed-client-pub.pem")).unwrap();
        assert_eq!(from_cert, from_spki);
        let jwt =
            sign_with_pem(crate::model::SEED_CLIENT_PRIVATE_KEY, &json!({"iss": "a"})).unwrap();
        assert!(verify_jwt(&jwt, &from_cert).is_ok());
    }
}
