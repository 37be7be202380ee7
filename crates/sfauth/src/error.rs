//! The one public error of the `sfauth` crate, [`Error`], and what a caller decides from it,
//! [`ErrorKind`].

use std::time::{Duration, SystemTime};

use sfauth_core::IdentityUrl;
use sfauth_core::TokenKey;
use sfauth_core::error::Cause;

/// What went wrong with a [`TokenManager`](crate::TokenManager) call, a login among them.
///
/// Messages name the tenant briefly (its label, org and user: [`TokenKey::short`]; the whole key
/// is [`Error::key`]) and never contain a token, a code, a verifier or a secret. A login that
/// failed before its tokens were stored has no tenant yet: its variants carry no key, and
/// [`Error::kind`] says what to tell the person logging in.
///
/// ```
/// use sfauth::ErrorKind;
///
/// fn explain(error: &sfauth::Error) -> &'static str {
///     match error.kind() {
///         ErrorKind::LoginDeclined => "you declined access; log in again to connect",
///         ErrorKind::LoginTimedOut => "the login took too long; start again",
///         ErrorKind::ReauthorizationRequired => "connect your org again",
///         _ => "something went wrong",
///     }
/// }
/// # let _ = explain;
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
// A whole word of tag: with a one-byte tag, a hit's `Poll<Result<AccessTokenGuard, Error>>` was
// copied as the tag plus its seven padding bytes in 4-, 2- and 1-byte pieces and then read back
// as one word, a store-forwarding stall (perf annotate): `Tenant::access_token` 11 -> 4.4 ns.
#[repr(u64)]
pub enum Error {
    /// Salesforce refused the grant for good, now or earlier (the record is marked
    /// `ReauthRequired`): a human must authorize this tenant again.
    #[error("re-authorization required for {key_}: {reason}", key_ = key.short())]
    ReauthorizationRequired {
        /// The tenant.
        key: Box<TokenKey>,
        /// Why, in words without secrets.
        reason: String,
        /// The classified cause, when Salesforce said one.
        cause: Option<Cause>,
    },
    /// The manager knows no tokens for this tenant, in memory or in the store.
    #[error("no tokens stored for {key_}", key_ = key.short())]
    UnknownTenant {
        /// The tenant.
        key: Box<TokenKey>,
    },
    /// A request to Salesforce failed; the core error says how (see its `kind()`).
    #[error("salesforce request for {key_} failed", key_ = key.short())]
    OAuth {
        /// The tenant.
        key: Box<TokenKey>,
        /// The failure.
        #[source]
        source: Box<sfauth_core::Error>,
    },
    /// The token store failed.
    #[error("token store failed for {key_}", key_ = key.short())]
    Store {
        /// The tenant.
        key: Box<TokenKey>,
        /// The failure.
        #[source]
        source: Box<sfauth_storage::Error>,
    },
    /// Listing the stored tenants failed.
    #[error("cannot list stored tokens")]
    List {
        /// The store failure.
        #[source]
        source: Box<sfauth_storage::Error>,
    },
    /// Salesforce returned tokens of another org or user than the tenant's; they were not stored.
    #[error(
        "refreshed tokens for {key_} belong to org {} user {}; they were not stored",
        found.org_id(),
        found.user_id(),
        key_ = key.short()
    )]
    IdentityMismatch {
        /// The tenant.
        key: Box<TokenKey>,
        /// The identity the new tokens name: its org and user are not the tenant's.
        found: Box<IdentityUrl>,
    },
    /// Another process held the refresh lease and did not publish new tokens in time.
    #[error("another refresher of {key_} did not finish within {waited:?}{}", lease_note(held_by.as_deref()), key_ = key.short())]
    RefreshInProgress {
        /// The tenant.
        key: Box<TokenKey>,
        /// How long this call waited.
        waited: Duration,
        /// Who held the lease when this call gave up, when it was seen.
        held_by: Option<Box<LeaseHolder>>,
    },
    /// An earlier refresh of this tenant sent its refresh token and got no usable answer (a
    /// timeout, a dropped connection, a gateway's 5xx), so Salesforce may have rotated it. It is
    /// not sent again while the current access token still works: a re-send of a rotated-out
    /// refresh token makes Salesforce revoke the whole family, the working access token with
    /// it. Once that token dies, one careful attempt is made. Meanwhile the cached token is
    /// served.
    #[error("refresh of {key_} is on hold: {reason}", key_ = key.short())]
    RefreshOnHold {
        /// The tenant.
        key: Box<TokenKey>,
        /// What happened, without secrets.
        reason: String,
    },
    /// The tenant has no refresh token and no way to renew it is configured: set one with
    /// `TokenManager::set_renewal`, `TokenManagerBuilder::renewal_resolver` or
    /// `TokenManagerBuilder::default_renewal`. Nothing is marked in the store, so the tenant
    /// recovers as soon as a renewal is configured.
    #[error("{key_} has no refresh token and no renewal flow is configured", key_ = key.short())]
    NoRenewal {
        /// The tenant.
        key: Box<TokenKey>,
    },
    /// The manager is shutting down (`TokenManager::shutdown`) and sends no token request.
    #[error("the token manager is shutting down; {key_} was not refreshed", key_ = key.short())]
    ShuttingDown {
        /// The tenant.
        key: Box<TokenKey>,
    },
    /// New tokens were obtained but could not be saved. They are kept in memory, are not handed
    /// out, and saving them is retried first thing on the next call for this tenant.
    #[error("refreshed tokens for {key_} could not be saved; they are kept and saving is retried", key_ = key.short())]
    Unsaved {
        /// The tenant.
        key: Box<TokenKey>,
        /// The store failure.
        #[source]
        source: Box<sfauth_storage::Error>,
    },
    /// A refresh of this tenant failed moments ago; the manager pauses before trying again
    /// rather than hammering Salesforce. `kind` is the kind of that failure.
    #[error("refresh of {key_} failed recently and is paused: {message}", key_ = key.short())]
    RecentlyFailed {
        /// The tenant.
        key: Box<TokenKey>,
        /// The kind of the failure.
        kind: ErrorKind,
        /// Salesforce's cause of the failure, when it gave one.
        cause: Option<Cause>,
        /// Its message, without secrets.
        message: String,
    },
    /// The manager was configured in a way that cannot work.
    #[error("configuration: {0}")]
    Config(String),
    /// A login got no tokens: Salesforce's error redirect (`access_denied`, ...), a `state`
    /// that does not match, a malformed callback, a refused code exchange or grant, a response
    /// whose signature does not match, or no answer at all. [`Error::kind`] tells them apart
    /// ([`ErrorKind::LoginDeclined`], [`ErrorKind::InvalidCallback`],
    /// [`ErrorKind::LoginRejected`], ...); [`Error::salesforce_says`] gives Salesforce's words.
    #[error("login failed: {source}")]
    Login {
        /// The failure.
        #[source]
        source: Box<sfauth_core::Error>,
    },
    /// A login's code exchange was answered without a `signature` although the app has a client
    /// secret. Salesforce signs every web server flow response, so the identity URL in it cannot
    /// be trusted; nothing was stored.
    #[error("the token response carries no signature although the app has a client secret")]
    UnsignedLogin,
    /// No login callback came back in time (the person closed the tab, or never opened the URL).
    #[error("no login came back within {} seconds", waited.as_secs())]
    LoginTimedOut {
        /// How long the login waited.
        waited: Duration,
    },
    /// A loopback login's callback listener could not be bound, or failed.
    #[error("the login callback listener on 127.0.0.1:{port} failed: {source}")]
    LoginListener {
        /// The port it was to listen on (0: any).
        port: u16,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
}

