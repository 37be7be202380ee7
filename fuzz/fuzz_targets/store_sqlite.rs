//! `SqliteStore` reading damaged rows: a record row with any column values (the sealed column
//! as raw bytes, or a well-sealed record whose plaintext was edited) and a lease row with any
//! values, written with a connection of the target's own and read through the public
//! operations. A read gives the record or a damage error, never a panic; a record that reads
//! passes `check_record`; lease operations keep the fencing rules (`run_lease_ops`).
//!
//! As in `store_file`, the store seals its own record when the target starts and the target
//! opens it, so a change of the sealed format stops the target with a message.

#![no_main]

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use sfauth_fuzz::{Edit, LeaseOp, Sealer, apply_edits, runtime, sample_key, sample_record};
use sfauth_storage::{Key, Keyring, SqliteStore, TokenStore};
use sqlx::Row as _;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

const KEY_BYTES: [u8; 32] = [0xa5; 32];

/// A record row as the store wrote it.
#[derive(Clone)]
struct Row {
    key: String,
    org_id: String,
    user_id: String,
    client_id: String,
    status: String,
    version: i64,
    key_id: String,
    /// The sealed record's plaintext, as JSON.
    plaintext: serde_json::Value,
    updated_at: i64,
}

struct Fixture {
    store: SqliteStore,
    /// The target's own connection, for writing damaged rows.
    raw: SqlitePool,
    sealer: Sealer,
    rows: [Row; 2],
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = sfauth_fuzz::scratch_dir("store_sqlite");
    let path = dir.join("tokens.db");
    let key = Key::from_bytes(KEY_BYTES);
    let sealer = Sealer::new(KEY_BYTES, key.id());
    runtime().block_on(async {
        let store = SqliteStore::open(&path, Keyring::new(key))
            .await
            .expect("a sqlite store");
        let raw = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(SqliteConnectOptions::new().filename(&path))
            .await
            .expect("a second connection to the store's file");
        let mut rows = Vec::new();
        for active in [true, false] {
            sqlx::query("DELETE FROM token_records")
                .execute(&raw)
                .await
                .expect("clearing the records");
            store
                .insert(sample_record(active))
                .await
                .expect("the store writes its own record");
            let row = sqlx::query("SELECT * FROM token_records")
                .fetch_one(&raw)
                .await
                .expect("the store's row: its schema changed, update this target");
            let key: String = row.get("key");
            let version: i64 = row.get("version");
            let sealed: Vec<u8> = row.get("sealed");
            let plaintext = sealer
                .open(
                    &key,
                    u64::try_from(version).expect("a positive version"),
                    &sealed,
                )
                .unwrap_or_else(|why| {
                    panic!("the sealed-record format changed ({why}): update sfauth_fuzz::Sealer")
                });
            rows.push(Row {
                key,
                org_id: row.get("org_id"),
                user_id: row.get("user_id"),
                client_id: row.get("client_id"),
                status: row.get("status"),
                version,
                key_id: row.get("key_id"),
                plaintext: serde_json::from_slice(&plaintext).expect("the sealed record is JSON"),
                updated_at: row.get("updated_at"),
            });
        }
        let [active, reauth] = <[Row; 2]>::try_from(rows).ok().expect("two rows");
        Fixture {
            store,
            raw,
            sealer,
            rows: [reauth, active],
        }
    })
});

#[derive(Arbitrary, Debug)]
enum Input {
    Record {
        active: bool,
        key: Option<String>,
        org_id: Option<String>,
        client_id: Option<String>,
        status: Option<Status>,
        version: Option<i64>,
        key_id: Option<String>,
        sealed: Sealed,
        updated_at: Option<i64>,
    },
    Lease {
        key: Option<String>,
        last_fence: i64,
        holder: Option<String>,
        fence: Option<i64>,
        expires_at: Option<Millis>,
        ops: Vec<LeaseOp>,
    },
}

