//! The command line, as clap derive types: every flag, its environment variable and its help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub(crate) use crate::config::ConnectionArgs;

const ABOUT: &str = "Log in to Salesforce, keep OAuth tokens fresh, print them for scripts";

const LONG_ABOUT: &str = "\
Log in to Salesforce, keep OAuth tokens fresh, print them for scripts.

Each login is saved under an alias (default: `default`) in an encrypted token store. Later
commands refresh the access token when needed, rotating refresh tokens safely, and tell you
clearly when a human must log in again.

Try it with no Salesforce org at all: `sfauth demo`.";

const AFTER_HELP: &str = "\
Configuration, highest precedence first:
  1. flags                     (--instance, --client-id, --store, ...)
  2. environment variables     (SFAUTH_INSTANCE, SFAUTH_CLIENT_ID, SFAUTH_STORE, ...)
  3. the TOML config file      (--config FILE, else $XDG_CONFIG_HOME/sfauth/config.toml)
Secrets never go on the command line: SFAUTH_CLIENT_SECRET, SFAUTH_PASSWORD,
SFAUTH_SUBJECT_TOKEN and SFAUTH_EXPORT_PASSPHRASE are read from the environment, else
prompted for on the terminal; a proxy URL with a password goes in SFAUTH_PROXY. During a
consumer secret rotation, SFAUTH_NEXT_CLIENT_SECRET holds the app's new secret.

Exit codes: 0 ok, 1 other failure, 2 usage, 3 re-authorization required,
4 network or transient failure (try again).

Examples:
  sfauth demo
  sfauth login web --instance sandbox --client-id 3MVG9... --alias dev
  curl -H \"Authorization: Bearer $(sfauth token dev)\" ...
  sfauth status --json
  sfauth refresh --all --concurrency 8";

