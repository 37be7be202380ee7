//! Ctrl-C and SIGTERM in the middle of a refresh: the refresh that already has Salesforce's
//! answer saves it, the lease is released, the process ends with 130 or 143, and the next
//! command neither waits for a lease nor loses the login.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail on any error"
)]
#![cfg(unix)]

use crate::common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Cli, Run, eventually};
use sfauth_emulator::{Endpoint, Fault, FaultKind, RefreshTokenStatus};

/// Starts `sfauth refresh ALIAS`, waits until its refresh request is inside the emulator, sends
/// `signal`, and returns how the process ended.
async fn refresh_then_signal(cli: &Cli, alias: &str, signal: &str) -> Run {
    let mut command = cli.command(&["refresh", alias]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    let pid = child.id().to_string();
    eventually(|| cli.emulator.requests_in_progress() > 0).await;
    let status = std::process::Command::new("kill")
        .args(["-s", signal, &pid])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap().into())
        .await
        .unwrap()
}

/// The refresh token stored for the only login, read from the SQLite file with its key file,
/// as the next process would.
async fn stored_refresh_token(cli: &Cli) -> String {
    use sfauth::storage::{Keyring, ListQuery, SqliteStore, TokenStoreExt as _};
    let keyring = Keyring::from_key_file(&cli.dir.path().join("tokens.db.key")).unwrap();
    let store = SqliteStore::open(cli.db_path(), keyring).await.unwrap();
    let records = store.list_all(&ListQuery::new()).await.unwrap();
    assert_eq!(records.len(), 1);
    records[0]
        .tokens
        .refresh_token
        .as_ref()
        .unwrap()
        .expose_secret()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_mid_refresh_saves_the_answer_and_releases_the_lease() {
    let cli = Cli::start().await;
    cli.login_web("prod").await.ok();
    let client_id = cli.emulator.credentials().client_id.clone();
    // The answer takes a second to come back after the rotation is committed: within the
    // grace a signal gives a refresh in flight.
    cli.emulator
        .set_policy(&client_id, |p| p.refresh_latency_ms = 1_000)
        .unwrap();

    let run = refresh_then_signal(&cli, "prod", "INT").await;
    assert_eq!(run.code, 130, "{run:?}");
    assert!(run.stderr.contains("interrupted"), "{run:?}");
    assert_eq!(cli.emulator.counters().grant("refresh_token"), 1);

    // The rotated refresh token was saved: it is the one Salesforce accepts now.
    let stored = stored_refresh_token(&cli).await;
    assert_eq!(
        cli.emulator.refresh_token_status(&stored),
        RefreshTokenStatus::Active
    );
    // And the next command does not wait for a lease.
    cli.emulator
        .set_policy(&client_id, |p| p.refresh_latency_ms = 0)
        .unwrap();
    let started = Instant::now();
    cli.run(&["refresh", "prod"]).await.ok();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the next refresh waited for the lease"
    );
    assert_eq!(cli.emulator.counters().refresh_tokens_reused, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_lost_answer_releases_the_lease_and_says_what_happened() {
    let cli = Cli::start().await;
    cli.login_web("prod").await.ok();
    // Salesforce rotates, then the answer takes a minute to come back (lost in transit):
    // longer than the grace.
    cli.emulator.inject_fault(
        Fault::new(
            Endpoint::Token,
            FaultKind::LatencyAfterCommit(Duration::from_secs(60)),
        )
        .times(1),
    );

    let run = refresh_then_signal(&cli, "prod", "TERM").await;
    assert_eq!(run.code, 143, "{run:?}");
    assert!(run.stderr.contains("terminated"), "{run:?}");

    // The lease is free: the next command goes straight to Salesforce. The refresh token it
    // holds was rotated out by the refresh whose answer was lost, so the honest outcome is a
    // clean re-authorization with that cause (exit 3), never a wait or a hang.
    cli.emulator.expire_access_tokens();
    let started = Instant::now();
    let next = cli.run(&["refresh", "prod"]).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the next refresh waited for the lease: {next:?}"
    );
    next.fails(3, "run `sfauth login web --alias prod`");
}
