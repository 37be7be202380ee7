//! Signed re-authorization notices: [`WebhookNotifier`] turns the [`TokenManager`]'s events into
//! HTTP `POST`s a receiver can trust, and [`verify`] is the receiver's half.
//!
//! # What is sent
//!
//! Two notices, as one JSON document each ([`Notice`]):
//!
//! - `tenant.reauthorization_required`: the manager marked a tenant for a new login
//!   ([`EventKind::ReauthRequired`]), with a coarse [`NoticeCause`], Salesforce's finer cause
//!   name when it gave one, and a sentence a person can read.
//! - `tenant.recovered`: a tenant this notifier reported works again: a new login was stored for
//!   the same key ([`EventKind::Stored`]), or new tokens were obtained or adopted from another
//!   process ([`EventKind::Refreshed`]). The manager has no event of its own for this, so the
//!   notifier remembers which tenants it reported; a tenant that was marked before the notifier
//!   started (or in another process) is not reported as recovered.
//!
//! A tenant is reported once per episode: a second `ReauthRequired` for a tenant already
//! reported (another process adopted the mark, say) sends nothing. No notice carries a token, a
//! code, a client secret or the signing secret; the tenant is named by org id, user id, label,
//! login host and instance URL.
//!
//! Each notifier reports what its own manager sees. In a fleet of processes sharing one store,
//! run the notifier in one of them, or have the receiver keep the latest notice per tenant as
//! the tenant's state: two processes that both meet the refusal send two notices, with
//! different ids.
//!
//! # Signature
//!
//! Every attempt carries
//!
//! ```text
//! Sfauth-Signature: t=1735689600,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd
//! Sfauth-Event-Id: evt_0f3c...
//! ```
//!
//! `t` is the Unix time of the attempt (each retry is signed anew, so a long-retried notice is not
//! stale on arrival) and `v1` is the lowercase hex HMAC-SHA256, keyed with the shared secret, of
//! the bytes `t`, `.`, and the raw request body, as Stripe signs its webhooks. While a secret is
//! being rotated, the notifier signs with both ([`WebhookNotifierBuilder::also_sign_with`]) and
//! the header carries one `v1=` per secret; a receiver accepts the request when any of them
//! matches. Unknown schemes (`v0=`, `v2=`) are ignored, for later changes. [`verify`] does all
//! of this in constant time and refuses a timestamp further than the tolerance from now, so a
//! recorded request cannot be replayed later.
//!
//! # Delivery
//!
//! - **At least once.** A notice is re-sent until the receiver answers 2xx (3xx and every other
//!   status count as failures; redirects are not followed), or until
//!   [`WebhookNotifierBuilder::max_attempts`] when one is set, or shutdown. Every attempt of one
//!   notice carries the same [`Notice::id`] (in the body and in `Sfauth-Event-Id`): a receiver
//!   de-duplicates on it, since an answer lost on the way back means the notice comes again.
//! - **Backoff.** After the n-th failure the notifier waits `min(max, initial × 2ⁿ⁻¹)`, of which
//!   a random half is jitter (so a fleet of notifiers does not hammer a receiver that comes back
//!   in step); a `Retry-After` in seconds on the failed answer is honoured up to `max`.
//! - **In order.** Notices are delivered one at a time, oldest first, so a receiver never sees a
//!   tenant's `recovered` before its `reauthorization_required`. They all go to one URL, so a
//!   later notice could not get through while an earlier one cannot anyway.
//! - **Bounded queue.** Notices wait in memory, at most
//!   [`WebhookNotifierBuilder::queue_capacity`] of them besides the one being delivered. When
//!   the queue is full the *new* notice is dropped, counted in [`WebhookStats::dropped`] and
//!   logged at `warn` with its id and tenant; the event stream is never blocked, so the manager
//!   is never slowed by a receiver. Events the notifier fell too far behind to read (the
//!   manager's broadcast buffer overflowed) are counted in [`WebhookStats::missed_events`].
//! - **Nothing is persisted.** Notices not delivered when the process ends are lost; call
//!   [`WebhookNotifier::shutdown`], which delivers what it can within a grace period and returns
//!   the rest ([`ShutdownReport::undelivered`]), for the caller to record or send another way.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use sfauth_adapters::webhook::{SigningSecret, WebhookNotifier};
//!
//! # async fn run(manager: sfauth::TokenManager) -> sfauth_adapters::Result<()> {
//! let url = "https://hooks.example.com/salesforce".parse().expect("a valid URL");
//! let notifier = WebhookNotifier::builder(url, SigningSecret::new("whsec_from_the_vault"))
//!     .spawn(&manager)?;
//! // ... the application runs; the notifier reports re-authorizations and recoveries ...
//! let report = notifier.shutdown(Duration::from_secs(10)).await;
//! for notice in report.undelivered {
//!     tracing::warn!(id = %notice.id, tenant = %notice.tenant.org_id, "notice not delivered");
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sfauth::{Cause, Event, EventKind, TokenKey, TokenManager, Url};
use sha2::Sha256;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use crate::error::SignatureError;
use crate::error::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// The request header that carries the timestamp and the signatures.
///
/// ```
/// assert_eq!(sfauth_adapters::webhook::SIGNATURE_HEADER, "sfauth-signature");
/// ```
pub const SIGNATURE_HEADER: &str = "sfauth-signature";

