//! Every documented error of `sfauth-core` through the real wire, against the emulator.
//!
//! The emulator produces each failure the way Salesforce does (policy, admin action, injected
//! fault); the test checks that core reads it as the right `ErrorKind` and `Cause`, and, where it
//! matters, what the emulator saw (how many token requests, how many reused refresh tokens).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on an unexpected error"
)]

use std::time::Duration;

use sfauth_core::flows::AuthorizeParams;
use sfauth_core::rest::{RestAuth, classify, is_invalid_session_id};
use sfauth_core::{
    Cause, ConnectedApp, Error, ErrorKind, OAuthClient, Password, RefreshToken, TokenSet,
};
use sfauth_emulator::{Endpoint, Fault, FaultKind, RefreshTokenPolicy, UserStatus};
use sfauth_tests::Env;
use sfauth_transport::{Retry, RetryPolicy};

/// What core makes of an OAuth error from the server: its kind, the `error` code and the cause.
type Expected = (ErrorKind, &'static str, Cause);

/// An expired or revoked refresh token.
const REVOKED: Expected = (
    ErrorKind::ReauthorizationRequired,
    "invalid_grant",
    Cause::TokenExpiredOrRevoked,
);
/// A frozen or inactive user.
const INACTIVE_USER: Expected = (
    ErrorKind::ReauthorizationRequired,
    "inactive_user",
    Cause::UserInactive,
);
/// A wrong password, or a blocked username-password flow.
const AUTHENTICATION_FAILURE: Expected = (
    ErrorKind::ReauthorizationRequired,
    "invalid_grant",
    Cause::AuthenticationFailure,
);
/// A used or expired authorization code.
const CODE_EXPIRED: Expected = (
    ErrorKind::ReauthorizationRequired,
    "invalid_grant",
    Cause::AuthorizationCodeExpired,
);
/// A known client id with the wrong secret.
const INVALID_CLIENT: Expected = (
    ErrorKind::InvalidClient,
    "invalid_client",
    Cause::ClientSecretRejected,
);

/// Asserts an OAuth error from the server with the `expected` kind, `error` and cause.
#[track_caller]
fn assert_server_error(error: &Error, (kind, code, cause): Expected) {
    assert_eq!(error.kind(), kind, "{error}");
    let server = error
        .server()
        .unwrap_or_else(|| panic!("not a server error: {error}"));
    assert_eq!(server.error(), code, "{error}");
    assert_eq!(server.cause(), cause, "{error}");
}

async fn refresh(env: &Env, token: &RefreshToken) -> Result<TokenSet, Error> {
    env.client().unwrap().refresh(&env.transport, token).await
}

/// Starts a refresh of `token` in the background and waits until it holds the emulator's
/// per-token lock (the app's `refresh_latency_ms` keeps it there). Returns its handle.
async fn refresh_holding_the_lock(
    env: &Env,
    token: &RefreshToken,
) -> tokio::task::JoinHandle<Result<TokenSet, Error>> {
    let first = {
        let client = env.client().unwrap();
        let transport = env.transport.clone();
        let token = token.clone();
        tokio::spawn(async move { client.refresh(&transport, &token).await })
    };
    for _ in 0..500 {
        if env.emulator.refreshes_in_flight() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(env.emulator.refreshes_in_flight(), 1);
    first
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_family() {
    let env = Env::start_with(|b| b.app_policy(|p| p.rotation = true))
        .await
        .unwrap();
    let first = env.login().await.unwrap();
    let old = first.refresh_token.clone().unwrap();
    let second = refresh(&env, &old).await.unwrap();
    let current = second.refresh_token.clone().unwrap();
    assert_eq!(env.query_status(&second).await.unwrap(), 200);

    // The rotated-out token comes back (a client that dropped the new one).
    let error = refresh(&env, &old).await.unwrap_err();
    assert_server_error(&error, REVOKED);
    assert_eq!(
        error.server().unwrap().description(),
        Some("expired access/refresh token")
    );
    let counters = env.emulator.counters();
    assert_eq!(counters.refresh_tokens_reused, 1);
    assert_eq!(counters.refresh_tokens_rejected, 1);

    // Salesforce's answer to reuse: the current token and its sessions are dead too.
    let error = refresh(&env, &current).await.unwrap_err();
    assert_server_error(&error, REVOKED);
    assert_eq!(env.query_status(&second).await.unwrap(), 401);
    assert_eq!(env.emulator.counters().refresh_tokens_reused, 1);
}

#[tokio::test]
async fn concurrent_refresh_of_one_token_is_refresh_in_progress() {
    let env = Env::start_with(|b| b.app_policy(|p| p.refresh_latency_ms = 1_500))
        .await
        .unwrap();
    let tokens = env.login().await.unwrap();
    let token = tokens.refresh_token.clone().unwrap();

    let first = refresh_holding_the_lock(&env, &token).await;
    let error = refresh(&env, &token).await.unwrap_err();
    assert_server_error(
        &error,
        (
            ErrorKind::RefreshInProgress,
            "invalid_grant",
            Cause::RequestInProgress,
        ),
    );
    assert!(error.kind().is_retryable());

    let winner = first.await.unwrap().unwrap();
    assert_eq!(env.query_status(&winner).await.unwrap(), 200);
    let counters = env.emulator.counters();
    assert_eq!(counters.grant("refresh_token"), 2);
    assert_eq!(counters.refresh_tokens_rejected, 1);
    // Once the lock is released the same token works again (no rotation here). The latency only
    // served to hold the lock above; this refresh need not pay it.
    env.emulator
        .set_policy(&env.creds().client_id, |p| p.refresh_latency_ms = 0)
        .unwrap();
    refresh(&env, &token).await.unwrap();
}

#[tokio::test]
async fn revoked_refresh_tokens_need_reauthorization() {
    type Revoke = fn(&Env);
    let actions: [(&str, Revoke); 5] = [
        ("revoke for user", |env| {
            let c = env.creds();
            env.emulator
                .revoke_for_user(&c.client_id, &c.username)
                .unwrap();
        }),
        ("revoke all of the app", |env| {
            env.emulator.revoke_app_tokens(&env.creds().client_id);
        }),
        ("revoke all of the user", |env| {
            env.emulator
                .revoke_user_tokens(&env.creds().username)
                .unwrap();
        }),
        ("reset refresh tokens", |env| {
            env.emulator
                .reset_refresh_tokens(&env.creds().client_id)
                .unwrap();
        }),
        ("block the app", |env| {
            env.emulator.block_app(&env.creds().client_id).unwrap();
        }),
    ];
    for (name, action) in actions {
        let env = Env::start().await.unwrap();
        let tokens = env.login().await.unwrap();
        action(&env);
        let error = refresh(&env, tokens.refresh_token.as_ref().unwrap())
            .await
            .unwrap_err();
        assert_server_error(&error, REVOKED);
        assert_eq!(env.query_status(&tokens).await.unwrap(), 401, "{name}");
    }
}

#[tokio::test]
async fn a_blocked_app_gets_no_new_tokens() {
    let env = Env::start().await.unwrap();
    env.emulator.block_app(&env.creds().client_id).unwrap();
    let error = env
        .client()
        .unwrap()
        .client_credentials(&env.transport)
        .await
        .unwrap_err();
    assert_server_error(
        &error,
        (ErrorKind::Config, "invalid_grant", Cause::AppBlocked),
    );
    env.emulator.unblock_app(&env.creds().client_id).unwrap();
    env.client()
        .unwrap()
        .client_credentials(&env.transport)
        .await
        .unwrap();
}

#[tokio::test]
async fn refresh_token_policies_expire_tokens() {
    let cases = [
        (RefreshTokenPolicy::ExpireImmediately, 0),
        (RefreshTokenPolicy::ExpireAfter { secs: 3600 }, 3600),
        (RefreshTokenPolicy::ExpireIfUnused { secs: 600 }, 600),
    ];
    for (policy, age) in cases {
        let env = Env::start_with(|b| b.app_policy(|p| p.refresh_token_policy = policy))
            .await
            .unwrap();
        let tokens = env.login().await.unwrap();
        let token = tokens.refresh_token.clone().unwrap();
        if age > 0 {
            // Just inside the policy, the token works.
            env.emulator.advance(Duration::from_secs(age - 1));
            refresh(&env, &token).await.unwrap();
            env.emulator.advance(Duration::from_secs(age));
        }
        let error = refresh(&env, &token).await.unwrap_err();
        assert_server_error(&error, REVOKED);
        assert_eq!(
            env.emulator.counters().refresh_tokens_rejected,
            1,
            "{policy:?}"
        );
    }
}

#[tokio::test]
async fn the_thirty_day_idle_cap() {
    let env = Env::start_with(|b| b.app_policy(|p| p.idle_ttl_cap_30_days = true))
        .await
        .unwrap();
    let tokens = env.login().await.unwrap();
    let token = tokens.refresh_token.clone().unwrap();
    env.emulator.advance(Duration::from_secs(29 * 24 * 3600));
    refresh(&env, &token).await.unwrap();
    env.emulator.advance(Duration::from_secs(29 * 24 * 3600));
    refresh(&env, &token).await.unwrap();
    env.emulator.advance(Duration::from_secs(30 * 24 * 3600));
    let error = refresh(&env, &token).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ReauthorizationRequired, "{error}");
}

#[tokio::test]
async fn a_sixth_approval_evicts_the_oldest_refresh_token() {
    let env = Env::start().await.unwrap();
    let oldest = env.login().await.unwrap();
    for _ in 0..5 {
        env.login().await.unwrap();
    }
    let error = refresh(&env, oldest.refresh_token.as_ref().unwrap())
        .await
        .unwrap_err();
    assert_server_error(&error, REVOKED);
}

#[tokio::test]
async fn frozen_and_inactive_users_need_reauthorization() {
    for status in [UserStatus::Frozen, UserStatus::Inactive] {
        let env = Env::start().await.unwrap();
        let tokens = env.login().await.unwrap();
        env.emulator
            .set_user_status(&env.creds().username, status)
            .unwrap();
        let error = refresh(&env, tokens.refresh_token.as_ref().unwrap())
            .await
            .unwrap_err();
        assert_server_error(&error, INACTIVE_USER);
        assert_eq!(env.query_status(&tokens).await.unwrap(), 401, "{status:?}");

        // New grants are refused the same way.
        let error = env
            .password_login(&env.client().unwrap())
            .await
            .unwrap_err();
        assert_server_error(&error, INACTIVE_USER);
    }
}

#[tokio::test]
async fn bad_client_credentials_are_invalid_client() {
    let env = Env::start().await.unwrap();
    let tokens = env.login().await.unwrap();
    let creds = env.creds();
    let wrong_secret = OAuthClient::new(
        env.host().unwrap(),
        ConnectedApp::new(creds.client_id.clone()).with_secret("not-the-secret"),
    );
    let error = wrong_secret
        .refresh(&env.transport, tokens.refresh_token.as_ref().unwrap())
        .await
        .unwrap_err();
    assert_server_error(&error, INVALID_CLIENT);
    assert_eq!(error.server().unwrap().status(), 400);
    let error = wrong_secret
        .client_credentials(&env.transport)
        .await
        .unwrap_err();
    assert_server_error(&error, INVALID_CLIENT);

    let unknown = OAuthClient::new(
        env.host().unwrap(),
        ConnectedApp::new("3MVG9unknown").with_secret("whatever"),
    );
    let error = env.password_login(&unknown).await.unwrap_err();
    assert_server_error(
        &error,
        (ErrorKind::InvalidClient, "invalid_client_id", Cause::Other),
    );
    // A failed client authentication spends nothing: the refresh token still works.
    refresh(&env, tokens.refresh_token.as_ref().unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn username_password_failures_are_authentication_failures() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let creds = env.creds();
    // The security token not appended, then the flow blocked for the app.
    let error = client
        .password(
            &env.transport,
            &creds.username,
            &Password::new(creds.password.clone()),
        )
        .await
        .unwrap_err();
    assert_server_error(&error, AUTHENTICATION_FAILURE);
    env.emulator
        .update_app(&creds.client_id, |app| {
            app.flows.retain(|f| *f != sfauth_emulator::Flow::Password);
        })
        .unwrap();
    let error = env.password_login(&client).await.unwrap_err();
    assert_server_error(&error, AUTHENTICATION_FAILURE);
}

#[tokio::test]
async fn authorization_code_failures() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    const SCOPES: &[&str] = &["api", "refresh_token"];
    let authorize = |client: &OAuthClient| {
        client
            .authorize_url(&AuthorizeParams::scopes(SCOPES.iter().copied()))
            .unwrap()
    };

    // A code is single use.
    let (request, code) = env.authorize_code(&client, SCOPES).await.unwrap();
    client
        .exchange_code(&env.transport, &code, request.pkce_verifier.as_ref())
        .await
        .unwrap();
    let error = client
        .exchange_code(&env.transport, &code, request.pkce_verifier.as_ref())
        .await
        .unwrap_err();
    assert_server_error(&error, CODE_EXPIRED);

    // A code lives 15 minutes.
    let (request, code) = env.authorize_code(&client, SCOPES).await.unwrap();
    env.emulator.advance(Duration::from_secs(16 * 60));
    let error = client
        .exchange_code(&env.transport, &code, request.pkce_verifier.as_ref())
        .await
        .unwrap_err();
    assert_server_error(&error, CODE_EXPIRED);

    // The PKCE verifier of another request, then none at all.
    let request = authorize(&client);
    let other = authorize(&client);
    let callback = env.follow_authorize(&request.url).await.unwrap();
    let code = client.parse_callback(&callback, &request.state).unwrap();
    let error = client
        .exchange_code(&env.transport, &code, other.pkce_verifier.as_ref())
        .await
        .unwrap_err();
    assert_server_error(
        &error,
        (
            ErrorKind::InvalidRequest,
            "invalid_request",
            Cause::CodeVerifierInvalid,
        ),
    );
    let error = client
        .exchange_code(&env.transport, &code, None)
        .await
        .unwrap_err();
    assert_eq!(error.server().unwrap().error(), "invalid_grant", "{error}");
    assert_eq!(error.kind(), ErrorKind::ReauthorizationRequired);
    assert_eq!(error.server().unwrap().cause(), Cause::CodeVerifierInvalid);

    // A callback from another authorization request is refused before any exchange.
    let error = client.parse_callback(&callback, &other.state).unwrap_err();
    assert!(matches!(error, Error::StateMismatch));
    assert_eq!(error.kind(), ErrorKind::InvalidRequest);
}

#[tokio::test]
async fn authorize_errors_come_back_in_the_redirect() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let params = AuthorizeParams::scopes(["api", "not_a_scope"]);
    let request = client.authorize_url(&params).unwrap();
    let callback = env.follow_authorize(&request.url).await.unwrap();
    let error = client
        .parse_callback(&callback, &request.state)
        .unwrap_err();
    assert_server_error(
        &error,
        (ErrorKind::InvalidRequest, "invalid_scope", Cause::Other),
    );
    assert_eq!(error.server().unwrap().status(), 0);

    // A frozen user cannot approve; the user-agent flow reports it in the fragment.
    env.emulator.freeze_user(&env.creds().username).unwrap();
    let (request, redirect) = env.user_agent_redirect(&client, &["api"]).await.unwrap();
    let error = client
        .parse_fragment(&redirect, &request.state)
        .unwrap_err();
    assert_server_error(&error, INACTIVE_USER);
}

#[tokio::test]
async fn jwt_bearer_configuration_errors() {
    let env = Env::start().await.unwrap();
    let client = env.key_only_client(env.host().unwrap());

    let wrong_audience = env.seeded_jwt().audience("https://example.com");
    let error = client
        .jwt_bearer(&env.transport, &wrong_audience)
        .await
        .unwrap_err();
    assert_server_error(
        &error,
        (ErrorKind::Config, "invalid_grant", Cause::AudienceInvalid),
    );

    env.emulator
        .update_app(&env.creds().client_id, |app| {
            app.preauthorized_users = Some(Vec::new());
        })
        .unwrap();
    let error = client
        .jwt_bearer(&env.transport, &env.seeded_jwt())
        .await
        .unwrap_err();
    assert_server_error(
        &error,
        (
            ErrorKind::ReauthorizationRequired,
            "invalid_grant",
            Cause::NotApproved,
        ),
    );
}

#[tokio::test]
async fn client_credentials_without_a_run_as_user() {
    let env = Env::start().await.unwrap();
    env.emulator
        .update_app(&env.creds().client_id, |app| app.run_as = None)
        .unwrap();
    let error = env
        .client()
        .unwrap()
        .client_credentials(&env.transport)
        .await
        .unwrap_err();
    assert_server_error(
        &error,
        (
            ErrorKind::Config,
            "invalid_grant",
            Cause::NoClientCredentialsUser,
        ),
    );
}

/// Injects `kind` once on the token endpoint and returns the error of the refresh that meets it.
async fn refresh_through_fault(env: &Env, token: &RefreshToken, kind: FaultKind) -> Error {
    env.emulator
        .inject_fault(Fault::new(Endpoint::Token, kind).times(1));
    refresh(env, token).await.unwrap_err()
}

#[tokio::test]
async fn injected_server_faults_map_to_kinds() {
    let env = Env::start().await.unwrap();
    let tokens = env.login().await.unwrap();
    let token = tokens.refresh_token.clone().unwrap();

    let error = refresh_through_fault(&env, &token, FaultKind::Status(503)).await;
    assert!(
        matches!(error, Error::Status { status: 503, .. }),
        "{error}"
    );
    assert_eq!(error.kind(), ErrorKind::Transient);

    let error = refresh_through_fault(
        &env,
        &token,
        FaultKind::RateLimited {
            retry_after_secs: 7,
        },
    )
    .await;
    assert_eq!(error.kind(), ErrorKind::RateLimited, "{error}");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));

    let error = refresh_through_fault(&env, &token, FaultKind::HtmlErrorPage).await;
    assert_eq!(error.kind(), ErrorKind::Transient, "{error}");
    assert!(!error.to_string().contains("5Aep"), "{error}");

    let error = refresh_through_fault(&env, &token, FaultKind::MalformedBody).await;
    assert!(matches!(error, Error::Parse { status: 200, .. }), "{error}");
    assert_eq!(error.kind(), ErrorKind::Protocol);

    let error = refresh_through_fault(&env, &token, FaultKind::ConnectionReset).await;
    assert!(matches!(error, Error::Transport(_)), "{error}");
    assert_eq!(error.kind(), ErrorKind::Transient);

    let oauth_errors = [
        (
            "rate_limit_exceeded",
            "Number of logins exceeded",
            ErrorKind::RateLimited,
            Cause::LoginRateExceeded,
        ),
        (
            "invalid_grant",
            "IP restricted or invalid login hours",
            ErrorKind::ReauthorizationRequired,
            Cause::IpOrLoginHoursRestricted,
        ),
        // Before Winter '25 Salesforce described a concurrent refresh as an expired code.
        (
            "invalid_grant",
            "expired authorization code",
            ErrorKind::RefreshInProgress,
            Cause::RequestInProgress,
        ),
    ];
    for (code, description, kind, cause) in oauth_errors {
        let fault = FaultKind::OAuthError {
            status: 400,
            error: code.into(),
            description: description.into(),
        };
        let error = refresh_through_fault(&env, &token, fault).await;
        assert_server_error(&error, (kind, code, cause));
    }

    // None of the faults reached the token logic: the refresh token is intact.
    let refreshed = refresh(&env, &token).await.unwrap();
    assert_eq!(env.query_status(&refreshed).await.unwrap(), 200);
    let counters = env.emulator.counters();
    assert_eq!(counters.requests("token"), 10);
    assert_eq!(counters.grant("refresh_token"), 1);
}

