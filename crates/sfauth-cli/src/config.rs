//! Configuration: the TOML file, and the merge of flags, environment and file.
//!
//! Flags win over `SFAUTH_*` environment variables (clap reads both, flag first), which win over
//! the file (`--config FILE`, else `$XDG_CONFIG_HOME/sfauth/config.toml` when it exists). The
//! file holds no secret: secrets come from the environment or a prompt only.

use clap::Args;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sfauth::oauth::{ClientAuth, ConnectedApp, Endpoints, LoginHost};
use sfauth::transport::Proxy;
use url::Url;
use zeroize::Zeroizing;

use crate::error::{CliError, Result};

/// The environment variable holding the connected app's secret.
pub(crate) const CLIENT_SECRET_ENV: &str = "SFAUTH_CLIENT_SECRET";

/// The environment variable holding the connected app's next secret, while Salesforce has a
/// new one staged.
pub(crate) const NEXT_CLIENT_SECRET_ENV: &str = "SFAUTH_NEXT_CLIENT_SECRET";

/// The scopes asked for when none are configured.
pub(crate) const DEFAULT_SCOPES: &str = "api id refresh_token";

/// The alias used when none is given.
pub(crate) const DEFAULT_ALIAS: &str = "default";

/// The config file, every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) store: Option<String>,
    pub(crate) instance: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) alias: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) scopes: Option<String>,
    pub(crate) basic_auth: Option<bool>,
    pub(crate) token_url: Option<String>,
    pub(crate) authorize_url: Option<String>,
    pub(crate) revoke_url: Option<String>,
    pub(crate) introspect_url: Option<String>,
    pub(crate) userinfo_url: Option<String>,
    /// The org's session timeout in seconds, for the expiry estimate (default 7200).
    pub(crate) session_timeout_secs: Option<u64>,
    /// The egress proxy (`http(s)://HOST:PORT` without a password, or `none`).
    pub(crate) proxy: Option<String>,
    /// Hosts that bypass the proxy, in `NO_PROXY` syntax.
    pub(crate) no_proxy: Option<String>,
}

/// Salesforce's longest session timeout, 24 hours.
const MAX_SESSION_SECS: u64 = 24 * 60 * 60;

impl FileConfig {
    /// Reads `explicit` (which must exist), else the default file if it exists.
    pub(crate) fn load(explicit: Option<&Path>) -> Result<Self> {
        let (path, required) = match explicit {
            Some(path) => (path.to_path_buf(), true),
            None => match default_path() {
                Some(path) => (path, false),
                None => return Ok(Self::default()),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Self::default());
            }
            Err(e) => {
                return Err(CliError::usage(format!(
                    "cannot read the config file {} ({e}): fix the --config path",
                    path.display()
                )));
            }
        };
        let config: Self = toml::from_str(&text).map_err(|e| {
            CliError::usage(format!(
                "the config file {} is not valid ({}): fix it or pass another --config",
                path.display(),
                e.message()
            ))
        })?;
        if let Some(secs) = config.session_timeout_secs
            && !(1..=MAX_SESSION_SECS).contains(&secs)
        {
            return Err(CliError::usage(format!(
                "session_timeout_secs = {secs} in {} is out of range: Salesforce sessions last \
                 from 15 minutes to 24 hours, so give a number of seconds from 1 to {MAX_SESSION_SECS}",
                path.display()
            )));
        }
        Ok(config)
    }

    /// The session timeout for expiry estimates.
    pub(crate) fn session_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            self.session_timeout_secs
                .unwrap_or(2 * 60 * 60)
                .clamp(1, MAX_SESSION_SECS),
        )
    }
}

/// `$XDG_CONFIG_HOME/sfauth/config.toml` (or the platform's config directory).
pub(crate) fn default_path() -> Option<PathBuf> {
    dirs::config_dir().map(|dir| dir.join("sfauth").join("config.toml"))
}

