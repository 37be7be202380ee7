//! Dynamic shell completion of alias names, through clap_complete's `CompleteEnv`: the shell
//! runs `COMPLETE=<shell> sfauth -- <words>`, and the aliases are read from the store then.
//!
//! Set up once per shell: `source <(COMPLETE=bash sfauth)` (zsh: `COMPLETE=zsh`, fish:
//! `COMPLETE=fish sfauth | source`).
//!
//! The completer sees no parsed flags, so the store is the one `SFAUTH_STORE` or the config
//! file names (or the default). It opens the store for reading (which creates nothing), and
//! completes nothing rather than print an error into the user's command line.

use std::ffi::OsStr;

use clap_complete::engine::{ArgValueCompleter, CompletionCandidate};

use crate::config::FileConfig;
use crate::store::{Access, Store};

/// The completer of an alias argument.
pub(crate) fn alias_completer() -> ArgValueCompleter {
    ArgValueCompleter::new(aliases)
}

fn aliases(current: &OsStr) -> Vec<CompletionCandidate> {
    let prefix = current.to_string_lossy();
    let mut labels = stored_aliases().unwrap_or_default();
    labels.retain(|label| label.starts_with(prefix.as_ref()));
    labels.into_iter().map(CompletionCandidate::new).collect()
}

fn stored_aliases() -> Option<Vec<String>> {
    let config = std::env::var_os("SFAUTH_CONFIG").map(std::path::PathBuf::from);
    let file = FileConfig::load(config.as_deref()).ok()?;
    let url = std::env::var("SFAUTH_STORE").ok().or(file.store);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        let store = Store::open(url.as_deref(), Access::Read).await.ok()?;
        let mut labels: Vec<String> = store
            .logins()
            .await
            .ok()?
            .records
            .into_iter()
            .map(|record| record.key.label().to_owned())
            .collect();
        labels.sort();
        labels.dedup();
        Some(labels)
    })
}
