//! [`PostgresStore`]: records in a PostgreSQL schema shared by processes and machines, through
//! sqlx (feature `postgres`).
//!
//! See [`PostgresStore`] for the guarantees and how they are kept.

use std::fmt;
use std::str::FromStr as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use sfauth_core::TokenKey;
use sha2::{Digest as _, Sha256};
use sqlx::postgres::{
    PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow, PgSslMode,
};
use sqlx::{Connection as _, Executor as _, Row as _};
use tokio::sync::watch;

use crate::crypto::{ClearFields, Keyring, open_checked, seal_record};
use crate::error::{Error, ErrorKind, Result};
use crate::lease::{check_holder, check_key, refusal, sql_columns};
use crate::notices::Notices;
use crate::record::{
    EntryPage, Lease, ListEntry, ListPage, ListQuery, MAX_STORED_TIME, RecordHeader, StatusKind,
    TokenRecord, from_millis, header_field, next_version, parse_header,
};
use crate::store::{Changes, TokenStore, Watch};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The connections of a pool made by [`PostgresStore::connect`].
const MAX_CONNECTIONS: u32 = 10;

/// How long an operation waits for a free (or new) pooled connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a constructor (or the listener) waits for the server to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a constructor waits for the migrations, other processes' included.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the first watch waits for the listener's first `LISTEN`.
const LISTEN_READY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a store with a listener sends itself a heartbeat notification.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);

/// A listener that hears nothing (not even a heartbeat) for this long reconnects.
const SILENCE_LIMIT: Duration = Duration::from_secs(45);

/// The listener's first wait before reconnecting, doubled after every failure up to the max.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// The longest schema name: the notification channel `<schema>.token_changes` must fit in
/// PostgreSQL's 63-byte identifiers.
const MAX_SCHEMA_LEN: usize = 48;

/// The transaction-scoped advisory lock under which constructors create a schema ("sfauthsc").
const SCHEMA_LOCK: i64 = 0x7366_6175_7468_7363;

/// The database's clock in milliseconds since the epoch, stable within a statement.
const NOW_MS: &str = "floor(extract(epoch FROM now()) * 1000)::bigint";

/// A [`TokenStore`] in a PostgreSQL schema, records sealed with a [`Keyring`].
///
/// For many processes on many machines sharing one set of tokens. Safe to share between tasks
/// (it holds a connection pool); clones share the pool and the listener. Needs PostgreSQL 11
/// or later and a UTF-8 database.
///
/// Errors: a URL that does not parse, a wrong user, password or database name, missing
/// privileges, or a TLS connection that cannot be made (the server does not offer TLS, or its
/// certificate is refused) are [`ErrorKind::Config`]; a server that does not answer, a lost connection and
/// any other database failure [`ErrorKind::Backend`]; a record sealed with another key
/// [`ErrorKind::WrongKey`]. No message, log line or `Debug` output holds the URL's password or
/// a token.
///
/// # TLS
///
/// The URL's `sslmode` decides, as in libpq (rustls with the aws-lc-rs provider underneath,
/// no OpenSSL): `disable` never encrypts; `prefer` (the default) encrypts when the server
/// offers TLS and falls back to the clear otherwise; `require` insists on TLS but does not
/// verify the certificate; `verify-ca` also verifies the chain; `verify-full` the chain and
/// that the certificate names the URL's host (what managed services such as RDS and Cloud
/// SQL should be reached with). A server that does not offer TLS fails `require` and above
/// with [`ErrorKind::Config`], as does a certificate `verify-ca`/`verify-full` refuses.
///
/// Certificates are verified against Mozilla's root certificates (webpki-roots, built in)
/// plus those of `sslrootcert=/path/to/ca.pem` (PEM; for a private CA, or a service's own
/// CA such as Amazon RDS's bundle, which is not among Mozilla's). As in libpq, `require`
/// with `sslrootcert` verifies like `verify-ca`. `sslcert`/`sslkey` give a client
/// certificate.
///
/// # Layout
///
/// Two tables in the store's own schema (`sfauth` unless told otherwise), created by the
/// embedded migrations of `migrations/postgres/`:
///
/// - `token_records`: one row per key, the record sealed by the [`Keyring`] (as in the SQLite
///   store), with the org id, user id, client id, status, version and key id in clear columns
///   for listing and for the checks of a compare-and-swap. The clear columns are checked
///   against the sealed record on every read. Since migration 0002 also the record's clear
///   header (`header`: whether a refresh is in flight and the times its tokens fall due by,
///   nothing secret; `header_version`: the version it was written at), which
///   [`header`](TokenStore::header) answers from without opening the record.
/// - `token_leases`: one row per key that was ever leased: holder, fence and expiry of the
///   current lease, and `last_fence`, the greatest fence ever issued. The row outlives release,
///   expiry and the record's deletion, so fences only grow.
///
/// # Why lease rows, not advisory locks
///
/// PostgreSQL's advisory locks belong to a session, that is to one connection. A pool may hand
/// a different connection to every statement, so a lock taken through it is held by whichever
/// connection happened to run the `pg_advisory_lock`, and is released only through that one; a
/// crashed or killed connection drops it silently while its holder goes on believing it holds
/// it. And a lock carries no fence: a holder that was paused past its lease cannot be told
/// apart from the new one when it writes. A lease row has an expiry that any connection can
/// check, a fence that every conditional write compares, and survives any connection.
///
/// # Atomicity
///
/// Every operation is one SQL statement, so each check and its write are one atomic step:
/// `UPDATE … WHERE key = $ AND version = $` for a compare-and-swap, an upsert on the lease row
/// for [`try_acquire`](TokenStore::try_acquire). A put under a lease checks the lease in the
/// same statement with `EXISTS (… FOR SHARE)`: the lease row stays locked until the write
/// commits, so a take-over or a renewal either happens wholly before the write (which then
/// fails) or waits for it. When a statement changes no row, a second read says why (missing,
/// stale, lease lost, unknown key); nothing was written either way.
///
/// # Clock
///
/// Lease expiry is decided by the database's clock alone: each statement computes "now" as
/// `now()` (the start of its transaction, which for these single statements is the start of
/// the statement) in milliseconds since the epoch, and `expires_at = now + ttl`. Processes
/// sharing the store therefore need no synchronised clocks between them; a returned
/// [`Lease::expires_at`] is the database's time, which callers compare with their own clock
/// only as a hint.
///
/// # Migrations
///
/// Applied by every constructor on a connection of its own: the schema is created (if
/// missing) under a transaction-scoped advisory lock, so processes starting at once do not
/// race on `CREATE SCHEMA`; then sqlx's migrator, which takes a database-wide advisory lock,
/// applies what is missing with `search_path` set to the schema (so its `_sqlx_migrations`
/// table lives there too). The connection is closed afterwards, failed or not, so that no
/// session lock outlives a failed migration.
///
/// # Watches
///
/// A trigger on `token_records` (every insert, update and delete) and on `token_leases` (every
/// release) calls `pg_notify('<schema>.token_changes', sha256_hex(key))` (followed, since
/// migration 0003, by `|version|active|header|key` for a write that leaves an active record with
/// no refresh in flight, for [`changes`](TokenStore::changes)) in the writing
/// statement's own transaction: the notification is delivered when, and only if, the write
/// commits, whoever wrote (this crate or an operator in `psql`). The first
/// [`watch`](TokenStore::watch) starts one `PgListener` task per store, on a connection of its
/// own, dispatching to one `tokio::sync::watch` channel per watched key, and waits (briefly)
/// for its `LISTEN` to be active. A heartbeat notification every few seconds proves the
/// listener's connection alive; when it fails or falls silent the listener reconnects with
/// backoff, and every watch fires once it listens again (a write in between went unheard).
/// Meanwhile watches only time out: callers fall back to polling, they never hang.
///
/// # Example
///
/// ```no_run
/// use sfauth_storage::{Keyring, PostgresStore};
///
/// # async fn open() -> sfauth_storage::Result<()> {
/// let keyring = Keyring::from_env("SFAUTH_STORAGE_KEY")?;
/// let url = std::env::var("DATABASE_URL").unwrap_or_default();
/// // Schema `sfauth`; `connect_with_schema` picks another.
/// let store = PostgresStore::connect(&url, keyring).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    keyring: Keyring,
    /// Every key id of the keyring: a put only overwrites records sealed with one of them.
    key_ids: Vec<String>,
    schema: String,
    /// `<schema>.token_changes`, which the trigger notifies.
    channel: String,
    sql: Sql,
    /// Started by the first watch.
    listener: OnceLock<Listener>,
}

