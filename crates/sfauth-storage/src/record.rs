//! What a store keeps per key ([`TokenRecord`]), the refresh lease ([`Lease`]) and the listing
//! query ([`ListQuery`], [`ListPage`], and [`EntryPage`] for a listing that names the records it
//! cannot open).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sfauth_core::{OrgId, TokenKey, TokenSet, UserId};
use zeroize::Zeroize;

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

/// Which flow renews a tenant that has no refresh token; see [`RenewalHint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RenewalFlow {
    /// The OAuth 2.0 client credentials flow (the connected app's Run As user).
    ClientCredentials,
    /// The OAuth 2.0 JWT bearer flow: an assertion for a username, signed with a private key.
    JwtBearer,
    /// The username-password flow: a username and its password (with security token).
    UsernamePassword,
}

impl RenewalFlow {
    /// A stable lowercase name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::JwtBearer => "jwt_bearer",
            Self::UsernamePassword => "username_password",
        }
    }
}

/// How to renew a tenant without a refresh token, kept with its record so that a restarted
/// process still knows: the flow, the username when the flow has one, and where the
/// credential is.
///
/// The client credentials, JWT bearer and username-password flows issue no refresh token; a
/// tenant logged in with one of them is renewed by running the flow again. Without this hint,
/// what that takes would live only in the memory of the process that logged in.
///
/// It never holds a secret: `key_ref` *names* where the private key or the password is (a file
/// path, a secret manager's entry, a name the application defines) and the application
/// resolves it when it renews. So the hint is safe to print (`Debug` shows every field) and to
/// keep next to the tokens. Never put the key or the password itself in `key_ref`.
///
/// ```
/// use sfauth_storage::{RenewalFlow, RenewalHint};
///
/// let hint = RenewalHint::jwt_bearer("integration@acme.example")
///     .with_key_ref("/etc/sfauth/acme-jwt.pem");
/// assert_eq!(hint.flow, RenewalFlow::JwtBearer);
/// assert_eq!(hint.username.as_deref(), Some("integration@acme.example"));
/// assert_eq!(hint.key_ref.as_deref(), Some("/etc/sfauth/acme-jwt.pem"));
///
/// // Client credentials need no username: the connected app's secret is the application's.
/// let hint = RenewalHint::client_credentials();
/// assert!(hint.username.is_none() && hint.key_ref.is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RenewalHint {
    /// The flow to run again.
    pub flow: RenewalFlow,
    /// The Salesforce username the flow logs in as (JWT bearer, username-password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Where the credential is: the private key (JWT bearer), the password (username-password)
    /// or a per-tenant client secret (client credentials), as a path or a name the application
    /// resolves. Never the secret itself. `None` when the application finds it by other means
    /// (such as the username).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ref: Option<String>,
}

impl RenewalHint {
    /// Renew with the client credentials flow.
    pub fn client_credentials() -> Self {
        Self::new(RenewalFlow::ClientCredentials, None)
    }

    /// Renew with the JWT bearer flow for `username`.
    pub fn jwt_bearer(username: impl Into<String>) -> Self {
        Self::new(RenewalFlow::JwtBearer, Some(username.into()))
    }

    /// Renew with the username-password flow for `username`.
    pub fn username_password(username: impl Into<String>) -> Self {
        Self::new(RenewalFlow::UsernamePassword, Some(username.into()))
    }

    /// The same hint, naming where the credential is (a path or an application-defined name;
    /// never the key or password itself).
    pub fn with_key_ref(mut self, key_ref: impl Into<String>) -> Self {
        self.key_ref = Some(key_ref.into());
        self
    }

    fn new(flow: RenewalFlow, username: Option<String>) -> Self {
        Self {
            flow,
            username,
            key_ref: None,
        }
    }
}

