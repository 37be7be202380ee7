//! The conformance suite against `RedisStore` on a real server (`SFAUTH_TEST_REDIS_URL`,
//! default `redis://127.0.0.1:6379`), and what only Redis can break: a server that goes away
//! and comes back under a live handle, handles on one prefix, damaged numbers in hashes.
#![cfg(all(feature = "redis", feature = "conformance"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "test helpers outside #[test] functions"
)]

use crate::support::server;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rand::Rng as _;
use rand::distr::Alphanumeric;
use redis::AsyncCommands as _;
use sfauth_core::TokenKey;
use sfauth_storage::conformance::{Namespace, Persistent};
use sfauth_storage::{
    Error, ErrorKind, Key, Keyring, ListQuery, RedisStore, TokenStore, TokenStoreExt as _,
};

const URL_VAR: &str = "SFAUTH_TEST_REDIS_URL";
const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

fn random_text(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A store under its own random prefix on the shared server; its keys are deleted on drop.
struct Harness {
    url: String,
    prefix: String,
    keyring: Keyring,
    store: Arc<RedisStore>,
}

impl Harness {
    /// `None` (after a loud message) when no server answers, except under `CI=true`.
    async fn new() -> Option<Self> {
        let url = server::server_url(URL_VAR, DEFAULT_URL, "Redis")?;
        let prefix = format!("sfauth-test:{}:", random_text(12));
        let keyring = Keyring::new(Key::generate());
        let store = RedisStore::builder(&url, keyring.clone())
            .prefix(&prefix)
            .connect()
            .await
            .unwrap();
        Some(Self {
            url,
            prefix,
            keyring,
            store: Arc::new(store),
        })
    }

    async fn handle(&self, keyring: Keyring) -> sfauth_storage::Result<RedisStore> {
        RedisStore::builder(&self.url, keyring)
            .prefix(&self.prefix)
            .connect()
            .await
    }

    async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    fn record_key(&self, key: &TokenKey) -> String {
        format!("{}record:{key}", self.prefix)
    }

    async fn keys(&self) -> Vec<String> {
        let mut raw = self.raw().await;
        let mut keys: Vec<String> = Vec::new();
        let mut iter: redis::AsyncIter<String> =
            raw.scan_match(format!("{}*", self.prefix)).await.unwrap();
        while let Some(key) = iter.next_item().await {
            keys.push(key.unwrap());
        }
        keys
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Best effort, and synchronous: a drop cannot await.
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return;
        };
        let keys: Vec<String> =
            match redis::Commands::scan_match::<_, String>(&mut con, format!("{}*", self.prefix)) {
                Ok(keys) => keys.filter_map(Result::ok).collect(),
                Err(_) => return,
            };
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut con);
        }
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
        Ok(Arc::new(self.handle(keyring).await?))
    }

    /// Every value under the harness's prefix: what the server keeps in memory and writes to
    /// its snapshots and append-only file.
    async fn raw_bytes(&self) -> Vec<u8> {
        let mut raw = self.raw().await;
        let mut bytes = Vec::new();
        for key in self.keys().await {
            bytes.extend(key.as_bytes());
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut raw)
                .await
                .unwrap();
            let values: Vec<Vec<u8>> = match kind.as_str() {
                "hash" => raw.hgetall::<_, Vec<Vec<u8>>>(&key).await.unwrap(),
                "string" => vec![raw.get::<_, Vec<u8>>(&key).await.unwrap()],
                "zset" => raw.zrange::<_, Vec<Vec<u8>>>(&key, 0, -1).await.unwrap(),
                other => panic!("unexpected {other} at {key}"),
            };
            for value in values {
                bytes.extend(value);
            }
        }
        bytes
    }

    async fn read_raw(&self, key: &TokenKey) -> Option<Vec<u8>> {
        self.raw()
            .await
            .hget(self.record_key(key), "sealed")
            .await
            .unwrap()
    }

    async fn write_raw(&self, key: &TokenKey, bytes: Vec<u8>) {
        let mut raw = self.raw().await;
        let record = self.record_key(key);
        assert!(raw.exists::<_, bool>(&record).await.unwrap());
        let _: () = raw.hset(&record, "sealed", bytes).await.unwrap();
    }
}

