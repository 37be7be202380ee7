//! The conformance suite: one set of checks of the [`TokenStore`] contract that every backend
//! runs (feature `conformance`).
//!
//! Each case is a plain `pub async fn` that panics on a violation. Cases that need more than
//! the trait take a [`Persistent`] harness: a way to reopen the same data, with another keyring,
//! and to see and damage the raw bytes. Every case works in its own random namespace (random
//! org ids, user ids and client id), so cases can run in parallel against one shared database.
//!
//! A backend runs the whole suite with one line, which makes one `#[tokio::test]` per case, so
//! a failure names the case (the calling crate needs `tokio` with the `macros` and
//! `rt-multi-thread` features):
//!
//! ```text
//! // Only the trait: every case that needs no harness.
//! sfauth_storage::conformance_tests!(store = async { sfauth_storage::MemoryStore::new() });
//! // A persistent backend: every case, given a future of a `Persistent` harness.
//! sfauth_storage::conformance_tests!(persistent = async { MyHarness::new().await });
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "the suite is test code: a panic is how a case reports a violation"
)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::future::join_all;
use rand::Rng as _;
use rand::distr::Alphanumeric;
use sfauth_core::{
    AccessToken, ExpirySource, IdToken, IdentityUrl, LoginHost, OrgId, RefreshToken, TokenKey,
    TokenSet, UserId,
};

use crate::crypto::{Key, Keyring};
use crate::error::{ErrorKind, Result};
use crate::record::{
    EntryPage, InFlight, Lease, ListQuery, Metadata, RecordHeader, RecordStatus, RenewalHint,
    StatusKind, TokenRecord,
};
use crate::store::{TokenStore, TokenStoreExt as _};

/// How many tasks race in the race cases.
pub const RACERS: usize = 16;

/// What a persistent, encrypted backend offers beyond the trait, for the cases that need it.
#[async_trait]
pub trait Persistent: Send + Sync {
    /// The store under test, opened with [`Persistent::keyring`].
    fn store(&self) -> Arc<dyn TokenStore>;

    /// The keyring the store under test was opened with.
    fn keyring(&self) -> Keyring;

    /// A new, independent handle on the same data, opened with `keyring`.
    async fn reopen(&self, keyring: Keyring) -> Result<Arc<dyn TokenStore>>;

    /// Every byte the backend keeps on disk (all files, journals included).
    async fn raw_bytes(&self) -> Vec<u8>;

    /// The stored bytes of the record for `key`, in the backend's own format, if any.
    async fn read_raw(&self, key: &TokenKey) -> Option<Vec<u8>>;

    /// Replaces the stored bytes of the record for `key` (to damage it).
    async fn write_raw(&self, key: &TokenKey, bytes: Vec<u8>);
}

/// One case's random namespace: its own org ids, user ids and client id.
#[derive(Debug, Clone)]
pub struct Namespace {
    /// The client id every key of the case uses.
    pub client_id: String,
    tag: String,
}

fn random_text(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

impl Namespace {
    /// A fresh random namespace.
    pub fn new() -> Self {
        Self {
            client_id: format!("conformance-{}", random_text(12)),
            tag: random_text(8),
        }
    }

    /// A random org id.
    pub fn org(&self) -> OrgId {
        random_id("00D")
    }

    /// A random user id.
    pub fn user(&self) -> UserId {
        random_id("005")
    }

    /// A key in this namespace.
    pub fn key(&self, org: &OrgId, user: &UserId, label: &str) -> TokenKey {
        TokenKey::new(
            &LoginHost::Sandbox,
            &identity(org, user),
            &self.client_id,
            label,
        )
    }

    /// A record with every field of the token set and the record set, with secrets unique to
    /// this namespace and `label`.
    pub fn record(&self, key: &TokenKey) -> TokenRecord {
        let identity = identity(key.org_id(), key.user_id());
        let secret =
            |kind: &str| format!("{kind}-{}-{}-{}", self.tag, key.label(), random_text(10));
        let mut tokens = TokenSet::new(
            AccessToken::new(format!("{}!AQ{}", key.org_id(), secret("access"))),
            url("https://acme.my.salesforce.com"),
            identity,
        );
        tokens.refresh_token = Some(RefreshToken::new(format!("5Aep{}", secret("refresh"))));
        tokens.issued_at = Some(millis(1_700_000_000_123));
        tokens.signature = Some("c2lnbmF0dXJl".to_owned());
        tokens.scope = Some("api refresh_token openid".to_owned());
        tokens.token_type = Some("Bearer".to_owned());
        tokens.id_token = Some(IdToken::new(format!("eyJ.{}.sig", secret("idtoken"))));
        tokens.community_url = Some(url("https://acme.my.site.com/customers"));
        tokens.community_id = Some("0DB5e000000Abcd".to_owned());
        tokens.api_instance_url = Some(url("https://api.salesforce.com"));
        tokens.expires_at = Some(millis(1_700_007_200_123));
        tokens.expiry_source = Some(ExpirySource::SessionTimeout);
        let mut record = TokenRecord::new(key.clone(), tokens, millis(1_700_000_000_456));
        record.last_refreshed_at = Some(UNIX_EPOCH + Duration::new(1_700_000_100, 789));
        record.refresh_count = 3;
        record.learned_lifetime = Some(Duration::from_secs(7200));
        record.refresh_in_flight = Some(InFlight {
            holder: "host-1/pid-2/task-3".to_owned(),
            fence: 42,
            since: UNIX_EPOCH + Duration::new(1_700_000_050, 1),
        });
        record.renewal = Some(
            RenewalHint::jwt_bearer(format!("integration-{}@acme.example", self.tag))
                .with_key_ref(format!("/etc/sfauth/{}.pem", key.label())),
        );
        record
            .metadata
            .set("login_host", "https://acme.my.salesforce.com")
            .expect("a valid setting");
        record
            .metadata
            .set("flow", format!("jwt-{}", key.label()))
            .expect("a valid setting");
        record
            .metadata
            .set_secret("client_secret", secret("client-secret"))
            .expect("a valid secret");
        record
    }

    /// A key and record with a fresh org and user.
    pub fn fresh(&self, label: &str) -> (TokenKey, TokenRecord) {
        let key = self.key(&self.org(), &self.user(), label);
        let record = self.record(&key);
        (key, record)
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Self::new()
    }
}

fn random_id<T: std::str::FromStr>(prefix: &str) -> T {
    let text = format!("{prefix}{}", random_text(12));
    text.parse()
        .unwrap_or_else(|_| panic!("{text} is a 15-character record id"))
}

fn identity(org: &OrgId, user: &UserId) -> IdentityUrl {
    format!("https://test.salesforce.com/id/{org}/{user}")
        .parse()
        .unwrap_or_else(|_| panic!("identity url for {org}/{user}"))
}

fn url(text: &str) -> url::Url {
    url::Url::parse(text).unwrap_or_else(|_| panic!("{text} is a url"))
}

fn millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn holder(name: &str) -> String {
    format!("{name}-{}", random_text(6))
}

#[track_caller]
fn assert_kind<T: std::fmt::Debug>(result: Result<T>, kind: ErrorKind, what: &str) {
    match result {
        Err(error) => assert_eq!(error.kind(), kind, "{what}: {error}"),
        Ok(value) => panic!("{what}: expected {kind}, got Ok({value:?})"),
    }
}

async fn must_get(store: &dyn TokenStore, key: &TokenKey) -> TokenRecord {
    match store.get(key).await {
        Ok(Some(record)) => record,
        other => panic!("get {key}: {other:?}"),
    }
}

/// Every field of the record and of its token set survives insert, get and put; a missing key
/// reads as `None`.
pub async fn round_trip_every_field(store: &dyn TokenStore) {
    let ns = Namespace::new();
    let (key, record) = ns.fresh("round-trip");
    assert!(store.get(&key).await.expect("get missing").is_none());
    assert_eq!(store.insert(record.clone()).await.expect("insert"), 1);
    let stored = must_get(store, &key).await;
    assert_eq!(stored.version, 1);
    let mut expected = record.clone();
    expected.version = 1;
    assert_eq!(stored, expected, "every field round-trips");

    // Clear every optional field, then set them again: `None` round-trips too.
    let mut sparse = record.clone();
    sparse.tokens = TokenSet::new(
        AccessToken::new("sparse-access"),
        url("https://acme.my.salesforce.com"),
        identity(key.org_id(), key.user_id()),
    );
    sparse.last_refreshed_at = None;
    sparse.learned_lifetime = None;
    sparse.refresh_in_flight = None;
    sparse.renewal = None;
    sparse.refresh_count = 0;
    sparse.version = 99; // ignored by stores
    assert_eq!(store.put(sparse.clone(), 1, None).await.expect("put"), 2);
    sparse.version = 2;
    assert_eq!(must_get(store, &key).await, sparse);

    // Empty metadata round-trips (and is what a record stored before it existed reads as).
    sparse.metadata = Metadata::new();
    assert_eq!(store.put(sparse.clone(), 2, None).await.expect("put"), 3);
    sparse.version = 3;
    assert_eq!(must_get(store, &key).await, sparse);
    let version = 3;

    // A hint's optional parts round-trip when absent too.
    sparse.renewal = Some(RenewalHint::client_credentials());
    assert_eq!(
        store.put(sparse.clone(), version, None).await.expect("put"),
        version + 1
    );
    sparse.version = version + 1;
    assert_eq!(must_get(store, &key).await, sparse);
}

/// A record's metadata (settings and secrets) is written only by a successful compare-and-swap
/// like the rest of the record: a stale or lease-less write changes none of it, concurrent
/// writers of different settings leave exactly the winner's, and a listing returns it.
pub async fn metadata_is_versioned_with_the_record(store: &dyn TokenStore) {
    let ns = Namespace::new();
    let (key, record) = ns.fresh("metadata");
    store.insert(record.clone()).await.expect("insert");

    let mut changed = record.clone();
    changed.metadata.set("flow", "password").expect("valid");
    changed
        .metadata
        .set_secret("client_secret", "another-secret")
        .expect("valid");
    assert_kind(
        store.put(changed.clone(), 7, None).await,
        ErrorKind::Conflict,
        "a stale put with new metadata",
    );
    assert_eq!(
        must_get(store, &key).await.metadata,
        record.metadata,
        "a failed put leaves the metadata as it was"
    );

    let attempts = (0..RACERS).map(|i| {
        let mut racer = record.clone();
        racer
            .metadata
            .set("flow", format!("racer-{i}"))
            .expect("valid");
        racer
            .metadata
            .set_secret("client_secret", format!("secret-{i}"))
            .expect("valid");
        async move { (i, store.put(racer, 1, None).await) }
    });
    let winners: Vec<usize> = join_all(attempts)
        .await
        .into_iter()
        .filter_map(|(i, result)| match result {
            Ok(_) => Some(i),
            Err(error) => {
                assert_eq!(error.kind(), ErrorKind::Conflict, "racer {i}: {error}");
                None
            }
        })
        .collect();
    assert_eq!(winners.len(), 1, "exactly one writer wins: {winners:?}");
    let stored = must_get(store, &key).await;
    let winner = winners[0];
    assert_eq!(
        stored.metadata.get("flow"),
        Some(format!("racer-{winner}").as_str())
    );
    assert_eq!(
        stored.metadata.secret("client_secret"),
        Some(format!("secret-{winner}").as_str()),
        "settings and secret come from the same write"
    );

    // Removing an entry is a write like any other.
    let mut removed = stored.clone();
    assert!(removed.metadata.remove_secret("client_secret"));
    assert!(removed.metadata.remove("flow"));
    store.put(removed.clone(), 2, None).await.expect("put");
    let read = must_get(store, &key).await;
    assert_eq!(read.metadata.secret("client_secret"), None);
    assert_eq!(read.metadata.get("flow"), None);
    assert_eq!(
        read.metadata.get("login_host"),
        Some("https://acme.my.salesforce.com")
    );

    let listed = store
        .list_all(&ListQuery::new().client_id(ns.client_id.clone()))
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].metadata, read.metadata,
        "a listing carries the metadata"
    );
}

