//! Per-tenant state: the cached token every caller reads ([`Cached`] behind an `ArcSwap`), the
//! locks and marks the refresher uses, and the two ways callers hold a token
//! ([`AccessTokenGuard`], [`Tenant`]).

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::{ArcSwap, Guard};
use futures_util::future::Either;
use sfauth_core::error::Cause;
use sfauth_core::{AccessToken, TokenKey};
use sfauth_storage::{RecordStatus, TokenRecord};
use url::Url;

use crate::clock;
use crate::error::{Error, ErrorKind, Result};
use crate::manager::{TokenManager, lock};
use crate::renewal::Renewal;

/// Deadline value meaning "not known": the hot path then skips the clock altogether.
pub(crate) const NEVER: u64 = u64::MAX;

/// One immutable view of a tenant's tokens, swapped whole on every change.
///
/// It keeps only what callers and the refresher read in memory: with thousands of tenants, the
/// whole `TokenSet` (identity URL, signature, scopes, ID token) would more than double the
/// memory per tenant, and the store has it when it is wanted
/// ([`TokenManager::tokens`](crate::TokenManager::tokens)).
pub(crate) struct Cached {
    pub(crate) access_token: AccessToken,
    pub(crate) instance_url: Url,
    pub(crate) issued_at: Option<SystemTime>,
    /// The store version these tokens were read or written at.
    pub(crate) version: u64,
    /// Bumped on every swap in this process; a caller that saw generation `g` and finds
    /// another one knows somebody else already dealt with the token it saw.
    pub(crate) generation: u64,
    /// Refresh when the coarse clock reaches this (ms since the epoch), or [`NEVER`].
    pub(crate) refresh_at_ms: u64,
    /// The access token is dead from this moment, or [`NEVER`] if unknown.
    pub(crate) expires_at_ms: u64,
    /// When the tokens were last obtained (refresh, renewal or login), for keep-alive.
    pub(crate) obtained_at_ms: u64,
    pub(crate) state: CachedState,
}

pub(crate) enum CachedState {
    Active,
    /// Boxed: rare, and it would otherwise widen every tenant's entry.
    Reauth(Box<Reauth>),
    /// The tenant was removed from the manager (or the manager dropped): the token is gone
    /// from memory, and whatever still holds the tenant (a [`Tenant`] handle, a thread's table
    /// of recent tenants) finds nothing to serve.
    Removed,
}

pub(crate) struct Reauth {
    pub(crate) reason: String,
    pub(crate) cause: Option<Cause>,
}

impl Cached {
    /// Whether the token can be handed out without a refresh. With no known deadline this
    /// reads no clock: it is one comparison.
    #[inline]
    pub(crate) fn is_fresh(&self) -> bool {
        matches!(self.state, CachedState::Active)
            && (self.refresh_at_ms == NEVER || clock::now_ms() < self.refresh_at_ms)
    }

    /// Whether the token is still accepted by Salesforce as far as we know, even if a refresh is
    /// due: such a token may be served while a refresh is failing.
    pub(crate) fn is_usable(&self) -> bool {
        matches!(self.state, CachedState::Active)
            && (self.expires_at_ms == NEVER || clock::precise_ms() < self.expires_at_ms)
    }

    /// The error to fail with instead of refreshing, for a tenant that needs a new login or was
    /// removed.
    pub(crate) fn unavailable_error(&self, key: &TokenKey) -> Option<Error> {
        match &self.state {
            CachedState::Reauth(reauth) => Some(Error::ReauthorizationRequired {
                key: Box::new(key.clone()),
                reason: reauth.reason.clone(),
                cause: reauth.cause,
            }),
            CachedState::Removed => Some(Error::unknown_tenant(key)),
            CachedState::Active => None,
        }
    }

    /// What replaces `self` when its tenant is removed: no token, never fresh.
    pub(crate) fn removed(&self) -> Self {
        Self {
            access_token: AccessToken::new(String::new()),
            instance_url: self.instance_url.clone(),
            issued_at: None,
            version: self.version,
            generation: self.generation.wrapping_add(1),
            refresh_at_ms: NEVER,
            expires_at_ms: NEVER,
            obtained_at_ms: self.obtained_at_ms,
            state: CachedState::Removed,
        }
    }

