//! Introspection, revocation, userinfo and the identity URL.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example shows what it does"
)]

mod support;

use sfauth_core::flows::{RevokeMethod, TokenTypeHint};
use sfauth_core::{ConnectedApp, LoginHost, OAuthClient, SecretValue};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), sfauth_core::Error> {
    let transport = support::script(vec![
        (200, support::TOKEN),
        (
            200,
            r#"{"active":true,"token_type":"access_token","exp":1700007200,"username":"user@example.com"}"#,
        ),
        (
            200,
            r#"{"sub":"https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK","preferred_username":"user@example.com"}"#,
        ),
        (
            200,
            r#"{"id":"https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK","display_name":"Ada User","urls":{"rest":"https://acme.my.salesforce.com/services/data/v{version}/"}}"#,
        ),
        (200, ""),
    ]);
    let client = OAuthClient::new(
        LoginHost::Production,
        ConnectedApp::new("3MVG9.example").with_secret("secret"),
    );
    let mut tokens = client
        .refresh(&transport, &sfauth_core::RefreshToken::new("5Aep861Stored"))
        .await?;

    let access = SecretValue::from(tokens.access_token.clone());
    let introspection = client
        .introspect(&transport, &access, Some(TokenTypeHint::AccessToken))
        .await?;
    tokens.apply_introspection(&introspection);
    println!(
        "active {}; expires at {:?} (from {:?})",
        introspection.active, tokens.expires_at, tokens.expiry_source
    );

    let user = client.userinfo(&transport, &tokens.access_token).await?;
    println!("userinfo: {:?}", user.preferred_username);
    let identity = client.identity(&transport, &tokens).await?;
    println!(
        "identity: {:?}, rest at {:?}",
        identity.display_name,
        identity.urls.get("rest")
    );

    let refresh = SecretValue::from(
        tokens
            .refresh_token
            .clone()
            .unwrap_or_else(|| sfauth_core::RefreshToken::new("")),
    );
    client
        .revoke(&transport, &refresh, RevokeMethod::Post)
        .await?;
    println!("signed out: the refresh token and its access tokens are revoked");
    Ok(())
}
