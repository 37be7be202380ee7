//! Every flow of `sfauth-core` against the emulator, over real TCP through `ReqwestTransport`.
//!
//! Each test starts its own emulator (auto-approve, manual clock, fixed seed), points an
//! `OAuthClient` at it as a My Domain, runs one flow end to end and then checks the result
//! against what the emulator knows: the REST API accepts the token, the counters moved as
//! expected, the identity URL names the seeded user.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on an unexpected error"
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sfauth_core::flows::{
    AuthorizeParams, DevicePoll, IdTokenCheck, RevokeMethod, TokenExchange, TokenTypeHint,
    token_type,
};
use sfauth_core::format::ResponseFormat;
use sfauth_core::{
    Cause, ConnectedApp, Error, ErrorKind, ExpirySource, IdToken, OAuthClient, Password,
    SecretValue, TokenSet,
};
use sfauth_emulator::{Clock, Emulator, SEED_CLIENT_PRIVATE_KEY, assertions};
use sfauth_tests::{Env, SEED};

fn now_secs() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// What every token set from the seeded org must say.
#[track_caller]
fn assert_seeded(env: &Env, tokens: &TokenSet) {
    let creds = env.creds();
    assert_eq!(tokens.identity.org_id().as_str(), creds.org_id);
    assert_eq!(tokens.identity.user_id().as_str(), creds.user_id);
    assert_eq!(
        tokens.instance_url.as_str().trim_end_matches('/'),
        creds.instance_url
    );
    assert_eq!(tokens.token_type.as_deref(), Some("Bearer"));
    assert!(tokens.access_token.expose_secret().starts_with("00D"));
}

#[tokio::test]
async fn web_server_flow_with_pkce() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let params = AuthorizeParams {
        nonce: Some("n-0S6_WzA2Mj".into()),
        ..AuthorizeParams::scopes(["api", "id", "refresh_token", "openid"])
    };
    let request = client.authorize_url(&params).unwrap();
    assert!(request.pkce_verifier.is_some());
    let callback = env.follow_authorize(&request.url).await.unwrap();
    assert!(callback.as_str().starts_with(&env.creds().callback_url));
    let code = client.parse_callback(&callback, &request.state).unwrap();
    assert!(code.expose_secret().starts_with("aPrx"));
    let tokens = client
        .exchange_code(&env.transport, &code, request.pkce_verifier.as_ref())
        .await
        .unwrap();

    assert_seeded(&env, &tokens);
    assert!(tokens.refresh_token.is_some());
    assert!(
        tokens.signature.is_some(),
        "signature checked on the way in"
    );
    assert!(tokens.issued_at.is_some());
    assert_eq!(tokens.scope.as_deref(), Some("api id refresh_token openid"));
    let id_token = tokens.id_token.as_ref().expect("openid was granted");
    let check = IdTokenCheck {
        nonce: Some("n-0S6_WzA2Mj".into()),
        ..IdTokenCheck::default()
    };
    let claims = client
        .validate_id_token(&env.transport, id_token, &check)
        .await
        .unwrap();
    assert_eq!(claims.sub, tokens.identity.as_str());
    assert_eq!(env.query_status(&tokens).await.unwrap(), 200);
    assert_eq!(env.emulator.counters().grant("authorization_code"), 1);
}

#[tokio::test]
async fn web_server_flow_through_the_site_prefix() {
    let env = Env::start().await.unwrap();
    let client = env.site_client().unwrap();
    assert!(
        client
            .endpoints()
            .token
            .path()
            .starts_with("/community/services/oauth2/")
    );
    let tokens = env
        .web_server_login(&client, &["api", "refresh_token"])
        .await
        .unwrap();
    assert_seeded(&env, &tokens);
    assert_eq!(
        tokens
            .community_url
            .as_ref()
            .map(|u| u.as_str().trim_end_matches('/')),
        Some(env.emulator.site_url().as_str())
    );
    assert!(tokens.community_id.is_some());
}

#[tokio::test]
async fn user_agent_flow_reads_the_fragment() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let (request, redirect) = env
        .user_agent_redirect(&client, &["api", "refresh_token"])
        .await
        .unwrap();
    assert!(request.pkce_verifier.is_none());
    assert!(redirect.query().is_none());
    assert!(redirect.fragment().is_some());
    let tokens = client.parse_fragment(&redirect, &request.state).unwrap();
    assert_seeded(&env, &tokens);
    assert!(tokens.refresh_token.is_some());
    assert!(tokens.signature.is_some());
    assert_eq!(env.query_status(&tokens).await.unwrap(), 200);

    // The refresh token from the fragment is a real one.
    env.refresh_and_query(&client, &tokens).await.unwrap();
}