sfauth_storage::conformance_tests!(optional persistent = Harness::new());

/// Two handles (two connections) on one prefix: one CAS winner across both, one lease across
/// both, and a watch on one handle sees the other's write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_race_share_leases_and_notify() {
    let Some(h) = Harness::new().await else {
        return;
    };
    let other = h.handle(h.keyring.clone()).await.unwrap();
    let stores: [&dyn TokenStore; 2] = [&*h.store, &other];
    let ns = Namespace::new();
    let (key, record) = ns.fresh("two-handles");
    stores[0].insert(record.clone()).await.unwrap();

    let results = futures_util::future::join_all((0..16u64).map(|i| {
        let mut record = record.clone();
        record.refresh_count = i;
        let store = stores[(i % 2) as usize];
        async move { store.put(record, 1, None).await }
    }))
    .await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| e.kind() == ErrorKind::Conflict)
    );
    assert_eq!(
        stores[0].get(&key).await.unwrap(),
        stores[1].get(&key).await.unwrap()
    );

    let ttl = Duration::from_secs(30);
    let leases = futures_util::future::join_all((0..16usize).map(|i| {
        let key = &key;
        async move {
            stores[i % 2]
                .try_acquire(key, &format!("holder-{i}"), ttl)
                .await
                .unwrap()
        }
    }))
    .await;
    let held: Vec<_> = leases.into_iter().flatten().collect();
    assert_eq!(held.len(), 1, "one lease across both handles");

    let watch = stores[1].watch(&key).await.unwrap();
    assert!(watch.is_live());
    stores[0].release(&held[0]).await.unwrap();
    assert!(
        watch.changed(Duration::from_secs(5)).await,
        "a release on one handle wakes a watch on the other"
    );
    let watch = stores[1].watch(&key).await.unwrap();
    stores[0].put(record, 2, None).await.unwrap();
    assert!(watch.changed(Duration::from_secs(5)).await);
}