impl fmt::Debug for PostgresStore {
    // By hand: the pool's connect options hold the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.schema)
            .field("keyring", &self.inner.keyring)
            .field("connections", &self.inner.pool.size())
            .field("listening", &self.inner.listener.get().is_some())
            .finish()
    }
}

/// The kind of a driver error: what the caller has to fix (configuration) or retry (backend).
fn kind_of(error: &sqlx::Error) -> ErrorKind {
    if tls_problem(error).is_some() {
        return ErrorKind::Config;
    }
    match error {
        sqlx::Error::Configuration(_) => ErrorKind::Config,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // Class 28: invalid authorization (unknown user, wrong password, refused by
            // pg_hba.conf); 3D000: no such database; 42501: missing privilege.
            Some(code) if code.starts_with("28") || code == "3D000" || code == "42501" => {
                ErrorKind::Config
            }
            _ => ErrorKind::Backend,
        },
        sqlx::Error::Migrate(migrate) => match &**migrate {
            sqlx::migrate::MigrateError::Execute(inner) => kind_of(inner),
            _ => ErrorKind::Backend,
        },
        _ => ErrorKind::Backend,
    }
}

/// What went wrong with TLS, if that is what `error` is: the server does not offer it (sqlx's
/// `Tls` error), or rustls refused the handshake or the certificate (an `io::Error` around a
/// `rustls::Error`). Retrying would not help: the URL or the server's setup must change.
fn tls_problem(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Tls(inner) => Some(inner.to_string()),
        sqlx::Error::Io(io) => {
            let inner = io.get_ref()?;
            match inner.downcast_ref::<rustls::Error>()? {
                refused @ rustls::Error::InvalidCertificate(_) => Some(refused.to_string()),
                other => Some(format!("tls handshake failed: {other}")),
            }
        }
        _ => None,
    }
}

fn backend(what: &str, error: sqlx::Error) -> Error {
    Error::with_source(kind_of(&error), format!("postgres: {what}"), error)
}

/// An error of a statement that computes `last_fence + 1`: PostgreSQL refuses a bigint
/// overflow (22003).
fn lease_error(what: &str, key: &TokenKey, error: sqlx::Error) -> Error {
    let overflowed =
        matches!(&error, sqlx::Error::Database(db) if db.code().as_deref() == Some("22003"));
    if overflowed {
        return crate::lease::fence_exhausted("postgres", key, error);
    }
    backend(what, error)
}

fn to_i64(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::new(ErrorKind::Backend, format!("{what} is too large")))
}

fn to_u64(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::corrupt(format!("stored {what} is negative")))
}

/// A lease's ttl in milliseconds, as the statements add it to the database's clock. Bounded so
/// that the sum cannot overflow, as [`crate::lease::expiry`] bounds it for the other backends.
fn ttl_millis(ttl: Duration) -> Result<i64> {
    if ttl > MAX_STORED_TIME {
        return Err(Error::config("lease ttl is too large"));
    }
    i64::try_from(ttl.as_millis()).map_err(|_| Error::config("lease ttl is too large"))
}

