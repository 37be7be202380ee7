//! `/services/oauth2/token`: every grant and both device-flow steps; the response fields come
//! from `issue.rs`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;

use crate::context::{Peer, Rotated, Shared, ViaSite};
use crate::crypto;
use crate::format::{Fields, Format, OAuthError, respond};
use crate::issue::{Shape, finish, full_shape, site_fields, wants_refresh};
use crate::model::{AppKind, Flow, LatencyPlacement};
use crate::params::{ClientAuth, Params};
use crate::state::{DeviceGrant, DeviceStatus, State, bump};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const SAML2_BEARER: &str = "urn:ietf:params:oauth:grant-type:saml2-bearer";
const TT_ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
const TT_REFRESH: &str = "urn:ietf:params:oauth:token-type:refresh_token";
const TT_ID: &str = "urn:ietf:params:oauth:token-type:id_token";
const TT_SAML2: &str = "urn:ietf:params:oauth:token-type:saml2";

/// The handler.
pub(crate) async fn token(AxumState(shared): AxumState<Arc<Shared>>, req: Request) -> Response {
    let via_site = req.extensions().get::<ViaSite>().is_some_and(|v| v.0);
    let peer = req.extensions().get::<Peer>().map(|p| p.0.ip());
    let (headers, _, params) = Params::from_request(req).await;
    let format = Format::negotiate(params.get("format"), &headers);
    let ctx = Ctx {
        shared: &shared,
        headers: &headers,
        params: &params,
        via_site,
        peer,
        rotated: AtomicBool::new(false),
    };
    let mut response = match dispatch(&ctx).await {
        Ok(fields) => respond(StatusCode::OK, format, &fields),
        Err(e) => e.respond(format),
    };
    if ctx.rotated.load(Ordering::Relaxed) {
        response.extensions_mut().insert(Rotated);
    }
    response
}

struct Ctx<'a> {
    shared: &'a Arc<Shared>,
    headers: &'a HeaderMap,
    params: &'a Params,
    via_site: bool,
    /// The TCP peer's address, for the refresh-token IP allowlist.
    peer: Option<IpAddr>,
    /// Set when a refresh retired its refresh token for a new one.
    rotated: AtomicBool,
}

impl Ctx<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name)
    }

    fn now(&self) -> i64 {
        self.shared.clock.now_ms()
    }

    /// `shape`, signed with the secret the client authenticated with.
    fn signed(&self, st: &State, client_id: &str, mut shape: Shape) -> Shape {
        let auth = ClientAuth::from(self.headers, self.params);
        shape.signing_secret = st
            .app(client_id)
            .and_then(|a| a.config.matching_secret(|s| auth.secret_matches(s)))
            .map(str::to_owned);
        shape
    }

    /// The refresh-token IP allowlist, which covers the code exchange and the refresh: the TCP
    /// peer must be in one of the app's ranges when it names any.
    fn check_ip(&self, st: &State, client_id: &str) -> Result<(), OAuthError> {
        let app = st
            .app(client_id)
            .ok_or_else(OAuthError::invalid_client_id)?;
        let allowlist = &app.config.policy.refresh_token_ip_allowlist;
        if allowlist.is_empty()
            || self
                .peer
                .is_some_and(|ip| allowlist.iter().any(|r| r.contains(ip)))
        {
            return Ok(());
        }
        Err(OAuthError::configured(&st.settings.ip_blocked_error))
    }
}

fn count_grant(shared: &Shared, name: &str) {
    bump(
        shared
            .lock()
            .counters
            .grants
            .entry(name.to_owned())
            .or_default(),
    );
}

