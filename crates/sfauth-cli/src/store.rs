//! The token store selected by `--store`, and the per-alias settings kept in each record.
//!
//! | `--store` | backend | key file |
//! |---|---|---|
//! | (none) | SQLite at `SqliteStore::default_path()` | `tokens.db.key` beside it |
//! | `sqlite://PATH` | SQLite at `PATH` | `PATH.key` (the file's whole name, so `t.db` and `t.sqlite` never share) |
//! | `file://DIR` | `FileStore` in `DIR` | `DIR/tokens.key` |
//! | `redis://HOST`, `rediss://HOST` | `RedisStore` (see [`shared`]) | `SFAUTH_STORE_KEY` only |
//! | `postgres://HOST/DB`, `postgresql://HOST/DB` | `PostgresStore` (see [`shared`]) | `SFAUTH_STORE_KEY` only |
//!
//! `SFAUTH_STORE_KEY` (base64 of 32 bytes) replaces the key file.
//!
//! The alias is the `TokenKey` label of the stored record. What a later refresh needs and the
//! key cannot say (the login host with any overridden endpoints, the client id, the flow, the
//! username, the JWT key file's path, and the connected app's secret when one was given) is
//! kept in the record's sealed metadata, so it is written in the same compare-and-swap as the
//! tokens: parallel logins cannot lose each other's settings, and every machine sharing a store
//! sees them. A record with no such metadata (written by a program using the library) still
//! works: its host and client id come from its key.
//!
//! Earlier versions kept the settings in an alias file beside the store (`<stem>.aliases.json`,
//! `DIR/aliases.json`, or a file per shared store in the user data directory), and the key of
//! `PATH` in `<stem>.key`. Opening a store folds such an alias file into the records and renames
//! it `*.migrated`; an SQLite store that exists without `PATH.key` still opens with `<stem>.key`,
//! and a write copies it to `PATH.key`.
//!
//! Opening for reading never creates anything: a store that does not exist reads as empty, and
//! no key file is made. A store that holds logins but whose key file is gone is an error that
//! says how to fix it, never a new key.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sfauth::STORE_KEY_ENV;
use sfauth::oauth::{LoginHost, SecretValue, TokenKey, TokenSet};
use sfauth::storage::{
    ErrorKind as StoreErrorKind, FileStore, Key, Keyring, ListEntry, ListQuery, MemoryStore,
    Metadata, RecordStatus, SqliteStore, TokenRecord, TokenStore, TokenStoreExt as _,
};

use crate::error::{CliError, Result};

mod shared;

/// Whether a command only reads the store or may write it: a read never creates the store or
/// its key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// An opened store.
pub(crate) struct Store {
    pub(crate) store: Arc<dyn TokenStore>,
    /// Where the store is, for messages.
    pub(crate) location: String,
}

/// How a login was made, for the metadata and for the fix in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Flow {
    Web,
    Jwt,
    Device,
    ClientCredentials,
    Password,
    TokenExchange,
    Import,
}

impl Flow {
    /// The `sfauth` command that logs this flow in again.
    pub(crate) fn login_command(self) -> &'static str {
        match self {
            Self::Web | Self::Import => "login web",
            Self::Jwt => "login jwt",
            Self::Device => "login device",
            Self::ClientCredentials => "login client-credentials",
            Self::Password => "login password",
            Self::TokenExchange => "login token-exchange",
        }
    }
}

/// What the CLI remembers about one alias besides the stored record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AliasMeta {
    /// The record's `TokenKey`, in its string form.
    pub(crate) key: String,
    pub(crate) host: LoginHost,
    pub(crate) client_id: String,
    pub(crate) flow: Flow,
    #[serde(default)]
    pub(crate) basic_auth: bool,
    #[serde(default)]
    pub(crate) username: Option<String>,
    /// For the JWT flow: the private key file and username, to mint a new assertion.
    #[serde(default)]
    pub(crate) jwt: Option<JwtRenewal>,
}

/// Where the JWT flow's key is, to renew without a refresh token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JwtRenewal {
    pub(crate) key_file: PathBuf,
    pub(crate) username: String,
    #[serde(default)]
    pub(crate) audience: Option<String>,
}

