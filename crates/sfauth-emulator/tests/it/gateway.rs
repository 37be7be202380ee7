//! The gateway in front of the emulator, over TCP: a 5xx from it says nothing about whether the
//! emulator behind it acted.

use std::time::Duration;

use sfauth_emulator::{Endpoint, Gateway, GatewayAction, GatewayRule, RefreshTokenStatus};

use crate::common::*;

async fn gateway(env: &Env) -> Gateway {
    Gateway::builder(env.emu.base_url()).start().await.unwrap()
}

impl Env {
    /// A refresh sent through `gateway`.
    async fn refresh_via(&self, gateway: &Gateway, refresh_token: &str) -> Reply {
        self.send(self.http.post(gateway.token_url()).form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", &self.c.client_id),
            ("client_secret", &self.c.client_secret),
        ]))
        .await
    }
}

#[track_caller]
fn expect_gateway_page(r: &Reply, status: u16) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.header("content-type"), "text/html");
    assert!(r.body.contains(&format!("<h1>{status} ")), "{}", r.body);
    assert!(!r.body.contains("access_token"), "{}", r.body);
}

#[tokio::test]
async fn a_forwarded_refresh_rotates_while_the_client_sees_a_5xx() {
    let env = env_with(|b| b.app_policy(|p| p.rotation = true)).await;
    let gw = gateway(&env).await;
    for (round, status) in [502, 503, 504].into_iter().enumerate() {
        let login = env.code_login("api refresh_token").await;
        let (old, access) = (login.field("refresh_token"), login.field("access_token"));
        gw.inject(
            GatewayRule::new(Endpoint::Token, GatewayAction::ForwardThenFail(status)).times(1),
        );
        expect_gateway_page(&env.refresh_via(&gw, &old).await, status);

        let rotated = u64::try_from(round).unwrap() + 1;
        assert_eq!(env.emu.counters().refresh_tokens_rotated, rotated);
        assert_eq!(
            env.emu.refresh_token_status(&old),
            RefreshTokenStatus::RotatedOut
        );
        // The rule was used up: the naive re-send passes through and kills the family.
        env.refresh_via(&gw, &old).await.expect_error(
            400,
            "invalid_grant",
            "expired access/refresh token",
        );
        assert_eq!(env.rest_status(&access).await, 401);
    }
    let counters = gw.counters();
    assert_eq!(
        (
            counters.requests,
            counters.forwarded,
            counters.replaced,
            counters.not_forwarded
        ),
        (6, 6, 3, 0)
    );
    assert_eq!(env.emu.counters().refresh_tokens_reused, 3);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_5xx_without_forwarding_leaves_the_token_unspent() {
    let env = env_with(|b| b.app_policy(|p| p.rotation = true)).await;
    let gw = gateway(&env).await;
    let old = env
        .code_login("api refresh_token")
        .await
        .field("refresh_token");
    let token_requests = env.emu.counters().requests("token");
    gw.inject(GatewayRule::new(Endpoint::Any, GatewayAction::FailWithoutForwarding(503)).times(2));
    expect_gateway_page(&env.refresh_via(&gw, &old).await, 503);
    expect_gateway_page(&env.refresh_via(&gw, &old).await, 503);
    assert_eq!(env.emu.counters().requests("token"), token_requests);
    assert!(env.emu.refresh_token_status(&old).is_accepted());

    let r = env.refresh_via(&gw, &old).await;
    r.expect_ok();
    assert_ne!(r.field("refresh_token"), old);
    let c = gw.counters();
    assert_eq!(
        (c.requests, c.forwarded, c.not_forwarded, c.replaced),
        (3, 1, 2, 0)
    );
}

#[tokio::test]
async fn pass_through_relays_the_answer_unchanged() {
    let env = env().await;
    let gw = gateway(&env).await;
    assert_eq!(gw.upstream(), env.emu.base_url());
    let rt = env
        .code_login("api refresh_token")
        .await
        .field("refresh_token");
    let r = env.refresh_via(&gw, &rt).await;
    r.expect_ok();
    assert!(r.header("content-type").starts_with("application/json"));
    // Not rewritten: API calls go straight to the emulator.
    assert_eq!(r.field("instance_url"), env.emu.base_url());
    assert_eq!(env.rest_status(&r.field("access_token")).await, 200);

    // Errors, query strings and the site prefix go through as they are.
    env.refresh_via(&gw, "5Aep861unknown").await.expect_error(
        400,
        "invalid_grant",
        "expired access/refresh token",
    );
    let site_token = format!("{}/community/services/oauth2/token", gw.url());
    gw.inject(
        GatewayRule::new(Endpoint::Token, GatewayAction::FailWithoutForwarding(502)).times(1),
    );
    let r = env
        .send(env.http.post(&site_token).query(&[("format", "json")]))
        .await;
    expect_gateway_page(&r, 502);
    let r = env
        .send(
            env.http
                .post(&site_token)
                .query(&[("format", "urlencoded")])
                .form(&[("grant_type", "password")]),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body.starts_with("error="), "{}", r.body);
    assert_eq!(gw.counters().forwarded, 3);
}

#[tokio::test]
async fn an_upstream_timeout_answers_504_and_the_upstream_still_rotates() {
    let env = env_with(|b| {
        b.app_policy(|p| {
            p.rotation = true;
            p.refresh_latency_ms = 1_500;
        })
    })
    .await;
    let gw = Gateway::builder(env.emu.base_url())
        .upstream_timeout(Duration::from_millis(150))
        .start()
        .await
        .unwrap();
    let old = env
        .code_login("api refresh_token")
        .await
        .field("refresh_token");
    expect_gateway_page(&env.refresh_via(&gw, &old).await, 504);
    assert_eq!(gw.counters().upstream_errors, 1);
    env.emu.wait_idle().await;
    let counters = env.emu.counters();
    assert_eq!(counters.refresh_tokens_rotated, 1);
    assert_eq!(counters.refresh_tokens_rotated_unanswered, 1);
    assert_eq!(
        env.emu.refresh_token_status(&old),
        RefreshTokenStatus::RotatedOut
    );
}

#[tokio::test]
async fn a_delayed_gateway_error_and_an_unreachable_upstream() {
    let env = env_with(|b| b.app_policy(|p| p.rotation = true)).await;
    let gw = gateway(&env).await;
    let old = env
        .code_login("api refresh_token")
        .await
        .field("refresh_token");
    gw.inject(
        GatewayRule::new(Endpoint::Token, GatewayAction::ForwardThenFail(504))
            .delay(Duration::from_millis(1_500))
            .times(1),
    );
    // The client gives up while the gateway sits on the discarded answer.
    let result = env
        .http
        .post(gw.token_url())
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", old.as_str()),
            ("client_id", &env.c.client_id),
            ("client_secret", &env.c.client_secret),
        ])
        .timeout(Duration::from_millis(150))
        .send()
        .await;
    assert!(result.is_err_and(|e| e.is_timeout()));
    env.emu.wait_idle().await;
    assert_eq!(
        env.emu.refresh_token_status(&old),
        RefreshTokenStatus::RotatedOut
    );

    // An upstream that does not answer at all: the gateway says 502.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dead = Gateway::builder(format!("http://127.0.0.1:{port}/"))
        .start()
        .await
        .unwrap();
    expect_gateway_page(&env.refresh_via(&dead, &old).await, 502);
    assert_eq!(dead.counters().upstream_errors, 1);
    assert_eq!(dead.upstream(), format!("http://127.0.0.1:{port}"));

    let error = Gateway::builder("ftp://example.test")
        .start()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), sfauth_emulator::ErrorKind::Config);
}
