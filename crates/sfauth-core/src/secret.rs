//! Secret values: tokens, client secrets, passwords and keys that must never reach a log.
//!
//! Every type here wraps a [`secrecy::SecretString`]: `Debug` and `Display` print
//! `[redacted]`, the memory is zeroized on drop, and reading the value is an explicit
//! [`expose_secret`](AccessToken::expose_secret) call that is easy to grep for.
//!
//! None of them implements `Serialize`: a struct that must persist a secret (a
//! [`TokenSet`](crate::TokenSet) going to storage) opts in field by field with
//! `#[serde(with = "sfauth_core::secret::exposed")]` (see [`exposed`]).
//!
//! ```
//! use sfauth_core::AccessToken;
//!
//! let token = AccessToken::new("00D000000000001!AQ4AQFake");
//! assert_eq!(format!("{token:?}"), "AccessToken([redacted])");
//! assert_eq!(token.to_string(), "[redacted]");
//! assert_eq!(token.expose_secret(), "00D000000000001!AQ4AQFake");
//! ```

use std::fmt;

use secrecy::{ExposeSecret as _, SecretString};

/// What every secret type prints instead of its value.
pub const REDACTED: &str = "[redacted]";

macro_rules! secret_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone)]
        pub struct $name(SecretString);

        impl $name {
            /// Wraps `value`; the wrapper zeroizes it on drop.
            pub fn new(value: impl Into<String>) -> Self {
                Self(SecretString::from(value.into()))
            }

            /// The value in the clear. Call it only where the value leaves for the wire or for
            /// storage.
            pub fn expose_secret(&self) -> &str {
                self.0.expose_secret()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({REDACTED})", stringify!($name))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(REDACTED)
            }
        }

        impl PartialEq for $name {
            /// Compares in constant time, so that equality checks leak no prefix length.
            fn eq(&self, other: &Self) -> bool {
                use subtle::ConstantTimeEq as _;
                bool::from(self.expose_secret().as_bytes().ct_eq(other.expose_secret().as_bytes()))
            }
        }

        impl Eq for $name {}

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self::new(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self::new(value)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer).map(Self::new)
            }
        }

        impl exposed::Expose for $name {
            fn expose(&self) -> &str {
                self.expose_secret()
            }
        }
    };
}

secret_type!(
    /// A Salesforce access token (a session id such as `00D…!AQ…`, or a JWT when the app issues
    /// JWT-based access tokens). Whoever holds it acts as the user.
    AccessToken
);
secret_type!(
    /// A refresh token (observed values start with `5Aep`). With rotation on, each one is good
    /// for a single refresh, and presenting a rotated-out one revokes the whole token family.
    RefreshToken
);
secret_type!(
    /// A connected app's consumer secret.
    ClientSecret
);
secret_type!(
    /// A user's password for the username-password flow: the password with the security token
    /// appended (`mypassword` + `XXXXXXXXXX`).
    Password
);
secret_type!(
    /// A PEM-encoded RSA private key (PKCS#1 or PKCS#8) that signs JWT bearer assertions.
    PrivateKey
);
secret_type!(
    /// An OpenID Connect ID token (a signed JWT). It is not a bearer credential for Salesforce
    /// APIs, but it identifies the user and is kept out of logs all the same.
    IdToken
);
secret_type!(
    /// An authorization code from the web server flow's callback; single use.
    AuthorizationCode
);
secret_type!(
    /// A PKCE code verifier, kept between building the authorization URL and exchanging the code.
    PkceVerifier
);
secret_type!(
    /// The device code of the device flow: whoever polls with it receives the user's tokens.
    DeviceCode
);
secret_type!(
    /// Any other credential that goes on the wire: a token-exchange subject or actor token, a
    /// SAML assertion, or a token passed to revocation or introspection.
    SecretValue
);

impl From<AccessToken> for SecretValue {
    fn from(value: AccessToken) -> Self {
        Self::new(value.expose_secret())
    }
}

