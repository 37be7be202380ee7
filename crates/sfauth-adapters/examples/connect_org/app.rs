//! The web application of the `connect_org` example, as one function ([`app`]) so that its
//! browser test (`tests/connect_org_browser.rs`) can serve it against an emulator the test
//! controls.
//!
//! - `GET /`: the "Connect your Salesforce org" form and the connected orgs with their health.
//! - `GET /connect`: the form's target; makes sure there is a manager for the chosen login host,
//!   then hands over to the login router (`/salesforce/login?host=...` or `?my_domain=...`).
//! - `/salesforce/login` and `/salesforce/callback`: [`LoginRouter`], including
//!   `/salesforce/login?reconnect=KEY` behind every "Reconnect" button.
//! - `GET /accounts?tenant=KEY`: `SELECT Id, Name FROM Account` through the [`SalesforceAuth`]
//!   middleware, or a "Reconnect" button when the org needs a new login.
//!
//! This is a demonstration: it has no users of its own, so anyone who can reach it sees every
//! connected org. A real application checks, in its [`sfauth_adapters::LoginHook`] and before
//! using a tenant, that the signed-in user owns that tenant.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use sfauth::storage::{ListQuery, RecordStatus, StatusKind, TokenRecord, TokenStoreExt as _};
use sfauth::{LoginHost, OAuthClient, TokenKey, TokenManager};
use sfauth_adapters::{
    ErrorKind, LoginConfig, LoginRouter, Refusal, SalesforceAuth, adapter_error, instance,
};

/// Where the login router is nested: the connected app's callback URL is
/// `{base}/salesforce/callback`.
pub(crate) const LOGIN_PREFIX: &str = "/salesforce";

/// The REST query the accounts page sends.
const ACCOUNTS: &str = "SELECT Id, Name FROM Account";

/// How many login hosts (sandbox and My Domains) may get a manager: each visitor's My Domain
/// name makes one, so without a bound a stranger could grow the table without end.
const MAX_HOSTS: usize = 64;

/// What the application is given.
pub(crate) struct Config {
    /// The manager of the main login host: production for a real connected app, the
    /// emulator's URL in the demonstration. Its connected app (with its redirect URI) and store
    /// are shared by the managers of the other hosts.
    pub(crate) manager: TokenManager,
    /// Whether to offer production, sandbox and a My Domain. Off against the emulator, whose
    /// connected app Salesforce does not know: its form offers the emulator alone.
    pub(crate) offer_salesforce_hosts: bool,
}

/// The whole application: the pages and the login router under [`LOGIN_PREFIX`].
pub(crate) fn app(config: Config) -> Router {
    let managers = Arc::new(Managers {
        main: config.manager.clone(),
        others: RwLock::new(HashMap::new()),
    });
    let for_router = managers.clone();
    let logins = LoginRouter::new(
        config.manager,
        // The host choice of `/salesforce/login` finds its manager here; `/connect` made it.
        LoginConfig::new().host_managers(move |host| for_router.get(host)),
    )
    // Back to the list, where the new (or reconnected) org shows its health.
    .on_login(|_login| async { Ok("/".to_owned()) })
    .router();
    let state = Arc::new(AppState {
        managers,
        offer_salesforce_hosts: config.offer_salesforce_hosts,
        http: reqwest::Client::new(),
    });
    Router::new()
        .route("/", get(home))
        .route("/connect", get(connect))
        .route("/accounts", get(accounts))
        .with_state(state)
        .nest(LOGIN_PREFIX, logins)
}

struct AppState {
    managers: Arc<Managers>,
    offer_salesforce_hosts: bool,
    /// One connection pool for every tenant; each request wraps it in its tenant's middleware.
    http: reqwest::Client,
}

/// A manager per login host, because a tenant refreshes against the host that logged it in.
/// They share the main manager's connected app, store and transport.
struct Managers {
    main: TokenManager,
    others: RwLock<HashMap<String, TokenManager>>,
}

impl Managers {
    /// The manager for `host` if there is one already (the login router asks synchronously).
    fn get(&self, host: &LoginHost) -> Option<TokenManager> {
        let key = host.key();
        if key == self.main.client().host().key() {
            return Some(self.main.clone());
        }
        // A panic while holding the lock cannot leave the map half-written.
        let others = self.others.read().unwrap_or_else(PoisonError::into_inner);
        others.get(&key).cloned()
    }

