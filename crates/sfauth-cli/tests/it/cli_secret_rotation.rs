//! Two consumer secrets through a Salesforce secret rotation: the admin stages a new secret
//! (both work), then applies it (only the new one works). With the next secret given
//! (`SFAUTH_NEXT_CLIENT_SECRET`, or kept with a login made during the rotation) the CLI
//! crosses the cutover without a failed command and without spending a refresh token on a
//! refused request, the login keeps the secret that works, and neither secret is ever printed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail on any error"
)]

use crate::common;

use common::{Cli, Run};
use sfauth_emulator::RefreshTokenStatus;

const NEW_SECRET: &str = "new-consumer-secret-7F3A9C";

/// Runs the binary without `SFAUTH_CLIENT_SECRET` (the login's stored secrets only), with `env`.
async fn run_without_secret_env(cli: &Cli, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = cli.command(args);
    command.env_remove("SFAUTH_CLIENT_SECRET");
    for (name, value) in env {
        command.env(name, value);
    }
    tokio::task::spawn_blocking(move || command.output().unwrap().into())
        .await
        .unwrap()
}

/// Neither secret appears in what a run printed.
#[track_caller]
fn prints_no_secret(cli: &Cli, run: &Run) {
    let old = cli.emulator.credentials().client_secret.clone();
    for secret in [old.as_str(), NEW_SECRET] {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "a secret was printed: {run:?}"
        );
    }
}

/// The secrets stored with the only login: (current, next).
async fn stored_secrets(cli: &Cli) -> (Option<String>, Option<String>) {
    let records = cli.records().await;
    assert_eq!(records.len(), 1);
    let metadata = &records[0].metadata;
    (
        metadata.secret("client_secret").map(str::to_owned),
        metadata.secret("next_client_secret").map(str::to_owned),
    )
}

async fn stored_refresh_token(cli: &Cli) -> String {
    cli.records().await[0]
        .tokens
        .refresh_token
        .as_ref()
        .unwrap()
        .expose_secret()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_login_crosses_the_cutover_with_the_next_secret() {
    let cli = Cli::start().await;
    let client_id = cli.emulator.credentials().client_id.clone();
    let old = cli.emulator.credentials().client_secret.clone();
    cli.login_web("dev").await.ok();
    assert_eq!(stored_secrets(&cli).await, (Some(old.clone()), None));

    // Staged: both secrets work; the stored one is used, nothing changes.
    cli.emulator
        .stage_client_secret(&client_id, NEW_SECRET)
        .unwrap();
    let next = [("SFAUTH_NEXT_CLIENT_SECRET", NEW_SECRET)];
    let run = cli.run_env(&["refresh", "dev"], &next).await;
    run.ok();
    assert!(!run.stderr.contains("note:"), "{run:?}");
    prints_no_secret(&cli, &run);
    assert_eq!(stored_secrets(&cli).await, (Some(old.clone()), None));

    // Applied: without the next secret the refresh is refused for its secret, and the refresh
    // token is not spent.
    cli.emulator.apply_staged_client_secret(&client_id).unwrap();
    let refresh_token = stored_refresh_token(&cli).await;
    let run = cli.run(&["refresh", "dev"]).await;
    run.fails(1, "the connected app refused its consumer secret");
    assert!(
        run.stderr
            .contains("set SFAUTH_NEXT_CLIENT_SECRET to the app's new secret"),
        "{run:?}"
    );
    prints_no_secret(&cli, &run);
    assert_eq!(
        cli.emulator.refresh_token_status(&refresh_token),
        RefreshTokenStatus::Active
    );

    // With the next secret, with every log on: the refused request is sent once more with it,
    // the refresh succeeds, and the login keeps the new secret.
    let run = cli
        .run_env(
            &["refresh", "dev"],
            &[
                ("SFAUTH_NEXT_CLIENT_SECRET", NEW_SECRET),
                ("SFAUTH_LOG", "debug"),
            ],
        )
        .await;
    run.ok();
    prints_no_secret(&cli, &run);
    assert!(
        run.stderr.contains(
            "salesforce refused the consumer secret stored with alias dev and accepted the next one"
        ),
        "{run:?}"
    );
    assert_eq!(
        cli.emulator.refresh_token_status(&refresh_token),
        RefreshTokenStatus::RotatedOut,
        "spent once, by the request that succeeded"
    );
    assert_eq!(
        stored_secrets(&cli).await,
        (Some(NEW_SECRET.to_owned()), None)
    );

    // From now on the login works with no secret in the environment at all, and says nothing.
    let run = run_without_secret_env(&cli, &["refresh", "dev"], &[]).await;
    run.ok();
    assert!(run.stderr.is_empty(), "{run:?}");
    for args in [["status", "--json"], ["doctor", "dev"]] {
        let run = cli.run(&args).await;
        prints_no_secret(&cli, &run);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_during_the_rotation_keeps_both_secrets_until_one_is_refused() {
    let cli = Cli::start().await;
    let client_id = cli.emulator.credentials().client_id.clone();
    let old = cli.emulator.credentials().client_secret.clone();
    cli.emulator
        .stage_client_secret(&client_id, NEW_SECRET)
        .unwrap();
    let run = cli
        .login_web_env("dev", &[("SFAUTH_NEXT_CLIENT_SECRET", NEW_SECRET)])
        .await;
    run.ok();
    prints_no_secret(&cli, &run);
    assert_eq!(
        stored_secrets(&cli).await,
        (Some(old.clone()), Some(NEW_SECRET.to_owned())),
        "both kept, sealed with the login"
    );

    // Applied: a command with no secret in its environment falls back to the stored next
    // secret, and the login keeps it alone.
    cli.emulator.apply_staged_client_secret(&client_id).unwrap();
    let run = run_without_secret_env(&cli, &["refresh", "dev"], &[]).await;
    run.ok();
    prints_no_secret(&cli, &run);
    assert!(run.stderr.contains("accepted the next one"), "{run:?}");
    assert_eq!(
        stored_secrets(&cli).await,
        (Some(NEW_SECRET.to_owned()), None)
    );

    // A login after the cutover with the old secret still in SFAUTH_CLIENT_SECRET and the new
    // one as the next: Salesforce refuses the old one, the login goes through with the new one
    // and keeps it alone.
    let run = cli
        .login_web_env("dev", &[("SFAUTH_NEXT_CLIENT_SECRET", NEW_SECRET)])
        .await;
    run.ok();
    prints_no_secret(&cli, &run);
    assert!(
        run.stderr.contains(
            "salesforce refused SFAUTH_CLIENT_SECRET and accepted SFAUTH_NEXT_CLIENT_SECRET"
        ),
        "{run:?}"
    );
    assert_eq!(
        stored_secrets(&cli).await,
        (Some(NEW_SECRET.to_owned()), None)
    );
}
