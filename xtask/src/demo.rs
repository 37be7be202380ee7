//! `cargo xtask demo [ARGS]`: the CLI's demo against the embedded emulator, the same as
//! `cargo run -p sfauth-cli -- demo [ARGS]` (README.md's first command).

use anyhow::{Context, Result, bail};

use crate::cargo;

pub(crate) fn run(args: &[String]) -> Result<()> {
    let status = cargo()
        .args(["run", "--quiet", "-p", "sfauth-cli", "--", "demo"])
        .args(args)
        .status()
        .context("cannot start cargo run")?;
    if !status.success() {
        bail!("the demo failed ({status})");
    }
    Ok(())
}
