//! Orgs, users, connected apps and their policies, as configured (TOML or the builder).

use serde::{Deserialize, Serialize};

/// Username of the seeded user.
pub const SEED_USERNAME: &str = "admin@emulator.sfauth.test";
/// Password of the seeded user.
pub const SEED_PASSWORD: &str = "emulator-password-1";
/// Security token of the seeded user (appended to the password in the password flow).
pub const SEED_SECURITY_TOKEN: &str = "EMUSECTOKEN0000000000001";
/// Consumer key of the seeded connected app.
pub const SEED_CLIENT_ID: &str =
    "3MVG9sfauthEmulatorSeededConnectedAppConsumerKey0000000000000000000000000000001";
/// Consumer secret of the seeded connected app.
pub const SEED_CLIENT_SECRET: &str =
    "EMU0SEEDED0CONSUMER0SECRET0000000000000000000000000000000000001";
/// Callback URL registered on the seeded connected app.
pub const SEED_CALLBACK_URL: &str = "http://localhost:1717/OauthRedirect";
/// Id of the seeded org.
pub const SEED_ORG_ID: &str = "00D5e000000EMUlEAO";
/// Id of the seeded user.
pub const SEED_USER_ID: &str = "0055e000000EMUaAAO";

/// The whole emulator configuration, as read from `emulator.toml`.
///
/// With no `[[orgs]]` the emulator seeds one org with one user and one connected app.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EmulatorConfig {
    /// Seed of the random generator behind ids and tokens; random when absent.
    pub seed: Option<u64>,
    /// Emulator-wide behaviour switches.
    pub settings: Settings,
    /// The orgs, each with its users and connected apps.
    pub orgs: Vec<OrgConfig>,
}

/// Emulator-wide behaviour, mostly the points the protocol reference marks UNCONFIRMED.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Path prefix of the Experience Cloud-style site that serves every endpoint a second time
    /// (read once at start; empty disables the site).
    pub site_prefix: String,
    /// Host names (without port) treated as the login pool (`login`/`test`): client credentials
    /// are refused there with `request not supported on this domain`.
    pub login_hosts: Vec<String>,
    /// Audiences accepted in JWT and SAML bearer assertions, besides the emulator's own base URL
    /// and site URL.
    pub audiences: Vec<String>,
    /// Whether `/__emulator/...` admin endpoints are served.
    pub admin_api: bool,
    /// Whether `/services/oauth2/authorize` approves at once as [`Settings::auto_approve_user`]
    /// (or the `login_hint` user) instead of showing the login form.
    pub auto_approve: bool,
    /// Username used by auto-approve when the request has no `login_hint`; the first user of
    /// the first org when absent.
    pub auto_approve_user: Option<String>,
    /// Lifetime of an authorization code, in seconds (15 minutes; UNCONFIRMED).
    pub code_lifetime_secs: u64,
    /// Lifetime of a device code, in seconds (10 minutes; UNCONFIRMED).
    pub device_code_lifetime_secs: u64,
    /// Polling interval announced by the device flow, in seconds.
    pub device_interval_secs: u64,
    /// Answer `slow_down` to a device poll that comes sooner than the interval (UNCONFIRMED).
    pub device_slow_down: bool,
    /// Accept `code_challenge_method=plain` (UNCONFIRMED; Salesforce documents only S256).
    pub accept_plain_pkce: bool,
    /// Latest acceptable JWT bearer `exp`, in seconds from now; `None` accepts any future `exp`
    /// (Salesforce says "within 3 minutes"; how strictly is UNCONFIRMED).
    pub jwt_max_exp_secs: Option<u64>,
    /// Encoding of revoke error bodies (UNCONFIRMED: JSON by default).
    pub revoke_error_format: RevokeErrorFormat,
    /// Lifetime of id tokens, in seconds.
    pub id_token_lifetime_secs: u64,
    /// The error a refresh or code exchange from an address outside the app's
    /// [`AppPolicy::refresh_token_ip_allowlist`] gets (UNCONFIRMED: `invalid_grant` /
    /// `ip restricted` by default; see the crate docs for what was found).
    pub ip_blocked_error: ErrorBody,
    /// The error a username-password request gets when the flow is not available: not allowed
    /// by the app, an external client app, or blocked by the org
    /// ([`OrgConfig::block_username_password_flow`]). UNCONFIRMED: `invalid_grant` /
    /// `authentication failure` by default, as a blocked flow is reported on the wire.
    pub password_flow_blocked_error: ErrorBody,
    /// The error a login over the org's [`OrgConfig::login_rate_limit_per_hour`] gets from the
    /// token endpoint (`rate_limit_exceeded` / `Number of logins exceeded`, Salesforce's
    /// documented pair, by default).
    pub login_rate_error: ErrorBody,
}

