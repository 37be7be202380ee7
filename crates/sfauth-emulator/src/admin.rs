//! The `/__emulator/...` admin API: the handle's test controls over HTTP, for clients in other
//! languages. Off unless [`Settings::admin_api`](crate::Settings::admin_api) is set.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State as AxumState};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::context::Shared;
use crate::faults::{Endpoint, Fault, FaultKind};
use crate::model::{AppConfig, AppPolicy, UserConfig, UserStatus};
use crate::state::{DeviceStatus, RefreshTokenStatus, State};

pub(crate) fn routes(shared: &Arc<Shared>) -> Router<Arc<Shared>> {
    Router::new()
        .route("/__emulator/clock/advance", post(advance))
        .route("/__emulator/access-tokens/expire", post(expire))
        .route("/__emulator/revoke", post(revoke))
        .route("/__emulator/orgs", post(add_org))
        .route("/__emulator/users", post(add_user))
        .route("/__emulator/users/{username}/status", post(user_status))
        .route("/__emulator/apps", post(add_app))
        .route("/__emulator/apps/{client_id}/{action}", post(app_action))
        .route("/__emulator/apps/{client_id}/policy", post(app_policy))
        .route("/__emulator/orgs/{org_id}/instance-url", post(instance_url))
        .route("/__emulator/orgs/{org_id}/settings", post(org_settings))
        .route("/__emulator/orgs/{org_id}/my-domain", post(my_domain))
        .route(
            "/__emulator/orgs/{org_id}/sandbox-refresh",
            post(sandbox_refresh),
        )
        .route("/__emulator/apps/{client_id}/config", post(app_config))
        .route(
            "/__emulator/apps/{client_id}/secret/{step}",
            post(app_secret),
        )
        .route("/__emulator/device/approve", post(approve_device))
        .route("/__emulator/faults", post(add_fault).delete(clear_faults))
        .route("/__emulator/counters", get(counters).delete(reset_counters))
        .route(
            "/__emulator/refresh-token-status",
            post(refresh_token_status),
        )
        .route("/__emulator/idle", get(idle))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            only_when_enabled,
        ))
}

/// Answers 404 on every admin route while the admin API is off, before any extractor runs.
async fn only_when_enabled(
    AxumState(shared): AxumState<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    if !shared.lock().settings.admin_api {
        return StatusCode::NOT_FOUND.into_response();
    }
    next.run(req).await
}

/// `org_id`, or the first org when none is named.
fn org_or_first(st: &State, org_id: Option<String>) -> String {
    org_id
        .or_else(|| st.orgs.first().map(|o| o.id.clone()))
        .unwrap_or_default()
}

fn bad(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": message.into()})),
    )
        .into_response()
}

fn done(result: crate::Result<impl serde::Serialize>) -> Response {
    match result {
        Ok(v) => Json(json!({"ok": true, "result": v})).into_response(),
        Err(e) => {
            let status = match e.kind() {
                crate::ErrorKind::NotFound => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_REQUEST,
            };
            (status, Json(json!({"error": e.to_string()}))).into_response()
        }
    }
}

#[derive(Deserialize)]
struct Seconds {
    seconds: u64,
}

async fn advance(AxumState(shared): AxumState<Arc<Shared>>, Query(q): Query<Seconds>) -> Response {
    match shared.clock.try_advance(Duration::from_secs(q.seconds)) {
        Some(now_ms) => done(Ok(now_ms)),
        None => bad(format!(
            "seconds = {} would move the clock past the end of its range",
            q.seconds
        )),
    }
}

async fn expire(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    let now = shared.clock.now_ms();
    shared.lock().expire_access_tokens(now);
    done(Ok(()))
}

#[derive(Deserialize)]
struct RevokeQuery {
    client_id: Option<String>,
    username: Option<String>,
}

async fn revoke(
    AxumState(shared): AxumState<Arc<Shared>>,
    Query(q): Query<RevokeQuery>,
) -> Response {
    let mut st = shared.lock();
    let user_id = match &q.username {
        Some(name) => match st.user_by_name(name) {
            Some(u) => Some(u.id.clone()),
            None => return done(Err::<(), _>(crate::Error::not_found("user", name.clone()))),
        },
        None => None,
    };
    let n = st.revoke_where(|c, u| {
        q.client_id.as_deref().is_none_or(|want| want == c)
            && user_id.as_deref().is_none_or(|want| want == u)
    });
    done(Ok(n))
}

#[derive(Deserialize)]
struct NewOrg {
    name: String,
    instance_url: Option<String>,
}

async fn add_org(AxumState(shared): AxumState<Arc<Shared>>, Json(body): Json<NewOrg>) -> Response {
    done(shared.lock().add_org(None, &body.name, body.instance_url))
}

#[derive(Deserialize)]
struct NewUser {
    org_id: Option<String>,
    #[serde(flatten)]
    user: UserConfig,
}

async fn add_user(
    AxumState(shared): AxumState<Arc<Shared>>,
    Json(body): Json<NewUser>,
) -> Response {
    let mut st = shared.lock();
    let org = org_or_first(&st, body.org_id);
    done(st.add_user(&org, body.user))
}

