//! The conformance suite against `FileStore` in a real temporary directory, and the lease and
//! compare-and-swap across processes (this test binary re-runs itself as the child).
#![cfg(feature = "conformance")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] functions"
)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sfauth_core::TokenKey;
use sfauth_storage::conformance::{Namespace, Persistent};
use sfauth_storage::{ErrorKind, FileStore, Key, Keyring, TokenRecord, TokenStore};

struct Harness {
    dir: tempfile::TempDir,
    keyring: Keyring,
    store: Arc<FileStore>,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Keyring::new(Key::generate());
        let store = Arc::new(FileStore::open(dir.path().join("tokens"), keyring.clone()).unwrap());
        Self {
            dir,
            keyring,
            store,
        }
    }

    fn store_dir(&self) -> PathBuf {
        self.dir.path().join("tokens")
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
        Ok(Arc::new(FileStore::open(self.store_dir(), keyring)?))
    }

    async fn raw_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(self.store_dir()).unwrap() {
            bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        bytes
    }

    async fn read_raw(&self, key: &TokenKey) -> Option<Vec<u8>> {
        std::fs::read(self.store.record_path(key)).ok()
    }

    async fn write_raw(&self, key: &TokenKey, bytes: Vec<u8>) {
        std::fs::write(self.store.record_path(key), bytes).unwrap();
    }
}

sfauth_storage::conformance_tests!(persistent = async { Harness::new() });

#[tokio::test]
async fn files_are_private_and_named_by_hash() {
    let h = Harness::new();
    let ns = Namespace::new();
    let (key, record) = ns.fresh("private");
    h.store.insert(record).await.unwrap();
    h.store
        .try_acquire(&key, "a", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    let dir_mode = std::fs::metadata(h.store_dir())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(h.store_dir()).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        let name = entry.file_name().into_string().unwrap();
        assert_eq!(mode, 0o600, "{name}");
        assert!(
            !name.contains(key.org_id().as_str()),
            "file names reveal no org"
        );
        names.push(name);
    }
    names.sort();
    let stem = names[0].split('.').next().unwrap().to_owned();
    assert_eq!(stem.len(), 64);
    assert_eq!(
        names,
        [
            format!("{stem}.lease"),
            format!("{stem}.lock"),
            format!("{stem}.rec")
        ],
        "no temporary file is left behind"
    );
}

