//! Every exit code of the `sfauth` binary, and bad input: each gives one clear sentence with
//! the fix on stderr, and nothing stored is overwritten.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail on any error"
)]

use crate::common;

use common::Cli;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2() {
    let cli = Cli::start().await;
    let unknown_flag = cli.run(&["token", "--no-such-flag"]).await;
    assert_eq!(unknown_flag.code, 2, "{unknown_flag:?}");
    assert_eq!(cli.run(&[]).await.code, 2);
    cli.run(&["token", "nobody"])
        .await
        .fails(2, "no login named nobody");
    cli.run(&["login", "client-credentials", "--instance", "not a url"])
        .await
        .fails(2, "--instance not a url is not a valid URL");
    cli.run(&["login", "client-credentials", "--token-url", "ftp://x"])
        .await
        .fails(2, "--token-url ftp://x is not an http(s) URL");
    cli.run_env(
        &["login", "client-credentials"],
        &[("SFAUTH_CLIENT_ID", "")],
    )
    .await
    .fails(2, "pass --client-id");
    // A shared store needs the fleet's key; no server is contacted without one.
    cli.run(&["status", "--store", "redis://127.0.0.1:6379"])
        .await
        .fails(2, "set SFAUTH_STORE_KEY");
    cli.run(&["status", "--store", "postgres://localhost/db?shema=x"])
        .await
        .fails(2, "unknown option shema");
    cli.run(&["status", "--store", "/just/a/path"]).await.fails(
        2,
        "use sqlite://PATH, file://DIR, redis://HOST or postgres://HOST/DB",
    );
    cli.run(&["login", "password", "--username", "u@example.com"])
        .await
        .fails(2, "set SFAUTH_PASSWORD");
    cli.run(&["status", "--config", "/no/such/config.toml"])
        .await
        .fails(2, "cannot read the config file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_refresh_token_exits_3_with_the_login_command() {
    let cli = Cli::start().await;
    cli.login_web("prod").await.ok();
    let username = cli.emulator.credentials().username.clone();
    cli.emulator.revoke_user_tokens(&username).unwrap();
    cli.run(&["refresh", "prod"])
        .await
        .fails(3, "run `sfauth login web --alias prod`");
    // The mark is stored: later calls fail fast, without asking Salesforce again.
    cli.run(&["token", "prod"])
        .await
        .fails(3, "alias prod needs a new login");
    let rows = cli.run(&["status", "--json"]).await.ok().json();
    assert_eq!(rows[0]["status"], "reauth_required");
    assert!(
        cli.run(&["status"])
            .await
            .ok()
            .stdout
            .contains("reauth required")
    );
    // A new login clears it.
    cli.login_web("prod").await.ok();
    cli.run(&["token", "prod"]).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_salesforce_exits_4_and_keeps_the_login() {
    let cli = Cli::start().await;
    cli.login_web("prod").await.ok();
    let before = std::fs::read(cli.db_path()).unwrap().len();
    // The stand-in starts before the first stops, so it cannot take the first one's port.
    let stand_in = sfauth_emulator::Emulator::builder().start().await.unwrap();
    let Cli {
        emulator,
        dir,
        store,
    } = cli;
    emulator.shutdown().await;
    let cli = Cli {
        emulator: stand_in,
        dir,
        store,
    };
    // The alias still points at the stopped emulator's port.
    cli.run(&["refresh", "prod"])
        .await
        .fails(4, "check the network and try again");
    assert!(std::fs::read(cli.db_path()).unwrap().len() >= before);
    let rows = cli.run(&["status", "--json"]).await.ok().json();
    assert_eq!(
        rows[0]["status"], "active",
        "a network failure is not a re-authorization"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_store_key_exits_1_and_changes_nothing() {
    let cli = Cli::start().await;
    let key_a = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let key_b = "HxwdHhscGRoXGBUWExQREg8QDQ4LDAkKBwgFBgMEAQI=";
    cli.login_web_env("prod", &[("SFAUTH_STORE_KEY", key_a)])
        .await
        .ok();
    cli.run_env(&["token", "prod"], &[("SFAUTH_STORE_KEY", key_b)])
        .await
        .fails(1, "SFAUTH_STORE_KEY");
    cli.run_env(&["refresh", "prod"], &[("SFAUTH_STORE_KEY", key_b)])
        .await
        .fails(1, "nothing was changed");
    cli.run_env(&["token", "prod"], &[("SFAUTH_STORE_KEY", "not base64!")])
        .await
        .fails(2, "SFAUTH_STORE_KEY is not a usable key");
    // The right key still opens everything.
    cli.run_env(&["token", "prod"], &[("SFAUTH_STORE_KEY", key_a)])
        .await
        .ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_or_unreachable_store_exits_1_untouched() {
    let cli = Cli::start().await;
    let garbage = b"this is not a sqlite database, and must stay exactly as it is".repeat(100);
    std::fs::write(cli.db_path(), &garbage).unwrap();
    cli.run(&["status"])
        .await
        .fails(1, "the token store at sqlite://");
    cli.run(&["token", "prod"])
        .await
        .fails(1, "the token store at sqlite://");
    assert_eq!(
        std::fs::read(cli.db_path()).unwrap(),
        garbage,
        "nothing overwritten"
    );

    let blocker = cli.dir.path().join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let under_file = format!("sqlite://{}/tokens.db", blocker.display());
    cli.run(&["status", "--store", &under_file])
        .await
        .fails(1, "the token store at");
    let dir_under_file = format!("file://{}/dir", blocker.display());
    cli.run(&["status", "--store", &dir_under_file])
        .await
        .fails(1, "the token store at file://")
        .fails(1, "creating directory");
    // A store that is only missing, in a directory that exists or could, still reads as empty
    // and is not created by the read.
    for missing in [
        format!("sqlite://{}/new.db", cli.dir.path().display()),
        format!("sqlite://{}/sub/new.db", cli.dir.path().display()),
        format!("file://{}/sub/dir", cli.dir.path().display()),
    ] {
        cli.run(&["status", "--store", &missing]).await.ok();
    }
    assert!(!cli.dir.path().join("new.db").exists());
    assert!(!cli.dir.path().join("sub").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_precedence_flags_then_env_then_file() {
    let cli = Cli::start().await;
    cli.login_web("fromfile").await.ok();
    cli.login_web("fromenv").await.ok();
    cli.login_web("fromflag").await.ok();
    let config = cli.dir.path().join("config.toml");
    std::fs::write(
        &config,
        "alias = \"fromfile\"\nsession_timeout_secs = 900\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let token_of = |alias: &str| {
        let alias = alias.to_owned();
        let cli = &cli;
        async move { cli.run(&["token", &alias]).await.ok().stdout.clone() }
    };
    let file = token_of("fromfile").await;
    let env = token_of("fromenv").await;
    let flag = token_of("fromflag").await;
    assert_eq!(
        cli.run(&["token", "--config", config]).await.ok().stdout,
        file
    );
    assert_eq!(
        cli.run_env(
            &["token", "--config", config],
            &[("SFAUTH_ALIAS", "fromenv")]
        )
        .await
        .ok()
        .stdout,
        env
    );
    assert_eq!(
        cli.run_env(
            &["token", "fromflag", "--config", config],
            &[("SFAUTH_ALIAS", "fromenv")]
        )
        .await
        .ok()
        .stdout,
        flag
    );
    // The default file is read from $XDG_CONFIG_HOME/sfauth/config.toml.
    let default = cli.dir.path().join("config").join("sfauth");
    std::fs::create_dir_all(&default).unwrap();
    std::fs::write(default.join("config.toml"), "alias = \"fromfile\"\n").unwrap();
    assert_eq!(cli.run(&["token"]).await.ok().stdout, file);
    std::fs::write(default.join("config.toml"), "no_such_key = 1\n").unwrap();
    cli.run(&["token"]).await.fails(2, "is not valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_session_timeout_is_a_usage_error_and_loses_nothing() {
    let cli = Cli::start().await;
    cli.login_web("prod").await.ok();
    let before = cli.token("prod").await;
    let config = cli.dir.path().join("huge.toml");
    for value in ["18446744073709551615", "0", "86401"] {
        std::fs::write(&config, format!("session_timeout_secs = {value}\n")).unwrap();
        let path = config.display().to_string();
        cli.run(&["refresh", "prod", "--config", &path])
            .await
            .fails(2, "session_timeout_secs");
    }
    // Nothing was spent or overwritten: the login works as before.
    assert_eq!(cli.emulator.counters().grant("refresh_token"), 0);
    assert_eq!(cli.token("prod").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_503_is_transient_exit_4_and_loses_nothing() {
    use sfauth_emulator::{Endpoint, Fault, FaultKind};
    let cli = Cli::start().await;
    cli.login_web("prod").await.ok();
    let before = cli.token("prod").await;
    // A proxy's 2 MiB maintenance page: over the body cap, yet a 503 is still "try later".
    cli.emulator.inject_fault(
        Fault::new(
            Endpoint::Token,
            FaultKind::Response {
                status: 503,
                content_type: "text/html".into(),
                body: "<p>maintenance</p>".repeat(120_000),
            },
        )
        .times(1),
    );
    let run = cli.run(&["refresh", "prod"]).await;
    assert_eq!(run.code, 4, "{run:?}");
    assert_eq!(
        cli.token("prod").await,
        before,
        "the stored login is untouched"
    );
}

/// What Salesforce refuses at login is exit 1 (docs/cli.md: "other failure"), whatever the
/// reason: the command line parsed (not 2), and no stored login needs re-authorization (not 3).
/// One run per row, each against the emulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_salesforce_refuses_exit_1() {
    let cli = Cli::start().await;
    let creds = cli.emulator.credentials().clone();
    let key = cli.dir.path().join("jwt.pem");
    std::fs::write(&key, sfauth_emulator::SEED_CLIENT_PRIVATE_KEY).unwrap();
    let key = key.to_str().unwrap();
    let password = creds.password_with_token();
    let jwt = |audience: &'static str| {
        [
            "login",
            "jwt",
            "--key",
            key,
            "--username",
            &creds.username,
            "--audience",
            audience,
            "--alias",
            "j",
        ]
    };
    // Each row: its name, the arguments, extra environment, and what stderr must say.
    type Row<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let rows: [Row<'_>; 3] = [
        (
            "jwt audience",
            jwt("https://wrong.example.com").to_vec(),
            vec![],
            "audience",
        ),
        (
            "wrong password",
            vec![
                "login",
                "password",
                "--username",
                &creds.username,
                "--alias",
                "p",
            ],
            vec![("SFAUTH_PASSWORD", "not-the-password")],
            "authentication failure",
        ),
        (
            "wrong secret",
            vec![
                "login",
                "password",
                "--username",
                &creds.username,
                "--alias",
                "s",
            ],
            vec![
                ("SFAUTH_PASSWORD", password.as_str()),
                ("SFAUTH_CLIENT_SECRET", "not-the-secret"),
            ],
            "client",
        ),
    ];
    for (row, args, env, needle) in rows {
        let run = cli.run_env(&args, &env).await;
        assert_eq!(run.code, 1, "{row}: {run:?}");
        assert!(run.stderr.to_lowercase().contains(needle), "{row}: {run:?}");
        assert!(!run.stderr.contains(&password), "{row}: no secret printed");
    }
    // The rows were refusals by Salesforce, not local checks: each reached the token endpoint.
    assert_eq!(cli.emulator.counters().requests("token"), 3);
    assert!(cli.records().await.is_empty(), "nothing was stored");
}

/// A password login has no refresh token: refreshing it is no refusal by Salesforce (exit 1,
/// "has no refresh token", never "refused its refresh token"), and it stays active, its access
/// token still served, until that token expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_without_a_refresh_token_is_not_reported_as_refused() {
    let cli = Cli::start().await;
    let creds = cli.emulator.credentials().clone();
    let password = creds.password_with_token();
    cli.run_env(
        &[
            "login",
            "password",
            "--username",
            &creds.username,
            "--alias",
            "pw",
        ],
        &[("SFAUTH_PASSWORD", &password)],
    )
    .await
    .ok();
    let before = cli.token("pw").await;
    for args in [&["refresh", "pw"][..], &["refresh", "--all"]] {
        let run = cli.run(args).await;
        run.fails(1, "alias pw has no refresh token and no way to renew it");
        assert!(!run.stderr.contains("refused"), "{run:?}");
        assert!(run.stderr.contains("sfauth login password --alias pw"));
    }
    let rows = cli.run(&["status", "--json"]).await.ok().json();
    assert_eq!(rows[0]["status"], "active", "{rows}");
    assert_eq!(rows[0]["has_refresh_token"], false);
    assert!(rows[0]["reason"].is_null());
    let table = cli.run(&["status"]).await.ok().stdout.clone();
    assert!(!table.contains("reauth required"), "{table}");
    assert_eq!(
        cli.token("pw").await,
        before,
        "its access token still works"
    );
    cli.run(&["whoami", "pw"]).await.ok();
    assert_eq!(
        cli.emulator.counters().requests("token"),
        1,
        "only the login"
    );
}

/// A 403 from userinfo (a token without the `id` scope) is permanent: whoami says which scopes
/// to log in with, exits 1, never says "try again", and spends no refresh token on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_scope_on_whoami_names_the_scopes_and_exits_1() {
    use sfauth_emulator::{Endpoint, Fault, FaultKind};
    let cli = Cli::start().await;
    cli.login_web_env("narrow", &[("SFAUTH_SCOPES", "refresh_token")])
        .await
        .ok();
    // The emulator's userinfo checks no scope, so the answer Salesforce gives such a token is
    // injected: RFC 6750's insufficient_scope, then the identity service's bare code.
    let answers = [
        (
            "application/json",
            r#"{"error":"insufficient_scope","error_description":"The access token does not have the required scope"}"#,
        ),
        ("text/plain", "No_Oauth_Scope"),
    ];
    for (content_type, body) in answers {
        cli.emulator.inject_fault(
            Fault::new(
                Endpoint::UserInfo,
                FaultKind::Response {
                    status: 403,
                    content_type: content_type.into(),
                    body: body.into(),
                },
            )
            .times(1),
        );
        let run = cli.run(&["whoami", "narrow"]).await;
        run.fails(1, "its scopes lack `id` or `openid`");
        assert!(!run.stderr.contains("try again"), "{run:?}");
        assert!(
            run.stderr
                .contains("sfauth login web --alias narrow --scopes"),
            "{run:?}"
        );
    }
    assert_eq!(
        cli.emulator.counters().grant("refresh_token"),
        0,
        "a 403 is no dead session: nothing was refreshed"
    );
    // The same login works once userinfo accepts it again.
    cli.run(&["whoami", "narrow"]).await.ok();
}
