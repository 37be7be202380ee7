//! The protocol heart of sfauth: Salesforce's OAuth 2.0 flows as typed requests and parsed
//! responses, the token types, and the HTTP boundary.
//!
//! This crate does no I/O of its own and keeps no state: every flow builds an
//! `http::Request`, hands it to an [`http::HttpTransport`] the caller supplies, and parses what
//! comes back. That keeps it testable with a closure and free of any HTTP client, runtime or
//! storage dependency (`cargo xtask tidy` checks this).
//!
//! | module | what it holds |
//! |---|---|
//! | [`http`] | [`http::HttpTransport`], [`http::TransportError`], [`http::RetrySafety`], and the adapter that lets the `oauth2` crate send through any transport |
//! | [`secret`] | [`AccessToken`], [`RefreshToken`], [`ClientSecret`], [`Password`], [`PrivateKey`] and the other redacting, zeroizing secret types |
//! | [`host`] | [`LoginHost`] and [`Endpoints`]: where requests go |
//! | [`app`] | [`ConnectedApp`] and [`ClientAuth`] |
//! | [`token`] | [`TokenSet`], [`IdentityUrl`], [`OrgId`], [`UserId`], [`TokenKey`], and the expiry rules |
//! | [`signature`] | the check of a token response's `signature` |
//! | [`error`] | [`Error`], [`ErrorKind`], [`Cause`] |
//! | [`format`] | [`format::ResponseFormat`] and the parser every response goes through |
//! | [`flows`] | every flow |
//! | [`rest`] | reading a REST API 401 (`INVALID_SESSION_ID`) as "refresh due" |
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use sfauth_core::http::{HttpRequest, HttpResponse, HttpTransport, TransportError};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A closure is a transport: handy for wire-level tests.
//! let canned = |_request: HttpRequest| async {
//!     Ok::<_, TransportError>(HttpResponse::new(Bytes::from_static(b"ok")))
//! };
//! let request = http::Request::get("https://login.salesforce.com/").body(Bytes::new())?;
//! assert_eq!(canned.send(request).await?.body().as_ref(), b"ok");
//! # Ok(())
//! # }
//! ```

pub mod app;
mod client;
pub mod error;
pub mod flows;
pub mod format;
pub mod host;
pub mod http;
pub mod rest;
pub mod secret;
pub mod signature;
pub mod token;

pub use app::{ClientAuth, ConnectedApp};
pub use client::OAuthClient;
pub use error::{Cause, Error, ErrorKind, Result};
pub use host::{Endpoints, LoginHost};
pub use secret::{
    AccessToken, AuthorizationCode, ClientSecret, DeviceCode, IdToken, Password, PkceVerifier,
    PrivateKey, RefreshToken, SecretValue,
};
pub use token::{ExpirySource, IdentityUrl, OrgId, TokenKey, TokenSet, UserId};
