//! Logins from a program: one call runs a flow, stores its tokens with the manager and records
//! how the tenant renews ([`TokenManager::login_with_code`], [`TokenManager::login_jwt_bearer`],
//! [`TokenManager::login_client_credentials`], [`TokenManager::login_password`]), and
//! [`LoopbackLogin`], the web server flow with a callback listener on 127.0.0.1 for tools and
//! tests.
//!
//! The loopback listener is a few dozen lines of HTTP/1.1 over a tokio `TcpListener` rather
//! than a web framework: it answers one `GET` on one path, and this crate should not pull a
//! server into every program that only refreshes tokens.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, REFERRER_POLICY};
use http::{Method, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use sfauth_core::flows::{AuthorizeParams, JwtBearer};
use sfauth_core::{AuthorizationCode, OAuthClient, Password, PkceVerifier, TokenKey, TokenSet};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use url::Url;

use crate::error::{Error, Result};
use crate::manager::TokenManager;
use crate::renewal::Renewal;

impl TokenManager {
    /// Completes a web server flow login: exchanges `code` (from the callback, whose `state`
    /// the caller has checked) with the PKCE `verifier` kept since the authorization URL was
    /// built, checks the response's `signature` (required when the app has a client secret),
    /// and stores the tokens under [`key_for`](Self::key_for)`(tokens, label)`, replacing any
    /// earlier login of that user (and clearing a re-authorization mark). Returns the key.
    ///
    /// The tenant renews with its refresh token, so no renewal flow is recorded; it gets one
    /// only if the authorization asked for the `refresh_token` (or `offline_access`) scope and
    /// the app allows it. Without one, the tenant needs a new login when its session ends.
    ///
    /// The exchange goes to this manager's login host with its app's `redirect_uri`, which
    /// must be the one the authorization URL carried.
    ///
    /// ```no_run
    /// use sfauth::oauth::flows::AuthorizeParams;
    /// use sfauth::oauth::AuthorizationCode;
    ///
    /// # async fn run(manager: sfauth::TokenManager, callback: sfauth::Url) -> Result<(), Box<dyn std::error::Error>> {
    /// let request = manager.client().authorize_url(&AuthorizeParams::scopes(["api", "refresh_token"]))?;
    /// // ... the browser goes to request.url and comes back to `callback` ...
    /// let code: AuthorizationCode = manager.client().parse_callback(&callback, &request.state)?;
    /// let verifier = request.pkce_verifier.as_ref().ok_or("no verifier")?;
    /// let key = manager.login_with_code(&code, verifier, "default").await?;
    /// manager.access_token(&key).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn login_with_code(
        &self,
        code: &AuthorizationCode,
        verifier: &PkceVerifier,
        label: &str,
    ) -> Result<TokenKey> {
        let tokens = exchange(self.client(), self, code, verifier).await?;
        self.store_tokens(tokens, label).await
    }

    /// [`login_with_code`](Self::login_with_code) for a tenant that must be re-authorized:
    /// the new tokens replace `key`'s, and are refused (nothing stored, the error is
    /// [`Error::IdentityMismatch`]) when the person logged in as another org or user than `key`
    /// names.
    ///
    /// ```no_run
    /// # async fn run(manager: sfauth::TokenManager, key: sfauth::TokenKey, code: sfauth::oauth::AuthorizationCode, verifier: sfauth::oauth::PkceVerifier) -> Result<(), sfauth::Error> {
    /// manager.relogin_with_code(&key, &code, &verifier).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn relogin_with_code(
        &self,
        key: &TokenKey,
        code: &AuthorizationCode,
        verifier: &PkceVerifier,
    ) -> Result<()> {
        let tokens = exchange(self.client(), self, code, verifier).await?;
        self.store_tokens_as(key.clone(), tokens).await
    }

    /// Logs in with the JWT bearer flow, stores the tokens under `label` and records the flow
    /// with the tenant ([`set_renewal`](Self::set_renewal)): it has no refresh token, and the
    /// manager renews it by running the flow again with `jwt`. After a restart the recorded
    /// hint names the username only: give the key back through
    /// [`renewal_resolver`](crate::TokenManagerBuilder::renewal_resolver).
    ///
    /// ```no_run
    /// use sfauth::{JwtBearer, PrivateKey};
    ///
    /// # async fn run(manager: sfauth::TokenManager) -> Result<(), sfauth::Error> {
    /// let pem = std::fs::read_to_string("/etc/sfauth/acme.pem").unwrap_or_default();
    /// let jwt = JwtBearer::new("integration@acme.example", PrivateKey::new(pem));
    /// let key = manager.login_jwt_bearer(jwt, "integration").await?;
    /// # drop(key);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn login_jwt_bearer(&self, jwt: JwtBearer, label: &str) -> Result<TokenKey> {
        let tokens = self
            .client()
            .jwt_bearer(self.transport().as_ref(), &jwt)
            .await
            .map_err(Error::login)?;
        self.store_with_renewal(tokens, label, Renewal::JwtBearer(jwt))
            .await
    }

    /// Logs in with the client credentials flow (the app's Run As user; the manager's host
    /// must be a My Domain), stores the tokens under `label` and records the flow: the manager
    /// renews the tenant by itself, after a restart too.
    ///
    /// ```no_run
    /// # async fn run(manager: sfauth::TokenManager) -> Result<(), sfauth::Error> {
    /// let key = manager.login_client_credentials("service").await?;
    /// let token = manager.access_token(&key).await?;
    /// # drop(token);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn login_client_credentials(&self, label: &str) -> Result<TokenKey> {
        let tokens = self
            .client()
            .client_credentials(self.transport().as_ref())
            .await
            .map_err(Error::login)?;
        self.store_with_renewal(tokens, label, Renewal::ClientCredentials)
            .await
    }

    /// Logs in with the username-password flow (`password` with the security token
    /// appended), stores the tokens under `label` and records the flow; after a restart the
    /// password comes back through
    /// [`renewal_resolver`](crate::TokenManagerBuilder::renewal_resolver). Salesforce blocks
    /// this flow by default in new orgs and external client apps lack it: prefer the others.
    ///
    /// ```no_run
    /// use sfauth::oauth::Password;
    ///
    /// # async fn run(manager: sfauth::TokenManager) -> Result<(), sfauth::Error> {
    /// let password = Password::new(std::env::var("SF_PASSWORD").unwrap_or_default());
    /// let key = manager.login_password("api@acme.example", password, "api").await?;
    /// # drop(key);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn login_password(
        &self,
        username: &str,
        password: Password,
        label: &str,
    ) -> Result<TokenKey> {
        let tokens = self
            .client()
            .password(self.transport().as_ref(), username, &password)
            .await
            .map_err(Error::login)?;
        let renewal = Renewal::Password {
            username: username.to_owned(),
            password,
        };
        self.store_with_renewal(tokens, label, renewal).await
    }

    async fn store_with_renewal(
        &self,
        tokens: TokenSet,
        label: &str,
        renewal: Renewal,
    ) -> Result<TokenKey> {
        let key = self.store_tokens(tokens, label).await?;
        self.set_renewal(&key, renewal).await?;
        Ok(key)
    }
}

