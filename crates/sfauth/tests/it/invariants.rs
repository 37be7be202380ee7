//! The manager's safety rules where only a scripted store or transport can provoke the failure:
//! a store that fails after Salesforce rotated the token, a refresh that returns another user's
//! tokens, a response lost in flight, and what secrets may appear in errors and events.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support;

use async_trait::async_trait;
use bytes::Bytes;
use sfauth::storage::{ErrorKind as StoreErrorKind, RecordStatus, TokenRecord, TokenStore};
use sfauth::{ErrorKind, MemoryStore, TokenManager};
use sfauth_core::http::{HttpRequest, HttpResponse, TransportError, TransportErrorKind};
use sfauth_core::{
    AccessToken, ConnectedApp, LoginHost, OAuthClient, RefreshToken, TokenKey, TokenSet,
};
use support::{Intercept, Intercepted};

const ORG: &str = "00D5e000000AbcdEAC";
const USER: &str = "0055e000001XyZaAAK";

fn tokens(access: &str, refresh: &str) -> TokenSet {
    let mut tokens = TokenSet::new(
        AccessToken::new(access),
        "https://acme.my.salesforce.com".parse().unwrap(),
        format!("https://login.salesforce.com/id/{ORG}/{USER}")
            .parse()
            .unwrap(),
    );
    tokens.refresh_token = Some(RefreshToken::new(refresh));
    tokens
}

fn token_response(access: &str, refresh: &str, user: &str) -> HttpResponse {
    let body = format!(
        r#"{{"access_token":"{access}","refresh_token":"{refresh}","instance_url":"https://acme.my.salesforce.com","id":"https://login.salesforce.com/id/{ORG}/{user}","issued_at":"1700000000000","token_type":"Bearer"}}"#
    );
    http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Bytes::from(body))
        .unwrap()
}

