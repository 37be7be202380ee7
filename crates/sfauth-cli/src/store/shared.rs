//! The stores a fleet shares: `redis://` (`rediss://`) and `postgres://` (`postgresql://`).
//!
//! | `--store` | backend | options in the query |
//! |---|---|---|
//! | `redis://[USER][:PASSWORD@]HOST[:PORT][/DB]`, `rediss://...` (TLS) | `RedisStore` | `prefix` (default `sfauth:`), `connect_timeout`, `tls_ca_file` (PEM CA certificates trusted instead of the system's, `rediss://` only), and redis-rs's own `protocol` |
//! | `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` | `PostgresStore` | `schema` (default `sfauth`), `connect_timeout`, and sqlx's own (`sslmode`, `sslrootcert`, `application_name`, ...) |
//!
//! The CLI's options are taken out of the URL before the driver sees it; any other option is
//! refused, so that a misspelt `prefix` cannot silently put logins under the default one.
//!
//! The key must be the same on every machine, so it comes from `SFAUTH_STORE_KEY` only: a key
//! file created on first use would give each machine a key of its own, and their records
//! would be unreadable to each other. The per-alias settings live in the records, so every
//! machine sees them; the alias file earlier versions kept on each machine (in the user data
//! directory, named after the store) is folded into the records when the store is opened.
//!
//! The URL's password is never shown: messages name the store by [`SharedUrl::location`],
//! which has none, and the password is registered with [`error::register_secret`] so that a
//! driver message quoting it could not print it either.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sfauth::STORE_KEY_ENV;
use sfauth::storage::{ErrorKind, Keyring, PostgresStore, RedisStore, TokenStore};
use zeroize::Zeroizing;

use super::Store;
use crate::error::{self, CliError, Exit, Result};

/// How long opening a shared store may take (connecting, and for PostgreSQL creating its
/// tables) unless `connect_timeout` says otherwise: a server that does not answer fails the
/// command quickly instead of hanging it.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest `connect_timeout` accepted, in seconds.
const MAX_CONNECT_TIMEOUT_SECS: u64 = 300;

/// The query options redis-rs reads from its URL, passed on to it.
const REDIS_DRIVER_OPTIONS: &[&str] = &["protocol"];

/// The query options sqlx reads from a PostgreSQL URL, passed on to it.
const POSTGRES_DRIVER_OPTIONS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// Which shared backend a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Redis,
    Postgres,
}

impl Backend {
    fn of(scheme: &str) -> Self {
        if scheme.starts_with("redis") {
            Self::Redis
        } else {
            Self::Postgres
        }
    }

    /// The CLI's own option naming where in the server the store lives.
    fn place_option(self) -> &'static str {
        match self {
            Self::Redis => "prefix",
            Self::Postgres => "schema",
        }
    }

    fn driver_options(self) -> &'static [&'static str] {
        match self {
            Self::Redis => REDIS_DRIVER_OPTIONS,
            Self::Postgres => POSTGRES_DRIVER_OPTIONS,
        }
    }

    fn example(self) -> &'static str {
        match self {
            Self::Redis => "redis://[:PASSWORD@]HOST[:PORT][/DB][?prefix=P]",
            Self::Postgres => "postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?schema=S]",
        }
    }
}

/// A shared store's URL taken apart.
struct SharedUrl {
    backend: Backend,
    /// The URL the driver gets: the CLI's options removed, the password kept.
    driver_url: Zeroizing<String>,
    /// The URL without password and without the driver's options, for messages and for the
    /// alias file's name.
    location: String,
    /// The Redis prefix or the PostgreSQL schema, when given.
    place: Option<String>,
    connect_timeout: Duration,
    /// The PEM certificates of `tls_ca_file` (Redis over TLS): trusted instead of the system's.
    tls_ca: Option<Vec<u8>>,
}

