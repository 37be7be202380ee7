//! What a successful grant yields ([`TokenSet`]) and whose tokens they are ([`TokenKey`]).
//!
//! # Expiry
//!
//! Salesforce sends no `expires_in`, so [`TokenSet::expires_at`] is filled from the first of
//! these that is known, and stays `None` otherwise ([`TokenSet::expiry_source`] says which):
//!
//! 1. `expires_in` in the token response, when a server sends it (custom OAuth servers do),
//!    counted from `issued_at` or else from when the response was parsed;
//! 2. the `exp` claim of the access token, when the app issues JWT-based access tokens (read
//!    without verifying the signature: it is a hint for scheduling refreshes, not a trust
//!    decision);
//! 3. an introspection result, applied with [`TokenSet::apply_introspection`] (it replaces only
//!    a session-timeout guess);
//! 4. a configured session timeout ([`OAuthClient::with_session_timeout`](crate::OAuthClient::with_session_timeout),
//!    or [`TokenSet::apply_session_timeout`] for a stored set),
//!    counted from `issued_at` or else from when the response was parsed. Salesforce sessions
//!    time out after *inactivity*, so this is a lower bound.
//!
//! ## The sane range
//!
//! Every one of these numbers comes from outside (a server, a token, a configuration file), so
//! none is trusted to be sensible, and none can make the arithmetic overflow: an estimate is
//! computed with checked arithmetic and then clamped to `[start, start + 24 h]`
//! ([`MAX_SESSION`], the longest session timeout Salesforce offers), where `start` is the issue
//! time (`issued_at`), or the time of parsing when `issued_at` is absent or later than that
//! (a server clock ahead of ours, or a nonsense value, cannot push the range into the future).
//! So:
//!
//! - an `expires_in` of 0, or a JWT `exp` before the issue time, means the token is already
//!   expired: [`TokenSet::expires_within`] says so, and the caller refreshes;
//! - an `expires_in` of `18446744073709551615`, a JWT `exp` of `u64::MAX` or a session timeout of
//!   `u64::MAX` seconds mean "at most a day": the token is refreshed a day after issue at the
//!   latest (earlier if a request meets a 401);
//! - an introspection `exp` is clamped to `[now, now + 24 h]` instead: the server has just seen
//!   the session alive, and activity extends a session past its first day.
//!
//! A value that cannot be read as a number at all (`expires_in: "soon"`) is ignored, as if it
//! were absent; a negative one counts as 0. Neither fails the response: a token response that
//! carried a refresh token must not be turned into an error by a hint about expiry.
//!
//! # Storage
//!
//! `TokenSet` serializes with serde, **secrets in the clear** (through
//! [`secret::exposed`](crate::secret::exposed)), because storage must be able to persist them;
//! its `Debug` never shows them.
//!
//! ```
//! use sfauth_core::{AccessToken, IdentityUrl, TokenKey, TokenSet, LoginHost};
//!
//! let identity: IdentityUrl =
//!     "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK".parse()?;
//! let tokens = TokenSet::new(
//!     AccessToken::new("00D5e000000Abcd!AQ4AQ"),
//!     "https://acme.my.salesforce.com".parse().unwrap(),
//!     identity,
//! );
//! assert!(!format!("{tokens:?}").contains("AQ4AQ"));
//! let key = TokenKey::new(&LoginHost::Production, &tokens.identity, "3MVG9.key", "default");
//! assert_eq!(
//!     key.to_string(),
//!     "v1|https://login.salesforce.com|00D5e000000AbcdEAC|0055e000001XyZaAAK|3MVG9.key|default"
//! );
//! assert_eq!(key.to_string().parse::<TokenKey>()?, key);
//! # Ok::<(), sfauth_core::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::host::LoginHost;
use crate::invalid::InvalidValue;
use crate::redact::scrub;
use crate::secret::{AccessToken, IdToken, REDACTED, RefreshToken, exposed};

/// The longest a Salesforce session lasts without activity: 24 hours, the longest session
/// timeout an org or a connected app can set. Expiry estimates never go further than this past
/// their start; see the [module docs](self#the-sane-range).
pub const MAX_SESSION: Duration = Duration::from_secs(86_400);

/// Where [`TokenSet::expires_at`] came from, strongest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExpirySource {
    /// The token response's `expires_in`.
    ExpiresIn,
    /// The `exp` claim of a JWT access token.
    JwtExp,
    /// An introspection result's `exp`.
    Introspection,
    /// The configured session timeout.
    SessionTimeout,
}

