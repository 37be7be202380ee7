//! What every command shares: the parsed config, the HTTP transport, and a `TokenManager` for
//! one alias.

use std::sync::Arc;
use std::time::Duration;

use sfauth::oauth::flows::JwtBearer;
use sfauth::oauth::http::HttpTransport;
use sfauth::oauth::{OAuthClient, PrivateKey};
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
/// their own).
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
    Ok(OAuthClient::new(resolved.meta.host.clone(), app)
        .with_session_timeout(file.session_timeout()))
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
