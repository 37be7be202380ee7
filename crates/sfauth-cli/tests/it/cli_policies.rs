//! Salesforce's 2026 rules, played by the emulator, as the CLI reports them: each refusal is
//! one sentence with its cause and its fix (docs/cli.md's table), with the exit code scripts
//! decide on, and no refresh token is wasted on one.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail on any error"
)]

use crate::common;

use common::Cli;
use sfauth_emulator::{AppKind, ErrorBody, IpRange, RefreshTokenStatus};

/// The stored refresh token of the only login in the test store.
async fn stored_refresh_token(cli: &Cli) -> String {
    let records = cli.records().await;
    assert_eq!(records.len(), 1);
    records[0]
        .tokens
        .refresh_token
        .as_ref()
        .expect("a web login has a refresh token")
        .expose_secret()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_not_allowed_says_not_to_log_in_again_and_keeps_the_token() {
    let cli = Cli::start().await;
    let client_id = cli.emulator.credentials().client_id.clone();
    cli.login_web("prod").await.ok();
    let refresh_token = stored_refresh_token(&cli).await;
    cli.emulator
        .set_policy(&client_id, |p| {
            p.refresh_token_ip_allowlist = vec![IpRange::single("192.0.2.7".parse().unwrap())];
        })
        .unwrap();
    let run = cli.run(&["refresh", "prod"]).await;
    run.fails(1, "outside the connected app's refresh-token IP allowlist");
    assert!(
        run.stderr
            .contains("the refresh token is still valid, so do not log in again"),
        "{run:?}"
    );
    assert!(run.stderr.contains("HTTPS_PROXY"), "{run:?}");
    assert!(!run.stderr.contains("sfauth login"), "{run:?}");
    assert_eq!(
        cli.emulator.refresh_token_status(&refresh_token),
        RefreshTokenStatus::Active,
        "the refused refresh spent nothing"
    );
    let rows = cli.run(&["status", "--json"]).await.ok().json();
    assert_eq!(
        rows[0]["status"], "active",
        "no re-authorization is recorded"
    );
    // From an allowed address (here: once the allowlist names loopback) the same login refreshes.
    cli.emulator
        .set_policy(&client_id, |p| {
            p.refresh_token_ip_allowlist = vec![IpRange::single("127.0.0.1".parse().unwrap())];
        })
        .unwrap();
    cli.run(&["refresh", "prod"]).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_not_installed_needs_an_admin() {
    let cli = Cli::start().await;
    let client_id = cli.emulator.credentials().client_id.clone();
    cli.emulator
        .update_app(&client_id, |app| app.installed = false)
        .unwrap();
    let run = cli
        .run(&["login", "device", "--alias", "dev", "--timeout", "5"])
        .await;
    run.fails(1, "the connected app is not installed in this org");
    assert!(run.stderr.contains("an admin must install it"), "{run:?}");
    assert!(run.stderr.contains("app must be installed into org"));
    assert!(cli.records().await.is_empty(), "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_username_password_flow_names_the_other_flows() {
    let cli = Cli::start().await;
    let creds = cli.emulator.credentials().clone();
    let password = creds.password_with_token();
    let login = |alias: &'static str| {
        let (cli, username, password) = (&cli, creds.username.clone(), password.clone());
        async move {
            cli.run_env(
                &[
                    "login",
                    "password",
                    "--username",
                    &username,
                    "--alias",
                    alias,
                ],
                &[("SFAUTH_PASSWORD", &password)],
            )
            .await
        }
    };
    // An external client app has no username-password flow; Salesforce says only
    // "authentication failure", so the sentence names both readings.
    cli.emulator
        .update_app(&creds.client_id, |app| {
            app.kind = AppKind::ExternalClientApp
        })
        .unwrap();
    let run = login("eca").await;
    run.fails(1, "blocks the username-password flow");
    assert!(run.stderr.contains("security token"), "{run:?}");
    assert!(!run.stderr.contains(&password), "no secret printed");
    cli.emulator
        .update_app(&creds.client_id, |app| app.kind = AppKind::ConnectedApp)
        .unwrap();
    // The org's switch, answered with a description that names the flow.
    cli.emulator
        .update_org(&creds.org_id, |org| org.block_username_password_flow = true)
        .unwrap();
    cli.emulator.update_settings(|s| {
        s.password_flow_blocked_error =
            ErrorBody::new("invalid_grant", "username-password flow is blocked");
    });
    let run = login("org").await;
    run.fails(1, "the org or the app blocks the username-password flow");
    assert!(run.stderr.contains("sfauth login web"), "{run:?}");
    assert!(!run.stderr.contains("security token"), "{run:?}");
    assert!(cli.records().await.is_empty(), "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_rate_limit_says_to_wait_not_to_check_the_network() {
    let cli = Cli::start().await;
    let creds = cli.emulator.credentials().clone();
    let password = creds.password_with_token();
    cli.emulator
        .update_org(&creds.org_id, |org| org.login_rate_limit_per_hour = Some(1))
        .unwrap();
    let args = [
        "login",
        "password",
        "--username",
        &creds.username,
        "--alias",
        "pw",
    ];
    let env = [("SFAUTH_PASSWORD", password.as_str())];
    cli.run_env(&args, &env).await.ok();
    let run = cli.run_env(&args, &env).await;
    run.fails(4, "hourly login limit");
    assert!(run.stderr.contains("wait (up to an hour)"), "{run:?}");
    assert!(!run.stderr.contains("check the network"), "{run:?}");
    // The first login is still there and still serves its token.
    cli.token("pw").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_rotated_away_says_to_log_in_with_the_current_one() {
    let cli = Cli::start().await;
    let client_id = cli.emulator.credentials().client_id.clone();
    cli.login_web("prod").await.ok();
    let refresh_token = stored_refresh_token(&cli).await;
    cli.emulator
        .update_app(&client_id, |app| app.require_secret_for_refresh = true)
        .unwrap();
    cli.emulator
        .stage_client_secret(&client_id, "the-next-consumer-secret")
        .unwrap();
    // While staged, the old secret (stored with the login) still works.
    cli.run(&["refresh", "prod"]).await.ok();
    cli.emulator.apply_staged_client_secret(&client_id).unwrap();
    let run = cli.run(&["refresh", "prod"]).await;
    run.fails(1, "refused its consumer secret");
    assert!(
        run.stderr
            .contains("set SFAUTH_CLIENT_SECRET to the app's current secret"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains("sfauth login web --alias prod"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("the-next-consumer-secret"));
    assert_ne!(
        cli.emulator.refresh_token_status(&refresh_token),
        RefreshTokenStatus::Revoked
    );
}

/// `status` shows each refresh token's standing against the 30-day idle limit (the partner
/// mandate's), in the table and in `--json`; a login without a refresh token has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_idle_standing_of_each_refresh_token() {
    use sfauth::storage::TokenStoreExt as _;
    use std::time::{Duration, SystemTime};
    let cli = Cli::start().await;
    let creds = cli.emulator.credentials().clone();
    cli.login_web("prod").await.ok();
    cli.login_web("old").await.ok();
    cli.run_env(
        &[
            "login",
            "password",
            "--username",
            &creds.username,
            "--alias",
            "pw",
        ],
        &[("SFAUTH_PASSWORD", &creds.password_with_token())],
    )
    .await
    .ok();
    // The store as another process would have left it: "prod" last refreshed 27 days ago,
    // "old" 31 days ago.
    let day = Duration::from_secs(24 * 3600);
    let store = cli.open_store().await;
    for record in cli.records().await {
        let idle = match record.key.label() {
            "prod" => 27,
            "old" => 31,
            _ => continue,
        };
        let version = record.version;
        let mut record = record;
        record.last_refreshed_at = Some(SystemTime::now() - day * idle - Duration::from_secs(60));
        store.save(record, Some(version)).await.unwrap();
    }
    let rows = cli.run(&["status", "--json"]).await.ok().json();
    let row = |alias: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|row| row["alias"] == alias)
            .unwrap()
            .clone()
    };
    let prod = row("prod");
    assert_eq!(prod["idle"]["text"], "idle 27 days, refresh before 30");
    assert_eq!(prod["idle"]["days"], 27);
    assert_eq!(prod["idle"]["limit_days"], 30);
    assert_eq!(prod["idle"]["past_limit"], false);
    assert!(
        prod["idle"]["refresh_before"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let old = row("old");
    assert_eq!(
        old["idle"]["text"],
        "idle 31 days, past the 30-day idle limit"
    );
    assert_eq!(old["idle"]["past_limit"], true);
    assert!(
        row("pw")["idle"].is_null(),
        "no refresh token, nothing idles out"
    );
    let table = cli.run(&["status"]).await.ok().stdout.clone();
    assert!(table.contains("IDLE"), "{table}");
    assert!(table.contains("idle 27 days, refresh before 30"), "{table}");
    assert!(
        table.contains("idle 31 days, past the 30-day idle limit"),
        "{table}"
    );
}
