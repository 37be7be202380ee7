//! Device flow: show a code, poll until the user approves elsewhere.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example shows what it does"
)]

mod support;

use std::time::Duration;

use sfauth_core::{ConnectedApp, LoginHost, OAuthClient};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), sfauth_core::Error> {
    let transport = support::script(vec![
        (
            200,
            r#"{"device_code":"ExampleDeviceCode","user_code":"ABCD1234","verification_uri":"https://login.salesforce.com/setup/connect","interval":5}"#,
        ),
        (400, r#"{"error":"authorization_pending"}"#),
        (200, support::TOKEN),
    ]);
    let client = OAuthClient::new(LoginHost::Production, ConnectedApp::new("3MVG9.example"));
    let authorization = client
        .device_start(&transport, Some("api refresh_token"))
        .await?;
    println!(
        "go to {} and enter {}",
        authorization.verification_uri, authorization.user_code
    );
    // A real program passes `tokio::time::sleep`; this one only says how long it would wait.
    let sleep = |wait: Duration| {
        println!("waiting {wait:?}");
        std::future::ready(())
    };
    let tokens = client
        .device_wait(&transport, &authorization, sleep)
        .await?;
    println!("approved: {}", tokens.identity.user_id());
    Ok(())
}