/// What an application keeps with a login besides its tokens: named settings (such as the
/// login host or the flow it used) and named secrets (such as the connected app's client
/// secret), sealed with the record, versioned with it and written by the same
/// compare-and-swap, so that they can never disagree with the tokens they belong to.
///
/// Settings and secrets are separate name spaces. `Debug` shows the settings and only the
/// *names* of the secrets; secret values are wiped from memory when the map is dropped.
/// Limits keep a record small enough for every backend: at most [`Metadata::MAX_ENTRIES`]
/// entries, names of at most [`Metadata::MAX_NAME_LEN`] bytes from `[A-Za-z0-9_.-]`, values of
/// at most [`Metadata::MAX_VALUE_LEN`] bytes.
///
/// ```
/// use sfauth_storage::Metadata;
///
/// let mut metadata = Metadata::new();
/// metadata.set("flow", "web")?;
/// metadata.set_secret("client_secret", "s3cr3t")?;
/// assert_eq!(metadata.get("flow"), Some("web"));
/// assert_eq!(metadata.secret("client_secret"), Some("s3cr3t"));
/// assert_eq!(metadata.get("client_secret"), None, "secrets are not settings");
/// assert!(!format!("{metadata:?}").contains("s3cr3t"));
/// assert!(metadata.set("bad name", "x").is_err());
/// # Ok::<(), sfauth_storage::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    settings: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    secrets: BTreeMap<String, String>,
}

impl Metadata {
    /// The most entries (settings and secrets together) a record keeps.
    pub const MAX_ENTRIES: usize = 64;
    /// The longest name, in bytes.
    pub const MAX_NAME_LEN: usize = 64;
    /// The longest value, in bytes.
    pub const MAX_VALUE_LEN: usize = 4096;

