//! [`SqliteStore`]: every record in one SQLite file, through sqlx (feature `sqlite`).
//!
//! See [`SqliteStore`] for the guarantees and how they are kept.

use std::borrow::Cow;
use std::fs;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::TryStreamExt as _;
use sfauth_core::TokenKey;
use sqlx::Row as _;
use sqlx::query::Query;
use sqlx::sqlite::{
    Sqlite, SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};

use crate::crypto::{ClearFields, Keyring, create_private_dir, open_checked, seal_record};
use crate::error::{Error, ErrorKind, Result};
use crate::lease::{check_holder, check_key, expiry, refusal, sql_columns};
use crate::record::{
    EntryPage, HeaderPage, Lease, ListEntry, ListPage, ListQuery, RecordHeader, StatusKind,
    TokenRecord, from_millis, next_version,
};
use crate::store::TokenStore;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`TokenStore`] in one SQLite file, records sealed with a [`Keyring`].
///
/// Safe to share between tasks (it holds a connection pool), between handles and between
/// processes on one machine. Not for network file systems: SQLite's WAL needs shared memory.
///
/// The database runs in WAL mode with `synchronous = FULL` (a write that returned survives a
/// power cut) and a busy timeout, so several processes can share one file. The schema is
/// embedded (`migrations/`) and applied on open.
///
/// Every conditional write is a single SQL statement: SQLite takes the write lock at the start
/// of a writing statement, so the check (`WHERE version = ?`, the lease `EXISTS`) and the write
/// are one atomic step, as with `BEGIN IMMEDIATE`, without a read-then-upgrade that WAL mode
/// would answer with `SQLITE_BUSY`. When such a statement changes no row, a second read says
/// why (missing, stale, lease lost, unknown key); nothing was written either way.
///
/// Records are sealed as described on [`Keyring`]; the org id, user id, client id, status,
/// version and key id stay in clear columns for listing and for the checks of a
/// compare-and-swap, and are checked against the sealed record when it is read.
///
/// ```no_run
/// use sfauth_storage::{Keyring, SqliteStore};
///
/// # async fn open() -> sfauth_storage::Result<()> {
/// let path = SqliteStore::default_path()?;
/// let keyring = Keyring::from_key_file(&path.with_file_name("tokens.key"))?;
/// let store = SqliteStore::open(&path, keyring).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    keyring: Keyring,
    path: PathBuf,
}

fn backend(what: &str, error: sqlx::Error) -> Error {
    Error::with_source(ErrorKind::Backend, format!("sqlite: {what}"), error)
}

/// An error of a statement that computes `last_fence + 1`: SQLite turns an integer overflow
/// into a REAL, which the STRICT table refuses (SQLITE_CONSTRAINT_DATATYPE, 3091).
fn lease_error(what: &str, key: &TokenKey, error: sqlx::Error) -> Error {
    let overflowed =
        matches!(&error, sqlx::Error::Database(db) if db.code().as_deref() == Some("3091"));
    if overflowed {
        return crate::lease::fence_exhausted("sqlite", key, error);
    }
    backend(what, error)
}

fn to_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn to_i64(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::new(ErrorKind::Backend, format!("{what} is too large")))
}

fn to_u64(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::corrupt(format!("stored {what} is negative")))
}

impl SqliteStore {
    /// The default database: `tokens.db` in an `sfauth` folder of the user's data directory
    /// (`$XDG_DATA_HOME/sfauth/tokens.db`, else `~/.local/share/sfauth/tokens.db` on Linux;
    /// `~/Library/Application Support/sfauth/tokens.db` on macOS).
    pub fn default_path() -> Result<PathBuf> {
        dirs::data_dir()
            .map(|dir| dir.join("sfauth").join("tokens.db"))
            .ok_or_else(|| Error::config("no data directory for this user (is HOME set?)"))
    }

