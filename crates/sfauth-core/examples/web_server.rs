//! Web server flow with PKCE: build the authorization URL, read the callback, exchange the code.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example shows what it does"
)]

mod support;

use sfauth_core::flows::AuthorizeParams;
use sfauth_core::{ConnectedApp, LoginHost, OAuthClient};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = ConnectedApp::new("3MVG9.example")
        .with_redirect_uri("http://localhost:1717/OauthRedirect")?;
    let client = OAuthClient::new(LoginHost::Production, app);
    let request = client.authorize_url(&AuthorizeParams::scopes(["api", "refresh_token"]))?;
    println!("open in a browser: {}", request.url);

    // Salesforce redirects the browser here; a local listener would receive it.
    let callback = url::Url::parse(&format!(
        "http://localhost:1717/OauthRedirect?code=aPrxExample&state={}",
        request.state
    ))?;
    let code = client.parse_callback(&callback, &request.state)?;
    let transport = support::script(vec![(200, support::TOKEN)]);
    let tokens = client
        .exchange_code(&transport, &code, request.pkce_verifier.as_ref())
        .await?;
    println!(
        "signed in: org {} user {}",
        tokens.identity.org_id(),
        tokens.identity.user_id()
    );
    Ok(())
}