    pub(crate) fn from_record(
        record: &TokenRecord,
        generation: u64,
        lifetime_hint_ms: Option<u64>,
        margin_ms: u64,
        jitter_ms: u64,
    ) -> Self {
        let tokens = &record.tokens;
        let lifetime = record
            .learned_lifetime
            .map(clock::duration_ms)
            .or(lifetime_hint_ms);
        let issued_ms = tokens.issued_at.map(clock::to_ms);
        let expires_at_ms = match (tokens.expires_at, issued_ms, lifetime) {
            (Some(at), _, _) => clock::to_ms(at),
            (None, Some(issued), Some(lifetime)) => issued.saturating_add(lifetime),
            _ => NEVER,
        };
        let refresh_at_ms = if expires_at_ms == NEVER {
            NEVER
        } else {
            let jitter = if jitter_ms == 0 {
                0
            } else {
                rand::random_range(0..=jitter_ms)
            };
            expires_at_ms.saturating_sub(margin_ms.saturating_add(jitter))
        };
        let obtained_at_ms = record
            .last_refreshed_at
            .map(clock::to_ms)
            .or(issued_ms)
            .unwrap_or_else(|| clock::to_ms(record.issued_at));
        let state = match &record.status {
            RecordStatus::ReauthRequired { reason, .. } => CachedState::Reauth(Box::new(Reauth {
                reason: reason.clone(),
                cause: None,
            })),
            _ => CachedState::Active,
        };
        Self {
            access_token: tokens.access_token.clone(),
            instance_url: tokens.instance_url.clone(),
            issued_at: tokens.issued_at,
            version: record.version,
            generation,
            refresh_at_ms,
            expires_at_ms,
            obtained_at_ms,
            state,
        }
    }
}

/// Everything the manager keeps for one tenant.
pub(crate) struct TenantState {
    /// Shared with the tenant map's key, so it is stored once.
    pub(crate) key: Arc<TokenKey>,
    /// In its own `Arc` so that a [`Tenant`] handle can keep an `arc_swap::Cache` of it.
    pub(crate) current: Arc<ArcSwap<Cached>>,
    /// Single-flight within the process; the store lease does it across processes.
    pub(crate) refresh_lock: tokio::sync::Mutex<()>,
    // The fields below are used on the slow path only and are almost always empty: boxed, so
    // that an idle tenant pays a pointer for each rather than the whole value.
    pub(crate) renewal: Mutex<Option<Box<Renewal>>>,
    /// Tokens obtained but not yet saved (the store failed): saved before anything else.
    pub(crate) unsaved: Mutex<Option<Box<TokenRecord>>>,
    /// No refresh attempt before this (ms since the epoch), after a failure.
    pub(crate) retry_at_ms: AtomicU64,
    pub(crate) consecutive_failures: AtomicU64,
    pub(crate) last_failure: Mutex<Option<Box<(ErrorKind, String)>>>,
    /// The last refresh left the refresh token possibly spent and held it back while the access
    /// token worked: a 401 then means the wait is over, failure pause or not.
    pub(crate) on_hold: AtomicBool,
    /// Set once, when the tenant leaves its manager.
    removed: AtomicBool,
}

impl TenantState {
    pub(crate) fn new(key: Arc<TokenKey>, cached: Cached) -> Self {
        Self {
            key,
            current: Arc::new(ArcSwap::from_pointee(cached)),
            refresh_lock: tokio::sync::Mutex::new(()),
            renewal: Mutex::new(None),
            unsaved: Mutex::new(None),
            retry_at_ms: AtomicU64::new(0),
            consecutive_failures: AtomicU64::new(0),
            removed: AtomicBool::new(false),
            on_hold: AtomicBool::new(false),
            last_failure: Mutex::new(None),
        }
    }

    /// Drops every secret the tenant holds (its token, tokens waiting to be saved, the
    /// credentials it renews with), for a tenant no longer in its manager. It then stays
    /// removed: [`TenantState::set_current`] will not bring a token back.
    pub(crate) fn forget(&self) {
        self.removed.store(true, Ordering::SeqCst);
        let removed = self.current.load().removed();
        self.current.store(Arc::new(removed));
        *lock(&self.unsaved) = None;
        *lock(&self.renewal) = None;
        *lock(&self.last_failure) = None;
    }

