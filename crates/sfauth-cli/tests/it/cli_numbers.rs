//! Hostile numbers reaching the `sfauth` binary: from the server (an introspection `exp`, a
//! device-flow `interval`, session lifetimes), from flags. Each gives a clean answer or a
//! clean one-line error with its exit code, never a panic (exit 101) or a hang.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail on any error"
)]

use crate::common;

use common::Cli;
use sfauth_emulator::{Endpoint, Fault, FaultKind};

/// `u64::MAX` seconds after the Unix epoch.
const END_OF_U64: &str = "584554051223-11-09T07:00:15Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspect_shows_an_exp_past_the_end_of_time() {
    let cli = Cli::start().await;
    cli.login_web("prod").await.ok();
    let body = serde_json::json!({
        "active": true,
        "scope": "api refresh_token",
        "client_id": cli.emulator.credentials().client_id,
        "username": cli.emulator.credentials().username,
        "token_type": "access_token",
        "exp": u64::MAX,
        "iat": u64::MAX,
        "nbf": u64::MAX,
    })
    .to_string();
    cli.emulator.inject_fault(
        Fault::new(
            Endpoint::Introspect,
            FaultKind::Response {
                status: 200,
                content_type: "application/json".to_owned(),
                body,
            },
        )
        .times(2),
    );
    let json = cli.run(&["introspect", "prod", "--json"]).await.ok().json();
    assert_eq!(json["active"], true, "{json}");
    assert_eq!(json["exp"], u64::MAX, "{json}");
    assert_eq!(json["expires_at"], END_OF_U64, "{json}");
    let text = cli.run(&["introspect", "prod"]).await;
    text.ok();
    assert!(text.stdout.contains(END_OF_U64), "{text:?}");
}

/// Runs `sfauth login device` with `timeout` and, when `approve`, approves the code it shows.
async fn login_device(cli: &Cli, timeout: &str, approve: bool) -> common::Run {
    let mut command = cli.command(&["login", "device", "--alias", "dev", "--timeout", timeout]);
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (code, rest) = tokio::task::spawn_blocking(move || {
        use std::io::{BufRead as _, Read as _};
        let mut reader = std::io::BufReader::new(stderr);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let code = line.trim().rsplit(' ').next().unwrap().to_owned();
        // Reads the rest of stderr, so that the child never writes into a closed pipe.
        let rest = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = reader.read_to_string(&mut rest);
            rest
        });
        (code, rest)
    })
    .await
    .unwrap();
    if approve {
        let username = cli.emulator.credentials().username.clone();
        cli.emulator.approve_device(&code, &username).unwrap();
    }
    let mut run: common::Run =
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap().into())
            .await
            .unwrap();
    run.stderr = rest.join().unwrap();
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_login_with_a_timeout_flag_of_u64_max_waits_for_the_approval() {
    let cli = Cli::start().await;
    login_device(&cli, &u64::MAX.to_string(), true).await.ok();
    assert!(!cli.token("dev").await.is_empty());
    // One past u64 is not a number of seconds: a usage error before anything is sent.
    let before = cli.emulator.counters().grant("device_code");
    let run = cli
        .run(&[
            "login",
            "device",
            "--alias",
            "dev2",
            "--timeout",
            "18446744073709551616",
        ])
        .await;
    usage_error(&run, "18446744073709551616");
    assert_eq!(cli.emulator.counters().grant("device_code"), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_device_interval_of_u64_max_ends_at_the_timeout() {
    let cli = Cli::start_with(|b| b.settings(|s| s.device_interval_secs = u64::MAX)).await;
    let run = login_device(&cli, "1", false).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("nobody approved the device code within 1 seconds"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("panicked"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_timeouts_of_u64_max_at_the_server_keep_every_command_working() {
    for jwt_access_tokens in [false, true] {
        let cli = Cli::start_with(|b| b.app_policy(|p| p.session_timeout_secs = u64::MAX)).await;
        let client_id = cli.emulator.credentials().client_id.clone();
        cli.emulator
            .update_app(&client_id, |a| a.jwt_access_tokens = jwt_access_tokens)
            .unwrap();
        cli.login_web("prod").await.ok();
        let first = cli.token("prod").await;
        let rows = cli.run(&["status", "--json"]).await.ok().json();
        assert_eq!(rows[0]["status"], "active", "{rows}");
        cli.run(&["refresh", "prod"]).await.ok();
        assert_ne!(cli.token("prod").await, first, "the refresh was kept");
        let json = cli.run(&["introspect", "prod", "--json"]).await.ok().json();
        assert_eq!(json["active"], true, "{json}");
        assert!(json["expires_at"].as_str().is_some(), "{json}");
        cli.run(&["status"]).await.ok();
        cli.run(&["whoami", "prod"]).await.ok();
    }
}

/// Exit 2 with `needle` in the message (clap's own messages span several lines).
#[track_caller]
fn usage_error(run: &common::Run, needle: &str) {
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains(needle),
        "stderr lacks {needle:?}: {run:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_numeric_flags_and_env_are_usage_errors() {
    let cli = Cli::start().await;
    let run = cli
        .run(&["login", "web", "--port", "65536", "--no-browser"])
        .await;
    usage_error(&run, "65536");
    let run = cli
        .run_env(&["login", "web", "--no-browser"], &[("SFAUTH_PORT", "-1")])
        .await;
    usage_error(&run, "-1");
    for n in ["0", "257", "18446744073709551616"] {
        let run = cli.run(&["refresh", "--all", "--concurrency", n]).await;
        usage_error(&run, n);
    }
    assert_eq!(cli.emulator.counters().requests("token"), 0);
}