#[derive(Deserialize)]
struct NewApp {
    org_id: Option<String>,
    #[serde(flatten)]
    app: AppConfig,
}

async fn add_app(AxumState(shared): AxumState<Arc<Shared>>, Json(body): Json<NewApp>) -> Response {
    let mut st = shared.lock();
    let org = org_or_first(&st, body.org_id);
    done(st.add_app(&org, body.app))
}

#[derive(Deserialize)]
struct StatusQuery {
    status: UserStatus,
}

async fn user_status(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(username): Path<String>,
    Query(q): Query<StatusQuery>,
) -> Response {
    done(
        shared
            .lock()
            .user_by_name_mut(&username)
            .map(|u| u.config.status = q.status),
    )
}

async fn app_action(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((client_id, action)): Path<(String, String)>,
) -> Response {
    let mut st = shared.lock();
    let result = match action.as_str() {
        "block" => st
            .app_mut(&client_id)
            .map(|a| a.blocked = true)
            .map(|()| st.revoke_where(|c, _| c == client_id)),
        "unblock" => st
            .app_mut(&client_id)
            .map(|a| a.blocked = false)
            .map(|()| 0),
        "reset-refresh-tokens" | "revoke" => st
            .app_mut(&client_id)
            .map(|_| ())
            .map(|()| st.revoke_where(|c, _| c == client_id)),
        other => return bad(format!("unknown action {other}")),
    };
    done(result)
}

async fn app_policy(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(client_id): Path<String>,
    Json(policy): Json<AppPolicy>,
) -> Response {
    done(
        shared
            .lock()
            .app_mut(&client_id)
            .map(|a| a.config.policy = policy),
    )
}

#[derive(Deserialize)]
struct UrlQuery {
    url: Option<String>,
}

async fn instance_url(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(org_id): Path<String>,
    Query(q): Query<UrlQuery>,
) -> Response {
    done(
        shared
            .lock()
            .org_mut(&org_id)
            .map(|o| o.instance_url = q.url),
    )
}

#[derive(Deserialize)]
struct DeviceQuery {
    user_code: String,
    username: Option<String>,
    #[serde(default)]
    deny: bool,
}

async fn approve_device(
    AxumState(shared): AxumState<Arc<Shared>>,
    Query(q): Query<DeviceQuery>,
) -> Response {
    let mut st = shared.lock();
    let user_id = match q
        .username
        .as_deref()
        .or_else(|| st.users.first().map(|u| u.config.username.as_str()))
    {
        Some(name) => st.user_by_name(name).map(|u| u.id.clone()),
        None => None,
    };
    let Some(grant) = st.devices.iter_mut().find(|d| {
        d.user_code.eq_ignore_ascii_case(&q.user_code) && d.status == DeviceStatus::Pending
    }) else {
        return done(Err::<(), _>(crate::Error::not_found(
            "device user code",
            q.user_code,
        )));
    };
    grant.status = match (q.deny, user_id) {
        (true, _) => DeviceStatus::Denied,
        (false, Some(u)) => DeviceStatus::Approved(u),
        (false, None) => return bad("unknown user"),
    };
    done(Ok(()))
}

#[derive(Deserialize)]
struct FaultBody {
    endpoint: String,
    /// `status`, `rate_limited`, `latency`, `latency_after_commit`, `connection_reset`,
    /// `malformed_body`, `html_error_page`, `hang`, `oauth_error`, `response`.
    kind: String,
    status: Option<u16>,
    retry_after_secs: Option<u64>,
    latency_ms: Option<u64>,
    times: Option<u32>,
    probability: Option<f64>,
    error: Option<String>,
    error_description: Option<String>,
    content_type: Option<String>,
    body: Option<String>,
}

async fn add_fault(
    AxumState(shared): AxumState<Arc<Shared>>,
    Json(body): Json<FaultBody>,
) -> Response {
    let Some(endpoint) = Endpoint::from_name(&body.endpoint) else {
        return bad(format!("unknown endpoint {}", body.endpoint));
    };
    let kind = match body.kind.as_str() {
        "status" => FaultKind::Status(body.status.unwrap_or(503)),
        "rate_limited" => FaultKind::RateLimited {
            retry_after_secs: body.retry_after_secs.unwrap_or(1),
        },
        "latency" => FaultKind::Latency(Duration::from_millis(body.latency_ms.unwrap_or(0))),
        "latency_after_commit" => {
            FaultKind::LatencyAfterCommit(Duration::from_millis(body.latency_ms.unwrap_or(0)))
        }
        "connection_reset" => FaultKind::ConnectionReset,
        "malformed_body" => FaultKind::MalformedBody,
        "html_error_page" => FaultKind::HtmlErrorPage,
        "hang" => FaultKind::Hang,
        "oauth_error" => FaultKind::OAuthError {
            status: body.status.unwrap_or(400),
            error: body.error.unwrap_or_else(|| "invalid_grant".to_owned()),
            description: body.error_description.unwrap_or_default(),
        },
        "response" => FaultKind::Response {
            status: body.status.unwrap_or(500),
            content_type: body.content_type.unwrap_or_else(|| "text/plain".to_owned()),
            body: body.body.unwrap_or_default(),
        },
        other => return bad(format!("unknown fault kind {other}")),
    };
    let mut fault = Fault::new(endpoint, kind);
    if let Some(n) = body.times {
        fault = fault.times(n);
    }
    if let Some(p) = body.probability {
        fault = fault.probability(p);
    }
    shared.lock().faults.push(fault);
    done(Ok(()))
}