/// What a key is called on the notification channel: the hex SHA-256 of its string form, as
/// the trigger computes it (a key's string may be longer than a payload may be).
fn channel_payload(name: &str) -> String {
    use std::fmt::Write as _;
    Sha256::digest(name.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// Checks a schema name: lowercase ASCII letters, digits and `_`, not starting with a digit or
/// `pg_` (reserved), at most [`MAX_SCHEMA_LEN`] bytes. It is then safe to quote into SQL.
fn check_schema(schema: &str) -> Result<()> {
    let mut chars = schema.chars();
    let valid = schema.len() <= MAX_SCHEMA_LEN
        && !schema.starts_with("pg_")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::config(format!(
            "postgres: schema name {schema:?} is not lowercase letters, digits and _ \
             (at most {MAX_SCHEMA_LEN}, not starting with a digit or pg_)"
        )))
    }
}

/// Where a connection goes, for messages: host, port, database and user, never the password.
fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{} as {}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or(options.get_username()),
        options.get_username()
    )
}

/// The connection options of `url`. The URL is never quoted back: it may hold a password.
fn parse_url(url: &str) -> Result<PgConnectOptions> {
    let parsed = url::Url::parse(url).map_err(|e| {
        Error::with_source(
            ErrorKind::Config,
            "postgres: the connection url does not parse",
            e,
        )
    })?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(Error::config(
            "postgres: the connection url must start with postgres:// or postgresql://",
        ));
    }
    let options = PgConnectOptions::from_str(url).map_err(|e| {
        Error::with_source(
            ErrorKind::Config,
            "postgres: the connection url is not accepted",
            e,
        )
    })?;
    // The names sqlx accepts for it.
    let root_cert = parsed
        .query_pairs()
        .find(|(name, _)| matches!(name.as_ref(), "sslrootcert" | "ssl-root-cert" | "ssl-ca"))
        .map(|(_, value)| value.into_owned());
    let Some(root_cert) = root_cert else {
        return Ok(options);
    };
    // sqlx reads the file at every connection and reports a missing one as an I/O error, which
    // would read as an unreachable server.
    if !root_cert.starts_with("-----BEGIN") {
        std::fs::metadata(&root_cert).map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!("postgres: sslrootcert {root_cert} cannot be read"),
                e,
            )
        })?;
    }
    // As libpq does: with a root certificate, `require` verifies the chain too.
    Ok(if matches!(options.get_ssl_mode(), PgSslMode::Require) {
        options.ssl_mode(PgSslMode::VerifyCa)
    } else {
        options
    })
}

/// Creates `schema` if missing and applies the migrations to it, on a connection of its own
/// that is closed afterwards (dropped on failure: sqlx's migrator holds a session advisory lock
/// while it works, and only the end of the session releases it for sure).
async fn migrate(options: &PgConnectOptions, schema: &str) -> Result<()> {
    let target = describe(options);
    let mut conn =
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(options)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(error)) => {
                let message = match tls_problem(&error) {
                    Some(why) => format!(
                        "postgres: no tls connection to {target} ({why}): check sslmode, and \
                         sslrootcert for a private CA"
                    ),
                    None => format!("postgres: cannot connect to {target}"),
                };
                return Err(Error::with_source(kind_of(&error), message, error));
            }
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Backend,
                    format!(
                        "postgres: no answer from {target} within {}s",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                ));
            }
        };
    match tokio::time::timeout(MIGRATE_TIMEOUT, migrate_on(&mut conn, schema)).await {
        Ok(Ok(())) => {
            // Only the session's end matters, and dropping also ends it.
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(error)) => Err(error),
        Err(_) => Err(Error::new(
            ErrorKind::Backend,
            format!(
                "postgres: migrating schema {schema} took longer than {}s",
                MIGRATE_TIMEOUT.as_secs()
            ),
        )),
    }
}

async fn migrate_on(conn: &mut PgConnection, schema: &str) -> Result<()> {
    // Keys are compared bytewise and must round-trip; other encodings would break both.
    let encoding: String = sqlx::query_scalar("SELECT current_setting('server_encoding')")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| backend("reading the server encoding", e))?;
    if encoding != "UTF8" {
        return Err(Error::config(format!(
            "postgres: the database's encoding is {encoding}, not UTF8"
        )));
    }
    // `CREATE SCHEMA IF NOT EXISTS` run by two sessions at once can fail with a unique
    // violation; under one lock it cannot. Testing first also spares a user who may not
    // create schemas (but owns this one) the need for that privilege.
    let mut tx = conn
        .begin()
        .await
        .map_err(|e| backend("starting the schema transaction", e))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SCHEMA_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(|e| backend("locking schema creation", e))?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| backend("looking for the schema", e))?;
    if !exists {
        // Through `Executor::execute` (simple protocol, no parameters): `sqlx::raw_sql` would
        // make this future not `Send` for every lifetime, and every constructor's with it.
        let create = format!("CREATE SCHEMA \"{schema}\"");
        (&mut *tx)
            .execute(create.as_str())
            .await
            .map_err(|e| backend(&format!("creating schema {schema}"), e))?;
    }
    tx.commit()
        .await
        .map_err(|e| backend(&format!("creating schema {schema}"), e))?;
    let search_path = format!("SET search_path TO \"{schema}\"");
    (&mut *conn)
        .execute(search_path.as_str())
        .await
        .map_err(|e| backend("setting the search path", e))?;
    MIGRATOR.run_direct(conn).await.map_err(|e| {
        let kind = match &e {
            sqlx::migrate::MigrateError::Execute(inner) => kind_of(inner),
            _ => ErrorKind::Backend,
        };
        Error::with_source(kind, format!("postgres: migrating schema {schema}"), e)
    })
}

/// Every statement of a store, with its schema's tables spelled out.
struct Sql {
    get: String,
    list: String,
    insert: String,
    put: String,
    put_leased: String,
    /// `put_leased` and the release of its lease in one statement: it returns how many records
    /// it wrote (the release happens only with the write).
    put_released: String,
    header: String,
    record_state: String,
    delete: String,
    version_of: String,
    acquire: String,
    release: String,
    lease: String,
    renew: String,
    take_over: String,
}