/// The request header that carries [`Notice::id`], so that a receiver can de-duplicate before
/// parsing the body.
///
/// ```
/// assert_eq!(sfauth_adapters::webhook::EVENT_ID_HEADER, "sfauth-event-id");
/// ```
pub const EVENT_ID_HEADER: &str = "sfauth-event-id";

/// The request header that carries the attempt number of this delivery, from 1.
///
/// ```
/// assert_eq!(sfauth_adapters::webhook::ATTEMPT_HEADER, "sfauth-delivery-attempt");
/// ```
pub const ATTEMPT_HEADER: &str = "sfauth-delivery-attempt";

/// The secret shared by the notifier and the receiver, as bytes. `Debug` prints `[redacted]`.
///
/// ```
/// use sfauth_adapters::webhook::SigningSecret;
///
/// let secret = SigningSecret::new("whsec_correct horse battery staple");
/// assert_eq!(format!("{secret:?}"), "SigningSecret([redacted])");
/// ```
#[derive(Clone)]
pub struct SigningSecret(Arc<[u8]>);

impl SigningSecret {
    /// A secret from its bytes (a string's UTF-8 bytes, as most receivers configure it).
    ///
    /// ```
    /// let secret = sfauth_adapters::webhook::SigningSecret::new(vec![7u8; 32]);
    /// # let _ = secret;
    /// ```
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Self(Arc::from(secret.as_ref()))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts a key of any length, so `new_from_slice` never fails; the second arm
        // only satisfies the type and is never taken.
        match HmacSha256::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => HmacSha256::new(&Default::default()),
        }
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret([redacted])")
    }
}

/// The signature header for `body`, signed at `timestamp` with each of `secrets` (one `v1=` per
/// secret): what the notifier sends, for receivers' tests.
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use sfauth_adapters::webhook::{SigningSecret, sign};
///
/// let at = UNIX_EPOCH + Duration::from_secs(1_735_689_600);
/// let header = sign(&[&SigningSecret::new("s")], at, b"{}");
/// assert!(header.starts_with("t=1735689600,v1="));
/// ```
pub fn sign(secrets: &[&SigningSecret], timestamp: SystemTime, body: &[u8]) -> String {
    let t = unix_seconds(timestamp);
    let mut header = format!("t={t}");
    for secret in secrets {
        let mut mac = secret.mac();
        feed(&mut mac, t, body);
        header.push_str(",v1=");
        header.push_str(&hex::encode(mac.finalize().into_bytes()));
    }
    header
}

/// Checks a request's [`SIGNATURE_HEADER`] against its raw `body` (the bytes as received,
/// before any parsing): some `v1` signature must match under `secret` (compared in constant
/// time), and the signed timestamp must be within `tolerance` of `now` (five minutes is usual).
/// Returns the signed timestamp. Verify before acting on the body, then de-duplicate on
/// [`Notice::id`].
///
/// During a secret rotation the sender signs with both secrets; a receiver that holds both
/// calls `verify` with each and accepts the request when either passes.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use sfauth_adapters::webhook::{SigningSecret, sign, verify};
///
/// let secret = SigningSecret::new("whsec_test");
/// let body = br#"{"id":"evt_1"}"#;
/// let header = sign(&[&secret], SystemTime::now(), body);
/// assert!(verify(&secret, &header, body, SystemTime::now(), Duration::from_secs(300)).is_ok());
/// assert!(verify(&secret, &header, b"{}", SystemTime::now(), Duration::from_secs(300)).is_err());
/// ```
pub fn verify(
    secret: &SigningSecret,
    header: &str,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<SystemTime> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (scheme, value) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::MalformedHeader)?;
        match scheme {
            "t" if timestamp.is_none() => {
                let seconds: u64 = value.parse().map_err(|_| SignatureError::MalformedHeader)?;
                timestamp = Some(seconds);
            }
            "t" => return Err(SignatureError::MalformedHeader.into()),
            // A value that is not hex cannot match; it is kept out rather than refused, so that
            // one garbled signature does not hide a good one beside it.
            "v1" => signatures.extend(hex::decode(value).ok()),
            // Other schemes are for later versions of the header.
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::MalformedHeader)?;
    if signatures.is_empty() {
        return Err(SignatureError::NoSignature.into());
    }
    let mut mac = secret.mac();
    feed(&mut mac, t, body);
    // hmac's verify_slice compares in constant time; every candidate is checked, so the time
    // taken does not say which one matched.
    let matched = signatures.iter().fold(false, |found, candidate| {
        mac.clone().verify_slice(candidate).is_ok() | found
    });
    if !matched {
        return Err(SignatureError::Mismatch.into());
    }
    let signed_at = UNIX_EPOCH + Duration::from_secs(t);
    let distance = match now.duration_since(signed_at) {
        Ok(age) => age,
        Err(ahead) => ahead.duration(),
    };
    if distance > tolerance {
        return Err(SignatureError::OutsideTolerance {
            age_secs: distance.as_secs(),
        }
        .into());
    }
    Ok(signed_at)
}

