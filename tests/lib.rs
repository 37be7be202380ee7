//! Shared helpers for the end-to-end tests in this package.
//!
//! Each scenario is one file: most are modules of the one `scenarios` target (`cargo test -p
//! sfauth-tests --test scenarios manager_refresh::` runs one alone), and those that need a
//! process of their own are targets of their own (see `Cargo.toml`). What several scenarios need
//! lives here: an emulator started with auto-approve,
//! a manual clock and a fixed seed ([`Env`]), an [`OAuthClient`] pointed at it as a My Domain,
//! the production [`ReqwestTransport`], and a plain HTTP client that plays the browser at the
//! authorize endpoint.
//!
//! Everything goes over real TCP to the emulator: nothing here short-circuits the wire.

use std::sync::Arc;
use std::time::Duration;

use sfauth_core::flows::{AuthorizationRequest, AuthorizeParams, Introspection, JwtBearer};
use sfauth_core::http::{HttpRequest, HttpTransport, RetrySafety};
use sfauth_core::{
    AccessToken, AuthorizationCode, ConnectedApp, LoginHost, OAuthClient, Password, PrivateKey,
    SecretValue, TokenKey, TokenSet,
};
use sfauth_emulator::{Clock, Credentials, Emulator, EmulatorBuilder, SEED_CLIENT_PRIVATE_KEY};
use sfauth_transport::ReqwestTransport;
use url::Url;

/// Any error a helper can meet; tests unwrap it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `Result` with [`BoxError`].
pub type Result<T, E = BoxError> = std::result::Result<T, E>;

/// The seed every emulator here starts with, so ids and tokens are reproducible.
pub const SEED: u64 = 20_261_124;

/// The REST API version the tests call.
pub const API_VERSION: &str = "v62.0";

/// A running emulator and the clients that talk to it.
#[derive(Debug)]
pub struct Env {
    /// The emulator: its handle controls time, policies, faults and counters.
    pub emulator: Emulator,
    /// The transport core sends through: the production reqwest one, over real TCP.
    pub transport: ReqwestTransport,
    /// A plain client that follows no redirect, for what a browser would do.
    pub browser: reqwest::Client,
}

impl Env {
    /// Every request the emulator's token endpoint received, faulted or not.
    pub fn token_requests(&self) -> u64 {
        self.emulator.counters().requests("token")
    }

    /// Refresh grants the emulator handled (a request answered by an injected fault is not one).
    pub fn refresh_grants(&self) -> u64 {
        self.emulator.counters().grant("refresh_token")
    }

    /// An emulator with the seeded org, user and app, auto-approve on, a manual clock starting
    /// now and the fixed [`SEED`].
    pub async fn start() -> Result<Self> {
        Self::start_with(|builder| builder).await
    }

    /// Like [`Env::start`], with `configure` applied to the builder last.
    pub async fn start_with(
        configure: impl FnOnce(EmulatorBuilder) -> EmulatorBuilder,
    ) -> Result<Self> {
        let builder = Emulator::builder()
            .clock(Clock::manual_now())
            .auto_approve(true)
            .seed(SEED);
        let emulator = configure(builder).start().await?;
        Ok(Self {
            emulator,
            transport: ReqwestTransport::builder()
                .timeout(Duration::from_secs(20))
                .build()?,
            browser: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
        })
    }

    /// The seeded org, user and app.
    pub fn creds(&self) -> &Credentials {
        self.emulator.credentials()
    }

    /// The emulator as a My Domain login host (`http://127.0.0.1:PORT`).
    pub fn host(&self) -> Result<LoginHost> {
        Ok(LoginHost::my_domain(self.emulator.base_url())?)
    }

    /// The seeded connected app: consumer key, secret and callback URL, body client auth.
    pub fn app(&self) -> Result<ConnectedApp> {
        let creds = self.creds();
        Ok(ConnectedApp::new(creds.client_id.clone())
            .with_secret(creds.client_secret.clone())
            .with_redirect_uri(&creds.callback_url)?)
    }

    /// A client for the seeded app on [`Env::host`].
    pub fn client(&self) -> Result<OAuthClient> {
        Ok(OAuthClient::new(self.host()?, self.app()?))
    }

