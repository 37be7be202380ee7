//! Shared helpers of the binary tests: an emulator on loopback, a temporary store, and the
//! built `sfauth` binary run with a clean environment.

#![allow(dead_code, reason = "each test file uses a different subset")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test on any error"
)]

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sfauth_emulator::{Clock, Emulator, EmulatorBuilder};
use tempfile::TempDir;

/// A running emulator, a temporary home and store, and the binary.
pub(crate) struct Cli {
    pub(crate) emulator: Emulator,
    pub(crate) dir: TempDir,
    pub(crate) store: String,
}

/// What a run of the binary gave.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    #[track_caller]
    pub(crate) fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "expected success: {self:?}");
        self
    }

    #[track_caller]
    pub(crate) fn fails(&self, code: i32, needle: &str) -> &Self {
        assert_eq!(self.code, code, "expected exit {code}: {self:?}");
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {self:?}"
        );
        assert_eq!(
            self.stderr.trim().lines().count(),
            1,
            "an error is one line: {self:?}"
        );
        self
    }
}

pub(crate) fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sfauth"))
}

impl Cli {
    pub(crate) async fn start() -> Self {
        Self::start_with(|b| b).await
    }

    pub(crate) async fn start_with(
        configure: impl FnOnce(EmulatorBuilder) -> EmulatorBuilder,
    ) -> Self {
        let builder = Emulator::builder()
            .auto_approve(true)
            .clock(Clock::manual_now())
            .app_policy(|p| p.rotation = true)
            .settings(|s| s.device_interval_secs = 1);
        let emulator = configure(builder).start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = format!("sqlite://{}", dir.path().join("tokens.db").display());
        Self {
            emulator,
            dir,
            store,
        }
    }

    /// The environment every run gets: this test's store, home and emulator.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        let creds = self.emulator.credentials();
        let path = |p: PathBuf| p.display().to_string();
        vec![
            ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
            ("HOME".into(), path(self.dir.path().to_path_buf())),
            (
                "XDG_CONFIG_HOME".into(),
                path(self.dir.path().join("config")),
            ),
            ("XDG_DATA_HOME".into(), path(self.dir.path().join("data"))),
            ("SFAUTH_STORE".into(), self.store.clone()),
            (
                "SFAUTH_INSTANCE".into(),
                self.emulator.base_url().to_owned(),
            ),
            ("SFAUTH_CLIENT_ID".into(), creds.client_id.clone()),
            ("SFAUTH_CLIENT_SECRET".into(), creds.client_secret.clone()),
        ]
    }

    /// The binary with a clean environment: this test's store, home and emulator.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary());
        command
            .args(args)
            .env_clear()
            .envs(self.env())
            .stdin(Stdio::null());
        command
    }

    /// Runs the binary (off the async threads, so the emulator keeps serving).
    pub(crate) async fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[]).await
    }

    /// `sfauth token ALIAS`, which must succeed; its stdout is the token.
    pub(crate) async fn token(&self, alias: &str) -> String {
        self.run(&["token", alias])
            .await
            .ok()
            .stdout
            .trim()
            .to_owned()
    }

    pub(crate) async fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = self.command(args);
        for (name, value) in env {
            command.env(name, value);
        }
        tokio::task::spawn_blocking(move || command.output().unwrap().into())
            .await
            .unwrap()
    }

    /// `sfauth login web --no-browser --port 0 --alias ALIAS`, with a plain HTTP client as the
    /// browser: it registers the printed callback URL on the emulator's app and follows the
    /// redirects to the CLI's listener.
    pub(crate) async fn login_web(&self, alias: &str) -> Run {
        self.login_web_env(alias, &[]).await
    }

    pub(crate) async fn login_web_env(&self, alias: &str, env: &[(&str, &str)]) -> Run {
        self.login_web_then(alias, env, || {}).await
    }

    /// [`Self::login_web_env`], running `before_approval` once the login has started (its
    /// store checked, its URL printed) and before the browser approves it.
    pub(crate) async fn login_web_then(
        &self,
        alias: &str,
        env: &[(&str, &str)],
        before_approval: impl FnOnce(),
    ) -> Run {
        let mut command = self.command(&[
            "login",
            "web",
            "--no-browser",
            "--port",
            "0",
            "--alias",
            alias,
            "--timeout",
            "30",
        ]);
        for (name, value) in env {
            command.env(name, value);
        }
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (found, url_line) = std::sync::mpsc::channel::<Option<String>>();
        // Reads all of stderr, so that the child never writes into a closed pipe.
        let reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut seen = String::new();
            let mut sent = false;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    if !sent {
                        let _ = found.send(None);
                    }
                    return seen;
                }
                if !sent && line.starts_with("http") {
                    let _ = found.send(Some(line.trim().to_owned()));
                    sent = true;
                }
                seen.push_str(&line);
            }
        });
        let url = tokio::task::spawn_blocking(move || url_line.recv().ok().flatten())
            .await
            .unwrap();
        if let Some(url) = url {
            before_approval();
            let url = url::Url::parse(&url).unwrap();
            self.register_callback(&url);
            let response = reqwest::Client::new()
                .get(url.as_str())
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success(), "{response:?}");
            let body = response.text().await.unwrap();
            assert!(body.contains("Logged in"), "{body}");
        }
        tokio::task::spawn_blocking(move || {
            let output = child.wait_with_output().unwrap();
            let mut run: Run = output.into();
            run.stderr = reader.join().unwrap();
            run
        })
        .await
        .unwrap()
    }

    /// Registers the `redirect_uri` of an authorization URL on the seeded app.
    pub(crate) fn register_callback(&self, authorize: &url::Url) {
        let redirect = authorize
            .query_pairs()
            .find(|(k, _)| k == "redirect_uri")
            .map(|(_, v)| v.into_owned())
            .unwrap();
        let client_id = self.emulator.credentials().client_id.clone();
        self.emulator
            .update_app(&client_id, |app| app.callback_urls.push(redirect))
            .unwrap();
    }

    pub(crate) fn db_path(&self) -> PathBuf {
        self.dir.path().join("tokens.db")
    }

    /// The default test store, opened as the next process would (its own key file).
    pub(crate) async fn open_store(&self) -> sfauth::storage::SqliteStore {
        let keyring =
            sfauth::storage::Keyring::from_key_file(&self.dir.path().join("tokens.db.key"))
                .unwrap();
        sfauth::storage::SqliteStore::open(self.db_path(), keyring)
            .await
            .unwrap()
    }

    /// Every record of the default test store.
    pub(crate) async fn records(&self) -> Vec<sfauth::storage::TokenRecord> {
        use sfauth::storage::{ListQuery, TokenStoreExt as _};
        self.open_store()
            .await
            .list_all(&ListQuery::new())
            .await
            .unwrap()
    }
}

/// Waits a little for something eventually true.
pub(crate) async fn eventually(mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition never became true");
}
