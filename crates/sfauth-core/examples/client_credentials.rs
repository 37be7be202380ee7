//! Client credentials flow: tokens for the app's Run As user, on a My Domain only.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example shows what it does"
)]

mod support;

use sfauth_core::{ConnectedApp, ErrorKind, LoginHost, OAuthClient};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), sfauth_core::Error> {
    let app = ConnectedApp::new("3MVG9.example").with_secret("secret");
    let wrong = OAuthClient::new(LoginHost::Production, app.clone());
    let transport = support::script(vec![(200, support::TOKEN)]);
    let refused = wrong.client_credentials(&transport).await.map(|_| ());
    assert!(matches!(&refused, Err(e) if e.kind() == ErrorKind::Config));
    println!("login.salesforce.com refused before sending: {refused:?}");

    let client = OAuthClient::new(LoginHost::my_domain("https://acme.my.salesforce.com")?, app);
    let tokens = client.client_credentials(&transport).await?;
    println!("run-as user {}", tokens.identity.user_id());
    Ok(())
}
