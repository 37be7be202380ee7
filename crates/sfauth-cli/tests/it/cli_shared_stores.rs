//! The `sfauth` binary on the stores a fleet shares, against real servers: Redis
//! (`SFAUTH_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`) and PostgreSQL
//! (`SFAUTH_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
//!
//! Two "machines" (two homes, so two alias files) log in to the emulator through one store:
//! each sees the other's logins in `status`, uses them with `token`, and sees a refresh made
//! by the other. A refresh lease held by a third process shows in `status` with its holder.
//! Then the failures: a bad URL (exit 2), a closed port and a server that never answers
//! (exit 4, within the connect timeout), credentials or a database the server refuses, and a
//! TLS connection that cannot be verified (exit 2), and a key other than the store's (exit 1,
//! nothing overwritten); the URL's password is
//! never printed. Each run uses its own random Redis prefix or PostgreSQL schema, removed at
//! the end.
//!
//! A server that does not answer skips its test with a loud message, except under `CI=true`,
//! where it fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail on any error"
)]
#![allow(
    clippy::print_stderr,
    reason = "a skipped test and a leftover prefix or schema must be loud"
)]

use crate::common;

use std::net::{TcpListener, TcpStream, ToSocketAddrs as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Cli;
use sfauth::storage::{Key, Keyring, ListQuery, TokenStore};
use sfauth::{PostgresStore, RedisStore};
use sfauth_emulator::SEED_USERNAME;

/// The password put in URLs that must never be printed.
const PASSWORD: &str = "never-print-me-4711";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_shared_by_two_machines() {
    let Some(base) = server_url("SFAUTH_TEST_REDIS_URL", "redis://127.0.0.1:6379", "Redis") else {
        return;
    };
    let prefix = format!("sfauth-cli-test-{}:", random_hex());
    let _cleanup = Cleanup::Redis {
        base: base.clone(),
        prefix: prefix.clone(),
    };
    let store = with_option(&base, "prefix", &prefix);
    let key = Key::generate();
    let library = RedisStore::builder(
        &base,
        Keyring::new(Key::from_base64(&key.to_base64()).unwrap()),
    )
    .prefix(prefix.clone())
    .connect()
    .await
    .unwrap();
    fleet(&store, &key, Arc::new(library)).await;
    failures(&base, "redis", &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_shared_by_two_machines() {
    let Some(base) = server_url(
        "SFAUTH_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
        "PostgreSQL",
    ) else {
        return;
    };
    let schema = format!("sfauth_cli_test_{}", random_hex());
    let _cleanup = Cleanup::Postgres {
        base: base.clone(),
        schema: schema.clone(),
    };
    let store = with_option(&base, "schema", &schema);
    let key = Key::generate();
    let library = PostgresStore::connect_with_schema(
        &base,
        &schema,
        Keyring::new(Key::from_base64(&key.to_base64()).unwrap()),
    )
    .await
    .unwrap();
    fleet(&store, &key, Arc::new(library.clone())).await;
    library.close().await;
    failures(&base, "postgres", &key).await;
}

/// Machine A and machine B share the store at `store`, sealed with `key`; `library` is a
/// third process on the same store.
async fn fleet(store: &str, key: &Key, library: Arc<dyn TokenStore>) {
    let cli = Cli::start().await;
    let key_b64 = key.to_base64();
    let machine_b = tempfile::tempdir().unwrap();
    let b_home = machine_b.path().display().to_string();
    let b_config = machine_b.path().join("config").display().to_string();
    let b_data = machine_b.path().join("data").display().to_string();
    let a: Vec<(&str, &str)> = vec![("SFAUTH_STORE", store), ("SFAUTH_STORE_KEY", &key_b64)];
    let mut b = a.clone();
    b.extend([
        ("HOME", b_home.as_str()),
        ("XDG_CONFIG_HOME", b_config.as_str()),
        ("XDG_DATA_HOME", b_data.as_str()),
    ]);

    cli.login_web_env("alpha", &a).await.ok();
    cli.login_web_env("beta", &b).await.ok();
    let alpha = cli
        .run_env(&["token", "alpha"], &a)
        .await
        .ok()
        .stdout
        .clone();
    assert!(!alpha.trim().is_empty());

    // Each machine sees both logins, the other machine's included.
    for (machine, env) in [("a", &a), ("b", &b)] {
        let status = cli.run_env(&["status", "--json"], env).await;
        let rows = status.ok().json();
        let rows = rows.as_array().unwrap();
        let aliases: Vec<&str> = rows.iter().map(|r| r["alias"].as_str().unwrap()).collect();
        assert_eq!(aliases, ["alpha", "beta"], "machine {machine}: {status:?}");
        for row in rows {
            assert_eq!(row["status"], "active", "{row}");
            assert_eq!(row["org_id"], cli.emulator.credentials().org_id.as_str());
            assert!(row["expires_at"].as_str().unwrap().ends_with('Z'), "{row}");
            assert!(row["lease"].is_null(), "no refresh is running: {row}");
        }
        // The username is known where the login was made.
        let own = if machine == "a" { &rows[0] } else { &rows[1] };
        assert_eq!(own["username"], SEED_USERNAME, "{own}");
        assert!(
            !status.stdout.contains(alpha.trim()),
            "status prints no token"
        );
    }

    // A login made on machine B serves machine A, without any alias metadata there.
    cli.run_env(&["token", "beta"], &a).await.ok();
    // A refresh on machine A is what machine B gets next.
    let refresh = cli.run_env(&["refresh", "alpha"], &a).await;
    assert!(
        refresh.ok().stdout.contains("refreshed alpha"),
        "{refresh:?}"
    );
    let refreshed = cli
        .run_env(&["token", "alpha"], &a)
        .await
        .ok()
        .stdout
        .clone();
    assert_ne!(refreshed, alpha);
    let on_b = cli
        .run_env(&["token", "alpha"], &b)
        .await
        .ok()
        .stdout
        .clone();
    assert_eq!(on_b, refreshed, "machine B uses the token machine A stored");

    // A third process holds alpha's refresh lease: status says who, on either machine.
    let records = library.list(&ListQuery::new()).await.unwrap().records;
    let alpha_key = records
        .iter()
        .find(|r| r.key.label() == "alpha")
        .unwrap()
        .key
        .clone();
    let holder = "worker-7.example:4242:test";
    let lease = library
        .try_acquire(&alpha_key, holder, Duration::from_secs(120))
        .await
        .unwrap()
        .unwrap();
    let status = cli.run_env(&["status", "--json"], &b).await;
    let rows = status.ok().json();
    assert_eq!(rows[0]["alias"], "alpha");
    assert_eq!(rows[0]["lease"]["holder"], holder, "{rows}");
    assert_eq!(rows[0]["lease"]["fence"], lease.fence);
    assert!(
        rows[0]["lease"]["expires_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert!(rows[1]["lease"].is_null());
    let table = cli
        .run_env(&["status"], &[a.as_slice(), &[("COLUMNS", "250")]].concat())
        .await;
    for needle in ["REFRESH LEASE", holder, "alpha", "beta"] {
        assert!(table.ok().stdout.contains(needle), "{needle}: {table:?}");
    }
    library.release(&lease).await.unwrap();

    // Another key: a typed error, and nothing is written over.
    let other = Key::generate().to_base64();
    let wrong: Vec<(&str, &str)> = vec![("SFAUTH_STORE", store), ("SFAUTH_STORE_KEY", &other)];
    // `status` lists what it cannot open rather than failing (exit 0), each such login with
    // why and the fix on stderr.
    let listed = cli.run_env(&["status", "--json"], &wrong).await;
    let rows = listed.ok().json();
    assert_eq!(rows.as_array().unwrap().len(), 2, "{listed:?}");
    for row in rows.as_array().unwrap() {
        assert_eq!(row["status"], "unreadable", "{row}");
        assert_eq!(row["reason"], "sealed with another key", "{row}");
        assert!(row["instance_url"].is_null(), "{row}");
    }
    assert!(
        listed
            .stderr
            .contains("set SFAUTH_STORE_KEY to the key it was written with"),
        "{listed:?}"
    );
    cli.run_env(&["token", "alpha"], &wrong)
        .await
        .fails(1, "SFAUTH_STORE_KEY");
    cli.run_env(&["refresh", "alpha"], &wrong)
        .await
        .fails(1, "SFAUTH_STORE_KEY");
    let still = cli
        .run_env(&["token", "alpha"], &a)
        .await
        .ok()
        .stdout
        .clone();
    assert_eq!(
        still, refreshed,
        "the right key still reads the same record"
    );
}

/// The ways opening a `scheme` store fails, near the server at `base`.
async fn failures(base: &str, scheme: &str, key: &Key) {
    let cli = Cli::start().await;
    let key_b64 = key.to_base64();
    // A Redis URL's path is a database number, a PostgreSQL URL's a database name.
    let db = if scheme == "redis" { "0" } else { "x" };
    let run = |url: String| {
        let cli = &cli;
        let key_b64 = key_b64.clone();
        async move {
            let started = Instant::now();
            let run = cli
                .run_env(
                    &["status"],
                    &[("SFAUTH_STORE", &url), ("SFAUTH_STORE_KEY", &key_b64)],
                )
                .await;
            let all = format!("{}{}", run.stdout, run.stderr);
            assert!(!all.contains(PASSWORD), "{url}: {run:?}");
            (run, started.elapsed())
        }
    };
    let (bad, _) = run(format!("{scheme}://:{PASSWORD}@[::1/x")).await;
    bad.fails(2, &format!("not a usable {scheme}:// URL"));
    let (typo, _) = run(format!("{scheme}://u:{PASSWORD}@127.0.0.1/{db}?sheme=y")).await;
    typo.fails(2, "unknown option sheme");

    // A closed port: refused at once.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (refused, took) = run(format!("{scheme}://u:{PASSWORD}@127.0.0.1:{closed}/{db}")).await;
    refused.fails(4, "cannot be reached");
    assert!(took < Duration::from_secs(10), "{took:?}");

    // A server that accepts and never answers: the connect timeout ends the wait.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let (hung, took) = run(format!(
        "{scheme}://u:{PASSWORD}@127.0.0.1:{port}/{db}?connect_timeout=1"
    ))
    .await;
    hung.fails(4, "did not answer within 1s");
    assert!(took < Duration::from_secs(5), "{took:?}");
    drop(silent);

    // The real server refuses the credentials (Redis: a password it does not have) or the
    // database (PostgreSQL: one that does not exist).
    let mut refused = url::Url::parse(base).unwrap();
    refused.set_password(Some(PASSWORD)).unwrap();
    if scheme == "postgres" {
        refused.set_path(&format!("no_such_db_{}", random_hex()));
    }
    let (refused, _) = run(refused.to_string()).await;
    refused.fails(2, "refused its settings");

    // TLS is built in, and verification is on: `verify-full` to a server whose certificate
    // no trusted root issued (the test server's is self-signed), or that has no TLS at all,
    // is a setting to fix (exit 2), not an unreachable server.
    if scheme == "postgres" {
        let mut verify = url::Url::parse(base).unwrap();
        verify.set_password(Some(PASSWORD)).unwrap();
        verify
            .query_pairs_mut()
            .append_pair("sslmode", "verify-full");
        let (untrusted, _) = run(verify.to_string()).await;
        untrusted.fails(2, "no tls connection");
    }
}

/// `base` with `name=value` added to its query.
fn with_option(base: &str, name: &str, value: &str) -> String {
    let mut url = url::Url::parse(base).unwrap();
    url.query_pairs_mut().append_pair(name, value);
    url.to_string()
}

fn random_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The URL of the server named by `var` (or `default`) if something accepts TCP connections
/// there; `None` after a loud message when nothing does and `CI` is not `true`.
fn server_url(var: &str, default: &str, what: &str) -> Option<String> {
    let url = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    if address(&url).is_some_and(|(host, port)| {
        (host.as_str(), port)
            .to_socket_addrs()
            .is_ok_and(|mut all| {
                all.any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
            })
    }) {
        return Some(url);
    }
    let shown = url::Url::parse(&url).map_or_else(
        |_| "(an unparseable URL)".to_owned(),
        |mut u| {
            let _ = u.set_password(None);
            u.to_string()
        },
    );
    let message = format!("{what} is not reachable at {shown} (set {var} to point elsewhere)");
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{message}; CI=true, so this is a failure, not a skip");
    }
    eprintln!("\n!!!!!!!! SKIPPED: {message}; this test checked nothing !!!!!!!!\n");
    None
}

/// Host and port of a Redis or PostgreSQL URL (`url` knows no default port for them).
fn address(url: &str) -> Option<(String, u16)> {
    let parsed = url::Url::parse(url).ok()?;
    let default_port = if parsed.scheme().starts_with("redis") {
        6379
    } else {
        5432
    };
    let host = parsed.host_str()?.trim_matches(['[', ']']).to_owned();
    Some((host, parsed.port().unwrap_or(default_port)))
}

/// Removes a test's Redis keys or PostgreSQL schema when dropped, pass or fail.
enum Cleanup {
    Redis { base: String, prefix: String },
    Postgres { base: String, schema: String },
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let result = match self {
            Self::Redis { base, prefix } => redis_delete_prefix(base, prefix),
            Self::Postgres { base, schema } => postgres_drop_schema(base.clone(), schema.clone()),
        };
        if let Err(why) = result {
            let what = match self {
                Self::Redis { prefix, .. } => format!("the Redis keys under {prefix}"),
                Self::Postgres { schema, .. } => format!("the PostgreSQL schema {schema}"),
            };
            eprintln!("!!!!!!!! could not remove {what} ({why}): remove it by hand");
        }
    }
}

/// Deletes every key under `prefix`, fence counters included.
fn redis_delete_prefix(base: &str, prefix: &str) -> Result<(), String> {
    let mut conn = redis::Client::open(base)
        .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut conn)
        .map_err(|e| e.to_string())?;
    if keys.is_empty() {
        return Ok(());
    }
    redis::cmd("DEL")
        .arg(keys)
        .query::<()>(&mut conn)
        .map_err(|e| e.to_string())
}

/// Drops `schema`, from a thread of its own: `Drop` may run inside a test's runtime, which
/// cannot be blocked on.
fn postgres_drop_schema(base: String, schema: String) -> Result<(), String> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            use sqlx::Connection as _;
            let mut conn = sqlx::PgConnection::connect(&base)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            conn.close().await.map_err(|e| e.to_string())
        })
    })
    .join()
    .map_err(|_| "the clean-up thread panicked".to_owned())?
}
