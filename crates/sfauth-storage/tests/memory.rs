//! The conformance suite against `MemoryStore`.

sfauth_storage::conformance_tests!(store = async { sfauth_storage::MemoryStore::new() });