/// The code exchange through `client` (the manager's, or one with a loopback redirect URI),
/// sent over the manager's transport, with the signature required when the app has a secret.
async fn exchange(
    client: &OAuthClient,
    manager: &TokenManager,
    code: &AuthorizationCode,
    verifier: &PkceVerifier,
) -> Result<TokenSet> {
    // `exchange_code` already checks a signature that is present, in constant time; what it
    // lets through is a response without one, which Salesforce never sends for this flow.
    let tokens = client
        .exchange_code(manager.transport().as_ref(), code, Some(verifier))
        .await
        .map_err(Error::login)?;
    if client.app().client_secret().is_some() && tokens.signature.is_none() {
        return Err(Error::UnsignedLogin);
    }
    Ok(tokens)
}

/// The callback port the Salesforce CLI uses, which many connected apps already allow.
const DEFAULT_PORT: u16 = 1717;
/// The callback path the Salesforce CLI uses.
const DEFAULT_PATH: &str = "/OauthRedirect";
/// The largest buffer the listener reads a request head into; a callback URL is far shorter.
const MAX_HEAD: usize = 16 * 1024;
/// How long one connection may take to send its request head. Browsers open speculative
/// connections that send nothing; each is served in its own task, so none delays the callback.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the browser's page may take to be written once the login has its outcome.
const PAGE_GRACE: Duration = Duration::from_secs(2);

