//! [`TokenManager`]: the public calls. Each is a few lines over the [`Engine`] (the tenants in
//! memory, the hot and slow paths) and the [`Refresher`] (the refresh protocol); this file
//! holds the API, its documentation and the builder.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sfauth_core::http::HttpTransport;
use sfauth_core::{AccessToken, OAuthClient, OrgId, TokenKey, TokenSet};
use sfauth_storage::{
    ErrorKind as StoreErrorKind, HeaderPage, ListQuery, RecordHeader, RecordStatus, RenewalHint,
    TokenRecord, TokenStore, TokenStoreExt as _,
};
use tokio::sync::broadcast;

use crate::engine::{Due, Engine, current_guard};
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::guard::{AccessTokenGuard, TokenFuture};
use crate::policy::RefreshPolicy;
use crate::refresh::{Parts, Refresher, Trigger, check_identity};
use crate::renewal::{Renewal, RenewalResolver};
use crate::state::TenantState;
use crate::stats::Stats;
use crate::tenant::Tenant;

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
/// use sfauth::{ConnectedApp, LoginHost, OAuthClient};
///
/// # async fn run(tokens: sfauth::TokenSet) -> sfauth::Result<()> {
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
    engine: Arc<Engine>,
}

impl fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenManager")
            .field("host", self.refresher().client().host())
            .field("client_id", &self.refresher().client().app().client_id())
            .field("holder", &self.refresher().holder())
            .field("tenants", &self.engine.len())
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

    /// Keeps records in `store` (required: see [`default_sqlite_store`](crate::default_sqlite_store)
    /// for the usual choice on one machine).
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
    /// use sfauth::{ConnectedApp, JwtBearer, LoginHost, OAuthClient, PrivateKey};
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

    /// Builds the manager. A store is required: a library does no I/O its caller did not ask
    /// for (see [`default_sqlite_store`](crate::default_sqlite_store)).
    pub async fn build(self) -> Result<TokenManager> {
        let Some(store) = self.store else {
            return Err(Error::Config(
                "no token store: give one with TokenManagerBuilder::store (for example sfauth::default_sqlite_store().await?)".into(),
            ));
        };
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
        crate::clock::start();
        let (events, _) = broadcast::channel(self.event_capacity);
        let refresher = Refresher::new(Parts {
            client: self.client,
            transport,
            store,
            policy: self.policy,
            holder: self.holder.unwrap_or_else(crate::holder::new_holder),
            events,
            default_renewal: self.default_renewal,
            renewal_resolver: self.renewal_resolver,
        });
        Ok(TokenManager {
            engine: Arc::new(Engine::new(refresher)),
        })
    }
}

/// The variable holding the base64 key that seals [`default_sqlite_store`]; without it, a key
/// file beside the database is used (created on first use, mode 0600).
pub const STORE_KEY_ENV: &str = "SFAUTH_STORE_KEY";

