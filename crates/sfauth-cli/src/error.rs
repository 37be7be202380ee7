//! The CLI's one error type: a sentence for stderr and the exit code scripts decide on.
//!
//! | exit code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other failure (store, protocol, configuration of the connected app) |
//! | 2 | usage: a bad flag, value, URL or alias |
//! | 3 | re-authorization required: a human must log in again |
//! | 4 | network or transient failure (timeout, 5xx, rate limit, refresh in progress): retry later |
//!
//! Messages are lowercase sentences that end with the fix, and never contain a secret: they are
//! built from error messages that the library crates already keep free of secrets.

use std::fmt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use sfauth::ErrorKind;
use zeroize::Zeroizing;

/// Secrets this process was given in a store URL, taken out of every message by [`scrub`].
static SECRETS: Mutex<Vec<Zeroizing<String>>> = Mutex::new(Vec::new());

/// Whether the store is a server shared over the network, where a backend failure is the
/// network's or the server's and worth retrying (exit 4), not a damaged local file (exit 1).
static SHARED_STORE: AtomicBool = AtomicBool::new(false);

/// Shorter secrets are not scrubbed: replacing every `ab` would garble messages while
/// protecting nothing a guess would not find.
const MIN_SCRUBBED_LEN: usize = 4;

/// Remembers `secret` (such as a store URL's password) so that [`scrub`] removes it from any
/// message, whichever library wrote the message.
pub(crate) fn register_secret(secret: &str) {
    if secret.len() >= MIN_SCRUBBED_LEN {
        SECRETS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Zeroizing::new(secret.to_owned()));
    }
}

/// `text` with every registered secret replaced by `[redacted]`.
pub(crate) fn scrub(text: &str) -> String {
    let secrets = SECRETS.lock().unwrap_or_else(PoisonError::into_inner);
    let mut text = text.to_owned();
    // Longest first, so that a secret containing another is removed whole.
    let mut ordered: Vec<&str> = secrets.iter().map(|s| s.as_str()).collect();
    ordered.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in ordered {
        if text.contains(secret) {
            text = text.replace(secret, "[redacted]");
        }
    }
    text
}

/// `text` on one line: a driver's message can span several (redis-rs quotes a reply it could
/// not parse line by line), and scripts read the first line of stderr.
pub(crate) fn one_line(text: &str) -> String {
    if !text.contains(['\n', '\r']) {
        return text.to_owned();
    }
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Records that the store is shared over the network (see [`SHARED_STORE`]).
pub(crate) fn mark_shared_store() {
    SHARED_STORE.store(true, Ordering::Relaxed);
}

fn shared_store() -> bool {
    SHARED_STORE.load(Ordering::Relaxed)
}

/// Why the process exits non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// 1: anything else.
    Other = 1,
    /// 2: bad command-line input.
    Usage = 2,
    /// 3: a human must log in again.
    Reauth = 3,
    /// 4: try again later.
    Transient = 4,
    /// 130: stopped by SIGINT (Ctrl-C), as shells report it.
    Interrupted = 130,
    /// 143: stopped by SIGTERM.
    Terminated = 143,
}

/// A failure of a command: one sentence with the fix, and an exit code.
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) exit: Exit,
    pub(crate) message: String,
}

pub(crate) type Result<T, E = CliError> = std::result::Result<T, E>;

