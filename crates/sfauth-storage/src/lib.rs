//! Token persistence for sfauth: the [`TokenStore`] trait, its backends, encryption at rest,
//! and the conformance suite every backend runs.
//!
//! A refresh token is often the only way back into a customer's org without a human, and
//! Salesforce rotates it on every use and revokes the whole family when a rotated-out one is
//! presented again. So a store must never lose a record, never hand out a stale one after a
//! newer one was written, and never let two refreshers spend the same refresh token. The trait
//! gives that shape: versioned records with compare-and-swap writes ([`TokenStore::put`]), and
//! a per-key refresh lease with a fencing token ([`TokenStore::try_acquire`]) that writes can be
//! made conditional on. Its `# Contract` section is the promise; `docs/storage-backends.md`
//! explains how to write a new backend.
//!
//! This crate depends only on `sfauth-core` (for [`TokenSet`](sfauth_core::TokenSet) and
//! [`TokenKey`](sfauth_core::TokenKey)): a storage backend never pulls in HTTP.
//!
//! # Backends and features
//!
//! | backend | feature | where | notes |
//! | --- | --- | --- | --- |
//! | [`MemoryStore`] | always | one process | for tests and throwaway processes |
//! | [`FileStore`] | always | one directory, one file per key | cross-process lease by advisory file locks |
//! | `SqliteStore` | `sqlite` (default) | one SQLite file (WAL) | the default of the CLI and the demo |
//! | `RedisStore` | `redis` | a Redis server, under a key prefix | shared by processes and machines; Lua scripts, server clock, pub/sub watches |
//! | `PostgresStore` | `postgres` | a PostgreSQL schema | shared by processes and machines; one statement per operation, lease rows, database clock, `LISTEN/NOTIFY` watches |
//! | `MockTokenStore` | `mock` | — | a mockall mock of the trait |
//! | `conformance` module | `conformance` | — | the shared suite and `conformance_tests!` |
//!
//! This crate's own tests turn `conformance` and `mock` on for themselves (a dev-dependency on
//! itself), so a plain `cargo test -p sfauth-storage` runs the suite against every backend.
//!
//! [`FileStore`] keeps one file per key rather than one file for all: compare-and-swap writes to
//! different keys are then independent, a write rewrites one small file, and a damaged file
//! loses one tenant rather than every refresh token at once (details on [`FileStore`]).
//!
//! The file and SQLite backends encrypt every record at rest with a [`Keyring`]
//! (XChaCha20-Poly1305; see [`Keyring`] for key sources and rotation). A wrong key is
//! [`ErrorKind::WrongKey`], a damaged record [`ErrorKind::Corrupt`]; neither is ever
//! overwritten by a read.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, SystemTime};
//!
//! use sfauth_core::{AccessToken, LoginHost, RefreshToken, TokenKey, TokenSet};
//! use sfauth_storage::{ErrorKind, MemoryStore, TokenRecord, TokenStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
//!
//! let mut tokens = TokenSet::new(
//!     AccessToken::new("00D5e000000AbcdEAC!AQ4AQ"),
//!     "https://acme.my.salesforce.com".parse()?,
//!     "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK".parse()?,
//! );
//! tokens.refresh_token = Some(RefreshToken::new("5Aep861"));
//! let key = TokenKey::new(&LoginHost::Production, &tokens.identity, "3MVG9.key", "default");
//! let version = store.insert(TokenRecord::new(key.clone(), tokens, SystemTime::now())).await?;
//!
//! // A refresher takes the lease, then writes the rotated token conditionally on it.
//! let lease = store.try_acquire(&key, "worker-1", Duration::from_secs(30)).await?.unwrap();
//! assert!(store.try_acquire(&key, "worker-2", Duration::from_secs(30)).await?.is_none());
//! let mut record = store.get(&key).await?.unwrap();
//! record.tokens.refresh_token = Some(RefreshToken::new("5Aep862"));
//! record.refresh_count += 1;
//! let version = store.put(record.clone(), version, Some(&lease)).await?;
//! store.release(&lease).await?;
//!
//! // A writer holding an old version changes nothing.
//! let stale = store.put(record, version - 1, None).await.unwrap_err();
//! assert_eq!(stale.kind(), ErrorKind::Conflict);
//! # Ok(())
//! # }
//! ```

// Stored records, lease files and rows are outside input: no arithmetic on what they hold
// (times, versions, fences, durations) may panic or wrap, so every operation is checked or
// saturating, and this lint keeps it so.
#![warn(clippy::arithmetic_side_effects)]

#[cfg(feature = "conformance")]
pub mod conformance;
mod crypto;
mod error;
mod file;
mod lease;
mod memory;
#[cfg(any(feature = "redis", feature = "postgres"))]
mod notices;
#[cfg(feature = "postgres")]
mod postgres;
mod record;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;

pub use crypto::{Key, Keyring};
pub use error::{Error, ErrorKind, Result};
pub use file::FileStore;
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
pub use record::{
    Cursor, EntryPage, HeaderPage, InFlight, Lease, ListEntry, ListPage, ListQuery, Metadata,
    RecordHeader, RecordStatus, RenewalFlow, RenewalHint, StatusKind, TokenRecord,
};
// `crate::` because `redis` alone would also name the driver crate.
#[cfg(feature = "redis")]
pub use crate::redis::{RedisStore, RedisStoreBuilder};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
#[cfg(feature = "mock")]
pub use store::MockTokenStore;
pub use store::{Changes, TokenStore, TokenStoreExt, Watch};
