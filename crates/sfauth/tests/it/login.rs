//! The one-call logins of `TokenManager` and `LoopbackLogin`, against the embedded emulator over
//! TCP: each stores a tenant that then renews (by refresh token or by running its flow again),
//! records how it renews, and the loopback login completes with a simulated browser, or fails
//! cleanly on a wrong `state`, Salesforce's refusal, or no callback at all.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use std::sync::Arc;
use std::time::Duration;

use sfauth::oauth::flows::AuthorizeParams;
use sfauth::{
    ConnectedApp, ErrorKind, JwtBearer, LoginHost, LoopbackLogin, MemoryStore, OAuthClient,
    PrivateKey, RenewalHint, TokenKey, TokenManager, Url,
};
use sfauth_emulator::{Clock, Emulator, SEED_CLIENT_PRIVATE_KEY};

/// A plain HTTP client that follows no redirect: the browser.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn emulator() -> Emulator {
    Emulator::builder()
        .clock(Clock::manual_now())
        .auto_approve(true)
        .seed(14)
        .start()
        .await
        .unwrap()
}

/// A manager for the seeded app on the emulator as a My Domain, memory store.
async fn manager(emulator: &Emulator) -> TokenManager {
    let creds = emulator.credentials();
    let app = ConnectedApp::new(creds.client_id.clone())
        .with_secret(creds.client_secret.clone())
        .with_redirect_uri(&creds.callback_url)
        .unwrap();
    let client = OAuthClient::new(LoginHost::my_domain(emulator.base_url()).unwrap(), app);
    TokenManager::builder(client)
        .store(Arc::new(MemoryStore::new()))
        .build()
        .await
        .unwrap()
}

/// Where the authorize endpoint sends the browser (auto-approve answers at once).
async fn follow_authorize(url: &Url) -> Url {
    let answer = browser().get(url.as_str()).send().await.unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::FOUND);
    let location = answer.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap();
    Url::parse(location).unwrap()
}

/// A REST query with the tenant's current token answers 200.
async fn query_works(manager: &TokenManager, key: &TokenKey) {
    let token = manager.access_token(key).await.unwrap();
    let url = token
        .instance_url()
        .join("/services/data/v62.0/query?q=SELECT+Id+FROM+Account")
        .unwrap();
    let status = reqwest::Client::new()
        .get(url.as_str())
        .header("authorization", token.authorization())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, reqwest::StatusCode::OK);
}