impl CliError {
    pub(crate) fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }

    pub(crate) fn other(message: impl Into<String>) -> Self {
        Self::new(Exit::Other, message)
    }

    /// The command was stopped by a signal (`what`: "interrupted" or "terminated"; `code`: 130 or
    /// 143) after its refreshes were given a moment to save and its leases were released.
    pub(crate) fn signal(what: &str, code: u8) -> Self {
        let exit = if code == Exit::Terminated as u8 {
            Exit::Terminated
        } else {
            Exit::Interrupted
        };
        Self::new(
            exit,
            format!("{what}: refresh leases released, nothing half-saved; run the command again"),
        )
    }

    pub(crate) fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.exit as u8)
    }

    /// The error of a `TokenManager` call for `alias`, with the fix; `login` is the command
    /// that logs this alias in again.
    pub(crate) fn manager(error: &sfauth::Error, alias: &str, login: &str) -> Self {
        let detail = manager_detail(error);
        // A missing renewal is decided by the variant, before any kind: a login without a
        // refresh token was refused nothing, and must not read as one Salesforce refused.
        if matches!(error, sfauth::Error::NoRenewal { .. }) {
            return Self::other(format!(
                "alias {alias} has no refresh token and no way to renew it: run `sfauth {login} --alias {alias}`"
            ));
        }
        let relogin = format!("`sfauth {login} --alias {alias}`");
        if let Some((exit, fix)) = error.cause().and_then(|cause| cause_fix(cause, &relogin)) {
            return Self::new(
                exit,
                format!("salesforce refused to renew alias {alias} ({detail}): {fix}"),
            );
        }
        match error.kind() {
            ErrorKind::ReauthorizationRequired => Self::new(
                Exit::Reauth,
                format!(
                    "alias {alias} needs a new login: salesforce refused {} ({}); run {relogin}",
                    if renews_by_flow(login) {
                        "to renew it"
                    } else {
                        "its refresh token"
                    },
                    reauth_reason(error)
                ),
            ),
            ErrorKind::RefreshInProgress => Self::new(
                Exit::Transient,
                format!(
                    "another sfauth process is refreshing alias {alias} ({detail}): try again in a few seconds"
                ),
            ),
            _ if matches!(error, sfauth::Error::RefreshOnHold { .. }) => Self::new(
                Exit::Transient,
                format!(
                    "alias {alias}: {detail}; its access token still works (`sfauth token` prints it), and the refresh is retried once it expires"
                ),
            ),
            ErrorKind::Transient | ErrorKind::RateLimited => Self::new(
                Exit::Transient,
                format!(
                    "salesforce could not be reached for alias {alias} ({detail}): check the network and try again"
                ),
            ),
            ErrorKind::UnknownTenant => Self::usage(format!(
                "no tokens stored for alias {alias}: run `sfauth {login} --alias {alias}`"
            )),
            ErrorKind::Storage
                if shared_store()
                    && store_kind(error) == Some(sfauth::storage::ErrorKind::Backend) =>
            {
                Self::new(
                    Exit::Transient,
                    format!(
                        "the token store could not be reached for alias {alias} ({detail}): check that the --store server is running and reachable, then try again"
                    ),
                )
            }
            ErrorKind::Storage => Self::other(format!(
                "the token store failed for alias {alias} ({detail}): {}",
                store_fix(error)
            )),
            ErrorKind::Config => Self::other(format!(
                "salesforce refused the connected app for alias {alias} ({detail}): check the client id, and set SFAUTH_CLIENT_SECRET if the app requires its secret"
            )),
            _ => Self::other(format!(
                "the request for alias {alias} failed ({detail}): try again, or run `sfauth {login} --alias {alias}`"
            )),
        }
    }

    /// The error of a direct `OAuthClient` call (`what`: "login", "revoke", ...).
    pub(crate) fn core(error: &sfauth::oauth::Error, what: &str, fix: &str) -> Self {
        use sfauth::oauth::ErrorKind as Core;
        let detail = chain(error);
        if let Some((exit, fix)) = error
            .server()
            .and_then(|server| cause_fix(server.cause(), "log in again"))
        {
            return Self::new(exit, format!("{what} was refused ({detail}): {fix}"));
        }
        match error.kind() {
            Core::Transient | Core::RateLimited | Core::RefreshInProgress => Self::new(
                Exit::Transient,
                format!(
                    "{what} failed: salesforce could not be reached ({detail}): check the network and try again"
                ),
            ),
            Core::ReauthorizationRequired => Self::new(
                Exit::Reauth,
                format!("{what} was refused ({detail}): {fix}"),
            ),
            Core::InvalidClient => Self::other(format!(
                "{what} was refused: the connected app was not accepted ({detail}): check --client-id, and set SFAUTH_CLIENT_SECRET if the app requires its secret"
            )),
            Core::Config => Self::usage(format!("{what}: {detail}: {fix}")),
            _ => Self::other(format!("{what} failed ({detail}): {fix}")),
        }
    }

    /// The error of a login flow. What Salesforce itself refused (a wrong password, a JWT
    /// audience it does not accept, an unknown user) is exit 1: the command line was fine, so
    /// it is no usage error (2), and no stored login needs re-authorization (3), since the
    /// person logging in is at the terminal already. Everything else is as [`Self::core`].
    pub(crate) fn login(error: &sfauth::oauth::Error, fix: &str) -> Self {
        use sfauth::oauth::ErrorKind as Core;
        let cause = error.server().map(|server| server.cause());
        if let Some((exit, cause_fix)) = cause.and_then(|cause| cause_fix(cause, "log in again")) {
            return Self::new(
                exit,
                format!("login was refused ({}): {cause_fix}", chain(error)),
            );
        }
        // Salesforce's usual answer to a blocked username-password flow is the same as to a
        // wrong password, so the fix names both.
        if cause == Some(sfauth::oauth::Cause::AuthenticationFailure) {
            return Self::other(format!(
                "login was refused ({}): check the username, the password with its security token appended, and --instance (a sandbox user fails on production); if they are right, the org or the app blocks the username-password flow (external client apps have none): log in with `sfauth login web`, `login jwt` or `login client-credentials` instead",
                chain(error)
            ));
        }
        if error.server().is_some()
            && matches!(error.kind(), Core::ReauthorizationRequired | Core::Config)
        {
            return Self::other(format!("login was refused ({}): {fix}", chain(error)));
        }
        Self::core(error, "login", fix)
    }

    /// A store error while `doing` something with the store at `location`.
    pub(crate) fn store(error: &sfauth::storage::Error, doing: &str, location: &str) -> Self {
        use sfauth::storage::ErrorKind as Store;
        let detail = chain(error);
        if shared_store() && matches!(error.kind(), Store::Backend | Store::Io) {
            return Self::new(
                Exit::Transient,
                format!(
                    "the token store at {location} could not be reached while {doing} ({detail}): check that the server is running and reachable, then try again"
                ),
            );
        }
        let fix = match error.kind() {
            Store::WrongKey => {
                "set SFAUTH_STORE_KEY to the key the store was written with (or restore its key file); nothing was changed"
            }
            Store::Corrupt => {
                "the store is damaged; restore it from a backup or point --store elsewhere; nothing was overwritten"
            }
            Store::Config => "check SFAUTH_STORE_KEY and the --store URL",
            _ => {
                "check that the --store location exists, is readable and writable, and is an sfauth store"
            }
        };
        Self::other(format!(
            "the token store at {location} failed while {doing} ({detail}): {fix}"
        ))
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The exit code and the fix, in one sentence in the CLI's terms, for each refusal that
/// Salesforce's 2026 rules brought (docs/cli.md has the table); `relogin` is how to log in
/// again (a command, or "log in again"). `None` leaves the command's own wording.
fn cause_fix(cause: sfauth::oauth::Cause, relogin: &str) -> Option<(Exit, String)> {
    use sfauth::oauth::Cause;
    let fix = match cause {
        Cause::IpNotAllowed => "this machine's address is outside the connected app's refresh-token IP allowlist; the refresh token is still valid, so do not log in again: send sfauth's requests through an allowed egress (--proxy URL, SFAUTH_PROXY or HTTPS_PROXY naming a proxy whose address the allowlist names) or have an admin add this address to the allowlist".to_owned(),
        Cause::AppNotInstalled => format!(
            "the connected app is not installed in this org: an admin must install it (or give the user \"Approve Uninstalled Connected Apps\"), then {relogin}; logins made before keep working"
        ),
        Cause::PasswordFlowBlocked => "the org or the app blocks the username-password flow (external client apps have none): log in with `sfauth login web`, `login jwt` or `login client-credentials` instead".to_owned(),
        Cause::LoginRateExceeded => {
            return Some((
                Exit::Transient,
                "the user passed salesforce's hourly login limit: wait (up to an hour) before logging in again, and reuse the stored login (`sfauth token`) rather than logging in for each call".to_owned(),
            ));
        }
        Cause::PkceRequired => "the connected app requires PKCE with S256, which `sfauth login web` always sends: log in with `sfauth login web` (a login another tool made without PKCE cannot be renewed)".to_owned(),
        Cause::ClientSecretRejected => format!(
            "the connected app refused its consumer secret (a rotation was applied, or the app requires a secret that was not sent): set SFAUTH_NEXT_CLIENT_SECRET to the app's new secret and run the command again (the login then keeps it), or set SFAUTH_CLIENT_SECRET to the app's current secret, then {relogin} so that the login keeps it"
        ),
        _ => return None,
    };
    Some((Exit::Other, fix))
}

/// Whether the login made by `login` (an `sfauth login ...` command) has no refresh token and
/// is renewed by running its flow again, so that a refusal is not its refresh token's.
fn renews_by_flow(login: &str) -> bool {
    matches!(
        login,
        "login password" | "login jwt" | "login client-credentials"
    )
}

/// An error and its sources, joined with ": ".
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        let part = next.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = next.source();
    }
    text
}

