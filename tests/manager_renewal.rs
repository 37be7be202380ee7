//! Server-to-server tenants (client credentials, JWT bearer) across a restart: the renewal is
//! recorded with the tenant in a real SQLite file, a manager started later renews without being
//! told again, and "no renewal configured" is a configuration error that marks nothing, so a
//! tenant recovers as soon as one is configured.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sfauth::storage::{Key, Keyring, RecordStatus, TokenStore};
use sfauth::{ErrorKind, Renewal, RenewalFlow, SqliteStore, TokenManager, TokenManagerBuilder};
use sfauth_emulator::Clock;
use sfauth_tests::Env;

const HOUR: Duration = Duration::from_secs(3600);

/// An emulator whose clock runs two hours behind the real one: the tokens it issues look two
/// hours old to the manager (due at once, with a one-hour session timeout) until
/// [`catch_up`] moves it to the present.
async fn env_behind() -> Env {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    Env::start_with(|builder| builder.clock(Clock::manual(now_ms - 2 * HOUR.as_millis() as i64)))
        .await
        .unwrap()
}

fn catch_up(env: &Env) {
    env.emulator.advance(2 * HOUR);
}

/// One "process": a SQLite store on `path` sealed with `key`, and a manager builder on it.
async fn process(env: &Env, path: &Path, key: &Key) -> (Arc<dyn TokenStore>, TokenManagerBuilder) {
    let keyring = Keyring::new(Key::from_base64(&key.to_base64()).unwrap());
    let store: Arc<dyn TokenStore> = Arc::new(SqliteStore::open(path, keyring).await.unwrap());
    let client = env.client().unwrap().with_session_timeout(HOUR);
    let builder = env.manager_builder(client).store(store.clone());
    (store, builder)
}

#[tokio::test]
async fn a_client_credentials_tenant_renews_after_a_restart_without_being_told_again() {
    let env = env_behind().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = (dir.path().join("tokens.db"), Key::generate());

    let (_, builder) = process(&env, &path, &key).await;
    let first = builder.build().await.unwrap();
    let tokens = first
        .client()
        .client_credentials(&env.transport)
        .await
        .unwrap();
    let tenant = first.store_tokens(tokens, "integration").await.unwrap();
    first
        .set_renewal(&tenant, Renewal::ClientCredentials)
        .await
        .unwrap();
    drop(first);

    // A new process: nothing configured but the app; the session has timed out.
    catch_up(&env);
    let (store, builder) = process(&env, &path, &key).await;
    let second = builder.build().await.unwrap();
    let token = second.access_token(&tenant).await.unwrap();
    assert_eq!(env.query_status_with(&token).await.unwrap(), 200);
    assert_eq!(env.emulator.counters().grant("client_credentials"), 2);
    let record = store.get(&tenant).await.unwrap().unwrap();
    assert_eq!(record.status, RecordStatus::Active);
    assert_eq!(
        record.renewal.map(|hint| hint.flow),
        Some(RenewalFlow::ClientCredentials)
    );
}

