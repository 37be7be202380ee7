//! The one error type of core, and [`ErrorKind`]: the decision a caller makes about it.
//!
//! Every flow returns [`Error`]. Its variants say *what happened* (the server answered with an
//! OAuth error, the transport failed, the body made no sense, …); [`Error::kind`] says *what to
//! do*: retry, wait and re-read, re-authorize, or fix the configuration.
//!
//! For an OAuth error response the server's `error` and `error_description` are kept in a
//! [`ServerError`], together with the [`Cause`] classified from them, so that "your refresh
//! token was revoked" and "you posted client credentials to login.salesforce.com" are told
//! apart even though Salesforce says `invalid_grant` for both.
//!
//! No message of this module contains a secret: every text that came from a server (the
//! `error_description`, `error_uri`, body excerpts) goes through the one scrubber,
//! [`crate::redact`], before it is kept, and bodies are shown only as short excerpts.
//!
//! Two questions the refresh protocol asks of an error have their own methods:
//! [`Error::is_salesforce_answer`] (did Salesforce's token endpoint itself answer with an error
//! document?) and [`Error::issued_tokens`] / [`Error::issued_refresh_token`] (did the endpoint
//! issue tokens that a later check then rejected? Keep them: with rotation on, the refresh
//! token sent is spent).
//!
//! ```
//! use sfauth_core::{Cause, Error, ErrorKind};
//! use sfauth_core::error::ServerError;
//!
//! let error = Error::from(ServerError::new(400, "invalid_grant", Some("expired access/refresh token")));
//! assert_eq!(error.kind(), ErrorKind::ReauthorizationRequired);
//! assert_eq!(error.server().map(ServerError::cause), Some(Cause::TokenExpiredOrRevoked));
//! assert_eq!(error.to_string(), "server error invalid_grant: expired access/refresh token");
//! ```

use std::fmt;
use std::time::Duration;

use crate::http::{TransportError, TransportErrorKind};

/// `Result` with core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the caller should do about an [`Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The grant is dead (refresh token expired, revoked or rotated away; user inactive, frozen
    /// or locked; login IP or hours policy; consent missing; code expired): send the user
    /// through an authorization flow again. Retrying will not help.
    ReauthorizationRequired,
    /// Salesforce's `token request is already being processed`: another refresher holds this
    /// refresh token. Wait, re-read the token store, and never re-send the same refresh token.
    RefreshInProgress,
    /// The client is not recognised or its secret is wrong (`invalid_client`,
    /// `invalid_client_id`).
    InvalidClient,
    /// The request was malformed or not allowed (`invalid_request`, `invalid_scope`,
    /// `unsupported_grant_type`, a state mismatch in a callback, …): a bug or a configuration
    /// mistake on our side.
    InvalidRequest,
    /// Too many requests (`rate_limit_exceeded`, HTTP 429); see [`Error::retry_after`].
    RateLimited,
    /// A 5xx answer or a transport failure: trying again later may succeed (if the request's
    /// [`RetrySafety`](crate::http::RetrySafety) allows re-sending it).
    Transient,
    /// The access token is no longer accepted ([`Error::SessionExpired`]: HTTP 401, or 403
    /// `Bad_OAuth_Token`, from userinfo or the identity URL; `INVALID_SESSION_ID` from the REST
    /// API, see [`crate::rest`]):
    /// refresh it, then retry once.
    SessionExpired,
    /// The response was malformed or unexpected: a status, a short redacted excerpt and a
    /// reason are kept. Also a signature mismatch or an invalid ID token.
    Protocol,
    /// Our configuration is wrong: a missing secret or redirect URI, an unusable key, the wrong
    /// host for the flow, a JWT audience Salesforce rejects, a TLS failure.
    Config,
}

impl ErrorKind {
    /// Whether the same operation may succeed later without any change on our side (after
    /// waiting, and for [`Self::RefreshInProgress`] after re-reading the stored tokens).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::RefreshInProgress | Self::RateLimited | Self::Transient
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ReauthorizationRequired => "reauthorization required",
            Self::RefreshInProgress => "refresh in progress",
            Self::InvalidClient => "invalid client",
            Self::InvalidRequest => "invalid request",
            Self::RateLimited => "rate limited",
            Self::Transient => "transient",
            Self::SessionExpired => "session expired",
            Self::Protocol => "protocol",
            Self::Config => "config",
        })
    }
}