/// A page for the browser.
type Page = hyper::Response<Full<Bytes>>;

/// A request on the callback path, and where the login sends the page that answers it.
type Callback = (Url, oneshot::Sender<Page>);

/// The web server flow with PKCE for a program at a person's desk: builds the authorization
/// URL (random `state`, PKCE S256), listens on `127.0.0.1`, hands the URL to a function of
/// yours (open a browser, print it, or, in tests, follow it with an HTTP client), waits for
/// Salesforce's redirect, checks `state`, exchanges the code, stores the tokens through the
/// manager and returns the key.
///
/// The redirect URI is `http://localhost:PORT/OauthRedirect` (see [`port`](Self::port) and
/// [`path`](Self::path)). Salesforce compares it with the connected app's callback URLs
/// exactly, port included, so the app must list it: the default port 1717 and path are the
/// Salesforce CLI's, which many apps already have. Port 0 (any free port) only suits a
/// server that accepts whatever it is told, such as the emulator in tests; read the chosen
/// URI from [`BoundLoopbackLogin::redirect_uri`] to register it there.
///
/// The page the browser is left on says whether the login worked; it never shows a code or
/// a token.
///
/// ```no_run
/// use std::time::Duration;
/// use sfauth::LoopbackLogin;
///
/// # async fn run(manager: sfauth::TokenManager) -> Result<(), sfauth::Error> {
/// let key = LoopbackLogin::new(&manager)
///     .scopes(["api", "refresh_token"])
///     .timeout(Duration::from_secs(300))
///     .run(|url| async move {
///         eprintln!("Open this URL in a browser to log in:\n{url}");
///     })
///     .await?;
/// # drop(key);
/// # Ok(())
/// # }
/// ```
#[must_use]
pub struct LoopbackLogin {
    manager: TokenManager,
    params: AuthorizeParams,
    port: u16,
    path: String,
    timeout: Duration,
    label: String,
}

