//! Salesforce as it is in 2026 (issue #15): each platform rule the emulator plays, met by the
//! client with the exact cause the user sees, and no refresh token wasted on the way.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sfauth::storage::{RecordStatus, TokenStore};
use sfauth::{ErrorKind, EventKind, Idle, MemoryStore, RefreshPolicy, TokenManager};
use sfauth_core::flows::AuthorizeParams;
use sfauth_core::{Cause, ConnectedApp, ErrorKind as CoreKind, OAuthClient, SecretSlot};
use sfauth_emulator::{AppKind, Clock, IpRange, RefreshTokenStatus};
use sfauth_tests::Env;

/// A manager for `client` on a memory store with no failure pause, so that a test can try
/// again at once. (Even a 1 ms pause holds, as it should: a retry less than a millisecond after
/// the failure, which a fast run makes about once in 300, was refused as `RecentlyFailed`.)
async fn manager(env: &Env, client: OAuthClient) -> (TokenManager, Arc<dyn TokenStore>) {
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let manager = env
        .manager_builder(client)
        .store(store.clone())
        .policy(RefreshPolicy::default().failure_backoff(Duration::ZERO, Duration::ZERO))
        .build()
        .await
        .unwrap();
    (manager, store)
}

/// The refresh token the store holds for `key`.
async fn stored_refresh_token(store: &Arc<dyn TokenStore>, key: &sfauth::TokenKey) -> String {
    let record = store.get(key).await.unwrap().unwrap();
    record
        .tokens
        .refresh_token
        .unwrap()
        .expose_secret()
        .to_owned()
}

/// The cause a failed core call names, with its kind.
fn cause_of(error: &sfauth_core::Error) -> (Cause, CoreKind) {
    let server = error.server().unwrap_or_else(|| panic!("{error:?}"));
    (server.cause(), server.kind())
}

#[tokio::test]
async fn a_refresh_from_outside_the_ip_allowlist_keeps_the_token_and_says_fix_the_egress() {
    let env = Env::start_with(|b| b.app_policy(|p| p.rotation = true))
        .await
        .unwrap();
    let (manager, store) = manager(&env, env.client().unwrap()).await;
    let key = env.store_login(&manager, "acme").await.unwrap();
    let refresh_token = stored_refresh_token(&store, &key).await;
    let mut events = manager.subscribe();

    // The allowlist names an address this test does not come from.
    let elsewhere = IpRange::single("203.0.113.7".parse().unwrap());
    env.emulator
        .set_policy(&env.creds().client_id, |p| {
            p.refresh_token_ip_allowlist = vec![elsewhere]
        })
        .unwrap();
    let error = manager.refresh(&key).await.unwrap_err();
    assert_eq!(error.cause(), Some(Cause::IpNotAllowed), "{error:?}");
    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(
        Cause::IpNotAllowed
            .fix()
            .contains("route refreshes through an allowed egress")
    );

    // Not a re-authorization: the record stays active, no write-ahead mark is left, and the
    // refresh token Salesforce holds is unspent.
    let record = store.get(&key).await.unwrap().unwrap();
    assert_eq!(record.status, RecordStatus::Active);
    assert!(record.refresh_in_flight.is_none());
    assert_eq!(
        record.tokens.refresh_token.unwrap().expose_secret(),
        refresh_token
    );
    assert_eq!(
        env.emulator.refresh_token_status(&refresh_token),
        RefreshTokenStatus::Active
    );
    assert_eq!(manager.stats().reauth_required, 0);
    // What an operator reads: Salesforce's words and the fix, never "log in again".
    let mut failed = None;
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event.kind, EventKind::ReauthRequired { .. }),
            "{event:?}"
        );
        if let EventKind::RefreshFailed { message, .. } = event.kind {
            failed = Some(message);
        }
    }
    let message = failed.expect("a RefreshFailed event");
    assert!(
        message.contains("invalid_grant: ip restricted"),
        "{message}"
    );
    assert!(message.contains(Cause::IpNotAllowed.fix()), "{message}");

    // The access token works from anywhere: callers keep being served while it lives.
    let token = manager.access_token(&key).await.unwrap();
    assert_eq!(env.query_status_with(&token).await.unwrap(), 200);
    drop(token);

    // Once the egress is allowed, the very same refresh token refreshes.
    env.emulator
        .set_policy(&env.creds().client_id, |p| {
            p.refresh_token_ip_allowlist = vec![IpRange::single("127.0.0.1".parse().unwrap())]
        })
        .unwrap();
    let token = manager.refresh(&key).await.unwrap();
    assert_eq!(env.query_status_with(&token).await.unwrap(), 200);
    assert_eq!(
        env.emulator.refresh_token_status(&refresh_token),
        RefreshTokenStatus::RotatedOut
    );
    assert_eq!(env.emulator.counters().refresh_tokens_reused, 0);
}

