//! A faithful, stateful local emulator of Salesforce's OAuth 2.0 endpoints.
//!
//! Salesforce cannot be reached from CI, so this crate plays it: a real HTTP server (axum, over
//! TCP) that issues, refreshes, rotates, revokes and introspects tokens the way Salesforce does,
//! with Salesforce's paths, parameter names, response fields, error strings and policies. Point
//! any Salesforce client at [`Emulator::base_url`] as its login URL.
//!
//! It depends on no sfauth crate on purpose: it is written from the protocol reference, so it
//! catches the client's mistakes instead of sharing them.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), sfauth_emulator::Error> {
//! use sfauth_emulator::{Clock, Emulator};
//! use std::time::Duration;
//!
//! let emulator = Emulator::builder().clock(Clock::manual_now()).auto_approve(true).start().await?;
//! let creds = emulator.credentials().clone();
//! // POST {base_url}/services/oauth2/token with grant_type=password, creds.client_id,
//! // creds.client_secret, creds.username and creds.password_with_token() ...
//! emulator.advance(Duration::from_secs(3 * 60 * 60)); // every access token has now expired
//! emulator.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # What it serves
//!
//! Every path is served at the root and again under an Experience Cloud-style site prefix
//! (`/community` by default, [`Settings::site_prefix`]).
//!
//! | Path | Notes |
//! |---|---|
//! | `/services/oauth2/token` | `authorization_code` (PKCE S256; a missing method means S256), `refresh_token`, `password`, `client_credentials` (run-as user; refused on login hosts), JWT bearer (RS256 checked against the app's certificate; `iss`, `sub`/`prn`, `aud`, `exp`), device (`response_type=device_code`, then `grant_type=device&code=`), token exchange, SAML bearer. Client auth in the body or HTTP Basic. `format`/`Accept`: JSON, urlencoded, XML. Also accepts multipart bodies. |
//! | `/services/oauth2/authorize` | HTML login form and consent page (POST back to the same URL); auto-approve for tests; `code` in the query or tokens in the fragment; errors redirected. |
//! | `/setup/connect` | Device-flow verification page (user code + login). |
//! | `/services/oauth2/revoke` | POST or GET, JSONP `callback`; a refresh token takes its access tokens with it. |
//! | `/services/oauth2/introspect` | Client auth by body or Basic; `{"active":false}` for dead or foreign tokens. |
//! | `/services/oauth2/userinfo`, `/id/{org}/{user}` | Bearer header or `oauth_token`. |
//! | `/.well-known/openid-configuration`, `/id/keys` | Discovery and JWKS for the emulator's RS256 key. |
//! | `/services/data/`, `/services/data/vNN.N/query`, `/services/data/vNN.N/sobjects/{type}/{id}` | Records of the session's org (Account, Contact, Organization, User); the query honours the select list, `COUNT()`, `LIMIT` and `columns=true` (column metadata, as `sf data query` asks); 401 `INVALID_SESSION_ID` for a dead token. |
//! | `/services/data/vNN.N/limits`, `/sobjects`, `/sobjects/{type}`, `/sobjects/{type}/describe` | Minimal shapes: `{"DailyApiRequests":{"Max","Remaining"},...}` (Remaining counts REST calls), describeGlobal, basic info, describe with the modelled fields. |
//! | `/services/oauth2/singleaccess` | The UI Bridge API `sf org open` calls: Bearer access token (or `access_token`) with `web` or `full` scope, optional `redirect_uri` path; answers `{"frontdoor_uri": "{instance_url}/secur/frontdoor.jsp?otp=...&startURL=..."}`. A dead token: 401 `INVALID_SESSION_ID`. |
//! | `/secur/frontdoor.jsp` | `otp` (single use, one minute) or `sid`: 302 to `startURL`/`retURL` (a path; `/lightning/page/home` by default) with a `sid` cookie; otherwise 302 to `/?ec=302&startURL=...`. |
//! | `/services/Soap/u/{version}`, `/services/Soap/u/{version}/{orgId}` | SOAP `login()` (API 31.0 to 64.0, where the org allows it), `getUserInfo()`, `logout()`; faults as Salesforce sends them (HTTP 500, `text/xml`): `sf:INVALID_LOGIN`, `sf:LOGIN_MUST_USE_SECURITY_TOKEN`, `sf:INVALID_SESSION_ID`, `sf:UNSUPPORTED_API_VERSION`, `sf:LOGIN_RATE_EXCEEDED`. The session id is an access token like any other (REST accepts it). |
//! | any other `/services/data/...` | 404 `[{"errorCode":"NOT_FOUND","message":"The requested resource does not exist"}]`, after the session check (a dead token still gets the 401). |
//! | `/__emulator/...` | Admin API, off unless [`Settings::admin_api`]. |
//!
//! # Configuration and test control
//!
//! Orgs, users and connected apps come from an [`EmulatorConfig`] (TOML for the binary); with
//! none, one org, one user and one app are seeded (see the `SEED_*` constants and
//! [`Emulator::credentials`]). Per connected app ([`AppConfig`], [`AppPolicy`]): allowed flows,
//! callback URLs, certificate, PKCE required, secret required, run-as user, session timeout,
//! refresh-token policy (valid until revoked, expire immediately, expire after N, expire if unused
//! for N, the 30-day idle cap), rotation with reuse detection, the five-approvals cap, JWT access
//! tokens, and an artificial refresh latency so tests can make two refreshes overlap and meet the
//! per-refresh-token concurrency lock, or make a client give up mid-refresh.
//!
//! The [`Emulator`] handle (and the admin API) can revoke per app or user, block/unblock an app,
//! reset refresh tokens, freeze users, expire all access tokens, advance the [`Clock`], change
//! policies and settings, move an org's `instance_url`, approve device codes, inject faults
//! ([`Fault`]: status codes, 429 with `Retry-After`, latency before or after the request is
//! carried out, connection reset, malformed body, HTML error page, hang, any OAuth error body,
//! any canned response; for the next N calls or with a probability), read [`Counters`], read
//! where a refresh token stands without spending it ([`Emulator::refresh_token_status`]), and
//! wait until every request received so far has been carried out ([`Emulator::wait_idle`]).
//! With a fixed [`EmulatorBuilder::seed`] ids, tokens and fault draws are reproducible.
//!
//! Paths with doubled slashes (`//services/data/...`, which `sf` sends when an instance URL ends
//! in `/`) are served as the single-slash path, as Salesforce does. The first org (seeded or
//! first configured) holds the canned records (Acme Corporation, Globex Inc., Ada Lovelace);
//! every other org holds its own Account (named after the org) and Contact, with ids derived from
//! its org id, so no org reads another's records.
//!
//! # The 2025–2027 platform rules
//!
//! Each is a per-app ([`AppConfig`], [`AppPolicy`]) or per-org ([`OrgConfig`]) setting, off by
//! default, set in the configuration file, with the builder ([`EmulatorBuilder::app_policy`],
//! [`EmulatorBuilder::orgs`]), the handle ([`Emulator::set_policy`], [`Emulator::update_app`],
//! [`Emulator::update_org`]) or the admin API. What a client sees:
//!
//! | Rule | Setting | Answer |
//! |---|---|---|
//! | Partner-app mandate | [`AppPolicy::partner_mandate`] | authorize without `code_challenge`: redirect `invalid_request` / `missing required code challenge`; `plain`: `invalid_request` / `unsupported code challenge method`; exchange without the secret: `invalid_client` / `invalid client credentials`; without the verifier: `invalid_grant` / `invalid code verifier`; rotation and the 30-day idle cap forced (an idle token: `invalid_grant` / `expired access/refresh token`); client credentials: `invalid_grant` / `no client credentials user enabled` |
//! | Refresh-token IP allowlist | [`AppPolicy::refresh_token_ip_allowlist`] ([`IpRange`]) | code exchange or refresh from a TCP peer outside every range: [`Settings::ip_blocked_error`], `invalid_grant` / `ip restricted` by default; the refresh token is not spent |
//! | External client app | [`AppConfig::kind`] = [`AppKind::ExternalClientApp`] | password flow: [`Settings::password_flow_blocked_error`], `invalid_grant` / `authentication failure` by default |
//! | Org blocks username-password | [`OrgConfig::block_username_password_flow`] | the same |
//! | App not installed | [`AppConfig::installed`] = false | authorize (unless the user has [`UserConfig::approve_uninstalled_apps`]): redirect `invalid_client` / `app must be installed into org`; device flow, both steps: 400 with the same pair; earlier tokens keep working |
//! | Staged secret rotation | [`AppConfig::staged_client_secret`], [`Emulator::stage_client_secret`], [`Emulator::apply_staged_client_secret`] | while staged both secrets authenticate (the `signature` uses the one sent); once applied the old one gets `invalid_client` / `invalid client credentials` |
//! | Login rate limit | [`OrgConfig::login_rate_limit_per_hour`] | password, JWT and SAML bearer, client credentials (its run-as user) and SOAP `login()` over the limit within a rolling hour: [`Settings::login_rate_error`], `rate_limit_exceeded` / `Number of logins exceeded` by default; SOAP: `sf:LOGIN_RATE_EXCEEDED` |
//! | Sandbox refresh | [`Emulator::refresh_sandbox`] | a new org id and new user ids; every earlier token: `invalid_grant` / `expired access/refresh token`, REST 401 `INVALID_SESSION_ID` |
//! | My Domain change | [`OrgConfig::my_domain`], [`Emulator::change_my_domain`] | `instance_url` moves to the new host (same scheme and port); any request whose `Host` is the old one: 302 to the same path and query on the new host, or 404 "URL No Longer Exists" with [`OrgConfig::redirect_previous_my_domain`] off |
//! | SOAP `login()` | [`OrgConfig::soap_login_enabled`] (on) | off: `sf:INVALID_OPERATION`; API 65.0 and later: `soapenv:Client` "No operation available for request {urn:partner.soap.sforce.com}login, ..." |
//!
//! # Running for days
//!
//! | Builder option | Default | Effect |
//! |---|---|---|
//! | [`EmulatorBuilder::header_read_timeout`] | 60 s | A connection that sends no complete request head within this long is closed; the timer runs from when the connection is ready for a head, so idle keep-alive connections are closed too. |
//! | [`EmulatorBuilder::body_read_timeout`] | 60 s | A body not received whole within this long is answered 408 and the connection closed. |
//! | [`EmulatorBuilder::max_body_bytes`] | 1 MiB | A larger body is answered 413: `{"error":"invalid_request","error_description":"request entity too large"}`, or under `/services/data` `[{"errorCode":"JSON_PARSER_ERROR","message":"Maximum size of request reached. ..."}]`. Up to 16 MiB of it is read and dropped first, so the client gets to read the answer. |
//!
//! A form or query string at `/services/oauth2/...` with a `%` not followed by two hex digits is
//! answered 400 `invalid_request` / `malformed parameter: <name>` instead of being guessed at.
//! The clock saturates at the end of its range ([`Clock::advance`]); the admin API refuses such
//! an advance with 400.
//!
//! # Answers nobody reads
//!
//! Salesforce carries out a token request it has received whether or not the client is still
//! there for the answer, so the emulator does too: every request is read whole and handled in a
//! task that a closed connection (a client timeout, a killed process) cannot cancel. A refresh
//! whose client gave up still rotates; a revocation still revokes. Answers ready after their
//! client left are counted ([`Counters::answers_abandoned`], and
//! [`Counters::refresh_tokens_rotated_unanswered`] for rotations whose new refresh token nobody
//! received). Where the artificial latency falls decides what a timed-out client has lost:
//!
//! | Latency | Order | A retry with the same token during the wait |
//! |---|---|---|
//! | [`AppPolicy::refresh_latency_ms`], [`LatencyPlacement::AfterCommit`] (default) | lock, commit, wait, unlock, answer | "token request is already being processed" |
//! | [`AppPolicy::refresh_latency_ms`], [`LatencyPlacement::BeforeCommit`] | lock, wait, commit, unlock, answer | "token request is already being processed" |
//! | [`FaultKind::Latency`] (any endpoint) | wait, handle, answer | handled normally |
//! | [`FaultKind::LatencyAfterCommit`] (any endpoint) | handle (commit, unlock), wait, answer | a rotated-out token: reuse detection revokes the family |
//!
//! # A gateway in front
//!
//! [`Gateway`] is a reverse proxy on its own loopback port in front of the emulator (or any
//! upstream) that plays the load balancer, corporate proxy or API gateway: per [`GatewayRule`]
//! it relays, lets the upstream act and then answers 502/503/504 with an HTML error page of its
//! own ([`GatewayAction::ForwardThenFail`]), or answers so without forwarding
//! ([`GatewayAction::FailWithoutForwarding`]); [`GatewayBuilder::upstream_timeout`] makes it
//! answer 504 while the upstream keeps working. It rewrites no body: token responses keep the
//! upstream's `instance_url`, so only the requests sent to [`Gateway::url`] pass through it.
//!
//! # Configuration file
//!
//! The binary reads TOML ([`EmulatorConfig::from_file`]); every key is optional and unknown keys
//! are errors. `crates/sfauth-emulator/emulator.example.toml` shows them all:
//!
//! ```toml
//! seed = 7                         # reproducible ids and tokens
//! [settings]
//! admin_api = true
//! site_prefix = "customers"
//! [[orgs]]
//! name = "Acme"
//! [[orgs.users]]
//! username = "integration@acme.test"
//! password = "Sup3r-secret"
//! security_token = "ACMETOKEN123"
//! [[orgs.apps]]
//! client_id = "3MVG9acme"
//! client_secret = "secret"
//! callback_urls = ["http://localhost:1717/OauthRedirect"]
//! flows = ["authorization_code", "refresh_token", "client_credentials"]
//! run_as = "integration@acme.test"
//! [orgs.apps.policy]
//! session_timeout_secs = 900
//! rotation = true
//! refresh_token_policy = { kind = "expire_if_unused", secs = 604800 }
//! ```
//!
//! Connected apps require the client secret on the code exchange by default
//! ([`AppConfig::require_secret_for_web_server_flow`]); turn it off for PKCE-only public clients.
//! The crate has no cargo features.
//!
//! # Admin API
//!
//! Served only with [`Settings::admin_api`] (`--admin-api`); bodies are JSON, answers
//! `{"ok":true,"result":...}` or `{"error":"..."}` (400 invalid, 404 unknown).
//!
//! | Request | Effect |
//! |---|---|
//! | `POST /__emulator/clock/advance?seconds=N` | advance the clock (400 if that would pass the end of its range) |
//! | `POST /__emulator/access-tokens/expire` | expire every access token now |
//! | `POST /__emulator/revoke?client_id=&username=` | revoke by app and/or user |
//! | `POST /__emulator/orgs` `{"name","instance_url"?}` | add an org (returns its id) |
//! | `POST /__emulator/users` `{"org_id"?, ...UserConfig}` | add a user |
//! | `POST /__emulator/apps` `{"org_id"?, ...AppConfig}` | add a connected app |
//! | `POST /__emulator/users/{username}/status?status=active\|frozen\|inactive` | freeze, deactivate, reactivate |
//! | `POST /__emulator/apps/{client_id}/block`, `/unblock`, `/reset-refresh-tokens`, `/revoke` | app actions |
//! | `POST /__emulator/apps/{client_id}/policy` `{AppPolicy}` | replace the app's policy |
//! | `POST /__emulator/orgs/{org_id}/instance-url?url=` | move the org (no `url`: back to the base URL) |
//! | `POST /__emulator/orgs/{org_id}/settings` `{...OrgConfig keys}` | change the keys given, keep the others (`block_username_password_flow`, `login_rate_limit_per_hour`, `soap_login_enabled`, `sandbox`, `my_domain`, `redirect_previous_my_domain`, ...) |
//! | `POST /__emulator/orgs/{org_id}/my-domain?host=` | a My Domain change |
//! | `POST /__emulator/orgs/{org_id}/sandbox-refresh` | a sandbox refresh (returns the new org id) |
//! | `POST /__emulator/apps/{client_id}/config` `{...AppConfig keys}` | change the keys given, keep the others (`kind`, `installed`, `flows`, ...) |
//! | `POST /__emulator/apps/{client_id}/secret/stage` `{"client_secret"}`, `/secret/apply` | staged secret rotation |
//! | `POST /__emulator/device/approve?user_code=&username=&deny=` | act on a device code |
//! | `POST /__emulator/faults` `{"endpoint","kind","status"?,"retry_after_secs"?,"latency_ms"?,"error"?,"error_description"?,"content_type"?,"body"?,"times"?,"probability"?}` | inject a fault (`kind`: `status`, `rate_limited`, `latency`, `latency_after_commit`, `connection_reset`, `malformed_body`, `html_error_page`, `hang`, `oauth_error`, `response`); `DELETE` clears |
//! | `GET /__emulator/counters` | counters; `DELETE` resets |
//! | `POST /__emulator/refresh-token-status` `{"token"}` | `active`, `rotated_out`, `revoked`, `expired`, `inactive` or `unknown`, without spending the token |
//! | `GET /__emulator/idle` | answers once every request received so far (admin requests aside) has been carried out |
//!
//! # Choices where Salesforce's behaviour is UNCONFIRMED
//!
//! - `format` wins over `Accept`; XML bodies are `<OAuth><field>…</field></OAuth>`.
//! - `code_challenge_method=plain` is refused unless [`Settings::accept_plain_pkce`]; a wrong
//!   verifier is `invalid_request`, a missing one `invalid_grant` (both "invalid code verifier");
//!   a verifier sent for a code without a challenge is ignored.
//! - Codes live 15 minutes and are single use (unknown code: "invalid authorization code"; used
//!   or expired: "expired authorization code").
//! - Device flow: user codes are 8 characters, codes live 10 minutes (`expired_token`), polling
//!   answers `authorization_pending`; `slow_down` only with [`Settings::device_slow_down`].
//! - JWT bearer: any future `exp` is accepted unless [`Settings::jwt_max_exp_secs`]; a bad `exp`
//!   is "expired authorization code"; a bad signature or missing certificate "invalid assertion";
//!   responses carry no `signature`/`issued_at`. Users must be pre-authorized (by default every
//!   user of the app's org is).
//! - SAML bearer: the assertion's issuer names the app (its client id, or
//!   [`AppConfig::saml_issuer`]); audience, subject and `NotOnOrAfter` are checked; the XML
//!   signature is **not** verified.
//! - Token exchange: instead of an Apex handler, emulator access/refresh tokens map to their
//!   user, JWTs (the emulator's id tokens or signed with the app's certificate) map their `sub`,
//!   SAML maps its `NameID`; a refresh token is issued when the scope asks for one;
//!   `issued_token_type` is returned.
//! - A flow the app does not allow: `unsupported_grant_type` / "grant type not supported",
//!   except the username-password flow, which answers `invalid_grant` / "authentication failure"
//!   as Salesforce does when the flow is blocked. A blocked app: `invalid_grant` / "app is
//!   blocked" for new grants, and its tokens are revoked (so refreshes answer "expired
//!   access/refresh token").
//! - Frozen or inactive users: `inactive_user` / "User is inactive"; their tokens stop working.
//! - "Expire after N" counts from the first authorization of the refresh-token family.
//! - Access tokens expire `session_timeout_secs` after issue, or after the last use with
//!   [`AppPolicy::sliding_session`].
//! - REST calls with a live token lacking the `api`/`full` scope answer 401 `INVALID_SESSION_ID`
//!   "This session is not valid for use with the REST API" (a 401 a refresh cannot fix).
//! - Introspect and revoke errors are 400 JSON (revoke can answer urlencoded:
//!   [`Settings::revoke_error_format`]); revoke success is an empty 200.
//! - userinfo/identity failures: 403 `Missing_OAuth_Token` / `Bad_OAuth_Token`.
//! - `api_instance_url` (client credentials) is the emulator's base URL.
//! - REST: a selected field the emulator does not model is answered `null` (Salesforce answers
//!   a field that does not exist with `INVALID_FIELD`; the emulator cannot tell a real field it
//!   does not model from a misspelt one). `columns=true` follows the undocumented shape the `sf`
//!   CLI reads; unmodelled columns are described as text. `/limits` lists a dozen of the real
//!   answer's entries, with Developer Edition-like numbers.
//! - Oversized bodies: 413 (Salesforce's wire text for the REST API is known; its status and
//!   the OAuth endpoints' answer are not). Slow bodies: 408. Malformed percent-escapes:
//!   `invalid_request` / `malformed parameter: <name>`.
//! - Id tokens name as `iss` the host the user came through: the site URL through the site
//!   prefix (matching the site's discovery document), the base URL otherwise. Responses and
//!   fragments through the site carry `sfdc_community_url` and `sfdc_community_id`.
//! - When no scope is requested, `api id refresh_token web` is granted.
//! - Refresh-token IP allowlist: Salesforce's help ("Set IP Allowlist Ranges for Refresh
//!   Tokens", `xcloud.set_ip_allowlist_for_refresh_tokens.htm`) says only addresses in the
//!   allowed ranges can complete the web server flow or the refresh token flow, that requests
//!   from outside are blocked outright (unlike Trusted IP Ranges), and that ranges may be IPv4 or
//!   IPv6; it names no error. The only wire report found is a refresh refused with "ip
//!   restricted" (sfdx-actions/setup-sfdx issue 17: "Error authenticating with the refresh token
//!   due to: ip restricted"), hence `invalid_grant` / `ip restricted` by default; the profile
//!   IP restriction's documented `IP restricted or invalid login hours` is the other candidate
//!   ([`Settings::ip_blocked_error`] picks). The address is the TCP peer's, never a header.
//! - The partner mandate treats a `code_challenge` without a method as S256, as Salesforce does
//!   outside the mandate; a code issued without a challenge before the mandate was switched on
//!   is refused at the exchange (`invalid_grant` / `invalid code verifier`).
//! - Username-password flow of an external client app or an org that blocks it: Salesforce's
//!   answer is not documented; the blocked flow's `invalid_grant` / `authentication failure`
//!   by default ([`Settings::password_flow_blocked_error`]).
//! - Uninstalled apps: the authorize endpoint redirects the error to the callback (the redirect
//!   URI is registered); password, JWT, SAML and client credentials logins are not affected.
//! - Login rate limit: Salesforce's help puts it at 3,600 logins per user per hour and names the
//!   error `LOGIN_RATE_EXCEEDED` in Login History (article 000381578); the token endpoint's pair
//!   is the documented `rate_limit_exceeded` / `Number of logins exceeded`. Only granted logins
//!   are counted, so a refused one does not extend the wait; a refresh is not a login.
//! - Sandbox refresh: the new org keeps usernames, passwords and apps, but every user gets a new
//!   id (as the protocol reference says), so identity URLs change too.
//! - My Domain change: Salesforce redirects previous My Domain URLs to the current one by
//!   default ("Redirect previous My Domain URLs", help `domain_name_redirections_manage.htm`);
//!   the status (302) and the 404 page without the redirect are our choices. A client that
//!   stored the old host meets a 302 on its token POST, which it should not follow blindly.
//! - SOAP: faults other than those Salesforce documents (`INVALID_LOGIN`,
//!   `LOGIN_MUST_USE_SECURITY_TOKEN`, `INVALID_SESSION_ID`, `UNSUPPORTED_API_VERSION` for a
//!   retired version) are guesses: `login()` after 64.0 answers as a WSDL-driven server does for
//!   an operation it lacks, an org without "Enable SOAP API login()" answers
//!   `sf:INVALID_OPERATION`, a rate-limited login `sf:LOGIN_RATE_EXCEEDED`. A frozen or inactive
//!   user gets `INVALID_LOGIN` ("...or user locked out"). The "Use Any API Auth" permission
//!   (`INSUFFICIENT_ACCESS`) is not modelled. A session lasts 2 hours (the org default).
//! - A request is carried out to its end even when its client leaves (Salesforce is not known
//!   to abandon one); an answer counts as abandoned when its client was gone by the time it was
//!   ready (one lost later, while being written, is not seen).
//! - The per-refresh-token lock covers the whole request, the policy's latency included, and is
//!   released just before the answer is sent.
//! - `/services/oauth2/introspect` reads a refresh token without spending it too, but answers
//!   only `active` true or false and needs the app's credentials; the handle's
//!   [`Emulator::refresh_token_status`] also tells rotated out from revoked or expired.
//!
//! # Pointing any client at it
//!
//! Run `sfauth-emulator --port 8443` (no config: it prints the seeded credentials), then use
//! `http://127.0.0.1:8443` wherever the client takes a login URL (instead of
//! `https://login.salesforce.com`). The JWT bearer `aud` may be `https://login.salesforce.com`,
//! `https://test.salesforce.com` or the emulator URL. Client credentials are refused when the
//! request's `Host` is `login.salesforce.com` or `test.salesforce.com` (as at Salesforce), so a
//! test can reproduce that mistake by setting the header. To simulate an org migration to a host
//! that really answers, move the org's `instance_url` to [`Emulator::site_url`]: every path is
//! served there too.

