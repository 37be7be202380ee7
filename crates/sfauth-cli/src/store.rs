//! The token store selected by `--store`, and the alias metadata kept beside it.
//!
//! | `--store` | backend | key file | alias metadata |
//! |---|---|---|---|
//! | (none) | SQLite at `SqliteStore::default_path()` | `tokens.key` beside it | `tokens.aliases.json` beside it |
//! | `sqlite://PATH` | SQLite at `PATH` | `<stem>.key` beside it | `<stem>.aliases.json` beside it |
//! | `file://DIR` | `FileStore` in `DIR` | `DIR/tokens.key` | `DIR/aliases.json` |
//! | `redis://HOST`, `rediss://HOST` | `RedisStore` (see [`shared`]) | `SFAUTH_STORE_KEY` only | in the user data directory |
//! | `postgres://HOST/DB`, `postgresql://HOST/DB` | `PostgresStore` (see [`shared`]) | `SFAUTH_STORE_KEY` only | in the user data directory |
//!
//! `SFAUTH_STORE_KEY` (base64 of 32 bytes) replaces the key file.
//!
//! The alias is the `TokenKey` label of the stored record. The metadata file keeps, per alias,
//! what a later refresh needs and the record cannot say: the login host with any overridden
//! endpoints, the client id, the flow (to name the right `sfauth login` command), the username,
//! and for the JWT flow the key file's path (never the key). It holds no secret. A record with
//! no metadata (written by a program using the library) still works: its host and client id
//! come from its key.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sfauth::STORE_KEY_ENV;
use sfauth::oauth::{LoginHost, TokenKey};
use sfauth::storage::{
    FileStore, Key, Keyring, ListQuery, SqliteStore, TokenRecord, TokenStore, TokenStoreExt as _,
};

use crate::error::{CliError, Result};

mod shared;

/// An opened store and where its companions live.
pub(crate) struct Store {
    pub(crate) store: Arc<dyn TokenStore>,
    /// Where the store is, for messages.
    pub(crate) location: String,
    meta_path: PathBuf,
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

#[derive(Debug, Default, Serialize, Deserialize)]
struct MetaFile {
    version: u32,
    aliases: BTreeMap<String, AliasMeta>,
}

/// One alias resolved to its record key and connection settings.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) alias: String,
    pub(crate) key: TokenKey,
    pub(crate) meta: AliasMeta,
}

