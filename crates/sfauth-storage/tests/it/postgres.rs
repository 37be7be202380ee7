//! The conformance suite against `PostgresStore` on a real server (`SFAUTH_TEST_POSTGRES_URL`),
//! each harness in a schema of its own; eight stores migrating one new schema at once; a
//! store whose connections are killed under it; typed errors that never show the password.
#![cfg(all(feature = "postgres", feature = "conformance"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "test helpers outside #[test] functions"
)]

use crate::support::damage::{self, Damage};
use crate::support::server;

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rand::Rng as _;
use sfauth_core::TokenKey;
use sfauth_storage::conformance::{Namespace, Persistent};
use sfauth_storage::{ErrorKind, Key, Keyring, PostgresStore, TokenStore};
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

/// The server of this machine and of CI: trust authentication for `postgres` on localhost.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn server_url() -> Option<String> {
    server::server_url("SFAUTH_TEST_POSTGRES_URL", DEFAULT_URL, "PostgreSQL")
}

fn random_lowercase(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(rng.random_range(b'a'..=b'z')))
        .collect()
}

/// Drops its schema when dropped, so that test runs leave nothing behind.
struct Schema {
    url: String,
    name: String,
}

impl Schema {
    fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            name: format!("sfauth_test_{}", random_lowercase(12)),
        }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on: a thread of its own
        // with a runtime of its own does the work.
        let (url, name) = (self.url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&url).await?;
                sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test schema {}: {dropped:?}", self.name);
        }
    }
}

struct Harness {
    keyring: Keyring,
    store: Arc<PostgresStore>,
    /// Raw access to the tables, for damage and inspection.
    admin: PgPool,
    // Last: dropped after the pools above.
    schema: Schema,
}

impl Harness {
    async fn new() -> Option<Self> {
        let url = server_url()?;
        let schema = Schema::new(&url);
        let keyring = Keyring::new(Key::generate());
        let store = PostgresStore::connect_with_schema(&url, &schema.name, keyring.clone())
            .await
            .unwrap();
        let admin = PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .unwrap();
        Some(Self {
            keyring,
            store: Arc::new(store),
            admin,
            schema,
        })
    }

    fn table(&self, name: &str) -> String {
        format!("\"{}\".{name}", self.schema.name)
    }

    async fn execute(&self, sql: &str, key: &TokenKey) -> u64 {
        sqlx::query(sql)
            .bind(key.to_string())
            .execute(&self.admin)
            .await
            .unwrap()
            .rows_affected()
    }
}

#[async_trait]
impl Persistent for Harness {
    fn store(&self) -> Arc<dyn TokenStore> {
        self.store.clone()
    }

    fn keyring(&self) -> Keyring {
        self.keyring.clone()
    }

    async fn reopen(&self, keyring: Keyring) -> sfauth_storage::Result<Arc<dyn TokenStore>> {
        Ok(Arc::new(
            PostgresStore::connect_with_schema(&self.schema.url, &self.schema.name, keyring)
                .await?,
        ))
    }

    /// Every value of every row of the schema, text as its UTF-8 bytes and `sealed` as its
    /// raw bytes (hex would hide a token stored in the clear). The server's files are out of
    /// reach of a test that may run against a remote server.
    async fn raw_bytes(&self) -> Vec<u8> {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar(&format!(
            "SELECT convert_to(concat_ws(' ', key, org_id, user_id, client_id, status, \
               version::text, key_id, updated_at::text), 'UTF8') || sealed FROM {} \
             UNION ALL \
             SELECT convert_to(concat_ws(' ', key, last_fence::text, holder, fence::text, \
               expires_at::text), 'UTF8') FROM {}",
            self.table("token_records"),
            self.table("token_leases")
        ))
        .fetch_all(&self.admin)
        .await
        .unwrap();
        rows.concat()
    }

    async fn read_raw(&self, key: &TokenKey) -> Option<Vec<u8>> {
        sqlx::query_scalar(&format!(
            "SELECT sealed FROM {} WHERE key = $1",
            self.table("token_records")
        ))
        .bind(key.to_string())
        .fetch_optional(&self.admin)
        .await
        .unwrap()
    }

    async fn write_raw(&self, key: &TokenKey, bytes: Vec<u8>) {
        let done = sqlx::query(&format!(
            "UPDATE {} SET sealed = $1 WHERE key = $2",
            self.table("token_records")
        ))
        .bind(bytes)
        .bind(key.to_string())
        .execute(&self.admin)
        .await
        .unwrap();
        assert_eq!(done.rows_affected(), 1);
    }
}

