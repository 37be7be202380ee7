//! The conformance suite against `SqliteStore` on a real file, and two pools sharing one file.
#![cfg(all(feature = "sqlite", feature = "conformance"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] functions"
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use sfauth_core::TokenKey;
use sfauth_storage::conformance::{Namespace, Persistent};
use sfauth_storage::{ErrorKind, Key, Keyring, SqliteStore, TokenStore};

use crate::support::damage::{self, Damage};

struct Harness {
    _dir: tempfile::TempDir,
    path: PathBuf,
    keyring: Keyring,
    store: Arc<SqliteStore>,
}

impl Harness {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/tokens.db");
        let keyring = Keyring::new(Key::generate());
        let store = Arc::new(SqliteStore::open(&path, keyring.clone()).await.unwrap());
        Self {
            _dir: dir,
            path,
            keyring,
            store,
        }
    }

    async fn raw_pool(&self) -> sqlx::SqlitePool {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&self.path)
            .busy_timeout(Duration::from_secs(10));
        sqlx::SqlitePool::connect_with(options).await.unwrap()
    }
}

#[async_trait]
impl Persistent for Harness {
    fn store(&self) -> Arc<dyn TokenStore> {
        self.store.clone()
    }

    fn keyring(&self) -> Keyring {
        self.keyring.clone()
    }

    async fn reopen(&self, keyring: Keyring) -> sfauth_storage::Result<Arc<dyn TokenStore>> {
        Ok(Arc::new(SqliteStore::open(&self.path, keyring).await?))
    }

    async fn raw_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for suffix in ["", "-wal", "-shm"] {
            let mut name = self.path.clone().into_os_string();
            name.push(suffix);
            if let Ok(data) = std::fs::read(PathBuf::from(name)) {
                bytes.extend(data);
            }
        }
        bytes
    }

    async fn read_raw(&self, key: &TokenKey) -> Option<Vec<u8>> {
        let pool = self.raw_pool().await;
        let raw = sqlx::query_scalar("SELECT sealed FROM token_records WHERE key = ?1")
            .bind(key.to_string())
            .fetch_optional(&pool)
            .await
            .unwrap();
        pool.close().await;
        raw
    }

    async fn write_raw(&self, key: &TokenKey, bytes: Vec<u8>) {
        let pool = self.raw_pool().await;
        let done = sqlx::query("UPDATE token_records SET sealed = ?1 WHERE key = ?2")
            .bind(bytes)
            .bind(key.to_string())
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1);
        pool.close().await;
    }
}

sfauth_storage::conformance_tests!(persistent = Harness::new());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_on_one_file_race_and_share_leases() {
    let h = Harness::new().await;
    let other = SqliteStore::open(&h.path, h.keyring.clone()).await.unwrap();
    let stores: [&dyn TokenStore; 2] = [&*h.store, &other];
    let ns = Namespace::new();
    let (key, record) = ns.fresh("two-pools");
    stores[0].insert(record.clone()).await.unwrap();

    let attempts = (0..16).map(|i| {
        let mut record = record.clone();
        record.refresh_count = i;
        let store = stores[i as usize % 2];
        async move { store.put(record, 1, None).await }
    });
    let results = join_all(attempts).await;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| e.kind() == ErrorKind::Conflict)
    );
    let a = stores[0].get(&key).await.unwrap().unwrap();
    let b = stores[1].get(&key).await.unwrap().unwrap();
    assert_eq!(a, b, "both pools see the winner");

    let ttl = Duration::from_secs(30);
    let leases = join_all((0..16).map(|i| {
        let store = stores[i % 2];
        let key = &key;
        async move {
            store
                .try_acquire(key, &format!("holder-{i}"), ttl)
                .await
                .unwrap()
        }
    }))
    .await;
    let held: Vec<_> = leases.into_iter().flatten().collect();
    assert_eq!(held.len(), 1, "one lease across both pools");
    let lease = &held[0];
    stores[1].release(lease).await.unwrap();
    let next = stores[0]
        .try_acquire(&key, "late", ttl)
        .await
        .unwrap()
        .unwrap();
    assert!(next.fence > lease.fence);
}

#[tokio::test]
async fn default_path_is_under_the_data_dir_and_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let path = SqliteStore::default_path().unwrap();
    assert!(path.ends_with("sfauth/tokens.db"), "{}", path.display());
    let h = Harness::new().await;
    let mode = std::fs::metadata(&h.path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(h.path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
}

#[tokio::test]
async fn clear_columns_that_contradict_the_sealed_record_are_corrupt() {
    let h = Harness::new().await;
    let ns = Namespace::new();
    let (key, record) = ns.fresh("contradiction");
    h.store.insert(record).await.unwrap();
    let pool = h.raw_pool().await;
    sqlx::query("UPDATE token_records SET status = 'reauth_required' WHERE key = ?1")
        .bind(key.to_string())
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let error = h.store.get(&key).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Corrupt);
}

