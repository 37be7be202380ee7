//! A backend service that calls Salesforce as one integration user, from many tasks at once,
//! with the client credentials flow: no refresh token, no human, and one token request per
//! session however many requests are in flight when it ends.
//!
//! ```sh
//! cargo run -p sfauth --example service
//! ```
//!
//! It runs against the embedded Salesforce emulator. Against a real org: your My Domain, a
//! connected app with the client credentials flow enabled and a run-as user, its consumer key
//! and secret from your secret manager, and a store every process of the service shares (a
//! `SqliteStore` on one machine; see `docs/scaling.md` for several).

#![allow(clippy::print_stdout, reason = "an example prints what it did")]

use std::sync::Arc;
use std::time::Duration;

use sfauth::{
    ConnectedApp, LoginHost, OAuthClient, Renewal, SqliteStore, TokenKey, TokenManager, http,
};
use sfauth_emulator::Emulator;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Requests in flight at once.
const WORKERS: usize = 32;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let emulator = Emulator::builder().start().await?;
    let served = run(&emulator, &dir.path().join("service.db")).await?;
    println!("{served} requests served");
    emulator.shutdown().await;
    Ok(())
}

/// Serves `WORKERS` × 3 requests while the session ends twice; returns how many succeeded.
async fn run(emulator: &Emulator, store_path: &std::path::Path) -> Result<usize, BoxError> {
    let creds = emulator.credentials();
    let client = OAuthClient::new(
        LoginHost::my_domain(emulator.base_url())?,
        ConnectedApp::new(creds.client_id.clone()).with_secret(creds.client_secret.clone()),
    )
    .with_session_timeout(Duration::from_secs(2 * 3600));
    let keyring = sfauth::Keyring::from_key_file(&store_path.with_extension("key"))?;
    let manager = Arc::new(
        TokenManager::builder(client.clone())
            .store(Arc::new(SqliteStore::open(store_path, keyring).await?))
            .default_renewal(Renewal::ClientCredentials)
            .build()
            .await?,
    );
    // The first session: after this, the manager renews it by itself.
    let tokens = client
        .client_credentials(manager.transport().as_ref())
        .await?;
    let key = manager.store_tokens(tokens, "service").await?;

    let mut served = 0;
    for round in 0..3 {
        if round > 0 {
            // The org ends every session (an admin, a timeout): the next calls get 401.
            emulator.expire_access_tokens();
        }
        let calls = (0..WORKERS).map(|_| {
            let (manager, key) = (manager.clone(), key.clone());
            tokio::spawn(async move { call(&manager, &key).await })
        });
        for call in futures_util::future::join_all(calls).await {
            call??;
            served += 1;
        }
    }
    Ok(served)
}

/// One API call, with the 401 → `session_expired` → retry-once loop every caller needs.
async fn call(manager: &TokenManager, key: &TokenKey) -> Result<(), BoxError> {
    let mut token = manager.access_token(key).await?;
    for _ in 0..2 {
        let url = token
            .instance_url()
            .join("/services/data/v62.0/query?q=SELECT+Id+FROM+Account")?;
        let request = http::Request::get(url.as_str())
            .header(http::header::AUTHORIZATION, token.authorization())
            .body(sfauth::bytes::Bytes::new())?;
        let response = manager.transport().send(request).await?;
        if response.status() != http::StatusCode::UNAUTHORIZED {
            return if response.status().is_success() {
                Ok(())
            } else {
                Err(format!("Salesforce answered {}", response.status()).into())
            };
        }
        // Concurrent callers that saw the same dead token share one renewal.
        let dead = token.access_token().clone();
        token = manager.session_expired(key, &dead).await?;
    }
    Err("Salesforce refused two fresh sessions in a row".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_token_request_per_session_for_every_worker() {
        let dir = tempfile::tempdir().unwrap();
        let emulator = Emulator::builder().start().await.unwrap();
        let served = run(&emulator, &dir.path().join("service.db"))
            .await
            .unwrap();
        assert_eq!(served, WORKERS * 3);
        assert_eq!(
            emulator.counters().grant("client_credentials"),
            3,
            "one login, then one renewal per ended session"
        );
        emulator.shutdown().await;
    }
}
