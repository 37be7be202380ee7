//! `cargo xtask fuzz [--seconds N] [TARGET ...]`: runs the coverage-guided fuzz targets in
//! `fuzz/` (libFuzzer through cargo-fuzz) for a while each; all of them without names.
//!
//! cargo-fuzz instruments with `-Z` flags, which a stable compiler accepts only with
//! `RUSTC_BOOTSTRAP=1`; this machine has no other toolchain, so that is set here, for this
//! command only. A crash fails the command and leaves its input under `fuzz/artifacts/`.

use anyhow::{Context, Result, bail};

use crate::{cargo, project_root};

/// The targets, as named in `fuzz/Cargo.toml`.
const TARGETS: &[&str] = &["token_response", "token_key", "rest_classify"];

/// Seconds per target when not told.
const DEFAULT_SECONDS: u64 = 60;

pub(crate) fn run(args: &[String]) -> Result<()> {
    let mut seconds = DEFAULT_SECONDS;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|value| value.parse().ok())
                    .context("--seconds needs a whole number")?;
            }
            name if TARGETS.contains(&name) => targets.push(name),
            other => bail!(
                "fuzz: unknown argument {other:?} (expected --seconds N or a target: {})",
                TARGETS.join(", ")
            ),
        }
    }
    if targets.is_empty() {
        targets.extend(TARGETS);
    }
    let installed = cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !installed {
        bail!("cargo-fuzz is not installed: run `cargo install cargo-fuzz`, then this again");
    }
    for target in targets {
        println!("fuzz: {target} for {seconds}s");
        let status = cargo()
            .current_dir(project_root().join("fuzz"))
            .args([
                "fuzz",
                "run",
                target,
                "--",
                &format!("-max_total_time={seconds}"),
            ])
            .env("RUSTC_BOOTSTRAP", "1")
            .status()
            .with_context(|| format!("cannot start cargo fuzz for {target}"))?;
        if !status.success() {
            bail!("fuzz: {target} failed ({status}); the input is under fuzz/artifacts/{target}/");
        }
    }
    println!("fuzz: no target crashed");
    Ok(())
}
