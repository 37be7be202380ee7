//! The records the state holds: orgs, users and apps at runtime, tokens and their approval
//! families, authorization codes, device grants, and what one grant issued.

use rsa::RsaPublicKey;

use crate::model::{AppConfig, UserConfig, UserStatus};

/// An org at runtime.
#[derive(Debug, Clone)]
pub(crate) struct Org {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) instance_url: Option<String>,
    pub(crate) inactive: bool,
    /// `OauthOidcSettings.blockOAuthUnPwFlow`.
    pub(crate) block_password: bool,
    /// Logins per user per rolling hour; `None` counts none.
    pub(crate) login_rate_limit: Option<u32>,
    /// "Enable SOAP API login()".
    pub(crate) soap_login: bool,
    pub(crate) sandbox: bool,
    /// The current My Domain host.
    pub(crate) my_domain: Option<String>,
    /// Hosts the org's My Domain had before, oldest first.
    pub(crate) previous_my_domains: Vec<String>,
    /// Whether a previous My Domain host redirects to the current one.
    pub(crate) redirect_previous: bool,
}

/// A user at runtime.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) id: String,
    pub(crate) org_id: String,
    pub(crate) config: UserConfig,
}

impl User {
    pub(crate) fn is_active(&self) -> bool {
        self.config.status == UserStatus::Active
    }
}

/// A connected app at runtime.
#[derive(Debug, Clone)]
pub(crate) struct App {
    pub(crate) org_id: String,
    pub(crate) config: AppConfig,
    pub(crate) blocked: bool,
    pub(crate) key: Option<RsaPublicKey>,
}

/// An issued access token.
#[derive(Debug, Clone)]
pub(crate) struct AccessToken {
    pub(crate) client_id: String,
    pub(crate) user_id: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) issued_ms: i64,
    pub(crate) expires_ms: i64,
    pub(crate) family: Option<u64>,
    pub(crate) revoked: bool,
}

/// Where a refresh token stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefreshState {
    Active,
    /// Replaced by rotation; presenting it again revokes the family.
    RotatedOut,
    Revoked,
}

/// An issued refresh token.
#[derive(Debug, Clone)]
pub(crate) struct RefreshToken {
    pub(crate) family: u64,
    pub(crate) state: RefreshState,
}

/// One approval: the chain of refresh tokens descending from one authorization.
#[derive(Debug, Clone)]
pub(crate) struct Family {
    pub(crate) client_id: String,
    pub(crate) user_id: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) created_ms: i64,
    pub(crate) last_used_ms: i64,
    pub(crate) revoked: bool,
}

/// An authorization code waiting to be exchanged.
#[derive(Debug, Clone)]
pub(crate) struct AuthCode {
    pub(crate) client_id: String,
    pub(crate) user_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) scopes: Vec<String>,
    /// The S256 challenge (a `plain` challenge is stored after hashing).
    pub(crate) challenge: Option<String>,
    pub(crate) nonce: Option<String>,
    pub(crate) expires_ms: i64,
    pub(crate) used: bool,
}

/// Where a device authorization stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeviceStatus {
    Pending,
    Approved(String),
    Denied,
    Consumed,
}

/// A device authorization.
#[derive(Debug, Clone)]
pub(crate) struct DeviceGrant {
    pub(crate) device_code: String,
    pub(crate) user_code: String,
    pub(crate) client_id: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) expires_ms: i64,
    pub(crate) last_poll_ms: Option<i64>,
    pub(crate) status: DeviceStatus,
}

/// Tokens minted for one successful grant.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    pub(crate) access_token: String,
    pub(crate) refresh_token: Option<String>,
    pub(crate) issued_ms: i64,
    pub(crate) scopes: Vec<String>,
    pub(crate) client_id: String,
    pub(crate) user_id: String,
}
