//! Encryption at rest: [`Key`] and [`Keyring`], and the sealed-record format that the file and
//! SQLite backends share.
//!
//! The format and the error rules are on [`Keyring`].

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sfauth_core::TokenSet;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, ErrorKind, Result};
use crate::record::{InFlight, Metadata, RecordStatus, RenewalHint, TokenRecord, clamp_decoded};

const MAGIC: &[u8; 4] = b"sfs1";
const NONCE_LEN: usize = 24;
/// Poly1305's tag, at the end of every ciphertext.
const TAG_LEN: usize = 16;

/// One 256-bit encryption key and its id. The bytes are zeroized on drop and never shown by
/// `Debug`.
pub struct Key {
    id: String,
    bytes: Zeroizing<[u8; 32]>,
}

impl Key {
    /// The key made of `bytes`; its id is their fingerprint.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let bytes = Zeroizing::new(bytes);
        let digest = Sha256::new()
            .chain_update(b"sfauth-storage key id v1\0")
            .chain_update(bytes.as_slice())
            .finalize();
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Self { id, bytes }
    }

    /// A new random key.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(bytes.as_mut_slice());
        Self::from_bytes(*bytes)
    }

    /// The key written as standard base64 of 32 bytes (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self> {
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| Error::config("encryption key is not valid base64"))?,
        );
        let bytes: [u8; 32] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| Error::config("encryption key must be 32 bytes"))?;
        Ok(Self::from_bytes(bytes))
    }

    /// The key in the environment variable `var`, as base64.
    pub fn from_env(var: &str) -> Result<Self> {
        let value = Zeroizing::new(
            std::env::var(var)
                .map_err(|_| Error::config(format!("environment variable {var} is not set")))?,
        );
        Self::from_base64(&value)
    }

    /// The key in the file at `path`, as base64.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = Zeroizing::new(
            fs::read_to_string(path)
                .map_err(|e| Error::io(format!("reading key file {}", path.display()), e))?,
        );
        if let Ok(meta) = fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "key file is readable by group or others");
        }
        Self::from_base64(&text)
    }

    /// The key in the file at `path`; if there is no such file, a new random key written there
    /// (mode 0600, parent directories created 0700). Safe against a concurrent creator: the
    /// file appears whole or not at all, and the first writer wins.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        match Self::from_file(path) {
            Err(error) if error.kind() == ErrorKind::Io && !path.exists() => {}
            other => return other,
        }
        let dir = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        let key = Self::generate();
        let text = Zeroizing::new(format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(key.bytes.as_slice())
        ));
        let linked = write_temp(dir, "key", text.as_bytes()).and_then(|temp| {
            // A hard link never replaces an existing file: a concurrent creator's key wins.
            let linked = fs::hard_link(&temp, path);
            let _ = fs::remove_file(&temp);
            linked
        });
        match linked {
            Ok(()) => {
                sync_dir(dir)?;
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::from_file(path),
            Err(e) => Err(Error::io(
                format!("creating key file {}", path.display()),
                e,
            )),
        }
    }

    /// The key's id: a fingerprint, safe to show.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key as base64, to write it somewhere safe. Handle the result as a secret.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.bytes.as_slice()))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.bytes.as_slice().into())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("bytes", &sfauth_core::secret::REDACTED)
            .finish()
    }
}

/// The keys a store encrypts with: the current one, which seals every write, and old ones that
/// still open records written before a rotation. Cheap to clone.
///
/// Key sources: [`Keyring::from_env`] (base64 in an environment variable),
/// [`Keyring::from_key_file`] (a file created 0600 with a random key if missing), or
/// [`Key::from_bytes`] for a key the caller keeps elsewhere (a secret manager). Key bytes are
/// zeroized on drop and never printed.
///
/// # Format
///
/// A record's contents (the [`TokenSet`](sfauth_core::TokenSet) with its secrets, and the
/// record's metadata) are serialized to JSON and sealed with XChaCha20-Poly1305 under a random
/// 24-byte nonce. The associated data binds the blob to its key's string form and its version,
/// so a blob copied to another key, or replayed at another version, fails to open. A blob is
///
/// ```text
/// "sfs1" | key id length (1 byte) | key id | nonce (24 bytes) | ciphertext and tag
/// ```
///
/// A key's id is a fingerprint of the key (16 hex digits of a SHA-256 over it), so the id says
/// which key a record needs without revealing it, and a known id with a failing tag means the
/// blob was damaged, not that the key is wrong:
///
/// - unknown key id → [`ErrorKind::WrongKey`];
/// - bad header, failing tag, undecodable contents → [`ErrorKind::Corrupt`].
///
/// Rotation: a [`Keyring`] seals with its current key and opens with the current key or any old
/// one, and backends seal every write afresh, so records move to the new key as they are
/// written.///
/// ```
/// use sfauth_storage::{Key, Keyring};
///
/// let old = Key::generate();
/// let new = Key::generate();
/// let keyring = Keyring::new(new).with_old_key(old);
/// assert_eq!(keyring.key_ids().count(), 2);
/// assert!(!format!("{keyring:?}").contains(&*Key::generate().to_base64()));
/// ```
#[derive(Clone)]
pub struct Keyring {
    current: Arc<Key>,
    old: Vec<Arc<Key>>,
}

