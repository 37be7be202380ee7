//! [`FileStore`]: one directory, one encrypted file per key, advisory locks for the
//! cross-process lease. Always available.
//!
//! The layout and the reasons for it are on [`FileStore`].

use std::fs;
use std::io::ErrorKind as IoErrorKind;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sfauth_core::TokenKey;
use sha2::{Digest as _, Sha256};

use crate::crypto::{
    Keyring, blob_key_id, create_private_dir, open_record, seal_record, sync_dir, write_temp,
};
use crate::error::{Error, ErrorKind, Result};
use crate::lease::{LeaseState, check_key};
use crate::record::{
    EntryPage, Lease, ListEntry, ListPage, ListQuery, StatusKind, TokenRecord, next_version,
};
use crate::store::TokenStore;

const RECORD: &str = "rec";
const LEASE: &str = "lease";
const LOCK: &str = "lock";

/// A [`TokenStore`] in a directory, one encrypted file per key.
///
/// # Layout
///
/// For a key whose string form hashes (SHA-256, hex) to `H`, the directory holds:
///
/// - `H.rec`: the record, a small JSON envelope (format, key, version, status, key id) around
///   the sealed record (see [`Keyring`]);
/// - `H.lease`: the key's lease and its fence counter, JSON;
/// - `H.lock`: an empty file whose advisory lock (`flock`) serializes every
///   read-check-write on the key, across processes.
///
/// # Why one file per key
///
/// One file for all keys would make every write rewrite every tenant, serialize all writers on
/// one lock, and let one torn or damaged file lose every refresh token at once. With one file
/// per key, compare-and-swap writes to different keys are independent, a write rewrites one
/// small file, and a damaged file loses one tenant, not all. The name is a hash so that any key
/// (with `/`, `|` or non-ASCII in its parts) maps to a safe, fixed-length name, and the name
/// itself reveals nothing about the org or user.
///
/// # Writes
///
/// A write goes to a temporary file in the same directory (mode 0600), is synced, renamed over
/// the old file, and the directory is synced: a reader sees the old file or the new one, never
/// a mix, and a write that returned survives a crash. Readers (`get`, `list`) take no lock;
/// writers hold the key's lock from the check to the rename. Advisory locks work between
/// processes on one machine; they are not reliable on network file systems.
///
/// `list` reads every record file's envelope: a file too damaged to say which key it holds
/// fails every listing (with [`ErrorKind::Corrupt`]) until it is repaired or removed, rather
/// than silently hiding a tenant. `get` on other keys is unaffected.
///
/// Operations run on tokio's blocking thread pool, so a tokio runtime must be running.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> sfauth_storage::Result<()> {
/// use sfauth_storage::{FileStore, Key, Keyring, ListQuery, TokenStore};
///
/// let dir = std::env::temp_dir().join(format!("sfauth-doc-{}", std::process::id()));
/// let store = FileStore::open(&dir, Keyring::new(Key::generate()))?;
/// assert!(store.list(&ListQuery::new()).await?.records.is_empty());
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    keyring: Keyring,
}

/// What `H.rec` holds.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    format: u32,
    key: String,
    version: u64,
    status: StatusKind,
    key_id: String,
    sealed: String,
}

/// What `H.lease` holds.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseFile {
    key: String,
    #[serde(flatten)]
    state: LeaseState,
}

fn io(what: &str, path: &Path, error: std::io::Error) -> Error {
    Error::io(format!("{what} {}", path.display()), error)
}

impl FileStore {
    /// Opens the store in `dir`, creating it (mode 0700, parents too) if missing.
    pub fn open(dir: impl AsRef<Path>, keyring: Keyring) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        create_private_dir(&dir)?;
        let meta = fs::metadata(&dir).map_err(|e| io("reading", &dir, e))?;
        if !meta.is_dir() {
            return Err(Error::config(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), "token directory is open to group or others");
        }
        Ok(Self {
            inner: Arc::new(Inner { dir, keyring }),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The path of the record file for `key` (for backups and tests).
    pub fn record_path(&self, key: &TokenKey) -> PathBuf {
        self.inner.path(&key.to_string(), RECORD)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|e| Error::with_source(ErrorKind::Backend, "file store task failed", e))?
    }
}

impl Inner {
    fn path(&self, key: &str, extension: &str) -> PathBuf {
        let digest = Sha256::digest(key.as_bytes());
        let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.{extension}"))
    }

    /// Holds the key's advisory lock until the returned file is dropped.
    fn lock(&self, key: &str) -> Result<fs::File> {
        let path = self.path(key, LOCK);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io("opening lock", &path, e))?;
        file.lock().map_err(|e| io("locking", &path, e))?;
        Ok(file)
    }

