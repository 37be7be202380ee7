//! The daily commands against the emulator over TCP: `api` (with the refresh on a dead
//! session and the exit code of a status), `open` (the single-access frontdoor URL, its
//! fallback, and the browser), `import --from-sf` (sf's files written here in both key
//! versions), `doctor` and the dynamic completion of aliases.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail on any error"
)]

use crate::common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use aes_gcm::aead::{Aead as _, KeyInit as _};
use aes_gcm::{Aes256Gcm, Nonce};
use common::Cli;

const THREE_HOURS: Duration = Duration::from_secs(3 * 3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_sends_with_the_token_refreshes_once_and_exits_by_status() {
    let cli = Cli::start().await;
    cli.login_web("dev").await.ok();
    let before = cli.token("dev").await;

    let limits = cli
        .run(&["api", "dev", "GET", "/services/data/v62.0/limits"])
        .await;
    limits.ok();
    let json = limits.json();
    assert!(json["DailyApiRequests"]["Max"].is_number(), "{limits:?}");

    // The access token dies: the request refreshes once and succeeds with the new token.
    cli.emulator.advance(THREE_HOURS);
    let query = cli
        .run(&[
            "api",
            "dev",
            "get",
            "/services/data/v62.0/query?q=SELECT+Name+FROM+Account",
        ])
        .await;
    query.ok();
    assert!(query.json()["records"].is_array(), "{query:?}");
    assert_ne!(cli.token("dev").await, before, "the refresh was saved");
    assert!(!query.stderr.contains(&before));

    // A body from stdin, a header, and a status that is an error: its body on stdout, exit 1.
    let mut command = cli.command(&[
        "api",
        "--alias",
        "dev",
        "POST",
        "/services/data/v62.0/nothing/here",
        "--body",
        "-",
        "--header",
        "X-Test: 1",
    ]);
    command.stdin(std::process::Stdio::piped());
    command.stdout(std::process::Stdio::piped());
    command.stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(br#"{"Name":"x"}"#)
            .unwrap();
    }
    let run: common::Run = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
        .into();
    run.fails(1, "answered 404 NOT_FOUND");
    assert!(run.stdout.contains("NOT_FOUND"), "{run:?}");

    // Bad input: usage errors, nothing sent.
    cli.run(&["api", "dev", "GET", "https://evil.test/x"])
        .await
        .fails(2, "not a path on the instance");
    cli.run(&["api", "dev", "FETCH", "/services/data"])
        .await
        .fails(2, "not an HTTP method");
    cli.run(&[
        "api",
        "dev",
        "GET",
        "/services/data",
        "-H",
        "Authorization: x",
    ])
    .await
    .fails(2, "set by sfauth");
    cli.run(&["api", "nosuch", "GET", "/services/data"])
        .await
        .fails(2, "no login named nosuch");
    let big = cli.dir.path().join("big.json");
    std::fs::write(&big, vec![b' '; 32 * 1024 * 1024 + 1]).unwrap();
    cli.run(&[
        "api",
        "dev",
        "POST",
        "/services/data",
        "--body",
        big.to_str().unwrap(),
    ])
    .await
    .fails(2, "larger than 32 MiB");

    // A revoked login: the refresh is refused, exit 3.
    let client_id = cli.emulator.credentials().client_id.clone();
    cli.emulator.revoke_app_tokens(&client_id);
    cli.run(&["api", "dev", "GET", "/services/data/v62.0/limits"])
        .await
        .fails(3, "needs a new login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_prints_a_one_time_frontdoor_url_or_opens_the_browser() {
    let cli = Cli::start().await;
    cli.login_web_env("ui", &[("SFAUTH_SCOPES", "api web id refresh_token")])
        .await
        .ok();
    let token = cli.token("ui").await;
    let run = cli
        .run(&[
            "open",
            "ui",
            "--url-only",
            "--path",
            "/lightning/setup/SetupOneHome/home",
        ])
        .await;
    run.ok();
    assert!(
        run.stderr
            .contains("warning: this URL logs whoever opens it")
    );
    let url = url::Url::parse(run.stdout.trim()).unwrap();
    assert_eq!(url.path(), "/secur/frontdoor.jsp");
    assert!(url.query_pairs().any(|(k, _)| k == "otp"), "{url}");
    assert!(!run.stdout.contains(&token), "the otp URL carries no token");

    // The URL opens a session once, on the path asked for.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let first = client.get(url.as_str()).send().await.unwrap();
    assert_eq!(first.status(), 302);
    assert_eq!(
        first.headers()["location"],
        "/lightning/setup/SetupOneHome/home"
    );
    assert!(first.headers().contains_key("set-cookie"));
    let again = client.get(url.as_str()).send().await.unwrap();
    assert!(
        again.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/?ec=302")
    );

    // Without --url-only the URL goes to the browser, never to stdout.
    let seen = cli.dir.path().join("browser.txt");
    let browser = cli.dir.path().join("browser.sh");
    std::fs::write(
        &browser,
        format!("#!/bin/sh\nprintf '%s' \"$1\" > {}\n", seen.display()),
    )
    .unwrap();
    std::fs::set_permissions(&browser, std::fs::Permissions::from_mode(0o755)).unwrap();
    let opened = cli
        .run_env(&["open", "ui"], &[("BROWSER", browser.to_str().unwrap())])
        .await;
    opened.ok();
    assert_eq!(opened.stdout, "");
    common::eventually(|| seen.exists()).await;
    let sent = std::fs::read_to_string(&seen).unwrap();
    assert!(sent.contains("/secur/frontdoor.jsp?otp="), "{sent}");

    // A token without the web scope: the fallback with the session id, said on stderr.
    cli.login_web("api-only").await.ok();
    let token = cli.token("api-only").await;
    let run = cli.run(&["open", "api-only", "--url-only"]).await;
    run.ok();
    assert!(run.stderr.contains("answered 403"), "{run:?}");
    let url = url::Url::parse(run.stdout.trim()).unwrap();
    assert!(url.query_pairs().any(|(k, v)| k == "sid" && v == token));

    cli.run(&["open", "ui", "--url-only", "--path", "https://evil.test"])
        .await
        .fails(2, "not a path on the instance");
}

/// Seals `plain` as sf does: `<iv><ciphertext-hex>:<tag-hex>`, v1 (32-character key used as
/// ASCII, 12-character ASCII IV) or v2 (64 hex digits, 24-hex-digit IV).
fn sf_seal(key: &str, plain: &str, iv_seed: u8) -> String {
    let (cipher_key, iv_text, iv): (Vec<u8>, String, Vec<u8>) = if key.len() == 32 {
        let iv_text = hex::encode([iv_seed; 6]);
        (
            key.as_bytes().to_vec(),
            iv_text.clone(),
            iv_text.into_bytes(),
        )
    } else {
        let iv = vec![iv_seed; 12];
        (hex::decode(key).unwrap(), hex::encode(&iv), iv)
    };
    let cipher = Aes256Gcm::new_from_slice(&cipher_key).unwrap();
    let sealed = cipher
        .encrypt(Nonce::from_slice(&iv), plain.as_bytes())
        .unwrap();
    let (body, tag) = sealed.split_at(sealed.len() - 16);
    format!("{iv_text}{}:{}", hex::encode(body), hex::encode(tag))
}

struct Tokens {
    access: String,
    refresh: String,
    instance: String,
    org: String,
    user: String,
}

/// Logs in with the web flow into a scratch store and reads back what Salesforce issued.
async fn issued(cli: &Cli, alias: &str) -> Tokens {
    cli.login_web(alias).await.ok();
    let record = cli
        .records()
        .await
        .into_iter()
        .find(|r| r.key.label() == alias)
        .unwrap();
    let tokens = record.tokens;
    Tokens {
        access: tokens.access_token.expose_secret().to_owned(),
        refresh: tokens
            .refresh_token
            .as_ref()
            .unwrap()
            .expose_secret()
            .to_owned(),
        instance: tokens.instance_url.to_string(),
        org: record.key.org_id().to_string(),
        user: record.key.user_id().to_string(),
    }
}

fn write_sf_home(
    home: &Path,
    key: &str,
    logins: &[(&str, serde_json::Value)],
    aliases: &[(&str, &str)],
) {
    let sfdx = home.join(".sfdx");
    std::fs::create_dir_all(&sfdx).unwrap();
    let key_json = sfdx.join("key.json");
    std::fs::write(
        &key_json,
        serde_json::json!({"account": "local", "key": key, "service": "sfdx"}).to_string(),
    )
    .unwrap();
    std::fs::set_permissions(&key_json, std::fs::Permissions::from_mode(0o600)).unwrap();
    for (username, json) in logins {
        std::fs::write(sfdx.join(format!("{username}.json")), json.to_string()).unwrap();
    }
    let orgs: serde_json::Map<String, serde_json::Value> = aliases
        .iter()
        .map(|(a, u)| ((*a).to_owned(), serde_json::Value::from(*u)))
        .collect();
    std::fs::write(
        sfdx.join("alias.json"),
        serde_json::json!({ "orgs": orgs }).to_string(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_from_sf_reads_both_key_versions_and_moves_the_refresh_token() {
    let cli = Cli::start().await;
    let creds = cli.emulator.credentials().clone();
    let base = cli.emulator.base_url().to_owned();
    let v2_key = "0123456789abcdef".repeat(4);
    let v1_key = "fedcba9876543210fedcba9876543210";

    // v2 key, a refresh token and the app's secret, trailing slashes, an sf alias.
    let a = issued(&cli, "scratch-a").await;
    let home_a = cli.dir.path().join("home-a");
    let file_a = serde_json::json!({
        "orgId": a.org, "userId": a.user, "username": "ada@example.com",
        "accessToken": sf_seal(&v2_key, &a.access, 1),
        "refreshToken": sf_seal(&v2_key, &a.refresh, 2),
        "clientId": creds.client_id,
        "clientSecret": sf_seal(&v2_key, &creds.client_secret, 3),
        "instanceUrl": a.instance, "loginUrl": format!("{base}/"),
        "isDevHub": false, "instanceApiVersion": "62.0",
    });
    write_sf_home(
        &home_a,
        &v2_key,
        &[("ada@example.com", file_a)],
        &[("acme", "ada@example.com")],
    );
    let env_a = [
        ("HOME", home_a.to_str().unwrap()),
        ("SF_USE_GENERIC_UNIX_KEYCHAIN", "true"),
        ("SFAUTH_CLIENT_SECRET", ""),
    ];
    let run = cli
        .run_env(&["import", "--from-sf", "acme", "--move"], &env_a)
        .await;
    run.ok();
    assert!(run.stdout.contains("as alias acme"), "{run:?}");
    assert!(run.stderr.contains("moved"), "{run:?}");
    for secret in [&a.access, &a.refresh, &creds.client_secret] {
        assert!(!run.stdout.contains(secret.as_str()) && !run.stderr.contains(secret.as_str()));
    }
    let sf_file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(home_a.join(".sfdx/ada@example.com.json")).unwrap(),
    )
    .unwrap();
    assert!(sf_file.get("refreshToken").is_none(), "moved out of sf");
    assert!(sf_file.get("accessToken").is_some(), "the rest is kept");
    assert!(
        !home_a
            .join(".sfdx/ada@example.com.json.token-rotation.lock")
            .exists()
    );
    assert_eq!(cli.token("acme").await, a.access);
    // The imported refresh token and secret work: after expiry (on the emulator's clock, so
    // found by the 401), a refresh with rotation, saved.
    cli.emulator.advance(THREE_HOURS);
    cli.run(&["api", "acme", "GET", "/services/data/v62.0/limits"])
        .await
        .ok();
    assert_ne!(cli.token("acme").await, a.access);
    cli.run(&["whoami", "acme"]).await.ok();
    // Imported again: the alias exists.
    cli.run_env(
        &["import", "--from-sf", "ada@example.com", "--as", "acme"],
        &env_a,
    )
    .await
    .fails(2, "already exists");

    // v1 key; no refresh token, no secret, no user id, no client id (PlatformCLI would be
    // refused by the emulator, so an access-token login with the seeded app's id is
    // written instead), and a second one copied without --move.
    let b = issued(&cli, "scratch-b").await;
    let c = issued(&cli, "scratch-c").await;
    let home_b = cli.dir.path().join("home-b");
    let file_b = serde_json::json!({
        "orgId": b.org, "username": "bob@example.com",
        "accessToken": sf_seal(v1_key, &b.access, 4),
        "clientId": creds.client_id,
        "instanceUrl": format!("{}/", b.instance.trim_end_matches('/')), "loginUrl": format!("{base}/"),
    });
    let file_c = serde_json::json!({
        "orgId": c.org, "userId": c.user, "username": "cy@example.com",
        "accessToken": sf_seal(v1_key, &c.access, 5),
        "refreshToken": sf_seal(v1_key, &c.refresh, 6),
        "clientId": creds.client_id,
        "instanceUrl": c.instance, "loginUrl": base,
    });
    write_sf_home(
        &home_b,
        v1_key,
        &[("bob@example.com", file_b), ("cy@example.com", file_c)],
        &[],
    );
    let env_b = [
        ("HOME", home_b.to_str().unwrap()),
        ("SF_USE_GENERIC_UNIX_KEYCHAIN", "true"),
    ];
    cli.run_env(&["import", "--from-sf"], &env_b)
        .await
        .fails(2, "bob@example.com, cy@example.com");
    let run = cli.run_env(&["import", "--from-sf", "--all"], &env_b).await;
    run.ok();
    assert!(run.stdout.contains("2 logins imported"), "{run:?}");
    assert!(
        run.stderr.contains("bob@example.com has no refresh token"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains("now in both sf and sfauth"),
        "said plainly: {run:?}"
    );
    assert_eq!(cli.token("bob@example.com").await, b.access);
    assert_eq!(cli.token("cy@example.com").await, c.access);
    let sf_c: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(home_b.join(".sfdx/cy@example.com.json")).unwrap(),
    )
    .unwrap();
    assert!(sf_c.get("refreshToken").is_some(), "copied, not moved");

    // A wrong key: nothing imported, and the reason names no secret.
    let home_bad = cli.dir.path().join("home-bad");
    write_sf_home(
        &home_bad,
        &"9".repeat(32),
        &[(
            "cy@example.com",
            serde_json::from_str(
                &std::fs::read_to_string(home_b.join(".sfdx/cy@example.com.json")).unwrap(),
            )
            .unwrap(),
        )],
        &[],
    );
    let run = cli
        .run_env(
            &["import", "--from-sf", "cy@example.com", "--as", "bad"],
            &[
                ("HOME", home_bad.to_str().unwrap()),
                ("SF_USE_GENERIC_UNIX_KEYCHAIN", "true"),
            ],
        )
        .await;
    run.fails(1, "cannot decrypt the accessToken");
    assert!(!run.stderr.contains(&c.access));
    cli.run_env(&["import", "--from-sf", "nobody@example.com"], &env_b)
        .await
        .fails(2, "sf has no login named nobody@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_each_check_and_completion_lists_aliases() {
    let cli = Cli::start().await;
    cli.login_web("dev").await.ok();
    let run = cli.run(&["doctor", "dev", "--json"]).await;
    run.ok();
    let json = run.json();
    assert_eq!(json["ok"], true, "{run:?}");
    let status = |name: &str| {
        json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {json}"))["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(status("refresh token"), "ok");
    assert_eq!(status("pkce"), "ok");
    assert_eq!(status("idle"), "ok");
    assert_eq!(status("scopes"), "ok");
    assert_eq!(status("instance"), "ok");
    assert_eq!(status("clock"), "ok");
    assert_eq!(status("store key"), "ok");
    assert_eq!(status("rotation"), "unknown", "not recorded, not guessed");

    // A key file others can read fails, with its fix; the text form has one line per check.
    let key = cli.dir.path().join("tokens.db.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = cli.run(&["doctor", "dev"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("FAIL     store key"), "{run:?}");
    assert!(
        run.stdout
            .contains(&format!("fix: chmod 600 {}", key.display()))
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Completion: aliases from the store.
    cli.login_web("prod-eu").await.ok();
    let run = cli
        .run_env(&["--", "sfauth", "token", "pro"], &[("COMPLETE", "fish")])
        .await;
    run.ok();
    let words: Vec<&str> = run
        .stdout
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(words, ["prod-eu"], "{run:?}");
    let run = cli
        .run_env(&["--", "sfauth", "whoami", ""], &[("COMPLETE", "fish")])
        .await;
    let words: Vec<&str> = run
        .stdout
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .filter(|w| !w.starts_with('-'))
        .collect();
    assert_eq!(words, ["dev", "prod-eu"], "{run:?}");
}