#[derive(Arbitrary, Debug)]
enum Status {
    Active,
    ReauthRequired,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Sealed {
    /// The plaintext the store sealed, edited (or replaced) and sealed again at `version`
    /// (the row's own version when `None`).
    Edited {
        version: Option<u64>,
        edits: Vec<Edit>,
        raw: Option<Vec<u8>>,
    },
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Millis {
    FromNow(i32),
    Raw(i64),
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fuzz_target!(|input: Input| {
    let fixture = &*FIXTURE;
    runtime().block_on(async {
        for table in ["token_records", "token_leases"] {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&fixture.raw)
                .await
                .expect("clearing a table");
        }
        match input {
            Input::Record {
                active,
                key,
                org_id,
                client_id,
                status,
                version,
                key_id,
                sealed,
                updated_at,
            } => {
                let row = &fixture.rows[usize::from(active)];
                let version = version.unwrap_or(row.version);
                let sealed = match sealed {
                    Sealed::Edited {
                        version: sealed_version,
                        edits,
                        raw,
                    } => {
                        let mut plaintext = row.plaintext.clone();
                        apply_edits(&mut plaintext, &edits);
                        let plaintext =
                            raw.unwrap_or_else(|| serde_json::to_vec(&plaintext).expect("json"));
                        let sealed_version = sealed_version
                            .or_else(|| u64::try_from(version).ok())
                            .unwrap_or_default();
                        fixture.sealer.seal(&row.key, sealed_version, &plaintext)
                    }
                    Sealed::Bytes(bytes) => bytes,
                };
                let status = match status {
                    None => row.status.clone(),
                    Some(Status::Active) => "active".into(),
                    Some(Status::ReauthRequired) => "reauth_required".into(),
                    Some(Status::Other(status)) => status,
                };
                let written = sqlx::query(
                    "INSERT INTO token_records \
                       (key, org_id, user_id, client_id, status, version, key_id, sealed, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .bind(key.unwrap_or_else(|| row.key.clone()))
                .bind(org_id.unwrap_or_else(|| row.org_id.clone()))
                .bind(&row.user_id)
                .bind(client_id.unwrap_or_else(|| row.client_id.clone()))
                .bind(status)
                .bind(version)
                .bind(key_id.unwrap_or_else(|| row.key_id.clone()))
                .bind(sealed)
                .bind(updated_at.unwrap_or(row.updated_at))
                .execute(&fixture.raw)
                .await;
                if written.is_ok() {
                    read_record(&fixture.store).await;
                }
            }
            Input::Lease {
                key,
                last_fence,
                holder,
                fence,
                expires_at,
                ops,
            } => {
                let expires_at = expires_at.map(|at| match at {
                    Millis::FromNow(delta) => now_millis().saturating_add(i64::from(delta)),
                    Millis::Raw(millis) => millis,
                });
                sqlx::query(
                    "INSERT INTO token_leases (key, last_fence, holder, fence, expires_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .bind(key.unwrap_or_else(|| sample_key().to_string()))
                .bind(last_fence)
                .bind(holder)
                .bind(fence)
                .bind(expires_at)
                .execute(&fixture.raw)
                .await
                .expect("a lease row with any values of the column types");
                sfauth_fuzz::run_lease_ops(&fixture.store, &ops).await;
            }
        }
    });
});

async fn read_record(store: &dyn TokenStore) {
    let listed = store.list(&sfauth_storage::ListQuery::new()).await;
    match store.get(&sample_key()).await {
        Ok(Some(record)) => sfauth_fuzz::check_record(store, &record).await,
        // The row is under another key: whatever list makes of it, it must not panic, and a
        // failure must be a damage error.
        Ok(None) => {
            if let Err(error) = listed {
                sfauth_fuzz::check_damage_error(&error);
            }
        }
        Err(error) => {
            sfauth_fuzz::check_damage_error(&error);
            assert!(
                listed.is_err(),
                "list reads a row that get refuses: {error}"
            );
        }
    }
}
