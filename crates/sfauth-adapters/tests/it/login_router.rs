//! `LoginRouter` served on a real loopback port, with the embedded emulator as Salesforce and a
//! plain HTTP client (following no redirect) as the browser: a login stores a usable tenant; a
//! tampered state, a replayed callback, an expired or evicted pending login and Salesforce's
//! error redirect each end on the right page; the host choice builds the right authorization
//! URL and refuses anything else; a reconnect replaces a revoked tenant's tokens.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use sfauth::{
    ConnectedApp, ErrorKind, LoginHost, MemoryStore, OAuthClient, TokenKey, TokenManager, Url,
};
use sfauth_adapters::{LoginConfig, LoginRouter};
use sfauth_emulator::{Clock, Emulator};

const QUERY: &str = "/services/data/v62.0/query?q=SELECT+Id,Name+FROM+Account";

/// The emulator, an application serving the login routes, and what its hook saw.
struct Site {
    emulator: Emulator,
    manager: TokenManager,
    base: Url,
    completed: Arc<Mutex<Vec<(TokenKey, bool)>>>,
    browser: reqwest::Client,
}

/// A manager for the seeded app on `host` with `redirect` as its redirect URI.
async fn manager(emulator: &Emulator, host: LoginHost, redirect: &str) -> TokenManager {
    let creds = emulator.credentials();
    let app = ConnectedApp::new(creds.client_id.clone())
        .with_secret(creds.client_secret.clone())
        .with_redirect_uri(redirect)
        .unwrap();
    TokenManager::builder(OAuthClient::new(host, app))
        .store(Arc::new(MemoryStore::new()))
        .build()
        .await
        .unwrap()
}

impl Site {
    async fn start(configure: impl FnOnce(LoginConfig, &Emulator, &str) -> LoginConfig) -> Self {
        let emulator = Emulator::builder()
            .clock(Clock::manual_now())
            .auto_approve(true)
            .seed(14)
            .start()
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = Url::parse(&format!(
            "http://127.0.0.1:{}/",
            listener.local_addr().unwrap().port()
        ))
        .unwrap();
        let redirect = base.join("callback").unwrap().to_string();
        let client_id = emulator.credentials().client_id.clone();
        emulator
            .update_app(&client_id, |app| app.callback_urls.push(redirect.clone()))
            .unwrap();
        let host = LoginHost::my_domain(emulator.base_url()).unwrap();
        let manager = manager(&emulator, host, &redirect).await;
        let completed = Arc::new(Mutex::new(Vec::new()));
        let seen = completed.clone();
        let config = configure(
            LoginConfig::new().scopes(["api", "refresh_token"]),
            &emulator,
            &redirect,
        );
        let router = LoginRouter::new(manager.clone(), config)
            .on_login(move |login| {
                let seen = seen.clone();
                async move {
                    let next = format!("/connected?org={}", login.key.org_id());
                    seen.lock().unwrap().push((login.key, login.reconnected));
                    Ok(next)
                }
            })
            .router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            emulator,
            manager,
            base,
            completed,
            browser: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// `GET url`: the status, the `Location` (if any) and the body.
    async fn get(&self, url: &str) -> (StatusCode, Option<Url>, String) {
        let answer = self.browser.get(url).send().await.unwrap();
        let status = answer.status();
        let location = answer
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|value| self.base.join(value.to_str().unwrap()).unwrap());
        (status, location, answer.text().await.unwrap())
    }

    /// `/login` + `query`: must redirect; returns the authorization URL.
    async fn start_login(&self, query: &str) -> Url {
        let (status, location, body) = self.get(&format!("{}login{query}", self.base)).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
        location.unwrap()
    }

    /// The emulator's answer to the authorization URL: the callback URL to our router.
    async fn authorize(&self, url: &Url) -> Url {
        let (status, location, body) = self.get(url.as_str()).await;
        assert_eq!(status, StatusCode::FOUND, "{body}");
        location.unwrap()
    }

    /// `/login`, the emulator, `/callback`: the key stored.
    async fn login(&self, query: &str) -> TokenKey {
        let authorize = self.start_login(query).await;
        let callback = self.authorize(&authorize).await;
        let (status, location, body) = self.get(callback.as_str()).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
        assert!(
            location.unwrap().path().starts_with("/connected"),
            "the hook decides where the browser goes"
        );
        self.completed.lock().unwrap().last().unwrap().0.clone()
    }

    /// A REST query with the tenant's current token answers 200.
    async fn query_works(&self, key: &TokenKey) -> bool {
        let token = self.manager.access_token(key).await.unwrap();
        let url = token.instance_url().join(QUERY).unwrap();
        reqwest::Client::new()
            .get(url.as_str())
            .header("authorization", token.authorization())
            .send()
            .await
            .unwrap()
            .status()
            == StatusCode::OK
    }
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(n, _)| n == name)
        .map(|(_, value)| value.into_owned())
}

/// `url` with its `name` parameter set to `value`.
fn with_param(url: &Url, name: &str, value: &str) -> Url {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .map(|(n, v)| {
            if n == name {
                (n, value.to_owned())
            } else {
                (n, v)
            }
        })
        .collect();
    let mut url = url.clone();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url
}

