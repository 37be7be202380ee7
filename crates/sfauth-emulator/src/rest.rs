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

/// Salesforce's REST error: a JSON array of `{message, errorCode}`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
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

/// The org a session belongs to, as the REST handlers need it.
pub(crate) struct OrgView {
    pub(crate) name: String,
    /// Whether this is the first org (the seeded or first configured one), which holds the
    /// canned records; every other org has records of its own (see [`records`]).
    pub(crate) first: bool,
}

/// The session's user and its org, or the 401 to answer.
fn authed(shared: &Shared, req: &Request) -> Result<(User, OrgView), fn() -> Response> {
    let (user, scopes) =
        rest_user(shared, req.headers()).ok_or(invalid_session as fn() -> Response)?;
    if !scopes.iter().any(|s| s == "api" || s == "full") {
        return Err(not_for_rest);
    }
    let st = shared.lock();
    let org = OrgView {
        name: st
            .org(&user.org_id)
            .map(|o| o.name.clone())
            .unwrap_or_default(),
        first: st.orgs.first().is_some_and(|o| o.id == user.org_id),
    };
    Ok((user, org))
}

/// [`authed`], then the version in the path: the 401 comes before the 404 of an unknown version.
fn authed_at(
    shared: &Shared,
    req: &Request,
    version: &str,
) -> Result<(User, OrgView), fn() -> Response> {
    let found = authed(shared, req)?;
    if !version_ok(version) {
        return Err(not_found);
    }
    Ok(found)
}

/// Any other path: under `/services/data` the REST API's 404 (after the session check, as
/// Salesforce answers an unknown resource to a dead session with the 401); elsewhere an empty
/// 404.
pub(crate) async fn fallback(AxumState(shared): AxumState<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path();
    let prefix = &shared.site_prefix;
    let local = path
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(prefix.as_str()))
        .filter(|rest| !prefix.is_empty() && rest.starts_with('/'))
        .unwrap_or(path);
    if local != "/services/data" && !local.starts_with("/services/data/") {
        return StatusCode::NOT_FOUND.into_response();
    }
    match authed(&shared, &req) {
        Ok(_) => not_found(),
        Err(respond) => respond(),
    }
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

/// One field of a modelled sObject, as describe and the query's column metadata tell it.
struct Field {
    name: &'static str,
    /// describe's `type`: `id`, `string`, `boolean`, `reference`, `date`.
    kind: &'static str,
    label: &'static str,
    /// Whether a client could write it (describe's `createable`/`updateable`).
    writable: bool,
    /// For references, the sObject pointed at.
    reference_to: Option<&'static str>,
}

const fn field(name: &'static str, kind: &'static str, label: &'static str) -> Field {
    Field {
        name,
        kind,
        label,
        writable: !matches!(kind.as_bytes(), b"id"),
        reference_to: None,
    }
}

/// A modelled sObject type.
struct SObject {
    name: &'static str,
    label_plural: &'static str,
    key_prefix: &'static str,
    fields: &'static [Field],
}

/// The sObjects the emulator models, with the fields it fills in. Organization carries what
/// `sf org display` asks for (sfdx-core's `SELECT Name, InstanceName, IsSandbox,
/// TrialExpirationDate, NamespacePrefix FROM Organization`).
const SOBJECTS: [SObject; 4] = [
    SObject {
        name: "Account",
        label_plural: "Accounts",
        key_prefix: "001",
        fields: &[
            field("Id", "id", "Account ID"),
            field("Name", "string", "Account Name"),
        ],
    },
    SObject {
        name: "Contact",
        label_plural: "Contacts",
        key_prefix: "003",
        fields: &[
            field("Id", "id", "Contact ID"),
            field("FirstName", "string", "First Name"),
            field("LastName", "string", "Last Name"),
            field("Name", "string", "Full Name"),
            Field {
                name: "AccountId",
                kind: "reference",
                label: "Account ID",
                writable: true,
                reference_to: Some("Account"),
            },
        ],
    },
    SObject {
        name: "Organization",
        label_plural: "Organizations",
        key_prefix: "00D",
        fields: &[
            field("Id", "id", "Organization ID"),
            field("Name", "string", "Name"),
            field("InstanceName", "string", "Instance Name"),
            field("IsSandbox", "boolean", "Is Sandbox"),
            field("TrialExpirationDate", "date", "Trial Expiration Date"),
            field("NamespacePrefix", "string", "Namespace Prefix"),
            field("OrganizationType", "string", "Edition"),
        ],
    },
    SObject {
        name: "User",
        label_plural: "Users",
        key_prefix: "005",
        fields: &[
            field("Id", "id", "User ID"),
            field("Username", "string", "Username"),
            field("FirstName", "string", "First Name"),
            field("LastName", "string", "Last Name"),
            field("Name", "string", "Full Name"),
            field("Email", "string", "Email"),
            field("IsActive", "boolean", "Active"),
        ],
    },
];

