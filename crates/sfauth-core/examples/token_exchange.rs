//! Token exchange: trade another identity provider's token for a Salesforce one.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example shows what it does"
)]

mod support;

use sfauth_core::flows::{TokenExchange, token_type};
use sfauth_core::{ConnectedApp, LoginHost, OAuthClient, SecretValue};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), sfauth_core::Error> {
    let client = OAuthClient::new(
        LoginHost::my_domain("https://acme.my.salesforce.com")?,
        ConnectedApp::new("3MVG9.example").with_secret("secret"),
    );
    let mut exchange = TokenExchange::new(SecretValue::new("eyJ.idp.token"), token_type::JWT);
    exchange.scope = Some("api".into());
    let transport = support::script(vec![(200, support::TOKEN)]);
    let tokens = client.token_exchange(&transport, &exchange).await?;
    println!("exchanged for a session of {}", tokens.identity.user_id());
    Ok(())
}