/// A holder that pauses past its lease's expiry loses it to another handle: its write,
/// renewal and release are refused or do nothing. The fence counter is a key of its own, so
/// even a lease hash that disappears (deleted by hand, or evicted) does not reset fences.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holder_loses_its_lease_and_fences_outlive_the_lease_hash() {
    let Some(h) = Harness::new().await else {
        return;
    };
    let other = h.handle(h.keyring.clone()).await.unwrap();
    let ns = Namespace::new();
    let (key, record) = ns.fresh("paused");
    h.store.insert(record.clone()).await.unwrap();
    let paused = h
        .store
        .try_acquire(&key, "paused", Duration::from_millis(150))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let winner = other
        .try_acquire(&key, "winner", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert!(winner.fence > paused.fence);
    let lost = h
        .store
        .put(record.clone(), 1, Some(&paused))
        .await
        .unwrap_err();
    assert_eq!(lost.kind(), ErrorKind::LeaseLost, "{lost}");
    assert!(
        h.store
            .renew(&paused, Duration::from_secs(30))
            .await
            .unwrap()
            .is_none()
    );
    h.store.release(&paused).await.unwrap();
    assert_eq!(other.lease(&key).await.unwrap(), Some(winner.clone()));
    assert_eq!(other.put(record, 1, Some(&winner)).await.unwrap(), 2);

    let mut raw = h.raw().await;
    let _: () = raw.del(format!("{}lease:{key}", h.prefix)).await.unwrap();
    let next = h
        .store
        .try_acquire(&key, "next", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert!(
        next.fence > winner.fence,
        "the fence counter survives the lease hash"
    );
}

/// Numbers in hashes are outside input: a version or fence that is not a number, a fence
/// counter at the end of its range, an expiry past any range: typed errors or clamped values,
/// never a panic or a reused fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_numbers_never_panic_or_reuse_fences() {
    let Some(h) = Harness::new().await else {
        return;
    };
    let ns = Namespace::new();
    let (key, record) = ns.fresh("numbers");
    h.store.insert(record.clone()).await.unwrap();
    let mut raw = h.raw().await;
    let record_key = h.record_key(&key);
    let lease_key = format!("{}lease:{key}", h.prefix);
    let fence_key = format!("{}fence:{key}", h.prefix);

    let _: () = raw.hset(&record_key, "version", "x1").await.unwrap();
    let error = h.store.get(&key).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Corrupt, "{error}");
    let error = h.store.put(record.clone(), 1, None).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Conflict, "{error}");
    let _: () = raw.hset(&record_key, "version", "1").await.unwrap();
    assert_eq!(h.store.get(&key).await.unwrap().unwrap().version, 1);

    // A lying clear field hides nothing silently: the record reads as corrupt.
    let _: () = raw
        .hset(&record_key, "status", "reauth_required")
        .await
        .unwrap();
    assert_eq!(
        h.store.get(&key).await.unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    let _: () = raw.hset(&record_key, "status", "active").await.unwrap();

    let ttl = Duration::from_secs(30);
    let _: () = raw.set(&fence_key, i64::MAX).await.unwrap();
    let error = h.store.try_acquire(&key, "a", ttl).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Corrupt, "{error}");
    let _: () = raw.set(&fence_key, "not a number").await.unwrap();
    let error = h.store.try_acquire(&key, "a", ttl).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Corrupt, "{error}");
    assert!(
        h.store.lease(&key).await.unwrap().is_none(),
        "nothing issued"
    );

    let _: () = raw.set(&fence_key, 41).await.unwrap();
    let lease = h.store.try_acquire(&key, "a", ttl).await.unwrap().unwrap();
    assert_eq!(lease.fence, 42);
    let _: () = raw
        .hset(&lease_key, "expires_at", "99999999999999999999999")
        .await
        .unwrap();
    let held = h.store.lease(&key).await.unwrap().unwrap();
    assert!(held.expires_at > lease.expires_at, "far future, clamped");
    assert!(
        held.expires_at
            .checked_add(Duration::from_secs(365 * 24 * 3600))
            .is_some()
    );
    let _: () = raw.hset(&lease_key, "expires_at", "soon").await.unwrap();
    assert!(
        h.store.lease(&key).await.unwrap().is_none(),
        "unreadable expiry is expired"
    );
    assert!(
        h.store
            .try_acquire(&key, "b", ttl)
            .await
            .unwrap()
            .unwrap()
            .fence
            > lease.fence
    );
    assert!(
        h.store.try_acquire(&key, "", ttl).await.is_err(),
        "empty holder"
    );
    assert_eq!(
        h.store
            .try_acquire(&key, "c", Duration::MAX)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Config
    );
}

/// More keys than one call of the listing script examines (1000): a filtered listing that
/// matches a few of them, and an unfiltered one at the largest page size, still page in key
/// order without a gap or a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_span_several_script_calls() {
    use futures_util::StreamExt as _;
    let Some(h) = Harness::new().await else {
        return;
    };
    let (many, few) = (Namespace::new(), Namespace::new());
    let mut records: Vec<_> = (0..1200)
        .map(|i| many.fresh(&format!("many-{i}")).1)
        .collect();
    records.extend((0..5).map(|i| few.fresh(&format!("few-{i}")).1));
    let store = &*h.store;
    futures_util::stream::iter(records.iter().cloned())
        .for_each_concurrent(32, |record| async move {
            store.insert(record).await.unwrap();
        })
        .await;
    let keys = |client: &str| {
        let mut keys: Vec<String> = records
            .iter()
            .filter(|r| r.key.client_id() == client)
            .map(|r| r.key.to_string())
            .collect();
        keys.sort();
        keys
    };
    let listed = |query: ListQuery| async move {
        let mut seen = Vec::new();
        let mut query = query;
        loop {
            let page = store.list(&query).await.unwrap();
            seen.extend(page.records.iter().map(|r| r.key.to_string()));
            match page.next {
                Some(next) => query = query.after(Some(next)),
                None => return seen,
            }
        }
    };
    assert_eq!(
        listed(ListQuery::new().client_id(few.client_id.clone()).limit(2)).await,
        keys(&few.client_id)
    );
    let mut everything = keys(&many.client_id);
    everything.extend(keys(&few.client_id));
    everything.sort();
    assert_eq!(
        listed(ListQuery::new().limit(ListQuery::MAX_LIMIT)).await,
        everything
    );
}

