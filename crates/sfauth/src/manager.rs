//! [`TokenManager`]: the cache in front of the store, and the public calls.
//!
//! The hot path (`access_token` on a fresh token) is a lookup in a lock-free map and an
//! `ArcSwap` load; everything else (loading from the store, refreshing, learning lifetimes)
//! lives on the slow path in `refresh.rs`.

use std::fmt;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::future::Either;
use sfauth_core::http::HttpTransport;
use sfauth_core::{AccessToken, OAuthClient, OrgId, TokenKey, TokenSet};
use sfauth_storage::{
    ErrorKind as StoreErrorKind, Lease, ListPage, ListQuery, RecordStatus, RenewalHint,
    TokenRecord, TokenStore, TokenStoreExt as _,
};
use tokio::sync::broadcast;
use tokio_util::task::TaskTracker;

use crate::clock::{self, duration_ms};
use crate::error::{Error, ErrorKind, Result};
use crate::events::{Event, EventKind};
use crate::lifetime::Lifetimes;
use crate::policy::RefreshPolicy;
use crate::recent::{self, Recent};
use crate::refresh::Trigger;
use crate::renewal::{Renewal, RenewalResolver};
use crate::stats::{Counters, Stats, publish_tenant_gauges};
use crate::tenant::{AccessTokenGuard, Cached, CachedState, Tenant, TenantState};

type Map<K, V> = papaya::HashMap<K, V, foldhash::fast::RandomState>;

/// The tenant map's key: the tenant's [`TokenKey`], shared with its state.
///
/// It hashes and compares as the key does: by the hash the key carries (so a lookup hashes one
/// `u64`, not five strings), then every part.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct MapKey(pub(crate) Arc<TokenKey>);

/// A borrowed [`MapKey`], for lookups with the caller's `&TokenKey`.
#[derive(Hash)]
pub(crate) struct KeyRef<'a>(pub(crate) &'a TokenKey);

impl papaya::Equivalent<MapKey> for KeyRef<'_> {
    fn equivalent(&self, key: &MapKey) -> bool {
        *self.0 == *key.0
    }
}

/// Hands out valid Salesforce access tokens for many tenants, refreshing them safely.
///
/// Cheap to clone (an `Arc` inside); share one per connected app and store.
///
/// - **Hot path:** [`access_token`](Self::access_token) on a fresh cached token takes no lock
///   and allocates nothing. A [`Tenant`] handle skips even the map lookup.
/// - **Single flight:** concurrent callers needing a refresh of one tenant share one token
///   request; other tenants are not blocked.
/// - **Across processes:** every refresh runs under the store's lease, and a write-ahead mark
///   is set before a refresh token is spent, so two processes never spend the same rotating
///   refresh token and a crash mid-refresh is noticed.
/// - **Rotation-safe:** new tokens are saved (compare-and-swap under the lease) before anyone
///   sees the new access token; a failed save is an error, never a silent drop.
/// - **Re-authorization:** when Salesforce refuses the grant for good, the record is marked,
///   an [`Event`] is sent, and later calls fail fast without calling Salesforce until a new
///   login replaces the record ([`store_tokens`](Self::store_tokens)).
///
/// ```no_run
/// use std::sync::Arc;
/// use sfauth::{TokenManager, MemoryStore};
/// use sfauth_core::{ConnectedApp, LoginHost, OAuthClient};
///
/// # async fn run(tokens: sfauth_core::TokenSet) -> sfauth::Result<()> {
/// let client = OAuthClient::new(LoginHost::Production, ConnectedApp::new("3MVG9.key"));
/// let manager = TokenManager::builder(client)
///     .store(Arc::new(MemoryStore::new()))
///     .build()
///     .await?;
/// let key = manager.store_tokens(tokens, "default").await?;
/// let token = manager.access_token(&key).await?;
/// println!("calling {}", token.instance_url());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TokenManager {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: OAuthClient,
    pub(crate) transport: Arc<dyn HttpTransport>,
    pub(crate) store: Arc<dyn TokenStore>,
    pub(crate) policy: RefreshPolicy,
    pub(crate) tenants: Map<MapKey, Arc<TenantState>>,
    /// This manager's share of the per-thread shortcut to recently used tenants.
    pub(crate) recent: Recent,
    /// Session lifetimes learned per org.
    pub(crate) lifetimes: Lifetimes,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) counters: Counters,
    /// This manager's name as a lease holder: unique per process and instance.
    pub(crate) holder: String,
    pub(crate) default_renewal: Option<Renewal>,
    pub(crate) renewal_resolver: Option<RenewalResolver>,
    /// Refreshes run as tasks of their own, so that a caller that gives up (a dropped future, a
    /// timeout) never cancels a refresh between Salesforce's answer and the save.
    pub(crate) tasks: TaskTracker,
    /// Set by [`TokenManager::shutdown`]: no new token request is sent.
    pub(crate) closing: AtomicBool,
    /// The leases refreshes of this manager hold right now, released by a shutdown.
    pub(crate) held: std::sync::Mutex<Vec<Lease>>,
}

