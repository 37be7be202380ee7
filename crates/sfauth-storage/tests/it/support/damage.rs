//! One scenario for every SQL backend: numbers written straight into its columns (outside
//! input, as a hand-edited or damaged database gives) must come back as typed errors or
//! clamped values, never a panic or a wrapped counter. Each backend says how it writes each
//! damage in its own dialect; the expectations are the same for all.

use std::future::Future;
use std::time::Duration;

use sfauth_core::TokenKey;
use sfauth_storage::{ErrorKind, Lease, TokenRecord, TokenStore};

/// A damage a backend's test writes into the rows of the key under test.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Damage {
    /// The record's version column is negative.
    NegativeVersion,
    /// The record's version column is at the end of its range (`i64::MAX`).
    VersionAtEnd,
    /// The lease's expiry, fence and fence counter are all at the end of their range.
    LeaseAtEnd,
    /// The lease row names holder `a` with a negative fence and an expiry far ahead.
    NegativeFence,
    /// The lease's fence is 3 and its expiry is before the epoch.
    ExpiredBeforeTheEpoch,
}

/// Runs the scenario against `store`, which holds `record` under `key` (just inserted);
/// `damage` writes each [`Damage`] into the backend's tables.
pub(crate) async fn out_of_range_numbers<F, Fut>(
    store: &dyn TokenStore,
    key: &TokenKey,
    record: &TokenRecord,
    damage: F,
) where
    F: Fn(Damage) -> Fut,
    Fut: Future<Output = ()>,
{
    let ttl = Duration::from_secs(30);
    let kind = |result: sfauth_storage::Error| result.kind();

    damage(Damage::NegativeVersion).await;
    assert_eq!(kind(store.get(key).await.unwrap_err()), ErrorKind::Corrupt);
    assert_eq!(
        kind(store.put(record.clone(), 1, None).await.unwrap_err()),
        ErrorKind::Conflict
    );
    // The version is bound into the seal, so a changed column fails to open; a write at the
    // end of the counter is refused as damaged rather than retried as a conflict.
    damage(Damage::VersionAtEnd).await;
    assert_eq!(kind(store.get(key).await.unwrap_err()), ErrorKind::Corrupt);
    for expected in [i64::MAX as u64, u64::MAX] {
        assert_eq!(
            kind(store.put(record.clone(), expected, None).await.unwrap_err()),
            ErrorKind::Corrupt
        );
    }
    assert_eq!(
        kind(store.delete(key, Some(u64::MAX)).await.unwrap_err()),
        ErrorKind::Conflict
    );

    let lease = store.try_acquire(key, "a", ttl).await.unwrap().unwrap();
    damage(Damage::LeaseAtEnd).await;
    let held = store.lease(key).await.unwrap().unwrap();
    assert_eq!(held.fence, i64::MAX as u64);
    assert!(held.expires_at > lease.expires_at, "far future, clamped");
    assert!(
        held.expires_at
            .checked_add(Duration::from_secs(365 * 24 * 3600))
            .is_some()
    );
    // A new fence would be past the column's range: damage, not a wrapped fence.
    assert_eq!(
        kind(store.take_over(&held, "b", ttl).await.unwrap_err()),
        ErrorKind::Corrupt
    );
    assert_eq!(store.lease(key).await.unwrap(), Some(held.clone()));
    let renewed = store.renew(&held, ttl).await.unwrap().unwrap();
    assert_eq!(renewed.fence, held.fence);
    store.release(&renewed).await.unwrap();
    assert_eq!(
        kind(store.try_acquire(key, "b", ttl).await.unwrap_err()),
        ErrorKind::Corrupt
    );
    let beyond = Lease {
        fence: u64::MAX,
        ..renewed.clone()
    };
    assert!(store.renew(&beyond, ttl).await.unwrap().is_none());
    assert!(store.take_over(&beyond, "b", ttl).await.unwrap().is_none());
    store.release(&beyond).await.unwrap();
    assert_eq!(
        kind(
            store
                .put(record.clone(), 1, Some(&beyond))
                .await
                .unwrap_err()
        ),
        ErrorKind::Conflict,
        "the version is checked first"
    );

    damage(Damage::NegativeFence).await;
    assert_eq!(
        kind(store.lease(key).await.unwrap_err()),
        ErrorKind::Corrupt
    );
    damage(Damage::ExpiredBeforeTheEpoch).await;
    assert_eq!(store.lease(key).await.unwrap(), None, "expired long ago");
}
