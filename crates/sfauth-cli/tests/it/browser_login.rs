//! A real browser completes `sfauth login web`: headless Chromium, driven over WebDriver
//! (chromedriver + fantoccini), fills in and submits the emulator's login form, approves the
//! consent page, and lands on the CLI's loopback callback; the CLI stores the tokens and
//! `sfauth token --alias X` then works.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without them the
//! test skips loudly, except under `CI=true`, where it fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "tests fail on any error, and say loudly when they skip"
)]

use crate::common;

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::Cli;
use fantoccini::{ClientBuilder, Locator};

/// The first of `names` found on `PATH` or at the given absolute paths.
fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|name| {
        let direct = PathBuf::from(name);
        if direct.is_absolute() {
            return direct.is_file().then_some(direct);
        }
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// Kills the chromedriver this test started when the test ends, however it ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_completes_login_web() {
    let chromium = find(&["chromium", "chromium-browser", "google-chrome"]);
    let driver = find(&["chromedriver", "/usr/lib/chromium/chromedriver"]);
    let (Some(chromium), Some(driver)) = (chromium, driver) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium and chromedriver are required under CI=true (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "SKIPPED: chromium or chromedriver is not installed (apt-get install chromium chromium-driver); the real-browser login test did not run"
        );
        return;
    };

    let cli = Cli::start_with(|b| b.auto_approve(false)).await;
    let creds = cli.emulator.credentials().clone();

    // chromedriver on a free port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _driver = Driver(
        Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let webdriver = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..100 {
        if http.get(format!("{webdriver}/status")).send().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "chromedriver did not start");

    // The CLI waits for its callback and prints the login URL.
    let mut command = cli.command(&[
        "login",
        "web",
        "--no-browser",
        "--port",
        "0",
        "--alias",
        "browser",
        "--timeout",
        "60",
    ]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (found, url_line) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut seen = String::new();
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if line.starts_with("http") {
                let _ = found.send(line.trim().to_owned());
            }
            seen.push_str(&line);
            line.clear();
        }
        seen
    });
    let url = tokio::task::spawn_blocking(move || url_line.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the CLI printed no login URL");
    let url = url::Url::parse(&url).unwrap();
    cli.register_callback(&url);

    let profile = tempfile::tempdir().unwrap();
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({
            "binary": chromium.display().to_string(),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let browser = ClientBuilder::rustls()
        .unwrap()
        .capabilities(capabilities)
        .connect(&webdriver)
        .await
        .expect("chromedriver refused the session");

    let result = async {
        browser.goto(url.as_str()).await?;
        let username = browser.wait().for_element(Locator::Id("username")).await?;
        username.clear().await?;
        username.send_keys(&creds.username).await?;
        browser
            .find(Locator::Id("pw"))
            .await?
            .send_keys(&creds.password)
            .await?;
        browser.find(Locator::Id("Login")).await?.click().await?;
        browser
            .wait()
            .for_element(Locator::Id("oaapprove"))
            .await?
            .click()
            .await?;
        let done = browser
            .wait()
            .for_element(Locator::Id("sfauth-result"))
            .await?;
        done.text().await
    }
    .await;
    let _ = browser.close().await;
    let heading = result.expect("the browser could not complete the login");
    assert_eq!(heading, "Logged in");

    let login: common::Run = tokio::task::spawn_blocking(move || {
        let output = child.wait_with_output().unwrap();
        let mut run: common::Run = output.into();
        run.stderr = reader.join().unwrap();
        run
    })
    .await
    .unwrap();
    login.ok();
    assert!(login.stdout.contains("saved as alias browser"), "{login:?}");

    let token = cli.run(&["token", "--alias", "browser"]).await;
    token.ok();
    assert!(!token.stdout.trim().is_empty());
    let whoami = cli.run(&["whoami", "browser", "--json"]).await;
    assert_eq!(whoami.ok().json()["username"], creds.username.as_str());
}