impl ErrorKind {
    /// A stable snake_case name, for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReauthorizationRequired => "reauthorization_required",
            Self::RefreshInProgress => "refresh_in_progress",
            Self::Transient => "transient",
            Self::RateLimited => "rate_limited",
            Self::Config => "config",
            Self::UnknownTenant => "unknown_tenant",
            Self::Storage => "storage",
            Self::Protocol => "protocol",
            Self::LoginDeclined => "login_declined",
            Self::InvalidCallback => "invalid_callback",
            Self::LoginRejected => "login_rejected",
            Self::LoginTimedOut => "login_timed_out",
        }
    }
}

/// The decision behind an [`Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Send a human through a login flow for this tenant; retrying will not help.
    ReauthorizationRequired,
    /// Another refresher is at work: try again shortly.
    RefreshInProgress,
    /// A network or server problem: try again later.
    Transient,
    /// Salesforce asks to slow down.
    RateLimited,
    /// Fix the configuration (connected app, host, key, store path).
    Config,
    /// The tenant is unknown: log it in or import it first.
    UnknownTenant,
    /// The token store failed, or refreshed tokens await saving.
    Storage,
    /// Salesforce answered something unexpected (malformed, wrong identity).
    Protocol,
    /// A login: the person (or an org policy) declined the authorization (`access_denied`).
    LoginDeclined,
    /// A login's callback was not the answer to this login (`state` missing or different, or a
    /// malformed redirect): start again.
    InvalidCallback,
    /// A login's grant was refused (an expired or reused code, a wrong verifier, an app or user
    /// that may not log in), or its answer failed a check (signature): not worth retrying as
    /// is.
    LoginRejected,
    /// No login callback came back in time.
    LoginTimedOut,
}