/// Why Salesforce refused, classified from `error` and `error_description`.
///
/// Each cause says what to do about it in words: [`Cause::fix`], also its `Display`. Where one
/// Salesforce answer has several possible causes, the cause is the one the answer supports and
/// the fix names the others (see the table in the crate docs).
///
/// ```
/// use sfauth_core::Cause;
/// use sfauth_core::error::ServerError;
///
/// let blocked = ServerError::new(400, "invalid_grant", Some("ip restricted"));
/// assert_eq!(blocked.cause(), Cause::IpNotAllowed);
/// assert!(blocked.cause().fix().contains("allowed egress"));
/// assert!(!blocked.cause().fix().contains("authorize again"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cause {
    /// `expired access/refresh token`: revoked by an admin or the user, expired by the refresh
    /// token policy (the partner mandate's 30-day idle limit among them), evicted by a sixth
    /// approval, killed by reuse of a rotated-out refresh token, or left behind by a sandbox
    /// refresh. Salesforce sends the same description for all of these, so the client cannot
    /// tell them apart from the answer; the manager adds what it knows (how long the refresh
    /// token had been idle) to its reason.
    TokenExpiredOrRevoked,
    /// `authentication failure` / `invalid user credentials`: wrong username, password or
    /// security token, the username-password flow blocked for the org or for an external client
    /// app (Salesforce answers a blocked flow with the same words), or a sandbox user on the
    /// production host.
    AuthenticationFailure,
    /// `IP restricted or invalid login hours`: the user's profile allows logins from other
    /// addresses or at other hours only.
    IpOrLoginHoursRestricted,
    /// `ip restricted` (alone): the request came from an address outside the app's
    /// refresh-token IP allowlist (partner-app mandate). The refresh token is still valid and was
    /// not spent; re-authorizing does not help, since the next refresh leaves from the same
    /// address.
    IpNotAllowed,
    /// `user hasn't approved this consumer`: no prior approval or admin pre-authorization.
    NotApproved,
    /// `inactive_user`, or a description saying the user is inactive, frozen or locked.
    UserInactive,
    /// `inactive_org`: the org is locked, closed or suspended.
    OrgInactive,
    /// The connected app is blocked in the org (`app is blocked`).
    AppBlocked,
    /// `invalid_client` / `app must be installed into org`: since September 2025 a connected
    /// app that is not installed in the org cannot be authorized by new users, and its device
    /// flow is refused for everyone. Tokens issued earlier keep working.
    AppNotInstalled,
    /// The username-password flow is refused by name (a description that says the flow is
    /// blocked or not supported). Salesforce usually says only `authentication failure`, which
    /// is [`Cause::AuthenticationFailure`].
    PasswordFlowBlocked,
    /// `invalid_client` / `invalid client credentials` (or `invalid_client_credentials`): the
    /// consumer secret was refused, or not sent where the app requires it (a partner app's code
    /// exchange).
    ClientSecretRejected,
    /// `rate_limit_exceeded` / `Number of logins exceeded`: the user's logins (password, JWT,
    /// SAML, client credentials, SOAP) passed the per-user hourly limit.
    LoginRateExceeded,
    /// `missing required code challenge` or `unsupported code challenge method`: the app
    /// requires PKCE with `S256`.
    PkceRequired,
    /// `invalid code verifier`: the exchange's `code_verifier` is missing or does not match the
    /// authorization's challenge, or the code was issued without a challenge and the app now
    /// requires PKCE.
    CodeVerifierInvalid,
    /// `request not supported on this domain`: client credentials sent to login or test
    /// instead of the My Domain.
    WrongHost,
    /// `no client credentials user enabled`: the app has no Run As user (or the partner
    /// mandate refuses the flow).
    NoClientCredentialsUser,
    /// `audience is invalid` / `Audience validation failed`: the JWT or SAML `aud` does not
    /// match the login host.
    AudienceInvalid,
    /// `expired authorization code`: the code was used or expired. On a refresh, Salesforce
    /// sent this before Winter '25 for a concurrent request on the same refresh token, and it is
    /// classified as [`Cause::RequestInProgress`] there.
    AuthorizationCodeExpired,
    /// `token request is already being processed`: a concurrent request on the same refresh
    /// token.
    RequestInProgress,
    /// The device code expired before the user approved (`expired_token`).
    DeviceCodeExpired,
    /// The user or the authorization server refused (`access_denied`, `immediate_unsuccessful`).
    AccessDenied,
    /// Nothing more specific is known.
    Other,
}

