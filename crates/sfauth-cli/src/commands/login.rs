//! `sfauth login ...`: one function per flow, and the loopback callback listener of the web
//! server flow (shared with the demo).

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Html;
use sfauth::oauth::flows::{AuthorizeParams, JwtBearer, RevokeMethod, TokenExchange, token_type};
use sfauth::oauth::http::HttpTransport;
use sfauth::oauth::{
    OAuthClient, Password, PrivateKey, SecretSlot, SecretValue, TokenKey, TokenSet,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use url::Url;

use crate::cli::{LoginFlow, SubjectTokenType};
use crate::config::{self, Connection, FileConfig};
use crate::error::{CliError, Result};
use crate::session::Context;
use crate::store::{Access, AliasMeta, Flow, JwtRenewal, Store};
use zeroize::Zeroizing;

/// The callback port the Salesforce CLI uses, and so many connected apps allow.
pub(crate) const DEFAULT_PORT: u16 = 1717;

/// The callback path, as the Salesforce CLI uses.
pub(crate) const CALLBACK_PATH: &str = "/OauthRedirect";

pub(crate) async fn run(flow: LoginFlow, ctx: &Context) -> Result<()> {
    // Before Salesforce is asked for anything: tokens that could not be kept would stay live
    // there, use one of the user's approvals of the app, and push out a working login.
    let store = ctx.open_store(Access::Write).await?;
    store.check_writable().await?;
    let transport = ctx.transport();
    // The connected app's secret the flow used (environment or prompt), kept with the login.
    let mut secret: Option<Zeroizing<String>> = None;
    // The client the flow ran with: which of the app's secrets Salesforce accepted.
    let used: Option<OAuthClient>;
    let (connection, tokens, kind, jwt) = match flow {
        LoginFlow::Web(args) => {
            let connection = Connection::resolve(&args.connection, &ctx.file)?;
            let port = args.port.or(ctx.file.port).unwrap_or(DEFAULT_PORT);
            let listener = bind(port).await?;
            let redirect = redirect_uri(&listener)?;
            secret = login_secret(connection.ask_secret)?;
            let app = config::app_with(
                &connection.client_id,
                connection.basic_auth,
                secret.as_deref().map(String::as_str),
                Some(&redirect),
            )?;
            let app = config::with_next_secret(app, None);
            let client = OAuthClient::new(connection.host.clone(), app);
            used = Some(client.clone());
            let params = AuthorizeParams {
                login_hint: args.login_hint.clone(),
                ..AuthorizeParams::scopes(connection.scopes.clone())
            };
            let no_browser = args.no_browser;
            let tokens = web_flow(
                &client,
                transport.as_ref(),
                listener,
                &params,
                Duration::from_secs(args.timeout),
                |url| {
                    let url = url.clone();
                    async move {
                        show_login_url(&url, no_browser);
                        Ok(())
                    }
                },
            )
            .await?;
            (connection, tokens, Flow::Web, None)
        }
        LoginFlow::Jwt(args) => {
            let connection = Connection::resolve(&args.connection, &ctx.file)?;
            let pem = std::fs::read_to_string(&args.key).map_err(|e| {
                CliError::usage(format!(
                    "cannot read the private key {} ({e}): pass --key with a PEM file",
                    args.key.display()
                ))
            })?;
            let client = login_client(&connection, false, &mut secret)?;
            used = Some(client.clone());
            let mut bearer = JwtBearer::new(args.username.clone(), PrivateKey::new(pem));
            if let Some(audience) = &args.audience {
                bearer = bearer.audience(audience.clone());
            }
            let tokens = client
                .jwt_bearer(transport.as_ref(), &bearer)
                .await
                .map_err(|e| login_error(&e, "jwt", &connection.alias))?;
            let key_file = std::fs::canonicalize(&args.key).unwrap_or(args.key.clone());
            let jwt = JwtRenewal {
                key_file,
                username: args.username,
                audience: args.audience,
            };
            (connection, tokens, Flow::Jwt, Some(jwt))
        }
        LoginFlow::Device(args) => {
            let connection = Connection::resolve(&args.connection, &ctx.file)?;
            let client = login_client(&connection, false, &mut secret)?;
            used = Some(client.clone());
            let scopes = connection.scopes.join(" ");
            let authorization = client
                .device_start(transport.as_ref(), Some(&scopes))
                .await
                .map_err(|e| login_error(&e, "device", &connection.alias))?;
            eprintln!(
                "To log in, open {} in any browser and enter the code {}",
                authorization.verification_uri, authorization.user_code
            );
            eprintln!("Waiting for you to approve...");
            let wait = client.device_wait(transport.as_ref(), &authorization, tokio::time::sleep);
            let tokens = tokio::time::timeout(Duration::from_secs(args.timeout), wait)
                .await
                .map_err(|_| {
                    CliError::other(format!(
                        "nobody approved the device code within {} seconds: run `sfauth login device` again",
                        args.timeout
                    ))
                })?
                .map_err(|e| login_error(&e, "device", &connection.alias))?;
            (connection, tokens, Flow::Device, None)
        }
        LoginFlow::ClientCredentials(args) => {
            let connection = Connection::resolve(&args.connection, &ctx.file)?;
            let client = login_client(&connection, true, &mut secret)?;
            used = Some(client.clone());
            let tokens = client
                .client_credentials(transport.as_ref())
                .await
                .map_err(|e| login_error(&e, "client-credentials", &connection.alias))?;
            (connection, tokens, Flow::ClientCredentials, None)
        }
        LoginFlow::Password(args) => {
            let connection = Connection::resolve(&args.connection, &ctx.file)?;
            let client = login_client(&connection, connection.ask_secret, &mut secret)?;
            used = Some(client.clone());
            let password = config::required_secret(
                "SFAUTH_PASSWORD",
                "password (with the security token appended)",
            )?;
            let tokens = client
                .password(
                    transport.as_ref(),
                    &args.username,
                    &Password::new(password.as_str()),
                )
                .await
                .map_err(|e| login_error(&e, "password", &connection.alias))?;
            (connection, tokens, Flow::Password, None)
        }
        LoginFlow::TokenExchange(args) => {
            let connection = Connection::resolve(&args.connection, &ctx.file)?;
            let client = login_client(&connection, connection.ask_secret, &mut secret)?;
            used = Some(client.clone());
            let subject = config::required_secret("SFAUTH_SUBJECT_TOKEN", "subject token")?;
            let kind = match args.subject_token_type {
                SubjectTokenType::AccessToken => token_type::ACCESS_TOKEN,
                SubjectTokenType::RefreshToken => token_type::REFRESH_TOKEN,
                SubjectTokenType::IdToken => token_type::ID_TOKEN,
                SubjectTokenType::Jwt => token_type::JWT,
                SubjectTokenType::Saml2 => token_type::SAML2,
            };
            let exchange = TokenExchange::new(SecretValue::new(subject.as_str()), kind);
            let tokens = client
                .token_exchange(transport.as_ref(), &exchange)
                .await
                .map_err(|e| login_error(&e, "token-exchange", &connection.alias))?;
            (connection, tokens, Flow::TokenExchange, None)
        }
    };
    // During a rotation the login keeps both secrets, unless Salesforce already refused the
    // current one: then it keeps the next one alone.
    let next = used
        .as_ref()
        .and_then(|client| client.app().next_secret())
        .map(|s| Zeroizing::new(s.expose_secret().to_owned()));
    let switched = used.as_ref().is_some_and(|client| {
        client.secret_switches() > 0 && client.secret_in_use() == Some(SecretSlot::Next)
    });
    let (secret, next) = if switched {
        eprintln!(
            "note: salesforce refused {} and accepted {}: the login keeps the new secret; set {} to it and unset {}",
            config::CLIENT_SECRET_ENV,
            config::NEXT_CLIENT_SECRET_ENV,
            config::CLIENT_SECRET_ENV,
            config::NEXT_CLIENT_SECRET_ENV
        );
        (next, None)
    } else {
        (secret, next)
    };
    let saved = save(
        &store,
        &ctx.file,
        &connection,
        tokens,
        kind,
        jwt,
        (
            secret.as_deref().map(String::as_str),
            next.as_deref().map(String::as_str),
        ),
        transport,
    )
    .await?;
    println!(
        "Logged in as {} (org {}) on {}; saved as alias {} in {}",
        saved
            .username
            .as_deref()
            .unwrap_or(saved.key.user_id().as_str()),
        saved.key.org_id(),
        saved.instance_url,
        connection.alias,
        store.location
    );
    Ok(())
}

/// What [`save`] stored.
pub(crate) struct Saved {
    pub(crate) key: TokenKey,
    pub(crate) username: Option<String>,
    pub(crate) instance_url: Url,
}

/// Stores a login result under `connection.alias` with its settings and `client_secret`,
/// replacing any older login of that alias. If the store refuses it, the tokens are revoked at
/// Salesforce (a login nobody can use must not stay live there) and the error says so.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site per caller, each naming every part"
)]
pub(crate) async fn save(
    store: &Store,
    file: &FileConfig,
    connection: &Connection,
    tokens: TokenSet,
    flow: Flow,
    jwt: Option<JwtRenewal>,
    (client_secret, next_client_secret): (Option<&str>, Option<&str>),
    transport: Arc<dyn HttpTransport>,
) -> Result<Saved> {
    let app = config::app_with(
        &connection.client_id,
        connection.basic_auth,
        client_secret,
        None,
    )?;
    let app = config::with_next_secret(app, next_client_secret);
    let client = OAuthClient::new(connection.host.clone(), app);
    // The username is shown by `status`; a failure to learn it is not a failed login.
    let username = client
        .userinfo(transport.as_ref(), &tokens.access_token)
        .await
        .ok()
        .and_then(|info| info.preferred_username);
    let instance_url = tokens.instance_url.clone();
    let key = TokenKey::new(
        &connection.host,
        &tokens.identity,
        &connection.client_id,
        &connection.alias,
    );
    let meta = AliasMeta {
        key: key.to_string(),
        host: connection.host.clone(),
        client_id: connection.client_id.clone(),
        flow,
        basic_auth: connection.basic_auth,
        username: username.clone(),
        jwt,
    };
    let spend = tokens.clone();
    if let Err(error) = store
        .save_login(
            &key,
            tokens,
            &meta,
            client_secret,
            next_client_secret,
            file.session_timeout(),
        )
        .await
    {
        let revoked = revoke_unsaved(&client, transport.as_ref(), &spend).await;
        let saving = CliError::store(&error, "saving the login", &store.location);
        return Err(CliError::new(
            saving.exit,
            format!("{}; {revoked}", saving.message),
        ));
    }
    store.remove_other_records(&connection.alias, &key).await?;
    Ok(Saved {
        key,
        username,
        instance_url,
    })
}

