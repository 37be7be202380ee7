//! [`Engine`]: the tenants in memory and the way a call goes through them. The hot path (a
//! fresh cached token: this thread's recent tenants, then the lock-free map, then one
//! `ArcSwap` load) and the slow path (load from the store, decide whether to refresh, serve a
//! still-usable token while refreshes fail) live here; the refresh itself is the
//! [`Refresher`]'s. `TokenManager` and `Tenant` are thin public faces over it.

use std::hash::Hash;
use std::sync::Arc;

use sfauth_core::{AccessToken, TokenKey};
use sfauth_storage::{RecordHeader, TokenRecord};

use crate::clock;
use crate::error::{Error, ErrorKind, Result};
use crate::guard::AccessTokenGuard;
use crate::recent::{self, Recent};
use crate::refresh::{Refresher, Trigger};
use crate::state::{Cached, CachedState, NEVER, TenantState};
use crate::stats::{Counters, publish_tenant_gauges};

type Map<K, V> = papaya::HashMap<K, V, foldhash::fast::RandomState>;

/// The tenant map's key: the tenant's [`TokenKey`], shared with its state.
///
/// It hashes and compares as the key does: by the hash the key carries (so a lookup hashes one
/// `u64`, not five strings), then every part.
#[derive(Clone, PartialEq, Eq, Hash)]
struct MapKey(Arc<TokenKey>);

/// A borrowed [`MapKey`], for lookups with the caller's `&TokenKey`.
#[derive(Hash)]
struct KeyRef<'a>(&'a TokenKey);

impl papaya::Equivalent<MapKey> for KeyRef<'_> {
    fn equivalent(&self, key: &MapKey) -> bool {
        *self.0 == *key.0
    }
}

/// The tenants of one manager, and the refresher they share.
pub(crate) struct Engine {
    refresher: Arc<Refresher>,
    tenants: Map<MapKey, Arc<TenantState>>,
    /// This manager's share of the per-thread shortcut to recently used tenants.
    recent: Recent,
}

impl Engine {
    pub(crate) fn new(refresher: Refresher) -> Self {
        Self {
            refresher: Arc::new(refresher),
            tenants: Map::default(),
            recent: Recent::new(),
        }
    }

    pub(crate) fn refresher(&self) -> &Refresher {
        &self.refresher
    }

    /// How many tenants are in memory.
    pub(crate) fn len(&self) -> usize {
        self.tenants.len()
    }