impl Sql {
    fn new(schema: &str) -> Self {
        let records = format!("\"{schema}\".token_records");
        let leases = format!("\"{schema}\".token_leases");
        let put = format!(
            "UPDATE {records} SET org_id = $1, user_id = $2, client_id = $3, status = $4, \
               version = $5, key_id = $6, sealed = $7, header = $11, header_version = $5, \
               updated_at = now() \
             WHERE key = $8 AND version = $9 AND key_id = ANY($10)"
        );
        Self {
            get: format!(
                "SELECT version, status, sealed, org_id, user_id, client_id, key_id \
                 FROM {records} WHERE key = $1"
            ),
            // `key > $5` with '' for the first page (every key is greater) lets the planner
            // walk the primary key from the cursor.
            list: format!(
                "SELECT key, version, status, sealed, org_id, user_id, client_id, key_id \
                 FROM {records} \
                 WHERE ($1::text IS NULL OR org_id = $1) AND ($2::text IS NULL OR user_id = $2) \
                   AND ($3::text IS NULL OR client_id = $3) AND ($4::text IS NULL OR status = $4) \
                   AND ($7::text IS NULL OR right(key, length($7)) = $7) \
                   AND key > $5 \
                 ORDER BY key LIMIT $6"
            ),
            insert: format!(
                "INSERT INTO {records} \
                   (key, org_id, user_id, client_id, status, version, key_id, sealed, header, \
                    header_version, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $8, 1, now()) ON CONFLICT (key) DO NOTHING"
            ),
            // The lease row is locked (FOR SHARE) until the write commits: a take-over or
            // renewal cannot slip between the check and the write.
            put_leased: format!(
                "{put} AND EXISTS (SELECT 1 FROM {leases} AS l \
                   WHERE l.key = $8 AND l.holder = $12 AND l.fence = $13 \
                     AND l.expires_at > {NOW_MS} FOR SHARE)"
            ),
            // The lease row the write locked (FOR SHARE, in the same statement) is freed only
            // if the write happened, and both commit together: one durable commit, not two.
            put_released: format!(
                "WITH saved AS ({put} AND EXISTS (SELECT 1 FROM {leases} AS l \
                   WHERE l.key = $8 AND l.holder = $12 AND l.fence = $13 \
                     AND l.expires_at > {NOW_MS} FOR SHARE) RETURNING 1), \
                 freed AS (UPDATE {leases} SET holder = NULL, fence = NULL, expires_at = NULL \
                   WHERE key = $8 AND holder = $12 AND fence = $13 \
                     AND EXISTS (SELECT 1 FROM saved) RETURNING 1) \
                 SELECT count(*) FROM saved"
            ),
            put,
            header: format!(
                "SELECT version, status, header, header_version FROM {records} WHERE key = $1"
            ),
            record_state: format!("SELECT version, key_id FROM {records} WHERE key = $1"),
            delete: format!(
                "DELETE FROM {records} WHERE key = $1 AND ($2::bigint IS NULL OR version = $2)"
            ),
            version_of: format!("SELECT version FROM {records} WHERE key = $1"),
            // In an upsert's SET, `l.` is the row's old value. The holder asking again before
            // expiry renews (same fence); a free or expired lease gets the next fence.
            acquire: format!(
                "INSERT INTO {leases} AS l (key, last_fence, holder, fence, expires_at) \
                 VALUES ($1, 1, $2, 1, {NOW_MS} + $3) \
                 ON CONFLICT (key) DO UPDATE SET \
                   fence = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > {NOW_MS} \
                     THEN l.fence ELSE l.last_fence + 1 END, \
                   last_fence = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > {NOW_MS} \
                     THEN l.last_fence ELSE l.last_fence + 1 END, \
                   holder = EXCLUDED.holder, \
                   expires_at = EXCLUDED.expires_at \
                 WHERE l.holder IS NULL OR l.expires_at <= {NOW_MS} OR l.holder = EXCLUDED.holder \
                 RETURNING fence, expires_at"
            ),
            release: format!(
                "UPDATE {leases} SET holder = NULL, fence = NULL, expires_at = NULL \
                 WHERE key = $1 AND holder = $2 AND fence = $3"
            ),
            lease: format!(
                "SELECT holder, fence, expires_at FROM {leases} \
                 WHERE key = $1 AND holder IS NOT NULL AND expires_at > {NOW_MS}"
            ),
            renew: format!(
                "UPDATE {leases} SET expires_at = {NOW_MS} + $1 \
                 WHERE key = $2 AND holder = $3 AND fence = $4 AND expires_at > {NOW_MS} \
                 RETURNING expires_at"
            ),
            // On the right of a SET, `last_fence` is the row's old value.
            take_over: format!(
                "UPDATE {leases} SET last_fence = last_fence + 1, fence = last_fence + 1, \
                   holder = $1, expires_at = {NOW_MS} + $2 \
                 WHERE key = $3 AND holder = $4 AND fence = $5 \
                 RETURNING fence, expires_at"
            ),
        }
    }
}

impl PostgresStore {
    /// The schema of [`connect`](Self::connect) and [`from_pool`](Self::from_pool).
    pub const DEFAULT_SCHEMA: &'static str = "sfauth";

    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, with
    /// sqlx's query parameters such as `sslmode`) and uses schema
    /// [`DEFAULT_SCHEMA`](Self::DEFAULT_SCHEMA), creating it and its tables if missing.
    pub async fn connect(url: &str, keyring: Keyring) -> Result<Self> {
        Self::connect_with_schema(url, Self::DEFAULT_SCHEMA, keyring).await
    }

