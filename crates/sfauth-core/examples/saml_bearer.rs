//! SAML bearer assertion flow: present a SAML 2.0 assertion from your identity provider.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example shows what it does"
)]

mod support;

use sfauth_core::{ConnectedApp, LoginHost, OAuthClient, SecretValue};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), sfauth_core::Error> {
    let client = OAuthClient::new(LoginHost::Production, ConnectedApp::new("3MVG9.example"));
    let transport = support::script(vec![(200, support::TOKEN)]);
    // base64url of the signed <saml:Assertion>.
    let assertion = SecretValue::new("PHNhbWw6QXNzZXJ0aW9uPi4uLjwvc2FtbDpBc3NlcnRpb24-");
    let tokens = client.saml_bearer(&transport, &assertion).await?;
    println!("signed in at {}", tokens.instance_url);
    Ok(())
}