    /// The seeded app on the emulator's Experience Cloud-style site (`{base}/community`).
    pub fn site_client(&self) -> Result<OAuthClient> {
        Ok(OAuthClient::new(
            LoginHost::site(&self.emulator.site_url())?,
            self.app()?,
        ))
    }

    /// A client on `host` that knows only the seeded consumer key (no secret, no callback): what
    /// the JWT bearer flow needs.
    pub fn key_only_client(&self, host: LoginHost) -> OAuthClient {
        OAuthClient::new(host, ConnectedApp::new(self.creds().client_id.clone()))
    }

    /// A JWT bearer grant for the seeded user, signed with the seeded app's certificate key.
    pub fn seeded_jwt(&self) -> JwtBearer {
        JwtBearer::new(
            self.creds().username.clone(),
            PrivateKey::new(SEED_CLIENT_PRIVATE_KEY),
        )
    }

    /// A `TokenManager` builder for `client` that sends through this environment's transport; the
    /// manager tests add their store, policy and renewal to it.
    pub fn manager_builder(&self, client: OAuthClient) -> sfauth::TokenManagerBuilder {
        sfauth::TokenManager::builder(client).transport(Arc::new(self.transport.clone()))
    }

    /// `client` refreshes with the refresh token of `tokens`, and the new access token must work:
    /// a SOQL query with it answers 200. Returns the new token set.
    pub async fn refresh_and_query(
        &self,
        client: &OAuthClient,
        tokens: &TokenSet,
    ) -> Result<TokenSet> {
        let token = tokens
            .refresh_token
            .as_ref()
            .ok_or("the token set has no refresh token")?;
        let refreshed = client.refresh(&self.transport, token).await?;
        let status = self.query_status(&refreshed).await?;
        if status != 200 {
            return Err(format!("a query with the refreshed token answered {status}").into());
        }
        Ok(refreshed)
    }

    /// The username-password flow with `client` for the seeded user, security token appended.
    pub async fn password_login(
        &self,
        client: &OAuthClient,
    ) -> Result<TokenSet, sfauth_core::Error> {
        let creds = self.creds();
        client
            .password(
                &self.transport,
                &creds.username,
                &Password::new(creds.password_with_token()),
            )
            .await
    }

    /// `client` introspects the access token of `tokens`, without a type hint.
    pub async fn introspect_access(
        &self,
        client: &OAuthClient,
        tokens: &TokenSet,
    ) -> Result<Introspection, sfauth_core::Error> {
        client
            .introspect(
                &self.transport,
                &SecretValue::from(tokens.access_token.clone()),
                None,
            )
            .await
    }

    /// The first half of the web server flow: authorization URL for `scopes`, browser redirect
    /// and callback parsing. Returns the request (state, PKCE verifier) and the code, not yet
    /// exchanged.
    pub async fn authorize_code(
        &self,
        client: &OAuthClient,
        scopes: &[&str],
    ) -> Result<(AuthorizationRequest, AuthorizationCode)> {
        let request = client.authorize_url(&AuthorizeParams::scopes(scopes.iter().copied()))?;
        let callback = self.follow_authorize(&request.url).await?;
        let code = client.parse_callback(&callback, &request.state)?;
        Ok((request, code))
    }

    /// The user-agent flow up to the redirect: authorization URL for `scopes`, then the browser.
    /// Returns the request (its state) and the redirect, whose fragment carries the tokens.
    pub async fn user_agent_redirect(
        &self,
        client: &OAuthClient,
        scopes: &[&str],
    ) -> Result<(AuthorizationRequest, Url)> {
        let request = client.user_agent_url(&AuthorizeParams::scopes(scopes.iter().copied()))?;
        let redirect = self.follow_authorize(&request.url).await?;
        Ok((request, redirect))
    }

    /// Plays the browser: `GET url` on the authorize endpoint (auto-approve answers at once) and
    /// returns where the emulator redirects to.
    pub async fn follow_authorize(&self, url: &Url) -> Result<Url> {
        let response = self.browser.get(url.as_str()).send().await?;
        if response.status() != reqwest::StatusCode::FOUND {
            return Err(format!("authorize answered {}, not 302", response.status()).into());
        }
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .ok_or("authorize redirect has no location")?
            .to_str()?;
        Ok(Url::parse(location)?)
    }

