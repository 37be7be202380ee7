//! The `signature` of a token response: base64(HMAC-SHA256(client_secret, id + issued_at)).
//!
//! Salesforce signs the concatenation of the identity URL and `issued_at`, exactly as sent,
//! with the consumer secret, so that a client can tell the identity URL was not swapped on the
//! way. It authenticates those two fields only, not the access token, and only a client that
//! knows the secret can check it. Flows check it automatically whenever the app has a secret and
//! the response has a signature; [`verify`] is the same check for tokens that arrived some other
//! way (a user-agent redirect, storage).
//!
//! ```
//! use sfauth_core::{signature, ClientSecret};
//!
//! // Fixture from `printf '%s' 'https://login.salesforce.com/id/00Dx0000000BV7z/005x00000012Q9P1278448832702'
//! //   | openssl dgst -sha256 -hmac 'secret' -binary | base64`.
//! let ok = signature::verify(
//!     &ClientSecret::new("secret"),
//!     "https://login.salesforce.com/id/00Dx0000000BV7z/005x00000012Q9P",
//!     "1278448832702",
//!     "pJLaaF3SzFH++txINP7roGsI00ZR67d0sscWvY1U9Ww=",
//! );
//! assert!(ok.is_ok());
//! ```

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use crate::error::Error;
use crate::secret::ClientSecret;
use crate::token::TokenSet;

/// Checks `signature` against `id` + `issued_at` (concatenated as received, no separator),
/// keyed with `secret`, in constant time. A mismatch, or a signature that is not valid base64,
/// is [`Error::SignatureMismatch`].
pub fn verify(
    secret: &ClientSecret,
    id: &str,
    issued_at: &str,
    signature: &str,
) -> Result<(), Error> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose_secret().as_bytes())
        .map_err(|_| Error::config("client secret cannot key hmac-sha256"))?;
    mac.update(id.as_bytes());
    mac.update(issued_at.as_bytes());
    let expected = mac.finalize().into_bytes();
    let given = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| Error::SignatureMismatch)?;
    if bool::from(expected.as_slice().ct_eq(given.as_slice())) {
        Ok(())
    } else {
        Err(Error::SignatureMismatch)
    }
}

/// Checks the signature of a stored or user-agent [`TokenSet`], using its identity URL as
/// received and `issued_at` in milliseconds. `Ok` when the set carries no signature.
pub fn verify_token_set(secret: &ClientSecret, tokens: &TokenSet) -> Result<(), Error> {
    let Some(signature) = &tokens.signature else {
        return Ok(());
    };
    let issued_at = tokens
        .issued_at_millis()
        .map(|ms| ms.to_string())
        .unwrap_or_default();
    verify(secret, tokens.identity.as_str(), &issued_at, signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixtures computed with an independent tool, never with this code:
    ///
    /// ```text
    /// printf '%s' "$ID$ISSUED_AT" | openssl dgst -sha256 -hmac "$SECRET" -binary | base64
    /// ```
    const VECTORS: &[(&str, &str, &str, &str)] = &[
        (
            "secret",
            "https://login.salesforce.com/id/00Dx0000000BV7z/005x00000012Q9P",
            "1278448832702",
            "pJLaaF3SzFH++txINP7roGsI00ZR67d0sscWvY1U9Ww=",
        ),
        (
            "3F9A5C0E4B7D2A8E1F6C9B0D3E5A7C2F4B8D1E6A9C3F5B7D0E2A4C6F8B1D3E5A",
            "https://test.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK",
            "1700000000123",
            "HrhG2D4Efj3Bw3YS5LCDnmzCH+fRbUqV2sX4tQY8L1o=",
        ),
        (
            "s3cr3t with spaces & ünïcødé",
            "https://acme.my.site.com/customers/id/00D5e000000AbcdEAC/0055e000001XyZaAAK",
            "1",
            "CAiCBVghlA1ggYoaFXK63YKAjhqgKJpw+NZMki3W/yE=",
        ),
    ];

    #[test]
    fn openssl_vectors_verify() {
        for (secret, id, issued_at, signature) in VECTORS {
            verify(&ClientSecret::new(*secret), id, issued_at, signature)
                .unwrap_or_else(|e| panic!("{id}: {e}"));
        }
    }

    #[test]
    fn any_change_is_a_mismatch() {
        let (secret, id, issued_at, signature) = VECTORS[0];
        let secret = ClientSecret::new(secret);
        let wrong_secret = ClientSecret::new("secreT");
        for (key, id, issued_at, signature) in [
            (&wrong_secret, id, issued_at, signature),
            (
                &secret,
                "https://login.salesforce.com/id/00Dx0000000BV7z/005x00000012Q9Q",
                issued_at,
                signature,
            ),
            (&secret, id, "1278448832703", signature),
            (
                &secret,
                id,
                issued_at,
                "pJLaaF3SzFH++txINP7roGsI00ZR67d0sscWvY1U9Wg=",
            ),
            (&secret, id, issued_at, "not base64!"),
            (&secret, id, issued_at, ""),
        ] {
            assert!(matches!(
                verify(key, id, issued_at, signature),
                Err(Error::SignatureMismatch)
            ));
        }
    }
}
