//! `sfauth export` / `sfauth import`: logins moved between machines in a passphrase-encrypted
//! file.
//!
//! The file is `SFAUTH-EXPORT-1\n`, a 16-byte salt, a 24-byte nonce, then the JSON list of
//! logins sealed with XChaCha20-Poly1305 under a key derived from the passphrase by Argon2id
//! (the crate's default parameters). A passphrase, not the store key, so that the file can be
//! opened on a machine whose store has another key. The passphrase comes from
//! `SFAUTH_EXPORT_PASSPHRASE` or a prompt, never from the command line.

use std::io::Read as _;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sfauth::oauth::{TokenKey, TokenSet};
use zeroize::Zeroizing;

use crate::cli::{ExportArgs, ImportArgs};
use crate::config;
use crate::error::{CliError, Result};
use crate::session::Context;
use crate::store::{Access, AliasMeta, Flow, meta_from_key, secret_of, stored_meta, write_atomic};

const MAGIC: &[u8] = b"SFAUTH-EXPORT-1\n";
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const PASSPHRASE_ENV: &str = "SFAUTH_EXPORT_PASSPHRASE";

#[derive(Serialize, Deserialize)]
struct Payload {
    version: u32,
    logins: Vec<Login>,
}

#[derive(Serialize, Deserialize)]
struct Login {
    alias: String,
    key: String,
    tokens: TokenSet,
    meta: Option<AliasMeta>,
    /// The connected app's secret stored with the login, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
}

pub(crate) async fn export(args: &ExportArgs, ctx: &Context) -> Result<()> {
    let store = ctx.open_store(Access::Read).await?;
    // One read of the store and the alias file serves both the check and the export.
    let logins = store.logins().await?;
    if args.all {
        for alias in &logins.unreadable {
            eprintln!(
                "warning: the login {alias} cannot be opened and is not exported: see `sfauth status`"
            );
        }
    }
    let wanted = if args.all {
        None
    } else {
        Some(ctx.alias(args.alias.as_deref()))
    };
    if let Some(alias) = &wanted {
        logins.resolve(alias)?;
    }
    if args.output.exists() && !args.force {
        return Err(CliError::usage(format!(
            "{} already exists: pass --force to replace it, or choose another --output",
            args.output.display()
        )));
    }
    let exported: Vec<Login> = logins
        .records
        .iter()
        .filter(|record| {
            wanted
                .as_ref()
                .is_none_or(|alias| record.key.label() == alias)
        })
        .map(|record| Login {
            alias: record.key.label().to_owned(),
            key: record.key.to_string(),
            meta: stored_meta(record),
            client_secret: secret_of(record).map(|s| s.expose_secret().to_owned()),
            tokens: record.tokens.clone(),
        })
        .collect();
    let count = exported.len();
    let plain = Zeroizing::new(
        serde_json::to_vec(&Payload {
            version: 1,
            logins: exported,
        })
        .map_err(|e| CliError::other(format!("cannot encode the logins ({e})")))?,
    );
    let passphrase = passphrase(true)?;
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut salt);
    rand::rng().fill_bytes(&mut nonce);
    let cipher = cipher(&passphrase, &salt)?;
    let sealed = cipher
        .encrypt(XNonce::from_slice(&nonce), plain.as_slice())
        .map_err(|_| CliError::other("encryption failed"))?;
    let bytes = [MAGIC, &salt, &nonce, &sealed].concat();
    // Atomic, so that a failed `--force` keeps the old export rather than removing it first.
    write_atomic(&args.output, &bytes).map_err(|e| {
        CliError::other(format!(
            "cannot write {} ({e}): choose another --output",
            args.output.display()
        ))
    })?;
    println!("Exported {count} login(s) to {}", args.output.display());
    Ok(())
}