    /// Like [`connect`](Self::connect), in `schema` (lowercase ASCII letters, digits and `_`,
    /// at most 48 bytes): stores in different schemas of one database are independent.
    ///
    /// The pool keeps up to 10 connections and waits up to 10 s for one; build a pool of your
    /// own and use [`from_pool_with_schema`](Self::from_pool_with_schema) for other settings.
    pub async fn connect_with_schema(url: &str, schema: &str, keyring: Keyring) -> Result<Self> {
        check_schema(schema)?;
        let options = parse_url(url)?;
        migrate(&options, schema).await?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        Ok(Self::assemble(pool, schema, keyring))
    }

    /// Uses `pool` and schema [`DEFAULT_SCHEMA`](Self::DEFAULT_SCHEMA), creating it and its
    /// tables if missing.
    pub async fn from_pool(pool: PgPool, keyring: Keyring) -> Result<Self> {
        Self::from_pool_with_schema(pool, Self::DEFAULT_SCHEMA, keyring).await
    }

    /// Uses `pool` and `schema`, creating them if missing. Statements name the schema, so the
    /// pool's connections need no `search_path`; the migrations and the watch listener run on
    /// connections of their own, made with the pool's connect options.
    pub async fn from_pool_with_schema(
        pool: PgPool,
        schema: &str,
        keyring: Keyring,
    ) -> Result<Self> {
        check_schema(schema)?;
        migrate(&pool.connect_options(), schema).await?;
        Ok(Self::assemble(pool, schema, keyring))
    }

    fn assemble(pool: PgPool, schema: &str, keyring: Keyring) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                key_ids: keyring.key_ids().map(str::to_owned).collect(),
                keyring,
                schema: schema.to_owned(),
                channel: format!("{schema}.token_changes"),
                sql: Sql::new(schema),
                listener: OnceLock::new(),
            }),
        }
    }

    /// The schema holding this store's tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Stops the watch listener and closes every connection of the pool. Later calls fail.
    pub async fn close(&self) {
        if let Some(listener) = self.inner.listener.get() {
            listener.stop();
        }
        self.inner.pool.close().await;
    }

    /// `put`, and with `release` also the release of `lease` in the same statement (see
    /// [`TokenStore::put_and_release`]).
    async fn write(
        &self,
        record: TokenRecord,
        expected_version: u64,
        lease: Option<&Lease>,
        release: bool,
    ) -> Result<u64> {
        let name = record.key.to_string();
        if let Some(lease) = lease {
            check_key(lease, &record.key)?;
        }
        let version = next_version(expected_version)?;
        let Some((version_column, fence)) = sql_columns(version, lease) else {
            return Err(self.why_not_written(&name, expected_version).await?);
        };
        let sealed = seal_record(&self.inner.keyring, &record, version)?;
        let clear = ClearFields::of(&record, self.inner.keyring.current_key_id());
        let sql = match (lease, release) {
            (Some(_), true) => &self.inner.sql.put_released,
            (Some(_), false) => &self.inner.sql.put_leased,
            (None, _) => &self.inner.sql.put,
        };
        let mut statement = sqlx::query(sql)
            .bind(clear.org_id)
            .bind(clear.user_id)
            .bind(clear.client_id)
            .bind(clear.status)
            .bind(version_column)
            .bind(clear.key_id)
            .bind(sealed)
            .bind(&name)
            .bind(to_i64(expected_version, "version")?)
            .bind(&self.inner.key_ids)
            .bind(header_field(&record));
        if let (Some(lease), Some(fence)) = (lease, fence) {
            statement = statement.bind(lease.holder.as_str()).bind(fence);
        }
        let written = if release && lease.is_some() {
            let saved: i64 = statement
                .try_map(|row: sqlx::postgres::PgRow| sqlx::Row::try_get(&row, 0))
                .fetch_one(&self.inner.pool)
                .await
                .map_err(|e| backend("writing record", e))?;
            saved == 1
        } else {
            let done = statement
                .execute(&self.inner.pool)
                .await
                .map_err(|e| backend("writing record", e))?;
            done.rows_affected() == 1
        };
        if written {
            return Ok(version);
        }
        Err(self.why_not_written(&name, expected_version).await?)
    }

    /// Why a put of `name` at `expected` changed no row: missing, stale, at the end of its
    /// version counter, sealed with an unknown key, or (all else holding) the lease was lost.
    async fn why_not_written(&self, name: &str, expected: u64) -> Result<Error> {
        let row = sqlx::query(&self.inner.sql.record_state)
            .bind(name)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| backend("reading record", e))?;
        let Some(row) = row else {
            return Ok(refusal(name, None, expected, &self.inner.keyring));
        };
        let current: i64 = column(&row, "version")?;
        let key_id: &str = column(&row, "key_id")?;
        Ok(refusal(
            name,
            Some((current, key_id)),
            expected,
            &self.inner.keyring,
        ))
    }

    /// The listener, started on first use.
    fn listener(&self) -> Result<&Listener> {
        if let Some(listener) = self.inner.listener.get() {
            return Ok(listener);
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::new(
                ErrorKind::Backend,
                "postgres: watching needs a tokio runtime",
            )
        })?;
        Ok(self
            .inner
            .listener
            .get_or_init(|| Listener::start(&runtime, &self.inner.pool, &self.inner.channel)))
    }
}

/// A column of a row, or `Corrupt` if it is missing or of another type (`Row::get` would panic).
fn column<'r, T>(row: &'r PgRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(name)
        .map_err(|e| Error::with_source(ErrorKind::Corrupt, format!("postgres: column {name}"), e))
}

/// Opens a row of `key`, checking every clear column against the sealed record.
fn open_row(keyring: &Keyring, key: &str, row: &PgRow) -> Result<TokenRecord> {
    let version = to_u64(column(row, "version")?, "version")?;
    let sealed: &[u8] = column(row, "sealed")?;
    let clear = ClearFields {
        org_id: column(row, "org_id")?,
        user_id: column(row, "user_id")?,
        client_id: column(row, "client_id")?,
        status: column(row, "status")?,
        key_id: column(row, "key_id")?,
    };
    open_checked(keyring, key, version, sealed, &clear)
}