fn sobject_type(name: &str) -> Option<&'static SObject> {
    SOBJECTS.iter().find(|o| o.name.eq_ignore_ascii_case(name))
}

/// An id of this org's own: the org id's distinguishing characters behind another key prefix,
/// so records of two orgs never share an id.
fn org_scoped_id(prefix: &str, org_id: &str) -> String {
    let tail = crate::ids::to_15(org_id).get(3..).unwrap_or("000000000000");
    crate::ids::to_18(&format!("{prefix}{tail}"))
}

/// The records of `kind` the session's org holds, every modelled field filled in. The first org
/// (seeded or first configured) holds the canned Accounts and Contact the emulator always
/// served; any other org holds one Account named after it and one Contact, with ids of its own.
fn records(user: &User, org: &OrgView, version: &str, kind: &str) -> Option<Vec<Value>> {
    let attributes = |t: &str, id: &str| json!({"type": t, "url": format!("/services/data/{version}/sobjects/{t}/{id}")});
    let accounts: Vec<(String, String)> = if org.first {
        vec![
            (
                "0015e000000EMU1AAO".to_owned(),
                "Acme Corporation".to_owned(),
            ),
            ("0015e000000EMU2AAO".to_owned(), "Globex Inc.".to_owned()),
        ]
    } else {
        vec![(org_scoped_id("001", &user.org_id), org.name.clone())]
    };
    let contacts: Vec<(String, &str, &str, String)> = if org.first {
        vec![(
            "0035e000000EMU1AAO".to_owned(),
            "Ada",
            "Lovelace",
            "0015e000000EMU1AAO".to_owned(),
        )]
    } else {
        vec![(
            org_scoped_id("003", &user.org_id),
            "Grace",
            "Hopper",
            org_scoped_id("001", &user.org_id),
        )]
    };
    let rows: Vec<Value> = match sobject_type(kind)?.name {
        "Account" => accounts
            .iter()
            .map(|(id, name)| json!({"attributes": attributes("Account", id), "Id": id, "Name": name}))
            .collect(),
        "Contact" => contacts
            .iter()
            .map(|(id, first, last, account)| {
                json!({"attributes": attributes("Contact", id), "Id": id, "FirstName": first, "LastName": last,
                       "Name": format!("{first} {last}"), "AccountId": account})
            })
            .collect(),
        "Organization" => vec![json!({
            "attributes": attributes("Organization", &user.org_id),
            "Id": user.org_id,
            "Name": org.name,
            "InstanceName": "EMU1",
            "IsSandbox": false,
            "TrialExpirationDate": null,
            "NamespacePrefix": null,
            "OrganizationType": "Developer Edition",
        })],
        "User" => vec![json!({
            "attributes": attributes("User", &user.id),
            "Id": user.id,
            "Username": user.config.username,
            "FirstName": user.config.first_name,
            "LastName": user.config.last_name,
            "Name": format!("{} {}", user.config.first_name, user.config.last_name),
            "Email": user.config.email,
            "IsActive": user.is_active(),
        })],
        _ => return None,
    };
    Some(rows)
}

/// The select list of a query: the comma-separated items between `SELECT` and `FROM`.
fn select_list(words: &[&str]) -> Vec<String> {
    let list: Vec<&str> = words
        .iter()
        .skip(1)
        .take_while(|w| !w.eq_ignore_ascii_case("from"))
        .copied()
        .collect();
    list.join(" ")
        .split(',')
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}

/// Keeps the selected fields of a record (and its `attributes`), in the order selected, each
/// under its canonical name. A field the emulator does not model is answered `null` (UNCONFIRMED
/// as a choice: Salesforce answers a field that does not exist with `INVALID_FIELD`, but the
/// emulator cannot tell a real field it does not model from a misspelt one).
fn project(record: &Value, object: &SObject, selected: &[String]) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(attributes) = record.get("attributes") {
        out.insert("attributes".to_owned(), attributes.clone());
    }
    for item in selected {
        let name = object
            .fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(item))
            .map_or(item.as_str(), |f| f.name);
        let value = record.get(name).cloned().unwrap_or(Value::Null);
        out.insert(name.to_owned(), value);
    }
    Value::Object(out)
}