/// Revokes tokens that could not be saved, and says what happened, for the error message.
async fn revoke_unsaved(
    client: &OAuthClient,
    transport: &dyn HttpTransport,
    tokens: &TokenSet,
) -> String {
    // The refresh token takes its access tokens with it.
    let (token, what): (SecretValue, &str) = match &tokens.refresh_token {
        Some(refresh) => (refresh.clone().into(), "refresh token"),
        None => (tokens.access_token.clone().into(), "access token"),
    };
    match client.revoke(transport, &token, RevokeMethod::Post).await {
        Ok(()) => format!(
            "the new {what} was revoked at salesforce, so nothing was left live: fix the store, then log in again"
        ),
        Err(e) => format!(
            "revoking the new {what} failed too ({}): it stays live at salesforce until it expires or is revoked in Setup; fix the store, then log in again",
            crate::error::chain(&e)
        ),
    }
}

/// The connected app's secret for a login: `SFAUTH_CLIENT_SECRET`, or a prompt when `ask`.
fn login_secret(ask: bool) -> Result<Option<Zeroizing<String>>> {
    config::secret(config::CLIENT_SECRET_ENV, "connected app secret", ask)
}

fn login_client(
    connection: &Connection,
    ask_secret: bool,
    secret: &mut Option<Zeroizing<String>>,
) -> Result<OAuthClient> {
    *secret = login_secret(ask_secret || connection.ask_secret)?;
    let app = config::app_with(
        &connection.client_id,
        connection.basic_auth,
        secret.as_deref().map(String::as_str),
        None,
    )?;
    let app = config::with_next_secret(app, None);
    Ok(OAuthClient::new(connection.host.clone(), app))
}

