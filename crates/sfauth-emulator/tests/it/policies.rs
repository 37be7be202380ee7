//! Per-app policies, admin actions and counters, observed over HTTP.

use std::time::Duration;

use sfauth_emulator::{Emulator, RefreshTokenPolicy, UserStatus};

use crate::common::*;

#[tokio::test]
async fn session_timeout_and_expire_now() {
    let env = env().await;
    env.emu
        .set_policy(&env.c.client_id, |p| p.session_timeout_secs = 15 * 60)
        .unwrap();
    let token = env.password_login().await.field("access_token");
    env.emu.advance(Duration::from_secs(15 * 60 - 1));
    assert_eq!(env.rest_status(&token).await, 200);
    env.emu.advance(Duration::from_secs(1));
    assert_eq!(env.rest_status(&token).await, 401);

    let token = env.password_login().await.field("access_token");
    assert_eq!(env.rest_status(&token).await, 200);
    env.emu.expire_access_tokens();
    assert_eq!(env.rest_status(&token).await, 401);
}

#[tokio::test]
async fn refresh_token_policies_over_http() {
    let hour = Duration::from_secs(3600);
    // (policy, wait before refreshing, accepted?)
    let cases = [
        (RefreshTokenPolicy::ValidUntilRevoked, hour * 24 * 365, true),
        (RefreshTokenPolicy::ExpireImmediately, Duration::ZERO, false),
        (RefreshTokenPolicy::ExpireAfter { secs: 3600 }, hour, false),
        (RefreshTokenPolicy::ExpireAfter { secs: 7200 }, hour, true),
        (
            RefreshTokenPolicy::ExpireIfUnused { secs: 3600 },
            hour,
            false,
        ),
        (
            RefreshTokenPolicy::ExpireIfUnused { secs: 3601 },
            hour,
            true,
        ),
    ];
    for (policy, wait, ok) in cases {
        let env = env_with(|b| b.app_policy(|p| p.refresh_token_policy = policy)).await;
        let rt = env
            .code_login("api refresh_token")
            .await
            .field("refresh_token");
        env.emu.advance(wait);
        let r = env.refresh(&rt).await;
        if ok {
            r.expect_ok();
        } else {
            r.expect_error(400, "invalid_grant", "expired access/refresh token");
        }
    }
}

#[tokio::test]
async fn rotation_with_reuse_detection() {
    let env = env_with(|b| b.app_policy(|p| p.rotation = true)).await;
    let login = env.code_login("api refresh_token").await;
    let rt1 = login.field("refresh_token");
    let r2 = env.refresh(&rt1).await;
    r2.expect_ok();
    let rt2 = r2.field("refresh_token");
    assert_ne!(rt1, rt2);
    let r3 = env.refresh(&rt2).await;
    r3.expect_ok();
    let rt3 = r3.field("refresh_token");
    let access3 = r3.field("access_token");
    assert_eq!(env.rest_status(&access3).await, 200);
    // The rotated-out token comes back: the whole family dies.
    env.refresh(&rt1)
        .await
        .expect_error(400, "invalid_grant", "expired access/refresh token");
    env.refresh(&rt3)
        .await
        .expect_error(400, "invalid_grant", "expired access/refresh token");
    assert_eq!(env.rest_status(&access3).await, 401);
    assert_eq!(env.rest_status(&login.field("access_token")).await, 401);
    let counters = env.emu.counters();
    assert_eq!(counters.refresh_tokens_rotated, 2);
    assert_eq!(counters.refresh_tokens_rejected, 2);
    assert_eq!(counters.grant("refresh_token"), 4);
}

#[tokio::test]
async fn concurrent_refresh_with_the_same_token_is_rejected() {
    // The latency only keeps the first request in flight; the test waits for it explicitly.
    let env = env_with(|b| b.app_policy(|p| p.refresh_latency_ms = 1_000)).await;
    let rt = env
        .code_login("api refresh_token")
        .await
        .field("refresh_token");
    let (a, b) = tokio::join!(env.refresh(&rt), async {
        while env.emu.refreshes_in_flight() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        env.refresh(&rt).await
    });
    a.expect_ok();
    b.expect_error(
        400,
        "invalid_grant",
        "token request is already being processed",
    );
    assert_eq!(env.emu.refreshes_in_flight(), 0, "the lock is released");
    env.emu
        .set_policy(&env.c.client_id, |p| p.refresh_latency_ms = 0)
        .unwrap();
    env.refresh(&rt).await.expect_ok();
    assert_eq!(env.emu.counters().refresh_tokens_rejected, 1);
}

#[tokio::test]
async fn sixth_approval_revokes_the_oldest() {
    let env = env().await;
    let mut tokens = Vec::new();
    for _ in 0..6 {
        tokens.push(
            env.code_login("api refresh_token")
                .await
                .field("refresh_token"),
        );
    }
    env.refresh(&tokens[0]).await.expect_error(
        400,
        "invalid_grant",
        "expired access/refresh token",
    );
    for t in &tokens[1..] {
        env.refresh(t).await.expect_ok();
    }
}