impl fmt::Debug for LoopbackLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopbackLogin")
            .field("params", &self.params)
            .field("port", &self.port)
            .field("path", &self.path)
            .field("timeout", &self.timeout)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl LoopbackLogin {
    /// A login for `manager`'s app and host: scopes `api` and `refresh_token`, port 1717, path
    /// `/OauthRedirect`, a five-minute timeout, label `default`.
    ///
    /// ```no_run
    /// # fn run(manager: sfauth::TokenManager) {
    /// let login = sfauth::LoopbackLogin::new(&manager);
    /// # drop(login);
    /// # }
    /// ```
    pub fn new(manager: &TokenManager) -> Self {
        Self {
            manager: manager.clone(),
            params: AuthorizeParams::scopes(["api", "refresh_token"]),
            port: DEFAULT_PORT,
            path: DEFAULT_PATH.to_owned(),
            timeout: Duration::from_secs(300),
            label: "default".to_owned(),
        }
    }

    /// Requests `scopes` (keep `refresh_token`, or the tenant cannot renew).
    ///
    /// ```no_run
    /// # fn run(manager: sfauth::TokenManager) {
    /// let login = sfauth::LoopbackLogin::new(&manager).scopes(["api", "refresh_token", "openid"]);
    /// # drop(login);
    /// # }
    /// ```
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.params.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Sets every authorization parameter at once (scopes, `prompt`, `login_hint`, ...).
    ///
    /// ```no_run
    /// use sfauth::oauth::flows::AuthorizeParams;
    ///
    /// # fn run(manager: sfauth::TokenManager) {
    /// let login = sfauth::LoopbackLogin::new(&manager).params(AuthorizeParams {
    ///     login_hint: Some("admin@acme.example".into()),
    ///     ..AuthorizeParams::scopes(["api", "refresh_token"])
    /// });
    /// # drop(login);
    /// # }
    /// ```
    pub fn params(mut self, params: AuthorizeParams) -> Self {
        self.params = params;
        self
    }

    /// Listens on `port` (0: any free port; see the type's documentation for why a real
    /// connected app needs a fixed one).
    ///
    /// ```no_run
    /// # fn run(manager: sfauth::TokenManager) {
    /// let login = sfauth::LoopbackLogin::new(&manager).port(8765);
    /// # drop(login);
    /// # }
    /// ```
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The callback path (default `/OauthRedirect`); a missing leading `/` is added.
    ///
    /// ```no_run
    /// # fn run(manager: sfauth::TokenManager) {
    /// let login = sfauth::LoopbackLogin::new(&manager).path("/callback");
    /// # drop(login);
    /// # }
    /// ```
    pub fn path(mut self, path: &str) -> Self {
        self.path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        self
    }

    /// How long to wait for the redirect after handing out the URL (default five minutes).
    ///
    /// ```no_run
    /// # fn run(manager: sfauth::TokenManager) {
    /// let login = sfauth::LoopbackLogin::new(&manager).timeout(std::time::Duration::from_secs(60));
    /// # drop(login);
    /// # }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The label the tenant is stored under (default `default`).
    ///
    /// ```no_run
    /// # fn run(manager: sfauth::TokenManager) {
    /// let login = sfauth::LoopbackLogin::new(&manager).label("sandbox-admin");
    /// # drop(login);
    /// # }
    /// ```
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Starts listening, so that the redirect URI (and its port) is known before the URL is
    /// handed out.
    ///
    /// ```no_run
    /// # async fn run(manager: sfauth::TokenManager) -> Result<(), sfauth::Error> {
    /// let bound = sfauth::LoopbackLogin::new(&manager).port(0).bind().await?;
    /// println!("register {} as a callback URL", bound.redirect_uri());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn bind(self) -> Result<BoundLoopbackLogin> {
        let port = self.port;
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await
            .map_err(|source| Error::LoginListener { port, source })?;
        let bound_port = listener
            .local_addr()
            .map_err(|source| Error::LoginListener { port, source })?
            .port();
        let redirect_uri = Url::parse(&format!("http://localhost:{bound_port}{}", self.path))
            .map_err(|e| Error::Config(format!("bad callback path: {e}")))?;
        Ok(BoundLoopbackLogin {
            login: self,
            listener,
            redirect_uri,
        })
    }

    /// [`bind`](Self::bind), then [`BoundLoopbackLogin::run`].
    ///
    /// ```no_run
    /// # async fn run(manager: sfauth::TokenManager) -> Result<(), sfauth::Error> {
    /// let key = sfauth::LoopbackLogin::new(&manager)
    ///     .run(|url| async move { eprintln!("log in at {url}") })
    ///     .await?;
    /// # drop(key);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run<F, Fut>(self, open: F) -> Result<TokenKey>
    where
        F: FnOnce(Url) -> Fut,
        Fut: Future<Output = ()>,
    {
        self.bind().await?.run(open).await
    }
}