sfauth_storage::conformance_tests!(optional persistent = Harness::new());

/// Eight processes starting at once on a new schema: every store opens, the schema and the
/// migrations are applied exactly once, and they all share the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_stores_migrate_one_new_schema_at_once() {
    let Some(url) = server_url() else { return };
    let schema = Schema::new(&url);
    let keyring = Keyring::new(Key::generate());
    let opening: Vec<_> = (0..8)
        .map(|_| {
            let (url, name, keyring) = (url.clone(), schema.name.clone(), keyring.clone());
            tokio::spawn(
                async move { PostgresStore::connect_with_schema(&url, &name, keyring).await },
            )
        })
        .collect();
    let mut stores = Vec::new();
    for opened in opening {
        stores.push(opened.await.unwrap().expect("every store opens"));
    }

    let mut admin = PgConnection::connect(&url).await.unwrap();
    let applied: Vec<(i64, bool)> = sqlx::query_as(&format!(
        "SELECT version, success FROM \"{}\"._sqlx_migrations ORDER BY version",
        schema.name
    ))
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        applied,
        vec![(1, true), (2, true), (3, true)],
        "each migration applied once"
    );
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename LIKE 'token_%'",
    )
    .bind(&schema.name)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(tables, 2);
    admin.close().await.unwrap();

    let ns = Namespace::new();
    let (key, record) = ns.fresh("eight");
    stores[0].insert(record).await.unwrap();
    for store in &stores {
        assert_eq!(store.get(&key).await.unwrap().unwrap().version, 1);
    }
    // Opening again finds everything applied.
    PostgresStore::connect_with_schema(&url, &schema.name, keyring)
        .await
        .unwrap();
    for store in &stores {
        store.close().await;
    }
}

/// Terminates every backend of `application_name` from another connection; returns how many.
async fn kill_backends(url: &str, application_name: &str) -> i64 {
    let mut admin = PgConnection::connect(url).await.unwrap();
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1 AND pid <> pg_backend_pid()) AS killed",
    )
    .bind(application_name)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    killed
}

/// Connections killed under a store (`pg_terminate_backend`, as a failover or an admin would):
/// operations meanwhile succeed on a fresh connection or fail with `Backend`, never another
/// kind and never a panic; the store keeps working; a watch taken before fires, and the
/// listener comes back and hears writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_are_replaced_and_the_listener_comes_back() {
    let Some(url) = server_url() else { return };
    let schema = Schema::new(&url);
    let keyring = Keyring::new(Key::generate());
    let application_name = format!("sfauth-kill-{}", random_lowercase(8));
    let options = PgConnectOptions::from_str(&url)
        .unwrap()
        .application_name(&application_name);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options);
    let store = Arc::new(
        PostgresStore::from_pool_with_schema(pool, &schema.name, keyring.clone())
            .await
            .unwrap(),
    );
    let ns = Namespace::new();
    let (key, record) = ns.fresh("killed");
    store.insert(record.clone()).await.unwrap();
    let before = store.watch(&key).await.unwrap();
    assert!(before.is_live());
    let waiting = tokio::spawn(before.changed(Duration::from_secs(20)));

    // A writer runs compare-and-swaps in a loop while its connections are killed three times.
    let writer = {
        let (store, record) = (store.clone(), record.clone());
        tokio::spawn(async move {
            let (mut written, mut failed) = (0u32, 0u32);
            let started = Instant::now();
            while started.elapsed() < Duration::from_millis(1500) {
                let current = match store.get(&record.key).await {
                    Ok(current) => current.unwrap().version,
                    Err(error) => {
                        assert_eq!(error.kind(), ErrorKind::Backend, "{error}");
                        failed += 1;
                        continue;
                    }
                };
                match store.put(record.clone(), current, None).await {
                    Ok(_) => written += 1,
                    Err(error) => {
                        // A write whose reply was lost may have committed: the next put
                        // then finds the version moved on, which is a conflict.
                        assert!(
                            matches!(error.kind(), ErrorKind::Backend | ErrorKind::Conflict),
                            "{error}"
                        );
                        failed += 1;
                    }
                }
            }
            (written, failed)
        })
    };
    let mut killed = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        killed += kill_backends(&url, &application_name).await;
    }
    let (written, failed) = writer.await.unwrap();
    assert!(
        killed >= 4,
        "the pool's and the listener's connections: {killed}"
    );
    assert!(written > 0, "writes went through between the kills");
    eprintln!("killed {killed} backends; {written} writes, {failed} failed operations");

    // The store keeps working.
    let current = store.get(&key).await.unwrap().unwrap();
    assert!(current.version > u64::from(written), "every write counted");
    let version = store
        .put(record.clone(), current.version, None)
        .await
        .unwrap();

    // The watch from before the kills fired (its writes, or the listener starting over).
    assert!(waiting.await.unwrap(), "the earlier watch fired");

    // The listener is back: once no wake-up from its restart is pending, a write by another
    // store is heard.
    let other = PostgresStore::connect_with_schema(&url, &schema.name, keyring)
        .await
        .unwrap();
    let mut quiet = false;
    for _ in 0..40 {
        let watch = store.watch(&key).await.unwrap();
        if !watch.changed(Duration::from_millis(250)).await {
            quiet = true;
            break;
        }
    }
    assert!(quiet, "the listener settles");
    let watch = store.watch(&key).await.unwrap();
    other.put(record.clone(), version, None).await.unwrap();
    assert!(
        watch.changed(Duration::from_secs(5)).await,
        "a write is heard after the listener came back"
    );
    other.close().await;
    store.close().await;
}

