//! The builder and the running [`Emulator`] handle with its admin operations.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::context::{BodyLimits, Shared};
use crate::crypto::SigningKeys;
use crate::faults::Fault;
use crate::model::{
    AppConfig, AppPolicy, EmulatorConfig, OrgConfig, Settings, UserConfig, UserStatus,
};
use crate::state::{Counters, DeviceStatus, RefreshTokenStatus, State};
use crate::{Error, Result};

/// Credentials of the seeded (or first configured) org, user and connected app.
#[derive(Clone)]
#[non_exhaustive]
pub struct Credentials {
    /// The emulator's base URL: the login host, token endpoint host and default instance URL.
    pub login_url: String,
    /// The org's `instance_url`.
    pub instance_url: String,
    /// 18-character org id.
    pub org_id: String,
    /// 18-character user id.
    pub user_id: String,
    /// Username.
    pub username: String,
    /// Password, without the security token.
    pub password: String,
    /// Security token (append it to the password for the username-password flow).
    pub security_token: String,
    /// Consumer key.
    pub client_id: String,
    /// Consumer secret.
    pub client_secret: String,
    /// First registered callback URL.
    pub callback_url: String,
}

impl Credentials {
    /// The `password` parameter of the username-password flow: password + security token.
    pub fn password_with_token(&self) -> String {
        format!("{}{}", self.password, self.security_token)
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("login_url", &self.login_url)
            .field("org_id", &self.org_id)
            .field("user_id", &self.user_id)
            .field("username", &self.username)
            .field("client_id", &self.client_id)
            .field("callback_url", &self.callback_url)
            .finish_non_exhaustive()
    }
}

/// Configures and starts an [`Emulator`].
#[derive(Debug)]
#[must_use]
pub struct EmulatorBuilder {
    config: EmulatorConfig,
    addr: SocketAddr,
    clock: Clock,
    signing_key_pem: Option<String>,
    header_read_timeout: Duration,
    body: BodyLimits,
}

