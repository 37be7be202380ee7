//! An ISV worker: one connected app, tokens for many customer orgs, each customer logged in
//! once by its admin. The worker loads every stored tenant, keeps them fresh in the background
//! (and alive past Salesforce's idle limit), syncs each one, and turns "this customer must log in
//! again" into a message to that customer instead of an error in a log.
//!
//! ```sh
//! cargo run -p sfauth --example isv_worker
//! ```
//!
//! It runs against the embedded Salesforce emulator, with a few customer orgs whose logins are
//! made here with the device flow, approved by the emulator (standing in for each admin's
//! web-server-flow login through your app). Against real orgs, your app's login route stores each customer's
//! tokens with `TokenManager::store_tokens`, and the worker is the rest of this file.

#![allow(clippy::print_stdout, reason = "an example prints what it did")]

use std::sync::Arc;
use std::time::Duration;

use sfauth::{
    BackgroundConfig, ConnectedApp, ErrorKind, EventKind, LoginHost, OAuthClient, SqliteStore,
    TokenKey, TokenManager, http, oauth::flows::DevicePoll,
};
use sfauth_emulator::{Emulator, UserConfig};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Customer orgs in this run.
const CUSTOMERS: usize = 5;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let emulator = Emulator::builder().start().await?;
    let report = run(&emulator, &dir.path().join("tenants.db")).await?;
    println!(
        "{} tenants synced, {} asked to log in again",
        report.synced, report.reauth_notices
    );
    emulator.shutdown().await;
    Ok(())
}

/// What one pass of the worker did.
#[derive(Debug, Default)]
struct Report {
    synced: usize,
    reauth_notices: usize,
}

async fn run(emulator: &Emulator, store_path: &std::path::Path) -> Result<Report, BoxError> {
    let creds = emulator.credentials().clone();
    let host = LoginHost::my_domain(emulator.base_url())?;
    let app = ConnectedApp::new(creds.client_id.clone()).with_secret(creds.client_secret.clone());
    let client = OAuthClient::new(host, app).with_session_timeout(Duration::from_secs(2 * 3600));
    emulator.set_policy(&creds.client_id, |policy| policy.rotation = true)?;

    let keyring = sfauth::Keyring::from_key_file(&store_path.with_extension("key"))?;
    let manager = Arc::new(
        TokenManager::builder(client.clone())
            .store(Arc::new(SqliteStore::open(store_path, keyring).await?))
            .build()
            .await?,
    );

    // Each customer's admin logs in once (in production: your login route).
    let mut usernames = Vec::new();
    for customer in 0..CUSTOMERS {
        let org = emulator.add_org(&format!("Customer {customer}"))?;
        let username = format!("admin@customer{customer}.example");
        emulator.add_user(
            &org,
            UserConfig {
                username: username.clone(),
                password: "customer-password-1".to_owned(),
                security_token: format!("CUSTOMERTOKEN{customer}"),
                ..UserConfig::default()
            },
        )?;
        // The device flow, approved by the emulator as the admin would in a browser: like the
        // web server flow, it gives a refresh token.
        let transport = manager.transport().as_ref();
        let device = client
            .device_start(transport, Some("api refresh_token"))
            .await?;
        emulator.approve_device(&device.user_code, &username)?;
        let DevicePoll::Complete(tokens) = client.device_poll(transport, &device).await? else {
            return Err("the approved device code did not complete".into());
        };
        manager.store_tokens(*tokens, "sync").await?;
        usernames.push(username);
    }

    // The worker proper: every stored tenant in memory, kept fresh in the background.
    let tenants = manager.load_all().await?;
    let refresher = manager.spawn_refresher(
        BackgroundConfig::default()
            .interval(Duration::from_secs(30))
            // Refresh a tenant nobody used for 20 days: Salesforce may end refresh tokens
            // idle for 30.
            .keep_alive_after(Some(Duration::from_secs(20 * 24 * 3600))),
    );
    let mut events = manager.subscribe();

    // One customer's admin revokes the app (or is deactivated): that tenant, and only it,
    // needs a human.
    emulator.revoke_user_tokens(&usernames[0])?;
    emulator.expire_access_tokens();

    let mut report = Report::default();
    let keys = manager
        .store()
        .list(&sfauth::storage::ListQuery::new())
        .await?
        .records
        .into_iter()
        .map(|record| record.key);
    for key in keys {
        match sync(&manager, &key).await {
            Ok(()) => report.synced += 1,
            // Not an outage: this customer must log in again. Nothing else is affected.
            Err(error)
                if error
                    .downcast_ref::<sfauth::Error>()
                    .is_some_and(|error| error.kind() == ErrorKind::ReauthorizationRequired) => {}
            Err(error) => return Err(error),
        }
    }
    // The event stream says the same, once per tenant: the place to e-mail the customer.
    while let Ok(event) = events.try_recv() {
        if let EventKind::ReauthRequired { .. } = event.kind {
            println!(
                "notify the admin of org {}: please reconnect",
                event.key.org_id()
            );
            report.reauth_notices += 1;
        }
    }
    refresher.shutdown().await;
    manager.shutdown(Duration::from_secs(5)).await;
    assert_eq!(tenants, CUSTOMERS);
    Ok(report)
}

/// One customer's sync: a query, with the 401 → `session_expired` → retry-once loop.
async fn sync(manager: &TokenManager, key: &TokenKey) -> Result<(), BoxError> {
    let mut token = manager.access_token(key).await?;
    for _ in 0..2 {
        let url = token
            .instance_url()
            .join("/services/data/v62.0/query?q=SELECT+Id,Name+FROM+Account")?;
        let request = http::Request::get(url.as_str())
            .header(http::header::AUTHORIZATION, token.authorization())
            .body(sfauth::bytes::Bytes::new())?;
        let response = manager.transport().send(request).await?;
        if response.status() != http::StatusCode::UNAUTHORIZED {
            // A real sync would read the records here.
            return Ok(());
        }
        let dead = token.access_token().clone();
        token = manager.session_expired(key, &dead).await?;
    }
    Err("Salesforce refused two fresh sessions in a row".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_customer_synced_but_the_one_that_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let emulator = Emulator::builder().start().await.unwrap();
        let report = run(&emulator, &dir.path().join("tenants.db"))
            .await
            .unwrap();
        assert_eq!(report.synced, CUSTOMERS - 1);
        assert_eq!(report.reauth_notices, 1);
        assert_eq!(emulator.counters().refresh_tokens_reused, 0);
        emulator.shutdown().await;
    }
}
