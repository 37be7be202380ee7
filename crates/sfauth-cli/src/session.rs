//! What every command shares: the parsed config, the HTTP transport, and a `TokenManager` for
//! one alias.

use std::sync::Arc;
use std::time::Duration;

use sfauth::oauth::flows::JwtBearer;
use sfauth::oauth::http::HttpTransport;
use sfauth::oauth::{OAuthClient, PrivateKey, SecretSlot, TokenKey};
use sfauth::transport::Proxy;
use sfauth::{RefreshPolicy, Renewal, TokenManager};

use crate::config::{self, FileConfig};
use crate::error::{CliError, Result};
use crate::store::{Access, Flow, Resolved, Store};

/// The global options, merged with the config file.
pub(crate) struct Context {
    pub(crate) file: FileConfig,
    pub(crate) store_url: Option<String>,
    /// Where requests to Salesforce leave from (`--proxy`, see [`config::proxy`]).
    pub(crate) proxy: Proxy,
}

impl Context {
    /// Opens the store of `--store`, `SFAUTH_STORE` or the config file, for reading (which
    /// creates nothing) or writing.
    pub(crate) async fn open_store(&self, access: Access) -> Result<Store> {
        Store::open(
            self.store_url.as_deref().or(self.file.store.as_deref()),
            access,
        )
        .await
    }

    /// The HTTP transport of every request this command sends, through the configured proxy.
    pub(crate) fn transport(&self) -> Arc<dyn HttpTransport> {
        transport(&self.proxy)
    }

    /// The alias given, or the configured default.
    pub(crate) fn alias(&self, given: Option<&str>) -> String {
        config::alias(given, &self.file)
    }
}

/// The production transport: reqwest over rustls through `proxy`, with a short retry on network
/// errors, built on the first request (see `LazyTransport`: a cached token needs no TLS roots).
pub(crate) fn transport(proxy: &Proxy) -> Arc<dyn HttpTransport> {
    Arc::new(crate::lazy_transport::LazyTransport::new(
        sfauth::transport::DEFAULT_MAX_BODY_BYTES,
        proxy.clone(),
    ))
}

/// The refresh policy of a short-lived process: few attempts, so that a dead network fails fast.
pub(crate) fn policy() -> RefreshPolicy {
    RefreshPolicy::default()
        .attempts(2)
        .backoff(Duration::from_millis(200))
}

/// The OAuth client of an alias: its host and app, with the secret stored with the login, else
/// the one in `SFAUTH_CLIENT_SECRET` (so that logins of two connected apps each refresh with
/// their own), and during a rotation the next secret (`SFAUTH_NEXT_CLIENT_SECRET`, else the
/// one stored with the login). The client is watched: should Salesforce refuse the secret and
/// accept the next one, [`keep_accepted_secrets`] makes the login keep the next one.
pub(crate) fn client_for(resolved: &Resolved, file: &FileConfig) -> Result<OAuthClient> {
    let app = match &resolved.client_secret {
        Some(secret) => config::app_with(
            &resolved.meta.client_id,
            resolved.meta.basic_auth,
            Some(secret.expose_secret()),
            None,
        )?,
        None => config::app(
            &resolved.meta.client_id,
            resolved.meta.basic_auth,
            false,
            None,
        )?,
    };
    let app = config::with_next_secret(
        app,
        resolved
            .next_client_secret
            .as_ref()
            .map(|s| s.expose_secret()),
    );
    let client = OAuthClient::new(resolved.meta.host.clone(), app)
        .with_session_timeout(file.session_timeout());
    WATCHED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Watched {
            alias: resolved.alias.clone(),
            key: resolved.key.clone(),
            // Clones share what the client learns, such as which secret works.
            client: client.clone(),
        });
    Ok(client)
}

/// A login's client, watched for a switch to the next secret during this command.
struct Watched {
    alias: String,
    key: TokenKey,
    client: OAuthClient,
}

/// Every client [`client_for`] made in this process.
static WATCHED: std::sync::Mutex<Vec<Watched>> = std::sync::Mutex::new(Vec::new());