// The emulator is a server that takes hostile input (requests, assertions, admin calls, its
// configuration file) and numbers from it reach arithmetic here; none of it may panic or wrap,
// so every operation is checked or saturating, and this lint keeps it so.
#![warn(clippy::arithmetic_side_effects)]

mod admin;
mod authorize;
mod bearer;
mod clock;
mod context;
mod crypto;
mod endpoints;
mod error;
mod faults;
mod format;
mod frontdoor;
mod gateway;
mod ids;
mod ip;
mod issue;
mod listen;
mod model;
mod params;
mod rest;
mod routes;
mod saml;
mod server;
mod soap;
mod state;
mod token;
mod versions;

pub use clock::Clock;
pub use error::{Error, ErrorKind, Result};
pub use faults::{Endpoint, Fault, FaultKind};
pub use gateway::{Gateway, GatewayAction, GatewayBuilder, GatewayCounters, GatewayRule};
pub use ip::IpRange;
pub use model::{
    AppConfig, AppKind, AppPolicy, EmulatorConfig, ErrorBody, Flow, LatencyPlacement, OrgConfig,
    RefreshTokenPolicy, RevokeErrorFormat, SEED_CALLBACK_URL, SEED_CLIENT_CERTIFICATE,
    SEED_CLIENT_ID, SEED_CLIENT_PRIVATE_KEY, SEED_CLIENT_SECRET, SEED_ORG_ID, SEED_PASSWORD,
    SEED_SECURITY_TOKEN, SEED_USER_ID, SEED_USERNAME, Settings, UserConfig, UserStatus,
};
pub use server::{
    Credentials, DEFAULT_BODY_READ_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_BODY_BYTES,
    Emulator, EmulatorBuilder,
};
pub use state::{Counters, RefreshTokenStatus};

/// Builders of bearer assertions, for tests of the JWT and SAML bearer flows.
pub mod assertions {
    use base64::Engine as _;

    /// Signs `claims` as an RS256 JWT with a PKCS#8 or PKCS#1 PEM private key (for example
    /// [`SEED_CLIENT_PRIVATE_KEY`](crate::SEED_CLIENT_PRIVATE_KEY)).
    pub fn jwt(private_key_pem: &str, claims: &serde_json::Value) -> crate::Result<String> {
        crate::crypto::sign_with_pem(private_key_pem, claims).map_err(crate::Error::InvalidConfig)
    }

    /// An unsigned SAML 2.0 assertion, base64url-encoded as the SAML bearer flow sends it.
    pub fn saml(issuer: &str, subject: &str, audience: &str, not_on_or_after_s: i64) -> String {
        let xml = crate::saml::unsigned_assertion(issuer, subject, audience, not_on_or_after_s);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(xml)
    }
}
