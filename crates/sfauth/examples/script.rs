//! A one-org script: log in once with the JWT bearer flow, keep the token in a local store,
//! and query Salesforce; the next run reuses the stored token instead of logging in again.
//!
//! ```sh
//! cargo run -p sfauth --example script
//! ```
//!
//! It runs against the embedded Salesforce emulator, so it needs no org. Against a real org,
//! replace the emulator block with your My Domain (`LoginHost::my_domain`), your connected app's
//! consumer key, the username the app is pre-authorized for and the certificate's private key,
//! and give the store a path that outlives the process.

#![allow(clippy::print_stdout, reason = "an example prints what it did")]

use std::sync::Arc;
use std::time::Duration;

use sfauth::transport::ReqwestTransport;
use sfauth::{
    ConnectedApp, JwtBearer, LoginHost, OAuthClient, PrivateKey, Renewal, SqliteStore,
    TokenManager, http,
};
use sfauth_emulator::{Emulator, SEED_CLIENT_PRIVATE_KEY};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let emulator = Emulator::builder().start().await?;
    let accounts = run(&emulator, &dir.path().join("tokens.db")).await?;
    println!("{accounts} accounts");
    emulator.shutdown().await;
    Ok(())
}

/// Logs in (or reuses the stored login), queries the accounts and returns how many there are.
async fn run(emulator: &Emulator, store_path: &std::path::Path) -> Result<usize, BoxError> {
    let creds = emulator.credentials();
    let client = OAuthClient::new(
        LoginHost::my_domain(emulator.base_url())?,
        ConnectedApp::new(creds.client_id.clone()),
    )
    // The org's session timeout (Setup > Session Settings): Salesforce sends no expiry.
    .with_session_timeout(Duration::from_secs(2 * 3600));
    let jwt = JwtBearer::new(
        creds.username.clone(),
        PrivateKey::new(SEED_CLIENT_PRIVATE_KEY),
    );

    // The key that encrypts the store: a file beside it, created on the first run (in
    // production, prefer a key from your secret manager: `Keyring::from_env`).
    let keyring = sfauth::Keyring::from_key_file(&store_path.with_extension("key"))?;
    let store = Arc::new(SqliteStore::open(store_path, keyring).await?);
    let manager = TokenManager::builder(client.clone())
        .store(store)
        // The JWT bearer flow needs no refresh token: the manager renews by signing a new
        // assertion whenever the session ends.
        .default_renewal(Renewal::JwtBearer(jwt.clone()))
        .build()
        .await?;

    let key = match manager
        .store()
        .list(&sfauth::storage::ListQuery::new())
        .await?
        .records
        .pop()
    {
        Some(record) => record.key,
        None => {
            let transport = ReqwestTransport::builder().build()?;
            let tokens = client.jwt_bearer(&transport, &jwt).await?;
            manager.store_tokens(tokens, "script").await?
        }
    };

    let mut token = manager.access_token(&key).await?;
    for _ in 0..2 {
        let url = token
            .instance_url()
            .join("/services/data/v62.0/query?q=SELECT+Id,Name+FROM+Account")?;
        let request = http::Request::get(url.as_str())
            .header(http::header::AUTHORIZATION, token.authorization())
            .body(sfauth::bytes::Bytes::new())?;
        let response = manager.transport().send(request).await?;
        if response.status() == http::StatusCode::UNAUTHORIZED {
            // The session ended early (revoked, or the timeout is shorter than configured).
            let dead = token.access_token().clone();
            token = manager.session_expired(&key, &dead).await?;
            continue;
        }
        let body: serde_json::Value = serde_json::from_slice(response.body())?;
        let records = body["records"].as_array().map_or(0, Vec::len);
        return Ok(records);
    }
    Err("Salesforce refused two fresh sessions in a row".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_run_reuses_the_stored_login() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.db");
        let emulator = Emulator::builder().start().await.unwrap();
        assert!(run(&emulator, &path).await.unwrap() > 0);
        assert!(run(&emulator, &path).await.unwrap() > 0);
        assert_eq!(
            emulator.counters().grant("jwt_bearer"),
            1,
            "the second run used the stored token"
        );
        // A session that ends early is renewed with a new assertion, once.
        emulator.expire_access_tokens();
        assert!(run(&emulator, &path).await.unwrap() > 0);
        assert_eq!(emulator.counters().grant("jwt_bearer"), 2);
        emulator.shutdown().await;
    }
}
