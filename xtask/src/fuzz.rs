//! `cargo xtask fuzz [--smoke | --seconds N] [--cmin] [TARGET ...]`: runs the coverage-guided
//! fuzz targets in `fuzz/` (libFuzzer through cargo-fuzz), all of them unless named.
//!
//! | form | what it does |
//! |---|---|
//! | `cargo xtask fuzz --smoke` | each target for [`SMOKE_SECONDS`]: replays the committed corpus, then explores briefly; a step of `cargo xtask ci` |
//! | `cargo xtask fuzz --seconds 600` | each target for ten minutes: the run to make before closing work on a parser or decoder |
//! | `cargo xtask fuzz --seconds 600 --cmin` | the same, then merges what was found into the committed corpus and minimizes it |
//!
//! Every run replays `fuzz/corpus/<target>/` (committed, minimized, small) first and writes
//! what it finds to `fuzz/target/corpus/<target>/` (not committed), so fuzzing never dirties
//! the work tree; `--cmin` is the one step that changes the committed corpus. A crash fails the
//! command and leaves its input under `fuzz/artifacts/<target>/`: reproduce it with
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>` in `fuzz/` (`cargo fuzz fmt <target>
//! <file>` prints a structured input), and turn it into a unit test of the crate it is about.
//!
//! cargo-fuzz (`cargo install cargo-fuzz --locked`; `.ci/run` installs it) instruments with
//! `-Z` flags, which a stable compiler accepts only with `RUSTC_BOOTSTRAP=1`; this machine has
//! no other toolchain, so that is set here, for these commands only. The fuzz workspace builds
//! into its own `fuzz/target/`, whatever `CARGO_TARGET_DIR` says: its sanitizer flags must never
//! meet the main workspace's artifacts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{cargo, project_root};

/// The targets, as named in `fuzz/Cargo.toml`.
pub(crate) const TARGETS: &[&str] = &[
    "token_response",
    "token_formats",
    "identity",
    "token_key",
    "id_token",
    "rest_classify",
    "store_file",
    "store_sqlite",
];

/// Seconds per target when not told.
const DEFAULT_SECONDS: u64 = 60;

/// Seconds per target of `--smoke`: enough to replay the corpus and take a few steps past it,
/// short enough that eight targets add two minutes to CI.
pub(crate) const SMOKE_SECONDS: u64 = 15;

/// A single input running longer than this is a hang, and fails the run like a crash.
const INPUT_TIMEOUT_SECONDS: u64 = 20;

/// What `fuzz` was asked to do.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    seconds: u64,
    cmin: bool,
    targets: Vec<&'static str>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut seconds = None;
    let mut smoke = false;
    let mut cmin = false;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = Some(
                    args.next()
                        .and_then(|value| value.parse().ok())
                        .filter(|&seconds| seconds > 0)
                        .context("--seconds needs a whole number of seconds above 0")?,
                );
            }
            "--smoke" => smoke = true,
            "--cmin" => cmin = true,
            name => match TARGETS.iter().find(|target| **target == name) {
                Some(target) => targets.push(*target),
                None => bail!(
                    "fuzz: unknown argument {name:?} (expected --smoke, --seconds N, --cmin or a \
                     target: {})",
                    TARGETS.join(", ")
                ),
            },
        }
    }
    let seconds = match (smoke, seconds) {
        (true, Some(_)) => bail!("fuzz: --smoke runs {SMOKE_SECONDS}s per target; drop --seconds"),
        (true, None) => SMOKE_SECONDS,
        (false, seconds) => seconds.unwrap_or(DEFAULT_SECONDS),
    };
    if targets.is_empty() {
        targets.extend(TARGETS);
    }
    Ok(Options {
        seconds,
        cmin,
        targets,
    })
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let options = parse(args)?;
    if !installed() {
        bail!("{MISSING}");
    }
    fuzz(&options)
}

/// `cargo xtask ci`'s step: [`SMOKE_SECONDS`] per target.
pub(crate) fn smoke() -> Result<()> {
    fuzz(&Options {
        seconds: SMOKE_SECONDS,
        cmin: false,
        targets: TARGETS.to_vec(),
    })
}

pub(crate) const MISSING: &str = "cargo-fuzz is not installed: run `cargo install cargo-fuzz --locked` (.ci/run does), then this again";

/// Whether `cargo fuzz` runs.
pub(crate) fn installed() -> bool {
    cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|output| output.status.success())
}

fn fuzz_dir() -> PathBuf {
    project_root().join("fuzz")
}

/// `cargo fuzz …` in `fuzz/`, with the environment it needs.
fn cargo_fuzz() -> Command {
    let mut command = cargo();
    command
        .current_dir(fuzz_dir())
        .arg("fuzz")
        .env("RUSTC_BOOTSTRAP", "1")
        .env_remove("CARGO_TARGET_DIR");
    command
}