impl Keyring {
    /// A keyring sealing with `current`.
    pub fn new(current: Key) -> Self {
        Self {
            current: Arc::new(current),
            old: Vec::new(),
        }
    }

    /// Also opens records sealed with `key` (a key rotated out).
    pub fn with_old_key(mut self, key: Key) -> Self {
        if !self.knows(&key.id) {
            self.old.push(Arc::new(key));
        }
        self
    }

    /// Also opens records sealed with any key of `other` (the keyring before a rotation).
    pub fn with_old_keyring(mut self, other: &Keyring) -> Self {
        for key in std::iter::once(&other.current).chain(&other.old) {
            if !self.knows(&key.id) {
                self.old.push(Arc::clone(key));
            }
        }
        self
    }

    /// A keyring with the key in environment variable `var` (base64).
    pub fn from_env(var: &str) -> Result<Self> {
        Key::from_env(var).map(Self::new)
    }

    /// A keyring with the key in the file at `path`, created with a random key if missing; see
    /// [`Key::load_or_create`].
    pub fn from_key_file(path: &Path) -> Result<Self> {
        Key::load_or_create(path).map(Self::new)
    }

    /// The id of the key that seals writes.
    pub fn current_key_id(&self) -> &str {
        &self.current.id
    }

    /// The ids of every key, current first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.current.id.as_str()).chain(self.old.iter().map(|key| key.id.as_str()))
    }

    /// Whether this keyring can open a blob sealed with key `id`.
    pub fn knows(&self, id: &str) -> bool {
        self.key_ids().any(|known| known == id)
    }

    fn key(&self, id: &str) -> Option<&Key> {
        std::iter::once(&self.current)
            .chain(&self.old)
            .find(|key| key.id == id)
            .map(|key| &**key)
    }

    /// Seals `plaintext` with the current key, bound to `aad`.
    pub(crate) fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .current
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| Error::new(ErrorKind::Backend, "encryption failed"))?;
        let id = self.current.id.as_bytes();
        let mut blob = Vec::with_capacity(
            [MAGIC.len(), 1, id.len(), NONCE_LEN, ciphertext.len()]
                .into_iter()
                .fold(0, usize::saturating_add),
        );
        blob.extend_from_slice(MAGIC);
        blob.push(u8::try_from(id.len()).map_err(|_| Error::config("key id is too long"))?);
        blob.extend_from_slice(id);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        Ok(blob)
    }

    /// Opens a blob from [`Keyring::seal`] with the same `aad`.
    pub(crate) fn open(&self, aad: &[u8], blob: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let (id, nonce, ciphertext) = split_blob(blob)?;
        let key = self.key(id).ok_or_else(|| {
            Error::new(
                ErrorKind::WrongKey,
                format!("record is sealed with key {id}, which the keyring does not hold"),
            )
        })?;
        key.cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| Error::corrupt("record failed authentication: damaged or tampered with"))
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.id)
            .field(
                "old",
                &self.old.iter().map(|key| &key.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The id of the key that sealed `blob`, checking the header and the length.
pub(crate) fn blob_key_id(blob: &[u8]) -> Result<&str> {
    split_blob(blob).map(|(id, _, _)| id)
}

/// A blob's key id, nonce and ciphertext (with its tag), checking the header and the length.
fn split_blob(blob: &[u8]) -> Result<(&str, &[u8], &[u8])> {
    let damaged = || Error::corrupt("sealed record header is damaged");
    let rest = blob.strip_prefix(MAGIC.as_slice()).ok_or_else(damaged)?;
    let (&len, rest) = rest.split_first().ok_or_else(damaged)?;
    let (id, rest) = rest
        .split_at_checked(usize::from(len))
        .ok_or_else(damaged)?;
    let (nonce, ciphertext) = rest.split_at_checked(NONCE_LEN).ok_or_else(damaged)?;
    // At least a tag must follow.
    if ciphertext.len() < TAG_LEN {
        return Err(damaged());
    }
    let id = std::str::from_utf8(id).map_err(|_| damaged())?;
    Ok((id, nonce, ciphertext))
}

/// The record format this version writes when a record needs it, and the newest it reads.
///
/// Format 1 is the body before [`Metadata`] existed; a record without metadata is still
/// written as format 1 (no `format` field), so that older versions keep reading it. Format 2
/// adds `metadata`. Older versions deny unknown fields, so they refuse a format-2 record as
/// undecodable instead of dropping its metadata on their next write.
pub(crate) const RECORD_FORMAT: u32 = 2;

fn is_format_1(format: &u32) -> bool {
    *format == 1
}

fn format_1() -> u32 {
    1
}

/// What is sealed: the record without its version (which is bound as associated data instead).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(default = "format_1", skip_serializing_if = "is_format_1")]
    format: u32,
    key: String,
    tokens: TokenSet,
    status: RecordStatus,
    issued_at: SystemTime,
    last_refreshed_at: Option<SystemTime>,
    refresh_count: u64,
    learned_lifetime: Option<Duration>,
    refresh_in_flight: Option<InFlight>,
    /// Absent in records sealed before it existed. Not written when `None`, so a record
    /// without one stays readable by those versions too (the body denies unknown fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    renewal: Option<RenewalHint>,
    /// Format 2 on: absent when empty.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    metadata: Metadata,
}

fn aad(key: &str, version: u64) -> Vec<u8> {
    format!("sfauth-storage record v1\0{key}\0{version}").into_bytes()
}

/// Seals `record` as stored under its key at `version`.
pub(crate) fn seal_record(
    keyring: &Keyring,
    record: &TokenRecord,
    version: u64,
) -> Result<Vec<u8>> {
    let key = record.key.to_string();
    let body = Body {
        format: if record.metadata.is_empty() {
            1
        } else {
            RECORD_FORMAT
        },
        key: key.clone(),
        tokens: record.tokens.clone(),
        status: record.status.clone(),
        issued_at: record.issued_at,
        last_refreshed_at: record.last_refreshed_at,
        refresh_count: record.refresh_count,
        learned_lifetime: record.learned_lifetime,
        refresh_in_flight: record.refresh_in_flight.clone(),
        renewal: record.renewal.clone(),
        metadata: record.metadata.clone(),
    };
    let plaintext = Zeroizing::new(
        serde_json::to_vec(&body)
            .map_err(|e| Error::with_source(ErrorKind::Backend, "encoding record", e))?,
    );
    keyring.seal(&aad(&key, version), &plaintext)
}

/// Opens a blob stored under the key string `key` at `version`.
pub(crate) fn open_record(
    keyring: &Keyring,
    key: &str,
    version: u64,
    blob: &[u8],
) -> Result<TokenRecord> {
    let plaintext = keyring.open(&aad(key, version), blob)?;
    // serde_json's error can quote the input, which holds secrets: drop it.
    let body: Body = serde_json::from_slice(&plaintext)
        .map_err(|_| Error::corrupt(format!("record for {key} does not decode")))?;
    if body.format > RECORD_FORMAT {
        return Err(Error::corrupt(format!(
            "record for {key} has format {}, newer than this version reads ({RECORD_FORMAT}): \
             upgrade sfauth to read it",
            body.format
        )));
    }
    if !body.metadata.is_within_limits() {
        return Err(Error::corrupt(format!(
            "record for {key} holds metadata beyond the limits"
        )));
    }
    if body.key != key {
        return Err(Error::corrupt(format!(
            "record for {key} holds another key"
        )));
    }
    let parsed = key
        .parse()
        .map_err(|_| Error::corrupt(format!("stored key {key} does not parse")))?;
    let mut record = TokenRecord {
        key: parsed,
        tokens: body.tokens,
        status: body.status,
        issued_at: body.issued_at,
        last_refreshed_at: body.last_refreshed_at,
        refresh_count: body.refresh_count,
        learned_lifetime: body.learned_lifetime,
        refresh_in_flight: body.refresh_in_flight,
        renewal: body.renewal,
        metadata: body.metadata,
        version,
    };
    clamp_decoded(&mut record);
    Ok(record)
}

/// The metadata a database backend keeps in clear beside a sealed record, for its listing
/// filters and the checks of a compare-and-swap. None of it is secret.
#[cfg(any(feature = "sqlite", feature = "redis", feature = "postgres"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClearFields<'a> {
    pub(crate) org_id: &'a str,
    pub(crate) user_id: &'a str,
    pub(crate) client_id: &'a str,
    /// [`StatusKind::as_str`](crate::StatusKind::as_str).
    pub(crate) status: &'a str,
    /// The id of the key that sealed the record.
    pub(crate) key_id: &'a str,
}