#[tokio::test]
async fn user_agent_flow_with_an_id_token() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let params = AuthorizeParams {
        nonce: Some("ua-nonce".into()),
        ..AuthorizeParams::scopes(["api", "openid"])
    };
    let request = client.user_agent_url(&params).unwrap();
    let response_type: Option<String> = request
        .url
        .query_pairs()
        .find(|(k, _)| k == "response_type")
        .map(|(_, v)| v.into_owned());
    assert_eq!(response_type.as_deref(), Some("token id_token"));
    let redirect = env.follow_authorize(&request.url).await.unwrap();
    let tokens = client.parse_fragment(&redirect, &request.state).unwrap();
    let check = IdTokenCheck {
        nonce: Some("ua-nonce".into()),
        ..IdTokenCheck::default()
    };
    let claims = client
        .validate_id_token(&env.transport, tokens.id_token.as_ref().unwrap(), &check)
        .await
        .unwrap();
    assert_eq!(claims.nonce.as_deref(), Some("ua-nonce"));
}

#[tokio::test]
async fn refresh_without_rotation_keeps_the_refresh_token() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let first = env.login().await.unwrap();
    let refresh_token = first.refresh_token.clone().unwrap();
    env.emulator.advance(Duration::from_secs(60));

    let second = client
        .refresh(&env.transport, &refresh_token)
        .await
        .unwrap();
    assert_seeded(&env, &second);
    assert_ne!(second.access_token, first.access_token);
    assert_eq!(second.refresh_token.as_ref(), Some(&refresh_token));
    assert!(second.issued_at > first.issued_at);
    assert!(second.signature.is_some());
    assert_eq!(env.query_status(&second).await.unwrap(), 200);

    // Without rotation the same refresh token keeps working.
    let third = client
        .refresh(&env.transport, &refresh_token)
        .await
        .unwrap();
    assert_eq!(env.query_status(&third).await.unwrap(), 200);
    let counters = env.emulator.counters();
    assert_eq!(counters.grant("refresh_token"), 2);
    assert_eq!(counters.refresh_tokens_rotated, 0);
    assert_eq!(counters.refresh_tokens_issued, 1);
}

#[tokio::test]
async fn refresh_with_rotation_returns_a_new_refresh_token() {
    let env = Env::start_with(|b| b.app_policy(|p| p.rotation = true))
        .await
        .unwrap();
    let client = env.client().unwrap();
    let first = env.login().await.unwrap();
    let old = first.refresh_token.clone().unwrap();

    let second = client.refresh(&env.transport, &old).await.unwrap();
    let new = second.refresh_token.clone().unwrap();
    assert_ne!(new, old, "rotation hands out a new refresh token");
    assert_eq!(env.query_status(&second).await.unwrap(), 200);

    let third = client.refresh(&env.transport, &new).await.unwrap();
    assert_ne!(third.refresh_token.as_ref(), Some(&new));
    let counters = env.emulator.counters();
    assert_eq!(counters.refresh_tokens_rotated, 2);
    assert_eq!(counters.refresh_tokens_issued, 3);
}

#[tokio::test]
async fn refresh_picks_up_an_org_migration() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let first = env.login().await.unwrap();
    let site = env.emulator.site_url();
    env.emulator
        .set_instance_url(&env.creds().org_id, Some(site.clone()))
        .unwrap();
    let second = client
        .refresh(&env.transport, first.refresh_token.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!(second.instance_url.as_str().trim_end_matches('/'), site);
    assert_eq!(env.query_status(&second).await.unwrap(), 200);
}

#[tokio::test]
async fn username_password_flow() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let tokens = env.password_login(&client).await.unwrap();
    assert_seeded(&env, &tokens);
    assert!(
        tokens.refresh_token.is_none(),
        "the password flow issues none"
    );
    assert!(tokens.signature.is_some());
    assert_eq!(env.query_status(&tokens).await.unwrap(), 200);
    assert_eq!(env.emulator.counters().grant("password"), 1);
}