    /// Forgets earlier refresh failures (and their pause) after a success or a new login.
    pub(crate) fn clear_failures(&self) {
        self.retry_at_ms.store(0, Ordering::Release);
        self.consecutive_failures.store(0, Ordering::Release);
        self.on_hold.store(false, Ordering::Release);
        *lock(&self.last_failure) = None;
    }

    /// Keeps tokens that could not be saved, to save first on the next call; a removed tenant
    /// keeps nothing (its record is gone, and so should its tokens be).
    pub(crate) fn keep_unsaved(&self, record: TokenRecord) {
        *lock(&self.unsaved) = Some(Box::new(record));
        if self.is_removed() {
            *lock(&self.unsaved) = None;
        }
    }

    /// Whether [`forget`](Self::forget) was called.
    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }

    /// Makes `cached` the current token, unless the tenant was removed (a refresh that was in
    /// flight when it was must not bring its token back). Returns what is current afterwards.
    pub(crate) fn set_current(&self, cached: Arc<Cached>) -> Arc<Cached> {
        self.current.store(cached.clone());
        // Checked after the store: a `forget` that ran before it is seen here and done again;
        // one that runs after it replaces the token anyway.
        if self.is_removed() {
            self.forget();
            return self.current.load_full();
        }
        cached
    }

    pub(crate) fn in_failure_backoff(&self) -> bool {
        clock::precise_ms() < self.retry_at_ms.load(Ordering::Acquire)
    }
}

/// A valid access token, borrowed from the manager's cache without copying it.
///
/// Hold it for the duration of one request, not longer: it pins the token it was created with,
/// so a long-lived guard keeps serving a token that may have been replaced.
pub struct AccessTokenGuard {
    inner: Guard<Arc<Cached>>,
}

impl AccessTokenGuard {
    pub(crate) fn new(inner: Guard<Arc<Cached>>) -> Self {
        Self { inner }
    }

    /// The access token.
    pub fn access_token(&self) -> &AccessToken {
        &self.inner.access_token
    }

    /// The access token in the clear, for an `Authorization: Bearer` header.
    pub fn secret(&self) -> &str {
        self.inner.access_token.expose_secret()
    }

    /// The base URL for API calls.
    pub fn instance_url(&self) -> &Url {
        &self.inner.instance_url
    }

    /// When the access token was issued, if Salesforce said.
    pub fn issued_at(&self) -> Option<SystemTime> {
        self.inner.issued_at
    }

    /// When the access token expires as far as the manager knows (from the response, a JWT
    /// `exp`, introspection, the configured session timeout or a learned lifetime), if at all.
    pub fn expires_at(&self) -> Option<SystemTime> {
        (self.inner.expires_at_ms != NEVER).then(|| clock::from_ms(self.inner.expires_at_ms))
    }
}

impl fmt::Debug for AccessTokenGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessTokenGuard")
            .field("instance_url", &self.inner.instance_url.as_str())
            .finish_non_exhaustive()
    }
}

/// A handle on one tenant that skips the tenant map on every call.
///
/// Each handle keeps its own cached pointer to the tenant's current token, so checking it is a
/// pointer comparison; give each task its own handle (they are cheap to clone).
///
/// ```no_run
/// # async fn run(manager: sfauth::TokenManager, key: sfauth_core::TokenKey) -> sfauth::Result<()> {
/// let mut tenant = manager.tenant(&key).await?;
/// for _ in 0..3 {
///     let token = tenant.access_token().await?;
///     // send a request with `token.secret()` to `token.instance_url()`
/// #   let _ = token;
/// }
/// # Ok(())
/// # }
/// ```
pub struct Tenant {
    manager: TokenManager,
    state: Arc<TenantState>,
    cache: arc_swap::Cache<Arc<ArcSwap<Cached>>, Arc<Cached>>,
}

