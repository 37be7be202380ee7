//! Refresh token flow: trade a stored refresh token for a new access token, and persist what
//! comes back (a rotated refresh token, a moved `instance_url`).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example shows what it does"
)]

mod support;

use sfauth_core::{ConnectedApp, ErrorKind, LoginHost, OAuthClient, RefreshToken};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), sfauth_core::Error> {
    let transport = support::script(vec![
        (200, support::TOKEN),
        (
            400,
            r#"{"error":"invalid_grant","error_description":"token request is already being processed"}"#,
        ),
    ]);
    let client = OAuthClient::new(
        LoginHost::Production,
        ConnectedApp::new("3MVG9.example").with_secret("secret"),
    );
    let stored = RefreshToken::new("5Aep861Stored");

    let tokens = client.refresh(&transport, &stored).await?;
    println!(
        "new access token for {} at {}",
        tokens.identity.user_id(),
        tokens.instance_url
    );
    println!("refresh token to persist: {:?}", tokens.refresh_token); // prints [redacted]

    match client.refresh(&transport, &stored).await {
        Err(error) if error.kind() == ErrorKind::RefreshInProgress => {
            println!("another process is refreshing: wait, re-read the store, do not re-send");
        }
        other => println!("unexpected: {other:?}"),
    }
    Ok(())
}
