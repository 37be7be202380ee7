//! `sfauth import --from-sf [USERNAME|ALIAS|--all] [--move]`: brings the logins of Salesforce's
//! own CLI (`sf`, @salesforce/core) into the store.
//!
//! `sf` keeps one JSON file per username in `~/.sfdx/<username>.json`, its aliases in
//! `~/.sfdx/alias.json`, and seals every field whose name contains `token`, `password` or
//! `secret` with AES-256-GCM under a key from the OS keychain (`secret-tool` on Linux,
//! `security` on macOS) or `~/.sfdx/key.json`. Values are `<iv><ciphertext-hex>:<tag-hex>`; a
//! 32-character key is used as its ASCII bytes with a 12-character ASCII IV (v1), a
//! 64-character key is hex-decoded with a 24-hex-digit IV (v2).
//!
//! Current `sf` versions keep a rotated refresh token, so a login both tools use dies at the
//! first rotation by either (and Salesforce then revokes the whole family on reuse). `--move`
//! takes the refresh token out of `sf`'s file, under `sf`'s own lock file
//! (`<file>.token-rotation.lock`), once sfauth has saved it; without it, the import says so.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aes_gcm::aead::{Aead as _, KeyInit as _};
use aes_gcm::{Aes256Gcm, Nonce};
use serde_json::{Map, Value};
use sfauth::oauth::{
    AccessToken, IdentityUrl, LoginHost, OAuthClient, RefreshToken, TokenKey, TokenSet,
};
use zeroize::Zeroizing;

use crate::cli::FromSfArgs;
use crate::config;
use crate::error::{CliError, Result};
use crate::session::Context;
use crate::store::{Access, AliasMeta, Flow, JwtRenewal};

/// The connected app `sf` logs in with when given none.
const SF_DEFAULT_CLIENT_ID: &str = "PlatformCLI";

/// The largest `sf` file read: a login file is a few kilobytes.
const MAX_SF_FILE: u64 = 1024 * 1024;

/// How long `--move` waits for `sf` to release its lock on a login file.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// One login of `sf`, decrypted.
struct SfLogin {
    file: PathBuf,
    username: String,
    alias: Option<String>,
    org_id: String,
    user_id: Option<String>,
    instance_url: String,
    login_url: String,
    client_id: String,
    client_secret: Option<Zeroizing<String>>,
    access_token: Option<Zeroizing<String>>,
    refresh_token: Option<Zeroizing<String>>,
    private_key: Option<PathBuf>,
}

