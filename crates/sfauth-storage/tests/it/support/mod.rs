//! What several of the storage tests share: the committed v1 fixtures' record and key, and
//! finding the real servers the shared stores are tested against.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "test helpers outside #[test] functions; a skipped server is said out loud"
)]

#[cfg(all(any(feature = "sqlite", feature = "postgres"), feature = "conformance"))]
pub(crate) mod damage;
pub(crate) mod fixture;
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) mod server;