/// What went wrong, without the tenant key the top-level message repeats (the alias names it).
fn manager_detail(error: &sfauth::Error) -> String {
    match error {
        sfauth::Error::OAuth { source, .. } => chain(source),
        sfauth::Error::Store { source, .. } | sfauth::Error::Unsaved { source, .. } => {
            chain(source)
        }
        sfauth::Error::RecentlyFailed { message, .. } => message.clone(),
        sfauth::Error::RefreshOnHold { reason, .. } => reason.clone(),
        other => chain(other),
    }
}

fn reauth_reason(error: &sfauth::Error) -> String {
    match error {
        sfauth::Error::ReauthorizationRequired { reason, .. } => reason.clone(),
        other => manager_detail(other),
    }
}

/// The store's own error kind inside a manager error, if a store failed.
fn store_kind(error: &sfauth::Error) -> Option<sfauth::storage::ErrorKind> {
    match error {
        sfauth::Error::Store { source, .. } | sfauth::Error::Unsaved { source, .. } => {
            Some(source.kind())
        }
        _ => None,
    }
}

fn store_fix(error: &sfauth::Error) -> &'static str {
    use sfauth::storage::ErrorKind as Store;
    match store_kind(error) {
        Some(Store::WrongKey) => {
            "set SFAUTH_STORE_KEY to the key the store was written with; nothing was changed"
        }
        Some(Store::Corrupt) => "the record is damaged; log in again to replace it",
        _ => "check the --store location and try again",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sfauth::oauth::error::ServerError;
    use sfauth::oauth::{IdentityUrl, LoginHost, TokenKey};

    fn key() -> Box<TokenKey> {
        let identity: IdentityUrl =
            "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK"
                .parse()
                .unwrap();
        Box::new(TokenKey::new(
            &LoginHost::Production,
            &identity,
            "client",
            "pw",
        ))
    }

    #[test]
    fn a_login_renewed_by_its_flow_is_not_said_to_have_a_refresh_token() {
        let refused = sfauth::Error::ReauthorizationRequired {
            key: key(),
            reason: "server error invalid_grant: authentication failure".into(),
            cause: None,
        };
        let password = CliError::manager(&refused, "pw", "login password");
        assert_eq!(password.exit, Exit::Reauth);
        assert!(
            password.message.contains("salesforce refused to renew it"),
            "{password:?}"
        );
        assert!(!password.message.contains("refresh token"), "{password:?}");
        let web = CliError::manager(&refused, "pw", "login web");
        assert!(web.message.contains("refused its refresh token"), "{web:?}");

        let none = CliError::manager(
            &sfauth::Error::NoRenewal { key: key() },
            "pw",
            "login password",
        );
        assert_eq!(none.exit, Exit::Other);
        assert!(none.message.contains("has no refresh token"), "{none:?}");
        assert!(!none.message.contains("refused"), "{none:?}");
    }

    /// The causes the emulator cannot make the CLI meet (sfauth's web login always sends PKCE)
    /// still get their sentence.
    #[test]
    fn pkce_required_names_the_web_login() {
        let error = sfauth::oauth::Error::Server(Box::new(ServerError::new(
            400,
            "invalid_request",
            Some("missing required code challenge"),
        )));
        let cli = CliError::login(&error, "run it again");
        assert_eq!(cli.exit, Exit::Other);
        assert!(cli.message.contains("requires PKCE with S256"), "{cli:?}");
        assert!(!cli.message.contains("run it again"), "{cli:?}");
    }
}