#[tokio::test]
async fn a_jwt_tenant_without_its_key_is_a_config_error_that_marks_nothing_and_recovers() {
    let env = env_behind().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = (dir.path().join("tokens.db"), Key::generate());
    let jwt = env.seeded_jwt();

    let (_, builder) = process(&env, &path, &key).await;
    let first = builder.build().await.unwrap();
    let tokens = first
        .client()
        .jwt_bearer(&env.transport, &jwt)
        .await
        .unwrap();
    let tenant = first.store_tokens(tokens, "jwt").await.unwrap();
    first
        .set_renewal(&tenant, Renewal::JwtBearer(jwt.clone()))
        .await
        .unwrap();
    drop(first);
    catch_up(&env);

    // Restarted without the key: the manager cannot renew, says so as configuration, and
    // leaves the record as it was (no re-authorization mark, no request to Salesforce).
    let (store, builder) = process(&env, &path, &key).await;
    let blind = builder.build().await.unwrap();
    let requests = env.token_requests();
    // (A JWT bearer answer carries no `issued_at`, so its expiry counts from its arrival: the
    // refresh is asked for explicitly.)
    for _ in 0..2 {
        let error = blind.refresh(&tenant).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config, "{error}");
        assert!(
            matches!(error, sfauth::Error::NoRenewal { .. }),
            "{error:?}"
        );
    }
    assert_eq!(env.token_requests(), requests);
    let record = store.get(&tenant).await.unwrap().unwrap();
    assert_eq!(record.status, RecordStatus::Active);
    let hint = record.renewal.clone().unwrap();
    assert_eq!(hint.flow, RenewalFlow::JwtBearer);
    assert_eq!(
        hint.username.as_deref(),
        Some(env.creds().username.as_str())
    );
    drop(blind);

    // Restarted with a resolver that finds the key: renewed, no new login.
    let (_, builder) = process(&env, &path, &key).await;
    let username = env.creds().username.clone();
    let seeded = jwt.clone();
    let resolved = builder
        .renewal_resolver(move |hint| {
            (hint.flow == RenewalFlow::JwtBearer && hint.username.as_deref() == Some(&username))
                .then(|| Renewal::JwtBearer(seeded.clone()))
        })
        .build()
        .await
        .unwrap();
    let token = resolved.refresh(&tenant).await.unwrap();
    assert_eq!(env.query_status_with(&token).await.unwrap(), 200);
    assert_eq!(env.emulator.counters().grant("jwt_bearer"), 2);
}

#[tokio::test]
async fn a_tenant_marked_for_login_only_for_lack_of_a_renewal_recovers_when_one_is_set() {
    // Records written before renewals were recorded: a client-credentials tenant marked
    // "needs a login" because the manager of the day had no renewal configured.
    let env = env_behind().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = (dir.path().join("tokens.db"), Key::generate());
    let (store, builder) = process(&env, &path, &key).await;
    let manager: TokenManager = builder.build().await.unwrap();
    let tokens = manager
        .client()
        .client_credentials(&env.transport)
        .await
        .unwrap();
    let tenant = manager.store_tokens(tokens, "legacy").await.unwrap();
    let mut record = store.get(&tenant).await.unwrap().unwrap();
    let version = record.version;
    record.status = RecordStatus::ReauthRequired {
        reason: "the tokens have no refresh token and no renewal flow is configured".into(),
        since: SystemTime::now(),
    };
    store.put(record, version, None).await.unwrap();
    drop(manager);
    catch_up(&env);

    let (_, builder) = process(&env, &path, &key).await;
    let manager = builder
        .default_renewal(Renewal::ClientCredentials)
        .build()
        .await
        .unwrap();
    let token = manager.access_token(&tenant).await.unwrap();
    assert_eq!(env.query_status_with(&token).await.unwrap(), 200);
    let record = store.get(&tenant).await.unwrap().unwrap();
    assert_eq!(record.status, RecordStatus::Active);
}

#[tokio::test]
async fn a_renewal_under_503s_makes_exactly_the_policy_s_attempts_not_their_product() {
    use sfauth_emulator::{Endpoint, Fault, FaultKind};
    use sfauth_transport::{ReqwestTransport, Retry, RetryPolicy};

    let env = env_behind().await;
    // The production stack: a retrying transport under the manager. Before one retry story,
    // each of the manager's three attempts was retried three times by the transport: nine
    // logins against Salesforce's login rate limit for one renewal.
    let transport = Retry::new(ReqwestTransport::new().unwrap(), RetryPolicy::default());
    let client = env.client().unwrap().with_session_timeout(HOUR);
    let manager = TokenManager::builder(client)
        .transport(Arc::new(transport))
        .store(Arc::new(sfauth::MemoryStore::new()))
        .policy(sfauth::RefreshPolicy::default().attempts(3))
        .default_renewal(Renewal::ClientCredentials)
        .build()
        .await
        .unwrap();
    let tokens = manager
        .client()
        .client_credentials(&env.transport)
        .await
        .unwrap();
    let tenant = manager.store_tokens(tokens, "integration").await.unwrap();
    catch_up(&env);
    let before = env.token_requests();
    env.emulator
        .inject_fault(Fault::new(Endpoint::Token, FaultKind::Status(503)).times(100));

    let error = manager.refresh(&tenant).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient, "{error}");
    assert_eq!(
        env.token_requests() - before,
        3,
        "one renewal sends at most the manager's attempts"
    );
}