/// The entries of listed rows: a row whose key cannot be read fails them all, a record that
/// cannot be opened is its entry's error.
fn open_rows(keyring: &Keyring, rows: &[PgRow]) -> Result<Vec<ListEntry>> {
    rows.iter()
        .map(|row| {
            let name: &str = column(row, "key")?;
            let key = name.parse().map_err(|_| {
                Error::corrupt(format!("postgres: a stored key is not a key: {name}"))
            })?;
            Ok(ListEntry::new(key, open_row(keyring, name, row)))
        })
        .collect()
}

/// Pages with fewer rows are opened by the listing task alone: handing work to another thread
/// costs more than it saves.
const PARALLEL_OPEN_MIN_ROWS: usize = 128;

/// At most this many tasks open one page.
const MAX_OPEN_TASKS: usize = 4;

/// Opens a page of listed rows, in order. Opening is most of the cost of a listing
/// (decrypting and parsing each record), so a large page is split across blocking tasks, one
/// per core, while this task opens the first part (as the SQLite store does).
async fn open_page(keyring: &Keyring, rows: Vec<PgRow>) -> Result<Vec<ListEntry>> {
    let parts = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(MAX_OPEN_TASKS);
    if parts < 2 || rows.len() < PARALLEL_OPEN_MIN_ROWS {
        return open_rows(keyring, &rows);
    }
    let chunk = rows.len().div_ceil(parts);
    let mut rows = rows.into_iter();
    let first: Vec<PgRow> = rows.by_ref().take(chunk).collect();
    let mut others = Vec::with_capacity(parts.saturating_sub(1));
    loop {
        let part: Vec<PgRow> = rows.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        let keyring = keyring.clone();
        others.push(tokio::task::spawn_blocking(move || {
            open_rows(&keyring, &part)
        }));
    }
    let mut records = open_rows(keyring, &first)?;
    for part in others {
        let part = part.await.map_err(|join| {
            Error::new(
                ErrorKind::Backend,
                format!("postgres: opening listed records failed: {join}"),
            )
        })??;
        records.extend(part);
    }
    Ok(records)
}

/// A lease as a statement returned it (`fence`, `expires_at`).
fn lease_of(key: &TokenKey, holder: &str, row: &PgRow) -> Result<Lease> {
    Ok(Lease {
        key: key.clone(),
        holder: holder.to_owned(),
        fence: to_u64(column(row, "fence")?, "fence")?,
        expires_at: from_millis(column(row, "expires_at")?),
    })
}