/// The tokens and metadata of one successful grant.
///
/// Fields are public for reading and updating; build one with [`TokenSet::new`] (the struct is
/// `#[non_exhaustive]`). `Debug` redacts every secret (and the `signature`, an HMAC keyed with
/// the client secret); `Serialize` writes them in the clear for storage.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TokenSet {
    /// The access token.
    #[serde(with = "exposed")]
    pub access_token: AccessToken,
    /// The refresh token, when one was issued (or, after a refresh without rotation, the one
    /// that was used).
    #[serde(
        with = "exposed::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub refresh_token: Option<RefreshToken>,
    /// Base URL for API calls. It can change (org migration): always take the latest.
    pub instance_url: Url,
    /// The identity URL (`id`), with the org and user ids parsed from it.
    #[serde(rename = "id")]
    pub identity: IdentityUrl,
    /// When the token was issued (`issued_at`, milliseconds on the wire).
    #[serde(
        with = "epoch_millis",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub issued_at: Option<SystemTime>,
    /// Base64 HMAC-SHA256 over `id` + `issued_at`; see [`crate::signature`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Granted scopes, space-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// `token_type` as sent; Salesforce sends `Bearer`, some responses omit it (read `None` as
    /// `Bearer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// The OpenID Connect ID token, when `openid` was granted.
    #[serde(
        with = "exposed::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub id_token: Option<IdToken>,
    /// `sfdc_community_url`: the Experience Cloud site the user logged in through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub community_url: Option<Url>,
    /// `sfdc_community_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
    /// `api_instance_url`, seen in client credentials responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_instance_url: Option<Url>,
    /// When the access token expires, if known; see the [module docs](self#expiry).
    #[serde(
        with = "epoch_millis",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<SystemTime>,
    /// Where `expires_at` came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_source: Option<ExpirySource>,
}

impl TokenSet {
    /// A token set with only the fields Salesforce always sends.
    pub fn new(access_token: AccessToken, instance_url: Url, identity: IdentityUrl) -> Self {
        Self {
            access_token,
            refresh_token: None,
            instance_url,
            identity,
            issued_at: None,
            signature: None,
            scope: None,
            token_type: None,
            id_token: None,
            community_url: None,
            community_id: None,
            api_instance_url: None,
            expires_at: None,
            expiry_source: None,
        }
    }

    /// The granted scopes.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.iter().flat_map(|s| s.split_whitespace())
    }

    /// The `Authorization` header value: `Bearer <access token>`.
    pub fn authorization_header(&self) -> String {
        format!("Bearer {}", self.access_token.expose_secret())
    }

    /// `issued_at` as Salesforce sends it: integer milliseconds since the Unix epoch.
    pub fn issued_at_millis(&self) -> Option<u64> {
        self.issued_at.map(to_millis)
    }

    /// Whether the access token is known to expire within `margin` of `now`. `false` when the
    /// expiry is unknown: rely on the API's 401 then. A `margin` too large to add to `now` covers
    /// any known expiry.
    pub fn expires_within(&self, margin: Duration, now: SystemTime) -> bool {
        self.expires_at
            .is_some_and(|at| now.checked_add(margin).is_none_or(|limit| at <= limit))
    }

    /// Where an expiry estimate of this set starts: its issue time, unless that is absent or
    /// later than `now`.
    fn start(&self, now: SystemTime) -> SystemTime {
        self.issued_at.map_or(now, |issued| issued.min(now))
    }

    /// Fills `expires_at` from the response's `expires_in`, the JWT access token's `exp` or the
    /// session timeout, in that order, clamped to the sane range; see the
    /// [module docs](self#expiry).
    pub(crate) fn learn_expiry(
        &mut self,
        expires_in: Option<u64>,
        session_timeout: Option<Duration>,
        now: SystemTime,
    ) {
        let start = self.start(now);
        if let Some(seconds) = expires_in {
            self.set_expiry(
                start.checked_add(Duration::from_secs(seconds)),
                start,
                ExpirySource::ExpiresIn,
            );
        } else if let Some(exp) = jwt_exp(self.access_token.expose_secret()) {
            self.set_expiry(
                UNIX_EPOCH.checked_add(Duration::from_secs(exp)),
                start,
                ExpirySource::JwtExp,
            );
        } else if let Some(timeout) = session_timeout {
            self.set_expiry(
                start.checked_add(timeout),
                start,
                ExpirySource::SessionTimeout,
            );
        }
    }

    /// Takes the expiry from a session timeout (counted from `issued_at`, or else from `now`)
    /// when nothing better is known: for token sets stored before a timeout was configured.
    /// Clamped to the sane range like every estimate.
    pub fn apply_session_timeout(&mut self, timeout: Duration, now: SystemTime) {
        if matches!(
            self.expiry_source,
            None | Some(ExpirySource::SessionTimeout)
        ) {
            let start = self.start(now);
            self.set_expiry(
                start.checked_add(timeout),
                start,
                ExpirySource::SessionTimeout,
            );
        }
    }

    /// Sets the expiry to `at` clamped to `[start, start + MAX_SESSION]`; `None` (a time too
    /// far to represent) is the upper end.
    pub(crate) fn set_expiry(
        &mut self,
        at: Option<SystemTime>,
        start: SystemTime,
        source: ExpirySource,
    ) {
        let latest = start.checked_add(MAX_SESSION).unwrap_or(start);
        let at = at.map_or(latest, |at| at.max(start).min(latest));
        self.expires_at = Some(at);
        self.expiry_source = Some(source);
    }
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &self.access_token)
            .field("refresh_token", &self.refresh_token)
            .field("instance_url", &self.instance_url.as_str())
            .field("identity", &self.identity.as_str())
            .field("issued_at", &self.issued_at)
            .field("signature", &self.signature.as_ref().map(|_| REDACTED))
            .field("scope", &self.scope.as_deref().map(scrub))
            .field("token_type", &self.token_type.as_deref().map(scrub))
            .field("id_token", &self.id_token)
            .field(
                "community_url",
                &self.community_url.as_ref().map(Url::as_str),
            )
            .field("community_id", &self.community_id.as_deref().map(scrub))
            .field(
                "api_instance_url",
                &self.api_instance_url.as_ref().map(Url::as_str),
            )
            .field("expires_at", &self.expires_at)
            .field("expiry_source", &self.expiry_source)
            .finish()
    }
}

