//! Refreshers that do not share memory: two managers on one SQLite file, a refresh interrupted
//! by a crash between the write-ahead mark and the save, and a refresher outside sfauth holding
//! the same refresh token.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sfauth::storage::{InFlight, Key, Keyring, RecordStatus, TokenStore};
use sfauth::{ErrorKind, MemoryStore, RefreshPolicy, SqliteStore, TokenManager};
use sfauth_core::TokenKey;
use sfauth_emulator::Clock;
use sfauth_tests::Env;

const HOUR: Duration = Duration::from_secs(3600);

async fn manager(env: &Env, store: Arc<dyn TokenStore>, holder: &str) -> TokenManager {
    let client = env.client().unwrap().with_session_timeout(HOUR);
    env.manager_builder(client)
        .store(store)
        .holder(holder)
        .policy(
            RefreshPolicy::default()
                .jitter(Duration::ZERO)
                .lease_wait(Duration::from_secs(5)),
        )
        .build()
        .await
        .unwrap()
}

/// Two managers as two processes would be: each with its own SQLite store open on one file in
/// `dir`, under one key; with the first one's store.
async fn two_processes_on_one_sqlite_file(
    env: &Env,
    dir: &std::path::Path,
) -> (TokenManager, TokenManager, Arc<dyn TokenStore>) {
    let path = dir.join("tokens.db");
    let key_bytes = Key::generate();
    let keyring = || Keyring::new(Key::from_base64(&key_bytes.to_base64()).unwrap());
    let store_a: Arc<dyn TokenStore> = Arc::new(SqliteStore::open(&path, keyring()).await.unwrap());
    let store_b: Arc<dyn TokenStore> = Arc::new(SqliteStore::open(&path, keyring()).await.unwrap());
    let a = manager(env, store_a.clone(), "process-a").await;
    let b = manager(env, store_b, "process-b").await;
    (a, b, store_a)
}