impl From<RefreshToken> for SecretValue {
    fn from(value: RefreshToken) -> Self {
        Self::new(value.expose_secret())
    }
}

/// Serde helpers that write a secret in the clear: the explicit opt-in for storage.
///
/// Secret types deserialize like a string but never serialize on their own. A field that must
/// be persisted says so:
///
/// ```
/// use sfauth_core::{secret, RefreshToken};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Stored {
///     #[serde(with = "secret::exposed")]
///     refresh_token: RefreshToken,
///     #[serde(with = "secret::exposed::option", default)]
///     spare: Option<RefreshToken>,
/// }
///
/// let stored = Stored { refresh_token: RefreshToken::new("5Aep861"), spare: None };
/// assert_eq!(serde_json::to_string(&stored)?, r#"{"refresh_token":"5Aep861","spare":null}"#);
/// # Ok::<(), serde_json::Error>(())
/// ```
pub mod exposed {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Implemented by every secret type of this module; the helpers are generic over it.
    pub trait Expose {
        /// The value in the clear.
        fn expose(&self) -> &str;
    }

    /// Serializes the secret as a plain string.
    pub fn serialize<T: Expose, S: Serializer>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(value.expose())
    }

    /// Deserializes the secret from a plain string.
    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<T, D::Error> {
        T::deserialize(deserializer)
    }

    /// The same for an optional secret.
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        use super::Expose;

        /// Serializes the secret as a plain string, or `null`.
        pub fn serialize<T: Expose, S: Serializer>(
            value: &Option<T>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(value) => serializer.serialize_some(value.expose()),
                None => serializer.serialize_none(),
            }
        }

        /// Deserializes an optional secret from a plain string or `null`.
        pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<T>, D::Error> {
            Option::<T>::deserialize(deserializer)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secret_type_redacts() {
        let all: Vec<(String, String)> = vec![
            (
                format!("{:?}", AccessToken::new("s3cr3t")),
                AccessToken::new("s3cr3t").to_string(),
            ),
            (
                format!("{:?}", RefreshToken::new("s3cr3t")),
                RefreshToken::new("s3cr3t").to_string(),
            ),
            (
                format!("{:?}", ClientSecret::new("s3cr3t")),
                ClientSecret::new("s3cr3t").to_string(),
            ),
            (
                format!("{:?}", Password::new("s3cr3t")),
                Password::new("s3cr3t").to_string(),
            ),
            (
                format!("{:?}", PrivateKey::new("s3cr3t")),
                PrivateKey::new("s3cr3t").to_string(),
            ),
            (
                format!("{:?}", IdToken::new("s3cr3t")),
                IdToken::new("s3cr3t").to_string(),
            ),
            (
                format!("{:?}", AuthorizationCode::new("s3cr3t")),
                AuthorizationCode::new("s3cr3t").to_string(),
            ),
            (
                format!("{:?}", PkceVerifier::new("s3cr3t")),
                PkceVerifier::new("s3cr3t").to_string(),
            ),
            (
                format!("{:?}", DeviceCode::new("s3cr3t")),
                DeviceCode::new("s3cr3t").to_string(),
            ),
            (
                format!("{:?}", SecretValue::new("s3cr3t")),
                SecretValue::new("s3cr3t").to_string(),
            ),
        ];
        for (debug, display) in all {
            assert!(
                !debug.contains("s3cr3t") && debug.ends_with("([redacted])"),
                "{debug}"
            );
            assert_eq!(display, REDACTED);
        }
    }

    #[test]
    fn equality_and_deserialization() {
        assert_eq!(AccessToken::new("a"), AccessToken::new("a"));
        assert_ne!(AccessToken::new("a"), AccessToken::new("ab"));
        let token: RefreshToken = serde_json::from_str("\"5Aep\"").unwrap();
        assert_eq!(token.expose_secret(), "5Aep");
    }
}
