//! What the [`TokenManager`](crate::TokenManager) tells subscribers: [`Event`].
//!
//! Events carry the tenant's [`TokenKey`] and no secret, so they can be logged or forwarded
//! as they are.

use sfauth_core::error::Cause;
use sfauth_core::{SecretSlot, TokenKey};
use url::Url;

use crate::error::ErrorKind;

/// Something that happened to a tenant's tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The tenant.
    pub key: TokenKey,
    /// What happened.
    pub kind: EventKind,
}

/// The kinds of [`Event`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// A login or import stored tokens for the tenant (and cleared any re-authorization mark).
    Stored,
    /// New tokens were obtained and saved.
    Refreshed {
        /// Whether another process did it and this one adopted the result.
        adopted: bool,
    },
    /// The refresh returned a new refresh token, which was saved before anything else.
    Rotated,
    /// Salesforce moved the org: API calls must go to the new `instance_url`.
    InstanceUrlChanged {
        /// The old base URL.
        from: Url,
        /// The new base URL.
        to: Url,
    },
    /// The tenant needs a human to log in again; calls fail fast until then.
    ReauthRequired {
        /// Why, without secrets.
        reason: String,
        /// Salesforce's classified cause, if any.
        cause: Option<Cause>,
    },
    /// Salesforce refused the consumer secret requests went out with and accepted the other
    /// configured one ([`ConnectedApp::with_next_secret`](crate::oauth::ConnectedApp::with_next_secret)):
    /// requests use `to` from now on. Once every process reports this, the refused secret can
    /// be removed from the configuration. Sent once per switch, with the tenant whose request
    /// found out.
    ClientSecretSwitched {
        /// The secret that works.
        to: SecretSlot,
    },
    /// A refresh failed in a way that may pass (network, rate limit, store), or that needs a
    /// change on the operator's side which leaves the tokens valid (an IP allowlist).
    RefreshFailed {
        /// The decision to make.
        kind: ErrorKind,
        /// The error message, without secrets.
        message: String,
    },
}
