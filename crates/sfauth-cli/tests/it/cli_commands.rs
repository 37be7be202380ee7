//! Every command of the `sfauth` binary against the emulator over TCP, with `--json` output
//! parsed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail on any error"
)]

use crate::common;

use common::Cli;
use sfauth_emulator::{SEED_CLIENT_PRIVATE_KEY, SEED_USERNAME};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_login_then_token_status_whoami_introspect_refresh_revoke() {
    let cli = Cli::start().await;
    let login = cli.login_web("prod").await;
    login.ok();
    assert!(login.stdout.contains("saved as alias prod"), "{login:?}");
    assert!(
        login.stderr.contains("/services/oauth2/authorize"),
        "{login:?}"
    );

    let first = cli.token("prod").await;
    assert!(!first.is_empty() && !first.contains(' '));
    assert_eq!(
        cli.run(&["token", "--alias", "prod"]).await.stdout.trim(),
        first
    );

    let status = cli.run(&["status", "--json"]).await;
    status.ok();
    let rows = status.json();
    let row = &rows.as_array().unwrap()[0];
    assert_eq!(row["alias"], "prod");
    assert_eq!(row["status"], "active");
    assert_eq!(row["username"], SEED_USERNAME);
    assert_eq!(row["org_id"], cli.emulator.credentials().org_id.as_str());
    assert_eq!(row["has_refresh_token"], true);
    assert!(row["expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(
        !status.stdout.contains(&first),
        "status never prints a token"
    );

    let list = cli.run(&["list"]).await;
    list.ok();
    for column in [
        "ALIAS",
        "ORG",
        "USER",
        "INSTANCE",
        "LAST REFRESH",
        "STATUS",
        "prod",
    ] {
        assert!(list.stdout.contains(column), "{list:?}");
    }

    let whoami = cli.run(&["whoami", "prod", "--json"]).await;
    whoami.ok();
    assert_eq!(whoami.json()["username"], SEED_USERNAME);
    assert!(
        cli.run(&["whoami", "prod"])
            .await
            .ok()
            .stdout
            .contains(SEED_USERNAME)
    );

    let introspect = cli.run(&["introspect", "prod", "--json"]).await;
    introspect.ok();
    assert_eq!(introspect.json()["active"], true);

    // A forced refresh rotates and gives a new access token.
    let refresh = cli.run(&["refresh", "prod"]).await;
    refresh.ok();
    assert!(refresh.stdout.contains("refreshed prod"));
    let second = cli.token("prod").await;
    assert_ne!(first, second);

    // The session dies at the org: --verify notices and refreshes.
    cli.emulator.expire_access_tokens();
    let third = cli.run(&["token", "prod", "--verify"]).await;
    third.ok();
    assert_ne!(third.stdout.trim(), second);

    // No secret anywhere but `sfauth token`'s stdout.
    for args in [
        &["status"][..],
        &["list", "--json"],
        &["whoami", "prod", "--json"],
        &["introspect", "prod"],
        &["refresh", "prod"],
    ] {
        let run = cli.run(args).await;
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(
            !all.contains("!AQ") && !all.contains("5Aep861"),
            "{args:?}: {run:?}"
        );
    }
    assert!(!login.stdout.contains("!AQ") && !login.stderr.contains("!AQ"));

    let revoke = cli.run(&["revoke", "prod"]).await;
    revoke.ok();
    assert!(
        revoke
            .stdout
            .contains("Revoked the refresh token of alias prod")
    );
    cli.run(&["token", "prod"])
        .await
        .fails(2, "no login named prod");
    let empty = cli.run(&["status", "--json"]).await;
    assert_eq!(empty.ok().json(), serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_other_login_flow() {
    let cli = Cli::start().await;
    let creds = cli.emulator.credentials().clone();

    let password = cli
        .run_env(
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
        .await;
    password.ok();
    assert!(
        !password.stdout.contains(&creds.password),
        "no secret printed"
    );

    cli.run(&["login", "client-credentials", "--alias", "cc"])
        .await
        .ok();

    let key = cli.dir.path().join("jwt.pem");
    std::fs::write(&key, SEED_CLIENT_PRIVATE_KEY).unwrap();
    cli.run(&[
        "login",
        "jwt",
        "--key",
        key.to_str().unwrap(),
        "--username",
        &creds.username,
        "--alias",
        "jwt",
    ])
    .await
    .ok();
    // No refresh token: a refresh mints a new assertion from the remembered key file.
    cli.run(&["refresh", "jwt"]).await.ok();

    let subject = cli.token("pw").await;
    cli.run_env(
        &[
            "login",
            "token-exchange",
            "--subject-token-type",
            "access-token",
            "--alias",
            "tx",
        ],
        &[("SFAUTH_SUBJECT_TOKEN", &subject)],
    )
    .await
    .ok();

    // Device flow: the test approves the code the CLI shows.
    let mut command = cli.command(&["login", "device", "--alias", "dev", "--timeout", "30"]);
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let code = tokio::task::spawn_blocking(move || {
        use std::io::BufRead as _;
        let mut reader = std::io::BufReader::new(stderr);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let code = line.trim().rsplit(' ').next().unwrap().to_owned();
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        code
    })
    .await
    .unwrap();
    cli.emulator.approve_device(&code, &creds.username).unwrap();
    let device: common::Run =
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap().into())
            .await
            .unwrap();
    device.ok();

    let rows = cli.run(&["list", "--json"]).await.ok().json();
    let mut aliases: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alias"].as_str().unwrap())
        .collect();
    aliases.sort_unstable();
    assert_eq!(aliases, ["cc", "dev", "jwt", "pw", "tx"]);
    for alias in aliases {
        cli.run(&["token", alias]).await.ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_all_reports_each_alias() {
    let cli = Cli::start().await;
    for alias in ["a", "b", "c"] {
        cli.login_web(alias).await.ok();
    }
    let all = cli
        .run(&["refresh", "--all", "--concurrency", "2", "--json"])
        .await;
    all.ok();
    let outcomes = all.json();
    assert_eq!(outcomes.as_array().unwrap().len(), 3);
    assert!(outcomes.as_array().unwrap().iter().all(|o| o["ok"] == true));

    // One login revoked at the org: the others still refresh, the exit code says re-auth.
    let client_id = cli.emulator.credentials().client_id.clone();
    cli.emulator.revoke_app_tokens(&client_id);
    cli.login_web("c").await.ok();
    let mixed = cli.run(&["refresh", "--all"]).await;
    // Disjoint counts that add up to the logins (docs/cli.md): a login that needs a new login
    // is not also counted as failed.
    assert_eq!(mixed.code, 3, "{mixed:?}");
    assert!(mixed.stdout.contains("refreshed c"), "{mixed:?}");
    assert!(
        mixed
            .stdout
            .contains("1 refreshed, 0 failed, 2 need a new login"),
        "{mixed:?}"
    );
    assert!(
        mixed.stderr.contains("run `sfauth login web --alias a`"),
        "{mixed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_into_another_store() {
    let cli = Cli::start().await;
    cli.login_web("prod").await.ok();
    let token = cli.token("prod").await;
    let file = cli.dir.path().join("logins.sfauth");
    let file_arg = file.to_str().unwrap();
    let pass = [("SFAUTH_EXPORT_PASSPHRASE", "correct horse battery")];
    cli.run_env(&["export", "prod", "--output", file_arg], &pass)
        .await
        .ok();
    let bytes = std::fs::read(&file).unwrap();
    assert!(
        !String::from_utf8_lossy(&bytes).contains(&token),
        "the export is encrypted"
    );
    cli.run_env(&["export", "--all", "--output", file_arg], &pass)
        .await
        .fails(2, "--force");

    let other = format!("file://{}", cli.dir.path().join("other").display());
    cli.run_env(
        &["import", file_arg, "--store", &other],
        &[("SFAUTH_EXPORT_PASSPHRASE", "wrong passphrase")],
    )
    .await
    .fails(1, "passphrase does not open");
    assert_eq!(
        cli.run(&["list", "--json", "--store", &other])
            .await
            .ok()
            .json(),
        serde_json::json!([])
    );

    cli.run_env(&["import", file_arg, "--store", &other], &pass)
        .await
        .ok();
    let imported = cli.run(&["token", "prod", "--store", &other]).await;
    assert_eq!(imported.ok().stdout.trim(), token);
    cli.run_env(&["import", file_arg, "--store", &other], &pass)
        .await
        .fails(2, "already exists");
    cli.run_env(&["import", file_arg, "--store", &other, "--force"], &pass)
        .await
        .ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_help_and_version() {
    let cli = Cli::start().await;
    for shell in ["bash", "zsh", "fish"] {
        let run = cli.run(&["completions", shell]).await;
        run.ok();
        assert!(run.stdout.contains("sfauth"));
    }
    let help = cli.run(&["--help"]).await;
    help.ok();
    assert!(help.stdout.contains("Exit codes"));
    assert!(help.stdout.contains("SFAUTH_CLIENT_SECRET"));
    let login_help = cli.run(&["login", "web", "--help"]).await;
    assert!(login_help.ok().stdout.contains("--no-browser"));
    cli.run(&["--version"]).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_walks_through_the_life_of_a_token_without_printing_secrets() {
    let cli = Cli::start().await;
    let demo = cli.run(&["demo"]).await;
    demo.ok();
    for step in [
        "[1/6] Emulator",
        "[2/6] Login",
        "PKCE",
        "[3/6] API call",
        "200 OK",
        "401 INVALID_SESSION_ID",
        "rotation",
        "[5/6] Revoke",
        "[6/6] Re-auth",
        "exit with code 3",
        "run `sfauth login web --alias demo`",
    ] {
        assert!(
            demo.stdout.contains(step),
            "{step:?} missing: {}",
            demo.stdout
        );
    }
    // Emulator access tokens look like `00D...!AQ...`, refresh tokens `5Aep861...`.
    assert!(
        !demo.stdout.contains("!AQ") && !demo.stdout.contains("5Aep861"),
        "{}",
        demo.stdout
    );
    assert!(demo.stderr.is_empty(), "{demo:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_file_store_directory_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let cli = Cli::start().await;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    // Created by the key file (the default) and, with SFAUTH_STORE_KEY, by FileStore itself;
    // the missing parent must be private too, since it is created on the way.
    let by_key_file = cli.dir.path().join("parent").join("store");
    let url = format!("file://{}", by_key_file.display());
    // A read creates nothing: the store is made by the first login.
    let listed = cli.run(&["list", "--json", "--store", &url]).await;
    assert_eq!(listed.ok().json(), serde_json::json!([]));
    assert!(
        !by_key_file.parent().unwrap().exists(),
        "a listing made no directory"
    );
    cli.login_web_env("first", &[("SFAUTH_STORE", &url)])
        .await
        .ok();
    assert_eq!(mode(&by_key_file), 0o700, "store directory");
    assert_eq!(mode(by_key_file.parent().unwrap()), 0o700, "its new parent");
    assert_eq!(mode(&by_key_file.join("tokens.key")), 0o600, "key file");

    let by_store = cli.dir.path().join("env-parent").join("store");
    let url = format!("file://{}", by_store.display());
    let key = (
        "SFAUTH_STORE_KEY",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    let listed = cli
        .run_env(&["list", "--json", "--store", &url], &[key])
        .await;
    assert_eq!(listed.ok().json(), serde_json::json!([]));
    assert!(!by_store.exists(), "a listing made no directory");
    cli.login_web_env("second", &[("SFAUTH_STORE", &url), key])
        .await
        .ok();
    assert_eq!(mode(&by_store), 0o700, "store directory");
    assert!(
        !by_store.join("tokens.key").exists(),
        "SFAUTH_STORE_KEY: no key file"
    );
    assert_eq!(mode(by_store.parent().unwrap()), 0o700, "its new parent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_forced_export_keeps_the_old_export() {
    use std::os::unix::fs::PermissionsExt as _;
    let mut cli = Cli::start().await;
    // A file store: listing it writes nothing, so under the file size limit below only the
    // export's own write fails.
    cli.store = format!("file://{}", cli.dir.path().join("store").display());
    cli.login_web("prod").await.ok();
    let file = cli.dir.path().join("prod.sfauth");
    let file_arg = file.to_str().unwrap();
    let pass = ("SFAUTH_EXPORT_PASSPHRASE", "correct horse battery");
    cli.run_env(&["export", "prod", "--output", file_arg], &[pass])
        .await
        .ok();
    let old = std::fs::read(&file).unwrap();

    // RLIMIT_FSIZE 0 makes every write to a regular file fail (EFBIG; SIGXFSZ ignored).
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg(r#"trap '' XFSZ; ulimit -f 0; exec "$0" "$@""#)
        .arg(common::binary())
        .args(["export", "prod", "--output", file_arg, "--force"])
        .env_clear()
        .envs(cli.env())
        .env(pass.0, pass.1)
        .stdin(std::process::Stdio::null());
    let run: common::Run = tokio::task::spawn_blocking(move || command.output().unwrap().into())
        .await
        .unwrap();
    run.fails(1, "cannot write");
    assert_eq!(std::fs::read(&file).unwrap(), old, "the old export is kept");
    let names: Vec<_> = std::fs::read_dir(cli.dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("prod") || name.starts_with(".tmp"))
        .collect();
    assert_eq!(names, ["prod.sfauth"], "no temporary file is left");

    // A forced export that succeeds replaces it, still private.
    cli.run_env(
        &["export", "prod", "--output", file_arg, "--force"],
        &[pass],
    )
    .await
    .ok();
    assert_ne!(std::fs::read(&file).unwrap(), old, "a new salt and nonce");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_stores_the_configured_session_timeout() {
    let cli = Cli::start().await;
    // The default config file, read by login: a 15-minute session timeout.
    let config = cli.dir.path().join("config").join("sfauth");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("config.toml"), "session_timeout_secs = 900\n").unwrap();
    cli.login_web("prod").await.ok();
    let at_login = cli.run(&["list", "--json"]).await.ok().json();
    assert_eq!(
        at_login[0]["expiry_source"], "session_timeout",
        "{at_login}"
    );
    // The expiry was stored with the tokens at login: listing under another timeout (the
    // default, 2 hours) shows the same one rather than re-deriving it.
    std::fs::remove_file(config.join("config.toml")).unwrap();
    let later = cli.run(&["list", "--json"]).await.ok().json();
    assert_eq!(later[0]["expires_at"], at_login[0]["expires_at"], "{later}");
    assert_eq!(later[0]["expiry_source"], "session_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_without_alias_metadata_resolve_from_their_records() {
    let cli = Cli::start().await;
    cli.login_web("one").await.ok();
    cli.login_web("two").await.ok();
    // As if stored by a program using the library: records without the CLI's settings.
    {
        use sfauth::storage::TokenStore as _;
        let store = cli.open_store().await;
        for mut record in cli.records().await {
            assert_eq!(record.metadata.get("flow"), Some("web"));
            let version = record.version;
            record.metadata = sfauth::storage::Metadata::new();
            store.put(record, version, None).await.unwrap();
        }
    }
    let refreshed = cli.run(&["refresh", "--all", "--json"]).await.ok().json();
    assert_eq!(
        refreshed,
        serde_json::json!([
            {"alias": "one", "ok": true, "exit_code": 0, "message": null},
            {"alias": "two", "ok": true, "exit_code": 0, "message": null},
        ])
    );
    let file = cli.dir.path().join("one.sfauth");
    let pass = [("SFAUTH_EXPORT_PASSPHRASE", "correct horse battery")];
    cli.run_env(
        &["export", "one", "--output", file.to_str().unwrap()],
        &pass,
    )
    .await
    .ok();
    cli.run_env(
        &["export", "three", "--output", file.to_str().unwrap()],
        &pass,
    )
    .await
    .fails(2, "no login named three");
    let listed = cli.run(&["list", "--json"]).await.ok().json();
    assert_eq!(listed[0]["alias"], "one");
    assert_eq!(listed[0]["flow"], serde_json::Value::Null, "no metadata");
}

/// `--basic-auth` sends the client id and secret form-urlencoded before base64 (RFC 6749
/// §2.3.1), and Salesforce (the emulator) accepts that form, with a secret holding every
/// character the encoding changes, at login and at each refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_with_a_secret_that_needs_encoding_logs_in_and_refreshes() {
    let cli = Cli::start().await;
    let client_id = cli.emulator.credentials().client_id.clone();
    let secret = "s3cr+t/with:colon%41 and space";
    cli.emulator
        .update_app(&client_id, |app| {
            app.client_secret = secret.to_owned();
            app.require_secret_for_web_server_flow = true;
            app.require_secret_for_refresh = true;
        })
        .unwrap();
    // `basic_auth` from the config file: `login web` takes it like the flag.
    let config = cli.dir.path().join("basic.toml");
    std::fs::write(&config, "basic_auth = true\n").unwrap();
    let config = config.to_str().unwrap();
    let env = [("SFAUTH_CLIENT_SECRET", secret), ("SFAUTH_CONFIG", config)];
    cli.login_web_env("basic", &env).await.ok();
    let before = cli.token("basic").await;
    // The login keeps its setting and its secret: the refresh authenticates the same way, and
    // neither the flag nor the environment is needed.
    cli.run_env(&["refresh", "basic"], &[("SFAUTH_CLIENT_SECRET", "")])
        .await
        .ok();
    assert_ne!(cli.token("basic").await, before, "refreshed");
    assert_eq!(cli.emulator.counters().grant("refresh_token"), 1);
    assert_eq!(cli.emulator.counters().grant("authorization_code"), 1);
    // The password flow with the flag, too.
    let creds = cli.emulator.credentials().clone();
    let password = creds.password_with_token();
    cli.run_env(
        &[
            "login",
            "password",
            "--basic-auth",
            "--username",
            &creds.username,
            "--alias",
            "pw",
        ],
        &[
            ("SFAUTH_CLIENT_SECRET", secret),
            ("SFAUTH_PASSWORD", &password),
        ],
    )
    .await
    .ok();
    // A wrong secret the same way is refused, so the secret was checked.
    let wrong = cli
        .run_env(
            &[
                "login",
                "password",
                "--basic-auth",
                "--username",
                &creds.username,
                "--alias",
                "pw2",
            ],
            &[
                ("SFAUTH_CLIENT_SECRET", "s3cr+t/with:colon%41 and spacE"),
                ("SFAUTH_PASSWORD", &password),
            ],
        )
        .await;
    assert_eq!(wrong.code, 1, "{wrong:?}");
    assert!(!wrong.stderr.contains(secret), "no secret printed");
}
