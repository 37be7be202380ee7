//! The error of a value that does not parse: an id, a key, a URL, a login host.
//!
//! It sits below every module that parses values (`token`, `host`) and below [`crate::error`],
//! which converts it into [`crate::Error`] (kind `config`). Keeping it out of `error` keeps the
//! module graph one-way: `error` names the token types (a rejected answer carries the tokens it
//! issued) while the token types never name `error`.
//!
//! ```
//! use sfauth_core::{InvalidValue, OrgId};
//!
//! let err: InvalidValue = "00D-bad".parse::<OrgId>().unwrap_err();
//! assert!(err.to_string().contains("org id"));
//! // `?` turns it into the crate's error.
//! let err: sfauth_core::Error = err.into();
//! assert_eq!(err.kind(), sfauth_core::ErrorKind::Config);
//! ```

use std::borrow::Cow;

use crate::redact::scrub;

/// A value that does not parse, with a message that says what was expected. The message is
/// scrubbed (see [`crate::redact`]) in case the value quoted in it is secret-shaped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(String);

impl InvalidValue {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        let message = message.into();
        match scrub(&message) {
            Cow::Borrowed(_) => Self(message),
            Cow::Owned(clean) => Self(clean),
        }
    }

    /// What was wrong, in words.
    pub fn message(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_scrubbed() {
        let err =
            InvalidValue::new("invalid value 00D5e000000Abcd!AQ4AQFakeSessionTokenValue12345");
        assert!(
            !err.to_string().contains("AQ4AQFakeSessionTokenValue12345"),
            "{err}"
        );
    }
}
