//! Username-password flow (legacy; blocked by default in orgs created since Summer '23).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example shows what it does"
)]

mod support;

use sfauth_core::{Cause, ConnectedApp, LoginHost, OAuthClient, Password};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let transport = support::script(vec![(
        400,
        r#"{"error":"invalid_grant","error_description":"authentication failure"}"#,
    )]);
    let client = OAuthClient::new(
        LoginHost::Sandbox,
        ConnectedApp::new("3MVG9.example").with_secret("secret"),
    );
    // The password is the user's password with the security token appended.
    let password = Password::new("hunter2".to_owned() + "SECURITYTOKEN");
    match client
        .password(&transport, "user@example.com.dev", &password)
        .await
    {
        Ok(tokens) => println!("signed in at {}", tokens.instance_url),
        Err(error) => {
            let cause = error.server().map(|s| s.cause());
            println!("{error} ({}): cause {cause:?}", error.kind());
            if cause == Some(Cause::AuthenticationFailure) {
                println!(
                    "check the security token, the host (sandbox?) and whether the flow is allowed"
                );
            }
        }
    }
}
