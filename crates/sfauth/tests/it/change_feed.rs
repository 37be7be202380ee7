//! The background refresher follows the store's change feed: a tenant that another worker
//! refreshed is taken from the header its save announced, with no header read and no lease
//! attempt of this worker's (each worker of a fleet read every refreshed tenant's header
//! before: 8 of a refresh's 12 store operations with 8 workers on Redis).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::support::{Intercept, Intercepted};

use sfauth::storage::TokenStore as _;
use sfauth::{BackgroundConfig, TokenManager};
use sfauth_core::http::{HttpRequest, HttpResponse, HttpTransport, TransportError};
use sfauth_core::{AccessToken, ConnectedApp, LoginHost, OAuthClient, RefreshToken, TokenSet};

/// Counts what this worker asks the store about the tenant's state.
#[derive(Default)]
struct Reads {
    headers: AtomicU64,
    lease_attempts: AtomicU64,
}

impl Intercept for Arc<Reads> {
    fn header(&self) {
        self.headers.fetch_add(1, Ordering::Relaxed);
    }
    fn try_acquire(&self) {
        self.lease_attempts.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_refreshed_elsewhere_is_taken_from_the_feed_without_a_read() {
    let reads = Arc::new(Reads::default());
    let store = Arc::new(Intercepted::new(reads.clone()));
    // Nothing may reach Salesforce: the tenant is refreshed "elsewhere".
    let transport: Arc<dyn HttpTransport> = Arc::new(|_request: HttpRequest| async move {
        Err::<HttpResponse, TransportError>(TransportError::new(
            sfauth_core::http::TransportErrorKind::Connect,
            "this worker must not refresh",
        ))
    });
    let manager = TokenManager::builder(OAuthClient::new(
        LoginHost::Production,
        ConnectedApp::new("3MVG9.test"),
    ))
    .transport(transport)
    .store(store.clone())
    .build()
    .await
    .unwrap();
    let hour = Duration::from_secs(3600);
    let mut tokens = TokenSet::new(
        AccessToken::new("00Dxx!OLD"),
        "https://acme.my.salesforce.com".parse().unwrap(),
        "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK"
            .parse()
            .unwrap(),
    );
    tokens.refresh_token = Some(RefreshToken::new("5AepOLD"));
    tokens.expires_at = Some(SystemTime::now() + 12 * hour);
    let key = manager.store_tokens(tokens, "default").await.unwrap();

    // Due in 12 hours, so within the 20 hours the refresher looks ahead; its own attempt would
    // come no earlier than 2 hours from now (the window opens 10 hours before the deadline).
    let refresher = manager.spawn_refresher(
        BackgroundConfig::default()
            .interval(10 * hour)
            .spread(10 * hour),
    );
    // Another worker's saves, until one is heard (the feed is followed once the refresher
    // runs, and a save before that is not announced to it).
    let mut saved = 0;
    for _ in 0..100 {
        let mut record = store.inner.get(&key).await.unwrap().unwrap();
        record.tokens.access_token = AccessToken::new(format!("00Dxx!NEW{saved}"));
        record.tokens.expires_at = Some(SystemTime::now() + 14 * hour);
        store
            .inner
            .put(record.clone(), record.version, None)
            .await
            .unwrap();
        saved += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        if manager.stats().background_adopted > 0 {
            break;
        }
    }
    let stats = manager.stats();
    assert!(
        stats.background_adopted >= 1,
        "no announced header was taken"
    );
    assert_eq!(
        reads.headers.load(Ordering::Relaxed),
        0,
        "a header was read"
    );
    assert_eq!(
        reads.lease_attempts.load(Ordering::Relaxed),
        0,
        "a lease was tried"
    );
    assert_eq!(stats.token_requests, 0);

    // The tenant's next use opens the record the other worker stored.
    let token = manager.access_token(&key).await.unwrap();
    assert_eq!(
        token.access_token().expose_secret(),
        format!("00Dxx!NEW{}", saved - 1)
    );
    refresher.shutdown().await;
}
