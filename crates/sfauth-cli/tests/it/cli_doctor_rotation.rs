//! `sfauth doctor` reports refresh-token rotation as the last refresh showed it: the manager
//! records, with the refreshed tokens, whether Salesforce answered with a new refresh token, and
//! the doctor reads that instead of guessing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail on any error"
)]

use crate::common;

use common::{Cli, Run};
use sfauth::Rotation;
use sfauth::storage::TokenRecord;

/// The `rotation` check of `sfauth doctor ALIAS --json`: its status, detail and fix.
async fn rotation(cli: &Cli, alias: &str) -> (String, String, Option<String>, Run) {
    let run = cli.run(&["doctor", alias, "--json"]).await;
    let json = run.json();
    let check = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "rotation")
        .unwrap_or_else(|| panic!("no rotation check: {json}"))
        .clone();
    (
        check["status"].as_str().unwrap().to_owned(),
        check["detail"].as_str().unwrap().to_owned(),
        check["fix"].as_str().map(str::to_owned),
        run,
    )
}

/// Runs `sfauth refresh ALIAS` (which must succeed) and returns the stored record with whether
/// its refresh token changed.
async fn refresh(cli: &Cli, alias: &str) -> (TokenRecord, bool) {
    let secret = |record: &TokenRecord| {
        let token = record.tokens.refresh_token.as_ref().unwrap();
        token.expose_secret().to_owned()
    };
    let before = secret(&cli.records().await[0]);
    cli.run(&["refresh", alias]).await.ok();
    let record = cli.records().await.remove(0);
    let rotated = secret(&record) != before;
    (record, rotated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotating_app_is_reported_on_after_a_refresh() {
    let cli = Cli::start().await; // the emulator's app rotates
    cli.login_web("dev").await.ok();
    let (status, detail, fix, run) = rotation(&cli, "dev").await;
    run.ok();
    assert_eq!(status, "unknown", "nothing seen before a refresh: {run:?}");
    assert!(detail.contains("not refreshed since the login"), "{detail}");
    assert_eq!(fix.as_deref(), Some("`sfauth refresh dev` shows it"));

    let (record, rotated) = refresh(&cli, "dev").await;
    assert!(rotated, "the emulator rotated");
    assert_eq!(Rotation::of_record(&record), Some(Rotation::Rotated));

    let (status, detail, fix, run) = rotation(&cli, "dev").await;
    run.ok();
    assert_eq!(status, "ok", "{run:?}");
    assert!(detail.starts_with("on:"), "{detail}");
    assert_eq!(fix, None);
    let text = cli.run(&["doctor", "dev"]).await;
    assert!(
        text.ok()
            .stdout
            .contains("ok       rotation        on: the last refresh got a new refresh token"),
        "{text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_keeps_its_refresh_token_is_a_warning_with_the_fix() {
    let cli = Cli::start_with(|b| b.app_policy(|p| p.rotation = false)).await;
    cli.login_web("dev").await.ok();
    let (record, rotated) = refresh(&cli, "dev").await;
    assert!(!rotated, "the emulator kept the refresh token");
    assert_eq!(record.refresh_count, 1);
    assert_eq!(Rotation::of_record(&record), Some(Rotation::Kept));

    let (status, detail, fix, run) = rotation(&cli, "dev").await;
    // A warning, not a failure: rotation is required of partner apps only.
    run.ok();
    assert_eq!(run.json()["ok"], true);
    assert_eq!(status, "warn", "{run:?}");
    assert!(detail.starts_with("off:"), "{detail}");
    assert!(
        fix.unwrap()
            .contains("turn on refresh token rotation on the connected app")
    );

    // The app turns rotation on: the next refresh records it.
    let client_id = cli.emulator.credentials().client_id.clone();
    cli.emulator
        .set_policy(&client_id, |p| p.rotation = true)
        .unwrap();
    cli.run(&["refresh", "dev"]).await.ok();
    let (status, _, _, run) = rotation(&cli, "dev").await;
    assert_eq!(status, "ok", "{run:?}");
}
