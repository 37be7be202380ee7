//! What a store keeps per key ([`TokenRecord`]), the refresh lease ([`Lease`]) and the listing
//! query ([`ListQuery`], [`ListPage`]).

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sfauth_core::{OrgId, TokenKey, TokenSet, UserId};

use crate::error::{Error, Result};

/// Whether a record's tokens can be used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum RecordStatus {
    /// The tokens are believed good.
    Active,
    /// Salesforce refused the refresh token for good (revoked, expired, family revoked after a
    /// replay): a human must authorize again. The record is kept so that the application can
    /// tell whom to ask.
    ReauthRequired {
        /// Why, in words that contain no secret (such as the OAuth `error` code).
        reason: String,
        /// When the store learned it.
        since: SystemTime,
    },
}

impl RecordStatus {
    /// The status without its details, as used by [`ListQuery::status`].
    pub fn kind(&self) -> StatusKind {
        match self {
            Self::Active => StatusKind::Active,
            Self::ReauthRequired { .. } => StatusKind::ReauthRequired,
        }
    }
}

/// A [`RecordStatus`] without its details.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusKind {
    /// [`RecordStatus::Active`].
    Active,
    /// [`RecordStatus::ReauthRequired`].
    ReauthRequired,
}

impl StatusKind {
    /// A stable lowercase name, as stored in clear metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::ReauthRequired => "reauth_required",
        }
    }
}

/// A write-ahead marker: a refresher set it (under its lease) just before spending a rotating
/// refresh token, and clears it when it writes the result.
///
/// Finding it set after the holder died means the refresh token may already be spent: the next
/// refresher must expect `invalid_grant` and must not retry blindly with the same token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    /// The lease holder that set it.
    pub holder: String,
    /// The fence of that holder's lease.
    pub fence: u64,
    /// When it was set.
    pub since: SystemTime,
}

/// Everything a store keeps for one [`TokenKey`].
///
/// `Debug` shows metadata only: [`TokenSet`]'s own `Debug` redacts every secret.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenRecord {
    /// Whose tokens these are.
    pub key: TokenKey,
    /// The tokens, refresh token included.
    pub tokens: TokenSet,
    /// Whether they can be used.
    pub status: RecordStatus,
    /// When the record was first stored.
    pub issued_at: SystemTime,
    /// When the tokens were last refreshed, if ever.
    pub last_refreshed_at: Option<SystemTime>,
    /// How many refreshes this record has seen.
    pub refresh_count: u64,
    /// The session lifetime learned for this tenant (from an observed expiry), if any.
    pub learned_lifetime: Option<Duration>,
    /// Set while a refresher spends the refresh token; see [`InFlight`].
    pub refresh_in_flight: Option<InFlight>,
    /// The version the store gave this record when it was read or written; `0` for a record
    /// that was never stored. Stores ignore it on writes: the expected version is an explicit
    /// argument of [`put`](crate::TokenStore::put).
    pub version: u64,
}

impl TokenRecord {
    /// A new, active record for `tokens`, first stored at `now`.
    pub fn new(key: TokenKey, tokens: TokenSet, now: SystemTime) -> Self {
        Self {
            key,
            tokens,
            status: RecordStatus::Active,
            issued_at: now,
            last_refreshed_at: None,
            refresh_count: 0,
            learned_lifetime: None,
            refresh_in_flight: None,
            version: 0,
        }
    }
}

impl fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `TokenSet`'s `Debug` redacts its secrets; everything else here is metadata.
        f.debug_struct("TokenRecord")
            .field("key", &self.key.to_string())
            .field("tokens", &self.tokens)
            .field("status", &self.status)
            .field("issued_at", &self.issued_at)
            .field("last_refreshed_at", &self.last_refreshed_at)
            .field("refresh_count", &self.refresh_count)
            .field("learned_lifetime", &self.learned_lifetime)
            .field("refresh_in_flight", &self.refresh_in_flight)
            .field("version", &self.version)
            .finish()
    }
}

/// An exclusive, expiring right to refresh one key, from
/// [`try_acquire`](crate::TokenStore::try_acquire).
///
/// The `fence` grows with every acquisition of the key, forever: a write made conditional on
/// the lease ([`put`](crate::TokenStore::put) with `Some(&lease)`) fails with
/// [`LeaseLost`](crate::ErrorKind::LeaseLost) once anybody else has acquired the key since.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The key it covers.
    pub key: TokenKey,
    /// Who holds it: a name unique to the process and task (host, pid and a random part).
    pub holder: String,
    /// The fencing token: strictly greater than the fence of every earlier acquisition.
    pub fence: u64,
    /// When it lapses unless renewed.
    pub expires_at: SystemTime,
}