    /// The manager for `host`, made on first use.
    async fn get_or_build(&self, host: &LoginHost) -> Result<TokenManager, Refusal> {
        if let Some(manager) = self.get(host) {
            return Ok(manager);
        }
        let full = {
            let others = self.others.read().unwrap_or_else(PoisonError::into_inner);
            others.len() >= MAX_HOSTS
        };
        if full {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many login hosts are in use; try production or sandbox.",
            ));
        }
        let client = OAuthClient::new(host.clone(), self.main.client().app().clone());
        let manager = TokenManager::builder(client)
            .store(self.main.store().clone())
            .transport(self.main.transport().clone())
            .build()
            .await
            .map_err(|error| {
                tracing::error!(error = %error, "cannot build a manager for a login host");
                Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "This login host cannot be used (see the server's log).",
                )
            })?;
        let mut others = self.others.write().unwrap_or_else(PoisonError::into_inner);
        // Two visitors may have raced here: keep the first manager, so one host has one.
        Ok(others.entry(host.key()).or_insert(manager).clone())
    }

    /// The manager a stored tenant refreshes with, made on first use (after a restart, say).
    /// Only for a tenant the store holds: a key made up in a URL gets no manager.
    async fn for_key(&self, key: &TokenKey) -> Result<TokenManager, Refusal> {
        let not_found = || Refusal::new(StatusCode::NOT_FOUND, "There is no such connection.");
        match self.main.store().get(key).await {
            Ok(Some(_)) => {}
            Ok(None) => return Err(not_found()),
            Err(error) => {
                tracing::error!(error = %error, "cannot read a connection");
                return Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The token store cannot be read right now (see the server's log).",
                ));
            }
        }
        let host: LoginHost = key.login_host().parse().map_err(|_| not_found())?;
        self.get_or_build(&host).await
    }
}

/// `GET /`: the connect form and the connected orgs.
async fn home(State(state): State<Arc<AppState>>) -> Response {
    let main = &state.managers.main;
    let query = ListQuery::new()
        .client_id(main.client().app().client_id())
        .limit(ListQuery::MAX_LIMIT);
    let records = match main.store().list_all(&query).await {
        Ok(records) => records,
        Err(error) => {
            tracing::error!(error = %error, "cannot list the connected orgs");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Connected orgs",
                "<p>The token store cannot be read right now (see the server's log).</p>",
            );
        }
    };
    let mut body = connect_form(state.offer_salesforce_hosts, main.client().host());
    body.push_str("<h2>Connected orgs</h2>");
    if records.is_empty() {
        body.push_str("<p id=\"no-orgs\">No org is connected yet.</p>");
    } else {
        body.push_str(
            "<table><thead><tr><th>Org</th><th>User</th><th>Login host</th><th>Instance</th>\
             <th>Status</th><th>Last refresh</th><th></th></tr></thead><tbody>",
        );
        for record in &records {
            if record.status.kind() == StatusKind::ReauthRequired {
                // Its "Reconnect" goes straight to the login router, which finds the tenant's
                // manager synchronously: make sure it exists (after a restart it may not yet).
                let _ = state.managers.for_key(&record.key).await;
            }
            body.push_str(&org_row(record));
        }
        body.push_str("</tbody></table>");
    }
    page(StatusCode::OK, "Connect your Salesforce org", &body)
}

/// The "Connect your Salesforce org" form: the login hosts on offer, then the button.
fn connect_form(offer_salesforce_hosts: bool, main_host: &LoginHost) -> String {
    let choices = if offer_salesforce_hosts {
        "<p><label><input type=\"radio\" name=\"host\" value=\"production\" checked> Production \
         (login.salesforce.com)</label></p>\
         <p><label><input type=\"radio\" name=\"host\" value=\"sandbox\"> Sandbox \
         (test.salesforce.com)</label></p>\
         <p><label><input type=\"radio\" name=\"host\" value=\"my_domain\"> My Domain: \
         <input name=\"my_domain\" placeholder=\"acme or acme--dev.sandbox\"></label>\
         <small>.my.salesforce.com</small></p>"
            .to_owned()
    } else {
        format!(
            "<p>Logins go to the Salesforce emulator at <code>{}</code>. Give a connected app \
             (<code>--client-id</code>) to offer production, sandbox and My Domain.</p>",
            escape(&main_host.key())
        )
    };
    format!(
        "<form action=\"/connect\" method=\"get\">{choices}\
         <button type=\"submit\" id=\"connect\">Connect your Salesforce org</button></form>"
    )
}

