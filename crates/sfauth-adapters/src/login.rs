//! [`LoginRouter`]: "Connect your Salesforce org" as two axum routes, the web server flow with
//! PKCE for people arriving at a web application.
//!
//! - `GET /login` chooses the login host (`?host=production|sandbox`, `?my_domain=NAME`,
//!   `?site=NAME`), or the tenant to re-authorize (`?reconnect=...`), keeps a pending login
//!   server-side under a random `state`, and redirects the browser to Salesforce with that
//!   `state` and a PKCE S256 challenge.
//! - `GET /callback` takes the pending login of the `state` it carries (once: a replayed
//!   callback finds nothing), exchanges the code with the PKCE verifier, checks the response's
//!   `signature`, stores the tokens through the [`TokenManager`], and asks the application's
//!   [`LoginHook`] where the browser goes next.
//!
//! Everything that goes wrong is an HTML page saying what happened and what to do, with what it
//! quotes escaped, and never a code, a token or a verifier. The `state` is a random 128-bit
//! value (from `sfauth-core`) and names the pending login; what the login needs (the verifier,
//! the host, the tenant to replace, the application's own context) stays on the server.
//!
//! The application's context ([`LoginHook::begin`]) is read from the request that *starts* the
//! login and kept with it, never from the callback's request: a callback URL someone else
//! started and sends to a victim ("login CSRF") completes that someone's own login, for their
//! own context, and touches nothing of the victim's. That is why no cookie binds the callback
//! to the browser.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use sfauth::oauth::PkceVerifier;
use sfauth::oauth::flows::AuthorizeParams;
use sfauth::{ErrorKind, LoginHost, TokenKey, TokenManager, Url};

/// Finds the [`TokenManager`] for a login host other than the main manager's; see
/// [`LoginConfig::host_managers`].
///
/// ```
/// use std::sync::Arc;
/// use sfauth_adapters::HostManagers;
///
/// // No other host is offered.
/// let managers: HostManagers = Arc::new(|_host| None);
/// assert!(managers(&sfauth::LoginHost::Sandbox).is_none());
/// ```
pub type HostManagers = Arc<dyn Fn(&LoginHost) -> Option<TokenManager> + Send + Sync>;

/// How a [`LoginRouter`] runs its logins.
///
/// A login host other than the main manager's is offered only when
/// [`host_managers`](Self::host_managers) gives a manager for it, because a tenant must be
/// refreshed against the host that logged it in (a sandbox's refresh token means nothing to
/// `login.salesforce.com`), and a manager refreshes against one host.
///
/// ```
/// use std::time::Duration;
/// use sfauth_adapters::LoginConfig;
///
/// let config = LoginConfig::new()
///     .scopes(["api", "refresh_token"])
///     .ttl(Duration::from_secs(600))
///     .max_pending(10_000)
///     .site("customers", "https://acme.my.site.com/customers")?;
/// # drop(config);
/// # Ok::<(), sfauth::oauth::Error>(())
/// ```
#[must_use]
pub struct LoginConfig {
    params: AuthorizeParams,
    ttl: Duration,
    max_pending: usize,
    label: String,
    sites: Vec<(String, LoginHost)>,
    host_managers: Option<HostManagers>,
}

impl fmt::Debug for LoginConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginConfig")
            .field("params", &self.params)
            .field("ttl", &self.ttl)
            .field("max_pending", &self.max_pending)
            .field("label", &self.label)
            .field("sites", &self.sites)
            .field("host_managers", &self.host_managers.is_some())
            .finish()
    }
}

impl Default for LoginConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl LoginConfig {
    /// Scopes `api` and `refresh_token`, pending logins kept ten minutes and at most 10,000 of
    /// them, label `default`, no sites, no host besides the main manager's.
    ///
    /// ```
    /// let config = sfauth_adapters::LoginConfig::new();
    /// # drop(config);
    /// ```
    pub fn new() -> Self {
        Self {
            params: AuthorizeParams::scopes(["api", "refresh_token"]),
            ttl: Duration::from_secs(600),
            max_pending: 10_000,
            label: "default".to_owned(),
            sites: Vec::new(),
            host_managers: None,
        }
    }