async fn rotating_env(clock: Clock) -> Env {
    let env = Env::start_with(|builder| builder.clock(clock))
        .await
        .unwrap();
    let client_id = env.creds().client_id.clone();
    env.emulator
        .set_policy(&client_id, |p| p.rotation = true)
        .unwrap();
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_sqlite_file_refresh_once() {
    // Tokens issued two hours before the real clock, with a one-hour timeout: due at once.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let env = rotating_env(Clock::manual(now_ms - 2 * HOUR.as_millis() as i64)).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b, _) = two_processes_on_one_sqlite_file(&env, dir.path()).await;

    let key = env.store_login(&a, "default").await.unwrap();
    // Both processes hold the due token in memory, as two running services would.
    assert_eq!(b.load_all().await.unwrap(), 1);
    env.emulator.advance(2 * HOUR);

    let mut callers = tokio::task::JoinSet::new();
    for i in 0..200 {
        let manager = if i % 2 == 0 { a.clone() } else { b.clone() };
        let key = key.clone();
        callers.spawn(async move {
            manager
                .access_token(&key)
                .await
                .unwrap()
                .secret()
                .to_owned()
        });
    }
    let tokens: std::collections::HashSet<String> = callers.join_all().await.into_iter().collect();

    let counters = env.emulator.counters();
    assert_eq!(
        counters.grant("refresh_token"),
        1,
        "one token request for both processes"
    );
    assert_eq!(counters.refresh_tokens_rejected, 0);
    assert_eq!(counters.refresh_tokens_reused, 0);
    assert_eq!(tokens.len(), 1, "both processes serve the same token");
    assert_eq!(a.stats().adopted + b.stats().adopted, 1);
}

/// A rotating tenant whose record carries the write-ahead mark of a process that died; with
/// `spent`, that process had also sent the refresh token and Salesforce rotated it.
async fn crashed_mid_refresh(spent: bool) -> (Env, Arc<dyn TokenStore>, TokenManager, TokenKey) {
    let env = rotating_env(Clock::manual_now()).await;
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let manager = manager(&env, store.clone(), "survivor").await;
    let key = env.store_login(&manager, "default").await.unwrap();
    let mut record = store.get(&key).await.unwrap().unwrap();
    let version = record.version;
    record.refresh_in_flight = Some(InFlight {
        holder: "crashed".into(),
        fence: 1,
        since: SystemTime::now(),
    });
    let refresh_token = record.tokens.refresh_token.clone().unwrap();
    store.put(record, version, None).await.unwrap();
    if spent {
        manager
            .client()
            .refresh(&env.transport, &refresh_token)
            .await
            .unwrap();
    }
    (env, store, manager, key)
}

#[tokio::test]
async fn an_interrupted_refresh_that_spent_nothing_is_completed() {
    // A process marked the record, then died before sending anything.
    let (env, store, manager, key) = crashed_mid_refresh(false).await;

    // Nobody can tell it sent nothing: while the access token works, the refresh token is held
    // back (re-sending a rotated-out one would revoke the family, the working token with it).
    let held = manager.refresh(&key).await.unwrap_err();
    assert!(
        matches!(held, sfauth::Error::RefreshOnHold { .. }),
        "{held:?}"
    );
    assert_eq!(env.refresh_grants(), 0);
    // Once the access token dies (the application sees a 401 and says so), the careful
    // attempt finds the token unspent.
    let stale = manager
        .access_token(&key)
        .await
        .unwrap()
        .access_token()
        .clone();
    env.emulator.expire_access_tokens();
    let token = manager.session_expired(&key, &stale).await.unwrap();
    assert_eq!(env.query_status_with(&token).await.unwrap(), 200);
    let record = store.get(&key).await.unwrap().unwrap();
    assert!(record.refresh_in_flight.is_none());
    assert_eq!(record.status, RecordStatus::Active);
    assert_eq!(env.emulator.counters().refresh_tokens_rejected, 0);
    assert_eq!(env.emulator.counters().refresh_tokens_reused, 0);
}

#[tokio::test]
async fn an_interrupted_refresh_that_lost_a_rotation_asks_for_reauthorization() {
    // A process marked the record, spent the refresh token (Salesforce rotated it), and died
    // before saving the answer.
    let (env, store, manager, key) = crashed_mid_refresh(true).await;

    let before = env.refresh_grants();
    let held = manager.refresh(&key).await.unwrap_err();
    assert!(
        matches!(held, sfauth::Error::RefreshOnHold { .. }),
        "{held:?}"
    );
    assert_eq!(env.refresh_grants(), before);
    // The access token dies (it survived the lost rotation): nothing is left to lose.
    let stale = manager
        .access_token(&key)
        .await
        .unwrap()
        .access_token()
        .clone();
    env.emulator.expire_access_tokens();
    let error = manager.session_expired(&key, &stale).await.unwrap_err();
    assert_eq!(
        error.kind(),
        ErrorKind::ReauthorizationRequired,
        "{error:?}"
    );
    assert!(error.to_string().contains("may have rotated"), "{error}");
    // One careful attempt, no more: it is the one reuse Salesforce sees, and it ends the family.
    assert_eq!(env.refresh_grants() - before, 1);
    assert_eq!(env.emulator.counters().refresh_tokens_reused, 1);
    let record = store.get(&key).await.unwrap().unwrap();
    assert!(matches!(record.status, RecordStatus::ReauthRequired { .. }));
    assert!(record.refresh_in_flight.is_none());
    // Fails fast from now on.
    let before = env.token_requests();
    assert_eq!(
        manager.access_token(&key).await.unwrap_err().kind(),
        ErrorKind::ReauthorizationRequired
    );
    assert_eq!(env.token_requests(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_refresher_in_flight_is_not_raced() {
    let env = Env::start().await.unwrap();
    let client_id = env.creds().client_id.clone();
    env.emulator
        .set_policy(&client_id, |p| {
            p.rotation = true;
            p.refresh_latency_ms = 2000;
        })
        .unwrap();
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let manager = manager(&env, store.clone(), "sfauth").await;
    let key = env.store_login(&manager, "default").await.unwrap();
    let refresh_token = store
        .get(&key)
        .await
        .unwrap()
        .unwrap()
        .tokens
        .refresh_token
        .unwrap();

    // Another program holding a copy of the refresh token starts a refresh.
    let foreign_client = env.client().unwrap();
    let transport = env.transport.clone();
    let foreign =
        tokio::spawn(async move { foreign_client.refresh(&transport, &refresh_token).await });
    while env.emulator.refreshes_in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let error = manager.refresh(&key).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::RefreshInProgress, "{error:?}");
    assert!(foreign.await.unwrap().is_ok());
    // sfauth sent the token once, was told it was busy, and did not send it again.
    assert_eq!(env.refresh_grants(), 2);
    let record = store.get(&key).await.unwrap().unwrap();
    assert!(
        record.refresh_in_flight.is_none(),
        "Salesforce's answer proved the token unspent by us"
    );
}

/// A SQLite store on a temporary file, as a separate process would open it.
async fn sqlite_store(dir: &tempfile::TempDir) -> Arc<dyn TokenStore> {
    let keyring = Keyring::new(Key::from_base64(&Key::generate().to_base64()).unwrap());
    Arc::new(
        SqliteStore::open(dir.path().join("tokens.db"), keyring)
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_of_a_process_that_is_gone_is_taken_over_at_once() {
    let env = rotating_env(Clock::manual_now()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let manager = manager(&env, store.clone(), "survivor").await;
    let key = env.store_login(&manager, "default").await.unwrap();

    // A process on this host took the lease for a minute, then died (killed, say).
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let dead = format!("sfauth:{}:{pid}:1:00", host.trim());
    let held = store
        .try_acquire(&key, &dead, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();

    // The next refresher does not wait out the minute (lease_wait is 5 s here): it takes the
    // lease over, with a greater fence, and refreshes.
    let token = manager.refresh(&key).await.unwrap();
    assert_eq!(env.query_status_with(&token).await.unwrap(), 200);
    assert_eq!(env.refresh_grants(), 1);
    // The dead holder's writes are fenced off.
    let record = store.get(&key).await.unwrap().unwrap();
    let version = record.version;
    let stale = store.put(record, version, Some(&held)).await.unwrap_err();
    assert_eq!(stale.kind(), sfauth::storage::ErrorKind::LeaseLost);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_slower_than_its_lease_keeps_the_lease() {
    let env = rotating_env(Clock::manual_now()).await;
    let client_id = env.creds().client_id.clone();
    env.emulator
        .set_policy(&client_id, |p| p.refresh_latency_ms = 1_500)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let client = env.client().unwrap();
    let manager = env
        .manager_builder(client)
        .store(store.clone())
        .holder("slow")
        .policy(RefreshPolicy::default().lease_ttl(Duration::from_millis(300)))
        .build()
        .await
        .unwrap();
    let key = env.store_login(&manager, "default").await.unwrap();

    let refreshing = {
        let manager = manager.clone();
        let key = key.clone();
        tokio::spawn(async move { manager.refresh(&key).await.map(|t| t.secret().to_owned()) })
    };
    while env.emulator.refreshes_in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Several lease lifetimes pass while Salesforce takes its time; the lease is renewed, so
    // nobody else can take it and spend the same refresh token.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let intruder = store
            .try_acquire(&key, "intruder", Duration::from_secs(10))
            .await
            .unwrap();
        assert!(intruder.is_none(), "the lease lapsed during the refresh");
    }
    let fresh = refreshing.await.unwrap().unwrap();
    assert!(!fresh.is_empty());
    let record = store.get(&key).await.unwrap().unwrap();
    assert!(record.refresh_in_flight.is_none(), "saved under the lease");
    assert_eq!(env.emulator.counters().refresh_tokens_reused, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_caller_is_told_who_holds_the_lease_and_until_when() {
    let env = rotating_env(Clock::manual_now()).await;
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let client = env.client().unwrap();
    let manager = env
        .manager_builder(client)
        .store(store.clone())
        .policy(RefreshPolicy::default().lease_wait(Duration::from_millis(200)))
        .build()
        .await
        .unwrap();
    let key = env.store_login(&manager, "default").await.unwrap();
    store
        .try_acquire(&key, "worker-7 on billing-2", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();

    let error = manager.refresh(&key).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::RefreshInProgress);
    let message = error.to_string();
    assert!(message.contains("worker-7 on billing-2"), "{message}");
    assert!(message.contains("until"), "{message}");
    assert_eq!(env.refresh_grants(), 0);
}

/// A warm start from SQLite lists tenants by their clear headers and opens each record on its
/// first use: the token served is the stored one, nothing is refreshed for it, and a second
/// warm start after another process refreshed installs the newer record over the older tenant
/// in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_start_from_sqlite_opens_each_record_on_first_use() {
    let env = rotating_env(Clock::manual_now()).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b, store_a) = two_processes_on_one_sqlite_file(&env, dir.path()).await;
    let key = env.store_login(&a, "default").await.unwrap();

    assert_eq!(b.load_all().await.unwrap(), 1);
    let stored = store_a.get(&key).await.unwrap().unwrap();
    let served = b.access_token(&key).await.unwrap().secret().to_owned();
    assert_eq!(served, stored.tokens.access_token.expose_secret());
    assert_eq!(env.emulator.counters().grant("refresh_token"), 0);

    let refreshed = a.refresh(&key).await.unwrap().secret().to_owned();
    assert_ne!(refreshed, served);
    assert_eq!(b.load_all().await.unwrap(), 1);
    let served = b.access_token(&key).await.unwrap().secret().to_owned();
    assert_eq!(
        served, refreshed,
        "the second warm start installed the newer record"
    );
    assert_eq!(env.emulator.counters().grant("refresh_token"), 1);
}
