//! "Connect your Salesforce org": a small web application where a person connects orgs with the
//! web server flow (production, sandbox or a My Domain), sees each connected org's health,
//! lists its Accounts through the `SalesforceAuth` middleware, and reconnects an org whose
//! connection was revoked.
//!
//! ```sh
//! cargo run -p sfauth-adapters --example connect_org
//! ```
//!
//! By default it runs against the Salesforce emulator, started in this process (it approves
//! every login at once), with tokens in memory; open the URL it prints. Against a real org, give
//! a connected app whose callback URLs include the redirect URI:
//!
//! ```sh
//! SFAUTH_CLIENT_SECRET=... cargo run -p sfauth-adapters --example connect_org -- \
//!     --client-id 3MVG9... --redirect-uri http://localhost:8080/salesforce/callback \
//!     --store connect_org.db
//! ```
//!
//! The store is encrypted with the key in `SFAUTH_STORE_KEY`, or else a key file beside it
//! (`connect_org.key`, created on first use).
//!
//! The application itself is in `app.rs`.

#![allow(
    clippy::print_stdout,
    reason = "an example tells the person running it where to point the browser"
)]

mod app;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use sfauth::{
    ConnectedApp, Keyring, LoginHost, MemoryStore, OAuthClient, SqliteStore, TokenManager,
};
use sfauth_emulator::Emulator;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// "Connect your Salesforce org", against the emulator unless given a connected app.
#[derive(Parser)]
struct Args {
    /// The connected app's consumer key; without it, the app runs against an emulator.
    #[arg(long, env = "SFAUTH_CLIENT_ID")]
    client_id: Option<String>,
    /// The connected app's consumer secret (if it requires one).
    #[arg(long, env = "SFAUTH_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// The callback URL Salesforce sends the browser back to: this app's
    /// `/salesforce/callback` as the browser reaches it [default:
    /// http://localhost:PORT/salesforce/callback, or 127.0.0.1 with the emulator].
    #[arg(long)]
    redirect_uri: Option<String>,
    /// A SQLite token store to keep the connections in; without it they live in memory.
    #[arg(long)]
    store: Option<PathBuf>,
    /// The address to serve on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt().init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let port = listener.local_addr()?.port();
    let store: Arc<dyn sfauth::TokenStore> = match &args.store {
        Some(path) => {
            let keyring = if std::env::var_os(sfauth::STORE_KEY_ENV).is_some() {
                Keyring::from_env(sfauth::STORE_KEY_ENV)?
            } else {
                Keyring::from_key_file(&path.with_extension("key"))?
            };
            Arc::new(SqliteStore::open(path, keyring).await?)
        }
        None => Arc::new(MemoryStore::new()),
    };

    // The emulator lives as long as `main`: dropping it would stop it.
    let (client, offer_salesforce_hosts, _emulator) = match args.client_id {
        Some(client_id) => {
            let redirect = args
                .redirect_uri
                .unwrap_or_else(|| format!("http://localhost:{port}/salesforce/callback"));
            let mut app = ConnectedApp::new(client_id).with_redirect_uri(&redirect)?;
            if let Some(secret) = args.client_secret {
                app = app.with_secret(secret);
            }
            (OAuthClient::new(LoginHost::Production, app), true, None)
        }
        None => {
            let emulator = Emulator::builder().auto_approve(true).start().await?;
            let redirect = args
                .redirect_uri
                .unwrap_or_else(|| format!("http://127.0.0.1:{port}/salesforce/callback"));
            let creds = emulator.credentials();
            // The emulator checks the redirect URI against its app's callback URLs, as
            // Salesforce does: register ours.
            emulator.update_app(&creds.client_id, |app| {
                app.callback_urls.push(redirect.clone());
            })?;
            let app = ConnectedApp::new(creds.client_id.clone())
                .with_secret(creds.client_secret.clone())
                .with_redirect_uri(&redirect)?;
            let host = LoginHost::my_domain(emulator.base_url())?;
            println!("Salesforce emulator at {}", emulator.base_url());
            (OAuthClient::new(host, app), false, Some(emulator))
        }
    };
    let manager = TokenManager::builder(client).store(store).build().await?;
    let router = app::app(app::Config {
        manager,
        offer_salesforce_hosts,
    });
    let shown = match args.listen.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        ip => ip.to_string(),
    };
    println!("Open http://{shown}:{port}/ to connect an org (Ctrl-C stops).");
    axum::serve(listener, router).await?;
    Ok(())
}