async fn dispatch(ctx: &Ctx<'_>) -> Result<Fields, OAuthError> {
    let grant = ctx.param("grant_type");
    if grant.is_none() && ctx.param("response_type") == Some("device_code") {
        count_grant(ctx.shared, "device_code");
        return device_start(ctx);
    }
    let name = match grant {
        Some("authorization_code" | "hybrid_auth_code") => "authorization_code",
        Some("refresh_token" | "hybrid_refresh") => "refresh_token",
        Some("password") => "password",
        Some("client_credentials") => "client_credentials",
        Some(JWT_BEARER) => "jwt_bearer",
        Some("device") => "device",
        Some(TOKEN_EXCHANGE) => "token_exchange",
        Some(SAML2_BEARER) => "saml_bearer",
        Some(other) => other,
        None => "none",
    };
    count_grant(ctx.shared, name);
    match name {
        "authorization_code" => authorization_code(ctx),
        "refresh_token" => refresh(ctx).await,
        "password" => password(ctx),
        "client_credentials" => client_credentials(ctx),
        "jwt_bearer" => jwt_bearer(ctx),
        "device" => device_poll(ctx),
        "token_exchange" => token_exchange(ctx),
        "saml_bearer" => saml_bearer(ctx),
        _ => Err(OAuthError::new(
            "unsupported_grant_type",
            "grant type not supported",
        )),
    }
}

/// Finds the app named by the client credentials and checks the secret when `need_secret` (a
/// presented secret is always checked).
fn authenticate(st: &State, auth: &ClientAuth, need_secret: bool) -> Result<String, OAuthError> {
    let client_id = auth
        .candidates()
        .into_iter()
        .find(|id| st.app(id).is_some())
        .ok_or_else(OAuthError::invalid_client_id)?;
    let app = st
        .app(&client_id)
        .ok_or_else(OAuthError::invalid_client_id)?;
    // During a staged rotation the current and the staged secret both authenticate.
    if (auth.client_secret.is_some() || need_secret)
        && app
            .config
            .matching_secret(|s| auth.secret_matches(s))
            .is_none()
    {
        return Err(OAuthError::invalid_client());
    }
    Ok(client_id)
}

fn require_flow(st: &State, client_id: &str, flow: Flow) -> Result<(), OAuthError> {
    let app = st
        .app(client_id)
        .ok_or_else(OAuthError::invalid_client_id)?;
    if flow == Flow::Password
        && (!app.config.flows.contains(&flow)
            || app.config.kind == AppKind::ExternalClientApp
            || st.org(&app.org_id).is_some_and(|o| o.block_password))
    {
        // Salesforce reports a blocked username-password flow as a failed login.
        return Err(OAuthError::configured(
            &st.settings.password_flow_blocked_error,
        ));
    }
    if flow == Flow::Device && !app.config.installed {
        // Since September 2025 the device flow of an uninstalled app is refused for everyone,
        // users who authorized it before included.
        return Err(OAuthError::app_not_installed());
    }
    if !app.config.flows.contains(&flow) {
        // UNCONFIRMED: Salesforce's wording for a flow the app does not allow.
        return Err(OAuthError::new(
            "unsupported_grant_type",
            "grant type not supported",
        ));
    }
    // A blocked app's refresh tokens were revoked with the block, so a refresh meets the usual
    // "expired access/refresh token" in `redeem_refresh` instead.
    if app.blocked && flow != Flow::RefreshToken {
        // UNCONFIRMED: a blocked app's token requests.
        return Err(OAuthError::invalid_grant("app is blocked"));
    }
    Ok(())
}