    /// The whole web server flow with PKCE for `scopes`: authorization URL, browser redirect,
    /// callback parsing and code exchange.
    pub async fn web_server_login(
        &self,
        client: &OAuthClient,
        scopes: &[&str],
    ) -> Result<TokenSet> {
        let (request, code) = self.authorize_code(client, scopes).await?;
        Ok(client
            .exchange_code(&self.transport, &code, request.pkce_verifier.as_ref())
            .await?)
    }

    /// A fresh token set with a refresh token, from the web server flow on the seeded app.
    pub async fn login(&self) -> Result<TokenSet> {
        let client = self.client()?;
        self.web_server_login(&client, &["api", "id", "refresh_token"])
            .await
    }

    /// `GET {instance_url}/services/data/{API_VERSION}/{path}` with `token`, through the
    /// transport: the REST slice that tells a client its session died. Returns the status and
    /// body.
    pub async fn rest_get(
        &self,
        instance_url: &Url,
        token: &AccessToken,
        path: &str,
    ) -> Result<(u16, bytes::Bytes)> {
        let base = instance_url.as_str().trim_end_matches('/');
        let mut request: HttpRequest =
            http::Request::get(format!("{base}/services/data/{API_VERSION}/{path}"))
                .header(
                    http::header::AUTHORIZATION,
                    format!("Bearer {}", token.expose_secret()),
                )
                .body(bytes::Bytes::new())?;
        request.extensions_mut().insert(RetrySafety::Idempotent);
        let response = self.transport.send(request).await?;
        Ok((response.status().as_u16(), response.into_body()))
    }

    /// Plays a person at the emulator's HTML pages: `GET url` (the authorize endpoint with auto
    /// approve off shows the login form), submits `username`/`password`, then answers the consent
    /// page with `decision` (`allow` or `deny`). Returns where the emulator redirects to.
    pub async fn sign_in_and_consent(
        &self,
        url: &Url,
        username: &str,
        password: &str,
        decision: &str,
    ) -> Result<Url> {
        let mut form_url = url.clone();
        form_url.set_query(None);
        let login = self.browser.get(url.as_str()).send().await?.text().await?;
        let mut fields = hidden_inputs(&login);
        fields.push(("username".into(), username.into()));
        fields.push(("pw".into(), password.into()));
        let consent = self
            .browser
            .post(form_url.as_str())
            .form(&fields)
            .send()
            .await?
            .text()
            .await?;
        let mut fields = hidden_inputs(&consent);
        if !fields.iter().any(|(name, _)| name == "ticket") {
            return Err("the login form did not lead to the consent page".into());
        }
        fields.push(("decision".into(), decision.into()));
        let response = self
            .browser
            .post(form_url.as_str())
            .form(&fields)
            .send()
            .await?;
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .ok_or("consent answered without a redirect")?
            .to_str()?;
        Ok(Url::parse(location)?)
    }

    /// A SOQL query with `tokens`' access token on its instance: the status and body.
    pub async fn query(&self, tokens: &TokenSet) -> Result<(u16, bytes::Bytes)> {
        self.rest_get(
            &tokens.instance_url,
            &tokens.access_token,
            "query?q=SELECT+Id+FROM+Account",
        )
        .await
    }

    /// The status of [`Env::query`].
    pub async fn query_status(&self, tokens: &TokenSet) -> Result<u16> {
        Ok(self.query(tokens).await?.0)
    }

    /// Logs in with the web server flow and stores the result in `manager` under `label`.
    pub async fn store_login(
        &self,
        manager: &sfauth::TokenManager,
        label: &str,
    ) -> Result<TokenKey> {
        Ok(manager.store_tokens(self.login().await?, label).await?)
    }

    /// The status of the same query sent with a token the `TokenManager` handed out.
    pub async fn query_status_with(&self, token: &sfauth::AccessTokenGuard<'_>) -> Result<u16> {
        let (status, _) = self
            .rest_get(
                token.instance_url(),
                token.access_token(),
                "query?q=SELECT+Id+FROM+Account",
            )
            .await?;
        Ok(status)
    }
}