#[tokio::test]
async fn frozen_user_block_and_reset() {
    let env = env().await;
    let c = env.c.clone();
    let login = env.code_login("api refresh_token").await;
    let (access, rt) = (login.field("access_token"), login.field("refresh_token"));

    env.emu.freeze_user(&c.username).unwrap();
    assert_eq!(env.rest_status(&access).await, 401);
    env.refresh(&rt)
        .await
        .expect_error(400, "inactive_user", "User is inactive");
    env.emu
        .set_user_status(&c.username, UserStatus::Active)
        .unwrap();
    assert_eq!(env.rest_status(&access).await, 200);

    env.emu.block_app(&c.client_id).unwrap();
    env.refresh(&rt)
        .await
        .expect_error(400, "invalid_grant", "expired access/refresh token");
    assert_eq!(env.rest_status(&access).await, 401);
    env.password_login_raw()
        .await
        .expect_error(400, "invalid_grant", "app is blocked");
    env.emu.unblock_app(&c.client_id).unwrap();

    let rt = env
        .code_login("api refresh_token")
        .await
        .field("refresh_token");
    env.emu.reset_refresh_tokens(&c.client_id).unwrap();
    env.refresh(&rt)
        .await
        .expect_error(400, "invalid_grant", "expired access/refresh token");

    let rt = env
        .code_login("api refresh_token")
        .await
        .field("refresh_token");
    assert_eq!(
        env.emu.revoke_for_user(&c.client_id, &c.username).unwrap(),
        1,
        "one approval, its access token with it"
    );
    env.refresh(&rt)
        .await
        .expect_error(400, "invalid_grant", "expired access/refresh token");
    assert!(env.emu.freeze_user("nobody@x.test").is_err());
}

#[tokio::test]
async fn instance_url_migration() {
    let env = env().await;
    let rt = env
        .code_login("api refresh_token")
        .await
        .field("refresh_token");
    env.emu
        .set_instance_url(
            &env.c.org_id,
            Some("https://acme.my.salesforce.com".to_owned()),
        )
        .unwrap();
    let r = env.refresh(&rt).await;
    assert_eq!(r.field("instance_url"), "https://acme.my.salesforce.com");
    assert!(
        r.field("id").starts_with(env.emu.base_url()),
        "the id stays on the login host"
    );
}

#[tokio::test]
async fn jwt_access_tokens() {
    let env = env().await;
    env.emu
        .update_app(&env.c.client_id, |a| a.jwt_access_tokens = true)
        .unwrap();
    let r = env.password_login().await;
    let token = r.field("access_token");
    let header = jwt_part(&token, 0);
    let claims = jwt_part(&token, 1);
    assert_eq!(header["tty"], "sfdc-core-token");
    assert_eq!(
        claims["exp"].as_i64().unwrap(),
        env.emu.clock().now_secs() + 7200
    );
    assert_eq!(claims["client_id"], env.c.client_id);
    assert_eq!(env.rest_status(&token).await, 200);
    env.emu.advance(Duration::from_secs(7200));
    assert_eq!(env.rest_status(&token).await, 401);
}

/// The user-agent flow's fragment carries the same access token the token endpoint would: a JWT
/// for an app with `jwt_access_tokens` (the fragment was once built separately and drifted).
#[tokio::test]
async fn jwt_access_tokens_in_the_user_agent_fragment() {
    let env = env().await;
    let c = &env.c;
    env.emu
        .update_app(&c.client_id, |a| a.jwt_access_tokens = true)
        .unwrap();
    let r = env
        .send(env.http.get(env.url("/services/oauth2/authorize")).query(&[
            ("response_type", "token"),
            ("client_id", c.client_id.as_str()),
            ("redirect_uri", c.callback_url.as_str()),
            ("scope", "api refresh_token"),
            ("state", "s"),
        ]))
        .await;
    assert_eq!(r.status, 302);
    let p = r.location_params();
    let token = &p["access_token"];
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");
    assert_eq!(jwt_part(token, 0)["tty"], "sfdc-core-token");
    assert_eq!(jwt_part(token, 1)["client_id"], c.client_id);
    assert!(
        p.contains_key("refresh_token") && p["state"] == "s",
        "{p:?}"
    );
    assert_eq!(env.rest_status(token).await, 200);
}

#[tokio::test]
async fn counters_count_exactly() {
    let env = env().await;
    env.password_login().await;
    let rt = env
        .code_login("api refresh_token")
        .await
        .field("refresh_token");
    env.emu.reset_counters();
    env.refresh(&rt).await.expect_ok();
    let c = env.emu.counters();
    assert_eq!(c.grant("refresh_token"), 1);
    assert_eq!(c.requests("token"), 1);
    assert_eq!(c.grant("password"), 0);
    assert_eq!(c.access_tokens_issued, 1);
    assert_eq!(c.refresh_tokens_issued, 0);
}

#[tokio::test]
async fn seeded_credentials_and_clean_shutdown() {
    let emu = Emulator::builder().start().await.unwrap();
    let c = emu.credentials().clone();
    assert_eq!(c.username, sfauth_emulator::SEED_USERNAME);
    assert_eq!(c.callback_url, "http://localhost:1717/OauthRedirect");
    assert!(c.org_id.starts_with("00D") && c.org_id.len() == 18);
    assert!(c.user_id.starts_with("005") && c.user_id.len() == 18);
    let url = emu.token_url();
    emu.shutdown().await;
    assert!(
        reqwest::Client::new().post(url).send().await.is_err(),
        "the port is closed after shutdown"
    );
}

#[tokio::test]
async fn sliding_session_extends_on_use() {
    let env = env_with(|b| {
        b.app_policy(|p| {
            p.session_timeout_secs = 900;
            p.sliding_session = true;
        })
    })
    .await;
    let token = env.password_login().await.field("access_token");
    for _ in 0..3 {
        env.emu.advance(Duration::from_secs(600));
        assert_eq!(env.rest_status(&token).await, 200);
    }
    env.emu.advance(Duration::from_secs(900));
    assert_eq!(env.rest_status(&token).await, 401);
}
