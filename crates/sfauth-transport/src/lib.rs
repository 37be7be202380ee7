//! HTTP transports for sfauth: the implementations of `sfauth_core::http::HttpTransport`.
//!
//! Core defines the trait and never opens a socket; this crate is where bytes meet the network,
//! so a reqwest upgrade never touches the flows.
//!
//! | type | what it does |
//! |---|---|
//! | [`ReqwestTransport`] | reqwest over rustls: pooled connections, connect and total timeouts, a streaming body cap, HTTPS required except to loopback, a `tracing` span per request |
//! | [`Proxy`] | where requests leave from: the environment's proxy variables (as curl reads them), one HTTP(S) proxy, or none |
//! | [`Retry`] | re-sends what is safe to re-send, with exponential backoff, full jitter and `Retry-After` |
//! | [`Recorder`] | keeps every exchange for tests to inspect |
//! | `MockHttpTransport` | a mockall mock (feature `mock`) |
//!
//! | feature | default | enables |
//! |---|---|---|
//! | `mock` | no | `MockHttpTransport` |
//!
//! # Example
//!
//! The production stack is a [`ReqwestTransport`] inside a [`Retry`]:
//!
//! ```no_run
//! use sfauth_core::http::{HttpTransport, RetrySafety};
//! use sfauth_transport::{ReqwestTransport, Retry, RetryPolicy};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let transport = Retry::new(ReqwestTransport::new()?, RetryPolicy::default());
//! let mut request = http::Request::get("https://login.salesforce.com/id/keys")
//!     .body(bytes::Bytes::new())?;
//! request.extensions_mut().insert(RetrySafety::Idempotent);
//! let keys = transport.send(request).await?;
//! # let _ = keys;
//! # Ok(())
//! # }
//! ```

// Numbers from outside (responses, tokens, headers, configuration, stored records) reach
// arithmetic here; none of it may panic or wrap, so every operation is checked or saturating.
#![warn(clippy::arithmetic_side_effects)]

// Built for this crate's own tests too: the wire-level tests of `Retry` over the flows use it.
#[cfg(any(test, feature = "mock"))]
mod mock;
mod proxy;
mod recorder;
mod reqwest_transport;
mod retry;

#[cfg(feature = "mock")]
pub use mock::MockHttpTransport;
pub use proxy::Proxy;
pub use recorder::{Exchange, Recorder};
pub use reqwest_transport::{
    DEFAULT_MAX_BODY_BYTES, DEFAULT_USER_AGENT, ReqwestTransport, ReqwestTransportBuilder,
};
pub use retry::{Retry, RetryPolicy};