/// A [`LoopbackLogin`] whose listener is bound: its [`redirect_uri`](Self::redirect_uri) is
/// final.
///
/// ```no_run
/// # async fn run(manager: sfauth::TokenManager) -> Result<(), sfauth::Error> {
/// let bound: sfauth::BoundLoopbackLogin = sfauth::LoopbackLogin::new(&manager).bind().await?;
/// let key = bound.run(|url| async move { eprintln!("log in at {url}") }).await?;
/// # drop(key);
/// # Ok(())
/// # }
/// ```
pub struct BoundLoopbackLogin {
    login: LoopbackLogin,
    listener: TcpListener,
    redirect_uri: Url,
}

impl fmt::Debug for BoundLoopbackLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundLoopbackLogin")
            .field("redirect_uri", &self.redirect_uri.as_str())
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}

impl BoundLoopbackLogin {
    /// `http://localhost:PORT/PATH`, with the port actually bound: the connected app's
    /// callback URL must be exactly this.
    ///
    /// ```no_run
    /// # async fn run(manager: sfauth::TokenManager) -> Result<(), sfauth::Error> {
    /// let bound = sfauth::LoopbackLogin::new(&manager).port(0).bind().await?;
    /// assert_eq!(bound.redirect_uri().host_str(), Some("localhost"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn redirect_uri(&self) -> &Url {
        &self.redirect_uri
    }

    /// Builds the authorization URL, gives it to `open`, waits (up to the timeout) for the
    /// redirect to the callback path, checks its `state`, exchanges the code with the PKCE
    /// verifier, stores the tokens through the manager and returns the key.
    ///
    /// The first request to the callback path decides: a wrong `state` or Salesforce's error
    /// redirect fails the login (the browser is told why) rather than waiting on, since the
    /// person has to start again either way. Other paths (a browser's `/favicon.ico`) get 404.
    ///
    /// ```no_run
    /// # async fn run(manager: sfauth::TokenManager) -> Result<(), sfauth::Error> {
    /// let bound = sfauth::LoopbackLogin::new(&manager).bind().await?;
    /// let key = bound.run(|url| async move { eprintln!("log in at {url}") }).await?;
    /// # drop(key);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run<F, Fut>(self, open: F) -> Result<TokenKey>
    where
        F: FnOnce(Url) -> Fut,
        Fut: Future<Output = ()>,
    {
        let Self {
            login,
            listener,
            redirect_uri,
        } = self;
        let manager = &login.manager;
        let base = manager.client();
        let app = base
            .app()
            .clone()
            .with_redirect_uri(redirect_uri.as_str())
            .map_err(Error::login)?;
        let mut client = OAuthClient::new(base.host().clone(), app).with_format(base.format());
        if let Some(timeout) = base.session_timeout() {
            client = client.with_session_timeout(timeout);
        }
        let request = client.authorize_url(&login.params).map_err(Error::login)?;
        let Some(verifier) = request.pkce_verifier.as_ref() else {
            return Err(Error::Config(
                "the authorization request has no pkce verifier".into(),
            ));
        };

        let (sender, mut receiver) = mpsc::channel::<Callback>(1);
        let (stop, stopped) = watch::channel(false);
        let mut connections = JoinSet::new();
        let path = login.path.clone();
        let wait = async {
            // `open` runs beside the accept loop, so that a caller that plays the browser
            // itself (and waits for the callback's page) cannot deadlock the login.
            let opened = open(request.url.clone());
            tokio::pin!(opened);
            let mut open_done = false;
            loop {
                tokio::select! {
                    () = &mut opened, if !open_done => open_done = true,
                    accepted = listener.accept() => {
                        let (stream, _) = accepted.map_err(|source| Error::LoginListener {
                            port: redirect_uri.port().unwrap_or_default(),
                            source,
                        })?;
                        connections.spawn(serve(
                            stream,
                            redirect_uri.clone(),
                            path.clone(),
                            sender.clone(),
                            stopped.clone(),
                        ));
                    }
                    Some(callback) = receiver.recv() => return Ok(callback),
                }
            }
        };
        let (callback_url, reply): Callback = match tokio::time::timeout(login.timeout, wait).await
        {
            Ok(result) => result?,
            Err(_) => {
                return Err(Error::LoginTimedOut {
                    waited: login.timeout,
                });
            }
        };
        // The listener and the other connections are done with: idle ones close now, and the
        // callback's own connection stays open for its page.
        drop(listener);
        let _ = stop.send(true);

        let outcome = async {
            let code = client
                .parse_callback(&callback_url, &request.state)
                .map_err(Error::login)?;
            let tokens = exchange(&client, manager, &code, verifier).await?;
            manager.store_tokens(tokens, &login.label).await
        }
        .await;
        let answer = match &outcome {
            Ok(_) => page(
                StatusCode::OK,
                "Logged in",
                "The login worked. You can close this tab.",
            ),
            Err(error) => page(
                StatusCode::BAD_REQUEST,
                "Login failed",
                &match error.salesforce_says() {
                    Some(said) => format!("Salesforce said: {said}. Start the login again."),
                    None => format!("{error}. Start the login again."),
                },
            ),
        };
        // The browser's page is a courtesy: the login's outcome does not depend on it.
        let _ = reply.send(answer);
        let _ = tokio::time::timeout(PAGE_GRACE, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        connections.abort_all();
        outcome
    }
}

