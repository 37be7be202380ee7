//! What the fuzz targets share: one runtime, the invariants asserted of every parsed
//! [`TokenSet`], the secret-leak check of error texts, and scratch directories for the store
//! targets.
//!
//! Every assertion here is a finding when it fails: libFuzzer keeps the input under
//! `fuzz/artifacts/<target>/`, and the input becomes a unit test in the crate it is about.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sfauth_core::{
    AccessToken, ExpirySource, IdToken, LoginHost, RefreshToken, TokenKey, TokenSet,
};
use sfauth_storage::{InFlight, Lease, ListQuery, RecordStatus, TokenRecord, TokenStore};

/// A current-thread runtime with the time and I/O drivers (sqlx's pool times its waits) and a
/// blocking pool (the file store works on it). Built once: a runtime per input would spend the
/// run on setup instead of on the code under test.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime")
    });
    &RUNTIME
}

/// The invariants of any token set that parsed: its `Debug` does not depend on its secrets, and
/// its stored form (the serde JSON every store keeps) loads back to the same stored form. A
/// token set that parses but does not load again is a login lost at the next start.
pub fn check_token_set(tokens: &TokenSet) {
    let mut other = tokens.clone();
    other.access_token = AccessToken::new("other-access-token");
    other.refresh_token = other
        .refresh_token
        .as_ref()
        .map(|_| RefreshToken::new("other-refresh-token"));
    other.id_token = other
        .id_token
        .as_ref()
        .map(|_| IdToken::new("other-id-token"));
    assert_eq!(
        format!("{tokens:?}"),
        format!("{other:?}"),
        "the Debug of a token set shows a secret"
    );

    let stored = serde_json::to_string(tokens).expect("a token set serializes");
    let loaded: TokenSet = serde_json::from_str(&stored)
        .unwrap_or_else(|e| panic!("a parsed token set does not load from its stored form: {e}"));
    assert_eq!(
        serde_json::to_string(&loaded).expect("a loaded token set serializes"),
        stored,
        "a token set's stored form changes when loaded and stored again"
    );
    assert_eq!(loaded.access_token, tokens.access_token);
    assert_eq!(loaded.refresh_token, tokens.refresh_token);
    assert_eq!(loaded.identity, tokens.identity);
}

/// Panics if `text` (an error's `Display` and `Debug`) shows `window` or more consecutive
/// characters of `secret`. A secret shorter than `window` is looked for whole.
///
/// The caller makes sure no input field other than the secret's own holds such a run, so that
/// a hit is the secret and not an echo of a harmless field.
pub fn assert_no_secret_in(text: &str, secret: &str, window: usize, what: &str) {
    if let Some(run) = secret_run_in(text, secret, window) {
        panic!("{what} leaked into an error: {run:?} in {text:?}");
    }
}

/// `text` as an error may quote it: as it is, and escaped the way `Debug` escapes a string
/// (an error's `Debug` quotes a body excerpt with `\\` for `\`, `\"` for `"`, `\n` for a
/// newline), which turns a short run of backslashes into a long one. An input field checked for
/// an innocent run of a secret is checked in both forms.
pub fn quoted_forms(text: &str) -> String {
    format!("{text} {text:?}")
}

/// The first run of `window` consecutive characters of `secret` that `text` contains.
pub fn secret_run_in<'a>(text: &str, secret: &'a str, window: usize) -> Option<&'a str> {
    if secret.is_empty() {
        return None;
    }
    let window = window.min(secret.len());
    (0..=secret.len() - window)
        .filter(|&start| secret.is_char_boundary(start) && secret.is_char_boundary(start + window))
        .map(|start| &secret[start..start + window])
        .find(|run| text.contains(run))
}