/// Parses a `redis://` or `postgres://` store URL. Nothing of the URL is quoted in an error,
/// since it may hold a password.
fn parse(url: &str, scheme: &str) -> Result<SharedUrl> {
    let backend = Backend::of(scheme);
    let bad = |why: String| {
        CliError::usage(format!(
            "the --store URL is not a usable {scheme}:// URL ({why}): use {}",
            backend.example()
        ))
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    // Registered before anything else can fail, so that no later message can hold them.
    if let Some(password) = parsed.password() {
        error::register_secret(password);
        if let Ok(decoded) = percent_decode(password) {
            error::register_secret(&decoded);
        }
    }
    for (name, value) in parsed.query_pairs() {
        if name == "password" {
            error::register_secret(&value);
        }
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("it names no host".to_owned()));
    }
    let mut place = None;
    let mut connect_timeout = DEFAULT_CONNECT_TIMEOUT;
    let mut tls_ca = None;
    let mut passed_on = Vec::new();
    for (name, value) in parsed.query_pairs() {
        if backend == Backend::Redis && name == "tls_ca_file" {
            if scheme != "rediss" {
                return Err(bad(
                    "tls_ca_file is for a rediss:// URL, which connects over TLS".to_owned(),
                ));
            }
            let pem = std::fs::read(value.as_ref()).map_err(|e| {
                CliError::usage(format!(
                    "cannot read the tls_ca_file {value} of the --store URL ({e}): give the path of a PEM file with the CA certificates to trust"
                ))
            })?;
            tls_ca = Some(pem);
        } else if name == backend.place_option() {
            if value.is_empty() {
                return Err(bad(format!("?{name}= is empty")));
            }
            place = Some(value.into_owned());
        } else if name == "connect_timeout" {
            let secs = value
                .parse::<u64>()
                .ok()
                .filter(|secs| (1..=MAX_CONNECT_TIMEOUT_SECS).contains(secs))
                .ok_or_else(|| {
                    bad(format!(
                        "connect_timeout is seconds from 1 to {MAX_CONNECT_TIMEOUT_SECS}"
                    ))
                })?;
            connect_timeout = Duration::from_secs(secs);
        } else if backend.driver_options().contains(&name.as_ref()) {
            passed_on.push((name.into_owned(), value.into_owned()));
        } else {
            return Err(bad(format!(
                "unknown option {name}: the options are {}, connect_timeout{} and the driver's {}",
                backend.place_option(),
                if backend == Backend::Redis {
                    ", tls_ca_file"
                } else {
                    ""
                },
                backend.driver_options().join(", ")
            )));
        }
    }
    let mut driver = parsed.clone();
    if passed_on.is_empty() {
        driver.set_query(None);
    } else {
        driver.query_pairs_mut().clear().extend_pairs(&passed_on);
    }
    let mut shown = parsed;
    // Only fails for URLs that cannot have a password, and then there is none to remove.
    let _ = shown.set_password(None);
    shown.set_fragment(None);
    match &place {
        Some(place) => {
            shown
                .query_pairs_mut()
                .clear()
                .append_pair(backend.place_option(), place);
        }
        None => shown.set_query(None),
    }
    Ok(SharedUrl {
        backend,
        driver_url: Zeroizing::new(driver.to_string()),
        location: shown.to_string(),
        place,
        connect_timeout,
        tls_ca,
    })
}

/// `text` with `%XX` escapes decoded, as the drivers decode a URL's password.
fn percent_decode(text: &str) -> std::result::Result<String, std::string::FromUtf8Error> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let escaped = (byte == b'%')
            .then(|| bytes.get(i.saturating_add(1)..i.saturating_add(3)))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                i = i.saturating_add(3);
            }
            None => {
                out.push(byte);
                i = i.saturating_add(1);
            }
        }
    }
    String::from_utf8(out)
}