    /// The scopes to request (keep `refresh_token`, or tenants cannot renew).
    ///
    /// ```
    /// let config = sfauth_adapters::LoginConfig::new().scopes(["api", "refresh_token", "openid"]);
    /// # drop(config);
    /// ```
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.params.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Every authorization parameter at once (scopes, `prompt`, `display`, ...).
    ///
    /// ```
    /// use sfauth::oauth::flows::AuthorizeParams;
    ///
    /// let config = sfauth_adapters::LoginConfig::new().params(AuthorizeParams {
    ///     prompt: Some("consent".into()),
    ///     ..AuthorizeParams::scopes(["api", "refresh_token"])
    /// });
    /// # drop(config);
    /// ```
    pub fn params(mut self, params: AuthorizeParams) -> Self {
        self.params = params;
        self
    }

    /// How long a started login waits for its callback (default ten minutes). A callback after
    /// that is refused with a page asking to start again.
    ///
    /// ```
    /// let config = sfauth_adapters::LoginConfig::new().ttl(std::time::Duration::from_secs(300));
    /// # drop(config);
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How many started logins are kept at once (default 10,000; at least 1). When a new login
    /// would exceed it, expired ones are dropped first, then the **oldest** pending login is
    /// evicted: someone who started a login long ago and has not come back loses it (their
    /// callback gets the "unknown login" page and they start again), rather than every new
    /// visitor being refused while the table is full.
    ///
    /// ```
    /// let config = sfauth_adapters::LoginConfig::new().max_pending(1_000);
    /// # drop(config);
    /// ```
    pub fn max_pending(mut self, max: usize) -> Self {
        self.max_pending = max.max(1);
        self
    }

    /// The label new tenants are stored under (default `default`); a reconnect keeps the
    /// label of the tenant it replaces.
    ///
    /// ```
    /// let config = sfauth_adapters::LoginConfig::new().label("crm");
    /// # drop(config);
    /// ```
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Offers the Experience Cloud site at `url` as `/login?site=NAME`. Only sites named here
    /// can be chosen: a request never names a URL. The site needs a manager too (see
    /// [`host_managers`](Self::host_managers)) unless it is the main manager's host.
    ///
    /// ```
    /// let config = sfauth_adapters::LoginConfig::new()
    ///     .site("partners", "https://acme.my.site.com/partners")?;
    /// # drop(config);
    /// # Ok::<(), sfauth::oauth::Error>(())
    /// ```
    pub fn site(
        mut self,
        name: impl Into<String>,
        url: &str,
    ) -> Result<Self, sfauth::oauth::Error> {
        self.sites.push((name.into(), LoginHost::site(url)?));
        Ok(self)
    }

    /// The manager for each login host other than the main manager's: `None` refuses the host
    /// (the visitor sees "this login host is not offered"). Called on every login for such a
    /// host, so keep the managers (one per host, sharing a store) and hand out clones. Compare
    /// hosts with [`LoginHost::key`]: a reconnect names its host by that string.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use sfauth::{ConnectedApp, LoginHost, MemoryStore, OAuthClient, TokenManager};
    ///
    /// # async fn run(app: ConnectedApp, store: Arc<MemoryStore>) -> sfauth::Result<()> {
    /// let sandbox = TokenManager::builder(OAuthClient::new(LoginHost::Sandbox, app))
    ///     .store(store)
    ///     .build()
    ///     .await?;
    /// let config = sfauth_adapters::LoginConfig::new().host_managers(move |host| {
    ///     (host.key() == LoginHost::Sandbox.key()).then(|| sandbox.clone())
    /// });
    /// # drop(config);
    /// # Ok(())
    /// # }
    /// ```
    pub fn host_managers(
        mut self,
        managers: impl Fn(&LoginHost) -> Option<TokenManager> + Send + Sync + 'static,
    ) -> Self {
        self.host_managers = Some(Arc::new(managers));
        self
    }
}

