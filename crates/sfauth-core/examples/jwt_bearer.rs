//! JWT bearer flow: a server signs an assertion with the key whose certificate is on the app.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example shows what it does"
)]

mod support;

use sfauth_core::flows::JwtBearer;
use sfauth_core::{ConnectedApp, LoginHost, OAuthClient, PrivateKey};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), sfauth_core::Error> {
    // A throwaway test key; load yours from a secret store.
    let key = PrivateKey::new(include_str!("../tests/fixtures/jwt_key.pem"));
    let host = LoginHost::my_domain("https://acme.my.salesforce.com")?;
    println!(
        "posting to {}, aud {}",
        host.endpoints().token,
        host.jwt_audience()
    );
    let client = OAuthClient::new(host, ConnectedApp::new("3MVG9.example"));
    let transport = support::script(vec![(200, support::TOKEN)]);
    let tokens = client
        .jwt_bearer(&transport, &JwtBearer::new("integration@acme.com", key))
        .await?;
    println!("access token for {}", tokens.identity.user_id());
    Ok(())
}