impl fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenManager")
            .field("host", self.inner.client.host())
            .field("client_id", &self.inner.client.app().client_id())
            .field("holder", &self.inner.holder)
            .field("tenants", &self.inner.tenants.len())
            .finish_non_exhaustive()
    }
}

/// Builds a [`TokenManager`]; see [`TokenManager::builder`].
#[must_use]
pub struct TokenManagerBuilder {
    client: OAuthClient,
    transport: Option<Arc<dyn HttpTransport>>,
    store: Option<Arc<dyn TokenStore>>,
    policy: RefreshPolicy,
    holder: Option<String>,
    default_renewal: Option<Renewal>,
    renewal_resolver: Option<RenewalResolver>,
    event_capacity: usize,
}

impl fmt::Debug for TokenManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenManagerBuilder")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl TokenManagerBuilder {
    /// Sends requests through `transport`. Default: a `ReqwestTransport` inside `Retry`.
    pub fn transport(mut self, transport: Arc<dyn HttpTransport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Keeps records in `store`. Default (feature `sqlite`): the `SqliteStore` at its default
    /// path with the key file beside it.
    pub fn store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Sets the refresh policy.
    pub fn policy(mut self, policy: RefreshPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Names this manager as a lease holder (default: host name, process id and a random part).
    /// Two managers must never share a name.
    pub fn holder(mut self, holder: impl Into<String>) -> Self {
        self.holder = Some(holder.into());
        self
    }

    /// How tenants without a refresh token and without their own [`Renewal`] are renewed.
    pub fn default_renewal(mut self, renewal: Renewal) -> Self {
        self.default_renewal = Some(renewal);
        self
    }

    /// Turns the renewal recorded with a tenant (its flow, username and key reference; see
    /// [`RenewalHint`]) back into a [`Renewal`] with its credentials, after a restart. A tenant
    /// recorded as client credentials needs no resolver.
    ///
    /// ```
    /// use sfauth::{Renewal, TokenManager};
    /// use sfauth::core::{ConnectedApp, LoginHost, OAuthClient, PrivateKey};
    /// use sfauth::core::flows::JwtBearer;
    ///
    /// let client = OAuthClient::new(LoginHost::Production, ConnectedApp::new("3MVG9.key"));
    /// let builder = TokenManager::builder(client).renewal_resolver(|hint| {
    ///     let username = hint.username.clone()?;
    ///     let pem = std::fs::read_to_string(hint.key_ref.as_deref()?).ok()?;
    ///     Some(Renewal::JwtBearer(JwtBearer::new(username, PrivateKey::new(pem))))
    /// });
    /// # drop(builder);
    /// ```
    pub fn renewal_resolver(
        mut self,
        resolver: impl Fn(&RenewalHint) -> Option<Renewal> + Send + Sync + 'static,
    ) -> Self {
        self.renewal_resolver = Some(Arc::new(resolver));
        self
    }

    /// How many events a slow subscriber may fall behind before it misses some (default 1024).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity.max(1);
        self
    }

    /// Builds the manager. Without a store this needs the `sqlite` feature and opens the
    /// default SQLite store (see [`STORE_KEY_ENV`] for its key).
    pub async fn build(self) -> Result<TokenManager> {
        let transport = match self.transport {
            Some(transport) => transport,
            None => {
                let reqwest = sfauth_transport::ReqwestTransport::new()
                    .map_err(|e| Error::Config(format!("cannot build the http client: {e}")))?;
                Arc::new(sfauth_transport::Retry::new(
                    reqwest,
                    sfauth_transport::RetryPolicy::default(),
                ))
            }
        };
        let store = match self.store {
            Some(store) => store,
            None => default_store().await?,
        };
        clock::start();
        let (events, _) = broadcast::channel(self.event_capacity);
        let holder = self.holder.unwrap_or_else(crate::holder::new_holder);
        let lifetimes = Lifetimes::new(
            self.policy.min_learned_lifetime,
            MAX_SESSION,
            self.policy.relearn_after,
        );
        Ok(TokenManager {
            inner: Arc::new(Inner {
                client: self.client,
                transport,
                store,
                policy: self.policy,
                tenants: Map::default(),
                recent: Recent::new(),
                lifetimes,
                events,
                counters: Counters::default(),
                holder,
                default_renewal: self.default_renewal,
                renewal_resolver: self.renewal_resolver,
                tasks: TaskTracker::new(),
                closing: AtomicBool::new(false),
                held: std::sync::Mutex::new(Vec::new()),
            }),
        })
    }
}

