//! Project automation for sfauth, run as `cargo xtask <command>`.
//!
//! Commands live in one module each, so a new one is a new file and a line in [`main`]. Only
//! `anyhow` (and `serde_json`, for the bench figures) is allowed here as a dependency; the rest
//! is the standard library and `cargo`.
//!
//! Two commands need cargo subcommands that `.ci/run` installs when missing:
//!
//! - `fuzz` needs cargo-fuzz. `cargo xtask fuzz --smoke` is a step of `ci`;
//!   `cargo xtask fuzz --seconds 600` (ten minutes per target) is the run to make before
//!   closing work on a parser or decoder, `--cmin` keeps what it found in the committed corpus.
//!   See [`fuzz`].
//! - `ci` and `audit` need cargo-deny. `ci` checks licenses, bans and sources against
//!   `deny.toml`; `audit` checks the RustSec advisories, which it downloads, so it runs only
//!   where a network exists (the CI machines have none). See [`deny`].

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool reports to the terminal"
)]

mod bench;
mod bench_cli;
mod ci;
mod demo;
mod deny;
mod fuzz;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  audit  cargo deny check advisories (needs cargo-deny and a network for the advisory database)
  bench  the benchmarks and their targets, every figure written to target/bench/summary.json;
         `bench cli` takes only sfauth token's process wall time
  ci     everything CI checks: fmt, clippy, docs, cargo deny (licenses, bans, sources), a fuzz
         smoke run and the whole test suite (tidy among its tests)
  demo   the CLI demo against the embedded emulator (cargo run -p sfauth-cli -- demo)
  fuzz   the fuzz targets in fuzz/ (needs cargo-fuzz): --smoke (15s each), --seconds N per
         target (60 by default; 600 before closing parser work), --cmin to keep the corpus,
         or name targets
  tidy   repository rules: module docs, lint settings, the crates' dependency direction";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("audit") => deny::audit(),
        Some("bench") => bench::run(&args[1..]),
        Some("ci") => ci::run(),
        Some("demo") => demo::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("tidy") => tidy::run(),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: xtask always lives one level below it.
fn project_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The `cargo` that runs us, so a toolchain chosen by rustup is kept for nested calls.
/// `cargo metadata --no-deps` of the workspace, parsed.
fn cargo_metadata() -> anyhow::Result<serde_json::Value> {
    use anyhow::Context as _;
    let output = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("running cargo metadata")?;
    if !output.status.success() {
        anyhow::bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).context("parsing cargo metadata")
}

fn cargo() -> std::process::Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command.current_dir(project_root());
    command
}