/// The `exp` claim of a JWT, read without verification; `None` for an opaque token.
fn jwt_exp(token: &str) -> Option<u64> {
    let mut parts = token.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_u64()
}

pub(crate) fn to_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `millis` after the Unix epoch, or `None` when this platform's clock cannot represent it.
pub(crate) fn from_millis(millis: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_millis(millis))
}

/// Serde for `Option<SystemTime>` as integer milliseconds since the Unix epoch.
mod epoch_millis {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<SystemTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(time) => serializer.serialize_some(&super::to_millis(*time)),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        Ok(Option::<u64>::deserialize(deserializer)?.and_then(super::from_millis))
    }
}

/// Normalizes a Salesforce record id: a 15-character id gets its 3-character case checksum, so
/// that the 15- and 18-character spellings of one id compare equal; other lengths of letters
/// and digits (up to 64, as emulators and sample data use) are kept as they are.
fn normalize_id(id: &str) -> Option<String> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    if id.len() != 15 {
        return Some(id.to_owned());
    }
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let mut out = id.to_owned();
    for chunk in id.as_bytes().chunks(5) {
        let bits = chunk
            .iter()
            .enumerate()
            .filter(|(_, b)| b.is_ascii_uppercase())
            .fold(0usize, |acc, (i, _)| acc | (1 << i));
        out.push(char::from(ALPHABET[bits]));
    }
    Some(out)
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The id, in its 18-character form when it was given as 15 characters.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;

            /// Accepts letters and digits (a 15-character id is widened to 18 characters).
            fn from_str(s: &str) -> Result<Self, InvalidValue> {
                normalize_id(s)
                    .map(Self)
                    .ok_or_else(|| InvalidValue::new(concat!("invalid ", $what, ": expected up to 64 letters and digits")))
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;

            fn try_from(s: String) -> Result<Self, InvalidValue> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// An org id (`00D…`), kept in its 18-character form.
    OrgId,
    "org id"
);
id_type!(
    /// A user id (`005…`), kept in its 18-character form.
    UserId,
    "user id"
);

/// The identity URL of a token response (`https://login.salesforce.com/id/{org}/{user}`), kept
/// exactly as received (the signature covers it) with the ids parsed out.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdentityUrl {
    raw: String,
    url: Url,
    org_id: OrgId,
    user_id: UserId,
}

impl IdentityUrl {
    /// The URL as received.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The parsed URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The org id.
    pub fn org_id(&self) -> &OrgId {
        &self.org_id
    }

