//! Any text as an identity URL, an org id or a user id: parsed or refused with an error, never
//! a panic. An identity URL that parses keeps its text exactly (the token response's signature
//! covers it), loads back from its stored form, and its ids parse again to themselves; an id's
//! 15- and 18-character spellings are one id.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sfauth_core::{IdentityUrl, OrgId, UserId};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(identity) = text.parse::<IdentityUrl>() {
        assert_eq!(
            identity.as_str(),
            text,
            "an identity url is not kept as received"
        );
        assert_eq!(identity.to_string(), text);
        let stored = serde_json::to_string(&identity).expect("an identity url serializes");
        let loaded: IdentityUrl = serde_json::from_str(&stored)
            .expect("a parsed identity url loads from its stored form");
        assert_eq!(loaded, identity);
        check_id::<OrgId>(identity.org_id().as_str());
        check_id::<UserId>(identity.user_id().as_str());
        assert_eq!(
            identity.org_id().as_str().parse::<OrgId>().ok().as_ref(),
            Some(identity.org_id())
        );
    }
    check_id::<OrgId>(text);
    check_id::<UserId>(text);
});

/// An id that parses is letters and digits, its normal form parses to itself, and a 15-character
/// id becomes the 18-character id that starts with it.
fn check_id<T>(text: &str)
where
    T: std::str::FromStr + std::fmt::Display + PartialEq + std::fmt::Debug,
{
    let Ok(id) = text.parse::<T>() else {
        return;
    };
    let normal = id.to_string();
    assert!(
        !normal.is_empty() && normal.bytes().all(|b| b.is_ascii_alphanumeric()),
        "an id holds more than letters and digits: {normal:?}"
    );
    let again = normal.parse::<T>().ok().expect("a normalized id parses");
    assert_eq!(again, id, "an id's normal form is another id");
    if text.len() == 15 {
        assert_eq!(normal.len(), 18, "a 15-character id is not widened");
        assert!(normal.starts_with(text));
    } else {
        assert_eq!(normal, text, "an id other than 15 characters is changed");
    }
}
