//! Revoke, introspect, userinfo, the identity URL, OIDC discovery and the JWKS.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::bearer::identity_user;
use crate::context::{Shared, ViaSite};
use crate::format::{Format, OAuthError, respond};
use crate::model::RevokeErrorFormat;
use crate::params::{ClientAuth, Params};
use crate::state::User;

fn cors(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// `/services/oauth2/revoke`, POST or GET, with optional JSONP `callback`. No client
/// authentication is required, as at Salesforce.
pub(crate) async fn revoke(AxumState(shared): AxumState<Arc<Shared>>, req: Request) -> Response {
    let (_, _, params) = Params::from_request(req).await;
    let (revoked, error_format) = {
        let mut st = shared.lock();
        let revoked = params.get("token").is_some_and(|t| st.revoke_token(t));
        (revoked, st.settings.revoke_error_format)
    };
    if let Some(callback) = params.get("callback") {
        let callback: String = callback
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$'))
            .collect();
        let payload = if revoked {
            json!({})
        } else {
            json!({"error": "invalid_token"})
        };
        let mut r = (StatusCode::OK, format!("{callback}({payload});")).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/javascript"),
        );
        return r;
    }
    if revoked {
        return StatusCode::OK.into_response();
    }
    let error = if params.get("token").is_none() {
        OAuthError::new("unsupported_token_type", "Token type not supported")
    } else {
        OAuthError::new("invalid_token", "Token was invalid")
    };
    let format = match error_format {
        RevokeErrorFormat::Json => Format::Json,
        RevokeErrorFormat::Urlencoded => Format::Urlencoded,
    };
    error.respond(format)
}

/// `/services/oauth2/introspect`: the app's own tokens; `{"active":false}` for anything else.
pub(crate) async fn introspect(
    AxumState(shared): AxumState<Arc<Shared>>,
    req: Request,
) -> Response {
    let (headers, _, params) = Params::from_request(req).await;
    let format = Format::negotiate(params.get("format"), &headers);
    let auth = ClientAuth::from(&headers, &params);
    let now = shared.clock.now_ms();
    let st = shared.lock();
    let Some(app) = auth
        .candidates()
        .into_iter()
        .find_map(|id| st.app(&id).cloned())
    else {
        // UNCONFIRMED: status and body for a failed client authentication.
        return OAuthError::invalid_client_id().respond(format);
    };
    if app
        .config
        .matching_secret(|s| auth.secret_matches(s))
        .is_none()
    {
        return OAuthError::invalid_client().respond(format);
    }
    let token = params.get("token").unwrap_or("");
    let inactive = || respond(StatusCode::OK, format, &[("active", Value::from(false))]);
    let found = if let Some(at) = st.live_access(token, now) {
        Some((
            at.client_id.clone(),
            at.user_id.clone(),
            at.scopes.clone(),
            at.issued_ms,
            Some(at.expires_ms),
            "access_token",
        ))
    } else {
        st.live_refresh(token, now).map(|f| {
            (
                f.client_id.clone(),
                f.user_id.clone(),
                f.scopes.clone(),
                f.created_ms,
                None,
                "refresh_token",
            )
        })
    };
    let Some((client_id, user_id, scopes, issued_ms, expires_ms, kind)) = found else {
        return inactive();
    };
    if client_id != app.config.client_id {
        return inactive();
    }
    let Some(user) = st.user(&user_id) else {
        return inactive();
    };
    let iat = issued_ms.div_euclid(1000);
    let mut fields = vec![
        ("active", Value::from(true)),
        ("scope", Value::from(scopes.join(" "))),
        ("client_id", Value::from(client_id)),
        ("username", Value::from(user.config.username.clone())),
        ("sub", Value::from(st.identity_url(user))),
        ("token_type", Value::from(kind)),
    ];
    if let Some(exp) = expires_ms {
        fields.push(("exp", Value::from(exp.div_euclid(1000))));
    }
    fields.push(("iat", Value::from(iat)));
    fields.push(("nbf", Value::from(iat)));
    respond(StatusCode::OK, format, &fields)
}

fn urls(base: &str, user: &User, version: Option<&str>) -> Value {
    let v = version.map_or_else(
        || "{version}".to_owned(),
        |v| {
            if v == "latest" {
                crate::versions::LATEST.to_owned()
            } else {
                v.to_owned()
            }
        },
    );
    json!({
        "enterprise": format!("{base}/services/Soap/c/{v}/{}", crate::ids::to_15(&user.org_id)),
        "metadata": format!("{base}/services/Soap/m/{v}/{}", crate::ids::to_15(&user.org_id)),
        "partner": format!("{base}/services/Soap/u/{v}/{}", crate::ids::to_15(&user.org_id)),
        "rest": format!("{base}/services/data/v{v}/"),
        "sobjects": format!("{base}/services/data/v{v}/sobjects/"),
        "search": format!("{base}/services/data/v{v}/search/"),
        "query": format!("{base}/services/data/v{v}/query/"),
        "recent": format!("{base}/services/data/v{v}/recent/"),
        "tooling_rest": format!("{base}/services/data/v{v}/tooling/"),
        "profile": format!("{base}/{}", user.id),
        "feeds": format!("{base}/services/data/v{v}/chatter/feeds"),
        "groups": format!("{base}/services/data/v{v}/chatter/groups"),
        "users": format!("{base}/services/data/v{v}/chatter/users"),
        "feed_items": format!("{base}/services/data/v{v}/chatter/feed-items"),
        "custom_domain": base,
    })
}

fn photos(base: &str) -> Value {
    json!({"picture": format!("{base}/profilephoto/005/F"), "thumbnail": format!("{base}/profilephoto/005/T")})
}

