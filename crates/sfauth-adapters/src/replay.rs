//! What the reqwest middleware and the tower layer share: which tenant a request is for, where
//! it goes (a path resolved against the tenant's `instance_url`, or a host the token must not
//! reach), whether a response is the 401 a refresh fixes, and the per-request span.
//!
//! Both adapters follow the same order, written once here as decisions and twice as plumbing
//! (their request and response types differ): take the tenant's token, aim the request at its
//! instance, send it; on a refreshable 401, and only when the body can be sent again, report the
//! dead token with `TokenManager::session_expired` and send the copy once more, re-aimed at the
//! (possibly migrated) instance. One refresh per request at most: the second answer is returned
//! whatever it is.

use http::StatusCode;
use sfauth::TokenKey;
use sfauth::oauth::rest::{self, RestAuth};
use url::Url;

use crate::error::Error;

/// The base of a URL that means "the tenant's instance": the adapters replace it with the
/// tenant's current `instance_url`.
///
/// reqwest (and so reqwest-middleware) parses a request's URL when the request is built, before
/// any middleware runs, and refuses a relative one; so a relative path is written on this
/// placeholder host instead. `.invalid` is reserved (RFC 2606): without the adapter in front, the
/// request fails to resolve rather than going anywhere. [`instance`] builds such a URL.
///
/// ```
/// assert_eq!(sfauth_adapters::INSTANCE, "https://sfauth.invalid");
/// ```
pub const INSTANCE: &str = "https://sfauth.invalid";

/// The host of [`INSTANCE`].
const PLACEHOLDER_HOST: &str = "sfauth.invalid";

/// `path` (with its query) on the tenant's instance: a URL on [`INSTANCE`] that the adapters
/// resolve against the tenant's current `instance_url` (keeping any path the `instance_url` has).
///
/// ```
/// use sfauth_adapters::instance;
///
/// assert_eq!(
///     instance("/services/data/v62.0/query?q=SELECT+Id+FROM+Account"),
///     "https://sfauth.invalid/services/data/v62.0/query?q=SELECT+Id+FROM+Account",
/// );
/// // A path without its leading slash means the same.
/// assert_eq!(instance("services/data/"), "https://sfauth.invalid/services/data/");
/// ```
pub fn instance(path: &str) -> String {
    if path.starts_with('/') {
        format!("{INSTANCE}{path}")
    } else {
        format!("{INSTANCE}/{path}")
    }
}

/// Where a request is aimed, relative to the tenant's instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Aim {
    /// A path for the instance: a relative URI, or one on [`INSTANCE`].
    Relative,
    /// An absolute URL on the tenant's instance itself (same scheme, host and port).
    Instance,
    /// Another host: sent untouched, without the token, and never retried.
    Elsewhere,
}

/// Where a request for `scheme://host:port` goes, for a tenant whose instance is `instance`. A
/// missing host is a relative URI (possible with `http::Uri`, not with `reqwest::Url`).
pub(crate) fn aim(scheme: &str, host: Option<&str>, port: Option<u16>, instance: &Url) -> Aim {
    let Some(host) = host else {
        return Aim::Relative;
    };
    if host.eq_ignore_ascii_case(PLACEHOLDER_HOST) {
        return Aim::Relative;
    }
    let default_port = |scheme: &str| match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    };
    let same = scheme.eq_ignore_ascii_case(instance.scheme())
        && instance
            .host_str()
            .is_some_and(|h| h.eq_ignore_ascii_case(host))
        && port.or_else(|| default_port(scheme)) == instance.port_or_known_default();
    if same { Aim::Instance } else { Aim::Elsewhere }
}

