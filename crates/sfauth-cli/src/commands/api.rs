//! `sfauth api [ALIAS] METHOD PATH`: one authenticated REST request against the alias's
//! `instance_url`, refreshing once when Salesforce says the session is dead.
//!
//! Also the signed-in request both `api` and `open` make: [`Authed`] holds a login's manager
//! and a valid access token, and [`Authed::send`] sends a request built for the current
//! `instance_url`, and on a 401 `INVALID_SESSION_ID` refreshes (through the manager, so the
//! rotated refresh token is saved before use) and sends it again, once.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use sfauth::oauth::http::{HttpRequest, HttpResponse, HttpTransport, TransportErrorKind};
use sfauth::oauth::rest::{RestAuth, classify};

use crate::cli::ApiArgs;
use crate::error::{CliError, Exit, Result};
use crate::lazy_transport::LazyTransport;
use crate::session::{self, Context};
use crate::store::{Access, Resolved};

/// The largest request body read from a file or stdin: it is held in memory so that the
/// request can be sent again after a refresh (stdin cannot be read twice).
pub(crate) const MAX_REQUEST_BODY: u64 = 32 * 1024 * 1024;

/// The largest response body accepted: REST answers (a query page, a describe) can be far
/// larger than the token endpoint's.
const MAX_RESPONSE_BODY: usize = 64 * 1024 * 1024;

/// A login with its manager and a valid access token.
pub(crate) struct Authed {
    pub(crate) resolved: Resolved,
    pub(crate) manager: sfauth::TokenManager,
    pub(crate) guard: sfauth::AccessTokenGuard<'static>,
    transport: Arc<dyn HttpTransport>,
}

impl Authed {
    /// Resolves `alias` and gets a valid access token (refreshed first if the estimate says so).
    pub(crate) async fn open(alias: &str, ctx: &Context) -> Result<Self> {
        let store = ctx.open_store(Access::Read).await?;
        let resolved = store.resolve(alias).await?;
        let transport: Arc<dyn HttpTransport> =
            Arc::new(LazyTransport::new(MAX_RESPONSE_BODY, ctx.proxy.clone()));
        let manager = session::manager_for(&store, &resolved, &ctx.file, transport.clone()).await?;
        let guard = manager
            .access_token(&resolved.key)
            .await
            .map_err(|e| session::manager_error(&e, &resolved))?;
        Ok(Self {
            resolved,
            manager,
            guard,
            transport,
        })
    }

    /// The instance URL without its trailing slash, so that `{instance}{path}` has one slash.
    pub(crate) fn instance(&self) -> String {
        self.guard
            .instance_url()
            .as_str()
            .trim_end_matches('/')
            .to_owned()
    }

    /// Sends the request `build` makes from the instance URL and the `Authorization` value;
    /// on a dead session refreshes once and sends a new one. `what` names the request in
    /// errors (never with its query string, which may hold anything).
    pub(crate) async fn send(
        &mut self,
        what: &str,
        build: impl Fn(&str, &HeaderValue) -> Result<HttpRequest>,
    ) -> Result<HttpResponse> {
        let response = self.send_once(what, &build).await?;
        if classify(response.status().as_u16(), response.body()) != RestAuth::SessionExpired {
            return Ok(response);
        }
        let stale = self.guard.access_token().clone();
        self.guard = self
            .manager
            .session_expired(&self.resolved.key, &stale)
            .await
            .map_err(|e| session::manager_error(&e, &self.resolved))?;
        self.send_once(what, &build).await
    }

    async fn send_once(
        &self,
        what: &str,
        build: &impl Fn(&str, &HeaderValue) -> Result<HttpRequest>,
    ) -> Result<HttpResponse> {
        let request = build(&self.instance(), &self.guard.authorization())?;
        self.transport.send(request).await.map_err(|e| {
            let exit = match e.kind() {
                TransportErrorKind::Connect | TransportErrorKind::Timeout => Exit::Transient,
                TransportErrorKind::InsecureOrInvalidUrl => Exit::Usage,
                _ => Exit::Other,
            };
            CliError::new(
                exit,
                format!(
                    "{what} for alias {} failed ({}): check the network and the instance URL, then try again",
                    self.resolved.alias,
                    crate::error::chain(&e)
                ),
            )
        })
    }
}