fn fuzz(options: &Options) -> Result<()> {
    // One build of every target first, so that a compile error fails at once and the time it
    // takes is reported apart from the runs.
    let started = Instant::now();
    println!("fuzz: building the targets");
    let status = cargo_fuzz()
        .arg("build")
        .status()
        .context("cannot start cargo fuzz build")?;
    if !status.success() {
        bail!("fuzz: the targets do not build ({status})");
    }
    println!("fuzz: built in {}s", started.elapsed().as_secs());

    let mut failed = Vec::new();
    for &target in &options.targets {
        let started = Instant::now();
        println!("fuzz: {target} for {}s", options.seconds);
        let found = fuzz_dir().join("target").join("corpus").join(target);
        std::fs::create_dir_all(&found)
            .with_context(|| format!("cannot create {}", found.display()))?;
        let committed = committed_corpus(target);
        let mut command = cargo_fuzz();
        command.args(["run", target]).arg(&found);
        if committed.is_dir() {
            command.arg(&committed);
        }
        command
            .arg("--")
            .args(libfuzzer_flags(target, options.seconds));
        let status = command
            .status()
            .with_context(|| format!("cannot start cargo fuzz run {target}"))?;
        if status.success() {
            println!("fuzz: {target} ok in {}s", started.elapsed().as_secs());
        } else {
            println!(
                "fuzz: {target} FAILED ({status}): the input is under fuzz/artifacts/{target}/"
            );
            failed.push(target);
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzz: {} of {} targets failed: {}",
            failed.len(),
            options.targets.len(),
            failed.join(", ")
        );
    }
    if options.cmin {
        for &target in &options.targets {
            minimize(target)?;
        }
    }
    println!("fuzz: no target crashed");
    Ok(())
}

/// The committed corpus of `target`.
fn committed_corpus(target: &str) -> PathBuf {
    fuzz_dir().join("corpus").join(target)
}

/// The flags libFuzzer gets for `target`: the time, a timeout that makes a hang a failure, and
/// the target's dictionary when it has one.
fn libfuzzer_flags(target: &str, seconds: u64) -> Vec<String> {
    let mut flags = vec![
        format!("-max_total_time={seconds}"),
        format!("-timeout={INPUT_TIMEOUT_SECONDS}"),
        "-print_final_stats=1".to_owned(),
    ];
    let dict = fuzz_dir().join("dicts").join(format!("{target}.dict"));
    if dict.is_file() {
        flags.push(format!("-dict={}", dict.display()));
    }
    flags
}

/// Adds what the runs found to the committed corpus of `target` and minimizes it.
fn minimize(target: &str) -> Result<()> {
    let committed = committed_corpus(target);
    std::fs::create_dir_all(&committed)
        .with_context(|| format!("cannot create {}", committed.display()))?;
    let found = fuzz_dir().join("target").join("corpus").join(target);
    copy_files(&found, &committed)?;
    println!("fuzz: minimizing {}", committed.display());
    // A set cover keeps a few hundred inputs per target where the default merge keeps
    // thousands, for the same coverage.
    let status = cargo_fuzz()
        .args(["cmin", target])
        .arg(&committed)
        .args(["--", "-set_cover_merge=1"])
        .status()
        .with_context(|| format!("cannot start cargo fuzz cmin {target}"))?;
    if !status.success() {
        bail!("fuzz: minimizing the corpus of {target} failed ({status})");
    }
    Ok(())
}

/// Copies the files of `from` into `to`. libFuzzer names corpus files by their content's hash,
/// so a file of the same name is the same input.
fn copy_files(from: &Path, to: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(from) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", from.display()))?;
        if entry.file_type().is_ok_and(|kind| kind.is_file()) {
            std::fs::copy(entry.path(), to.join(entry.file_name()))
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[test]
    fn options_parse() {
        assert_eq!(
            parse(&args(&[])).unwrap(),
            Options {
                seconds: DEFAULT_SECONDS,
                cmin: false,
                targets: TARGETS.to_vec()
            }
        );
        assert_eq!(parse(&args(&["--smoke"])).unwrap().seconds, SMOKE_SECONDS);
        assert_eq!(
            parse(&args(&[
                "--seconds",
                "600",
                "--cmin",
                "id_token",
                "store_file"
            ]))
            .unwrap(),
            Options {
                seconds: 600,
                cmin: true,
                targets: vec!["id_token", "store_file"]
            }
        );
        for bad in [
            &["--seconds"][..],
            &["--seconds", "0"],
            &["--seconds", "ten"],
            &["--smoke", "--seconds", "5"],
            &["no_such_target"],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
    }

    /// Every target is a `[[bin]]` of `fuzz/Cargo.toml`, and every `[[bin]]` is a target: a
    /// target missing from the list would never run in CI.
    #[test]
    fn targets_match_the_fuzz_manifest() {
        let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
        let mut bins: Vec<&str> = manifest
            .split("[[bin]]")
            .skip(1)
            .filter_map(|bin| {
                bin.lines()
                    .find_map(|line| line.trim().strip_prefix("name = "))
                    .map(|name| name.trim_matches('"'))
            })
            .collect();
        bins.sort_unstable();
        let mut targets = TARGETS.to_vec();
        targets.sort_unstable();
        assert_eq!(bins, targets);
    }

    #[test]
    fn flags_hold_the_time_and_the_dictionary_when_there_is_one() {
        let flags = libfuzzer_flags("token_response", 15);
        assert!(flags.contains(&"-max_total_time=15".to_owned()));
        assert!(flags.contains(&format!("-timeout={INPUT_TIMEOUT_SECONDS}")));
        let dict = fuzz_dir().join("dicts").join("token_response.dict");
        assert_eq!(
            flags.iter().any(|flag| flag.starts_with("-dict=")),
            dict.is_file()
        );
    }
}
