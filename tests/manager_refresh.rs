//! The TokenManager refreshing against the emulator over TCP: single flight under a stampede,
//! reactive refresh after `INVALID_SESSION_ID`, rotation kept safe over many refreshes,
//! transient failures, and an org moving to another instance.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sfauth::storage::TokenStore;
use sfauth::{EventKind, MemoryStore, RefreshPolicy, TokenManager};
use sfauth_core::rest::{self, RestAuth};
use sfauth_emulator::{Clock, Endpoint, Fault, FaultKind};
use sfauth_tests::Env;

const HOUR: Duration = Duration::from_secs(3600);

/// An emulator whose clock runs `behind` the real one, so tokens it issues look that old to the
/// manager; advancing it by `behind` later issues tokens that look new.
async fn env_behind(behind: Duration) -> Env {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    Env::start_with(|builder| builder.clock(Clock::manual(now_ms - behind.as_millis() as i64)))
        .await
        .unwrap()
}

async fn manager(env: &Env, store: Arc<dyn TokenStore>, policy: RefreshPolicy) -> TokenManager {
    let client = env.client().unwrap().with_session_timeout(HOUR);
    env.manager_builder(client)
        .store(store)
        .policy(policy.jitter(Duration::ZERO))
        .build()
        .await
        .unwrap()
}

/// Rejected refresh requests; reuse of a rotated-out token is one kind, counted apart too.
fn rejected(env: &Env) -> u64 {
    let counters = env.emulator.counters();
    assert_eq!(
        counters.refresh_tokens_reused, 0,
        "a rotated-out refresh token was presented"
    );
    counters.refresh_tokens_rejected
}