/// The application's say in a login: who is connecting, which tenant a reconnect means, and
/// where the browser goes once the tenant is stored.
///
/// Only [`complete`](Self::complete) must be written; [`LoginRouter::on_login`] takes a closure
/// for it.
///
/// ```
/// use async_trait::async_trait;
/// use sfauth_adapters::{CompletedLogin, LoginHook, Refusal};
///
/// struct Accounts;
///
/// #[async_trait]
/// impl LoginHook for Accounts {
///     async fn begin(&self, headers: &axum::http::HeaderMap) -> Result<Option<String>, Refusal> {
///         // Your session cookie names the application user who is connecting an org.
///         let user = headers.get("x-app-user").and_then(|v| v.to_str().ok());
///         user.map(|user| Some(user.to_owned()))
///             .ok_or_else(|| Refusal::forbidden("Sign in to the application first."))
///     }
///
///     async fn complete(&self, login: CompletedLogin) -> Result<String, Refusal> {
///         // Remember login.key for login.context (your user), then:
///         Ok(format!("/settings/salesforce?org={}", login.key.org_id()))
///     }
/// }
/// ```
#[async_trait]
pub trait LoginHook: Send + Sync + 'static {
    /// At `/login`, before anything else: the application's own context for this login (its
    /// user or tenant id, read from its session), kept server-side and handed back in
    /// [`CompletedLogin::context`]. Default: none, anyone may start a login.
    async fn begin(&self, headers: &HeaderMap) -> Result<Option<String>, Refusal> {
        let _ = headers;
        Ok(None)
    }

    /// At `/login?reconnect=VALUE`: the tenant to re-authorize. Default: `VALUE` is a
    /// [`TokenKey`] as its `Display` writes it; an application that names tenants its own way
    /// maps its id (checking that `context`, its user, may reconnect it) here.
    async fn reconnect(&self, value: &str, context: Option<&str>) -> Result<TokenKey, Refusal> {
        let _ = context;
        value.parse().map_err(|_| {
            Refusal::new(
                StatusCode::NOT_FOUND,
                "There is no such connection to reconnect.",
            )
        })
    }

    /// After the tenant is stored: map it to the application's user or tenant, and return
    /// where the browser goes next (a path or URL of the application; it is sent as is). A
    /// refusal is shown as a page; the tenant stays stored.
    async fn complete(&self, login: CompletedLogin) -> Result<String, Refusal>;
}

/// A login that worked: the tenant is stored.
///
/// ```
/// use sfauth_adapters::{CompletedLogin, Refusal};
///
/// async fn complete(login: CompletedLogin) -> Result<String, Refusal> {
///     let user = login.context.ok_or_else(|| Refusal::forbidden("Sign in first."))?;
///     // Remember (user, login.key) in the application's database here.
///     Ok(format!("/users/{user}/salesforce?reconnected={}", login.reconnected))
/// }
/// # let _ = complete;
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CompletedLogin {
    /// Where the tenant is stored: hand it to [`TokenManager::access_token`].
    pub key: TokenKey,
    /// The manager that stored it (the main one, or the one for its login host).
    pub manager: TokenManager,
    /// Whether this replaced a tenant through `/login?reconnect=`.
    pub reconnected: bool,
    /// What [`LoginHook::begin`] returned for this login.
    pub context: Option<String>,
}