pub(crate) async fn import(args: &ImportArgs, ctx: &Context) -> Result<()> {
    let bytes = read_export(&args.file)?;
    let rest = bytes
        .strip_prefix(MAGIC)
        .filter(|rest| rest.len() > SALT_LEN + NONCE_LEN)
        .ok_or_else(|| not_an_export(&args.file))?;
    let (salt, rest) = rest.split_at(SALT_LEN);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let passphrase = passphrase(false)?;
    let plain = Zeroizing::new(
        cipher(&passphrase, salt)?
            .decrypt(XNonce::from_slice(nonce), sealed)
            .map_err(|_| {
                CliError::other(format!(
                    "the passphrase does not open {} (or the file is damaged): check SFAUTH_EXPORT_PASSPHRASE; nothing was imported",
                    args.file.display()
                ))
            })?,
    );
    // Only where the JSON broke, never serde's message: it can quote the decrypted tokens.
    let payload: Payload = serde_json::from_slice(&plain).map_err(|e| {
        CliError::other(format!(
            "{} holds no readable logins (not valid at line {}, column {})",
            args.file.display(),
            e.line(),
            e.column()
        ))
    })?;
    let store = ctx.open_store(Access::Write).await?;
    // Keys only: a login that cannot be opened still holds its alias.
    let existing = store.keys().await?;
    // Check everything before writing anything.
    let mut parsed = Vec::with_capacity(payload.logins.len());
    for login in payload.logins {
        let key: TokenKey = login.key.parse().map_err(|e| {
            CliError::other(format!(
                "the login {} in the file has a bad key ({e})",
                login.alias
            ))
        })?;
        if !args.force && existing.iter().any(|key| key.label() == login.alias) {
            return Err(CliError::usage(format!(
                "a login named {} already exists: pass --force to replace it; nothing was imported",
                login.alias
            )));
        }
        parsed.push((key, login));
    }
    let count = parsed.len();
    for (key, login) in parsed {
        let meta = match login.meta {
            Some(mut meta) => {
                meta.key = key.to_string();
                meta
            }
            None => meta_from_key(&key, Flow::Import)?,
        };
        let secret = login.client_secret.map(Zeroizing::new);
        store
            .save_login(
                &key,
                login.tokens,
                &meta,
                secret.as_deref().map(String::as_str),
                None,
                ctx.file.session_timeout(),
            )
            .await
            .map_err(|e| CliError::store(&e, "importing a login", &store.location))?;
        store.remove_other_records(&login.alias, &key).await?;
    }
    println!("Imported {count} login(s) into {}", store.location);
    Ok(())
}

/// The largest file `import` reads: far more than the logins of any one person's machine
/// (a login is a few kilobytes), far less than what would strain memory.
const MAX_EXPORT_BYTES: u64 = 32 * 1024 * 1024;

fn not_an_export(path: &Path) -> CliError {
    CliError::usage(format!(
        "{} is not a file written by `sfauth export`",
        path.display()
    ))
}

/// Reads an export file: its header first, so that anything else (a device, a huge file) is
/// refused after a few bytes, then the rest up to [`MAX_EXPORT_BYTES`].
fn read_export(path: &Path) -> Result<Vec<u8>> {
    let cannot = |e: std::io::Error| {
        CliError::usage(format!(
            "cannot read {} ({e}): check the path",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut reader = std::io::BufReader::new(file);
    let mut magic = vec![0u8; MAGIC.len()];
    reader.read_exact(&mut magic).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => not_an_export(path),
        _ => cannot(e),
    })?;
    if magic != MAGIC {
        return Err(not_an_export(path));
    }
    let mut bytes = magic;
    reader
        .take(MAX_EXPORT_BYTES.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_EXPORT_BYTES {
        return Err(CliError::usage(format!(
            "{} is larger than {} MiB, more than any `sfauth export` writes: nothing was imported",
            path.display(),
            MAX_EXPORT_BYTES / 1024 / 1024
        )));
    }
    Ok(bytes)
}

/// The shortest passphrase an export may be sealed with.
const MIN_PASSPHRASE_CHARS: usize = 8;

/// The passphrase of an export (`confirm`: being chosen, so asked twice on a terminal and held
/// to the minimum length whether it comes from the prompt or `SFAUTH_EXPORT_PASSPHRASE`) or of
/// an import (any, so that a file exported before the minimum applied to the variable opens).
fn passphrase(confirm: bool) -> Result<Zeroizing<String>> {
    let chosen = match config::secret(PASSPHRASE_ENV, "export passphrase", false)? {
        Some(value) => value,
        None => {
            let first = config::required_secret(PASSPHRASE_ENV, "export passphrase")?;
            if confirm {
                let second = config::required_secret(PASSPHRASE_ENV, "export passphrase (again)")?;
                if *first != *second {
                    return Err(CliError::usage(
                        "the two passphrases differ: run the command again",
                    ));
                }
            }
            first
        }
    };
    if confirm && chosen.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(CliError::usage(format!(
            "the passphrase is shorter than {MIN_PASSPHRASE_CHARS} characters: choose a longer one (in {PASSPHRASE_ENV} or at the prompt)"
        )));
    }
    Ok(chosen)
}

fn cipher(passphrase: &str, salt: &[u8]) -> Result<XChaCha20Poly1305> {
    let mut key = Zeroizing::new([0u8; 32]);
    argon2::Argon2::default()
        .hash_password_into(passphrase.as_bytes(), salt, key.as_mut_slice())
        .map_err(|e| CliError::other(format!("cannot derive a key from the passphrase ({e})")))?;
    XChaCha20Poly1305::new_from_slice(key.as_slice())
        .map_err(|_| CliError::other("cannot set up encryption"))
}
