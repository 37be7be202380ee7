//! [`Proxy`]: where a [`ReqwestTransport`](crate::ReqwestTransport)'s requests leave from.
//!
//! Salesforce can bind a refresh token to the addresses of an allowlist (mandatory for partner
//! apps since 2026, see `salesforce-oauth.md` §14.1): a fleet whose hosts have changing addresses
//! then refreshes through a proxy with a static one. The proxy is an HTTP or HTTPS proxy that
//! tunnels `https` requests with `CONNECT`, so it sees the host name and never the tokens.
//!
//! The default reads the environment as curl does, so a transport behaves like the other tools
//! on the same host: `https_proxy`/`HTTPS_PROXY` for `https` URLs, `http_proxy` (lower case only,
//! like curl: an `HTTP_PROXY` can be planted by a CGI request's `Proxy:` header) for `http`
//! ones, `all_proxy`/`ALL_PROXY` for either when the specific one is unset, and
//! `no_proxy`/`NO_PROXY` (comma-separated hosts, domains, IP ranges, or `*`) for what goes
//! direct. The variables are read once, when the transport is built.

use std::fmt;

use sfauth_core::http::{TransportError, TransportErrorKind};
use url::Url;

/// Where requests go out: through a proxy, or straight to the server.
///
/// A proxy URL may carry a user name and password (`http://user:pass@proxy:3128`); they are sent
/// as `Proxy-Authorization` to the proxy alone and never appear in `Debug` output or errors.
///
/// ```
/// use sfauth_transport::{Proxy, ReqwestTransport};
///
/// // Through a fixed egress proxy, except for one internal host:
/// let proxy = Proxy::url("http://user:secret@egress.internal:3128")?.no_proxy("metadata.internal");
/// assert!(!format!("{proxy:?}").contains("secret"));
/// let transport = ReqwestTransport::builder().proxy(proxy).build()?;
///
/// // Or ignore whatever the environment says:
/// let direct = ReqwestTransport::builder().proxy(Proxy::None).build()?;
/// # let _ = (transport, direct);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Proxy {
    /// The environment's proxy variables, as curl reads them (the default).
    #[default]
    Environment,
    /// No proxy, whatever the environment says.
    None,
    /// One proxy for every request, with an optional bypass list.
    Url {
        /// The proxy's URL (`http://` or `https://`).
        url: Url,
        /// Hosts that go direct, in `NO_PROXY` syntax.
        no_proxy: Option<String>,
    },
}

impl Proxy {
    /// One proxy for every request. `http://` and `https://` proxies are supported; anything
    /// else (a SOCKS proxy, a URL without a host) is refused here rather than at the first
    /// request.
    pub fn url(url: &str) -> Result<Self, TransportError> {
        let parsed = Url::parse(url).map_err(|_| invalid("proxy url does not parse"))?;
        check(&parsed)?;
        Ok(Self::Url {
            url: parsed,
            no_proxy: None,
        })
    }

    /// Hosts that bypass the proxy, in `NO_PROXY` syntax (`localhost,.internal,10.0.0.0/8`).
    /// Meaningful for [`Proxy::Url`]; the other variants are returned unchanged.
    #[must_use]
    pub fn no_proxy(self, hosts: impl Into<String>) -> Self {
        match self {
            Self::Url { url, .. } => Self::Url {
                url,
                no_proxy: Some(hosts.into()),
            },
            other => other,
        }
    }