/// An active record's header is read from its clear fields, the record left sealed; a record
/// whose header is missing (written by a version without headers) or stale (written since by
/// one) is opened instead, and a damaged header is `Corrupt`, never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_read_in_clear_unless_they_cannot_be_trusted() {
    let Some(harness) = Harness::new().await else {
        return;
    };
    let store = &harness.store;
    let ns = Namespace::new();
    let (key, mut record) = ns.fresh("clear");
    record.refresh_in_flight = None;
    store.insert(record.clone()).await.unwrap();
    let header = store.header(&key).await.unwrap().unwrap();
    assert!(header.record.is_none(), "read without opening the record");
    assert_eq!(header.version, 1);

    let mut raw = harness.raw().await;
    let hash = harness.record_key(&key);
    // As a version of this crate without headers left it.
    let _: () = raw
        .hdel(&hash, &["header", "header_version"])
        .await
        .unwrap();
    let opened = store.header(&key).await.unwrap().unwrap();
    assert_eq!(opened.record.as_ref().map(|r| r.version), Some(1));
    // Written again by such a version: the header is of an older version.
    store.put(record.clone(), 1, None).await.unwrap();
    let _: () = raw.hset(&hash, "header_version", "1").await.unwrap();
    let opened = store.header(&key).await.unwrap().unwrap();
    assert_eq!(opened.record.as_ref().map(|r| r.version), Some(2));

    for damaged in ["", "0:1:2", "2:1::::", "0:x::::", "0::::::"] {
        let _: () = raw
            .hset_multiple(&hash, &[("header", damaged), ("header_version", "2")])
            .await
            .unwrap();
        let error = store.header(&key).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Corrupt, "{damaged:?}: {error}");
    }
}

/// The change feed's subscriber is a task: asked for outside a runtime, the store has no feed
/// to give (the caller reads instead) rather than panicking as a spawn there would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_feed_outside_a_runtime() {
    let Some(harness) = Harness::new().await else {
        return;
    };
    let store = harness.store.clone();
    let outside = std::thread::spawn(move || store.changes().is_none())
        .join()
        .expect("asking for the feed outside a runtime panicked");
    assert!(outside, "a feed without a runtime to listen in");
    assert!(harness.store.changes().is_some(), "inside one, the feed");
}

/// Stores under different prefixes on one server see nothing of each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_isolate_stores() {
    let (Some(a), Some(b)) = (Harness::new().await, Harness::new().await) else {
        return;
    };
    let ns = Namespace::new();
    let (key, record) = ns.fresh("isolated");
    a.store.insert(record.clone()).await.unwrap();
    let ttl = Duration::from_secs(30);
    a.store.try_acquire(&key, "a", ttl).await.unwrap().unwrap();
    assert!(b.store.get(&key).await.unwrap().is_none());
    assert!(
        b.store
            .list_all(&ListQuery::new().client_id(ns.client_id.clone()))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(b.store.lease(&key).await.unwrap().is_none());
    assert!(b.store.try_acquire(&key, "b", ttl).await.unwrap().is_some());
    assert_eq!(b.store.insert(record).await.unwrap(), 1);
    assert!(a.keys().await.iter().all(|k| k.starts_with(&a.prefix)));
    assert_eq!(
        format!("{:?}", a.store).matches(&a.prefix).count(),
        1,
        "Debug names the prefix"
    );
}

/// A `redis-server` of the test's own, on a free port, with a password.
struct PrivateServer {
    port: u16,
    password: String,
    child: Option<Child>,
}

impl PrivateServer {
    /// `None` (after a loud message) when `redis-server` is not installed, except under
    /// `CI=true`.
    fn start() -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            port,
            password: format!("pw-{}", random_text(16)),
            child: None,
        };
        match server.spawn() {
            Ok(()) => Some(server),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let message = "redis-server is not installed";
                if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                    panic!("{message}; CI=true, so this is a failure, not a skip");
                }
                eprintln!("\n!!!!!!!! SKIPPED: {message}; this test checked nothing !!!!!!!!\n");
                None
            }
            Err(error) => panic!("starting redis-server: {error}"),
        }
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--requirepass", &self.password])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://:{}@127.0.0.1:{}/", self.password, self.port)
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The error of an operation made while the server is down: it must come, typed, within
/// `bound`, and say nothing of the password.
#[track_caller]
fn assert_outage<T: std::fmt::Debug>(
    what: &str,
    result: Result<sfauth_storage::Result<T>, tokio::time::error::Elapsed>,
    password: &str,
) {
    let error: Error = match result {
        Err(_) => panic!("{what}: hung past its bound during the outage"),
        Ok(Ok(value)) => panic!("{what}: succeeded during the outage: {value:?}"),
        Ok(Err(error)) => error,
    };
    assert_eq!(error.kind(), ErrorKind::Backend, "{what}: {error}");
    let mut shown = format!("{error} {error:?}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        shown.push_str(&format!(" {cause} {cause:?}"));
        source = cause.source();
    }
    assert!(
        !shown.contains(password),
        "{what}: the password leaks: {shown}"
    );
}