/// Feeds the signed bytes: the decimal timestamp, `.`, the body.
fn feed(mac: &mut HmacSha256, t: u64, body: &[u8]) {
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0)
}

/// The two kinds of [`Notice`], spelled on the wire as `tenant.reauthorization_required` and
/// `tenant.recovered`.
///
/// ```
/// use sfauth_adapters::webhook::NoticeType;
///
/// assert_eq!(NoticeType::Recovered.as_str(), "tenant.recovered");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum NoticeType {
    /// A human must log the tenant in again; calls for it fail until then.
    #[serde(rename = "tenant.reauthorization_required")]
    ReauthorizationRequired,
    /// A tenant reported as needing re-authorization has working tokens again.
    #[serde(rename = "tenant.recovered")]
    Recovered,
}

impl NoticeType {
    /// The name on the wire.
    ///
    /// ```
    /// use sfauth_adapters::webhook::NoticeType;
    ///
    /// assert_eq!(NoticeType::ReauthorizationRequired.as_str(), "tenant.reauthorization_required");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReauthorizationRequired => "tenant.reauthorization_required",
            Self::Recovered => "tenant.recovered",
        }
    }
}

/// Why a tenant needs re-authorization, coarse enough for a receiver to pick the message to
/// show its customer. [`Notice::salesforce_cause`] keeps sfauth's finer [`Cause`] name.
///
/// ```
/// use sfauth::Cause;
/// use sfauth_adapters::webhook::NoticeCause;
///
/// assert_eq!(NoticeCause::from_cause(Some(Cause::UserInactive)), NoticeCause::UserInactive);
/// assert_eq!(NoticeCause::UserInactive.as_str(), "user_inactive");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NoticeCause {
    /// The refresh token was revoked (by an admin or the user, or for reuse of a rotated-out
    /// token) or expired by the app's refresh token policy: Salesforce answers the same for all.
    TokenRevokedOrExpired,
    /// The user is deactivated, frozen or locked.
    UserInactive,
    /// The org is locked, closed or suspended.
    OrgInactive,
    /// The connected app is blocked or not installed in the org, or the user has not approved
    /// it.
    AppBlocked,
    /// A login policy refused: IP ranges or login hours.
    LoginPolicy,
    /// The credentials of a renewal flow were refused (password, JWT or client credentials
    /// setup).
    CredentialsRefused,
    /// Nothing more specific is known; [`Notice::reason`] says what there is.
    Unknown,
}

impl NoticeCause {
    /// Maps sfauth's [`Cause`] (absent when Salesforce gave none that sfauth recognises).
    ///
    /// ```
    /// use sfauth::Cause;
    /// use sfauth_adapters::webhook::NoticeCause;
    ///
    /// assert_eq!(
    ///     NoticeCause::from_cause(Some(Cause::TokenExpiredOrRevoked)),
    ///     NoticeCause::TokenRevokedOrExpired
    /// );
    /// assert_eq!(NoticeCause::from_cause(None), NoticeCause::Unknown);
    /// ```
    pub fn from_cause(cause: Option<Cause>) -> Self {
        match cause {
            Some(Cause::TokenExpiredOrRevoked) => Self::TokenRevokedOrExpired,
            Some(Cause::UserInactive) => Self::UserInactive,
            Some(Cause::OrgInactive) => Self::OrgInactive,
            Some(Cause::AppBlocked | Cause::NotApproved) => Self::AppBlocked,
            Some(Cause::IpOrLoginHoursRestricted) => Self::LoginPolicy,
            Some(
                Cause::AuthenticationFailure
                | Cause::NoClientCredentialsUser
                | Cause::AudienceInvalid
                | Cause::WrongHost,
            ) => Self::CredentialsRefused,
            // `Cause` is non-exhaustive: a cause added later is reported as unknown, with its
            // name in `salesforce_cause`.
            _ => Self::Unknown,
        }
    }

    /// The name on the wire.
    ///
    /// ```
    /// assert_eq!(sfauth_adapters::webhook::NoticeCause::AppBlocked.as_str(), "app_blocked");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenRevokedOrExpired => "token_revoked_or_expired",
            Self::UserInactive => "user_inactive",
            Self::OrgInactive => "org_inactive",
            Self::AppBlocked => "app_blocked",
            Self::LoginPolicy => "login_policy",
            Self::CredentialsRefused => "credentials_refused",
            Self::Unknown => "unknown",
        }
    }
}

/// The tenant a [`Notice`] is about: who, never a credential.
///
/// ```
/// # fn show(tenant: &sfauth_adapters::webhook::NoticeTenant) {
/// println!("org {} user {} ({})", tenant.org_id, tenant.user_id, tenant.label);
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NoticeTenant {
    /// The org id (`00D…`, 18 characters).
    pub org_id: String,
    /// The user id (`005…`, 18 characters).
    pub user_id: String,
    /// The label the application stored the tenant's tokens under.
    pub label: String,
    /// The login host the tokens came from (`login.salesforce.com`, a My Domain...).
    pub login_host: String,
    /// The org's API base URL as last stored, when the store could be read.
    pub instance_url: Option<String>,
}

