//! The Single Access UI Bridge API (`/services/oauth2/singleaccess`), which `sf org open`
//! calls, and the `/secur/frontdoor.jsp` page its URL opens.
//!
//! An access token goes in and a short-lived, single-use frontdoor URL comes out:
//! `{"frontdoor_uri": "{instance_url}/secur/frontdoor.jsp?otp=...[&startURL=...]"}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::context::Shared;
use crate::params::{Params, bearer};

/// How long a frontdoor URL stays good: Salesforce calls them short-lived without a number
/// (UNCONFIRMED), so one minute, enough for a browser to open it.
const OTP_LIFETIME_MS: i64 = 60 * 1000;

/// Where a frontdoor URL without a `startURL` lands.
const HOME: &str = "/lightning/page/home";

/// A relative path on the instance, or `None` for anything that could leave it (an absolute
/// URL, `//host`, a backslash trick).
fn relative_path(path: &str) -> Option<&str> {
    (path.starts_with('/') && !path.starts_with("//") && !path.contains('\\')).then_some(path)
}

/// `POST /services/oauth2/singleaccess`: the access token in the `Authorization` header (or an
/// `access_token` parameter), an optional `redirect_uri` path.
pub(crate) async fn singleaccess(
    AxumState(shared): AxumState<Arc<Shared>>,
    req: Request,
) -> Response {
    let (headers, _, params) = Params::from_request(req).await;
    let token = bearer(&headers, None).or_else(|| params.get("access_token").map(str::to_owned));
    let now = shared.clock.now_ms();
    let mut st = shared.lock();
    // UNCONFIRMED: a dead token is answered as the REST API answers it, which makes `sf`
    // refresh and try again.
    let Some((token, user_id, scopes)) = token.and_then(|t| {
        st.live_access(&t, now)
            .map(|at| (t.clone(), at.user_id.clone(), at.scopes.clone()))
    }) else {
        return crate::rest::error(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
        );
    };
    // A UI session needs a token that may open one.
    if !scopes.iter().any(|s| s == "web" || s == "full") {
        return crate::rest::error(
            StatusCode::FORBIDDEN,
            "INSUFFICIENT_ACCESS",
            "The access token needs the web or full scope to start a UI session",
        );
    }
    let start = match params.get("redirect_uri") {
        None => None,
        Some(path) => match relative_path(path) {
            Some(p) => Some(p.to_owned()),
            None => {
                return crate::rest::error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REDIRECT_URI",
                    "redirect_uri must be a path on this instance",
                );
            }
        },
    };
    st.touch_access(&token, now);
    let otp = st.random(48);
    st.frontdoor
        .insert(otp.clone(), (token, now.saturating_add(OTP_LIFETIME_MS)));
    let org_id = st
        .user(&user_id)
        .map(|u| u.org_id.clone())
        .unwrap_or_default();
    let mut pairs = vec![("otp", otp)];
    if let Some(start) = start {
        pairs.push(("startURL", start));
    }
    let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    let uri = format!("{}/secur/frontdoor.jsp?{query}", st.instance_url(&org_id));
    let mut r = Json(json!({ "frontdoor_uri": uri })).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache,must-revalidate,max-age=0,no-store,private"),
    );
    r
}

/// `GET /secur/frontdoor.jsp?otp=` (or the older `sid=`): a live one starts a UI session (the
/// `sid` cookie) and lands on `startURL`/`retURL`; anything else lands on the login page.
pub(crate) async fn frontdoor_page(
    AxumState(shared): AxumState<Arc<Shared>>,
    req: Request,
) -> Response {
    let (_, _, params) = Params::from_request(req).await;
    let now = shared.clock.now_ms();
    let session = {
        let mut st = shared.lock();
        st.frontdoor.retain(|_, (_, expires)| *expires > now);
        let token = match (params.get("otp"), params.get("sid")) {
            // Single use: taken out whatever happens next.
            (Some(otp), _) => st.frontdoor.remove(otp).map(|(t, _)| t),
            (None, Some(sid)) => Some(sid.to_owned()),
            (None, None) => None,
        };
        token.filter(|t| st.live_access(t, now).is_some())
    };
    let target = params
        .get("startURL")
        .or_else(|| params.get("retURL"))
        .and_then(relative_path)
        .unwrap_or(HOME);
    let mut r = StatusCode::FOUND.into_response();
    let location = match &session {
        Some(_) => target.to_owned(),
        None => format!(
            "/?ec=302&{}",
            serde_urlencoded::to_string([("startURL", target)]).unwrap_or_default()
        ),
    };
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(sid) = session
        && let Ok(v) = HeaderValue::from_str(&format!("sid={sid}; Path=/; HttpOnly; SameSite=None"))
    {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_on_the_instance() {
        for (path, ok) in [
            ("/lightning/r/Account/001/view", true),
            ("/", true),
            ("//evil.test/x", false),
            ("https://evil.test", false),
            ("/\\evil.test", false),
            ("relative", false),
        ] {
            assert_eq!(relative_path(path).is_some(), ok, "{path}");
        }
    }
}