#[tokio::test]
async fn jwt_bearer_flow_with_the_seeded_key() {
    let env = Env::start().await.unwrap();
    // The JWT bearer flow needs no secret: a certificate-only app.
    let client = env.key_only_client(env.host().unwrap());
    // Posted to the My Domain, with `aud` the production login pool (the host's default).
    assert_eq!(client.host().jwt_audience(), "https://login.salesforce.com");
    let jwt = env.seeded_jwt();
    let tokens = client.jwt_bearer(&env.transport, &jwt).await.unwrap();
    assert_seeded(&env, &tokens);
    assert!(tokens.refresh_token.is_none());
    assert!(tokens.signature.is_none(), "observed responses carry none");
    assert!(tokens.issued_at.is_none());
    assert_eq!(env.query_status(&tokens).await.unwrap(), 200);

    // The emulator's own URL is an accepted audience too.
    let jwt = jwt.audience(env.emulator.base_url());
    let tokens = client.jwt_bearer(&env.transport, &jwt).await.unwrap();
    assert_eq!(env.query_status(&tokens).await.unwrap(), 200);
    assert_eq!(env.emulator.counters().grant("jwt_bearer"), 2);
}

#[tokio::test]
async fn client_credentials_flow_on_a_my_domain() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let tokens = client.client_credentials(&env.transport).await.unwrap();
    assert_seeded(&env, &tokens);
    assert!(tokens.refresh_token.is_none());
    assert!(tokens.signature.is_some());
    assert_eq!(
        tokens
            .api_instance_url
            .as_ref()
            .map(|u| u.as_str().trim_end_matches('/')),
        Some(env.emulator.base_url())
    );
    assert_eq!(env.query_status(&tokens).await.unwrap(), 200);
}

#[tokio::test]
async fn client_credentials_refused_on_a_login_host() {
    // The emulator tells the login pool apart by the `Host` header; `localhost` plays
    // login.salesforce.com here, while 127.0.0.1 stays the My Domain.
    let env = Env::start_with(|b| b.settings(|s| s.login_hosts = vec!["localhost".into()]))
        .await
        .unwrap();
    let port = url::Url::parse(env.emulator.base_url())
        .unwrap()
        .port()
        .unwrap();
    let login_pool =
        sfauth_core::LoginHost::my_domain(&format!("http://localhost:{port}")).unwrap();
    let client = OAuthClient::new(login_pool, env.app().unwrap());
    let error = client.client_credentials(&env.transport).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config, "{error}");
    let server = error.server().unwrap();
    assert_eq!(server.error(), "invalid_grant");
    assert_eq!(
        server.description(),
        Some("request not supported on this domain")
    );
    assert_eq!(server.cause(), Cause::WrongHost);

    // Core refuses the real login pool before sending anything.
    env.emulator.reset_counters();
    let production = OAuthClient::new(sfauth_core::LoginHost::Production, env.app().unwrap());
    let error = production
        .client_credentials(&env.transport)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config);
    assert_eq!(env.token_requests(), 0);

    // And the My Domain works on the same emulator.
    let tokens = env
        .client()
        .unwrap()
        .client_credentials(&env.transport)
        .await
        .unwrap();
    assert_seeded(&env, &tokens);
}

#[tokio::test]
async fn device_flow_poll_and_approve() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let authorization = client
        .device_start(&env.transport, Some("api refresh_token"))
        .await
        .unwrap();
    assert_eq!(authorization.interval, Duration::from_secs(5));
    assert!(
        authorization
            .verification_uri
            .as_str()
            .ends_with("/setup/connect")
    );
    assert!(!authorization.user_code.is_empty());

    let poll = client
        .device_poll(&env.transport, &authorization)
        .await
        .unwrap();
    assert!(
        matches!(poll, DevicePoll::Pending { retry_after } if retry_after == Duration::from_secs(5))
    );

    env.emulator
        .approve_device(&authorization.user_code, &env.creds().username)
        .unwrap();
    env.emulator.advance(authorization.interval);
    let DevicePoll::Complete(tokens) = client
        .device_poll(&env.transport, &authorization)
        .await
        .unwrap()
    else {
        panic!("approved device code must complete");
    };
    assert_seeded(&env, &tokens);
    assert!(tokens.refresh_token.is_some());
    assert!(tokens.signature.is_some());
    assert_eq!(env.query_status(&tokens).await.unwrap(), 200);

    // The device code is spent.
    let error = client
        .device_poll(&env.transport, &authorization)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ReauthorizationRequired, "{error}");
    let counters = env.emulator.counters();
    assert_eq!(counters.grant("device_code"), 1);
    assert_eq!(counters.grant("device"), 3);
}

