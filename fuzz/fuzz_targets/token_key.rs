//! Any text as a token key (the storage key of every backend): parsed or refused with an error,
//! never a panic. A key that parses prints back to a string that parses to the same key with
//! the same hash, and its serialized parts rebuild it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sfauth_core::TokenKey;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(key) = text.parse::<TokenKey>() else {
        return;
    };
    let printed = key.to_string();
    let again: TokenKey = printed.parse().expect("a printed key parses");
    assert_eq!(again, key);
    assert_eq!(again.precomputed_hash(), key.precomputed_hash());
    assert_eq!(again.to_string(), printed);

    let rebuilt = TokenKey::from_parts(
        key.login_host(),
        key.org_id().clone(),
        key.user_id().clone(),
        key.client_id(),
        key.label(),
    );
    assert_eq!(rebuilt, key, "a key's parts rebuild another key");
    assert_eq!(rebuilt.to_string(), printed);

    let stored = serde_json::to_string(&key).expect("a key serializes");
    let loaded: TokenKey = serde_json::from_str(&stored).expect("a key loads from its stored form");
    assert_eq!(loaded, key);
    assert_eq!(loaded.precomputed_hash(), key.precomputed_hash());
});