/// An OAuth error as the token endpoint sends it: `{"error":..., "error_description":...}`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// The `error` code.
    pub error: String,
    /// The `error_description`.
    pub error_description: String,
}

impl ErrorBody {
    /// An error body from its two strings.
    pub fn new(error: impl Into<String>, error_description: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            error_description: error_description.into(),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            site_prefix: "community".to_owned(),
            login_hosts: vec![
                "login.salesforce.com".to_owned(),
                "test.salesforce.com".to_owned(),
            ],
            audiences: vec![
                "https://login.salesforce.com".to_owned(),
                "https://test.salesforce.com".to_owned(),
            ],
            admin_api: false,
            auto_approve: false,
            auto_approve_user: None,
            code_lifetime_secs: 15 * 60,
            device_code_lifetime_secs: 10 * 60,
            device_interval_secs: 5,
            device_slow_down: false,
            accept_plain_pkce: false,
            jwt_max_exp_secs: None,
            revoke_error_format: RevokeErrorFormat::Json,
            id_token_lifetime_secs: 300,
            ip_blocked_error: ErrorBody::new("invalid_grant", "ip restricted"),
            password_flow_blocked_error: ErrorBody::new("invalid_grant", "authentication failure"),
            login_rate_error: ErrorBody::new("rate_limit_exceeded", "Number of logins exceeded"),
        }
    }
}

/// Encoding of `/services/oauth2/revoke` error bodies.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RevokeErrorFormat {
    /// `{"error":"invalid_token","error_description":"Token was invalid"}`.
    #[default]
    Json,
    /// `error=invalid_token&error_description=Token+was+invalid`.
    Urlencoded,
}

/// One org.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OrgConfig {
    /// 18-character org id (prefix `00D`); generated when absent.
    pub id: Option<String>,
    /// Display name.
    pub name: String,
    /// `instance_url` returned in token responses; the emulator's base URL when absent.
    pub instance_url: Option<String>,
    /// Whether the org is locked, closed or suspended (`inactive_org`).
    pub inactive: bool,
    /// The org setting that blocks the username-password flow for every app
    /// (`OauthOidcSettings.blockOAuthUnPwFlow`). Salesforce turns it on in orgs created in
    /// Summer '23 or later; the emulator's orgs play older ones, so it is off by default.
    pub block_username_password_flow: bool,
    /// Logins allowed per user per rolling hour (password, JWT and SAML bearer, client
    /// credentials as the run-as user, and SOAP `login()`); `None`, the default, counts none.
    /// Salesforce's limit is 3,600: `Some(3600)` plays it.
    pub login_rate_limit_per_hour: Option<u32>,
    /// "Enable SOAP API login()": whether `login()` at `/services/Soap/u/{version}` is served.
    /// On by default (an org created before Winter '26, where it still works).
    pub soap_login_enabled: bool,
    /// Whether the org is a sandbox (SOAP `LoginResult.sandbox`).
    pub sandbox: bool,
    /// The org's My Domain host name (e.g. `acme.my.salesforce.com`), which requests name in
    /// their `Host` header. When set and [`OrgConfig::instance_url`] is not, the org's
    /// `instance_url` is this host on the emulator's scheme and port.
    pub my_domain: Option<String>,
    /// Whether requests to a previous My Domain host (after a change) are redirected to the
    /// current one (Salesforce's "Redirect previous My Domain URLs", on by default); when off
    /// they are answered 404.
    pub redirect_previous_my_domain: bool,
    /// Users of the org.
    pub users: Vec<UserConfig>,
    /// Connected apps installed in the org.
    pub apps: Vec<AppConfig>,
}

impl Default for OrgConfig {
    fn default() -> Self {
        Self {
            id: None,
            name: "Emulated Org".to_owned(),
            instance_url: None,
            inactive: false,
            block_username_password_flow: false,
            login_rate_limit_per_hour: None,
            soap_login_enabled: true,
            sandbox: false,
            my_domain: None,
            redirect_previous_my_domain: true,
            users: Vec::new(),
            apps: Vec::new(),
        }
    }
}