/// Default of [`EmulatorBuilder::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of [`EmulatorBuilder::body_read_timeout`].
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of [`EmulatorBuilder::max_body_bytes`]: 1 MiB, far above any token request (a token
/// exchange's `subject_token` may be 10,000 characters) and what the emulator always read.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

impl Default for EmulatorBuilder {
    fn default() -> Self {
        Self {
            config: EmulatorConfig::default(),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            clock: Clock::system(),
            signing_key_pem: None,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body: BodyLimits {
                max_bytes: DEFAULT_MAX_BODY_BYTES,
                read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            },
        }
    }
}

impl EmulatorBuilder {
    /// Uses a whole configuration (as read from TOML). Orgs left empty are seeded.
    pub fn config(mut self, config: EmulatorConfig) -> Self {
        self.config = config;
        self
    }

    /// Listens on this port of 127.0.0.1 (0, the default, picks a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.addr.set_port(port);
        self
    }

    /// Listens on this address.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Uses this clock (for example [`Clock::manual_now`] to control time in tests).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Seeds the random generator behind ids, tokens and fault probabilities.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// Approves authorization requests at once, without the login form.
    pub fn auto_approve(mut self, on: bool) -> Self {
        self.config.settings.auto_approve = on;
        self
    }

    /// Serves the `/__emulator/...` admin API.
    pub fn admin_api(mut self, on: bool) -> Self {
        self.config.settings.admin_api = on;
        self
    }

    /// Changes emulator-wide settings.
    pub fn settings(mut self, f: impl FnOnce(&mut Settings)) -> Self {
        f(&mut self.config.settings);
        self
    }

    /// Changes the policy of every seeded or configured app.
    pub fn app_policy(mut self, f: impl Fn(&mut AppPolicy)) -> Self {
        if self.config.orgs.is_empty() {
            self.config.orgs = EmulatorConfig::seeded().orgs;
        }
        for app in self.config.orgs.iter_mut().flat_map(|o| o.apps.iter_mut()) {
            f(&mut app.policy);
        }
        self
    }

    /// Changes the configuration of every seeded or configured org (its users and apps
    /// included, so this also reaches an app's [`AppConfig::kind`] or
    /// [`AppConfig::installed`]).
    ///
    /// ```no_run
    /// # async fn demo() -> sfauth_emulator::Result<()> {
    /// use sfauth_emulator::{AppKind, Emulator};
    ///
    /// let emulator = Emulator::builder()
    ///     .orgs(|org| {
    ///         org.login_rate_limit_per_hour = Some(3600);
    ///         for app in &mut org.apps {
    ///             app.kind = AppKind::ExternalClientApp;
    ///         }
    ///     })
    ///     .start()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn orgs(mut self, f: impl Fn(&mut OrgConfig)) -> Self {
        if self.config.orgs.is_empty() {
            self.config.orgs = EmulatorConfig::seeded().orgs;
        }
        for org in &mut self.config.orgs {
            f(org);
        }
        self
    }

    /// Signs id tokens with this PEM RSA private key instead of the built-in test key.
    pub fn signing_key_pem(mut self, pem: impl Into<String>) -> Self {
        self.signing_key_pem = Some(pem.into());
        self
    }

    /// How long a connection may take to send a request head, counted from when it is ready for
    /// one: a new connection that sends nothing and an idle keep-alive connection are both
    /// closed after this long (default [`DEFAULT_HEADER_READ_TIMEOUT`]). Zero is taken as one
    /// millisecond.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long a request body may take to arrive whole once its head is in; a slower one is
    /// answered 408 and its connection closed (default [`DEFAULT_BODY_READ_TIMEOUT`]).
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body.read_timeout = timeout;
        self
    }

    /// The largest request body read; a larger one is answered 413 (default
    /// [`DEFAULT_MAX_BODY_BYTES`]).
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.body.max_bytes = bytes;
        self
    }

    /// Binds the socket, builds the state and starts serving.
    pub async fn start(self) -> Result<Emulator> {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .map_err(|source| Error::Bind {
                addr: self.addr.to_string(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| Error::Bind {
            addr: self.addr.to_string(),
            source,
        })?;
        let host = if local.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            local.ip().to_string()
        };
        let host = if local.is_ipv6() && !local.ip().is_unspecified() {
            format!("[{host}]")
        } else {
            host
        };
        let base_url = format!("http://{host}:{}", local.port());
        let keys = match &self.signing_key_pem {
            Some(pem) => SigningKeys::from_pem(pem),
            None => SigningKeys::default_key(),
        }
        .map_err(Error::InvalidConfig)?;
        let state = State::new(&self.config, base_url.clone())?;
        // Read once: the router is built from it, so changing it later could not take effect.
        let site_prefix = state.settings.site_prefix.trim_matches('/').to_owned();
        let credentials = first_credentials(&state);
        let (tx, rx) = watch::channel(false);
        let shared = Arc::new(Shared::new(
            state,
            self.clock,
            keys,
            base_url,
            site_prefix,
            rx.clone(),
            self.body,
        ));
        let router = crate::routes::router(&shared);
        let task = tokio::spawn(crate::listen::serve(
            listener,
            router,
            rx,
            self.header_read_timeout,
        ));
        tracing::info!(base_url = %shared.base_url, "salesforce emulator listening");
        Ok(Emulator {
            shared,
            shutdown: tx,
            task: Some(task),
            credentials,
        })
    }
}