    /// Replaces `path` with `bytes`: temp file, sync, rename, sync the directory.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = write_temp(&self.dir, &name, bytes).map_err(|e| io("writing", path, e))?;
        if let Err(e) = fs::rename(&temp, path) {
            let _ = fs::remove_file(&temp);
            return Err(io("writing", path, e));
        }
        sync_dir(&self.dir)
    }

    fn read_envelope(&self, path: &Path) -> Result<Option<Envelope>> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == IoErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("reading", path, e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|_| Error::corrupt(format!("record file {} does not decode", path.display())))
    }

    fn decode(&self, key: &str, envelope: &Envelope) -> Result<TokenRecord> {
        if envelope.format != 1 || envelope.key != key {
            return Err(Error::corrupt(format!(
                "record file for {key} is not for it"
            )));
        }
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&envelope.sealed)
            .map_err(|_| Error::corrupt(format!("record for {key} is damaged")))?;
        let record = open_record(&self.keyring, key, envelope.version, &sealed)?;
        if record.status.kind() != envelope.status || blob_key_id(&sealed)? != envelope.key_id {
            return Err(Error::corrupt(format!(
                "record file for {key} contradicts itself"
            )));
        }
        Ok(record)
    }

    fn encode(&self, record: &TokenRecord, version: u64) -> Result<Vec<u8>> {
        let sealed = seal_record(&self.keyring, record, version)?;
        let envelope = Envelope {
            format: 1,
            key: record.key.to_string(),
            version,
            status: record.status.kind(),
            key_id: self.keyring.current_key_id().to_owned(),
            sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
        };
        serde_json::to_vec(&envelope)
            .map_err(|e| Error::with_source(ErrorKind::Backend, "encoding record file", e))
    }

    fn read_lease(&self, key: &str) -> Result<LeaseState> {
        let path = self.path(key, LEASE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == IoErrorKind::NotFound => return Ok(LeaseState::default()),
            Err(e) => return Err(io("reading", &path, e)),
        };
        // A damaged lease file is an error, never a reset: resetting would reuse fences.
        let file: LeaseFile = serde_json::from_slice(&bytes)
            .map_err(|_| Error::corrupt(format!("lease file for {key} does not decode")))?;
        if file.key != key {
            return Err(Error::corrupt(format!(
                "lease file for {key} is not for it"
            )));
        }
        Ok(file.state)
    }

    fn write_lease(&self, key: &str, state: LeaseState) -> Result<()> {
        let bytes = serde_json::to_vec(&LeaseFile {
            key: key.to_owned(),
            state,
        })
        .map_err(|e| Error::with_source(ErrorKind::Backend, "encoding lease file", e))?;
        self.write_atomic(&self.path(key, LEASE), &bytes)
    }
}

#[async_trait]
impl TokenStore for FileStore {
    async fn get(&self, key: &TokenKey) -> Result<Option<TokenRecord>> {
        let name = key.to_string();
        self.blocking(move |inner| {
            inner
                .read_envelope(&inner.path(&name, RECORD))?
                .map(|envelope| inner.decode(&name, &envelope))
                .transpose()
        })
        .await
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        self.list_entries(query).await?.into_page()
    }

    async fn list_entries(&self, query: &ListQuery) -> Result<EntryPage> {
        let query = query.clone();
        self.blocking(move |inner| {
            let limit = query.effective_limit();
            let entries = fs::read_dir(&inner.dir).map_err(|e| io("listing", &inner.dir, e))?;
            let mut matches = Vec::new();
            for entry in entries {
                let path = entry.map_err(|e| io("listing", &inner.dir, e))?.path();
                if path.extension().is_none_or(|ext| ext != RECORD) {
                    continue;
                }
                // A file can vanish between listing and reading (a delete).
                let Some(envelope) = inner.read_envelope(&path)? else {
                    continue;
                };
                let key: TokenKey = envelope.key.parse().map_err(|_| {
                    Error::corrupt(format!("record file {} has a bad key", path.display()))
                })?;
                if query.is_after_cursor(&envelope.key) && query.matches(&key, envelope.status) {
                    matches.push((key, envelope));
                }
            }
            matches.sort_by(|a, b| a.1.key.cmp(&b.1.key));
            matches.truncate(limit.saturating_add(1));
            let entries = matches
                .into_iter()
                .map(|(key, envelope)| {
                    let record = inner.decode(&envelope.key, &envelope);
                    ListEntry::new(key, record)
                })
                .collect();
            Ok(EntryPage::from_matches(entries, limit))
        })
        .await
    }

    async fn insert(&self, record: TokenRecord) -> Result<u64> {
        self.blocking(move |inner| {
            let name = record.key.to_string();
            let _lock = inner.lock(&name)?;
            let path = inner.path(&name, RECORD);
            if path.exists() {
                return Err(Error::conflict(format!(
                    "a record for {name} already exists"
                )));
            }
            let bytes = inner.encode(&record, 1)?;
            inner.write_atomic(&path, &bytes)?;
            Ok(1)
        })
        .await
    }