/// After a command: each login whose stored secret Salesforce refused, and whose next secret
/// it accepted, keeps the next one from now on (so that later commands need no
/// `SFAUTH_NEXT_CLIENT_SECRET` and send no refused request first), with a note on stderr that
/// the old secret can be retired. A login using `SFAUTH_CLIENT_SECRET` gets the note only.
/// Never fails the command: its own work is done.
pub(crate) async fn keep_accepted_secrets(ctx: &Context) {
    let switched: Vec<Watched> = std::mem::take(
        &mut *WATCHED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_iter()
    .filter(|w| {
        w.client.secret_switches() > 0 && w.client.secret_in_use() == Some(SecretSlot::Next)
    })
    .collect();
    // One note per login, however many clients a command made for it.
    let mut seen = std::collections::HashSet::new();
    let switched: Vec<Watched> = switched
        .into_iter()
        .filter(|w| seen.insert(w.key.to_string()))
        .collect();
    if switched.is_empty() {
        return;
    }
    let store = match ctx.open_store(Access::Write).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!(
                "warning: salesforce accepted only the next consumer secret, and the store cannot be opened to keep it ({}): set {} to it",
                e.message,
                config::CLIENT_SECRET_ENV
            );
            return;
        }
    };
    for watched in switched {
        let Some(next) = watched.client.app().secret(SecretSlot::Next) else {
            continue;
        };
        let alias = &watched.alias;
        match store
            .keep_client_secret(&watched.key, next.expose_secret())
            .await
        {
            Ok(true) => eprintln!(
                "note: salesforce refused the consumer secret stored with alias {alias} and accepted the next one: the login keeps the next one from now on, and the old one can be retired once every login of the app says so (set {} to the new secret, unset {})",
                config::CLIENT_SECRET_ENV,
                config::NEXT_CLIENT_SECRET_ENV
            ),
            Ok(false) => eprintln!(
                "note: salesforce refused the consumer secret of alias {alias} and accepted {}: set {} to the new secret and unset {}",
                config::NEXT_CLIENT_SECRET_ENV,
                config::CLIENT_SECRET_ENV,
                config::NEXT_CLIENT_SECRET_ENV
            ),
            Err(e) => eprintln!(
                "warning: salesforce accepted only the next consumer secret of alias {alias}, and the login could not keep it ({}): keep {} set",
                CliError::store(&e, "keeping the new secret", &store.location).message,
                config::NEXT_CLIENT_SECRET_ENV
            ),
        }
    }
}

/// A manager for `resolved`, with its renewal (JWT, client credentials) installed.
pub(crate) async fn manager_for(
    store: &Store,
    resolved: &Resolved,
    file: &FileConfig,
    transport: Arc<dyn HttpTransport>,
) -> Result<TokenManager> {
    let client = client_for(resolved, file)?;
    let manager = TokenManager::builder(client)
        .store(store.store.clone())
        .transport(transport)
        .policy(policy())
        .build()
        .await
        .map_err(|e| CliError::manager(&e, &resolved.alias, resolved.meta.flow.login_command()))?;
    register(&manager);
    let renewal = match (&resolved.meta.jwt, resolved.meta.flow) {
        (Some(jwt), _) => {
            let pem = std::fs::read_to_string(&jwt.key_file).map_err(|e| {
                CliError::other(format!(
                    "cannot read the JWT key {} of alias {} ({e}): restore it or run `sfauth login jwt --alias {}`",
                    jwt.key_file.display(),
                    resolved.alias,
                    resolved.alias
                ))
            })?;
            let mut bearer = JwtBearer::new(jwt.username.clone(), PrivateKey::new(pem));
            if let Some(audience) = &jwt.audience {
                bearer = bearer.audience(audience.clone());
            }
            Some(Renewal::JwtBearer(bearer))
        }
        (None, Flow::ClientCredentials) => Some(Renewal::ClientCredentials),
        _ => None,
    };
    if let Some(renewal) = renewal {
        manager
            .set_renewal(&resolved.key, renewal)
            .await
            .map_err(|e| {
                CliError::manager(&e, &resolved.alias, resolved.meta.flow.login_command())
            })?;
    }
    Ok(manager)
}

/// The error of a manager call for `resolved`, with the right login command.
pub(crate) fn manager_error(error: &sfauth::Error, resolved: &Resolved) -> CliError {
    CliError::manager(error, &resolved.alias, resolved.meta.flow.login_command())
}

/// Every manager this process built, so that a signal can shut them down (see `main.rs`).
static MANAGERS: std::sync::Mutex<Vec<TokenManager>> = std::sync::Mutex::new(Vec::new());

/// Remembers `manager` for [`shutdown_all`].
pub(crate) fn register(manager: &TokenManager) {
    MANAGERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(manager.clone());
}

/// Shuts down every registered manager: refreshes waiting for Salesforce's answer get `grace`
/// to save it, then every refresh lease is released, so the next command does not wait.
pub(crate) async fn shutdown_all(grace: std::time::Duration) {
    let managers = std::mem::take(
        &mut *MANAGERS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    for manager in managers {
        manager.shutdown(grace).await;
    }
}