impl Cause {
    /// A stable snake_case name, for metric labels and logs.
    ///
    /// ```
    /// assert_eq!(sfauth_core::Cause::TokenExpiredOrRevoked.as_str(), "token_expired_or_revoked");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenExpiredOrRevoked => "token_expired_or_revoked",
            Self::AuthenticationFailure => "authentication_failure",
            Self::IpOrLoginHoursRestricted => "ip_or_login_hours_restricted",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::NotApproved => "not_approved",
            Self::UserInactive => "user_inactive",
            Self::OrgInactive => "org_inactive",
            Self::AppBlocked => "app_blocked",
            Self::AppNotInstalled => "app_not_installed",
            Self::PasswordFlowBlocked => "password_flow_blocked",
            Self::ClientSecretRejected => "client_secret_rejected",
            Self::LoginRateExceeded => "login_rate_exceeded",
            Self::PkceRequired => "pkce_required",
            Self::CodeVerifierInvalid => "code_verifier_invalid",
            Self::WrongHost => "wrong_host",
            Self::NoClientCredentialsUser => "no_client_credentials_user",
            Self::AudienceInvalid => "audience_invalid",
            Self::AuthorizationCodeExpired => "authorization_code_expired",
            Self::RequestInProgress => "request_in_progress",
            Self::DeviceCodeExpired => "device_code_expired",
            Self::AccessDenied => "access_denied",
            Self::Other => "other",
        }
    }

    /// What to do about it, in one sentence a person can act on. Also the cause's `Display`.
    ///
    /// ```
    /// use sfauth_core::Cause;
    ///
    /// assert!(Cause::AppNotInstalled.fix().contains("install the connected app"));
    /// assert_eq!(Cause::LoginRateExceeded.to_string(), Cause::LoginRateExceeded.fix());
    /// ```
    pub fn fix(self) -> &'static str {
        match self {
            Self::TokenExpiredOrRevoked => {
                "the refresh token is gone (revoked, expired by the app's refresh token policy \
                 such as the 30-day idle limit, rotated out, or left behind by a sandbox \
                 refresh): a person must authorize again"
            }
            Self::AuthenticationFailure => {
                "check the username, password and security token and the login host (a sandbox \
                 user fails on production); if they are right, the username-password flow is \
                 blocked for this org or app (external client apps have none): use the JWT \
                 bearer, client credentials or web server flow instead"
            }
            Self::IpOrLoginHoursRestricted => {
                "the user's profile allows logins only from other IP addresses or at other \
                 hours: log in from an allowed address or time, or have an admin change the \
                 profile's login IP ranges or hours"
            }
            Self::IpNotAllowed => {
                "this address is outside the app's refresh-token IP allowlist; the refresh token \
                 is still valid, so do not re-authorize: route refreshes through an allowed \
                 egress (a proxy with a static address, sfauth_transport::Proxy) or have an admin \
                 add this address to the allowlist"
            }
            Self::NotApproved => {
                "the user has not approved the app: authorize once in a browser, or have an \
                 admin pre-authorize the user's profile or permission set"
            }
            Self::UserInactive => {
                "the user is inactive, frozen or locked: an admin must reactivate the user, then \
                 a person authorizes again"
            }
            Self::OrgInactive => "the org is locked, closed or suspended: contact its admin",
            Self::AppBlocked => {
                "an admin blocked the connected app in this org: it must be unblocked before \
                 anyone can authorize it again"
            }
            Self::AppNotInstalled => {
                "the connected app is not installed in this org: an admin must install the \
                 connected app (or grant users \"Approve Uninstalled Connected Apps\"); tokens \
                 issued earlier keep working"
            }
            Self::PasswordFlowBlocked => {
                "the username-password flow is blocked for this org or app: use the JWT bearer, \
                 client credentials or web server flow instead"
            }
            Self::ClientSecretRejected => {
                "the consumer secret was refused or not sent: configure the app's current \
                 secret; during a staged rotation configure the old and the new one \
                 (ConnectedApp::with_next_secret) so that the client falls back to the other"
            }
            Self::LoginRateExceeded => {
                "the user's logins passed Salesforce's hourly limit: back off (the limit counts \
                 the last hour, so wait up to an hour) and reuse tokens instead of logging in \
                 per call"
            }
            Self::PkceRequired => {
                "the app requires PKCE with S256: send code_challenge with \
                 code_challenge_method=S256 (OAuthClient::authorize_url does)"
            }
            Self::CodeVerifierInvalid => {
                "send the code_verifier of the same authorization request; a code obtained \
                 without a PKCE challenge cannot be exchanged once PKCE is required: authorize \
                 again with PKCE"
            }
            Self::WrongHost => {
                "send client credentials to the org's My Domain, not to login or test"
            }
            Self::NoClientCredentialsUser => {
                "the app has no Run As user for the client credentials flow (or the partner \
                 mandate refuses it): set one in the app's policies, or use another flow"
            }
            Self::AudienceInvalid => {
                "the assertion's audience must be the login host it is sent to \
                 (https://login.salesforce.com, https://test.salesforce.com or the My Domain)"
            }
            Self::AuthorizationCodeExpired => {
                "the authorization code was used or expired: authorize again"
            }
            Self::RequestInProgress => {
                "another request is using this refresh token: wait and read the stored tokens \
                 again, never re-send the same refresh token"
            }
            Self::DeviceCodeExpired => "the device code expired: start the device flow again",
            Self::AccessDenied => "the user or the server refused the authorization",
            Self::Other => "see Salesforce's error and description",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.fix())
    }
}

/// Which request produced an error response, where that changes its meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Context {
    /// A refresh-token grant.
    Refresh,
    /// Any other request.
    Other,
}

/// An OAuth error response: the server's `error`, `error_description` and `error_uri`, the HTTP
/// status, and what they mean.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerError {
    status: u16,
    error: String,
    description: Option<String>,
    uri: Option<String>,
    retry_after: Option<Duration>,
    cause: Cause,
    kind: ErrorKind,
}

impl ServerError {
    /// Classifies an error response from any endpoint other than a refresh.
    pub fn new(status: u16, error: &str, description: Option<&str>) -> Self {
        Self::classify(status, error, description, Context::Other)
    }

    pub(crate) fn classify(
        status: u16,
        error: &str,
        description: Option<&str>,
        context: Context,
    ) -> Self {
        let error = clip(error, 80);
        let description = description.map(|d| clip(d, 300)).filter(|d| !d.is_empty());
        // Classified on the text as sent, kept only scrubbed: a description may echo a token.
        let (cause, kind) = classify(status, &error, description.as_deref(), context);
        let error = scrubbed(error);
        let description = description.map(scrubbed);
        Self {
            status,
            error,
            description,
            uri: None,
            retry_after: None,
            cause,
            kind,
        }
    }

    #[must_use]
    pub(crate) fn with_uri(mut self, uri: Option<&str>) -> Self {
        self.uri = uri.map(|u| scrubbed(clip(u, 300)));
        self
    }

    #[must_use]
    pub(crate) fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// The HTTP status (400 for nearly every Salesforce OAuth error; 0 when the error came in a
    /// redirect rather than an HTTP response).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The `error` code, as sent (`invalid_grant`, `invalid_client_id`, …).
    pub fn error(&self) -> &str {
        &self.error
    }