    /// The user id.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }
}

impl FromStr for IdentityUrl {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let url =
            Url::parse(s).map_err(|e| InvalidValue::new(format!("invalid identity url: {e}")))?;
        let mut segments = url
            .path_segments()
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty());
        // The path is `/id/{org}/{user}`, possibly under an Experience Cloud prefix.
        let rest: Vec<&str> = segments
            .by_ref()
            .skip_while(|s| *s != "id")
            .skip(1)
            .collect();
        let [org, user] = rest.as_slice() else {
            return Err(InvalidValue::new(
                "identity url path is not /id/{org id}/{user id}",
            ));
        };
        Ok(Self {
            org_id: org.parse()?,
            user_id: user.parse()?,
            raw: s.to_owned(),
            url,
        })
    }
}

impl TryFrom<String> for IdentityUrl {
    type Error = InvalidValue;

    fn try_from(s: String) -> Result<Self, InvalidValue> {
        s.parse()
    }
}

impl From<IdentityUrl> for String {
    fn from(id: IdentityUrl) -> String {
        id.raw
    }
}

impl fmt::Display for IdentityUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Whose tokens these are: login host, org, user, connected app, and a free label that tells
/// several connections of the same user and app apart.
///
/// Its string form (`Display` / `FromStr`) is stable and suitable as a storage key:
/// `v1|{login host}|{org id}|{user id}|{client id}|{label}`, each part percent-encoded for `|`
/// and `%`. Ids are kept in 18-character form, so a 15-character spelling gives the same key.
///
/// A key carries its hash, computed once when it is made: a token cache looks keys up far more
/// often than it makes them, and hashing five strings would otherwise be a good part of every
/// lookup. That is why the parts are read through methods and a key is never changed in place.
/// The hash is seeded once per process (so it is not predictable from outside) and is neither
/// serialized nor part of the ordering.
///
/// ```
/// use sfauth_core::{LoginHost, TokenKey};
///
/// let identity = "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK".parse()?;
/// let key = TokenKey::new(&LoginHost::Production, &identity, "3MVG9.example", "default");
/// assert_eq!(key.org_id().as_str(), "00D5e000000AbcdEAC");
/// assert_eq!(key.to_string().parse::<TokenKey>()?, key);
/// # Ok::<(), sfauth_core::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(from = "KeyParts", into = "KeyParts")]
pub struct TokenKey {
    /// The five parts one after the other (login host, org id, user id, client id, label), so
    /// that comparing two keys is one comparison of bytes rather than five.
    text: Box<str>,
    /// Where each of the first four parts ends in `text`. Part of equality, so that no two
    /// different splits of the same bytes compare equal.
    ends: [usize; 4],
    /// The ids again, typed, for [`TokenKey::org_id`] and [`TokenKey::user_id`].
    org_id: OrgId,
    user_id: UserId,
    hash: u64,
}

/// The parts of a [`TokenKey`], as it is serialized.
#[derive(Serialize, Deserialize)]
struct KeyParts {
    login_host: String,
    org_id: OrgId,
    user_id: UserId,
    client_id: String,
    label: String,
}

impl From<KeyParts> for TokenKey {
    fn from(parts: KeyParts) -> Self {
        TokenKey::from_parts(
            parts.login_host,
            parts.org_id,
            parts.user_id,
            parts.client_id,
            parts.label,
        )
    }
}

impl From<TokenKey> for KeyParts {
    fn from(key: TokenKey) -> Self {
        KeyParts {
            login_host: key.login_host().to_owned(),
            client_id: key.client_id().to_owned(),
            label: key.label().to_owned(),
            org_id: key.org_id,
            user_id: key.user_id,
        }
    }
}

impl TokenKey {
    /// The key for the user of `identity`, signed in through `host` with app `client_id`.
    pub fn new(host: &LoginHost, identity: &IdentityUrl, client_id: &str, label: &str) -> Self {
        Self::from_parts(
            host.key(),
            identity.org_id().clone(),
            identity.user_id().clone(),
            client_id,
            label,
        )
    }