fn first_credentials(state: &State) -> Credentials {
    let org = state.orgs.first();
    let user = state.users.first();
    let app = state.apps.first();
    let org_id = org.map(|o| o.id.clone()).unwrap_or_default();
    Credentials {
        login_url: state.base_url.clone(),
        instance_url: state.instance_url(&org_id),
        org_id,
        user_id: user.map(|u| u.id.clone()).unwrap_or_default(),
        username: user.map(|u| u.config.username.clone()).unwrap_or_default(),
        password: user.map(|u| u.config.password.clone()).unwrap_or_default(),
        security_token: user
            .map(|u| u.config.security_token.clone())
            .unwrap_or_default(),
        client_id: app.map(|a| a.config.client_id.clone()).unwrap_or_default(),
        client_secret: app
            .map(|a| a.config.client_secret.clone())
            .unwrap_or_default(),
        callback_url: app
            .and_then(|a| a.config.callback_urls.first().cloned())
            .unwrap_or_default(),
    }
}

/// A running emulator. Dropping it stops the server too; [`Emulator::shutdown`] also waits.
#[derive(Debug)]
pub struct Emulator {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    credentials: Credentials,
}

impl Emulator {
    /// A builder with the seeded org, user and app, on a free port of 127.0.0.1.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }

    /// `http://127.0.0.1:PORT`, the login host and default instance URL.
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    /// The URL of the Experience Cloud-style site (`{base_url}/{site_prefix}`).
    pub fn site_url(&self) -> String {
        self.shared.site_url()
    }

    /// `{base_url}/services/oauth2/token`.
    pub fn token_url(&self) -> String {
        format!("{}/services/oauth2/token", self.shared.base_url)
    }

    /// Credentials of the seeded (or first configured) org, user and app.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The emulator's clock.
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// Moves the virtual clock forward.
    pub fn advance(&self, by: Duration) {
        self.shared.clock.advance(by);
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.shared.lock().counters.clone()
    }

    /// How many refresh requests currently hold the per-refresh-token lock (tests use this to
    /// send a second request while the first is in flight).
    pub fn refreshes_in_flight(&self) -> usize {
        self.shared.lock().in_flight.len()
    }

    /// Where `refresh_token` stands (active, rotated out, revoked, expired, inactive or
    /// unknown), read without spending it: no counter moves and no idle timer is reset. A
    /// refresh with it would be accepted now exactly when the answer is
    /// [`RefreshTokenStatus::Active`].
    ///
    /// ```no_run
    /// # async fn demo(emulator: &sfauth_emulator::Emulator, stored_refresh_token: &str) {
    /// emulator.wait_idle().await; // let a request whose client was killed finish first
    /// assert!(emulator.refresh_token_status(stored_refresh_token).is_accepted());
    /// # }
    /// ```
    pub fn refresh_token_status(&self, refresh_token: &str) -> RefreshTokenStatus {
        let now = self.shared.clock.now_ms();
        self.shared.lock().refresh_status(refresh_token, now)
    }

    /// How many requests are being processed now, including those whose client has gone away
    /// (the emulator finishes every request it received, as Salesforce does). Admin API
    /// requests are not counted.
    pub fn requests_in_progress(&self) -> usize {
        self.shared.in_progress()
    }

    /// Resolves once no request is being processed: every request received so far (admin API
    /// requests aside), answered or abandoned by its client, has committed its effects and been
    /// counted. A request stuck in
    /// an injected [`FaultKind::Hang`](crate::FaultKind::Hang) keeps this pending until shutdown.
    pub async fn wait_idle(&self) {
        self.shared.idle().await;
    }

    /// Sets every counter back to zero.
    pub fn reset_counters(&self) {
        self.shared.lock().counters = Counters::default();
    }

