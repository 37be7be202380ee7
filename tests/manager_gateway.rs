//! A gateway in front of Salesforce (load balancer, corporate proxy, API gateway) answering
//! 502/503/504: such an answer is no proof that the refresh token is unspent. The manager never
//! re-sends a possibly rotated refresh token while the access token still works; once that
//! token dies it makes one careful attempt. An answer in Salesforce's own words still proves the
//! token unspent and is retried at once.
//!
//! The gateway is `sfauth_emulator::Gateway`, on its own loopback port in front of the emulator:
//! it forwards, lets the emulator rotate, then throws the answer away.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use std::sync::Arc;

use sfauth::{ErrorKind, MemoryStore, RefreshPolicy, TokenManager};
use sfauth_core::{LoginHost, OAuthClient, TokenKey};
use sfauth_emulator::{Endpoint, Fault, FaultKind, Gateway, GatewayAction, GatewayRule};
use sfauth_tests::Env;

struct Setup {
    env: Env,
    gateway: Gateway,
    manager: TokenManager,
    key: TokenKey,
}

/// A tenant with a rotating refresh token whose manager reaches the token endpoint through a
/// gateway (the REST API and `userinfo` go straight to the emulator's instance, as with an
/// egress proxy that guards only the login host... and `userinfo` through it, untouched).
async fn setup() -> Setup {
    let env = Env::start().await.unwrap();
    let client_id = env.creds().client_id.clone();
    env.emulator
        .set_policy(&client_id, |p| p.rotation = true)
        .unwrap();
    let gateway = Gateway::builder(env.emulator.base_url())
        .start()
        .await
        .unwrap();
    let client = OAuthClient::new(
        LoginHost::my_domain(gateway.url()).unwrap(),
        env.app().unwrap(),
    );
    let manager = env
        .manager_builder(client)
        .store(Arc::new(MemoryStore::new()))
        // No pause between failures: the test drives every attempt itself.
        .policy(
            RefreshPolicy::default()
                .failure_backoff(std::time::Duration::ZERO, std::time::Duration::ZERO),
        )
        .build()
        .await
        .unwrap();
    let key = manager
        .store_tokens(env.login().await.unwrap(), "default")
        .await
        .unwrap();
    Setup {
        env,
        gateway,
        manager,
        key,
    }
}

fn counters(env: &Env) -> sfauth_emulator::Counters {
    env.emulator.counters()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_5xx_after_rotation_never_kills_a_working_session() {
    for status in [502, 503, 504] {
        let Setup {
            env,
            gateway,
            manager,
            key,
        } = setup().await;
        let working = manager
            .access_token(&key)
            .await
            .unwrap()
            .access_token()
            .clone();
        gateway.inject(
            GatewayRule::new(Endpoint::Token, GatewayAction::ForwardThenFail(status)).times(1),
        );

        // Salesforce rotates; the gateway answers `status`. Nothing is re-sent.
        let error = manager.refresh(&key).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Transient, "{status}: {error}");
        let seen = counters(&env);
        assert_eq!(seen.refresh_tokens_rotated, 1, "{status}");
        assert_eq!(
            seen.refresh_tokens_reused, 0,
            "{status}: a rotated-out token was re-sent"
        );

        // The session keeps working, and later refreshes are on hold while it does.
        let served = manager.access_token(&key).await.unwrap();
        assert_eq!(served.access_token(), &working);
        assert_eq!(
            env.query_status_with(&served).await.unwrap(),
            200,
            "{status}"
        );
        drop(served);
        let held = manager.refresh(&key).await.unwrap_err();
        assert!(
            matches!(held, sfauth::Error::RefreshOnHold { .. }),
            "{status}: {held:?}"
        );
        assert_eq!(
            counters(&env).grant("refresh_token"),
            1,
            "{status}: nothing re-sent"
        );
        assert_eq!(counters(&env).refresh_tokens_reused, 0);

        // The access token dies: now there is nothing left to lose, so one careful attempt is
        // made. The rotation really happened behind the 502, so Salesforce refuses, and the
        // tenant needs a new login with that cause, never a hang or a loop.
        env.emulator.expire_access_tokens();
        let error = manager.session_expired(&key, &working).await.unwrap_err();
        assert_eq!(
            error.kind(),
            ErrorKind::ReauthorizationRequired,
            "{status}: {error}"
        );
        assert!(error.to_string().contains("may have rotated"), "{error}");
        assert_eq!(counters(&env).refresh_tokens_reused, 1, "{status}");
        gateway.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_that_never_reached_salesforce_is_recovered_once_the_token_dies() {
    let Setup {
        env,
        gateway,
        manager,
        key,
    } = setup().await;
    let working = manager
        .access_token(&key)
        .await
        .unwrap()
        .access_token()
        .clone();
    gateway.inject(
        GatewayRule::new(Endpoint::Token, GatewayAction::FailWithoutForwarding(503)).times(1),
    );
    // From the client's side this 503 looks like the last test's: it may have been spent.
    manager.refresh(&key).await.unwrap_err();
    assert_eq!(counters(&env).grant("refresh_token"), 0);

    // When the session ends, the careful attempt finds the token unspent: the tenant lives on.
    env.emulator.expire_access_tokens();
    let fresh = manager.session_expired(&key, &working).await.unwrap();
    assert_ne!(fresh.access_token(), &working);
    assert_eq!(env.query_status_with(&fresh).await.unwrap(), 200);
    let seen = counters(&env);
    assert_eq!(seen.grant("refresh_token"), 1);
    assert_eq!(seen.refresh_tokens_reused, 0);
    assert_eq!(seen.refresh_tokens_rejected, 0);

    // And the refresh protocol is back to normal: the mark is gone.
    let stored = manager.store().get(&key).await.unwrap().unwrap();
    assert!(stored.refresh_in_flight.is_none());
    manager.refresh(&key).await.unwrap();
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_session_re_sends_at_once_after_a_gateway_5xx() {
    let Setup {
        env,
        gateway,
        manager,
        key,
    } = setup().await;
    let working = manager
        .access_token(&key)
        .await
        .unwrap()
        .access_token()
        .clone();
    env.emulator.expire_access_tokens();
    gateway.inject(
        GatewayRule::new(Endpoint::Token, GatewayAction::FailWithoutForwarding(504)).times(1),
    );
    // The access token is already dead: a re-send risks nothing, so it is made at once.
    let fresh = manager.session_expired(&key, &working).await.unwrap();
    assert_eq!(env.query_status_with(&fresh).await.unwrap(), 200);
    assert_eq!(gateway.counters().not_forwarded, 1);
    assert_eq!(counters(&env).grant("refresh_token"), 1);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_s_own_5xx_proves_the_token_unspent_and_is_retried() {
    let Setup {
        env,
        gateway,
        manager,
        key,
    } = setup().await;
    env.emulator.inject_fault(
        Fault::new(
            Endpoint::Token,
            FaultKind::OAuthError {
                status: 503,
                error: "server_error".into(),
                description: "temporarily unavailable".into(),
            },
        )
        .times(1),
    );
    let working = manager
        .access_token(&key)
        .await
        .unwrap()
        .access_token()
        .clone();
    let fresh = manager.refresh(&key).await.unwrap();
    assert_ne!(fresh.access_token(), &working);
    let seen = counters(&env);
    assert_eq!(seen.requests("token"), 3, "login, the 503, the retry");
    assert_eq!(seen.refresh_tokens_reused, 0);
    gateway.shutdown().await;
}
