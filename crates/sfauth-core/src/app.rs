//! The client side of every flow: a connected app (or external client app) and how it
//! authenticates to the token endpoint.
//!
//! ```
//! use sfauth_core::{ClientAuth, ConnectedApp};
//!
//! let app = ConnectedApp::new("3MVG9consumer.key")
//!     .with_secret("consumer-secret")
//!     .with_redirect_uri("http://localhost:1717/OauthRedirect")?
//!     .with_client_auth(ClientAuth::Basic);
//! assert!(!format!("{app:?}").contains("consumer-secret"));
//! # Ok::<(), sfauth_core::Error>(())
//! ```
//!
//! # Two secrets during a rotation
//!
//! Salesforce lets an admin stage a new consumer secret: while it is staged, both the old and
//! the new secret authenticate; once applied, only the new one does. An app configured with both
//! ([`ConnectedApp::with_next_secret`]) survives the cutover without downtime: when Salesforce
//! refuses one secret with `invalid_client` / `invalid client credentials`, the client sends the
//! same request once more with the other, and keeps using whichever worked
//! ([`OAuthClient::secret_in_use`](crate::OAuthClient::secret_in_use)). The re-send is safe for
//! every grant, single-use ones included: client authentication comes before the grant, so a
//! request refused for its secret was not carried out (the refresh token or code in it is
//! unspent), which the emulator confirms (`refresh-token-status` stays `active`).
//!
//! ```
//! use sfauth_core::{ConnectedApp, SecretSlot};
//!
//! let app = ConnectedApp::new("3MVG9consumer.key")
//!     .with_secret("old-secret")
//!     .with_next_secret("new-secret");
//! assert_eq!(app.secret(SecretSlot::Next).map(|s| s.expose_secret()), Some("new-secret"));
//! assert!(!format!("{app:?}").contains("new-secret"));
//! ```

use url::Url;

use crate::error::Error;
use crate::secret::ClientSecret;

/// How the client proves its identity at the token, introspection and revocation endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientAuth {
    /// `client_id` and `client_secret` in the form body (`client_secret_post`). The default:
    /// Salesforce has rejected HTTP Basic on some grants (authorization code, in 2018).
    #[default]
    RequestBody,
    /// `Authorization: Basic base64(client_id:client_secret)` (`client_secret_basic`), with the
    /// id and secret not form-encoded first, as Salesforce's own clients send it. Some setups
    /// need it, such as Experience Cloud sites.
    Basic,
}

/// Which of a [`ConnectedApp`]'s consumer secrets: the current one, or the next one of a
/// rotation (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SecretSlot {
    /// The secret set with [`ConnectedApp::with_secret`].
    Current,
    /// The secret set with [`ConnectedApp::with_next_secret`].
    Next,
}

impl SecretSlot {
    /// `current` or `next`, for logs and metric labels.
    ///
    /// ```
    /// assert_eq!(sfauth_core::SecretSlot::Next.as_str(), "next");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Next => "next",
        }
    }

    /// The other slot.
    pub fn other(self) -> Self {
        match self {
            Self::Current => Self::Next,
            Self::Next => Self::Current,
        }
    }
}

impl std::fmt::Display for SecretSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connected app: consumer key, optional consumer secret (and the next one, during a
/// rotation), callback URL and client authentication method.
///
/// `Debug` is safe: the secrets print as `[redacted]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectedApp {
    client_id: String,
    client_secret: Option<ClientSecret>,
    next_secret: Option<ClientSecret>,
    redirect_uri: Option<Url>,
    client_auth: ClientAuth,
}

impl ConnectedApp {
    /// An app known by its consumer key, with no secret (a public client using PKCE, or the
    /// JWT bearer flow) and body client authentication.
    pub fn new(client_id: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: None,
            next_secret: None,
            redirect_uri: None,
            client_auth: ClientAuth::RequestBody,
        }
    }

    /// Sets the consumer secret.
    #[must_use]
    pub fn with_secret(mut self, secret: impl Into<ClientSecret>) -> Self {
        self.client_secret = Some(secret.into());
        self
    }

    /// Sets the secret staged to replace the current one: while both are configured, a request
    /// whose secret Salesforce refuses is sent once more with the other (module docs). Once the
    /// rotation is applied and the old secret retired, make the new one current and drop this.
    #[must_use]
    pub fn with_next_secret(mut self, secret: impl Into<ClientSecret>) -> Self {
        self.next_secret = Some(secret.into());
        self
    }

    /// Sets the callback URL registered on the app, used by the web server and user-agent flows.
    pub fn with_redirect_uri(mut self, redirect_uri: &str) -> Result<Self, Error> {
        let url = Url::parse(redirect_uri)
            .map_err(|e| Error::config(format!("invalid redirect uri: {e}")))?;
        self.redirect_uri = Some(url);
        Ok(self)
    }

    /// Sets how the client authenticates; see [`ClientAuth`].
    #[must_use]
    pub fn with_client_auth(mut self, client_auth: ClientAuth) -> Self {
        self.client_auth = client_auth;
        self
    }

    /// The consumer key.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The consumer secret, if this is a confidential client.
    pub fn client_secret(&self) -> Option<&ClientSecret> {
        self.client_secret.as_ref()
    }

    /// The next consumer secret of a rotation, if set.
    pub fn next_secret(&self) -> Option<&ClientSecret> {
        self.next_secret.as_ref()
    }

    /// The secret in `slot`, if set.
    pub fn secret(&self, slot: SecretSlot) -> Option<&ClientSecret> {
        match slot {
            SecretSlot::Current => self.client_secret.as_ref(),
            SecretSlot::Next => self.next_secret.as_ref(),
        }
    }

    /// The registered callback URL, if set.
    pub fn redirect_uri(&self) -> Option<&Url> {
        self.redirect_uri.as_ref()
    }

    /// How the client authenticates.
    pub fn client_auth(&self) -> ClientAuth {
        self.client_auth
    }

    pub(crate) fn require_redirect_uri(&self) -> Result<&Url, Error> {
        self.redirect_uri
            .as_ref()
            .ok_or_else(|| Error::config("connected app has no redirect uri"))
    }
}