/// A page instead of a login, with its status and a message for the person at the browser.
///
/// ```
/// use sfauth_adapters::Refusal;
///
/// let refusal = Refusal::forbidden("Only administrators may connect an org.");
/// assert_eq!(refusal.status(), axum::http::StatusCode::FORBIDDEN);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    /// A refusal with `status`; `message` is shown escaped.
    ///
    /// ```
    /// use axum::http::StatusCode;
    ///
    /// let refusal = sfauth_adapters::Refusal::new(StatusCode::CONFLICT, "Already connected.");
    /// assert_eq!(refusal.message(), "Already connected.");
    /// ```
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// A 403 refusal.
    ///
    /// ```
    /// let refusal = sfauth_adapters::Refusal::forbidden("Sign in first.");
    /// # drop(refusal);
    /// ```
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// The status of the page.
    ///
    /// ```
    /// assert_eq!(sfauth_adapters::Refusal::forbidden("no").status().as_u16(), 403);
    /// ```
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message of the page, unescaped.
    ///
    /// ```
    /// assert_eq!(sfauth_adapters::Refusal::forbidden("no").message(), "no");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A [`LoginHook`] made of a closure for [`LoginHook::complete`].
struct OnLogin<F>(F);

#[async_trait]
impl<F, Fut> LoginHook for OnLogin<F>
where
    F: Fn(CompletedLogin) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, Refusal>> + Send + 'static,
{
    async fn complete(&self, login: CompletedLogin) -> Result<String, Refusal> {
        (self.0)(login).await
    }
}

/// "Connect your Salesforce org": `/login` and `/callback` as an axum [`Router`].
///
/// The main manager's connected app must have a redirect URI (`ConnectedApp::with_redirect_uri`)
/// that is this router's `/callback` as the browser reaches it (for example
/// `https://app.example.com/salesforce/callback` for a router nested at `/salesforce`), and
/// the connected app must list it as a callback URL. Managers for other hosts need the same.
///
/// ```no_run
/// use sfauth_adapters::{LoginConfig, LoginRouter};
///
/// # async fn run(manager: sfauth::TokenManager) -> std::io::Result<()> {
/// let logins = LoginRouter::new(manager, LoginConfig::new())
///     .on_login(|login| async move { Ok(format!("/connected?org={}", login.key.org_id())) })
///     .router();
/// let app = axum::Router::new().nest("/salesforce", logins);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// axum::serve(listener, app).await
/// # }
/// ```
#[must_use]
pub struct LoginRouter {
    manager: TokenManager,
    config: LoginConfig,
    hook: Option<Arc<dyn LoginHook>>,
}

impl fmt::Debug for LoginRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRouter")
            .field("manager", &self.manager)
            .field("config", &self.config)
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

impl LoginRouter {
    /// Logins stored through `manager` (and, for other hosts, the managers of
    /// [`LoginConfig::host_managers`]). Without a hook, a login that worked lands on a plain
    /// "connected" page.
    ///
    /// ```no_run
    /// # fn run(manager: sfauth::TokenManager) {
    /// let router = sfauth_adapters::LoginRouter::new(manager, sfauth_adapters::LoginConfig::new());
    /// # drop(router);
    /// # }
    /// ```
    pub fn new(manager: TokenManager, config: LoginConfig) -> Self {
        Self {
            manager,
            config,
            hook: None,
        }
    }

