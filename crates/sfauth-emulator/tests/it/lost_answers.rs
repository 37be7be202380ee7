//! A request whose client gives up is still carried out, as at Salesforce: a refresh rotates, a
//! revocation revokes, and the counters say that the answer went nowhere.

use std::time::Duration;

use sfauth_emulator::{Endpoint, Fault, FaultKind, LatencyPlacement, RefreshTokenStatus};

use crate::common::*;

/// A client timeout far below the emulator's latency, so the client has surely given up before
/// the answer is ready.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(150);
const LATENCY_MS: u64 = 1_500;

impl Env {
    /// A refresh whose client gives up after [`CLIENT_TIMEOUT`]; it must time out.
    async fn refresh_timing_out(&self, refresh_token: &str) {
        let result = self
            .http
            .post(self.url("/services/oauth2/token"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", &self.c.client_id),
                ("client_secret", &self.c.client_secret),
            ])
            .timeout(CLIENT_TIMEOUT)
            .send()
            .await;
        assert!(
            result.as_ref().is_err_and(reqwest::Error::is_timeout),
            "the client must give up first: {result:?}"
        );
    }

    /// Waits until the emulator has committed `n` rotations (a gate on the emulator's own state,
    /// not on time).
    async fn rotations_reach(&self, n: u64) {
        while self.emu.counters().refresh_tokens_rotated < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test]
async fn a_refresh_whose_client_timed_out_still_rotates() {
    for placement in [
        LatencyPlacement::AfterCommit,
        LatencyPlacement::BeforeCommit,
    ] {
        let env = env_with(|b| {
            b.app_policy(|p| {
                p.rotation = true;
                p.refresh_latency_ms = LATENCY_MS;
                p.refresh_latency_placement = placement;
            })
        })
        .await;
        let login = env.code_login("api refresh_token").await;
        let (old, access) = (login.field("refresh_token"), login.field("access_token"));

        env.refresh_timing_out(&old).await;
        env.emu.wait_idle().await;

        // The rotation happened although nobody read the new refresh token.
        let counters = env.emu.counters();
        assert_eq!(counters.refresh_tokens_rotated, 1, "{placement:?}");
        assert_eq!(
            counters.refresh_tokens_rotated_unanswered, 1,
            "{placement:?}"
        );
        assert_eq!(counters.abandoned("token"), 1, "{placement:?}");
        assert_eq!(counters.refresh_tokens_rejected, 0, "{placement:?}");
        assert_eq!(
            env.emu.refresh_token_status(&old),
            RefreshTokenStatus::RotatedOut,
            "{placement:?}"
        );
        assert_eq!(env.emu.refreshes_in_flight(), 0, "{placement:?}");
        assert_eq!(env.rest_status(&access).await, 200, "{placement:?}");

        // The only token the client holds is retired: presenting it revokes the whole family,
        // the access token it still had included.
        env.emu
            .set_policy(&env.c.client_id, |p| p.refresh_latency_ms = 0)
            .unwrap();
        env.refresh(&old)
            .await
            .expect_error(400, "invalid_grant", "expired access/refresh token");
        assert_eq!(env.emu.counters().refresh_tokens_reused, 1, "{placement:?}");
        assert_eq!(
            env.emu.refresh_token_status(&old),
            RefreshTokenStatus::Revoked,
            "{placement:?}"
        );
        assert_eq!(env.rest_status(&access).await, 401, "{placement:?}");
    }
}

#[tokio::test]
async fn a_retry_during_the_latency_meets_the_lock() {
    // The policy's latency keeps the per-token lock held: the retry of an impatient client is
    // told "already being processed" and the family survives.
    let env = env_with(|b| {
        b.app_policy(|p| {
            p.rotation = true;
            p.refresh_latency_ms = LATENCY_MS;
        })
    })
    .await;
    let old = env
        .code_login("api refresh_token")
        .await
        .field("refresh_token");
    env.refresh_timing_out(&old).await;
    assert_eq!(env.emu.refreshes_in_flight(), 1, "the first is still held");
    env.refresh(&old).await.expect_error(
        400,
        "invalid_grant",
        "token request is already being processed",
    );
    env.emu.wait_idle().await;
    let counters = env.emu.counters();
    assert_eq!(counters.refresh_tokens_rotated, 1);
    assert_eq!(counters.refresh_tokens_reused, 0);
    assert_eq!(
        env.emu.refresh_token_status(&old),
        RefreshTokenStatus::RotatedOut
    );
}

#[tokio::test]
async fn an_answer_lost_in_transit_makes_a_retry_revoke_the_family() {
    // The fault's latency comes after the lock is released: the answer is on its way back and
    // the retry finds the token already retired.
    let env = env_with(|b| b.app_policy(|p| p.rotation = true)).await;
    let login = env.code_login("api refresh_token").await;
    let (old, access) = (login.field("refresh_token"), login.field("access_token"));
    env.emu.inject_fault(
        Fault::new(
            Endpoint::Token,
            FaultKind::LatencyAfterCommit(Duration::from_millis(LATENCY_MS)),
        )
        .times(1),
    );
    let first = {
        let http = env.http.clone();
        let url = env.url("/services/oauth2/token");
        let form = [
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", old.clone()),
            ("client_id", env.c.client_id.clone()),
            ("client_secret", env.c.client_secret.clone()),
        ];
        tokio::spawn(async move { http.post(url).form(&form).send().await })
    };
    env.rotations_reach(1).await;
    // The client is killed before the answer arrives.
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    assert_eq!(env.emu.refreshes_in_flight(), 0);

    env.refresh(&old)
        .await
        .expect_error(400, "invalid_grant", "expired access/refresh token");
    env.emu.wait_idle().await;
    let counters = env.emu.counters();
    assert_eq!(counters.refresh_tokens_rotated, 1);
    assert_eq!(counters.refresh_tokens_rotated_unanswered, 1);
    assert_eq!(counters.refresh_tokens_reused, 1);
    assert_eq!(env.rest_status(&access).await, 401);
}

#[tokio::test]
async fn a_revocation_whose_client_timed_out_still_revokes() {
    for kind in [
        FaultKind::Latency(Duration::from_millis(LATENCY_MS)),
        FaultKind::LatencyAfterCommit(Duration::from_millis(LATENCY_MS)),
    ] {
        let env = env().await;
        let rt = env
            .code_login("api refresh_token")
            .await
            .field("refresh_token");
        env.emu
            .inject_fault(Fault::new(Endpoint::Revoke, kind.clone()).times(1));
        let result = env
            .http
            .post(env.url("/services/oauth2/revoke"))
            .form(&[("token", rt.as_str())])
            .timeout(CLIENT_TIMEOUT)
            .send()
            .await;
        assert!(result.is_err_and(|e| e.is_timeout()), "{kind:?}");
        env.emu.wait_idle().await;
        assert_eq!(
            env.emu.refresh_token_status(&rt),
            RefreshTokenStatus::Revoked,
            "{kind:?}"
        );
        let counters = env.emu.counters();
        assert_eq!(counters.abandoned("revoke"), 1, "{kind:?}");
        assert_eq!(counters.refresh_tokens_rotated_unanswered, 0, "{kind:?}");
    }
}

#[tokio::test]
async fn an_answered_request_is_not_counted_as_abandoned() {
    let env = env_with(|b| b.app_policy(|p| p.rotation = true)).await;
    let rt = env
        .code_login("api refresh_token")
        .await
        .field("refresh_token");
    let next = env.refresh(&rt).await.field("refresh_token");
    env.emu.wait_idle().await;
    assert_eq!(env.emu.requests_in_progress(), 0);
    let counters = env.emu.counters();
    assert_eq!(counters.refresh_tokens_rotated, 1);
    assert_eq!(counters.refresh_tokens_rotated_unanswered, 0);
    assert!(counters.answers_abandoned.is_empty(), "{counters:?}");
    assert!(env.emu.refresh_token_status(&next).is_accepted());
}

#[tokio::test]
async fn refresh_token_status_reads_without_spending() {
    let env = env_with(|b| {
        b.admin_api(true).app_policy(|p| {
            p.rotation = true;
            p.refresh_token_policy =
                sfauth_emulator::RefreshTokenPolicy::ExpireIfUnused { secs: 3600 };
        })
    })
    .await;
    let rt = env
        .code_login("api refresh_token")
        .await
        .field("refresh_token");
    let before = env.emu.counters();
    // Reading the status again and again neither spends the token nor keeps it alive.
    for _ in 0..3 {
        assert_eq!(
            env.emu.refresh_token_status(&rt),
            RefreshTokenStatus::Active
        );
        env.emu.advance(Duration::from_secs(1000));
    }
    assert_eq!(env.emu.counters(), before);
    assert_eq!(
        env.emu.refresh_token_status(&rt),
        RefreshTokenStatus::Active
    );
    env.emu.advance(Duration::from_secs(600));
    assert_eq!(
        env.emu.refresh_token_status(&rt),
        RefreshTokenStatus::Expired
    );
    assert_eq!(
        env.emu.refresh_token_status("5Aep861NeverIssued"),
        RefreshTokenStatus::Unknown
    );

    // The same over the admin API, for clients in other processes.
    let status = |token: String| {
        let env = &env;
        async move {
            env.send(
                env.http
                    .post(env.url("/__emulator/refresh-token-status"))
                    .json(&serde_json::json!({ "token": token })),
            )
            .await
            .json()["result"]
                .clone()
        }
    };
    assert_eq!(status(rt.clone()).await, "expired");
    assert_eq!(status("nope".to_owned()).await, "unknown");
    env.get("/__emulator/idle").await.expect_ok();
    let counters = env.get("/__emulator/counters").await.json();
    assert_eq!(counters["refresh_tokens_rotated_unanswered"], 0);
    assert!(counters["answers_abandoned"].is_object());
}