/// One notice, as sent in the request body (JSON).
///
/// ```json
/// {
///   "id": "evt_6f1c0a3e9b2d4c5f8a7b6c5d4e3f2a1b",
///   "type": "tenant.reauthorization_required",
///   "occurred_at": "2025-01-01T00:00:00.000Z",
///   "tenant": {
///     "org_id": "00D000000000001AAA",
///     "user_id": "005000000000001AAA",
///     "label": "default",
///     "login_host": "login.salesforce.com",
///     "instance_url": "https://acme.my.salesforce.com"
///   },
///   "cause": "token_revoked_or_expired",
///   "salesforce_cause": "token_expired_or_revoked",
///   "reason": "Salesforce refused the refresh token: expired access/refresh token"
/// }
/// ```
///
/// `cause` and `salesforce_cause` are `null` on `tenant.recovered`. A receiver reads it with
/// `serde_json::from_slice::<Notice>(body)` after [`verify`]:
///
/// ```
/// use sfauth_adapters::webhook::{Notice, NoticeType};
///
/// let body = br#"{"id":"evt_1","type":"tenant.recovered","occurred_at":"2025-01-01T00:00:00.000Z",
///   "tenant":{"org_id":"00D","user_id":"005","label":"default","login_host":"login.salesforce.com",
///   "instance_url":null},"cause":null,"salesforce_cause":null,"reason":"a new login was stored"}"#;
/// let notice: Notice = serde_json::from_slice(body).unwrap();
/// assert_eq!(notice.kind, NoticeType::Recovered);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Notice {
    /// Unique per notice and the same on every attempt to deliver it: the key to de-duplicate
    /// on (`evt_` and 32 hex digits).
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: NoticeType,
    /// When the notifier learned of it, RFC 3339 in UTC with milliseconds.
    pub occurred_at: String,
    /// The tenant.
    pub tenant: NoticeTenant,
    /// Why re-authorization is needed (on `tenant.reauthorization_required` only).
    pub cause: Option<NoticeCause>,
    /// sfauth's finer cause name ([`Cause::as_str`]), when Salesforce's answer was classified.
    pub salesforce_cause: Option<String>,
    /// A sentence for a person: Salesforce's refusal as sfauth understood it, or how the tenant
    /// recovered.
    pub reason: String,
}

impl Notice {
    fn new(
        kind: NoticeType,
        key: &TokenKey,
        instance_url: Option<Url>,
        cause: Option<Cause>,
        reason: String,
    ) -> Self {
        let reauth = kind == NoticeType::ReauthorizationRequired;
        Self {
            id: format!("evt_{:032x}", rand::random::<u128>()),
            kind,
            occurred_at: rfc3339(SystemTime::now()),
            tenant: NoticeTenant {
                org_id: key.org_id().to_string(),
                user_id: key.user_id().to_string(),
                label: key.label().to_owned(),
                login_host: key.login_host().to_owned(),
                instance_url: instance_url.map(String::from),
            },
            cause: reauth.then(|| NoticeCause::from_cause(cause)),
            salesforce_cause: cause.map(|cause| cause.as_str().to_owned()),
            reason,
        }
    }
}

/// Configures a [`WebhookNotifier`]; see [`WebhookNotifier::builder`].
///
/// ```
/// use std::time::Duration;
/// use sfauth_adapters::webhook::{SigningSecret, WebhookNotifier};
///
/// let url = "https://hooks.example.com/sf".parse().unwrap();
/// let builder = WebhookNotifier::builder(url, SigningSecret::new("new"))
///     .also_sign_with(SigningSecret::new("old"))
///     .queue_capacity(256)
///     .backoff(Duration::from_millis(500), Duration::from_secs(60))
///     .max_attempts(Some(20));
/// # let _ = builder;
/// ```
pub struct WebhookNotifierBuilder {
    url: Url,
    secrets: Vec<SigningSecret>,
    queue_capacity: usize,
    initial_backoff: Duration,
    max_backoff: Duration,
    max_attempts: Option<u32>,
    request_timeout: Duration,
    client: Option<reqwest::Client>,
}

impl fmt::Debug for WebhookNotifierBuilder {
    /// The URL's host only: a receiver may put a secret in its path or query.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookNotifierBuilder")
            .field("host", &self.url.host_str())
            .field("secrets", &self.secrets)
            .field("queue_capacity", &self.queue_capacity)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("max_attempts", &self.max_attempts)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl WebhookNotifierBuilder {
    /// Signs with `secret` too (one more `v1=` in the header), while receivers move to the new
    /// secret. Remove it once they have.
    ///
    /// ```
    /// # use sfauth_adapters::webhook::{SigningSecret, WebhookNotifier};
    /// let builder = WebhookNotifier::builder("https://h.example/".parse().unwrap(), SigningSecret::new("new"))
    ///     .also_sign_with(SigningSecret::new("old"));
    /// # let _ = builder;
    /// ```
    pub fn also_sign_with(mut self, secret: SigningSecret) -> Self {
        self.secrets.push(secret);
        self
    }

    /// How many notices may wait besides the one being delivered (default 1024, at least 1).
    /// When full, new notices are dropped and counted.
    ///
    /// ```
    /// # use sfauth_adapters::webhook::{SigningSecret, WebhookNotifier};
    /// let builder = WebhookNotifier::builder("https://h.example/".parse().unwrap(), SigningSecret::new("s"))
    ///     .queue_capacity(64);
    /// # let _ = builder;
    /// ```
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity.max(1);
        self
    }

