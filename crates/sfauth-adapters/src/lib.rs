//! sfauth in the HTTP ecosystem: thin layers over the [`sfauth::TokenManager`], each on the
//! conventions of its ecosystem.
//!
//! | feature (all default) | what |
//! |---|---|
//! | `reqwest` | a reqwest-middleware `Middleware`: `Authorization: Bearer`, paths resolved against the tenant's `instance_url`, one refresh and one retry on `INVALID_SESSION_ID` |
//! | `tower` | the same behaviour as a tower `Layer` for any `http` client stack |
//! | `axum` | "Connect your Salesforce org": the web server flow with PKCE as axum routes |
//! | `webhook` | signed notices (HMAC-SHA256) when a tenant needs re-authorization or has recovered, and `verify` for the receiver |
//!
//! Every adapter fails with [`Error`]; [`ErrorKind::ReauthorizationRequired`] is the one to
//! send a human to a login page for. No adapter logs or returns a token, a code or a secret.

#![warn(missing_docs)]

mod error;
#[cfg(feature = "axum")]
mod login;
#[cfg(feature = "reqwest")]
mod middleware;
#[cfg(any(feature = "reqwest", feature = "tower"))]
mod replay;
#[cfg(feature = "tower")]
mod tower;
#[cfg(feature = "webhook")]
pub mod webhook;

pub use error::{Error, ErrorKind, Result};
#[cfg(feature = "axum")]
pub use login::{CompletedLogin, HostManagers, LoginConfig, LoginHook, LoginRouter, Refusal};
#[cfg(feature = "reqwest")]
pub use middleware::{SalesforceAuth, adapter_error};
#[cfg(any(feature = "reqwest", feature = "tower"))]
pub use replay::{INSTANCE, instance};
#[cfg(feature = "tower")]
pub use tower::{BoxError, SalesforceAuthLayer, SalesforceAuthService, TryCloneBody};