/// `RACERS` concurrent inserts of one key: exactly one succeeds, the others get `Conflict`, and
/// the stored record is the winner's.
pub async fn insert_if_absent_race(store: &dyn TokenStore) {
    let ns = Namespace::new();
    let (key, base) = ns.fresh("insert-race");
    let attempts = (0..RACERS).map(|i| {
        let mut record = base.clone();
        record.refresh_count = i as u64;
        async move { (i, store.insert(record).await) }
    });
    let results = join_all(attempts).await;
    let mut winners = Vec::new();
    for (i, result) in results {
        match result {
            Ok(version) => {
                assert_eq!(version, 1);
                winners.push(i);
            }
            Err(error) => assert_eq!(error.kind(), ErrorKind::Conflict, "racer {i}: {error}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one insert wins: {winners:?}");
    let stored = must_get(store, &key).await;
    assert_eq!(
        stored.refresh_count, winners[0] as u64,
        "the winner's record is stored"
    );
    assert_eq!(stored.version, 1);
}

/// `RACERS` concurrent puts on one version: exactly one wins, the rest get `Conflict`, and the
/// stored record is the winner's at the next version.
pub async fn cas_race(store: &dyn TokenStore) {
    let ns = Namespace::new();
    let (key, base) = ns.fresh("cas-race");
    store.insert(base.clone()).await.expect("insert");
    let attempts = (0..RACERS).map(|i| {
        let mut record = base.clone();
        record.refresh_count = 100 + i as u64;
        record.tokens.refresh_token = Some(RefreshToken::new(format!("5Aep-racer-{i}")));
        async move { (i, store.put(record, 1, None).await) }
    });
    let mut winners = Vec::new();
    for (i, result) in join_all(attempts).await {
        match result {
            Ok(version) => {
                assert_eq!(version, 2);
                winners.push(i);
            }
            Err(error) => assert_eq!(error.kind(), ErrorKind::Conflict, "racer {i}: {error}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one put wins: {winners:?}");
    let stored = must_get(store, &key).await;
    let winner = winners[0];
    assert_eq!(stored.version, 2);
    assert_eq!(stored.refresh_count, 100 + winner as u64);
    assert_eq!(
        stored
            .tokens
            .refresh_token
            .as_ref()
            .map(RefreshToken::expose_secret),
        Some(format!("5Aep-racer-{winner}").as_str()),
        "the winner's refresh token is stored"
    );
}

/// A put at a stale or future version is `Conflict`, a put on a missing key `NotFound`, an
/// insert over an existing key `Conflict`; none of them changes anything.
pub async fn stale_put_changes_nothing(store: &dyn TokenStore) {
    let ns = Namespace::new();
    let (key, record) = ns.fresh("stale");
    store.insert(record.clone()).await.expect("insert");
    let mut newer = record.clone();
    newer.refresh_count = 10;
    assert_eq!(store.put(newer, 1, None).await.expect("put"), 2);
    let before = must_get(store, &key).await;

    let mut stale = record.clone();
    stale.tokens.refresh_token = Some(RefreshToken::new("5Aep-stale"));
    assert_kind(
        store.put(stale.clone(), 1, None).await,
        ErrorKind::Conflict,
        "stale put",
    );
    assert_kind(
        store.put(stale.clone(), 7, None).await,
        ErrorKind::Conflict,
        "future put",
    );
    assert_kind(
        store.insert(stale.clone()).await,
        ErrorKind::Conflict,
        "insert over existing",
    );
    assert_eq!(must_get(store, &key).await, before, "nothing changed");

    let (missing, missing_record) = ns.fresh("missing");
    assert_kind(
        store.put(missing_record, 1, None).await,
        ErrorKind::NotFound,
        "put missing",
    );
    assert!(store.get(&missing).await.expect("get").is_none());
}

/// `delete` honours the expected version, reports whether it removed something, and a deleted
/// key can be inserted again at version 1.
pub async fn delete_semantics(store: &dyn TokenStore) {
    let ns = Namespace::new();
    let (key, record) = ns.fresh("delete");
    assert!(!store.delete(&key, None).await.expect("delete missing"));
    store.insert(record.clone()).await.expect("insert");
    assert_kind(
        store.delete(&key, Some(2)).await,
        ErrorKind::Conflict,
        "stale delete",
    );
    assert_eq!(
        must_get(store, &key).await.version,
        1,
        "stale delete changed nothing"
    );
    assert!(store.delete(&key, Some(1)).await.expect("delete"));
    assert!(store.get(&key).await.expect("get").is_none());
    assert!(!store.delete(&key, Some(1)).await.expect("delete again"));
    assert_eq!(store.insert(record.clone()).await.expect("insert again"), 1);
    assert!(
        store
            .delete(&key, None)
            .await
            .expect("unconditional delete")
    );
}

/// Of `RACERS` concurrent `try_acquire` by different holders, exactly one gets the lease; the
/// holder renews with the same fence; the others keep getting `None`.
pub async fn lease_exclusivity(store: &dyn TokenStore) {
    let ns = Namespace::new();
    let (key, _) = ns.fresh("lease");
    let ttl = Duration::from_secs(30);
    let holders: Vec<String> = (0..RACERS).map(|i| holder(&format!("racer{i}"))).collect();
    let attempts = holders.iter().map(|name| {
        let key = &key;
        async move { store.try_acquire(key, name, ttl).await }
    });
    let leases: Vec<_> = join_all(attempts)
        .await
        .into_iter()
        .filter_map(|result| result.expect("try_acquire"))
        .collect();
    assert_eq!(leases.len(), 1, "exactly one holder wins: {leases:?}");
    let lease = &leases[0];
    assert_eq!(lease.key, key);
    assert!(lease.fence >= 1);
    assert!(lease.expires_at > SystemTime::now());

    let renewed = store
        .try_acquire(&key, &lease.holder, ttl)
        .await
        .expect("renew")
        .expect("the holder renews");
    assert_eq!(renewed.fence, lease.fence, "a renewal keeps the fence");
    assert!(renewed.expires_at >= lease.expires_at);
    for name in holders.iter().filter(|name| **name != lease.holder) {
        assert!(
            store
                .try_acquire(&key, name, ttl)
                .await
                .expect("try_acquire")
                .is_none(),
            "{name} must not get a held lease"
        );
    }
    // Leases are per key.
    let (other, _) = ns.fresh("other-lease");
    assert!(
        store
            .try_acquire(&other, &holders[0], ttl)
            .await
            .expect("other")
            .is_some()
    );
    assert_kind(
        store.try_acquire(&key, "", ttl).await,
        ErrorKind::Config,
        "empty holder",
    );
}

/// An expired lease is taken over by another holder with a greater fence, and the old holder's
/// conditional write is `LeaseLost`.
pub async fn lease_expiry_and_takeover(store: &dyn TokenStore) {
    let ns = Namespace::new();
    let (key, record) = ns.fresh("expiry");
    store.insert(record.clone()).await.expect("insert");
    let (a, b) = (holder("a"), holder("b"));
    let held = store
        .try_acquire(&key, &a, Duration::from_secs(30))
        .await
        .expect("acquire")
        .expect("free lease");
    assert!(
        store
            .try_acquire(&key, &b, Duration::from_secs(30))
            .await
            .expect("b")
            .is_none()
    );
    // A renewal sets the expiry to now + ttl, so it can also shorten the lease. (Taking the
    // lease with a short ttl at once would make the check above race the clock.)
    let first = store
        .try_acquire(&key, &a, Duration::from_millis(50))
        .await
        .expect("renew")
        .expect("the holder renews");
    assert_eq!(first.fence, held.fence);
    tokio::time::sleep(Duration::from_millis(80)).await;
    let second = store
        .try_acquire(&key, &b, Duration::from_secs(30))
        .await
        .expect("takeover")
        .expect("an expired lease can be taken over");
    assert!(second.fence > first.fence, "takeover raises the fence");
    assert_kind(
        store.put(record.clone(), 1, Some(&first)).await,
        ErrorKind::LeaseLost,
        "write under the expired lease",
    );
    assert_eq!(
        store
            .put(record.clone(), 1, Some(&second))
            .await
            .expect("put"),
        2
    );
    // The old holder's release does not free the new holder's lease.
    store.release(&first).await.expect("stale release");
    assert!(
        store
            .try_acquire(&key, &a, Duration::from_secs(30))
            .await
            .expect("a")
            .is_none()
    );
}

/// Fences grow strictly across acquire, release, expiry and re-acquire, by any holder; a
/// release of a lease that is no longer current does nothing.
pub async fn fencing_is_monotonic(store: &dyn TokenStore) {
    let ns = Namespace::new();
    let (key, _) = ns.fresh("fence");
    let (a, b) = (holder("a"), holder("b"));
    let long = Duration::from_secs(30);
    let mut fences = Vec::new();
    let l1 = store
        .try_acquire(&key, &a, long)
        .await
        .expect("1")
        .expect("1");
    fences.push(l1.fence);
    store.release(&l1).await.expect("release 1");
    store.release(&l1).await.expect("release twice is a no-op");
    let l2 = store
        .try_acquire(&key, &a, long)
        .await
        .expect("2")
        .expect("2");
    fences.push(l2.fence);
    store.release(&l2).await.expect("release 2");
    let l3 = store
        .try_acquire(&key, &b, Duration::from_millis(50))
        .await
        .expect("3")
        .expect("3");
    fences.push(l3.fence);
    tokio::time::sleep(Duration::from_millis(80)).await;
    let l4 = store
        .try_acquire(&key, &b, long)
        .await
        .expect("4")
        .expect("4");
    fences.push(l4.fence);
    // The expired lease was re-acquired by its own holder: that is a new lease, not a renewal.
    store
        .release(&l3)
        .await
        .expect("release of a superseded lease");
    assert!(
        store
            .try_acquire(&key, &a, long)
            .await
            .expect("5")
            .is_none(),
        "l4 still held"
    );
    store.release(&l4).await.expect("release 4");
    let l5 = store
        .try_acquire(&key, &a, long)
        .await
        .expect("5")
        .expect("5");
    fences.push(l5.fence);
    assert!(
        fences.windows(2).all(|pair| pair[0] < pair[1]),
        "fences must strictly increase: {fences:?}"
    );
    // A deleted record does not reset the fence.
    store.release(&l5).await.expect("release 5");
    store.delete(&key, None).await.expect("delete");
    let l6 = store
        .try_acquire(&key, &a, long)
        .await
        .expect("6")
        .expect("6");
    assert!(l6.fence > l5.fence);
}

/// A put under a lease succeeds while the lease is current and is `LeaseLost`, changing
/// nothing, once it was released or taken over, or when it is another key's lease.
pub async fn put_with_lost_lease_changes_nothing(store: &dyn TokenStore) {
    let ns = Namespace::new();
    let (key, record) = ns.fresh("lost");
    store.insert(record.clone()).await.expect("insert");
    let (a, b) = (holder("a"), holder("b"));
    let long = Duration::from_secs(30);
    let lease = store
        .try_acquire(&key, &a, long)
        .await
        .expect("a")
        .expect("a");
    let mut next = record.clone();
    next.refresh_in_flight = Some(InFlight {
        holder: a.clone(),
        fence: lease.fence,
        since: SystemTime::now(),
    });
    assert_eq!(
        store.put(next.clone(), 1, Some(&lease)).await.expect("put"),
        2
    );

    store.release(&lease).await.expect("release");
    let mut lost = next.clone();
    lost.tokens.refresh_token = Some(RefreshToken::new("5Aep-lost"));
    assert_kind(
        store.put(lost.clone(), 2, Some(&lease)).await,
        ErrorKind::LeaseLost,
        "released",
    );
    let taken = store
        .try_acquire(&key, &b, long)
        .await
        .expect("b")
        .expect("b");
    assert_kind(
        store.put(lost.clone(), 2, Some(&lease)).await,
        ErrorKind::LeaseLost,
        "taken",
    );
    let (other, other_record) = ns.fresh("other");
    store.insert(other_record).await.expect("insert other");
    let other_lease = store
        .try_acquire(&other, &b, long)
        .await
        .expect("o")
        .expect("o");
    assert_kind(
        store.put(lost.clone(), 2, Some(&other_lease)).await,
        ErrorKind::LeaseLost,
        "another key's lease",
    );
    let stored = must_get(store, &key).await;
    assert_eq!(stored.version, 2, "nothing changed");
    assert_eq!(stored.tokens, next.tokens, "nothing changed");
    // A stale version under a current lease is still a conflict.
    assert_kind(
        store.put(lost.clone(), 1, Some(&taken)).await,
        ErrorKind::Conflict,
        "stale",
    );
    assert_eq!(store.put(lost, 2, Some(&taken)).await.expect("put"), 3);
}

/// A live [`Watch`](crate::Watch) fires after a write to its key made after it was taken,
/// whichever write it is (insert, put, delete); a backend without notifications passes
/// trivially (its watches are not live and callers poll).
pub async fn watch_sees_writes(store: &dyn TokenStore) {
    let ns = Namespace::new();
    let (key, record) = ns.fresh("watch");
    let within = Duration::from_secs(5);
    let before = store.watch(&key).await.expect("watch");
    if !before.is_live() {
        return;
    }
    store.insert(record.clone()).await.expect("insert");
    assert!(before.changed(within).await, "an insert wakes a watch");

    let watch = store.watch(&key).await.expect("watch");
    let version = store.put(record.clone(), 1, None).await.expect("put");
    assert!(watch.changed(within).await, "a put wakes a watch");

    // The write lands while the watcher is already waiting, from another task.
    let watch = store.watch(&key).await.expect("watch");
    let waiting = tokio::spawn(watch.changed(within));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(store.delete(&key, Some(version)).await.expect("delete"));
    assert!(
        waiting.await.expect("join"),
        "a delete wakes a waiting watch"
    );

    // Another key's write need not wake it, and a watch on a key nobody writes times out.
    let (other, other_record) = ns.fresh("watch-other");
    let quiet = store.watch(&other).await.expect("watch");
    store.insert(other_record).await.expect("insert");
    let quiet_again = store.watch(&key).await.expect("watch");
    drop(quiet);
    let started = std::time::Instant::now();
    let _ = quiet_again.changed(Duration::from_millis(100)).await;
    assert!(started.elapsed() < within, "the fallback bounds the wait");
}

/// `lease` reports the current holder, fence and expiry exactly as issued, and `None` for a
/// free, released or expired lease; asking changes nothing.
pub async fn lease_is_reported_and_unchanged(store: &dyn TokenStore) {
    let ns = Namespace::new();
    let (key, _) = ns.fresh("report");
    let (a, b) = (holder("a"), holder("b"));
    let long = Duration::from_secs(30);
    assert!(store.lease(&key).await.expect("free").is_none(), "free");
    let held = store
        .try_acquire(&key, &a, long)
        .await
        .expect("a")
        .expect("a");
    assert_eq!(store.lease(&key).await.expect("held"), Some(held.clone()));
    assert_eq!(
        store.lease(&key).await.expect("again"),
        Some(held.clone()),
        "asking does not extend the lease"
    );
    assert!(
        store
            .try_acquire(&key, &b, long)
            .await
            .expect("b")
            .is_none(),
        "asking does not free the lease"
    );
    store.release(&held).await.expect("release");
    assert!(
        store.lease(&key).await.expect("released").is_none(),
        "released"
    );

    let short = store
        .try_acquire(&key, &b, Duration::from_millis(50))
        .await
        .expect("b")
        .expect("b");
    assert!(short.fence > held.fence);
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(
        store.lease(&key).await.expect("expired").is_none(),
        "expired"
    );
    let (other, _) = ns.fresh("report-other");
    assert!(
        store.lease(&other).await.expect("other").is_none(),
        "leases are per key"
    );
}

/// `renew` extends the current lease (same fence, later expiry), and returns `None`, changing
/// nothing, for a lease that is not the current one: another holder's name or fence, or one
/// that was released.
pub async fn renew_extends_only_the_current_lease(store: &dyn TokenStore) {
    let ns = Namespace::new();
    let (key, record) = ns.fresh("renew");
    store.insert(record.clone()).await.expect("insert");
    let (a, b) = (holder("a"), holder("b"));
    let held = store
        .try_acquire(&key, &a, Duration::from_secs(30))
        .await
        .expect("a")
        .expect("a");
    let renewed = store
        .renew(&held, Duration::from_secs(300))
        .await
        .expect("renew")
        .expect("the current lease renews");
    assert_eq!(renewed.key, held.key);
    assert_eq!(renewed.holder, held.holder);
    assert_eq!(renewed.fence, held.fence, "a renewal keeps the fence");
    assert!(renewed.expires_at > held.expires_at, "a renewal extends");
    assert_eq!(
        store.lease(&key).await.expect("lease"),
        Some(renewed.clone())
    );
    // The lease from before the renewal is the same lease: it still renews and still writes.
    let again = store
        .renew(&held, Duration::from_secs(300))
        .await
        .expect("renew")
        .expect("same holder and fence");
    assert_eq!(again.fence, held.fence);
    assert_eq!(
        store
            .put(record.clone(), 1, Some(&held))
            .await
            .expect("put"),
        2
    );

    let forged = [
        Lease {
            holder: b.clone(),
            ..renewed.clone()
        },
        Lease {
            fence: renewed.fence + 1,
            ..renewed.clone()
        },
        Lease {
            fence: renewed.fence.saturating_sub(1),
            ..renewed.clone()
        },
    ];
    for lease in &forged {
        assert!(
            store
                .renew(lease, Duration::from_secs(300))
                .await
                .expect("renew")
                .is_none(),
            "{lease:?} is not the current lease"
        );
    }
    let current = store.lease(&key).await.expect("lease").expect("still held");
    assert_eq!((current.holder, current.fence), (a.clone(), held.fence));

    store.release(&renewed).await.expect("release");
    assert!(
        store
            .renew(&renewed, Duration::from_secs(300))
            .await
            .expect("renew")
            .is_none(),
        "a released lease does not renew"
    );
    assert!(
        store.lease(&key).await.expect("lease").is_none(),
        "and stays free"
    );
    let (other, _) = ns.fresh("renew-missing");
    let never = Lease {
        key: other.clone(),
        ..renewed.clone()
    };
    assert!(
        store
            .renew(&never, Duration::from_secs(300))
            .await
            .expect("renew")
            .is_none(),
        "a key that never had a lease"
    );
    assert!(store.lease(&other).await.expect("lease").is_none());
}

/// A lease that expired does not renew, even if nobody took it meanwhile; a write under it is
/// `LeaseLost`; the next holder gets a greater fence.
pub async fn renew_after_expiry_is_lost(store: &dyn TokenStore) {
    let ns = Namespace::new();
    let (key, record) = ns.fresh("renew-expired");
    store.insert(record.clone()).await.expect("insert");
    let (a, b) = (holder("a"), holder("b"));
    let held = store
        .try_acquire(&key, &a, Duration::from_secs(30))
        .await
        .expect("a")
        .expect("a");
    // A renewal sets the expiry to now + ttl, so it can also shorten the lease.
    let short = store
        .renew(&held, Duration::from_millis(50))
        .await
        .expect("renew")
        .expect("renews");
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(
        store
            .renew(&short, Duration::from_secs(30))
            .await
            .expect("renew")
            .is_none(),
        "an expired lease does not renew"
    );
    assert!(store.lease(&key).await.expect("lease").is_none());
    assert_kind(
        store.put(record.clone(), 1, Some(&short)).await,
        ErrorKind::LeaseLost,
        "write under the expired lease",
    );
    assert_eq!(must_get(store, &key).await.version, 1, "nothing written");
    let next = store
        .try_acquire(&key, &b, Duration::from_secs(30))
        .await
        .expect("b")
        .expect("an expired lease is free");
    assert!(next.fence > held.fence);
}

/// `take_over` replaces the current lease when it is exactly the stale one, expired or not,
/// with a greater fence; the stale holder then cannot write, renew or release. Anything else
/// (another fence or holder, a free key, an empty holder name) changes nothing.
pub async fn take_over_replaces_only_the_stale_lease(store: &dyn TokenStore) {
    let ns = Namespace::new();
    let (key, record) = ns.fresh("take-over");
    store.insert(record.clone()).await.expect("insert");
    let (a, b, c) = (holder("a"), holder("b"), holder("c"));
    let long = Duration::from_secs(30);
    assert!(
        store
            .take_over(
                &Lease {
                    key: key.clone(),
                    holder: a.clone(),
                    fence: 1,
                    expires_at: SystemTime::now() + long,
                },
                &b,
                long
            )
            .await
            .expect("take over free")
            .is_none(),
        "a free key is not taken over"
    );
    assert!(store.lease(&key).await.expect("lease").is_none());

    let stale = store
        .try_acquire(&key, &a, long)
        .await
        .expect("a")
        .expect("a");
    for forged in [
        Lease {
            holder: c.clone(),
            ..stale.clone()
        },
        Lease {
            fence: stale.fence + 1,
            ..stale.clone()
        },
    ] {
        assert!(
            store
                .take_over(&forged, &b, long)
                .await
                .expect("take over")
                .is_none(),
            "{forged:?} is not the current lease"
        );
    }
    assert_eq!(store.lease(&key).await.expect("lease"), Some(stale.clone()));
    assert_kind(
        store.take_over(&stale, "", long).await,
        ErrorKind::Config,
        "empty holder",
    );
    assert_eq!(store.lease(&key).await.expect("lease"), Some(stale.clone()));

    let taken = store
        .take_over(&stale, &b, long)
        .await
        .expect("take over")
        .expect("the live stale lease is taken over");
    assert_eq!(taken.key, key);
    assert_eq!(taken.holder, b);
    assert!(taken.fence > stale.fence, "take-over raises the fence");
    assert!(taken.expires_at > SystemTime::now());
    assert_eq!(store.lease(&key).await.expect("lease"), Some(taken.clone()));

    assert_kind(
        store.put(record.clone(), 1, Some(&stale)).await,
        ErrorKind::LeaseLost,
        "write under the stale lease",
    );
    assert!(
        store.renew(&stale, long).await.expect("renew").is_none(),
        "the stale lease does not renew"
    );
    store.release(&stale).await.expect("stale release");
    assert_eq!(
        store.lease(&key).await.expect("lease"),
        Some(taken.clone()),
        "the stale holder's release does not free the new lease"
    );
    assert!(
        store
            .take_over(&stale, &c, long)
            .await
            .expect("take over")
            .is_none(),
        "a lease is taken over once"
    );
    assert_eq!(
        store
            .put(record.clone(), 1, Some(&taken))
            .await
            .expect("put"),
        2
    );

    // An expired stale lease can be taken over too, still with a greater fence.
    let short = store
        .renew(&taken, Duration::from_millis(50))
        .await
        .expect("renew")
        .expect("renews");
    tokio::time::sleep(Duration::from_millis(80)).await;
    let after_expiry = store
        .take_over(&short, &c, long)
        .await
        .expect("take over")
        .expect("an expired but unreplaced lease is taken over");
    assert!(after_expiry.fence > taken.fence);
    store.release(&after_expiry).await.expect("release");
    let next = store
        .try_acquire(&key, &a, long)
        .await
        .expect("a")
        .expect("free");
    assert!(next.fence > after_expiry.fence, "fences keep growing");
}

/// Of `RACERS` concurrent take-overs of one stale lease, exactly one wins; the losers get
/// `None`, the stale lease can no longer write and the winner can.
pub async fn take_over_race(store: &dyn TokenStore) {
    let ns = Namespace::new();
    let (key, record) = ns.fresh("take-over-race");
    store.insert(record.clone()).await.expect("insert");
    let long = Duration::from_secs(30);
    let stale = store
        .try_acquire(&key, &holder("dead"), long)
        .await
        .expect("dead")
        .expect("dead");
    let holders: Vec<String> = (0..RACERS).map(|i| holder(&format!("racer{i}"))).collect();
    let attempts = holders.iter().map(|name| {
        let stale = &stale;
        async move { store.take_over(stale, name, long).await }
    });
    let winners: Vec<_> = join_all(attempts)
        .await
        .into_iter()
        .filter_map(|result| result.expect("take_over"))
        .collect();
    assert_eq!(winners.len(), 1, "exactly one take-over wins: {winners:?}");
    let winner = &winners[0];
    assert!(winner.fence > stale.fence);
    assert_eq!(
        store.lease(&key).await.expect("lease"),
        Some(winner.clone())
    );
    assert_kind(
        store.put(record.clone(), 1, Some(&stale)).await,
        ErrorKind::LeaseLost,
        "write under the stale lease",
    );
    assert_eq!(store.put(record, 1, Some(winner)).await.expect("put"), 2);
}

/// A listing test record: its key, org, user and whether it needs re-authorization.
type Placed = (TokenKey, OrgId, UserId, bool);

/// Listing filters by org, user, client id and status (alone and combined) and pages by cursor
/// with no duplicate and no gap, in key order.
pub async fn listing_filters_and_pagination(store: &dyn TokenStore) {
    let ns = Namespace::new();
    let (org_a, org_b) = (ns.org(), ns.org());
    let (user_1, user_2) = (ns.user(), ns.user());
    let layout = [
        (&org_a, &user_1, "one", false),
        (&org_a, &user_1, "two", true),
        (&org_a, &user_2, "three", false),
        (&org_a, &user_2, "four", true),
        (&org_b, &user_1, "five", false),
        (&org_b, &user_2, "six", false),
        (&org_b, &user_2, "seven", true),
    ];
    let mut all = Vec::new();
    for (org, user, label, reauth) in layout {
        let key = ns.key(org, user, label);
        let record = listed_record(&ns, &key, reauth);
        store.insert(record).await.expect("insert");
        all.push((key, org.clone(), user.clone(), reauth));
    }
    let keys_of = |pred: &dyn Fn(&Placed) -> bool| {
        let mut keys: Vec<String> = all
            .iter()
            .filter(|e| pred(e))
            .map(|e| e.0.to_string())
            .collect();
        keys.sort();
        keys
    };
    let listed = |query: ListQuery| async move {
        let records = store.list_all(&query).await.expect("list");
        records
            .iter()
            .map(|r| r.key.to_string())
            .collect::<Vec<_>>()
    };

    let client = || ListQuery::new().client_id(ns.client_id.clone());
    assert_eq!(listed(client()).await, keys_of(&|_| true), "by client id");
    assert_eq!(
        listed(ListQuery::new().org_id(org_a.clone())).await,
        keys_of(&|e| e.1 == org_a),
        "by org"
    );
    assert_eq!(
        listed(ListQuery::new().user_id(user_2.clone())).await,
        keys_of(&|e| e.2 == user_2),
        "by user"
    );
    assert_eq!(
        listed(client().status(StatusKind::ReauthRequired)).await,
        keys_of(&|e| e.3),
        "by status"
    );
    assert_eq!(
        listed(client().status(StatusKind::Active)).await,
        keys_of(&|e| !e.3),
        "active only"
    );
    assert_eq!(
        listed(
            ListQuery::new()
                .org_id(org_b.clone())
                .user_id(user_2.clone())
                .status(StatusKind::Active)
        )
        .await,
        keys_of(&|e| e.1 == org_b && e.2 == user_2 && !e.3),
        "combined"
    );
    assert!(
        listed(client().org_id(ns.org())).await.is_empty(),
        "no match"
    );

    // Paging: every page size yields each key once, in order, and the pages are full but the
    // last.
    let expected = keys_of(&|_| true);
    for limit in [1, 2, 3, 7, 8] {
        let mut seen = Vec::new();
        let mut query = client().limit(limit);
        let mut pages = 0;
        loop {
            let page = store.list(&query).await.expect("page");
            pages += 1;
            assert!(page.records.len() <= limit);
            if page.next.is_some() {
                assert_eq!(page.records.len(), limit, "only the last page is short");
            }
            seen.extend(page.records.iter().map(|r| r.key.to_string()));
            match page.next {
                Some(next) => query = query.after(Some(next)),
                None => break,
            }
            assert!(pages <= expected.len(), "paging does not end");
        }
        assert_eq!(
            seen, expected,
            "limit {limit}: no duplicate, no gap, key order"
        );
    }
    // Listed records are whole records at their latest version.
    let records = store.list_all(&client()).await.expect("list");
    for record in records {
        assert_eq!(record, must_get(store, &record.key).await);
    }
}

/// Active → ReauthRequired → Active, each by CAS, is stored and listed accordingly.
pub async fn status_transitions(store: &dyn TokenStore) {
    let ns = Namespace::new();
    let (key, record) = ns.fresh("status");
    store.insert(record.clone()).await.expect("insert");
    let by_status = |status| {
        ListQuery::new()
            .client_id(ns.client_id.clone())
            .status(status)
    };
    let count = |status| async move {
        store
            .list_all(&by_status(status))
            .await
            .expect("list")
            .len()
    };
    assert_eq!(count(StatusKind::Active).await, 1);

    let mut reauth = must_get(store, &key).await;
    let since = UNIX_EPOCH + Duration::new(1_700_000_300, 5);
    reauth.status = RecordStatus::ReauthRequired {
        reason: "invalid_grant: expired access/refresh token".to_owned(),
        since,
    };
    reauth.tokens.refresh_token = None;
    assert_eq!(
        store.put(reauth.clone(), 1, None).await.expect("to reauth"),
        2
    );
    let stored = must_get(store, &key).await;
    assert_eq!(stored.status, reauth.status);
    assert_eq!(stored.status.kind(), StatusKind::ReauthRequired);
    assert_eq!(count(StatusKind::Active).await, 0);
    assert_eq!(count(StatusKind::ReauthRequired).await, 1);

    let mut again = ns.record(&key);
    again.status = RecordStatus::Active;
    assert_eq!(
        store.put(again.clone(), 2, None).await.expect("to active"),
        3
    );
    let stored = must_get(store, &key).await;
    assert_eq!(stored.status, RecordStatus::Active);
    assert_eq!(stored.tokens, again.tokens);
    assert_eq!(count(StatusKind::Active).await, 1);
    assert_eq!(count(StatusKind::ReauthRequired).await, 0);
}

/// Records, versions and fences survive closing and reopening the store.
pub async fn persistence_across_reopen(store: &dyn TokenStore, disk: &dyn Persistent) {
    let ns = Namespace::new();
    let (key, record) = ns.fresh("persist");
    store.insert(record.clone()).await.expect("insert");
    store.put(record.clone(), 1, None).await.expect("put");
    let (absent, _) = ns.fresh("fence-only");
    let lease = store
        .try_acquire(&absent, &holder("a"), Duration::from_secs(30))
        .await
        .expect("acquire")
        .expect("lease");
    store.release(&lease).await.expect("release");
    let held = store
        .try_acquire(&key, &holder("b"), Duration::from_secs(30))
        .await
        .expect("acquire")
        .expect("lease");

    let reopened = disk.reopen(disk.keyring()).await.expect("reopen");
    assert_eq!(
        reopened.lease(&key).await.expect("lease"),
        Some(held.clone()),
        "the lease's holder, fence and expiry persist"
    );
    let stored = must_get(&*reopened, &key).await;
    let mut expected = record.clone();
    expected.version = 2;
    assert_eq!(stored, expected, "record and version persist");
    assert!(
        reopened
            .try_acquire(&key, &holder("c"), Duration::from_secs(30))
            .await
            .expect("acquire")
            .is_none(),
        "a held lease persists"
    );
    assert_eq!(
        reopened
            .put(record.clone(), 2, Some(&held))
            .await
            .expect("put"),
        3
    );
    let again = reopened
        .try_acquire(&absent, &holder("d"), Duration::from_secs(30))
        .await
        .expect("acquire")
        .expect("lease");
    assert!(again.fence > lease.fence, "fences persist");
    assert_eq!(
        must_get(store, &key).await.version,
        3,
        "both handles see the latest"
    );
}

/// No access, refresh or ID token appears in the raw bytes on disk.
pub async fn no_plaintext_on_disk(store: &dyn TokenStore, disk: &dyn Persistent) {
    let ns = Namespace::new();
    let (key, record) = ns.fresh("plaintext");
    store.insert(record.clone()).await.expect("insert");
    let mut next = ns.record(&key);
    next.tokens.refresh_token = Some(RefreshToken::new(format!(
        "5Aep-rotated-{}",
        random_text(12)
    )));
    store.put(next.clone(), 1, None).await.expect("put");
    let raw = disk.raw_bytes().await;
    assert!(!raw.is_empty(), "the backend reports its bytes");
    let mut secrets = Vec::new();
    for r in [&record, &next] {
        secrets.push(r.tokens.access_token.expose_secret().to_owned());
        secrets.extend(
            r.tokens
                .refresh_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned()),
        );
        secrets.extend(
            r.tokens
                .id_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned()),
        );
        secrets.extend(r.metadata.secret("client_secret").map(str::to_owned));
    }
    assert_eq!(
        secrets.len(),
        8,
        "every secret of both records is looked for"
    );
    for secret in secrets {
        // The random tail alone is distinctive and must not appear either.
        let tail = &secret[secret.len() - 10..];
        assert!(
            !raw.windows(tail.len()).any(|w| w == tail.as_bytes()),
            "a secret is on disk in the clear"
        );
    }
}

/// Damaged records (a flipped byte, a truncation) read as `Corrupt` — through `get` and `list`
/// — and the damaged bytes are left as they were.
pub async fn corrupted_record_is_typed_error(store: &dyn TokenStore, disk: &dyn Persistent) {
    let ns = Namespace::new();
    for damage in ["flip", "truncate"] {
        let (key, record) = ns.fresh(damage);
        store.insert(record.clone()).await.expect("insert");
        let mut raw = disk.read_raw(&key).await.expect("raw record");
        match damage {
            "flip" => {
                let last = raw.len() - 1;
                raw[last] ^= 0x01;
            }
            _ => raw.truncate(raw.len() / 2),
        }
        disk.write_raw(&key, raw.clone()).await;
        assert_kind(store.get(&key).await, ErrorKind::Corrupt, damage);
        let query = ListQuery::new().client_id(ns.client_id.clone());
        assert_kind(store.list(&query).await, ErrorKind::Corrupt, "list");
        let reopened = disk.reopen(disk.keyring()).await.expect("reopen");
        assert_kind(reopened.get(&key).await, ErrorKind::Corrupt, "after reopen");
        assert_eq!(
            disk.read_raw(&key).await,
            Some(raw),
            "reads left the record alone"
        );
        assert!(
            store
                .delete(&key, None)
                .await
                .expect("a damaged record can be deleted")
        );
    }
}

/// A store opened with a key that did not seal a record gets `WrongKey` on `get`, `list` and
/// `put`, and overwrites nothing; the right key still reads it.
pub async fn wrong_key_is_typed_error(store: &dyn TokenStore, disk: &dyn Persistent) {
    let ns = Namespace::new();
    let (key, record) = ns.fresh("wrong-key");
    store.insert(record.clone()).await.expect("insert");
    let raw = disk.read_raw(&key).await.expect("raw record");
    let wrong = disk
        .reopen(Keyring::new(Key::generate()))
        .await
        .expect("reopen");
    assert_kind(wrong.get(&key).await, ErrorKind::WrongKey, "get");
    let query = ListQuery::new().client_id(ns.client_id.clone());
    assert_kind(wrong.list(&query).await, ErrorKind::WrongKey, "list");
    assert_kind(
        wrong.put(record.clone(), 1, None).await,
        ErrorKind::WrongKey,
        "put",
    );
    assert_eq!(disk.read_raw(&key).await, Some(raw), "nothing overwritten");
    let mut expected = record;
    expected.version = 1;
    assert_eq!(
        must_get(store, &key).await,
        expected,
        "the right key still reads it"
    );
}

/// After a rotation (new current key, old key kept for reading) old records read, every write
/// re-seals with the new key, and once the old key is dropped only rewritten records read.
pub async fn key_rotation(store: &dyn TokenStore, disk: &dyn Persistent) {
    let ns = Namespace::new();
    let (rewritten, first) = ns.fresh("rewritten");
    let (untouched, second) = ns.fresh("untouched");
    store.insert(first.clone()).await.expect("insert");
    store.insert(second.clone()).await.expect("insert");

    let new_key = Key::generate();
    let new_only = Keyring::new(Key::from_base64(&new_key.to_base64()).expect("key"));
    let rotated = Keyring::new(new_key).with_old_keyring(&disk.keyring());
    let store2 = disk.reopen(rotated).await.expect("reopen rotated");
    assert_eq!(
        must_get(&*store2, &rewritten).await.tokens,
        first.tokens,
        "old key still reads"
    );
    assert_eq!(
        store2.put(first.clone(), 1, None).await.expect("re-seal"),
        2
    );

    let store3 = disk.reopen(new_only).await.expect("reopen new only");
    assert_eq!(
        must_get(&*store3, &rewritten).await.tokens,
        first.tokens,
        "re-sealed with new key"
    );
    assert_kind(
        store3.get(&untouched).await,
        ErrorKind::WrongKey,
        "not re-sealed",
    );
    assert_kind(
        store.get(&rewritten).await,
        ErrorKind::WrongKey,
        "the old key alone no longer reads it",
    );
    assert_eq!(must_get(store, &untouched).await.tokens, second.tokens);
}

/// Every page of `list_entries` over `query`, following cursors with pages of `limit`.
async fn entries_of(store: &dyn TokenStore, query: ListQuery, limit: usize) -> Vec<EntryPage> {
    let mut query = query.limit(limit);
    let mut pages = Vec::new();
    loop {
        let page = store.list_entries(&query).await.expect("list_entries");
        let next = page.next.clone();
        pages.push(page);
        match next {
            Some(next) => query.after = Some(next),
            None => return pages,
        }
    }
}

/// A record of `key` for the listing cases: active, or needing re-authorization since a fixed
/// time when `reauth`.
fn listed_record(ns: &Namespace, key: &TokenKey, reauth: bool) -> TokenRecord {
    let mut record = ns.record(key);
    if reauth {
        record.status = RecordStatus::ReauthRequired {
            reason: "invalid_grant".to_owned(),
            since: millis(1_700_000_000_000),
        };
    }
    record
}

/// With every record readable, `list_entries` yields what `list` does, page for page: the same
/// keys in the same order, the same records, the same cursors, under the same filters.
pub async fn list_entries_pages_as_list(store: &dyn TokenStore) {
    let ns = Namespace::new();
    let org = ns.org();
    for (label, reauth) in [
        ("a", false),
        ("b", true),
        ("c", false),
        ("d", false),
        ("e", true),
    ] {
        let key = ns.key(&org, &ns.user(), label);
        let record = listed_record(&ns, &key, reauth);
        store.insert(record).await.expect("insert");
    }
    for query in [
        ListQuery::new().client_id(ns.client_id.clone()),
        ListQuery::new()
            .client_id(ns.client_id.clone())
            .status(StatusKind::ReauthRequired),
        ListQuery::new()
            .org_id(org.clone())
            .status(StatusKind::Active),
    ] {
        for limit in [1, 2, 100] {
            let mut listed = query.clone().limit(limit);
            let mut pages = Vec::new();
            loop {
                let page = store.list(&listed).await.expect("list");
                let next = page.next.clone();
                pages.push(page);
                match next {
                    Some(next) => listed.after = Some(next),
                    None => break,
                }
            }
            let entries = entries_of(store, query.clone(), limit).await;
            assert_eq!(entries.len(), pages.len(), "as many pages, limit {limit}");
            for (entry_page, page) in entries.into_iter().zip(pages) {
                assert_eq!(entry_page.next, page.next, "same cursor, limit {limit}");
                let opened: Vec<TokenRecord> = entry_page
                    .entries
                    .into_iter()
                    .map(|entry| {
                        let record = entry.record.expect("a readable record");
                        assert_eq!(entry.key, record.key, "the entry's key is its record's");
                        record
                    })
                    .collect();
                assert_eq!(opened, page.records, "same records, limit {limit}");
            }
        }
    }
}

/// A label filter matches the key's label exactly: not another case, not a label it ends
/// with, and labels holding the characters the key's string form escapes (`%`, `|`) or a
/// pattern language would read (`_`).
pub async fn label_filter_is_exact(store: &dyn TokenStore) {
    let ns = Namespace::new();
    let labels = [
        "prod", "prod", "Prod", "xprod", "a|prod", "pr%od", "pr%25od", "p_od", "prod ",
    ];
    let mut placed = Vec::new();
    for label in labels {
        let (key, record) = ns.fresh(label);
        store.insert(record).await.expect("insert");
        placed.push(key);
    }
    for wanted in [
        "prod", "Prod", "a|prod", "pr%od", "pr%25od", "p_od", "prod ", "od", "",
    ] {
        let mut expected: Vec<String> = placed
            .iter()
            .filter(|key| key.label() == wanted)
            .map(ToString::to_string)
            .collect();
        expected.sort();
        for limit in [1, 100] {
            let query = ListQuery::new()
                .client_id(ns.client_id.clone())
                .label(wanted);
            let listed: Vec<String> = store
                .list_all(&query.clone().limit(limit))
                .await
                .expect("list")
                .into_iter()
                .map(|record| record.key.to_string())
                .collect();
            assert_eq!(
                listed, expected,
                "list, label {wanted:?}, page size {limit}"
            );
            let entries: Vec<String> = entries_of(store, query, limit)
                .await
                .into_iter()
                .flat_map(|page| page.entries)
                .map(|entry| entry.key.to_string())
                .collect();
            assert_eq!(entries, expected, "list_entries, label {wanted:?}");
        }
    }
}

/// A record sealed with another key and a damaged record are entries of `list_entries` with
/// their keys and typed errors, between the readable ones, on every page size; nothing is
/// rewritten by listing; `delete` removes them without opening them, and `list` then works.
pub async fn unreadable_records_are_listed_by_key(store: &dyn TokenStore, disk: &dyn Persistent) {
    let ns = Namespace::new();
    let org = ns.org();
    let key_of = |label: &str| ns.key(&org, &ns.user(), label);
    let (good_a, damaged, good_c, foreign) = (key_of("a"), key_of("b"), key_of("c"), key_of("d"));
    for key in [&good_a, &damaged, &good_c] {
        store.insert(ns.record(key)).await.expect("insert");
    }
    // A byte flipped in the middle of the stored bytes lands in the sealed part on every
    // backend (the file store's clear fields are a short JSON head before it), so the key can
    // still be read; a damage that hides the key itself fails the whole call, as documented.
    let mut raw = disk.read_raw(&damaged).await.expect("raw record");
    let middle = raw.len() / 2;
    raw[middle] ^= 0x01;
    disk.write_raw(&damaged, raw.clone()).await;
    let other = disk
        .reopen(Keyring::new(Key::generate()))
        .await
        .expect("reopen with another key");
    other.insert(ns.record(&foreign)).await.expect("insert");
    let foreign_raw = disk.read_raw(&foreign).await.expect("raw record");

    let query = ListQuery::new().client_id(ns.client_id.clone());
    assert!(store.list(&query).await.is_err(), "list still fails");
    let mut expected = [
        (good_a.clone(), None),
        (damaged.clone(), Some(ErrorKind::Corrupt)),
        (good_c.clone(), None),
        (foreign.clone(), Some(ErrorKind::WrongKey)),
    ];
    expected.sort_by_key(|(key, _)| key.to_string());
    for limit in [1, 3, 100] {
        let listed: Vec<(TokenKey, Option<ErrorKind>)> = entries_of(store, query.clone(), limit)
            .await
            .into_iter()
            .flat_map(|page| page.entries)
            .map(|entry| match entry.record {
                Ok(record) => {
                    assert_eq!(record.key, entry.key);
                    (entry.key, None)
                }
                Err(error) => (entry.key, Some(error.kind())),
            })
            .collect();
        assert_eq!(listed, expected, "page size {limit}");
    }
    assert_eq!(
        disk.read_raw(&damaged).await,
        Some(raw),
        "damaged record untouched"
    );
    assert_eq!(
        disk.read_raw(&foreign).await,
        Some(foreign_raw),
        "foreign record untouched"
    );
    for key in [&damaged, &foreign] {
        assert!(
            store
                .delete(key, None)
                .await
                .expect("delete without opening"),
            "{key} was there"
        );
    }
    let page = store.list(&query).await.expect("list works again");
    let keys: Vec<TokenKey> = page.records.into_iter().map(|record| record.key).collect();
    let mut readable = vec![good_a, good_c];
    readable.sort_by_key(ToString::to_string);
    assert_eq!(keys, readable);
}

/// `list_headers` pages exactly as `list` does (same keys, same cursors, same filters), and each
/// header agrees with its record: key, version, status and times (to the millisecond); a
/// header that carries its record carries exactly the listed one. A record written again
/// (version 2, new times) is seen at its new version.
pub async fn list_headers_page_as_list(store: &dyn TokenStore) {
    let ns = Namespace::new();
    let org = ns.org();
    for (label, reauth) in [("a", false), ("b", true), ("c", false), ("d", false)] {
        let key = ns.key(&org, &ns.user(), label);
        let mut record = listed_record(&ns, &key, reauth);
        store.insert(record.clone()).await.expect("insert");
        if label == "c" {
            record.tokens.issued_at = Some(millis(1_700_100_000_321));
            record.tokens.expires_at = None;
            record.last_refreshed_at = None;
            record.learned_lifetime = None;
            store.put(record, 1, None).await.expect("put");
        }
    }
    for query in [
        ListQuery::new().client_id(ns.client_id.clone()),
        ListQuery::new()
            .client_id(ns.client_id.clone())
            .status(StatusKind::Active),
    ] {
        for limit in [1, 3, 100] {
            let mut listed = query.clone().limit(limit);
            loop {
                let page = store.list(&listed).await.expect("list");
                let headers = store.list_headers(&listed).await.expect("list_headers");
                assert_eq!(headers.next, page.next, "same cursor, limit {limit}");
                assert_eq!(headers.headers.len(), page.records.len(), "limit {limit}");
                for (header, record) in headers.headers.iter().zip(&page.records) {
                    let expected = crate::record::RecordHeader::of(record);
                    assert_eq!(header.key, expected.key);
                    assert_eq!(header.version, expected.version);
                    assert_eq!(header.status, expected.status);
                    assert_eq!(header.issued_at, expected.issued_at);
                    assert_eq!(header.last_refreshed_at, expected.last_refreshed_at);
                    assert_eq!(header.learned_lifetime, expected.learned_lifetime);
                    assert_eq!(header.tokens_issued_at, expected.tokens_issued_at);
                    assert_eq!(header.tokens_expires_at, expected.tokens_expires_at);
                    if let Some(opened) = &header.record {
                        assert_eq!(opened, record, "a carried record is the listed one");
                    }
                    if header.status != StatusKind::Active {
                        assert!(header.record.is_some(), "a sealed reason comes opened");
                    }
                }
                match page.next {
                    Some(next) => listed.after = Some(next),
                    None => break,
                }
            }
        }
    }
    let all = store
        .list_headers(&ListQuery::new().client_id(ns.client_id.clone()))
        .await
        .expect("list_headers");
    assert_eq!(all.headers.len(), 4);
    for header in &all.headers {
        let written = if header.key.label() == "c" { 2 } else { 1 };
        assert_eq!(header.version, written, "c was written again");
    }
}

/// `put_and_release` writes under the lease and frees it: afterwards the record is at the next
/// version and the lease is free, so another holder gets it, with a greater fence. Refused (a
/// stale version, a lease that is no longer current), it changes nothing: the record stays as
/// it was, and so does whatever lease is current.
pub async fn put_and_release_saves_then_frees(store: &dyn TokenStore) {
    let ns = Namespace::new();
    let (key, record) = ns.fresh("release");
    store.insert(record.clone()).await.expect("insert");
    let ttl = Duration::from_secs(30);
    let first = holder("first");
    let lease = store
        .try_acquire(&key, &first, ttl)
        .await
        .expect("acquire")
        .expect("a free lease");

    assert_kind(
        store.put_and_release(record.clone(), 7, &lease).await,
        ErrorKind::Conflict,
        "a stale version",
    );
    assert_eq!(must_get(store, &key).await.version, 1, "nothing written");
    let held = store.lease(&key).await.expect("lease").expect("still held");
    assert_eq!(
        (held.holder.as_str(), held.fence),
        (first.as_str(), lease.fence)
    );

    let mut saved = record.clone();
    saved.tokens.access_token = AccessToken::new(format!("{}-saved", random_text(12)));
    assert_eq!(
        store
            .put_and_release(saved.clone(), 1, &lease)
            .await
            .expect("save and release"),
        2
    );
    let stored = must_get(store, &key).await;
    assert_eq!(stored.version, 2);
    assert_eq!(stored.tokens.access_token, saved.tokens.access_token);
    assert!(
        store.lease(&key).await.expect("lease").is_none(),
        "the lease is free once saved"
    );
    let second = holder("second");
    let next = store
        .try_acquire(&key, &second, ttl)
        .await
        .expect("acquire")
        .expect("free after the save");
    assert!(next.fence > lease.fence, "a greater fence");

    assert_kind(
        store.put_and_release(record, 2, &lease).await,
        ErrorKind::LeaseLost,
        "a lease no longer current",
    );
    let stored = must_get(store, &key).await;
    assert_eq!(stored.version, 2, "nothing written");
    assert_eq!(stored.tokens.access_token, saved.tokens.access_token);
    let held = store.lease(&key).await.expect("lease").expect("still held");
    assert_eq!(
        (held.holder.as_str(), held.fence),
        (second.as_str(), next.fence)
    );
}

/// `header` reads the latest record's header: `None` for a missing key (before its insert and
/// after its delete); key, version, status and times agree with `get` (to the millisecond)
/// after an insert and after each put, new times included; a header that carries its record
/// carries the stored one; a record with a refresh in flight, or needing re-authorization,
/// always comes with its record, and one whose mark was lifted may come without it again.
pub async fn header_agrees_with_the_record(store: &dyn TokenStore) {
    let ns = Namespace::new();
    let (key, mut record) = ns.fresh("header");
    assert!(
        store.header(&key).await.expect("header").is_none(),
        "a missing key has no header"
    );
    store.insert(record.clone()).await.expect("insert");
    header_of_stored(store, &key, 1).await;

    // Refreshed: new tokens, new times, no mark.
    record.refresh_in_flight = None;
    refreshed(&mut record);
    store.put(record.clone(), 1, None).await.expect("put");
    header_of_stored(store, &key, 2).await;

    // A refresh in flight: whoever reads the header must see the mark.
    store
        .put(marked(&record, "header"), 2, None)
        .await
        .expect("mark");
    let header = header_of_stored(store, &key, 3).await;
    assert!(
        header
            .record
            .is_some_and(|opened| opened.refresh_in_flight.is_some()),
        "a record with a refresh in flight comes opened, mark and all"
    );

    // The mark lifted, times unknown.
    record.tokens.expires_at = None;
    record.last_refreshed_at = None;
    record.learned_lifetime = None;
    store.put(record.clone(), 3, None).await.expect("put");
    header_of_stored(store, &key, 4).await;

    record.status = RecordStatus::ReauthRequired {
        reason: "invalid_grant".to_owned(),
        since: millis(1_700_300_000_000),
    };
    store.put(record, 4, None).await.expect("put");
    let header = header_of_stored(store, &key, 5).await;
    assert!(header.record.is_some(), "a sealed reason comes opened");

    assert!(store.delete(&key, None).await.expect("delete"));
    assert!(
        store.header(&key).await.expect("header").is_none(),
        "a deleted key has no header"
    );
}

/// [`TokenStore::changes`]: a backend that has a change feed announces the header of every
/// write of an active record with no refresh in flight (as [`TokenStore::header`] would give
/// it, without the record), and nothing for a mark or a record that is not active. A backend
/// without a feed promises nothing here.
pub async fn changes_announce_trusted_headers(store: &dyn TokenStore) {
    let Some(mut changes) = store.changes() else {
        return;
    };
    let ns = Namespace::new();
    let (key, mut record) = ns.fresh("changes");
    record.refresh_in_flight = None;
    // A watch is live once it returns (its contract), and a backend's feed comes through the
    // same notifications: from here on, no write is missed.
    let _live = store.watch(&key).await.expect("watch");
    // The next header of `key` (other tests may write to the same store meanwhile).
    async fn next_of(changes: &mut crate::Changes, key: &TokenKey) -> RecordHeader {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let header = changes.next().await.expect("the feed ended");
                if &header.key == key {
                    return (*header).clone();
                }
            }
        })
        .await
        .expect("no header announced within 10 s")
    }

    store.insert(record.clone()).await.expect("insert");
    let announced = next_of(&mut changes, &key).await;
    assert_eq!(announced, RecordHeader::of(&must_get(store, &key).await));
    assert!(announced.record.is_none(), "a feed carries no tokens");

    store
        .put(marked(&record, "changes"), 1, None)
        .await
        .expect("mark");
    refreshed(&mut record);
    store.put(record.clone(), 2, None).await.expect("put");
    let announced = next_of(&mut changes, &key).await;
    assert_eq!(
        announced.version, 3,
        "the mark (version 2) is not announced"
    );
    assert_eq!(announced, RecordHeader::of(&must_get(store, &key).await));

    let mut reauth = record.clone();
    reauth.status = RecordStatus::ReauthRequired {
        reason: "invalid_grant".to_owned(),
        since: millis(1_700_300_000_000),
    };
    store.put(reauth, 3, None).await.expect("reauth");
    store.put(record, 4, None).await.expect("put");
    let announced = next_of(&mut changes, &key).await;
    assert_eq!(
        announced.version, 5,
        "a record that is not active (version 4) is not announced"
    );
    assert_eq!(announced.status, StatusKind::Active);
}

