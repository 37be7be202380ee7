//! Bearer-token checks: the user behind a live access token, as the identity service and the
//! REST API each answer for a missing or dead one.

use axum::http::{HeaderMap, StatusCode};

use crate::context::Shared;
use crate::params::{Params, bearer};
use crate::state::User;

/// The live access token's user and scopes, marking the token used (a session's inactivity
/// timeout counts from its last use).
fn live_user(shared: &Shared, token: &str) -> Option<(User, Vec<String>)> {
    let now = shared.clock.now_ms();
    let mut st = shared.lock();
    let at = st.live_access(token, now)?;
    let (user_id, scopes) = (at.user_id.clone(), at.scopes.clone());
    st.touch_access(token, now);
    st.user(&user_id).cloned().map(|u| (u, scopes))
}

/// Authenticates a bearer token for userinfo and the identity URL. UNCONFIRMED: failures answer
/// 403 with Salesforce's identity-service codes `Missing_OAuth_Token` / `Bad_OAuth_Token`.
pub(crate) fn identity_user(
    shared: &Shared,
    headers: &HeaderMap,
    params: &Params,
) -> Result<(User, Vec<String>), (StatusCode, &'static str)> {
    let Some(token) = bearer(headers, Some(params)) else {
        return Err((StatusCode::FORBIDDEN, "Missing_OAuth_Token"));
    };
    live_user(shared, &token).ok_or((StatusCode::FORBIDDEN, "Bad_OAuth_Token"))
}

/// Authenticates a bearer token for the REST API (the header only). `None` is answered with the
/// REST API's own 401.
pub(crate) fn rest_user(shared: &Shared, headers: &HeaderMap) -> Option<(User, Vec<String>)> {
    let token = bearer(headers, None)?;
    live_user(shared, &token)
}
