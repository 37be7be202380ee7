//! The `sfauth-emulator` binary: prints usable credentials, reads a TOML configuration.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Starts the binary and reads its banner up to the callback URL line.
fn start(args: &[&str]) -> (Child, HashMap<String, String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sfauth-emulator"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut banner = HashMap::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(url) = line.strip_prefix("sfauth-emulator listening on ") {
            banner.insert("base".to_owned(), url.to_owned());
        }
        let mut parts = line.trim().splitn(2, "  ");
        if let (Some(k), Some(v)) = (parts.next(), parts.next()) {
            banner.insert(k.trim().to_owned(), v.trim().to_owned());
        }
        if line.trim_start().starts_with("callback URL") {
            break;
        }
    }
    (child, banner)
}

async fn password_grant(banner: &HashMap<String, String>) -> u16 {
    let password = format!("{}{}", banner["password"], banner["security token"]);
    reqwest::Client::new()
        .post(format!("{}/services/oauth2/token", banner["base"]))
        .form(&[
            ("grant_type", "password"),
            ("client_id", &banner["client id"]),
            ("client_secret", &banner["client secret"]),
            ("username", &banner["username"]),
            ("password", &password),
        ])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn prints_seeded_credentials_that_work() {
    let (mut child, banner) = start(&["--port", "0"]);
    assert_eq!(banner["username"], sfauth_emulator::SEED_USERNAME);
    assert_eq!(
        banner["callback URL"],
        "http://localhost:1717/OauthRedirect"
    );
    let status = password_grant(&banner).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn reads_the_example_configuration() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/emulator.example.toml");
    let (mut child, banner) = start(&["--port", "0", "--config", config]);
    assert_eq!(banner["username"], "integration@acme.test");
    assert_eq!(banner["org id"], "00D5e000000ACMEEA4");
    // The example app does not allow the password flow.
    let status = password_grant(&banner).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(status, 400);
}

#[test]
fn a_bad_configuration_fails_to_start() {
    let dir = std::env::temp_dir().join(format!("sfauth-emulator-bad-{}.toml", std::process::id()));
    std::fs::write(&dir, "orgs = 5").unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_sfauth-emulator"))
        .args(["--port", "0", "--config", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    std::fs::remove_file(&dir).unwrap();
    assert!(!status.success());
}