/// Serves one connection with hyper's HTTP/1 server until it closes or the login stops
/// listening (then gracefully: a request under way still gets its answer).
async fn serve(
    stream: TcpStream,
    base: Url,
    path: String,
    sender: mpsc::Sender<Callback>,
    mut stopped: watch::Receiver<bool>,
) {
    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let (base, path, sender) = (base.clone(), path.clone(), sender.clone());
        async move { Ok::<_, Infallible>(answer(&request, &base, &path, &sender).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = stopped.wait_for(|stop| *stop) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// Answers anything but `GET` with 400 and other paths with 404, and hands a request on the
/// callback path to the login, answering it with the page the login sends back.
async fn answer(
    request: &hyper::Request<hyper::body::Incoming>,
    base: &Url,
    path: &str,
    sender: &mpsc::Sender<Callback>,
) -> Page {
    if request.method() != Method::GET {
        return page(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "This is a login callback.",
        );
    }
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |target| target.as_str());
    match base.join(target) {
        Ok(url) if url.path() == path => {
            let (reply, answered) = oneshot::channel();
            // The first callback decides; a later one finds the channel full or closed.
            if sender.try_send((url, reply)).is_err() {
                return page(
                    StatusCode::CONFLICT,
                    "Login already answered",
                    "This login has had its callback. Start the login again if it failed.",
                );
            }
            answered.await.unwrap_or_else(|_| {
                page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Login stopped",
                    "The login is no longer waiting. Start it again.",
                )
            })
        }
        _ => page(
            StatusCode::NOT_FOUND,
            "Not found",
            "This is a login callback.",
        ),
    }
}

/// A small HTML page with `status`. `body` is escaped here.
fn page(status: StatusCode, title: &str, body: &str) -> Page {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{}</p></body></html>",
        escape(body)
    );
    let mut page = Page::new(Full::new(Bytes::from(html)));
    *page.status_mut() = status;
    let headers = page.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    page
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

    #[tokio::test]
    async fn pages_escape_what_they_show() {
        use http_body_util::BodyExt as _;
        let page = page(StatusCode::BAD_REQUEST, "Login failed", "<script>&\"'");
        assert_eq!(page.status(), StatusCode::BAD_REQUEST);
        let body = page.into_body().collect().await.unwrap().to_bytes();
        let page = String::from_utf8(body.to_vec()).unwrap();
        assert!(page.contains("&lt;script&gt;&amp;&quot;&#39;"));
        assert!(!page.contains("<script>"));
    }
}