/// The key of a shared store: from `SFAUTH_STORE_KEY` only (see the module doc).
fn keyring(scheme: &str) -> Result<Keyring> {
    if std::env::var_os(STORE_KEY_ENV).is_none() {
        return Err(CliError::usage(format!(
            "a {scheme}:// store is shared by machines, so its key must be too: set {STORE_KEY_ENV} to the base64 of 32 random bytes (`openssl rand -base64 32`), the same on every machine"
        )));
    }
    Keyring::from_env(STORE_KEY_ENV).map_err(|e| {
        CliError::usage(format!(
            "{STORE_KEY_ENV} is not a usable key ({e}): set it to the base64 of 32 random bytes, the one the store was written with"
        ))
    })
}

/// Where earlier versions kept this machine's alias file of the shared store at `location`: in the user
/// data directory, under a name made of the location and a hash of it (two locations that
/// read alike after the unsafe characters are replaced still get files of their own).
fn meta_path(location: &str) -> Result<PathBuf> {
    let dir = dirs::data_dir().ok_or_else(|| {
        CliError::usage(
            "no user data directory for the alias file of a shared store: set XDG_DATA_HOME or HOME",
        )
    })?;
    let readable: String = location
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    Ok(dir
        .join("sfauth")
        .join("shared")
        .join(format!("{readable}-{:016x}.aliases.json", fnv1a(location))))
}

/// FNV-1a, 64 bits: stable across builds and Rust versions, unlike `std`'s hasher.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Store {
    /// Opens the Redis or PostgreSQL store named by `url`, whose scheme is `scheme`.
    /// Opens the Redis or PostgreSQL store named by `url`, whose scheme is `scheme`, with the
    /// path of the alias file an earlier version kept for it on this machine (to migrate).
    pub(super) async fn open_shared(url: &str, scheme: &str) -> Result<(Self, Option<PathBuf>)> {
        let parsed = parse(url, scheme)?;
        let keyring = keyring(scheme)?;
        // No data directory only means there is no old alias file to migrate.
        let legacy_aliases = meta_path(&parsed.location).ok();
        let location = parsed.location.clone();
        let timeout = parsed.connect_timeout;
        let opened = tokio::time::timeout(timeout, connect(&parsed, keyring)).await;
        let store = match opened {
            Ok(Ok(store)) => store,
            Ok(Err(e)) => return Err(open_error(&e, &location)),
            Err(_) => {
                return Err(CliError::new(
                    Exit::Transient,
                    format!(
                        "the token store at {location} did not answer within {}s: check that the server is running and reachable (or raise ?connect_timeout=), then try again",
                        timeout.as_secs()
                    ),
                ));
            }
        };
        error::mark_shared_store();
        Ok((Self { store, location }, legacy_aliases))
    }
}

async fn connect(
    url: &SharedUrl,
    keyring: Keyring,
) -> sfauth::storage::Result<Arc<dyn TokenStore>> {
    match url.backend {
        Backend::Redis => {
            let mut builder =
                RedisStore::builder(&url.driver_url, keyring).connect_timeout(url.connect_timeout);
            if let Some(prefix) = &url.place {
                builder = builder.prefix(prefix.clone());
            }
            if let Some(pem) = &url.tls_ca {
                builder = builder.root_certificate(pem);
            }
            Ok(Arc::new(builder.connect().await?))
        }
        Backend::Postgres => {
            let schema = url
                .place
                .as_deref()
                .unwrap_or(PostgresStore::DEFAULT_SCHEMA);
            let store =
                PostgresStore::connect_with_schema(&url.driver_url, schema, keyring).await?;
            Ok(Arc::new(store))
        }
    }
}