/// One connected org: who, where, and whether it works or needs a new login.
fn org_row(record: &TokenRecord) -> String {
    let key = &record.key;
    let tenant = key.to_string();
    let status = match &record.status {
        RecordStatus::Active => "<span class=\"ok\">ok</span>".to_owned(),
        RecordStatus::ReauthRequired { reason, .. } => format!(
            "<span class=\"reauth\">needs re-authorization</span> <small>({})</small> {}",
            escape(reason),
            reconnect_button(&tenant)
        ),
    };
    let last_refresh = record
        .last_refreshed_at
        .map_or_else(|| "never".to_owned(), ago);
    format!(
        "<tr class=\"org\"><td>{org}{label}</td><td>{user}</td><td>{host}</td><td>{instance}</td>\
         <td class=\"status\">{status}</td><td>{last_refresh}</td>\
         <td><a class=\"accounts\" href=\"/accounts?{query}\">Accounts</a></td></tr>",
        org = escape(key.org_id().as_str()),
        label = match key.label() {
            "default" => String::new(),
            label => format!(" <small>({})</small>", escape(label)),
        },
        user = escape(key.user_id().as_str()),
        host = escape(key.login_host()),
        instance = escape(record.tokens.instance_url.as_str()),
        query = escape(&encode(&[("tenant", &tenant)])),
    )
}

/// A "Reconnect" button: the login router's `?reconnect=` replaces this tenant's tokens.
fn reconnect_button(tenant: &str) -> String {
    format!(
        "<form class=\"inline\" action=\"{LOGIN_PREFIX}/login\" method=\"get\">\
         <input type=\"hidden\" name=\"reconnect\" value=\"{}\">\
         <button type=\"submit\" class=\"reconnect\">Reconnect</button></form>",
        escape(tenant)
    )
}

/// How long ago `at` was, in words.
fn ago(at: SystemTime) -> String {
    let seconds = SystemTime::now()
        .duration_since(at)
        .map_or(0, |elapsed| elapsed.as_secs());
    match seconds {
        0..60 => format!("{seconds} s ago"),
        60..3600 => format!("{} min ago", seconds / 60),
        _ => format!("{} h ago", seconds / 3600),
    }
}

#[derive(Deserialize)]
struct ConnectForm {
    host: Option<String>,
    my_domain: Option<String>,
}

/// `GET /connect`: the chosen host gets a manager, then the login router takes over.
async fn connect(State(state): State<Arc<AppState>>, Query(form): Query<ConnectForm>) -> Response {
    let login = format!("{LOGIN_PREFIX}/login");
    if !state.offer_salesforce_hosts {
        return see_other(&login);
    }
    let (host, query) = match form.host.as_deref() {
        Some("sandbox") => (LoginHost::Sandbox, encode(&[("host", "sandbox")])),
        Some("my_domain") => {
            let name = form
                .my_domain
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            let Some(host) = my_domain(&name) else {
                return page(
                    StatusCode::BAD_REQUEST,
                    "Not a My Domain name",
                    "<p>A My Domain name is letters, digits and hyphens, such as \
                     <code>acme</code> or <code>acme--dev.sandbox</code>.</p>",
                );
            };
            (host, encode(&[("my_domain", &name)]))
        }
        _ => (LoginHost::Production, encode(&[("host", "production")])),
    };
    match state.managers.get_or_build(&host).await {
        Ok(_) => see_other(&format!("{login}?{query}")),
        Err(refusal) => refusal_page("Cannot connect", &refusal),
    }
}

/// The My Domain login host of `name` (`acme`, `acme--dev.sandbox`): the login router's rule,
/// checked here too so that no manager is made for a name the router would refuse.
fn my_domain(name: &str) -> Option<LoginHost> {
    let (label, sandbox) = match name.strip_suffix(".sandbox") {
        Some(label) => (label, ".sandbox"),
        None => (name, ""),
    };
    let valid = !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let url = format!("https://{label}{sandbox}.my.salesforce.com");
    valid.then(|| LoginHost::my_domain(&url).ok()).flatten()
}

#[derive(Deserialize)]
struct AccountsQuery {
    tenant: String,
}

#[derive(Deserialize)]
struct QueryResult {
    records: Vec<Account>,
}

#[derive(Deserialize)]
struct Account {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Name")]
    name: String,
}

