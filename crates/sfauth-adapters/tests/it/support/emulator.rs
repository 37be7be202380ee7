//! A Salesforce org played by the embedded emulator over real TCP, with a `TokenManager` holding
//! a login of its seeded user: what an adapter test needs before it sends its first request.
//!
//! Generic on purpose (nothing here knows an adapter), so that any test of this crate can use it:
//! `#[path = "support/emulator.rs"] mod emulator;`.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses a part of these helpers, through a private `mod`"
)]

use std::sync::Arc;
use std::time::Duration;

use sfauth::oauth::flows::AuthorizeParams;
use sfauth::{ConnectedApp, LoginHost, MemoryStore, OAuthClient, TokenKey, TokenManager};
use sfauth_emulator::{Clock, Emulator, EmulatorBuilder};

/// Any error a helper meets; tests unwrap it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The REST query the tests send: answered 200 with the emulator's canned accounts.
pub const QUERY: &str = "/services/data/v62.0/query?q=SELECT+Id,Name+FROM+Account";

/// Longer than any session the emulator grants: advancing its clock by this ends every session.
pub const PAST_EVERY_SESSION: Duration = Duration::from_secs(3 * 60 * 60);

/// An emulated org, a manager and the key of a web server flow login (with a refresh token).
pub struct Org {
    /// The emulator: clock, counters, revocation, `instance_url` moves.
    pub emulator: Emulator,
    /// The manager the adapters take tokens from (memory store, default transport).
    pub manager: TokenManager,
    /// The seeded user's login, stored in `manager`.
    pub key: TokenKey,
}

impl Org {
    /// An emulator with a manual clock, auto-approve and a fixed seed, and one login.
    pub async fn start() -> Result<Self, BoxError> {
        Self::start_with(|builder| builder).await
    }

    /// Like [`Org::start`], with `configure` applied to the emulator's builder last.
    pub async fn start_with(
        configure: impl FnOnce(EmulatorBuilder) -> EmulatorBuilder,
    ) -> Result<Self, BoxError> {
        let builder = Emulator::builder()
            .clock(Clock::manual_now())
            .auto_approve(true)
            .seed(14);
        let emulator = configure(builder).start().await?;
        let creds = emulator.credentials();
        let client = OAuthClient::new(
            LoginHost::my_domain(emulator.base_url())?,
            ConnectedApp::new(creds.client_id.clone())
                .with_secret(creds.client_secret.clone())
                .with_redirect_uri(&creds.callback_url)?,
        );
        let manager = TokenManager::builder(client.clone())
            .store(Arc::new(MemoryStore::new()))
            .build()
            .await?;
        let key = login(&client, &manager, "adapters").await?;
        Ok(Self {
            emulator,
            manager,
            key,
        })
    }

    /// Ends every session at the emulator (its clock moves on); the manager does not know.
    pub fn end_sessions(&self) {
        self.emulator.advance(PAST_EVERY_SESSION);
    }

    /// Refresh-token grants the emulator has answered so far.
    pub fn refreshes(&self) -> u64 {
        self.emulator.counters().grant("refresh_token")
    }

    /// REST requests the emulator has received so far.
    pub fn rest_requests(&self) -> u64 {
        self.emulator.counters().requests("rest")
    }

    /// Revokes every token of the seeded user for the seeded app: the next refresh is refused
    /// for good.
    pub fn revoke(&self) -> Result<(), BoxError> {
        let creds = self.emulator.credentials();
        self.emulator
            .revoke_for_user(&creds.client_id, &creds.username)?;
        Ok(())
    }

    /// Moves the seeded org to `instance_url` (tokens issued from now on name it).
    pub fn migrate(&self, instance_url: &str) -> Result<(), BoxError> {
        let org = self.emulator.credentials().org_id.clone();
        self.emulator
            .set_instance_url(&org, Some(instance_url.to_owned()))?;
        Ok(())
    }
}

/// The web server flow with PKCE for the seeded user (the emulator auto-approves), stored in
/// `manager` under `label`.
pub async fn login(
    client: &OAuthClient,
    manager: &TokenManager,
    label: &str,
) -> Result<TokenKey, BoxError> {
    let request = client.authorize_url(&AuthorizeParams::scopes(["api", "id", "refresh_token"]))?;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let answer = browser.get(request.url.as_str()).send().await?;
    let location = answer
        .headers()
        .get(reqwest::header::LOCATION)
        .ok_or("the authorize endpoint did not redirect")?
        .to_str()?;
    let code = client.parse_callback(&url::Url::parse(location)?, &request.state)?;
    let tokens = client
        .exchange_code(
            manager.transport().as_ref(),
            &code,
            request.pkce_verifier.as_ref(),
        )
        .await?;
    Ok(manager.store_tokens(tokens, label).await?)
}
