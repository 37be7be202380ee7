//! The `connect_org` example in a real browser: headless Chromium, driven over WebDriver
//! (chromedriver + fantoccini), connects an org through the emulator's login and consent pages,
//! lists its Accounts, sees it need re-authorization once the emulator revokes its tokens,
//! reconnects it and lists its Accounts again. No page shows a token.
//!
//! The application is the example's own `app.rs`, served against an emulator this test controls.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without them the
//! test skips loudly, except under `CI=true`, where it fails.

#![cfg(all(feature = "axum", feature = "reqwest"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "tests fail on any error, and say loudly when they skip"
)]

#[path = "../../examples/connect_org/app.rs"]
mod app;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use sfauth::{ConnectedApp, LoginHost, MemoryStore, OAuthClient, TokenManager};
use sfauth_emulator::{Credentials, Emulator};

/// The first of `names` found on `PATH` or at the given absolute paths.
fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|name| {
        let direct = PathBuf::from(name);
        if direct.is_absolute() {
            return direct.is_file().then_some(direct);
        }
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// Kills the chromedriver this test started when the test ends, however it ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Fills in the emulator's login form as its seeded user and approves the consent page.
async fn log_in(browser: &Client, creds: &Credentials) -> Result<(), CmdError> {
    let username = browser.wait().for_element(Locator::Id("username")).await?;
    username.clear().await?;
    username.send_keys(&creds.username).await?;
    browser
        .find(Locator::Id("pw"))
        .await?
        .send_keys(&creds.password)
        .await?;
    browser.find(Locator::Id("Login")).await?.click().await?;
    browser
        .wait()
        .for_element(Locator::Id("oaapprove"))
        .await?
        .click()
        .await?;
    Ok(())
}

/// The status cell of the one connected org, once the list shows it.
async fn org_status(browser: &Client) -> Result<String, CmdError> {
    browser
        .wait()
        .for_element(Locator::Css("tr.org td.status"))
        .await?
        .text()
        .await
}

/// From the list, the one org's Accounts page: the names it lists.
async fn account_names(browser: &Client) -> Result<Vec<String>, CmdError> {
    browser
        .wait()
        .for_element(Locator::Css("tr.org a.accounts"))
        .await?
        .click()
        .await?;
    browser.wait().for_element(Locator::Id("accounts")).await?;
    let mut names = Vec::new();
    for cell in browser.find_all(Locator::Css("tr.account td.name")).await? {
        names.push(cell.text().await?);
    }
    Ok(names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_connects_lists_and_reconnects_an_org() {
    let chromium = find(&["chromium", "chromium-browser", "google-chrome"]);
    let driver = find(&["chromedriver", "/usr/lib/chromium/chromedriver"]);
    let (Some(chromium), Some(driver)) = (chromium, driver) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium and chromedriver are required under CI=true (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "SKIPPED: chromium or chromedriver is not installed (apt-get install chromium chromium-driver); the connect_org browser test did not run"
        );
        return;
    };

    // The emulator shows its login and consent pages, as Salesforce does.
    let emulator = Emulator::builder()
        .auto_approve(false)
        .start()
        .await
        .unwrap();
    let creds = emulator.credentials().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let redirect = format!("{base}{}/callback", app::LOGIN_PREFIX);
    emulator
        .update_app(&creds.client_id, |app| {
            app.callback_urls.push(redirect.clone())
        })
        .unwrap();
    let client = OAuthClient::new(
        LoginHost::my_domain(emulator.base_url()).unwrap(),
        ConnectedApp::new(creds.client_id.clone())
            .with_secret(creds.client_secret.clone())
            .with_redirect_uri(&redirect)
            .unwrap(),
    );
    let manager = TokenManager::builder(client)
        .store(Arc::new(MemoryStore::new()))
        .build()
        .await
        .unwrap();
    let router = app::app(app::Config {
        manager: manager.clone(),
        offer_salesforce_hosts: false,
    });
    tokio::spawn(async move { axum::serve(listener, router).await });

    // chromedriver on a free port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _driver = Driver(
        Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let webdriver = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..100 {
        if http.get(format!("{webdriver}/status")).send().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "chromedriver did not start");

    let profile = tempfile::tempdir().unwrap();
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({
            "binary": chromium.display().to_string(),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let browser = ClientBuilder::rustls()
        .unwrap()
        .capabilities(capabilities)
        .connect(&webdriver)
        .await
        .expect("chromedriver refused the session");

    let expected = vec!["Acme Corporation".to_owned(), "Globex Inc.".to_owned()];
    // Every page the app showed, to check that none holds a token.
    let mut pages = Vec::new();
    let result: Result<(), CmdError> = async {
        // Connect.
        browser.goto(&format!("{base}/")).await?;
        browser.find(Locator::Id("no-orgs")).await?;
        browser.find(Locator::Id("connect")).await?.click().await?;
        log_in(&browser, &creds).await?;
        assert_eq!(org_status(&browser).await?, "ok");
        pages.push(browser.source().await?);

        // Accounts, through the middleware.
        assert_eq!(account_names(&browser).await?, expected);
        pages.push(browser.source().await?);

        // Revoked at Salesforce: the Accounts page offers a reconnect, and so does the list.
        emulator
            .revoke_for_user(&creds.client_id, &creds.username)
            .unwrap();
        browser.refresh().await?;
        browser
            .wait()
            .for_element(Locator::Id("needs-reauth"))
            .await?;
        browser.find(Locator::Css("button.reconnect")).await?;
        pages.push(browser.source().await?);
        browser.goto(&format!("{base}/")).await?;
        let status = org_status(&browser).await?;
        assert!(status.contains("needs re-authorization"), "{status}");
        pages.push(browser.source().await?);

        // Reconnect: the same org comes back healthy, and its Accounts list again.
        browser
            .find(Locator::Css("tr.org button.reconnect"))
            .await?
            .click()
            .await?;
        log_in(&browser, &creds).await?;
        assert_eq!(org_status(&browser).await?, "ok");
        assert_eq!(browser.find_all(Locator::Css("tr.org")).await?.len(), 1);
        pages.push(browser.source().await?);
        assert_eq!(account_names(&browser).await?, expected);
        pages.push(browser.source().await?);
        Ok(())
    }
    .await;
    let _ = browser.close().await;
    result.expect("the browser could not connect, list and reconnect the org");

    // The reconnected tenant's tokens appear on no page (nor did the revoked ones: the
    // pages are the same templates).
    let keys = manager.store().list(&Default::default()).await.unwrap();
    assert_eq!(keys.records.len(), 1);
    let tokens = &keys.records[0].tokens;
    let mut secrets = vec![tokens.access_token.expose_secret().to_owned()];
    secrets.extend(
        tokens
            .refresh_token
            .as_ref()
            .map(|token| token.expose_secret().to_owned()),
    );
    for page in &pages {
        for secret in &secrets {
            assert!(!page.contains(secret.as_str()), "a page shows a token");
        }
    }
    emulator.shutdown().await;
}

/// The host choice of a real connected app, without a browser (nothing is sent to Salesforce:
/// each step is a redirect): production, sandbox and a My Domain each end on their own
/// authorization endpoint, and a name that is not a My Domain is refused before any manager is
/// made for it.
#[tokio::test]
async fn the_connect_form_offers_production_sandbox_and_my_domain() {
    let redirect = "http://localhost:8080/salesforce/callback";
    let client = OAuthClient::new(
        LoginHost::Production,
        ConnectedApp::new("3MVG9example")
            .with_redirect_uri(redirect)
            .unwrap(),
    );
    let manager = TokenManager::builder(client)
        .store(Arc::new(MemoryStore::new()))
        .build()
        .await
        .unwrap();
    let router = app::app(app::Config {
        manager,
        offer_salesforce_hosts: true,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // Follows the app's own redirects; returns where it finally sends the browser, or the page.
    let connect = async |query: &str| -> Result<url::Url, (reqwest::StatusCode, String)> {
        let mut url = format!("{base}/connect?{query}");
        loop {
            let answer = browser.get(&url).send().await.unwrap();
            let Some(location) = answer.headers().get(reqwest::header::LOCATION) else {
                return Err((answer.status(), answer.text().await.unwrap()));
            };
            let next = url::Url::parse(&url)
                .unwrap()
                .join(location.to_str().unwrap())
                .unwrap();
            if !next.as_str().starts_with(&base) {
                return Ok(next);
            }
            url = next.to_string();
        }
    };

    let home = browser.get(format!("{base}/")).send().await.unwrap();
    let home = home.text().await.unwrap();
    for choice in ["production", "sandbox", "my_domain"] {
        assert!(home.contains(&format!("value=\"{choice}\"")), "{home}");
    }
    for (query, endpoint) in [
        (
            "host=production",
            "https://login.salesforce.com/services/oauth2/authorize",
        ),
        (
            "host=sandbox",
            "https://test.salesforce.com/services/oauth2/authorize",
        ),
        (
            "host=my_domain&my_domain=Acme",
            "https://acme.my.salesforce.com/services/oauth2/authorize",
        ),
        (
            "host=my_domain&my_domain=acme--dev.sandbox",
            "https://acme--dev.sandbox.my.salesforce.com/services/oauth2/authorize",
        ),
    ] {
        let authorize = connect(query).await.unwrap();
        let without_query = format!(
            "{}://{}{}",
            authorize.scheme(),
            authorize.host_str().unwrap(),
            authorize.path()
        );
        assert_eq!(without_query, endpoint, "{query}");
        let redirect_uri = authorize
            .query_pairs()
            .find(|(name, _)| name == "redirect_uri")
            .map(|(_, value)| value.into_owned());
        assert_eq!(redirect_uri.as_deref(), Some(redirect), "{query}");
    }
    for bad in ["evil.com/", "acme.evil.com", "<script>", ""] {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("host", "my_domain")
            .append_pair("my_domain", bad)
            .finish();
        let (status, page) = connect(&query).await.unwrap_err();
        assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{bad:?}: {page}");
        assert!(!page.contains("<script>"), "{page}");
    }
}
