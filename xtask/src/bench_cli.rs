//! `cli_token_ms` for `cargo xtask bench` (issue #16): the wall time of `sfauth token ALIAS` as a
//! whole process (release build, a cached token, an SQLite store), the median of repeated runs.
//!
//! The emulator binary is started on a free port, one password-flow login is saved in a
//! temporary store, and `sfauth token` is run `RUNS` times after `WARMUP` runs; each run must
//! print the token and exit 0, or the figure is not written.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::cargo;

const RUNS: usize = 31;
const WARMUP: usize = 3;

/// The emulator's seeded login (see sfauth-emulator's `SEED_*` constants).
const CLIENT_ID: &str =
    "3MVG9sfauthEmulatorSeededConnectedAppConsumerKey0000000000000000000000000000001";
const CLIENT_SECRET: &str = "EMU0SEEDED0CONSUMER0SECRET0000000000000000000000000000000000001";
const USERNAME: &str = "admin@emulator.sfauth.test";
const PASSWORD: &str = "emulator-password-1EMUSECTOKEN0000000000001";

/// Builds both binaries in release mode and returns the median in milliseconds.
pub(crate) fn cli_token_ms(target: &Path, scratch: &Path) -> Result<f64> {
    let status = cargo()
        .args(["build", "--release", "-p", "sfauth-cli", "--bin", "sfauth"])
        .args(["-p", "sfauth-emulator", "--bin", "sfauth-emulator"])
        .status()
        .context("cannot start cargo build")?;
    if !status.success() {
        bail!("building sfauth and the emulator failed ({status})");
    }
    let release = target.join("release");
    let mut emulator = Command::new(release.join("sfauth-emulator"))
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the emulator")?;
    let result = (|| {
        let stdout = emulator.stdout.take().context("the emulator's stdout")?;
        let mut base = None;
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if let Some(url) = line.trim().strip_prefix("login URL") {
                base = Some(url.trim().to_owned());
                break;
            }
        }
        let base = base.context("the emulator printed no login URL")?;
        measure(&release.join("sfauth"), &base, scratch)
    })();
    let _ = emulator.kill();
    let _ = emulator.wait();
    result
}

fn measure(sfauth: &Path, base: &str, scratch: &Path) -> Result<f64> {
    let home: PathBuf = scratch.join("cli-token");
    if home.exists() {
        std::fs::remove_dir_all(&home).with_context(|| format!("removing {}", home.display()))?;
    }
    std::fs::create_dir_all(&home)?;
    let run = |args: &[&str]| {
        let mut command = Command::new(sfauth);
        command
            .args(args)
            .env_clear()
            .env("HOME", &home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env(
                "SFAUTH_STORE",
                format!("sqlite://{}", home.join("t.db").display()),
            )
            .env("SFAUTH_INSTANCE", base)
            .env("SFAUTH_CLIENT_ID", CLIENT_ID)
            .env("SFAUTH_CLIENT_SECRET", CLIENT_SECRET)
            .env("SFAUTH_PASSWORD", PASSWORD)
            .stdin(Stdio::null());
        command
    };
    let login = run(&["login", "password", "--username", USERNAME, "--alias", "b"])
        .output()
        .context("running sfauth login")?;
    if !login.status.success() {
        bail!(
            "sfauth login failed: {}",
            String::from_utf8_lossy(&login.stderr)
        );
    }
    let mut times = Vec::with_capacity(RUNS);
    for i in 0..WARMUP + RUNS {
        let started = Instant::now();
        let output = run(&["token", "b"])
            .output()
            .context("running sfauth token")?;
        let elapsed = started.elapsed();
        if !output.status.success() || output.stdout.len() < 20 {
            bail!(
                "sfauth token failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        if i >= WARMUP {
            times.push(elapsed.as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}
