//! The progress bar and the tables as a person sees them: the binary run under a
//! pseudo-terminal (util-linux `script`), so that it detects a terminal and draws.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "tests fail on any error, and say loudly when they skip"
)]

use crate::common;

use std::process::Command;

use common::Cli;

/// Runs `sfauth ARGS` under `script`, which gives it a pseudo-terminal; returns everything the
/// terminal received, or `None` (after saying so) when `script` is missing outside CI.
async fn in_terminal(cli: &Cli, args: &[&str]) -> Option<(i32, String)> {
    if Command::new("script").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "util-linux `script` is required under CI=true"
        );
        eprintln!("SKIPPED: util-linux `script` is not installed; the terminal test did not run");
        return None;
    }
    let line = std::iter::once(common::binary().display().to_string())
        .chain(args.iter().map(|a| (*a).to_owned()))
        .map(|word| format!("'{}'", word.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let mut command = Command::new("script");
    command
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env_clear()
        .envs(cli.env())
        .env("TERM", "xterm-256color")
        .env("COLUMNS", "160")
        .env("LINES", "40");
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    Some((output.status.code().unwrap_or(-1), text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_bar_and_tables_on_a_terminal() {
    let cli = Cli::start_with(|b| b.app_policy(|p| p.refresh_latency_ms = 150)).await;
    for alias in ["alpha", "bravo", "charlie", "delta", "echo"] {
        cli.login_web(alias).await.ok();
    }
    let Some((code, screen)) = in_terminal(&cli, &["refresh", "--all", "--concurrency", "2"]).await
    else {
        return;
    };
    assert_eq!(code, 0, "{screen}");
    assert!(
        screen.contains("refreshing ["),
        "the bar is drawn: {screen:?}"
    );
    assert!(screen.contains("/5"), "the bar counts: {screen:?}");
    assert!(
        screen.contains('\u{1b}'),
        "drawn with terminal escapes: {screen:?}"
    );
    assert!(
        screen.contains("5 refreshed, 0 failed, 0 need a new login"),
        "{screen:?}"
    );

    let (code, table) = in_terminal(&cli, &["status"]).await.unwrap();
    assert_eq!(code, 0, "{table}");
    for needle in [
        "ALIAS",
        "EXPIRES (EST.)",
        "alpha",
        "echo",
        "active",
        "│",
        "in 1h 59m",
    ] {
        assert!(table.contains(needle), "{needle:?} missing: {table}");
    }

    // Off a terminal the bar stays silent: scripts get the summary only.
    let plain = cli.run(&["refresh", "--all"]).await;
    plain.ok();
    assert!(!plain.stderr.contains("refreshing ["), "{plain:?}");
}