    /// The `error_description`, as sent but clipped to 300 characters and with anything
    /// secret-shaped replaced (see [`crate::redact`]).
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The `error_uri`, when sent (Salesforce adds one for some SAML failures), scrubbed.
    pub fn uri(&self) -> Option<&str> {
        self.uri.as_deref()
    }

    /// Whether this is an OAuth error document that an HTTP response carried in its body
    /// (JSON, XML or urlencoded) with both `error` and `error_description`, which is how
    /// Salesforce's own endpoints refuse a request. A gateway or proxy in front of Salesforce
    /// answers with HTML, an empty body or a document of its own shape, and those never become
    /// a `ServerError` at all (they are [`Error::Status`]); a code alone, or an error from a
    /// redirect (status 0), is not counted either. See [`Error::is_salesforce_answer`].
    pub fn is_salesforce_answer(&self) -> bool {
        self.status != 0 && !self.error.is_empty() && self.description.is_some()
    }

    /// The classified cause.
    pub fn cause(&self) -> Cause {
        self.cause
    }

    /// What to do about it.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server error {}", self.error)?;
        if let Some(description) = &self.description {
            write!(f, ": {description}")?;
        }
        Ok(())
    }
}

fn classify(
    status: u16,
    error: &str,
    description: Option<&str>,
    context: Context,
) -> (Cause, ErrorKind) {
    use Cause as C;
    use ErrorKind as K;
    let description = description.unwrap_or_default().to_ascii_lowercase();
    let says = |needle: &str| description.contains(needle);
    match error {
        "invalid_grant" => {
            let cause = if says("already being processed") {
                C::RequestInProgress
            } else if says("expired authorization code") {
                match context {
                    Context::Refresh => C::RequestInProgress,
                    Context::Other => C::AuthorizationCodeExpired,
                }
            } else if says("expired access/refresh token") || says("revoked") {
                C::TokenExpiredOrRevoked
            } else if password_flow_blocked(&description) {
                C::PasswordFlowBlocked
            } else if says("authentication failure") || says("invalid user credentials") {
                C::AuthenticationFailure
            } else if says("login hours") {
                C::IpOrLoginHoursRestricted
            } else if says("ip restricted") || says("ip not allowed") {
                // The refresh-token allowlist's answer, as reported on the wire ("ip
                // restricted" alone); the profile restriction always names login hours too.
                C::IpNotAllowed
            } else if says("approved this consumer") {
                C::NotApproved
            } else if says("audience") {
                C::AudienceInvalid
            } else if says("not supported on this domain") {
                C::WrongHost
            } else if says("client credentials user") {
                C::NoClientCredentialsUser
            } else if says("code verifier") {
                C::CodeVerifierInvalid
            } else if says("must be installed") || says("not installed") {
                C::AppNotInstalled
            } else if says("blocked") {
                // Before the user checks: "blocked" contains "locked".
                C::AppBlocked
            } else if says("inactive") || says("frozen") || says("locked") {
                C::UserInactive
            } else {
                C::Other
            };
            let kind = match cause {
                C::RequestInProgress => K::RefreshInProgress,
                C::AudienceInvalid
                | C::WrongHost
                | C::NoClientCredentialsUser
                | C::AppBlocked
                | C::AppNotInstalled
                | C::IpNotAllowed
                | C::PasswordFlowBlocked => K::Config,
                _ => K::ReauthorizationRequired,
            };
            (cause, kind)
        }
        "invalid_client" | "invalid_client_id" | "unauthorized_client"
            if says("must be installed") || says("not installed") =>
        {
            (C::AppNotInstalled, K::Config)
        }
        "invalid_client" if says("client credentials") || says("secret") => {
            (C::ClientSecretRejected, K::InvalidClient)
        }
        "invalid_client_credentials" => (C::ClientSecretRejected, K::InvalidClient),
        "invalid_client_id" | "invalid_client" | "unauthorized_client" => {
            (C::Other, K::InvalidClient)
        }
        "invalid_request" if says("code challenge") => (C::PkceRequired, K::Config),
        "invalid_request" if says("code verifier") => (C::CodeVerifierInvalid, K::InvalidRequest),
        "inactive_user" => (C::UserInactive, K::ReauthorizationRequired),
        "inactive_org" => (C::OrgInactive, K::ReauthorizationRequired),
        "access_denied" | "access-denied" | "immediate_unsuccessful" => {
            (C::AccessDenied, K::ReauthorizationRequired)
        }
        "expired_token" => (C::DeviceCodeExpired, K::ReauthorizationRequired),
        "rate_limit_exceeded" if says("login") => (C::LoginRateExceeded, K::RateLimited),
        "rate_limit_exceeded" | "slow_down" => (C::Other, K::RateLimited),
        "server_error" | "temporarily_unavailable" | "authorization_pending" => {
            (C::Other, K::Transient)
        }
        _ if status == 429 => (C::Other, K::RateLimited),
        _ if status >= 500 => (C::Other, K::Transient),
        _ => (C::Other, K::InvalidRequest),
    }
}

/// Whether a description names the username-password flow as blocked or unsupported (not the
/// bare `authentication failure` Salesforce usually sends, which could be a wrong password).
fn password_flow_blocked(description: &str) -> bool {
    let names_flow = [
        "username-password",
        "username password",
        "password flow",
        "unpw",
    ]
    .iter()
    .any(|name| description.contains(name));
    let refused = ["block", "disabled", "not supported", "not allowed"]
        .iter()
        .any(|word| description.contains(word));
    names_flow && refused
}