/// The variable holding the base64 key that seals the default store; without it, a key file
/// beside the database is used (created on first use, mode 0600).
pub const STORE_KEY_ENV: &str = "SFAUTH_STORE_KEY";

#[cfg(feature = "sqlite")]
async fn default_store() -> Result<Arc<dyn TokenStore>> {
    use sfauth_storage::{Keyring, SqliteStore};
    let config = |e: sfauth_storage::Error| Error::Config(format!("default token store: {e}"));
    let path = SqliteStore::default_path().map_err(config)?;
    let keyring = if std::env::var_os(STORE_KEY_ENV).is_some() {
        Keyring::from_env(STORE_KEY_ENV).map_err(config)?
    } else {
        Keyring::from_key_file(&path.with_file_name("tokens.key")).map_err(config)?
    };
    let store = SqliteStore::open(&path, keyring).await.map_err(config)?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "sqlite"))]
async fn default_store() -> Result<Arc<dyn TokenStore>> {
    Err(Error::Config(
        "no token store given and the sqlite feature is off".into(),
    ))
}

/// Salesforce's longest session timeout: no lifetime is believed beyond it.
pub(crate) const MAX_SESSION: Duration = Duration::from_secs(24 * 3600);

impl TokenManager {
    /// Starts building a manager for the connected app and host of `client`.
    pub fn builder(client: OAuthClient) -> TokenManagerBuilder {
        TokenManagerBuilder {
            client,
            transport: None,
            store: None,
            policy: RefreshPolicy::default(),
            holder: None,
            default_renewal: None,
            renewal_resolver: None,
            event_capacity: 1024,
        }
    }

    /// The OAuth client (host and connected app) this manager refreshes with.
    pub fn client(&self) -> &OAuthClient {
        &self.inner.client
    }