/// The alias to use: the given one, else `SFAUTH_ALIAS`, else the file's, else `default`.
pub(crate) fn alias(given: Option<&str>, file: &FileConfig) -> String {
    given
        .map(str::to_owned)
        .or_else(|| std::env::var("SFAUTH_ALIAS").ok().filter(|a| !a.is_empty()))
        .or_else(|| file.alias.clone())
        .unwrap_or_else(|| DEFAULT_ALIAS.to_owned())
}

/// Everything a login needs besides the flow's own inputs, merged from flags, env and file.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    pub(crate) host: LoginHost,
    pub(crate) client_id: String,
    pub(crate) alias: String,
    pub(crate) basic_auth: bool,
    pub(crate) ask_secret: bool,
    pub(crate) scopes: Vec<String>,
}

impl Connection {
    pub(crate) fn resolve(args: &ConnectionArgs, file: &FileConfig) -> Result<Self> {
        let instance = args
            .instance
            .clone()
            .or_else(|| file.instance.clone())
            .unwrap_or_else(|| "production".to_owned());
        let mut host: LoginHost = parse_instance(&instance)?;
        let overrides = [
            (
                "--token-url",
                args.token_url.clone().or(file.token_url.clone()),
            ),
            (
                "--authorize-url",
                args.authorize_url.clone().or(file.authorize_url.clone()),
            ),
            (
                "--revoke-url",
                args.revoke_url.clone().or(file.revoke_url.clone()),
            ),
            (
                "--introspect-url",
                args.introspect_url.clone().or(file.introspect_url.clone()),
            ),
            (
                "--userinfo-url",
                args.userinfo_url.clone().or(file.userinfo_url.clone()),
            ),
        ];
        if overrides.iter().any(|(_, value)| value.is_some()) {
            let mut endpoints: Endpoints = host.endpoints();
            for (flag, value) in overrides {
                let Some(value) = value else { continue };
                let url = parse_url(flag, &value)?;
                endpoints = match flag {
                    "--token-url" => endpoints.with_token(url),
                    "--authorize-url" => endpoints.with_authorize(url),
                    "--revoke-url" => endpoints.with_revoke(url),
                    "--introspect-url" => endpoints.with_introspect(url),
                    _ => endpoints.with_userinfo(url),
                };
            }
            host = LoginHost::Custom(Box::new(endpoints));
        }
        let client_id = args
            .client_id
            .clone()
            .or_else(|| file.client_id.clone())
            .filter(|id| !id.trim().is_empty())
            .ok_or_else(|| {
                CliError::usage(
                    "no connected app given: pass --client-id KEY (or set SFAUTH_CLIENT_ID, or client_id in the config file)",
                )
            })?;
        let scopes = args
            .scopes
            .clone()
            .or_else(|| file.scopes.clone())
            .unwrap_or_else(|| DEFAULT_SCOPES.to_owned());
        Ok(Self {
            host,
            client_id,
            alias: alias(args.alias.as_deref(), file),
            basic_auth: args.basic_auth || file.basic_auth.unwrap_or(false),
            ask_secret: args.ask_secret,
            scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        })
    }
}

/// The environment variable holding the egress proxy's URL (the one place for a URL with a
/// password).
pub(crate) const PROXY_ENV: &str = "SFAUTH_PROXY";

