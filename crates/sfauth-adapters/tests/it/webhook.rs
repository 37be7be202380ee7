//! The webhook notifier end to end: the embedded emulator over TCP refuses a revoked tenant's
//! refresh, the manager emits its events, and a real axum receiver on loopback gets the signed
//! notices, which `verify` accepts (and refuses once altered, re-keyed or replayed late).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use sfauth::oauth::flows::DevicePoll;
use sfauth::{ConnectedApp, ErrorKind, LoginHost, MemoryStore, OAuthClient, TokenKey};
use sfauth::{TokenManager, TokenSet, Url};
use sfauth_adapters::webhook::{
    ATTEMPT_HEADER, EVENT_ID_HEADER, Notice, NoticeCause, NoticeType, SIGNATURE_HEADER,
    SignatureError, SigningSecret, WebhookNotifier, sign, verify,
};
use sfauth_adapters::{Error, ErrorKind as AdapterErrorKind};
use sfauth_emulator::{Clock, Emulator};

const SECRET: &str = "whsec_test_0123456789abcdef";
const TOLERANCE: Duration = Duration::from_secs(300);

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    signature: String,
    event_id: String,
    attempt: String,
    body: Vec<u8>,
    accepted: bool,
}

impl Received {
    fn notice(&self) -> Notice {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn verifies(&self) -> bool {
        verify(
            &SigningSecret::new(SECRET),
            &self.signature,
            &self.body,
            SystemTime::now(),
            TOLERANCE,
        )
        .is_ok()
    }
}

/// What the receiver keeps: every request, and how many more to answer 500.
#[derive(Default)]
struct Inbox {
    received: Mutex<Vec<Received>>,
    fail_next: AtomicUsize,
}

impl Inbox {
    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `n` requests were accepted (2xx), or fails after ten seconds.
    async fn accepted(&self, n: usize) -> Vec<Received> {
        for _ in 0..1_000 {
            let received = self.received();
            if received.iter().filter(|r| r.accepted).count() >= n {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{n} notices not accepted in time: {:?}", self.received());
    }
}

async fn hook(
    State(inbox): State<Arc<Inbox>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let fail = inbox
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    inbox.received.lock().unwrap().push(Received {
        signature: header(SIGNATURE_HEADER),
        event_id: header(EVENT_ID_HEADER),
        attempt: header(ATTEMPT_HEADER),
        body: body.to_vec(),
        accepted: !fail,
    });
    if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

/// An axum receiver on loopback that answers 500 to the first `fail_first` requests.
async fn receiver(fail_first: usize) -> (Url, Arc<Inbox>) {
    let inbox = Arc::new(Inbox::default());
    inbox.fail_next.store(fail_first, Ordering::SeqCst);
    let app = axum::Router::new()
        .route("/hooks/salesforce", post(hook))
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{addr}/hooks/salesforce").parse().unwrap();
    (url, inbox)
}

/// The emulator, a manager on a memory store and a device-flow login of the seeded user (which
/// comes with a refresh token), stored under `default`.
struct Org {
    emulator: Emulator,
    client: OAuthClient,
    manager: TokenManager,
    key: TokenKey,
    login: TokenSet,
}

impl Org {
    async fn start() -> Self {
        let emulator = Emulator::builder()
            .clock(Clock::manual_now())
            .auto_approve(true)
            .seed(1_414)
            .start()
            .await
            .unwrap();
        let creds = emulator.credentials().clone();
        let host = LoginHost::my_domain(emulator.base_url()).unwrap();
        let app = ConnectedApp::new(creds.client_id.clone()).with_secret(creds.client_secret);
        let client = OAuthClient::new(host, app);
        let manager = TokenManager::builder(client.clone())
            .store(Arc::new(MemoryStore::new()))
            .build()
            .await
            .unwrap();
        let login = device_login(&emulator, &client, &manager).await;
        let key = manager
            .store_tokens(login.clone(), "default")
            .await
            .unwrap();
        Self {
            emulator,
            client,
            manager,
            key,
            login,
        }
    }

    /// A new login of the seeded user, as a customer's admin reconnecting would make.
    async fn login_again(&self) -> TokenSet {
        device_login(&self.emulator, &self.client, &self.manager).await
    }

    /// An admin revokes the user's tokens; the next refresh of `key` is refused with
    /// `invalid_grant`, and the manager marks the tenant.
    async fn revoke(&self, key: &TokenKey) {
        let username = self.emulator.credentials().username.clone();
        self.emulator.revoke_user_tokens(&username).unwrap();
        let error = self.manager.refresh(key).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ReauthorizationRequired, "{error}");
    }

    /// Every access and refresh token this org's logins and refreshes produced, as text.
    async fn secrets(&self, logins: &[&TokenSet]) -> Vec<String> {
        let mut secrets = Vec::new();
        let stored = self.manager.tokens(&self.key).await.unwrap();
        for tokens in logins.iter().copied().chain([&stored]) {
            secrets.push(tokens.access_token.expose_secret().to_owned());
            if let Some(refresh) = &tokens.refresh_token {
                secrets.push(refresh.expose_secret().to_owned());
            }
        }
        secrets
    }
}

async fn device_login(
    emulator: &Emulator,
    client: &OAuthClient,
    manager: &TokenManager,
) -> TokenSet {
    let transport = manager.transport().as_ref();
    let device = client
        .device_start(transport, Some("api refresh_token"))
        .await
        .unwrap();
    emulator
        .approve_device(&device.user_code, &emulator.credentials().username)
        .unwrap();
    let DevicePoll::Complete(tokens) = client.device_poll(transport, &device).await.unwrap() else {
        panic!("the approved device code did not complete");
    };
    assert!(tokens.refresh_token.is_some());
    *tokens
}

/// A notifier with short backoffs, so that retries happen within a test.
fn notifier(url: Url, manager: &TokenManager) -> WebhookNotifier {
    WebhookNotifier::builder(url, SigningSecret::new(SECRET))
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
        .spawn(manager)
        .unwrap()
}

/// No token appears in any request the receiver got, body or headers.
fn assert_no_token(received: &[Received], secrets: &[String]) {
    assert!(!secrets.is_empty());
    for request in received {
        let text = format!(
            "{} {} {} {}",
            String::from_utf8_lossy(&request.body),
            request.signature,
            request.event_id,
            request.attempt
        );
        for secret in secrets {
            assert!(!text.contains(secret.as_str()), "a token in {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_sends_one_signed_reauthorization_notice() {
    let org = Org::start().await;
    let (url, inbox) = receiver(0).await;
    let notifier = notifier(url, &org.manager);

    org.revoke(&org.key).await;
    // Later calls fail fast; they are the same episode and send nothing more.
    for _ in 0..20 {
        let error = org.manager.access_token(&org.key).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ReauthorizationRequired);
    }
    inbox.accepted(1).await;
    let report = notifier.shutdown(Duration::from_secs(5)).await;
    assert!(report.undelivered.is_empty(), "{report:?}");
    assert_eq!(report.stats.delivered, 1);

    let received = inbox.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let request = &received[0];
    assert!(request.verifies(), "{request:?}");
    assert_eq!(request.attempt, "1");
    let notice = request.notice();
    assert_eq!(notice.kind, NoticeType::ReauthorizationRequired);
    assert_eq!(notice.id, request.event_id);
    assert!(
        notice.id.starts_with("evt_") && notice.id.len() == 36,
        "{}",
        notice.id
    );
    assert_eq!(notice.cause, Some(NoticeCause::TokenRevokedOrExpired));
    assert_eq!(
        notice.salesforce_cause.as_deref(),
        Some("token_expired_or_revoked")
    );
    assert!(!notice.reason.is_empty());
    assert_eq!(notice.tenant.org_id, org.key.org_id().as_str());
    assert_eq!(notice.tenant.user_id, org.key.user_id().as_str());
    assert_eq!(notice.tenant.label, "default");
    assert_eq!(
        notice.tenant.instance_url.as_deref(),
        Some(org.login.instance_url.as_str())
    );
    assert!(notice.occurred_at.ends_with('Z') && notice.occurred_at.len() == 24);

    // The same request, altered or checked with another secret, does not verify.
    let wrong = verify(
        &SigningSecret::new("whsec_someone_else"),
        &request.signature,
        &request.body,
        SystemTime::now(),
        TOLERANCE,
    );
    assert!(matches!(
        wrong,
        Err(Error::Signature(SignatureError::Mismatch))
    ));
    let mut tampered = request.body.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 1;
    let tampered = verify(
        &SigningSecret::new(SECRET),
        &request.signature,
        &tampered,
        SystemTime::now(),
        TOLERANCE,
    );
    assert!(matches!(
        tampered,
        Err(Error::Signature(SignatureError::Mismatch))
    ));
    // Replayed ten minutes later, it is refused too.
    let late = verify(
        &SigningSecret::new(SECRET),
        &request.signature,
        &request.body,
        SystemTime::now() + Duration::from_secs(600),
        TOLERANCE,
    );
    assert!(
        matches!(late, Err(Error::Signature(SignatureError::OutsideTolerance { age_secs })) if age_secs >= 599),
        "{late:?}"
    );

    assert_no_token(&received, &org.secrets(&[&org.login]).await);
    org.emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_sends_one_recovered_notice() {
    let org = Org::start().await;
    let (url, inbox) = receiver(0).await;
    let notifier = notifier(url, &org.manager);

    org.revoke(&org.key).await;
    inbox.accepted(1).await;
    // The customer's admin logs in again: new tokens for the same key.
    let relogin = org.login_again().await;
    let key = org
        .manager
        .store_tokens(relogin.clone(), "default")
        .await
        .unwrap();
    assert_eq!(key, org.key);
    // The tenant works again, refreshes included; none of that is another recovery.
    org.manager.access_token(&key).await.unwrap();
    org.manager.refresh(&key).await.unwrap();
    org.manager.refresh(&key).await.unwrap();
    inbox.accepted(2).await;
    let report = notifier.shutdown(Duration::from_secs(5)).await;
    assert!(report.undelivered.is_empty(), "{report:?}");

    let received = inbox.received();
    assert_eq!(received.len(), 2, "{received:?}");
    assert!(received.iter().all(Received::verifies));
    let (required, recovered) = (received[0].notice(), received[1].notice());
    assert_eq!(required.kind, NoticeType::ReauthorizationRequired);
    assert_eq!(recovered.kind, NoticeType::Recovered);
    assert_ne!(required.id, recovered.id);
    assert_eq!(recovered.tenant, required.tenant);
    assert_eq!(recovered.cause, None);
    assert_eq!(recovered.salesforce_cause, None);
    assert!(recovered.reason.contains("login"), "{}", recovered.reason);
    assert!(recovered.occurred_at >= required.occurred_at);

    assert_no_token(&received, &org.secrets(&[&org.login, &relogin]).await);
    org.emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_the_same_id_until_it_accepts() {
    let org = Org::start().await;
    let (url, inbox) = receiver(3).await;
    let notifier = notifier(url, &org.manager);

    org.revoke(&org.key).await;
    inbox.accepted(1).await;
    // Accepted: nothing more comes, however long we wait.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let report = notifier.shutdown(Duration::from_secs(5)).await;
    assert!(report.undelivered.is_empty(), "{report:?}");
    assert_eq!(report.stats.delivered, 1);
    assert_eq!(report.stats.failed_attempts, 3);
    assert_eq!(report.stats.pending, 0);

    let received = inbox.received();
    assert_eq!(received.len(), 4, "{received:?}");
    let accepted: Vec<bool> = received.iter().map(|r| r.accepted).collect();
    assert_eq!(accepted, [false, false, false, true]);
    let attempts: Vec<&str> = received.iter().map(|r| r.attempt.as_str()).collect();
    assert_eq!(attempts, ["1", "2", "3", "4"]);
    let id = &received[0].event_id;
    for request in &received {
        assert_eq!(&request.event_id, id);
        assert_eq!(&request.notice().id, id);
        assert_eq!(
            request.body, received[0].body,
            "every attempt sends the same document"
        );
        assert!(
            request.verifies(),
            "each attempt is signed anew: {request:?}"
        );
    }
    org.emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_what_a_dead_receiver_never_took_and_a_full_queue_drops_new_notices() {
    let org = Org::start().await;
    let (url, inbox) = receiver(usize::MAX).await;
    // Room for one waiting notice besides the one being attempted.
    let notifier = WebhookNotifier::builder(url, SigningSecret::new(SECRET))
        .backoff(Duration::from_millis(20), Duration::from_millis(50))
        .queue_capacity(1)
        .spawn(&org.manager)
        .unwrap();
    // Three tenants share the seeded user's login; the revocation ends all three.
    let mut keys = vec![org.key.clone()];
    for label in ["b", "c"] {
        keys.push(
            org.manager
                .store_tokens(org.login.clone(), label)
                .await
                .unwrap(),
        );
    }
    let username = org.emulator.credentials().username.clone();
    org.emulator.revoke_user_tokens(&username).unwrap();
    for key in &keys {
        let error = org.manager.refresh(key).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ReauthorizationRequired);
    }
    // Let the receiver refuse a few attempts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = notifier.shutdown(Duration::from_millis(100)).await;

    let stats = report.stats;
    assert_eq!(stats.delivered, 0);
    assert!(stats.dropped >= 1, "{stats:?}");
    assert_eq!(stats.queued + stats.dropped, 3, "{stats:?}");
    assert_eq!(report.undelivered.len() as u64, stats.queued, "{report:?}");
    assert_eq!(stats.pending, 0);
    // The first notice was attempted, always under its one id, and is handed back first.
    let received = inbox.received();
    assert!(received.len() >= 2, "{received:?}");
    assert!(
        received
            .iter()
            .all(|r| r.event_id == report.undelivered[0].id)
    );
    assert!(
        report
            .undelivered
            .iter()
            .all(|n| n.kind == NoticeType::ReauthorizationRequired)
    );
    org.emulator.shutdown().await;
}

#[test]
fn verify_refuses_altered_rekeyed_replayed_and_malformed_headers_with_typed_errors() {
    let secret = SigningSecret::new(SECRET);
    let old = SigningSecret::new("whsec_before_rotation");
    let body = br#"{"id":"evt_1","type":"tenant.recovered"}"#;
    let now = SystemTime::now();
    let check = |secret: &SigningSecret, header: &str, body: &[u8]| {
        verify(secret, header, body, now, TOLERANCE)
    };
    let refused = |result: sfauth_adapters::Result<SystemTime>| match result {
        Err(Error::Signature(reason)) => {
            assert_eq!(
                Error::Signature(reason).kind(),
                AdapterErrorKind::InvalidSignature
            );
            reason
        }
        other => panic!("expected a signature error, got {other:?}"),
    };

    let header = sign(&[&secret], now, body);
    let signed_at = check(&secret, &header, body).unwrap();
    assert_eq!(
        signed_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        now.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    assert_eq!(
        refused(check(
            &secret,
            &header,
            br#"{"id":"evt_2","type":"tenant.recovered"}"#
        )),
        SignatureError::Mismatch
    );
    assert_eq!(
        refused(check(&old, &header, body)),
        SignatureError::Mismatch
    );

    // Too old, and too far ahead: a replay, or a clock far off.
    let stale = sign(&[&secret], now - Duration::from_secs(301), body);
    assert_eq!(
        refused(check(&secret, &stale, body)),
        SignatureError::OutsideTolerance { age_secs: 301 }
    );
    let ahead = sign(&[&secret], now + Duration::from_secs(400), body);
    assert!(matches!(
        refused(check(&secret, &ahead, body)),
        SignatureError::OutsideTolerance { .. }
    ));
    // Within the tolerance either way is fine.
    check(
        &secret,
        &sign(&[&secret], now - Duration::from_secs(299), body),
        body,
    )
    .unwrap();

    // During a rotation the header carries one v1 per secret: either secret verifies.
    let rotating = sign(&[&secret, &old], now, body);
    assert_eq!(rotating.matches("v1=").count(), 2);
    check(&secret, &rotating, body).unwrap();
    check(&old, &rotating, body).unwrap();
    assert_eq!(
        refused(check(&SigningSecret::new("third"), &rotating, body)),
        SignatureError::Mismatch
    );
    // A garbled v1 beside a good one, or an unknown scheme, does not hide the good one.
    let t = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let good = header.split_once(",v1=").unwrap().1;
    check(&secret, &format!("t={t},v1=zz,v0=abc,v1={good}"), body).unwrap();
    check(&secret, &format!(" t={t} , v1={good} "), body).unwrap();

    for malformed in ["", "v1=00", "t=abc,v1=00", "t=1,t=2,v1=00", "t=1,v1"] {
        assert_eq!(
            refused(check(&secret, malformed, body)),
            SignatureError::MalformedHeader,
            "{malformed:?}"
        );
    }
    assert_eq!(
        refused(check(&secret, &format!("t={t},v0={good}"), body)),
        SignatureError::NoSignature
    );

    // The secrets never print, nor the receiver's URL beyond its host.
    let builder = WebhookNotifier::builder(
        "https://hooks.example.com/in?key=url-secret"
            .parse()
            .unwrap(),
        secret.clone(),
    )
    .also_sign_with(old.clone());
    let shown = format!("{secret:?} {old:?} {builder:?}");
    assert!(shown.contains("hooks.example.com"), "{shown}");
    for hidden in [SECRET, "rotation", "url-secret"] {
        assert!(!shown.contains(hidden), "{shown}");
    }
}