/// A transport answering token requests from a script, counting them; `userinfo` (the probe
/// of whether the access token still works) answers 200 while `session_alive`, else 401.
#[derive(Clone)]
struct Scripted {
    answers: Arc<Mutex<VecDeque<Result<HttpResponse, TransportErrorKind>>>>,
    sent: Arc<AtomicUsize>,
    probes: Arc<AtomicUsize>,
    session_alive: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for Scripted {
    fn default() -> Self {
        Self {
            answers: Arc::default(),
            sent: Arc::default(),
            probes: Arc::default(),
            session_alive: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }
}

impl Scripted {
    fn push(&self, answer: Result<HttpResponse, TransportErrorKind>) {
        self.answers.lock().unwrap().push_back(answer);
    }

    /// Token requests sent.
    fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    fn probes(&self) -> usize {
        self.probes.load(Ordering::SeqCst)
    }

    fn end_session(&self) {
        self.session_alive.store(false, Ordering::SeqCst);
    }

    fn transport(&self) -> Arc<dyn sfauth_core::http::HttpTransport> {
        let this = self.clone();
        Arc::new(move |request: HttpRequest| {
            let this = this.clone();
            async move {
                if request.uri().path().ends_with("/userinfo") {
                    this.probes.fetch_add(1, Ordering::SeqCst);
                    let alive = this.session_alive.load(Ordering::SeqCst);
                    let (status, body): (u16, &'static [u8]) = if alive {
                        (200, br#"{"user_id":"0055e000001XyZaAAK"}"#)
                    } else {
                        (401, b"Bad_OAuth_Token")
                    };
                    return Ok(http::Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Bytes::from_static(body))
                        .unwrap());
                }
                this.sent.fetch_add(1, Ordering::SeqCst);
                match this.answers.lock().unwrap().pop_front() {
                    Some(Ok(response)) => Ok(response),
                    Some(Err(kind)) => Err(TransportError::new(kind, "scripted failure")),
                    None => Err(TransportError::new(
                        TransportErrorKind::Connect,
                        "no answer scripted",
                    )),
                }
            }
        })
    }
}

/// Puts of results fail while the count is above zero (the write-ahead marks still succeed).
struct FailingPuts(AtomicUsize);

#[async_trait]
impl Intercept for FailingPuts {
    async fn put(&self, record: &TokenRecord) -> sfauth::storage::Result<()> {
        if record.refresh_in_flight.is_some() {
            return Ok(());
        }
        match self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        {
            Ok(_) => Err(sfauth::storage::Error::new(StoreErrorKind::Io, "disk full")),
            Err(_) => Ok(()),
        }
    }
}

async fn setup(store: Arc<dyn TokenStore>, script: &Scripted) -> (TokenManager, TokenKey) {
    let client = OAuthClient::new(LoginHost::Production, ConnectedApp::new("3MVG9.test"));
    let manager = TokenManager::builder(client)
        .transport(script.transport())
        .store(store)
        .policy(
            sfauth::RefreshPolicy::default()
                .failure_backoff(Duration::from_millis(10), Duration::from_millis(10)),
        )
        .build()
        .await
        .unwrap();
    let key = manager
        .store_tokens(tokens("00Dxx!OLDACCESS", "5Aep861OLDREFRESH"), "default")
        .await
        .unwrap();
    (manager, key)
}

#[tokio::test]
async fn rotated_tokens_that_cannot_be_saved_are_kept_not_handed_out() {
    let store = Arc::new(Intercepted::new(FailingPuts(AtomicUsize::new(0))));
    let script = Scripted::default();
    let (manager, key) = setup(store.clone(), &script).await;

    script.push(Ok(token_response(
        "00Dxx!NEWACCESS",
        "5Aep861NEWREFRESH",
        USER,
    )));
    // The store fails the save and its retries, then the first background retry too.
    store.intercept.0.store(6, Ordering::SeqCst);
    let error = manager.refresh(&key).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Storage, "{error:?}");
    assert!(matches!(error, sfauth::Error::Unsaved { .. }));
    // The new access token was not handed out, and the old one is what the cache holds.
    let cached = manager
        .tenant(&key)
        .await
        .unwrap()
        .cached()
        .map(|t| t.secret().to_owned());
    assert_eq!(cached.as_deref(), Some("00Dxx!OLDACCESS"));
    // The record still carries the write-ahead mark: whoever comes next knows.
    let stored = store.get(&key).await.unwrap().unwrap();
    assert!(stored.refresh_in_flight.is_some());
    assert_eq!(
        stored.tokens.refresh_token.unwrap().expose_secret(),
        "5Aep861OLDREFRESH"
    );

    // The store recovers: the kept tokens are saved in the background, under the lease that
    // was kept for them, without anybody calling and without spending anything.
    let sent = script.sent();
    let mut saved = None;
    for _ in 0..200 {
        let stored = store.get(&key).await.unwrap().unwrap();
        if stored.refresh_in_flight.is_none() {
            saved = Some(stored);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let stored = saved.expect("the kept tokens were saved in the background");
    assert_eq!(
        stored.tokens.refresh_token.unwrap().expose_secret(),
        "5Aep861NEWREFRESH"
    );
    let token = manager.access_token(&key).await.unwrap();
    assert_eq!(token.secret(), "00Dxx!NEWACCESS");
    assert_eq!(
        script.sent(),
        sent,
        "the rotated-out token was not sent again"
    );
}

#[tokio::test]
async fn tokens_of_another_user_from_a_refresh_are_refused() {
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let script = Scripted::default();
    let (manager, key) = setup(store.clone(), &script).await;
    script.push(Ok(token_response(
        "00Dxx!OTHER",
        "5Aep861OTHER",
        "005000000000009AAA",
    )));

    let error = manager.refresh(&key).await.unwrap_err();
    assert!(
        matches!(error, sfauth::Error::IdentityMismatch { .. }),
        "{error:?}"
    );
    let stored = store.get(&key).await.unwrap().unwrap();
    assert_eq!(
        stored.tokens.access_token.expose_secret(),
        "00Dxx!OLDACCESS"
    );
    // The refresh token was spent on them, so the mark stays: the next refresher is careful.
    assert!(stored.refresh_in_flight.is_some());
}

#[tokio::test]
async fn a_refresh_lost_in_flight_is_not_resent_and_the_next_attempt_is_careful() {
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let script = Scripted::default();
    let (manager, key) = setup(store.clone(), &script).await;

    // The request may have reached Salesforce: a timeout.
    script.push(Err(TransportErrorKind::Timeout));
    let error = manager.refresh(&key).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient);
    assert_eq!(script.sent(), 1, "never re-sent after a timeout");
    let stored = store.get(&key).await.unwrap().unwrap();
    assert!(
        stored.refresh_in_flight.is_some(),
        "the mark stays: the token may be spent"
    );

    // While the access token works, the possibly spent refresh token is held back: a re-send
    // of a rotated-out token would revoke the family, the working token with it.
    assert_eq!(
        script.probes(),
        1,
        "the access token was probed, not the refresh token"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let error = manager.refresh(&key).await.unwrap_err();
    assert!(
        matches!(error, sfauth::Error::RefreshOnHold { .. }),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::Transient);
    assert_eq!(script.sent(), 1, "still not re-sent");
    let token = manager.access_token(&key).await.unwrap();
    assert_eq!(
        token.secret(),
        "00Dxx!OLDACCESS",
        "the working token is served"
    );
    drop(token);

    // The session ends; now the careful attempt is made, and Salesforce says the token is
    // gone: the rotation was lost.
    script.end_session();
    tokio::time::sleep(Duration::from_millis(20)).await;
    script.push(Ok(http::Response::builder()
        .status(400)
        .header("content-type", "application/json")
        .body(Bytes::from_static(
            br#"{"error":"invalid_grant","error_description":"expired access/refresh token"}"#,
        ))
        .unwrap()));
    let error = manager.refresh(&key).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ReauthorizationRequired);
    assert_eq!(script.sent(), 2, "exactly one careful attempt");
    assert!(error.to_string().contains("may have rotated"), "{error}");
    let stored = store.get(&key).await.unwrap().unwrap();
    assert!(matches!(stored.status, RecordStatus::ReauthRequired { .. }));
}

#[tokio::test]
async fn a_connect_error_proves_the_token_unspent() {
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let script = Scripted::default();
    let (manager, key) = setup(store.clone(), &script).await;
    script.push(Err(TransportErrorKind::Connect));
    let error = manager.refresh(&key).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient);
    let stored = store.get(&key).await.unwrap().unwrap();
    assert!(
        stored.refresh_in_flight.is_none(),
        "a request that never left spends nothing"
    );
}

#[tokio::test]
async fn no_secret_in_errors_events_or_debug() {
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let script = Scripted::default();
    let (manager, key) = setup(store.clone(), &script).await;
    let mut events = manager.subscribe();
    script.push(Ok(http::Response::builder()
        .status(400)
        .body(Bytes::from_static(
            br#"{"error":"invalid_grant","error_description":"expired access/refresh token"}"#,
        ))
        .unwrap()));
    let error = manager.refresh(&key).await.unwrap_err();
    let token = manager.tenant(&key).await.unwrap();
    let mut text = format!("{error} {error:?} {manager:?} {token:?}");
    while let Ok(event) = events.try_recv() {
        text.push_str(&format!("{event:?}"));
    }
    let record = store.get(&key).await.unwrap().unwrap();
    text.push_str(&format!("{record:?}"));
    for secret in ["OLDACCESS", "OLDREFRESH"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
}

#[tokio::test]
async fn a_rotated_refresh_token_in_a_rejected_answer_is_kept() {
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let script = Scripted::default();
    let (manager, key) = setup(store.clone(), &script).await;

    // Salesforce rotated and answered 2xx, but the answer fails a check (no identity URL, no
    // instance): its access token is not used, but its refresh token is the only live one.
    script.push(Ok(http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Bytes::from_static(
            br#"{"access_token":"00Dxx!HALFACCESS","refresh_token":"5Aep861ROTATEDREFRESH","token_type":"Bearer"}"#,
        ))
        .unwrap()));
    let error = manager.refresh(&key).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Protocol, "{error:?}");
    let stored = store.get(&key).await.unwrap().unwrap();
    assert_eq!(
        stored
            .tokens
            .refresh_token
            .as_ref()
            .unwrap()
            .expose_secret(),
        "5Aep861ROTATEDREFRESH"
    );
    assert!(
        stored.refresh_in_flight.is_none(),
        "the kept token is unspent"
    );
    assert_eq!(
        stored.tokens.access_token.expose_secret(),
        "00Dxx!OLDACCESS",
        "the unchecked access token is not stored"
    );