#[tokio::test]
async fn damaged_lease_file_is_an_error_not_a_reset() {
    let h = Harness::new();
    let ns = Namespace::new();
    let (key, _) = ns.fresh("lease-damage");
    h.store
        .try_acquire(&key, "a", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    let lease_path = h.store.record_path(&key).with_extension("lease");
    std::fs::write(&lease_path, b"{\"key\":").unwrap();
    let error = h
        .store
        .try_acquire(&key, "b", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Corrupt);
    assert_eq!(std::fs::read(&lease_path).unwrap(), b"{\"key\":");
}

const CHILD_DIR: &str = "SFAUTH_STORAGE_TEST_CHILD_DIR";
const CHILD_KEY: &str = "SFAUTH_STORAGE_TEST_CHILD_KEY";
const CHILD_TOKEN_KEY: &str = "SFAUTH_STORAGE_TEST_CHILD_TOKEN_KEY";
const CHILD_OUT: &str = "SFAUTH_STORAGE_TEST_CHILD_OUT";
const CHILD_VERSION: &str = "SFAUTH_STORAGE_TEST_CHILD_VERSION";

/// Runs only as the child of `leases_and_cas_across_processes`: tries the lease and a CAS
/// write at the given version, and writes what happened to a file.
#[tokio::test]
#[ignore = "child process of leases_and_cas_across_processes"]
async fn child_process() {
    let dir = std::env::var(CHILD_DIR).unwrap();
    let keyring = Keyring::new(Key::from_env(CHILD_KEY).unwrap());
    let key: TokenKey = std::env::var(CHILD_TOKEN_KEY).unwrap().parse().unwrap();
    let store = FileStore::open(dir, keyring).unwrap();
    let holder = format!("child-{}", std::process::id());
    let lease = store
        .try_acquire(&key, &holder, Duration::from_secs(30))
        .await
        .unwrap();
    let mut record: TokenRecord = store.get(&key).await.unwrap().unwrap();
    record.refresh_count = u64::from(std::process::id());
    let version: u64 = std::env::var(CHILD_VERSION).unwrap().parse().unwrap();
    let put = store.put(record, version, None).await;
    let report = format!(
        "lease={} put={}",
        lease.map_or("none".to_owned(), |l| l.fence.to_string()),
        match put {
            Ok(version) => format!("ok{version}"),
            Err(e) if e.kind() == ErrorKind::Conflict => "conflict".to_owned(),
            Err(e) => format!("error {e}"),
        }
    );
    std::fs::write(std::env::var(CHILD_OUT).unwrap(), report).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_and_cas_across_processes() {
    let h = Harness::new();
    let key_material = Key::generate();
    let keyring = Keyring::new(Key::from_base64(&key_material.to_base64()).unwrap());
    let store = FileStore::open(h.store_dir(), keyring).unwrap();
    let ns = Namespace::new();
    let (key, record) = ns.fresh("processes");
    store.insert(record).await.unwrap();

    // The parent holds the lease: no child gets it.
    let held = store
        .try_acquire(&key, "parent", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    let spawn = |i: usize, version: u64| {
        let out = h.dir.path().join(format!("child-{i}.out"));
        let child = Command::new(&exe)
            .args(["file::child_process", "--exact", "--ignored", "--quiet"])
            .env(CHILD_DIR, h.store_dir())
            .env(CHILD_KEY, &*key_material.to_base64())
            .env(CHILD_TOKEN_KEY, key.to_string())
            .env(CHILD_OUT, &out)
            .env(CHILD_VERSION, version.to_string())
            // The child's own test summary would confuse whoever counts this run's tests.
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        (child, out)
    };
    let (mut child, out) = spawn(0, 1);
    assert!(child.wait().unwrap().success());
    let report = std::fs::read_to_string(out).unwrap();
    assert!(report.starts_with("lease=none "), "{report}");
    assert!(report.ends_with("put=ok2"), "{report}");

    // Released: four children race for the lease and for a put at version 2; exactly one
    // gets the lease (with a greater fence) and exactly one put wins.
    store.release(&held).await.unwrap();
    let children: Vec<_> = (1..=4).map(|i| spawn(i, 2)).collect();
    let mut fences = Vec::new();
    let mut wins = 0;
    for (mut child, out) in children {
        assert!(child.wait().unwrap().success());
        let report = std::fs::read_to_string(out).unwrap();
        if report.ends_with("put=ok3") {
            wins += 1;
        } else {
            assert!(report.ends_with("put=conflict"), "{report}");
        }
        let lease = report
            .split(' ')
            .next()
            .unwrap()
            .trim_start_matches("lease=");
        if lease != "none" {
            fences.push(lease.parse::<u64>().unwrap());
        }
    }
    assert_eq!(
        fences.len(),
        1,
        "exactly one process gets the lease: {fences:?}"
    );
    assert_eq!(wins, 1, "exactly one process wins the put");
    assert!(fences[0] > held.fence);
    let record = store.get(&key).await.unwrap().unwrap();
    assert_eq!(record.version, 3);
    let error = store.put(record, 3, Some(&held)).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::LeaseLost);
}

/// Numbers in a lease file are outside input: past what a time can hold, or at the end of
/// the fence counter, they are typed errors that leave the file alone, never a panic or a
/// wrapped fence.
#[tokio::test]
async fn huge_numbers_in_a_lease_file_are_typed_errors() {
    let h = Harness::new();
    let ns = Namespace::new();
    let (key, _) = ns.fresh("lease-numbers");
    let lease = h
        .store
        .try_acquire(&key, "a", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let path = h.store.record_path(&key).with_extension("lease");
    let name = key.to_string();
    let ttl = Duration::from_secs(30);

    let beyond_time = serde_json::json!({
        "key": name,
        "last_fence": 1,
        "current": {"holder": "a", "fence": 1,
                    "expires_at": {"secs_since_epoch": u64::MAX, "nanos_since_epoch": 0}},
    });
    std::fs::write(&path, beyond_time.to_string()).unwrap();
    assert_eq!(
        h.store.lease(&key).await.unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    assert_eq!(
        h.store
            .try_acquire(&key, "b", ttl)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Corrupt
    );
    assert_eq!(
        h.store.renew(&lease, ttl).await.unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    assert_eq!(
        h.store
            .take_over(&lease, "b", ttl)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Corrupt
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        beyond_time.to_string()
    );

    // The fence counter at its end: a new fence would wrap to one issued before.
    let exhausted = serde_json::json!({
        "key": name,
        "last_fence": u64::MAX,
        "current": {"holder": "a", "fence": u64::MAX,
                    "expires_at": {"secs_since_epoch": 4_000_000_000_u64, "nanos_since_epoch": 0}},
    });
    std::fs::write(&path, exhausted.to_string()).unwrap();
    let held = h.store.lease(&key).await.unwrap().unwrap();
    assert_eq!((held.holder.as_str(), held.fence), ("a", u64::MAX));
    assert_eq!(
        h.store.take_over(&held, "b", ttl).await.unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    // Renewing keeps the fence, so it needs no new one.
    let renewed = h.store.renew(&held, ttl).await.unwrap().unwrap();
    assert_eq!(renewed.fence, u64::MAX);
    h.store.release(&renewed).await.unwrap();
    assert_eq!(
        h.store
            .try_acquire(&key, "b", ttl)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Corrupt
    );
}