    /// Opens the database at `path`, creating it (mode 0600, parent directories 0700) and its
    /// schema if missing.
    pub async fn open(path: impl AsRef<Path>, keyring: Keyring) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        // SQLite gives its journal files the database file's mode, so creating it private
        // keeps them private too.
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        if let Ok(meta) = file.metadata()
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "token database is readable by group or others");
        }
        drop(file);

        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|e| backend("connect options", e))?
            .filename(&path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            // sqlx's worker thread hands rows over one at a time through a channel of this
            // size: with the default 50 a listing page of 1000 rows wakes the listing task (and
            // blocks the worker) dozens of times, which cost a warm start more than the rows.
            .row_buffer_size(LISTING_ROW_BUFFER);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| backend("opening database", e))?;
        // Two processes opening a new file at once can race on the schema: the loser fails,
        // and its second try finds the migration applied.
        if MIGRATOR.run(&pool).await.is_err() {
            MIGRATOR
                .run(&pool)
                .await
                .map_err(|e| Error::with_source(ErrorKind::Backend, "sqlite: migrating", e))?;
        }
        Ok(Self {
            pool,
            keyring,
            path,
        })
    }

    /// Opens [`SqliteStore::default_path`].
    pub async fn open_default(keyring: Keyring) -> Result<Self> {
        Self::open(Self::default_path()?, keyring).await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes every connection, checkpointing the WAL. Later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn known_key_ids(&self) -> Result<String> {
        serde_json::to_string(&self.keyring.key_ids().collect::<Vec<_>>())
            .map_err(|e| Error::with_source(ErrorKind::Backend, "encoding key ids", e))
    }
}

impl SqliteStore {
    /// Why a put of `name` at `expected` changed no row: missing, stale, at the end of its
    /// version counter, sealed with an unknown key, or (all else holding) the lease was lost.
    async fn why_not_written(&self, name: &str, expected: u64) -> Result<Error> {
        let row = sqlx::query("SELECT version, key_id FROM token_records WHERE key = ?1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| backend("reading record", e))?;
        let Some(row) = row else {
            return Ok(refusal(name, None, expected, &self.keyring));
        };
        let current: i64 = column(&row, 0, "version")?;
        let key_id: String = column(&row, 1, "key_id")?;
        Ok(refusal(
            name,
            Some((current, &key_id)),
            expected,
            &self.keyring,
        ))
    }
}

/// Column `index` (called `name`) of a row, or `Corrupt` if it is missing or of another type
/// (`Row::get` would panic).
fn column<'r, T>(row: &'r SqliteRow, index: usize, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(index)
        .map_err(|e| Error::with_source(ErrorKind::Corrupt, format!("sqlite: column {name}"), e))
}

/// Rows sqlx's worker may get ahead of the task reading them: a whole listing page
/// ([`ListQuery::MAX_LIMIT`] and the one beyond it that says whether there is more).
const LISTING_ROW_BUFFER: usize = ListQuery::MAX_LIMIT + 1;

/// Listed rows are opened in chunks of this many, each on a blocking thread, as they arrive.
const STREAM_CHUNK_ROWS: usize = 256;

/// The columns a record is read with, in this order (after `key` in a listing), for `concat!`.
macro_rules! record_columns {
    () => {
        "version, status, sealed, org_id, user_id, client_id, key_id"
    };
}

/// The entries of listed rows: a row whose key cannot be read fails them all, a record that
/// cannot be opened is its entry's error.
/// Reads a listing's `rows` (at most `limit` + 1) and decodes them with `decode`, a chunk at a
/// time on blocking threads while sqlx's worker is still producing the rest, so that the two
/// overlap; the result keeps the rows' order.
async fn decode_streamed<T: Send + 'static>(
    keyring: &Keyring,
    mut rows: impl futures_util::Stream<Item = std::result::Result<SqliteRow, sqlx::Error>> + Unpin,
    limit: usize,
    what: &str,
    decode: fn(&Keyring, &[SqliteRow]) -> Result<Vec<T>>,
) -> Result<Vec<T>> {
    let mut decoding = Vec::new();
    let mut chunk = Vec::with_capacity(STREAM_CHUNK_ROWS);
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(|e| backend("listing records", e))?
    {
        chunk.push(row);
        if chunk.len() == STREAM_CHUNK_ROWS {
            let part = std::mem::replace(&mut chunk, Vec::with_capacity(STREAM_CHUNK_ROWS));
            let keyring = keyring.clone();
            decoding.push(tokio::task::spawn_blocking(move || decode(&keyring, &part)));
        }
    }
    drop(rows);
    let mut decoded = Vec::with_capacity(limit.saturating_add(1));
    for part in decoding {
        decoded.extend(part.await.map_err(|join| {
            Error::new(
                ErrorKind::Backend,
                format!("sqlite: {what} listed records failed: {join}"),
            )
        })??);
    }
    decoded.extend(decode(keyring, &chunk)?);
    Ok(decoded)
}