/// A fresh directory for one fuzz process of `target`, on a RAM disk when there is one (the
/// stores sync every write). Directories left by earlier processes that are gone are removed
/// first: libFuzzer ends a process with `exit`, so nothing of ours runs at its end.
pub fn scratch_dir(target: &str) -> PathBuf {
    let base = ["/dev/shm", "/tmp"]
        .iter()
        .map(Path::new)
        .find(|dir| dir.is_dir())
        .map_or_else(std::env::temp_dir, Path::to_path_buf)
        .join("sfauth-fuzz");
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix(target)
                .and_then(|rest| rest.strip_prefix('-'))
                .and_then(|pid| pid.parse::<u32>().ok());
            if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = base.join(format!("{target}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// The sealed-record format of the file and SQLite stores, as `sfauth_storage::Keyring`
/// documents it, for one key whose bytes the target knows: so that a target can seal any
/// plaintext and reach the record decoder behind the authentication tag.
///
/// Written from the documentation, not shared with the crate (which keeps it private); the
/// store targets open a record the store itself sealed when they start, so a change of format
/// stops them with a message rather than leaving them fuzzing a tag check.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    key_id: String,
}

impl Sealer {
    const MAGIC: &[u8] = b"sfs1";
    const NONCE_LEN: usize = 24;

    /// A sealer for the key made of `bytes`, whose id (a fingerprint) the store computes.
    pub fn new(bytes: [u8; 32], key_id: &str) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(&bytes.into()),
            key_id: key_id.to_owned(),
        }
    }

    /// The key id a sealed blob names.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn aad(key: &str, version: u64) -> Vec<u8> {
        format!("sfauth-storage record v1\0{key}\0{version}").into_bytes()
    }

    /// Seals `plaintext` as the record of `key` at `version`. The nonce is fixed: nothing here is
    /// secret, and a fixed nonce keeps a crashing input reproducible.
    pub fn seal(&self, key: &str, version: u64, plaintext: &[u8]) -> Vec<u8> {
        let nonce = [7u8; Self::NONCE_LEN];
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &Self::aad(key, version),
                },
            )
            .expect("sealing cannot fail");
        let mut blob = Self::MAGIC.to_vec();
        blob.push(u8::try_from(self.key_id.len()).expect("a short key id"));
        blob.extend_from_slice(self.key_id.as_bytes());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        blob
    }

    /// Opens a blob the store sealed for `key` at `version`, or says why not.
    pub fn open(&self, key: &str, version: u64, blob: &[u8]) -> Result<Vec<u8>, &'static str> {
        let rest = blob.strip_prefix(Self::MAGIC).ok_or("no sfs1 magic")?;
        let (&len, rest) = rest.split_first().ok_or("no key id length")?;
        let (id, rest) = rest
            .split_at_checked(usize::from(len))
            .ok_or("short key id")?;
        if id != self.key_id.as_bytes() {
            return Err("another key id");
        }
        let (nonce, ciphertext) = rest
            .split_at_checked(Self::NONCE_LEN)
            .ok_or("short nonce")?;
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &Self::aad(key, version),
                },
            )
            .map_err(|_| "the tag does not verify (associated data or cipher changed)")
    }
}

/// A JSON value for an [`Edit`]: every JSON type, with the integers at the edges that decoders
/// do arithmetic on.
#[derive(Arbitrary, Debug, Clone)]
pub enum Json {
    Null,
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Max,
    Text(String),
    List(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The value, nested at most a few levels deep.
    pub fn value(&self) -> serde_json::Value {
        self.value_at(0)
    }

    fn value_at(&self, depth: usize) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::from(*b),
            Self::Unsigned(n) => Value::from(*n),
            Self::Signed(n) => Value::from(*n),
            Self::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Self::Max => Value::from(u64::MAX),
            Self::Text(text) => Value::from(text.as_str()),
            Self::List(_) | Self::Object(_) if depth >= 4 => Value::Null,
            Self::List(items) => items.iter().map(|item| item.value_at(depth + 1)).collect(),
            Self::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(name, value)| (name.clone(), value.value_at(depth + 1)))
                    .collect(),
            ),
        }
    }
}

/// One change to a JSON document that a store wrote: the path picks existing members by
/// position, so the edits follow the document's schema whatever it becomes.
#[derive(Arbitrary, Debug, Clone)]
pub struct Edit {
    pub path: Vec<u8>,
    pub op: EditOp,
}

/// What an [`Edit`] does at its path.
#[derive(Arbitrary, Debug, Clone)]
pub enum EditOp {
    Set(Json),
    Remove,
    /// Adds a member (to an object) or an element (to a list).
    Add(String, Json),
}