    /// The proxies reqwest is given, with the environment read through `var`.
    pub(crate) fn resolve(
        &self,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<reqwest::Proxy>, TransportError> {
        match self {
            Self::None => Ok(Vec::new()),
            Self::Url { url, no_proxy } => Ok(vec![to_reqwest(
                reqwest::Proxy::all,
                url,
                no_proxy.as_deref(),
            )?]),
            Self::Environment => {
                let first = |names: &[&str]| {
                    names
                        .iter()
                        .find_map(|name| var(name).filter(|value| !value.trim().is_empty()))
                };
                let all = first(&["all_proxy", "ALL_PROXY"]);
                let https = first(&["https_proxy", "HTTPS_PROXY"]).or_else(|| all.clone());
                let http = first(&["http_proxy"]).or(all);
                let no_proxy = first(&["no_proxy", "NO_PROXY"]);
                let mut proxies = Vec::new();
                for (value, make) in [
                    (https, reqwest::Proxy::https as Maker),
                    (http, reqwest::Proxy::http as Maker),
                ] {
                    if let Some(value) = value {
                        proxies.push(to_reqwest(make, &env_url(&value)?, no_proxy.as_deref())?);
                    }
                }
                Ok(proxies)
            }
        }
    }
}

type Maker = fn(Url) -> reqwest::Result<reqwest::Proxy>;

/// A proxy variable's value as a URL; like curl, a bare `host:port` means `http://host:port`.
fn env_url(value: &str) -> Result<Url, TransportError> {
    let value = value.trim();
    let with_scheme = if value.contains("://") {
        value.to_owned()
    } else {
        format!("http://{value}")
    };
    let url = Url::parse(&with_scheme)
        .map_err(|_| invalid("a proxy variable of the environment does not parse as a url"))?;
    check(&url)?;
    Ok(url)
}

fn check(url: &Url) -> Result<(), TransportError> {
    match url.scheme() {
        "http" | "https" if url.has_host() => Ok(()),
        "http" | "https" => Err(invalid("proxy url has no host")),
        other => Err(invalid(format!(
            "unsupported proxy scheme {other}: use an http:// or https:// proxy"
        ))),
    }
}

fn to_reqwest(
    make: Maker,
    url: &Url,
    no_proxy: Option<&str>,
) -> Result<reqwest::Proxy, TransportError> {
    // The credentials go to reqwest separately, so that the URL it keeps (and could print)
    // holds none.
    let mut bare = url.clone();
    let user = percent_decoded(url.username());
    let password = url.password().map(percent_decoded);
    // Cannot fail: `check` made sure the URL has a host.
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    let mut proxy = make(bare).map_err(|_| invalid("proxy url is not usable"))?;
    if !user.is_empty() || password.is_some() {
        proxy = proxy.basic_auth(&user, password.as_deref().unwrap_or(""));
    }
    Ok(proxy.no_proxy(no_proxy.and_then(reqwest::NoProxy::from_string)))
}

fn percent_decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

fn invalid(message: impl Into<String>) -> TransportError {
    TransportError::new(TransportErrorKind::InsecureOrInvalidUrl, message)
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Environment => f.write_str("Proxy::Environment"),
            Self::None => f.write_str("Proxy::None"),
            Self::Url { url, no_proxy } => f
                .debug_struct("Proxy::Url")
                .field("url", &redacted(url))
                .field("no_proxy", no_proxy)
                .finish(),
        }
    }
}

/// The URL with any password replaced, for display.
fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn the_environment_is_read_as_curl_reads_it() {
        assert!(Proxy::Environment.resolve(env(&[])).unwrap().is_empty());
        // Upper-case HTTP_PROXY is ignored (httpoxy); the others are read in either case.
        assert!(
            Proxy::Environment
                .resolve(env(&[("HTTP_PROXY", "http://planted:1")]))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            Proxy::Environment
                .resolve(env(&[
                    ("HTTPS_PROXY", "egress:3128"),
                    ("http_proxy", "http://p:1")
                ]))
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            Proxy::Environment
                .resolve(env(&[("ALL_PROXY", "http://p:1"), ("https_proxy", " ")]))
                .unwrap()
                .len(),
            2,
            "all_proxy stands in for both when the specific ones are unset or blank"
        );
    }

    #[test]
    fn bad_proxies_are_typed_errors_that_quote_no_credentials() {
        for bad in [
            "socks5://user:hunter2@p:1080",
            "not a url hunter2",
            "http://user:hunter2@",
        ] {
            let error = Proxy::url(bad).unwrap_err();
            assert_eq!(
                error.kind(),
                TransportErrorKind::InsecureOrInvalidUrl,
                "{bad}"
            );
            assert!(
                !format!("{error} {error:?}").contains("hunter2"),
                "{error:?}"
            );
        }
        let error = Proxy::Environment
            .resolve(env(&[("https_proxy", "ftp://user:hunter2@p")]))
            .unwrap_err();
        assert!(!format!("{error} {error:?}").contains("hunter2"));
    }

    #[test]
    fn debug_hides_the_password() {
        let proxy = Proxy::url("http://user:hunter2@p:3128")
            .unwrap()
            .no_proxy("localhost");
        let shown = format!("{proxy:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("user:***@p:3128"), "{shown}");
    }

    #[test]
    fn credentials_are_percent_decoded() {
        assert_eq!(percent_decoded("a%40b%3Ac+d"), "a@b:c+d");
    }
}
