//! Keyed lookups first try a small per-thread table of the tenants the thread used last
//! (`recent.rs`). These tests show that it never hands out a token the tenant map would not:
//! after a new login, after a removal (which also leaves handles nothing) and a new login under
//! the same key, between managers on
//! one thread (including a manager dropped and replaced), and with more tenants than the table
//! has entries. Each test runs on one thread (Tokio's current-thread runtime), where the table
//! is shared by every call.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use std::sync::Arc;

use sfauth::{ErrorKind, MemoryStore, TokenManager};
use sfauth_core::http::{
    HttpRequest, HttpResponse, HttpTransport, TransportError, TransportErrorKind,
};
use sfauth_core::{AccessToken, ConnectedApp, LoginHost, OAuthClient, TokenKey, TokenSet};

/// Org and user of tenant `i`: 18 characters each, unique per tenant.
fn identity(i: usize) -> String {
    format!("https://login.salesforce.com/id/00D{i:015}/005{i:015}")
}

fn tokens(i: usize, access: &str) -> TokenSet {
    TokenSet::new(
        AccessToken::new(access),
        "https://acme.my.salesforce.com".parse().unwrap(),
        identity(i).parse().unwrap(),
    )
}

/// A manager that can make no request: every token it serves comes from its cache or store.
async fn manager() -> TokenManager {
    let offline: Arc<dyn HttpTransport> = Arc::new(|_request: HttpRequest| async {
        Err::<HttpResponse, _>(TransportError::new(
            TransportErrorKind::Connect,
            "these tests make no requests",
        ))
    });
    TokenManager::builder(OAuthClient::new(
        LoginHost::Production,
        ConnectedApp::new("3MVG9.recent"),
    ))
    .store(Arc::new(MemoryStore::new()))
    .transport(offline)
    .build()
    .await
    .unwrap()
}

async fn token(manager: &TokenManager, key: &TokenKey) -> String {
    manager.access_token(key).await.unwrap().secret().to_owned()
}

#[tokio::test]
async fn a_new_login_is_served_at_once() {
    let manager = manager().await;
    let key = manager
        .store_tokens(tokens(1, "first"), "default")
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(token(&manager, &key).await, "first");
    }
    manager
        .store_tokens(tokens(1, "second"), "default")
        .await
        .unwrap();
    assert_eq!(token(&manager, &key).await, "second");
}

#[tokio::test]
async fn a_removed_tenant_is_not_served_even_when_logged_in_again() {
    let manager = manager().await;
    let key = manager
        .store_tokens(tokens(1, "before"), "default")
        .await
        .unwrap();
    assert_eq!(token(&manager, &key).await, "before");
    assert_eq!(token(&manager, &key).await, "before");
    let mut handle = manager.tenant(&key).await.unwrap();
    assert_eq!(handle.access_token().await.unwrap().secret(), "before");

    assert!(manager.remove(&key).await.unwrap());
    let error = manager.access_token(&key).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::UnknownTenant, "{error:?}");
    // A handle taken before holds the removed tenant, which has no token left to give.
    assert!(handle.cached().is_none());
    let error = handle.access_token().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::UnknownTenant, "{error:?}");

    manager
        .store_tokens(tokens(1, "after"), "default")
        .await
        .unwrap();
    assert_eq!(token(&manager, &key).await, "after");
}

#[tokio::test]
async fn managers_on_one_thread_never_see_each_others_tenants() {
    let first = manager().await;
    let second = manager().await;
    let key = first
        .store_tokens(tokens(1, "first's"), "default")
        .await
        .unwrap();
    assert_eq!(token(&first, &key).await, "first's");
    // The same key, unknown to the second manager until it gets its own login.
    let error = second.access_token(&key).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::UnknownTenant, "{error:?}");
    second
        .store_tokens(tokens(1, "second's"), "default")
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(token(&first, &key).await, "first's");
        assert_eq!(token(&second, &key).await, "second's");
    }

    // A manager dropped and replaced (perhaps at the same address) starts from nothing.
    drop(first);
    let third = manager().await;
    let error = third.access_token(&key).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::UnknownTenant, "{error:?}");
}

#[tokio::test]
async fn more_tenants_than_the_table_holds_are_all_served_their_own_tokens() {
    let manager = manager().await;
    let mut keys = Vec::new();
    for i in 0..100 {
        let key = manager
            .store_tokens(tokens(i, &format!("token-{i}")), "default")
            .await
            .unwrap();
        keys.push(key);
    }
    // In turn, at random, and one tenant many times in a row: whatever the table holds.
    for round in 0..5 {
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(
                token(&manager, key).await,
                format!("token-{i}"),
                "round {round}"
            );
        }
    }
    for _ in 0..2_000 {
        let i = rand::random_range(0..keys.len());
        assert_eq!(token(&manager, &keys[i]).await, format!("token-{i}"));
    }
    for _ in 0..50 {
        assert_eq!(token(&manager, &keys[7]).await, "token-7");
    }
    // A key made afresh (not the one the tenant was stored under) finds the same tenant.
    let again = TokenKey::new(
        &LoginHost::Production,
        &identity(7).parse().unwrap(),
        "3MVG9.recent",
        "default",
    );
    assert_eq!(token(&manager, &again).await, "token-7");
}
