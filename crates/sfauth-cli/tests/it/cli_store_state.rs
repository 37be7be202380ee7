//! Where a login's state lives and what the CLI does when the store cannot hold it: settings
//! in the records (parallel logins, migration of an old alias file), key files per store file,
//! reads that create nothing, a missing key, and a capped import (issue #16).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails on any error"
)]

use crate::common;

use common::Cli;

fn password_env(cli: &Cli) -> Vec<(String, String)> {
    vec![(
        "SFAUTH_PASSWORD".to_owned(),
        cli.emulator.credentials().password_with_token(),
    )]
}

async fn login_password(cli: &Cli, alias: &str) -> common::Run {
    let username = cli.emulator.credentials().username.clone();
    let env = password_env(cli);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    cli.run_env(
        &[
            "login",
            "password",
            "--username",
            &username,
            "--alias",
            alias,
        ],
        &env,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_logins_keep_every_alias_settings() {
    let cli = Cli::start().await;
    // The store exists first, so that the eight do not race on creating its key.
    login_password(&cli, "first").await.ok();
    let cli_ref = &cli;
    let runs = futures_util::future::join_all(
        (0..8).map(|i| async move { login_password(cli_ref, &format!("par{i}")).await }),
    )
    .await;
    for run in &runs {
        run.ok();
    }
    let records = cli.records().await;
    assert_eq!(records.len(), 9, "{records:?}");
    for record in &records {
        assert_eq!(record.metadata.get("flow"), Some("password"), "{record:?}");
        assert_eq!(
            record.metadata.get("username"),
            Some(cli.emulator.credentials().username.as_str())
        );
        assert_eq!(
            record.metadata.secret("client_secret"),
            Some(cli.emulator.credentials().client_secret.as_str()),
            "the secret used at login is kept with the login"
        );
    }
    let listed = cli.run(&["list", "--json"]).await.ok().json();
    let flows: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["flow"].as_str().unwrap())
        .collect();
    assert_eq!(flows, ["password"; 9]);
    assert!(!cli.dir.path().join("tokens.aliases.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_refreshes_with_its_own_secret_not_the_environment() {
    let cli = Cli::start().await;
    cli.login_web("prod").await.ok();
    // Another app's secret in the environment: the stored one is used.
    cli.run_env(
        &["refresh", "prod"],
        &[("SFAUTH_CLIENT_SECRET", "another-apps-secret")],
    )
    .await
    .ok();
    // Without the stored secret, the wrong one in the environment is what is sent, and the
    // app refuses it: the stored secret is what made the refresh above work.
    {
        use sfauth::storage::TokenStore as _;
        let store = cli.open_store().await;
        let mut record = cli.records().await.remove(0);
        let version = record.version;
        assert!(record.metadata.remove_secret("client_secret"));
        store.put(record, version, None).await.unwrap();
    }
    let refused = cli
        .run_env(
            &["refresh", "prod"],
            &[("SFAUTH_CLIENT_SECRET", "another-apps-secret")],
        )
        .await;
    assert_ne!(refused.code, 0, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_alias_file_is_folded_into_the_records() {
    let cli = Cli::start().await;
    login_password(&cli, "old").await.ok();
    // The state an earlier version left: records without settings, an alias file beside.
    let key = {
        use sfauth::storage::TokenStore as _;
        let store = cli.open_store().await;
        let mut record = cli.records().await.remove(0);
        let version = record.version;
        record.metadata = sfauth::storage::Metadata::new();
        let key = record.key.to_string();
        store.put(record, version, None).await.unwrap();
        key
    };
    let old_file = cli.dir.path().join("tokens.aliases.json");
    let old = serde_json::json!({
        "version": 1,
        "aliases": {
            "old": {
                "key": key,
                "host": {"kind": "custom_old_unused"},
                "client_id": cli.emulator.credentials().client_id,
                "flow": "password",
                "username": "legacy@example.com"
            },
            "gone": {
                "key": key.replace("|old", "|gone"),
                "host": {"kind": "production"},
                "client_id": "x",
                "flow": "web"
            }
        }
    });
    // The host as the old file wrote it: the same serde form the records now hold.
    let host = serde_json::to_value(
        cli.records().await[0]
            .key
            .login_host()
            .parse::<sfauth::oauth::LoginHost>()
            .unwrap(),
    )
    .unwrap();
    let mut old = old;
    old["aliases"]["old"]["host"] = host;
    std::fs::write(&old_file, serde_json::to_vec(&old).unwrap()).unwrap();

    let listed = cli.run(&["list", "--json"]).await;
    listed.ok();
    assert!(
        listed.stderr.contains("moved the settings of 1 alias"),
        "{listed:?}"
    );
    let rows = listed.json();
    assert_eq!(rows[0]["flow"], "password", "{rows}");
    assert_eq!(rows[0]["username"], "legacy@example.com");
    assert!(!old_file.exists());
    assert!(cli.dir.path().join("tokens.aliases.json.migrated").exists());
    let record = cli.records().await.remove(0);
    assert_eq!(record.metadata.get("flow"), Some("password"));
    // Once: the next command finds nothing to migrate.
    let again = cli.run(&["list", "--json"]).await.ok().stderr.clone();
    assert!(again.is_empty(), "{again}");
    cli.token("old").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_file_is_an_error_never_a_new_key() {
    let cli = Cli::start().await;
    cli.login_web("prod").await.ok();
    let key_file = cli.dir.path().join("tokens.db.key");
    std::fs::remove_file(&key_file).unwrap();
    cli.run(&["list"]).await.fails(1, "key file");
    cli.run(&["token", "prod"]).await.fails(1, "is missing");
    login_password(&cli, "other")
        .await
        .fails(1, "restore the key file");
    assert!(
        !key_file.exists(),
        "no key was made for a store full of logins"
    );
    // The emulator saw no login attempt: the store was checked first.
    assert_eq!(
        cli.emulator
            .counters()
            .grants
            .get("password")
            .copied()
            .unwrap_or(0),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_create_no_files_and_stores_keep_their_own_keys() {
    let cli = Cli::start().await;
    let dir = cli.dir.path().join("fresh");
    std::fs::create_dir(&dir).unwrap();
    let db = format!("sqlite://{}", dir.join("t.db").display());
    cli.run(&["token", "nosuch", "--store", &db])
        .await
        .fails(2, "no login named nosuch");
    cli.run(&["list", "--store", &db]).await.ok();
    cli.run(&["refresh", "--all", "--store", &db]).await.ok();
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing created"
    );
    cli.run(&["list", "--store", "sqlite:///dev/null"])
        .await
        .fails(2, "not a database file");
    assert!(!std::path::Path::new("/dev/null.key").exists());

    // `t.db` and `t.sqlite` each get a key of their own.
    let sqlite = format!("sqlite://{}", dir.join("t.sqlite").display());
    cli.login_web_env("a", &[("SFAUTH_STORE", &db)]).await.ok();
    cli.login_web_env("b", &[("SFAUTH_STORE", &sqlite)])
        .await
        .ok();
    let a = std::fs::read(dir.join("t.db.key")).unwrap();
    let b = std::fs::read(dir.join("t.sqlite.key")).unwrap();
    assert_ne!(a, b);
    assert!(!dir.join("t.key").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_reads_a_bounded_export_only() {
    let cli = Cli::start().await;
    cli.run_env(
        &["import", "/dev/zero"],
        &[("SFAUTH_EXPORT_PASSPHRASE", "long enough")],
    )
    .await
    .fails(2, "is not a file written by `sfauth export`");
    let big = cli.dir.path().join("big.sfauth");
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&big).unwrap();
        file.write_all(b"SFAUTH-EXPORT-1\n").unwrap();
        file.set_len(33 * 1024 * 1024).unwrap();
        file.flush().unwrap();
    }
    cli.run_env(
        &["import", big.to_str().unwrap()],
        &[("SFAUTH_EXPORT_PASSPHRASE", "long enough")],
    )
    .await
    .fails(2, "larger than 32 MiB");
    // The passphrase minimum holds for the environment variable too.
    cli.login_web("prod").await.ok();
    let out = cli.dir.path().join("x.sfauth");
    cli.run_env(
        &["export", "prod", "--output", out.to_str().unwrap()],
        &[("SFAUTH_EXPORT_PASSPHRASE", "short")],
    )
    .await
    .fails(2, "shorter than 8 characters");
    assert!(!out.exists());
}

/// Moves the record of `alias` under a key this store was never sealed with, as a login
/// written while the key file was lost would be.
async fn reseal_with_another_key(cli: &Cli, alias: &str) {
    use sfauth::storage::{Key, Keyring, SqliteStore, TokenStore as _};
    let record = cli
        .records()
        .await
        .into_iter()
        .find(|record| record.key.label() == alias)
        .unwrap();
    let store = cli.open_store().await;
    assert!(store.delete(&record.key, None).await.unwrap());
    let other = SqliteStore::open(cli.db_path(), Keyring::new(Key::generate()))
        .await
        .unwrap();
    other.insert(record).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_that_cannot_be_opened_is_listed_and_can_be_removed() {
    let cli = Cli::start().await;
    cli.login_web("good").await.ok();
    cli.login_web("bad").await.ok();
    reseal_with_another_key(&cli, "bad").await;

    let status = cli.run(&["status", "--json"]).await;
    status.ok();
    let rows = status.json();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["alias"], "bad");
    assert_eq!(rows[0]["status"], "unreadable");
    assert_eq!(rows[0]["reason"], "sealed with another key");
    assert!(rows[0]["instance_url"].is_null() && rows[0]["has_refresh_token"].is_null());
    assert!(!rows[0]["org_id"].as_str().unwrap().is_empty());
    assert_eq!(rows[1]["alias"], "good");
    assert_eq!(rows[1]["status"], "active");
    assert!(
        status.stderr.contains("`sfauth logout bad --force`"),
        "{status:?}"
    );
    let table = cli.run(&["status"]).await;
    table.ok();
    assert!(table.stdout.contains("unreadable"), "{table:?}");

    // Resolving an alias reads its own record only: the unreadable one is in nobody's way.
    cli.token("good").await;
    cli.run(&["whoami", "good"]).await.ok();
    cli.run(&["token", "bad"])
        .await
        .fails(1, "`sfauth logout bad --force`");
    let all = cli.run(&["refresh", "--all"]).await;
    assert_eq!(all.code, 1, "{all:?}");
    assert!(
        all.stdout
            .contains("1 refreshed, 1 failed, 0 need a new login"),
        "{all:?}"
    );

    // Without --force nothing is removed: the tokens could not be revoked.
    cli.run(&["logout", "bad"]).await.fails(1, "--force");
    assert_eq!(
        cli.run(&["status", "--json"])
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let removed = cli.run(&["remove", "bad", "--force"]).await;
    removed.ok();
    assert!(removed.stderr.contains("were not revoked"), "{removed:?}");
    let rows = cli.run(&["status", "--json"]).await.json();
    let aliases: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["alias"].as_str().unwrap())
        .collect();
    assert_eq!(aliases, ["good"]);
    cli.run(&["logout", "bad", "--force"])
        .await
        .fails(2, "no login named bad");

    // A readable login is revoked at Salesforce, then removed.
    let token = cli.token("good").await;
    let logout = cli.run(&["logout", "good"]).await;
    logout.ok();
    assert!(
        logout.stdout.contains("revoked its refresh token"),
        "{logout:?}"
    );
    assert!(cli.records().await.is_empty());
    let userinfo = reqwest::Client::new()
        .get(format!(
            "{}/services/oauth2/userinfo",
            cli.emulator.base_url()
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(userinfo.status(), 403, "the revoked session is dead");
}

/// The store passes `login`'s check, then fails when the tokens arrive: the login revokes the
/// tokens it could not keep, says so, and leaves nothing live at Salesforce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_whose_save_fails_revokes_what_it_got() {
    let cli = Cli::start().await;
    let client_id = cli.emulator.credentials().client_id.clone();
    let dir = cli.dir.path().join("filestore");
    let store = format!("file://{}", dir.display());
    let env = [("SFAUTH_STORE", store.as_str())];
    let run = cli
        .login_web_then("prod", &env, || {
            // The check has passed; the directory it checked is swapped for a regular file,
            // which no write can go into, whoever runs the test (root included).
            std::fs::rename(&dir, cli.dir.path().join("filestore.away")).unwrap();
            std::fs::write(&dir, b"not a directory").unwrap();
        })
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("failed while saving the login"),
        "{run:?}"
    );
    assert!(
        run.stderr
            .contains("the new refresh token was revoked at salesforce, so nothing was left live"),
        "{run:?}"
    );
    assert_eq!(
        cli.emulator.counters().requests("revoke"),
        1,
        "one revocation"
    );
    assert_eq!(cli.emulator.counters().grant("authorization_code"), 1);
    assert_eq!(
        cli.emulator.revoke_app_tokens(&client_id),
        0,
        "no token of the failed login is live at salesforce"
    );
    // The same count sees a login that was kept.
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(cli.dir.path().join("filestore.away"), &dir).unwrap();
    cli.login_web_env("prod", &env).await.ok();
    assert_eq!(cli.emulator.revoke_app_tokens(&client_id), 1);
}
