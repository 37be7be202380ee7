//! `/services/oauth2/authorize` (login form, consent page, auto-approve, redirects) and the
//! device-flow verification page.

use std::sync::Arc;

use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;

use crate::context::{Shared, ViaSite};
use crate::crypto;
use crate::format::{Fields, xml_escape as esc};
use crate::issue;
use crate::model::Flow;
use crate::params::Params;
use crate::state::{AuthCode, DeviceStatus, State};

/// The parameters that travel through the login and consent pages.
const CARRIED: [&str; 12] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "login_hint",
    "prompt",
    "display",
    "immediate",
];

/// How long the login form's ticket (login done, consent pending) stays good: 10 minutes.
const TICKET_LIFETIME_MS: i64 = 10 * 60 * 1000;

/// A validated authorization request.
#[derive(Debug, Clone)]
struct AuthRequest {
    client_id: String,
    redirect_uri: String,
    /// `true` for the user-agent flow (results in the fragment).
    fragment: bool,
    scopes: Vec<String>,
    state: Option<String>,
    challenge: Option<String>,
    nonce: Option<String>,
    /// `response_type` asked for an id token (`token id_token`).
    id_token: bool,
    /// The request came through the Experience Cloud-style site.
    via_site: bool,
}

impl AuthRequest {
    /// Sends an OAuth error back to the client's callback, where this request wants results.
    fn error_redirect(&self, error: &str, description: &str) -> Response {
        redirect_error(
            &self.redirect_uri,
            self.fragment,
            error,
            description,
            self.state.as_deref(),
        )
    }
}