    /// The application's [`LoginHook`].
    ///
    /// ```no_run
    /// # fn run(manager: sfauth::TokenManager, hook: std::sync::Arc<dyn sfauth_adapters::LoginHook>) {
    /// let router = sfauth_adapters::LoginRouter::new(manager, Default::default()).hook(hook);
    /// # drop(router);
    /// # }
    /// ```
    pub fn hook(mut self, hook: Arc<dyn LoginHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// A hook that only decides where the browser goes after a login (see
    /// [`LoginHook::complete`]).
    ///
    /// ```no_run
    /// # fn run(manager: sfauth::TokenManager) {
    /// let router = sfauth_adapters::LoginRouter::new(manager, Default::default())
    ///     .on_login(|login| async move { Ok(format!("/welcome?org={}", login.key.org_id())) });
    /// # drop(router);
    /// # }
    /// ```
    pub fn on_login<F, Fut>(self, complete: F) -> Self
    where
        F: Fn(CompletedLogin) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, Refusal>> + Send + 'static,
    {
        self.hook(Arc::new(OnLogin(complete)))
    }

    /// The routes: `GET /login` and `GET /callback`.
    ///
    /// ```no_run
    /// # fn run(manager: sfauth::TokenManager) {
    /// let app: axum::Router = sfauth_adapters::LoginRouter::new(manager, Default::default()).router();
    /// # drop(app);
    /// # }
    /// ```
    pub fn router(self) -> Router {
        let inner = Arc::new(Inner {
            pending: Mutex::new(Pending::default()),
            manager: self.manager,
            config: self.config,
            hook: self.hook,
        });
        Router::new()
            .route("/login", get(login))
            .route("/callback", get(callback))
            .with_state(inner)
    }
}

struct Inner {
    manager: TokenManager,
    config: LoginConfig,
    hook: Option<Arc<dyn LoginHook>>,
    pending: Mutex<Pending>,
}

/// One started login, until its callback comes (or it expires or is evicted).
struct PendingLogin {
    manager: TokenManager,
    verifier: PkceVerifier,
    reconnect: Option<TokenKey>,
    context: Option<String>,
    expires: Instant,
}

/// The started logins by `state`, and their states in the order they were started (every login
/// has the same time to live, so this is also the order they expire in).
#[derive(Default)]
struct Pending {
    by_state: HashMap<String, PendingLogin>,
    order: VecDeque<String>,
}

impl Pending {
    fn insert(&mut self, state: String, login: PendingLogin, max: usize, now: Instant) {
        // Expired logins first, then (while still full) the oldest: see `max_pending`. States
        // already taken by their callback are skipped over on the way.
        while let Some(oldest) = self.order.front() {
            let expired = self
                .by_state
                .get(oldest)
                .is_none_or(|login| login.expires <= now);
            if !expired && self.by_state.len() < max {
                break;
            }
            if let Some(oldest) = self.order.pop_front() {
                self.by_state.remove(&oldest);
            }
        }
        // Callbacks take logins from the middle; keep the queue from growing past the table.
        if self.order.len() > max.saturating_mul(2) {
            let by_state = &self.by_state;
            self.order.retain(|state| by_state.contains_key(state));
        }
        self.order.push_back(state.clone());
        self.by_state.insert(state, login);
    }

    fn take(&mut self, state: &str) -> Option<PendingLogin> {
        self.by_state.remove(state)
    }
}

impl Inner {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        // The table holds no invariant a panicking holder could break half-way.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The manager for logins on `host` (compared by [`LoginHost::key`]).
    fn manager_for(&self, host: &LoginHost) -> Option<TokenManager> {
        if host.key() == self.manager.client().host().key() {
            return Some(self.manager.clone());
        }
        self.config
            .host_managers
            .as_ref()
            .and_then(|find| find(host))
    }

    /// The manager for a stored tenant's login host.
    fn manager_for_key(&self, key: &TokenKey) -> Option<TokenManager> {
        if key.login_host() == self.manager.client().host().key() {
            return Some(self.manager.clone());
        }
        let host = self
            .config
            .sites
            .iter()
            .map(|(_, site)| site.clone())
            .find(|site| site.key() == key.login_host())
            .or_else(|| key.login_host().parse().ok())?;
        self.manager_for(&host)
            .filter(|manager| manager.client().host().key() == key.login_host())
    }
}

/// The query of a request, decoded; a repeated name keeps its first value.
fn query_map(query: Option<&str>) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        map.entry(name.into_owned())
            .or_insert_with(|| value.into_owned());
    }
    map
}