#[tokio::test]
async fn login_with_code_stores_a_tenant_that_refreshes() {
    let emulator = emulator().await;
    let manager = manager(&emulator).await;
    let request = manager
        .client()
        .authorize_url(&AuthorizeParams::scopes(["api", "refresh_token"]))
        .unwrap();
    let callback = follow_authorize(&request.url).await;
    let code = manager
        .client()
        .parse_callback(&callback, &request.state)
        .unwrap();
    let key = manager
        .login_with_code(&code, request.pkce_verifier.as_ref().unwrap(), "web")
        .await
        .unwrap();
    assert_eq!(key.label(), "web");
    let stored = manager.tokens(&key).await.unwrap();
    assert!(stored.refresh_token.is_some() && stored.signature.is_some());
    // Renewal is the refresh token itself: no flow is recorded.
    let record = manager.store().get(&key).await.unwrap().unwrap();
    assert_eq!(record.renewal, None);

    manager.refresh(&key).await.unwrap();
    assert_eq!(emulator.counters().grant("refresh_token"), 1);
    query_works(&manager, &key).await;

    // The code is single use: a second exchange is refused, as a rejection.
    let again = manager
        .login_with_code(&code, request.pkce_verifier.as_ref().unwrap(), "web")
        .await
        .unwrap_err();
    assert_eq!(again.kind(), ErrorKind::LoginRejected, "{again}");
    assert!(matches!(again, sfauth::Error::Login { .. }), "{again:?}");
    assert_eq!(again.key(), None, "a failed login has no tenant");
    for shown in [again.to_string(), format!("{again:?}")] {
        assert!(!shown.contains(code.expose_secret()), "{shown}");
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn login_jwt_bearer_records_its_renewal() {
    let emulator = emulator().await;
    let manager = manager(&emulator).await;
    let username = emulator.credentials().username.clone();
    let jwt = JwtBearer::new(username.clone(), PrivateKey::new(SEED_CLIENT_PRIVATE_KEY));
    let key = manager.login_jwt_bearer(jwt, "jwt").await.unwrap();
    let record = manager.store().get(&key).await.unwrap().unwrap();
    assert_eq!(record.renewal, Some(RenewalHint::jwt_bearer(username)));
    assert!(record.tokens.refresh_token.is_none());

    // No refresh token: the manager renews by running the flow again.
    manager.refresh(&key).await.unwrap();
    assert_eq!(emulator.counters().grant("jwt_bearer"), 2);
    query_works(&manager, &key).await;
    emulator.shutdown().await;
}

#[tokio::test]
async fn login_client_credentials_records_its_renewal() {
    let emulator = emulator().await;
    let manager = manager(&emulator).await;
    let key = manager.login_client_credentials("service").await.unwrap();
    let record = manager.store().get(&key).await.unwrap().unwrap();
    assert_eq!(record.renewal, Some(RenewalHint::client_credentials()));

    manager.refresh(&key).await.unwrap();
    assert_eq!(emulator.counters().grant("client_credentials"), 2);
    query_works(&manager, &key).await;
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_refused_login_stores_nothing() {
    let emulator = emulator().await;
    let manager = manager(&emulator).await;
    let jwt = JwtBearer::new(
        "nobody@example.com",
        PrivateKey::new(SEED_CLIENT_PRIVATE_KEY),
    );
    let error = manager.login_jwt_bearer(jwt, "jwt").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::LoginRejected, "{error}");
    assert_eq!(manager.stats().tenants, 0);
    emulator.shutdown().await;
}

/// A bound loopback login whose redirect URI the emulator's app accepts.
async fn bound(
    emulator: &Emulator,
    manager: &TokenManager,
    timeout: Duration,
) -> sfauth::BoundLoopbackLogin {
    let bound = LoopbackLogin::new(manager)
        .port(0)
        .path("callback")
        .timeout(timeout)
        .label("desk")
        .bind()
        .await
        .unwrap();
    let redirect = bound.redirect_uri().to_string();
    assert!(redirect.starts_with("http://localhost:") && redirect.ends_with("/callback"));
    emulator
        .update_app(&emulator.credentials().client_id, |app| {
            app.callback_urls.push(redirect)
        })
        .unwrap();
    bound
}

/// Plays the browser for a loopback login: follows the authorize URL, lets `tamper` change the
/// redirect, follows it to the listener, and returns that page's status and text.
fn play_browser(
    url: Url,
    tamper: impl FnOnce(Url) -> Url + Send + 'static,
) -> tokio::task::JoinHandle<(u16, String)> {
    tokio::spawn(async move {
        let callback = tamper(follow_authorize(&url).await);
        let answer = browser().get(callback.as_str()).send().await.unwrap();
        (answer.status().as_u16(), answer.text().await.unwrap())
    })
}

#[tokio::test]
async fn loopback_login_completes_end_to_end() {
    let emulator = emulator().await;
    let manager = manager(&emulator).await;
    let login = bound(&emulator, &manager, Duration::from_secs(30)).await;
    // Something else knocking at the listener first gets a 404 and changes nothing.
    let port = login.redirect_uri().port().unwrap();
    let stray = browser()
        .get(format!("http://127.0.0.1:{port}/favicon.ico"))
        .send();
    let mut page = None;
    let key = login
        .run(|url| {
            let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
            assert!(query.contains(&("code_challenge_method".into(), "S256".into())));
            assert!(query.iter().any(|(name, _)| name == "state"));
            page = Some(play_browser(url, |callback| callback));
            async move {
                assert_eq!(
                    stray.await.unwrap().status(),
                    reqwest::StatusCode::NOT_FOUND
                );
            }
        })
        .await
        .unwrap();
    let (status, text) = page.unwrap().await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("Logged in"), "{text}");
    assert!(!text.contains("code="), "{text}");
    assert_eq!(key.label(), "desk");

    manager.refresh(&key).await.unwrap();
    assert_eq!(emulator.counters().grant("refresh_token"), 1);
    query_works(&manager, &key).await;
    emulator.shutdown().await;
}

#[tokio::test]
async fn loopback_login_with_a_wrong_state_fails_cleanly() {
    let emulator = emulator().await;
    let manager = manager(&emulator).await;
    let login = bound(&emulator, &manager, Duration::from_secs(30)).await;
    let mut page = None;
    let error = login
        .run(|url| {
            page = Some(play_browser(url, |mut callback| {
                let pairs: Vec<(String, String)> = callback
                    .query_pairs()
                    .into_owned()
                    .map(|(name, value)| match name.as_str() {
                        "state" => (name, format!("{value}x")),
                        _ => (name, value),
                    })
                    .collect();
                callback.query_pairs_mut().clear().extend_pairs(pairs);
                callback
            }));
            async {}
        })
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidCallback, "{error}");
    let (status, text) = page.unwrap().await.unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("Login failed"), "{text}");
    assert_eq!(emulator.counters().grant("authorization_code"), 0);
    assert_eq!(manager.stats().tenants, 0);
    emulator.shutdown().await;
}

#[tokio::test]
async fn loopback_login_shows_a_refusal_and_times_out_alone() {
    let emulator = emulator().await;
    let manager = manager(&emulator).await;

    // Salesforce's error redirect: the person declined.
    let login = bound(&emulator, &manager, Duration::from_secs(30)).await;
    let redirect = login.redirect_uri().clone();
    let mut page = None;
    let error = login
        .run(|url| {
            let state = url
                .query_pairs()
                .find(|(name, _)| name == "state")
                .map(|(_, value)| value.into_owned())
                .unwrap();
            page = Some(tokio::spawn(async move {
                let mut denied = redirect;
                denied
                    .query_pairs_mut()
                    .append_pair("error", "access_denied")
                    .append_pair("error_description", "end-user denied <authorization>")
                    .append_pair("state", &state);
                let answer = browser().get(denied.as_str()).send().await.unwrap();
                (answer.status().as_u16(), answer.text().await.unwrap())
            }));
            async {}
        })
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::LoginDeclined, "{error}");
    assert_eq!(
        error.salesforce_says(),
        Some("end-user denied <authorization>")
    );
    let (status, text) = page.unwrap().await.unwrap();
    assert_eq!(status, 400);
    assert!(
        text.contains("end-user denied &lt;authorization&gt;"),
        "{text}"
    );

    // Nobody comes back.
    let login = bound(&emulator, &manager, Duration::from_millis(300)).await;
    let error = login.run(|_url| async {}).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::LoginTimedOut, "{error}");
    assert!(
        matches!(error, sfauth::Error::LoginTimedOut { waited } if waited == Duration::from_millis(300)),
        "{error:?}"
    );
    emulator.shutdown().await;
}