fn authorization_code(ctx: &Ctx<'_>) -> Result<Fields, OAuthError> {
    let now = ctx.now();
    let (mut st, client_id) = authenticated_client(ctx, false, Flow::AuthorizationCode)?;
    let auth = ClientAuth::from(ctx.headers, ctx.params);
    let app = st
        .app(&client_id)
        .ok_or_else(OAuthError::invalid_client_id)?;
    if auth.client_secret.is_none() && app.config.require_secret_for_web_server_flow {
        return Err(OAuthError::invalid_client());
    }
    let needs_pkce = app.config.needs_pkce();
    ctx.check_ip(&st, &client_id)?;
    let code_value = ctx
        .param("code")
        .ok_or_else(|| OAuthError::invalid_grant("invalid authorization code"))?;
    let Some(code) = st.codes.get(code_value).cloned() else {
        return Err(OAuthError::invalid_grant("invalid authorization code"));
    };
    if code.client_id != client_id {
        return Err(OAuthError::invalid_grant("invalid authorization code"));
    }
    if code.used || now >= code.expires_ms {
        return Err(OAuthError::invalid_grant("expired authorization code"));
    }
    if ctx.param("redirect_uri") != Some(code.redirect_uri.as_str()) {
        return Err(OAuthError::invalid_grant(
            "redirect_uri must match configuration",
        ));
    }
    if let Some(challenge) = &code.challenge {
        match ctx.param("code_verifier") {
            None => return Err(OAuthError::invalid_grant("invalid code verifier")),
            Some(v) if &crypto::pkce_s256(v) != challenge => {
                return Err(OAuthError::invalid_request("invalid code verifier"));
            }
            Some(_) => {}
        }
    } else if needs_pkce {
        // A code issued before PKCE became required (the mandate switched on in between).
        return Err(OAuthError::invalid_grant("invalid code verifier"));
    }
    if let Some(c) = st.codes.get_mut(code_value) {
        c.used = true;
    }
    st.check_user(&code.user_id)?;
    let with_refresh = wants_refresh(&st, &client_id, &code.scopes);
    let issued = st.issue(
        &client_id,
        &code.user_id,
        code.scopes.clone(),
        with_refresh,
        now,
    );
    let mut shape = ctx.signed(&st, &client_id, full_shape());
    shape.id_token_nonce = Some(code.nonce.clone());
    shape.extra = site_fields(ctx.shared, ctx.via_site);
    Ok(finish(ctx.shared, ctx.via_site, &mut st, issued, shape))
}

/// Removes a refresh token from the in-flight set when its request ends, however it ends.
struct InFlight<'a> {
    shared: &'a Shared,
    token: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.shared.lock().in_flight.remove(&self.token);
    }
}

async fn refresh(ctx: &Ctx<'_>) -> Result<Fields, OAuthError> {
    let auth = ClientAuth::from(ctx.headers, ctx.params);
    let token = ctx
        .param("refresh_token")
        .ok_or_else(OAuthError::expired_token)?
        .to_owned();
    let (client_id, latency) = {
        let mut st = ctx.shared.lock();
        let need_secret = auth
            .candidates()
            .iter()
            .find_map(|id| st.app(id))
            .is_some_and(|a| a.config.require_secret_for_refresh);
        let client_id = authenticate(&st, &auth, need_secret)?;
        require_flow(&st, &client_id, Flow::RefreshToken)?;
        // Refused before the lock and before the token is looked at: a blocked address
        // spends nothing.
        if let Err(e) = ctx.check_ip(&st, &client_id) {
            bump(&mut st.counters.refresh_tokens_rejected);
            return Err(e);
        }
        if !st.in_flight.insert(token.clone()) {
            bump(&mut st.counters.refresh_tokens_rejected);
            return Err(OAuthError::invalid_grant(
                "token request is already being processed",
            ));
        }
        let latency = st.app(&client_id).map(|a| {
            (
                a.config.policy.refresh_latency_ms,
                a.config.policy.refresh_latency_placement,
            )
        });
        (client_id, latency)
    };
    // Held until the answer is ready, latency included: a second request with the same token
    // meanwhile meets "already being processed", whichever side of the commit the wait is on.
    let _guard = InFlight {
        shared: ctx.shared,
        token: token.clone(),
    };
    let (latency_ms, placement) = latency.unwrap_or((0, LatencyPlacement::AfterCommit));
    let wait = || async move {
        if latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(latency_ms)).await;
        }
    };
    if placement == LatencyPlacement::BeforeCommit {
        wait().await;
    }
    let result = {
        let now = ctx.now();
        let mut st = ctx.shared.lock();
        st.redeem_refresh(&token, &client_id, now).map(|issued| {
            if issued.refresh_token.is_some() {
                ctx.rotated.store(true, Ordering::Relaxed);
            }
            let mut shape = ctx.signed(&st, &client_id, full_shape());
            shape.extra = site_fields(ctx.shared, ctx.via_site);
            finish(ctx.shared, ctx.via_site, &mut st, issued, shape)
        })
    };
    if placement == LatencyPlacement::AfterCommit {
        wait().await;
    }
    result
}