fn decode_rows(keyring: &Keyring, rows: &[SqliteRow]) -> Result<Vec<ListEntry>> {
    rows.iter()
        .map(|row| {
            let name: &str = column(row, 0, "key")?;
            let key = name.parse().map_err(|_| {
                Error::corrupt(format!("sqlite: a stored key is not a key: {name}"))
            })?;
            Ok(ListEntry::new(key, decode_row(keyring, name, row, 1)))
        })
        .collect()
}

/// Opens a row of `key` whose `record_columns!()` start at column `first`, checking every clear
/// column (the ones queries filter and writes are conditioned on) against the sealed record.
/// The columns are borrowed from the row and found by position: a listing reads 100,000 rows
/// on a warm start, and a copy or a name lookup per column was a good part of each row's cost.
fn decode_row(keyring: &Keyring, key: &str, row: &SqliteRow, first: usize) -> Result<TokenRecord> {
    let at = |offset: usize| first.saturating_add(offset);
    let version = to_u64(column(row, at(0), "version")?, "version")?;
    let sealed: &[u8] = column(row, at(2), "sealed")?;
    let clear = ClearFields {
        status: column(row, at(1), "status")?,
        org_id: column(row, at(3), "org_id")?,
        user_id: column(row, at(4), "user_id")?,
        client_id: column(row, at(5), "client_id")?,
        key_id: column(row, at(6), "key_id")?,
    };
    open_checked(keyring, key, version, sealed, &clear)
}

/// A record's clear header columns (migration 0002), as written with the record.
struct ClearHeader {
    issued_ms: i64,
    last_refreshed_ms: Option<i64>,
    lifetime_ms: Option<i64>,
    tokens_issued_ms: Option<i64>,
    tokens_expires_ms: Option<i64>,
}

impl ClearHeader {
    fn of(record: &TokenRecord) -> Self {
        Self {
            issued_ms: to_millis(record.issued_at),
            last_refreshed_ms: record.last_refreshed_at.map(to_millis),
            lifetime_ms: record
                .learned_lifetime
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            tokens_issued_ms: record.tokens.issued_at.map(to_millis),
            tokens_expires_ms: record.tokens.expires_at.map(to_millis),
        }
    }
}

/// A header listing, one statement (so one snapshot of the file). `page` is the page's rows
/// with the clear header columns and whether the header can be trusted (written at the row's
/// version, status active, a key id of this keyring, `?8` being `,id,id,`). Its first row
/// (key NULL) carries every trusted header of the page as one JSON array, and the rows after
/// it, in key order, are the others' record columns (`record_columns!()`), to be opened.
///
/// The headers travel as one value because sqlx's SQLite worker hands each row of a result to
/// the async side on its own (a copy of every column, a channel send, a wake-up): some 12 µs a
/// row, where SQLite reads and formats one in about 2. A warm start lists 100,000 rows.
///
/// `page` reads nothing but columns of the covering index `token_records_header` (migration
/// 0003), so SQLite walks that index alone; the sealed blobs, most of the file, are read only
/// for the rows to open, by key. A column added to `page` must be added to the index too.
/// Those rows are looked up through `IN`, which SQLite walks in key order, so the `ORDER BY`
/// costs no sort and they stream out to be opened as they are read (with a join, every blob of
/// the page was copied into a sorter first, and a file from before the headers lost a fifth).
const LIST_HEADERS: &str = concat!(
    "WITH page AS MATERIALIZED ( \
       SELECT key, version, issued_ms, last_refreshed_ms, lifetime_ms, tokens_issued_ms, \
         tokens_expires_ms, \
         CASE WHEN header_version = version AND status = 'active' \
           AND instr(?8, ',' || key_id || ',') > 0 THEN 1 ELSE 0 END AS clear \
       FROM token_records \
       WHERE (?1 IS NULL OR org_id = ?1) AND (?2 IS NULL OR user_id = ?2) \
         AND (?3 IS NULL OR client_id = ?3) AND (?4 IS NULL OR status = ?4) \
         AND (?7 IS NULL OR substr(key, -length(?7)) = ?7) \
         AND key > ?5 \
       ORDER BY key LIMIT ?6) \
     SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
       json_group_array(json_array(key, version, issued_ms, last_refreshed_ms, lifetime_ms, \
         tokens_issued_ms, tokens_expires_ms)) \
     FROM page WHERE clear = 1 \
     UNION ALL \
     SELECT r.key, ",
    "r.version, r.status, r.sealed, r.org_id, r.user_id, r.client_id, r.key_id",
    ", NULL FROM token_records AS r WHERE r.key IN (SELECT key FROM page WHERE clear = 0) \
     ORDER BY 1"
);