enum Failure {
    /// Cannot trust the redirect URI: send the browser to Salesforce's error page.
    Page(&'static str, &'static str),
    /// Redirect back to the client with an error.
    Redirect(&'static str, String),
}

/// The handler (GET shows the form; POST carries the form steps).
pub(crate) async fn authorize(AxumState(shared): AxumState<Arc<Shared>>, req: Request) -> Response {
    let via_site = req.extensions().get::<ViaSite>().is_some_and(|v| v.0);
    let (_, _, params) = Params::from_request(req).await;
    let fragment = params
        .get("response_type")
        .is_some_and(|rt| rt.contains("token"));
    let request = match validate(&shared, &params) {
        Ok(r) => AuthRequest { via_site, ..r },
        Err(Failure::Page(error, description)) => {
            return error_redirect_page(&shared, error, description);
        }
        Err(Failure::Redirect(error, description)) => {
            let redirect_uri = params.get("redirect_uri").unwrap_or("");
            return redirect_error(
                redirect_uri,
                fragment,
                error,
                &description,
                params.get("state"),
            );
        }
    };
    match params.get("emulator_step") {
        Some("login") => login_step(&shared, &params, &request),
        Some("consent") => consent_step(&shared, &params, &request),
        _ => first_step(&shared, &params, &request),
    }
}

fn validate(shared: &Shared, params: &Params) -> Result<AuthRequest, Failure> {
    let st = shared.lock();
    let client_id = params.get("client_id").unwrap_or("");
    let Some(app) = st.app(client_id) else {
        return Err(Failure::Page(
            "invalid_client_id",
            "client identifier invalid",
        ));
    };
    let Some(redirect_uri) = params.get("redirect_uri") else {
        return Err(Failure::Page(
            "redirect_uri_missing",
            "redirect_uri must be provided",
        ));
    };
    if !app.config.callback_urls.iter().any(|c| c == redirect_uri) {
        return Err(Failure::Page(
            "redirect_uri_mismatch",
            "redirect_uri must match configuration",
        ));
    }
    let redirect = |e: &'static str, d: &str| Failure::Redirect(e, d.to_owned());
    let response_type = params.get("response_type").unwrap_or("");
    let flow = match response_type {
        "code" | "hybrid_auth_code" => Flow::AuthorizationCode,
        "token" | "token id_token" | "id_token token" | "hybrid_token" => Flow::UserAgent,
        _ => {
            return Err(redirect(
                "unsupported_response_type",
                "Response type not supported",
            ));
        }
    };
    if !app.config.flows.contains(&flow) {
        return Err(redirect(
            "unsupported_response_type",
            "Response type not supported",
        ));
    }
    if app.blocked {
        // UNCONFIRMED: how Salesforce reports a blocked app at authorize.
        return Err(redirect("access_denied", "this app is blocked by admin"));
    }
    let scopes = State::grant_scopes(params.get("scope")).map_err(|_| {
        redirect(
            "invalid_scope",
            "Requested scope is invalid, unknown, or malformed",
        )
    })?;
    let challenge = match (
        params.get("code_challenge"),
        params.get("code_challenge_method"),
    ) {
        (None, _) if app.config.needs_pkce() && flow == Flow::AuthorizationCode => {
            return Err(redirect(
                "invalid_request",
                "missing required code challenge",
            ));
        }
        (None, _) => None,
        // Salesforce treats a missing method as S256.
        (Some(c), None | Some("S256")) => Some(c.to_owned()),
        // The partner mandate names S256 as the only method.
        (Some(c), Some("plain"))
            if st.settings.accept_plain_pkce && !app.config.policy.partner_mandate =>
        {
            Some(crypto::pkce_s256(c))
        }
        (Some(_), Some(_)) => {
            return Err(redirect(
                "invalid_request",
                "unsupported code challenge method",
            ));
        }
    };
    Ok(AuthRequest {
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        fragment: flow == Flow::UserAgent,
        scopes,
        state: params.get("state").map(str::to_owned),
        challenge,
        nonce: params.get("nonce").map(str::to_owned),
        id_token: response_type.contains("id_token"),
        via_site: false,
    })
}

fn first_step(shared: &Shared, params: &Params, request: &AuthRequest) -> Response {
    let auto = {
        let st = shared.lock();
        st.settings.auto_approve.then(|| {
            params
                .get("login_hint")
                .or(st.settings.auto_approve_user.as_deref())
                .and_then(|name| st.user_by_name(name))
                .or_else(|| {
                    st.users.iter().find(|u| {
                        u.org_id
                            == st
                                .app(&request.client_id)
                                .map(|a| a.org_id.clone())
                                .unwrap_or_default()
                    })
                })
                .map(|u| u.id.clone())
        })
    };
    match auto {
        Some(Some(user_id)) => complete(shared, request, &user_id),
        Some(None) => request.error_redirect("access_denied", "no user to approve as"),
        None if params.get("immediate") == Some("true") || params.get("prompt") == Some("none") => {
            request.error_redirect("immediate_unsuccessful", "immediate unsuccessful")
        }
        None => login_page(params, None),
    }
}

fn login_step(shared: &Shared, params: &Params, request: &AuthRequest) -> Response {
    let username = params.get("username").unwrap_or("");
    let password = params.get("pw").unwrap_or("");
    let user = {
        let st = shared.lock();
        st.user_by_name(username)
            .filter(|u| {
                crypto::secret_eq(password, &u.config.password)
                    || crypto::secret_eq(
                        password,
                        &format!("{}{}", u.config.password, u.config.security_token),
                    )
            })
            .map(|u| (u.id.clone(), st.check_user(&u.id)))
    };
    match user {
        None => login_page(
            params,
            Some(
                "Please check your username and password. If you still can't log in, contact your Salesforce administrator.",
            ),
        ),
        Some((_, Err(e))) => request.error_redirect(&e.error, &e.description),
        Some((user_id, Ok(()))) => {
            let ticket = {
                let mut st = shared.lock();
                let ticket = st.random(40);
                let expires = shared.clock.now_ms().saturating_add(TICKET_LIFETIME_MS);
                st.tickets.insert(ticket.clone(), (user_id, expires));
                ticket
            };
            consent_page(shared, params, request, &ticket)
        }
    }
}

fn consent_step(shared: &Shared, params: &Params, request: &AuthRequest) -> Response {
    let ticket = params.get("ticket").unwrap_or("");
    let user_id = {
        let mut st = shared.lock();
        st.tickets
            .remove(ticket)
            .filter(|(_, exp)| *exp > shared.clock.now_ms())
            .map(|(u, _)| u)
    };
    let Some(user_id) = user_id else {
        return login_page(
            params,
            Some("Your session has expired. Please log in again."),
        );
    };
    if params.get("decision") != Some("allow") {
        return request.error_redirect("access_denied", "end-user denied authorization");
    }
    complete(shared, request, &user_id)
}

/// Issues the code or the tokens and redirects back to the client.
fn complete(shared: &Shared, request: &AuthRequest, user_id: &str) -> Response {
    let now = shared.clock.now_ms();
    let mut st = shared.lock();
    if let Err(e) = st.check_user(user_id) {
        drop(st);
        return request.error_redirect(&e.error, &e.description);
    }
    let exempt = st
        .user(user_id)
        .is_some_and(|u| u.config.approve_uninstalled_apps);
    if st
        .app(&request.client_id)
        .is_some_and(|a| !a.config.installed)
        && !exempt
    {
        drop(st);
        let e = crate::format::OAuthError::app_not_installed();
        return request.error_redirect(&e.error, &e.description);
    }
    if !request.fragment {
        let code = format!("aPrx{}", st.random(60));
        let lifetime =
            i64::try_from(st.settings.code_lifetime_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        st.codes.insert(
            code.clone(),
            AuthCode {
                client_id: request.client_id.clone(),
                user_id: user_id.to_owned(),
                redirect_uri: request.redirect_uri.clone(),
                scopes: request.scopes.clone(),
                challenge: request.challenge.clone(),
                nonce: request.nonce.clone(),
                expires_ms: now.saturating_add(lifetime),
                used: false,
            },
        );
        let mut fields: Fields = vec![("code", Value::from(code))];
        if let Some(s) = &request.state {
            fields.push(("state", Value::from(s.clone())));
        }
        return redirect(&request.redirect_uri, false, &fields);
    }
    // The fragment carries what the token endpoint would answer (JWT access tokens, id token,
    // site fields included), so it is built by the token endpoint's own code.
    let with_refresh = issue::wants_refresh(&st, &request.client_id, &request.scopes);
    let issued = st.issue(
        &request.client_id,
        user_id,
        request.scopes.clone(),
        with_refresh,
        now,
    );
    let mut shape = issue::full_shape();
    shape.id_token_nonce = Some(request.nonce.clone());
    shape.id_token_asked = request.id_token;
    shape.extra = issue::site_fields(shared, request.via_site);
    let mut fields = issue::finish(shared, request.via_site, &mut st, issued, shape);
    if fields.is_empty() {
        // The app or the user went away between validation and issuing.
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    if let Some(s) = &request.state {
        fields.push(("state", Value::from(s.clone())));
    }
    redirect(&request.redirect_uri, true, &fields)
}

fn append(redirect_uri: &str, fragment: bool, fields: &Fields) -> String {
    let pairs: Vec<(&str, String)> = fields
        .iter()
        .map(|(k, v)| (*k, v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
        .collect();
    let encoded = serde_urlencoded::to_string(pairs).unwrap_or_default();
    if fragment {
        format!("{redirect_uri}#{encoded}")
    } else if redirect_uri.contains('?') {
        format!("{redirect_uri}&{encoded}")
    } else {
        format!("{redirect_uri}?{encoded}")
    }
}

fn redirect(redirect_uri: &str, fragment: bool, fields: &Fields) -> Response {
    let location = append(redirect_uri, fragment, fields);
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

fn redirect_error(
    redirect_uri: &str,
    fragment: bool,
    error: &str,
    description: &str,
    state: Option<&str>,
) -> Response {
    let mut fields: Fields = vec![
        ("error", Value::from(error)),
        ("error_description", Value::from(description)),
    ];
    if let Some(s) = state {
        fields.push(("state", Value::from(s)));
    }
    redirect(redirect_uri, fragment, &fields)
}

fn error_redirect_page(shared: &Shared, error: &str, description: &str) -> Response {
    let fields: Fields = vec![
        ("error", Value::from(error)),
        ("error_description", Value::from(description)),
    ];
    redirect(
        &format!(
            "{}/setup/secur/RemoteAccessErrorPage.apexp",
            shared.base_url
        ),
        false,
        &fields,
    )
}

/// Salesforce's OAuth error page.
pub(crate) async fn error_page(req: Request) -> Response {
    let (_, _, params) = Params::from_request(req).await;
    let body = format!(
        "<!DOCTYPE html><html><head><title>Remote Access Error</title></head><body><h1>Remote Access Error</h1>\
         <p>error=<span id=\"error\">{}</span></p><p>error_description=<span id=\"error_description\">{}</span></p></body></html>",
        esc(params.get("error").unwrap_or("")),
        esc(params.get("error_description").unwrap_or("")),
    );
    (StatusCode::BAD_REQUEST, Html(body)).into_response()
}

fn hidden_fields(params: &Params) -> String {
    CARRIED
        .iter()
        .filter_map(|k| {
            params
                .get(k)
                .map(|v| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", esc(v)))
        })
        .collect()
}

const STYLE: &str = "<style>body{font-family:sans-serif;background:#f3f3f3}main{max-width:22rem;margin:4rem auto;\
background:#fff;padding:2rem;border-radius:.5rem}label,input{display:block;width:100%;margin:.3rem 0}\
button{margin:.5rem .5rem 0 0;padding:.5rem 1rem}.error{color:#c23934}</style>";

fn login_page(params: &Params, error: Option<&str>) -> Response {
    let username = params
        .get("username")
        .or(params.get("login_hint"))
        .unwrap_or("");
    let error = error
        .map(|e| format!("<p class=\"error\" id=\"error\">{}</p>", esc(e)))
        .unwrap_or_default();
    let body = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Login | Salesforce</title>{STYLE}</head><body><main>\
         <h1>Log In</h1>{error}<form method=\"post\" action=\"\" id=\"login_form\">{hidden}\
         <input type=\"hidden\" name=\"emulator_step\" value=\"login\">\
         <label for=\"username\">Username</label><input id=\"username\" name=\"username\" type=\"email\" value=\"{username}\" autofocus>\
         <label for=\"pw\">Password</label><input id=\"pw\" name=\"pw\" type=\"password\">\
         <button type=\"submit\" id=\"Login\">Log In</button></form></main></body></html>",
        hidden = hidden_fields(params),
        username = esc(username),
    );
    Html(body).into_response()
}

fn consent_page(shared: &Shared, params: &Params, request: &AuthRequest, ticket: &str) -> Response {
    let app_name = shared
        .lock()
        .app(&request.client_id)
        .map(|a| a.config.name.clone())
        .unwrap_or_default();
    let scopes: String = request
        .scopes
        .iter()
        .map(|s| format!("<li>{}</li>", esc(s)))
        .collect();
    let body = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Allow Access?</title>{STYLE}</head><body><main>\
         <h1>Allow Access?</h1><p><strong>{app}</strong> is asking to:</p><ul>{scopes}</ul>\
         <form method=\"post\" action=\"\" id=\"consent_form\">{hidden}\
         <input type=\"hidden\" name=\"emulator_step\" value=\"consent\">\
         <input type=\"hidden\" name=\"ticket\" value=\"{ticket}\">\
         <button type=\"submit\" name=\"decision\" value=\"allow\" id=\"oaapprove\">Allow</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\" id=\"oadeny\">Deny</button></form></main></body></html>",
        app = esc(&app_name),
        hidden = hidden_fields(params),
        ticket = esc(ticket),
    );
    Html(body).into_response()
}

/// `/setup/connect`: where a device-flow user types the user code, logs in and approves.
pub(crate) async fn device_page(
    AxumState(shared): AxumState<Arc<Shared>>,
    req: Request,
) -> Response {
    let is_post = req.method() == axum::http::Method::POST;
    let (_, _, params) = Params::from_request(req).await;
    let message = if is_post {
        let user_code = params
            .get("user_code")
            .unwrap_or("")
            .trim()
            .to_ascii_uppercase();
        let mut st = shared.lock();
        let user = st
            .user_by_name(params.get("username").unwrap_or(""))
            .filter(|u| crypto::secret_eq(params.get("pw").unwrap_or(""), &u.config.password))
            .map(|u| u.id.clone());
        let now = shared.clock.now_ms();
        let grant = st.devices.iter_mut().find(|d| {
            d.user_code == user_code && d.status == DeviceStatus::Pending && d.expires_ms > now
        });
        match (grant, user) {
            (None, _) => "<p class=\"error\" id=\"error\">Invalid or expired code.</p>".to_owned(),
            (Some(_), None) => {
                "<p class=\"error\" id=\"error\">Please check your username and password.</p>"
                    .to_owned()
            }
            (Some(g), Some(user_id)) => {
                if params.get("decision") == Some("deny") {
                    g.status = DeviceStatus::Denied;
                    return Html("<!DOCTYPE html><html><body><p id=\"result\">Access denied.</p></body></html>").into_response();
                }
                g.status = DeviceStatus::Approved(user_id);
                return Html("<!DOCTYPE html><html><body><p id=\"result\">You're connected. You can close this window.</p></body></html>")
                    .into_response();
            }
        }
    } else {
        String::new()
    };
    let body = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Connect Your Device</title>{STYLE}</head><body><main>\
         <h1>Connect Your Device</h1>{message}<form method=\"post\" action=\"\">\
         <label for=\"user_code\">Code</label><input id=\"user_code\" name=\"user_code\" value=\"{code}\">\
         <label for=\"username\">Username</label><input id=\"username\" name=\"username\">\
         <label for=\"pw\">Password</label><input id=\"pw\" name=\"pw\" type=\"password\">\
         <button type=\"submit\" name=\"decision\" value=\"allow\">Connect</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form></main></body></html>",
        code = esc(params.get("user_code").unwrap_or("")),
    );
    Html(body).into_response()
}