#[async_trait]
impl TokenStore for PostgresStore {
    async fn get(&self, key: &TokenKey) -> Result<Option<TokenRecord>> {
        let name = key.to_string();
        let row = sqlx::query(&self.inner.sql.get)
            .bind(&name)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| backend("reading record", e))?;
        row.map(|row| open_row(&self.inner.keyring, &name, &row))
            .transpose()
    }

    async fn header(&self, key: &TokenKey) -> Result<Option<RecordHeader>> {
        let name = key.to_string();
        let row = sqlx::query(&self.inner.sql.header)
            .bind(&name)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| backend("reading record header", e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let version: i64 = column(&row, "version")?;
        let status: &str = column(&row, "status")?;
        let header: Option<&str> = column(&row, "header")?;
        let header_version: Option<i64> = column(&row, "header_version")?;
        if let Some(header) = header
            && header_version == Some(version)
            && status == StatusKind::Active.as_str()
            && let Ok(version) = u64::try_from(version)
            && let Some(header) = parse_header(key, version, header)?
        {
            return Ok(Some(header));
        }
        // Not active (its reason is sealed), a refresh in flight (its mark is), or written by a
        // version without headers: the record itself answers, as it is now.
        Ok(self.get(key).await?.map(RecordHeader::with_record))
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        self.list_entries(query).await?.into_page()
    }

    async fn list_entries(&self, query: &ListQuery) -> Result<EntryPage> {
        let limit = query.effective_limit();
        let rows = sqlx::query(&self.inner.sql.list)
            .bind(query.org_id.as_ref().map(|id| id.as_str()))
            .bind(query.user_id.as_ref().map(|id| id.as_str()))
            .bind(query.client_id.as_deref())
            .bind(query.status.map(|status| status.as_str()))
            .bind(query.after.as_ref().map_or("", |cursor| cursor.last_key()))
            .bind(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX))
            // The label is the end of the key string, compared exactly.
            .bind(query.label_suffix())
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| backend("listing records", e))?;
        let entries = open_page(&self.inner.keyring, rows).await?;
        Ok(EntryPage::from_matches(entries, limit))
    }

    async fn insert(&self, record: TokenRecord) -> Result<u64> {
        let name = record.key.to_string();
        let sealed = seal_record(&self.inner.keyring, &record, 1)?;
        let clear = ClearFields::of(&record, self.inner.keyring.current_key_id());
        let done = sqlx::query(&self.inner.sql.insert)
            .bind(&name)
            .bind(clear.org_id)
            .bind(clear.user_id)
            .bind(clear.client_id)
            .bind(clear.status)
            .bind(clear.key_id)
            .bind(sealed)
            .bind(header_field(&record))
            .execute(&self.inner.pool)
            .await
            .map_err(|e| backend("inserting record", e))?;
        if done.rows_affected() == 0 {
            return Err(Error::conflict(format!(
                "a record for {name} already exists"
            )));
        }
        Ok(1)
    }

    async fn put<'a>(
        &self,
        record: TokenRecord,
        expected_version: u64,
        lease: Option<&'a Lease>,
    ) -> Result<u64> {
        self.write(record, expected_version, lease, false).await
    }

    async fn put_and_release<'a>(
        &self,
        record: TokenRecord,
        expected_version: u64,
        lease: &'a Lease,
    ) -> Result<u64> {
        self.write(record, expected_version, Some(lease), true)
            .await
    }

    async fn delete(&self, key: &TokenKey, expected_version: Option<u64>) -> Result<bool> {
        let name = key.to_string();
        // A version the column cannot hold matches no row: skip to saying why.
        if let Ok(expected) = expected_version.map(i64::try_from).transpose() {
            let done = sqlx::query(&self.inner.sql.delete)
                .bind(&name)
                .bind(expected)
                .execute(&self.inner.pool)
                .await
                .map_err(|e| backend("deleting record", e))?;
            if done.rows_affected() == 1 {
                return Ok(true);
            }
        }
        let current: Option<i64> = sqlx::query_scalar(&self.inner.sql.version_of)
            .bind(&name)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| backend("reading record", e))?;
        match (current, expected_version) {
            (Some(current), Some(expected)) => Err(Error::stale(&name, current, expected)),
            _ => Ok(false),
        }
    }

    async fn try_acquire(
        &self,
        key: &TokenKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        check_holder(holder)?;
        let row = sqlx::query(&self.inner.sql.acquire)
            .bind(key.to_string())
            .bind(holder)
            .bind(ttl_millis(ttl)?)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| lease_error("acquiring lease", key, e))?;
        row.map(|row| lease_of(key, holder, &row)).transpose()
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        // A fence the column cannot hold was never issued: nothing to release.
        let Ok(fence) = i64::try_from(lease.fence) else {
            return Ok(());
        };
        sqlx::query(&self.inner.sql.release)
            .bind(lease.key.to_string())
            .bind(&lease.holder)
            .bind(fence)
            .execute(&self.inner.pool)
            .await
            .map_err(|e| backend("releasing lease", e))?;
        Ok(())
    }

    async fn lease(&self, key: &TokenKey) -> Result<Option<Lease>> {
        let row = sqlx::query(&self.inner.sql.lease)
            .bind(key.to_string())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| backend("reading lease", e))?;
        row.map(|row| lease_of(key, column(&row, "holder")?, &row))
            .transpose()
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        let ttl = ttl_millis(ttl)?;
        // A fence the column cannot hold was never issued here: the lease is not current.
        let Ok(fence) = i64::try_from(lease.fence) else {
            return Ok(None);
        };
        let expires_at: Option<i64> = sqlx::query_scalar(&self.inner.sql.renew)
            .bind(ttl)
            .bind(lease.key.to_string())
            .bind(&lease.holder)
            .bind(fence)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| backend("renewing lease", e))?;
        Ok(expires_at.map(|expires_at| Lease {
            expires_at: from_millis(expires_at),
            ..lease.clone()
        }))
    }

    async fn take_over(&self, stale: &Lease, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        check_holder(holder)?;
        let ttl = ttl_millis(ttl)?;
        let Ok(stale_fence) = i64::try_from(stale.fence) else {
            return Ok(None);
        };
        let row = sqlx::query(&self.inner.sql.take_over)
            .bind(holder)
            .bind(ttl)
            .bind(stale.key.to_string())
            .bind(&stale.holder)
            .bind(stale_fence)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| lease_error("taking over lease", &stale.key, e))?;
        row.map(|row| lease_of(&stale.key, holder, &row))
            .transpose()
    }

    fn changes(&self) -> Option<Changes> {
        // Without a runtime there is no listener, and no feed: a caller reads instead.
        let listener = self.listener().ok()?;
        Some(listener.notifier.notices.changes())
    }

    async fn watch(&self, key: &TokenKey) -> Result<Watch> {
        let listener = self.listener()?;
        // Registered before anything else: a notification, or the wake-up of every watch when
        // the listener (re)starts listening, reaches it from here on.
        let mut changed = listener
            .notifier
            .notices
            .subscribe(channel_payload(&key.to_string()));
        // The first watches wait for the first LISTEN, so that the usual case is woken by the
        // write itself rather than by the listener's start. Later, a listener that is down
        // costs no wait: the watch fires when it listens again, or the caller's fallback ends
        // the wait first.
        let mut state = listener.notifier.state.subscribe();
        let _ready = tokio::time::timeout(
            LISTEN_READY_TIMEOUT,
            state.wait_for(|state| *state != ListenState::Starting),
        )
        .await
        .is_ok_and(|ready| ready.is_ok());
        Ok(Watch::new(async move {
            // An error means the store was dropped: nothing more will be heard.
            let _ = changed.changed().await;
        }))
    }
}

/// Where the listener is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListenState {
    /// Before its first connection.
    Starting,
    /// `LISTEN` is active: every write committed from now on is heard.
    Listening,
    /// Between a lost connection and the next.
    Down,
}

/// The per-key channels the listener dispatches to (by [`channel_payload`] of the key), the
/// change feed, and the listener's state.
struct Notifier {
    notices: Notices,
    state: watch::Sender<ListenState>,
}

impl Notifier {
    fn new() -> Self {
        Self {
            notices: Notices::new(),
            state: watch::Sender::new(ListenState::Starting),
        }
    }

    /// Wakes the watches of one key, and passes the header a notification carries (migration
    /// 0003: `hash|version|status|header|key`) to the change feed.
    fn notify(&self, payload: &str) {
        let (hash, rest) = payload
            .split_once('|')
            .map_or((payload, None), |(hash, rest)| (hash, Some(rest)));
        self.notices.wake(hash);
        // `version|status|header`, then the key, whose text may hold separators of its own.
        if let Some(rest) = rest
            && let Some((at, _)) = rest.match_indices('|').nth(2)
        {
            let (notice, key) = rest.split_at(at);
            if let Some(key) = key.strip_prefix('|') {
                self.notices.announce(key, notice);
            }
        }
    }

    fn set_state(&self, state: ListenState) {
        self.state.send_replace(state);
    }
}

/// The store's `LISTEN` task and its heartbeat, stopped when the store is dropped or closed.
struct Listener {
    notifier: Arc<Notifier>,
    tasks: [tokio::task::AbortHandle; 2],
}