/// [`aim`] for a URL reqwest has parsed: the reqwest middleware's hot path. Also says whether
/// the URL has exactly the instance's origin bytes (user information included), which the
/// middleware needs to know too and should not find out with a second comparison.
#[cfg(any(test, feature = "reqwest"))]
pub(crate) fn aim_url(url: &Url, instance: &Url) -> (Aim, bool) {
    // A request written with the instance's own origin, as a caller that keeps the
    // `instance_url` builds it, is told by one comparison of a few bytes: the field by field
    // comparison below costs about 300 instructions a request (callgrind), a tenth of what the
    // middleware adds.
    let same = same_origin(url, instance);
    if same
        && instance
            .host_str()
            .is_some_and(|host| !host.eq_ignore_ascii_case(PLACEHOLDER_HOST))
    {
        return (Aim::Instance, true);
    }
    (
        aim(url.scheme(), url.host_str(), url.port(), instance),
        false,
    )
}

/// Whether `url` starts with the scheme, user information, host and port of `instance`. `Url`
/// keeps these normalized (scheme and domain lowercased, a scheme's default port left out), so
/// equal bytes are the same origin; unequal bytes may still be (user information aside, which
/// [`aim`] ignores), and are left to the caller's longer check.
#[cfg(any(test, feature = "reqwest"))]
pub(crate) fn same_origin(url: &Url, instance: &Url) -> bool {
    url[..url::Position::BeforePath] == instance[..url::Position::BeforePath]
}

/// The URL to send a request aimed `aim` with `path_and_query` to, on `instance`; `None` for
/// [`Aim::Elsewhere`]. A relative path keeps the instance's own path as a prefix (a site's
/// `/community`, say); an absolute URL on the instance keeps its path and changes only the
/// origin, which is what a migrated org needs.
#[cfg(any(test, feature = "tower"))]
pub(crate) fn target(aim: Aim, path_and_query: &str, instance: &Url) -> Option<String> {
    let base = match aim {
        Aim::Relative => instance[..url::Position::AfterPath].trim_end_matches('/'),
        Aim::Instance => &instance[..url::Position::BeforePath],
        Aim::Elsewhere => return None,
    };
    let slash = if path_and_query.starts_with('/') {
        ""
    } else {
        "/"
    };
    Some(format!("{base}{slash}{path_and_query}"))
}

/// [`target`] as a [`Url`], for a request already parsed into one (`path_and_query` is its path
/// and query, without the fragment): the reqwest middleware's hot path.
#[cfg(any(test, feature = "reqwest"))]
pub(crate) fn target_url(aim: Aim, path_and_query: &str, instance: &Url) -> Option<Url> {
    let prefix = match aim {
        Aim::Relative => instance.path().trim_end_matches('/'),
        Aim::Instance => "",
        Aim::Elsewhere => return None,
    };
    // One parse of the path and query as a reference on the instance, whose scheme and host are
    // copied and not parsed again, instead of a copy of the instance and three re-serializations
    // (path, query, fragment). A path starting with `//` would be read as a host, so it takes the
    // long way, which keeps it a path.
    if prefix.is_empty() && path_and_query.starts_with('/') && !path_and_query.starts_with("//") {
        return instance.join(path_and_query).ok();
    }
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    let mut target = instance.clone();
    if prefix.is_empty() {
        target.set_path(path);
    } else {
        target.set_path(&format!("{prefix}{path}"));
    }
    target.set_query(query);
    target.set_fragment(None);
    Some(target)
}

/// The largest 401 body read to tell a dead session from another refusal. Salesforce's is about
/// 80 bytes; a larger declared length cannot be it, and is returned unread.
pub(crate) const MAX_401_BODY: u64 = 64 * 1024;

/// Whether a response's body must be read to decide: only a 401 whose declared length (if any)
/// could be Salesforce's error array. The length is looked up only for a 401: finding and
/// parsing the header costs every other response about 150 instructions.
pub(crate) fn worth_reading(
    status: StatusCode,
    content_length: impl FnOnce() -> Option<u64>,
) -> bool {
    status == StatusCode::UNAUTHORIZED && content_length().is_none_or(|n| n <= MAX_401_BODY)
}