/// `listing` with `query`'s filters, cursor and page size bound as `?1`..`?7`, the parameters
/// both listings (`list_entries`, [`LIST_HEADERS`]) share.
fn bind_listing<'q>(
    listing: Query<'q, Sqlite, SqliteArguments<'q>>,
    query: &'q ListQuery,
    limit: usize,
) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    listing
        .bind(query.org_id.as_ref().map(|id| id.as_str()))
        .bind(query.user_id.as_ref().map(|id| id.as_str()))
        .bind(query.client_id.as_deref())
        .bind(query.status.map(|status| status.as_str()))
        // A plain `key > ?` (every key is greater than the empty string) lets SQLite walk the
        // primary key from the cursor; an `IS NULL OR` around it made every page a full scan.
        .bind(query.after.as_ref().map_or("", |cursor| cursor.last_key()))
        .bind(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX))
        // The label is the end of the key string: compared exactly (LIKE would fold case).
        .bind(query.label_suffix())
}

/// This keyring's key ids as `,id,id,`, the form [`LIST_HEADERS`] looks them up in.
fn known_ids_list(keyring: &Keyring) -> String {
    let mut list = String::from(",");
    for id in keyring.key_ids() {
        list.push_str(id);
        list.push(',');
    }
    list
}

/// A trusted header as [`LIST_HEADERS`] writes it: key, version, then the clear header
/// columns of migration 0002.
#[derive(serde::Deserialize)]
struct ClearRow<'a>(
    #[serde(borrow)] Cow<'a, str>,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// The trusted headers of a page, from the first row of [`LIST_HEADERS`], in key order.
///
/// The clear times are not checked against the sealed record here (that would need opening
/// it): whoever could change them could only move when a tenant is looked at, and the record
/// the manager then opens is the authority.
fn clear_headers(row: &SqliteRow) -> Result<Vec<RecordHeader>> {
    let key: Option<&str> = column(row, 0, "key")?;
    let json: Option<&str> = column(row, 8, "headers")?;
    let (None, Some(json)) = (key, json) else {
        return Err(Error::new(
            ErrorKind::Backend,
            "sqlite: the header listing did not start with its headers",
        ));
    };
    let mut rows: Vec<ClearRow<'_>> = serde_json::from_str(json)
        .map_err(|e| Error::with_source(ErrorKind::Corrupt, "sqlite: listed headers", e))?;
    // The page was read in key order and is aggregated in that order; SQLite does not promise
    // an aggregate's order, so it is checked (and restored) rather than assumed.
    if !rows.is_sorted_by(|a, b| a.0 < b.0) {
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    }
    rows.into_iter().map(clear_header).collect()
}

fn clear_header(row: ClearRow<'_>) -> Result<RecordHeader> {
    let ClearRow(name, version, issued_ms, last_refreshed_ms, lifetime_ms, issued, expires) = row;
    let key: TokenKey = name
        .parse()
        .map_err(|_| Error::corrupt(format!("sqlite: a stored key is not a key: {name}")))?;
    let Some(issued_ms) = issued_ms else {
        return Err(Error::corrupt(format!(
            "sqlite: the clear header of {name} has no issue time"
        )));
    };
    let mut header = RecordHeader::of_parts(key, to_u64(version, "version")?, StatusKind::Active);
    header.issued_at = from_millis(issued_ms);
    header.last_refreshed_at = last_refreshed_ms.map(from_millis);
    header.learned_lifetime =
        lifetime_ms.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
    header.tokens_issued_at = issued.map(from_millis);
    header.tokens_expires_at = expires.map(from_millis);
    Ok(header)
}

