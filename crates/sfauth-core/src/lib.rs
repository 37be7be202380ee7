//! The protocol heart of sfauth: Salesforce's OAuth 2.0 flows as typed requests and parsed
//! responses, the token types, and the HTTP boundary.
//!
//! This crate does no I/O of its own and keeps no state: every flow builds an
//! `http::Request`, hands it to an [`http::HttpTransport`] the caller supplies, and parses what
//! comes back. That keeps it testable with a closure and free of any HTTP client, runtime or
//! storage dependency (`cargo xtask tidy` checks this). It has no cargo features.
//!
//! | module | what it holds |
//! |---|---|
//! | [`http`] | [`http::HttpTransport`], [`http::TransportError`], [`http::RetrySafety`], and the adapter that lets the `oauth2` crate send through any transport |
//! | [`secret`] | [`AccessToken`], [`RefreshToken`], [`ClientSecret`], [`Password`], [`PrivateKey`] and the other redacting, zeroizing secret types |
//! | [`host`] | [`LoginHost`] and [`Endpoints`]: where requests go |
//! | [`app`] | [`ConnectedApp`] and [`ClientAuth`] |
//! | [`token`] | [`TokenSet`], [`IdentityUrl`], [`OrgId`], [`UserId`], [`TokenKey`], and the expiry rules |
//! | [`signature`] | the check of a token response's `signature` |
//! | [`error`] | [`Error`], [`ErrorKind`], [`Cause`] |
//! | [`invalid`] | [`InvalidValue`]: a value (id, key, URL, host) that does not parse |
//! | [`mod@format`] | [`format::ResponseFormat`] and the parser every response goes through |
//! | [`flows`] | the inputs and outputs of every flow; the flows are methods of [`OAuthClient`] |
//! | [`rest`] | reading a REST API 401 (`INVALID_SESSION_ID`) as "refresh due" |
//! | [`redact`] | the one scrubber every error, log line and `Debug` of server text goes through |
//!
//! # Which flow
//!
//! | flow | use it when | refresh token? |
//! |---|---|---|
//! | web server + PKCE ([`OAuthClient::authorize_url`], [`OAuthClient::exchange_code`]) | a person signs in through a browser; the default for interactive apps and CLIs with a local callback | yes, with `refresh_token` scope |
//! | user-agent ([`OAuthClient::user_agent_url`], [`OAuthClient::parse_fragment`]) | legacy browser-only clients; Salesforce recommends PKCE instead | with `refresh_token` scope |
//! | refresh ([`OAuthClient::refresh`]) | an access token expired (a REST 401, see [`rest`]) | rotated when the app rotates |
//! | username-password ([`OAuthClient::password`]) | legacy integrations only; blocked by default in new orgs | no |
//! | JWT bearer ([`OAuthClient::jwt_bearer`]) | server-to-server as a named, pre-authorized user, with a certificate on the app | no: mint a new assertion |
//! | client credentials ([`OAuthClient::client_credentials`]) | server-to-server as the app's Run As user, on a My Domain | no |
//! | device ([`OAuthClient::device_start`], [`OAuthClient::device_wait`]) | a CLI or device without a browser or callback | yes, with `refresh_token` scope |
//! | token exchange ([`OAuthClient::token_exchange`]) | trading another identity provider's token, through an Apex handler | depends on the handler |
//! | SAML bearer ([`OAuthClient::saml_bearer`]) | an existing SAML assertion from your IdP | no |
//! | revoke ([`OAuthClient::revoke`]) | sign-out; a refresh token takes its access tokens with it | n/a |
//! | introspect ([`OAuthClient::introspect`]) | learning whether, and until when, a token is valid | n/a |
//! | userinfo / identity ([`OAuthClient::userinfo`], [`OAuthClient::identity`]) | who the user is | n/a |
//! | ID token ([`OAuthClient::validate_id_token`]) | OIDC sign-in, checked against `/id/keys` | n/a |
//!
//! # Examples, one per flow
//!
//! Each takes some `transport: &dyn HttpTransport` (`sfauth-transport` ships one over reqwest).
//! `examples/` has the same, one runnable file per flow against canned answers
//! (`cargo run -p sfauth-core --example device`). A complete runnable one, with a closure
//! transport:
//!
//! ```
//! use bytes::Bytes;
//! use sfauth_core::http::{HttpRequest, HttpResponse, TransportError};
//! use sfauth_core::{ConnectedApp, LoginHost, OAuthClient, RefreshToken};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A closure is a transport: handy for wire-level tests.
//! let transport = |request: HttpRequest| async move {
//!     assert_eq!(request.uri(), "https://login.salesforce.com/services/oauth2/token");
//!     Ok::<_, TransportError>(HttpResponse::new(Bytes::from_static(br#"{
//!         "access_token": "00D5e000000Abcd!AQ4AQ",
//!         "instance_url": "https://acme.my.salesforce.com",
//!         "id": "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK",
//!         "issued_at": "1700000000123", "token_type": "Bearer"}"#)))
//! };
//! let client = OAuthClient::new(LoginHost::Production, ConnectedApp::new("3MVG9.key"));
//! let tokens = client.refresh(&transport, &RefreshToken::new("5Aep861")).await?;
//! assert_eq!(tokens.identity.org_id().as_str(), "00D5e000000AbcdEAC");
//! # Ok(())
//! # }
//! ```
//!
//! Web server flow with PKCE:
//!
//! ```no_run
//! # use sfauth_core::{http::HttpTransport, ConnectedApp, LoginHost, OAuthClient};
//! # async fn run(transport: &dyn HttpTransport, callback: url::Url) -> Result<(), sfauth_core::Error> {
//! use sfauth_core::flows::AuthorizeParams;
//!
//! let app = ConnectedApp::new("3MVG9.key").with_redirect_uri("http://localhost:1717/callback")?;
//! let client = OAuthClient::new(LoginHost::Production, app);
//! let request = client.authorize_url(&AuthorizeParams::scopes(["api", "refresh_token"]))?;
//! // Send the browser to `request.url`; Salesforce redirects to the callback.
//! let code = client.parse_callback(&callback, &request.state)?;
//! let tokens = client.exchange_code(transport, &code, request.pkce_verifier.as_ref()).await?;
//! # Ok(()) }
//! ```
//!
//! User-agent flow:
//!
//! ```no_run
//! # use sfauth_core::{ConnectedApp, LoginHost, OAuthClient};
//! # fn run(redirect: url::Url) -> Result<(), sfauth_core::Error> {
//! use sfauth_core::flows::AuthorizeParams;
//!
//! let app = ConnectedApp::new("3MVG9.key").with_redirect_uri("myapp://oauth/done")?;
//! let client = OAuthClient::new(LoginHost::Production, app);
//! let request = client.user_agent_url(&AuthorizeParams::scopes(["api"]))?;
//! // After the redirect, the tokens are in the URL fragment.
//! let tokens = client.parse_fragment(&redirect, &request.state)?;
//! # Ok(()) }
//! ```
//!
//! Username-password flow:
//!
//! ```no_run
//! # use sfauth_core::{http::HttpTransport, ConnectedApp, LoginHost, OAuthClient, Password};
//! # async fn run(transport: &dyn HttpTransport) -> Result<(), sfauth_core::Error> {
//! let client = OAuthClient::new(LoginHost::Sandbox, ConnectedApp::new("3MVG9.key").with_secret("secret"));
//! let tokens = client
//!     .password(transport, "user@example.com.dev", &Password::new("passwordSECURITYTOKEN"))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! JWT bearer flow:
//!
//! ```no_run
//! # use sfauth_core::{http::HttpTransport, ConnectedApp, LoginHost, OAuthClient, PrivateKey};
//! # async fn run(transport: &dyn HttpTransport, pem: String) -> Result<(), sfauth_core::Error> {
//! use sfauth_core::flows::JwtBearer;
//!
//! // Posted to the My Domain; `aud` stays https://login.salesforce.com.
//! let host = LoginHost::my_domain("https://acme.my.salesforce.com")?;
//! let client = OAuthClient::new(host, ConnectedApp::new("3MVG9.key"));
//! let tokens = client.jwt_bearer(transport, &JwtBearer::new("integration@acme.com", PrivateKey::new(pem))).await?;
//! # Ok(()) }
//! ```
//!
//! Client credentials flow:
//!
//! ```no_run
//! # use sfauth_core::{http::HttpTransport, ConnectedApp, LoginHost, OAuthClient};
//! # async fn run(transport: &dyn HttpTransport) -> Result<(), sfauth_core::Error> {
//! let host = LoginHost::my_domain("https://acme.my.salesforce.com")?;
//! let client = OAuthClient::new(host, ConnectedApp::new("3MVG9.key").with_secret("secret"));
//! let tokens = client.client_credentials(transport).await?;
//! # Ok(()) }
//! ```
//!
//! Device flow (the sleep comes from your runtime):
//!
//! ```no_run
//! # use sfauth_core::{http::HttpTransport, ConnectedApp, LoginHost, OAuthClient};
//! # async fn run(transport: &dyn HttpTransport) -> Result<(), sfauth_core::Error> {
//! let client = OAuthClient::new(LoginHost::Production, ConnectedApp::new("3MVG9.key"));
//! let authorization = client.device_start(transport, Some("api refresh_token")).await?;
//! // Show `authorization.user_code` and `authorization.verification_uri` to the user.
//! let tokens = client.device_wait(transport, &authorization, tokio::time::sleep).await?;
//! # Ok(()) }
//! ```
//!
//! Token exchange:
//!
//! ```no_run
//! # use sfauth_core::{http::HttpTransport, ConnectedApp, LoginHost, OAuthClient, SecretValue};
//! # async fn run(transport: &dyn HttpTransport, idp_token: String) -> Result<(), sfauth_core::Error> {
//! use sfauth_core::flows::{token_type, TokenExchange};
//!
//! let host = LoginHost::my_domain("https://acme.my.salesforce.com")?;
//! let client = OAuthClient::new(host, ConnectedApp::new("3MVG9.key").with_secret("secret"));
//! let exchange = TokenExchange::new(SecretValue::new(idp_token), token_type::JWT);
//! let tokens = client.token_exchange(transport, &exchange).await?;
//! # Ok(()) }
//! ```
//!
//! SAML bearer flow:
//!
//! ```no_run
//! # use sfauth_core::{http::HttpTransport, ConnectedApp, LoginHost, OAuthClient, SecretValue};
//! # async fn run(transport: &dyn HttpTransport, assertion_base64url: String) -> Result<(), sfauth_core::Error> {
//! let client = OAuthClient::new(LoginHost::Production, ConnectedApp::new("3MVG9.key"));
//! let tokens = client.saml_bearer(transport, &SecretValue::new(assertion_base64url)).await?;
//! # Ok(()) }
//! ```
//!
//! Revoke, introspect, userinfo, identity URL and ID token:
//!
//! ```no_run
//! # use sfauth_core::{http::HttpTransport, ConnectedApp, LoginHost, OAuthClient, SecretValue, TokenSet};
//! # async fn run(transport: &dyn HttpTransport, tokens: TokenSet) -> Result<(), sfauth_core::Error> {
//! use sfauth_core::flows::{IdTokenCheck, RevokeMethod, TokenTypeHint};
//!
//! let client = OAuthClient::new(LoginHost::Production, ConnectedApp::new("3MVG9.key").with_secret("secret"));
//! let access = SecretValue::from(tokens.access_token.clone());
//! let introspection = client.introspect(transport, &access, Some(TokenTypeHint::AccessToken)).await?;
//! let user = client.userinfo(transport, &tokens.access_token).await?;
//! let identity = client.identity(transport, &tokens).await?;
//! if let Some(id_token) = &tokens.id_token {
//!     let claims = client.validate_id_token(transport, id_token, &IdTokenCheck::default()).await?;
//! }
//! client.revoke(transport, &access, RevokeMethod::Post).await?;
//! # Ok(()) }
//! ```
//!
//! # Tested against a server
//!
//! Besides the wire-level tests of this crate (a closure transport checking each exact request),
//! every flow and every documented error runs end to end against `sfauth-emulator` over real TCP
//! through `sfauth-transport`'s `ReqwestTransport`, in the workspace's `tests/` package:
//! `cargo test -p sfauth-tests --test scenarios core_flows::` (each flow, the three response
//! formats), `core_errors::` (each error kind and cause, faults, retries) and `core_hosts::`
//! (sites, HTTP Basic, expiry).
//!
//! # Design notes
//!
//! **The `oauth2` crate.** PKCE (S256), the `state` value and the authorization URL come from
//! `oauth2` ([`OAuthClient::authorize_url`]). Token-endpoint requests, revocation and
//! introspection are built and parsed here, once, by one shared path (`OAuthClient::form_post`
//! and `format::read_response`), because `oauth2`'s `request_async`: accepts only JSON
//! responses (it refuses a `urlencoded` or XML content type, which Salesforce's `format`
//! parameter produces); drops the HTTP status and headers of an error response, so a 429's
//! `Retry-After` or a 503 could not be classified; needs `token_type`, which some Salesforce
//! responses omit; has no form for Salesforce's pre-RFC device flow; and form-encodes the id
//! and secret before HTTP Basic, which Salesforce's own clients do not.
//!
//! **Redirects.** A 3xx answer (the login pool may answer 302 to the user's My Domain) is not
//! followed: it is [`Error::Status`] with kind [`ErrorKind::Protocol`]. Configure the My Domain
//! as the host instead.
//!
//! **Error kinds.** The issue's kinds are all there; one more, [`ErrorKind::SessionExpired`],
//! marks a dead access token (a 401, or the identity service's 403 `Bad_OAuth_Token`, from
//! userinfo or the identity URL), which calls for a refresh rather than a re-authorization.
//!
//! # UNCONFIRMED points of the protocol reference, and what this crate does
//!
//! Checked against Salesforce's documentation where it says anything (Help, developer guides,
//! Mobile SDK guide, Postman collection); the rest is a decision that errs towards accepting.
//!
//! | point | what Salesforce's docs say | decision here |
//! |---|---|---|
//! | `code_challenge_method`, `plain` | the web server flow docs mention only the S256 challenge; a published wire report needed `code_challenge_method=S256` explicitly | always send `S256` explicitly; `plain` is never used |
//! | wrong PKCE verifier | reference says `invalid_request`; a wire report shows `invalid_grant` / `invalid code verifier` | both are [`Cause::CodeVerifierInvalid`], kind by `error`: restart the flow |
//! | refresh-token IP allowlist refusal | Help names no error; one wire report reads `ip restricted` | `invalid_grant` / `ip restricted` (without "login hours") is [`Cause::IpNotAllowed`], kind config, never a re-authorization; `IP restricted or invalid login hours` stays the profile's [`Cause::IpOrLoginHoursRestricted`] |
//! | blocked username-password flow | not documented; Salesforce is seen to answer `authentication failure` | that stays [`Cause::AuthenticationFailure`] (the same words as a wrong password, so its fix names both); only a description that names the blocked flow is [`Cause::PasswordFlowBlocked`] |
//! | 30-day idle expiry vs revocation | both `expired access/refresh token` | one [`Cause::TokenExpiredOrRevoked`]; the manager (sfauth) adds the idle time it knows to its reason when it passed the limit |
//! | `invalid_client` during a secret rotation | a staged secret: both work, then only the new (§14.5 of the reference) | with [`ConnectedApp::with_next_secret`], the request is sent once more with the other secret (client authentication precedes the grant, so nothing was spent); [`Cause::ClientSecretRejected`] when both fail |
//! | XML response shape | the `format=xml` option is documented, no sample | read one flat element per field under any single root element; JSON is requested by default |
//! | `format` vs `Accept` precedence | documented for the identity URL only | send both, always agreeing |
//! | JWT bearer response without `signature` / `issued_at` | samples have neither | both optional; the signature is checked only when present and the app has a secret |
//! | My Domain as JWT `aud` | docs name login, test or the site URL | default login/test by host (sandbox My Domains → test); [`flows::JwtBearer::audience`] overrides |
//! | device flow `expires_in`, `verification_uri_complete`, `slow_down`, `expired_token`, `access_denied` | Help describes the steps; samples show only `device_code`, `user_code`, `verification_uri`, `interval` | `expires_in` read when present (else no local deadline); `slow_down` adds 5 s to the interval; `expired_token` and `access_denied` end the wait as re-authorization |
//! | token exchange response fields (`issued_token_type`, refresh token) | the Apex enum docs list the `subject_token_type` URNs (capital `JWT`) and nothing about the response | parsed as an ordinary token response; unknown fields ignored |
//! | revoke success body and error encoding | Mobile SDK guide: 200 on success, 400 with `unsupported_token_type` or `invalid_token` | any 2xx is success whatever the body; error bodies read as JSON, form encoding or XML |
//! | introspection of an inactive token | RFC 7662 `{"active":false}` expected | `Ok` with `active == false` |
//! | `invalid_client` with 401 | not documented | classified by the `error` code, whatever the status |
//! | userinfo / identity URL refusing an access token | the reference leaves identity-URL errors unresearched; Salesforce's identity service answers a dead token with 403 and the plain-text code `Bad_OAuth_Token` (jsforce/nforce refresh on it), the REST API with 401 | 401, and 403 whose body is `Bad_OAuth_Token`, are [`Error::SessionExpired`]; other 403s (`Missing_OAuth_Token`, `Wrong_Org`, `No_Oauth_Scope`) stay [`Error::Status`] |
//! | "client credentials flow not enabled" error code | not documented | classified by code; an unknown `invalid_grant` is re-authorization |
//! | `api_instance_url` value | not documented | kept as an optional URL |
//! | session timeout default (2 h) | Help documents the setting, 15 min to 24 h | no default: `expires_at` uses it only when configured with [`OAuthClient::with_session_timeout`] |
//! | HTTP Basic encoding | §13 of the reference: id and secret not form-encoded first | Basic is `base64(client_id:client_secret)` as given |
//! | identity ids in samples | a Help sample shows 17-character placeholder ids | any alphanumeric id is accepted; 15-character ids are widened to 18 |
//! | SAML assertion flow (no connected app), hybrid and asset-token flows | wire parameters unconfirmed | not implemented; the asset token flow is a token exchange with [`flows::TokenExchange::actor`] |

// Numbers from outside (responses, tokens, headers, configuration, stored records) reach
// arithmetic here; none of it may panic or wrap, so every operation is checked or saturating.
#![warn(clippy::arithmetic_side_effects)]

pub mod app;
pub mod backoff;
mod client;
pub mod error;
pub mod flows;
pub mod format;
pub mod host;
pub mod http;
pub mod invalid;
pub mod redact;
pub mod rest;
pub mod secret;
pub mod signature;
pub mod token;

pub use app::{ClientAuth, ConnectedApp, SecretSlot};
pub use client::OAuthClient;
pub use error::{Cause, Error, ErrorKind, Result};
pub use host::{Endpoints, LoginHost};
pub use invalid::InvalidValue;
pub use secret::{
    AccessToken, AuthorizationCode, ClientSecret, DeviceCode, IdToken, Password, PkceVerifier,
    PrivateKey, RefreshToken, SecretValue,
};
pub use token::{ExpirySource, IdentityUrl, OrgId, TokenKey, TokenSet, UserId};