#[tokio::test]
async fn rest_401_invalid_session_id_is_classified() {
    let env = Env::start().await.unwrap();
    let tokens = env.login().await.unwrap();
    let (status, body) = env
        .rest_get(
            &tokens.instance_url,
            &tokens.access_token,
            "sobjects/Account/001000000000001AAA",
        )
        .await
        .unwrap();
    assert_eq!(classify(status, &body), RestAuth::Ok, "{status}");

    env.emulator.advance(Duration::from_secs(2 * 60 * 60));
    let (status, body) = env.query(&tokens).await.unwrap();
    assert_eq!(status, 401);
    assert_eq!(classify(status, &body), RestAuth::SessionExpired);
    assert!(is_invalid_session_id(&body));

    // A refresh fixes it.
    env.refresh_and_query(&env.client().unwrap(), &tokens)
        .await
        .unwrap();

    // A live session without the `api` scope: same errorCode, but a refresh cannot fix it.
    let client = env.client().unwrap();
    let no_api = env
        .web_server_login(&client, &["id", "refresh_token"])
        .await
        .unwrap();
    let (status, body) = env.query(&no_api).await.unwrap();
    assert_eq!(status, 401);
    assert!(is_invalid_session_id(&body));
    assert!(
        matches!(classify(status, &body), RestAuth::NotRefreshable { .. }),
        "{:?}",
        classify(status, &body)
    );
}