/// `columns=true`: the column metadata Salesforce's CLI asks for (`sf data query`), instead of
/// records. The shape (`columnMetadata` entries with `aggregate`, `apexType`, `booleanType`,
/// `columnName`, `custom`, `displayName`, `foreignKeyName`, `insertable`, `joinColumns`,
/// `numberType`, `textType`, `updatable`; `entityName`, `groupBy`, `idSelected`, `keyPrefix`) is
/// that of the undocumented answer the CLI reads; a field the emulator does not model is
/// described as text.
fn column_metadata(object: &SObject, selected: &[String], count_only: bool) -> Value {
    let columns: Vec<Value> = if count_only {
        Vec::new()
    } else {
        selected
            .iter()
            .map(|item| {
                let known = object
                    .fields
                    .iter()
                    .find(|f| f.name.eq_ignore_ascii_case(item));
                let (name, kind, writable) = known.map_or((item.as_str(), "string", false), |f| {
                    (f.name, f.kind, f.writable)
                });
                let apex_type = match kind {
                    "id" | "reference" => "Id",
                    "boolean" => "Boolean",
                    "date" => "Date",
                    _ => "String",
                };
                json!({
                    "aggregate": false,
                    "apexType": apex_type,
                    "booleanType": kind == "boolean",
                    "columnName": name,
                    "custom": name.ends_with("__c"),
                    "displayName": name,
                    "foreignKeyName": null,
                    "insertable": writable,
                    "joinColumns": [],
                    "numberType": false,
                    "textType": matches!(kind, "string"),
                    "updatable": writable,
                })
            })
            .collect()
    };
    json!({
        "columnMetadata": columns,
        "entityName": object.name,
        "groupBy": false,
        "idSelected": selected.iter().any(|s| s.eq_ignore_ascii_case("Id")),
        "keyPrefix": object.key_prefix,
    })
}