/// The file an earlier version kept the alias settings in; read only to migrate it.
#[derive(Debug, Default, Deserialize)]
struct LegacyAliasFile {
    #[serde(default)]
    aliases: std::collections::BTreeMap<String, AliasMeta>,
}

/// One alias resolved to its record key and connection settings.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) alias: String,
    pub(crate) key: TokenKey,
    pub(crate) meta: AliasMeta,
    /// The connected app's secret stored with the login, if one was given at login.
    pub(crate) client_secret: Option<SecretValue>,
    /// The app's next secret, during a rotation, if one was given at login.
    pub(crate) next_client_secret: Option<SecretValue>,
}

// The names of the CLI's entries in a record's metadata.
const LOGIN_HOST: &str = "login_host";
const CLIENT_ID: &str = "client_id";
const FLOW: &str = "flow";
const BASIC_AUTH: &str = "basic_auth";
const USERNAME: &str = "username";
const JWT_KEY_FILE: &str = "jwt_key_file";
const JWT_USERNAME: &str = "jwt_username";
const JWT_AUDIENCE: &str = "jwt_audience";
/// The secret entry: the connected app's client secret.
const CLIENT_SECRET: &str = "client_secret";
/// The secret entry: the app's next client secret, staged during a rotation.
const NEXT_CLIENT_SECRET: &str = "next_client_secret";

impl AliasMeta {
    /// Writes these settings into `metadata`, replacing any the CLI wrote before.
    fn write_to(&self, metadata: &mut Metadata) -> Result<()> {
        for name in [
            LOGIN_HOST,
            CLIENT_ID,
            FLOW,
            BASIC_AUTH,
            USERNAME,
            JWT_KEY_FILE,
            JWT_USERNAME,
            JWT_AUDIENCE,
        ] {
            metadata.remove(name);
        }
        let host = serde_json::to_string(&self.host)
            .map_err(|e| CliError::other(format!("cannot encode the login host ({e})")))?;
        let mut entries = vec![
            (LOGIN_HOST, host),
            (CLIENT_ID, self.client_id.clone()),
            (FLOW, self.flow.name().to_owned()),
            (BASIC_AUTH, self.basic_auth.to_string()),
        ];
        entries.extend(self.username.clone().map(|u| (USERNAME, u)));
        if let Some(jwt) = &self.jwt {
            entries.push((JWT_KEY_FILE, jwt.key_file.display().to_string()));
            entries.push((JWT_USERNAME, jwt.username.clone()));
            entries.extend(jwt.audience.clone().map(|a| (JWT_AUDIENCE, a)));
        }
        for (name, value) in entries {
            metadata.set(name, value).map_err(|e| {
                CliError::usage(format!(
                    "the {name} of this login cannot be stored ({e}): shorten it"
                ))
            })?;
        }
        Ok(())
    }

    /// The settings the CLI stored in `record`, if it stored any.
    fn read_from(record: &TokenRecord) -> Option<Self> {
        let metadata = &record.metadata;
        let host: LoginHost = serde_json::from_str(metadata.get(LOGIN_HOST)?).ok()?;
        let flow = Flow::from_name(metadata.get(FLOW)?)?;
        let jwt = match (metadata.get(JWT_KEY_FILE), metadata.get(JWT_USERNAME)) {
            (Some(file), Some(username)) => Some(JwtRenewal {
                key_file: PathBuf::from(file),
                username: username.to_owned(),
                audience: metadata.get(JWT_AUDIENCE).map(str::to_owned),
            }),
            _ => None,
        };
        Some(Self {
            key: record.key.to_string(),
            host,
            client_id: metadata.get(CLIENT_ID)?.to_owned(),
            flow,
            basic_auth: metadata.get(BASIC_AUTH) == Some("true"),
            username: metadata.get(USERNAME).map(str::to_owned),
            jwt,
        })
    }
}