    async fn put<'a>(
        &self,
        record: TokenRecord,
        expected_version: u64,
        lease: Option<&'a Lease>,
    ) -> Result<u64> {
        let lease = lease.cloned();
        self.blocking(move |inner| {
            let name = record.key.to_string();
            let _lock = inner.lock(&name)?;
            let path = inner.path(&name, RECORD);
            let current = inner
                .read_envelope(&path)?
                .ok_or_else(|| Error::not_found(&name))?;
            if current.version != expected_version {
                return Err(Error::stale(&name, current.version, expected_version));
            }
            if !inner.keyring.knows(&current.key_id) {
                return Err(Error::unknown_key(&name, &current.key_id));
            }
            if let Some(lease) = &lease {
                check_key(lease, &record.key)?;
                if !inner
                    .read_lease(&name)?
                    .is_current(lease, SystemTime::now())
                {
                    return Err(Error::lease_lost(&name));
                }
            }
            let version = next_version(expected_version)?;
            let bytes = inner.encode(&record, version)?;
            inner.write_atomic(&path, &bytes)?;
            Ok(version)
        })
        .await
    }

    async fn delete(&self, key: &TokenKey, expected_version: Option<u64>) -> Result<bool> {
        let name = key.to_string();
        self.blocking(move |inner| {
            let _lock = inner.lock(&name)?;
            let path = inner.path(&name, RECORD);
            if let Some(expected) = expected_version {
                match inner.read_envelope(&path)? {
                    None => return Ok(false),
                    Some(current) if current.version != expected => {
                        return Err(Error::stale(&name, current.version, expected));
                    }
                    Some(_) => {}
                }
            }
            match fs::remove_file(&path) {
                Ok(()) => {
                    sync_dir(&inner.dir)?;
                    Ok(true)
                }
                Err(e) if e.kind() == IoErrorKind::NotFound => Ok(false),
                Err(e) => Err(io("deleting", &path, e)),
            }
        })
        .await
    }

    async fn try_acquire(
        &self,
        key: &TokenKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        let key = key.clone();
        let holder = holder.to_owned();
        self.blocking(move |inner| {
            // LeaseState::try_acquire checks this too; checking first refuses a bad holder
            // before creating the key's lock file or reading a lease file that may be damaged.
            crate::lease::check_holder(&holder)?;
            let name = key.to_string();
            let _lock = inner.lock(&name)?;
            let mut state = inner.read_lease(&name)?;
            let lease = state.try_acquire(&key, &holder, ttl, SystemTime::now())?;
            if lease.is_some() {
                inner.write_lease(&name, state)?;
            }
            Ok(lease)
        })
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let lease = lease.clone();
        self.blocking(move |inner| {
            let name = lease.key.to_string();
            let _lock = inner.lock(&name)?;
            let mut state = inner.read_lease(&name)?;
            if state.release(&lease) {
                inner.write_lease(&name, state)?;
            }
            Ok(())
        })
        .await
    }

    async fn lease(&self, key: &TokenKey) -> Result<Option<Lease>> {
        let key = key.clone();
        // No lock: lease files are replaced by rename, so a reader sees one whole version.
        self.blocking(move |inner| {
            Ok(inner
                .read_lease(&key.to_string())?
                .current_lease(&key, SystemTime::now()))
        })
        .await
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        let lease = lease.clone();
        self.blocking(move |inner| {
            let name = lease.key.to_string();
            let _lock = inner.lock(&name)?;
            let mut state = inner.read_lease(&name)?;
            let renewed = state.renew(&lease, ttl, SystemTime::now())?;
            if renewed.is_some() {
                inner.write_lease(&name, state)?;
            }
            Ok(renewed)
        })
        .await
    }

    async fn take_over(&self, stale: &Lease, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        let stale = stale.clone();
        let holder = holder.to_owned();
        self.blocking(move |inner| {
            crate::lease::check_holder(&holder)?;
            let name = stale.key.to_string();
            let _lock = inner.lock(&name)?;
            let mut state = inner.read_lease(&name)?;
            let taken = state.take_over(&stale, &holder, ttl, SystemTime::now())?;
            if taken.is_some() {
                inner.write_lease(&name, state)?;
            }
            Ok(taken)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use sfauth_core::{AccessToken, LoginHost, TokenSet};

    use super::*;
    use crate::crypto::Key;

    fn record() -> TokenRecord {
        let identity = "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK"
            .parse()
            .unwrap();
        let tokens = TokenSet::new(
            AccessToken::new("token"),
            "https://acme.my.salesforce.com".parse().unwrap(),
            identity,
        );
        let key = TokenKey::new(&LoginHost::Production, &tokens.identity, "client", "a");
        TokenRecord::new(key, tokens, UNIX_EPOCH)
    }

    /// A record file at the end of the version counter (properly sealed there, so only a
    /// writer holding the key made it) reads, and a write over it is `Corrupt`, not a wrapped
    /// version or a panic, and changes nothing.
    #[tokio::test]
    async fn a_record_at_the_end_of_its_version_counter_is_not_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), Keyring::new(Key::generate())).unwrap();
        let record = record();
        let path = store.record_path(&record.key);
        let bytes = store.inner.encode(&record, u64::MAX).unwrap();
        store.inner.write_atomic(&path, &bytes).unwrap();
        let stored = store.get(&record.key).await.unwrap().unwrap();
        assert_eq!(stored.version, u64::MAX);
        let error = store.put(stored, u64::MAX, None).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Corrupt);
        assert_eq!(fs::read(&path).unwrap(), bytes, "nothing written");
    }
}