/// The headers of the listed rows whose clear header cannot be trusted (`key`, then
/// `record_columns!()`): each row opened, so that an old row, a record whose reason is sealed
/// and a record sealed with another key are met as a full listing meets them.
fn opened_headers(keyring: &Keyring, rows: &[SqliteRow]) -> Result<Vec<RecordHeader>> {
    rows.iter()
        .map(|row| {
            let name: &str = column(row, 0, "key")?;
            decode_row(keyring, name, row, 1).map(RecordHeader::with_record)
        })
        .collect()
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn get(&self, key: &TokenKey) -> Result<Option<TokenRecord>> {
        let name = key.to_string();
        let row = sqlx::query(concat!(
            "SELECT ",
            record_columns!(),
            " FROM token_records WHERE key = ?1"
        ))
        .bind(&name)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| backend("reading record", e))?;
        row.map(|row| decode_row(&self.keyring, &name, &row, 0))
            .transpose()
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        self.list_entries(query).await?.into_page()
    }

    async fn list_entries(&self, query: &ListQuery) -> Result<EntryPage> {
        let limit = query.effective_limit();
        let rows = sqlx::query(concat!(
            "SELECT key, ",
            record_columns!(),
            " FROM token_records \
             WHERE (?1 IS NULL OR org_id = ?1) AND (?2 IS NULL OR user_id = ?2) \
               AND (?3 IS NULL OR client_id = ?3) AND (?4 IS NULL OR status = ?4) \
               AND (?7 IS NULL OR substr(key, -length(?7)) = ?7) \
               AND key > ?5 \
             ORDER BY key LIMIT ?6"
        ));
        let rows = bind_listing(rows, query, limit).fetch(&self.pool);
        let entries = decode_streamed(&self.keyring, rows, limit, "opening", decode_rows).await?;
        Ok(EntryPage::from_matches(entries, limit))
    }

    async fn list_headers(&self, query: &ListQuery) -> Result<HeaderPage> {
        let limit = query.effective_limit();
        let mut rows = bind_listing(sqlx::query(LIST_HEADERS), query, limit)
            .bind(known_ids_list(&self.keyring))
            .fetch(&self.pool);
        let first = rows
            .try_next()
            .await
            .map_err(|e| backend("listing records", e))?
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Backend,
                    "sqlite: the header listing returned nothing",
                )
            })?;
        // The trusted headers are parsed on a blocking thread while the rows to open (none in a
        // file this version wrote; every row of a file from before the headers) arrive and are
        // opened as a full listing opens them.
        let clear = tokio::task::spawn_blocking(move || clear_headers(&first));
        let opened = decode_streamed(&self.keyring, rows, limit, "reading", opened_headers).await?;
        let mut headers = clear.await.map_err(|join| {
            Error::new(
                ErrorKind::Backend,
                format!("sqlite: reading listed headers failed: {join}"),
            )
        })??;
        if !opened.is_empty() {
            // Both parts are in key order; a page mixing them (rows written by an older
            // version among newer ones) is put back in order by the keys' string form.
            let mixed = !headers.is_empty();
            headers.extend(opened);
            if mixed {
                headers.sort_by_cached_key(|header| header.key.to_string());
            }
        }
        Ok(HeaderPage::from_matches(headers, limit))
    }

    async fn insert(&self, record: TokenRecord) -> Result<u64> {
        let name = record.key.to_string();
        let sealed = seal_record(&self.keyring, &record, 1)?;
        let header = ClearHeader::of(&record);
        let done = sqlx::query(
            "INSERT INTO token_records \
               (key, org_id, user_id, client_id, status, version, key_id, sealed, updated_at, \
                header_version, issued_ms, last_refreshed_ms, lifetime_ms, tokens_issued_ms, \
                tokens_expires_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8, 1, ?9, ?10, ?11, ?12, ?13) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(&name)
        .bind(record.key.org_id().as_str())
        .bind(record.key.user_id().as_str())
        .bind(record.key.client_id())
        .bind(record.status.kind().as_str())
        .bind(self.keyring.current_key_id())
        .bind(sealed)
        .bind(to_millis(SystemTime::now()))
        .bind(header.issued_ms)
        .bind(header.last_refreshed_ms)
        .bind(header.lifetime_ms)
        .bind(header.tokens_issued_ms)
        .bind(header.tokens_expires_ms)
        .execute(&self.pool)
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
        let name = record.key.to_string();
        if let Some(lease) = lease {
            check_key(lease, &record.key)?;
        }
        let version = next_version(expected_version)?;
        let Some((version_column, fence)) = sql_columns(version, lease) else {
            return Err(self.why_not_written(&name, expected_version).await?);
        };
        let sealed = seal_record(&self.keyring, &record, version)?;
        let header = ClearHeader::of(&record);
        let now = to_millis(SystemTime::now());
        let done = sqlx::query(
            "UPDATE token_records SET org_id = ?1, user_id = ?2, client_id = ?3, status = ?4, \
               version = ?5, key_id = ?6, sealed = ?7, updated_at = ?8, header_version = ?5, \
               issued_ms = ?14, last_refreshed_ms = ?15, lifetime_ms = ?16, \
               tokens_issued_ms = ?17, tokens_expires_ms = ?18 \
             WHERE key = ?9 AND version = ?10 \
               AND key_id IN (SELECT value FROM json_each(?11)) \
               AND (?12 IS NULL OR EXISTS (SELECT 1 FROM token_leases AS l \
                 WHERE l.key = ?9 AND l.holder = ?12 AND l.fence = ?13 AND l.expires_at > ?8))",
        )
        .bind(record.key.org_id().as_str())
        .bind(record.key.user_id().as_str())
        .bind(record.key.client_id())
        .bind(record.status.kind().as_str())
        .bind(version_column)
        .bind(self.keyring.current_key_id())
        .bind(sealed)
        .bind(now)
        .bind(&name)
        .bind(to_i64(expected_version, "version")?)
        .bind(self.known_key_ids()?)
        .bind(lease.map(|lease| lease.holder.as_str()))
        .bind(fence)
        .bind(header.issued_ms)
        .bind(header.last_refreshed_ms)
        .bind(header.lifetime_ms)
        .bind(header.tokens_issued_ms)
        .bind(header.tokens_expires_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| backend("writing record", e))?;
        if done.rows_affected() == 1 {
            return Ok(version);
        }
        Err(self.why_not_written(&name, expected_version).await?)
    }

    async fn delete(&self, key: &TokenKey, expected_version: Option<u64>) -> Result<bool> {
        let name = key.to_string();
        // A version the column cannot hold matches no row: skip to saying why.
        if let Ok(expected) = expected_version.map(i64::try_from).transpose() {
            let done = sqlx::query(
                "DELETE FROM token_records WHERE key = ?1 AND (?2 IS NULL OR version = ?2)",
            )
            .bind(&name)
            .bind(expected)
            .execute(&self.pool)
            .await
            .map_err(|e| backend("deleting record", e))?;
            if done.rows_affected() == 1 {
                return Ok(true);
            }
        }
        let current: Option<i64> =
            sqlx::query_scalar("SELECT version FROM token_records WHERE key = ?1")
                .bind(&name)
                .fetch_optional(&self.pool)
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
        let now = SystemTime::now();
        let expires_at = to_millis(expiry(now, ttl)?);
        // In an upsert's SET, every column on the right is the row's old value.
        let fence: Option<i64> = sqlx::query_scalar(
            "INSERT INTO token_leases (key, last_fence, holder, fence, expires_at) \
             VALUES (?1, 1, ?2, 1, ?3) \
             ON CONFLICT (key) DO UPDATE SET \
               fence = CASE WHEN holder = excluded.holder AND expires_at > ?4 \
                 THEN fence ELSE last_fence + 1 END, \
               last_fence = CASE WHEN holder = excluded.holder AND expires_at > ?4 \
                 THEN last_fence ELSE last_fence + 1 END, \
               holder = excluded.holder, \
               expires_at = excluded.expires_at \
             WHERE holder IS NULL OR expires_at <= ?4 OR holder = excluded.holder \
             RETURNING fence",
        )
        .bind(key.to_string())
        .bind(holder)
        .bind(expires_at)
        .bind(to_millis(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| lease_error("acquiring lease", key, e))?;
        fence
            .map(|fence| {
                Ok(Lease {
                    key: key.clone(),
                    holder: holder.to_owned(),
                    fence: to_u64(fence, "fence")?,
                    expires_at: from_millis(expires_at),
                })
            })
            .transpose()
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        // A fence the column cannot hold was never issued: nothing to release.
        let Ok(fence) = i64::try_from(lease.fence) else {
            return Ok(());
        };
        sqlx::query(
            "UPDATE token_leases SET holder = NULL, fence = NULL, expires_at = NULL \
             WHERE key = ?1 AND holder = ?2 AND fence = ?3",
        )
        .bind(lease.key.to_string())
        .bind(&lease.holder)
        .bind(fence)
        .execute(&self.pool)
        .await
        .map_err(|e| backend("releasing lease", e))?;
        Ok(())
    }

    async fn lease(&self, key: &TokenKey) -> Result<Option<Lease>> {
        let row = sqlx::query(
            "SELECT holder, fence, expires_at FROM token_leases \
             WHERE key = ?1 AND holder IS NOT NULL AND expires_at > ?2",
        )
        .bind(key.to_string())
        .bind(to_millis(SystemTime::now()))
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| backend("reading lease", e))?;
        row.map(|row| {
            Ok(Lease {
                key: key.clone(),
                holder: column(&row, 0, "holder")?,
                fence: to_u64(column(&row, 1, "fence")?, "fence")?,
                expires_at: from_millis(column(&row, 2, "expires_at")?),
            })
        })
        .transpose()
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        let now = SystemTime::now();
        let expires_at = to_millis(expiry(now, ttl)?);
        // A fence the column cannot hold was never issued here: the lease is not current.
        let Ok(fence) = i64::try_from(lease.fence) else {
            return Ok(None);
        };
        let done = sqlx::query(
            "UPDATE token_leases SET expires_at = ?1 \
             WHERE key = ?2 AND holder = ?3 AND fence = ?4 AND expires_at > ?5",
        )
        .bind(expires_at)
        .bind(lease.key.to_string())
        .bind(&lease.holder)
        .bind(fence)
        .bind(to_millis(now))
        .execute(&self.pool)
        .await
        .map_err(|e| backend("renewing lease", e))?;
        Ok((done.rows_affected() == 1).then(|| Lease {
            expires_at: from_millis(expires_at),
            ..lease.clone()
        }))
    }

    async fn take_over(&self, stale: &Lease, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        check_holder(holder)?;
        let expires_at = to_millis(expiry(SystemTime::now(), ttl)?);
        let Ok(stale_fence) = i64::try_from(stale.fence) else {
            return Ok(None);
        };
        // One statement: the check of the stale lease and the new fence are one atomic step.
        // On the right of a SET, `last_fence` is the row's old value.
        let fence: Option<i64> = sqlx::query_scalar(
            "UPDATE token_leases SET last_fence = last_fence + 1, fence = last_fence + 1, \
               holder = ?1, expires_at = ?2 \
             WHERE key = ?3 AND holder = ?4 AND fence = ?5 \
             RETURNING fence",
        )
        .bind(holder)
        .bind(expires_at)
        .bind(stale.key.to_string())
        .bind(&stale.holder)
        .bind(stale_fence)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| lease_error("taking over lease", &stale.key, e))?;
        fence
            .map(|fence| {
                Ok(Lease {
                    key: stale.key.clone(),
                    holder: holder.to_owned(),
                    fence: to_u64(fence, "fence")?,
                    expires_at: from_millis(expires_at),
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Key;

    /// The rule [`LIST_HEADERS`] states in words: the page is read from the covering index
    /// alone. A column added to the query but not to the index makes SQLite read the table (a
    /// warm start over 100,000 rows slows down about threefold) and fails this instead.
    #[tokio::test]
    async fn the_header_listing_reads_the_covering_index_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("plan.db"), Keyring::new(Key::generate()))
            .await
            .unwrap();
        let explain = format!("EXPLAIN QUERY PLAN {LIST_HEADERS}");
        // The filters as a warm start sets them (a client id) and as a listing of everything.
        for client_id in [Some("3MVG9.client"), None] {
            let plan: Vec<String> = sqlx::query(&explain)
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(client_id)
                .bind(None::<&str>)
                .bind("")
                .bind(1001_i64)
                .bind(None::<&str>)
                .bind(",k1,")
                .fetch_all(&store.pool)
                .await
                .unwrap()
                .iter()
                .map(|row| row.get::<String, _>("detail"))
                .collect();
            let plan = plan.join("\n");
            assert!(
                plan.contains("USING COVERING INDEX token_records_header"),
                "{client_id:?}: the page is not read from the covering index:\n{plan}"
            );
            assert!(
                !plan.contains("SCAN token_records\n") && !plan.ends_with("SCAN token_records"),
                "{client_id:?}: the page scans the table:\n{plan}"
            );
        }
        store.close().await;
    }
}