impl Flow {
    /// The stored name, as in the alias files of earlier versions.
    fn name(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Jwt => "jwt",
            Self::Device => "device",
            Self::ClientCredentials => "client-credentials",
            Self::Password => "password",
            Self::TokenExchange => "token-exchange",
            Self::Import => "import",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [
            Self::Web,
            Self::Jwt,
            Self::Device,
            Self::ClientCredentials,
            Self::Password,
            Self::TokenExchange,
            Self::Import,
        ]
        .into_iter()
        .find(|flow| flow.name() == name)
    }
}

/// The settings the CLI stored with `record`, if any (a record written by a program using the
/// library has none).
pub(crate) fn stored_meta(record: &TokenRecord) -> Option<AliasMeta> {
    AliasMeta::read_from(record)
}

/// The settings of `record`: those stored with it, else what its key says.
pub(crate) fn meta_of(record: &TokenRecord) -> Result<AliasMeta> {
    match AliasMeta::read_from(record) {
        Some(meta) => Ok(meta),
        None => meta_from_key(&record.key, Flow::Web),
    }
}

/// The connected app's secret stored with `record`, if any.
pub(crate) fn secret_of(record: &TokenRecord) -> Option<SecretValue> {
    record.metadata.secret(CLIENT_SECRET).map(SecretValue::new)
}

/// The app's next secret stored with `record` during a rotation, if any.
pub(crate) fn next_secret_of(record: &TokenRecord) -> Option<SecretValue> {
    record
        .metadata
        .secret(NEXT_CLIENT_SECRET)
        .map(SecretValue::new)
}

