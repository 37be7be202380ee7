//! sfauth: the whole Salesforce OAuth 2.0 token lifecycle for applications that call
//! Salesforce.
//!
//! This is the crate most users depend on. Its [`TokenManager`] hands out valid access tokens
//! for any number of tenants (org, user and connected app), refreshing them once per expiry
//! however many callers ask, in one process or many, without ever dropping or re-spending a
//! rotating refresh token, and it says clearly when a human must log in again. The other
//! crates are re-exported: [`oauth`] (flows and types), [`transport`] (HTTP) and [`storage`]
//! (token stores).
//!
//! `examples/` has a whole program for each of the users sfauth is for, each running against
//! the embedded emulator (`cargo run -p sfauth --example NAME`): `script` (one org, JWT bearer,
//! a stored login reused by the next run), `service` (client credentials, many concurrent
//! callers, one token request per session) and `isv_worker` (many customer orgs, background
//! refresh and keep-alive, one customer's re-authorization reported as an event).
//!
//! | feature | default | enables |
//! |---|---|---|
//! | `sqlite` | yes | [`SqliteStore`] and [`default_sqlite_store`] (the CLI's and the demo's store) |
//! | `redis` | no | [`RedisStore`]: one store for every process and machine of a fleet |
//! | `postgres` | no | [`PostgresStore`]: one store for every process and machine of a fleet |
//!
//! # Observability
//!
//! Through the `metrics` facade (install any recorder, e.g. a Prometheus exporter):
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `sfauth_refreshes_total` | counter | `outcome` (`refreshed`, `adopted`, `waited`, `reauth_required`, `failed`, and for `trigger="background"` only `skipped`: another refresher was at work, so the background moved on instead of waiting; with `adopted`, how a fleet's workers share each expiry, see [`BackgroundConfig`]), `cause` (a [`Cause`] name for `reauth_required`, an [`ErrorKind`] name for `failed`, else `none`), `trigger` (`expiring`, `session_expired`, `forced`, `background`) |
//! | `sfauth_refresh_duration_seconds` | histogram | |
//! | `sfauth_token_requests_total` | counter | |
//! | `sfauth_coalesced_callers_total` | counter | |
//! | `sfauth_tenants` | gauge | `status` (`active`, `reauth_required`): set by [`TokenManager::stats`] and each scan of the background refresher |
//! | `sfauth_client_secret_switches_total` | counter | `to` (`current`, `next`): Salesforce refused one consumer secret and accepted the other (a staged rotation was applied); also [`EventKind::ClientSecretSwitched`] |
//! | `sfauth_client_secret_in_use` | gauge | `slot` (`current`, `next`): 1 for the secret requests go out with, set at each switch |
//!
//! Each refresh runs in a `sfauth.refresh` tracing span with the tenant key, trigger, outcome
//! and cause (never a secret). [`TokenManager::stats`] returns the same counters as a snapshot.
//!
//! # Example
//!
//! Salesforce sends no `expires_in`, which asks two things of a caller: tell the client the
//! org's session timeout (Setup → Session Settings), so that tokens are refreshed before they
//! die; and when a call still gets 401 `INVALID_SESSION_ID` (a session revoked or timed out
//! early), report it with [`TokenManager::session_expired`] and retry once with the token it
//! returns. (The adapters of `sfauth-adapters` will do the second for you.)
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use sfauth::{ConnectedApp, ErrorKind, LoginHost, MemoryStore, OAuthClient, TokenManager};
//!
//! # async fn call_salesforce(_: &sfauth::AccessTokenGuard<'_>) -> u16 { 200 }
//! # async fn run(login_result: sfauth::TokenSet) -> sfauth::Result<()> {
//! let client = OAuthClient::new(
//!     LoginHost::Production,
//!     ConnectedApp::new("3MVG9.key").with_secret("secret"),
//! )
//! .with_session_timeout(Duration::from_secs(2 * 3600));
//! let manager = TokenManager::builder(client)
//!     .store(Arc::new(MemoryStore::new()))
//!     .build()
//!     .await?;
//! let key = manager.store_tokens(login_result, "default").await?;
//!
//! let mut token = match manager.access_token(&key).await {
//!     Ok(token) => token,
//!     Err(error) if error.kind() == ErrorKind::ReauthorizationRequired => {
//!         println!("ask the customer's admin to log in again: {error}");
//!         return Ok(());
//!     }
//!     Err(error) => return Err(error),
//! };
//! for _ in 0..2 {
//!     // Your request, with `token.authorization()` against `token.instance_url()`.
//!     if call_salesforce(&token).await != 401 {
//!         break;
//!     }
//!     let dead = token.access_token().clone();
//!     token = manager.session_expired(&key, &dead).await?;
//! }
//! # Ok(())
//! # }
//! ```

#![warn(clippy::arithmetic_side_effects)]

mod background;
mod clock;
mod engine;
mod error;
mod events;
mod guard;
mod holder;
mod idle;
mod lifetime;
mod login;
mod manager;
mod policy;
mod recent;
mod refresh;
mod renewal;
mod rotation;
mod state;
mod stats;
mod tenant;

pub use background::{BackgroundConfig, BackgroundRefresher};
pub use error::{Error, ErrorKind, LeaseHolder, Result};
pub use events::{Event, EventKind};
pub use guard::AccessTokenGuard;
pub use idle::{Idle, PARTNER_IDLE_LIMIT};
pub use login::{BoundLoopbackLogin, LoopbackLogin};
#[cfg(feature = "sqlite")]
pub use manager::default_sqlite_store;
pub use manager::{STORE_KEY_ENV, TokenManager, TokenManagerBuilder};
pub use policy::RefreshPolicy;
pub use renewal::{Renewal, RenewalResolver};
pub use rotation::{ROTATION_METADATA, Rotation};
pub use stats::Stats;
pub use tenant::Tenant;

/// Salesforce's OAuth protocol: every flow, the token types, errors and the HTTP boundary
/// (the `sfauth-core` crate).
pub use sfauth_core as oauth;
/// Token stores: the trait, the backends and their encryption (the `sfauth-storage` crate).
pub use sfauth_storage as storage;
/// HTTP transports: reqwest, retries, a recorder (the `sfauth-transport` crate).
pub use sfauth_transport as transport;

// What the manager's own signatures and the usual program need, at the root, so that a program
// depending on `sfauth` alone needs no other crate of ours and no version of `http`, `bytes` or
// `url` that could skew from ours.
pub use bytes;
pub use http;
pub use sfauth_core::flows::JwtBearer;
pub use sfauth_core::{
    AccessToken, Cause, ConnectedApp, IdentityUrl, LoginHost, OAuthClient, OrgId, PrivateKey,
    RefreshToken, TokenKey, TokenSet, UserId,
};
#[cfg(feature = "postgres")]
pub use sfauth_storage::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sfauth_storage::SqliteStore;
pub use sfauth_storage::{
    FileStore, Key, Keyring, MemoryStore, RenewalFlow, RenewalHint, TokenStore,
};
#[cfg(feature = "redis")]
pub use sfauth_storage::{RedisStore, RedisStoreBuilder};
pub use url::{self, Url};