/// Applies `edits` to `document` in order; a path that ends early applies at the last
/// container reached.
pub fn apply_edits(document: &mut serde_json::Value, edits: &[Edit]) {
    for edit in edits {
        apply_edit(document, &edit.path, &edit.op);
    }
}

fn apply_edit(value: &mut serde_json::Value, path: &[u8], op: &EditOp) {
    use serde_json::Value;
    let Some((&step, rest)) = path.split_first() else {
        match op {
            EditOp::Set(json) => *value = json.value(),
            EditOp::Remove => *value = Value::Null,
            EditOp::Add(name, json) => match value {
                Value::Object(map) => {
                    map.insert(name.clone(), json.value());
                }
                Value::Array(items) => items.push(json.value()),
                _ => {}
            },
        }
        return;
    };
    match value {
        Value::Object(map) if !map.is_empty() => {
            let name = map
                .keys()
                .nth(usize::from(step) % map.len())
                .cloned()
                .expect("an index below the length");
            if rest.is_empty() && matches!(op, EditOp::Remove) {
                map.remove(&name);
            } else if let Some(child) = map.get_mut(&name) {
                apply_edit(child, rest, op);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let index = usize::from(step) % items.len();
            if rest.is_empty() && matches!(op, EditOp::Remove) {
                items.remove(index);
            } else {
                apply_edit(&mut items[index], rest, op);
            }
        }
        _ => apply_edit(value, &[], op),
    }
}

/// The key of the record the store targets damage.
pub fn sample_key() -> TokenKey {
    TokenKey::new(
        &LoginHost::Production,
        &"https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK"
            .parse()
            .expect("an identity url"),
        "3MVG9.fuzz",
        "default",
    )
}

/// A record with every optional field set, so that edits of its stored form reach every field:
/// active with a refresh in flight, or waiting for a new login.
pub fn sample_record(active: bool) -> TokenRecord {
    let mut tokens = TokenSet::new(
        AccessToken::new("00D5e000000AbcdEAC!AQ4AQFuzzAccessToken"),
        "https://acme.my.salesforce.com".parse().expect("a url"),
        "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK"
            .parse()
            .expect("an identity url"),
    );
    let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    tokens.refresh_token = Some(RefreshToken::new("5Aep861FuzzRefreshToken"));
    tokens.issued_at = Some(at);
    tokens.signature = Some("c2lnbmF0dXJl".into());
    tokens.scope = Some("api refresh_token".into());
    tokens.token_type = Some("Bearer".into());
    tokens.id_token = Some(IdToken::new("eyJhbGciOiJSUzI1NiJ9.e30.c2ln"));
    tokens.community_url = Some("https://acme.my.site.com/portal".parse().expect("a url"));
    tokens.community_id = Some("0DB5e000000AbcdEAC".into());
    tokens.api_instance_url = Some("https://api.salesforce.com".parse().expect("a url"));
    tokens.expires_at = Some(at + Duration::from_secs(7200));
    tokens.expiry_source = Some(ExpirySource::SessionTimeout);
    let mut record = TokenRecord::new(sample_key(), tokens, at);
    record.last_refreshed_at = Some(at + Duration::from_secs(60));
    record.refresh_count = 3;
    record.learned_lifetime = Some(Duration::from_secs(7200));
    if active {
        record.refresh_in_flight = Some(InFlight {
            holder: "host-1:42:abcd".into(),
            fence: 7,
            since: at,
        });
    } else {
        record.status = RecordStatus::ReauthRequired {
            reason: "invalid_grant".into(),
            since: at,
        };
    }
    record
}

/// The invariants of a record a store read: it is the key's, its tokens keep theirs (see
/// [`check_token_set`]), `list` finds the same record, and writing it back (as a refresher
/// does) stores a record that reads the same. A record that reads but does not write back, or
/// reads differently after, is a login lost at the next refresh.
pub async fn check_record(store: &dyn TokenStore, record: &TokenRecord) {
    assert_eq!(record.key, sample_key(), "a record read under another key");
    check_token_set(&record.tokens);
    let listed = store
        .list(&ListQuery::new())
        .await
        .expect("list fails on a record that get reads");
    assert_eq!(
        listed.records.as_slice(),
        std::slice::from_ref(record),
        "list and get read differently"
    );
    // The listing filters read clear metadata next to the sealed record; a record that reads
    // must be found by its own org, user and client.
    let filters = [
        ListQuery::new().org_id(record.key.org_id().clone()),
        ListQuery::new().user_id(record.key.user_id().clone()),
        ListQuery::new().client_id(record.key.client_id()),
        ListQuery::new().status(record.status.kind()),
    ];
    for query in filters {
        let listed = store
            .list(&query)
            .await
            .expect("a filtered list fails on a record that get reads");
        assert_eq!(
            listed.records.as_slice(),
            std::slice::from_ref(record),
            "a record that reads is not found by its own {query:?}"
        );
    }
    let Ok(version) = store.put(record.clone(), record.version, None).await else {
        assert_eq!(
            record.version,
            u64::MAX,
            "a record that reads cannot be written back"
        );
        return;
    };
    let again = store
        .get(&record.key)
        .await
        .expect("a record written back reads")
        .expect("a record written back is there");
    let mut expected = record.clone();
    expected.version = version;
    assert_eq!(
        again, expected,
        "a record reads differently after it is written back"
    );
}

/// Panics unless `error`, from reading a damaged record or lease, says it is damaged (or, for a
/// record, sealed with a key the keyring lacks, or a counter the store cannot go past).
pub fn check_damage_error(error: &sfauth_storage::Error) {
    use sfauth_storage::ErrorKind;
    assert!(
        matches!(
            error.kind(),
            ErrorKind::Corrupt | ErrorKind::WrongKey | ErrorKind::Backend | ErrorKind::Config
        ),
        "damage read as {:?}: {error}",
        error.kind()
    );
}

/// A lease operation on [`sample_key`], by one of two holders.
#[derive(Arbitrary, Debug, Clone)]
pub enum LeaseOp {
    Acquire { second: bool, ttl: Ttl },
    Renew { ttl: Ttl },
    TakeOver { second: bool, ttl: Ttl },
    Release,
    Read,
}

/// A lease's time to live: mostly sane, sometimes at the edges.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Ttl {
    Seconds(u16),
    Zero,
    Huge(u64),
}