    // The next refresh spends the kept token and gets a whole, checked set.
    tokio::time::sleep(Duration::from_millis(20)).await;
    script.push(Ok(token_response(
        "00Dxx!NEWACCESS",
        "5Aep861NEWREFRESH",
        USER,
    )));
    let token = manager.refresh(&key).await.unwrap();
    assert_eq!(token.secret(), "00Dxx!NEWACCESS");
    assert_eq!(script.sent(), 2);
}

#[tokio::test]
async fn a_malformed_2xx_puts_the_refresh_on_hold_and_the_working_token_is_served() {
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let script = Scripted::default();
    let (manager, key) = setup(store.clone(), &script).await;
    // A 2xx that cannot be read: Salesforce may have rotated. The access token still works
    // (userinfo says so), so nothing is re-sent and the caller is not failed.
    script.push(Ok(http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Bytes::from_static(b"{not json"))
        .unwrap()));
    let error = manager.refresh(&key).await.unwrap_err();
    assert!(
        matches!(error, sfauth::Error::RefreshOnHold { .. }),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::Transient);
    assert_eq!(script.sent(), 1);
    let stored = store.get(&key).await.unwrap().unwrap();
    assert!(stored.refresh_in_flight.is_some());
}

/// A record the store cannot read (damaged, or sealed with another key) is never written over:
/// the manager reports it as a storage error, call after call, and makes no write at all. The
/// store is a strict `MockTokenStore`: any call not expected here (an insert, a put, a delete,
/// a lease) fails the test.
#[tokio::test]
async fn an_unreadable_record_is_reported_and_never_written_over() {
    let script = Scripted::default();
    let client = OAuthClient::new(LoginHost::Production, ConnectedApp::new("3MVG9.test"));
    let mut store = sfauth::storage::MockTokenStore::new();
    let reads = AtomicUsize::new(0);
    store.expect_get().times(4).returning(move |_| {
        let kind = match reads.fetch_add(1, Ordering::SeqCst) % 2 {
            0 => StoreErrorKind::Corrupt,
            _ => StoreErrorKind::WrongKey,
        };
        Err(sfauth::storage::Error::new(kind, "cannot open the record"))
    });
    let manager = TokenManager::builder(client)
        .transport(script.transport())
        .store(Arc::new(store))
        .build()
        .await
        .unwrap();
    let key = manager.key_for(&tokens("00Dxx!ACCESS", "5Aep861REFRESH"), "default");
    for _ in 0..4 {
        let error = manager.access_token(&key).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Storage, "{error}");
    }
    assert_eq!(
        script.sent(),
        0,
        "no token request without a readable record"
    );
}