    /// No settings and no secrets.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.settings.is_empty() && self.secrets.is_empty()
    }

    /// The setting `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.settings.get(name).map(String::as_str)
    }

    /// Sets the setting `name` to `value` (never a secret: settings show in `Debug`).
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> Result<()> {
        let value = value.into();
        self.check(name, &value, self.settings.contains_key(name))?;
        self.settings.insert(name.to_owned(), value);
        Ok(())
    }

    /// Removes the setting `name`; returns whether it was set.
    pub fn remove(&mut self, name: &str) -> bool {
        self.settings.remove(name).is_some()
    }

    /// Every setting, by name.
    pub fn settings(&self) -> impl Iterator<Item = (&str, &str)> {
        self.settings.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The secret `name`, if set. The caller must not log or print it.
    pub fn secret(&self, name: &str) -> Option<&str> {
        self.secrets.get(name).map(String::as_str)
    }

    /// Sets the secret `name` to `value`.
    pub fn set_secret(&mut self, name: &str, value: impl Into<String>) -> Result<()> {
        let mut value = value.into();
        if let Err(error) = self.check(name, &value, self.secrets.contains_key(name)) {
            value.zeroize();
            return Err(error);
        }
        if let Some(mut old) = self.secrets.insert(name.to_owned(), value) {
            old.zeroize();
        }
        Ok(())
    }

    /// Removes the secret `name`; returns whether it was set.
    pub fn remove_secret(&mut self, name: &str) -> bool {
        match self.secrets.remove(name) {
            Some(mut old) => {
                old.zeroize();
                true
            }
            None => false,
        }
    }

    /// The names of the secrets that are set.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.secrets.keys().map(String::as_str)
    }

    /// Whether a decoded map keeps to the limits a writer is held to (a stored map is outside
    /// input).
    pub(crate) fn is_within_limits(&self) -> bool {
        self.settings.len().saturating_add(self.secrets.len()) <= Self::MAX_ENTRIES
            && self
                .settings
                .iter()
                .chain(&self.secrets)
                .all(|(name, value)| valid_name(name) && value.len() <= Self::MAX_VALUE_LEN)
    }

    fn check(&self, name: &str, value: &str, replaces: bool) -> Result<()> {
        if !valid_name(name) {
            return Err(Error::config(format!(
                "metadata name {:?} is not 1 to {} of [A-Za-z0-9_.-]",
                name.chars().take(Self::MAX_NAME_LEN).collect::<String>(),
                Self::MAX_NAME_LEN
            )));
        }
        if value.len() > Self::MAX_VALUE_LEN {
            // The value may be a secret: say how long it is, never what it is.
            return Err(Error::config(format!(
                "metadata value of {name} is {} bytes, more than {}",
                value.len(),
                Self::MAX_VALUE_LEN
            )));
        }
        let entries = self.settings.len().saturating_add(self.secrets.len());
        if !replaces && entries >= Self::MAX_ENTRIES {
            return Err(Error::config(format!(
                "a record keeps at most {} metadata entries",
                Self::MAX_ENTRIES
            )));
        }
        Ok(())
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= Metadata::MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Drop for Metadata {
    fn drop(&mut self) {
        for value in self.secrets.values_mut() {
            value.zeroize();
        }
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        map.entries(&self.settings);
        for name in self.secrets.keys() {
            map.entry(name, &format_args!("[redacted]"));
        }
        map.finish()
    }
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
    /// How to renew the tenant without a refresh token, if it was logged in with a flow that
    /// issues none; see [`RenewalHint`]. Records stored before it existed read as `None`.
    pub renewal: Option<RenewalHint>,
    /// What the application keeps with the login (settings and secrets), sealed and written
    /// with the tokens; see [`Metadata`]. Records stored before it existed read as empty.
    pub metadata: Metadata,
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
            renewal: None,
            metadata: Metadata::new(),
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
            .field("renewal", &self.renewal)
            .field("metadata", &self.metadata)
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
/// stale writer's expected version match again. A record at the end of the counter cannot
/// have got there by writes (2^64 of them), so it is reported as damaged, not as a conflict
/// that a caller would re-read and retry forever.
pub(crate) fn next_version(expected: u64) -> Result<u64> {
    expected
        .checked_add(1)
        .ok_or_else(|| Error::corrupt("the record's version counter is exhausted"))
}

/// The latest time a decoded record keeps: the end of year 9999 UTC. Later stored times are
/// lowered to it.
///
/// No record this crate writes holds a later time, but a stored number is outside input: one
/// near the end of `SystemTime`'s range would make any later `time + duration` panic. Clamping
/// keeps the record (and its refresh token) usable; the time still reads as "far future".
pub(crate) const MAX_STORED_TIME: Duration = Duration::from_secs(253_402_300_799);

/// A time stored as milliseconds since the epoch: negative reads as the epoch, and anything
/// past [`MAX_STORED_TIME`] as that bound, so that arithmetic on it cannot overflow. For the
/// backends that keep times as numbers.
#[cfg(any(feature = "sqlite", feature = "redis", feature = "postgres"))]
pub(crate) fn from_millis(millis: i64) -> SystemTime {
    let since_epoch =
        Duration::from_millis(u64::try_from(millis).unwrap_or(0)).min(MAX_STORED_TIME);
    SystemTime::UNIX_EPOCH
        .checked_add(since_epoch)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The longest learned lifetime a decoded record keeps. Salesforce sessions last at most 24
/// hours; this bound is only there to keep arithmetic on the value safe, and a caller applies
/// its own, tighter policy.
pub(crate) const MAX_STORED_LIFETIME: Duration = Duration::from_secs(366 * 24 * 60 * 60);

fn clamp_time(time: &mut SystemTime) {
    let max = SystemTime::UNIX_EPOCH
        .checked_add(MAX_STORED_TIME)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if *time > max {
        *time = max;
    }
}

/// Lowers every time and duration of a decoded `record` to the bounds above, so that no
/// arithmetic on a stored number can overflow.
pub(crate) fn clamp_decoded(record: &mut TokenRecord) {
    let times = [
        Some(&mut record.issued_at),
        record.last_refreshed_at.as_mut(),
        record.tokens.issued_at.as_mut(),
        record.tokens.expires_at.as_mut(),
        record
            .refresh_in_flight
            .as_mut()
            .map(|in_flight| &mut in_flight.since),
        match &mut record.status {
            RecordStatus::ReauthRequired { since, .. } => Some(since),
            RecordStatus::Active => None,
        },
    ];
    for time in times.into_iter().flatten() {
        clamp_time(time);
    }
    if let Some(lifetime) = &mut record.learned_lifetime {
        *lifetime = (*lifetime).min(MAX_STORED_LIFETIME);
    }
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
    /// Only records whose key has this label (the application's name for the login, such as
    /// the CLI's alias). Matched on the key's clear string form: no other record is opened.
    pub label: Option<String>,
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

    /// Only this label.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// The end of the key string of every key with the query's label: `|` and the label as
    /// the key's string form escapes it (`%` as `%25`, `|` as `%7C`, so the last `|` of a key
    /// starts its label). For the backends that match the label on their stored key column.
    pub fn label_suffix(&self) -> Option<String> {
        self.label
            .as_ref()
            .map(|label| format!("|{}", label.replace('%', "%25").replace('|', "%7C")))
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
            && self.label.as_ref().is_none_or(|label| label == key.label())
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

/// One matching key of [`list_entries`](crate::TokenStore::list_entries): the key, read from
/// the store's clear columns, and its record or the reason it cannot be opened.
///
/// The key is known even when the record is not (sealed with another key, damaged), so that a
/// tool can show such a record and [`delete`](crate::TokenStore::delete) it, which needs no
/// decoding.
#[derive(Debug)]
#[non_exhaustive]
pub struct ListEntry {
    /// The record's key.
    pub key: TokenKey,
    /// The record, or why it cannot be opened ([`Corrupt`](crate::ErrorKind::Corrupt),
    /// [`WrongKey`](crate::ErrorKind::WrongKey)).
    pub record: Result<TokenRecord>,
}

impl ListEntry {
    /// The entry of `key`.
    pub fn new(key: TokenKey, record: Result<TokenRecord>) -> Self {
        Self { key, record }
    }
}

/// One page of [`list_entries`](crate::TokenStore::list_entries).
#[derive(Debug)]
#[non_exhaustive]
pub struct EntryPage {
    /// The matching keys with their records, ordered by the key's string form.
    pub entries: Vec<ListEntry>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

impl EntryPage {
    /// A page from the first `limit + 1` matches in key order, as [`ListPage::from_matches`].
    pub fn from_matches(mut entries: Vec<ListEntry>, limit: usize) -> Self {
        let next = if entries.len() > limit {
            entries.truncate(limit);
            entries
                .last()
                .map(|entry| Cursor::after_key(entry.key.to_string()))
        } else {
            None
        };
        Self { entries, next }
    }

    /// The page as [`list`](crate::TokenStore::list) returns it: the first record that cannot
    /// be opened fails the whole page.
    pub fn into_page(self) -> Result<ListPage> {
        let records = self
            .entries
            .into_iter()
            .map(|entry| entry.record)
            .collect::<Result<Vec<_>>>()?;
        Ok(ListPage {
            records,
            next: self.next,
        })
    }
}

impl From<ListPage> for EntryPage {
    fn from(page: ListPage) -> Self {
        Self {
            entries: page
                .records
                .into_iter()
                .map(|record| ListEntry::new(record.key.clone(), Ok(record)))
                .collect(),
            next: page.next,
        }
    }
}

/// What a warm start needs of a record without opening it: its key, version and the times its
/// tokens fall due by, none of them secret; see [`list_headers`](crate::TokenStore::list_headers)
/// and [`header`](crate::TokenStore::header).
///
/// Times are kept to the millisecond, as the stores' clear columns keep them. `record` holds
/// the whole record when the store had to open it anyway: a backend without clear headers, a
/// row written before they existed (or by an older version of this crate), a record that is
/// not [`Active`](StatusKind::Active) (its reason is sealed), or, from `header`, one with a
/// refresh in flight.
///
/// ```
/// use std::time::SystemTime;
/// use sfauth_core::{AccessToken, LoginHost, TokenKey, TokenSet};
/// use sfauth_storage::{RecordHeader, TokenRecord};
///
/// let identity = "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK".parse()?;
/// let tokens = TokenSet::new(AccessToken::new("token"), "https://acme.my.salesforce.com".parse()?, identity);
/// let key = TokenKey::new(&LoginHost::Production, &tokens.identity, "client", "default");
/// let header = RecordHeader::of(&TokenRecord::new(key.clone(), tokens, SystemTime::now()));
/// assert_eq!(header.key, key);
/// assert!(header.record.is_none(), "a header made here carries no tokens");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordHeader {
    /// The record's key.
    pub key: TokenKey,
    /// The record's version.
    pub version: u64,
    /// The record's status.
    pub status: StatusKind,
    /// [`TokenRecord::issued_at`].
    pub issued_at: SystemTime,
    /// [`TokenRecord::last_refreshed_at`].
    pub last_refreshed_at: Option<SystemTime>,
    /// [`TokenRecord::learned_lifetime`].
    pub learned_lifetime: Option<Duration>,
    /// The tokens' `issued_at`.
    pub tokens_issued_at: Option<SystemTime>,
    /// The tokens' `expires_at`.
    pub tokens_expires_at: Option<SystemTime>,
    /// The whole record, when the store opened it to answer (see above).
    pub record: Option<TokenRecord>,
}

impl RecordHeader {
    /// The header of `record`, times cut to the millisecond, without the record itself.
    pub fn of(record: &TokenRecord) -> Self {
        Self {
            key: record.key.clone(),
            version: record.version,
            status: record.status.kind(),
            issued_at: to_the_milli(record.issued_at),
            last_refreshed_at: record.last_refreshed_at.map(to_the_milli),
            learned_lifetime: record
                .learned_lifetime
                .map(|d| Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
            tokens_issued_at: record.tokens.issued_at.map(to_the_milli),
            tokens_expires_at: record.tokens.expires_at.map(to_the_milli),
            record: None,
        }
    }

    /// A header of `key` at `version` with `status` and no times yet, for a backend that fills
    /// them in from its clear columns (`RecordHeader` is non-exhaustive).
    pub fn of_parts(key: TokenKey, version: u64, status: StatusKind) -> Self {
        Self {
            key,
            version,
            status,
            issued_at: SystemTime::UNIX_EPOCH,
            last_refreshed_at: None,
            learned_lifetime: None,
            tokens_issued_at: None,
            tokens_expires_at: None,
            record: None,
        }
    }

    /// The header of `record`, carrying the record (for a store that opened it anyway).
    pub fn with_record(record: TokenRecord) -> Self {
        let mut header = Self::of(&record);
        header.record = Some(record);
        header
    }
}

/// The clear header the network stores keep beside `record` (Redis: field `header`;
/// PostgreSQL: column `header`): `1` when a refresh is in flight
/// (`0` otherwise), then the record's `issued_at`, `last_refreshed_at`, `learned_lifetime`, and
/// its tokens' `issued_at` and `expires_at`, in milliseconds (since the epoch, but for the
/// lifetime), empty for none, separated by `:`. Only times and a flag: nothing secret.
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) fn header_field(record: &TokenRecord) -> String {
    let header = RecordHeader::of(record);
    let at = |time: SystemTime| {
        time.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis())
            .to_string()
    };
    let maybe = |time: Option<SystemTime>| time.map(at).unwrap_or_default();
    format!(
        "{}:{}:{}:{}:{}:{}",
        u8::from(record.refresh_in_flight.is_some()),
        at(header.issued_at),
        maybe(header.last_refreshed_at),
        header
            .learned_lifetime
            .map(|lifetime| lifetime.as_millis().to_string())
            .unwrap_or_default(),
        maybe(header.tokens_issued_at),
        maybe(header.tokens_expires_at),
    )
}

/// The header of `key` at `version` from its stored [`header_field`]; `None` when a refresh is
/// in flight (the caller opens the record, whose mark says by whom). A field that does not parse
/// is [`Corrupt`](crate::ErrorKind::Corrupt).
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) fn parse_header(
    key: &TokenKey,
    version: u64,
    field: &str,
) -> Result<Option<RecordHeader>> {
    let damaged = || Error::corrupt(format!("the stored header of {key} is damaged"));
    let parts: Vec<&str> = field.split(':').collect();
    let [
        in_flight,
        issued,
        refreshed,
        lifetime,
        tokens_issued,
        tokens_expires,
    ] = parts[..]
    else {
        return Err(damaged());
    };
    match in_flight {
        "0" => {}
        "1" => return Ok(None),
        _ => return Err(damaged()),
    }
    let time = |text: &str| -> Result<Option<SystemTime>> {
        if text.is_empty() {
            return Ok(None);
        }
        text.parse::<i64>()
            .map(|millis| Some(from_millis(millis)))
            .map_err(|_| damaged())
    };
    let mut header = RecordHeader::of_parts(key.clone(), version, StatusKind::Active);
    header.issued_at = time(issued)?.ok_or_else(damaged)?;
    header.last_refreshed_at = time(refreshed)?;
    header.learned_lifetime = if lifetime.is_empty() {
        None
    } else {
        Some(Duration::from_millis(
            lifetime.parse::<u64>().map_err(|_| damaged())?,
        ))
    };
    header.tokens_issued_at = time(tokens_issued)?;
    header.tokens_expires_at = time(tokens_expires)?;
    Ok(Some(header))
}

/// `time` cut to a whole millisecond since the epoch, as clear columns keep it.
fn to_the_milli(time: SystemTime) -> SystemTime {
    let millis = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    from_millis(millis)
}

/// One page of [`list_headers`](crate::TokenStore::list_headers).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeaderPage {
    /// The matching records' headers, ordered by the key's string form.
    pub headers: Vec<RecordHeader>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

impl HeaderPage {
    /// A page from the first `limit + 1` matches in key order, as [`ListPage::from_matches`].
    pub fn from_matches(mut headers: Vec<RecordHeader>, limit: usize) -> Self {
        let next = if headers.len() > limit {
            headers.truncate(limit);
            headers
                .last()
                .map(|header| Cursor::after_key(header.key.to_string()))
        } else {
            None
        };
        Self { headers, next }
    }
}

impl From<ListPage> for HeaderPage {
    /// Every record's header, each carrying its record.
    fn from(page: ListPage) -> Self {
        Self {
            headers: page
                .records
                .into_iter()
                .map(RecordHeader::with_record)
                .collect(),
            next: page.next,
        }
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
            ErrorKind::Corrupt
        );
    }

    #[test]
    fn metadata_keeps_its_limits_and_hides_secrets() {
        let mut metadata = Metadata::new();
        assert!(metadata.is_empty());
        metadata
            .set("login_host", "https://acme.my.salesforce.com")
            .unwrap();
        metadata
            .set_secret("client_secret", "hunter2-secret")
            .unwrap();
        let shown = format!("{metadata:?}");
        assert!(shown.contains("login_host") && shown.contains("client_secret"));
        assert!(!shown.contains("hunter2"), "{shown}");
        for bad in ["", "a b", "ä", &"n".repeat(Metadata::MAX_NAME_LEN + 1)] {
            assert_eq!(
                metadata.set(bad, "x").unwrap_err().kind(),
                ErrorKind::Config
            );
        }
        let long = "s".repeat(Metadata::MAX_VALUE_LEN + 1);
        let error = metadata.set_secret("client_secret", long).unwrap_err();
        assert!(!error.to_string().contains("sss"), "{error}");
        assert_eq!(metadata.secret("client_secret"), Some("hunter2-secret"));
        for i in 2..Metadata::MAX_ENTRIES {
            metadata.set(&format!("n{i}"), "v").unwrap();
        }
        assert_eq!(
            metadata.set("one-more", "v").unwrap_err().kind(),
            ErrorKind::Config
        );
        // Replacing an entry at the limit is not a new entry.
        metadata.set("n2", "w").unwrap();
        assert!(metadata.is_within_limits());
        assert!(metadata.remove_secret("client_secret"));
        assert!(!metadata.remove_secret("client_secret"));
        assert_eq!(metadata.secret_names().count(), 0);
    }

    #[test]
    fn renewal_hints_name_their_flow_and_credential() {
        let cc = RenewalHint::client_credentials();
        assert_eq!(
            (cc.flow, cc.username, cc.key_ref),
            (RenewalFlow::ClientCredentials, None, None)
        );
        let jwt = RenewalHint::jwt_bearer("u@example.com").with_key_ref("/keys/u.pem");
        assert_eq!(jwt.flow, RenewalFlow::JwtBearer);
        assert_eq!(jwt.username.as_deref(), Some("u@example.com"));
        assert_eq!(jwt.key_ref.as_deref(), Some("/keys/u.pem"));
        let password = RenewalHint::username_password("u@example.com");
        assert_eq!(password.flow, RenewalFlow::UsernamePassword);
        assert_eq!(password.username.as_deref(), Some("u@example.com"));
        assert_eq!(password.key_ref, None);
        let secret = RenewalHint::client_credentials().with_key_ref("vault:acme/client-secret");
        assert_eq!(secret.key_ref.as_deref(), Some("vault:acme/client-secret"));
        for flow in [
            RenewalFlow::ClientCredentials,
            RenewalFlow::JwtBearer,
            RenewalFlow::UsernamePassword,
        ] {
            assert_eq!(
                serde_json::to_value(flow).unwrap(),
                serde_json::Value::from(flow.as_str())
            );
        }
        // The stored shape, which old and new versions must agree on.
        assert_eq!(
            serde_json::to_string(&jwt).unwrap(),
            r#"{"flow":"jwt_bearer","username":"u@example.com","key_ref":"/keys/u.pem"}"#
        );
        assert_eq!(
            serde_json::from_str::<RenewalHint>(r#"{"flow":"client_credentials"}"#).unwrap(),
            RenewalHint::client_credentials()
        );
    }
}