fn password(ctx: &Ctx<'_>) -> Result<Fields, OAuthError> {
    let now = ctx.now();
    let (mut st, client_id) = authenticated_client(ctx, true, Flow::Password)?;
    let username = ctx.param("username").unwrap_or("");
    let presented = ctx.param("password").unwrap_or("");
    let user = st
        .user_by_name(username)
        .ok_or_else(|| OAuthError::invalid_grant("authentication failure"))?;
    let expected = format!("{}{}", user.config.password, user.config.security_token);
    if !crypto::secret_eq(presented, &expected) {
        return Err(OAuthError::invalid_grant("authentication failure"));
    }
    let user_id = user.id.clone();
    st.check_user(&user_id)?;
    let scopes = State::grant_scopes(ctx.param("scope"))?;
    st.count_login(&user_id, now)?;
    let issued = st.issue(&client_id, &user_id, scopes, false, now);
    let mut shape = ctx.signed(&st, &client_id, full_shape());
    shape.extra = site_fields(ctx.shared, ctx.via_site);
    Ok(finish(ctx.shared, ctx.via_site, &mut st, issued, shape))
}

fn client_credentials(ctx: &Ctx<'_>) -> Result<Fields, OAuthError> {
    let now = ctx.now();
    let (mut st, client_id) = authenticated_client(ctx, true, Flow::ClientCredentials)?;
    let host = crate::params::host(ctx.headers);
    if st
        .settings
        .login_hosts
        .iter()
        .any(|h| h.eq_ignore_ascii_case(&host))
    {
        return Err(OAuthError::invalid_grant(
            "request not supported on this domain",
        ));
    }
    let app = st
        .app(&client_id)
        .ok_or_else(OAuthError::invalid_client_id)?;
    if app.config.needs_pkce() {
        return Err(OAuthError::invalid_grant(
            "no client credentials user enabled",
        ));
    }
    let run_as = app
        .config
        .run_as
        .clone()
        .ok_or_else(|| OAuthError::invalid_grant("no client credentials user enabled"))?;
    let user_id = st
        .user_by_name(&run_as)
        .map(|u| u.id.clone())
        .ok_or_else(|| OAuthError::invalid_grant("no client credentials user enabled"))?;
    st.check_user(&user_id)?;
    let scopes = scopes_without_refresh(ctx)?;
    st.count_login(&user_id, now)?;
    let issued = st.issue(&client_id, &user_id, scopes, false, now);
    let shape = Shape {
        signature: true,
        id_token_nonce: None,
        id_token_asked: false,
        // UNCONFIRMED value: the emulator serves the API itself.
        extra: vec![("api_instance_url", Value::from(ctx.shared.base_url.clone()))],
        signing_secret: None,
    };
    let shape = ctx.signed(&st, &client_id, shape);
    Ok(finish(ctx.shared, ctx.via_site, &mut st, issued, shape))
}

/// Audiences accepted in bearer assertions.
fn audiences(ctx: &Ctx<'_>, st: &State) -> Vec<String> {
    let mut out = st.settings.audiences.clone();
    out.push(ctx.shared.base_url.clone());
    out.push(ctx.shared.site_url());
    out
}

fn audience_ok(aud: &Value, accepted: &[String]) -> bool {
    let matches = |s: &str| {
        accepted
            .iter()
            .any(|a| a.trim_end_matches('/') == s.trim_end_matches('/'))
    };
    match aud {
        Value::String(s) => matches(s),
        Value::Array(items) => items.iter().filter_map(Value::as_str).any(matches),
        _ => false,
    }
}

fn numeric_claim(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Whether the app may mint tokens for the user without an interactive approval.
fn preauthorized(st: &State, client_id: &str, user_id: &str) -> bool {
    let Some(app) = st.app(client_id) else {
        return false;
    };
    let Some(user) = st.user(user_id) else {
        return false;
    };
    match &app.config.preauthorized_users {
        None => user.org_id == app.org_id,
        Some(names) => names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(&user.config.username)),
    }
}

