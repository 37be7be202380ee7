//! [`Renewal`]: how to get new tokens for a tenant that has no refresh token.

use std::fmt;
use std::sync::Arc;

use sfauth_core::Password;
use sfauth_core::flows::JwtBearer;
use sfauth_storage::{RenewalFlow, RenewalHint};

/// Turns a tenant's recorded [`RenewalHint`] into a [`Renewal`] with its credentials; see
/// [`TokenManagerBuilder::renewal_resolver`](crate::TokenManagerBuilder::renewal_resolver).
pub type RenewalResolver = Arc<dyn Fn(&RenewalHint) -> Option<Renewal> + Send + Sync>;

/// How a tenant without a refresh token is renewed: by running its own flow again.
///
/// The client credentials, JWT bearer and username-password flows issue no refresh token, but
/// each can simply be run again; none of them spends a single-use credential, so renewal needs
/// no write-ahead marker.
///
/// ```
/// use sfauth::Renewal;
/// use sfauth::{JwtBearer, PrivateKey};
///
/// let renewal = Renewal::JwtBearer(JwtBearer::new(
///     "integration@acme.example",
///     PrivateKey::new("-----BEGIN PRIVATE KEY-----\n..."),
/// ));
/// assert!(!format!("{renewal:?}").contains("BEGIN PRIVATE KEY"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum Renewal {
    /// Run the client credentials flow (the connected app's Run As user).
    ClientCredentials,
    /// Run the JWT bearer flow with this assertion configuration.
    JwtBearer(JwtBearer),
    /// Run the username-password flow (password with the security token appended).
    Password {
        /// The Salesforce username.
        username: String,
        /// The password and security token.
        password: Password,
    },
}

impl fmt::Debug for Renewal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientCredentials => f.write_str("ClientCredentials"),
            Self::JwtBearer(jwt) => f
                .debug_struct("JwtBearer")
                .field("username", &jwt.username)
                .finish_non_exhaustive(),
            Self::Password { username, .. } => f
                .debug_struct("Password")
                .field("username", username)
                .finish_non_exhaustive(),
        }
    }
}

impl Renewal {
    /// What is recorded with the tenant so that a restarted manager knows how it renews: the
    /// flow and the username, never a key or a password.
    pub fn hint(&self) -> RenewalHint {
        match self {
            Self::ClientCredentials => RenewalHint::client_credentials(),
            Self::JwtBearer(jwt) => RenewalHint::jwt_bearer(jwt.username.clone()),
            Self::Password { username, .. } => RenewalHint::username_password(username.clone()),
        }
    }

    /// The renewal a hint describes when it needs no credential beyond the connected app's own
    /// (client credentials); `None` for flows that need a key or a password.
    pub(crate) fn without_credentials(hint: &RenewalHint) -> Option<Self> {
        matches!(hint.flow, RenewalFlow::ClientCredentials).then_some(Self::ClientCredentials)
    }
}
