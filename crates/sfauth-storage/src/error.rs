//! The one public error of this crate, [`Error`], and the decision a caller makes from it,
//! [`ErrorKind`].

use std::error::Error as StdError;
use std::fmt;

/// What went wrong, as a decision for the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The record does not exist (a [`put`](crate::TokenStore::put) on a missing key).
    NotFound,
    /// A precondition on the version failed: the expected version is stale, or
    /// [`insert`](crate::TokenStore::insert) found the key already present. Nothing was
    /// changed; re-read and decide again.
    Conflict,
    /// The write was conditional on a lease that is no longer the current, unexpired lease for
    /// the key. Nothing was changed; another refresher may be spending the refresh token.
    LeaseLost,
    /// A stored record cannot be decoded: truncated, tampered with or not written by this
    /// crate. It was left as it is.
    Corrupt,
    /// A stored record is sealed with a key this keyring does not hold. It was left as it is.
    WrongKey,
    /// The file system failed.
    Io,
    /// The database failed (connection, busy timeout, migration).
    Backend,
    /// The store or its keyring is misconfigured (bad path, bad key material).
    Config,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not found",
            Self::Conflict => "conflict",
            Self::LeaseLost => "lease lost",
            Self::Corrupt => "corrupt record",
            Self::WrongKey => "wrong key",
            Self::Io => "i/o error",
            Self::Backend => "backend error",
            Self::Config => "configuration error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from a [`TokenStore`](crate::TokenStore) or a
/// [`Keyring`](crate::Keyring).
///
/// Match on [`Error::kind`]. The message never contains a secret; the underlying cause (an
/// `std::io::Error`, a database error) is available through [`std::error::Error::source`] but
/// is not part of the API.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
#[non_exhaustive]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl Error {
    /// An error of `kind` with a lowercase message that contains no secret.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// The same, keeping `source` as the cause.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The decision to make.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub(crate) fn not_found(key: &impl fmt::Display) -> Self {
        Self::new(ErrorKind::NotFound, format!("no record for {key}"))
    }

    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    /// A write or delete expecting `expected` found the record of `key` at `current`.
    pub(crate) fn stale(
        key: &impl fmt::Display,
        current: impl fmt::Display,
        expected: u64,
    ) -> Self {
        Self::conflict(format!("{key} is at version {current}, not {expected}"))
    }

    /// The record of `key` is sealed with `key_id`, which the keyring lacks: overwriting it
    /// would destroy tokens that another keyring may still open.
    pub(crate) fn unknown_key(key: &impl fmt::Display, key_id: &str) -> Self {
        Self::new(
            ErrorKind::WrongKey,
            format!(
                "{key} is sealed with key {key_id}, which the keyring does not hold; not overwriting it"
            ),
        )
    }

    pub(crate) fn lease_lost(key: &impl fmt::Display) -> Self {
        Self::new(
            ErrorKind::LeaseLost,
            format!("the lease on {key} is no longer held"),
        )
    }

    pub(crate) fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, message)
    }

    pub(crate) fn io(message: impl Into<String>, source: std::io::Error) -> Self {
        Self::with_source(ErrorKind::Io, message, source)
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_kind_and_keeps_source() {
        let io = std::io::Error::other("disk on fire");
        let error = Error::io("writing record", io);
        assert_eq!(error.kind(), ErrorKind::Io);
        assert_eq!(error.to_string(), "i/o error: writing record");
        assert!(StdError::source(&error).is_some());
    }
}
