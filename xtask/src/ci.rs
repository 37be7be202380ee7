//! `cargo xtask ci`: every check CI makes, in the order that fails fastest: fmt, clippy, docs,
//! the supply-chain policy (`cargo deny check licenses bans sources`, see [`crate::deny`]), a
//! smoke run of every fuzz target (see [`crate::fuzz`]), then the test suite.
//!
//! cargo-deny and cargo-fuzz are installed by `.ci/run`. Under `CI=true` a missing one fails the
//! run; elsewhere its step is skipped and said so, at the step and again before the totals.
//! Advisories are not checked here (the database needs a network): `cargo xtask audit`.
//!
//! The test suite runs last and its totals are printed as a final `N passed, N failed` line, so
//! whoever reads the end of the log sees the outcome of the tests.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{cargo, deny, fuzz};

/// The one command that runs the whole test suite; README.md names `cargo xtask ci`, which
/// runs it.
const TEST_ARGS: &[&str] = &["test", "--workspace", "--all-features", "--no-fail-fast"];

pub(crate) fn run() -> Result<()> {
    let started = Instant::now();
    step("fmt", cargo().args(["fmt", "--all", "--", "--check"]))?;
    step(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    step(
        "doc",
        cargo()
            .args(["doc", "--workspace", "--no-deps", "--all-features"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    // No tidy step: tidy is a `#[test]` in `tidy.rs`, so the test suite below enforces it.
    let mut skipped = Vec::new();
    let ci = std::env::var("CI").is_ok_and(|value| value == "true");
    if tool(
        "cargo-deny",
        deny::installed(),
        deny::MISSING,
        ci,
        &mut skipped,
    )? {
        timed("deny", deny::check)?;
    }
    // The fuzz targets are a workspace of their own (cargo-fuzz builds them with sanitizer
    // flags). The smoke run builds them all, replays the committed corpus and explores briefly;
    // without cargo-fuzz they are at least compiled.
    if tool(
        "cargo-fuzz",
        fuzz::installed(),
        fuzz::MISSING,
        ci,
        &mut skipped,
    )? {
        timed("fuzz smoke", fuzz::smoke)?;
    } else {
        step(
            "fuzz targets compile",
            cargo().args([
                "check",
                "--quiet",
                "--manifest-path",
                "fuzz/Cargo.toml",
                "--bins",
            ]),
        )?;
    }
    let totals = tests()?;
    println!("ci: all checks passed in {}s", started.elapsed().as_secs());
    for (name, why) in &skipped {
        println!("ci: SKIPPED {name}: {why}");
    }
    println!(
        "ci: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    Ok(())
}

/// Whether a step that needs `tool` can run. A missing tool fails CI (`CI=true`), where `.ci/run`
/// installs it; elsewhere the step is skipped, loudly now and again before the totals.
fn tool(
    name: &str,
    installed: bool,
    missing: &str,
    ci: bool,
    skipped: &mut Vec<(String, String)>,
) -> Result<bool> {
    if installed {
        return Ok(true);
    }
    if ci {
        bail!("{missing}");
    }
    println!("ci: SKIPPING the {name} step: {missing}");
    skipped.push((name.to_owned(), missing.to_owned()));
    Ok(false)
}

/// Runs an in-process step, with the same start and end lines as [`step`].
fn timed(name: &str, run: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("ci: {name}");
    let started = Instant::now();
    run().with_context(|| format!("{name} failed"))?;
    println!("ci: {name} ok in {}s", started.elapsed().as_secs());
    Ok(())
}

fn step(name: &str, command: &mut Command) -> Result<()> {
    println!("ci: {name}");
    let started = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("cannot start the {name} step"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    println!("ci: {name} ok in {}s", started.elapsed().as_secs());
    Ok(())
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// Runs the suite, passing its output through while adding up libtest's `test result:` lines.
fn tests() -> Result<Totals> {
    println!("ci: test ({})", TEST_ARGS.join(" "));
    let mut child = cargo()
        .args(TEST_ARGS)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the test step")?;
    let mut totals = Totals::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading test output")?;
            println!("{line}");
            totals.add(&line);
        }
    }
    let status = child.wait().context("waiting for the test step")?;
    if !status.success() || totals.failed > 0 {
        println!(
            "ci: {} passed, {} failed, {} skipped",
            totals.passed, totals.failed, totals.ignored
        );
        bail!("tests failed ({status})");
    }
    if totals.passed == 0 {
        bail!("the test step ran no test");
    }
    Ok(totals)
}

impl Totals {
    /// Adds one `test result: ok. 3 passed; 0 failed; 1 ignored; ...` line; other lines are
    /// ignored.
    fn add(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_fails_ci_and_is_skipped_loudly_elsewhere() {
        let mut skipped = Vec::new();
        assert!(tool("cargo-x", true, "install it", true, &mut skipped).unwrap());
        let error = tool("cargo-x", false, "install it", true, &mut skipped).unwrap_err();
        assert_eq!(error.to_string(), "install it");
        assert!(skipped.is_empty());
        assert!(!tool("cargo-x", false, "install it", false, &mut skipped).unwrap());
        assert_eq!(
            skipped,
            vec![("cargo-x".to_owned(), "install it".to_owned())]
        );
    }

    #[test]
    fn totals_add_up_libtest_lines() {
        let mut totals = Totals::default();
        totals.add("test result: ok. 15 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 1.10s");
        totals
            .add("test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out");
        totals.add("running 3 tests");
        totals.add("test passed ... ok");
        assert_eq!(
            totals,
            Totals {
                passed: 18,
                failed: 1,
                ignored: 2
            }
        );
    }
}