#[tokio::test]
async fn device_flow_wait_on_the_virtual_clock() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let authorization = client.device_start(&env.transport, None).await.unwrap();
    let sleeps = AtomicUsize::new(0);
    let username = env.creds().username.clone();
    // Each "sleep" moves the emulator's clock instead of waiting; the user approves after the
    // third one.
    let sleep = |interval: Duration| {
        env.emulator.advance(interval);
        if sleeps.fetch_add(1, Ordering::SeqCst) == 2 {
            env.emulator
                .approve_device(&authorization.user_code, &username)
                .unwrap();
        }
        std::future::ready(())
    };
    let tokens = client
        .device_wait(&env.transport, &authorization, sleep)
        .await
        .unwrap();
    assert_seeded(&env, &tokens);
    // Approved during the third sleep: three polls, the last one completes.
    assert_eq!(sleeps.load(Ordering::SeqCst), 3);
    assert_eq!(env.emulator.counters().grant("device"), 3);
}

#[tokio::test]
async fn device_flow_slow_down_denial_and_expiry() {
    let env = Env::start_with(|b| b.settings(|s| s.device_slow_down = true))
        .await
        .unwrap();
    let client = env.client().unwrap();

    // Two polls within one interval: the second is told to slow down.
    let authorization = client.device_start(&env.transport, None).await.unwrap();
    let first = client
        .device_poll(&env.transport, &authorization)
        .await
        .unwrap();
    assert!(matches!(first, DevicePoll::Pending { .. }));
    let second = client
        .device_poll(&env.transport, &authorization)
        .await
        .unwrap();
    assert!(
        matches!(second, DevicePoll::SlowDown { retry_after } if retry_after == Duration::from_secs(10)),
        "{second:?}"
    );

    // The user says no.
    env.emulator.deny_device(&authorization.user_code).unwrap();
    env.emulator.advance(Duration::from_secs(10));
    let error = client
        .device_poll(&env.transport, &authorization)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ReauthorizationRequired);
    assert_eq!(error.server().unwrap().cause(), Cause::AccessDenied);

    // Nobody approves in time.
    let authorization = client.device_start(&env.transport, None).await.unwrap();
    env.emulator.advance(Duration::from_secs(11 * 60));
    let error = client
        .device_poll(&env.transport, &authorization)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ReauthorizationRequired);
    assert_eq!(error.server().unwrap().cause(), Cause::DeviceCodeExpired);
}

#[tokio::test]
async fn token_exchange_of_an_access_token_and_an_id_token() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let original = env
        .web_server_login(&client, &["api", "openid", "refresh_token"])
        .await
        .unwrap();

    let exchange = TokenExchange::new(
        SecretValue::from(original.access_token.clone()),
        token_type::ACCESS_TOKEN,
    );
    let tokens = client
        .token_exchange(&env.transport, &exchange)
        .await
        .unwrap();
    assert_seeded(&env, &tokens);
    assert_ne!(tokens.access_token, original.access_token);
    assert_eq!(env.query_status(&tokens).await.unwrap(), 200);

    let mut exchange = TokenExchange::new(
        SecretValue::new(original.id_token.as_ref().unwrap().expose_secret()),
        token_type::ID_TOKEN,
    );
    exchange.scope = Some("api refresh_token".into());
    let tokens = client
        .token_exchange(&env.transport, &exchange)
        .await
        .unwrap();
    assert_seeded(&env, &tokens);
    assert!(tokens.refresh_token.is_some());
    assert_eq!(env.emulator.counters().grant("token_exchange"), 2);
}

#[tokio::test]
async fn saml_bearer_flow() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let creds = env.creds();
    let assertion = assertions::saml(
        &creds.client_id,
        &creds.username,
        "https://login.salesforce.com",
        now_secs() + 300,
    );
    let tokens = client
        .saml_bearer(&env.transport, &SecretValue::new(assertion))
        .await
        .unwrap();
    assert_seeded(&env, &tokens);
    assert!(tokens.refresh_token.is_none());
    assert_eq!(env.query_status(&tokens).await.unwrap(), 200);

    let stale = assertions::saml(
        &creds.client_id,
        &creds.username,
        "https://login.salesforce.com",
        now_secs() - 1,
    );
    let error = client
        .saml_bearer(&env.transport, &SecretValue::new(stale))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ReauthorizationRequired, "{error}");
}