fn retrying(env: &Env) -> Retry<sfauth_transport::ReqwestTransport> {
    Retry::new(
        env.transport.clone(),
        RetryPolicy::default()
            .max_attempts(4)
            .base_delay(Duration::from_millis(5))
            .max_delay(Duration::from_millis(20))
            .max_retry_after(Duration::from_secs(1)),
    )
}

#[tokio::test]
async fn retry_never_resends_a_refresh() {
    let env = Env::start_with(|b| b.app_policy(|p| p.rotation = true))
        .await
        .unwrap();
    let client = env.client().unwrap();
    let transport = retrying(&env);
    let tokens = env.login().await.unwrap();
    let token = tokens.refresh_token.clone().unwrap();
    env.emulator.reset_counters();

    for kind in [
        FaultKind::Status(503),
        FaultKind::RateLimited {
            retry_after_secs: 0,
        },
        FaultKind::Status(502),
        FaultKind::ConnectionReset,
    ] {
        env.emulator
            .inject_fault(Fault::new(Endpoint::Token, kind.clone()).times(1));
        let before = env.token_requests();
        let error = client.refresh(&transport, &token).await.unwrap_err();
        assert!(error.kind().is_retryable(), "{kind:?}: {error}");
        assert_eq!(env.token_requests(), before + 1, "{kind:?} was re-sent");
    }
    // The refresh token was never spent, so it is still the current one.
    let refreshed = client.refresh(&transport, &token).await.unwrap();
    let counters = env.emulator.counters();
    assert_eq!(counters.requests("token"), 5);
    assert_eq!(counters.grant("refresh_token"), 1);
    assert_eq!(counters.refresh_tokens_reused, 0);
    assert_eq!(env.query_status(&refreshed).await.unwrap(), 200);

    // A login is not retried by the transport either: its retries belong to whoever sent it
    // (the token manager), so that they never multiply into the org's login rate limit.
    env.emulator.reset_counters();
    env.emulator
        .inject_fault(Fault::new(Endpoint::Token, FaultKind::Status(503)).times(2));
    let error = client.client_credentials(&transport).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient);
    assert_eq!(env.token_requests(), 1);
}

