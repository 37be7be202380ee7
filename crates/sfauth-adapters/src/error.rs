//! [`Error`] and [`ErrorKind`]: the one error type of this crate.
//!
//! Every adapter fails with [`Error`]. What a caller most needs to tell apart, "a human must log
//! this tenant in again", is [`ErrorKind::ReauthorizationRequired`], whichever adapter met it.

/// What went wrong in an adapter.
///
/// No variant's message holds a token, a code, a client secret or a signing secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The token manager could not provide a token for the tenant (the tenant needs
    /// re-authorization, is unknown, or a refresh failed).
    #[error(transparent)]
    Token(#[from] sfauth::Error),
    /// A request went through the reqwest middleware or the tower layer without naming its
    /// tenant: the adapter was built without a `TokenKey` and none was in the request's
    /// extensions.
    #[error(
        "no tenant for this request: build the adapter with a TokenKey or put one in the request's extensions"
    )]
    NoTenant,
    /// A request's URL could not be aimed at the tenant's `instance_url` (the resolved URL is
    /// not a valid URI); the request was not sent.
    #[error("the request cannot be aimed at the tenant's instance url")]
    InvalidTarget,
    /// A webhook request's signature header did not verify (see
    /// [`crate::webhook::verify`]): refuse the request.
    #[cfg(feature = "webhook")]
    #[error("webhook signature rejected: {0}")]
    Signature(#[from] SignatureError),
    /// The webhook notifier could not be set up (its HTTP client could not be built).
    #[cfg(feature = "webhook")]
    #[error("webhook notifier: {message}")]
    Webhook {
        /// What failed, without the URL (a receiver may put a secret in it).
        message: String,
    },
}

/// What kind of [`Error`] this is, for a caller to match on.
///
/// ```
/// use sfauth_adapters::{Error, ErrorKind};
///
/// fn reconnect_needed(error: &Error) -> bool {
///     error.kind() == ErrorKind::ReauthorizationRequired
/// }
/// # let _ = reconnect_needed;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A human must log the tenant in again (revoked, expired, frozen user, blocked app...).
    ReauthorizationRequired,
    /// The token manager failed for another reason; see [`sfauth::ErrorKind`] through
    /// [`Error::token_kind`].
    Token,
    /// The request itself was unusable (no tenant named, a URL that cannot be aimed at the
    /// instance): a mistake in the calling code, not worth retrying.
    InvalidRequest,
    /// A webhook signature did not verify: the request is forged, altered, signed with another
    /// secret or replayed; answer 400 and do not act on it.
    InvalidSignature,
    /// The webhook notifier could not be set up.
    Webhook,
}

impl Error {
    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Token(error) if error.kind() == sfauth::ErrorKind::ReauthorizationRequired => {
                ErrorKind::ReauthorizationRequired
            }
            Self::Token(_) => ErrorKind::Token,
            Self::NoTenant | Self::InvalidTarget => ErrorKind::InvalidRequest,
            #[cfg(feature = "webhook")]
            Self::Signature(_) => ErrorKind::InvalidSignature,
            #[cfg(feature = "webhook")]
            Self::Webhook { .. } => ErrorKind::Webhook,
        }
    }

    /// The token manager's own kind, when the token manager failed.
    pub fn token_kind(&self) -> Option<sfauth::ErrorKind> {
        match self {
            Self::Token(error) => Some(error.kind()),
            Self::NoTenant | Self::InvalidTarget => None,
            #[cfg(feature = "webhook")]
            Self::Signature(_) | Self::Webhook { .. } => None,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a signature did not verify; the [`Error::Signature`] that
/// [`verify`](crate::webhook::verify) returns.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use sfauth_adapters::webhook::{SignatureError, SigningSecret, verify};
/// use sfauth_adapters::Error;
///
/// let result = verify(&SigningSecret::new("s"), "nonsense", b"{}", SystemTime::now(), Duration::from_secs(300));
/// assert!(matches!(result, Err(Error::Signature(SignatureError::MalformedHeader))));
/// ```
#[cfg(feature = "webhook")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The header is not `t=<unix seconds>,v1=<hex>[,v1=<hex>...]` (no timestamp, two
    /// timestamps, or a part without `=`).
    #[error("the signature header is malformed")]
    MalformedHeader,
    /// The header has a timestamp but no `v1` signature.
    #[error("the signature header has no v1 signature")]
    NoSignature,
    /// No `v1` signature matches the body and timestamp under this secret: the body was changed,
    /// or it was signed with another secret.
    #[error("no v1 signature matches the body")]
    Mismatch,
    /// The signatures match, but the timestamp is further from now than the tolerance: a replay
    /// of an old request, or a clock far off.
    #[error("the signature timestamp is {age_secs} s from now, beyond the tolerance")]
    OutsideTolerance {
        /// How far the timestamp is from now, in seconds (either direction).
        age_secs: u64,
    },
}