/// The login host a `/login` query chooses: none of the selectors means the main manager's.
fn chosen_host(
    query: &HashMap<String, String>,
    config: &LoginConfig,
    default: &LoginHost,
) -> Result<LoginHost, Refusal> {
    let selectors = ["host", "my_domain", "site"]
        .iter()
        .filter(|name| query.contains_key(**name))
        .count();
    if selectors > 1 {
        return Err(bad_request("Choose one of host, my_domain and site."));
    }
    if let Some(host) = query.get("host") {
        return match host.as_str() {
            "production" | "login" => Ok(LoginHost::Production),
            "sandbox" | "test" => Ok(LoginHost::Sandbox),
            _ => Err(bad_request(
                "Unknown login host: choose production or sandbox, a My Domain or a site.",
            )),
        };
    }
    if let Some(name) = query.get("my_domain") {
        return my_domain(name);
    }
    if let Some(name) = query.get("site") {
        return config
            .sites
            .iter()
            .find(|(site, _)| site == name)
            .map(|(_, host)| host.clone())
            .ok_or_else(|| bad_request("Unknown site."));
    }
    Ok(default.clone())
}

/// The My Domain login host for a My Domain name: `acme` is `https://acme.my.salesforce.com`
/// and `acme--dev.sandbox` is `https://acme--dev.sandbox.my.salesforce.com`. The name is
/// checked to be one DNS label of letters, digits and hyphens, so the host is always under
/// `my.salesforce.com`: a request can never send the browser anywhere else.
fn my_domain(name: &str) -> Result<LoginHost, Refusal> {
    let name = name.trim().to_ascii_lowercase();
    let (label, sandbox) = match name.strip_suffix(".sandbox") {
        Some(label) => (label, true),
        None => (name.as_str(), false),
    };
    let valid = !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        return Err(bad_request(
            "A My Domain name is letters, digits and hyphens, such as acme or acme--dev.sandbox.",
        ));
    }
    let url = if sandbox {
        format!("https://{label}.sandbox.my.salesforce.com")
    } else {
        format!("https://{label}.my.salesforce.com")
    };
    LoginHost::my_domain(&url).map_err(|_| bad_request("That My Domain name cannot be used."))
}

async fn login(
    State(inner): State<Arc<Inner>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    match start_login(&inner, query.as_deref(), &headers).await {
        Ok(url) => redirect(url.as_str()),
        Err(refusal) => refusal_page("Cannot start the login", &refusal),
    }
}

/// `/login`: the pending login and the authorization URL to send the browser to.
async fn start_login(
    inner: &Inner,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Url, Refusal> {
    let query = query_map(query);
    let context = match &inner.hook {
        Some(hook) => hook.begin(headers).await?,
        None => None,
    };
    let (manager, reconnect) = match query.get("reconnect") {
        Some(value) => {
            let key = match &inner.hook {
                Some(hook) => hook.reconnect(value, context.as_deref()).await?,
                None => LoginHook::reconnect(&NoHook, value, None).await?,
            };
            let manager = inner
                .manager_for_key(&key)
                .ok_or_else(|| bad_request("This connection's login host is not offered here."))?;
            if key.client_id() != manager.client().app().client_id() {
                return Err(Refusal::new(
                    StatusCode::NOT_FOUND,
                    "There is no such connection to reconnect.",
                ));
            }
            match manager.tokens(&key).await {
                Ok(_) => {}
                Err(error) if error.kind() == sfauth::ErrorKind::UnknownTenant => {
                    return Err(Refusal::new(
                        StatusCode::NOT_FOUND,
                        "There is no such connection to reconnect.",
                    ));
                }
                Err(error) => {
                    tracing::warn!(error = %error, "login: cannot read the connection to reconnect");
                    return Err(unavailable());
                }
            }
            (manager, Some(key))
        }
        None => {
            let host = chosen_host(&query, &inner.config, inner.manager.client().host())?;
            let manager = inner
                .manager_for(&host)
                .ok_or_else(|| bad_request("This login host is not offered here."))?;
            (manager, None)
        }
    };
    let request = manager
        .client()
        .authorize_url(&inner.config.params)
        .map_err(|error| {
            tracing::error!(error = %error, "login: cannot build the authorization url");
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The login is not configured correctly (see the server's log).",
            )
        })?;
    let Some(verifier) = request.pkce_verifier else {
        return Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The login is not configured correctly (see the server's log).",
        ));
    };
    let now = Instant::now();
    let pending = PendingLogin {
        manager,
        verifier,
        reconnect,
        context,
        expires: now.checked_add(inner.config.ttl).unwrap_or(now),
    };
    inner
        .pending()
        .insert(request.state, pending, inner.config.max_pending, now);
    Ok(request.url)
}