    /// The wait after the first failure and the most any wait grows to (default 1 s and 5 min).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use sfauth_adapters::webhook::{SigningSecret, WebhookNotifier};
    /// let builder = WebhookNotifier::builder("https://h.example/".parse().unwrap(), SigningSecret::new("s"))
    ///     .backoff(Duration::from_millis(200), Duration::from_secs(30));
    /// # let _ = builder;
    /// ```
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Gives a notice up after this many attempts (counted in [`WebhookStats::given_up`] and
    /// logged); `None` (the default) tries until it is delivered or the notifier shuts down.
    ///
    /// ```
    /// # use sfauth_adapters::webhook::{SigningSecret, WebhookNotifier};
    /// let builder = WebhookNotifier::builder("https://h.example/".parse().unwrap(), SigningSecret::new("s"))
    ///     .max_attempts(Some(10));
    /// # let _ = builder;
    /// ```
    pub fn max_attempts(mut self, attempts: Option<u32>) -> Self {
        self.max_attempts = attempts.map(|n| n.max(1));
        self
    }

    /// The time one attempt may take, connection included (default 10 s).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use sfauth_adapters::webhook::{SigningSecret, WebhookNotifier};
    /// let builder = WebhookNotifier::builder("https://h.example/".parse().unwrap(), SigningSecret::new("s"))
    ///     .request_timeout(Duration::from_secs(5));
    /// # let _ = builder;
    /// ```
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sends through `client` instead of one built here. Give it no redirect policy that
    /// follows: a receiver's redirect would otherwise count as its answer.
    ///
    /// ```
    /// # use sfauth_adapters::webhook::{SigningSecret, WebhookNotifier};
    /// let client = reqwest::Client::new();
    /// let builder = WebhookNotifier::builder("https://h.example/".parse().unwrap(), SigningSecret::new("s"))
    ///     .client(client);
    /// # let _ = builder;
    /// ```
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Subscribes to `manager`'s events and starts delivering; needs a Tokio runtime.
    ///
    /// Only events from now on are seen. Fails only when the HTTP client cannot be built.
    ///
    /// ```no_run
    /// # use sfauth_adapters::webhook::{SigningSecret, WebhookNotifier};
    /// # async fn run(manager: sfauth::TokenManager) -> sfauth_adapters::Result<()> {
    /// let notifier = WebhookNotifier::builder("https://h.example/".parse().unwrap(), SigningSecret::new("s"))
    ///     .spawn(&manager)?;
    /// # let _ = notifier;
    /// # Ok(())
    /// # }
    /// ```
    pub fn spawn(self, manager: &TokenManager) -> Result<WebhookNotifier> {
        let client = match self.client {
            Some(client) => client,
            None => reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|error| Error::Webhook {
                    message: format!("cannot build the http client: {}", error.without_url()),
                })?,
        };
        let stats = Arc::new(Counters::default());
        let (queue, queued) = mpsc::channel(self.queue_capacity);
        let (stop, stopped) = watch::channel(None);
        let listener = tokio::spawn(listen(
            manager.clone(),
            manager.subscribe(),
            queue,
            stats.clone(),
            stopped.clone(),
        ));
        let deliverer = tokio::spawn(deliver_all(
            Delivery {
                client,
                url: self.url,
                secrets: self.secrets,
                initial_backoff: self.initial_backoff,
                max_backoff: self.max_backoff,
                max_attempts: self.max_attempts,
                request_timeout: self.request_timeout,
                stats: stats.clone(),
            },
            queued,
            stopped,
        ));
        Ok(WebhookNotifier {
            stats,
            stop,
            listener: Some(listener),
            deliverer: Some(deliverer),
        })
    }
}

/// Sends signed [`Notice`]s to one URL when tenants need re-authorization and when they
/// recover; see the [module docs](self) for the signature and the delivery guarantees.
///
/// ```no_run
/// use std::time::Duration;
/// use sfauth_adapters::webhook::{SigningSecret, WebhookNotifier};
///
/// # async fn run(manager: sfauth::TokenManager) -> sfauth_adapters::Result<()> {
/// let notifier = WebhookNotifier::builder(
///     "https://hooks.example.com/sf".parse().expect("a valid URL"),
///     SigningSecret::new("whsec_from_the_vault"),
/// )
/// .spawn(&manager)?;
/// println!("{} notices delivered", notifier.stats().delivered);
/// notifier.shutdown(Duration::from_secs(5)).await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct WebhookNotifier {
    stats: Arc<Counters>,
    /// `Some(deadline)` once shutdown began: the listener stops, the deliverer works until the
    /// deadline.
    stop: watch::Sender<Option<Instant>>,
    listener: Option<JoinHandle<()>>,
    deliverer: Option<JoinHandle<Vec<Notice>>>,
}