impl Clone for Tenant {
    fn clone(&self) -> Self {
        Self::new(self.manager.clone(), self.state.clone())
    }
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenant")
            .field("key", &self.state.key.to_string())
            .finish_non_exhaustive()
    }
}

/// A token borrowed from a [`Tenant`] handle.
#[derive(Clone, Copy)]
pub struct TokenRef<'a> {
    cached: &'a Cached,
}

impl TokenRef<'_> {
    /// The access token.
    pub fn access_token(&self) -> &AccessToken {
        &self.cached.access_token
    }

    /// The access token in the clear, for an `Authorization: Bearer` header.
    pub fn secret(&self) -> &str {
        self.cached.access_token.expose_secret()
    }

    /// The base URL for API calls.
    pub fn instance_url(&self) -> &Url {
        &self.cached.instance_url
    }
}

impl fmt::Debug for TokenRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRef")
            .field("instance_url", &self.cached.instance_url.as_str())
            .finish_non_exhaustive()
    }
}

impl Tenant {
    pub(crate) fn new(manager: TokenManager, state: Arc<TenantState>) -> Self {
        let cache = arc_swap::Cache::new(state.current.clone());
        Self {
            manager,
            state,
            cache,
        }
    }

    /// The tenant's key.
    pub fn key(&self) -> &TokenKey {
        &self.state.key
    }

    /// The cached token if it needs no refresh: no lock, no allocation, no map lookup.
    #[inline]
    pub fn cached(&mut self) -> Option<TokenRef<'_>> {
        let cached = self.cache.load();
        if cached.is_fresh() {
            Some(TokenRef { cached })
        } else {
            None
        }
    }

    /// A valid access token, refreshed first if needed; see
    /// [`TokenManager::access_token`]. As there, a fresh token gives a future that is ready at
    /// once, and the slow path's future is boxed and made only when it is needed.
    #[inline]
    pub fn access_token(&mut self) -> impl Future<Output = Result<TokenRef<'_>>> + Send + '_ {
        if self.cache.load().is_fresh() {
            // Loaded again (the borrow checker cannot return the first load and otherwise go on
            // to the slow path); a tenant removed in between is answered for, not served empty.
            let cached = self.cache.load();
            if matches!(cached.state, CachedState::Active) {
                Either::Left(std::future::ready(Ok(TokenRef { cached })))
            } else {
                let error = unavailable(cached, &self.state.key);
                Either::Right(Box::pin(std::future::ready(Err(error))) as SlowPath<'_>)
            }
        } else {
            Either::Right(self.boxed_slow_path())
        }
    }

    /// Out of line, for the reason given at [`TokenManager::access_token`]'s.
    #[inline(never)]
    fn boxed_slow_path(&mut self) -> SlowPath<'_> {
        Box::pin(async move {
            let seen = self.state.current.load_full();
            self.manager.slow_path(&self.state, seen).await?;
            token_ref(self.cache.load(), &self.state.key)
        })
    }

    /// Reports that Salesforce rejected `stale` (a 401 `INVALID_SESSION_ID`); see
    /// [`TokenManager::session_expired`].
    pub async fn session_expired(&mut self, stale: &AccessToken) -> Result<TokenRef<'_>> {
        self.manager.expired(&self.state, stale).await?;
        token_ref(self.cache.load(), &self.state.key)
    }
}

/// The future of a handle's slow path (or of its rare error), boxed.
type SlowPath<'a> = Pin<Box<dyn Future<Output = Result<TokenRef<'a>>> + Send + 'a>>;

/// `cached` as a token to hand out, or the error for a tenant that was removed or needs a login
/// (never an empty token).
#[inline]
fn token_ref<'a>(cached: &'a Cached, key: &TokenKey) -> Result<TokenRef<'a>> {
    if matches!(cached.state, CachedState::Active) {
        Ok(TokenRef { cached })
    } else {
        Err(unavailable(cached, key))
    }
}

/// Out of line: the error is rare, and building it inline slows the hot path down.
#[cold]
#[inline(never)]
fn unavailable(cached: &Cached, key: &TokenKey) -> Error {
    cached
        .unavailable_error(key)
        .unwrap_or_else(|| Error::unknown_tenant(key))
}
