//! The router: every handler at its path (and again under the site prefix), behind the
//! middleware that counts requests, applies injected faults and finishes work whose client left.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, post};
use tokio::sync::oneshot;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;

use crate::context::{BodyLimits, Rotated, Shared, ViaSite, Work};
use crate::faults::{self, Endpoint, FaultKind};
use crate::format::{Format, OAuthError};
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
            "/services/oauth2/singleaccess",
            any(crate::frontdoor::singleaccess),
        )
        .route(
            "/secur/frontdoor.jsp",
            get(crate::frontdoor::frontdoor_page),
        )
        .route("/services/Soap/u/{version}", post(crate::soap::partner))
        .route(
            "/services/Soap/u/{version}/{org}",
            post(crate::soap::partner_org),
        )
        .route(
            "/services/data/{version}/sobjects/{kind}/{id}",
            get(crate::rest::sobject),
        );
    // The REST API answers these with and without a trailing slash.
    let listings: [(&str, MethodRouter<Arc<Shared>>); 7] = [
        ("/services/data", get(crate::rest::versions)),
        ("/services/data/{version}", get(crate::rest::resources)),
        ("/services/data/{version}/query", get(crate::rest::query)),
        ("/services/data/{version}/limits", get(crate::rest::limits)),
        (
            "/services/data/{version}/sobjects",
            get(crate::rest::sobjects),
        ),
        (
            "/services/data/{version}/sobjects/{kind}",
            get(crate::rest::sobject_basic),
        ),
        (
            "/services/data/{version}/sobjects/{kind}/describe",
            get(crate::rest::describe),
        ),
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
    app.fallback(crate::rest::fallback)
        .layer(middleware::from_fn_with_state(shared.clone(), observe))
        .with_state(shared.clone())
}

/// How much of an oversized body is read (and thrown away) before the 413 goes out: a client
/// still writing its body when the connection closes sees a reset instead of the answer, so a
/// body a little over the limit is drained; a flood past this is cut off.
const DRAIN_LIMIT: usize = 16 << 20;

/// Why a request body was not read.
enum BodyError {
    /// Larger than [`BodyLimits::max_bytes`]; `drained` says whether it was read to its end.
    TooLarge { drained: bool },
    /// Not received whole within [`BodyLimits::read_timeout`].
    TimedOut,
    /// The connection failed mid-body.
    Broken,
}

/// Reads a whole body within the limits.
async fn read_body(body: Body, limits: BodyLimits) -> Result<Bytes, BodyError> {
    let read = async {
        let mut stream = body.into_data_stream();
        let mut buf = BytesMut::new();
        let mut over = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| BodyError::Broken)?;
            if over > 0 || buf.len().saturating_add(chunk.len()) > limits.max_bytes {
                over = over.saturating_add(chunk.len());
                if over > DRAIN_LIMIT {
                    return Err(BodyError::TooLarge { drained: false });
                }
                continue;
            }
            buf.extend_from_slice(&chunk);
        }
        if over > 0 {
            return Err(BodyError::TooLarge { drained: true });
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(limits.read_timeout, read)
        .await
        .unwrap_or(Err(BodyError::TimedOut))
}

/// The answer to a body that was not read, or `None` when the client is gone anyway.
fn body_error_response(error: BodyError, local_path: &str, limits: BodyLimits) -> Option<Response> {
    let (mut response, close) = match error {
        BodyError::Broken => return None,
        BodyError::TimedOut => (
            (StatusCode::REQUEST_TIMEOUT, "Request Timeout").into_response(),
            true,
        ),
        BodyError::TooLarge { drained } => {
            let response = if local_path.starts_with("/services/data") {
                // The REST API's wording for an oversized request (seen on the wire, with its
                // 50 MB limit; simple-salesforce issue 195); the status 413 is our choice.
                let message = format!(
                    "Maximum size of request reached. Maximum size of request is {} bytes.",
                    limits.max_bytes
                );
                let body =
                    serde_json::json!([{"message": message, "errorCode": "JSON_PARSER_ERROR"}]);
                let mut r = (StatusCode::PAYLOAD_TOO_LARGE, body.to_string()).into_response();
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json;charset=UTF-8"),
                );
                r
            } else {
                let mut error = OAuthError::invalid_request("request entity too large");
                error.status = StatusCode::PAYLOAD_TOO_LARGE;
                error.respond(Format::Json)
            };
            (response, !drained)
        }
    };
    if close {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Some(response)
}

