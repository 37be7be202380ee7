//! [`Rotation`]: whether the connected app rotates refresh tokens, as the last refresh showed.
//!
//! Salesforce says nothing about an app's rotation setting; a refresh shows it: with rotation on,
//! the answer carries a new refresh token and the one sent is spent; without, the answer carries
//! none (or the same one). The partner-app mandate (2026) requires rotation, so a tool checking a
//! login wants to know. The manager records what each refresh of a refresh token showed in the
//! record's metadata (under [`ROTATION_METADATA`], written in the same compare-and-swap as the
//! new tokens), and [`Rotation::of_record`] reads it back. A renewal by the tenant's own flow
//! (JWT, client credentials) involves no refresh token and records nothing.

use sfauth_storage::{Metadata, TokenRecord};

/// The record metadata entry holding what the last refresh showed: `rotated` or `kept`.
pub const ROTATION_METADATA: &str = "sfauth.refresh_token_rotation";

/// What the last refresh of a record's refresh token showed.
///
/// ```
/// # fn show(record: &sfauth::storage::TokenRecord) {
/// match sfauth::Rotation::of_record(record) {
///     Some(sfauth::Rotation::Rotated) => eprintln!("{}: the app rotates refresh tokens", record.key),
///     Some(sfauth::Rotation::Kept) => eprintln!("{}: the app does not rotate", record.key),
///     _ => eprintln!("{}: not refreshed since this was recorded", record.key),
/// }
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rotation {
    /// Salesforce answered with a new refresh token: the app rotates.
    Rotated,
    /// Salesforce kept the refresh token: the app does not rotate.
    Kept,
}

impl Rotation {
    /// What the last refresh recorded in `record`, or `None` when no refresh of a refresh
    /// token recorded anything (never refreshed, renewed by its own flow, or refreshed by a
    /// version that did not record it).
    pub fn of_record(record: &TokenRecord) -> Option<Self> {
        match record.metadata.get(ROTATION_METADATA)? {
            "rotated" => Some(Self::Rotated),
            "kept" => Some(Self::Kept),
            _ => None,
        }
    }

    /// Writes this observation into `metadata`. Best effort: a metadata map the application
    /// filled to its limit keeps no observation rather than failing the refresh.
    pub(crate) fn write_to(self, metadata: &mut Metadata) {
        let value = match self {
            Self::Rotated => "rotated",
            Self::Kept => "kept",
        };
        let _ = metadata.set(ROTATION_METADATA, value);
    }
}