/// A release wakes a watch on its key (the waiting refresher may take the lease), a
/// renewal does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_a_watch() {
    let Some(h) = Harness::new().await else {
        return;
    };
    let ns = Namespace::new();
    let (key, _) = ns.fresh("release");
    let lease = h
        .store
        .try_acquire(&key, "holder", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let watch = h.store.watch(&key).await.unwrap();
    h.store
        .renew(&lease, Duration::from_secs(30))
        .await
        .unwrap();
    h.store.release(&lease).await.unwrap();
    assert!(watch.changed(Duration::from_secs(5)).await);
}

/// Bad URLs, unknown databases and users are `Config`, a server that does not answer
/// `Backend`; the password never shows, in errors or in the store's `Debug`.
#[tokio::test]
async fn connection_errors_are_typed_and_never_show_the_password() {
    let keyring = Keyring::new(Key::generate());
    let open = |url: String| {
        let keyring = keyring.clone();
        async move { PostgresStore::connect(&url, keyring).await }
    };
    let check = |error: sfauth_storage::Error, kind: ErrorKind| {
        assert_eq!(error.kind(), kind, "{error}");
        let mut shown = format!("{error} {error:?}");
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            shown.push_str(&format!(" {cause} {cause:?}"));
            source = cause.source();
        }
        assert!(!shown.contains("hunter2"), "{shown}");
    };
    check(
        open("postgres://u:hunter2@[::1".into()).await.unwrap_err(),
        ErrorKind::Config,
    );
    check(
        open("redis://u:hunter2@127.0.0.1/".into())
            .await
            .unwrap_err(),
        ErrorKind::Config,
    );
    check(
        PostgresStore::connect_with_schema(
            "postgres://u:hunter2@127.0.0.1:5432/test",
            "Not-A-Schema",
            keyring.clone(),
        )
        .await
        .unwrap_err(),
        ErrorKind::Config,
    );
    // Nothing listens on port 1.
    check(
        open("postgres://u:hunter2@127.0.0.1:1/test".into())
            .await
            .unwrap_err(),
        ErrorKind::Backend,
    );

    let Some(url) = server_url() else { return };
    let mut with_password = url::Url::parse(&url).unwrap();
    with_password.set_password(Some("hunter2")).unwrap();
    let mut no_database = with_password.clone();
    no_database.set_path(&format!("/no_such_db_{}", random_lowercase(6)));
    check(
        open(no_database.to_string()).await.unwrap_err(),
        ErrorKind::Config,
    );
    let mut no_user = with_password.clone();
    no_user
        .set_username(&format!("no_such_user_{}", random_lowercase(6)))
        .unwrap();
    check(
        open(no_user.to_string()).await.unwrap_err(),
        ErrorKind::Config,
    );

    // The server trusts this machine, so the password is ignored and the store opens; its
    // `Debug` must not show it anyway.
    let schema = Schema::new(&url);
    let store = PostgresStore::connect_with_schema(with_password.as_str(), &schema.name, keyring)
        .await
        .unwrap();
    let shown = format!("{store:?}");
    assert!(
        shown.contains(&schema.name) && !shown.contains("hunter2"),
        "{shown}"
    );
    store.close().await;
}

