//! User-agent flow: the tokens come back in the redirect URL's fragment.

#![allow(clippy::print_stdout, reason = "an example shows what it does")]

use sfauth_core::flows::AuthorizeParams;
use sfauth_core::{ConnectedApp, LoginHost, OAuthClient};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = ConnectedApp::new("3MVG9.example").with_redirect_uri("myapp://oauth/done")?;
    let client = OAuthClient::new(LoginHost::Production, app);
    let request = client.user_agent_url(&AuthorizeParams::scopes(["api"]))?;
    println!("open in a browser: {}", request.url);

    let redirect = url::Url::parse(&format!(
        "myapp://oauth/done#access_token=00D5e000000Abcd%21AQ4AQExampleOnly\
         &instance_url=https%3A%2F%2Facme.my.salesforce.com\
         &id=https%3A%2F%2Flogin.salesforce.com%2Fid%2F00D5e000000AbcdEAC%2F0055e000001XyZaAAK\
         &issued_at=1700000000123&token_type=Bearer&state={}",
        request.state
    ))?;
    let tokens = client.parse_fragment(&redirect, &request.state)?;
    println!("signed in at {}", tokens.instance_url);
    Ok(())
}