    /// The cached token for `key` if it is fresh: through this thread's recent tenants, then
    /// the map.
    #[inline]
    pub(crate) fn cached_token(&self, key: &TokenKey) -> Option<AccessTokenGuard<'static>> {
        // Read before the map, so that whatever the map gives is remembered no later than it.
        let epoch = self.recent.epoch();
        if let Some(Some(guard)) = recent::with(epoch, key, fresh_guard) {
            return Some(guard);
        }
        let pinned = self.tenants.pin();
        let tenant = pinned.get(&KeyRef(key))?;
        let guard = fresh_guard(tenant)?;
        recent::remember(epoch, tenant);
        Some(guard)
    }

    /// The tenant's in-memory state, loaded from the store on first use.
    pub(crate) async fn load(&self, key: &TokenKey) -> Result<Arc<TenantState>> {
        if let Some(tenant) = self.tenants.pin().get(&KeyRef(key)) {
            return Ok(tenant.clone());
        }
        let record = self.refresher.read(key).await?;
        Ok(self.tenant_entry(&record).0)
    }

    /// A valid token for `key`, whatever it takes (the slow path of `access_token`).
    pub(crate) async fn access_token(&self, key: &TokenKey) -> Result<AccessTokenGuard<'static>> {
        let tenant = self.load(key).await?;
        let seen = tenant.current.load_full();
        self.ensure_fresh(&tenant, &seen).await?;
        current_guard(&tenant)
    }

    /// Everything but a fresh cached token: refresh (single flight), serve a still-usable token
    /// while refreshes fail, or fail fast for a tenant that needs a login.
    pub(crate) async fn ensure_fresh(
        &self,
        tenant: &Arc<TenantState>,
        seen: &Cached,
    ) -> Result<()> {
        let opened;
        let seen = if seen.is_sealed() {
            opened = self.open(tenant).await?;
            &*opened
        } else {
            seen
        };
        if let Some(error) = seen.unavailable_error(&tenant.key) {
            return Err(error);
        }
        if seen.is_fresh() {
            return Ok(());
        }
        match self
            .refresher
            .refresh(tenant, seen.generation, Trigger::Expiring)
            .await
        {
            Ok(()) => Ok(()),
            Err(error) if serve_stale(&error) && tenant.current.load().is_usable() => {
                Counters::bump(&self.refresher.counters().served_stale);
                tracing::warn!(key = %tenant.key, error = %error, "refresh failed; serving the still-valid token");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Salesforce refused `stale` (a 401): refresh unless somebody already replaced it, and
    /// count its age towards the org's session lifetime.
    pub(crate) async fn session_expired(
        &self,
        tenant: &Arc<TenantState>,
        stale: &AccessToken,
    ) -> Result<()> {
        let seen = self.open(tenant).await?;
        if let Some(error) = seen.unavailable_error(&tenant.key) {
            return Err(error);
        }
        if &seen.access_token != stale {
            // Somebody already replaced the token this caller used.
            self.refresher.counters().coalesced();
            return Ok(());
        }
        self.learn_lifetime(&tenant.key, &seen);
        self.refresher
            .refresh(tenant, seen.generation, Trigger::SessionExpired)
            .await
    }

    /// Refreshes `tenant` whatever the state of its cached token, unless it needs a login.
    pub(crate) async fn refresh(&self, tenant: &Arc<TenantState>, trigger: Trigger) -> Result<()> {
        let seen = self.open(tenant).await?;
        if let Some(error) = seen.unavailable_error(&tenant.key) {
            return Err(error);
        }
        self.refresher
            .refresh(tenant, seen.generation, trigger)
            .await
    }

    /// Refreshes `tenant` if it is still at `generation`, adopting another process's tokens
    /// and never waiting on another refresher (the background refresher's call).
    pub(crate) async fn refresh_background(
        &self,
        tenant: &Arc<TenantState>,
        generation: u64,
    ) -> Result<()> {
        let seen = tenant.current.load_full();
        if seen.is_sealed() && seen.generation == generation {
            let opened = self.open(tenant).await?;
            // The scan found the tenant due by its header. The record opened at the header's
            // version has the same times, so it is due still; a newer one (another worker
            // refreshed meanwhile) is left to the next scan, which sees its real times.
            if opened.version != seen.version || opened.is_sealed() {
                return Ok(());
            }
            return self
                .refresher
                .refresh_background(tenant, opened.generation)
                .await;
        }
        self.refresher.refresh_background(tenant, generation).await
    }

    /// The tenant's current view, its record read from the store and opened first if it was
    /// still sealed (listed at a warm start, see [`CachedState::Sealed`]). Unless somebody
    /// else installed a view meanwhile, the opened record becomes the current one.
    pub(crate) async fn open(&self, tenant: &Arc<TenantState>) -> Result<Arc<Cached>> {
        let seen = tenant.current.load_full();
        if !seen.is_sealed() {
            return Ok(seen);
        }
        let record = self.refresher.read(&tenant.key).await?;
        let cached = Arc::new(
            self.refresher
                .cached_from(&record, seen.generation.wrapping_add(1)),
        );
        let before = tenant.current.compare_and_swap(&seen, cached);
        if Arc::ptr_eq(&*before, &seen) && tenant.is_removed() {
            // Removed between the read and the swap: leave no token behind.
            tenant.forget();
        }
        Ok(tenant.current.load_full())
    }

    /// Creates the tenant of `header`, sealed, if it is not in memory. Returns its key when it
    /// is in memory at an older version than `header`'s: the caller then reads and installs the
    /// record. A warm start does not seal a tenant already in memory: only the background
    /// refresher does, for a tenant stored newer elsewhere (`Refresher::seal_if_newer`), and
    /// never over tokens waiting to be saved.
    pub(crate) fn install_header(&self, header: RecordHeader) -> Option<TokenKey> {
        let pinned = self.tenants.pin();
        if let Some(tenant) = pinned.get(&KeyRef(&header.key)) {
            return (tenant.current.load().version < header.version).then_some(header.key);
        }
        let sealed = self.refresher.cached_from_header(&header, 0);
        let version = header.version;
        // Moved, not cloned: a warm start makes 100,000 of these.
        let key = Arc::new(header.key);
        let fresh = Arc::new(TenantState::new(key.clone(), sealed));
        match pinned.try_insert(MapKey(key), fresh) {
            Ok(_) => None,
            // Loaded by a call meanwhile, from the store too: as above.
            Err(occupied) => (occupied.current.current.load().version < version)
                .then(|| (*occupied.current.key).clone()),
        }
    }

    /// Takes a header from the store's change feed for the tenant in memory, if it is one the
    /// background refresher is about to attempt (see `Refresher::adopt_notified`).
    pub(crate) fn adopt_notified(&self, header: &RecordHeader, horizon_ms: u64) -> bool {
        let pinned = self.tenants.pin();
        let Some(tenant) = pinned.get(&KeyRef(&header.key)) else {
            return false;
        };
        self.refresher.adopt_notified(tenant, header, horizon_ms)
    }

    /// Makes `record` the current token of its tenant, creating the tenant if needed.
    pub(crate) fn install_record(&self, record: &TokenRecord) -> Arc<TenantState> {
        let (tenant, created) = self.tenant_entry(record);
        if !created {
            self.refresher.install(&tenant, record);
        }
        tenant
    }

    /// The tenant for `record.key`, and whether it was just created from `record`.
    fn tenant_entry(&self, record: &TokenRecord) -> (Arc<TenantState>, bool) {
        let pinned = self.tenants.pin();
        if let Some(tenant) = pinned.get(&KeyRef(&record.key)) {
            return (tenant.clone(), false);
        }
        let key = Arc::new(record.key.clone());
        let cached = self.refresher.cached_from(record, 0);
        let fresh = Arc::new(TenantState::new(key.clone(), cached));
        match pinned.try_insert(MapKey(key), fresh.clone()) {
            Ok(_) => (fresh, true),
            Err(occupied) => (occupied.current.clone(), false),
        }
    }

    /// Forgets `key` in memory: its secrets leave at once, and handles and per-thread entries
    /// find nothing to serve from now on.
    pub(crate) fn forget(&self, key: &TokenKey) {
        if let Some(tenant) = self.tenants.pin().remove(&KeyRef(key)) {
            self.recent.removed();
            tenant.forget();
        }
    }

    /// The tenants in memory and how many need a login, publishing the gauges on the way.
    pub(crate) fn census(&self) -> (u64, u64) {
        let pinned = self.tenants.pin();
        let tenants = pinned.len() as u64;
        let reauth = pinned
            .values()
            .filter(|t| matches!(t.current.load().state, CachedState::Reauth(_)))
            .count() as u64;
        publish_tenant_gauges(tenants, reauth);
        (tenants, reauth)
    }

    /// Tenants whose refresh falls due before `horizon_ms`: their refresh deadline, or with
    /// keep-alive the moment their tokens will have been obtained `keep_alive_after_ms` ago,
    /// whichever comes first. The same pass publishes the tenant gauges, so that whoever
    /// scrapes the metrics sees them current without a second walk.
    pub(crate) fn due(&self, horizon_ms: u64, keep_alive_after_ms: Option<u64>) -> Vec<Due> {
        let pinned = self.tenants.pin();
        let now_ms = clock::precise_ms();
        let (mut tenants, mut reauth): (u64, u64) = (0, 0);
        let due = pinned
            .values()
            .filter_map(|tenant| {
                let cached = tenant.current.load();
                tenants = tenants.saturating_add(1);
                if matches!(cached.state, CachedState::Reauth(_)) {
                    reauth = reauth.saturating_add(1);
                }
                // A sealed tenant is scheduled by its header's times (opened when refreshed).
                if !matches!(cached.state, CachedState::Active | CachedState::Sealed) {
                    return None;
                }
                // `NEVER` is `u64::MAX`, so an unknown deadline is never the earlier one.
                let idle_at = keep_alive_after_ms
                    .map_or(NEVER, |after| cached.obtained_at_ms.saturating_add(after));
                let due_at_ms = cached.refresh_at_ms.min(idle_at);
                // The pause is judged last, and by the clock read once for the whole pass:
                // a clock read per tenant was most of a scan of 10,000 tenants none of which
                // was due.
                (due_at_ms != NEVER
                    && due_at_ms <= horizon_ms
                    && !tenant.in_failure_backoff_at(now_ms))
                .then(|| Due {
                    tenant: tenant.clone(),
                    generation: cached.generation,
                    due_at_ms,
                    expires_at_ms: cached.expires_at_ms,
                })
            })
            .collect();
        publish_tenant_gauges(tenants, reauth);
        due
    }

    /// Counts the age of a token Salesforce just refused towards the org's session lifetime.
    /// One death is no evidence (see `lifetime.rs`); several at one age are.
    fn learn_lifetime(&self, key: &TokenKey, dead: &Cached) {
        let Some(issued) = dead.issued_at else {
            return;
        };
        let now = clock::precise_ms();
        let age = now.saturating_sub(clock::to_ms(issued));
        if let Some(lifetime) = self.refresher.lifetimes().death(key.org_id(), age, now) {
            tracing::info!(key = %key, lifetime_ms = lifetime, "learned session lifetime");
        }
    }

    /// The session lifetime believed for `org` now, in milliseconds.
    pub(crate) fn lifetime_ms(&self, org: &sfauth_core::OrgId) -> Option<u64> {
        self.refresher.lifetimes().get(org, clock::precise_ms())
    }
}

impl Drop for Engine {
    /// Threads' tables of recent tenants may outlive the manager: leave them no token.
    fn drop(&mut self) {
        for tenant in self.tenants.pin().values() {
            tenant.forget();
        }
    }
}

/// A tenant the background refresher should look at, as one scan saw it.
pub(crate) struct Due {
    pub(crate) tenant: Arc<TenantState>,
    /// The generation seen: a refresh stops at once if somebody replaced it meanwhile.
    pub(crate) generation: u64,
    /// When the refresh (or keep-alive) falls due, in ms since the epoch; may be past.
    pub(crate) due_at_ms: u64,
    /// When the access token dies, or `NEVER` if unknown.
    pub(crate) expires_at_ms: u64,
}

/// Whether a failed refresh may be papered over with a token that has not expired yet.
fn serve_stale(error: &Error) -> bool {
    // A refresh refused for its address leaves the tokens valid (the access token works from
    // anywhere; only refreshes are allowlisted): callers keep the token until it dies, while
    // the operator fixes the egress.
    let ip_blocked = error.cause() == Some(sfauth_core::Cause::IpNotAllowed);
    (ip_blocked
        || matches!(
            error.kind(),
            ErrorKind::Transient
                | ErrorKind::RateLimited
                | ErrorKind::RefreshInProgress
                | ErrorKind::Storage
        ))
        && !matches!(error, Error::Unsaved { .. })
}

/// The tenant's current token after a refresh or a wait, or the error for a tenant that was
/// removed or needs a login meanwhile (never an empty token).
pub(crate) fn current_guard(tenant: &TenantState) -> Result<AccessTokenGuard<'static>> {
    let guard = tenant.current.load();
    match guard.unavailable_error(&tenant.key) {
        Some(error) => Err(error),
        None => Ok(AccessTokenGuard::owned(guard)),
    }
}

/// The tenant's current token, if it can be handed out without a refresh.
// Always inlined into both lookups of `cached_token` (`#[inline]` stopped being enough once
// the Error changed): called out of line, its 16-byte guard came back as two 8-byte stores
// read as one 16-byte load, a store-forwarding stall that cost a cache hit about 15 ns (perf
// annotate, bench `manager/cached_token_1t`).
#[inline(always)]
fn fresh_guard(tenant: &TenantState) -> Option<AccessTokenGuard<'static>> {
    let guard = tenant.current.load();
    guard.is_fresh().then(|| AccessTokenGuard::owned(guard))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    fn key(client: &str, label: &str) -> TokenKey {
        let identity = "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK"
            .parse()
            .unwrap();
        TokenKey::new(
            &sfauth_core::LoginHost::Production,
            &identity,
            client,
            label,
        )
    }

    #[test]
    fn lookups_hash_like_the_stored_key_and_compare_every_field() {
        let state = foldhash::fast::RandomState::default();
        let stored = MapKey(Arc::new(key("3MVG9.a", "default")));
        let same = key("3MVG9.a", "default");
        assert_eq!(state.hash_one(&stored), state.hash_one(KeyRef(&same)));
        assert!(papaya::Equivalent::equivalent(&KeyRef(&same), &stored));
        for other in [key("3MVG9.b", "default"), key("3MVG9.a", "backup")] {
            assert!(!papaya::Equivalent::equivalent(&KeyRef(&other), &stored));
        }
        let sandbox = TokenKey::from_parts(
            "https://test.salesforce.com",
            same.org_id().clone(),
            same.user_id().clone(),
            same.client_id(),
            same.label(),
        );
        assert!(!papaya::Equivalent::equivalent(&KeyRef(&sandbox), &stored));
    }
}
