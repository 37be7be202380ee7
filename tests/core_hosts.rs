//! Hosts, client authentication and expiry: `sfauth-core` against the emulator's Experience
//! Cloud-style site, HTTP Basic client authentication, JWT-based access tokens and session
//! timeouts, over real TCP.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on an unexpected error"
)]

use std::time::{Duration, UNIX_EPOCH};

use sfauth_core::flows::{IdTokenCheck, RevokeMethod};
use sfauth_core::{
    ClientAuth, ConnectedApp, ErrorKind, ExpirySource, LoginHost, OAuthClient, SecretValue,
};
use sfauth_emulator::{AppConfig, Clock, RevokeErrorFormat};
use sfauth_tests::Env;

#[tokio::test]
async fn id_tokens_from_the_site_validate_against_the_site() {
    let env = Env::start().await.unwrap();
    let client = env.site_client().unwrap();
    let tokens = env
        .web_server_login(&client, &["api", "openid"])
        .await
        .unwrap();
    // The default issuer of a site host is the site URL, as the site's discovery document says.
    let claims = client
        .validate_id_token(
            &env.transport,
            tokens.id_token.as_ref().unwrap(),
            &IdTokenCheck::default(),
        )
        .await
        .unwrap();
    assert_eq!(claims.iss, env.emulator.site_url());
    assert_eq!(env.emulator.counters().requests("keys"), 1);
}

#[tokio::test]
async fn the_user_agent_fragment_from_the_site_names_the_community() {
    let env = Env::start().await.unwrap();
    let client = env.site_client().unwrap();
    let (request, redirect) = env.user_agent_redirect(&client, &["api"]).await.unwrap();
    let tokens = client.parse_fragment(&redirect, &request.state).unwrap();
    assert_eq!(
        tokens
            .community_url
            .as_ref()
            .map(|u| u.as_str().trim_end_matches('/')),
        Some(env.emulator.site_url().as_str())
    );
    assert!(tokens.community_id.is_some(), "{redirect}");
}

#[tokio::test]
async fn jwt_bearer_through_the_site_uses_the_site_audience() {
    let env = Env::start().await.unwrap();
    let client = env.key_only_client(LoginHost::site(&env.emulator.site_url()).unwrap());
    assert_eq!(client.host().jwt_audience(), env.emulator.site_url());
    let tokens = client
        .jwt_bearer(&env.transport, &env.seeded_jwt())
        .await
        .unwrap();
    assert_eq!(env.query_status(&tokens).await.unwrap(), 200);
}

#[tokio::test]
async fn basic_client_authentication_on_every_authenticated_endpoint() {
    let env = Env::start().await.unwrap();
    let creds = env.creds().clone();
    // A secret with characters that form encoding would change: Basic sends it as it is.
    let secret = "s3:cr%2Bet+/=";
    env.emulator
        .add_app(
            &creds.org_id,
            AppConfig {
                client_id: "3MVG9basic.client".into(),
                client_secret: secret.into(),
                callback_urls: vec![creds.callback_url.clone()],
                run_as: Some(creds.username.clone()),
                ..AppConfig::default()
            },
        )
        .unwrap();
    let app = ConnectedApp::new("3MVG9basic.client")
        .with_secret(secret)
        .with_redirect_uri(&creds.callback_url)
        .unwrap()
        .with_client_auth(ClientAuth::Basic);
    let client = OAuthClient::new(env.host().unwrap(), app);

    let tokens = env
        .web_server_login(&client, &["api", "refresh_token"])
        .await
        .unwrap();
    assert!(tokens.signature.is_some());
    let refreshed = env.refresh_and_query(&client, &tokens).await.unwrap();
    env.password_login(&client).await.unwrap();
    client.client_credentials(&env.transport).await.unwrap();
    let introspection = env.introspect_access(&client, &refreshed).await.unwrap();
    assert!(introspection.active);
    assert_eq!(
        introspection.client_id.as_deref(),
        Some("3MVG9basic.client")
    );

    // The wrong secret by Basic is refused like the wrong secret in the body.
    let wrong = OAuthClient::new(
        env.host().unwrap(),
        ConnectedApp::new("3MVG9basic.client")
            .with_secret("s3:cr%2Bet")
            .with_client_auth(ClientAuth::Basic),
    );
    let error = wrong
        .refresh(&env.transport, tokens.refresh_token.as_ref().unwrap())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidClient, "{error}");
    let error = env.introspect_access(&wrong, &refreshed).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidClient, "{error}");
}