#[tokio::test]
async fn revoke_an_access_token_by_post() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let tokens = env.login().await.unwrap();
    assert_eq!(env.query_status(&tokens).await.unwrap(), 200);
    client
        .revoke(
            &env.transport,
            &SecretValue::from(tokens.access_token.clone()),
            RevokeMethod::Post,
        )
        .await
        .unwrap();
    assert_eq!(env.query_status(&tokens).await.unwrap(), 401);
    // Only the session died: the refresh token still works.
    env.refresh_and_query(&client, &tokens).await.unwrap();

    // Revoking it again is an error the server explains.
    let error = client
        .revoke(
            &env.transport,
            &SecretValue::from(tokens.access_token.clone()),
            RevokeMethod::Post,
        )
        .await
        .unwrap_err();
    assert_eq!(error.server().unwrap().error(), "invalid_token", "{error}");
    assert_eq!(error.kind(), ErrorKind::InvalidRequest);
}

#[tokio::test]
async fn revoking_a_refresh_token_by_get_cascades() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let first = env.login().await.unwrap();
    let refresh_token = first.refresh_token.clone().unwrap();
    let second = client
        .refresh(&env.transport, &refresh_token)
        .await
        .unwrap();
    assert_eq!(env.query_status(&first).await.unwrap(), 200);
    assert_eq!(env.query_status(&second).await.unwrap(), 200);

    client
        .revoke(
            &env.transport,
            &SecretValue::from(refresh_token.clone()),
            RevokeMethod::Get,
        )
        .await
        .unwrap();
    assert_eq!(env.emulator.counters().requests("revoke"), 1);
    // Every access token issued from the refresh token died with it.
    assert_eq!(env.query_status(&first).await.unwrap(), 401);
    assert_eq!(env.query_status(&second).await.unwrap(), 401);
    let error = client
        .refresh(&env.transport, &refresh_token)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ReauthorizationRequired);
    assert_eq!(
        error.server().unwrap().cause(),
        Cause::TokenExpiredOrRevoked
    );
}

#[tokio::test]
async fn introspection_of_live_and_dead_tokens() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let mut tokens = env.login().await.unwrap();
    let access = SecretValue::from(tokens.access_token.clone());

    let live = client
        .introspect(&env.transport, &access, Some(TokenTypeHint::AccessToken))
        .await
        .unwrap();
    assert!(live.active);
    assert_eq!(live.token_type.as_deref(), Some("access_token"));
    assert_eq!(
        live.client_id.as_deref(),
        Some(env.creds().client_id.as_str())
    );
    assert_eq!(
        live.username.as_deref(),
        Some(env.creds().username.as_str())
    );
    assert_eq!(live.sub.as_deref(), Some(tokens.identity.as_str()));
    let issued = tokens.issued_at_millis().unwrap() / 1000;
    assert_eq!(live.iat, Some(issued));
    // The seeded app's session timeout is two hours.
    assert_eq!(live.exp, Some(issued + 2 * 60 * 60));
    tokens.apply_introspection(&live);
    assert_eq!(tokens.expiry_source, Some(ExpirySource::Introspection));
    assert_eq!(
        tokens.expires_at,
        Some(UNIX_EPOCH + Duration::from_secs(issued + 7200))
    );

    let refresh = SecretValue::from(tokens.refresh_token.clone().unwrap());
    let live = client
        .introspect(&env.transport, &refresh, Some(TokenTypeHint::RefreshToken))
        .await
        .unwrap();
    assert!(live.active);
    assert_eq!(live.token_type.as_deref(), Some("refresh_token"));

    env.emulator.advance(Duration::from_secs(2 * 60 * 60));
    let dead = client
        .introspect(&env.transport, &access, None)
        .await
        .unwrap();
    assert!(!dead.active);
    assert_eq!(dead.exp, None);
}

#[tokio::test]
async fn userinfo_and_identity_url() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let tokens = env.login().await.unwrap();
    let creds = env.creds();

    let user = client
        .userinfo(&env.transport, &tokens.access_token)
        .await
        .unwrap();
    assert_eq!(user.user_id.as_deref(), Some(creds.user_id.as_str()));
    assert_eq!(user.organization_id.as_deref(), Some(creds.org_id.as_str()));
    assert_eq!(
        user.preferred_username.as_deref(),
        Some(creds.username.as_str())
    );
    assert_eq!(user.sub.as_deref(), Some(tokens.identity.as_str()));
    assert_eq!(user.active, Some(true));

    let identity = client.identity(&env.transport, &tokens).await.unwrap();
    assert_eq!(identity.id.as_deref(), Some(tokens.identity.as_str()));
    assert_eq!(identity.username.as_deref(), Some(creds.username.as_str()));
    assert_eq!(identity.user_id.as_deref(), Some(creds.user_id.as_str()));
    assert!(
        identity
            .urls
            .get("rest")
            .is_some_and(|u| u.contains("{version}"))
    );
    assert_eq!(env.emulator.counters().requests("identity"), 1);
}

