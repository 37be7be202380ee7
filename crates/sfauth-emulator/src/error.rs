//! The library's public error: what can go wrong starting or configuring an emulator.

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Starting, configuring or administering the emulator failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listening socket could not be bound or served.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address that was asked for.
        addr: String,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path}")]
    ReadConfig {
        /// The file.
        path: String,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is not valid TOML of the expected shape.
    #[error("invalid configuration")]
    ParseConfig(#[source] Box<toml::de::Error>),
    /// The configuration parsed but describes something impossible (duplicate ids, bad keys).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An admin operation named an org, user, app or code that does not exist.
    #[error("{what} not found: {name}")]
    NotFound {
        /// What was looked up (`user`, `connected app`, ...).
        what: &'static str,
        /// The name or id that was asked for.
        name: String,
    },
}

/// The broad category of an [`Error`], for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The server could not start.
    Bind,
    /// The configuration could not be read or is invalid.
    Config,
    /// An admin operation named something that does not exist.
    NotFound,
}

impl Error {
    /// The category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Bind { .. } => ErrorKind::Bind,
            Self::ReadConfig { .. } | Self::ParseConfig(_) | Self::InvalidConfig(_) => {
                ErrorKind::Config
            }
            Self::NotFound { .. } => ErrorKind::NotFound,
        }
    }

    pub(crate) fn not_found(what: &'static str, name: impl Into<String>) -> Self {
        Self::NotFound {
            what,
            name: name.into(),
        }
    }
}
