//! Records written before this version still read, and keep working, in every persistent
//! backend: committed stores written by the previous format (`tests/fixtures/v1`, see
//! `support/fixture.rs`) are opened with today's code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] functions"
)]

use crate::support::fixture;

use std::path::Path;
use std::time::Duration;

use sfauth_storage::{
    FileStore, ListQuery, RenewalHint, SqliteStore, TokenRecord, TokenStore, TokenStoreExt as _,
};

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1"))
}

/// Copies a fixture, so that opening and writing it leaves the committed files alone.
fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// What every backend must do with the v1 fixture: read the record whole (with no renewal
/// hint), see the old lease as expired and keep its fence counter, and write the record back
/// with a hint.
async fn old_record_reads_and_writes(store: &dyn TokenStore) {
    let mut expected = fixture::fixture_record();
    expected.version = 2;
    let key = expected.key.clone();
    let stored = store.get(&key).await.unwrap().unwrap();
    assert_eq!(stored, expected, "every field of the old record reads");
    assert_eq!(stored.renewal, None);
    let listed = store.list_all(&ListQuery::new()).await.unwrap();
    assert_eq!(listed, [expected.clone()]);

    assert_eq!(
        store.lease(&key).await.unwrap(),
        None,
        "the old lease expired"
    );
    let lease = store
        .try_acquire(&key, "host-9/pid-1/task-1", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert!(lease.fence > 1, "the old fence counter is kept");

    let mut next: TokenRecord = stored;
    next.renewal = Some(
        RenewalHint::jwt_bearer("integration@acme.example").with_key_ref("/etc/sfauth/acme.pem"),
    );
    assert_eq!(store.put(next.clone(), 2, Some(&lease)).await.unwrap(), 3);
    next.version = 3;
    assert_eq!(store.get(&key).await.unwrap(), Some(next));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_reads_v1_records() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("tokens");
    copy(&fixtures().join("file-store"), &store_dir);
    let store = FileStore::open(&store_dir, fixture::fixture_keyring()).unwrap();
    old_record_reads_and_writes(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_reads_v1_records() {
    let dir = tempfile::tempdir().unwrap();
    copy(fixtures(), dir.path());
    let store = SqliteStore::open(dir.path().join("tokens.db"), fixture::fixture_keyring())
        .await
        .unwrap();
    old_record_reads_and_writes(&store).await;
    store.close().await;
}