/// Everything that can go wrong in core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an OAuth error (`{"error": …, "error_description": …}`, in any
    /// format, or in a redirect).
    #[error("{0}")]
    Server(Box<ServerError>),
    /// The server answered with an error status and a body that is not an OAuth error (an HTML
    /// maintenance page, a REST error array, an empty body). Its kind follows the status: 429
    /// rate limited, 5xx transient, 401 invalid client (a token endpoint refusing the client
    /// without saying why), anything else (including an unfollowed 3xx redirect) protocol.
    #[error("unexpected http status {status}: {excerpt}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// `Retry-After` as a wait from when the response was read, when sent.
        retry_after: Option<Duration>,
        /// A short, redacted excerpt of the body.
        excerpt: String,
    },
    /// A request authenticated with an access token (userinfo, the identity URL) was refused
    /// with HTTP 401, or with the identity service's 403 `Bad_OAuth_Token`: the token is dead,
    /// refresh it.
    #[error("access token refused with http {status}")]
    SessionExpired {
        /// The HTTP status.
        status: u16,
    },
    /// The request produced no response.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A success response that could not be parsed or lacks a required field.
    #[error("malformed response (http {status}): {reason}; body: {excerpt}")]
    Parse {
        /// The HTTP status.
        status: u16,
        /// What was wrong, without any value from the body.
        reason: String,
        /// A short, redacted excerpt of the body.
        excerpt: String,
    },
    /// The response's `signature` does not match its `id` and `issued_at`: the identity URL may
    /// have been tampered with. A token response that fails this check after tokens were read
    /// from it is [`Error::TokensRejected`] holding this error, so that the tokens are not lost.
    #[error("token response signature does not match its id and issued_at")]
    SignatureMismatch,
    /// The token endpoint answered 2xx and tokens were read from the body, but a check made
    /// after reading them failed (the signature, a missing or invalid `id` or
    /// `instance_url`, an `error` field next to the tokens). Salesforce has acted on the request: with rotation on, the refresh token
    /// that was sent is spent, and [`Error::issued_refresh_token`] is now the only live one.
    /// Its kind is [`ErrorKind::Protocol`], whatever the check: it is never to be retried.
    #[error("{0}")]
    TokensRejected(Box<RejectedTokens>),
    /// The `state` of an authorization callback is missing or differs from the one sent.
    #[error("authorization callback state does not match the request")]
    StateMismatch,
    /// An ID token failed validation (signature, issuer, audience, expiry or nonce).
    #[error("invalid id token: {0}")]
    IdToken(String),
    /// The configuration cannot work (missing secret, redirect URI or key; unusable URL).
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// What [`Error::TokensRejected`] holds: the failed check, and whatever tokens the 2xx
/// response issued.
#[derive(Debug)]
pub struct RejectedTokens {
    reason: Error,
    tokens: Option<crate::token::TokenSet>,
    refresh_token: Option<crate::secret::RefreshToken>,
}

impl RejectedTokens {
    pub(crate) fn new(
        reason: Error,
        tokens: Option<crate::token::TokenSet>,
        refresh_token: Option<crate::secret::RefreshToken>,
    ) -> Self {
        Self {
            reason,
            tokens,
            refresh_token,
        }
    }

    /// The check that failed: [`Error::SignatureMismatch`], [`Error::Parse`], or the
    /// [`Error::Server`] of a 2xx body that carried both an `error` and a refresh token.
    pub fn reason(&self) -> &Error {
        &self.reason
    }

    /// The whole token set, when one could be built (it can for a signature mismatch, not for a
    /// missing `id` or `instance_url`). Its `id` and `issued_at` are unauthenticated after a
    /// signature mismatch.
    pub fn tokens(&self) -> Option<&crate::token::TokenSet> {
        self.tokens.as_ref()
    }

    /// The refresh token the response carried (for a refresh without rotation, the one sent,
    /// still valid), whether or not a whole set could be built.
    pub fn refresh_token(&self) -> Option<&crate::secret::RefreshToken> {
        self.tokens
            .as_ref()
            .and_then(|tokens| tokens.refresh_token.as_ref())
            .or(self.refresh_token.as_ref())
    }

    /// The failed check, the token set and the refresh token, by value.
    pub fn into_parts(
        self,
    ) -> (
        Error,
        Option<crate::token::TokenSet>,
        Option<crate::secret::RefreshToken>,
    ) {
        let refresh_token = self
            .tokens
            .as_ref()
            .and_then(|tokens| tokens.refresh_token.clone())
            .or(self.refresh_token);
        (self.reason, self.tokens, refresh_token)
    }

    /// Fills in the refresh token that was sent when the response carried none (rotation off:
    /// the one sent is still the live one).
    pub(crate) fn keep_sent_refresh_token(&mut self, sent: &crate::secret::RefreshToken) {
        if let Some(tokens) = &mut self.tokens {
            tokens.refresh_token.get_or_insert_with(|| sent.clone());
        }
        self.refresh_token.get_or_insert_with(|| sent.clone());
    }
}

impl fmt::Display for RejectedTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tokens were issued but the response was rejected: {}",
            self.reason
        )
    }
}

impl From<crate::invalid::InvalidValue> for Error {
    fn from(invalid: crate::invalid::InvalidValue) -> Self {
        // Already scrubbed when it was made.
        Self::Config(invalid.message().to_owned())
    }
}

