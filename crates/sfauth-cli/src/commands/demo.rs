//! `sfauth demo`: the life of a token against an emulator started in this process.
//!
//! Web login with PKCE (auto-approved, through the real loopback callback of `login web`), an
//! API call, expiry and the refresh a 401 triggers (with rotation), a revoke, and the
//! re-authorization message the CLI gives. Zero setup: a temporary SQLite store with a fresh
//! key, and no secret is printed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sfauth::oauth::flows::{AuthorizeParams, RevokeMethod};
use sfauth::oauth::http::{HttpTransport, RetrySafety};
use sfauth::oauth::{AccessToken, ConnectedApp, LoginHost, OAuthClient, SecretValue, TokenKey};
use sfauth::storage::{Key, Keyring, SqliteStore};
use sfauth::{Event, EventKind, TokenManager};
use sfauth_emulator::Emulator;
use tokio::sync::broadcast;
use url::Url;

use crate::commands::login;
use crate::error::{CliError, Result};
use crate::session;

const API_VERSION: &str = "v62.0";
const QUERY: &str = "SELECT Id, Name FROM Account";
const ALIAS: &str = "demo";
const INDENT: &str = "                ";

fn step(n: u32, title: &str, text: &str) {
    println!("[{n}/6] {title:<10}{text}");
}

fn more(text: &str) {
    println!("{INDENT}{text}");
}

fn demo_error(what: &str, error: &dyn std::fmt::Display) -> CliError {
    CliError::other(format!(
        "the demo failed while {what} ({error}): please report it"
    ))
}

pub(crate) async fn run() -> Result<()> {
    println!("sfauth demo: the life of a Salesforce OAuth token, against a Salesforce emulator");
    println!("running inside this process. No org and no setup; no secret is printed.");
    println!();

    let emulator = Emulator::builder()
        .auto_approve(true)
        .app_policy(|policy| policy.rotation = true)
        .start()
        .await
        .map_err(|e| demo_error("starting the emulator", &e))?;
    let creds = emulator.credentials().clone();
    step(
        1,
        "Emulator",
        &format!(
            "started at {} (auto-approve on, refresh-token rotation on)",
            emulator.base_url()
        ),
    );
    let dir = tempfile::tempdir().map_err(|e| demo_error("creating a temporary directory", &e))?;
    let db = dir.path().join("tokens.db");
    let store = SqliteStore::open(&db, Keyring::new(Key::generate()))
        .await
        .map_err(|e| demo_error("opening the temporary store", &e))?;
    more(&format!(
        "token store: a temporary SQLite file, encrypted with a fresh key ({})",
        db.display()
    ));

    // 2. Web login through the same loopback callback as `sfauth login web`.
    let listener = login::bind(0).await?;
    let redirect = login::redirect_uri(&listener)?;
    emulator
        .update_app(&creds.client_id, |app| {
            app.callback_urls.push(redirect.clone())
        })
        .map_err(|e| demo_error("registering the callback URL", &e))?;
    let host = LoginHost::my_domain(emulator.base_url())
        .map_err(|e| demo_error("naming the login host", &e))?;
    let app = ConnectedApp::new(creds.client_id.clone())
        .with_secret(creds.client_secret.clone())
        .with_redirect_uri(&redirect)
        .map_err(|e| demo_error("setting the callback URL", &e))?;
    let client = OAuthClient::new(host, app);
    // The emulator runs in this process, on loopback: no proxy can help reach it.
    let transport = session::transport(&sfauth::transport::Proxy::None);
    let browser = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| demo_error("starting the stand-in browser", &e))?;
    let tokens = login::web_flow(
        &client,
        transport.as_ref(),
        listener,
        &AuthorizeParams::scopes(["api", "id", "refresh_token"]),
        Duration::from_secs(30),
        |url| {
            let url = url.clone();
            let browser = browser.clone();
            async move {
                step(
                    2,
                    "Login",
                    &format!(
                        "web server flow: GET {} with a PKCE S256 challenge and a random state",
                        url.path()
                    ),
                );
                let page = browser
                    .get(url.as_str())
                    .send()
                    .await
                    .map_err(|e| demo_error("playing the browser", &e))?;
                more(&format!(
                    "the emulator approved at once and redirected the browser to {redirect} ({})",
                    page.status()
                ));
                Ok(())
            }
        },
    )
    .await?;
    more(&format!(
        "state checked, code exchanged with the PKCE verifier: an access token ({} chars) and a refresh token",
        tokens.access_token.expose_secret().len()
    ));
    let manager = TokenManager::builder(client.clone())
        .store(Arc::new(store))
        .transport(transport.clone())
        .build()
        .await
        .map_err(|e| demo_error("building the token manager", &e))?;
    let mut events = manager.subscribe();
    let key = manager
        .store_tokens(tokens, ALIAS)
        .await
        .map_err(|e| demo_error("storing the tokens", &e))?;
    more(&format!(
        "saved as alias {ALIAS:?} for org {} user {}",
        key.org_id(),
        key.user_id()
    ));
    print_events(&mut events);

    // 3. An API call.
    let token = access_token(&manager, &key).await?;
    let (status, body) = query(transport.as_ref(), &token.0, &token.1).await?;
    step(
        3,
        "API call",
        &format!(
            "GET /services/data/{API_VERSION}/query?q={QUERY} -> {status}{}",
            records(&body)
        ),
    );

    // 4. Expiry, then the refresh the 401 triggers.
    emulator.expire_access_tokens();
    step(
        4,
        "Expiry",
        "the org's session ends (the emulator expires every access token)",
    );
    let (status, body) = query(transport.as_ref(), &token.0, &token.1).await?;
    more(&format!(
        "the same API call -> {status} {}",
        error_code(&body)
    ));
    let before = refresh_token_of(&manager, &key).await?;
    let fresh = manager
        .session_expired(&key, &token.0)
        .await
        .map_err(|e| demo_error("refreshing", &e))?;
    let fresh = (fresh.access_token().clone(), fresh.instance_url().clone());
    let after = refresh_token_of(&manager, &key).await?;
    more("TokenManager::session_expired(key, stale token) -> one refresh_token grant");
    if before != after {
        more(
            "rotation: Salesforce sent a new refresh token; it was saved to the store before the new access token was handed out",
        );
    }
    print_events(&mut events);
    let (status, body) = query(transport.as_ref(), &fresh.0, &fresh.1).await?;
    more(&format!(
        "the API call again with the new token -> {status}{}",
        records(&body)
    ));

    // 5. Revoke.
    let refresh = after.ok_or_else(|| demo_error("revoking", &"no refresh token was stored"))?;
    client
        .revoke(
            transport.as_ref(),
            &SecretValue::new(refresh),
            RevokeMethod::Post,
        )
        .await
        .map_err(|e| demo_error("revoking", &e))?;
    step(
        5,
        "Revoke",
        "POST /services/oauth2/revoke with the refresh token -> 200 (its access tokens go with it)",
    );
    let (status, body) = query(transport.as_ref(), &fresh.0, &fresh.1).await?;
    more(&format!("the API call -> {status} {}", error_code(&body)));

    // 6. The refresh that cannot work, and what the CLI says.
    step(
        6,
        "Re-auth",
        "TokenManager::session_expired -> the refresh token is refused",
    );
    match manager.session_expired(&key, &fresh.0).await {
        Ok(_) => more("unexpected: the refresh succeeded"),
        Err(error) => {
            let cli = CliError::manager(&error, ALIAS, "login web");
            print_events(&mut events);
            more(&format!(
                "error kind {:?}; `sfauth token {ALIAS}` would exit with code {} and say:",
                error.kind(),
                cli.exit as u8
            ));
            more(&format!("  error: {}", cli.message));
        }
    }
    println!();
    let counters = emulator.counters();
    println!(
        "Done: {} token requests reached the emulator. Next: `sfauth login web --help`, `sfauth --help`.",
        counters.requests("token")
    );
    emulator.shutdown().await;
    Ok(())
}