/// `sfauth api`.
pub(crate) async fn run(args: &ApiArgs, ctx: &Context) -> Result<()> {
    let (alias, method, path) = match (args.words.as_slice(), &args.alias) {
        ([method, path], alias) => (ctx.alias(alias.as_deref()), method, path),
        ([alias, method, path], None) => (alias.clone(), method, path),
        ([_, _, _], Some(_)) => {
            return Err(CliError::usage(
                "the alias is given twice (as the first word and with --alias): give it once",
            ));
        }
        _ => {
            return Err(CliError::usage(
                "expected [ALIAS] METHOD PATH, such as `sfauth api prod GET /services/data`",
            ));
        }
    };
    let method = parse_method(method)?;
    let path = parse_path(path)?;
    let headers = args
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>>>()?;
    let body = match &args.body {
        None => None,
        Some(source) => Some(read_body(source)?),
    };
    let has_content_type = headers.iter().any(|(n, _)| n == http::header::CONTENT_TYPE);
    let has_accept = headers.iter().any(|(n, _)| n == http::header::ACCEPT);
    // The path without its query, for messages.
    let shown = format!("{method} {}", path.split('?').next().unwrap_or_default());

    let mut authed = Authed::open(&alias, ctx).await?;
    let response = authed
        .send(&shown, |instance, authorization| {
            let mut request = http::Request::builder()
                .method(method.clone())
                .uri(format!("{instance}{path}"))
                .header(http::header::AUTHORIZATION, authorization);
            if !has_accept {
                request = request.header(http::header::ACCEPT, "application/json");
            }
            if body.is_some() && !has_content_type {
                request = request.header(http::header::CONTENT_TYPE, "application/json");
            }
            for (name, value) in &headers {
                request = request.header(name, value);
            }
            request
                .body(body.clone().unwrap_or_default())
                .map_err(|e| CliError::usage(format!("{shown} is not a valid request ({e})")))
        })
        .await?;

    print_body(&response)?;
    status_result(response.status().as_u16(), &shown, &alias, response.body())
}

fn parse_method(method: &str) -> Result<Method> {
    let upper = method.to_ascii_uppercase();
    match upper.as_str() {
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" => {
            Method::from_bytes(upper.as_bytes()).map_err(|_| bad_method(method))
        }
        _ => Err(bad_method(method)),
    }
}

fn bad_method(method: &str) -> CliError {
    CliError::usage(format!(
        "{method} is not an HTTP method sfauth sends: use GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS"
    ))
}

/// A path on the instance: anything else (a full URL, `//host`) would send the access token to
/// another host.
fn parse_path(path: &str) -> Result<String> {
    if !path.starts_with('/') || path.starts_with("//") || path.contains('\\') {
        return Err(CliError::usage(format!(
            "{} is not a path on the instance: give one that starts with /, such as /services/data/v62.0/limits (the token is only ever sent to the alias's instance)",
            path.split('?').next().unwrap_or_default()
        )));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(CliError::usage(
            "the path contains spaces or control characters: percent-encode them (%20)",
        ));
    }
    Ok(path.to_owned())
}

fn parse_header(header: &str) -> Result<(HeaderName, HeaderValue)> {
    let Some((name, value)) = header.split_once(':') else {
        return Err(CliError::usage(format!(
            "--header {} is not NAME:VALUE",
            header.chars().take(40).collect::<String>()
        )));
    };
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
        CliError::usage(format!(
            "--header: {:?} is not a header name",
            name.chars().take(40).collect::<String>()
        ))
    })?;
    if name == http::header::AUTHORIZATION || name == http::header::HOST {
        return Err(CliError::usage(format!(
            "--header {name} is set by sfauth from the login: leave it out"
        )));
    }
    let value = HeaderValue::from_str(value.trim()).map_err(|_| {
        CliError::usage(format!(
            "--header {name}: the value has characters a header cannot carry"
        ))
    })?;
    Ok((name, value))
}