/// Where requests leave from: `--proxy`, else `SFAUTH_PROXY`, else the file's `proxy`, each a
/// URL or `none`; else the environment's proxy variables as curl reads them. An explicit proxy
/// URL is bypassed for `--no-proxy` (or `SFAUTH_NO_PROXY`, or the file's `no_proxy`), else for
/// the environment's `no_proxy`/`NO_PROXY`, as curl does.
///
/// A proxy's password is a secret: it is refused on the command line (where every user of the
/// machine reads it in the process list) and in the file (which holds no secret), and
/// registered for scrubbing from every message. A value is never quoted back: it may hold one.
pub(crate) fn proxy(
    flag: Option<&str>,
    no_proxy_flag: Option<&str>,
    file: &FileConfig,
) -> Result<Proxy> {
    let env = std::env::var(PROXY_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty());
    let (value, source, secret_allowed) = match (flag, env, file.proxy.as_deref()) {
        (Some(value), _, _) => (value.to_owned(), "--proxy", false),
        (None, Some(value), _) => (value, PROXY_ENV, true),
        (None, None, Some(value)) => (value.to_owned(), "`proxy` in the config file", false),
        (None, None, None) => return Ok(Proxy::Environment),
    };
    let value = value.trim();
    if value.eq_ignore_ascii_case("none") {
        return Ok(Proxy::None);
    }
    if let Ok(url) = Url::parse(value)
        && let Some(password) = url.password()
    {
        register_proxy_password(password);
        if !secret_allowed {
            return Err(CliError::usage(format!(
                "{source} holds a proxy URL with a password, which must not be on the command line or in the config file: set {PROXY_ENV} to the URL instead"
            )));
        }
    }
    let proxy = Proxy::url(value).map_err(|e| {
        CliError::usage(format!(
            "{source} is not a usable proxy ({e}): give http://HOST:PORT, https://HOST:PORT, or none"
        ))
    })?;
    let no_proxy = no_proxy_flag
        .map(str::to_owned)
        .or_else(|| file.no_proxy.clone())
        .or_else(|| {
            ["no_proxy", "NO_PROXY"]
                .iter()
                .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        });
    Ok(match no_proxy {
        Some(hosts) => proxy.no_proxy(hosts),
        None => proxy,
    })
}

/// Registers a proxy URL's password, as written and percent-decoded, for [`crate::error::scrub`].
fn register_proxy_password(password: &str) {
    crate::error::register_secret(password);
    let decoded = percent_decode(password);
    if decoded.as_str() != password {
        crate::error::register_secret(&decoded);
    }
}

fn percent_decode(text: &str) -> Zeroizing<String> {
    Zeroizing::new(
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// Parses `--instance`: `production`, `sandbox`, or a URL.
pub(crate) fn parse_instance(instance: &str) -> Result<LoginHost> {
    if !matches!(instance.trim(), "production" | "login" | "sandbox" | "test") {
        parse_url("--instance", instance)?;
    }
    instance.parse().map_err(|e| {
        CliError::usage(format!(
            "--instance {instance} is not usable ({e}): give production, sandbox, or an https URL such as https://acme.my.salesforce.com"
        ))
    })
}

fn parse_url(flag: &str, value: &str) -> Result<Url> {
    let url = Url::parse(value.trim()).map_err(|e| {
        CliError::usage(format!(
            "{flag} {value} is not a valid URL ({e}): give an absolute URL such as https://acme.my.salesforce.com"
        ))
    })?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(CliError::usage(format!(
            "{flag} {value} is not an http(s) URL: give an absolute URL such as https://acme.my.salesforce.com"
        )));
    }
    Ok(url)
}

/// A secret from the environment variable `var`, else a prompt on the terminal when `ask` is
/// set; `None` when neither gives one.
pub(crate) fn secret(var: &str, prompt: &str, ask: bool) -> Result<Option<Zeroizing<String>>> {
    if let Ok(value) = std::env::var(var)
        && !value.is_empty()
    {
        return Ok(Some(Zeroizing::new(value)));
    }
    if !ask {
        return Ok(None);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(format!(
            "{prompt} is needed and there is no terminal to ask on: set {var}"
        )));
    }
    let value = rpassword::prompt_password(format!("{prompt}: ")).map_err(|e| {
        CliError::other(format!(
            "cannot read {prompt} from the terminal ({e}): set {var} instead"
        ))
    })?;
    Ok(Some(Zeroizing::new(value)))
}

/// A secret that must be given: from `var` or a prompt.
pub(crate) fn required_secret(var: &str, prompt: &str) -> Result<Zeroizing<String>> {
    secret(var, prompt, true)?
        .ok_or_else(|| CliError::usage(format!("{prompt} is needed: set {var}")))
}

/// The connected app for `client_id`, with the secret from `SFAUTH_CLIENT_SECRET` (or a prompt
/// when `ask`), and the redirect URI if any.
pub(crate) fn app(
    client_id: &str,
    basic_auth: bool,
    ask: bool,
    redirect_uri: Option<&str>,
) -> Result<ConnectedApp> {
    let secret = secret(CLIENT_SECRET_ENV, "connected app secret", ask)?;
    app_with(
        client_id,
        basic_auth,
        secret.as_ref().map(|s| s.as_str()),
        redirect_uri,
    )
}

