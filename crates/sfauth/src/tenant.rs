//! [`Tenant`]: a handle on one tenant that skips the tenant map on every call.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;
use sfauth_core::{AccessToken, TokenKey};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::guard::{AccessTokenGuard, TokenFuture};
use crate::state::{Cached, CachedState, TenantState};

/// A handle on one tenant that skips the tenant map on every call.
///
/// Each handle keeps its own cached pointer to the tenant's current token, so checking it is a
/// pointer comparison; give each task its own handle (they are cheap to clone).
///
/// ```no_run
/// # async fn run(manager: sfauth::TokenManager, key: sfauth::TokenKey) -> sfauth::Result<()> {
/// let mut tenant = manager.tenant(&key).await?;
/// for _ in 0..3 {
///     let token = tenant.access_token().await?;
///     // send a request with `token.authorization()` to `token.instance_url()`
/// #   let _ = token;
/// }
/// # Ok(())
/// # }
/// ```
pub struct Tenant {
    engine: Arc<Engine>,
    state: Arc<TenantState>,
    cache: arc_swap::Cache<Arc<ArcSwap<Cached>>, Arc<Cached>>,
}

impl Clone for Tenant {
    fn clone(&self) -> Self {
        Self::new(self.engine.clone(), self.state.clone())
    }
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenant")
            .field("key", &self.state.key.to_string())
            .finish_non_exhaustive()
    }
}

impl Tenant {
    pub(crate) fn new(engine: Arc<Engine>, state: Arc<TenantState>) -> Self {
        let cache = arc_swap::Cache::new(state.current.clone());
        Self {
            engine,
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
    pub fn cached(&mut self) -> Option<AccessTokenGuard<'_>> {
        let cached = self.cache.load();
        cached
            .is_fresh()
            .then(|| AccessTokenGuard::borrowed(cached))
    }

    /// A valid access token, refreshed first if needed; see
    /// [`TokenManager::access_token`](crate::TokenManager::access_token). As there, a fresh
    /// token gives a future that is ready at once, and the slow path's future is boxed and made
    /// only when it is needed.
    #[inline]
    pub fn access_token(
        &mut self,
    ) -> impl Future<Output = Result<AccessTokenGuard<'_>>> + Send + '_ {
        if self.cache.load().is_fresh() {
            // Loaded again (the borrow checker cannot return the first load and otherwise go on
            // to the slow path); a tenant removed in between is answered for, not served empty.
            let cached = self.cache.load();
            if matches!(cached.state, CachedState::Active) {
                TokenFuture::Ready(Some(&**cached))
            } else {
                let error = unavailable(cached, &self.state.key);
                TokenFuture::Slow(Box::pin(std::future::ready(Err(error))) as SlowPath<'_>)
            }
        } else {
            TokenFuture::Slow(self.boxed_slow_path())
        }
    }

    /// Out of line, for the reason given at `TokenManager::access_token`'s.
    #[inline(never)]
    fn boxed_slow_path(&mut self) -> SlowPath<'_> {
        Box::pin(async move {
            let seen = self.state.current.load_full();
            self.engine.ensure_fresh(&self.state, &seen).await?;
            token_view(self.cache.load(), &self.state.key)
        })
    }

    /// Reports that Salesforce rejected `stale` (a 401 `INVALID_SESSION_ID`); see
    /// [`TokenManager::session_expired`](crate::TokenManager::session_expired).
    pub async fn session_expired(&mut self, stale: &AccessToken) -> Result<AccessTokenGuard<'_>> {
        self.engine.session_expired(&self.state, stale).await?;
        token_view(self.cache.load(), &self.state.key)
    }
}

/// The future of a handle's slow path (or of its rare error), boxed.
type SlowPath<'a> = Pin<Box<dyn Future<Output = Result<AccessTokenGuard<'a>>> + Send + 'a>>;

/// `cached` as a token to hand out, or the error for a tenant that was removed or needs a login
/// (never an empty token).
#[inline]
fn token_view<'a>(cached: &'a Cached, key: &TokenKey) -> Result<AccessTokenGuard<'a>> {
    if matches!(cached.state, CachedState::Active) {
        Ok(AccessTokenGuard::borrowed(cached))
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