/// The `sfauth` command line.
#[derive(Debug, Parser)]
#[command(
    name = "sfauth",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    propagate_version = true
)]
pub(crate) struct Cli {
    /// Where tokens are kept: sqlite://PATH (default: the user data directory's
    /// sfauth/tokens.db), file://DIR, or a store shared by a fleet:
    /// redis://[:PASSWORD@]HOST[:PORT][/DB][?prefix=P] or
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?schema=S] (both take ?connect_timeout=SECS,
    /// default 5, and need SFAUTH_STORE_KEY).
    // The value is hidden in `--help`: SFAUTH_STORE may hold a password.
    #[arg(
        long,
        global = true,
        env = "SFAUTH_STORE",
        value_name = "URL",
        hide_env_values = true
    )]
    pub(crate) store: Option<String>,

    /// The TOML config file (default: $XDG_CONFIG_HOME/sfauth/config.toml, if it exists).
    #[arg(long, global = true, env = "SFAUTH_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Send requests to Salesforce through this HTTP or HTTPS proxy (`http://HOST:PORT`), or
    /// `none` to ignore the environment's proxy (default: https_proxy/HTTPS_PROXY, http_proxy,
    /// all_proxy/ALL_PROXY and no_proxy/NO_PROXY, as curl reads them). Also SFAUTH_PROXY, or
    /// `proxy` in the config file; a proxy URL with a password only in SFAUTH_PROXY.
    #[arg(long, global = true, value_name = "URL|none")]
    pub(crate) proxy: Option<String>,

    /// With a proxy URL: hosts that go direct, comma-separated as in NO_PROXY (default: the
    /// environment's no_proxy/NO_PROXY).
    #[arg(long, global = true, env = "SFAUTH_NO_PROXY", value_name = "HOSTS")]
    pub(crate) no_proxy: Option<String>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing would only obscure the clap derive"
)]
pub(crate) enum Command {
    /// Walk through the life of a token against an emulator started in this process.
    ///
    /// Needs no Salesforce org and no setup: web login with PKCE, an API call, expiry and
    /// automatic refresh with rotation, a revoke, and the re-authorization message.
    Demo,
    /// Log in with one of Salesforce's OAuth flows and save the tokens under an alias.
    #[command(subcommand)]
    Login(LoginFlow),
    /// Print a valid access token for ALIAS on stdout, refreshing it if needed.
    ///
    /// For scripts: `curl -H "Authorization: Bearer $(sfauth token prod)" ...`. Nothing else is
    /// printed on stdout.
    Token(TokenArgs),
    /// Show every stored login as a table (alias, org, user, instance, last refresh, expiry
    /// estimate, status).
    Status(ListArgs),
    /// The same as `status`.
    List(ListArgs),
    /// Refresh the access token of ALIAS, or of every login with --all.
    Refresh(RefreshArgs),
    /// Revoke the tokens of ALIAS at Salesforce and forget them locally.
    Revoke(AliasArgs),
    /// Remove the login ALIAS: revoke its tokens, then delete it from the store.
    ///
    /// With --force, a login that cannot be opened (sealed with another key, damaged), or
    /// whose tokens Salesforce cannot be reached to revoke, is deleted anyway.
    #[command(visible_alias = "remove")]
    Logout(LogoutArgs),
    /// Ask Salesforce whether the access token of ALIAS is active, and until when.
    Introspect(AliasJsonArgs),
    /// Show who ALIAS is logged in as (Salesforce's userinfo endpoint).
    Whoami(AliasJsonArgs),
    /// Write logins to a file encrypted with a passphrase, to move them to another machine.
    Export(ExportArgs),
    /// Read logins from a file written by `sfauth export`, or from Salesforce's CLI (--from-sf).
    Import(ImportCommand),
    /// Send an authenticated REST request to ALIAS's instance and print the answer.
    Api(ApiArgs),
    /// Open the org in a browser through a one-time frontdoor URL (or print it: --url-only).
    Open(OpenArgs),
    /// Check a login against Salesforce's rules and what usually breaks, with a fix for each.
    Doctor(DoctorArgs),
    /// Print a shell completion script: `sfauth completions bash > ~/.local/share/bash-completion/completions/sfauth`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing would only obscure the clap derive"
)]
pub(crate) enum LoginFlow {
    /// Web server flow with PKCE: log in through a browser, with a local callback listener.
    ///
    /// The connected app's callback URL must be http://localhost:PORT/OauthRedirect (1717 by
    /// default, as the Salesforce CLI uses).
    Web(WebArgs),
    /// JWT bearer flow: a pre-authorized user, a private key whose certificate is on the app.
    Jwt(JwtArgs),
    /// Device flow: show a code to enter at Salesforce from any browser, then wait.
    Device(DeviceArgs),
    /// Client credentials flow: the app's run-as user (needs a My Domain --instance and the secret).
    ClientCredentials(PlainArgs),
    /// Username-password flow (legacy; blocked in new orgs). Password from SFAUTH_PASSWORD or a prompt.
    Password(PasswordArgs),
    /// Token exchange: trade another identity provider's token (from SFAUTH_SUBJECT_TOKEN or a prompt).
    TokenExchange(TokenExchangeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct WebArgs {
    #[command(flatten)]
    pub(crate) connection: ConnectionArgs,
    /// The loopback port of the callback listener (0 picks a free one).
    #[arg(long, env = "SFAUTH_PORT", value_name = "PORT")]
    pub(crate) port: Option<u16>,
    /// Print the login URL instead of opening a browser.
    #[arg(long)]
    pub(crate) no_browser: bool,
    /// Pre-fill this username on the login page.
    #[arg(long, value_name = "USERNAME")]
    pub(crate) login_hint: Option<String>,
    /// Give up waiting for the browser after this many seconds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub(crate) timeout: u64,
}

#[derive(Debug, Args)]
pub(crate) struct JwtArgs {
    #[command(flatten)]
    pub(crate) connection: ConnectionArgs,
    /// The PEM private key whose certificate is uploaded on the connected app.
    #[arg(long, value_name = "FILE")]
    pub(crate) key: PathBuf,
    /// The Salesforce username to act as.
    #[arg(long, value_name = "USERNAME")]
    pub(crate) username: String,
    /// The JWT `aud` claim, when the default (login or test pool) is wrong.
    #[arg(long, value_name = "URL")]
    pub(crate) audience: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct DeviceArgs {
    #[command(flatten)]
    pub(crate) connection: ConnectionArgs,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub(crate) timeout: u64,
}

#[derive(Debug, Args)]
pub(crate) struct PlainArgs {
    #[command(flatten)]
    pub(crate) connection: ConnectionArgs,
}

#[derive(Debug, Args)]
pub(crate) struct PasswordArgs {
    #[command(flatten)]
    pub(crate) connection: ConnectionArgs,
    /// The Salesforce username.
    #[arg(long, env = "SFAUTH_USERNAME", value_name = "USERNAME")]
    pub(crate) username: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum SubjectTokenType {
    /// urn:ietf:params:oauth:token-type:access_token
    AccessToken,
    /// urn:ietf:params:oauth:token-type:refresh_token
    RefreshToken,
    /// urn:ietf:params:oauth:token-type:id_token
    IdToken,
    /// urn:ietf:params:oauth:token-type:JWT
    Jwt,
    /// urn:ietf:params:oauth:token-type:saml2
    Saml2,
}

#[derive(Debug, Args)]
pub(crate) struct TokenExchangeArgs {
    #[command(flatten)]
    pub(crate) connection: ConnectionArgs,
    /// The type of the token in SFAUTH_SUBJECT_TOKEN.
    #[arg(long, value_enum, default_value = "jwt")]
    pub(crate) subject_token_type: SubjectTokenType,
}

/// An alias, positional or with --alias.
#[derive(Debug, Args, Clone)]
pub(crate) struct AliasArgs {
    /// The login to use (default: SFAUTH_ALIAS, the config file's `alias`, else `default`).
    #[arg(value_name = "ALIAS", add = crate::complete::alias_completer())]
    pub(crate) alias: Option<String>,
    /// The same as ALIAS.
    #[arg(long = "alias", value_name = "ALIAS", conflicts_with = "alias", add = crate::complete::alias_completer())]
    pub(crate) alias_flag: Option<String>,
}

impl AliasArgs {
    pub(crate) fn given(&self) -> Option<&str> {
        self.alias.as_deref().or(self.alias_flag.as_deref())
    }
}

#[derive(Debug, Args)]
pub(crate) struct LogoutArgs {
    #[command(flatten)]
    pub(crate) alias: AliasArgs,
    /// Delete the login even when its tokens cannot be read or revoked (they then stay live at
    /// Salesforce until they expire or are revoked in Setup).
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    #[command(flatten)]
    pub(crate) alias: AliasArgs,
    /// Check the token with Salesforce (userinfo) first, and refresh it if Salesforce refuses
    /// it; without this, the expiry estimate decides.
    #[arg(long)]
    pub(crate) verify: bool,
}

#[derive(Debug, Args)]
pub(crate) struct AliasJsonArgs {
    #[command(flatten)]
    pub(crate) alias: AliasArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RefreshArgs {
    /// The login to refresh.
    #[arg(value_name = "ALIAS", conflicts_with = "all")]
    pub(crate) alias: Option<String>,
    /// Refresh every stored login.
    #[arg(long)]
    pub(crate) all: bool,
    /// How many refreshes run at once with --all.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) concurrency: u16,
    /// Print the summary as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The login to export.
    #[arg(value_name = "ALIAS", conflicts_with = "all")]
    pub(crate) alias: Option<String>,
    /// Export every stored login.
    #[arg(long)]
    pub(crate) all: bool,
    /// The file to write (created with mode 0600).
    #[arg(long, short, value_name = "FILE")]
    pub(crate) output: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// A file written by `sfauth export`.
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// Replace logins that already exist under the same alias.
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ApiArgs {
    /// `[ALIAS] METHOD PATH`: the login (default: SFAUTH_ALIAS, the config file's `alias`, else
    /// `default`), the HTTP method, and a path on the instance such as
    /// /services/data/v62.0/limits (a query string may follow).
    #[arg(value_name = "[ALIAS] METHOD PATH", num_args = 2..=3, required = true)]
    pub(crate) words: Vec<String>,
    /// The login to use, instead of the first word.
    #[arg(long = "alias", value_name = "ALIAS")]
    pub(crate) alias: Option<String>,
    /// The request body: a file, or `-` for stdin (read whole first, at most 32 MiB).
    #[arg(long, value_name = "FILE|-")]
    pub(crate) body: Option<String>,
    /// An extra request header, `NAME:VALUE`; repeatable. `Content-Type` defaults to
    /// application/json when a body is given.
    #[arg(long = "header", short = 'H', value_name = "NAME:VALUE")]
    pub(crate) headers: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct OpenArgs {
    #[command(flatten)]
    pub(crate) alias: AliasArgs,
    /// Where to land, a path on the instance (such as /lightning/setup/SetupOneHome/home).
    #[arg(long, value_name = "PATH")]
    pub(crate) path: Option<String>,
    /// Print the URL instead of opening a browser. It logs in whoever opens it: do not share it.
    #[arg(long)]
    pub(crate) url_only: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    #[command(flatten)]
    pub(crate) alias: AliasArgs,
    /// Print a JSON object instead of lines.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `sfauth import`: a file written by `sfauth export`, or the logins of `sf` with --from-sf.
#[derive(Debug, Args)]
pub(crate) struct ImportCommand {
    /// A file written by `sfauth export`.
    #[arg(
        value_name = "FILE",
        required_unless_present = "from_sf",
        conflicts_with = "from_sf"
    )]
    pub(crate) file: Option<PathBuf>,
    /// Replace logins that already exist under the same alias.
    #[arg(long)]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) sf: FromSfArgs,
}

/// The `--from-sf` options of `sfauth import`.
#[derive(Debug, Args)]
pub(crate) struct FromSfArgs {
    /// Import logins of Salesforce's CLI (`sf`) from ~/.sfdx: one by username or `sf` alias,
    /// or every one with --all.
    #[arg(
        long = "from-sf",
        value_name = "USERNAME|ALIAS",
        num_args = 0..=1,
        default_missing_value = ""
    )]
    pub(crate) from_sf: Option<String>,
    /// With --from-sf: every login `sf` has.
    #[arg(long, requires = "from_sf")]
    pub(crate) all: bool,
    /// With --from-sf: take the refresh token out of `sf`'s file once it is saved here, so that
    /// only sfauth spends it (two tools refreshing one rotating login kill it).
    #[arg(long = "move", requires = "from_sf")]
    pub(crate) move_login: bool,
    /// With --from-sf and one login: the sfauth alias to save it under (default: its `sf`
    /// alias, else its username).
    #[arg(
        long = "as",
        value_name = "ALIAS",
        requires = "from_sf",
        conflicts_with = "all"
    )]
    pub(crate) save_as: Option<String>,
}