async fn access_token(manager: &TokenManager, key: &TokenKey) -> Result<(AccessToken, Url)> {
    let guard = manager
        .access_token(key)
        .await
        .map_err(|e| demo_error("getting the access token", &e))?;
    Ok((guard.access_token().clone(), guard.instance_url().clone()))
}

async fn refresh_token_of(manager: &TokenManager, key: &TokenKey) -> Result<Option<String>> {
    let record = manager
        .store()
        .get(key)
        .await
        .map_err(|e| demo_error("reading the store", &e))?;
    Ok(record.and_then(|r| r.tokens.refresh_token.map(|t| t.expose_secret().to_owned())))
}

async fn query(
    transport: &dyn HttpTransport,
    token: &AccessToken,
    instance: &Url,
) -> Result<(u16, Bytes)> {
    let mut url = instance.clone();
    url.set_path(&format!("/services/data/{API_VERSION}/query"));
    url.query_pairs_mut().clear().append_pair("q", QUERY);
    let mut request = http::Request::get(url.as_str())
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", token.expose_secret()),
        )
        .body(Bytes::new())
        .map_err(|e| demo_error("building the API request", &e))?;
    request.extensions_mut().insert(RetrySafety::Idempotent);
    let response = transport
        .send(request)
        .await
        .map_err(|e| demo_error("calling the API", &e))?;
    Ok((response.status().as_u16(), response.into_body()))
}

fn records(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|json| json.get("totalSize").and_then(serde_json::Value::as_u64))
        .map(|n| format!(" OK, {n} records"))
        .unwrap_or_default()
}

fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|json| {
            json.get(0)
                .and_then(|e| e.get("errorCode"))
                .and_then(|c| c.as_str().map(str::to_owned))
        })
        .unwrap_or_default()
}

fn print_events(events: &mut broadcast::Receiver<Event>) {
    while let Ok(event) = events.try_recv() {
        let text = match event.kind {
            EventKind::Stored => "stored".to_owned(),
            EventKind::Refreshed { .. } => "refreshed".to_owned(),
            EventKind::Rotated => "rotated".to_owned(),
            EventKind::ReauthRequired { reason, .. } => format!("reauth_required ({reason})"),
            EventKind::RefreshFailed { message, .. } => format!("refresh_failed ({message})"),
            EventKind::InstanceUrlChanged { to, .. } => format!("instance_url_changed (to {to})"),
            _ => "other".to_owned(),
        };
        more(&format!("event: {text}"));
    }
}
