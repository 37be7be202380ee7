//! Removing a tenant while its refresh is in flight: whichever of the two finishes first, the
//! refresh never brings the removed tenant's token back, and no call hands out an empty token.
//! Gates (not sleeps) order the steps: the token endpoint answers, and the store deletes, only
//! when the test says so.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use std::sync::Arc;

use crate::support;

use async_trait::async_trait;
use bytes::Bytes;
use sfauth::{ErrorKind, TokenManager};
use sfauth_core::http::{HttpRequest, HttpResponse, HttpTransport, TransportError};
use sfauth_core::{
    AccessToken, ConnectedApp, LoginHost, OAuthClient, RefreshToken, TokenKey, TokenSet,
};
use support::{Intercept, Intercepted};
use tokio::sync::Semaphore;

const ORG: &str = "00D5e000000AbcdEAC";
const USER: &str = "0055e000001XyZaAAK";

/// A one-way signal: `open` lets every `pass` through, now and later.
#[derive(Clone)]
struct Gate(Arc<Semaphore>);

impl Gate {
    fn new() -> Self {
        Self(Arc::new(Semaphore::new(0)))
    }
    fn open(&self) {
        self.0.add_permits(Semaphore::MAX_PERMITS / 2);
    }
    async fn pass(&self) {
        self.0.acquire().await.unwrap().forget();
    }
}

/// A token endpoint that says it was called, then answers with new tokens when let through.
fn gated_transport(called: Gate, answer: Gate) -> Arc<dyn HttpTransport> {
    Arc::new(move |_request: HttpRequest| {
        let (called, answer) = (called.clone(), answer.clone());
        async move {
            called.open();
            answer.pass().await;
            let body = format!(
                r#"{{"access_token":"00Dxx!NEW","refresh_token":"5AepNEW","instance_url":"https://acme.my.salesforce.com","id":"https://login.salesforce.com/id/{ORG}/{USER}","issued_at":"1700000000000","token_type":"Bearer"}}"#
            );
            Ok::<HttpResponse, TransportError>(
                http::Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(Bytes::from(body))
                    .unwrap(),
            )
        }
    })
}

/// Deletes say they started, then wait to be let through.
struct GatedDelete {
    started: Gate,
    proceed: Gate,
}

#[async_trait]
impl Intercept for GatedDelete {
    async fn delete(&self) {
        self.started.open();
        self.proceed.pass().await;
    }
}

struct Race {
    manager: TokenManager,
    key: TokenKey,
    token_called: Gate,
    token_answer: Gate,
    delete_started: Gate,
    delete_proceed: Gate,
}

async fn race() -> Race {
    let (token_called, token_answer) = (Gate::new(), Gate::new());
    let (delete_started, delete_proceed) = (Gate::new(), Gate::new());
    let store = Intercepted::new(GatedDelete {
        started: delete_started.clone(),
        proceed: delete_proceed.clone(),
    });
    let manager = TokenManager::builder(OAuthClient::new(
        LoginHost::Production,
        ConnectedApp::new("3MVG9.test"),
    ))
    .transport(gated_transport(token_called.clone(), token_answer.clone()))
    .store(Arc::new(store))
    .build()
    .await
    .unwrap();
    let mut tokens = TokenSet::new(
        AccessToken::new("00Dxx!OLD"),
        "https://acme.my.salesforce.com".parse().unwrap(),
        format!("https://login.salesforce.com/id/{ORG}/{USER}")
            .parse()
            .unwrap(),
    );
    tokens.refresh_token = Some(RefreshToken::new("5AepOLD"));
    let key = manager.store_tokens(tokens, "default").await.unwrap();
    Race {
        manager,
        key,
        token_called,
        token_answer,
        delete_started,
        delete_proceed,
    }
}

/// Nothing of the tenant is served any more, by the manager or by a handle taken before.
async fn nothing_served(race: &Race, handle: &mut sfauth::Tenant) {
    let error = race.manager.access_token(&race.key).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::UnknownTenant, "{error:?}");
    assert!(handle.cached().is_none());
    let error = handle.access_token().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::UnknownTenant, "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_answered_after_the_removal_began_does_not_bring_the_token_back() {
    let race = race().await;
    let mut handle = race.manager.tenant(&race.key).await.unwrap();
    let refresh = tokio::spawn({
        let (manager, key) = (race.manager.clone(), race.key.clone());
        async move { manager.refresh(&key).await.map(|t| t.secret().to_owned()) }
    });
    race.token_called.pass().await;
    let remove = tokio::spawn({
        let (manager, key) = (race.manager.clone(), race.key.clone());
        async move { manager.remove(&key).await }
    });
    // The tenant has left the manager; its record is still in the store, so the refresh saves.
    race.delete_started.pass().await;
    race.token_answer.open();
    let refreshed = refresh.await.unwrap();
    let error = refreshed.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::UnknownTenant, "{error:?}");
    race.delete_proceed.open();
    assert!(remove.await.unwrap().unwrap());
    nothing_served(&race, &mut handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_answered_after_the_record_was_deleted_keeps_nothing() {
    let race = race().await;
    let mut handle = race.manager.tenant(&race.key).await.unwrap();
    let refresh = tokio::spawn({
        let (manager, key) = (race.manager.clone(), race.key.clone());
        async move { manager.refresh(&key).await.map(|t| t.secret().to_owned()) }
    });
    race.token_called.pass().await;
    race.delete_proceed.open();
    assert!(race.manager.remove(&race.key).await.unwrap());
    race.token_answer.open();
    // The save finds no record: an error, never the new token.
    let refreshed = refresh.await.unwrap();
    assert!(refreshed.is_err(), "{refreshed:?}");
    nothing_served(&race, &mut handle).await;
    assert!(race.manager.store().get(&race.key).await.unwrap().is_none());
}