/// `url` with `host` (when given) and the query parameters `params` added.
fn tls_url(url: &str, host: Option<&str>, params: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(url).unwrap();
    if let Some(host) = host {
        url.set_host(Some(host)).unwrap();
    }
    url.query_pairs_mut().extend_pairs(params);
    url.to_string()
}

/// Everything an error shows: itself, its `Debug` and its causes.
fn shown(error: &sfauth_storage::Error) -> String {
    let mut shown = format!("{error} {error:?}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        shown.push_str(&format!(" {cause} {cause:?}"));
        source = cause.source();
    }
    shown
}

/// Opens a store at `url` in a fresh schema, checks a round trip, and says whether its
/// connection is encrypted (PostgreSQL's own view, `pg_stat_ssl`).
async fn round_trip_over(url: &str) -> bool {
    let schema = Schema::new(url);
    let store =
        PostgresStore::connect_with_schema(url, &schema.name, Keyring::new(Key::generate()))
            .await
            .unwrap();
    let ns = Namespace::new();
    let (key, record) = ns.fresh("tls");
    assert_eq!(store.insert(record.clone()).await.unwrap(), 1);
    let read = store.get(&key).await.unwrap().unwrap();
    assert_eq!((read.version, &read.tokens), (1, &record.tokens));
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .unwrap();
    store.close().await;
    encrypted
}

/// The `sslmode`s against the shared server, whatever it offers: `disable` and `prefer`
/// always open (`prefer` encrypted when the server has TLS on); with TLS on (Debian's default,
/// a self-signed "snakeoil" certificate), `require` opens encrypted without verifying, and
/// `verify-full` refuses the certificate as `Config` unless `sslrootcert` trusts it and the
/// host matches; with TLS off, `require` is refused as `Config`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_modes_against_the_shared_server() {
    let Some(url) = server_url() else { return };
    let url = tls_url(&url, None, &[]);
    let mut conn = PgConnection::connect(&tls_url(&url, None, &[("sslmode", "disable")]))
        .await
        .unwrap();
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let cert_file: String = sqlx::query_scalar("SHOW ssl_cert_file")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let tls_on = ssl == "on";
    eprintln!("the shared server has ssl = {ssl}, ssl_cert_file = {cert_file}");

    assert!(!round_trip_over(&tls_url(&url, None, &[("sslmode", "disable")])).await);
    assert_eq!(
        round_trip_over(&tls_url(&url, None, &[("sslmode", "prefer")])).await,
        tls_on
    );
    let require = tls_url(&url, None, &[("sslmode", "require")]);
    let verify_full = tls_url(&url, None, &[("sslmode", "verify-full")]);
    if !tls_on {
        for url in [require, verify_full] {
            let error = PostgresStore::connect(&url, Keyring::new(Key::generate()))
                .await
                .unwrap_err();
            eprintln!("{error}");
            assert_eq!(error.kind(), ErrorKind::Config, "{error}");
            assert!(error.to_string().contains("tls"), "{error}");
        }
        return;
    }
    assert!(round_trip_over(&require).await, "require encrypts");
    // The server's self-signed certificate is not among Mozilla's roots.
    for mode in ["verify-ca", "verify-full"] {
        let error = PostgresStore::connect(
            &tls_url(&url, None, &[("sslmode", mode)]),
            Keyring::new(Key::generate()),
        )
        .await
        .unwrap_err();
        eprintln!("{mode}: {error}");
        assert_eq!(error.kind(), ErrorKind::Config, "{mode}: {error}");
        assert!(error.to_string().contains("certificate"), "{mode}: {error}");
    }
    // Debian's snakeoil certificate is self-signed, so trusting it with `sslrootcert` verifies
    // the chain. It names the machine's host name, never 127.0.0.1: there, the refusal is the
    // name (the chain passed), for `verify-full`, for `verify-ca` (which sqlx 0.8.6 checks like
    // `verify-full`: its verifier misses rustls's `NotValidForNameContext`, sqlx issue 3793)
    // and for `require` with `sslrootcert` (which verifies like `verify-ca`, as in libpq).
    if cert_file != "/etc/ssl/certs/ssl-cert-snakeoil.pem" {
        eprintln!("not Debian's snakeoil certificate: sslrootcert left untried");
        return;
    }
    let trusted = ("sslrootcert", cert_file.as_str());
    let mut presented = String::new();
    for mode in ["verify-full", "verify-ca", "require"] {
        let by_ip = tls_url(&url, Some("127.0.0.1"), &[("sslmode", mode), trusted]);
        let error = PostgresStore::connect(&by_ip, Keyring::new(Key::generate()))
            .await
            .unwrap_err();
        eprintln!("{mode} with sslrootcert, to 127.0.0.1: {error}");
        assert_eq!(error.kind(), ErrorKind::Config, "{error}");
        let message = error.to_string();
        assert!(message.contains("not valid for name"), "{mode}: {error}");
        presented = message;
    }
    // When the certificate names `localhost` (as on this project's machines), the same root
    // verifies everything there: an encrypted round trip with `verify-full`.
    if presented.contains(r#"DnsName("localhost")"#) {
        let by_name = tls_url(
            &url,
            Some("localhost"),
            &[("sslmode", "verify-full"), trusted],
        );
        assert!(
            round_trip_over(&by_name).await,
            "verify-full with sslrootcert"
        );
    } else {
        eprintln!("the certificate does not name localhost: verify-full round trip left untried");
    }
}