/// The version a write over `expected` stores: checked, because a wrapped counter would let a
/// stale writer's expected version match again.
pub(crate) fn next_version(expected: u64) -> Result<u64> {
    expected
        .checked_add(1)
        .ok_or_else(|| Error::conflict("version counter is exhausted"))
}

/// Where a listing resumes: after the key whose string form it holds.
///
/// Treat it as opaque. It is public so that a backend outside this crate can page: listings are
/// ordered by the key's string form, and a page after a cursor holds only keys greater than
/// [`Cursor::last_key`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cursor(String);

impl Cursor {
    /// The cursor after the key whose string form is `key`.
    pub fn after_key(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The string form of the last key of the previous page.
    pub fn last_key(&self) -> &str {
        &self.0
    }
}

/// A filter and a page position for [`list`](crate::TokenStore::list).
///
/// Every filter that is set must match (they are combined with AND).
///
/// ```
/// use sfauth_storage::{ListQuery, StatusKind};
///
/// let query = ListQuery::new().client_id("3MVG9.key").status(StatusKind::ReauthRequired).limit(50);
/// assert_eq!(query.effective_limit(), 50);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListQuery {
    /// Only this org.
    pub org_id: Option<OrgId>,
    /// Only this user.
    pub user_id: Option<UserId>,
    /// Only this connected app.
    pub client_id: Option<String>,
    /// Only records with this status.
    pub status: Option<StatusKind>,
    /// Resume after this position.
    pub after: Option<Cursor>,
    /// At most this many records ([`ListQuery::DEFAULT_LIMIT`] when `None`, at most
    /// [`ListQuery::MAX_LIMIT`]).
    pub limit: Option<usize>,
}

impl ListQuery {
    /// The page size when none is set.
    pub const DEFAULT_LIMIT: usize = 100;
    /// The largest page size; larger limits are lowered to it.
    pub const MAX_LIMIT: usize = 1000;

    /// Everything, first page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only this org.
    pub fn org_id(mut self, org_id: OrgId) -> Self {
        self.org_id = Some(org_id);
        self
    }

    /// Only this user.
    pub fn user_id(mut self, user_id: UserId) -> Self {
        self.user_id = Some(user_id);
        self
    }

    /// Only this connected app.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// Only this status.
    pub fn status(mut self, status: StatusKind) -> Self {
        self.status = Some(status);
        self
    }

    /// Resume after `cursor` (from [`ListPage::next`]).
    pub fn after(mut self, cursor: Option<Cursor>) -> Self {
        self.after = cursor;
        self
    }

    /// At most `limit` records per page.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The page size to use: the limit, or the default, between 1 and [`Self::MAX_LIMIT`].
    pub fn effective_limit(&self) -> usize {
        self.limit
            .unwrap_or(Self::DEFAULT_LIMIT)
            .clamp(1, Self::MAX_LIMIT)
    }

    /// Whether a record with this key and status passes the filters (the cursor aside).
    pub fn matches(&self, key: &TokenKey, status: StatusKind) -> bool {
        self.org_id.as_ref().is_none_or(|org| org == key.org_id())
            && self
                .user_id
                .as_ref()
                .is_none_or(|user| user == key.user_id())
            && self
                .client_id
                .as_ref()
                .is_none_or(|client| *client == key.client_id())
            && self.status.is_none_or(|wanted| wanted == status)
    }

    /// Whether the key string `key` comes after the cursor.
    pub fn is_after_cursor(&self, key: &str) -> bool {
        self.after
            .as_ref()
            .is_none_or(|cursor| key > cursor.last_key())
    }
}

/// One page of [`list`](crate::TokenStore::list).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListPage {
    /// The matching records, ordered by the key's string form.
    pub records: Vec<TokenRecord>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

impl ListPage {
    /// A page from the first `limit + 1` matches in key order: keeps `limit` of them and sets
    /// [`ListPage::next`] when there was one more. A helper for backends.
    pub fn from_matches(mut records: Vec<TokenRecord>, limit: usize) -> Self {
        let next = if records.len() > limit {
            records.truncate(limit);
            records
                .last()
                .map(|record| Cursor::after_key(record.key.to_string()))
        } else {
            None
        };
        Self { records, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn next_version_is_checked() {
        assert_eq!(next_version(0).unwrap(), 1);
        assert_eq!(next_version(41).unwrap(), 42);
        assert_eq!(
            next_version(u64::MAX).unwrap_err().kind(),
            ErrorKind::Conflict
        );
    }
}
