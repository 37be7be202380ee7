//! The slice of the REST API that tells a client whether its session is alive: versions,
//! resources, SOQL query and sObject retrieval, over canned records.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State as AxumState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::bearer::rest_user;
use crate::context::Shared;
use crate::params::Params;
use crate::state::User;
use crate::versions::{VERSIONS, version_ok};

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut r = (
        status,
        Json(json!([{"message": message, "errorCode": code}])),
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    r
}

/// 401 INVALID_SESSION_ID, without `WWW-Authenticate`, exactly as Salesforce sends it.
fn invalid_session() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "INVALID_SESSION_ID",
        "Session expired or invalid",
    )
}

fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "The requested resource does not exist",
    )
}

/// 401 for a live session whose scopes do not include the REST API (`api` or `full`); clients
/// must not try to fix this one by refreshing.
fn not_for_rest() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "INVALID_SESSION_ID",
        "This session is not valid for use with the REST API",
    )
}

/// The session's user and the name of its org, or the 401 to answer.
fn authed(shared: &Shared, req: &Request) -> Result<(User, String), fn() -> Response> {
    let (user, scopes) =
        rest_user(shared, req.headers()).ok_or(invalid_session as fn() -> Response)?;
    if !scopes.iter().any(|s| s == "api" || s == "full") {
        return Err(not_for_rest);
    }
    let org_name = shared
        .lock()
        .org(&user.org_id)
        .map(|o| o.name.clone())
        .unwrap_or_default();
    Ok((user, org_name))
}

/// [`authed`], then the version in the path: the 401 comes before the 404 of an unknown version.
fn authed_at(
    shared: &Shared,
    req: &Request,
    version: &str,
) -> Result<(User, String), fn() -> Response> {
    let found = authed(shared, req)?;
    if !version_ok(version) {
        return Err(not_found);
    }
    Ok(found)
}

/// `/services/data/`: public, no session needed.
pub(crate) async fn versions(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    let list: Vec<Value> = VERSIONS
        .iter()
        .map(|(label, v)| json!({"label": label, "url": format!("/services/data/v{v}"), "version": v}))
        .collect();
    let _ = &shared;
    Json(list).into_response()
}

/// `/services/data/vNN.N`.
pub(crate) async fn resources(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(version): Path<String>,
    req: Request,
) -> Response {
    if let Err(respond) = authed_at(&shared, &req, &version) {
        return respond();
    }
    let base = format!("/services/data/{version}");
    Json(json!({
        "sobjects": format!("{base}/sobjects"),
        "query": format!("{base}/query"),
        "limits": format!("{base}/limits"),
        "search": format!("{base}/search"),
        "tooling": format!("{base}/tooling"),
    }))
    .into_response()
}

fn records(user: &User, org_name: &str, version: &str, kind: &str) -> Option<Vec<Value>> {
    let attributes = |t: &str, id: &str| json!({"type": t, "url": format!("/services/data/{version}/sobjects/{t}/{id}")});
    let rows: Vec<Value> = match kind.to_ascii_lowercase().as_str() {
        "account" => [("0015e000000EMU1AAO", "Acme Corporation"), ("0015e000000EMU2AAO", "Globex Inc.")]
            .iter()
            .map(|(id, name)| json!({"attributes": attributes("Account", id), "Id": id, "Name": name}))
            .collect(),
        "contact" => [("0035e000000EMU1AAO", "Ada", "Lovelace")]
            .iter()
            .map(|(id, first, last)| {
                json!({"attributes": attributes("Contact", id), "Id": id, "FirstName": first, "LastName": last,
                       "Name": format!("{first} {last}"), "AccountId": "0015e000000EMU1AAO"})
            })
            .collect(),
        "organization" => vec![json!({"attributes": attributes("Organization", &user.org_id), "Id": user.org_id, "Name": org_name})],
        "user" => vec![json!({
            "attributes": attributes("User", &user.id),
            "Id": user.id,
            "Username": user.config.username,
            "Name": format!("{} {}", user.config.first_name, user.config.last_name),
            "Email": user.config.email,
            "IsActive": user.is_active(),
        })],
        _ => return None,
    };
    Some(rows)
}

/// `/services/data/vNN.N/query?q=...`: recognises `FROM <type>` and returns that type's records.
pub(crate) async fn query(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(version): Path<String>,
    req: Request,
) -> Response {
    let (user, org_name) = match authed_at(&shared, &req, &version) {
        Ok(found) => found,
        Err(respond) => return respond(),
    };
    let (_, _, params) = Params::from_request(req).await;
    let Some(q) = params.get("q") else {
        return error(
            StatusCode::BAD_REQUEST,
            "MALFORMED_QUERY",
            "A query string has to be specified",
        );
    };
    let words: Vec<&str> = q.split_whitespace().collect();
    let from = word_after(&words, "from");
    if !words
        .first()
        .is_some_and(|w| w.eq_ignore_ascii_case("select"))
        || from.is_none()
    {
        return error(
            StatusCode::BAD_REQUEST,
            "MALFORMED_QUERY",
            "unexpected token: query must be SELECT ... FROM ...",
        );
    }
    let kind = from.unwrap_or("");
    let Some(mut rows) = records(&user, &org_name, &version, kind) else {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_TYPE",
            &format!(
                "sObject type '{kind}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name."
            ),
        );
    };
    if let Some(limit) = word_after(&words, "limit").and_then(|n| n.parse::<usize>().ok()) {
        rows.truncate(limit);
    }
    Json(json!({"totalSize": rows.len(), "done": true, "records": rows})).into_response()
}

/// The word after the first `keyword` (any case) in a query.
fn word_after<'a>(words: &[&'a str], keyword: &str) -> Option<&'a str> {
    words
        .iter()
        .skip_while(|w| !w.eq_ignore_ascii_case(keyword))
        .nth(1)
        .copied()
}

/// `/services/data/vNN.N/sobjects/{type}/{id}`.
pub(crate) async fn sobject(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((version, kind, id)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let (user, org_name) = match authed_at(&shared, &req, &version) {
        Ok(found) => found,
        Err(respond) => return respond(),
    };
    let Some(rows) = records(&user, &org_name, &version, &kind) else {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        );
    };
    let id15 = crate::ids::to_15(&id);
    match rows.into_iter().find(|r| {
        r.get("Id")
            .and_then(Value::as_str)
            .is_some_and(|rid| crate::ids::to_15(rid) == id15)
    }) {
        Some(row) => Json(row).into_response(),
        None => not_found(),
    }
}