/// `GET /accounts?tenant=KEY`: the org's Accounts through the middleware.
async fn accounts(
    State(state): State<Arc<AppState>>,
    Query(query): Query<AccountsQuery>,
) -> Response {
    let not_found = || {
        page(
            StatusCode::NOT_FOUND,
            "No such org",
            "<p>There is no such connection. <a href=\"/\">Back to the orgs</a>.</p>",
        )
    };
    let Ok(key) = query.tenant.parse::<TokenKey>() else {
        return not_found();
    };
    let manager = match state.managers.for_key(&key).await {
        Ok(manager) => manager,
        Err(refusal) => return refusal_page("Accounts", &refusal),
    };
    let client = reqwest_middleware::ClientBuilder::new(state.http.clone())
        .with(SalesforceAuth::new(manager, key.clone()))
        .build();
    // `instance(..)` is a placeholder the middleware aims at the tenant's instance_url.
    let path = format!("/services/data/v62.0/query?{}", encode(&[("q", ACCOUNTS)]));
    let answer = match client.get(instance(&path)).send().await {
        Ok(answer) => answer,
        Err(error) => {
            return match adapter_error(&error).map(|error| (error.kind(), error.token_kind())) {
                Some((ErrorKind::ReauthorizationRequired, _)) => page(
                    StatusCode::OK,
                    "Accounts",
                    &format!(
                        "<p id=\"needs-reauth\">This org needs re-authorization: its \
                         connection was revoked or has expired. Log in again to reconnect it.</p>\
                         <p>{}</p><p><a href=\"/\">Back to the orgs</a></p>",
                        reconnect_button(&key.to_string())
                    ),
                ),
                Some((_, Some(sfauth::ErrorKind::UnknownTenant))) => not_found(),
                _ => {
                    // Neither the adapter's errors nor reqwest's (their URL is our query) hold
                    // a token; the page still says less than the log.
                    tracing::warn!(error = %error, "accounts query failed");
                    page(
                        StatusCode::BAD_GATEWAY,
                        "Accounts",
                        "<p>Salesforce could not be reached (see the server's log). \
                         <a href=\"\">Try again</a>.</p>",
                    )
                }
            };
        }
    };
    let status = answer.status();
    let parsed = match answer.bytes().await {
        Ok(body) if status.is_success() => serde_json::from_slice::<QueryResult>(&body).ok(),
        _ => None,
    };
    let Some(result) = parsed else {
        tracing::warn!(%status, "accounts query refused");
        return page(
            StatusCode::BAD_GATEWAY,
            "Accounts",
            &format!(
                "<p>Salesforce answered {} to the query.</p>",
                escape(&status.to_string())
            ),
        );
    };
    let mut body = format!(
        "<p>{} for org <code>{}</code>:</p><table id=\"accounts\"><thead><tr><th>Id</th>\
         <th>Name</th></tr></thead><tbody>",
        escape(ACCOUNTS),
        escape(key.org_id().as_str())
    );
    for account in &result.records {
        let _ = write!(
            body,
            "<tr class=\"account\"><td><code>{}</code></td><td class=\"name\">{}</td></tr>",
            escape(&account.id),
            escape(&account.name)
        );
    }
    body.push_str("</tbody></table><p><a href=\"/\">Back to the orgs</a></p>");
    page(StatusCode::OK, "Accounts", &body)
}

/// `pairs` as a query string, each value percent-encoded.
fn encode(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// A 303 to `location` (one of our own paths).
fn see_other(location: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

fn refusal_page(title: &str, refusal: &Refusal) -> Response {
    page(
        refusal.status(),
        title,
        &format!("<p>{}</p>", escape(refusal.message())),
    )
}

/// A page around `body`, which the caller has already escaped; `title` is escaped here.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let title = escape(title);
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title><style>\
         body{{font-family:system-ui,sans-serif;max-width:64rem;margin:2rem auto;padding:0 1rem}}\
         table{{border-collapse:collapse}}td,th{{padding:.3rem .6rem;border-bottom:1px solid #ddd;\
         text-align:left}}.ok{{color:#080}}.reauth{{color:#b00}}form.inline{{display:inline}}\
         </style></head><body><h1>{title}</h1>{body}</body></html>"
    );
    // Pages name tenants and orgs: keep them out of caches and other sites' referrers.
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(html),
    )
        .into_response()
}

/// `text` with the five HTML-special characters escaped.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            _ => escaped.push(c),
        }
    }
    escaped
}