impl WebhookNotifier {
    /// A builder for a notifier that posts to `url`, signing with `secret`.
    ///
    /// ```
    /// use sfauth_adapters::webhook::{SigningSecret, WebhookNotifier};
    ///
    /// let builder = WebhookNotifier::builder(
    ///     "https://hooks.example.com/sf".parse().unwrap(),
    ///     SigningSecret::new("whsec_test"),
    /// );
    /// # let _ = builder;
    /// ```
    pub fn builder(url: Url, secret: SigningSecret) -> WebhookNotifierBuilder {
        WebhookNotifierBuilder {
            url,
            secrets: vec![secret],
            queue_capacity: 1024,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            max_attempts: None,
            request_timeout: Duration::from_secs(10),
            client: None,
        }
    }

    /// The counters since the notifier started.
    ///
    /// ```no_run
    /// # fn show(notifier: &sfauth_adapters::webhook::WebhookNotifier) {
    /// let stats = notifier.stats();
    /// println!("{} delivered, {} waiting, {} dropped", stats.delivered, stats.pending, stats.dropped);
    /// # }
    /// ```
    pub fn stats(&self) -> WebhookStats {
        self.stats.snapshot()
    }

    /// Stops listening, delivers what is queued for at most `grace` (retrying as usual), and
    /// returns what could not be delivered, oldest first, including a notice whose attempt was
    /// cut short (the receiver may have it already: its id says so).
    ///
    /// Events the manager sent before this call are still turned into notices.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn stop(notifier: sfauth_adapters::webhook::WebhookNotifier) {
    /// let report = notifier.shutdown(Duration::from_secs(10)).await;
    /// assert!(report.undelivered.is_empty(), "{} notices lost", report.undelivered.len());
    /// # }
    /// ```
    pub async fn shutdown(mut self, grace: Duration) -> ShutdownReport {
        self.stop.send_replace(Some(Instant::now() + grace));
        if let Some(listener) = self.listener.take() {
            // The listener only reads events and queues notices; a panic there is reported by
            // the runtime, and the deliverer still drains what was queued.
            let _ = listener.await;
        }
        let undelivered = match self.deliverer.take() {
            Some(deliverer) => deliverer.await.unwrap_or_default(),
            None => Vec::new(),
        };
        ShutdownReport {
            stats: self.stats.snapshot(),
            undelivered,
        }
    }
}

impl Drop for WebhookNotifier {
    /// Dropped without [`shutdown`](Self::shutdown): stop now. The deliverer logs how many
    /// notices it leaves undelivered.
    fn drop(&mut self) {
        if self.listener.is_some() || self.deliverer.is_some() {
            self.stop.send_replace(Some(Instant::now()));
        }
    }
}

/// What [`WebhookNotifier::shutdown`] left behind.
///
/// ```no_run
/// # async fn stop(notifier: sfauth_adapters::webhook::WebhookNotifier) {
/// let report = notifier.shutdown(std::time::Duration::from_secs(5)).await;
/// for notice in &report.undelivered {
///     eprintln!("undelivered {} {}", notice.id, notice.kind.as_str());
/// }
/// println!("{} delivered in all", report.stats.delivered);
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Notices not delivered, oldest first: to record or send another way.
    pub undelivered: Vec<Notice>,
    /// The final counters.
    pub stats: WebhookStats,
}

/// The notifier's counters; see [`WebhookNotifier::stats`].
///
/// ```no_run
/// # fn check(stats: sfauth_adapters::webhook::WebhookStats) {
/// if stats.dropped > 0 || stats.missed_events > 0 {
///     eprintln!("some re-authorization notices were lost");
/// }
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebhookStats {
    /// Notices queued for delivery.
    pub queued: u64,
    /// Notices the receiver accepted (2xx).
    pub delivered: u64,
    /// Attempts that failed (a non-2xx answer, a timeout, no connection), retried or not.
    pub failed_attempts: u64,
    /// Notices dropped because the queue was full.
    pub dropped: u64,
    /// Notices abandoned after [`WebhookNotifierBuilder::max_attempts`].
    pub given_up: u64,
    /// Manager events the notifier fell too far behind to read.
    pub missed_events: u64,
    /// Notices queued or being delivered right now.
    pub pending: u64,
}

#[derive(Debug, Default)]
struct Counters {
    queued: AtomicU64,
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    dropped: AtomicU64,
    given_up: AtomicU64,
    missed_events: AtomicU64,
    /// Notices finished one way or another (delivered, given up, or left at shutdown), so
    /// that `pending` is `queued - finished`.
    finished: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }

    fn snapshot(&self) -> WebhookStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let queued = load(&self.queued);
        WebhookStats {
            queued,
            delivered: load(&self.delivered),
            failed_attempts: load(&self.failed_attempts),
            dropped: load(&self.dropped),
            given_up: load(&self.given_up),
            missed_events: load(&self.missed_events),
            pending: queued.saturating_sub(load(&self.finished)),
        }
    }
}