fn login_error(error: &sfauth::oauth::Error, flow: &str, alias: &str) -> CliError {
    CliError::login(
        error,
        &format!(
            "check the username, key and connected app, then run `sfauth login {flow} --alias {alias}` again"
        ),
    )
}

fn show_login_url(url: &Url, no_browser: bool) {
    if !no_browser && webbrowser::open(url.as_str()).is_ok() {
        eprintln!("Opened your browser to log in. If it did not open, visit:");
    } else {
        eprintln!("Open this URL in a browser to log in:");
    }
    eprintln!("{url}");
}

/// Binds the callback listener on 127.0.0.1.
pub(crate) async fn bind(port: u16) -> Result<TcpListener> {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .map_err(|e| {
            CliError::other(format!(
                "cannot listen on 127.0.0.1:{port} for the login callback ({e}): free the port or pass --port"
            ))
        })
}

/// `http://localhost:PORT/OauthRedirect` for the listener's port.
pub(crate) fn redirect_uri(listener: &TcpListener) -> Result<String> {
    let port = listener
        .local_addr()
        .map_err(|e| CliError::other(format!("the callback listener has no address ({e})")))?
        .port();
    Ok(format!("http://localhost:{port}{CALLBACK_PATH}"))
}

/// The web server flow with PKCE and `state`: builds the authorization URL, hands it to
/// `open` (a browser, a printed line, or the demo's HTTP client), waits for the redirect on
/// `listener`, checks `state` and exchanges the code.
pub(crate) async fn web_flow<F, Fut>(
    client: &OAuthClient,
    transport: &dyn HttpTransport,
    listener: TcpListener,
    params: &AuthorizeParams,
    timeout: Duration,
    open: F,
) -> Result<TokenSet>
where
    F: FnOnce(&Url) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let request = client
        .authorize_url(params)
        .map_err(|e| CliError::core(&e, "login", "check --instance and --authorize-url"))?;
    let base = redirect_uri(&listener)?;
    let (sender, receiver) = oneshot::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let state = Arc::new(CallbackState {
        sender: Mutex::new(Some(sender)),
        base: Url::parse(&base).map_err(|e| CliError::other(format!("bad callback URL ({e})")))?,
    });
    let router = axum::Router::new().fallback(callback).with_state(state);
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    let result = async {
        open(&request.url).await?;
        let callback = tokio::time::timeout(timeout, receiver)
            .await
            .map_err(|_| {
                CliError::other(format!(
                    "no login came back within {} seconds: run `sfauth login web` again (or raise --timeout)",
                    timeout.as_secs()
                ))
            })?
            .map_err(|_| CliError::other("the callback listener stopped: run `sfauth login web` again"))?;
        let code = client.parse_callback(&callback, &request.state).map_err(|e| {
            CliError::core(&e, "login", "run `sfauth login web` again and approve the access")
        })?;
        client
            .exchange_code(transport, &code, request.pkce_verifier.as_ref())
            .await
            .map_err(|e| {
                CliError::login(
                    &e,
                    "check the connected app (SFAUTH_CLIENT_SECRET if it requires its secret) and run `sfauth login web` again",
                )
            })
    }
    .await;
    let _ = stop.send(());
    let _ = server.await;
    result
}

