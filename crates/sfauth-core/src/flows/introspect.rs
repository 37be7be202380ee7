//! Token introspection (`POST /services/oauth2/introspect`, RFC 7662).

use serde::{Deserialize, Serialize};

/// What the introspection endpoint says about a token.
///
/// `token_type` here is the token's kind (`access_token` or `refresh_token`), not `Bearer`.
/// Fields other than `active` are absent for an inactive token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