    /// Adds a fault rule; rules are tried in the order added.
    pub fn inject_fault(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Makes every access token issued so far expire now (refresh tokens are untouched).
    pub fn expire_access_tokens(&self) {
        let now = self.shared.clock.now_ms();
        self.shared.lock().expire_access_tokens(now);
    }

    /// Revokes every token of a connected app. Returns how many approvals (refresh-token
    /// families, with their access tokens) and stand-alone access tokens died.
    pub fn revoke_app_tokens(&self, client_id: &str) -> usize {
        self.shared.lock().revoke_where(|c, _| c == client_id)
    }

    /// Revokes every token of a user, across apps.
    pub fn revoke_user_tokens(&self, username: &str) -> Result<usize> {
        let mut st = self.shared.lock();
        let user_id = st
            .user_by_name(username)
            .map(|u| u.id.clone())
            .ok_or_else(|| Error::not_found("user", username))?;
        Ok(st.revoke_where(|_, u| u == user_id))
    }

    /// "Revoke" for one user of one app (the connected-app usage page's action).
    pub fn revoke_for_user(&self, client_id: &str, username: &str) -> Result<usize> {
        let mut st = self.shared.lock();
        let user_id = st
            .user_by_name(username)
            .map(|u| u.id.clone())
            .ok_or_else(|| Error::not_found("user", username))?;
        Ok(st.revoke_where(|c, u| c == client_id && u == user_id))
    }

    /// "Block" an app: revokes its tokens, and it issues none until unblocked.
    pub fn block_app(&self, client_id: &str) -> Result<()> {
        let mut st = self.shared.lock();
        st.app_mut(client_id)?.blocked = true;
        st.revoke_where(|c, _| c == client_id);
        Ok(())
    }

    /// "Unblock" an app.
    pub fn unblock_app(&self, client_id: &str) -> Result<()> {
        self.shared.lock().app_mut(client_id)?.blocked = false;
        Ok(())
    }

    /// "Reset refresh tokens" of an app: every refresh token (and its access tokens) dies.
    pub fn reset_refresh_tokens(&self, client_id: &str) -> Result<usize> {
        let mut st = self.shared.lock();
        st.app_mut(client_id)?;
        Ok(st.revoke_where(|c, _| c == client_id))
    }

    /// Sets a user's status (freeze, deactivate, reactivate).
    pub fn set_user_status(&self, username: &str, status: UserStatus) -> Result<()> {
        self.shared.lock().user_by_name_mut(username)?.config.status = status;
        Ok(())
    }

    /// Freezes a user: its tokens stop working and token requests answer `inactive_user`.
    pub fn freeze_user(&self, username: &str) -> Result<()> {
        self.set_user_status(username, UserStatus::Frozen)
    }

    /// Changes a connected app's configuration (policies, flows, callbacks, certificate, kind,
    /// installed...). The client id cannot change; an invalid result changes nothing.
    pub fn update_app(&self, client_id: &str, f: impl FnOnce(&mut AppConfig)) -> Result<()> {
        self.shared.lock().update_app(client_id, f)
    }

    /// Changes an org's settings ([`OrgConfig`] without its users and apps, which this ignores
    /// and refuses to change): block the username-password flow, a login rate limit, SOAP
    /// `login()`, sandbox, My Domain... The org id cannot change (see
    /// [`Emulator::refresh_sandbox`]); an invalid result changes nothing.
    ///
    /// ```no_run
    /// # async fn demo(emulator: &sfauth_emulator::Emulator) -> sfauth_emulator::Result<()> {
    /// let org_id = emulator.credentials().org_id.clone();
    /// emulator.update_org(&org_id, |org| {
    ///     org.block_username_password_flow = true;
    ///     org.login_rate_limit_per_hour = Some(3600);
    /// })?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn update_org(&self, org_id: &str, f: impl FnOnce(&mut OrgConfig)) -> Result<()> {
        self.shared.lock().update_org(org_id, f)
    }

    /// Stages a new consumer secret for a connected app: the current and the new one both
    /// authenticate until [`Emulator::apply_staged_client_secret`].
    ///
    /// ```no_run
    /// # async fn demo(emulator: &sfauth_emulator::Emulator) -> sfauth_emulator::Result<()> {
    /// let client_id = emulator.credentials().client_id.clone();
    /// emulator.stage_client_secret(&client_id, "the-new-secret")?;
    /// // ... both secrets work: move every client to the new one ...
    /// emulator.apply_staged_client_secret(&client_id)?; // only the new one works now
    /// # Ok(())
    /// # }
    /// ```
    pub fn stage_client_secret(&self, client_id: &str, secret: &str) -> Result<()> {
        self.shared.lock().stage_client_secret(client_id, secret)
    }