fn format_of(params: &Params, headers: &HeaderMap) -> Format {
    Format::negotiate(params.get("format"), headers)
}

fn render_value(format: Format, value: &Value) -> Response {
    match (format, value.as_object()) {
        (Format::Json, _) | (_, None) => Json(value.clone()).into_response(),
        (f, Some(map)) => {
            let fields: Vec<(&str, Value)> =
                map.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            respond(StatusCode::OK, f, &fields)
        }
    }
}

/// `/services/oauth2/userinfo`.
pub(crate) async fn userinfo(AxumState(shared): AxumState<Arc<Shared>>, req: Request) -> Response {
    let (headers, _, params) = Params::from_request(req).await;
    let (user, _) = match identity_user(&shared, &headers, &params) {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    let base = shared.lock().instance_url(&user.org_id);
    let identity = shared.lock().identity_url(&user);
    let c = &user.config;
    let value = json!({
        "sub": identity,
        "user_id": user.id,
        "organization_id": user.org_id,
        "preferred_username": c.username,
        "nickname": c.username.split('@').next().unwrap_or(""),
        "name": format!("{} {}", c.first_name, c.last_name),
        "email": c.email,
        "email_verified": true,
        "given_name": c.first_name,
        "family_name": c.last_name,
        "zoneinfo": "America/Los_Angeles",
        "photos": photos(&base),
        "profile": format!("{base}/{}", user.id),
        "picture": format!("{base}/profilephoto/005/F"),
        "address": {"country": "US"},
        "is_salesforce_integration_user": false,
        "urls": urls(&base, &user, params.get("version")),
        "active": true,
        "user_type": "STANDARD",
        "language": "en_US",
        "locale": "en_US",
        "utcOffset": -28_800_000,
        "updated_at": "2026-01-01T00:00:00Z",
        "is_app_installed": true,
    });
    render_value(format_of(&params, &headers), &value)
}

/// `/id/{org}/{user}`.
pub(crate) async fn identity(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((org, user_id)): Path<(String, String)>,
    req: Request,
) -> Response {
    let (headers, _, params) = Params::from_request(req).await;
    let (caller, scopes) = match identity_user(&shared, &headers, &params) {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    if !scopes
        .iter()
        .any(|s| matches!(s.as_str(), "id" | "api" | "full" | "openid"))
    {
        return (StatusCode::FORBIDDEN, "No_Oauth_Scope").into_response();
    }
    let (target, base, identity) = {
        let st = shared.lock();
        let Some(target) = st.user(&user_id).filter(|u| u.org_id == org).cloned() else {
            return (StatusCode::NOT_FOUND, "Bad_Id").into_response();
        };
        if target.org_id != caller.org_id {
            return (StatusCode::FORBIDDEN, "Wrong_Org").into_response();
        }
        let base = st.instance_url(&target.org_id);
        let identity = st.identity_url(&target);
        (target, base, identity)
    };
    let c = &target.config;
    let value = json!({
        "id": identity,
        "asserted_user": target.id == caller.id,
        "user_id": target.id,
        "organization_id": target.org_id,
        "username": c.username,
        "nick_name": c.username.split('@').next().unwrap_or(""),
        "display_name": format!("{} {}", c.first_name, c.last_name),
        "email": c.email,
        "email_verified": true,
        "first_name": c.first_name,
        "last_name": c.last_name,
        "timezone": "America/Los_Angeles",
        "photos": photos(&base),
        "urls": urls(&base, &target, params.get("version")),
        "active": target.is_active(),
        "user_type": "STANDARD",
        "language": "en_US",
        "locale": "en_US",
        "utcOffset": -28_800_000,
        "last_modified_date": "2026-01-01T00:00:00.000+0000",
        "is_app_installed": true,
    });
    let format = format_of(&params, &headers);
    if let Some(callback) = params.get("callback") {
        let callback: String = callback
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$'))
            .collect();
        return (StatusCode::OK, format!("{callback}({value});")).into_response();
    }
    render_value(format, &value)
}

/// `/.well-known/openid-configuration`, for the host or site the request came through.
pub(crate) async fn discovery(AxumState(shared): AxumState<Arc<Shared>>, req: Request) -> Response {
    let via_site = req.extensions().get::<ViaSite>().is_some_and(|v| v.0);
    let issuer = if via_site {
        shared.site_url()
    } else {
        shared.base_url.clone()
    };
    let value = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/services/oauth2/authorize"),
        "token_endpoint": format!("{issuer}/services/oauth2/token"),
        "revocation_endpoint": format!("{issuer}/services/oauth2/revoke"),
        "userinfo_endpoint": format!("{issuer}/services/oauth2/userinfo"),
        "introspection_endpoint": format!("{issuer}/services/oauth2/introspect"),
        "registration_endpoint": format!("{issuer}/services/oauth2/register"),
        "jwks_uri": format!("{issuer}/id/keys"),
        "scopes_supported": crate::state::KNOWN_SCOPES,
        "response_types_supported": ["code", "token", "token id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "display_values_supported": ["page", "popup", "touch"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic", "private_key_jwt"],
        "claims_supported": ["active", "address", "email", "email_verified", "family_name", "given_name",
            "is_app_installed", "language", "locale", "name", "nickname", "organization_id", "phone_number",
            "phone_number_verified", "photos", "picture", "preferred_username", "profile", "sub", "updated_at",
            "urls", "user_id", "user_type", "zoneinfo"],
    });
    cors(Json(value).into_response())
}

/// `/id/keys`.
pub(crate) async fn jwks(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    cors(Json(shared.keys.jwks()).into_response())
}