/// `sfauth import --from-sf`.
pub(crate) async fn run(args: &FromSfArgs, force: bool, ctx: &Context) -> Result<()> {
    let dir = sf_dir()?;
    let aliases = read_aliases(&dir)?;
    let wanted = args.from_sf.as_deref().unwrap_or_default();
    let usernames: Vec<String> = if args.all {
        if !wanted.is_empty() {
            return Err(CliError::usage(
                "--from-sf takes a username or alias, or --all: not both",
            ));
        }
        list_usernames(&dir)?
    } else if wanted.is_empty() {
        let known = list_usernames(&dir)?;
        return Err(CliError::usage(format!(
            "name the sf login to import (a username or alias), or pass --all; {} has: {}",
            dir.display(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    } else {
        vec![
            aliases
                .get(wanted)
                .cloned()
                .unwrap_or_else(|| wanted.to_owned()),
        ]
    };
    if usernames.is_empty() {
        return Err(CliError::usage(format!(
            "{} holds no sf logins: log in with `sf org login web` first, or check HOME",
            dir.display()
        )));
    }
    let key = SfKey::load(&dir)?;
    // Every login is read and checked before anything is written.
    let mut logins = Vec::new();
    for username in &usernames {
        let mut login = read_login(&dir, username, &key)?;
        login.alias = aliases
            .iter()
            .find(|(_, u)| *u == username)
            .map(|(a, _)| a.clone());
        logins.push(login);
    }
    let store = ctx.open_store(Access::Write).await?;
    store.check_writable().await?;
    let existing = store.logins().await?.records;
    let transport = ctx.transport();
    let mut imported = 0usize;
    for login in &logins {
        let alias = args
            .save_as
            .clone()
            .or_else(|| login.alias.clone())
            .unwrap_or_else(|| login.username.clone());
        if !force && existing.iter().any(|r| r.key.label() == alias) {
            return Err(CliError::usage(format!(
                "alias {alias} already exists in {}: pass --force to replace it, or --as NAME",
                store.location
            )));
        }
        let host = config::parse_instance(login.login_url.trim_end_matches('/'))?;
        let Some(access) = &login.access_token else {
            return Err(CliError::other(format!(
                "the sf login {} has no access token: log in with sf again, or with `sfauth login web`",
                login.username
            )));
        };
        let instance: url::Url = login.instance_url.parse().map_err(|e| {
            CliError::other(format!(
                "the sf login {} has an unusable instanceUrl ({e})",
                login.username
            ))
        })?;
        let access = AccessToken::new(access.as_str());
        // Whether sf's access token still works, and the user id a file may lack: a userinfo
        // call spends nothing, unlike a refresh.
        let probe = OAuthClient::new(
            host.clone(),
            config::app_with(&login.client_id, false, None, None)?,
        );
        let info = probe.userinfo(transport.as_ref(), &access).await;
        let alive = info.is_ok();
        let user_id = match (&login.user_id, &info) {
            (Some(id), _) => id.clone(),
            (None, Ok(info)) => info.user_id.clone().ok_or_else(|| {
                CliError::other(format!(
                    "the sf login {} names no user id and userinfo gave none",
                    login.username
                ))
            })?,
            (None, Err(e)) => {
                return Err(CliError::core(
                    e,
                    &format!("finding the user id of the sf login {}", login.username),
                    "run `sf org display` (which refreshes the login), then import again",
                ));
            }
        };
        let identity: IdentityUrl =
            format!("{}/id/{}/{user_id}", identity_base(&host), login.org_id)
                .parse()
                .map_err(|e| {
                    CliError::other(format!(
                        "the sf login {} has an unusable org or user id ({e})",
                        login.username
                    ))
                })?;
        let mut tokens = TokenSet::new(access, instance, identity.clone());
        tokens.refresh_token = login
            .refresh_token
            .as_ref()
            .map(|r| RefreshToken::new(r.as_str()));
        let timeout = ctx.file.session_timeout();
        if !alive {
            // sf stores no expiry: a token userinfo refused is dead, so it is dated before the
            // session could have ended and the first use renews it.
            tokens.issued_at =
                SystemTime::now().checked_sub(timeout.saturating_add(Duration::from_secs(60)));
        }
        let key = TokenKey::new(&host, &identity, &login.client_id, &alias);
        let jwt = login.private_key.as_ref().map(|path| JwtRenewal {
            key_file: path.clone(),
            username: login.username.clone(),
            audience: None,
        });
        let meta = AliasMeta {
            key: key.to_string(),
            host: host.clone(),
            client_id: login.client_id.clone(),
            flow: if jwt.is_some() {
                Flow::Jwt
            } else {
                Flow::Import
            },
            basic_auth: false,
            username: Some(login.username.clone()),
            jwt,
        };
        store
            .save_login(
                &key,
                tokens,
                &meta,
                login.client_secret.as_deref().map(String::as_str),
                None,
                timeout,
            )
            .await
            .map_err(|e| CliError::store(&e, "saving the imported login", &store.location))?;
        store.remove_other_records(&alias, &key).await?;
        imported = imported.saturating_add(1);
        let moved = if args.move_login && login.refresh_token.is_some() {
            remove_refresh_token(&login.file)?;
            true
        } else {
            false
        };
        println!(
            "Imported sf login {} as alias {alias} into {}{}",
            login.username,
            store.location,
            if alive {
                ""
            } else {
                " (its access token had expired: the first use renews it)"
            }
        );
        match (login.refresh_token.is_some(), moved) {
            (false, _) => eprintln!(
                "note: {} has no refresh token in sf: it works until its session ends, then log in with `sfauth login web --alias {alias}`",
                login.username
            ),
            (true, true) => eprintln!(
                "note: moved: sf's copy of {}'s refresh token was removed; `sf` will ask for a new login for it",
                login.username
            ),
            (true, false) => eprintln!(
                "warning: {} is now in both sf and sfauth. If its connected app rotates refresh tokens, the first refresh by either tool kills the other's copy (and a reuse revokes both): use one tool for it, or import again with --move",
                login.username
            ),
        }
    }
    if imported > 1 {
        println!("{imported} logins imported");
    }
    Ok(())
}

/// `~/.sfdx`.
fn sf_dir() -> Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| !h.as_os_str().is_empty())
        .or_else(dirs::home_dir)
        .ok_or_else(|| CliError::usage("HOME is not set: cannot find sf's ~/.sfdx"))?;
    let dir = home.join(".sfdx");
    if !dir.is_dir() {
        return Err(CliError::usage(format!(
            "{} does not exist: is Salesforce's CLI (sf) logged in on this machine, as this user?",
            dir.display()
        )));
    }
    Ok(dir)
}

/// A small JSON file of `sf`'s, read with a cap.
fn read_json(path: &Path) -> Result<Map<String, Value>> {
    use std::io::Read as _;
    let failed = |e: String| {
        CliError::other(format!(
            "cannot read sf's file {} ({e}): check it, or log in with sf again",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(|e| failed(e.to_string()))?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_SF_FILE.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| failed(e.to_string()))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_SF_FILE {
        return Err(failed("larger than 1 MiB".to_owned()));
    }
    serde_json::from_slice(&bytes).map_err(|e| failed(format!("not a JSON object: {e}")))
}

/// `alias.json`'s `orgs`: alias → username.
fn read_aliases(dir: &Path) -> Result<BTreeMap<String, String>> {
    let path = dir.join("alias.json");
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    let json = read_json(&path)?;
    Ok(json
        .get("orgs")
        .and_then(Value::as_object)
        .map(|orgs| {
            orgs.iter()
                .filter_map(|(alias, user)| Some((alias.clone(), user.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default())
}

/// The usernames of every login file (`<username>.json` holding that `username`).
fn list_usernames(dir: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| CliError::other(format!("cannot list {} ({e})", dir.display())))?;
    let mut names = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        if !stem.contains('@') || !entry.path().is_file() {
            continue;
        }
        if let Ok(json) = read_json(&entry.path())
            && json.get("username").and_then(Value::as_str) == Some(stem)
            && json.contains_key("orgId")
        {
            names.push(stem.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn read_login(dir: &Path, username: &str, key: &SfKey) -> Result<SfLogin> {
    if username.contains(['/', '\\']) || username.starts_with('.') {
        return Err(CliError::usage(format!(
            "{username} is not an sf username or alias"
        )));
    }
    let file = dir.join(format!("{username}.json"));
    if !file.is_file() {
        return Err(CliError::usage(format!(
            "sf has no login named {username} (no {}): see `sf org list`, or pass --all",
            file.display()
        )));
    }
    let json = read_json(&file)?;
    let plain = |name: &str| {
        json.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let missing = |name: &str| {
        CliError::other(format!(
            "the sf login file {} has no {name}: log in with sf again",
            file.display()
        ))
    };
    let sealed = |name: &str| -> Result<Option<Zeroizing<String>>> {
        match json.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(value) => key.decrypt(value).map(Some).map_err(|why| {
                CliError::other(format!(
                    "cannot decrypt the {name} of sf login {username} ({why}): the key sf used is not the one found (key.json, secret-tool or the keychain)"
                ))
            }),
        }
    };
    Ok(SfLogin {
        username: plain("username").ok_or_else(|| missing("username"))?,
        alias: None,
        org_id: plain("orgId").ok_or_else(|| missing("orgId"))?,
        user_id: plain("userId"),
        instance_url: plain("instanceUrl").ok_or_else(|| missing("instanceUrl"))?,
        login_url: plain("loginUrl").unwrap_or_else(|| "https://login.salesforce.com".to_owned()),
        client_id: plain("clientId").unwrap_or_else(|| SF_DEFAULT_CLIENT_ID.to_owned()),
        client_secret: sealed("clientSecret")?.filter(|s| !s.is_empty()),
        access_token: sealed("accessToken")?,
        refresh_token: sealed("refreshToken")?,
        private_key: plain("privateKey").map(PathBuf::from),
        file,
    })
}

/// Where the identity URL of a login on `host` lives.
fn identity_base(host: &LoginHost) -> String {
    match host {
        LoginHost::Production => "https://login.salesforce.com".to_owned(),
        LoginHost::Sandbox => "https://test.salesforce.com".to_owned(),
        other => other.base_url().as_str().trim_end_matches('/').to_owned(),
    }
}

/// `sf`'s encryption key, in one of its two versions.
enum SfKey {
    /// 32 hex characters, used as 32 ASCII bytes; 12-character ASCII IVs.
    V1(Zeroizing<[u8; 32]>),
    /// 64 hex characters, hex-decoded; 24-hex-digit IVs.
    V2(Zeroizing<[u8; 32]>),
}

impl SfKey {
    /// The key `sf` uses on this machine: `key.json` when `SF_USE_GENERIC_UNIX_KEYCHAIN` says
    /// so, else the OS keychain when it has one, else `key.json`.
    fn load(dir: &Path) -> Result<Self> {
        let generic = std::env::var("SF_USE_GENERIC_UNIX_KEYCHAIN")
            .or_else(|_| std::env::var("SFDX_USE_GENERIC_UNIX_KEYCHAIN"))
            .is_ok_and(|v| v.eq_ignore_ascii_case("true"));
        let key_file = dir.join("key.json");
        let text = if generic {
            Self::from_file(&key_file)?
        } else if let Some(text) = Self::from_keychain() {
            text
        } else if key_file.exists() {
            Self::from_file(&key_file)?
        } else {
            return Err(CliError::other(format!(
                "cannot find sf's key: neither the keychain (secret-tool / security) nor {} has it",
                key_file.display()
            )));
        };
        Self::parse(text.trim())
    }

    fn from_file(path: &Path) -> Result<Zeroizing<String>> {
        let json = read_json(path)?;
        json.get("key")
            .and_then(Value::as_str)
            .map(|k| Zeroizing::new(k.to_owned()))
            .ok_or_else(|| {
                CliError::other(format!(
                    "sf's key file {} has no key: log in with sf again",
                    path.display()
                ))
            })
    }

    /// The key from `secret-tool` (Linux, libsecret) or `security` (macOS), if there is one.
    fn from_keychain() -> Option<Zeroizing<String>> {
        let output = if cfg!(target_os = "macos") {
            std::process::Command::new("security")
                .args(["find-generic-password", "-a", "local", "-s", "sfdx", "-w"])
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
        } else {
            std::process::Command::new("secret-tool")
                .args(["lookup", "user", "local", "domain", "sfdx"])
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
        }
        .ok()?;
        let text = Zeroizing::new(String::from_utf8(output.stdout).ok()?);
        (output.status.success() && !text.trim().is_empty()).then_some(text)
    }

    fn parse(text: &str) -> Result<Self> {
        let bad = || {
            CliError::other(
                "sf's key is neither 32 nor 64 hex characters: log in with sf again to make a new one",
            )
        };
        if !text.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        match text.len() {
            32 => {
                let mut key = Zeroizing::new([0u8; 32]);
                key.copy_from_slice(text.as_bytes());
                Ok(Self::V1(key))
            }
            64 => {
                let mut key = Zeroizing::new([0u8; 32]);
                hex::decode_to_slice(text, key.as_mut_slice()).map_err(|_| bad())?;
                Ok(Self::V2(key))
            }
            _ => Err(bad()),
        }
    }

    /// Decrypts `<iv><ciphertext-hex>:<tag-hex>`. The reason it gives on failure names no part
    /// of the value.
    fn decrypt(&self, value: &str) -> std::result::Result<Zeroizing<String>, &'static str> {
        let (head, tag) = value
            .split_once(':')
            .ok_or("no ':' before the authentication tag")?;
        if tag.len() != 32 {
            return Err("the authentication tag is not 16 bytes");
        }
        let (key, iv, cipher_hex): (&[u8; 32], Vec<u8>, &str) = match self {
            Self::V1(key) => {
                let (iv, rest) = head.split_at_checked(12).ok_or("too short")?;
                (key, iv.as_bytes().to_vec(), rest)
            }
            Self::V2(key) => {
                let (iv, rest) = head.split_at_checked(24).ok_or("too short")?;
                (key, hex::decode(iv).map_err(|_| "the IV is not hex")?, rest)
            }
        };
        if iv.len() != 12 {
            return Err("the IV is not 12 bytes");
        }
        let mut sealed = hex::decode(cipher_hex).map_err(|_| "the ciphertext is not hex")?;
        sealed.extend(hex::decode(tag).map_err(|_| "the tag is not hex")?);
        let cipher = Aes256Gcm::new_from_slice(key.as_slice()).map_err(|_| "bad key length")?;
        let plain = cipher
            .decrypt(Nonce::from_slice(&iv), sealed.as_slice())
            .map_err(|_| "the authentication tag does not match")?;
        String::from_utf8(plain)
            .map(Zeroizing::new)
            .map_err(|_| "the plaintext is not UTF-8")
    }
}

/// Takes `refreshToken` out of `sf`'s login file, holding `sf`'s lock on it
/// (`<file>.token-rotation.lock`) so that an `sf` refresh cannot write it back meanwhile.
fn remove_refresh_token(file: &Path) -> Result<()> {
    let mut lock_name = file.as_os_str().to_os_string();
    lock_name.push(".token-rotation.lock");
    let lock = PathBuf::from(lock_name);
    let started = std::time::Instant::now();
    // Exclusive creation excludes `sf` whether it takes the lock as a file or as a directory
    // (lockfile libraries do either): both fail while the path exists.
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(mut handle) => {
                let _ = writeln!(handle, "sfauth {}", std::process::id());
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if started.elapsed() > LOCK_WAIT {
                    return Err(CliError::other(format!(
                        "the login was imported, but sf holds its lock {} (a refresh in progress, or a stale lock): sf still has the refresh token; run the import again with --force --move once sf is done, or remove the lock if no sf is running",
                        lock.display()
                    )));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                return Err(CliError::other(format!(
                    "the login was imported, but sf's lock {} cannot be taken ({e}): sf still has the refresh token; use only one tool for this login",
                    lock.display()
                )));
            }
        }
    }
    let result = (|| -> Result<()> {
        let mut json = read_json(file)?;
        json.remove("refreshToken");
        let bytes = Zeroizing::new(
            serde_json::to_vec_pretty(&Value::Object(json))
                .map_err(|e| CliError::other(format!("cannot encode sf's file ({e})")))?,
        );
        let mode = std::fs::metadata(file)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0o600);
        crate::store::write_atomic(file, &bytes).map_err(|e| {
            CliError::other(format!(
                "the login was imported, but sf's file {} cannot be rewritten ({e}): sf still has the refresh token",
                file.display()
            ))
        })?;
        // The mode sf gave its file is kept (write_atomic makes 0600).
        let _ = std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode));
        Ok(())
    })();
    let _ = std::fs::remove_file(&lock);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_the_wrong_shape_are_refused() {
        assert!(SfKey::parse("abc").is_err());
        assert!(SfKey::parse(&"z".repeat(32)).is_err());
        assert!(matches!(SfKey::parse(&"a".repeat(32)), Ok(SfKey::V1(_))));
        assert!(matches!(SfKey::parse(&"a".repeat(64)), Ok(SfKey::V2(_))));
    }

    #[test]
    fn damaged_values_are_errors_not_panics() {
        let key = SfKey::parse(&"ab".repeat(32)).unwrap();
        for value in [
            "",
            "nocolon",
            "00:11",
            &format!("{}:{}", "0".repeat(30), "0".repeat(32)),
        ] {
            assert!(key.decrypt(value).is_err(), "{value}");
        }
    }
}