#[tokio::test]
async fn retry_does_not_resend_a_code_exchange_either() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let transport = retrying(&env);
    let (request, code) = env
        .authorize_code(&client, &["api", "refresh_token"])
        .await
        .unwrap();
    env.emulator
        .inject_fault(Fault::new(Endpoint::Token, FaultKind::Status(503)).times(1));
    let error = client
        .exchange_code(&transport, &code, request.pkce_verifier.as_ref())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient);
    assert_eq!(env.token_requests(), 1);
    // The code was never redeemed, so it still works once.
    client
        .exchange_code(&transport, &code, request.pkce_verifier.as_ref())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_timed_out_refresh_is_not_resent() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let tokens = env.login().await.unwrap();
    let token = tokens.refresh_token.clone().unwrap();
    let impatient = sfauth_transport::ReqwestTransport::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let transport = Retry::new(
        impatient,
        RetryPolicy::default()
            .max_attempts(3)
            .base_delay(Duration::from_millis(5)),
    );
    env.emulator.reset_counters();

    // The server never answers: the refresh may or may not have happened there, so it is not
    // sent again.
    env.emulator
        .inject_fault(Fault::new(Endpoint::Token, FaultKind::Hang).times(1));
    let error = client.refresh(&transport, &token).await.unwrap_err();
    assert!(matches!(error, Error::Transport(_)), "{error}");
    assert_eq!(error.kind(), ErrorKind::Transient);
    assert_eq!(env.token_requests(), 1);

    // Nor is a login after a timeout: the transport leaves its retries to its sender.
    env.emulator
        .inject_fault(Fault::new(Endpoint::Token, FaultKind::Hang).times(1));
    let error = client.client_credentials(&transport).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient);
    assert_eq!(env.token_requests(), 2);
}