/// The hook of a router built without one: the defaults, and a plain page after a login.
struct NoHook;

#[async_trait]
impl LoginHook for NoHook {
    async fn complete(&self, _login: CompletedLogin) -> Result<String, Refusal> {
        Err(Refusal::new(StatusCode::OK, "connected"))
    }
}

async fn callback(State(inner): State<Arc<Inner>>, RawQuery(query): RawQuery) -> Response {
    let raw = query.unwrap_or_default();
    let fields = query_map(Some(&raw));
    let Some(state) = fields.get("state") else {
        return match fields.get("error") {
            Some(_) => salesforce_error_page(&fields),
            None => page(
                StatusCode::BAD_REQUEST,
                "Not a login callback",
                "This address only receives Salesforce's answer to a login started here.",
            ),
        };
    };
    let taken = inner.pending().take(state);
    let Some(pending) = taken else {
        return page(
            StatusCode::BAD_REQUEST,
            "Unknown login",
            "This login is unknown or was already completed. Start the login again.",
        );
    };
    if pending.expires <= Instant::now() {
        return page(
            StatusCode::BAD_REQUEST,
            "Login expired",
            "This login took too long to complete. Start the login again.",
        );
    }
    if fields.contains_key("error") {
        return salesforce_error_page(&fields);
    }
    let manager = &pending.manager;
    // The callback URL as core reads it: the app's redirect URI with this request's query.
    let Some(mut url) = manager.client().app().redirect_uri().cloned() else {
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Login not configured",
            "The connected app has no redirect URI (see the server's log).",
        );
    };
    url.set_query(Some(&raw));
    let code = match manager.client().parse_callback(&url, state) {
        Ok(code) => code,
        Err(error) => {
            return login_error_page(&sfauth::Error::Login {
                source: Box::new(error),
            });
        }
    };
    let stored = match &pending.reconnect {
        Some(key) => manager
            .relogin_with_code(key, &code, &pending.verifier)
            .await
            .map(|()| key.clone()),
        None => {
            manager
                .login_with_code(&code, &pending.verifier, &inner.config.label)
                .await
        }
    };
    let key = match stored {
        Ok(key) => key,
        Err(error) => return login_error_page(&error),
    };
    tracing::info!(tenant = %key.short(), reconnected = pending.reconnect.is_some(), "login stored");
    let completed = CompletedLogin {
        key,
        manager: manager.clone(),
        reconnected: pending.reconnect.is_some(),
        context: pending.context,
    };
    let next = match &inner.hook {
        Some(hook) => hook.complete(completed).await,
        None => NoHook.complete(completed).await,
    };
    match next {
        Ok(location) => redirect(&location),
        Err(refusal) if refusal.status.is_success() => page(
            refusal.status,
            "Connected",
            "Your Salesforce org is connected. You can close this tab.",
        ),
        Err(refusal) => refusal_page("Connected, but", &refusal),
    }
}

/// The page for Salesforce's own error redirect (`error`, `error_description`): what it means.
fn salesforce_error_page(fields: &HashMap<String, String>) -> Response {
    let error = fields.get("error").map(String::as_str).unwrap_or_default();
    // Scrubbed and clipped by core, as every Salesforce error this crate shows.
    let server = sfauth::oauth::error::ServerError::new(
        0,
        error,
        fields.get("error_description").map(String::as_str),
    );
    login_error_page(&sfauth::Error::Login {
        source: Box::new(sfauth::oauth::Error::Server(Box::new(server))),
    })
}