/// One user.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UserConfig {
    /// 18-character user id (prefix `005`); generated when absent.
    pub id: Option<String>,
    /// Login name, e.g. `admin@example.com`.
    pub username: String,
    /// Password (without the security token).
    pub password: String,
    /// Security token appended to the password in the username-password flow.
    pub security_token: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Active, frozen or inactive.
    pub status: UserStatus,
    /// The "Approve Uninstalled Connected Apps" permission: the user may still authorize an app
    /// that is not installed in the org ([`AppConfig::installed`]).
    pub approve_uninstalled_apps: bool,
}

impl Default for UserConfig {
    fn default() -> Self {
        Self {
            id: None,
            username: String::new(),
            password: String::new(),
            security_token: String::new(),
            email: None,
            first_name: "Emulated".to_owned(),
            last_name: "User".to_owned(),
            status: UserStatus::Active,
            approve_uninstalled_apps: false,
        }
    }
}

impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("security_token", &"[redacted]")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// Whether a user can log in.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    /// Can log in.
    #[default]
    Active,
    /// Frozen by an admin: every token request answers `inactive_user`.
    Frozen,
    /// Deactivated: every token request answers `inactive_user`.
    Inactive,
}

/// An OAuth flow a connected app may allow.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// Web server flow (`response_type=code`, `grant_type=authorization_code`).
    AuthorizationCode,
    /// User-agent flow (`response_type=token`).
    UserAgent,
    /// `grant_type=refresh_token`.
    RefreshToken,
    /// Username-password flow.
    Password,
    /// Client credentials flow (needs a run-as user).
    ClientCredentials,
    /// JWT bearer flow (needs a certificate).
    JwtBearer,
    /// Device flow.
    Device,
    /// Token exchange.
    TokenExchange,
    /// SAML 2.0 bearer assertion flow.
    SamlBearer,
}

impl Flow {
    /// Every flow.
    pub const ALL: [Flow; 9] = [
        Flow::AuthorizationCode,
        Flow::UserAgent,
        Flow::RefreshToken,
        Flow::Password,
        Flow::ClientCredentials,
        Flow::JwtBearer,
        Flow::Device,
        Flow::TokenExchange,
        Flow::SamlBearer,
    ];
}

/// One connected app.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    /// Display name.
    pub name: String,
    /// Consumer key.
    pub client_id: String,
    /// Consumer secret.
    pub client_secret: String,
    /// Registered callback URLs (exact match).
    pub callback_urls: Vec<String>,
    /// Allowed flows.
    pub flows: Vec<Flow>,
    /// PEM of the X.509 certificate (or RSA public key) that verifies JWT bearer assertions.
    pub certificate: Option<String>,
    /// Reject authorization requests without a PKCE `code_challenge`.
    pub pkce_required: bool,
    /// Require `client_secret` when exchanging an authorization code.
    pub require_secret_for_web_server_flow: bool,
    /// Require `client_secret` on `grant_type=refresh_token`.
    pub require_secret_for_refresh: bool,
    /// Username of the client credentials run-as user.
    pub run_as: Option<String>,
    /// Issuer expected in SAML bearer assertions; the client id when absent.
    pub saml_issuer: Option<String>,
    /// Users the app is pre-authorized for (JWT and SAML bearer need prior approval). `None`
    /// means every user of the org ("admin approved users are pre-authorized" for all profiles).
    pub preauthorized_users: Option<Vec<String>>,
    /// Issue JWT-based access tokens instead of opaque session ids.
    pub jwt_access_tokens: bool,
    /// A connected app or an external client app (which has no username-password flow).
    pub kind: AppKind,
    /// Whether the app is installed in its org. An uninstalled app cannot be authorized by new
    /// users (`/services/oauth2/authorize`) and cannot use the device flow:
    /// `invalid_client` / `app must be installed into org`. Tokens it already issued keep
    /// working.
    pub installed: bool,
    /// A new consumer secret staged for rotation: while staged, the current and the staged
    /// secret both authenticate; applying it makes it the only one.
    pub staged_client_secret: Option<String>,
    /// Session, refresh-token and concurrency policies.
    pub policy: AppPolicy,
}

/// Where Salesforce keeps an app's OAuth configuration.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AppKind {
    /// A connected app.
    #[default]
    ConnectedApp,
    /// An external client app: like a connected app, without the username-password flow.
    ExternalClientApp,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            name: "Emulated Connected App".to_owned(),
            client_id: String::new(),
            client_secret: String::new(),
            callback_urls: Vec::new(),
            flows: Flow::ALL.to_vec(),
            certificate: None,
            pkce_required: false,
            require_secret_for_web_server_flow: true,
            require_secret_for_refresh: false,
            run_as: None,
            saml_issuer: None,
            preauthorized_users: None,
            jwt_access_tokens: false,
            kind: AppKind::ConnectedApp,
            installed: true,
            staged_client_secret: None,
            policy: AppPolicy::default(),
        }
    }
}