#[tokio::test]
async fn userinfo_and_identity_with_a_dead_token_call_for_a_refresh() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let tokens = env.login().await.unwrap();
    env.emulator.expire_access_tokens();

    let error = client
        .userinfo(&env.transport, &tokens.access_token)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::SessionExpired, "{error}");
    let error = client.identity(&env.transport, &tokens).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::SessionExpired, "{error}");

    // The refresh it calls for fixes it.
    let refreshed = client
        .refresh(&env.transport, tokens.refresh_token.as_ref().unwrap())
        .await
        .unwrap();
    client
        .userinfo(&env.transport, &refreshed.access_token)
        .await
        .unwrap();
}

#[tokio::test]
async fn id_token_validation_against_the_jwks() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let tokens = env
        .web_server_login(&client, &["api", "openid"])
        .await
        .unwrap();
    let id_token = tokens.id_token.clone().unwrap();

    let claims = client
        .validate_id_token(&env.transport, &id_token, &IdTokenCheck::default())
        .await
        .unwrap();
    assert_eq!(claims.iss, env.emulator.base_url());
    assert_eq!(claims.aud, serde_json::json!(env.creds().client_id));
    assert_eq!(env.emulator.counters().requests("keys"), 1);

    // A flipped signature byte, another app, another issuer, a nonce that was never sent.
    let raw = id_token.expose_secret();
    let mut forged = raw[..raw.len() - 2].to_owned();
    forged.push_str(if raw.ends_with("AA") { "AB" } else { "AA" });
    let forged = IdToken::new(forged);
    let other_app = OAuthClient::new(env.host().unwrap(), ConnectedApp::new("3MVG9someone.else"));
    let cases: [(&OAuthClient, &IdToken, IdTokenCheck); 4] = [
        (&client, &forged, IdTokenCheck::default()),
        (&other_app, &id_token, IdTokenCheck::default()),
        (
            &client,
            &id_token,
            IdTokenCheck {
                issuers: vec!["https://login.salesforce.com".into()],
                ..IdTokenCheck::default()
            },
        ),
        (
            &client,
            &id_token,
            IdTokenCheck {
                nonce: Some("expected".into()),
                ..IdTokenCheck::default()
            },
        ),
    ];
    for (i, (client, token, check)) in cases.iter().enumerate() {
        let error = client
            .validate_id_token(&env.transport, token, check)
            .await
            .unwrap_err();
        assert!(matches!(error, Error::IdToken(_)), "case {i}: {error}");
        assert_eq!(error.kind(), ErrorKind::Protocol);
    }
}

#[tokio::test]
async fn signatures_of_real_responses_are_verified() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let (request, redirect) = env.user_agent_redirect(&client, &["api"]).await.unwrap();
    let tokens = client.parse_fragment(&redirect, &request.state).unwrap();
    sfauth_core::signature::verify(
        env.app().unwrap().client_secret().unwrap(),
        tokens.identity.as_str(),
        &tokens.issued_at_millis().unwrap().to_string(),
        tokens.signature.as_deref().unwrap(),
    )
    .unwrap();

    // The same redirect, read by a client that holds another secret: the signature fails.
    let wrong = ConnectedApp::new(env.creds().client_id.clone())
        .with_secret("not-the-consumer-secret")
        .with_redirect_uri(&env.creds().callback_url)
        .unwrap();
    let error = OAuthClient::new(env.host().unwrap(), wrong)
        .parse_fragment(&redirect, &request.state)
        .unwrap_err();
    // Tokens were issued, so the error keeps them (a rotated refresh token is never dropped);
    // the check that failed is the signature.
    assert!(
        matches!(&error, Error::TokensRejected(rejected) if matches!(rejected.reason(), Error::SignatureMismatch)),
        "{error}"
    );

    // A tampered identity URL in the fragment fails too.
    let tampered = redirect
        .as_str()
        .replace(&env.creds().user_id, "0055e000000EMUbAAO");
    let error = client
        .parse_fragment(&url::Url::parse(&tampered).unwrap(), &request.state)
        .unwrap_err();
    // Tokens were issued, so the error keeps them (a rotated refresh token is never dropped);
    // the check that failed is the signature.
    assert!(
        matches!(&error, Error::TokensRejected(rejected) if matches!(rejected.reason(), Error::SignatureMismatch)),
        "{error}"
    );
}