/// A tenant whose token is due at once (issued two hours before the real clock, with a one-hour
/// session timeout) while the emulator's clock has caught up, so new tokens are fresh; and the
/// refresh count so far.
async fn due_tenant() -> (Env, TokenManager, sfauth_core::TokenKey, u64) {
    let env = env_behind(2 * HOUR).await;
    let manager = manager(&env, Arc::new(MemoryStore::new()), RefreshPolicy::default()).await;
    let key = env.store_login(&manager, "default").await.unwrap();
    env.emulator.advance(2 * HOUR);
    let before = env.refresh_grants();
    (env, manager, key, before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_callers_at_expiry_make_one_token_request() {
    let (env, manager, key, before) = due_tenant().await;
    // A slow token endpoint keeps the one refresh in flight while the callers pile up.
    let client_id = env.creds().client_id.clone();
    env.emulator
        .set_policy(&client_id, |p| p.refresh_latency_ms = 200)
        .unwrap();

    let barrier = Arc::new(tokio::sync::Barrier::new(10_000));
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..10_000 {
        let manager = manager.clone();
        let key = key.clone();
        let barrier = barrier.clone();
        callers.spawn(async move {
            barrier.wait().await;
            let token = manager.access_token(&key).await.unwrap();
            token.secret().to_owned()
        });
    }
    let tokens: std::collections::HashSet<String> = callers.join_all().await.into_iter().collect();

    assert_eq!(
        env.refresh_grants() - before,
        1,
        "exactly one token request"
    );
    assert_eq!(tokens.len(), 1, "every caller got the refreshed token");
    // The new token is fresh: another call sends nothing.
    manager.access_token(&key).await.unwrap();
    assert_eq!(env.refresh_grants() - before, 1);
    assert_eq!(rejected(&env), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_session_triggers_one_refresh_and_one_early_death_teaches_nothing() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let manager = env
        .manager_builder(client)
        .store(Arc::new(MemoryStore::new()))
        .policy(RefreshPolicy::default().min_learned_lifetime(Duration::from_secs(900)))
        .build()
        .await
        .unwrap();
    let key = env.store_login(&manager, "default").await.unwrap();

    let token = manager.access_token(&key).await.unwrap();
    let stale = token.access_token().clone();
    assert_eq!(env.query_status_with(&token).await.unwrap(), 200);
    drop(token);

    env.emulator.expire_access_tokens();
    let (status, body) = env
        .rest_get(
            manager.access_token(&key).await.unwrap().instance_url(),
            &stale,
            "query?q=SELECT+Id+FROM+Account",
        )
        .await
        .unwrap();
    assert_eq!(rest::classify(status, &body), RestAuth::SessionExpired);

    // Fifty requests failed at once; each reports the token it used.
    let before = env.refresh_grants();
    let mut reports = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let manager = manager.clone();
        let key = key.clone();
        let stale = stale.clone();
        reports.spawn(async move {
            manager
                .session_expired(&key, &stale)
                .await
                .unwrap()
                .secret()
                .to_owned()
        });
    }
    let fresh: std::collections::HashSet<String> = reports.join_all().await.into_iter().collect();
    assert_eq!(env.refresh_grants() - before, 1);
    assert_eq!(fresh.len(), 1);
    assert_ne!(fresh.iter().next().unwrap(), stale.expose_secret());

    let token = manager.access_token(&key).await.unwrap();
    assert_eq!(env.query_status_with(&token).await.unwrap(), 200);
    // The dead token was seconds old: killed, not timed out. One death says nothing about the
    // org's session timeout, so no lifetime is learned from it (it would have the whole org
    // refreshing every few minutes).
    assert_eq!(manager.learned_lifetime(key.org_id()), None);
    assert_eq!(rejected(&env), 0);
}

async fn rotate_many(store: Arc<dyn TokenStore>, rounds: usize) {
    let env = Env::start().await.unwrap();
    let client_id = env.creds().client_id.clone();
    env.emulator
        .set_policy(&client_id, |p| p.rotation = true)
        .unwrap();
    let manager = manager(&env, store.clone(), RefreshPolicy::default()).await;
    let key = env.store_login(&manager, "default").await.unwrap();
    let mut events = manager.subscribe();

    let mut previous = store
        .get(&key)
        .await
        .unwrap()
        .unwrap()
        .tokens
        .refresh_token
        .unwrap();
    let mut rotated = 0;
    for round in 0..rounds {
        manager.refresh(&key).await.unwrap();
        while let Ok(event) = events.try_recv() {
            if event.kind == EventKind::Rotated {
                rotated += 1;
            }
        }
        let stored = store.get(&key).await.unwrap().unwrap();
        let current = stored.tokens.refresh_token.clone().unwrap();
        assert_ne!(
            current, previous,
            "round {round}: the refresh token rotated"
        );
        assert!(stored.refresh_in_flight.is_none());
        previous = current;
    }
    let counters = env.emulator.counters();
    assert_eq!(counters.refresh_tokens_rotated, rounds as u64);
    assert_eq!(
        counters.refresh_tokens_rejected, 0,
        "no rotated-out token was ever presented"
    );
    let token = manager.access_token(&key).await.unwrap();
    assert_eq!(env.query_status_with(&token).await.unwrap(), 200);

    assert_eq!(rotated, rounds);
    assert_eq!(manager.stats().rotations, rounds as u64);
    assert_eq!(rejected(&env), 0);
}

#[tokio::test]
async fn a_thousand_rotations_never_lose_the_refresh_token_in_memory() {
    rotate_many(Arc::new(MemoryStore::new()), 1000).await;
}

#[tokio::test]
async fn rotations_never_lose_the_refresh_token_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = sfauth::storage::Keyring::new(sfauth::storage::Key::generate());
    let store = sfauth::SqliteStore::open(dir.path().join("tokens.db"), keyring)
        .await
        .unwrap();
    rotate_many(Arc::new(store), 100).await;
}

/// A 503 carrying Salesforce's own OAuth error document.
fn salesforce_503() -> FaultKind {
    FaultKind::OAuthError {
        status: 503,
        error: "unknown_error".into(),
        description: "retry your request".into(),
    }
}

#[tokio::test]
async fn transient_503s_are_retried_and_the_old_token_keeps_serving() {
    // Issued 30 minutes ago, one-hour timeout, refresh 45 minutes early: due but still valid.
    let env = env_behind(HOUR / 2).await;
    let policy = RefreshPolicy::default()
        .margin(Duration::from_secs(45 * 60))
        .backoff(Duration::from_millis(10))
        .failure_backoff(Duration::from_secs(1), Duration::from_secs(1));
    let manager = manager(&env, Arc::new(MemoryStore::new()), policy).await;
    let key = env.store_login(&manager, "default").await.unwrap();
    let original = manager
        .access_token(&key)
        .await
        .unwrap()
        .secret()
        .to_owned();
    let before = env.token_requests();

    // Two 503s in Salesforce's own words (which prove the token unspent), then success, within
    // one refresh (3 attempts). A bare 503 proves nothing: see manager_gateway.rs.
    env.emulator
        .inject_fault(Fault::new(Endpoint::Token, salesforce_503()).times(2));
    let refreshed = manager.refresh(&key).await.unwrap().secret().to_owned();
    assert_eq!(env.token_requests() - before, 3);
    assert_ne!(refreshed, original);

    // Salesforce down for longer: the refresh fails, the still-valid token is served.
    let before = env.token_requests();
    env.emulator
        .inject_fault(Fault::new(Endpoint::Token, salesforce_503()).times(3));
    let served = manager
        .access_token(&key)
        .await
        .unwrap()
        .secret()
        .to_owned();
    assert_eq!(served, refreshed);
    assert_eq!(env.token_requests() - before, 3);
    assert_eq!(manager.stats().served_stale, 1);
    // Within the failure backoff nobody hammers Salesforce.
    manager.access_token(&key).await.unwrap();
    assert_eq!(env.token_requests() - before, 3);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let recovered = manager
        .access_token(&key)
        .await
        .unwrap()
        .secret()
        .to_owned();
    assert_ne!(recovered, refreshed);
    assert_eq!(env.token_requests() - before, 4);
    assert_eq!(rejected(&env), 0);
}

#[tokio::test]
async fn an_org_migration_updates_the_instance_url() {
    let env = Env::start().await.unwrap();
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let manager = manager(&env, store.clone(), RefreshPolicy::default()).await;
    let key = env.store_login(&manager, "default").await.unwrap();
    let old = manager
        .access_token(&key)
        .await
        .unwrap()
        .instance_url()
        .clone();
    let mut events = manager.subscribe();

    let site = env.emulator.site_url();
    env.emulator
        .set_instance_url(&env.creds().org_id, Some(site.clone()))
        .unwrap();
    let token = manager.refresh(&key).await.unwrap();
    assert_eq!(
        token.instance_url().as_str().trim_end_matches('/'),
        site.trim_end_matches('/')
    );
    assert_ne!(token.instance_url(), &old);
    assert_eq!(env.query_status_with(&token).await.unwrap(), 200);
    let stored = store.get(&key).await.unwrap().unwrap();
    assert_eq!(&stored.tokens.instance_url, token.instance_url());

    let kinds: Vec<EventKind> =
        std::iter::from_fn(|| events.try_recv().ok().map(|e| e.kind)).collect();
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, EventKind::InstanceUrlChanged { from, .. } if from == &old)),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn introspection_teaches_the_org_session_lifetime() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let manager = env
        .manager_builder(client)
        .store(Arc::new(MemoryStore::new()))
        .policy(RefreshPolicy::default().learn_from_introspection(true))
        .build()
        .await
        .unwrap();
    let key = env.store_login(&manager, "default").await.unwrap();
    assert_eq!(manager.learned_lifetime(key.org_id()), None);

    let token = manager.refresh(&key).await.unwrap();
    // The emulator's seeded app has a two-hour session timeout.
    assert_eq!(manager.learned_lifetime(key.org_id()), Some(2 * HOUR));
    let issued = token.issued_at().unwrap();
    let expires = token.expires_at().unwrap();
    // `exp` has whole seconds: the expiry is the issuing second plus two hours.
    let early = (issued + 2 * HOUR).duration_since(expires).unwrap();
    assert!(early < Duration::from_secs(1), "{early:?}");
    assert_eq!(env.emulator.counters().requests("introspect"), 1);
}