/// The server dies in the middle of a sequence of operations: each operation during the outage
/// fails with `Backend` within a bound, watches end by their fallback, and once a server is
/// back on the port the same handle works again (reads, writes, leases and watches), without
/// the password ever showing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_handle_survives_a_server_restart() {
    let Some(mut server) = PrivateServer::start() else {
        return;
    };
    let keyring = Keyring::new(Key::generate());
    let wrong = RedisStore::connect(
        &format!("redis://:wrong@127.0.0.1:{}/", server.port),
        keyring.clone(),
    )
    .await
    .unwrap_err();
    assert_eq!(wrong.kind(), ErrorKind::Config, "{wrong}");

    let connect_timeout = Duration::from_millis(500);
    let response_timeout = Duration::from_secs(1);
    let store = RedisStore::builder(&server.url(), keyring)
        .prefix(format!("outage-{}:", random_text(8)))
        .connect_timeout(connect_timeout)
        .response_timeout(response_timeout)
        .connect()
        .await
        .unwrap();
    assert!(!format!("{store:?}").contains(&server.password));
    let ns = Namespace::new();
    let (key, record) = ns.fresh("outage");
    store.insert(record.clone()).await.unwrap();
    let ttl = Duration::from_secs(30);
    let lease = store
        .try_acquire(&key, "before", ttl)
        .await
        .unwrap()
        .unwrap();
    let before = store.watch(&key).await.unwrap();
    assert!(before.is_live());

    server.kill();
    // Every operation fails, typed, within this bound (the connection manager's retries with
    // their connect timeouts, plus a response timeout, with room to spare).
    let bound = Duration::from_secs(10);
    let started = Instant::now();
    assert_outage(
        "get",
        tokio::time::timeout(bound, store.get(&key)).await,
        &server.password,
    );
    assert_outage(
        "put",
        tokio::time::timeout(bound, store.put(record.clone(), 1, Some(&lease))).await,
        &server.password,
    );
    assert_outage(
        "insert",
        tokio::time::timeout(bound, store.insert(ns.fresh("other").1)).await,
        &server.password,
    );
    assert_outage(
        "list",
        tokio::time::timeout(bound, store.list(&ListQuery::new())).await,
        &server.password,
    );
    assert_outage(
        "try_acquire",
        tokio::time::timeout(bound, store.try_acquire(&key, "during", ttl)).await,
        &server.password,
    );
    assert_outage(
        "release",
        tokio::time::timeout(bound, store.release(&lease)).await,
        &server.password,
    );
    eprintln!(
        "six operations failed during the outage in {:?}",
        started.elapsed()
    );
    // A watch taken during the outage is returned (after a bounded wait) and ends by its
    // fallback.
    let during = tokio::time::timeout(bound, store.watch(&key))
        .await
        .expect("watch is bounded")
        .unwrap();
    let waited = Instant::now();
    assert!(!during.changed(Duration::from_millis(200)).await);
    assert!(waited.elapsed() < Duration::from_secs(2));

    // The server comes back empty (no persistence): the same handle works again, at the
    // latest after one more failed call that starts a new round of reconnection.
    server.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.get(&key).await {
            Ok(found) => {
                assert!(found.is_none(), "a fresh server");
                break;
            }
            Err(error) => {
                assert_eq!(error.kind(), ErrorKind::Backend, "{error}");
                assert!(Instant::now() < deadline, "no reconnection: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(
        before.changed(Duration::from_secs(10)).await,
        "a watch from before the outage wakes when the subscription is back"
    );
    assert_eq!(store.insert(record.clone()).await.unwrap(), 1);
    let watch = store.watch(&key).await.unwrap();
    assert_eq!(store.put(record.clone(), 1, None).await.unwrap(), 2);
    assert!(
        watch.changed(Duration::from_secs(5)).await,
        "watches work again"
    );
    let lease = store
        .try_acquire(&key, "after", ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.put(record, 2, Some(&lease)).await.unwrap(), 3);
}

/// A private CA and a certificate it issued for `127.0.0.1`, made fresh for a test.
struct TestPki {
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
}

impl TestPki {
    fn new(ca_name: &str) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let server_key = KeyPair::generate().unwrap();
        let mut server_params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        server_params
            .distinguished_name
            .push(DnType::CommonName, "sfauth test redis");
        let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
        Self {
            ca_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
        }
    }
}