/// Gives `record` the times a refresh leaves: new tokens' issue and expiry, the refresh's
/// moment and a learned session lifetime.
fn refreshed(record: &mut TokenRecord) {
    record.tokens.issued_at = Some(millis(1_700_200_000_123));
    record.tokens.expires_at = Some(millis(1_700_207_200_456));
    record.last_refreshed_at = Some(millis(1_700_200_000_789));
    record.learned_lifetime = Some(Duration::from_millis(7_200_000));
}

/// `record` with a refresh-in-flight mark of the holder named after `test`.
fn marked(record: &TokenRecord, test: &str) -> TokenRecord {
    let mut marked = record.clone();
    marked.refresh_in_flight = Some(InFlight {
        holder: holder(test),
        fence: 7,
        since: millis(1_700_200_001_000),
    });
    marked
}

/// `key`'s header, checked against its stored record, which must be at `version`.
async fn header_of_stored(
    store: &dyn TokenStore,
    key: &TokenKey,
    version: u64,
) -> crate::record::RecordHeader {
    let stored = must_get(store, key).await;
    assert_eq!(stored.version, version, "the stored version");
    let header = store
        .header(key)
        .await
        .expect("header")
        .unwrap_or_else(|| panic!("no header for {key} at version {version}"));
    let expected = crate::record::RecordHeader::of(&stored);
    assert_eq!(header.key, expected.key);
    assert_eq!(header.version, version, "the latest version");
    assert_eq!(header.status, expected.status, "version {version}");
    assert_eq!(header.issued_at, expected.issued_at, "version {version}");
    assert_eq!(
        header.last_refreshed_at, expected.last_refreshed_at,
        "version {version}"
    );
    assert_eq!(
        header.learned_lifetime, expected.learned_lifetime,
        "version {version}"
    );
    assert_eq!(
        header.tokens_issued_at, expected.tokens_issued_at,
        "version {version}"
    );
    assert_eq!(
        header.tokens_expires_at, expected.tokens_expires_at,
        "version {version}"
    );
    if let Some(opened) = &header.record {
        assert_eq!(opened, &stored, "a carried record is the stored one");
    }
    header
}