/// Whether a response is the 401 a refresh fixes: Salesforce's `INVALID_SESSION_ID` array, and
/// not one of the messages with that code that a new token does not fix (retrying those would
/// loop). Any other 401 (a proxy's, an empty body) and every 403 is returned as it is.
pub(crate) fn refreshable(status: StatusCode, body: &[u8]) -> bool {
    status == StatusCode::UNAUTHORIZED
        && rest::is_invalid_session_id(body)
        && rest::classify(status.as_u16(), body) == RestAuth::SessionExpired
}

/// The tenant a request is for: the one `named` in its extensions, else the adapter's own.
pub(crate) fn tenant<'a>(
    named: Option<&'a TokenKey>,
    fixed: Option<&'a TokenKey>,
) -> Result<&'a TokenKey, Error> {
    // Not `ok_or(Error::NoTenant)`, which makes the error and drops it on every request.
    match named.or(fixed) {
        Some(key) => Ok(key),
        None => Err(Error::NoTenant),
    }
}

/// The span a request runs in: the tenant's short key (label, org and user ids), the attempt and
/// whether a refresh happened. Never a token, a header or a query string.
///
/// No span at all when no subscriber takes `INFO` (none set, or one that filters it out). The
/// macro alone would still make a disabled span and, when some crate turns on tracing's `log`
/// feature (sqlx does), hand its fields to the `log` fallback and say goodbye to it on drop:
/// about 170 instructions a request, a tenth of what the middleware adds (callgrind). A program
/// that reads `log` records and sets no tracing subscriber goes without this span's lines.
pub(crate) fn span(key: &TokenKey) -> tracing::Span {
    if !tracing::level_enabled!(tracing::Level::INFO) {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "sfauth.request",
        tenant = %key.short(),
        attempt = 1u8,
        refreshed = false,
        status = tracing::field::Empty,
    )
}