/// The start of every grant that authenticates its client: `authenticate` (`need_secret`: a
/// client id alone is not enough) and the app's `flow` switch. Returns the locked state and the
/// client id.
fn authenticated_client<'a>(
    ctx: &Ctx<'a>,
    need_secret: bool,
    flow: Flow,
) -> Result<(MutexGuard<'a, State>, String), OAuthError> {
    let auth = ClientAuth::from(ctx.headers, ctx.params);
    let st = ctx.shared.lock();
    let client_id = authenticate(&st, &auth, need_secret)?;
    require_flow(&st, &client_id, flow)?;
    Ok((st, client_id))
}

/// The requested scopes without `refresh_token`, for the grants that never issue one.
fn scopes_without_refresh(ctx: &Ctx<'_>) -> Result<Vec<String>, OAuthError> {
    Ok(State::grant_scopes(ctx.param("scope"))?
        .into_iter()
        .filter(|s| s != "refresh_token")
        .collect())
}

/// The end the bearer assertion grants (JWT, SAML) share once the assertion checks out: its
/// subject must be a user the app is pre-authorized for, no refresh token is issued, and, as
/// observed, the response carries no signature or `issued_at`.
fn issue_to_assertion_subject(
    ctx: &Ctx<'_>,
    st: &mut State,
    client_id: &str,
    subject: &str,
    now: i64,
) -> Result<Fields, OAuthError> {
    let user_id = st
        .user_by_name(subject)
        .map(|u| u.id.clone())
        .ok_or_else(|| OAuthError::invalid_grant("user hasn't approved this consumer"))?;
    if !preauthorized(st, client_id, &user_id) {
        return Err(OAuthError::invalid_grant(
            "user hasn't approved this consumer",
        ));
    }
    st.check_user(&user_id)?;
    let scopes = scopes_without_refresh(ctx)?;
    st.count_login(&user_id, now)?;
    let issued = st.issue(client_id, &user_id, scopes, false, now);
    let shape = Shape {
        signature: false,
        id_token_nonce: None,
        id_token_asked: false,
        extra: site_fields(ctx.shared, ctx.via_site),
        signing_secret: None,
    };
    Ok(finish(ctx.shared, ctx.via_site, st, issued, shape))
}

fn jwt_bearer(ctx: &Ctx<'_>) -> Result<Fields, OAuthError> {
    let now = ctx.now();
    let assertion = ctx
        .param("assertion")
        .ok_or_else(|| OAuthError::invalid_grant("invalid assertion"))?;
    let (_, unverified) = crypto::decode_jwt_unverified(assertion)
        .map_err(|_| OAuthError::invalid_grant("invalid assertion"))?;
    let mut st = ctx.shared.lock();
    let iss = unverified.get("iss").and_then(Value::as_str).unwrap_or("");
    let app = st.app(iss).ok_or_else(OAuthError::invalid_client_id)?;
    let client_id = app.config.client_id.clone();
    let key = app
        .key
        .clone()
        .ok_or_else(|| OAuthError::invalid_grant("invalid assertion"))?;
    require_flow(&st, &client_id, Flow::JwtBearer)?;
    let jwt = crypto::verify_jwt(assertion, &key)
        .map_err(|_| OAuthError::invalid_grant("invalid assertion"))?;
    let claims = jwt.claims;
    let accepted = audiences(ctx, &st);
    if !claims.get("aud").is_some_and(|a| audience_ok(a, &accepted)) {
        return Err(OAuthError::invalid_grant("audience is invalid"));
    }
    let now_s = now.div_euclid(1000);
    let exp = numeric_claim(claims.get("exp"))
        .ok_or_else(|| OAuthError::invalid_grant("expired authorization code"))?;
    if exp <= now_s {
        return Err(OAuthError::invalid_grant("expired authorization code"));
    }
    if let Some(max) = st.settings.jwt_max_exp_secs
        && exp > now_s.saturating_add(i64::try_from(max).unwrap_or(i64::MAX))
    {
        return Err(OAuthError::invalid_grant("expired authorization code"));
    }
    // Salesforce: when both are present, the legacy `prn` wins over `sub`.
    let subject = claims
        .get("prn")
        .or_else(|| claims.get("sub"))
        .and_then(Value::as_str)
        .unwrap_or("");
    issue_to_assertion_subject(ctx, &mut st, &client_id, subject, now)
}