impl Ttl {
    fn duration(self) -> Duration {
        match self {
            Self::Seconds(secs) => Duration::from_secs(u64::from(secs).max(1)),
            Self::Zero => Duration::ZERO,
            Self::Huge(secs) => Duration::from_secs(secs),
        }
    }
}

/// Runs `ops` on a store whose lease for [`sample_key`] starts in any state, and checks the
/// lease rules that hold whatever that state: an operation fails only with a damage error, a
/// lease that is not a renewal of the holder's own current lease has a fence above every fence
/// issued before it, a renewal keeps its fence, and a granted lease is the store's current
/// lease until it lapses or is released.
pub async fn run_lease_ops(store: &dyn TokenStore, ops: &[LeaseOp]) {
    const HOLDERS: [&str; 2] = ["fuzz-holder-a", "fuzz-holder-b"];
    let key = sample_key();
    // The lease granted last by these operations, and the greatest fence they were given. The
    // starting state is unknown (the file or row was fuzzed), so fences are compared only with
    // fences seen here.
    let mut ours: Option<Lease> = None;
    let mut max_fence: Option<u64> = None;
    for op in ops {
        let (granted, renewal) = match op {
            LeaseOp::Acquire { second, ttl } => {
                let holder = HOLDERS[usize::from(*second)];
                let renewal = ours.as_ref().is_some_and(|ours| {
                    ours.holder == holder && ours.expires_at > SystemTime::now()
                });
                match store.try_acquire(&key, holder, ttl.duration()).await {
                    Ok(lease) => (lease, renewal),
                    Err(error) => (damaged(error), false),
                }
            }
            LeaseOp::Renew { ttl } => match &ours {
                Some(lease) => match store.renew(lease, ttl.duration()).await {
                    Ok(renewed) => {
                        if let Some(renewed) = &renewed {
                            assert_eq!(renewed.fence, lease.fence, "a renewal changed the fence");
                        }
                        (renewed, true)
                    }
                    Err(error) => (damaged(error), false),
                },
                None => (None, false),
            },
            LeaseOp::TakeOver { second, ttl } => match &ours {
                Some(stale) => {
                    let holder = HOLDERS[usize::from(*second)];
                    match store.take_over(stale, holder, ttl.duration()).await {
                        Ok(lease) => (lease, false),
                        Err(error) => (damaged(error), false),
                    }
                }
                None => (None, false),
            },
            LeaseOp::Release => {
                if let Some(lease) = ours.take() {
                    match store.release(&lease).await {
                        Ok(()) => {
                            if let Ok(Some(current)) = store.lease(&key).await {
                                assert!(
                                    current.holder != lease.holder || current.fence != lease.fence,
                                    "a released lease is still current"
                                );
                            }
                        }
                        Err(error) => check_damage_error(&error),
                    }
                }
                (None, false)
            }
            LeaseOp::Read => {
                if let Err(error) = store.lease(&key).await {
                    check_damage_error(&error);
                }
                (None, false)
            }
        };
        let Some(lease) = granted else {
            continue;
        };
        if let Some(max) = max_fence {
            if renewal {
                assert!(
                    lease.fence >= max,
                    "a renewed lease's fence {} went below {max}",
                    lease.fence
                );
            } else {
                assert!(
                    lease.fence > max,
                    "a new lease's fence {} is not above {max}",
                    lease.fence
                );
            }
        }
        max_fence = Some(max_fence.map_or(lease.fence, |max| max.max(lease.fence)));
        // A lease that lives a second or more is the current one right after it is granted.
        if lease.expires_at > SystemTime::now() + Duration::from_millis(500) {
            let current = store.lease(&key).await.expect("a granted lease reads back");
            assert_eq!(
                current.as_ref(),
                Some(&lease),
                "a granted lease is not the current one"
            );
        }
        ours = Some(lease);
    }
}