impl std::fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppConfig")
            .field("name", &self.name)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field(
                "staged_client_secret",
                &self.staged_client_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("kind", &self.kind)
            .field("installed", &self.installed)
            .field("callback_urls", &self.callback_urls)
            .field("flows", &self.flows)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// The per-app policies of Salesforce's connected app "OAuth Policies" page.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AppPolicy {
    /// Access-token lifetime (the app's session timeout), in seconds. Default 2 hours.
    pub session_timeout_secs: u64,
    /// The refresh-token policy.
    pub refresh_token_policy: RefreshTokenPolicy,
    /// The "limit idle refresh token TTL to 30 days" switch.
    pub idle_ttl_cap_30_days: bool,
    /// Refresh-token rotation: every refresh returns a new refresh token and retires the old one.
    pub rotation: bool,
    /// Unique approvals per user; the oldest is revoked when exceeded. Default 5.
    pub max_approvals_per_user: usize,
    /// Artificial latency of `grant_type=refresh_token`, in milliseconds, so tests can make two
    /// requests with the same refresh token overlap, or make a client give up while its refresh
    /// is being processed. Where it falls: [`AppPolicy::refresh_latency_placement`].
    pub refresh_latency_ms: u64,
    /// Whether [`AppPolicy::refresh_latency_ms`] elapses after the refresh is committed (the
    /// default) or before.
    pub refresh_latency_placement: LatencyPlacement,
    /// Extend an access token's life to `now + session_timeout_secs` each time it is used
    /// (Salesforce sessions are inactivity-based; UNCONFIRMED details, so off by default).
    pub sliding_session: bool,
    /// The partner-app security mandate: PKCE with S256 required on the web server flow (and
    /// `plain` refused even with [`Settings::accept_plain_pkce`]), refresh-token rotation and
    /// the 30-day idle cap forced on, whatever [`AppPolicy::rotation`] and
    /// [`AppPolicy::idle_ttl_cap_30_days`] say. The confidential client's secret stays required
    /// on the code exchange ([`AppConfig::require_secret_for_web_server_flow`]). Salesforce
    /// lets nobody switch PKCE off again; the emulator does, for tests.
    pub partner_mandate: bool,
    /// The refresh-token IP allowlist: when not empty, a code exchange or a refresh whose TCP
    /// peer address is in none of these ranges is refused with [`Settings::ip_blocked_error`],
    /// and the refresh token is left as it was.
    pub refresh_token_ip_allowlist: Vec<crate::IpRange>,
}

impl AppPolicy {
    /// The policy in force: this one with the partner mandate's rules applied.
    pub(crate) fn effective(&self) -> Self {
        let mut policy = self.clone();
        if policy.partner_mandate {
            policy.rotation = true;
            policy.idle_ttl_cap_30_days = true;
        }
        policy
    }
}

impl AppConfig {
    /// Whether the web server flow needs a PKCE challenge.
    pub(crate) fn needs_pkce(&self) -> bool {
        self.pkce_required || self.policy.partner_mandate
    }

    /// Which of the app's secrets `matches` accepts: the current one first, then a staged one.
    pub(crate) fn matching_secret(&self, matches: impl Fn(&str) -> bool) -> Option<&str> {
        std::iter::once(self.client_secret.as_str())
            .chain(self.staged_client_secret.as_deref())
            .find(|s| matches(s))
    }
}

impl Default for AppPolicy {
    fn default() -> Self {
        Self {
            session_timeout_secs: 2 * 60 * 60,
            refresh_token_policy: RefreshTokenPolicy::ValidUntilRevoked,
            idle_ttl_cap_30_days: false,
            rotation: false,
            max_approvals_per_user: 5,
            refresh_latency_ms: 0,
            refresh_latency_placement: LatencyPlacement::AfterCommit,
            sliding_session: false,
            partner_mandate: false,
            refresh_token_ip_allowlist: Vec::new(),
        }
    }
}

/// Where an artificial refresh latency falls relative to the state change.
///
/// Either way the refresh runs to its end whether or not the client is still connected (as at
/// Salesforce, which does not abandon a token request because its caller left), and the
/// per-refresh-token lock ("token request is already being processed") is held for the whole
/// request, latency included, and released just before the answer is sent.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LatencyPlacement {
    /// Commit (rotate, retire, revoke), then wait, then answer: a client that times out during
    /// the wait has lost an answer whose rotation already happened. The hard case that real
    /// clients meet, hence the default.
    #[default]
    AfterCommit,
    /// Wait, then commit, then answer: the server is slow before it acts. A client that times
    /// out during the wait still finds its token rotated afterwards.
    BeforeCommit,
}