async fn clear_faults(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    shared.lock().faults.clear();
    done(Ok(()))
}

async fn counters(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    let c = shared.lock().counters.clone();
    Json(json!({
        "requests": c.requests,
        "grants": c.grants,
        "access_tokens_issued": c.access_tokens_issued,
        "refresh_tokens_issued": c.refresh_tokens_issued,
        "refresh_tokens_rotated": c.refresh_tokens_rotated,
        "refresh_tokens_rejected": c.refresh_tokens_rejected,
        "refresh_tokens_reused": c.refresh_tokens_reused,
        "answers_abandoned": c.answers_abandoned,
        "refresh_tokens_rotated_unanswered": c.refresh_tokens_rotated_unanswered,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct TokenBody {
    token: String,
}

/// The refresh token travels in the body, never the query string: the path is logged.
async fn refresh_token_status(
    AxumState(shared): AxumState<Arc<Shared>>,
    Json(body): Json<TokenBody>,
) -> Response {
    let now = shared.clock.now_ms();
    let status = shared.lock().refresh_status(&body.token, now);
    let name = match status {
        RefreshTokenStatus::Active => "active",
        RefreshTokenStatus::RotatedOut => "rotated_out",
        RefreshTokenStatus::Revoked => "revoked",
        RefreshTokenStatus::Expired => "expired",
        RefreshTokenStatus::Inactive => "inactive",
        RefreshTokenStatus::Unknown => "unknown",
    };
    done(Ok(name))
}

/// Answers once every request received so far has been processed (see `Emulator::wait_idle`).
async fn idle(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    shared.idle().await;
    done(Ok(()))
}

async fn reset_counters(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    shared.lock().counters = Default::default();
    done(Ok(()))
}

/// `current` with the keys of `patch` (a JSON object) replaced, read back as a `T`: a partial
/// update in which a key left out keeps its value.
fn merged<T: serde::Serialize + serde::de::DeserializeOwned>(
    current: &T,
    patch: serde_json::Value,
) -> Result<T, String> {
    let mut value = serde_json::to_value(current).map_err(|e| e.to_string())?;
    let (Some(target), serde_json::Value::Object(patch)) = (value.as_object_mut(), patch) else {
        return Err("the body must be a JSON object".to_owned());
    };
    for (key, v) in patch {
        target.insert(key, v);
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// A partial update of an org's settings (the keys of [`crate::OrgConfig`] but `users` and
/// `apps`).
async fn org_settings(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(org_id): Path<String>,
    Json(patch): Json<serde_json::Value>,
) -> Response {
    let mut st = shared.lock();
    let current = match st.org_config(&org_id) {
        Ok(c) => c,
        Err(e) => return done(Err::<(), _>(e)),
    };
    match merged(&current, patch) {
        Ok(config) => done(st.update_org(&org_id, |c| *c = config)),
        Err(e) => bad(e),
    }
}

/// A partial update of a connected app's configuration (the keys of [`AppConfig`]).
async fn app_config(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(client_id): Path<String>,
    Json(patch): Json<serde_json::Value>,
) -> Response {
    let mut st = shared.lock();
    let current = match st.app(&client_id) {
        Some(app) => app.config.clone(),
        None => {
            return done(Err::<(), _>(crate::Error::not_found(
                "connected app",
                client_id,
            )));
        }
    };
    match merged(&current, patch) {
        Ok(config) => done(st.update_app(&client_id, |c| *c = config)),
        Err(e) => bad(e),
    }
}

#[derive(Deserialize)]
struct SecretBody {
    client_secret: String,
}

/// `stage` (body `{"client_secret": ...}`) or `apply`. The secret travels in the body: the
/// path is logged.
async fn app_secret(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((client_id, step)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let mut st = shared.lock();
    match step.as_str() {
        "stage" => match serde_json::from_slice::<SecretBody>(&body) {
            Ok(b) => done(st.stage_client_secret(&client_id, &b.client_secret)),
            Err(e) => bad(format!("expected {{\"client_secret\": ...}}: {e}")),
        },
        "apply" => done(st.apply_staged_client_secret(&client_id)),
        other => bad(format!("unknown secret step {other}")),
    }
}

#[derive(Deserialize)]
struct HostQuery {
    host: String,
}

async fn my_domain(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(org_id): Path<String>,
    Query(q): Query<HostQuery>,
) -> Response {
    done(shared.lock().change_my_domain(&org_id, &q.host))
}

async fn sandbox_refresh(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(org_id): Path<String>,
) -> Response {
    done(shared.lock().refresh_sandbox(&org_id))
}