#[tokio::test]
async fn the_background_refresher_refreshes_due_and_idle_tenants_then_stops() {
    let (env, manager, due, before) = due_tenant().await;

    let refresher = manager.spawn_refresher(
        sfauth::BackgroundConfig::default()
            .interval(Duration::from_millis(20))
            .concurrency(2),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while env.refresh_grants() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the refresher never refreshed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    refresher.shutdown().await;
    // The caller finds a fresh token and sends nothing.
    let after = env.refresh_grants();
    manager.access_token(&due).await.unwrap();
    assert_eq!(env.refresh_grants(), after);
    assert_eq!(after - before, 1, "a fresh token is not refreshed again");

    // Keep-alive: a tenant without known expiry, idle longer than the threshold.
    let idle_env = Env::start().await.unwrap();
    let idle_manager = idle_env
        .manager_builder(idle_env.client().unwrap())
        .store(Arc::new(MemoryStore::new()))
        .build()
        .await
        .unwrap();
    idle_manager
        .store_tokens(idle_env.login().await.unwrap(), "idle")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let refresher = idle_manager.spawn_refresher(
        sfauth::BackgroundConfig::default()
            .interval(Duration::from_millis(20))
            .keep_alive_after(Some(Duration::from_millis(100))),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while idle_env.refresh_grants() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "keep-alive never refreshed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    refresher.shutdown().await;
    let stopped_at = idle_env.refresh_grants();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        idle_env.refresh_grants(),
        stopped_at,
        "nothing runs after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_wide_revocation_teaches_no_session_lifetime() {
    // Tokens issued five minutes before the real clock: they look five minutes old when the
    // org's admin kills them all at once.
    let env = env_behind(Duration::from_secs(300)).await;
    let client = env.client().unwrap();
    let manager = env
        .manager_builder(client)
        .store(Arc::new(MemoryStore::new()))
        .build()
        .await
        .unwrap();
    let mut tenants = Vec::new();
    for label in ["sync", "forms", "reports"] {
        let key = env.store_login(&manager, label).await.unwrap();
        let token = manager
            .access_token(&key)
            .await
            .unwrap()
            .access_token()
            .clone();
        tenants.push((key, token));
    }
    env.emulator.advance(Duration::from_secs(300));
    env.emulator.expire_access_tokens();
    for (key, dead) in &tenants {
        let fresh = manager.session_expired(key, dead).await.unwrap();
        assert_eq!(env.query_status_with(&fresh).await.unwrap(), 200);
    }
    // Three tokens died at five minutes, but at one moment: a revocation, not a timeout. The org
    // keeps no five-minute lifetime, so its tenants do not refresh every four minutes from now on.
    let org = tenants[0].0.org_id();
    assert_eq!(manager.learned_lifetime(org), None);
    let before = env.refresh_grants();
    for (key, _) in &tenants {
        manager.access_token(key).await.unwrap();
    }
    assert_eq!(env.refresh_grants(), before);
}
