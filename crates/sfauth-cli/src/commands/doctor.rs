//! `sfauth doctor [ALIAS] [--json]`: checks one login against what Salesforce now requires and
//! what usually breaks, one line per check and a fix for each failure.
//!
//! It reads what the store recorded (the record, its metadata, the learned session lifetime)
//! and asks the instance one unauthenticated question (is it reachable, and what time is it
//! there). It spends no token. A fact sfauth does not record is reported as `unknown`, never
//! guessed.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sfauth::storage::{RecordStatus, TokenRecord};
use sfauth::{Idle, PARTNER_IDLE_LIMIT, Rotation};

use crate::cli::DoctorArgs;
use crate::error::{CliError, Result};
use crate::session::Context;
use crate::store::{Access, Flow};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Verdict {
    Ok,
    Warn,
    Fail,
    Unknown,
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    status: Verdict,
    detail: String,
    /// What to do about a `warn` or `fail`.
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

fn check(name: &'static str, status: Verdict, detail: impl Into<String>) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
        fix: None,
    }
}

impl Check {
    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// Days idle at which a warning comes before the 30-day limit.
const IDLE_WARN_DAYS_LEFT: u64 = 5;

/// Clock skew that breaks JWT logins (their `exp` is minutes away) and confuses expiry
/// estimates.
const SKEW_FAIL: Duration = Duration::from_secs(120);
const SKEW_WARN: Duration = Duration::from_secs(10);

/// `sfauth doctor`.
pub(crate) async fn run(args: &DoctorArgs, ctx: &Context) -> Result<()> {
    let alias = ctx.alias(args.alias.given());
    let store = ctx.open_store(Access::Read).await?;
    let resolved = store.resolve(&alias).await?;
    let record = store
        .store
        .get(&resolved.key)
        .await
        .map_err(|e| CliError::store(&e, "reading the login", &store.location))?
        .ok_or_else(|| CliError::usage(format!("no login named {alias}: see `sfauth list`")))?;
    let flow = resolved.meta.flow;
    let login = format!("sfauth {} --alias {alias}", flow.login_command());
    let now = SystemTime::now();

    let mut checks = vec![
        status_check(&record, &login),
        refresh_token_check(&record, flow, &login),
        rotation_check(&record, &alias),
        pkce_check(flow, &login),
        idle_check(&record, now, &login),
        session_check(&record, ctx),
        scope_check(&record, flow, &login),
    ];
    checks.extend(network_checks(&record, now, ctx).await);
    checks.extend(store_checks(ctx));

    let failed = checks.iter().filter(|c| c.status == Verdict::Fail).count();
    if args.json {
        let json = serde_json::json!({
            "alias": alias,
            "ok": failed == 0,
            "checks": checks,
        });
        println!("{json}");
    } else {
        for c in &checks {
            let status = match c.status {
                Verdict::Ok => "ok",
                Verdict::Warn => "warn",
                Verdict::Fail => "FAIL",
                Verdict::Unknown => "unknown",
            };
            println!("{status:<8} {:<15} {}", c.name, c.detail);
            if let Some(fix) = &c.fix {
                println!("{:<8} {:<15} fix: {fix}", "", "");
            }
        }
    }
    if failed > 0 {
        return Err(CliError::other(format!(
            "{failed} check(s) failed for alias {alias}: see the fixes above"
        )));
    }
    Ok(())
}

fn status_check(record: &TokenRecord, login: &str) -> Check {
    match &record.status {
        RecordStatus::Active => check("status", Verdict::Ok, "active"),
        other => check(
            "status",
            Verdict::Fail,
            format!(
                "{}: salesforce refused this login's refresh token",
                other.kind().as_str()
            ),
        )
        .fix(format!("log in again: {login}")),
    }
}

fn refresh_token_check(record: &TokenRecord, flow: Flow, login: &str) -> Check {
    match (&record.tokens.refresh_token, flow) {
        (Some(_), _) => check("refresh token", Verdict::Ok, "stored"),
        (None, Flow::Jwt | Flow::ClientCredentials) => check(
            "refresh token",
            Verdict::Ok,
            "none needed: renewed by its own flow",
        ),
        (None, _) => check(
            "refresh token",
            Verdict::Fail,
            "none stored: the login ends with its session",
        )
        .fix(format!(
            "add the refresh_token scope to the connected app, then {login}"
        )),
    }
}

/// Whether the app rotates refresh tokens, as the last refresh of the refresh token showed
/// (the manager records it with the new tokens; see `sfauth::Rotation`).
fn rotation_check(record: &TokenRecord, alias: &str) -> Check {
    if record.tokens.refresh_token.is_none() {
        return check(
            "rotation",
            Verdict::Ok,
            "not applicable: no refresh token to rotate",
        );
    }
    match Rotation::of_record(record) {
        Some(Rotation::Rotated) => check(
            "rotation",
            Verdict::Ok,
            "on: the last refresh got a new refresh token",
        ),
        Some(Rotation::Kept) => check(
            "rotation",
            Verdict::Warn,
            "off: the last refresh kept the same refresh token",
        )
        .fix("turn on refresh token rotation on the connected app (required for partner apps)"),
        // Not `Rotation` yet: a value a later version writes.
        Some(_) => check("rotation", Verdict::Unknown, "recorded in a form this version does not know"),
        None if record.refresh_count == 0 => check(
            "rotation",
            Verdict::Unknown,
            "not refreshed since the login, so not seen yet",
        )
        .fix(format!("`sfauth refresh {alias}` shows it")),
        None => check(
            "rotation",
            Verdict::Unknown,
            "not recorded by the refreshes so far (an earlier version); the next refresh records it",
        )
        .fix(format!("`sfauth refresh {alias}` shows it")),
    }
}

fn pkce_check(flow: Flow, login: &str) -> Check {
    match flow {
        Flow::Web => check("pkce", Verdict::Ok, "web login with PKCE (S256)"),
        Flow::Import => check(
            "pkce",
            Verdict::Unknown,
            "imported: how it logged in is not known",
        ),
        Flow::Password => check(
            "pkce",
            Verdict::Warn,
            "username-password flow: blocked in new orgs, no PKCE",
        )
        .fix(format!(
            "switch to the web flow: {}",
            login.replace("login password", "login web")
        )),
        other => check(
            "pkce",
            Verdict::Ok,
            format!(
                "not applicable ({} has no browser redirect)",
                other.login_command()
            ),
        ),
    }
}

fn idle_check(record: &TokenRecord, now: SystemTime, login: &str) -> Check {
    if record.tokens.refresh_token.is_none() {
        return check("idle", Verdict::Ok, "no refresh token to idle out");
    }
    match Idle::of_record(record, now, PARTNER_IDLE_LIMIT) {
        None => check(
            "idle",
            Verdict::Unknown,
            "when it was last refreshed is not recorded",
        ),
        Some(idle) if idle.is_past_limit() => check("idle", Verdict::Fail, idle.to_string()).fix(
            format!("an app with the 30-day idle limit has expired it: {login}"),
        ),
        Some(idle) if idle.days_left() <= IDLE_WARN_DAYS_LEFT => {
            check("idle", Verdict::Warn, idle.to_string()).fix(
                "use it (`sfauth refresh ALIAS`) before the limit, or run a background refresher",
            )
        }
        Some(idle) => check("idle", Verdict::Ok, idle.to_string()),
    }
}

fn session_check(record: &TokenRecord, ctx: &Context) -> Check {
    match record.learned_lifetime {
        Some(lifetime) => check(
            "session",
            Verdict::Ok,
            format!("learned session timeout {}", minutes(lifetime)),
        ),
        None => check(
            "session",
            Verdict::Unknown,
            format!(
                "not learned yet; assumed {} (session_timeout_secs)",
                minutes(ctx.file.session_timeout())
            ),
        ),
    }
}

fn minutes(d: Duration) -> String {
    let m = d.as_secs() / 60;
    if m >= 60 && m.is_multiple_of(60) {
        format!("{} h", m / 60)
    } else {
        format!("{m} min")
    }
}

fn scope_check(record: &TokenRecord, flow: Flow, login: &str) -> Check {
    let Some(scope) = &record.tokens.scope else {
        return check("scopes", Verdict::Unknown, "salesforce sent no scope list");
    };
    let has = |s: &str| scope.split_whitespace().any(|x| x == s);
    if has("refresh_token") || has("full") {
        check("scopes", Verdict::Ok, scope.clone())
    } else if matches!(flow, Flow::Jwt | Flow::ClientCredentials) {
        check(
            "scopes",
            Verdict::Ok,
            format!("{scope} (renewed by its own flow)"),
        )
    } else {
        check(
            "scopes",
            Verdict::Fail,
            format!("{scope}: no refresh_token"),
        )
        .fix(format!(
            "add refresh_token to the app's scopes and --scopes, then {login}"
        ))
    }
}

/// Whether the instance answers, and how far its clock is from ours (its `Date` header).
async fn network_checks(record: &TokenRecord, now: SystemTime, ctx: &Context) -> Vec<Check> {
    let instance = record.tokens.instance_url.as_str().trim_end_matches('/');
    let request =
        match http::Request::get(format!("{instance}/services/data")).body(bytes::Bytes::new()) {
            Ok(request) => request,
            Err(e) => {
                return vec![
                    check(
                        "instance",
                        Verdict::Fail,
                        format!("{instance} is not a URL ({e})"),
                    )
                    .fix("log in again"),
                ];
            }
        };
    let transport = ctx.transport();
    let sent = tokio::time::timeout(Duration::from_secs(15), transport.send(request)).await;
    let response = match sent {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            return vec![
                check(
                    "instance",
                    Verdict::Fail,
                    format!("{instance} unreachable ({})", crate::error::chain(&e)),
                )
                .fix("check the network, a proxy or VPN; a My Domain change moves the instance: log in again"),
                check("clock", Verdict::Unknown, "no answer from the instance to compare with"),
            ];
        }
        Err(_) => {
            return vec![
                check(
                    "instance",
                    Verdict::Fail,
                    format!("{instance} did not answer within 15 s"),
                )
                .fix("check the network, a proxy or VPN"),
                check(
                    "clock",
                    Verdict::Unknown,
                    "no answer from the instance to compare with",
                ),
            ];
        }
    };
    let reachable = check(
        "instance",
        Verdict::Ok,
        format!("{instance} answered {}", response.status().as_u16()),
    );
    let date = response
        .headers()
        .get(http::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let clock = match date {
        None => check(
            "clock",
            Verdict::Unknown,
            "the instance sent no Date header",
        ),
        Some(server) => {
            let (skew, ahead) = match server.duration_since(now) {
                Ok(d) => (d, "ahead of"),
                Err(e) => (e.duration(), "behind"),
            };
            // The header has whole seconds, and the answer took some time.
            let detail = format!("the instance is {}s {ahead} this machine", skew.as_secs());
            if skew >= SKEW_FAIL {
                check("clock", Verdict::Fail, detail)
                    .fix("sync this machine's clock (timedatectl set-ntp true): JWT logins and expiry estimates depend on it")
            } else if skew >= SKEW_WARN {
                check("clock", Verdict::Warn, detail).fix("sync this machine's clock with NTP")
            } else {
                check("clock", Verdict::Ok, detail)
            }
        }
    };
    vec![reachable, clock]
}

/// The store's key and file modes: a local store's key file and database must be the user's
/// alone.
fn store_checks(ctx: &Context) -> Vec<Check> {
    let url = ctx.store_url.as_deref().or(ctx.file.store.as_deref());
    let from_env = std::env::var_os(sfauth::STORE_KEY_ENV).is_some();
    let (data, key): (PathBuf, PathBuf) = match url.and_then(|u| u.split_once("://")) {
        None | Some(("sqlite", "")) => match sfauth::SqliteStore::default_path() {
            Ok(path) => {
                let key = sqlite_key_path(&path);
                (path, key)
            }
            Err(_) => return vec![check("store", Verdict::Unknown, "no default store path")],
        },
        Some(("sqlite", path)) => {
            let path = PathBuf::from(path);
            let key = sqlite_key_path(&path);
            (path, key)
        }
        Some(("file", dir)) => (PathBuf::from(dir), PathBuf::from(dir).join("tokens.key")),
        Some(_) => {
            return vec![check(
                "store key",
                if from_env { Verdict::Ok } else { Verdict::Fail },
                "a shared store: its key is SFAUTH_STORE_KEY",
            )];
        }
    };
    let mode = |path: &PathBuf| {
        std::fs::metadata(path)
            .ok()
            .map(|m| m.permissions().mode() & 0o777)
    };
    let key_check = if from_env {
        check("store key", Verdict::Ok, "from SFAUTH_STORE_KEY")
    } else {
        match mode(&key) {
            None => check(
                "store key",
                Verdict::Fail,
                format!("{} is missing", key.display()),
            )
            .fix("restore the key file from a backup, or set SFAUTH_STORE_KEY"),
            Some(m) if m & 0o077 != 0 => check(
                "store key",
                Verdict::Fail,
                format!("{} has mode {m:o}: others can read the key", key.display()),
            )
            .fix(format!("chmod 600 {}", key.display())),
            Some(m) => check(
                "store key",
                Verdict::Ok,
                format!("{} mode {m:o}", key.display()),
            ),
        }
    };
    let data_check = match mode(&data) {
        None => check(
            "store file",
            Verdict::Unknown,
            format!("{} not found", data.display()),
        ),
        Some(m) if m & 0o077 != 0 => check(
            "store file",
            Verdict::Warn,
            format!(
                "{} has mode {m:o}: records are sealed, but others can copy them",
                data.display()
            ),
        )
        .fix(format!("chmod go-rwx {}", data.display())),
        Some(m) => check(
            "store file",
            Verdict::Ok,
            format!("{} mode {m:o}", data.display()),
        ),
    };
    vec![key_check, data_check]
}

/// An SQLite store's key file: the database file's whole name plus `.key` (as the store
/// opens it).
fn sqlite_key_path(path: &std::path::Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".key");
    path.with_file_name(name)
}