/// A server that answers PostgreSQL's SSLRequest with `N` (no TLS): `require` and the
/// verifying modes are `Config` errors that say so and never show the password. And an
/// `sslrootcert` that does not exist is `Config` before any connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_tls_is_refused_as_config() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut request = [0_u8; 8];
                if socket.read_exact(&mut request).await.is_ok() {
                    // 80877103: SSLRequest.
                    assert_eq!(request, [0, 0, 0, 8, 4, 210, 22, 47]);
                    let _ = socket.write_all(b"N").await;
                    let mut rest = Vec::new();
                    let _ = socket.read_to_end(&mut rest).await;
                }
            });
        }
    });
    for mode in ["require", "verify-ca", "verify-full"] {
        let url = format!("postgres://u:hunter2@127.0.0.1:{port}/db?sslmode={mode}");
        let error = PostgresStore::connect(&url, Keyring::new(Key::generate()))
            .await
            .unwrap_err();
        eprintln!("{mode}: {error}");
        assert_eq!(error.kind(), ErrorKind::Config, "{mode}: {error}");
        assert!(
            error.to_string().contains("does not support TLS"),
            "{error}"
        );
        assert!(!shown(&error).contains("hunter2"), "{error:?}");
    }
    server.abort();

    let missing = PostgresStore::connect(
        "postgres://u:hunter2@127.0.0.1:1/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        Keyring::new(Key::generate()),
    )
    .await
    .unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::Config, "{missing}");
    assert!(missing.to_string().contains("sslrootcert"), "{missing}");
    assert!(!shown(&missing).contains("hunter2"), "{missing:?}");
}

/// An active record's header is read from its clear columns, the record left sealed; a row
/// whose header is missing (from before migration 0002) or stale (written since by a version
/// without it) is opened instead, and a damaged header is `Corrupt`, never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_read_in_clear_unless_they_cannot_be_trusted() {
    let Some(h) = Harness::new().await else {
        return;
    };
    let ns = Namespace::new();
    let (key, mut record) = ns.fresh("clear");
    record.refresh_in_flight = None;
    h.store.insert(record.clone()).await.unwrap();
    let header = h.store.header(&key).await.unwrap().unwrap();
    assert!(header.record.is_none(), "read without opening the record");
    assert_eq!(header.version, 1);

    let records = h.table("token_records");
    let forget =
        format!("UPDATE {records} SET header = NULL, header_version = NULL WHERE key = $1");
    assert_eq!(h.execute(&forget, &key).await, 1);
    let opened = h.store.header(&key).await.unwrap().unwrap();
    assert_eq!(opened.record.as_ref().map(|r| r.version), Some(1));
    h.store.put(record, 1, None).await.unwrap();
    let stale = format!("UPDATE {records} SET header_version = 1 WHERE key = $1");
    assert_eq!(h.execute(&stale, &key).await, 1);
    let opened = h.store.header(&key).await.unwrap().unwrap();
    assert_eq!(opened.record.as_ref().map(|r| r.version), Some(2));

    for damaged in ["", "0:1:2", "2:1::::", "0:x::::", "0::::::"] {
        let sql =
            format!("UPDATE {records} SET header = '{damaged}', header_version = 2 WHERE key = $1");
        assert_eq!(h.execute(&sql, &key).await, 1);
        let error = h.store.header(&key).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Corrupt, "{damaged:?}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_columns_that_contradict_the_sealed_record_are_corrupt() {
    let Some(h) = Harness::new().await else {
        return;
    };
    let ns = Namespace::new();
    let (key, record) = ns.fresh("contradiction");
    h.store.insert(record).await.unwrap();
    let sql = format!(
        "UPDATE {} SET status = 'reauth_required' WHERE key = $1",
        h.table("token_records")
    );
    assert_eq!(h.execute(&sql, &key).await, 1);
    assert_eq!(
        h.store.get(&key).await.unwrap_err().kind(),
        ErrorKind::Corrupt
    );
}

