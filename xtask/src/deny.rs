//! Supply-chain checks with cargo-deny, against the policy in `deny.toml`.
//!
//! - `cargo xtask ci` runs `cargo deny check licenses bans sources` for the main workspace and
//!   for the fuzz workspace: every license allowed, no wildcard version, crates.io as the only
//!   source. These need no network beyond the registry the build already uses.
//! - `cargo xtask audit` runs `cargo deny check advisories`: it fetches the RustSec advisory
//!   database from GitHub, which the CI machines cannot reach, so it is not part of `ci`. Run it
//!   on a machine with a network (a developer's, or a scheduled networked job) before a release
//!   and whenever dependencies change.
//!
//! cargo-deny comes from `cargo install cargo-deny --locked` (`.ci/run` installs it).

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, project_root};

pub(crate) const MISSING: &str = "cargo-deny is not installed: run `cargo install cargo-deny --locked` (.ci/run does), then this again";

/// The checks `ci` makes: everything but advisories.
const CI_CHECKS: &[&str] = &["licenses", "bans", "sources"];

/// The manifests checked: the main workspace, and the fuzz workspace, which has its own lock
/// file and so its own dependency versions.
const MANIFESTS: &[&str] = &["Cargo.toml", "fuzz/Cargo.toml"];

/// Whether `cargo deny` runs.
pub(crate) fn installed() -> bool {
    cargo()
        .args(["deny", "--version"])
        .output()
        .is_ok_and(|output| output.status.success())
}

fn cargo_deny(manifest: &str, checks: &[&str]) -> Command {
    let mut command = cargo();
    command
        .arg("deny")
        .arg("--manifest-path")
        .arg(project_root().join(manifest))
        .arg("check")
        .args(checks);
    command
}

/// `cargo deny check licenses bans sources` on every manifest.
pub(crate) fn check() -> Result<()> {
    for manifest in MANIFESTS {
        println!("deny: {} ({manifest})", CI_CHECKS.join(" "));
        let status = cargo_deny(manifest, CI_CHECKS)
            .status()
            .context("cannot start cargo deny")?;
        if !status.success() {
            bail!(
                "cargo deny check {} failed for {manifest} ({status})",
                CI_CHECKS.join(" ")
            );
        }
    }
    Ok(())
}

/// `cargo xtask audit`: known vulnerabilities, unmaintained and yanked crates, from the RustSec
/// database (needs a network).
pub(crate) fn audit() -> Result<()> {
    if !installed() {
        bail!("{MISSING}");
    }
    for manifest in MANIFESTS {
        println!("audit: advisories ({manifest})");
        let status = cargo_deny(manifest, &["advisories"])
            .status()
            .context("cannot start cargo deny")?;
        if !status.success() {
            bail!(
                "cargo deny check advisories failed for {manifest} ({status}); without a network \
                 it cannot fetch the advisory database, and that is reported as a failure too"
            );
        }
    }
    Ok(())
}