/// The first parameter of a form-encoded string whose name or value holds a `%` not followed by
/// two hex digits. Salesforce refuses such a request as a whole rather than guess.
fn malformed_parameter(encoded: &[u8]) -> Option<String> {
    encoded.split(|b| *b == b'&').find_map(|pair| {
        let bad = pair.iter().enumerate().any(|(i, b)| {
            *b == b'%'
                && !pair
                    .get(i.saturating_add(1)..i.saturating_add(3))
                    .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
        });
        bad.then(|| {
            let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
            // The name itself may be the malformed part: show it as sent.
            let decoded: String = url::form_urlencoded::parse(name)
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default();
            decoded
        })
    })
}

/// The 400 for a malformed percent-escape at an OAuth endpoint, or `None` when the request
/// is well formed (or not a form: JSON and multipart bodies are not percent-encoded).
fn malformed_form(parts: &http::request::Parts, body: &[u8]) -> Option<Response> {
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let form_body = !content_type.starts_with("multipart/form-data")
        && !content_type.starts_with("application/json");
    let name = parts
        .uri
        .query()
        .and_then(|q| malformed_parameter(q.as_bytes()))
        .or_else(|| form_body.then(|| malformed_parameter(body)).flatten())?;
    let error = OAuthError::invalid_request(format!("malformed parameter: {name}"));
    Some(error.respond(Format::negotiate(None, &parts.headers)))
}

/// Counts requests, applies injected faults, and logs method, path and status (never a query
/// string or body: they carry secrets).
///
/// Salesforce finishes a request it has received whether or not its client waits for the
/// answer, so the request is read whole and handled in a task of its own: the connection
/// closing (a client timeout, a killed process) drops only the wait for the answer, never the
/// work. An answer nobody was waiting for is counted in
/// [`Counters::answers_abandoned`](crate::Counters::answers_abandoned).
async fn observe(AxumState(shared): AxumState<Arc<Shared>>, req: Request, next: Next) -> Response {
    if let Some(response) = previous_my_domain(&shared, &req) {
        return response;
    }
    let method = req.method().clone();
    let full_path = req.uri().path().to_owned();
    let prefix = &shared.site_prefix;
    let site_path = full_path
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(prefix.as_str()))
        .filter(|rest| !prefix.is_empty() && rest.starts_with('/'));
    let via_site = site_path.is_some();
    let local_path = site_path.unwrap_or(&full_path).to_owned();
    let endpoint = Endpoint::classify(&local_path);
    let fault = endpoint.and_then(|e| {
        let mut st = shared.lock();
        bump(st.counters.requests.entry(e.name().to_owned()).or_default());
        let st = &mut *st;
        faults::take(&mut st.faults, e, &mut st.rng)
    });
    let (parts, body) = req.into_parts();
    let body = match read_body(body, shared.body).await {
        Ok(body) => body,
        Err(e) => {
            let response = body_error_response(e, &local_path, shared.body);
            let status = response.as_ref().map_or(0, |r| r.status().as_u16());
            // The request never arrived whole: nothing to act on.
            tracing::info!(%method, path = %full_path, status, "request body not read");
            return response.unwrap_or_else(|| StatusCode::BAD_REQUEST.into_response());
        }
    };
    if local_path.starts_with("/services/oauth2/")
        && let Some(response) = malformed_form(&parts, &body)
    {
        tracing::info!(%method, path = %full_path, status = 400, "malformed form");
        return response;
    }
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

/// The answer of a previous My Domain host (after a My Domain change): a redirect to the same
/// path and query on the current My Domain, or, with the org's redirect off, a 404 page.
/// `None` for every other host.
fn previous_my_domain(shared: &Shared, req: &Request) -> Option<Response> {
    let host = crate::params::host(req.headers());
    let st = shared.lock();
    let org = st.org_by_previous_host(&host)?;
    let target = org
        .my_domain
        .as_deref()
        .filter(|_| org.redirect_previous)
        .and_then(|current| st.url_on_host(current));
    let Some(target) = target else {
        let body = "<!DOCTYPE html><html><head><title>URL No Longer Exists</title></head><body>\
                    <h1>URL No Longer Exists</h1><p>You have attempted to reach a URL that no \
                    longer exists on salesforce.com.</p></body></html>";
        let mut r = (StatusCode::NOT_FOUND, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html;charset=UTF-8"),
        );
        return Some(r);
    };
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let mut r = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{target}{path_and_query}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Some(r)
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