#[tokio::test]
async fn a_login_stores_a_usable_tenant_and_its_callback_cannot_be_replayed() {
    let site = Site::start(|config, _, _| config).await;
    let authorize = site.start_login("").await;
    assert!(
        authorize.as_str().starts_with(&format!(
            "{}/services/oauth2/authorize?",
            site.emulator.base_url()
        )),
        "{authorize}"
    );
    assert_eq!(
        param(&authorize, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert!(param(&authorize, "code_challenge").is_some());
    let state = param(&authorize, "state").unwrap();
    assert!(state.len() >= 22, "at least 128 bits: {state}");

    let callback = site.authorize(&authorize).await;
    let (status, location, body) = site.get(callback.as_str()).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let (key, reconnected) = site.completed.lock().unwrap()[0].clone();
    assert!(!reconnected);
    assert_eq!(
        location.unwrap().as_str(),
        format!("{}connected?org={}", site.base, key.org_id())
    );
    assert_eq!(key.label(), "default");
    assert!(site.manager.tokens(&key).await.unwrap().signature.is_some());
    assert!(site.query_works(&key).await);
    site.manager.refresh(&key).await.unwrap();
    assert!(site.query_works(&key).await);

    // The same callback again: its state was consumed, the code is not sent twice.
    let (status, _, body) = site.get(callback.as_str()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("Unknown login"), "{body}");
    assert!(!body.contains(&state) && !body.contains("code="), "{body}");
    assert_eq!(site.emulator.counters().grant("authorization_code"), 1);
    assert_eq!(site.completed.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_tampered_state_is_refused_and_the_real_login_still_works() {
    let site = Site::start(|config, _, _| config).await;
    let authorize = site.start_login("").await;
    let callback = site.authorize(&authorize).await;
    let state = param(&callback, "state").unwrap();
    for forged in [format!("{state}x"), String::new(), "<script>".to_owned()] {
        let (status, _, body) = site
            .get(with_param(&callback, "state", &forged).as_str())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.contains("Unknown login"), "{body}");
        assert!(!body.contains("<script>"), "{body}");
    }
    let (status, _, body) = site.get(&format!("{}callback", site.base)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("Not a login callback"), "{body}");
    assert_eq!(site.emulator.counters().grant("authorization_code"), 0);

    let (status, _, body) = site.get(callback.as_str()).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
}

#[tokio::test]
async fn an_expired_or_evicted_pending_login_is_refused() {
    let site =
        Site::start(|config, _, _| config.ttl(Duration::from_millis(300)).max_pending(2)).await;

    let authorize = site.start_login("").await;
    let callback = site.authorize(&authorize).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _, body) = site.get(callback.as_str()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("Login expired"), "{body}");
    assert!(body.contains("Start the login again"), "{body}");

    // Three logins started with room for two: the oldest is evicted.
    let first = site.authorize(&site.start_login("").await).await;
    let second = site.authorize(&site.start_login("").await).await;
    let third = site.authorize(&site.start_login("").await).await;
    let (status, _, body) = site.get(first.as_str()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("Unknown login"), "{body}");
    for callback in [second, third] {
        let (status, _, body) = site.get(callback.as_str()).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    }
    assert_eq!(site.emulator.counters().grant("authorization_code"), 2);
}

#[tokio::test]
async fn salesforce_error_redirects_say_what_they_mean() {
    let site = Site::start(|config, _, _| config).await;
    let authorize = site.start_login("").await;
    let state = param(&authorize, "state").unwrap();
    let mut denied = site.base.join("callback").unwrap();
    denied
        .query_pairs_mut()
        .append_pair("error", "access_denied")
        .append_pair("error_description", "end-user denied <authorization>")
        .append_pair("state", &state);
    let (status, _, body) = site.get(denied.as_str()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("Access not granted"), "{body}");
    assert!(
        body.contains("end-user denied &lt;authorization&gt;"),
        "{body}"
    );
    assert!(body.contains("choose Allow"), "{body}");
    // Its pending login is gone: the state cannot be used again.
    let (status, _, body) = site.get(denied.as_str()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("Unknown login"), "{body}");

    // Another error, on a live login.
    let state = param(&site.start_login("").await, "state").unwrap();
    let mut refused = site.base.join("callback").unwrap();
    refused
        .query_pairs_mut()
        .append_pair("error", "invalid_request")
        .append_pair("error_description", "redirect_uri must match configuration")
        .append_pair("state", &state);
    let (status, _, body) = site.get(refused.as_str()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("Salesforce refused the login"), "{body}");
    assert!(
        body.contains("redirect_uri must match configuration"),
        "{body}"
    );
    assert!(site.completed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_host_choice_builds_the_right_authorization_url_and_nothing_else() {
    let site = Site::start(|config, emulator, redirect| {
        let creds = emulator.credentials();
        let app = ConnectedApp::new(creds.client_id.clone())
            .with_secret(creds.client_secret.clone())
            .with_redirect_uri(redirect)
            .unwrap();
        let store = Arc::new(MemoryStore::new());
        // Managers build without I/O; one per host, made on first use in a real application.
        let make = move |host: &LoginHost| {
            let builder = TokenManager::builder(OAuthClient::new(host.clone(), app.clone()))
                .store(store.clone());
            futures_util::FutureExt::now_or_never(builder.build()).and_then(Result::ok)
        };
        config
            .site("partners", "https://acme.my.site.com/partners")
            .unwrap()
            .host_managers(move |host| match host {
                LoginHost::Sandbox | LoginHost::Site(_) => make(host),
                LoginHost::MyDomain(url) if url.as_str().starts_with("https://acme") => make(host),
                _ => None,
            })
    })
    .await;
    let prefix = |url: &Url| url.as_str().split('?').next().unwrap().to_owned();
    for (query, expected) in [
        (
            "?host=sandbox",
            "https://test.salesforce.com/services/oauth2/authorize",
        ),
        (
            "?my_domain=acme",
            "https://acme.my.salesforce.com/services/oauth2/authorize",
        ),
        (
            "?my_domain=acme--dev.sandbox",
            "https://acme--dev.sandbox.my.salesforce.com/services/oauth2/authorize",
        ),
        (
            "?site=partners",
            "https://acme.my.site.com/partners/services/oauth2/authorize",
        ),
    ] {
        let url = site.start_login(query).await;
        assert_eq!(prefix(&url), expected, "{query}");
        assert_eq!(
            param(&url, "code_challenge_method").as_deref(),
            Some("S256")
        );
        assert!(param(&url, "state").is_some());
        assert_eq!(
            param(&url, "redirect_uri").unwrap(),
            format!("{}callback", site.base)
        );
    }
    for (query, says) in [
        ("?host=https%3A%2F%2Fevil.example", "Unknown login host"),
        ("?my_domain=evil.example%2F", "letters, digits and hyphens"),
        (
            "?my_domain=acme%40evil.example",
            "letters, digits and hyphens",
        ),
        ("?my_domain=other", "not offered"),
        ("?host=production", "not offered"),
        (
            "?site=https%3A%2F%2Facme.my.site.com%2Fpartners",
            "Unknown site",
        ),
        ("?host=sandbox&my_domain=acme", "Choose one"),
    ] {
        let (status, location, body) = site.get(&format!("{}login{query}", site.base)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(location.is_none());
        assert!(body.contains(says), "{query}: {body}");
    }
}

#[tokio::test]
async fn a_reconnect_replaces_a_revoked_tenants_tokens() {
    let site = Site::start(|config, _, _| config).await;
    let key = site.login("").await;
    let old = site.manager.tokens(&key).await.unwrap();
    let creds = site.emulator.credentials().clone();
    site.emulator
        .revoke_for_user(&creds.client_id, &creds.username)
        .unwrap();
    let error = site.manager.refresh(&key).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ReauthorizationRequired, "{error}");

    let mut query = Url::parse("http://x/").unwrap();
    query
        .query_pairs_mut()
        .append_pair("reconnect", &key.to_string());
    let reconnected = site.login(&format!("?{}", query.query().unwrap())).await;
    assert_eq!(reconnected, key);
    assert!(
        site.completed.lock().unwrap().last().unwrap().1,
        "marked as a reconnect"
    );
    let new = site.manager.tokens(&key).await.unwrap();
    assert_ne!(
        new.refresh_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned()),
        old.refresh_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned())
    );
    assert!(site.query_works(&key).await);
    site.manager.refresh(&key).await.unwrap();

    // A connection that does not exist cannot be reconnected.
    for unknown in ["nonsense", &key.with_label("other").to_string()] {
        let mut query = Url::parse("http://x/").unwrap();
        query.query_pairs_mut().append_pair("reconnect", unknown);
        let (status, _, body) = site
            .get(&format!("{}login?{}", site.base, query.query().unwrap()))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}: {body}");
        assert!(body.contains("no such connection"), "{body}");
    }
}

#[tokio::test]
async fn a_reconnect_as_another_user_changes_nothing() {
    let site = Site::start(|config, _, _| config).await;
    let key = site.login("").await;
    let before = site.manager.tokens(&key).await.unwrap();
    site.emulator
        .add_user(
            key.org_id().as_str(),
            sfauth_emulator::UserConfig {
                username: "someone.else@acme.example".into(),
                ..Default::default()
            },
        )
        .unwrap();
    site.emulator.update_settings(|settings| {
        settings.auto_approve_user = Some("someone.else@acme.example".into());
    });

    let mut query = Url::parse("http://x/").unwrap();
    query
        .query_pairs_mut()
        .append_pair("reconnect", &key.to_string());
    let authorize = site
        .start_login(&format!("?{}", query.query().unwrap()))
        .await;
    let callback = site.authorize(&authorize).await;
    let (status, _, body) = site.get(callback.as_str()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("Another user"), "{body}");
    assert_eq!(site.completed.lock().unwrap().len(), 1, "no hook call");
    assert_eq!(site.manager.stats().tenants, 1, "nothing else stored");
    let after = site.manager.tokens(&key).await.unwrap();
    assert_eq!(
        after.access_token.expose_secret(),
        before.access_token.expose_secret()
    );
}
