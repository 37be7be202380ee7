//! The router: every handler at its path (and again under the site prefix), behind the
//! middleware that counts requests, applies injected faults and finishes work whose client left.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get};
use tokio::sync::oneshot;

use crate::context::{Rotated, Shared, ViaSite, Work};
use crate::faults::{self, Endpoint, FaultKind};
use crate::state::bump;

fn routes() -> Router<Arc<Shared>> {
    let router = Router::new()
        .route("/services/oauth2/token", any(crate::token::token))
        .route(
            "/services/oauth2/authorize",
            any(crate::authorize::authorize),
        )
        .route("/setup/connect", any(crate::authorize::device_page))
        .route(
            "/setup/secur/RemoteAccessErrorPage.apexp",
            get(crate::authorize::error_page),
        )
        .route("/services/oauth2/revoke", any(crate::endpoints::revoke))
        .route(
            "/services/oauth2/introspect",
            any(crate::endpoints::introspect),
        )
        .route("/services/oauth2/userinfo", any(crate::endpoints::userinfo))
        .route(
            "/.well-known/openid-configuration",
            get(crate::endpoints::discovery),
        )
        .route("/id/keys", get(crate::endpoints::jwks))
        .route("/services/oauth2/id/keys", get(crate::endpoints::jwks))
        .route("/id/{org}/{user}", any(crate::endpoints::identity))
        .route(
            "/services/data/{version}/sobjects/{kind}/{id}",
            get(crate::rest::sobject),
        );
    // The REST API answers these with and without a trailing slash.
    let listings: [(&str, MethodRouter<Arc<Shared>>); 3] = [
        ("/services/data", get(crate::rest::versions)),
        ("/services/data/{version}", get(crate::rest::resources)),
        ("/services/data/{version}/query", get(crate::rest::query)),
    ];
    listings
        .into_iter()
        .fold(router, |router, (path, handler)| {
            router
                .route(path, handler.clone())
                .route(&format!("{path}/"), handler)
        })
}

/// The whole application, with its state.
pub(crate) fn router(shared: &Arc<Shared>) -> Router {
    let prefix = &shared.site_prefix;
    let mut app = routes().merge(crate::admin::routes(shared));
    if !prefix.is_empty() {
        app = app.nest(&format!("/{prefix}"), routes());
    }
    app.layer(middleware::from_fn_with_state(shared.clone(), observe))
        .with_state(shared.clone())
}

/// The largest request body the emulator reads (token requests are a few hundred bytes).
const MAX_REQUEST_BODY: usize = 16 << 20;

/// Counts requests, applies injected faults, and logs method, path and status (never a query
/// string or body: they carry secrets).
///
/// Salesforce finishes a request it has received whether or not its client waits for the
/// answer, so the request is read whole and handled in a task of its own: the connection
/// closing (a client timeout, a killed process) drops only the wait for the answer, never the
/// work. An answer nobody was waiting for is counted in
/// [`Counters::answers_abandoned`](crate::Counters::answers_abandoned).
async fn observe(AxumState(shared): AxumState<Arc<Shared>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let full_path = req.uri().path().to_owned();
    let prefix = &shared.site_prefix;
    let site_path = full_path
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(prefix.as_str()))
        .filter(|rest| !prefix.is_empty() && rest.starts_with('/'));
    let via_site = site_path.is_some();
    let endpoint = Endpoint::classify(site_path.unwrap_or(&full_path));
    let fault = endpoint.and_then(|e| {
        let mut st = shared.lock();
        bump(st.counters.requests.entry(e.name().to_owned()).or_default());
        let st = &mut *st;
        faults::take(&mut st.faults, e, &mut st.rng)
    });
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_REQUEST_BODY).await else {
        // The request never arrived whole (or is absurdly large): nothing to act on.
        tracing::info!(%method, path = %full_path, status = 400, "request body unreadable");
        return (StatusCode::BAD_REQUEST, "Bad Request").into_response();
    };
    let mut req = Request::from_parts(parts, Body::from(body));
    req.extensions_mut().insert(ViaSite(via_site));
    let (tx, rx) = oneshot::channel();
    let work = Work::begin(&shared, !full_path.starts_with("/__emulator/"));
    tokio::spawn(async move {
        let shared = &work.shared;
        let response = handle(shared, fault, req, next).await;
        let status = response.status().as_u16();
        let rotated = response.extensions().get::<Rotated>().is_some();
        let answered = tx.send(response).is_ok();
        if !answered && let Some(e) = endpoint {
            let mut st = shared.lock();
            bump(
                st.counters
                    .answers_abandoned
                    .entry(e.name().to_owned())
                    .or_default(),
            );
            if rotated {
                bump(&mut st.counters.refresh_tokens_rotated_unanswered);
            }
        }
        tracing::info!(%method, path = %full_path, status, answered, "request");
        // `work` drops here, after the counters: `wait_idle` then sees them final.
    });
    match rx.await {
        Ok(response) => response,
        // The task panicked, or the runtime is going down.
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Runs the request with its fault, if any.
async fn handle(shared: &Shared, fault: Option<FaultKind>, req: Request, next: Next) -> Response {
    match fault {
        None => next.run(req).await,
        Some(FaultKind::Latency(d)) => {
            tokio::select! {
                () = tokio::time::sleep(d) => next.run(req).await,
                () = shared.shutting_down() => StatusCode::SERVICE_UNAVAILABLE.into_response(),
            }
        }
        Some(FaultKind::LatencyAfterCommit(d)) => {
            let response = next.run(req).await;
            // The work is done; on shutdown the answer simply goes out sooner.
            tokio::select! {
                () = tokio::time::sleep(d) => {}
                () = shared.shutting_down() => {}
            }
            response
        }
        Some(kind) => fault_response(shared, kind).await,
    }
}

async fn fault_response(shared: &Shared, kind: FaultKind) -> Response {
    match kind {
        FaultKind::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, status.canonical_reason().unwrap_or("error")).into_response()
        }
        FaultKind::RateLimited { retry_after_secs } => {
            let mut r = (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        FaultKind::MalformedBody => {
            let mut r = (StatusCode::OK, "{\"access_token\": \"00D").into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json;charset=UTF-8"),
            );
            r
        }
        FaultKind::HtmlErrorPage => {
            let body = "<!DOCTYPE html><html><head><title>Service Unavailable</title></head><body>\
                        <h1>Service Unavailable</h1><p>The server is temporarily unable to service your request \
                        due to maintenance downtime or capacity problems.</p></body></html>";
            let mut r = (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html;charset=UTF-8"),
            );
            r
        }
        FaultKind::ConnectionReset => {
            let chunks: Vec<std::io::Result<bytes::Bytes>> = vec![
                Ok(bytes::Bytes::from_static(b"{\"access_token\":")),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected connection reset",
                )),
            ];
            let mut r = Response::new(Body::from_stream(futures_util::stream::iter(chunks)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json;charset=UTF-8"),
            );
            r
        }
        FaultKind::Hang => {
            shared.shutting_down().await;
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        FaultKind::OAuthError {
            status,
            error,
            description,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            let body = serde_json::json!({"error": error, "error_description": description});
            let mut r = (status, body.to_string()).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json;charset=UTF-8"),
            );
            r
        }
        FaultKind::Response {
            status,
            content_type,
            body,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = (status, body).into_response();
            if let Ok(v) = HeaderValue::from_str(&content_type) {
                r.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            r
        }
        // Handled in `handle`, around the request.
        FaultKind::Latency(_) | FaultKind::LatencyAfterCommit(_) => {
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
