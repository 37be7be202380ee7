//! `FileStore` reading damaged files: any record file (raw bytes, or the envelope the store
//! wrote with fuzzed edits, or a well-sealed record whose plaintext was edited) and any lease
//! file, through the public operations (`get`, `list`, `put`, the lease calls), since the
//! decoders are private. A read gives the record or a damage error, never a panic; a record
//! that reads passes `check_record` (its tokens keep their invariants, `list` agrees, and it
//! writes back unchanged); lease operations keep the fencing rules (`run_lease_ops`).
//!
//! The sealed plaintexts are sealed by `sfauth_fuzz::Sealer` for the store's own key, so the
//! fuzzer gets past the authentication tag to the record decoder. The store seals its own
//! record when the target starts and the target opens it, so a change of the sealed format
//! stops the target with a message instead of leaving it fuzzing a tag check.

#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use base64::Engine as _;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use sfauth_fuzz::{Edit, LeaseOp, Sealer, apply_edits, runtime, sample_key, sample_record};
use sfauth_storage::{FileStore, Key, Keyring, TokenStore};

const KEY_BYTES: [u8; 32] = [0x5a; 32];

struct Fixture {
    store: FileStore,
    sealer: Sealer,
    record_path: PathBuf,
    lease_path: PathBuf,
    /// What the store wrote for each sample record: the record file as JSON, and its sealed
    /// plaintext as JSON.
    written: [(serde_json::Value, serde_json::Value); 2],
    /// The lease file the store wrote for a held lease.
    lease: serde_json::Value,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = sfauth_fuzz::scratch_dir("store_file");
    let key = Key::from_bytes(KEY_BYTES);
    let sealer = Sealer::new(KEY_BYTES, key.id());
    let store = FileStore::open(&dir, Keyring::new(key)).expect("a file store");
    let key = sample_key();
    let record_path = store.record_path(&key);
    let written = [true, false].map(|active| {
        let _ = std::fs::remove_file(&record_path);
        runtime()
            .block_on(store.insert(sample_record(active)))
            .expect("the store writes its own record");
        let envelope: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&record_path).expect("the store's record file"))
                .expect("the record file is JSON");
        let sealed = envelope["sealed"].as_str().expect(
            "the record file has a base64 `sealed` member: its format changed, update this target",
        );
        let blob = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .expect("`sealed` is base64");
        let version = envelope["version"]
            .as_u64()
            .expect("the record file has a version");
        let plaintext = sealer
            .open(&key.to_string(), version, &blob)
            .unwrap_or_else(|why| {
                panic!("the sealed-record format changed ({why}): update sfauth_fuzz::Sealer")
            });
        let plaintext = serde_json::from_slice(&plaintext).expect("the sealed record is JSON");
        (envelope, plaintext)
    });
    let lease = runtime()
        .block_on(store.try_acquire(&key, "fuzz-holder-a", std::time::Duration::from_secs(3600)))
        .expect("the store grants a lease")
        .expect("a free lease is granted");
    let lease_path = std::fs::read_dir(&dir)
        .expect("the store directory")
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "lease"))
        .expect("the store wrote a lease file");
    runtime()
        .block_on(store.release(&lease))
        .expect("the store releases its lease");
    let lease = serde_json::from_slice(&std::fs::read(&lease_path).expect("the lease file"))
        .expect("the lease file is JSON");
    Fixture {
        store,
        sealer,
        record_path,
        lease_path,
        written,
        lease,
    }
});

#[derive(Arbitrary, Debug)]
enum Input {
    /// Any bytes as the record file.
    RecordBytes(Vec<u8>),
    /// The record file the store wrote, edited.
    Envelope { active: bool, edits: Vec<Edit> },
    /// A record the store wrote, its plaintext edited (or replaced) and sealed again, at any
    /// version.
    Sealed {
        active: bool,
        version: u64,
        edits: Vec<Edit>,
        raw: Option<Vec<u8>>,
    },
    /// Any bytes as the lease file, then lease operations.
    LeaseBytes(Vec<u8>, Vec<LeaseOp>),
    /// The lease file the store wrote, edited, then lease operations.
    Lease(Vec<Edit>, Vec<LeaseOp>),
}

fuzz_target!(|input: Input| {
    let fixture = &*FIXTURE;
    let _ = std::fs::remove_file(&fixture.record_path);
    let _ = std::fs::remove_file(&fixture.lease_path);
    match input {
        Input::RecordBytes(bytes) => read_record(fixture, &bytes),
        Input::Envelope { active, edits } => {
            let mut envelope = fixture.written[usize::from(active)].0.clone();
            apply_edits(&mut envelope, &edits);
            read_record(fixture, &serde_json::to_vec(&envelope).expect("json"));
        }
        Input::Sealed {
            active,
            version,
            edits,
            raw,
        } => {
            let (envelope, plaintext) = &fixture.written[usize::from(active)];
            let mut plaintext = plaintext.clone();
            apply_edits(&mut plaintext, &edits);
            let plaintext = raw.unwrap_or_else(|| serde_json::to_vec(&plaintext).expect("json"));
            let blob = fixture
                .sealer
                .seal(&sample_key().to_string(), version, &plaintext);
            let mut envelope = envelope.clone();
            envelope["version"] = version.into();
            envelope["key_id"] = fixture.sealer.key_id().into();
            envelope["sealed"] = base64::engine::general_purpose::STANDARD
                .encode(blob)
                .into();
            // The clear status must match the sealed one; take it from the plaintext so that a
            // status edit is read rather than refused for the mismatch.
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&plaintext)
                && let Some(status) = value["status"]["status"].as_str()
            {
                envelope["status"] = status.into();
            }
            read_record(fixture, &serde_json::to_vec(&envelope).expect("json"));
        }
        Input::LeaseBytes(bytes, ops) => {
            std::fs::write(&fixture.lease_path, bytes).expect("writing the lease file");
            runtime().block_on(sfauth_fuzz::run_lease_ops(&fixture.store, &ops));
        }
        Input::Lease(edits, ops) => {
            let mut lease = fixture.lease.clone();
            apply_edits(&mut lease, &edits);
            std::fs::write(
                &fixture.lease_path,
                serde_json::to_vec(&lease).expect("json"),
            )
            .expect("writing the lease file");
            runtime().block_on(sfauth_fuzz::run_lease_ops(&fixture.store, &ops));
        }
    }
});

fn read_record(fixture: &Fixture, bytes: &[u8]) {
    std::fs::write(&fixture.record_path, bytes).expect("writing the record file");
    let store: &dyn TokenStore = &fixture.store;
    runtime().block_on(async {
        match store.get(&sample_key()).await {
            Ok(Some(record)) => sfauth_fuzz::check_record(store, &record).await,
            Ok(None) => panic!("a record file that is there reads as missing"),
            Err(error) => {
                sfauth_fuzz::check_damage_error(&error);
                assert!(
                    store.list(&sfauth_storage::ListQuery::new()).await.is_err(),
                    "list reads a record file that get refuses: {error}"
                );
            }
        }
    });
}
