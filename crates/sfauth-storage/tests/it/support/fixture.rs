//! The record that the committed v1 fixtures (`tests/fixtures/v1`) hold, and their key.
//!
//! The fixtures were written by `FileStore` and `SqliteStore` as of commit 8e85c2b (before
//! `TokenRecord::renewal` existed): this record inserted, put once (version 2), and a lease
//! taken for 1 ms by `host-1/pid-2/task-3` (fence 1, long expired).
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sfauth_core::{
    AccessToken, ExpirySource, IdToken, IdentityUrl, LoginHost, RefreshToken, TokenKey, TokenSet,
};
use sfauth_storage::{InFlight, Key, Keyring, TokenRecord};

/// The fixtures' encryption key: a test key, fixed so that the committed files open.
pub(crate) fn fixture_keyring() -> Keyring {
    Keyring::new(Key::from_bytes([0x5a; 32]))
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The record every v1 fixture holds, every field set.
pub(crate) fn fixture_record() -> TokenRecord {
    let identity: IdentityUrl =
        "https://test.salesforce.com/id/00D5e000000FixAEAS/0055e000001FixAAAS"
            .parse()
            .unwrap();
    let mut tokens = TokenSet::new(
        AccessToken::new("00D5e000000FixAEAS!AQfixture-access"),
        "https://fixture.my.salesforce.com".parse().unwrap(),
        identity.clone(),
    );
    tokens.refresh_token = Some(RefreshToken::new("5Aepfixture-refresh"));
    tokens.issued_at = Some(at(1_700_000_000_123));
    tokens.signature = Some("c2lnbmF0dXJl".to_owned());
    tokens.scope = Some("api refresh_token openid".to_owned());
    tokens.token_type = Some("Bearer".to_owned());
    tokens.id_token = Some(IdToken::new("eyJ.fixture-idtoken.sig"));
    tokens.community_url = Some("https://fixture.my.site.com/customers".parse().unwrap());
    tokens.community_id = Some("0DB5e000000Abcd".to_owned());
    tokens.api_instance_url = Some("https://api.salesforce.com".parse().unwrap());
    tokens.expires_at = Some(at(1_700_007_200_123));
    tokens.expiry_source = Some(ExpirySource::SessionTimeout);
    let key = TokenKey::new(&LoginHost::Sandbox, &identity, "3MVG9.fixture", "v1");
    let mut record = TokenRecord::new(key, tokens, at(1_700_000_000_456));
    record.last_refreshed_at = Some(UNIX_EPOCH + Duration::new(1_700_000_100, 789));
    record.refresh_count = 3;
    record.learned_lifetime = Some(Duration::from_secs(7200));
    record.refresh_in_flight = Some(InFlight {
        holder: "host-1/pid-2/task-3".to_owned(),
        fence: 42,
        since: UNIX_EPOCH + Duration::new(1_700_000_050, 1),
    });
    record
}