/// Fails when the nearest existing one of `dir` and its ancestors is not a directory: then no
/// store in `dir` can ever be created, and a read must not show it as the empty store that a
/// first login would make (it is exit 1, as a write there would fail).
fn not_under_a_file(dir: &Path, location: &str) -> Result<()> {
    for ancestor in dir.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        match std::fs::metadata(ancestor) {
            Ok(meta) if meta.is_dir() => return Ok(()),
            Ok(_) => {
                return Err(CliError::other(format!(
                    "the token store at {location} can never exist: {} is not a directory, so creating directory {} for it fails; point --store at a path inside a directory",
                    ancestor.display(),
                    dir.display()
                )));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) => {}
            // Unreadable (permissions): the store's own open says what is wrong.
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// Where an SQLite store's key lives: the database file's whole name plus `.key`.
fn sqlite_key_file(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".key");
    path.with_file_name(name)
}

/// `<stem>.<suffix>` beside `path`: where earlier versions kept the key and the alias file.
fn stem_file(path: &Path, suffix: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tokens".to_owned());
    path.with_file_name(format!("{stem}.{suffix}"))
}

impl Store {
    /// Opens the store named by `url` (`None`: the default SQLite store).
    pub(crate) async fn open(url: Option<&str>, access: Access) -> Result<Self> {
        let url = url.map(str::trim).filter(|u| !u.is_empty());
        let (scheme, rest) = match url {
            None => ("sqlite", None),
            Some(url) => match url.split_once("://") {
                Some((scheme, rest)) => (scheme, Some(rest)),
                None => {
                    return Err(CliError::usage(format!(
                        "--store {url} is not a store URL: use sqlite://PATH, file://DIR, redis://HOST or postgres://HOST/DB"
                    )));
                }
            },
        };
        let (opened, legacy_aliases) = match scheme {
            "sqlite" => {
                let path = match rest {
                    Some(path) if !path.is_empty() => PathBuf::from(path),
                    _ => SqliteStore::default_path().map_err(|e| {
                        CliError::store(&e, "finding the default path", "sqlite://")
                    })?,
                };
                let location = format!("sqlite://{}", path.display());
                if let Some(parent) = path.parent() {
                    not_under_a_file(parent, &location)?;
                }
                let exists = match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_file() => true,
                    Ok(_) => {
                        return Err(CliError::usage(format!(
                            "--store {location} is not a database file: give the path of an SQLite file (it is created on the first login)"
                        )));
                    }
                    Err(_) => false,
                };
                if !exists && access == Access::Read {
                    return Ok(Self::empty(location));
                }
                let key_file = sqlite_key_file(&path);
                // Stores made by earlier versions have their key under the stem's name. It is
                // only adopted when the database already exists: a new `t.sqlite` beside an
                // old `t.db` gets a key of its own.
                let legacy_key = stem_file(&path, "key");
                let legacy = (exists && !key_file.exists() && legacy_key.exists())
                    .then_some(legacy_key.as_path());
                let keyring = local_keyring(&key_file, legacy, &location, access, async {
                    SqliteStore::open(&path, Keyring::new(Key::generate()))
                        .await
                        .map(|s| Arc::new(s) as Arc<dyn TokenStore>)
                })
                .await?;
                let store = SqliteStore::open(&path, keyring)
                    .await
                    .map_err(|e| CliError::store(&e, "opening it", &location))?;
                let store = Self {
                    store: Arc::new(store),
                    location,
                };
                (store, Some(stem_file(&path, "aliases.json")))
            }
            "file" => {
                let dir = PathBuf::from(rest.unwrap_or_default());
                if dir.as_os_str().is_empty() {
                    return Err(CliError::usage(
                        "--store file:// needs a directory: use file:///path/to/dir",
                    ));
                }
                let location = format!("file://{}", dir.display());
                not_under_a_file(&dir, &location)?;
                let exists = dir.is_dir();
                if !exists && access == Access::Read {
                    return Ok(Self::empty(location));
                }
                // The directory is not created here: the key file and FileStore create it (and
                // its missing parents) with mode 0700, which a plain create_dir_all would not.
                let keyring =
                    local_keyring(&dir.join("tokens.key"), None, &location, access, async {
                        FileStore::open(&dir, Keyring::new(Key::generate()))
                            .map(|s| Arc::new(s) as Arc<dyn TokenStore>)
                    })
                    .await?;
                let store = FileStore::open(&dir, keyring)
                    .map_err(|e| CliError::store(&e, "opening it", &location))?;
                let store = Self {
                    store: Arc::new(store),
                    location,
                };
                (store, Some(dir.join("aliases.json")))
            }
            "redis" | "rediss" | "postgres" | "postgresql" => {
                // `url` is `Some` here: the default store is SQLite.
                Self::open_shared(url.unwrap_or_default(), scheme).await?
            }
            other => {
                return Err(CliError::usage(format!(
                    "unknown token store scheme {other}://: use sqlite://PATH, file://DIR, redis://HOST or postgres://HOST/DB"
                )));
            }
        };
        if let Some(file) = legacy_aliases.filter(|file| file.is_file()) {
            opened.migrate_alias_file(&file).await?;
        }
        Ok(opened)
    }

    /// A store that does not exist, as a read sees it: empty, and nothing created.
    fn empty(location: String) -> Self {
        Self {
            store: Arc::new(MemoryStore::new()),
            location,
        }
    }

    /// Folds the alias file of an earlier version into the records it names, then renames it
    /// `*.migrated` (kept, not deleted: it is the only copy of entries whose login is gone).
    /// Entries whose record already holds settings are left alone: the record is newer.
    async fn migrate_alias_file(&self, file: &Path) -> Result<()> {
        let text = std::fs::read(file).map_err(|e| {
            CliError::other(format!(
                "cannot read the alias file {} of an earlier version ({e}): check its permissions, or move it away (logins stay in the store)",
                file.display()
            ))
        })?;
        let legacy: LegacyAliasFile = serde_json::from_slice(&text).map_err(|e| {
            CliError::other(format!(
                "the alias file {} of an earlier version is damaged ({e}): fix it, or move it away (logins stay in the store)",
                file.display()
            ))
        })?;
        let mut folded = 0usize;
        let mut missing = 0usize;
        for (alias, meta) in &legacy.aliases {
            let Ok(key) = meta.key.parse::<TokenKey>() else {
                missing = missing.saturating_add(1);
                continue;
            };
            if key.label() != alias {
                missing = missing.saturating_add(1);
                continue;
            }
            loop {
                let record = match self.store.get(&key).await {
                    Ok(Some(record)) => record,
                    Ok(None) => {
                        missing = missing.saturating_add(1);
                        break;
                    }
                    Err(e) => {
                        return Err(CliError::store(
                            &e,
                            "moving the alias file's settings into the store",
                            &self.location,
                        ));
                    }
                };
                if AliasMeta::read_from(&record).is_some() {
                    break;
                }
                let expected = record.version;
                let mut updated = record;
                meta.write_to(&mut updated.metadata)?;
                match self.store.put(updated, expected, None).await {
                    Ok(_) => {
                        folded = folded.saturating_add(1);
                        break;
                    }
                    Err(e) if e.kind() == StoreErrorKind::Conflict => continue,
                    Err(e) => {
                        return Err(CliError::store(
                            &e,
                            "moving the alias file's settings into the store",
                            &self.location,
                        ));
                    }
                }
            }
        }
        let mut renamed = file.as_os_str().to_os_string();
        renamed.push(".migrated");
        let renamed = PathBuf::from(renamed);
        std::fs::rename(file, &renamed).map_err(|e| {
            CliError::other(format!(
                "moved the settings of {folded} alias(es) into the store, but cannot rename {} ({e}): move it away by hand",
                file.display()
            ))
        })?;
        eprintln!(
            "note: moved the settings of {folded} alias(es) from {} into the store {}{}; the old file is kept as {}",
            file.display(),
            self.location,
            if missing > 0 {
                format!(" ({missing} named no login in this store)")
            } else {
                String::new()
            },
            renamed.display()
        );
        Ok(())
    }

    /// Checks that the store opens with its key and takes writes, before a login asks
    /// Salesforce for tokens it could not keep.
    pub(crate) async fn check_writable(&self) -> Result<()> {
        let checking = "checking it before the login";
        let page = self
            .store
            .list_entries(&ListQuery::new().limit(ListQuery::DEFAULT_LIMIT))
            .await
            .map_err(|e| CliError::store(&e, checking, &self.location))?;
        // The key is right when any record opens with it. A damaged record, or one sealed with
        // another key beside readable ones, does not stop a login: the new login may be what
        // replaces it. Only a store none of whose records opens is refused.
        let foreign = page.entries.iter().find_map(|entry| match &entry.record {
            Err(e) if e.kind() == StoreErrorKind::WrongKey => Some((entry.key.label(), e)),
            _ => None,
        });
        if let Some((alias, e)) = foreign
            && !page.entries.iter().any(|entry| entry.record.is_ok())
        {
            return Err(CliError::other(format!(
                "{}; or remove that login with `sfauth logout {alias} --force`",
                CliError::store(e, checking, &self.location).message,
            )));
        }
        // A lease on a key no login has is a write that leaves no record behind.
        let identity = "https://login.salesforce.com/id/00D000000000001AAA/005000000000001AAA"
            .parse()
            .map_err(|_| CliError::other("the store check's identity does not parse"))?;
        let probe = TokenKey::new(
            &LoginHost::Production,
            &identity,
            "sfauth-cli",
            "write-check",
        );
        let holder = format!("sfauth-login-check-{}", std::process::id());
        for _ in 0..3 {
            let lease = self
                .store
                .try_acquire(&probe, &holder, Duration::from_millis(100))
                .await
                .map_err(|e| {
                    CliError::store(
                        &e,
                        "checking it can be written before the login",
                        &self.location,
                    )
                })?;
            if let Some(lease) = lease {
                let _ = self.store.release(&lease).await;
                return Ok(());
            }
            // Another login's check holds the probe for a moment.
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
        Ok(())
    }

    /// Every entry matching `query`: each key with its record, or why the record cannot be
    /// opened (sealed with another key, damaged), so that one such record hides no other.
    async fn entries(&self, query: ListQuery) -> Result<Vec<ListEntry>> {
        let mut query = query.limit(ListQuery::MAX_LIMIT);
        let mut all = Vec::new();
        loop {
            let page = self
                .store
                .list_entries(&query)
                .await
                .map_err(|e| CliError::store(&e, "listing logins", &self.location))?;
            all.extend(page.entries);
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// The entries labelled `alias` (usually one): the store matches the label on its clear
    /// keys, so no other login is read or opened.
    pub(crate) async fn entries_of(&self, alias: &str) -> Result<Vec<ListEntry>> {
        self.entries(ListQuery::new().label(alias)).await
    }

    /// The key of every stored login, readable or not.
    pub(crate) async fn keys(&self) -> Result<Vec<TokenKey>> {
        Ok(self
            .entries(ListQuery::new())
            .await?
            .into_iter()
            .map(|entry| entry.key)
            .collect())
    }

    /// The record key and settings of `alias`, read from its one record.
    pub(crate) async fn resolve(&self, alias: &str) -> Result<Resolved> {
        resolve_in(alias, &self.entries_of(alias).await?, &self.location)
    }

    /// Every stored login, read once: for the commands that work on many aliases.
    pub(crate) async fn logins(&self) -> Result<Logins> {
        let mut records = Vec::new();
        let mut unreadable = Vec::new();
        for entry in self.entries(ListQuery::new()).await? {
            match entry.record {
                Ok(record) => records.push(record),
                Err(_) => unreadable.push(entry.key.label().to_owned()),
            }
        }
        Ok(Logins {
            records,
            unreadable,
            location: self.location.clone(),
        })
    }

    /// Stores a login's `tokens` under `key` with its settings and secrets (the app's, and its
    /// next one during a rotation), replacing what the record held (tokens, status, in-flight
    /// mark, settings) in one compare-and-swap, so that tokens and settings can never belong to
    /// different logins.
    pub(crate) async fn save_login(
        &self,
        key: &TokenKey,
        mut tokens: TokenSet,
        meta: &AliasMeta,
        client_secret: Option<&str>,
        next_client_secret: Option<&str>,
        session_timeout: Duration,
    ) -> std::result::Result<(), sfauth::storage::Error> {
        let now = SystemTime::now();
        tokens.apply_session_timeout(session_timeout, now);
        loop {
            let existing = self.store.get(key).await?;
            let expected = existing.as_ref().map(|record| record.version);
            let mut record =
                existing.unwrap_or_else(|| TokenRecord::new(key.clone(), tokens.clone(), now));
            record.tokens = tokens.clone();
            record.status = RecordStatus::Active;
            record.refresh_in_flight = None;
            record.last_refreshed_at = Some(now);
            meta.write_to(&mut record.metadata)
                .map_err(|e| sfauth::storage::Error::new(StoreErrorKind::Config, e.message))?;
            for (name, secret) in [
                (CLIENT_SECRET, client_secret),
                (NEXT_CLIENT_SECRET, next_client_secret),
            ] {
                match secret {
                    Some(secret) => record.metadata.set_secret(name, secret)?,
                    None => {
                        record.metadata.remove_secret(name);
                    }
                }
            }
            match self.store.save(record, expected).await {
                Ok(_) => return Ok(()),
                // Somebody else wrote it between the read and the save: read again.
                Err(e) if e.kind() == StoreErrorKind::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Keeps `secret` as the app's secret of the login `key`, in place of the one Salesforce
    /// refused, and forgets the stored next secret (it is now the current one). Only a login
    /// that stores a secret is changed: one using `SFAUTH_CLIENT_SECRET` keeps using it.
    /// Returns whether the login stored it.
    pub(crate) async fn keep_client_secret(
        &self,
        key: &TokenKey,
        secret: &str,
    ) -> std::result::Result<bool, sfauth::storage::Error> {
        loop {
            let Some(record) = self.store.get(key).await? else {
                return Ok(false);
            };
            let stored = &record.metadata;
            if stored.secret(CLIENT_SECRET).is_none() && stored.secret(NEXT_CLIENT_SECRET).is_none()
            {
                return Ok(false);
            }
            if stored.secret(CLIENT_SECRET) == Some(secret)
                && stored.secret(NEXT_CLIENT_SECRET).is_none()
            {
                return Ok(true);
            }
            let expected = record.version;
            let mut updated = record;
            updated.metadata.set_secret(CLIENT_SECRET, secret)?;
            updated.metadata.remove_secret(NEXT_CLIENT_SECRET);
            match self.store.put(updated, expected, None).await {
                Ok(_) => return Ok(true),
                // A refresh saved new tokens meanwhile: read again, keep them.
                Err(e) if e.kind() == StoreErrorKind::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Removes every record holding `alias` except `keep`, including ones that cannot be
    /// opened: the new login replaces them.
    pub(crate) async fn remove_other_records(&self, alias: &str, keep: &TokenKey) -> Result<()> {
        for entry in self.entries_of(alias).await? {
            if entry.key.label() == alias && &entry.key != keep {
                self.store
                    .delete(&entry.key, None)
                    .await
                    .map_err(|e| CliError::store(&e, "replacing an old login", &self.location))?;
            }
        }
        Ok(())
    }
}

/// A snapshot of the store's records, from [`Store::logins`].
pub(crate) struct Logins {
    /// Every stored record that opens.
    pub(crate) records: Vec<TokenRecord>,
    /// The aliases of the records that do not open (sealed with another key, damaged).
    pub(crate) unreadable: Vec<String>,
    location: String,
}

impl Logins {
    /// The record key and settings of `alias`, as [`Store::resolve`] finds them.
    pub(crate) fn resolve(&self, alias: &str) -> Result<Resolved> {
        if self.unreadable.iter().any(|label| label == alias) {
            return Err(unreadable(alias, None, &self.location));
        }
        let mut found = self
            .records
            .iter()
            .filter(|record| record.key.label() == alias);
        match (found.next(), found.next()) {
            (Some(record), None) => resolved(alias, record),
            (None, _) => Err(no_login(alias, &self.location)),
            (Some(_), Some(_)) => Err(several(alias, &self.location)),
        }
    }
}

/// `alias` resolved from the one entry labelled with it.
fn resolve_in(alias: &str, entries: &[ListEntry], location: &str) -> Result<Resolved> {
    let mut found = entries.iter().filter(|entry| entry.key.label() == alias);
    match (found.next(), found.next()) {
        (Some(entry), None) => match &entry.record {
            Ok(record) => resolved(alias, record),
            Err(e) => Err(unreadable(alias, Some(e), location)),
        },
        (None, _) => Err(no_login(alias, location)),
        (Some(_), Some(_)) => Err(several(alias, location)),
    }
}

/// `alias` resolved from its readable `record`.
pub(crate) fn resolved(alias: &str, record: &TokenRecord) -> Result<Resolved> {
    Ok(Resolved {
        alias: alias.to_owned(),
        key: record.key.clone(),
        meta: meta_of(record)?,
        client_secret: secret_of(record),
        next_client_secret: next_secret_of(record),
    })
}

fn no_login(alias: &str, location: &str) -> CliError {
    CliError::usage(format!(
        "no login named {alias} in {location}: run `sfauth login web --alias {alias}`, or `sfauth list` to see the aliases"
    ))
}

fn several(alias: &str, location: &str) -> CliError {
    CliError::usage(format!(
        "several logins are named {alias} in {location}: log in again with `sfauth login web --alias {alias}` to replace them"
    ))
}

/// Why a record does not open, in words for `status` and for messages.
pub(crate) fn unreadable_reason(error: &sfauth::storage::Error) -> &'static str {
    match error.kind() {
        StoreErrorKind::WrongKey => "sealed with another key",
        _ => "damaged",
    }
}

/// The login `alias` cannot be opened (`error`, when known): exit 1, with both fixes.
pub(crate) fn unreadable(
    alias: &str,
    error: Option<&sfauth::storage::Error>,
    location: &str,
) -> CliError {
    let (why, fix) = match error {
        Some(e) if e.kind() == StoreErrorKind::WrongKey => (
            format!("it is sealed with another key ({})", crate::error::chain(e)),
            format!(
                "set SFAUTH_STORE_KEY to the key it was written with (or restore the key file), or remove it with `sfauth logout {alias} --force`"
            ),
        ),
        Some(e) => (
            format!("it is damaged ({})", crate::error::chain(e)),
            format!("remove it with `sfauth logout {alias} --force` and log in again"),
        ),
        None => (
            "it is damaged or sealed with another key".to_owned(),
            format!("see `sfauth status`; remove it with `sfauth logout {alias} --force`"),
        ),
    };
    CliError::other(format!(
        "the login {alias} in {location} cannot be opened: {why}: {fix}; nothing was changed"
    ))
}

/// Metadata rebuilt from a record key alone.
pub(crate) fn meta_from_key(key: &TokenKey, flow: Flow) -> Result<AliasMeta> {
    let host: LoginHost = key.login_host().parse().map_err(|e| {
        CliError::other(format!(
            "the stored login host {} is not usable ({e}): log in again",
            key.login_host()
        ))
    })?;
    Ok(AliasMeta {
        key: key.to_string(),
        host,
        client_id: key.client_id().to_owned(),
        flow,
        basic_auth: false,
        username: None,
        jwt: None,
    })
}

/// Replaces `path` with `bytes` (mode 0600): written to a temporary file in the same directory,
/// synced, then renamed over it, so that a failed write or a crash leaves the old file or the
/// new one, never a part and never nothing.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The keyring of a local store whose key file is `key_file` (or, for a store of an earlier
/// version, `legacy`). A missing key is made only for a store that holds no login yet and only
/// when writing: a key made for a store full of logins would seal new logins with it, and the
/// old ones could never be opened again. `probe` opens the store with a throwaway key to see
/// whether it holds any login.
async fn local_keyring(
    key_file: &Path,
    legacy: Option<&Path>,
    location: &str,
    access: Access,
    probe: impl std::future::Future<Output = sfauth::storage::Result<Arc<dyn TokenStore>>>,
) -> Result<Keyring> {
    if std::env::var_os(STORE_KEY_ENV).is_some() {
        return Keyring::from_env(STORE_KEY_ENV).map_err(|e| {
            CliError::usage(format!(
                "{STORE_KEY_ENV} is not a usable key ({e}): set it to the base64 of 32 random bytes, or unset it"
            ))
        });
    }
    let load = |path: &Path| {
        Key::from_file(path).map_err(|e| CliError::store(&e, "loading its key file", location))
    };
    if key_file.exists() {
        return load(key_file).map(Keyring::new);
    }
    if let Some(legacy) = legacy {
        let key = load(legacy)?;
        if access == Access::Write {
            copy_key(legacy, key_file, location)?;
        }
        return Ok(Keyring::new(key));
    }
    let store = probe
        .await
        .map_err(|e| CliError::store(&e, "opening it", location))?;
    let holds_logins = match store.list(&ListQuery::new().limit(1)).await {
        Ok(page) => !page.records.is_empty(),
        Err(e) if matches!(e.kind(), StoreErrorKind::WrongKey | StoreErrorKind::Corrupt) => true,
        Err(e) => return Err(CliError::store(&e, "opening it", location)),
    };
    if holds_logins {
        return Err(CliError::other(format!(
            "the token store at {location} holds logins but its key file {} is missing: restore the key file from a backup (or set {STORE_KEY_ENV} to the key); to start over instead, move the store away. No new key was made, so nothing was sealed with the wrong one",
            key_file.display()
        )));
    }
    match access {
        // Nothing to open: a throwaway key reads the empty store, and no file is made.
        Access::Read => Ok(Keyring::new(Key::generate())),
        Access::Write => Key::load_or_create(key_file)
            .map(Keyring::new)
            .map_err(|e| CliError::store(&e, "creating its key file", location)),
    }
}

/// Copies an earlier version's key file to the store's own key file (mode 0600, never
/// replacing one that appeared meanwhile).
fn copy_key(from: &Path, to: &Path, location: &str) -> Result<()> {
    let failed = |e: std::io::Error| {
        CliError::other(format!(
            "cannot copy the key file {} to {} for the token store at {location} ({e}): check the directory's permissions",
            from.display(),
            to.display()
        ))
    };
    let bytes = zeroize::Zeroizing::new(std::fs::read(from).map_err(failed)?);
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(failed(e)),
    };
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| {
            let _ = std::fs::remove_file(to);
            failed(e)
        })
}