fn damaged(error: sfauth_storage::Error) -> Option<Lease> {
    check_damage_error(&error);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_runs_are_found_whole_or_in_part() {
        assert_eq!(secret_run_in("x 00DLEAK y", "00DLEAK", 8), Some("00DLEAK"));
        assert_eq!(
            secret_run_in("…AQ4AQxyz", "00D!AQ4AQxyz", 8),
            Some("AQ4AQxyz")
        );
        assert_eq!(secret_run_in("[redacted]", "00D!AQ4AQxyz", 8), None);
        assert_eq!(secret_run_in("anything", "", 8), None);
    }

    #[test]
    fn a_quoted_field_is_checked_as_debug_escapes_it() {
        // The id_token target's find: a JWKS body of nine backslashes, quoted by an error's
        // `Debug` as eighteen, shares a 16-character run with a token of backslashes.
        let jwks = format!("1{}", "\\".repeat(9));
        let token = "\\".repeat(40);
        assert_eq!(secret_run_in(&jwks, &token, 16), None);
        assert!(secret_run_in(&quoted_forms(&jwks), &token, 16).is_some());
    }

    #[test]
    fn sealer_opens_what_it_seals_only_for_the_same_key_and_version() {
        let sealer = Sealer::new([1; 32], "0123456789abcdef");
        let blob = sealer.seal("k", 3, b"{}");
        assert_eq!(sealer.open("k", 3, &blob), Ok(b"{}".to_vec()));
        assert!(sealer.open("k", 4, &blob).is_err());
        assert!(sealer.open("other", 3, &blob).is_err());
    }

    #[test]
    fn edits_follow_the_document() {
        let mut doc = serde_json::json!({"a": 1, "b": {"c": [1, 2]}});
        apply_edits(
            &mut doc,
            &[
                Edit {
                    path: vec![1, 0, 1],
                    op: EditOp::Set(Json::Max),
                },
                Edit {
                    path: vec![0],
                    op: EditOp::Remove,
                },
                Edit {
                    path: vec![],
                    op: EditOp::Add("d".into(), Json::Bool(true)),
                },
            ],
        );
        assert_eq!(
            doc,
            serde_json::json!({"b": {"c": [1, u64::MAX]}, "d": true})
        );
    }
}
