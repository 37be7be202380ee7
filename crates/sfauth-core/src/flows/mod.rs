//! The flows: each builds a request, sends it over an [`HttpTransport`](crate::http::HttpTransport)
//! and parses the answer. They are methods of [`OAuthClient`](crate::OAuthClient); this module
//! holds their input and output types.
//!
//! | flow | method | retry safety |
//! |---|---|---|
//! | web server (code + PKCE) | [`authorize_url`](crate::OAuthClient::authorize_url), [`parse_callback`](crate::OAuthClient::parse_callback), [`exchange_code`](crate::OAuthClient::exchange_code) | single use |
//! | user-agent | [`user_agent_url`](crate::OAuthClient::user_agent_url), [`parse_fragment`](crate::OAuthClient::parse_fragment) | (browser) |
//! | refresh token | [`refresh`](crate::OAuthClient::refresh) | single use |
//! | username-password | [`password`](crate::OAuthClient::password) | idempotent |
//! | JWT bearer | [`jwt_bearer`](crate::OAuthClient::jwt_bearer) | idempotent |
//! | client credentials | [`client_credentials`](crate::OAuthClient::client_credentials) | idempotent |
//! | device | [`device_start`](crate::OAuthClient::device_start), [`device_poll`](crate::OAuthClient::device_poll), [`device_wait`](crate::OAuthClient::device_wait) | idempotent / single use |
//! | token exchange | [`token_exchange`](crate::OAuthClient::token_exchange) | single use |
//! | SAML bearer | [`saml_bearer`](crate::OAuthClient::saml_bearer) | single use |
//! | revoke | [`revoke`](crate::OAuthClient::revoke) | idempotent |
//! | introspect | [`introspect`](crate::OAuthClient::introspect) | idempotent |
//! | userinfo, identity URL | [`userinfo`](crate::OAuthClient::userinfo), [`identity`](crate::OAuthClient::identity) | idempotent |
//! | ID token | [`validate_id_token`](crate::OAuthClient::validate_id_token) | idempotent |

mod authorize;
mod device;
mod grants;
mod identity;
mod introspect;
mod jwt;

pub use authorize::{AuthorizationRequest, AuthorizeParams};
pub use device::{
    DEFAULT_INTERVAL, DeviceAuthorization, DevicePoll, MAX_DEVICE_CODE_LIFETIME, MAX_INTERVAL,
    MIN_INTERVAL,
};
pub use grants::{TokenExchange, token_type};
pub use identity::{IdTokenCheck, IdTokenClaims, IdentityInfo, UserInfo};
pub use introspect::{Introspection, RevokeMethod, TokenTypeHint};
pub use jwt::JwtBearer;
