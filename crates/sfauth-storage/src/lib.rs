//! Token persistence for sfauth: the `TokenStore` trait and its backends.
//!
//! This crate's one job is to keep token records safe between processes and restarts. It
//! depends only on `sfauth-core` (for the token types), so a storage backend never pulls in
//! HTTP. The trait, its backends and the shared conformance suite arrive with the storage issue.