impl Error {
    /// A configuration error; the message is scrubbed (see [`crate::redact`]) in case it quotes
    /// a value.
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::Config(scrubbed(message.into()))
    }

    pub(crate) fn parse(status: u16, reason: impl Into<String>, body: &[u8]) -> Self {
        Self::Parse {
            status,
            reason: reason.into(),
            excerpt: excerpt(body),
        }
    }

    /// What the caller should do; see [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Server(server) => server.kind(),
            Self::Status { status, .. } => match status {
                429 => ErrorKind::RateLimited,
                500..=599 => ErrorKind::Transient,
                401 => ErrorKind::InvalidClient,
                _ => ErrorKind::Protocol,
            },
            // A status that arrived before the failure decides first: a 503 whose body could
            // not be read is still a 503.
            Self::Transport(error) => match (error.status(), error.kind()) {
                (Some(429), _) => ErrorKind::RateLimited,
                (Some(500..=599), _) => ErrorKind::Transient,
                (_, TransportErrorKind::Tls | TransportErrorKind::InsecureOrInvalidUrl) => {
                    ErrorKind::Config
                }
                (_, TransportErrorKind::BodyTooLarge) => ErrorKind::Protocol,
                _ => ErrorKind::Transient,
            },
            Self::SessionExpired { .. } => ErrorKind::SessionExpired,
            Self::Parse { .. } | Self::SignatureMismatch | Self::IdToken(_) => ErrorKind::Protocol,
            // Never retryable, whatever the reason: the request was acted on, and a retry
            // would re-send a spent credential.
            Self::TokensRejected(_) => ErrorKind::Protocol,
            Self::StateMismatch => ErrorKind::InvalidRequest,
            Self::Config(_) => ErrorKind::Config,
        }
    }

    /// The server's OAuth error, if that is what this is.
    pub fn server(&self) -> Option<&ServerError> {
        match self {
            Self::Server(server) => Some(server),
            _ => None,
        }
    }

    /// Whether Salesforce itself answered with an OAuth error document: an [`Error::Server`]
    /// read from a response body with both `error` and `error_description`
    /// ([`ServerError::is_salesforce_answer`]). `false` for everything else, notably an
    /// [`Error::Status`] (a 5xx with an HTML or empty body, as a gateway or proxy sends), a
    /// transport failure, or a body too large to read.
    ///
    /// For a refresh this tells "Salesforce refused, so the refresh token was not spent" apart
    /// from "something in between failed, and Salesforce may have rotated the token".
    ///
    /// ```
    /// use sfauth_core::Error;
    /// use sfauth_core::error::ServerError;
    ///
    /// let refused = Error::from(ServerError::new(503, "unknown_error", Some("retry your request")));
    /// assert!(refused.is_salesforce_answer());
    /// let gateway = Error::Status { status: 503, retry_after: None, excerpt: "<html>".into() };
    /// assert!(!gateway.is_salesforce_answer());
    /// ```
    pub fn is_salesforce_answer(&self) -> bool {
        self.server().is_some_and(ServerError::is_salesforce_answer)
    }

    /// Whether the request that failed may have been acted on by Salesforce, so that a
    /// single-use credential in it (a rotating refresh token, an authorization code) may be
    /// spent. `false` only when the error proves otherwise: the request never left
    /// ([`TransportErrorKind::never_sent`], or a configuration error found before sending), or
    /// Salesforce answered with its own error document ([`Self::is_salesforce_answer`]).
    /// Everything else counts as maybe spent, including a 2xx that could not be read or was
    /// rejected ([`Error::TokensRejected`]: see [`Self::issued_refresh_token`]) and a status
    /// without a Salesforce error document, since a gateway in front of Salesforce can answer
    /// 502, 503 or 504 after Salesforce has already rotated the token.
    pub fn may_have_been_spent(&self) -> bool {
        match self {
            Self::Transport(error) => !error.kind().never_sent(),
            Self::Config(_) | Self::StateMismatch => false,
            _ => !self.is_salesforce_answer(),
        }
    }

    /// The tokens a 2xx token response issued before a later check rejected it
    /// ([`Error::TokensRejected`]), when a whole set could be built.
    pub fn issued_tokens(&self) -> Option<&crate::token::TokenSet> {
        match self {
            Self::TokensRejected(rejected) => rejected.tokens(),
            _ => None,
        }
    }

    /// The refresh token a 2xx token response issued before a later check rejected it
    /// ([`Error::TokensRejected`]). With rotation on, this is the only live refresh token of
    /// the grant: store it before anything else.
    pub fn issued_refresh_token(&self) -> Option<&crate::secret::RefreshToken> {
        match self {
            Self::TokensRejected(rejected) => rejected.refresh_token(),
            _ => None,
        }
    }

    /// How long the server asked us to wait (`Retry-After`, delta-seconds or an HTTP date, read
    /// by [`crate::http::retry_after`] as of the response), when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Server(server) => server.retry_after,
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl From<ServerError> for Error {
    fn from(error: ServerError) -> Self {
        Self::Server(Box::new(error))
    }
}

use crate::redact::excerpt;

/// `text` through [`crate::redact::scrub`], owned.
fn scrubbed(text: String) -> String {
    match crate::redact::scrub(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(clean) => clean,
    }
}

