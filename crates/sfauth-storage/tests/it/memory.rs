//! The conformance suite against `MemoryStore`.
#![cfg(feature = "conformance")]

sfauth_storage::conformance_tests!(store = async { sfauth_storage::MemoryStore::new() });
