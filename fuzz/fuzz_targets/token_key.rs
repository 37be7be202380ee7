//! Any text as a token key, identity URL or record id: parsed or refused with an error, never a
//! panic; a key that parses prints back to a string that parses to the same key.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sfauth_core::{IdentityUrl, OrgId, TokenKey};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = text.parse::<TokenKey>() {
        let printed = key.to_string();
        let again: TokenKey = printed.parse().expect("a printed key parses");
        assert_eq!(again, key);
        assert_eq!(again.precomputed_hash(), key.precomputed_hash());
        assert_eq!(again.to_string(), printed);
    }
    if let Ok(identity) = text.parse::<IdentityUrl>() {
        assert_eq!(identity.as_str(), text);
        let _ = (identity.org_id().as_str(), identity.user_id().as_str());
    }
    if let Ok(org) = text.parse::<OrgId>() {
        assert_eq!(
            org.as_str()
                .parse::<OrgId>()
                .expect("a normalized id parses"),
            org
        );
    }
});