/// Reads the manager's events and queues notices until shutdown begins; then it turns the
/// events already sent into notices and ends.
async fn listen(
    manager: TokenManager,
    mut events: broadcast::Receiver<Event>,
    queue: mpsc::Sender<Notice>,
    stats: Arc<Counters>,
    mut stop: watch::Receiver<Option<Instant>>,
) {
    // Tenants reported as needing re-authorization and not yet recovered. Only this task
    // touches it, so it needs no lock.
    let mut reported: HashSet<TokenKey> = HashSet::new();
    loop {
        let received = tokio::select! {
            received = events.recv() => received,
            _ = stop.wait_for(Option::is_some) => break,
        };
        match received {
            Ok(event) => on_event(&manager, event, &mut reported, &queue, &stats).await,
            Err(broadcast::error::RecvError::Lagged(missed)) => on_lag(&stats, missed),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
    // What the manager sent before shutdown was asked for is still reported.
    loop {
        match events.try_recv() {
            Ok(event) => on_event(&manager, event, &mut reported, &queue, &stats).await,
            Err(broadcast::error::TryRecvError::Lagged(missed)) => on_lag(&stats, missed),
            Err(_) => return,
        }
    }
}

fn on_lag(stats: &Counters, missed: u64) {
    Counters::bump(&stats.missed_events, missed);
    tracing::warn!(
        missed,
        "the webhook notifier fell behind the token manager's events; some notices may be missing"
    );
}

async fn on_event(
    manager: &TokenManager,
    event: Event,
    reported: &mut HashSet<TokenKey>,
    queue: &mpsc::Sender<Notice>,
    stats: &Counters,
) {
    let Event { key, kind } = event;
    let (kind, cause, reason) = match kind {
        EventKind::ReauthRequired { reason, cause } if !reported.contains(&key) => {
            (NoticeType::ReauthorizationRequired, cause, reason)
        }
        EventKind::Stored if reported.contains(&key) => (
            NoticeType::Recovered,
            None,
            "a new login was stored for the tenant".to_owned(),
        ),
        EventKind::Refreshed { adopted } if reported.contains(&key) => (
            NoticeType::Recovered,
            None,
            if adopted {
                "another process obtained working tokens for the tenant".to_owned()
            } else {
                "the tenant's tokens were renewed".to_owned()
            },
        ),
        // Nothing changed for a receiver: the tenant was already reported, or works and was
        // never reported, or the event is not about re-authorization.
        _ => return,
    };
    // Only the instance URL is kept of the stored tokens. A tenant the store no longer has is
    // still reported, without it.
    let instance_url = manager
        .tokens(&key)
        .await
        .ok()
        .map(|tokens| tokens.instance_url);
    let notice = Notice::new(kind, &key, instance_url, cause, reason);
    let id = notice.id.clone();
    match queue.try_send(notice) {
        Ok(()) => {
            Counters::bump(&stats.queued, 1);
            tracing::info!(key = %key, id = %id, kind = kind.as_str(), "webhook notice queued");
        }
        Err(_) => {
            Counters::bump(&stats.dropped, 1);
            tracing::warn!(key = %key, id = %id, kind = kind.as_str(), "webhook queue full; notice dropped");
        }
    }
    // The tenant's state as the receiver will see it, whether or not this notice got in: a
    // dropped notice is counted, and the next one about the tenant is still consistent.
    match kind {
        NoticeType::ReauthorizationRequired => reported.insert(key),
        NoticeType::Recovered => reported.remove(&key),
    };
}

/// What the deliverer needs, besides its queue.
struct Delivery {
    client: reqwest::Client,
    url: Url,
    secrets: Vec<SigningSecret>,
    initial_backoff: Duration,
    max_backoff: Duration,
    max_attempts: Option<u32>,
    request_timeout: Duration,
    stats: Arc<Counters>,
}

/// Delivers queued notices one at a time until the queue is closed and empty or the shutdown
/// deadline passes; returns what was left.
async fn deliver_all(
    delivery: Delivery,
    mut queued: mpsc::Receiver<Notice>,
    stop: watch::Receiver<Option<Instant>>,
) -> Vec<Notice> {
    let mut undelivered = Vec::new();
    loop {
        let next = tokio::select! {
            next = queued.recv() => next,
            () = deadline(stop.clone()) => None,
        };
        let Some(notice) = next else { break };
        let body = match serde_json::to_vec(&notice) {
            Ok(body) => body,
            Err(error) => {
                // A notice is strings and enums; this is not expected, and it is no reason to
                // stop delivering the others.
                tracing::error!(id = %notice.id, error = %error, "cannot encode a webhook notice");
                Counters::bump(&delivery.stats.given_up, 1);
                Counters::bump(&delivery.stats.finished, 1);
                continue;
            }
        };
        let outcome = tokio::select! {
            outcome = delivery.deliver(&notice, body) => outcome,
            () = deadline(stop.clone()) => Outcome::Cut,
        };
        match outcome {
            Outcome::Delivered => Counters::bump(&delivery.stats.delivered, 1),
            Outcome::GaveUp => Counters::bump(&delivery.stats.given_up, 1),
            Outcome::Cut => {
                undelivered.push(notice);
                break;
            }
        }
        Counters::bump(&delivery.stats.finished, 1);
    }
    // The deadline passed: what is still queued is handed back too.
    queued.close();
    while let Ok(notice) = queued.try_recv() {
        undelivered.push(notice);
    }
    Counters::bump(&delivery.stats.finished, undelivered.len() as u64);
    if !undelivered.is_empty() {
        tracing::warn!(
            undelivered = undelivered.len(),
            "the webhook notifier stopped with notices undelivered"
        );
    }
    undelivered
}

/// Resolves when the shutdown deadline passes; never, before shutdown begins.
async fn deadline(mut stop: watch::Receiver<Option<Instant>>) {
    let at = match stop.wait_for(Option::is_some).await {
        Ok(at) => *at,
        // The notifier is gone without setting a deadline (it always sets one on drop), so
        // there is nothing to wait for.
        Err(_) => Some(Instant::now()),
    };
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

enum Outcome {
    Delivered,
    GaveUp,
    Cut,
}

impl Delivery {
    /// Attempts `notice` until the receiver accepts it or the attempts run out.
    async fn deliver(&self, notice: &Notice, body: Vec<u8>) -> Outcome {
        let body = bytes::Bytes::from(body);
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            let retry_after = match self.attempt(notice, &body, attempt).await {
                Ok(()) => {
                    tracing::info!(id = %notice.id, attempt, "webhook notice delivered");
                    return Outcome::Delivered;
                }
                Err(retry_after) => retry_after,
            };
            Counters::bump(&self.stats.failed_attempts, 1);
            if self.max_attempts.is_some_and(|max| attempt >= max) {
                tracing::warn!(id = %notice.id, attempt, "webhook notice given up");
                return Outcome::GaveUp;
            }
            tokio::time::sleep(self.backoff(attempt, retry_after)).await;
        }
    }

    /// One signed `POST`. On failure, returns the receiver's `Retry-After`, if any.
    async fn attempt(
        &self,
        notice: &Notice,
        body: &bytes::Bytes,
        attempt: u32,
    ) -> Result<(), Option<Duration>> {
        let secrets: Vec<&SigningSecret> = self.secrets.iter().collect();
        let signature = sign(&secrets, SystemTime::now(), body);
        let sent = self
            .client
            .post(self.url.clone())
            .timeout(self.request_timeout)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "sfauth-webhook/1")
            .header(SIGNATURE_HEADER, signature)
            .header(EVENT_ID_HEADER, notice.id.as_str())
            .header(ATTEMPT_HEADER, attempt.to_string())
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => {
                // The URL is not logged: a receiver may put a secret in it.
                tracing::warn!(id = %notice.id, attempt, status = response.status().as_u16(), "webhook receiver refused the notice");
                let retry_after = response
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                Err(retry_after)
            }
            Err(error) => {
                let error = error.without_url();
                tracing::warn!(id = %notice.id, attempt, error = %error, "webhook notice not delivered");
                Err(None)
            }
        }
    }

    /// The wait after the `failures`-th failure: exponential, half of it random, or the
    /// receiver's `Retry-After`; never more than the maximum.
    fn backoff(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_backoff);
        }
        let doublings = failures.saturating_sub(1).min(31);
        let full = self
            .initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff);
        let half = full / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::random_range(0..=jitter_ms))
    }
}