    /// A key from its parts: `login_host` as [`LoginHost::key`] spells it.
    pub fn from_parts(
        login_host: impl AsRef<str>,
        org_id: OrgId,
        user_id: UserId,
        client_id: impl AsRef<str>,
        label: impl AsRef<str>,
    ) -> Self {
        let parts = [
            login_host.as_ref(),
            org_id.as_str(),
            user_id.as_str(),
            client_id.as_ref(),
            label.as_ref(),
        ];
        let mut text = String::with_capacity(parts.iter().map(|part| part.len()).sum());
        let mut ends = [0; 4];
        for (i, part) in parts.iter().enumerate() {
            text.push_str(part);
            if let Some(end) = ends.get_mut(i) {
                *end = text.len();
            }
        }
        // One keyed SipHash state for the whole process: every key made in it hashes alike, and
        // an outsider cannot choose ids that collide.
        static STATE: std::sync::LazyLock<std::hash::RandomState> =
            std::sync::LazyLock::new(std::hash::RandomState::new);
        let hash = std::hash::BuildHasher::hash_one(&*STATE, (&ends, &text));
        Self {
            text: text.into_boxed_str(),
            ends,
            org_id,
            user_id,
            hash,
        }
    }

    /// The same key with another label.
    pub fn with_label(&self, label: impl AsRef<str>) -> Self {
        Self::from_parts(
            self.login_host(),
            self.org_id.clone(),
            self.user_id.clone(),
            self.client_id(),
            label,
        )
    }

    /// [`LoginHost::key`] of the host the grant came from.
    pub fn login_host(&self) -> &str {
        self.text.get(..self.ends[0]).unwrap_or_default()
    }

    /// The org.
    pub fn org_id(&self) -> &OrgId {
        &self.org_id
    }

    /// The user.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// The connected app's consumer key.
    pub fn client_id(&self) -> &str {
        self.text
            .get(self.ends[2]..self.ends[3])
            .unwrap_or_default()
    }

    /// The caller-chosen name for this connection (`default` when there is only one).
    pub fn label(&self) -> &str {
        self.text.get(self.ends[3]..).unwrap_or_default()
    }

    /// The hash computed when the key was made (the value its `Hash` impl feeds a hasher).
    pub fn precomputed_hash(&self) -> u64 {
        self.hash
    }

    fn parts(&self) -> (&str, &OrgId, &UserId, &str, &str) {
        (
            self.login_host(),
            &self.org_id,
            &self.user_id,
            self.client_id(),
            self.label(),
        )
    }
}

impl PartialEq for TokenKey {
    fn eq(&self, other: &Self) -> bool {
        // The hash first: two different keys almost never share it.
        self.hash == other.hash && self.ends == other.ends && self.text == other.text
    }
}

impl Eq for TokenKey {}

impl std::hash::Hash for TokenKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialOrd for TokenKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TokenKey {
    /// By login host, then org, user, client id and label; never by the per-process hash.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts().cmp(&other.parts())
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKey")
            .field("login_host", &self.login_host())
            .field("org_id", &self.org_id)
            .field("user_id", &self.user_id)
            .field("client_id", &self.client_id())
            .field("label", &self.label())
            .finish()
    }
}

impl TokenKey {
    /// The key as people read it in a message: its label, org and user (the login host and
    /// the client id, which make the whole key two hundred characters long, are left out).
    ///
    /// ```
    /// use sfauth_core::{LoginHost, TokenKey};
    ///
    /// let identity = "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK".parse()?;
    /// let key = TokenKey::new(&LoginHost::Production, &identity, "3MVG9.key", "default");
    /// assert_eq!(key.short().to_string(), "default (org 00D5e000000AbcdEAC, user 0055e000001XyZaAAK)");
    /// # Ok::<(), sfauth_core::Error>(())
    /// ```
    pub fn short(&self) -> impl fmt::Display + '_ {
        ShortKey(self)
    }
}

struct ShortKey<'a>(&'a TokenKey);

impl fmt::Display for ShortKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (org {}, user {})",
            self.0.label(),
            self.0.org_id(),
            self.0.user_id()
        )
    }
}

impl fmt::Display for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let escape = |s: &str| s.replace('%', "%25").replace('|', "%7C");
        write!(
            f,
            "v1|{}|{}|{}|{}|{}",
            escape(self.login_host()),
            self.org_id,
            self.user_id,
            escape(self.client_id()),
            escape(self.label())
        )
    }
}