/// Runs the same username-password grant against a fresh emulator on `port` with the same seed
/// and clock, answering in `format`.
async fn password_grant_in(format: ResponseFormat, port: u16, start_ms: i64) -> (TokenSet, u16) {
    let emulator = Emulator::builder()
        .clock(Clock::manual(start_ms))
        .seed(SEED)
        .port(port)
        .start()
        .await
        .unwrap();
    let base = url::Url::parse(emulator.base_url()).unwrap();
    let creds = emulator.credentials().clone();
    let app = ConnectedApp::new(creds.client_id.clone()).with_secret(creds.client_secret.clone());
    let client = OAuthClient::new(
        sfauth_core::LoginHost::my_domain(emulator.base_url()).unwrap(),
        app,
    )
    .with_format(format);
    let transport = sfauth_transport::ReqwestTransport::new().unwrap();
    let tokens = client
        .password(
            &transport,
            &creds.username,
            &Password::new(creds.password_with_token()),
        )
        .await
        .unwrap();
    emulator.shutdown().await;
    (tokens, base.port().unwrap())
}

#[tokio::test]
async fn three_response_formats_parse_to_equal_token_sets() {
    let start_ms = 1_790_000_000_123;
    let (json, port) = password_grant_in(ResponseFormat::Json, 0, start_ms).await;
    let (urlencoded, _) = password_grant_in(ResponseFormat::UrlEncoded, port, start_ms).await;
    let (xml, _) = password_grant_in(ResponseFormat::Xml, port, start_ms).await;
    assert!(json.signature.is_some());
    assert_eq!(json.issued_at_millis(), Some(1_790_000_000_123));
    assert_eq!(json, urlencoded);
    assert_eq!(json, xml);
}

#[tokio::test]
async fn every_format_works_for_every_token_grant() {
    for format in [
        ResponseFormat::Json,
        ResponseFormat::UrlEncoded,
        ResponseFormat::Xml,
    ] {
        let env = Env::start().await.unwrap();
        let client = env.client().unwrap().with_format(format);
        let tokens = env
            .web_server_login(&client, &["api", "refresh_token", "openid"])
            .await
            .unwrap();
        assert!(tokens.id_token.is_some(), "{format:?}");
        let refreshed = env
            .refresh_and_query(&client, &tokens)
            .await
            .unwrap_or_else(|error| panic!("{format:?}: {error}"));
        let cc = client.client_credentials(&env.transport).await.unwrap();
        assert!(cc.api_instance_url.is_some(), "{format:?}");
        let introspection = env.introspect_access(&client, &refreshed).await.unwrap();
        assert!(introspection.active, "{format:?}");
        let device = client.device_start(&env.transport, None).await.unwrap();
        assert!(!device.user_code.is_empty(), "{format:?}");
        // Errors come back in the format asked for, and read the same.
        let error = client
            .refresh(
                &env.transport,
                &sfauth_core::RefreshToken::new("5Aep861bogus"),
            )
            .await
            .unwrap_err();
        assert_eq!(
            error.kind(),
            ErrorKind::ReauthorizationRequired,
            "{format:?}"
        );
        assert_eq!(
            error.server().unwrap().description(),
            Some("expired access/refresh token"),
            "{format:?}"
        );
    }
}

#[tokio::test]
async fn token_exchange_of_refresh_tokens_saml_and_jwts() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let creds = env.creds().clone();
    let original = env.login().await.unwrap();

    let refresh = TokenExchange::new(
        SecretValue::from(original.refresh_token.clone().unwrap()),
        token_type::REFRESH_TOKEN,
    );
    let saml = TokenExchange::new(
        SecretValue::new(assertions::saml(
            &creds.client_id,
            &creds.username,
            "https://login.salesforce.com",
            now_secs() + 300,
        )),
        token_type::SAML2,
    );
    // A JWT signed with the app's certificate key, with RFC 8693's lower-case type name.
    let jwt = assertions::jwt(
        SEED_CLIENT_PRIVATE_KEY,
        &serde_json::json!({"iss": "https://idp.example.com", "sub": creds.username, "exp": now_secs() + 300}),
    )
    .unwrap();
    let jwt = TokenExchange::new(
        SecretValue::new(jwt),
        "urn:ietf:params:oauth:token-type:jwt",
    );
    for exchange in [refresh, saml, jwt] {
        let tokens = client
            .token_exchange(&env.transport, &exchange)
            .await
            .unwrap();
        assert_seeded(&env, &tokens);
        assert_eq!(env.query_status(&tokens).await.unwrap(), 200);
    }

    // A subject the handler does not accept.
    let bogus = TokenExchange::new(SecretValue::new("00Dnot!atoken"), token_type::ACCESS_TOKEN);
    let error = client
        .token_exchange(&env.transport, &bogus)
        .await
        .unwrap_err();
    assert_eq!(error.server().unwrap().error(), "invalid_grant", "{error}");
}

