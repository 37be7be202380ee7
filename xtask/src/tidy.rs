//! `cargo xtask tidy`: repository rules that no compiler checks, also run as a `#[test]`.
//!
//! - every Rust module starts with a `//!` doc saying what it is for;
//! - every package inherits the workspace lints;
//! - library code does not print (it returns values and logs through `tracing`);
//! - the dependency arrows of `docs/ARCHITECTURE.md` hold: core does no I/O, storage and
//!   transport do not know each other, and the emulator shares no code with the client.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::{cargo, project_root};

/// Crates core must never pull in: an HTTP client, a runtime's networking, a database driver.
const CORE_FORBIDDEN: &[&str] = &[
    "reqwest",
    "hyper",
    "hyper-util",
    "mio",
    "sqlx",
    "redis",
    "sfauth-transport",
    "sfauth-storage",
    "sfauth",
];

/// The layer rules as (package, edges to follow, crates it must not reach).
const LAYERS: &[(&str, &str, &[&str])] = &[
    ("sfauth-core", "normal", CORE_FORBIDDEN),
    (
        "sfauth-transport",
        "normal",
        &["sfauth-storage", "sfauth", "sqlx", "redis"],
    ),
    (
        "sfauth-storage",
        "normal",
        &["sfauth-transport", "sfauth", "reqwest", "hyper"],
    ),
    ("sfauth", "normal", &["sfauth-adapters", "sfauth-cli"]),
];

pub(crate) fn run() -> Result<()> {
    let root = project_root();
    let mut problems = Vec::new();
    module_docs(&root, &mut problems)?;
    lint_inheritance(&root, &mut problems)?;
    no_printing_in_libraries(&root, &mut problems)?;
    dependency_direction(&mut problems)?;
    if problems.is_empty() {
        return Ok(());
    }
    bail!(
        "tidy found {} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    )
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out)?;
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
    Ok(())
}

fn all_rust_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for dir in ["crates", "xtask", "tests"] {
        rust_files(&root.join(dir), &mut files)?;
    }
    files.sort();
    Ok(files)
}

fn module_docs(root: &Path, problems: &mut Vec<String>) -> Result<()> {
    for file in all_rust_files(root)? {
        let text = fs::read_to_string(&file)?;
        let first = text.lines().map(str::trim).find(|line| !line.is_empty());
        if !first.is_some_and(|line| line.starts_with("//!")) {
            problems.push(format!(
                "{}: a module must start with a `//!` doc saying what it is for",
                relative(root, &file)
            ));
        }
    }
    Ok(())
}

fn lint_inheritance(root: &Path, problems: &mut Vec<String>) -> Result<()> {
    let mut manifests = vec![root.join("xtask/Cargo.toml"), root.join("tests/Cargo.toml")];
    for entry in fs::read_dir(root.join("crates"))? {
        manifests.push(entry?.path().join("Cargo.toml"));
    }
    for manifest in manifests {
        let text = fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        let inherits = text
            .split("[lints]")
            .nth(1)
            .is_some_and(|rest| rest.trim_start().starts_with("workspace = true"));
        if !inherits {
            problems.push(format!(
                "{}: needs `[lints] workspace = true`",
                relative(root, &manifest)
            ));
        }
    }
    Ok(())
}

/// Library sources may not print; binaries (`main.rs`, `src/bin/`), the CLI crate, xtask and
/// test code may. Code after a file's `#[cfg(test)]` is its test module.
fn no_printing_in_libraries(root: &Path, problems: &mut Vec<String>) -> Result<()> {
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files)?;
    for file in files {
        let path = relative(root, &file);
        let is_library_source = path.contains("/src/")
            && !path.ends_with("/main.rs")
            && !path.contains("/src/bin/")
            && !path.starts_with("crates/sfauth-cli/");
        if !is_library_source {
            continue;
        }
        let text = fs::read_to_string(&file)?;
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if ["println!(", "print!(", "eprintln!(", "eprint!("]
                .iter()
                .any(|m| code.contains(m))
            {
                problems.push(format!(
                    "{path}:{}: library code must not print; return the value or use tracing",
                    number + 1
                ));
            }
        }
    }
    Ok(())
}

/// The package names in `cargo tree -p package -e edges`, the package itself excluded.
fn tree(package: &str, edges: &str) -> Result<Vec<String>> {
    let output = cargo()
        .args([
            "tree", "--quiet", "-p", package, "-e", edges, "--prefix", "none",
        ])
        .args(["--format", "{p}"])
        .output()
        .with_context(|| format!("running cargo tree for {package}"))?;
    if !output.status.success() {
        bail!(
            "cargo tree -p {package} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8(output.stdout)?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

fn dependency_direction(problems: &mut Vec<String>) -> Result<()> {
    for (package, edges, forbidden) in LAYERS {
        for dependency in tree(package, edges)? {
            if forbidden.contains(&dependency.as_str()) {
                problems.push(format!(
                    "{package} depends on {dependency} ({edges} edges): see docs/ARCHITECTURE.md"
                ));
            }
        }
    }
    // The emulator is written from the protocol reference alone, tests included.
    for dependency in tree("sfauth-emulator", "normal,build,dev")? {
        if dependency == "sfauth" || dependency.starts_with("sfauth-") {
            problems.push(format!(
                "sfauth-emulator depends on {dependency}: it must share no code with the client"
            ));
        }
    }
    Ok(())
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

#[cfg(test)]
mod tests {
    #[test]
    fn tidy() {
        if let Err(error) = super::run() {
            panic!("{error:#}");
        }
    }
}