/// The body from `source` (`-`: stdin), whole and at most [`MAX_REQUEST_BODY`] bytes.
fn read_body(source: &str) -> Result<Bytes> {
    let mut bytes = Vec::new();
    let too_large = || {
        CliError::usage(format!(
            "the request body from {source} is larger than {} MiB: send a smaller one",
            MAX_REQUEST_BODY / (1024 * 1024)
        ))
    };
    let failed = |e: std::io::Error| {
        CliError::usage(format!("cannot read the request body from {source} ({e})"))
    };
    let limit = MAX_REQUEST_BODY.saturating_add(1);
    if source == "-" {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(failed)?;
    } else {
        let path = PathBuf::from(source);
        let file = std::fs::File::open(&path).map_err(failed)?;
        file.take(limit).read_to_end(&mut bytes).map_err(failed)?;
    }
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_REQUEST_BODY {
        return Err(too_large());
    }
    Ok(Bytes::from(bytes))
}

/// Prints the body: indented JSON on a terminal, the bytes as they came otherwise (a pipe
/// gets exactly what Salesforce sent).
fn print_body(response: &HttpResponse) -> Result<()> {
    let body = response.body();
    let mut stdout = std::io::stdout().lock();
    let written = if std::io::stdout().is_terminal() {
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(json) => {
                let text = serde_json::to_string_pretty(&json)
                    .map_err(|e| CliError::other(format!("cannot write JSON ({e})")))?;
                writeln!(stdout, "{text}")
            }
            Err(_) => stdout.write_all(body).and_then(|()| {
                if body.is_empty() || body.ends_with(b"\n") {
                    Ok(())
                } else {
                    writeln!(stdout)
                }
            }),
        }
    } else {
        stdout.write_all(body)
    };
    written
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::other(format!("cannot write the response ({e})")))
}

/// The exit code of a response status (the table in docs/cli.md): 2xx is 0; 401 (still,
/// after a refresh) 3; 408, 429 and 5xx 4; anything else 1.
fn status_result(status: u16, shown: &str, alias: &str, body: &[u8]) -> Result<()> {
    let code = salesforce_error_code(body)
        .map(|c| format!(" {c}"))
        .unwrap_or_default();
    match status {
        200..=299 => Ok(()),
        401 => Err(CliError::new(
            Exit::Reauth,
            format!(
                "{shown} answered 401{code} even after a refresh: run `sfauth login web --alias {alias}`"
            ),
        )),
        408 | 429 | 500..=599 => Err(CliError::new(
            Exit::Transient,
            format!("{shown} answered {status}{code}: try again later"),
        )),
        _ => Err(CliError::other(format!(
            "{shown} answered {status}{code}: see the response body on stdout"
        ))),
    }
}

/// The `errorCode` of a REST error body (`[{"errorCode": ..., "message": ...}]`), if short and
/// plain: it names the failure without quoting the message, which may echo the request.
fn salesforce_error_code(body: &[u8]) -> Option<String> {
    let errors: Vec<serde_json::Value> = serde_json::from_slice(body).ok()?;
    let code = errors.first()?.get("errorCode")?.as_str()?;
    (code.len() <= 64 && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then(|| code.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_on_the_instance() {
        for (path, ok) in [
            ("/services/data/v62.0/limits", true),
            ("/services/data/v62.0/query?q=SELECT+Id+FROM+Account", true),
            ("https://evil.test/x", false),
            ("//evil.test/x", false),
            ("services/data", false),
            ("/a b", false),
        ] {
            assert_eq!(parse_path(path).is_ok(), ok, "{path}");
        }
    }

    #[test]
    fn statuses_map_to_exit_codes() {
        let exit = |status| {
            status_result(status, "GET /x", "a", b"")
                .err()
                .map(|e| e.exit)
        };
        assert_eq!(exit(200), None);
        assert_eq!(exit(204), None);
        assert_eq!(exit(401), Some(Exit::Reauth));
        assert_eq!(exit(429), Some(Exit::Transient));
        assert_eq!(exit(503), Some(Exit::Transient));
        assert_eq!(exit(404), Some(Exit::Other));
        assert_eq!(exit(400), Some(Exit::Other));
        assert_eq!(exit(302), Some(Exit::Other));
    }

    #[test]
    fn headers_are_checked() {
        assert!(parse_header("X-Thing: 1").is_ok());
        assert!(parse_header("Sforce-Query-Options:batchSize=200").is_ok());
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("Authorization: Bearer x").is_err());
        assert!(parse_header("Bad Name: x").is_err());
    }
}