struct CallbackState {
    sender: Mutex<Option<oneshot::Sender<Url>>>,
    base: Url,
}

async fn callback(State(state): State<Arc<CallbackState>>, uri: Uri) -> (StatusCode, Html<String>) {
    if uri.path() != CALLBACK_PATH {
        return (
            StatusCode::NOT_FOUND,
            Html(page("Not found", "This is the sfauth login callback.")),
        );
    }
    let Ok(url) = state.base.join(&uri.to_string()) else {
        return (
            StatusCode::BAD_REQUEST,
            Html(page("Bad request", "The callback URL is malformed.")),
        );
    };
    let error = url
        .query_pairs()
        .find(|(name, _)| name == "error_description" || name == "error")
        .map(|(_, value)| value.into_owned());
    let sender = state
        .sender
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(sender) = sender {
        let _ = sender.send(url);
    } else {
        return (
            StatusCode::CONFLICT,
            Html(page(
                "Already done",
                "This login was already handled; you can close this tab.",
            )),
        );
    }
    match error {
        Some(error) => (
            StatusCode::OK,
            Html(page(
                "Login failed",
                &format!(
                    "Salesforce said: {}. Return to the terminal for details.",
                    escape(&error)
                ),
            )),
        ),
        None => (
            StatusCode::OK,
            Html(page(
                "Logged in",
                "sfauth received the authorization. You can close this tab and return to the terminal.",
            )),
        ),
    }
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>sfauth: {title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto}}</style>\
         </head><body><h1 id=\"sfauth-result\">{title}</h1><p>{body}</p></body></html>"
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