    /// The store records live in.
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.inner.store
    }

    /// The transport requests go through.
    pub fn transport(&self) -> &Arc<dyn HttpTransport> {
        &self.inner.transport
    }

    /// The key under which a login result for this manager's app is stored.
    pub fn key_for(&self, tokens: &TokenSet, label: &str) -> TokenKey {
        TokenKey::new(
            self.inner.client.host(),
            &tokens.identity,
            self.inner.client.app().client_id(),
            label,
        )
    }

    /// A valid access token for `key`.
    ///
    /// From the cache when the token is fresh (no lock, no allocation); otherwise loaded from
    /// the store and refreshed if needed, sharing one token request with every concurrent
    /// caller. While a refresh fails for a transient reason, a token that has not expired yet
    /// keeps being served.
    ///
    /// Fails fast with [`ErrorKind::ReauthorizationRequired`] for a tenant that needs a new
    /// login.
    ///
    /// The cache is checked when this is called, before the future is first polled; a cache
    /// hit gives a future that is ready at once and holds just the token (so awaiting it later
    /// still gives that token, as a guard taken then would). The slow path's much
    /// larger future is boxed and made only on a miss, so that it neither costs every hit a copy
    /// nor grows every caller's own future.
    #[inline]
    pub fn access_token<'a>(
        &'a self,
        key: &'a TokenKey,
    ) -> impl Future<Output = Result<AccessTokenGuard>> + Send + 'a {
        match self.cached_token(key) {
            Some(guard) => Either::Left(std::future::ready(Ok(guard))),
            None => Either::Right(self.boxed_slow_path(key)),
        }
    }

    /// Out of line: the slow path's future is several kilobytes and is built on the stack before
    /// it is boxed, and a caller that builds it inline reserves (and probes) that stack on every
    /// call, hits included.
    #[inline(never)]
    fn boxed_slow_path<'a>(
        &'a self,
        key: &'a TokenKey,
    ) -> Pin<Box<impl Future<Output = Result<AccessTokenGuard>> + Send + 'a>> {
        Box::pin(self.access_token_slow(key))
    }

    /// The cached token for `key` if it is fresh: through this thread's recent tenants, then
    /// the map.
    #[inline]
    fn cached_token(&self, key: &TokenKey) -> Option<AccessTokenGuard> {
        // Read before the map, so that whatever the map gives is remembered no later than it.
        let epoch = self.inner.recent.epoch();
        if let Some(Some(guard)) = recent::with(epoch, key, fresh_guard) {
            return Some(guard);
        }
        let pinned = self.inner.tenants.pin();
        let tenant = pinned.get(&KeyRef(key))?;
        let guard = fresh_guard(tenant)?;
        recent::remember(epoch, tenant);
        Some(guard)
    }

    async fn access_token_slow(&self, key: &TokenKey) -> Result<AccessTokenGuard> {
        let tenant = self.load(key).await?;
        let seen = tenant.current.load_full();
        self.slow_path(&tenant, seen).await?;
        current_guard(&tenant)
    }

    /// A handle on one tenant whose [`Tenant::access_token`] skips the map lookup.
    pub async fn tenant(&self, key: &TokenKey) -> Result<Tenant> {
        let state = self.load(key).await?;
        Ok(Tenant::new(self.clone(), state))
    }

    /// Reports that Salesforce rejected `stale` with 401 `INVALID_SESSION_ID`, and returns a
    /// token to retry with.
    ///
    /// Refreshes only if `stale` is still the current token: when many requests fail at once,
    /// the first report refreshes and the others get its result. The age of the dead token
    /// teaches the manager the org's session lifetime, so later refreshes happen before expiry.
    pub async fn session_expired(
        &self,
        key: &TokenKey,
        stale: &AccessToken,
    ) -> Result<AccessTokenGuard> {
        let tenant = self.load(key).await?;
        self.expired(&tenant, stale).await?;
        current_guard(&tenant)
    }

    /// Refreshes `key` now, whatever the state of its cached token (for example after a
    /// configuration change), and returns the new token.
    pub async fn refresh(&self, key: &TokenKey) -> Result<AccessTokenGuard> {
        let tenant = self.load(key).await?;
        let seen = tenant.current.load_full();
        if let Some(error) = seen.unavailable_error(key) {
            return Err(error);
        }
        self.inner
            .refresh(&tenant, seen.generation, Trigger::Forced)
            .await?;
        current_guard(&tenant)
    }

    /// Stores the result of a login (or an import) under [`key_for`](Self::key_for)`(tokens,
    /// label)`, replacing what was there and clearing any re-authorization mark. Returns the
    /// key.
    pub async fn store_tokens(&self, tokens: TokenSet, label: &str) -> Result<TokenKey> {
        let key = self.key_for(&tokens, label);
        self.store_tokens_as(key.clone(), tokens).await?;
        Ok(key)
    }

    /// Stores `tokens` under an explicit `key`; refused with [`Error::IdentityMismatch`] when the
    /// tokens belong to another org or user than the key names.
    pub async fn store_tokens_as(&self, key: TokenKey, mut tokens: TokenSet) -> Result<()> {
        check_identity(&key, &tokens)?;
        if let Some(timeout) = self.inner.client.session_timeout() {
            tokens.apply_session_timeout(timeout, SystemTime::now());
        }
        let store = &self.inner.store;
        let now = SystemTime::now();
        let record = loop {
            let existing = store
                .get(&key)
                .await
                .map_err(|source| Error::store(&key, source))?;
            // A new login replaces whatever the record held: tokens, status, an in-flight mark.
            let expected = existing.as_ref().map(|record| record.version);
            let mut record =
                existing.unwrap_or_else(|| TokenRecord::new(key.clone(), tokens.clone(), now));
            record.tokens = tokens.clone();
            record.status = RecordStatus::Active;
            record.refresh_in_flight = None;
            record.last_refreshed_at = Some(now);
            match store.save(record.clone(), expected).await {
                Ok(version) => {
                    record.version = version;
                    break record;
                }
                // Somebody else wrote it between the read and the save: read again.
                Err(e) if e.kind() == StoreErrorKind::Conflict => continue,
                Err(e) => return Err(Error::store(&key, e)),
            }
        };
        let tenant = self.inner.install_record(&record);
        *lock(&tenant.unsaved) = None;
        tenant.clear_failures();
        self.inner.emit(&key, EventKind::Stored);
        Ok(())
    }

    /// The whole stored token set of `key` (identity URL, scopes, ID token, signature, refresh
    /// token), read from the store: the in-memory cache keeps only what the hot path needs.
    pub async fn tokens(&self, key: &TokenKey) -> Result<TokenSet> {
        Ok(self.inner.read(key).await?.tokens)
    }

    /// Sets how `key` is renewed when it has no refresh token, and records the flow with the
    /// tenant (flow and username, never a credential; see [`RenewalHint`]) so that a restarted
    /// manager knows it too: client credentials renew by themselves, other flows through
    /// [`TokenManagerBuilder::renewal_resolver`] or [`TokenManagerBuilder::default_renewal`].
    ///
    /// A tenant that was waiting for a renewal (or was marked for a new login only because it
    /// had none) is renewed on its next call.
    pub async fn set_renewal(&self, key: &TokenKey, renewal: Renewal) -> Result<()> {
        self.record_renewal(key, renewal.hint()).await?;
        let tenant = self.load(key).await?;
        *lock(&tenant.renewal) = Some(Box::new(renewal));
        tenant.clear_failures();
        let record = self.inner.read(key).await?;
        if record.tokens.refresh_token.is_none()
            && matches!(tenant.current.load().state, CachedState::Reauth(_))
        {
            self.inner.install(&tenant, &record);
        }
        Ok(())
    }

    /// Writes `hint` into `key`'s record, unless it is already there.
    async fn record_renewal(&self, key: &TokenKey, hint: RenewalHint) -> Result<()> {
        let store = &self.inner.store;
        loop {
            let mut record = self.inner.read(key).await?;
            if record.renewal.as_ref() == Some(&hint) {
                return Ok(());
            }
            let expected = record.version;
            record.renewal = Some(hint.clone());
            match store.put(record, expected, None).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == StoreErrorKind::Conflict => continue,
                Err(e) => return Err(Error::store(key, e)),
            }
        }
    }

    /// Stops this manager's refreshing before the process exits (on SIGINT or SIGTERM, say):
    /// no new token request is sent from now on; refreshes already waiting for Salesforce's
    /// answer get up to `grace` to save what they receive; then every refresh lease this
    /// manager still holds is released, so that the next process does not wait for it to
    /// lapse. Returns how many refreshes were still running when `grace` ran out.
    ///
    /// A refresh cut off this way leaves its write-ahead mark, so the next refresher knows the
    /// refresh token may have been spent. Calls made after a shutdown fail with a transient
    /// error (or are served from the cache).
    pub async fn shutdown(&self, grace: Duration) -> usize {
        self.inner.closing.store(true, Ordering::Release);
        self.inner.tasks.close();
        let _ = tokio::time::timeout(grace, self.inner.tasks.wait()).await;
        let unfinished = self.inner.tasks.len();
        let held = std::mem::take(&mut *lock(&self.inner.held));
        for lease in held {
            if let Err(error) = self.inner.store.release(&lease).await {
                tracing::warn!(key = %lease.key, error = %error, "cannot release a refresh lease at shutdown; it lapses on its own");
            }
        }
        unfinished
    }

    /// Forgets `key` in memory and deletes its record. Returns whether a record was deleted.
    ///
    /// The tenant's secrets leave memory at once: its token, tokens waiting to be saved, and
    /// its renewal credentials; a refresh still in flight does not bring them back. [`Tenant`]
    /// handles taken before then answer [`ErrorKind::UnknownTenant`] for good, even after a new
    /// login under the same key: take a new handle. A future returned by
    /// [`access_token`](Self::access_token) before the removal already holds its token.
    pub async fn remove(&self, key: &TokenKey) -> Result<bool> {
        if let Some(tenant) = self.inner.tenants.pin().remove(&KeyRef(key)) {
            self.inner.recent.removed();
            tenant.forget();
        }
        self.inner
            .store
            .delete(key, None)
            .await
            .map_err(|source| Error::store(key, source))
    }

    /// Loads every record of this manager's app from the store into memory (a warm start), and
    /// returns how many there are. If the listing fails part way, the pages read before the
    /// failure stay loaded (they are the store's records either way) and the error is returned.
    pub async fn load_all(&self) -> Result<usize> {
        let mut query = ListQuery::new()
            .client_id(self.inner.client.app().client_id())
            .limit(1000);
        // The next page is fetched (and decrypted and parsed, which is most of the work) by its
        // own task while this one installs the page before it: on a multi-threaded runtime the
        // two overlap, which is what keeps a warm start of 100,000 tenants under a second.
        let mut page = self.list_page(&query).await?;
        let mut loaded: usize = 0;
        loop {
            let next = page.next.take().map(|cursor| {
                query.after = Some(cursor);
                self.spawn_list_page(query.clone())
            });
            for record in &page.records {
                self.inner.install_record(record);
            }
            loaded = loaded.saturating_add(page.records.len());
            match next {
                Some(next) => page = next.await?,
                None => return Ok(loaded),
            }
        }
    }

    async fn list_page(&self, query: &ListQuery) -> Result<ListPage> {
        self.inner
            .store
            .list(query)
            .await
            .map_err(|source| Error::List { source })
    }

    /// [`list_page`](Self::list_page) in a task of its own when there is a Tokio runtime to
    /// spawn it on, or in the caller's task otherwise.
    fn spawn_list_page(&self, query: ListQuery) -> impl Future<Output = Result<ListPage>> + use<> {
        let manager = self.clone();
        let task = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let manager = manager.clone();
            let query = query.clone();
            runtime.spawn(async move { manager.list_page(&query).await })
        });
        async move {
            match task {
                Some(task) => task.await.map_err(|join| Error::List {
                    source: sfauth_storage::Error::new(
                        StoreErrorKind::Backend,
                        format!("the listing task failed: {join}"),
                    ),
                })?,
                None => manager.list_page(&query).await,
            }
        }
    }

    /// Subscribes to [`Event`]s from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The counters since the manager was built. Also publishes the tenant gauges
    /// (`sfauth_tenants{status}`) through the `metrics` facade.
    pub fn stats(&self) -> Stats {
        let pinned = self.inner.tenants.pin();
        let tenants = pinned.len() as u64;
        let reauth = pinned
            .values()
            .filter(|t| matches!(t.current.load().state, CachedState::Reauth { .. }))
            .count() as u64;
        publish_tenant_gauges(tenants, reauth);
        self.inner.counters.snapshot(tenants, reauth)
    }

    /// The session lifetime believed for `org`, if any (see [`RefreshPolicy::min_learned_lifetime`]).
    pub fn learned_lifetime(&self, org: &OrgId) -> Option<Duration> {
        self.inner
            .lifetimes
            .get(org, clock::precise_ms())
            .map(Duration::from_millis)
    }

    /// The tenant's in-memory state, loaded from the store on first use.
    pub(crate) async fn load(&self, key: &TokenKey) -> Result<Arc<TenantState>> {
        if let Some(tenant) = self.inner.tenants.pin().get(&KeyRef(key)) {
            return Ok(tenant.clone());
        }
        let record = self.inner.read(key).await?;
        let tenant = self.inner.tenant_for(&record);
        Ok(tenant)
    }

    /// Everything but a fresh cached token: refresh (single flight), serve a still-usable token
    /// while refreshes fail, or fail fast for a tenant that needs a login.
    pub(crate) async fn slow_path(
        &self,
        tenant: &Arc<TenantState>,
        seen: Arc<Cached>,
    ) -> Result<()> {
        if let Some(error) = seen.unavailable_error(&tenant.key) {
            return Err(error);
        }
        if seen.is_fresh() {
            return Ok(());
        }
        match self
            .inner
            .refresh(tenant, seen.generation, Trigger::Expiring)
            .await
        {
            Ok(()) => Ok(()),
            Err(error) if serve_stale(&error) && tenant.current.load().is_usable() => {
                Counters::bump(&self.inner.counters.served_stale);
                tracing::warn!(key = %tenant.key, error = %error, "refresh failed; serving the still-valid token");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    pub(crate) async fn expired(
        &self,
        tenant: &Arc<TenantState>,
        stale: &AccessToken,
    ) -> Result<()> {
        let seen = tenant.current.load_full();
        if let Some(error) = seen.unavailable_error(&tenant.key) {
            return Err(error);
        }
        if &seen.access_token != stale {
            // Somebody already replaced the token this caller used.
            self.inner.counters.coalesced();
            return Ok(());
        }
        self.inner.learn_lifetime(&tenant.key, &seen);
        self.inner
            .refresh(tenant, seen.generation, Trigger::SessionExpired)
            .await
    }
}

/// Whether a failed refresh may be papered over with a token that has not expired yet.
fn serve_stale(error: &Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Transient
            | ErrorKind::RateLimited
            | ErrorKind::RefreshInProgress
            | ErrorKind::Storage
    ) && !matches!(error, Error::Unsaved { .. })
}

/// The tenant's current token after a refresh or a wait, or the error for a tenant that was
/// removed or needs a login meanwhile (never an empty token).
fn current_guard(tenant: &TenantState) -> Result<AccessTokenGuard> {
    let guard = tenant.current.load();
    match guard.unavailable_error(&tenant.key) {
        Some(error) => Err(error),
        None => Ok(AccessTokenGuard::new(guard)),
    }
}

/// The tenant's current token, if it can be handed out without a refresh.
#[inline]
fn fresh_guard(tenant: &TenantState) -> Option<AccessTokenGuard> {
    let guard = tenant.current.load();
    guard.is_fresh().then(|| AccessTokenGuard::new(guard))
}

pub(crate) fn check_identity(key: &TokenKey, tokens: &TokenSet) -> Result<()> {
    let identity = &tokens.identity;
    if identity.org_id() != key.org_id() || identity.user_id() != key.user_id() {
        return Err(Error::IdentityMismatch {
            key: Box::new(key.clone()),
            org_id: identity.org_id().to_string(),
            user_id: identity.user_id().to_string(),
        });
    }
    Ok(())
}

/// Locks a std mutex, recovering from poisoning: the data behind these mutexes is always left
/// consistent (plain replacements), so a panic elsewhere must not wedge a tenant.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for Inner {
    /// Threads' tables of recent tenants may outlive the manager: leave them no token.
    fn drop(&mut self) {
        for tenant in self.tenants.pin().values() {
            tenant.forget();
        }
    }
}