/// Marks `span` as the retry after a refresh.
pub(crate) fn record_retry(span: &tracing::Span) {
    span.record("attempt", 2u8);
    span.record("refreshed", true);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn aims_and_targets() {
        let na = url("https://na1.my.salesforce.com");
        let site = url("https://acme.my.site.com/community/");
        // Scheme, host, port, instance, path and query; the URL to send to.
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Option<u16>,
            &'a Url,
            &'a str,
            Option<&'a str>,
        );
        let cases: &[Case<'_>] = &[
            (
                "https",
                Some("sfauth.invalid"),
                None,
                &na,
                "/services/data/v62.0/query?q=x",
                Some("https://na1.my.salesforce.com/services/data/v62.0/query?q=x"),
            ),
            (
                "http",
                None,
                None,
                &site,
                "/services/data/",
                Some("https://acme.my.site.com/community/services/data/"),
            ),
            (
                "https",
                Some("NA1.my.salesforce.com"),
                Some(443),
                &na,
                "/services/data/",
                Some("https://na1.my.salesforce.com/services/data/"),
            ),
            (
                "https",
                Some("na1.my.salesforce.com"),
                Some(8443),
                &na,
                "/x",
                None,
            ),
            ("http", Some("na1.my.salesforce.com"), None, &na, "/x", None),
            ("https", Some("example.com"), None, &na, "/x", None),
        ];
        for (scheme, host, port, instance, pq, expected) in cases {
            let aim = aim(scheme, *host, *port, instance);
            assert_eq!(
                target(aim, pq, instance).as_deref(),
                *expected,
                "{scheme} {host:?} {port:?}"
            );
            assert_eq!(
                target_url(aim, pq, instance).as_ref().map(Url::as_str),
                *expected,
                "{scheme} {host:?} {port:?}"
            );
        }
    }

    /// The request's own URL, parsed as reqwest parses it, sent to the instance: the path and
    /// query kept as they were (dot segments already resolved, no host read from the path),
    /// whichever way [`target_url`] takes.
    #[test]
    fn target_urls_keep_the_requests_path() {
        let na = url("https://na1.my.salesforce.com");
        let site = url("https://acme.my.site.com/community/");
        let cases = [
            (
                "https://sfauth.invalid/services/data/v62.0/query?q=SELECT+Id#top",
                &na,
                "https://na1.my.salesforce.com/services/data/v62.0/query?q=SELECT+Id",
            ),
            (
                "https://sfauth.invalid//evil.example/steal?x=1",
                &na,
                "https://na1.my.salesforce.com//evil.example/steal?x=1",
            ),
            (
                "https://sfauth.invalid//evil.example/steal",
                &site,
                "https://acme.my.site.com/community//evil.example/steal",
            ),
            (
                "https://sfauth.invalid/a/../services/%7Bx%7D?q=%20",
                &na,
                "https://na1.my.salesforce.com/services/%7Bx%7D?q=%20",
            ),
            (
                "https://sfauth.invalid/",
                &site,
                "https://acme.my.site.com/community/",
            ),
        ];
        for (request, instance, expected) in cases {
            let request = url(request);
            let aim = aim(
                request.scheme(),
                request.host_str(),
                request.port(),
                instance,
            );
            let path_and_query = &request[url::Position::BeforePath..url::Position::AfterQuery];
            let target = target_url(aim, path_and_query, instance).unwrap();
            assert_eq!(target.as_str(), expected, "{request}");
            assert_eq!(target.host_str(), instance.host_str(), "{request}");
        }
    }

    /// The short way of [`aim_url`] tells every URL as the field by field [`aim`] does.
    #[test]
    fn aim_url_is_aim() {
        let instances = [
            url("https://na1.my.salesforce.com"),
            url("https://acme.my.site.com/community/"),
            url("http://127.0.0.1:8080"),
            url("https://user@na1.my.salesforce.com"),
            url("https://sfauth.invalid"),
        ];
        let requests = [
            "https://na1.my.salesforce.com/services/data/",
            "https://NA1.My.Salesforce.com:443/services/data/?q=1",
            "https://user:pw@na1.my.salesforce.com/x",
            "https://user@na1.my.salesforce.com/x",
            "http://na1.my.salesforce.com/x",
            "https://na1.my.salesforce.com:8443/x",
            "https://acme.my.site.com/community/services/data/",
            "https://acme.my.site.com/other",
            "http://127.0.0.1:8080/services/data/v62.0/query?q=SELECT+Id",
            "http://127.0.0.1:8081/x",
            "http://127.0.0.1/x",
            "https://sfauth.invalid/services/data/",
            "https://example.com/x",
        ];
        for instance in &instances {
            for request in requests {
                let request = url(request);
                let (short, same) = aim_url(&request, instance);
                assert_eq!(
                    same,
                    same_origin(&request, instance) && short == Aim::Instance
                );
                assert_eq!(
                    short,
                    aim(
                        request.scheme(),
                        request.host_str(),
                        request.port(),
                        instance
                    ),
                    "{request} on {instance}"
                );
            }
        }
    }

    #[test]
    fn only_the_dead_session_401_is_refreshable() {
        let dead =
            br#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#;
        let not_rest = br#"[{"message":"This session is not valid for use with the REST API","errorCode":"INVALID_SESSION_ID"}]"#;
        assert!(refreshable(StatusCode::UNAUTHORIZED, dead));
        assert!(!refreshable(StatusCode::UNAUTHORIZED, not_rest));
        assert!(!refreshable(StatusCode::UNAUTHORIZED, b""));
        assert!(!refreshable(StatusCode::FORBIDDEN, dead));
        assert!(worth_reading(StatusCode::UNAUTHORIZED, || None));
        assert!(!worth_reading(StatusCode::UNAUTHORIZED, || Some(
            MAX_401_BODY + 1
        )));
        assert!(!worth_reading(StatusCode::OK, || unreachable!()));
    }
}