#[tokio::test]
async fn introspecting_another_apps_token_says_inactive() {
    let env = Env::start().await.unwrap();
    let creds = env.creds().clone();
    env.emulator
        .add_app(
            &creds.org_id,
            sfauth_emulator::AppConfig {
                client_id: "3MVG9other.app".into(),
                client_secret: "other-secret".into(),
                callback_urls: vec![creds.callback_url.clone()],
                ..sfauth_emulator::AppConfig::default()
            },
        )
        .unwrap();
    let tokens = env.login().await.unwrap();
    let other = OAuthClient::new(
        env.host().unwrap(),
        ConnectedApp::new("3MVG9other.app").with_secret("other-secret"),
    );
    let introspection = other
        .introspect(
            &env.transport,
            &SecretValue::from(tokens.access_token.clone()),
            Some(TokenTypeHint::AccessToken),
        )
        .await
        .unwrap();
    assert!(!introspection.active);
}

#[tokio::test]
async fn web_server_flow_through_the_login_and_consent_pages() {
    let env = Env::start_with(|b| b.auto_approve(false)).await.unwrap();
    let client = env.client().unwrap();
    let creds = env.creds().clone();
    let params = AuthorizeParams {
        login_hint: Some(creds.username.clone()),
        ..AuthorizeParams::scopes(["api", "refresh_token"])
    };

    // State and PKCE challenge travel through the pages' hidden fields.
    let request = client.authorize_url(&params).unwrap();
    let callback = env
        .sign_in_and_consent(&request.url, &creds.username, &creds.password, "allow")
        .await
        .unwrap();
    let code = client.parse_callback(&callback, &request.state).unwrap();
    let tokens = client
        .exchange_code(&env.transport, &code, request.pkce_verifier.as_ref())
        .await
        .unwrap();
    assert_seeded(&env, &tokens);

    // The person says no.
    let request = client.authorize_url(&params).unwrap();
    let callback = env
        .sign_in_and_consent(&request.url, &creds.username, &creds.password, "deny")
        .await
        .unwrap();
    let error = client
        .parse_callback(&callback, &request.state)
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ReauthorizationRequired, "{error}");
    assert_eq!(error.server().unwrap().cause(), Cause::AccessDenied);
}

#[tokio::test]
async fn device_flow_approved_on_the_verification_page() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let creds = env.creds().clone();
    let authorization = client
        .device_start(&env.transport, Some("api refresh_token"))
        .await
        .unwrap();
    let page = env
        .browser
        .post(authorization.verification_uri.as_str())
        .form(&[
            ("user_code", authorization.user_code.to_lowercase()),
            ("username", creds.username.clone()),
            ("pw", creds.password.clone()),
            ("decision", "allow".into()),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("connected"), "{page}");
    let DevicePoll::Complete(tokens) = client
        .device_poll(&env.transport, &authorization)
        .await
        .unwrap()
    else {
        panic!("approved on the page, the poll must complete");
    };
    assert_seeded(&env, &tokens);
    assert!(tokens.refresh_token.is_some());
}

#[tokio::test]
async fn real_token_sets_survive_storage_serialization() {
    let env = Env::start().await.unwrap();
    let client = env
        .client()
        .unwrap()
        .with_session_timeout(Duration::from_secs(7200));
    let tokens = env
        .web_server_login(&client, &["api", "refresh_token", "openid"])
        .await
        .unwrap();
    let stored = serde_json::to_string(&tokens).unwrap();
    let loaded: TokenSet = serde_json::from_str(&stored).unwrap();
    assert_eq!(loaded, tokens);
    // What was stored still works against the server.
    assert_eq!(env.query_status(&loaded).await.unwrap(), 200);
    client
        .refresh(&env.transport, loaded.refresh_token.as_ref().unwrap())
        .await
        .unwrap();
    let key = sfauth_core::TokenKey::new(
        client.host(),
        &loaded.identity,
        client.app().client_id(),
        "default",
    );
    assert_eq!(
        key.to_string().parse::<sfauth_core::TokenKey>().unwrap(),
        key
    );
}