impl Inner {
    /// The stored record of `key`; a missing one is [`Error::UnknownTenant`].
    pub(crate) async fn read(&self, key: &TokenKey) -> Result<TokenRecord> {
        self.store
            .get(key)
            .await
            .map_err(|source| Error::store(key, source))?
            .ok_or_else(|| Error::unknown_tenant(key))
    }

    /// The tenant for `record.key`, created (with the record cached) if it is not in memory;
    /// a tenant already in memory keeps its cached token.
    pub(crate) fn tenant_for(&self, record: &TokenRecord) -> Arc<TenantState> {
        self.tenant_entry(record).0
    }

    /// Makes `record` the current token of its tenant, creating the tenant if needed.
    pub(crate) fn install_record(&self, record: &TokenRecord) -> Arc<TenantState> {
        let (tenant, created) = self.tenant_entry(record);
        if !created {
            self.install(&tenant, record);
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
        let cached = self.cached_from(record, 0);
        let fresh = Arc::new(TenantState::new(key.clone(), cached));
        match pinned.try_insert(MapKey(key), fresh.clone()) {
            Ok(_) => (fresh, true),
            Err(occupied) => (occupied.current.clone(), false),
        }
    }

    pub(crate) fn cached_from(&self, record: &TokenRecord, generation: u64) -> Cached {
        let hint = self
            .lifetimes
            .get(record.key.org_id(), clock::precise_ms())
            .or_else(|| self.client.session_timeout().map(duration_ms));
        let mut cached = Cached::from_record(
            record,
            generation,
            hint,
            duration_ms(self.policy.margin),
            duration_ms(self.policy.jitter),
        );
        if matches!(cached.state, CachedState::Reauth(_)) && self.renewable(record) {
            // Marked for a login only because no renewal was known: now one is, so the next
            // call renews instead of failing. The old access token is not served meanwhile.
            cached.state = CachedState::Active;
            cached.refresh_at_ms = 0;
            cached.expires_at_ms = 0;
        }
        cached
    }

    /// Makes `record` the tenant's current token, with a new generation.
    pub(crate) fn install(&self, tenant: &TenantState, record: &TokenRecord) -> Arc<Cached> {
        let generation = tenant.current.load().generation.wrapping_add(1);
        tenant.set_current(Arc::new(self.cached_from(record, generation)))
    }

    /// Marks the tenant as needing a login, in memory.
    pub(crate) fn install_reauth(
        &self,
        tenant: &TenantState,
        record: &TokenRecord,
        reason: &str,
        cause: Option<sfauth_core::Cause>,
    ) {
        let mut cached = self.cached_from(record, tenant.current.load().generation.wrapping_add(1));
        cached.state = CachedState::Reauth(Box::new(crate::tenant::Reauth {
            reason: reason.to_owned(),
            cause,
        }));
        tenant.set_current(Arc::new(cached));
    }

    pub(crate) fn emit(&self, key: &TokenKey, kind: EventKind) {
        // No subscriber is not an error.
        let _ = self.events.send(Event {
            key: key.clone(),
            kind,
        });
    }

    /// Counts the age of a token Salesforce just refused towards the org's session lifetime.
    /// One death is no evidence (see `lifetime.rs`); several at one age are.
    fn learn_lifetime(&self, key: &TokenKey, dead: &Cached) {
        let Some(issued) = dead.issued_at else {
            return;
        };
        let now = clock::precise_ms();
        let age = now.saturating_sub(clock::to_ms(issued));
        if let Some(lifetime) = self.lifetimes.death(key.org_id(), age, now) {
            tracing::info!(key = %key, lifetime_ms = lifetime, "learned session lifetime");
        }
    }

    /// Whether a tenant without a refresh token whose record says it needs a login can be
    /// renewed now after all (its record was marked when no renewal was configured).
    fn renewable(&self, record: &TokenRecord) -> bool {
        record.tokens.refresh_token.is_none() && self.renewal_for(None, record).is_some()
    }

    /// How to renew `record`'s tenant without a refresh token: the tenant's own renewal, the
    /// one its record names (client credentials by itself, others through the resolver), or
    /// the manager's default.
    pub(crate) fn renewal_for(
        &self,
        own: Option<Renewal>,
        record: &TokenRecord,
    ) -> Option<Renewal> {
        own.or_else(|| {
            let hint = record.renewal.as_ref()?;
            self.renewal_resolver
                .as_ref()
                .and_then(|resolve| resolve(hint))
                .or_else(|| Renewal::without_credentials(hint))
        })
        .or_else(|| self.default_renewal.clone())
    }
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
