//! A shared store that goes away while a refresh is in flight: Salesforce has rotated the
//! refresh token, and the store that must keep the new one cannot be reached.
//!
//! The store is a real server (Redis, PostgreSQL) reached through a forwarder the test cuts
//! ([`Outage`]): the emulator commits the rotation, then answers late; the store is cut in
//! between. Pass: the refresh fails as a storage error, the new access token is never handed
//! out (the old one, still valid, is), and once the store is back the kept tokens are saved
//! by the manager on its own, with the refresh token the emulator holds current and nothing
//! sent twice.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a test fails by panicking and reports its timings on the console"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use sfauth::oauth::TokenKey;
use sfauth::storage::{Key, Keyring, TokenStore};
use sfauth::{ErrorKind, PostgresStore, RedisStore, RefreshPolicy};
use sfauth_emulator::{Endpoint, Fault, FaultKind, RefreshTokenStatus};
use sfauth_tests::{Env, Outage};

const REDIS_DEFAULT: &str = "redis://127.0.0.1:6379";
const POSTGRES_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";

/// How long the emulator holds its answer after committing the rotation: the window in which
/// the test cuts the store.
const ANSWER_DELAY: Duration = Duration::from_millis(800);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_when_the_rotated_tokens_arrive() {
    let Some(url) = sfauth_tests::server_url("SFAUTH_TEST_REDIS_URL", REDIS_DEFAULT, "Redis")
    else {
        return;
    };
    let prefix = format!("sfauth_outage_{}:", std::process::id());
    let open = |url: String, keyring: Keyring| {
        let prefix = prefix.clone();
        async move {
            let store = RedisStore::builder(&url, keyring)
                .prefix(prefix)
                .connect_timeout(Duration::from_millis(500))
                .response_timeout(Duration::from_secs(1))
                .connect()
                .await
                .unwrap();
            Arc::new(store) as Arc<dyn TokenStore>
        }
    };
    drop(scenario(&url, open).await);
    sfauth_tests::remove_redis_prefix(&url, &prefix)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_when_the_rotated_tokens_arrive() {
    let Some(url) =
        sfauth_tests::server_url("SFAUTH_TEST_POSTGRES_URL", POSTGRES_DEFAULT, "PostgreSQL")
    else {
        return;
    };
    let schema = format!("sfauth_outage_{}", std::process::id());
    let open = |url: String, keyring: Keyring| {
        let schema = schema.clone();
        async move {
            let store = PostgresStore::connect_with_schema(&url, &schema, keyring)
                .await
                .unwrap();
            Arc::new(store) as Arc<dyn TokenStore>
        }
    };
    drop(scenario(&url, open).await);
    sfauth_tests::drop_postgres_schema(&url, &schema)
        .await
        .unwrap();
}

/// Runs the outage against the server at `url`, opening stores with `open`; returns a store
/// connected directly (not through the forwarder), for the caller to clean up with.
async fn scenario<F, Fut>(url: &str, open: F) -> Arc<dyn TokenStore>
where
    F: Fn(String, Keyring) -> Fut,
    Fut: std::future::Future<Output = Arc<dyn TokenStore>>,
{
    let outage = Outage::forward_to(Outage::upstream_of(url).unwrap())
        .await
        .unwrap();
    let keyring = Keyring::new(Key::generate());
    let store = open(outage.url_through(url).unwrap(), keyring.clone()).await;
    let direct = open(url.to_owned(), keyring).await;

    let env = Env::start().await.unwrap();
    let client_id = env.creds().client_id.clone();
    env.emulator
        .set_policy(&client_id, |policy| policy.rotation = true)
        .unwrap();
    let manager = env
        .manager_builder(env.client().unwrap())
        .store(store)
        .policy(
            RefreshPolicy::default()
                .failure_backoff(Duration::from_millis(50), Duration::from_secs(1)),
        )
        .build()
        .await
        .unwrap();
    let key: TokenKey = manager
        .store_tokens(env.login().await.unwrap(), "outage")
        .await
        .unwrap();
    let old_access = manager
        .access_token(&key)
        .await
        .unwrap()
        .secret()
        .to_owned();
    env.emulator.reset_counters();

    // The emulator rotates, then holds the answer; the store goes away in between.
    env.emulator.inject_fault(
        Fault::new(Endpoint::Token, FaultKind::LatencyAfterCommit(ANSWER_DELAY)).times(1),
    );
    let refreshing = {
        let manager = manager.clone();
        let key = key.clone();
        tokio::spawn(async move { manager.refresh(&key).await.map(|t| t.secret().to_owned()) })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.emulator.counters().refresh_tokens_rotated == 0 {
        assert!(
            Instant::now() < deadline,
            "the refresh never reached the emulator"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    outage.cut();
    let cut_at = Instant::now();

    let error = refreshing.await.unwrap().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Storage, "{error}");
    println!(
        "outage: the refresh failed {:?} after the cut: {error}",
        cut_at.elapsed()
    );
    // The rotated tokens exist only in this process's memory, and are not handed out: the old
    // access token, still valid, is.
    let served = manager
        .access_token(&key)
        .await
        .unwrap()
        .secret()
        .to_owned();
    assert_eq!(served, old_access, "an unsaved access token was served");

    outage.restore();
    let restored_at = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    let saved = loop {
        let record = direct.get(&key).await.unwrap().unwrap();
        if record.refresh_in_flight.is_none() {
            break record;
        }
        assert!(
            Instant::now() < deadline,
            "the kept tokens were not saved after the store came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "outage: the kept tokens were saved {:?} after the store came back",
        restored_at.elapsed()
    );
    let stored = saved.tokens.refresh_token.as_ref().unwrap();
    assert_eq!(
        env.emulator.refresh_token_status(stored.expose_secret()),
        RefreshTokenStatus::Active,
        "the stored refresh token is the current one"
    );
    assert_ne!(saved.tokens.access_token.expose_secret(), old_access);
    let served = manager
        .access_token(&key)
        .await
        .unwrap()
        .secret()
        .to_owned();
    assert_eq!(served, saved.tokens.access_token.expose_secret());
    let counters = env.emulator.counters();
    assert_eq!(
        counters.grant("refresh_token"),
        1,
        "one refresh, never re-sent"
    );
    assert_eq!(counters.refresh_tokens_reused, 0);

    manager.shutdown(Duration::from_secs(5)).await;
    env.emulator.shutdown().await;
    direct
}