/// The `name` and `value` of every `<input type="hidden">` of an HTML page, unescaped.
pub fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let attribute = |tag: &str, name: &str| -> Option<String> {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        let end = tag[start..].find('"')? + start;
        Some(unescape(&tag[start..end]))
    };
    html.split("<input")
        .skip(1)
        .filter_map(|rest| rest.split('>').next())
        .filter(|tag| tag.contains("type=\"hidden\""))
        .filter_map(|tag| Some((attribute(tag, "name")?, attribute(tag, "value")?)))
        .collect()
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The resident set size of process `pid` (this process when `None`) in KiB, read from
/// `VmRSS` in `/proc/<pid>/status`; `None` where that file is missing (not Linux, process gone).
pub fn vm_rss_kib(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?;
    line.trim().strip_suffix("kB")?.trim().parse().ok()
}

/// The URL of a server a test needs (PostgreSQL, Redis): `var` if set, else `default`, when
/// something answers on its host and port. When nothing does, the test should skip: this says so
/// loudly on stderr and returns `None`; under `CI=true` a missing server is a failure instead,
/// and this panics.
#[allow(clippy::print_stderr, reason = "the skip must be seen")]
pub fn server_url(var: &str, default: &str, what: &str) -> Option<String> {
    let url = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let address = Outage::upstream_of(&url).ok().and_then(|upstream| {
        std::net::ToSocketAddrs::to_socket_addrs(&upstream)
            .ok()?
            .next()
    });
    let reachable = address.is_some_and(|address| {
        std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok()
    });
    if reachable {
        return Some(url);
    }
    let message = format!("{what} is not reachable at {var} (set it to point elsewhere)");
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{message}; CI=true, so this is a failure, not a skip");
    }
    eprintln!("\n!!! SKIPPED: {message} !!!\n");
    None
}

/// A TCP forwarder in front of a real server (PostgreSQL, Redis) that a test can cut and
/// restore, to play a network outage between a process and its store without stopping a
/// server other tests share.
///
/// While cut, every open connection through it is closed and new ones are closed as soon as
/// they are accepted: clients see their connection drop and every reconnect fail, at once.
#[derive(Debug)]
pub struct Outage {
    address: std::net::SocketAddr,
    open: Arc<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Outage {
    /// Listens on a free loopback port and forwards to `upstream` (`host:port`).
    pub async fn forward_to(upstream: String) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let open = Arc::new(tokio::sync::watch::Sender::new(true));
        let state = open.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*state.borrow() {
                    continue;
                }
                let upstream = upstream.clone();
                let mut cut = state.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Ok(Self {
            address,
            open,
            task,
        })
    }

    /// `url` (a `redis://` or `postgres://` URL) pointed at this forwarder instead.
    pub fn url_through(&self, url: &str) -> Result<String> {
        let mut parsed = Url::parse(url)?;
        parsed
            .set_host(Some("127.0.0.1"))
            .map_err(|_| "cannot set the host")?;
        parsed
            .set_port(Some(self.address.port()))
            .map_err(|()| "cannot set the port")?;
        Ok(parsed.to_string())
    }

    /// The `host:port` of `url`, for [`Self::forward_to`].
    pub fn upstream_of(url: &str) -> Result<String> {
        let parsed = Url::parse(url)?;
        let host = parsed.host_str().ok_or("no host")?.to_owned();
        let port = parsed
            .port_or_known_default()
            .or(match parsed.scheme() {
                "redis" | "rediss" => Some(6379),
                "postgres" | "postgresql" => Some(5432),
                _ => None,
            })
            .ok_or("no port")?;
        Ok(format!("{host}:{port}"))
    }

    /// Closes every connection and refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Removes every key under `prefix` from the Redis server at `url`, fence counters included:
/// what a test's `RedisStore` left behind.
pub async fn remove_redis_prefix(url: &str, prefix: &str) -> Result<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await?;
    if !keys.is_empty() {
        let () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await?;
    }
    Ok(())
}

/// Drops `schema` from the PostgreSQL database at `url`: what a test's `PostgresStore` left
/// behind.
pub async fn drop_postgres_schema(url: &str, schema: &str) -> Result<()> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}