#[tokio::test]
async fn jwt_access_tokens_carry_their_expiry() {
    let env = Env::start().await.unwrap();
    env.emulator
        .update_app(&env.creds().client_id, |app| {
            app.jwt_access_tokens = true;
            app.policy.session_timeout_secs = 900;
        })
        .unwrap();
    let tokens = env.login().await.unwrap();
    assert_eq!(tokens.access_token.expose_secret().split('.').count(), 3);
    assert_eq!(tokens.expiry_source, Some(ExpirySource::JwtExp));
    let issued = tokens.issued_at_millis().unwrap() / 1000;
    assert_eq!(
        tokens.expires_at,
        Some(UNIX_EPOCH + Duration::from_secs(issued + 900))
    );
    assert_eq!(env.query_status(&tokens).await.unwrap(), 200);
    // The signature still covers id + issued_at.
    assert!(tokens.signature.is_some());

    env.emulator.advance(Duration::from_secs(900));
    assert_eq!(env.query_status(&tokens).await.unwrap(), 401);
    let refreshed = env
        .client()
        .unwrap()
        .refresh(&env.transport, tokens.refresh_token.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!(refreshed.expiry_source, Some(ExpirySource::JwtExp));
    assert!(refreshed.expires_at > tokens.expires_at);
    assert_eq!(env.query_status(&refreshed).await.unwrap(), 200);
}

#[tokio::test]
async fn a_configured_session_timeout_matches_the_server() {
    let env = Env::start().await.unwrap();
    env.emulator
        .set_policy(&env.creds().client_id, |p| p.session_timeout_secs = 900)
        .unwrap();
    let client = env
        .client()
        .unwrap()
        .with_session_timeout(Duration::from_secs(900));
    let tokens = env
        .web_server_login(&client, &["api", "refresh_token"])
        .await
        .unwrap();
    assert_eq!(tokens.expiry_source, Some(ExpirySource::SessionTimeout));
    let introspection = env.introspect_access(&client, &tokens).await.unwrap();
    // Core counts from `issued_at` in milliseconds, introspection says whole seconds.
    let expires_secs = tokens
        .expires_at
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(Some(expires_secs), introspection.exp);
    env.emulator.advance(Duration::from_secs(899));
    assert_eq!(env.query_status(&tokens).await.unwrap(), 200);
    env.emulator.advance(Duration::from_secs(1));
    assert_eq!(env.query_status(&tokens).await.unwrap(), 401);
}

#[tokio::test]
async fn revoke_errors_in_form_encoding_are_read() {
    let env =
        Env::start_with(|b| b.settings(|s| s.revoke_error_format = RevokeErrorFormat::Urlencoded))
            .await
            .unwrap();
    let client = env.client().unwrap();
    for method in [RevokeMethod::Post, RevokeMethod::Get] {
        let error = client
            .revoke(&env.transport, &SecretValue::new("00Dnot!atoken"), method)
            .await
            .unwrap_err();
        let server = error.server().unwrap_or_else(|| panic!("{error}"));
        assert_eq!(server.error(), "invalid_token");
        assert_eq!(server.description(), Some("Token was invalid"));
        assert_eq!(server.status(), 400);
    }
}

#[tokio::test]
async fn a_public_pkce_client_without_a_secret() {
    let env = Env::start().await.unwrap();
    let creds = env.creds().clone();
    env.emulator
        .update_app(&creds.client_id, |app| {
            app.require_secret_for_web_server_flow = false;
            app.pkce_required = true;
        })
        .unwrap();
    // A Mobile SDK-style public client: consumer key and callback, no secret.
    let app = ConnectedApp::new(creds.client_id.clone())
        .with_redirect_uri(&creds.callback_url)
        .unwrap();
    let client = OAuthClient::new(env.host().unwrap(), app);
    let tokens = env
        .web_server_login(&client, &["api", "refresh_token"])
        .await
        .unwrap();
    // The signature is there but cannot be checked without the secret.
    assert!(tokens.signature.is_some());
    env.refresh_and_query(&client, &tokens).await.unwrap();

    // An app that requires the secret on refresh refuses the public client.
    env.emulator
        .update_app(&creds.client_id, |app| {
            app.require_secret_for_refresh = true
        })
        .unwrap();
    let error = client
        .refresh(&env.transport, tokens.refresh_token.as_ref().unwrap())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidClient, "{error}");
}

#[tokio::test]
async fn jwt_assertions_stay_within_three_minutes() {
    // On the system clock, with Salesforce's "expiration within 3 minutes" enforced.
    let env = Env::start_with(|b| {
        b.clock(Clock::system())
            .settings(|s| s.jwt_max_exp_secs = Some(180))
    })
    .await
    .unwrap();
    let client = env.key_only_client(env.host().unwrap());
    let jwt = env.seeded_jwt();
    let tokens = client.jwt_bearer(&env.transport, &jwt).await.unwrap();
    assert_eq!(env.query_status(&tokens).await.unwrap(), 200);

    // An assertion valid for longer is refused, as Salesforce does.
    let mut long = jwt.clone();
    long.lifetime = Duration::from_secs(600);
    let error = client.jwt_bearer(&env.transport, &long).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ReauthorizationRequired, "{error}");
    assert_eq!(
        error.server().unwrap().description(),
        Some("expired authorization code")
    );
}

#[tokio::test]
async fn custom_endpoints_set_one_by_one() {
    let env = Env::start().await.unwrap();
    let base = url::Url::parse(env.emulator.base_url()).unwrap();
    let site = env.emulator.site_url();
    // A proxy-style setup: the token endpoint lives elsewhere (here: under the site prefix).
    let endpoints = sfauth_core::Endpoints::from_base(&base)
        .with_token(url::Url::parse(&format!("{site}/services/oauth2/token")).unwrap());
    let client = OAuthClient::new(LoginHost::Custom(Box::new(endpoints)), env.app().unwrap());
    let tokens = env
        .web_server_login(&client, &["api", "refresh_token", "openid"])
        .await
        .unwrap();
    // The code exchange went through the site, so the community fields are there.
    assert!(tokens.community_url.is_some());
    let refreshed = env.refresh_and_query(&client, &tokens).await.unwrap();
    let introspection = env.introspect_access(&client, &refreshed).await.unwrap();
    assert!(introspection.active);
    // The id token names the host it was issued through, which a custom setup names itself.
    let check = IdTokenCheck {
        issuers: vec![site],
        ..IdTokenCheck::default()
    };
    client
        .validate_id_token(&env.transport, tokens.id_token.as_ref().unwrap(), &check)
        .await
        .unwrap();
    let counters = env.emulator.counters();
    assert_eq!(counters.requests("authorize"), 1);
    assert_eq!(counters.requests("token"), 2);
}