fn device_start(ctx: &Ctx<'_>) -> Result<Fields, OAuthError> {
    let now = ctx.now();
    let mut st = ctx.shared.lock();
    let client_id = ctx
        .param("client_id")
        .filter(|id| st.app(id).is_some())
        .map(str::to_owned)
        .ok_or_else(OAuthError::invalid_client_id)?;
    require_flow(&st, &client_id, Flow::Device)?;
    let scopes = State::grant_scopes(ctx.param("scope"))?;
    let device_code = st.random(64);
    let user_code = st.random(8).to_ascii_uppercase();
    let lifetime = i64::try_from(st.settings.device_code_lifetime_secs.saturating_mul(1000))
        .unwrap_or(i64::MAX);
    let interval = st.settings.device_interval_secs;
    st.devices.push(DeviceGrant {
        device_code: device_code.clone(),
        user_code: user_code.clone(),
        client_id,
        scopes,
        expires_ms: now.saturating_add(lifetime),
        last_poll_ms: None,
        status: DeviceStatus::Pending,
    });
    Ok(vec![
        ("device_code", Value::from(device_code)),
        ("user_code", Value::from(user_code)),
        (
            "verification_uri",
            Value::from(format!("{}/setup/connect", ctx.shared.base_url)),
        ),
        ("interval", Value::from(interval)),
    ])
}