#[cfg(any(feature = "sqlite", feature = "redis", feature = "postgres"))]
impl<'a> ClearFields<'a> {
    /// The fields to store beside `record` sealed with the key `key_id`.
    pub(crate) fn of(record: &'a TokenRecord, key_id: &'a str) -> Self {
        Self {
            org_id: record.key.org_id().as_str(),
            user_id: record.key.user_id().as_str(),
            client_id: record.key.client_id(),
            status: record.status.kind().as_str(),
            key_id,
        }
    }
}

/// Opens a blob stored under the key string `key` at `version`, checking the `clear` fields
/// stored beside it against the sealed record: a field that lies would hide a readable record
/// from a filtered listing, or make it impossible to write.
#[cfg(any(feature = "sqlite", feature = "redis", feature = "postgres"))]
pub(crate) fn open_checked(
    keyring: &Keyring,
    key: &str,
    version: u64,
    blob: &[u8],
    clear: &ClearFields<'_>,
) -> Result<TokenRecord> {
    let record = open_record(keyring, key, version, blob)?;
    if ClearFields::of(&record, blob_key_id(blob)?) != *clear {
        return Err(Error::corrupt(format!(
            "the stored fields of {key} contradict its sealed record"
        )));
    }
    Ok(record)
}

/// Creates `dir` and its missing parents with mode 0700.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("creating directory {}", dir.display()), e))
}