/// A page large enough to be opened by several tasks comes back whole and in key order, and one
/// damaged row in any part of it fails the listing instead of being skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_pages_are_opened_in_order_and_a_damaged_row_fails_them() {
    use sfauth_storage::{ListQuery, TokenStoreExt as _};
    let h = Harness::new().await;
    let ns = Namespace::new();
    let mut inserted = Vec::new();
    for i in 0..600 {
        let (key, record) = ns.fresh(&format!("label-{i:03}"));
        h.store.insert(record.clone()).await.unwrap();
        inserted.push((key.to_string(), record));
    }
    inserted.sort_by(|a, b| a.0.cmp(&b.0));
    let query = ListQuery::new().client_id(ns.client_id.clone()).limit(500);
    let listed = h.store.list_all(&query).await.unwrap();
    assert_eq!(listed.len(), inserted.len());
    for (record, (name, expected)) in listed.iter().zip(&inserted) {
        assert_eq!(&record.key.to_string(), name);
        assert_eq!(record.tokens, expected.tokens);
    }

    // Damage a row near the end of the first page: a part that another task opens.
    let damaged = &inserted[450].1.key;
    let mut raw = h.read_raw(damaged).await.unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 0x55;
    h.write_raw(damaged, raw).await;
    let error = h.store.list_all(&query).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Corrupt);
}

/// Numbers in rows are outside input (the scenario every SQL backend shares, in
/// `support::damage`), written here in SQLite's dialect; expiries are milliseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_numbers_in_rows_never_panic() {
    let h = Harness::new().await;
    let ns = Namespace::new();
    let (key, record) = ns.fresh("numbers");
    h.store.insert(record.clone()).await.unwrap();
    let pool = h.raw_pool().await;
    let name = key.to_string();
    damage::out_of_range_numbers(h.store.as_ref(), &key, &record, |damage| {
        let sql = match damage {
            Damage::NegativeVersion => "UPDATE token_records SET version = -5 WHERE key = ?1",
            Damage::VersionAtEnd => {
                "UPDATE token_records SET version = 9223372036854775807 WHERE key = ?1"
            }
            Damage::LeaseAtEnd => {
                "UPDATE token_leases SET expires_at = 9223372036854775807, \
                 fence = 9223372036854775807, last_fence = 9223372036854775807 WHERE key = ?1"
            }
            Damage::NegativeFence => {
                "UPDATE token_leases SET holder = 'a', fence = -1, expires_at = 4000000000000 \
                 WHERE key = ?1"
            }
            Damage::ExpiredBeforeTheEpoch => {
                "UPDATE token_leases SET fence = 3, expires_at = -7 WHERE key = ?1"
            }
        };
        let pool = pool.clone();
        let name = name.clone();
        async move {
            sqlx::query(sql).bind(name).execute(&pool).await.unwrap();
        }
    })
    .await;
    pool.close().await;
}

/// Rows written before the clear header existed (migration 0002 leaves its columns empty), or
/// since by a version that does not write it (its `header_version` falls behind), are opened
/// by `list_headers` instead of trusted; rows with a current header are not opened, and the
/// page mixing both comes back in `list`'s order (the trusted headers travel apart from the
/// opened rows, as JSON: a label with quotes and backslashes must survive it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_of_old_rows_are_read_by_opening_them() {
    use sfauth_storage::ListQuery;
    let h = Harness::new().await;
    let ns = Namespace::new();
    let mut records = Vec::new();
    for label in ["new", "old", "stale", "new \"quoted\" \\ | % é"] {
        let (_, record) = ns.fresh(label);
        h.store.insert(record.clone()).await.unwrap();
        records.push(record);
    }
    let pool = h.raw_pool().await;
    // As a row from before the migration: no header at all.
    sqlx::query(
        "UPDATE token_records SET header_version = NULL, issued_ms = NULL, \
           last_refreshed_ms = NULL, lifetime_ms = NULL, tokens_issued_ms = NULL, \
           tokens_expires_ms = NULL WHERE key = ?1",
    )
    .bind(records[1].key.to_string())
    .execute(&pool)
    .await
    .unwrap();
    // As a row written since by an older version: a new version, the header left behind.
    let mut stale = records[2].clone();
    stale.tokens.expires_at = None;
    h.store.put(stale, 1, None).await.unwrap();
    sqlx::query(
        "UPDATE token_records SET header_version = 1, tokens_expires_ms = 1 WHERE key = ?1",
    )
    .bind(records[2].key.to_string())
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let page = h
        .store
        .list_headers(&ListQuery::new().client_id(ns.client_id.clone()))
        .await
        .unwrap();
    for header in &page.headers {
        let stored = h.store.get(&header.key).await.unwrap().unwrap();
        let label = header.key.label();
        assert_eq!(
            header.record.is_some(),
            !label.starts_with("new"),
            "{label}"
        );
        assert_eq!(header.version, stored.version, "{label}");
        assert_eq!(
            header.tokens_expires_at,
            sfauth_storage::RecordHeader::of(&stored).tokens_expires_at,
            "{label}"
        );
    }
    let listed = h
        .store
        .list(&ListQuery::new().client_id(ns.client_id.clone()))
        .await
        .unwrap();
    let keys = |keys: Vec<&TokenKey>| {
        keys.into_iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(page.headers.iter().map(|header| &header.key).collect()),
        keys(listed.records.iter().map(|record| &record.key).collect())
    );
    assert_eq!(page.headers.len(), 4);
}