/// When a refresh token stops working.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RefreshTokenPolicy {
    /// Valid until revoked.
    #[default]
    ValidUntilRevoked,
    /// Unusable at once.
    ExpireImmediately,
    /// Expires `secs` after the first authorization of its family (absolute).
    ExpireAfter {
        /// Lifetime in seconds.
        secs: u64,
    },
    /// Expires when not used for `secs` (idle).
    ExpireIfUnused {
        /// Idle lifetime in seconds.
        secs: u64,
    },
}

impl EmulatorConfig {
    /// Parses a TOML configuration.
    pub fn from_toml(text: &str) -> crate::Result<Self> {
        toml::from_str(text).map_err(|e| crate::Error::ParseConfig(Box::new(e)))
    }

    /// Reads and parses a TOML configuration file.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> crate::Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| crate::Error::ReadConfig {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// The configuration used when none is given: one org, one user, one connected app allowing
    /// every flow, with the `SEED_*` credentials.
    pub fn seeded() -> Self {
        Self {
            seed: None,
            settings: Settings::default(),
            orgs: vec![OrgConfig::seeded()],
        }
    }
}

impl OrgConfig {
    /// The seeded org.
    pub fn seeded() -> Self {
        Self {
            id: Some(SEED_ORG_ID.to_owned()),
            name: "sfauth Emulator Org".to_owned(),
            users: vec![UserConfig {
                id: Some(SEED_USER_ID.to_owned()),
                username: SEED_USERNAME.to_owned(),
                password: SEED_PASSWORD.to_owned(),
                security_token: SEED_SECURITY_TOKEN.to_owned(),
                email: Some(SEED_USERNAME.to_owned()),
                first_name: "Ada".to_owned(),
                last_name: "Admin".to_owned(),
                ..UserConfig::default()
            }],
            apps: vec![AppConfig {
                name: "sfauth Emulator App".to_owned(),
                client_id: SEED_CLIENT_ID.to_owned(),
                client_secret: SEED_CLIENT_SECRET.to_owned(),
                callback_urls: vec![SEED_CALLBACK_URL.to_owned()],
                run_as: Some(SEED_USERNAME.to_owned()),
                certificate: Some(SEED_CLIENT_CERTIFICATE.to_owned()),
                ..AppConfig::default()
            }],
            ..OrgConfig::default()
        }
    }
}

/// Certificate registered on the seeded app for the JWT bearer flow; its private key is
/// [`SEED_CLIENT_PRIVATE_KEY`].
pub const SEED_CLIENT_CERTIFICATE: &str = include_str!("../keys/seed-client-cert.pem");
/// PKCS#8 PEM private key matching [`SEED_CLIENT_CERTIFICATE`]: a test key, public on purpose.
pub const SEED_CLIENT_PRIVATE_KEY: &str = include_str!("../keys/seed-client-key.pem");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_ids_are_valid() {
        assert!(crate::ids::is_valid_18(SEED_ORG_ID));
        assert!(crate::ids::is_valid_18(SEED_USER_ID));
    }

    #[test]
    fn toml_round_trip_with_policies() {
        let text = r#"
            seed = 7
            [settings]
            auto_approve = true
            [[orgs]]
            name = "Acme"
            [[orgs.users]]
            username = "a@acme.test"
            password = "pw"
            security_token = "tok"
            [[orgs.apps]]
            client_id = "cid"
            client_secret = "sec"
            callback_urls = ["http://localhost/cb"]
            flows = ["authorization_code", "refresh_token"]
            [orgs.apps.policy]
            rotation = true
            refresh_token_policy = { kind = "expire_if_unused", secs = 60 }
        "#;
        let config = EmulatorConfig::from_toml(text).unwrap();
        assert_eq!(config.seed, Some(7));
        let app = &config.orgs[0].apps[0];
        assert!(app.policy.rotation);
        assert_eq!(
            app.policy.refresh_token_policy,
            RefreshTokenPolicy::ExpireIfUnused { secs: 60 }
        );
        assert_eq!(app.flows, vec![Flow::AuthorizationCode, Flow::RefreshToken]);
        let err = EmulatorConfig::from_toml("bogus = 1").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config);
    }
}