/// The usual store on one machine: the `SqliteStore` at its default path (under the user's data
/// directory), sealed with the key from [`STORE_KEY_ENV`] or else a key file beside it, which
/// is created (mode 0600) on first use. Opening it creates the database file too: call it only
/// where that is wanted.
///
/// ```no_run
/// # async fn run(client: sfauth::OAuthClient) -> sfauth::Result<()> {
/// let manager = sfauth::TokenManager::builder(client)
///     .store(sfauth::default_sqlite_store().await?)
///     .build()
///     .await?;
/// # drop(manager);
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "sqlite")]
pub async fn default_sqlite_store() -> Result<Arc<dyn TokenStore>> {
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
        self.refresher().client()
    }

    /// The store records live in.
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        self.refresher().store()
    }

    /// The transport requests go through.
    pub fn transport(&self) -> &Arc<dyn HttpTransport> {
        self.refresher().transport()
    }

    /// The key under which a login result for this manager's app is stored.
    pub fn key_for(&self, tokens: &TokenSet, label: &str) -> TokenKey {
        TokenKey::new(
            self.client().host(),
            &tokens.identity,
            self.client().app().client_id(),
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
    /// Fails fast with [`ErrorKind::ReauthorizationRequired`](crate::ErrorKind::ReauthorizationRequired) for a tenant that needs a new
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
    ) -> impl Future<Output = Result<AccessTokenGuard<'static>>> + Send + 'a {
        match self.engine.cached_token(key) {
            Some(guard) => TokenFuture::Ready(Some(guard)),
            None => TokenFuture::Slow(self.boxed_slow_path(key)),
        }
    }

    /// Out of line: the slow path's future is several kilobytes and is built on the stack before
    /// it is boxed, and a caller that builds it inline reserves (and probes) that stack on every
    /// call, hits included.
    #[inline(never)]
    fn boxed_slow_path<'a>(
        &'a self,
        key: &'a TokenKey,
    ) -> Pin<Box<impl Future<Output = Result<AccessTokenGuard<'static>>> + Send + 'a>> {
        Box::pin(self.engine.access_token(key))
    }

    /// A handle on one tenant whose [`Tenant::access_token`] skips the map lookup.
    pub async fn tenant(&self, key: &TokenKey) -> Result<Tenant> {
        let state = self.engine.load(key).await?;
        Ok(Tenant::new(self.engine.clone(), state))
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
    ) -> Result<AccessTokenGuard<'static>> {
        let tenant = self.engine.load(key).await?;
        self.engine.session_expired(&tenant, stale).await?;
        current_guard(&tenant)
    }

    /// Refreshes `key` now, whatever the state of its cached token (for example after a
    /// configuration change), and returns the new token.
    pub async fn refresh(&self, key: &TokenKey) -> Result<AccessTokenGuard<'static>> {
        let tenant = self.engine.load(key).await?;
        self.engine.refresh(&tenant, Trigger::Forced).await?;
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
        if let Some(timeout) = self.client().session_timeout() {
            tokens.apply_session_timeout(timeout, SystemTime::now());
        }
        let store = self.store();
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
        let tenant = self.engine.install_record(&record);
        tenant.take_unsaved();
        tenant.clear_failures();
        self.refresher().emit(&key, EventKind::Stored);
        Ok(())
    }

    /// The whole stored token set of `key` (identity URL, scopes, ID token, signature, refresh
    /// token), read from the store: the in-memory cache keeps only what the hot path needs.
    pub async fn tokens(&self, key: &TokenKey) -> Result<TokenSet> {
        Ok(self.refresher().read(key).await?.tokens)
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
        let tenant = self.engine.load(key).await?;
        tenant.set_renewal(renewal);
        tenant.clear_failures();
        let record = self.refresher().read(key).await?;
        if record.tokens.refresh_token.is_none() && !tenant.current.load().is_active() {
            self.refresher().install(&tenant, &record);
        }
        Ok(())
    }

    /// Writes `hint` into `key`'s record, unless it is already there.
    async fn record_renewal(&self, key: &TokenKey, hint: RenewalHint) -> Result<()> {
        let store = self.store();
        loop {
            let mut record = self.refresher().read(key).await?;
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
        self.refresher().shutdown(grace).await
    }

    /// Forgets `key` in memory and deletes its record. Returns whether a record was deleted.
    ///
    /// The tenant's secrets leave memory at once: its token, tokens waiting to be saved, and
    /// its renewal credentials; a refresh still in flight does not bring them back. [`Tenant`]
    /// handles taken before then answer [`ErrorKind::UnknownTenant`](crate::ErrorKind::UnknownTenant) for good, even after a new
    /// login under the same key: take a new handle. A future returned by
    /// [`access_token`](Self::access_token) before the removal already holds its token.
    pub async fn remove(&self, key: &TokenKey) -> Result<bool> {
        self.engine.forget(key);
        self.store()
            .delete(key, None)
            .await
            .map_err(|source| Error::store(key, source))
    }

    /// Loads every record of this manager's app from the store into memory (a warm start), and
    /// returns how many there are. If the listing fails part way, the pages read before the
    /// failure stay loaded (they are the store's records either way) and the error is returned.
    ///
    /// Tenants are listed by their records' clear headers where the store keeps them
    /// ([`TokenStore::list_headers`]): the manager then knows when each falls due without
    /// decrypting anything, and reads and opens a record on the tenant's first use (its first
    /// call, or the background refresher finding it due). A store without clear headers opens
    /// every record here, as before.
    pub async fn load_all(&self) -> Result<usize> {
        let mut query = ListQuery::new()
            .client_id(self.client().app().client_id())
            .limit(1000);
        // The next page is fetched by its own task while this one installs the page before
        // it: on a multi-threaded runtime the two overlap.
        let mut page = self.list_page(&query).await?;
        let mut loaded: usize = 0;
        loop {
            let next = page.next.take().map(|cursor| {
                query.after = Some(cursor);
                self.spawn_list_page(query.clone())
            });
            loaded = loaded.saturating_add(page.headers.len());
            for mut header in page.headers {
                if let Some(record) = header.record.take() {
                    self.engine.install_record(&record);
                    continue;
                }
                if let Some(key) = self.engine.install_header(header) {
                    // In memory at an older version: the newer record, opened.
                    let record = self.refresher().read(&key).await?;
                    self.engine.install_record(&record);
                }
            }
            match next {
                Some(next) => page = next.await?,
                None => return Ok(loaded),
            }
        }
    }

    async fn list_page(&self, query: &ListQuery) -> Result<HeaderPage> {
        self.store()
            .list_headers(query)
            .await
            .map_err(|source| Error::List {
                source: Box::new(source),
            })
    }

    /// [`list_page`](Self::list_page) in a task of its own when there is a Tokio runtime to
    /// spawn it on, or in the caller's task otherwise.
    fn spawn_list_page(
        &self,
        query: ListQuery,
    ) -> impl Future<Output = Result<HeaderPage>> + use<> {
        let manager = self.clone();
        let task = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let manager = manager.clone();
            let query = query.clone();
            runtime.spawn(async move { manager.list_page(&query).await })
        });
        async move {
            match task {
                Some(task) => task.await.map_err(|join| Error::List {
                    source: Box::new(sfauth_storage::Error::new(
                        StoreErrorKind::Backend,
                        format!("the listing task failed: {join}"),
                    )),
                })?,
                None => manager.list_page(&query).await,
            }
        }
    }

    /// Subscribes to [`Event`]s from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.refresher().subscribe()
    }

    /// The counters since the manager was built. Also publishes the tenant gauges
    /// (`sfauth_tenants{status}`) through the `metrics` facade.
    pub fn stats(&self) -> Stats {
        let (tenants, reauth) = self.engine.census();
        let mut stats = self.refresher().counters().snapshot(tenants, reauth);
        stats.client_secret_in_use = self.client().secret_in_use();
        stats.client_secret_switches = self.client().secret_switches();
        stats
    }

    /// How long `key`'s refresh token has gone unused, against the policy's
    /// [`idle_limit`](RefreshPolicy::idle_limit): "idle 27 days, refresh before 30". `None` when
    /// the tenant has no refresh token (it is renewed by its own flow and does not idle out).
    /// Reads the store when the tenant is not in memory.
    ///
    /// ```no_run
    /// # async fn run(manager: sfauth::TokenManager, key: sfauth::TokenKey) -> sfauth::Result<()> {
    /// if let Some(idle) = manager.idle(&key).await? {
    ///     println!("{key}: {idle}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn idle(&self, key: &TokenKey) -> Result<Option<crate::Idle>> {
        let record = self.refresher().read(key).await?;
        Ok(crate::Idle::of_record(
            &record,
            std::time::SystemTime::now(),
            self.refresher().policy().idle_limit,
        ))
    }

    /// The session lifetime believed for `org`, if any (see [`RefreshPolicy::min_learned_lifetime`]).
    pub fn learned_lifetime(&self, org: &OrgId) -> Option<Duration> {
        self.engine.lifetime_ms(org).map(Duration::from_millis)
    }

    fn refresher(&self) -> &Refresher {
        self.engine.refresher()
    }

    /// Tenants whose refresh (or, after `keep_alive_after_ms` idle, keep-alive) falls due
    /// before `horizon_ms`, for the background refresher.
    pub(crate) fn due(&self, horizon_ms: u64, keep_alive_after_ms: Option<u64>) -> Vec<Due> {
        self.engine.due(horizon_ms, keep_alive_after_ms)
    }

    /// The store's change feed (see `TokenStore::changes`), for the background refresher.
    pub(crate) fn store_changes(&self) -> Option<sfauth_storage::Changes> {
        self.refresher().store().changes()
    }

    /// Takes a header from the store's change feed for a tenant falling due before
    /// `horizon_ms`, sparing the background refresher's attempt at it a read.
    pub(crate) fn adopt_notified(&self, header: &RecordHeader, horizon_ms: u64) -> bool {
        self.engine.adopt_notified(header, horizon_ms)
    }

    /// Refreshes `tenant` if it is still at `generation`, for the background refresher: it
    /// adopts what another process stored and never waits on another refresher.
    pub(crate) async fn refresh_due(
        &self,
        tenant: &Arc<TenantState>,
        generation: u64,
    ) -> Result<()> {
        self.engine.refresh_background(tenant, generation).await
    }
}