/// The page for a login that failed, by what the person can do about it.
fn login_error_page(error: &sfauth::Error) -> Response {
    let said = error
        .salesforce_says()
        .map(|said| format!(" Salesforce said: “{said}”."))
        .unwrap_or_default();
    let (status, title, message) = match error.kind() {
        _ if matches!(error, sfauth::Error::IdentityMismatch { .. }) => (
            StatusCode::CONFLICT,
            "Another user",
            "You logged in as another user or org than the connection being reconnected; nothing was changed. Log in as that connection's user.".to_owned(),
        ),
        ErrorKind::LoginDeclined => (
            StatusCode::FORBIDDEN,
            "Access not granted",
            format!("The connection was not allowed, so nothing was connected.{said} To connect, start the login again and choose Allow."),
        ),
        ErrorKind::InvalidCallback => (
            StatusCode::BAD_REQUEST,
            "Login answer not recognised",
            "This answer does not belong to a login started here. Start the login again.".to_owned(),
        ),
        ErrorKind::LoginRejected => (
            StatusCode::BAD_REQUEST,
            "Salesforce refused the login",
            format!("The login could not be completed.{said} Start the login again; if it keeps failing, ask an administrator to check the connected app."),
        ),
        // Salesforce's own trouble; a store that failed the same way gets the generic page.
        ErrorKind::Transient | ErrorKind::RateLimited
            if matches!(error, sfauth::Error::Login { .. }) =>
        {
            (
            StatusCode::SERVICE_UNAVAILABLE,
            "Salesforce is unavailable",
            "Salesforce could not be reached to complete the login. Try again in a few minutes.".to_owned(),
            )
        }
        _ => {
            tracing::error!(error = %error, "login failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Login failed",
                "The login could not be completed (see the server's log). Try again later.".to_owned(),
            )
        }
    };
    if status.is_client_error() {
        tracing::info!(error = %error, "login refused");
    }
    page(status, title, &message)
}

fn bad_request(message: &str) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, message)
}

fn unavailable() -> Refusal {
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "The connection cannot be read right now. Try again in a few minutes.",
    )
}

fn refusal_page(title: &str, refusal: &Refusal) -> Response {
    page(refusal.status, title, &refusal.message)
}

/// A 303 to `location`, which a browser follows with a `GET`.
fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(location) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, location),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                (
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("no-referrer"),
                ),
            ],
        )
            .into_response(),
        Err(_) => page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Login failed",
            "The address to continue to is not valid (see the server's log).",
        ),
    }
}

/// An HTML page; `title` and `message` are escaped here.
fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let (title, message) = (escape(title), escape(message));
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto}}</style>\
         </head><body><h1>{title}</h1><p>{message}</p></body></html>"
    );
    (
        status,
        [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        Html(html),
    )
        .into_response()
}

/// `text` with the five HTML-special characters escaped.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            _ => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn my_domain_names_stay_under_my_salesforce_com() {
        let ok = |name: &str| my_domain(name).map(|host| host.key()).ok();
        assert_eq!(
            ok("acme").as_deref(),
            Some("https://acme.my.salesforce.com")
        );
        assert_eq!(
            ok("Acme--Dev.sandbox").as_deref(),
            Some("https://acme--dev.sandbox.my.salesforce.com")
        );
        for bad in [
            "",
            "evil.com/",
            "evil.com#",
            "a.b",
            "-acme",
            "acme-",
            "acme@evil.com",
            "acme:443",
            "ac me",
            ".sandbox",
            &"a".repeat(64),
        ] {
            assert!(ok(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn pages_escape_what_they_quote() {
        assert_eq!(escape("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
    }
}
