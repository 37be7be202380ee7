//! When Salesforce refuses a grant for good: one event, a marked record, fail-fast calls that
//! send nothing, and a new login that clears it all. Also tenants without a refresh token,
//! renewed by their own flow.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use std::sync::Arc;

use sfauth::storage::{RecordStatus, TokenStore};
use sfauth::{ErrorKind, EventKind, MemoryStore, Renewal, TokenManager};
use sfauth_core::{Cause, TokenKey};
use sfauth_tests::Env;

async fn manager(env: &Env, store: Arc<dyn TokenStore>) -> TokenManager {
    env.manager_builder(env.client().unwrap())
        .store(store)
        .build()
        .await
        .unwrap()
}

async fn secret(manager: &TokenManager, key: &sfauth_core::TokenKey) -> String {
    manager.access_token(key).await.unwrap().secret().to_owned()
}

#[tokio::test]
async fn revocation_sends_one_event_then_fails_fast_until_a_new_login() {
    let env = Env::start().await.unwrap();
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let manager = manager(&env, store.clone()).await;
    let key = env.store_login(&manager, "default").await.unwrap();
    let stale = manager
        .access_token(&key)
        .await
        .unwrap()
        .access_token()
        .clone();
    let mut events = manager.subscribe();

    // An admin revokes the user's tokens; the next API call gets INVALID_SESSION_ID.
    env.emulator
        .revoke_user_tokens(&env.creds().username)
        .unwrap();
    let error = manager.session_expired(&key, &stale).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ReauthorizationRequired);
    assert!(
        matches!(
            &error,
            sfauth::Error::ReauthorizationRequired {
                cause: Some(Cause::TokenExpiredOrRevoked),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!format!("{error} {error:?}").contains(stale.expose_secret()));

    // The record says so, for every process sharing the store.
    let record = store.get(&key).await.unwrap().unwrap();
    assert!(
        matches!(record.status, RecordStatus::ReauthRequired { .. }),
        "{record:?}"
    );
    assert!(record.refresh_in_flight.is_none());

    // Later calls fail fast, in this process and in a fresh one, without calling Salesforce.
    let before = env.token_requests();
    for _ in 0..100 {
        let error = manager.access_token(&key).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ReauthorizationRequired);
    }
    let other_process = self::manager(&env, store.clone()).await;
    let error = other_process.access_token(&key).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ReauthorizationRequired);
    assert_eq!(env.token_requests(), before);

    let reauth_events: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
        .filter(|event| matches!(event.kind, EventKind::ReauthRequired { .. }))
        .collect();
    assert_eq!(reauth_events.len(), 1, "{reauth_events:?}");
    assert_eq!(reauth_events[0].key, key);
    assert_eq!(manager.stats().tenants_reauth_required, 1);

    // A new login replaces the record and clears the mark.
    let relogin = env.store_login(&manager, "default").await.unwrap();
    assert_eq!(relogin, key);
    let token = manager.access_token(&key).await.unwrap();
    assert_eq!(env.query_status_with(&token).await.unwrap(), 200);
    let record = store.get(&key).await.unwrap().unwrap();
    assert_eq!(record.status, RecordStatus::Active);
    drop(token);
    manager.refresh(&key).await.unwrap();
}

#[tokio::test]
async fn a_frozen_user_needs_reauthorization_with_that_cause() {
    let env = Env::start().await.unwrap();
    let manager = manager(&env, Arc::new(MemoryStore::new())).await;
    let key = env.store_login(&manager, "default").await.unwrap();
    env.emulator.freeze_user(&env.creds().username).unwrap();
    let error = manager.refresh(&key).await.unwrap_err();
    assert_eq!(
        error.kind(),
        ErrorKind::ReauthorizationRequired,
        "{error:?}"
    );
}

#[tokio::test]
async fn client_credentials_tenants_are_renewed_by_their_flow() {
    let env = Env::start().await.unwrap();
    let manager = manager(&env, Arc::new(MemoryStore::new())).await;
    let tokens = manager
        .client()
        .client_credentials(&env.transport)
        .await
        .unwrap();
    assert!(tokens.refresh_token.is_none());
    let key = manager.store_tokens(tokens, "integration").await.unwrap();
    let first = secret(&manager, &key).await;

    // Without a renewal, a tenant with no refresh token cannot be renewed: a configuration
    // error, not a verdict on the tenant, so nothing is marked and no request is sent.
    let error = manager.refresh(&key).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config, "{error}");
    assert_eq!(env.emulator.counters().grant("client_credentials"), 1);

    // Configuring one is enough: no new login.
    manager
        .set_renewal(&key, Renewal::ClientCredentials)
        .await
        .unwrap();
    let renewed = manager.refresh(&key).await.unwrap();
    assert_ne!(renewed.secret(), first);
    assert_eq!(env.query_status_with(&renewed).await.unwrap(), 200);
    assert_eq!(env.emulator.counters().grant("client_credentials"), 2);
    assert_eq!(env.refresh_grants(), 0);
}

#[tokio::test]
async fn jwt_bearer_tenants_are_renewed_by_their_flow() {
    let env = Env::start().await.unwrap();
    let jwt = env.seeded_jwt();
    let client = env.client().unwrap();
    let manager = env
        .manager_builder(client)
        .store(Arc::new(MemoryStore::new()))
        .default_renewal(Renewal::JwtBearer(jwt.clone()))
        .build()
        .await
        .unwrap();
    let tokens = manager
        .client()
        .jwt_bearer(&env.transport, &jwt)
        .await
        .unwrap();
    let key = manager.store_tokens(tokens, "jwt").await.unwrap();
    let first = secret(&manager, &key).await;

    let renewed = manager.refresh(&key).await.unwrap();
    assert_ne!(renewed.secret(), first);
    assert_eq!(env.query_status_with(&renewed).await.unwrap(), 200);
    assert_eq!(env.emulator.counters().grant("jwt_bearer"), 2);
}

#[tokio::test]
async fn tokens_of_another_user_are_never_stored_under_a_key() {
    let env = Env::start().await.unwrap();
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let manager = manager(&env, store.clone()).await;
    let tokens = env.login().await.unwrap();
    let own = manager.key_for(&tokens, "default");
    let key = TokenKey::from_parts(
        own.login_host(),
        own.org_id().clone(),
        "005000000000001AAA".parse().unwrap(),
        own.client_id(),
        own.label(),
    );
    let error = manager
        .store_tokens_as(key.clone(), tokens)
        .await
        .unwrap_err();
    assert!(
        matches!(error, sfauth::Error::IdentityMismatch { .. }),
        "{error:?}"
    );
    assert!(store.get(&key).await.unwrap().is_none());
}