    /// Makes the staged consumer secret the app's only one (an error when none is staged).
    pub fn apply_staged_client_secret(&self, client_id: &str) -> Result<()> {
        self.shared.lock().apply_staged_client_secret(client_id)
    }

    /// A sandbox refresh: the org gets a new org id and its users new user ids (usernames,
    /// passwords and apps stay), and every token, code and device grant issued in it before
    /// fails for good (`invalid_grant` / `expired access/refresh token`; REST 401). Returns the
    /// new org id.
    pub fn refresh_sandbox(&self, org_id: &str) -> Result<String> {
        self.shared.lock().refresh_sandbox(org_id)
    }

    /// A My Domain change: the org's My Domain host (its login host and, unless set otherwise
    /// later, its `instance_url` host) becomes `host`. Requests whose `Host` is the old My
    /// Domain are redirected to the new one, or answered 404 when
    /// [`OrgConfig::redirect_previous_my_domain`] is off.
    pub fn change_my_domain(&self, org_id: &str, host: &str) -> Result<()> {
        self.shared.lock().change_my_domain(org_id, host)
    }

    /// Changes a connected app's policies.
    pub fn set_policy(&self, client_id: &str, f: impl FnOnce(&mut AppPolicy)) -> Result<()> {
        self.update_app(client_id, |app| f(&mut app.policy))
    }

    /// Changes emulator-wide settings.
    pub fn update_settings(&self, f: impl FnOnce(&mut Settings)) {
        f(&mut self.shared.lock().settings);
    }

    /// Changes an org's `instance_url` (an org migration); `None` goes back to the base URL.
    pub fn set_instance_url(&self, org_id: &str, url: Option<String>) -> Result<()> {
        self.shared.lock().org_mut(org_id)?.instance_url = url;
        Ok(())
    }

    /// Adds an org and returns its id.
    pub fn add_org(&self, name: &str) -> Result<String> {
        self.shared.lock().add_org(None, name, None)
    }

    /// Adds a user to an org and returns its id.
    pub fn add_user(&self, org_id: &str, user: UserConfig) -> Result<String> {
        self.shared.lock().add_user(org_id, user)
    }

    /// Adds a connected app to an org.
    pub fn add_app(&self, org_id: &str, app: AppConfig) -> Result<()> {
        self.shared.lock().add_app(org_id, app)
    }

    /// Approves a pending device authorization as `username` (what the user does in a browser).
    pub fn approve_device(&self, user_code: &str, username: &str) -> Result<()> {
        let mut st = self.shared.lock();
        let user_id = st
            .user_by_name(username)
            .map(|u| u.id.clone())
            .ok_or_else(|| Error::not_found("user", username))?;
        let grant = st
            .devices
            .iter_mut()
            .find(|d| {
                d.user_code.eq_ignore_ascii_case(user_code) && d.status == DeviceStatus::Pending
            })
            .ok_or_else(|| Error::not_found("device user code", user_code))?;
        grant.status = DeviceStatus::Approved(user_id);
        Ok(())
    }

    /// Denies a pending device authorization.
    pub fn deny_device(&self, user_code: &str) -> Result<()> {
        let mut st = self.shared.lock();
        let grant = st
            .devices
            .iter_mut()
            .find(|d| {
                d.user_code.eq_ignore_ascii_case(user_code) && d.status == DeviceStatus::Pending
            })
            .ok_or_else(|| Error::not_found("device user code", user_code))?;
        grant.status = DeviceStatus::Denied;
        Ok(())
    }

    /// Stops accepting connections, lets in-flight requests finish, and waits for the server.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "emulator server ended with an error"),
                Err(e) => tracing::warn!(error = %e, "emulator server task failed"),
            }
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