#[tokio::test]
async fn two_secrets_carry_a_rotation_through_and_the_switch_is_reported() {
    let env = Env::start_with(|b| b.app_policy(|p| p.rotation = true))
        .await
        .unwrap();
    let creds = env.creds().clone();
    let app = env.app().unwrap().with_next_secret("n3w-consumer-secret");
    let (manager, store) = manager(&env, OAuthClient::new(env.host().unwrap(), app)).await;
    let key = env.store_login(&manager, "acme").await.unwrap();
    let mut events = manager.subscribe();

    // Staged: both secrets work, and the current one is kept.
    env.emulator
        .stage_client_secret(&creds.client_id, "n3w-consumer-secret")
        .unwrap();
    manager.refresh(&key).await.unwrap();
    assert_eq!(
        manager.stats().client_secret_in_use,
        Some(SecretSlot::Current)
    );

    // Applied: the old secret is refused; the same refresh token goes once more with the new
    // one (Salesforce authenticates the client before it looks at the grant, so nothing was
    // spent), and from then on the new one goes first.
    env.emulator
        .apply_staged_client_secret(&creds.client_id)
        .unwrap();
    let before = env.refresh_grants();
    let refresh_token = stored_refresh_token(&store, &key).await;
    let token = manager.refresh(&key).await.unwrap();
    assert_eq!(env.query_status_with(&token).await.unwrap(), 200);
    drop(token);
    assert_eq!(env.refresh_grants(), before + 2);
    assert_eq!(
        env.emulator.refresh_token_status(&refresh_token),
        RefreshTokenStatus::RotatedOut
    );
    let stats = manager.stats();
    assert_eq!(stats.client_secret_in_use, Some(SecretSlot::Next));
    assert_eq!(stats.client_secret_switches, 1);
    let switched: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
        .filter(|e| matches!(e.kind, EventKind::ClientSecretSwitched { .. }))
        .collect();
    assert_eq!(switched.len(), 1);
    assert_eq!(
        switched[0].kind,
        EventKind::ClientSecretSwitched {
            to: SecretSlot::Next
        }
    );
    manager.refresh(&key).await.unwrap();
    assert_eq!(
        env.refresh_grants(),
        before + 3,
        "the new secret goes first"
    );
    assert_eq!(env.emulator.counters().refresh_tokens_reused, 0);

    // A process still on the old secret alone is told exactly that, and its refresh token is
    // not wasted: it is not marked for a login either.
    let old_only = OAuthClient::new(env.host().unwrap(), env.app().unwrap());
    let (stale_manager, stale_store) = manager_on(&env, old_only, &store, &key).await;
    let refresh_token = stored_refresh_token(&stale_store, &key).await;
    let error = stale_manager.refresh(&key).await.unwrap_err();
    assert_eq!(
        error.cause(),
        Some(Cause::ClientSecretRejected),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(
        Cause::ClientSecretRejected
            .fix()
            .contains("with_next_secret")
    );
    assert_eq!(
        env.emulator.refresh_token_status(&refresh_token),
        RefreshTokenStatus::Active
    );
    assert_eq!(
        stale_store.get(&key).await.unwrap().unwrap().status,
        RecordStatus::Active
    );
}

/// A second manager for `client` sharing `store` (another process of the same fleet), with
/// `key` loaded.
async fn manager_on(
    env: &Env,
    client: OAuthClient,
    store: &Arc<dyn TokenStore>,
    key: &sfauth::TokenKey,
) -> (TokenManager, Arc<dyn TokenStore>) {
    let manager = env
        .manager_builder(client)
        .store(store.clone())
        .build()
        .await
        .unwrap();
    manager.tokens(key).await.unwrap();
    (manager, store.clone())
}

#[tokio::test]
async fn the_partner_mandate_is_met_by_the_defaults_and_each_mistake_is_named() {
    let env = Env::start_with(|b| b.app_policy(|p| p.partner_mandate = true))
        .await
        .unwrap();
    let client = env.client().unwrap();

    // The default web server flow (PKCE S256 and the secret) satisfies the mandate.
    let tokens = env.login().await.unwrap();
    assert_eq!(env.query_status(&tokens).await.unwrap(), 200);

    // An authorization without a challenge, or with `plain`: PKCE required.
    let request = client
        .authorize_url(&AuthorizeParams::scopes(["api", "refresh_token"]))
        .unwrap();
    for strip in [&["code_challenge", "code_challenge_method"][..], &[][..]] {
        let mut url = request.url.clone();
        let pairs: Vec<(String, String)> = request
            .url
            .query_pairs()
            .into_owned()
            .filter(|(name, _)| !strip.contains(&name.as_str()))
            .map(|(name, value)| match name.as_str() {
                "code_challenge_method" => (name, "plain".to_owned()),
                _ => (name, value),
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        let callback = env.follow_authorize(&url).await.unwrap();
        let error = client
            .parse_callback(&callback, &request.state)
            .unwrap_err();
        assert_eq!(
            cause_of(&error),
            (Cause::PkceRequired, CoreKind::Config),
            "{url}"
        );
    }

    // The exchange without the verifier, and without the secret.
    let (_, code) = env
        .authorize_code(&client, &["api", "refresh_token"])
        .await
        .unwrap();
    let error = client
        .exchange_code(&env.transport, &code, None)
        .await
        .unwrap_err();
    assert_eq!(cause_of(&error).0, Cause::CodeVerifierInvalid);
    let public = OAuthClient::new(
        env.host().unwrap(),
        ConnectedApp::new(env.creds().client_id.clone())
            .with_redirect_uri(&env.creds().callback_url)
            .unwrap(),
    );
    let (request, code) = env
        .authorize_code(&public, &["api", "refresh_token"])
        .await
        .unwrap();
    let error = public
        .exchange_code(&env.transport, &code, request.pkce_verifier.as_ref())
        .await
        .unwrap_err();
    assert_eq!(
        cause_of(&error),
        (Cause::ClientSecretRejected, CoreKind::InvalidClient)
    );

    // Client credentials are refused under the mandate.
    let error = client.client_credentials(&env.transport).await.unwrap_err();
    assert_eq!(
        cause_of(&error),
        (Cause::NoClientCredentialsUser, CoreKind::Config)
    );

    // Rotation is forced, and a refresh token idle for 30 days is gone: a new login, with the
    // cause Salesforce's words support (they are the same for a revocation).
    let (manager, store) = manager(&env, client.clone()).await;
    let key = manager.store_tokens(tokens, "partner").await.unwrap();
    let first = stored_refresh_token(&store, &key).await;
    manager.refresh(&key).await.unwrap();
    let second = stored_refresh_token(&store, &key).await;
    assert_ne!(first, second, "rotation is forced");
    env.emulator.advance(Duration::from_secs(31 * 24 * 3600));
    assert_eq!(
        env.emulator.refresh_token_status(&second),
        RefreshTokenStatus::Expired
    );
    let error = manager.refresh(&key).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ReauthorizationRequired);
    assert_eq!(error.cause(), Some(Cause::TokenExpiredOrRevoked));
    assert_eq!(env.emulator.counters().refresh_tokens_reused, 0);
}

#[tokio::test]
async fn idle_standing_per_tenant() {
    let env = Env::start().await.unwrap();
    let (manager, store) = manager(&env, env.client().unwrap()).await;
    let key = env.store_login(&manager, "acme").await.unwrap();
    let idle = manager.idle(&key).await.unwrap().unwrap();
    assert_eq!(idle.to_string(), "idle 0 days, refresh before 30");
    assert_eq!(idle.days_left(), 29);

    // The same record seen 27 days on, as `sfauth status` will show it.
    let record = store.get(&key).await.unwrap().unwrap();
    let later = SystemTime::now() + Duration::from_secs(27 * 24 * 3600 + 60);
    let idle = Idle::of_record(&record, later, sfauth::PARTNER_IDLE_LIMIT).unwrap();
    assert_eq!(idle.to_string(), "idle 27 days, refresh before 30");
    let later = SystemTime::now() + Duration::from_secs(31 * 24 * 3600);
    let idle = Idle::of_record(&record, later, sfauth::PARTNER_IDLE_LIMIT).unwrap();
    assert_eq!(idle.to_string(), "idle 31 days, past the 30-day idle limit");

    // A refresh is a use: the clock starts again.
    manager.refresh(&key).await.unwrap();
    let idle = manager.idle(&key).await.unwrap().unwrap();
    assert!(idle.idle_for < Duration::from_secs(60), "{idle:?}");
}

#[tokio::test]
async fn no_password_flow_for_external_client_apps_or_orgs_that_block_it() {
    let env = Env::start().await.unwrap();
    let client = env.client().unwrap();
    env.password_login(&client).await.unwrap();

    env.emulator
        .update_app(&env.creds().client_id, |app| {
            app.kind = AppKind::ExternalClientApp
        })
        .unwrap();
    let error = env.password_login(&client).await.unwrap_err();
    // Salesforce's words are those of a wrong password: the cause says both, honestly.
    assert_eq!(
        cause_of(&error),
        (
            Cause::AuthenticationFailure,
            CoreKind::ReauthorizationRequired
        )
    );
    assert!(
        Cause::AuthenticationFailure
            .fix()
            .contains("use the JWT bearer")
    );

    env.emulator
        .update_app(&env.creds().client_id, |app| {
            app.kind = AppKind::ConnectedApp
        })
        .unwrap();
    env.emulator
        .update_org(&env.creds().org_id, |org| {
            org.block_username_password_flow = true
        })
        .unwrap();
    let error = env.password_login(&client).await.unwrap_err();
    assert_eq!(cause_of(&error).0, Cause::AuthenticationFailure);

    // Where the refusal names the flow, the cause does too.
    env.emulator.update_settings(|s| {
        s.password_flow_blocked_error.error_description = "username-password flow is blocked".into()
    });
    let error = env.password_login(&client).await.unwrap_err();
    assert_eq!(
        cause_of(&error),
        (Cause::PasswordFlowBlocked, CoreKind::Config)
    );
}

#[tokio::test]
async fn an_uninstalled_app_needs_an_admin_and_its_old_tokens_keep_working() {
    let env = Env::start_with(|b| b.app_policy(|p| p.rotation = true))
        .await
        .unwrap();
    let client = env.client().unwrap();
    let (manager, store) = manager(&env, client.clone()).await;
    let key = env.store_login(&manager, "acme").await.unwrap();

    env.emulator
        .update_app(&env.creds().client_id, |app| app.installed = false)
        .unwrap();
    let request = client
        .authorize_url(&AuthorizeParams::scopes(["api"]))
        .unwrap();
    let callback = env.follow_authorize(&request.url).await.unwrap();
    let error = client
        .parse_callback(&callback, &request.state)
        .unwrap_err();
    assert_eq!(cause_of(&error), (Cause::AppNotInstalled, CoreKind::Config));
    assert!(
        Cause::AppNotInstalled
            .fix()
            .contains("an admin must install")
    );
    let error = client
        .device_start(&env.transport, Some("api"))
        .await
        .unwrap_err();
    assert_eq!(cause_of(&error), (Cause::AppNotInstalled, CoreKind::Config));

    // Tokens issued before keep refreshing.
    let token = manager.refresh(&key).await.unwrap();
    assert_eq!(env.query_status_with(&token).await.unwrap(), 200);
    drop(token);
    let record = store.get(&key).await.unwrap().unwrap();
    assert_eq!(record.status, RecordStatus::Active);
}

#[tokio::test]
async fn the_login_rate_limit_is_a_back_off_not_a_new_login() {
    let env = Env::start().await.unwrap();
    env.emulator
        .update_org(&env.creds().org_id, |org| {
            org.login_rate_limit_per_hour = Some(2)
        })
        .unwrap();
    let client = env.client().unwrap();
    env.password_login(&client).await.unwrap();
    env.password_login(&client).await.unwrap();
    let error = env.password_login(&client).await.unwrap_err();
    assert_eq!(
        cause_of(&error),
        (Cause::LoginRateExceeded, CoreKind::RateLimited)
    );
    assert!(error.kind().is_retryable());
    assert!(Cause::LoginRateExceeded.fix().contains("back off"));
    // The window rolls: an hour on, logins pass again.
    env.emulator.advance(Duration::from_secs(3601));
    env.password_login(&client).await.unwrap();
}

#[tokio::test]
async fn a_sandbox_refresh_ends_every_old_token() {
    let env = Env::start().await.unwrap();
    let (manager, store) = manager(&env, env.client().unwrap()).await;
    let key = env.store_login(&manager, "sandbox").await.unwrap();
    env.emulator.refresh_sandbox(&env.creds().org_id).unwrap();
    let error = manager.refresh(&key).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ReauthorizationRequired);
    assert_eq!(error.cause(), Some(Cause::TokenExpiredOrRevoked));
    assert!(matches!(
        store.get(&key).await.unwrap().unwrap().status,
        RecordStatus::ReauthRequired { .. }
    ));
}

/// JWT access tokens that live one minute, on the emulator's real clock: eight callers, each
/// calling the REST API every 200 ms for 70 s, are never refused, and the manager refreshes
/// about once per session (at 37 to 45 s of age), not once per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_minute_session_serves_every_caller() {
    let env = Env::start_with(|b| {
        b.clock(Clock::system()).app_policy(|p| {
            p.session_timeout_secs = 60;
            p.rotation = true;
        })
    })
    .await
    .unwrap();
    env.emulator
        .update_app(&env.creds().client_id, |app| app.jwt_access_tokens = true)
        .unwrap();
    let (manager, _store) = manager(&env, env.client().unwrap()).await;
    let manager = Arc::new(manager);
    let key = env.store_login(&manager, "short").await.unwrap();
    let env = Arc::new(env);
    let until = tokio::time::Instant::now() + Duration::from_secs(70);
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (manager, env, key) = (manager.clone(), env.clone(), key.clone());
            tokio::spawn(async move {
                let mut calls = 0u32;
                while tokio::time::Instant::now() < until {
                    let token = manager.access_token(&key).await.unwrap();
                    assert_eq!(env.query_status_with(&token).await.unwrap(), 200);
                    drop(token);
                    calls += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                calls
            })
        })
        .collect();
    let mut calls = 0;
    for caller in callers {
        calls += caller.await.unwrap();
    }
    let refreshes = manager.stats().refreshes;
    assert!(calls > 1_000, "{calls} calls");
    assert!(
        (1..=3).contains(&refreshes),
        "{refreshes} refreshes in 70 s"
    );
    assert_eq!(env.emulator.counters().refresh_tokens_reused, 0);
}