/// A `redis-server` of the test's own that speaks TLS only (`--port 0`), with a certificate
/// for `127.0.0.1` from a CA made for the test, and a password.
struct TlsServer {
    port: u16,
    password: String,
    pki: TestPki,
    child: Child,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    /// `None` (after a loud message) when `redis-server` is not installed, except under
    /// `CI=true`; panics when it is, but was built without TLS.
    fn start() -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pki = TestPki::new("sfauth test CA");
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let cert = dir.path().join("server.pem");
        let key = dir.path().join("server.key");
        std::fs::write(&ca, &pki.ca_pem).unwrap();
        std::fs::write(&cert, &pki.server_cert_pem).unwrap();
        std::fs::write(&key, &pki.server_key_pem).unwrap();
        let password = format!("pw-{}", random_text(16));
        let spawned = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&ca)
            .args(["--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--requirepass", &password])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let message = "redis-server is not installed";
                if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                    panic!("{message}; CI=true, so this is a failure, not a skip");
                }
                eprintln!("\n!!!!!!!! SKIPPED: {message}; this test checked nothing !!!!!!!!\n");
                return None;
            }
            Err(error) => panic!("starting redis-server: {error}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                let mut log = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut stderr, &mut log);
                }
                panic!("redis-server with TLS exited ({status}); built without TLS? {log}");
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Self {
            port,
            password,
            pki,
            child,
            _dir: dir,
        })
    }

    fn url(&self) -> String {
        format!("rediss://:{}@127.0.0.1:{}/", self.password, self.port)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything an error shows: itself, its `Debug` and its causes.
fn shown(error: &Error) -> String {
    let mut shown = format!("{error} {error:?}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        shown.push_str(&format!(" {cause} {cause:?}"));
        source = cause.source();
    }
    shown
}

/// `rediss://` to a server whose certificate a private CA issued, trusted through
/// `root_certificate`: records, leases and watches work as over `redis://`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_round_trips() {
    let Some(server) = TlsServer::start() else {
        return;
    };
    let store = RedisStore::builder(&server.url(), Keyring::new(Key::generate()))
        .root_certificate(&server.pki.ca_pem)
        .connect()
        .await
        .unwrap();
    assert!(!format!("{store:?}").contains(&server.password));
    let ns = Namespace::new();
    let (key, record) = ns.fresh("tls");
    assert_eq!(store.insert(record.clone()).await.unwrap(), 1);
    let read = store.get(&key).await.unwrap().unwrap();
    assert_eq!(
        (read.version, &read.key, &read.tokens),
        (1, &key, &record.tokens)
    );
    let watch = store.watch(&key).await.unwrap();
    assert!(watch.is_live(), "the pub/sub connection speaks TLS too");
    let lease = store
        .try_acquire(&key, "tls-holder", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.lease(&key).await.unwrap().unwrap().holder,
        "tls-holder"
    );
    assert_eq!(store.put(record.clone(), 1, Some(&lease)).await.unwrap(), 2);
    assert!(watch.changed(Duration::from_secs(5)).await);
    store.release(&lease).await.unwrap();
    assert!(store.lease(&key).await.unwrap().is_none());
    assert!(store.delete(&key, Some(2)).await.unwrap());
}