/// Writes `bytes` to a new synced file in `dir` (mode 0600, a random name from `stem`) and
/// returns its path, for the caller to link or rename into place: a file appears at its final
/// name whole or not at all. On failure the temporary file is removed.
pub(crate) fn write_temp(dir: &Path, stem: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let temp = dir.join(format!(".{stem}.{:016x}.tmp", rand::rng().next_u64()));
    let write = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    match write() {
        Ok(()) => Ok(temp),
        Err(e) => {
            let _ = fs::remove_file(&temp);
            Err(e)
        }
    }
}

/// Flushes a directory's entries (a rename or link in it) to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    reason = "test values are small constants"
)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_failures() {
        let keyring = Keyring::new(Key::generate());
        let blob = keyring.seal(b"aad", b"hello secret").unwrap();
        assert!(!blob.windows(6).any(|w| w == b"secret"));
        assert_eq!(&keyring.open(b"aad", &blob).unwrap()[..], b"hello secret");
        assert_eq!(
            keyring.open(b"other", &blob).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        let mut flipped = blob.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(
            keyring.open(b"aad", &flipped).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        assert_eq!(
            keyring
                .open(b"aad", &blob[..blob.len() / 2])
                .unwrap_err()
                .kind(),
            ErrorKind::Corrupt
        );
        let other = Keyring::new(Key::generate());
        assert_eq!(
            other.open(b"aad", &blob).unwrap_err().kind(),
            ErrorKind::WrongKey
        );
        let rotated = Keyring::new(Key::generate())
            .with_old_key(Key::from_base64(&Key::generate().to_base64()).unwrap());
        assert_eq!(rotated.key_ids().count(), 2);
    }

    #[test]
    fn key_ids_are_stable_fingerprints_and_debug_hides_bytes() {
        let a = Key::from_bytes([7; 32]);
        let b = Key::from_base64(&a.to_base64()).unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(a.id().len(), 16);
        assert_ne!(a.id(), Key::from_bytes([8; 32]).id());
        let debug = format!("{a:?} {:?}", Keyring::new(b));
        assert!(!debug.contains(&*a.to_base64()) && debug.contains("[redacted]"));
        assert_eq!(
            Key::from_base64("c2hvcnQ=").unwrap_err().kind(),
            ErrorKind::Config
        );
    }

    #[test]
    fn key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/key");
        let created = Key::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        let left: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(left, ["key"], "the temporary file is gone");
        let loaded = Keyring::from_key_file(&path).unwrap();
        assert_eq!(loaded.current_key_id(), created.id());
    }

    fn record() -> TokenRecord {
        use sfauth_core::{AccessToken, LoginHost, TokenKey};
        let identity: sfauth_core::IdentityUrl =
            "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK"
                .parse()
                .unwrap();
        let mut tokens = TokenSet::new(
            AccessToken::new("00D5e000000AbcdEAC!AQ4AQ"),
            "https://acme.my.salesforce.com".parse().unwrap(),
            identity.clone(),
        );
        tokens.expires_at = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_007_200));
        let key = TokenKey::new(&LoginHost::Production, &identity, "client", "label");
        let mut record = TokenRecord::new(
            key,
            tokens,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
        record.last_refreshed_at = Some(record.issued_at);
        record.learned_lifetime = Some(Duration::from_secs(7200));
        record.refresh_in_flight = Some(InFlight {
            holder: "h".to_owned(),
            fence: 1,
            since: record.issued_at,
        });
        record
    }

    /// Seals `record` at `version` after `edit` changed its stored JSON: what a record holding
    /// numbers this crate never writes looks like, properly sealed.
    fn sealed_with(
        keyring: &Keyring,
        record: &TokenRecord,
        version: u64,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> Vec<u8> {
        let key = record.key.to_string();
        let blob = seal_record(keyring, record, version).unwrap();
        let plain = keyring.open(&aad(&key, version), &blob).unwrap();
        let mut body: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        edit(&mut body);
        keyring
            .seal(&aad(&key, version), &serde_json::to_vec(&body).unwrap())
            .unwrap()
    }

    #[test]
    fn huge_stored_numbers_decode_clamped_or_corrupt_never_panic() {
        use serde_json::json;
        let keyring = Keyring::new(Key::generate());
        let record = record();
        let key = record.key.to_string();
        let open = |blob: &[u8], version| open_record(&keyring, &key, version, blob);
        let max_time = SystemTime::UNIX_EPOCH + crate::record::MAX_STORED_TIME;

        // Beyond what `SystemTime` holds: the record does not decode, as a typed error.
        let beyond = sealed_with(&keyring, &record, 1, |body| {
            body["issued_at"] = json!({"secs_since_epoch": u64::MAX, "nanos_since_epoch": 0});
        });
        assert_eq!(open(&beyond, 1).unwrap_err().kind(), ErrorKind::Corrupt);
        let beyond = sealed_with(&keyring, &record, 1, |body| {
            body["learned_lifetime"] = json!({"secs": u64::MAX, "nanos": 1_000_000_000});
        });
        assert_eq!(open(&beyond, 1).unwrap_err().kind(), ErrorKind::Corrupt);

        // Representable but absurd: clamped, so that later arithmetic cannot overflow.
        let far = json!({"secs_since_epoch": i64::MAX, "nanos_since_epoch": 999_999_999});
        let absurd = sealed_with(&keyring, &record, u64::MAX, |body| {
            body["issued_at"] = far.clone();
            body["last_refreshed_at"] = far.clone();
            body["refresh_in_flight"]["since"] = far.clone();
            body["refresh_in_flight"]["fence"] = json!(u64::MAX);
            body["status"] = json!({"status": "reauth_required", "reason": "r", "since": far});
            body["refresh_count"] = json!(u64::MAX);
            body["learned_lifetime"] = json!({"secs": u64::MAX, "nanos": 0});
            body["tokens"]["issued_at"] = json!(u64::MAX);
            body["tokens"]["expires_at"] = json!(u64::MAX);
        });
        let decoded = open(&absurd, u64::MAX).unwrap();
        assert_eq!(decoded.version, u64::MAX);
        assert_eq!(decoded.issued_at, max_time);
        assert_eq!(decoded.last_refreshed_at, Some(max_time));
        assert_eq!(decoded.tokens.issued_at, Some(max_time));
        assert_eq!(decoded.tokens.expires_at, Some(max_time));
        let in_flight = decoded.refresh_in_flight.unwrap();
        assert_eq!((in_flight.since, in_flight.fence), (max_time, u64::MAX));
        assert!(matches!(
            decoded.status,
            RecordStatus::ReauthRequired { since, .. } if since == max_time
        ));
        assert_eq!(decoded.refresh_count, u64::MAX);
        assert_eq!(
            decoded.learned_lifetime,
            Some(crate::record::MAX_STORED_LIFETIME)
        );
        // The bounds leave room for the arithmetic a caller does on them.
        assert!(
            max_time
                .checked_add(crate::record::MAX_STORED_LIFETIME * 1000)
                .is_some()
        );

        // Times within the bounds are kept to the nanosecond.
        let exact = open(&seal_record(&keyring, &record, 7).unwrap(), 7).unwrap();
        let mut expected = record.clone();
        expected.version = 7;
        assert_eq!(exact, expected);
    }

    #[test]
    fn a_record_without_a_hint_is_sealed_as_before() {
        // Versions before `renewal` existed deny unknown fields in the sealed body: a record
        // without a hint must not carry the field, or they could no longer read it.
        let keyring = Keyring::new(Key::generate());
        let mut record = record();
        let key = record.key.to_string();
        let body = |record: &TokenRecord| {
            let blob = seal_record(&keyring, record, 1).unwrap();
            let plain = keyring.open(&aad(&key, 1), &blob).unwrap();
            serde_json::from_slice::<serde_json::Value>(&plain).unwrap()
        };
        assert!(body(&record).get("renewal").is_none());
        record.renewal = Some(RenewalHint::username_password("u@example.com"));
        assert_eq!(
            body(&record)["renewal"],
            serde_json::json!({"flow": "username_password", "username": "u@example.com"})
        );
        assert!(
            body(&record).get("format").is_none(),
            "no metadata: format 1"
        );
    }

    #[test]
    fn metadata_makes_a_format_2_record_and_newer_formats_are_refused() {
        let keyring = Keyring::new(Key::generate());
        let mut record = record();
        record.metadata.set("flow", "web").unwrap();
        record
            .metadata
            .set_secret("client_secret", "s3cr3t-value")
            .unwrap();
        let key = record.key.to_string();
        let blob = seal_record(&keyring, &record, 1).unwrap();
        let plain = keyring.open(&aad(&key, 1), &blob).unwrap();
        let mut body: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(body["format"], 2);
        assert_eq!(body["metadata"]["settings"]["flow"], "web");
        assert!(!String::from_utf8_lossy(&blob).contains("s3cr3t-value"));
        let opened = open_record(&keyring, &key, 1, &blob).unwrap();
        assert_eq!(opened.metadata, record.metadata);

        // A body as versions before metadata sealed it (no `format`, no `metadata`) still
        // opens, with empty metadata.
        let mut old = body.clone();
        let old_map = old.as_object_mut().unwrap();
        old_map.remove("format");
        old_map.remove("metadata");
        let old_blob = keyring
            .seal(&aad(&key, 1), &serde_json::to_vec(&old).unwrap())
            .unwrap();
        let opened = open_record(&keyring, &key, 1, &old_blob).unwrap();
        assert!(opened.metadata.is_empty());
        assert_eq!(opened.tokens, record.tokens);

        // A record from a future format is refused by name, not misread.
        body["format"] = serde_json::json!(3);
        let future = keyring
            .seal(&aad(&key, 1), &serde_json::to_vec(&body).unwrap())
            .unwrap();
        let error = open_record(&keyring, &key, 1, &future).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Corrupt);
        assert!(error.to_string().contains("format 3"), "{error}");

        // Stored metadata beyond the limits is damage, not something to carry on.
        body["format"] = serde_json::json!(2);
        body["metadata"]["settings"]["bad name"] = serde_json::json!("x");
        let bad = keyring
            .seal(&aad(&key, 1), &serde_json::to_vec(&body).unwrap())
            .unwrap();
        assert_eq!(
            open_record(&keyring, &key, 1, &bad).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }

    #[test]
    fn key_from_env() {
        let name = "SFAUTH_STORAGE_TEST_KEY_FROM_ENV";
        assert_eq!(Key::from_env(name).unwrap_err().kind(), ErrorKind::Config);
    }
}
