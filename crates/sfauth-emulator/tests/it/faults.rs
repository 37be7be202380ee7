//! Injected faults reach the client as the right HTTP failure.

use std::time::Duration;

use sfauth_emulator::{Endpoint, Fault, FaultKind};

use crate::common::*;

#[tokio::test]
async fn status_faults_for_the_next_n_calls() {
    let env = env().await;
    env.emu
        .inject_fault(Fault::new(Endpoint::Token, FaultKind::Status(503)).times(2));
    assert_eq!(env.password_login_raw().await.status, 503);
    assert_eq!(
        env.get("/id/keys").await.status,
        200,
        "other endpoints are untouched"
    );
    assert_eq!(env.password_login_raw().await.status, 503);
    env.password_login().await;
    assert_eq!(env.emu.counters().requests("token"), 3);
}

#[tokio::test]
async fn body_faults() {
    let env = env().await;
    env.emu.inject_fault(
        Fault::new(
            Endpoint::Token,
            FaultKind::RateLimited {
                retry_after_secs: 7,
            },
        )
        .times(1),
    );
    let r = env.password_login_raw().await;
    assert_eq!((r.status, r.header("retry-after")), (429, "7".to_owned()));

    env.emu
        .inject_fault(Fault::new(Endpoint::Token, FaultKind::MalformedBody).times(1));
    let r = env.password_login_raw().await;
    assert_eq!(r.status, 200);
    assert!(serde_json::from_str::<serde_json::Value>(&r.body).is_err());

    env.emu
        .inject_fault(Fault::new(Endpoint::Any, FaultKind::HtmlErrorPage).times(1));
    let r = env.get("/services/data/").await;
    assert_eq!(r.status, 503);
    assert!(r.header("content-type").starts_with("text/html") && r.body.contains("<html>"));
}

#[tokio::test]
async fn connection_reset_and_hang() {
    let env = env().await;
    env.emu
        .inject_fault(Fault::new(Endpoint::Token, FaultKind::ConnectionReset).times(1));
    let result = async {
        let r = env
            .http
            .post(env.url("/services/oauth2/token"))
            .form(&[("grant_type", "password")])
            .send()
            .await?;
        r.text().await
    }
    .await;
    assert!(result.is_err(), "the body never completes: {result:?}");

    env.emu
        .inject_fault(Fault::new(Endpoint::Revoke, FaultKind::Hang).times(1));
    let hung = env
        .http
        .post(env.url("/services/oauth2/revoke"))
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(hung.unwrap_err().is_timeout());

    env.emu.inject_fault(
        Fault::new(
            Endpoint::Keys,
            FaultKind::Latency(Duration::from_millis(150)),
        )
        .times(1),
    );
    let started = std::time::Instant::now();
    assert_eq!(env.get("/id/keys").await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
    env.password_login().await;
}

#[tokio::test]
async fn probabilistic_faults_are_reproducible_with_a_seed() {
    async fn run() -> Vec<u16> {
        let env = env().await;
        env.emu
            .inject_fault(Fault::new(Endpoint::Keys, FaultKind::Status(500)).probability(0.5));
        let mut statuses = Vec::new();
        for _ in 0..16 {
            statuses.push(env.get("/id/keys").await.status);
        }
        statuses
    }
    let first = run().await;
    assert_eq!(first, run().await);
    assert!(first.contains(&500) && first.contains(&200), "{first:?}");
}

#[tokio::test]
async fn oauth_error_and_canned_response_faults() {
    let env = env_with(|b| b.admin_api(true)).await;
    env.emu.inject_fault(
        Fault::new(
            Endpoint::Token,
            FaultKind::OAuthError {
                status: 400,
                error: "rate_limit_exceeded".to_owned(),
                description: "Number of logins exceeded".to_owned(),
            },
        )
        .times(1),
    );
    env.password_login_raw().await.expect_error(
        400,
        "rate_limit_exceeded",
        "Number of logins exceeded",
    );
    let token = env.password_login().await.field("access_token");

    let body = r#"[{"message":"This session is not valid for use with the REST API","errorCode":"INVALID_SESSION_ID"}]"#;
    let fault = serde_json::json!({
        "endpoint": "rest", "kind": "response", "status": 401,
        "content_type": "application/json;charset=UTF-8", "body": body, "times": 1,
    });
    env.send(env.http.post(env.url("/__emulator/faults")).json(&fault))
        .await
        .expect_ok();
    let r = env
        .get_bearer(
            "/services/data/v62.0/query?q=SELECT+Id+FROM+Account",
            &token,
        )
        .await;
    assert_eq!((r.status, r.body.as_str()), (401, body));
    assert_eq!(env.rest_status(&token).await, 200);
}