impl FromStr for TokenKey {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        // Borrowed unless escaped: stores parse a key for every record they read, and fleet
        // workers one for every save another worker announces.
        fn unescape(s: &str) -> std::borrow::Cow<'_, str> {
            if s.contains('%') {
                s.replace("%7C", "|").replace("%25", "%").into()
            } else {
                s.into()
            }
        }
        let mut parts = s.split('|');
        let mut next = || parts.next();
        let (Some("v1"), Some(host), Some(org), Some(user), Some(client), Some(label), None) =
            (next(), next(), next(), next(), next(), next(), next())
        else {
            return Err(InvalidValue::new(
                "token key is not v1|host|org|user|client|label",
            ));
        };
        Ok(Self::from_parts(
            unescape(host),
            org.parse()?,
            user.parse()?,
            unescape(client),
            unescape(label),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> IdentityUrl {
        "https://test.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK"
            .parse()
            .unwrap()
    }

    #[test]
    fn fifteen_and_eighteen_character_ids_agree() {
        // Known pairs: the 18-character form appends a case checksum to the 15-character one.
        let org: OrgId = "00D5e000000Abcd".parse().unwrap();
        assert_eq!(org.as_str(), "00D5e000000AbcdEAC");
        let user: UserId = "0055e000001XyZa".parse().unwrap();
        assert_eq!(user.as_str(), "0055e000001XyZaAAK");
        assert!("00D-bad".parse::<OrgId>().is_err());
    }

    #[test]
    fn identity_url_is_parsed_and_kept_verbatim() {
        let site: IdentityUrl =
            "https://acme.my.site.com/customers/id/00D5e000000Abcd/0055e000001XyZa"
                .parse()
                .unwrap();
        assert_eq!(site.org_id().as_str(), "00D5e000000AbcdEAC");
        assert_eq!(
            site.as_str(),
            "https://acme.my.site.com/customers/id/00D5e000000Abcd/0055e000001XyZa"
        );
        assert!(
            "https://login.salesforce.com/services"
                .parse::<IdentityUrl>()
                .is_err()
        );
    }

    #[test]
    fn token_key_escapes_and_round_trips() {
        let key = TokenKey::new(&LoginHost::Sandbox, &identity(), "a|b%c", "my label|2");
        let text = key.to_string();
        assert_eq!(text.matches('|').count(), 5);
        assert_eq!(text.parse::<TokenKey>().unwrap(), key);
        // One field short, one too many, another version: refused.
        let (short, _) = text.rsplit_once('|').unwrap();
        for bad in [
            short.to_owned(),
            format!("{text}|x"),
            text.replacen("v1", "v2", 1),
        ] {
            assert!(bad.parse::<TokenKey>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(serde_json::from_str::<TokenKey>(&json).unwrap(), key);
    }

    #[test]
    fn token_key_hash_is_the_same_however_the_key_is_made() {
        use std::hash::{BuildHasher, RandomState};
        let key = TokenKey::new(&LoginHost::Production, &identity(), "3MVG9.a", "default");
        // The JSON shape is the one stored records already have: the parts, no hash.
        let json = r#"{"login_host":"https://login.salesforce.com","org_id":"00D5e000000AbcdEAC","user_id":"0055e000001XyZaAAK","client_id":"3MVG9.a","label":"default"}"#;
        assert_eq!(serde_json::to_string(&key).unwrap(), json);
        let copies = [
            key.clone(),
            key.to_string().parse().unwrap(),
            serde_json::from_str(json).unwrap(),
            key.with_label("other").with_label("default"),
            TokenKey::from_parts(
                key.login_host(),
                "00D5e000000Abcd".parse().unwrap(),
                key.user_id().clone(),
                key.client_id(),
                key.label(),
            ),
        ];
        let state = RandomState::new();
        for copy in &copies {
            assert_eq!(copy, &key);
            assert_eq!(copy.precomputed_hash(), key.precomputed_hash());
            assert_eq!(state.hash_one(copy), state.hash_one(&key));
        }
        // Each part on its own makes a different key (and, here, a different hash).
        let others = [
            TokenKey::new(&LoginHost::Sandbox, &identity(), "3MVG9.a", "default"),
            TokenKey::new(&LoginHost::Production, &identity(), "3MVG9.b", "default"),
            key.with_label("backup"),
            TokenKey::from_parts(
                key.login_host(),
                "00D5e000000AbcE".parse().unwrap(),
                key.user_id().clone(),
                key.client_id(),
                key.label(),
            ),
            TokenKey::from_parts(
                key.login_host(),
                key.org_id().clone(),
                "0055e000001XyZb".parse().unwrap(),
                key.client_id(),
                key.label(),
            ),
        ];
        for other in &others {
            assert_ne!(other, &key);
            assert_ne!(other.precomputed_hash(), key.precomputed_hash());
        }
        // Ordering follows the parts (host first), never the per-process hash.
        assert!(others[0] > key);
        assert!(key.with_label("a") < key.with_label("b"));
    }

    #[test]
    fn token_set_serializes_secrets_but_debug_hides_them() {
        let mut tokens = TokenSet::new(
            AccessToken::new("ACCESS-SECRET"),
            Url::parse("https://acme.my.salesforce.com").unwrap(),
            identity(),
        );
        tokens.refresh_token = Some(RefreshToken::new("REFRESH-SECRET"));
        tokens.id_token = Some(IdToken::new("ID-SECRET"));
        tokens.issued_at = from_millis(1_278_448_832_702);
        let debug = format!("{tokens:?} {tokens:#?}");
        for secret in ["ACCESS-SECRET", "REFRESH-SECRET", "ID-SECRET"] {
            assert!(!debug.contains(secret), "{secret} leaked");
        }
        let json = serde_json::to_string(&tokens).unwrap();
        assert!(json.contains("REFRESH-SECRET") && json.contains("1278448832702"));
        assert_eq!(serde_json::from_str::<TokenSet>(&json).unwrap(), tokens);
    }

    #[test]
    fn expiry_order() {
        let now = from_millis(1_700_000_000_000).unwrap();
        let mut tokens = TokenSet::new(
            AccessToken::new("opaque"),
            Url::parse("https://acme.my.salesforce.com").unwrap(),
            identity(),
        );
        tokens.learn_expiry(None, None, now);
        assert_eq!(tokens.expires_at, None);
        tokens.learn_expiry(None, Some(Duration::from_secs(7200)), now);
        assert_eq!(tokens.expiry_source, Some(ExpirySource::SessionTimeout));
        assert_eq!(tokens.expires_at, Some(now + Duration::from_secs(7200)));
        tokens.learn_expiry(Some(60), Some(Duration::from_secs(7200)), now);
        assert_eq!(tokens.expiry_source, Some(ExpirySource::ExpiresIn));
        // A JWT access token: header {"alg":"none"}, payload {"exp":1700003600}.
        tokens.access_token = AccessToken::new("eyJhbGciOiJub25lIn0.eyJleHAiOjE3MDAwMDM2MDB9.c2ln");
        tokens.learn_expiry(None, Some(Duration::from_secs(7200)), now);
        assert_eq!(tokens.expiry_source, Some(ExpirySource::JwtExp));
        assert_eq!(tokens.expires_at, from_millis(1_700_003_600_000));
        assert!(tokens.expires_within(Duration::from_secs(3600), now));
        // A session timeout never overrides a stronger source.
        tokens.apply_session_timeout(Duration::from_secs(60), now);
        assert_eq!(tokens.expiry_source, Some(ExpirySource::JwtExp));
        tokens.expires_at = None;
        tokens.expiry_source = None;
        tokens.apply_session_timeout(Duration::from_secs(60), now);
        assert_eq!(tokens.expires_at, Some(now + Duration::from_secs(60)));
    }

    fn jwt_with_exp(exp: &str) -> AccessToken {
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{exp}}}"#));
        AccessToken::new(format!("eyJhbGciOiJub25lIn0.{payload}.c2ln"))
    }

    fn opaque() -> TokenSet {
        TokenSet::new(
            AccessToken::new("opaque"),
            Url::parse("https://acme.my.salesforce.com").unwrap(),
            identity(),
        )
    }

    /// Every number from outside lands in `[start, start + 24 h]`, with no panic: the inputs of
    /// issue 11 (`u64::MAX` as `expires_in`, JWT `exp` and session timeout) included.
    #[test]
    fn expiry_estimates_stay_in_the_sane_range() {
        let now = from_millis(1_700_000_000_000).unwrap();
        let day = now + MAX_SESSION;
        let hour = Duration::from_secs(3600);
        let mut tokens = opaque();
        for (expires_in, expected) in [
            (u64::MAX, day),
            (86_401, day),
            (86_400, day),
            (3600, now + hour),
            (0, now),
        ] {
            tokens.learn_expiry(Some(expires_in), None, now);
            assert_eq!(tokens.expires_at, Some(expected), "expires_in {expires_in}");
        }
        // Already expired reads as expired.
        tokens.learn_expiry(Some(0), None, now);
        assert!(tokens.expires_within(Duration::ZERO, now));

        for (exp, expected) in [
            ("18446744073709551615", day),
            ("1800000000", day),
            ("1700003600", now + hour),
            ("0", now),
            ("1", now),
        ] {
            let mut tokens = opaque();
            tokens.access_token = jwt_with_exp(exp);
            tokens.learn_expiry(None, None, now);
            assert_eq!(
                tokens.expiry_source,
                Some(ExpirySource::JwtExp),
                "exp {exp}"
            );
            assert_eq!(tokens.expires_at, Some(expected), "exp {exp}");
        }
        // Not a number a JWT `exp` can be: no expiry from it.
        let mut tokens = opaque();
        tokens.access_token = jwt_with_exp("1e400");
        tokens.learn_expiry(None, None, now);
        assert_eq!(tokens.expires_at, None);

        for timeout in [
            Duration::MAX,
            Duration::from_secs(u64::MAX),
            2 * MAX_SESSION,
        ] {
            let mut tokens = opaque();
            tokens.learn_expiry(None, Some(timeout), now);
            assert_eq!(tokens.expires_at, Some(day), "{timeout:?}");
        }
    }

    #[test]
    fn the_range_starts_at_issue_but_never_in_the_future() {
        let now = from_millis(1_700_000_000_000).unwrap();
        let hour = Duration::from_secs(3600);
        let mut tokens = opaque();
        tokens.issued_at = Some(now - hour);
        tokens.learn_expiry(Some(7200), None, now);
        assert_eq!(tokens.expires_at, Some(now + hour));
        tokens.learn_expiry(Some(u64::MAX), None, now);
        assert_eq!(tokens.expires_at, Some(now - hour + MAX_SESSION));
        // A server clock ahead of ours, or nonsense: counted from now.
        for issued in [now + hour, from_millis(u64::MAX).unwrap()] {
            tokens.issued_at = Some(issued);
            tokens.learn_expiry(Some(u64::MAX), None, now);
            assert_eq!(tokens.expires_at, Some(now + MAX_SESSION));
            tokens.learn_expiry(Some(60), None, now);
            assert_eq!(tokens.expires_at, Some(now + Duration::from_secs(60)));
        }
        // A stored set issued two days ago with an absurd timeout is simply expired.
        let mut stored = opaque();
        stored.issued_at = Some(now - 2 * MAX_SESSION);
        stored.apply_session_timeout(Duration::MAX, now);
        assert_eq!(stored.expires_at, Some(now - MAX_SESSION));
        assert!(stored.expires_within(Duration::ZERO, now));
    }

    #[test]
    fn introspection_is_clamped_from_now() {
        let now = from_millis(1_700_000_000_000).unwrap();
        for (exp, expected) in [
            (u64::MAX, now + MAX_SESSION),
            (0, now),
            (1_700_000_600, now + Duration::from_secs(600)),
        ] {
            let mut tokens = opaque();
            tokens.issued_at = Some(now - 3 * MAX_SESSION);
            let introspection = crate::flows::Introspection {
                active: true,
                exp: Some(exp),
                ..Default::default()
            };
            tokens.apply_introspection_at(&introspection, now);
            assert_eq!(tokens.expiry_source, Some(ExpirySource::Introspection));
            assert_eq!(tokens.expires_at, Some(expected), "exp {exp}");
        }
    }

    #[test]
    fn huge_margins_and_times_do_not_overflow() {
        let now = from_millis(1_700_000_000_000).unwrap();
        let mut tokens = opaque();
        assert!(!tokens.expires_within(Duration::MAX, now));
        tokens.learn_expiry(Some(60), None, now);
        assert!(tokens.expires_within(Duration::MAX, now));
        assert!(!tokens.expires_within(Duration::ZERO, now));
        let far = from_millis(u64::MAX).unwrap();
        assert!(tokens.expires_within(Duration::MAX, far));
        assert_eq!(to_millis(far), u64::MAX);
        let json = r#"{"access_token":"a","instance_url":"https://a.my.salesforce.com","id":"https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK","issued_at":18446744073709551615,"expires_at":18446744073709551615}"#;
        let stored: TokenSet = serde_json::from_str(json).unwrap();
        assert_eq!(stored.issued_at_millis(), Some(u64::MAX));
    }

    #[test]
    fn debug_hides_the_signature() {
        let mut tokens = opaque();
        tokens.signature = Some("pJLaaF3SzFH++txINP7roGsI00ZR67d0sscWvY1U9Ww=".into());
        let debug = format!("{tokens:?}");
        assert!(!debug.contains("pJLaaF3SzFH"), "{debug}");
        assert!(debug.contains("signature: Some(\"[redacted]\")"), "{debug}");
    }
}