fn device_poll(ctx: &Ctx<'_>) -> Result<Fields, OAuthError> {
    let now = ctx.now();
    let (mut st, client_id) = authenticated_client(ctx, false, Flow::Device)?;
    let code = ctx.param("code").unwrap_or("");
    // An interval too large for the clock means every poll but the first is too soon.
    let interval_ms =
        i64::try_from(st.settings.device_interval_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let slow_down = st.settings.device_slow_down;
    let grant = st
        .devices
        .iter_mut()
        .find(|d| d.device_code == code && d.client_id == client_id)
        .ok_or_else(|| OAuthError::invalid_grant("invalid device code"))?;
    if now >= grant.expires_ms {
        return Err(OAuthError::new("expired_token", "device code expired"));
    }
    let too_soon = grant
        .last_poll_ms
        .is_some_and(|last| now.saturating_sub(last) < interval_ms);
    grant.last_poll_ms = Some(now);
    let (user_id, scopes) = match grant.status.clone() {
        DeviceStatus::Pending if slow_down && too_soon => {
            return Err(OAuthError::new("slow_down", "polling too frequently"));
        }
        DeviceStatus::Pending => {
            return Err(OAuthError::new(
                "authorization_pending",
                "authorization pending",
            ));
        }
        DeviceStatus::Denied => {
            return Err(OAuthError::new(
                "access_denied",
                "end-user denied authorization",
            ));
        }
        DeviceStatus::Consumed => return Err(OAuthError::invalid_grant("invalid device code")),
        DeviceStatus::Approved(user_id) => {
            grant.status = DeviceStatus::Consumed;
            (user_id, grant.scopes.clone())
        }
    };
    st.check_user(&user_id)?;
    let with_refresh = wants_refresh(&st, &client_id, &scopes);
    let issued = st.issue(&client_id, &user_id, scopes, with_refresh, now);
    let shape = ctx.signed(&st, &client_id, full_shape());
    Ok(finish(ctx.shared, ctx.via_site, &mut st, issued, shape))
}

/// Maps a subject token to a user id. The Apex handler of a real org is replaced by a fixed
/// rule: emulator tokens map to their user, JWTs (emulator id tokens, or signed by the app's
/// certificate) map their `sub` (identity URL or username), SAML maps its `NameID`.
fn exchange_subject(
    ctx: &Ctx<'_>,
    st: &State,
    client_id: &str,
    now: i64,
) -> Result<String, OAuthError> {
    let subject = ctx
        .param("subject_token")
        .ok_or_else(|| OAuthError::invalid_request("subject_token is required"))?;
    let kind = ctx.param("subject_token_type").unwrap_or("");
    let invalid = || OAuthError::invalid_grant("invalid subject token");
    match kind {
        TT_ACCESS => st
            .live_access(subject, now)
            .map(|a| a.user_id.clone())
            .ok_or_else(invalid),
        TT_REFRESH => st
            .live_refresh(subject, now)
            .map(|f| f.user_id.clone())
            .ok_or_else(invalid),
        TT_ID | "urn:ietf:params:oauth:token-type:JWT" | "urn:ietf:params:oauth:token-type:jwt" => {
            let jwt = crypto::verify_jwt(subject, ctx.shared.keys.public())
                .or_else(|e| {
                    st.app(client_id)
                        .and_then(|a| a.key.as_ref())
                        .map_or(Err(e), |k| crypto::verify_jwt(subject, k))
                })
                .map_err(|_| invalid())?;
            let exp = numeric_claim(jwt.claims.get("exp")).unwrap_or(i64::MAX);
            if exp <= now.div_euclid(1000) {
                return Err(invalid());
            }
            let sub = jwt.claims.get("sub").and_then(Value::as_str).unwrap_or("");
            let by_url = sub.rsplit('/').next().and_then(|id| st.user(id));
            by_url
                .or_else(|| st.user_by_name(sub))
                .map(|u| u.id.clone())
                .ok_or_else(invalid)
        }
        TT_SAML2 => {
            let assertion = crate::saml::parse_base64(subject).map_err(|_| invalid())?;
            st.user_by_name(&assertion.subject)
                .map(|u| u.id.clone())
                .ok_or_else(invalid)
        }
        _ => Err(OAuthError::invalid_request(
            "unsupported subject_token_type",
        )),
    }
}

fn token_exchange(ctx: &Ctx<'_>) -> Result<Fields, OAuthError> {
    let now = ctx.now();
    let (mut st, client_id) = authenticated_client(ctx, false, Flow::TokenExchange)?;
    let user_id = exchange_subject(ctx, &st, &client_id, now)?;
    st.check_user(&user_id)?;
    let scopes = State::grant_scopes(ctx.param("scope"))?;
    // UNCONFIRMED: a refresh token is issued when the refresh_token scope is asked for.
    let with_refresh = wants_refresh(&st, &client_id, &scopes);
    let issued = st.issue(&client_id, &user_id, scopes, with_refresh, now);
    let mut shape = ctx.signed(&st, &client_id, full_shape());
    shape.extra = vec![("issued_token_type", Value::from(TT_ACCESS))];
    Ok(finish(ctx.shared, ctx.via_site, &mut st, issued, shape))
}

fn saml_bearer(ctx: &Ctx<'_>) -> Result<Fields, OAuthError> {
    let now = ctx.now();
    let raw = ctx
        .param("assertion")
        .ok_or_else(|| OAuthError::invalid_grant("invalid assertion"))?;
    let assertion = crate::saml::parse_base64(raw)
        .map_err(|_| OAuthError::invalid_grant("invalid assertion"))?;
    let mut st = ctx.shared.lock();
    let client_id = st
        .apps
        .iter()
        .find(|a| {
            a.config
                .saml_issuer
                .as_deref()
                .unwrap_or(&a.config.client_id)
                == assertion.issuer
        })
        .map(|a| a.config.client_id.clone())
        .ok_or_else(OAuthError::invalid_client_id)?;
    require_flow(&st, &client_id, Flow::SamlBearer)?;
    let accepted = audiences(ctx, &st);
    if !assertion
        .audiences
        .iter()
        .any(|a| audience_ok(&Value::from(a.as_str()), &accepted))
    {
        return Err(OAuthError::invalid_grant("audience is invalid"));
    }
    if assertion
        .not_on_or_after_s
        .is_none_or(|t| t <= now.div_euclid(1000))
    {
        return Err(OAuthError::invalid_grant("expired authorization code"));
    }
    issue_to_assertion_subject(ctx, &mut st, &client_id, &assertion.subject, now)
}
