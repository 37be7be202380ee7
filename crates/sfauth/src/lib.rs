//! sfauth: the whole Salesforce OAuth 2.0 token lifecycle for applications that call
//! Salesforce.
//!
//! This is the crate most users depend on. Its [`TokenManager`] hands out valid access tokens
//! for any number of tenants (org, user and connected app), refreshing them once per expiry
//! however many callers ask, in one process or many, without ever dropping or re-spending a
//! rotating refresh token, and it says clearly when a human must log in again. The other
//! crates are re-exported: [`core`] (flows and types), [`transport`] (HTTP) and [`storage`]
//! (token stores).
//!
//! | feature | default | enables |
//! |---|---|---|
//! | `sqlite` | yes | the SQLite token store, used when the builder is given no store |
//!
//! # Observability
//!
//! Through the `metrics` facade (install any recorder, e.g. a Prometheus exporter):
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `sfauth_refreshes_total` | counter | `outcome` (`refreshed`, `adopted`, `waited`, `reauth_required`, `failed`), `cause` (a [`core::Cause`] name for `reauth_required`, an [`ErrorKind`] name for `failed`, else `none`), `trigger` (`expiring`, `session_expired`, `forced`, `background`) |
//! | `sfauth_refresh_duration_seconds` | histogram | |
//! | `sfauth_token_requests_total` | counter | |
//! | `sfauth_coalesced_callers_total` | counter | |
//! | `sfauth_tenants` | gauge | `status` (`active`, `reauth_required`): set by [`TokenManager::stats`] and each scan of the background refresher |
//!
//! Each refresh runs in a `sfauth.refresh` tracing span with the tenant key, trigger, outcome
//! and cause (never a secret). [`TokenManager::stats`] returns the same counters as a snapshot.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use sfauth::{ErrorKind, MemoryStore, TokenManager};
//! use sfauth::core::{ConnectedApp, LoginHost, OAuthClient};
//!
//! # async fn run(login_result: sfauth::core::TokenSet) -> sfauth::Result<()> {
//! let client = OAuthClient::new(
//!     LoginHost::Production,
//!     ConnectedApp::new("3MVG9.key").with_secret("secret"),
//! );
//! let manager = TokenManager::builder(client)
//!     .store(Arc::new(MemoryStore::new()))
//!     .build()
//!     .await?;
//! let key = manager.store_tokens(login_result, "default").await?;
//!
//! match manager.access_token(&key).await {
//!     Ok(token) => println!("Authorization: Bearer <{} bytes>", token.secret().len()),
//!     Err(error) if error.kind() == ErrorKind::ReauthorizationRequired => {
//!         println!("ask the customer's admin to log in again: {error}");
//!     }
//!     Err(error) => return Err(error),
//! }
//! # Ok(())
//! # }
//! ```

#![warn(clippy::arithmetic_side_effects)]

mod background;
mod clock;
mod error;
mod events;
mod holder;
mod lifetime;
mod manager;
mod policy;
mod recent;
mod refresh;
mod renewal;
mod stats;
mod tenant;

pub use background::{Refresher, RefresherConfig};
pub use error::{Error, ErrorKind, Result};
pub use events::{Event, EventKind};
pub use manager::{STORE_KEY_ENV, TokenManager, TokenManagerBuilder};
pub use policy::RefreshPolicy;
pub use renewal::{Renewal, RenewalResolver};
pub use sfauth_storage::{RenewalFlow, RenewalHint};
pub use stats::Stats;
pub use tenant::{AccessTokenGuard, Tenant, TokenRef};

pub use sfauth_core as core;
pub use sfauth_storage as storage;
pub use sfauth_transport as transport;

#[cfg(feature = "sqlite")]
pub use sfauth_storage::SqliteStore;
pub use sfauth_storage::{FileStore, MemoryStore, TokenStore};