#[tokio::test]
async fn a_redirect_from_the_token_endpoint_is_not_followed() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    let tokens = env.login().await.unwrap();
    env.emulator.inject_fault(
        Fault::new(
            Endpoint::Token,
            FaultKind::Response {
                status: 302,
                content_type: "text/html".into(),
                body: "<html><body>moved to your My Domain</body></html>".into(),
            },
        )
        .times(1),
    );
    let error = client
        .refresh(&env.transport, tokens.refresh_token.as_ref().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Status { status: 302, .. }),
        "{error}"
    );
    assert_eq!(error.kind(), ErrorKind::Protocol);
}

#[tokio::test]
async fn resending_after_refresh_in_progress_kills_a_rotating_family() {
    // Why core says "wait and re-read, never re-send" for RefreshInProgress: with rotation, the
    // winner's refresh retires the token the loser still holds.
    let env = Env::start_with(|b| {
        b.app_policy(|p| {
            p.rotation = true;
            p.refresh_latency_ms = 1_500;
        })
    })
    .await
    .unwrap();
    let tokens = env.login().await.unwrap();
    let token = tokens.refresh_token.clone().unwrap();
    let first = refresh_holding_the_lock(&env, &token).await;
    let error = refresh(&env, &token).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::RefreshInProgress, "{error}");
    let winner = first.await.unwrap().unwrap();
    assert_ne!(winner.refresh_token.as_ref(), Some(&token));

    // The right move: re-read the winner's tokens (here: use them).
    assert_eq!(env.query_status(&winner).await.unwrap(), 200);
    // The wrong move: send the old token again. The latency only served to hold the lock above;
    // this refresh need not pay it.
    env.emulator
        .set_policy(&env.creds().client_id, |p| p.refresh_latency_ms = 0)
        .unwrap();
    let error = refresh(&env, &token).await.unwrap_err();
    assert_server_error(&error, REVOKED);
    assert_eq!(env.emulator.counters().refresh_tokens_reused, 1);
    assert_eq!(env.query_status(&winner).await.unwrap(), 401);
}

#[tokio::test]
async fn an_immediate_authorization_without_a_session_is_refused() {
    let env = Env::start_with(|b| b.auto_approve(false)).await.unwrap();
    let client = env.client().unwrap();
    let params = AuthorizeParams {
        extra: vec![("immediate".into(), "true".into())],
        ..AuthorizeParams::scopes(["api"])
    };
    let request = client.authorize_url(&params).unwrap();
    let callback = env.follow_authorize(&request.url).await.unwrap();
    let error = client
        .parse_callback(&callback, &request.state)
        .unwrap_err();
    assert_server_error(
        &error,
        (
            ErrorKind::ReauthorizationRequired,
            "immediate_unsuccessful",
            Cause::AccessDenied,
        ),
    );
}