/// Verification is on: without the CA (the system's roots only), with another CA, or with
/// the CA but a host name the certificate does not name, connecting fails as `Config`, saying
/// it is the certificate, never showing the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_a_certificate_it_does_not_trust() {
    let Some(server) = TlsServer::start() else {
        return;
    };
    let other_ca = TestPki::new("another CA").ca_pem;
    let attempts = [
        ("the system's roots", server.url(), None),
        ("another CA", server.url(), Some(other_ca.as_str())),
        (
            "another host name",
            format!("rediss://:{}@localhost:{}/", server.password, server.port),
            Some(server.pki.ca_pem.as_str()),
        ),
    ];
    for (what, url, ca) in attempts {
        let mut builder = RedisStore::builder(&url, Keyring::new(Key::generate()))
            .connect_timeout(Duration::from_secs(1));
        if let Some(ca) = ca {
            builder = builder.root_certificate(ca);
        }
        let error = tokio::time::timeout(Duration::from_secs(15), builder.connect())
            .await
            .expect("a refused certificate fails promptly")
            .unwrap_err();
        eprintln!("{what}: {error}");
        assert_eq!(error.kind(), ErrorKind::Config, "{what}: {error}");
        assert!(error.to_string().contains("certificate"), "{what}: {error}");
        assert!(
            !shown(&error).contains(&server.password),
            "{what}: {error:?}"
        );
    }
    // Not PEM, and a CA for a `redis://` URL, are refused before connecting.
    let garbage = RedisStore::builder(&server.url(), Keyring::new(Key::generate()))
        .root_certificate("not a certificate")
        .connect()
        .await
        .unwrap_err();
    assert_eq!(garbage.kind(), ErrorKind::Config, "{garbage}");
    let plain = RedisStore::builder(
        &format!("redis://127.0.0.1:{}/", server.port),
        Keyring::new(Key::generate()),
    )
    .root_certificate(&server.pki.ca_pem)
    .connect()
    .await
    .unwrap_err();
    assert_eq!(plain.kind(), ErrorKind::Config, "{plain}");
    assert!(plain.to_string().contains("rediss://"), "{plain}");
}

/// Rough latencies of each operation against the shared server; run with
/// `cargo test --features redis,conformance --test redis -- --ignored --nocapture latency`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn latency() {
    let Some(h) = Harness::new().await else {
        return;
    };
    let store = &*h.store;
    let ns = Namespace::new();
    let rounds: u32 = 200;
    let mut keys = Vec::new();
    let mut records = Vec::new();
    for i in 0..rounds {
        let (key, record) = ns.fresh(&format!("latency-{i:04}"));
        keys.push(key);
        records.push(record);
    }
    let ttl = Duration::from_secs(30);
    let mut report = Vec::new();
    let started = Instant::now();
    for record in &records {
        store.insert(record.clone()).await.unwrap();
    }
    report.push(("insert", started.elapsed() / rounds));
    let started = Instant::now();
    for key in &keys {
        store.get(key).await.unwrap().unwrap();
    }
    report.push(("get", started.elapsed() / rounds));
    let started = Instant::now();
    for record in &records {
        store.put(record.clone(), 1, None).await.unwrap();
    }
    report.push(("put", started.elapsed() / rounds));
    let started = Instant::now();
    let mut leases = Vec::new();
    for key in &keys {
        leases.push(store.try_acquire(key, "bench", ttl).await.unwrap().unwrap());
    }
    report.push(("try_acquire", started.elapsed() / rounds));
    let started = Instant::now();
    for (record, lease) in records.iter().zip(&leases) {
        store.put(record.clone(), 2, Some(lease)).await.unwrap();
    }
    report.push(("put with lease", started.elapsed() / rounds));
    let started = Instant::now();
    for lease in &leases {
        store.release(lease).await.unwrap();
    }
    report.push(("release", started.elapsed() / rounds));
    let started = Instant::now();
    let query = ListQuery::new().client_id(ns.client_id.clone()).limit(100);
    let listed = store.list_all(&query).await.unwrap();
    assert_eq!(listed.len(), keys.len());
    report.push(("list (per record)", started.elapsed() / rounds));
    let started = Instant::now();
    for key in &keys {
        store.watch(key).await.unwrap();
    }
    report.push(("watch", started.elapsed() / rounds));
    for (what, each) in report {
        eprintln!("{what:>18}: {each:?}");
    }
}