impl Error {
    /// The store failed for `key`.
    pub(crate) fn store(key: &TokenKey, source: sfauth_storage::Error) -> Self {
        Self::Store {
            key: Box::new(key.clone()),
            source: Box::new(source),
        }
    }

    /// Salesforce or the OAuth exchange failed for `key`.
    pub(crate) fn oauth(key: &TokenKey, source: sfauth_core::Error) -> Self {
        Self::OAuth {
            key: Box::new(key.clone()),
            source: Box::new(source),
        }
    }

    /// A login's flow failed (no tenant yet).
    pub(crate) fn login(source: sfauth_core::Error) -> Self {
        Self::Login {
            source: Box::new(source),
        }
    }

    /// `key` is neither in memory nor in the store (or was removed).
    pub(crate) fn unknown_tenant(key: &TokenKey) -> Self {
        Self::UnknownTenant {
            key: Box::new(key.clone()),
        }
    }

    /// The decision to make.
    pub fn kind(&self) -> ErrorKind {
        use sfauth_core::ErrorKind as Core;
        match self {
            Self::ReauthorizationRequired { .. } => ErrorKind::ReauthorizationRequired,
            Self::UnknownTenant { .. } => ErrorKind::UnknownTenant,
            Self::OAuth { source, .. } => match source.kind() {
                Core::ReauthorizationRequired => ErrorKind::ReauthorizationRequired,
                Core::RefreshInProgress => ErrorKind::RefreshInProgress,
                Core::RateLimited => ErrorKind::RateLimited,
                Core::Transient | Core::SessionExpired => ErrorKind::Transient,
                Core::InvalidClient | Core::InvalidRequest | Core::Config => ErrorKind::Config,
                _ => ErrorKind::Protocol,
            },
            Self::Store { .. } | Self::Unsaved { .. } | Self::List { .. } => ErrorKind::Storage,
            Self::IdentityMismatch { .. } => ErrorKind::Protocol,
            Self::RefreshInProgress { .. } => ErrorKind::RefreshInProgress,
            Self::RefreshOnHold { .. } | Self::ShuttingDown { .. } => ErrorKind::Transient,
            Self::NoRenewal { .. } => ErrorKind::Config,
            Self::RecentlyFailed { kind, .. } => *kind,
            Self::Config(_) | Self::LoginListener { .. } => ErrorKind::Config,
            Self::Login { source } => login_kind(source),
            Self::UnsignedLogin => ErrorKind::LoginRejected,
            Self::LoginTimedOut { .. } => ErrorKind::LoginTimedOut,
        }
    }

    /// Salesforce's `error_description` (or `error`) when Salesforce said why a login or a
    /// request failed, scrubbed of anything secret-shaped by `sfauth-core`: for a page shown to
    /// the person logging in.
    ///
    /// ```
    /// use sfauth::oauth::error::ServerError;
    ///
    /// let denied = sfauth::oauth::Error::Server(Box::new(ServerError::new(
    ///     0,
    ///     "access_denied",
    ///     Some("end-user denied authorization"),
    /// )));
    /// let error = sfauth::Error::Login {
    ///     source: Box::new(denied),
    /// };
    /// assert_eq!(error.kind(), sfauth::ErrorKind::LoginDeclined);
    /// assert_eq!(error.salesforce_says(), Some("end-user denied authorization"));
    /// ```
    pub fn salesforce_says(&self) -> Option<&str> {
        match self {
            Self::Login { source } | Self::OAuth { source, .. } => source
                .server()
                .map(|server| server.description().unwrap_or(server.error())),
            _ => None,
        }
    }