/// `at` as RFC 3339 in UTC with milliseconds (`2025-01-01T00:00:00.000Z`).
fn rfc3339(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let days = i64::try_from(seconds / 86_400).unwrap_or(0);
    let of_day = seconds % 86_400;
    // Howard Hinnant's civil_from_days: the proleptic Gregorian date of a day count.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3_600,
        of_day % 3_600 / 60,
        of_day % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        let at = |s: u64, ms: u64| UNIX_EPOCH + Duration::from_millis(s * 1000 + ms);
        assert_eq!(rfc3339(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(at(951_782_400, 5)), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(at(1_735_689_599, 999)), "2024-12-31T23:59:59.999Z");
    }

    #[test]
    fn backoff_grows_to_the_maximum_with_jitter() {
        let delivery = |initial, max| Delivery {
            client: reqwest::Client::new(),
            url: Url::parse("http://127.0.0.1/").unwrap_or_else(|_| unreachable!()),
            secrets: Vec::new(),
            initial_backoff: initial,
            max_backoff: max,
            max_attempts: None,
            request_timeout: Duration::from_secs(1),
            stats: Arc::default(),
        };
        let d = delivery(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..50 {
            let first = d.backoff(1, None);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let fourth = d.backoff(4, None);
            assert!(fourth >= Duration::from_millis(400) && fourth <= Duration::from_millis(800));
            assert!(d.backoff(40, None) <= Duration::from_secs(1));
        }
        assert_eq!(
            d.backoff(1, Some(Duration::from_secs(60))),
            Duration::from_secs(1)
        );
    }
}