impl Store {
    /// Opens the store named by `url` (`None`: the default SQLite store).
    pub(crate) async fn open(url: Option<&str>) -> Result<Self> {
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
        match scheme {
            "sqlite" => {
                let path = match rest {
                    Some(path) if !path.is_empty() => PathBuf::from(path),
                    _ => SqliteStore::default_path().map_err(|e| {
                        CliError::store(&e, "finding the default path", "sqlite://")
                    })?,
                };
                let location = format!("sqlite://{}", path.display());
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "tokens".to_owned());
                let keyring = keyring(&path.with_file_name(format!("{stem}.key")), &location)?;
                let store = SqliteStore::open(&path, keyring)
                    .await
                    .map_err(|e| CliError::store(&e, "opening it", &location))?;
                Ok(Self {
                    store: Arc::new(store),
                    location,
                    meta_path: path.with_file_name(format!("{stem}.aliases.json")),
                })
            }
            "file" => {
                let dir = PathBuf::from(rest.unwrap_or_default());
                if dir.as_os_str().is_empty() {
                    return Err(CliError::usage(
                        "--store file:// needs a directory: use file:///path/to/dir",
                    ));
                }
                let location = format!("file://{}", dir.display());
                // The directory is not created here: the key file and FileStore create it (and
                // its missing parents) with mode 0700, which a plain create_dir_all would not.
                let keyring = keyring(&dir.join("tokens.key"), &location)?;
                let store = FileStore::open(&dir, keyring)
                    .map_err(|e| CliError::store(&e, "opening it", &location))?;
                Ok(Self {
                    store: Arc::new(store),
                    location,
                    meta_path: dir.join("aliases.json"),
                })
            }
            "redis" | "rediss" | "postgres" | "postgresql" => {
                // `url` is `Some` here: the default store is SQLite.
                Self::open_shared(url.unwrap_or_default(), scheme).await
            }
            other => Err(CliError::usage(format!(
                "unknown token store scheme {other}://: use sqlite://PATH, file://DIR, redis://HOST or postgres://HOST/DB"
            ))),
        }
    }

    fn read_meta(&self) -> Result<MetaFile> {
        match std::fs::read(&self.meta_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                CliError::other(format!(
                    "the alias file {} is damaged ({e}): fix or remove it (logins stay in the store)",
                    self.meta_path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(MetaFile {
                version: 1,
                aliases: BTreeMap::new(),
            }),
            Err(e) => Err(CliError::other(format!(
                "cannot read the alias file {} ({e}): check its permissions",
                self.meta_path.display()
            ))),
        }
    }

    fn write_meta(&self, meta: &MetaFile) -> Result<()> {
        let failed = |e: &dyn std::fmt::Display| {
            CliError::other(format!(
                "cannot write the alias file {} ({e}): check the store directory's permissions",
                self.meta_path.display()
            ))
        };
        let bytes = serde_json::to_vec_pretty(meta).map_err(|e| failed(&e))?;
        write_atomic(&self.meta_path, &bytes).map_err(|e| failed(&e))
    }

    /// Remembers `meta` for `alias`.
    pub(crate) fn set_alias(&self, alias: &str, meta: AliasMeta) -> Result<()> {
        let mut file = self.read_meta()?;
        file.version = 1;
        file.aliases.insert(alias.to_owned(), meta);
        self.write_meta(&file)
    }

    /// Forgets `alias`'s metadata.
    pub(crate) fn remove_alias(&self, alias: &str) -> Result<()> {
        let mut file = self.read_meta()?;
        if file.aliases.remove(alias).is_some() {
            self.write_meta(&file)?;
        }
        Ok(())
    }

    /// Every stored record.
    pub(crate) async fn records(&self) -> Result<Vec<TokenRecord>> {
        self.store
            .list_all(&ListQuery::new().limit(ListQuery::MAX_LIMIT))
            .await
            .map_err(|e| CliError::store(&e, "listing logins", &self.location))
    }

    /// The metadata of every alias.
    pub(crate) fn aliases(&self) -> Result<BTreeMap<String, AliasMeta>> {
        Ok(self.read_meta()?.aliases)
    }

    /// The record key and settings of `alias`. The store is listed only when the alias has no
    /// usable metadata, so that `sfauth token` reads one record.
    pub(crate) async fn resolve(&self, alias: &str) -> Result<Resolved> {
        if let Some(resolved) = resolve_by_meta(alias, self.aliases()?.remove(alias)) {
            return Ok(resolved);
        }
        resolve_by_records(alias, &self.records().await?, &self.location)
    }

    /// Every stored record and every alias's metadata, read once: for the commands that work
    /// on many aliases, which would otherwise read both again for each.
    pub(crate) async fn logins(&self) -> Result<Logins> {
        let aliases = self.aliases()?;
        let records = self.records().await?;
        Ok(Logins {
            aliases,
            records,
            location: self.location.clone(),
        })
    }

    /// Removes the record of `key` and any other record holding `alias`, except `keep`.
    pub(crate) async fn remove_other_records(&self, alias: &str, keep: &TokenKey) -> Result<()> {
        for record in self.records().await? {
            if record.key.label() == alias && &record.key != keep {
                self.store
                    .delete(&record.key, None)
                    .await
                    .map_err(|e| CliError::store(&e, "replacing an old login", &self.location))?;
            }
        }
        Ok(())
    }
}

/// A snapshot of the store's records and alias metadata, from [`Store::logins`].
pub(crate) struct Logins {
    aliases: BTreeMap<String, AliasMeta>,
    /// Every stored record.
    pub(crate) records: Vec<TokenRecord>,
    location: String,
}

impl Logins {
    /// The record key and settings of `alias`, as [`Store::resolve`] finds them.
    pub(crate) fn resolve(&self, alias: &str) -> Result<Resolved> {
        if let Some(resolved) = resolve_by_meta(alias, self.aliases.get(alias).cloned()) {
            return Ok(resolved);
        }
        resolve_by_records(alias, &self.records, &self.location)
    }

    /// The metadata of `record`'s alias, if it names this record.
    pub(crate) fn meta_of(&self, record: &TokenRecord) -> Option<&AliasMeta> {
        self.aliases
            .get(record.key.label())
            .filter(|meta| meta.key == record.key.to_string())
    }
}

/// `alias` resolved from its metadata, if it has metadata with a usable key.
fn resolve_by_meta(alias: &str, meta: Option<AliasMeta>) -> Option<Resolved> {
    let meta = meta?;
    let key = meta.key.parse::<TokenKey>().ok()?;
    Some(Resolved {
        alias: alias.to_owned(),
        key,
        meta,
    })
}

/// `alias` resolved from the one record labelled with it: a record stored by a program using
/// the library, or imported without metadata.
fn resolve_by_records(alias: &str, records: &[TokenRecord], location: &str) -> Result<Resolved> {
    let mut found = records.iter().filter(|record| record.key.label() == alias);
    match (found.next(), found.next()) {
        (Some(record), None) => Ok(Resolved {
            alias: alias.to_owned(),
            key: record.key.clone(),
            meta: meta_from_key(&record.key, Flow::Web)?,
        }),
        (None, _) => Err(CliError::usage(format!(
            "no login named {alias} in {location}: run `sfauth login web --alias {alias}`, or `sfauth list` to see the aliases"
        ))),
        (Some(_), Some(_)) => Err(CliError::usage(format!(
            "several logins are named {alias} in {location}: log in again with `sfauth login web --alias {alias}` to replace them"
        ))),
    }
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

fn keyring(key_file: &Path, location: &str) -> Result<Keyring> {
    if std::env::var_os(STORE_KEY_ENV).is_some() {
        return Keyring::from_env(STORE_KEY_ENV).map_err(|e| {
            CliError::usage(format!(
                "{STORE_KEY_ENV} is not a usable key ({e}): set it to the base64 of 32 random bytes, or unset it"
            ))
        });
    }
    Key::load_or_create(key_file)
        .map(Keyring::new)
        .map_err(|e| CliError::store(&e, "loading its key file", location))
}