    /// The tenant concerned, if any.
    pub fn key(&self) -> Option<&TokenKey> {
        match self {
            Self::ReauthorizationRequired { key, .. }
            | Self::UnknownTenant { key }
            | Self::OAuth { key, .. }
            | Self::Store { key, .. }
            | Self::IdentityMismatch { key, .. }
            | Self::RefreshInProgress { key, .. }
            | Self::Unsaved { key, .. }
            | Self::RefreshOnHold { key, .. }
            | Self::NoRenewal { key }
            | Self::ShuttingDown { key }
            | Self::RecentlyFailed { key, .. } => Some(key.as_ref()),
            Self::Config(_)
            | Self::List { .. }
            | Self::Login { .. }
            | Self::UnsignedLogin
            | Self::LoginTimedOut { .. }
            | Self::LoginListener { .. } => None,
        }
    }
}

impl Error {
    /// The cause Salesforce gave, when it gave one: that of a re-authorization, or of the OAuth
    /// error a request failed with. [`Cause::fix`] says what to do about it.
    ///
    /// ```
    /// # fn show(error: &sfauth::Error) {
    /// if let Some(cause) = error.cause() {
    ///     eprintln!("{error}: {}", cause.fix());
    /// }
    /// # }
    /// ```
    pub fn cause(&self) -> Option<Cause> {
        match self {
            Self::ReauthorizationRequired { cause, .. } | Self::RecentlyFailed { cause, .. } => {
                *cause
            }
            Self::OAuth { source, .. } => source.server().map(|server| server.cause()),
            _ => None,
        }
    }
}

/// What a failed login's flow error means to the person logging in.
fn login_kind(error: &sfauth_core::Error) -> ErrorKind {
    use sfauth_core::ErrorKind as Core;
    if error
        .server()
        .is_some_and(|server| server.error() == "access_denied")
    {
        return ErrorKind::LoginDeclined;
    }
    match (error, error.kind()) {
        (sfauth_core::Error::StateMismatch, _) => ErrorKind::InvalidCallback,
        // A malformed redirect (no code, no error) has no HTTP status.
        (sfauth_core::Error::Parse { status: 0, .. }, _) => ErrorKind::InvalidCallback,
        (_, Core::Transient) => ErrorKind::Transient,
        (_, Core::RateLimited) => ErrorKind::RateLimited,
        (_, Core::Config) => ErrorKind::Config,
        _ => ErrorKind::LoginRejected,
    }
}

/// `" (lease held by H until T)"`, or nothing when the holder is unknown.
fn lease_note(holder: Option<&LeaseHolder>) -> String {
    match holder {
        Some(holder) => format!(
            " (lease held by {} until {})",
            holder.name,
            httpdate::fmt_http_date(holder.until)
        ),
        None => String::new(),
    }
}

/// Who held a tenant's refresh lease when a call gave up waiting for it
/// ([`Error::RefreshInProgress`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseHolder {
    /// The holder's name: host, process id and a random part.
    pub name: String,
    /// When its lease lapses unless renewed.
    pub until: SystemTime,
}

impl LeaseHolder {
    /// The holder of `lease`.
    pub(crate) fn of(lease: &sfauth_storage::Lease) -> Self {
        Self {
            name: lease.holder.clone(),
            until: lease.expires_at,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::Error;

    /// Every `access_token` call returns `Result<AccessTokenGuard, Error>`, and a cache hit
    /// moves it through each future it passes: the rare variants' payloads are boxed so that
    /// a hit does not copy room for them, and the `Ok` hides in the tag's spare values.
    #[test]
    fn an_error_stays_small() {
        assert!(std::mem::size_of::<Error>() <= 48);
        assert_eq!(
            std::mem::size_of::<Result<crate::AccessTokenGuard, Error>>(),
            std::mem::size_of::<Error>()
        );
    }
}