/// Numbers in rows are outside input (the scenario every SQL backend shares, in
/// `support::damage`), written here in PostgreSQL's dialect; expiries are microseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_numbers_in_rows_never_panic() {
    let Some(h) = Harness::new().await else {
        return;
    };
    let ns = Namespace::new();
    let (key, record) = ns.fresh("numbers");
    h.store.insert(record.clone()).await.unwrap();
    let records = h.table("token_records");
    let leases = h.table("token_leases");
    damage::out_of_range_numbers(h.store.as_ref(), &key, &record, |damage| {
        let sql = match damage {
            Damage::NegativeVersion => {
                format!("UPDATE {records} SET version = -5 WHERE key = $1")
            }
            Damage::VersionAtEnd => {
                format!("UPDATE {records} SET version = 9223372036854775807 WHERE key = $1")
            }
            Damage::LeaseAtEnd => format!(
                "UPDATE {leases} SET expires_at = 9223372036854775807, \
                 fence = 9223372036854775807, last_fence = 9223372036854775807 WHERE key = $1"
            ),
            Damage::NegativeFence => format!(
                "UPDATE {leases} SET holder = 'a', fence = -1, expires_at = 40000000000000 \
                 WHERE key = $1"
            ),
            Damage::ExpiredBeforeTheEpoch => {
                format!("UPDATE {leases} SET fence = 3, expires_at = -7 WHERE key = $1")
            }
        };
        let h = &h;
        let key = &key;
        async move {
            h.execute(&sql, key).await;
        }
    })
    .await;
}

/// Rough latency of each operation against the server (run with `--ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn latency() {
    let Some(h) = Harness::new().await else {
        return;
    };
    let ns = Namespace::new();
    let rounds = 200u32;
    let mut keys = Vec::new();
    let started = Instant::now();
    for i in 0..rounds {
        let (key, record) = ns.fresh(&format!("latency-{i}"));
        h.store.insert(record).await.unwrap();
        keys.push(key);
    }
    let insert = started.elapsed() / rounds;
    let started = Instant::now();
    for key in &keys {
        h.store.get(key).await.unwrap().unwrap();
    }
    let get = started.elapsed() / rounds;
    let started = Instant::now();
    let mut leases = Vec::new();
    for key in &keys {
        leases.push(
            h.store
                .try_acquire(key, "bench", Duration::from_secs(30))
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let acquire = started.elapsed() / rounds;
    let records: Vec<_> = keys.iter().map(|key| ns.record(key)).collect();
    let started = Instant::now();
    for (record, lease) in records.iter().zip(&leases) {
        h.store.put(record.clone(), 1, Some(lease)).await.unwrap();
    }
    let put = started.elapsed() / rounds;
    let started = Instant::now();
    for lease in &leases {
        h.store.release(lease).await.unwrap();
    }
    let release = started.elapsed() / rounds;
    let started = Instant::now();
    for key in keys.iter().take(50) {
        let watch = h.store.watch(key).await.unwrap();
        let record = h.store.get(key).await.unwrap().unwrap();
        let version = record.version;
        h.store.put(record, version, None).await.unwrap();
        assert!(watch.changed(Duration::from_secs(5)).await);
    }
    let watch_round_trip = started.elapsed() / 50;
    let query = sfauth_storage::ListQuery::new()
        .client_id(ns.client_id.clone())
        .limit(200);
    let started = Instant::now();
    let listed = h.store.list(&query).await.unwrap();
    let list = started.elapsed();
    assert_eq!(listed.records.len(), rounds as usize);
    eprintln!(
        "per op: insert {insert:?}, get {get:?}, try_acquire {acquire:?}, put under lease \
         {put:?}, release {release:?}; watch + get + put + notified {watch_round_trip:?}; \
         list of 200 {list:?}"
    );
}
