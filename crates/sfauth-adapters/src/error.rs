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
}

impl Error {
    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Token(error) if error.kind() == sfauth::ErrorKind::ReauthorizationRequired => {
                ErrorKind::ReauthorizationRequired
            }
            Self::Token(_) => ErrorKind::Token,
        }
    }

    /// The token manager's own kind, when the token manager failed.
    pub fn token_kind(&self) -> Option<sfauth::ErrorKind> {
        match self {
            Self::Token(error) => Some(error.kind()),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