/// The connected app for `client_id` with `secret`, and the redirect URI if any.
pub(crate) fn app_with(
    client_id: &str,
    basic_auth: bool,
    secret: Option<&str>,
    redirect_uri: Option<&str>,
) -> Result<ConnectedApp> {
    let mut app = ConnectedApp::new(client_id);
    if let Some(secret) = secret {
        app = app.with_secret(secret);
    }
    if basic_auth {
        app = app.with_client_auth(ClientAuth::Basic);
    }
    if let Some(uri) = redirect_uri {
        app = app
            .with_redirect_uri(uri)
            .map_err(|e| CliError::usage(format!("bad callback URL {uri} ({e})")))?;
    }
    Ok(app)
}

/// `app` with the connected app's next secret, during a rotation: `SFAUTH_NEXT_CLIENT_SECRET`,
/// else `stored` (the one kept with the login). Salesforce refusing the current secret then
/// gets the same request sent once more with the next one (nothing was spent: client
/// authentication comes before the grant). Only an app with a secret gets one, and only a
/// different one.
pub(crate) fn with_next_secret(app: ConnectedApp, stored: Option<&str>) -> ConnectedApp {
    let from_env = std::env::var(NEXT_CLIENT_SECRET_ENV)
        .ok()
        .filter(|s| !s.is_empty())
        .map(Zeroizing::new);
    let next = from_env.as_deref().map(String::as_str).or(stored);
    match (app.client_secret(), next) {
        (Some(current), Some(next)) if current.expose_secret() != next => {
            app.with_next_secret(next)
        }
        _ => app,
    }
}

// The command line's connection options live beside the configuration they override, so that
// the configuration (read by shell completion too) does not depend on the whole command line.
/// Where to log in, with which connected app, and under which alias.
#[derive(Debug, Args, Clone)]
pub(crate) struct ConnectionArgs {
    /// The login host: production, sandbox, or a URL (My Domain, Experience Cloud site, proxy).
    #[arg(long, env = "SFAUTH_INSTANCE", value_name = "production|sandbox|URL")]
    pub(crate) instance: Option<String>,
    /// The connected app's consumer key.
    #[arg(long, env = "SFAUTH_CLIENT_ID", value_name = "KEY")]
    pub(crate) client_id: Option<String>,
    /// The name to save this login under, used by every later command.
    #[arg(long, env = "SFAUTH_ALIAS", value_name = "NAME")]
    pub(crate) alias: Option<String>,
    /// Send the client id and secret with HTTP Basic instead of in the form body.
    #[arg(long)]
    pub(crate) basic_auth: bool,
    /// Prompt for the connected app's secret when SFAUTH_CLIENT_SECRET is not set.
    #[arg(long)]
    pub(crate) ask_secret: bool,
    /// Override the token endpoint (for proxies and OAuth servers with other paths).
    #[arg(long, env = "SFAUTH_TOKEN_URL", value_name = "URL")]
    pub(crate) token_url: Option<String>,
    /// Override the authorization endpoint.
    #[arg(long, env = "SFAUTH_AUTHORIZE_URL", value_name = "URL")]
    pub(crate) authorize_url: Option<String>,
    /// Override the revocation endpoint.
    #[arg(long, env = "SFAUTH_REVOKE_URL", value_name = "URL")]
    pub(crate) revoke_url: Option<String>,
    /// Override the introspection endpoint.
    #[arg(long, env = "SFAUTH_INTROSPECT_URL", value_name = "URL")]
    pub(crate) introspect_url: Option<String>,
    /// Override the userinfo endpoint.
    #[arg(long, env = "SFAUTH_USERINFO_URL", value_name = "URL")]
    pub(crate) userinfo_url: Option<String>,
    /// Scopes to ask for, space-separated (default: "api id refresh_token").
    #[arg(long, env = "SFAUTH_SCOPES", value_name = "SCOPES")]
    pub(crate) scopes: Option<String>,
}