/// A failure to open a shared store: its settings (exit 2) or its server (exit 4).
fn open_error(e: &sfauth::storage::Error, location: &str) -> CliError {
    let detail = error::chain(e);
    match e.kind() {
        ErrorKind::Config => CliError::usage(format!(
            "the token store at {location} refused its settings ({detail}): check the --store URL, its user, password, database and options"
        )),
        ErrorKind::Backend | ErrorKind::Io => CliError::new(
            Exit::Transient,
            format!(
                "the token store at {location} cannot be reached ({detail}): check that the server is running and reachable, then try again"
            ),
        ),
        _ => CliError::store(e, "opening it", location),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail on any error")]

    use super::*;

    #[test]
    fn options_come_out_of_the_url_and_the_password_never_shows() {
        let url = parse(
            "redis://:s%40cret@127.0.0.1:6379/2?prefix=team%3A&connect_timeout=3&protocol=resp3",
            "redis",
        )
        .unwrap();
        assert_eq!(url.place.as_deref(), Some("team:"));
        assert_eq!(url.connect_timeout, Duration::from_secs(3));
        assert_eq!(
            url.driver_url.as_str(),
            "redis://:s%40cret@127.0.0.1:6379/2?protocol=resp3"
        );
        assert_eq!(url.location, "redis://127.0.0.1:6379/2?prefix=team%3A");
        assert!(error::scrub("x s@cret y s%40cret").contains("x [redacted] y [redacted]"));

        let pg = parse(
            "postgresql://me:pw1234@db:5432/app?schema=tenants&sslmode=disable",
            "postgresql",
        )
        .unwrap();
        assert_eq!(pg.backend, Backend::Postgres);
        assert_eq!(pg.location, "postgresql://me@db:5432/app?schema=tenants");
        assert_eq!(
            pg.driver_url.as_str(),
            "postgresql://me:pw1234@db:5432/app?sslmode=disable"
        );
    }

    #[test]
    fn tls_urls_are_accepted() {
        let redis = parse(
            "rediss://:hunter22@cache.example:6380/0?prefix=a%3A",
            "rediss",
        )
        .unwrap();
        assert_eq!(redis.backend, Backend::Redis);
        assert_eq!(
            redis.driver_url.as_str(),
            "rediss://:hunter22@cache.example:6380/0"
        );
        assert!(redis.tls_ca.is_none());
        for mode in ["require", "verify-ca", "verify-full"] {
            let url = format!("postgres://u:hunter22@db.example/app?sslmode={mode}");
            let pg = parse(&url, "postgres").unwrap();
            assert_eq!(pg.driver_url.as_str(), url);
        }
    }

    #[test]
    fn bad_urls_are_usage_errors_that_quote_nothing() {
        for (url, needle) in [
            ("redis://:hunter22@", "not a usable redis:// URL"),
            ("redis://:hunter22@h/?prefx=a", "unknown option prefx"),
            ("redis://:hunter22@h/?prefix=", "?prefix= is empty"),
            (
                "postgres://u:hunter22@h/db?connect_timeout=0",
                "connect_timeout",
            ),
            (
                "postgres://u:hunter22@[::1/db",
                "not a usable postgres:// URL",
            ),
            (
                "redis://:hunter22@h/?tls_ca_file=/etc/hosts",
                "tls_ca_file is for a rediss:// URL",
            ),
            (
                "rediss://:hunter22@h/?tls_ca_file=/nonexistent/ca.pem",
                "cannot read the tls_ca_file /nonexistent/ca.pem",
            ),
            (
                "postgres://u:hunter22@h/db?tls_ca_file=/etc/hosts",
                "unknown option tls_ca_file",
            ),
        ] {
            let scheme = url.split_once("://").unwrap().0;
            let error = parse(url, scheme).err().unwrap();
            assert_eq!(error.exit, Exit::Usage, "{url}");
            assert!(error.message.contains(needle), "{url}: {}", error.message);
            assert!(!error.message.contains("hunter22"), "{}", error.message);
        }
    }

    #[test]
    fn alias_files_differ_per_store_and_are_safe_names() {
        let a = meta_path("redis://127.0.0.1:6379/?prefix=a%3A").unwrap();
        let b = meta_path("redis://127.0.0.1:6379/?prefix=a_3A").unwrap();
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "{name}"
        );
        assert_eq!(percent_decode("a%40b%2").unwrap(), "a@b%2");
    }
}