/// `/services/data/vNN.N/query?q=...`: recognises `SELECT <fields> FROM <type> [... LIMIT n]`
/// and returns the session's org's records of that type with the selected fields;
/// `SELECT COUNT() FROM <type>` answers the count alone; with `columns=true`, the columns.
pub(crate) async fn query(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(version): Path<String>,
    req: Request,
) -> Response {
    let (user, org) = match authed_at(&shared, &req, &version) {
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
    let selected = select_list(&words);
    let (Some(kind), false) = (
        from.filter(|_| {
            words
                .first()
                .is_some_and(|w| w.eq_ignore_ascii_case("select"))
        }),
        selected.is_empty(),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "MALFORMED_QUERY",
            "unexpected token: query must be SELECT ... FROM ...",
        );
    };
    let unsupported = || {
        error(
            StatusCode::BAD_REQUEST,
            "INVALID_TYPE",
            &format!(
                "sObject type '{kind}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name."
            ),
        )
    };
    let (Some(object), Some(mut rows)) = (sobject_type(kind), records(&user, &org, &version, kind))
    else {
        return unsupported();
    };
    let count_only = selected.len() == 1
        && selected
            .first()
            .is_some_and(|s| s.eq_ignore_ascii_case("count()"));
    if params
        .get("columns")
        .is_some_and(|c| c.eq_ignore_ascii_case("true"))
    {
        return Json(column_metadata(object, &selected, count_only)).into_response();
    }
    if let Some(limit) = word_after(&words, "limit").and_then(|n| n.parse::<usize>().ok()) {
        rows.truncate(limit);
    }
    if count_only {
        return Json(json!({"totalSize": rows.len(), "done": true, "records": []})).into_response();
    }
    let rows: Vec<Value> = rows.iter().map(|r| project(r, object, &selected)).collect();
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
    let (user, org) = match authed_at(&shared, &req, &version) {
        Ok(found) => found,
        Err(respond) => return respond(),
    };
    let Some(rows) = records(&user, &org, &version, &kind) else {
        return not_found();
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

/// The describeGlobal summary of one sObject (also the head of its describe).
fn summary(object: &SObject, version: &str) -> serde_json::Map<String, Value> {
    let base = format!("/services/data/{version}/sobjects/{}", object.name);
    // Organization and User cannot be created or deleted through the API; the others can.
    let writable = matches!(object.name, "Account" | "Contact");
    let value = json!({
        "activateable": false,
        "createable": writable,
        "custom": false,
        "customSetting": false,
        "deletable": writable,
        "deprecatedAndHidden": false,
        "feedEnabled": writable,
        "keyPrefix": object.key_prefix,
        "label": object.name,
        "labelPlural": object.label_plural,
        "layoutable": true,
        "mergeable": writable,
        "mruEnabled": true,
        "name": object.name,
        "queryable": true,
        "replicateable": true,
        "retrieveable": true,
        "searchable": writable,
        "triggerable": writable,
        "undeletable": writable,
        "updateable": true,
        "urls": {
            "sobject": base,
            "describe": format!("{base}/describe"),
            "rowTemplate": format!("{base}/{{ID}}"),
        },
    });
    match value {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

/// `/services/data/vNN.N/sobjects`: describeGlobal over the modelled sObjects.
pub(crate) async fn sobjects(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(version): Path<String>,
    req: Request,
) -> Response {
    if let Err(respond) = authed_at(&shared, &req, &version) {
        return respond();
    }
    let list: Vec<Value> = SOBJECTS
        .iter()
        .map(|o| Value::Object(summary(o, &version)))
        .collect();
    Json(json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": list})).into_response()
}

/// `/services/data/vNN.N/sobjects/{type}`: the sObject's basic information.
pub(crate) async fn sobject_basic(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((version, kind)): Path<(String, String)>,
    req: Request,
) -> Response {
    if let Err(respond) = authed_at(&shared, &req, &version) {
        return respond();
    }
    let Some(object) = sobject_type(&kind) else {
        return not_found();
    };
    Json(json!({"objectDescribe": summary(object, &version), "recentItems": []})).into_response()
}

/// `/services/data/vNN.N/sobjects/{type}/describe`: the summary plus every modelled field.
pub(crate) async fn describe(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((version, kind)): Path<(String, String)>,
    req: Request,
) -> Response {
    if let Err(respond) = authed_at(&shared, &req, &version) {
        return respond();
    }
    let Some(object) = sobject_type(&kind) else {
        return not_found();
    };
    let fields: Vec<Value> = object
        .fields
        .iter()
        .map(|f| {
            let soap_type = match f.kind {
                "id" | "reference" => "tns:ID",
                "boolean" => "xsd:boolean",
                "date" => "xsd:date",
                _ => "xsd:string",
            };
            let length = match f.kind {
                "id" | "reference" => 18,
                "string" => 255,
                _ => 0,
            };
            json!({
                "name": f.name,
                "type": f.kind,
                "label": f.label,
                "length": length,
                "soapType": soap_type,
                "custom": false,
                "nillable": !matches!(f.kind, "id" | "boolean"),
                "createable": f.writable,
                "updateable": f.writable,
                "filterable": true,
                "sortable": true,
                "idLookup": f.kind == "id",
                "referenceTo": f.reference_to.into_iter().collect::<Vec<_>>(),
                "relationshipName": f.reference_to,
            })
        })
        .collect();
    let mut body = summary(object, &version);
    body.insert("fields".to_owned(), Value::from(fields));
    body.insert("childRelationships".to_owned(), json!([]));
    body.insert("recordTypeInfos".to_owned(), json!([]));
    Json(Value::Object(body)).into_response()
}

/// The daily REST allowance `/limits` reports; `Remaining` counts down with the REST requests
/// the emulator has served.
const DAILY_API_REQUESTS: u64 = 15_000;

/// `/services/data/vNN.N/limits`: a few of the org's limits, each `{"Max","Remaining"}` as
/// Salesforce sends them (the full answer has dozens; clients read the ones they know).
pub(crate) async fn limits(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(version): Path<String>,
    req: Request,
) -> Response {
    if let Err(respond) = authed_at(&shared, &req, &version) {
        return respond();
    }
    let used = shared
        .lock()
        .counters
        .requests
        .get("rest")
        .copied()
        .unwrap_or(0);
    let remaining = DAILY_API_REQUESTS.saturating_sub(used);
    Json(json!({
        "ConcurrentAsyncGetReportInstances": {"Max": 200, "Remaining": 200},
        "ConcurrentSyncReportRuns": {"Max": 20, "Remaining": 20},
        "DailyApiRequests": {"Max": DAILY_API_REQUESTS, "Remaining": remaining},
        "DailyAsyncApexExecutions": {"Max": 250_000, "Remaining": 250_000},
        "DailyBulkApiBatches": {"Max": 15_000, "Remaining": 15_000},
        "DailyBulkV2QueryJobs": {"Max": 10_000, "Remaining": 10_000},
        "DailyStreamingApiEvents": {"Max": 10_000, "Remaining": 10_000},
        "DataStorageMB": {"Max": 5, "Remaining": 5},
        "FileStorageMB": {"Max": 20, "Remaining": 20},
        "HourlyPublishedPlatformEvents": {"Max": 50_000, "Remaining": 50_000},
        "MassEmail": {"Max": 10, "Remaining": 10},
        "SingleEmail": {"Max": 15, "Remaining": 15},
    }))
    .into_response()
}