fn clip(s: &str, max: usize) -> String {
    let cleaned: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    cleaned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_invalid_grant() {
        let cases = [
            (
                "expired access/refresh token",
                Context::Refresh,
                Cause::TokenExpiredOrRevoked,
                ErrorKind::ReauthorizationRequired,
            ),
            (
                "token request is already being processed",
                Context::Refresh,
                Cause::RequestInProgress,
                ErrorKind::RefreshInProgress,
            ),
            (
                "expired authorization code",
                Context::Refresh,
                Cause::RequestInProgress,
                ErrorKind::RefreshInProgress,
            ),
            (
                "expired authorization code",
                Context::Other,
                Cause::AuthorizationCodeExpired,
                ErrorKind::ReauthorizationRequired,
            ),
            (
                "authentication failure",
                Context::Other,
                Cause::AuthenticationFailure,
                ErrorKind::ReauthorizationRequired,
            ),
            (
                "IP restricted or invalid login hours",
                Context::Other,
                Cause::IpOrLoginHoursRestricted,
                ErrorKind::ReauthorizationRequired,
            ),
            (
                "ip restricted or invalid login hours",
                Context::Refresh,
                Cause::IpOrLoginHoursRestricted,
                ErrorKind::ReauthorizationRequired,
            ),
            (
                "user hasn't approved this consumer",
                Context::Other,
                Cause::NotApproved,
                ErrorKind::ReauthorizationRequired,
            ),
            (
                "audience is invalid",
                Context::Other,
                Cause::AudienceInvalid,
                ErrorKind::Config,
            ),
            (
                "Audience validation failed",
                Context::Other,
                Cause::AudienceInvalid,
                ErrorKind::Config,
            ),
            (
                "request not supported on this domain",
                Context::Other,
                Cause::WrongHost,
                ErrorKind::Config,
            ),
            (
                "no client credentials user enabled",
                Context::Other,
                Cause::NoClientCredentialsUser,
                ErrorKind::Config,
            ),
            (
                "user is frozen",
                Context::Refresh,
                Cause::UserInactive,
                ErrorKind::ReauthorizationRequired,
            ),
            (
                "app is blocked",
                Context::Other,
                Cause::AppBlocked,
                ErrorKind::Config,
            ),
            (
                "user is locked out",
                Context::Other,
                Cause::UserInactive,
                ErrorKind::ReauthorizationRequired,
            ),
            (
                "something new",
                Context::Refresh,
                Cause::Other,
                ErrorKind::ReauthorizationRequired,
            ),
            // The 2025-2027 rules (issue #15): none of these asks for a new login.
            (
                "ip restricted",
                Context::Refresh,
                Cause::IpNotAllowed,
                ErrorKind::Config,
            ),
            (
                "IP restricted",
                Context::Other,
                Cause::IpNotAllowed,
                ErrorKind::Config,
            ),
            (
                "username-password flow is blocked for this org",
                Context::Other,
                Cause::PasswordFlowBlocked,
                ErrorKind::Config,
            ),
            (
                "app must be installed into org",
                Context::Other,
                Cause::AppNotInstalled,
                ErrorKind::Config,
            ),
            (
                "invalid code verifier",
                Context::Other,
                Cause::CodeVerifierInvalid,
                ErrorKind::ReauthorizationRequired,
            ),
        ];
        for (description, context, cause, kind) in cases {
            let error = ServerError::classify(400, "invalid_grant", Some(description), context);
            assert_eq!(
                (error.cause(), error.kind()),
                (cause, kind),
                "{description}"
            );
        }
    }

    #[test]
    fn kinds_of_other_codes() {
        for (status, code, kind) in [
            (400, "invalid_client_id", ErrorKind::InvalidClient),
            (400, "invalid_client", ErrorKind::InvalidClient),
            (401, "invalid_client_credentials", ErrorKind::InvalidClient),
            (400, "invalid_request", ErrorKind::InvalidRequest),
            (400, "unsupported_grant_type", ErrorKind::InvalidRequest),
            (400, "invalid_scope", ErrorKind::InvalidRequest),
            (400, "inactive_user", ErrorKind::ReauthorizationRequired),
            (400, "inactive_org", ErrorKind::ReauthorizationRequired),
            (400, "rate_limit_exceeded", ErrorKind::RateLimited),
            (429, "whatever", ErrorKind::RateLimited),
            (503, "whatever", ErrorKind::Transient),
            (400, "access_denied", ErrorKind::ReauthorizationRequired),
        ] {
            assert_eq!(ServerError::new(status, code, None).kind(), kind, "{code}");
        }
    }

    /// The answers of the 2025-2027 rules outside `invalid_grant`, with the cause and kind the
    /// user sees: each as the emulator sends it (crate docs of sfauth-emulator).
    #[test]
    fn causes_of_the_platform_rules() {
        for (code, description, cause, kind) in [
            (
                "invalid_client",
                "app must be installed into org",
                Cause::AppNotInstalled,
                ErrorKind::Config,
            ),
            (
                "invalid_client",
                "invalid client credentials",
                Cause::ClientSecretRejected,
                ErrorKind::InvalidClient,
            ),
            (
                "invalid_client_credentials",
                "client secret invalid",
                Cause::ClientSecretRejected,
                ErrorKind::InvalidClient,
            ),
            (
                "invalid_client_id",
                "client identifier invalid",
                Cause::Other,
                ErrorKind::InvalidClient,
            ),
            (
                "rate_limit_exceeded",
                "Number of logins exceeded",
                Cause::LoginRateExceeded,
                ErrorKind::RateLimited,
            ),
            (
                "rate_limit_exceeded",
                "too many requests",
                Cause::Other,
                ErrorKind::RateLimited,
            ),
            (
                "invalid_request",
                "missing required code challenge",
                Cause::PkceRequired,
                ErrorKind::Config,
            ),
            (
                "invalid_request",
                "unsupported code challenge method",
                Cause::PkceRequired,
                ErrorKind::Config,
            ),
            (
                "invalid_request",
                "invalid code verifier",
                Cause::CodeVerifierInvalid,
                ErrorKind::InvalidRequest,
            ),
            (
                "invalid_request",
                "HTTPS required",
                Cause::Other,
                ErrorKind::InvalidRequest,
            ),
        ] {
            let error = ServerError::new(400, code, Some(description));
            assert_eq!(
                (error.cause(), error.kind()),
                (cause, kind),
                "{code} {description}"
            );
        }
    }

    /// Every cause has a fix of its own in words, and no fix for a cause the client can
    /// survive by itself tells the user to re-authorize.
    #[test]
    fn every_cause_says_what_to_do() {
        let all = [
            Cause::TokenExpiredOrRevoked,
            Cause::AuthenticationFailure,
            Cause::IpOrLoginHoursRestricted,
            Cause::IpNotAllowed,
            Cause::NotApproved,
            Cause::UserInactive,
            Cause::OrgInactive,
            Cause::AppBlocked,
            Cause::AppNotInstalled,
            Cause::PasswordFlowBlocked,
            Cause::ClientSecretRejected,
            Cause::LoginRateExceeded,
            Cause::PkceRequired,
            Cause::CodeVerifierInvalid,
            Cause::WrongHost,
            Cause::NoClientCredentialsUser,
            Cause::AudienceInvalid,
            Cause::AuthorizationCodeExpired,
            Cause::RequestInProgress,
            Cause::DeviceCodeExpired,
            Cause::AccessDenied,
            Cause::Other,
        ];
        let fixes: std::collections::HashSet<&str> = all.iter().map(|c| c.fix()).collect();
        assert_eq!(fixes.len(), all.len());
        let names: std::collections::HashSet<&str> = all.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), all.len());
        for cause in [
            Cause::IpNotAllowed,
            Cause::LoginRateExceeded,
            Cause::ClientSecretRejected,
            Cause::AppNotInstalled,
        ] {
            assert!(!cause.fix().contains("authorize again"), "{cause:?}");
        }
        assert!(Cause::IpNotAllowed.fix().contains("do not re-authorize"));
        assert!(
            Cause::PasswordFlowBlocked
                .fix()
                .contains("use the JWT bearer")
        );
        assert!(Cause::AuthenticationFailure.fix().contains("blocked"));
    }

    #[test]
    fn server_text_is_classified_raw_and_kept_scrubbed() {
        let error = ServerError::classify(
            400,
            "invalid_grant",
            Some("expired access/refresh token 00D5e000000AbcdE!AQ4AQLEAK"),
            Context::Refresh,
        )
        .with_uri(Some("https://help.example/x?code=LEAKCODE"));
        assert_eq!(error.cause(), Cause::TokenExpiredOrRevoked);
        assert_eq!(
            error.description(),
            Some("expired access/refresh token [redacted]")
        );
        assert_eq!(error.uri(), Some("https://help.example/x?code=[redacted]"));
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("LEAK"), "{shown}");
        assert!(error.is_salesforce_answer());
        assert!(!ServerError::new(503, "server_error", None).is_salesforce_answer());
        assert!(!ServerError::new(0, "access_denied", Some("no")).is_salesforce_answer());
    }

    #[test]
    fn a_status_that_arrived_decides_the_kind_of_a_transport_failure() {
        let failure = |status: Option<u16>| {
            let mut error = TransportError::new(TransportErrorKind::BodyTooLarge, "too large");
            if let Some(status) = status {
                error = error.with_status(status);
            }
            Error::from(error).kind()
        };
        assert_eq!(failure(None), ErrorKind::Protocol);
        assert_eq!(failure(Some(200)), ErrorKind::Protocol);
        assert_eq!(failure(Some(503)), ErrorKind::Transient);
        assert_eq!(failure(Some(429)), ErrorKind::RateLimited);
    }

    #[test]
    fn what_may_have_been_spent() {
        let transport = |kind| Error::from(TransportError::new(kind, "x"));
        let status = |status| Error::Status {
            status,
            retry_after: None,
            excerpt: String::new(),
        };
        let maybe = [
            transport(TransportErrorKind::Timeout),
            transport(TransportErrorKind::BodyTooLarge),
            transport(TransportErrorKind::Other),
            status(502),
            status(503),
            Error::parse(200, "bad", b""),
            Error::SignatureMismatch,
            ServerError::new(503, "server_error", None).into(),
        ];
        for error in &maybe {
            assert!(error.may_have_been_spent(), "{error}");
        }
        let not = [
            transport(TransportErrorKind::Connect),
            transport(TransportErrorKind::Tls),
            Error::config("x"),
            ServerError::new(400, "invalid_grant", Some("expired access/refresh token")).into(),
            ServerError::new(503, "unknown_error", Some("retry your request")).into(),
        ];
        for error in &not {
            assert!(!error.may_have_been_spent(), "{error}");
        }
    }
}