/// Writes one `#[tokio::test]` per conformance case for a backend.
///
/// - `conformance_tests!(store = EXPR)` where `EXPR` is a future of a [`TokenStore`]: every case
///   that needs only the trait.
/// - `conformance_tests!(persistent = EXPR)` where `EXPR` is a future of a [`Persistent`]
///   harness: every case.
/// - `conformance_tests!(optional persistent = EXPR)` where `EXPR` is a future of an
///   `Option` of a [`Persistent`] harness: every case, each of which returns at once when the
///   harness is `None` (a backend whose server is not running; the harness says so loudly, or
///   fails under `CI=true`).
///
/// `EXPR` is evaluated once per test, so each test gets its own store.
#[macro_export]
macro_rules! conformance_tests {
    (store = $make:expr) => {
        $crate::conformance_tests!(@trait plain |made| &made, $make);
    };
    (persistent = $make:expr) => {
        $crate::conformance_tests!(@persistent plain $make);
    };
    (optional persistent = $make:expr) => {
        $crate::conformance_tests!(@persistent optional $make);
    };
    (@persistent $wrap:ident $make:expr) => {
        $crate::conformance_tests!(@trait $wrap |made| &*$crate::conformance::Persistent::store(&made), $make);
        $crate::conformance_tests!(@disk $wrap $make;
            persistence_across_reopen,
            no_plaintext_on_disk,
            corrupted_record_is_typed_error,
            wrong_key_is_typed_error,
            unreadable_records_are_listed_by_key,
            key_rotation
        );
    };
    (@trait $wrap:ident |$made:ident| $store:expr, $make:expr) => {
        $crate::conformance_tests!(@each $wrap |$made| $store, $make;
            round_trip_every_field,
            metadata_is_versioned_with_the_record,
            insert_if_absent_race,
            cas_race,
            stale_put_changes_nothing,
            delete_semantics,
            lease_exclusivity,
            lease_expiry_and_takeover,
            fencing_is_monotonic,
            put_with_lost_lease_changes_nothing,
            lease_is_reported_and_unchanged,
            renew_extends_only_the_current_lease,
            renew_after_expiry_is_lost,
            take_over_replaces_only_the_stale_lease,
            take_over_race,
            watch_sees_writes,
            listing_filters_and_pagination,
            list_entries_pages_as_list,
            list_headers_page_as_list,
            header_agrees_with_the_record,
            changes_announce_trusted_headers,
            put_and_release_saves_then_frees,
            label_filter_is_exact,
            status_transitions
        );
    };
    (@made plain $make:expr) => {
        ::core::option::Option::Some($make.await)
    };
    (@made optional $make:expr) => {
        $make.await
    };
    (@each $wrap:ident |$made:ident| $store:expr, $make:expr; $($case:ident),*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let ::core::option::Option::Some($made) =
                    $crate::conformance_tests!(@made $wrap $make)
                else {
                    return;
                };
                $crate::conformance::$case($store).await;
            }
        )*
    };
    (@disk $wrap:ident $make:expr; $($case:ident),*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let ::core::option::Option::Some(made) =
                    $crate::conformance_tests!(@made $wrap $make)
                else {
                    return;
                };
                let store = $crate::conformance::Persistent::store(&made);
                $crate::conformance::$case(&*store, &made).await;
            }
        )*
    };
}