impl Listener {
    fn start(runtime: &tokio::runtime::Handle, pool: &PgPool, channel: &str) -> Self {
        let notifier = Arc::new(Notifier::new());
        let listen = runtime.spawn(listen(
            Arc::clone(&notifier),
            (*pool.connect_options()).clone(),
            channel.to_owned(),
        ));
        let heartbeat = runtime.spawn(heartbeat(
            pool.clone(),
            Arc::clone(&notifier),
            channel.to_owned(),
        ));
        Self {
            notifier,
            tasks: [listen.abort_handle(), heartbeat.abort_handle()],
        }
    }

    fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Listens on `channel` for as long as the store lives, reconnecting with backoff.
async fn listen(notifier: Arc<Notifier>, options: PgConnectOptions, channel: String) {
    let mut backoff = RECONNECT_MIN;
    loop {
        // A pool of one per connection, as `PgListener::connect` makes: when a connection is
        // given up (silent, maybe half-read), it goes with its pool and is never reused.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(CONNECT_TIMEOUT)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(options.clone());
        match tokio::time::timeout(CONNECT_TIMEOUT, subscribe(&pool, &channel)).await {
            Ok(Ok(mut listener)) => {
                notifier.set_state(ListenState::Listening);
                // Writes made while nothing listened went unheard: wake every watch to re-read.
                notifier.notices.wake_all();
                backoff = RECONNECT_MIN;
                let why = receive(&notifier, &mut listener).await;
                tracing::warn!(
                    %channel,
                    reason = %why,
                    "postgres: watch listener lost its connection; reconnecting"
                );
            }
            Ok(Err(error)) => {
                tracing::warn!(
                    %channel,
                    %error,
                    "postgres: watch listener cannot listen; watches wait for their fallback"
                );
            }
            Err(_) => {
                tracing::warn!(
                    %channel,
                    "postgres: watch listener timed out connecting; watches wait for their fallback"
                );
            }
        }
        notifier.set_state(ListenState::Down);
        drop(pool);
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2).min(RECONNECT_MAX);
    }
}

async fn subscribe(pool: &PgPool, channel: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// Dispatches notifications until the connection fails or falls silent; returns why.
async fn receive(notifier: &Notifier, listener: &mut PgListener) -> String {
    loop {
        match tokio::time::timeout(SILENCE_LIMIT, listener.try_recv()).await {
            Ok(Ok(Some(notification))) => notifier.notify(notification.payload()),
            // sqlx lost the connection and has already listened again on a new one: what was
            // written in between went unheard.
            Ok(Ok(None)) => notifier.notices.wake_all(),
            Ok(Err(error)) => return error.to_string(),
            Err(_) => {
                return format!(
                    "nothing heard for {}s, not even the heartbeat",
                    SILENCE_LIMIT.as_secs()
                );
            }
        }
    }
}

/// Notifies `channel` with an empty payload (no key's) now and then, so that a listener whose
/// connection died silently notices within [`SILENCE_LIMIT`].
async fn heartbeat(pool: PgPool, notifier: Arc<Notifier>, channel: String) {
    let mut ticks = tokio::time::interval(HEARTBEAT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if *notifier.state.borrow() != ListenState::Listening {
            continue;
        }
        if let Err(error) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(&channel)
            .execute(&pool)
            .await
        {
            tracing::debug!(%channel, %error, "postgres: watch heartbeat failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_wakes_its_key_and_feeds_its_header() {
        let key = crate::notices::key_with_separators();
        let name = key.to_string();
        let hash = channel_payload(&name);
        let notifier = Notifier::new();
        let mut woken = notifier.notices.subscribe(hash.clone());
        let mut feed = notifier.notices.follow();
        notifier.notify(&format!(
            "{hash}|4|active|0:1700000000000::::1700007200000|{name}"
        ));
        assert!(woken.has_changed().unwrap(), "the key's watch is woken");
        let header = feed.try_recv().unwrap();
        assert_eq!((&header.key, header.version), (&key, 4));
        // A bare hash (a lease released, a mark, a writer from before 0003) wakes, feeds nothing.
        woken.mark_unchanged();
        notifier.notify(&hash);
        assert!(woken.has_changed().unwrap());
        assert!(feed.try_recv().is_err());
    }

    #[test]
    fn schema_names_are_checked() {
        for good in ["sfauth", "_x", "tenant_42", &"a".repeat(MAX_SCHEMA_LEN)] {
            assert!(check_schema(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Sfauth",
            "9lives",
            "pg_temp",
            "a-b",
            "a\"b",
            "a b",
            &"a".repeat(MAX_SCHEMA_LEN + 1),
        ] {
            assert_eq!(
                check_schema(bad).unwrap_err().kind(),
                ErrorKind::Config,
                "{bad}"
            );
        }
    }

    #[test]
    fn urls_are_checked_and_never_quoted() {
        for bad in [
            "not a url",
            "mysql://user:hunter2@localhost/db",
            "postgres://user:hunter2@localhost:notaport/db",
            "postgres://user:hunter2@localhost/db?sslmode=sometimes",
        ] {
            let error = parse_url(bad).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Config, "{bad}");
            let shown = format!("{error} {error:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        let options = parse_url("postgresql://user:hunter2@db.example:6543/tokens").unwrap();
        assert_eq!(describe(&options), "db.example:6543/tokens as user");
    }

    #[test]
    fn payloads_are_the_sha256_of_the_key() {
        // As PostgreSQL computes it: encode(sha256(convert_to('abc', 'UTF8')), 'hex').
        assert_eq!(
            channel_payload("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn ttls_are_bounded() {
        assert_eq!(ttl_millis(Duration::from_millis(1500)).unwrap(), 1500);
        assert_eq!(
            ttl_millis(Duration::MAX).unwrap_err().kind(),
            ErrorKind::Config
        );
    }
}
