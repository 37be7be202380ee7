//! Where a flow sends its requests: the login host and the endpoint URLs derived from it.
//!
//! Salesforce serves the same paths (`/services/oauth2/token`, `/services/oauth2/authorize`, …)
//! on several host forms: the production and sandbox login pools, an org's My Domain, and an
//! Experience Cloud site, which may carry a path prefix. [`LoginHost`] names one of them, or
//! carries fully custom [`Endpoints`] for proxies and generic OAuth servers.
//!
//! ```
//! use sfauth_core::LoginHost;
//!
//! let site: LoginHost = "https://acme.my.site.com/customers".parse()?;
//! assert_eq!(
//!     site.endpoints().token.as_str(),
//!     "https://acme.my.site.com/customers/services/oauth2/token"
//! );
//! assert_eq!(LoginHost::Sandbox.jwt_audience(), "https://test.salesforce.com");
//! # Ok::<(), sfauth_core::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use url::{Host, Url};

use crate::invalid::InvalidValue;

/// The production and Developer Edition login pool.
pub const PRODUCTION_URL: &str = "https://login.salesforce.com";
/// The sandbox login pool.
pub const SANDBOX_URL: &str = "https://test.salesforce.com";

/// The host a flow authenticates against.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "url", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LoginHost {
    /// `https://login.salesforce.com`; the default.
    #[default]
    Production,
    /// `https://test.salesforce.com`, for every sandbox.
    Sandbox,
    /// An org's My Domain, such as `https://acme.my.salesforce.com` or
    /// `https://acme--dev.sandbox.my.salesforce.com`. Required by the client credentials flow.
    MyDomain(Url),
    /// An Experience Cloud site, possibly with a path prefix, such as
    /// `https://acme.my.site.com/customers`.
    Site(Url),
    /// Endpoints set one by one, for proxies and generic OAuth servers.
    Custom(Box<Endpoints>),
}

impl LoginHost {
    /// A My Domain host; `url` must be `https` (or `http` on loopback, for tests) with no query.
    pub fn my_domain(url: &str) -> Result<Self, InvalidValue> {
        Ok(Self::MyDomain(base_url(url)?))
    }

    /// An Experience Cloud site; its path, if any, is kept as the prefix of every endpoint.
    pub fn site(url: &str) -> Result<Self, InvalidValue> {
        Ok(Self::Site(base_url(url)?))
    }

    /// The base URL every standard endpoint path is appended to.
    pub fn base_url(&self) -> Url {
        match self {
            Self::Production => fixed(PRODUCTION_URL),
            Self::Sandbox => fixed(SANDBOX_URL),
            Self::MyDomain(url) | Self::Site(url) => url.clone(),
            Self::Custom(endpoints) => endpoints.base.clone(),
        }
    }

    /// Every endpoint URL for this host.
    pub fn endpoints(&self) -> Endpoints {
        match self {
            Self::Custom(endpoints) => (**endpoints).clone(),
            _ => Endpoints::from_base(&self.base_url()),
        }
    }

    /// The `aud` claim of a JWT bearer assertion for this host.
    ///
    /// Salesforce wants the login pool, not the host the assertion is posted to: production and
    /// production My Domains use `https://login.salesforce.com`; sandboxes (including
    /// `*.sandbox.my.salesforce.com` My Domains) use `https://test.salesforce.com`; an Experience
    /// Cloud site uses its own URL; custom endpoints use their base URL. Override it with
    /// [`JwtBearer::audience`](crate::flows::JwtBearer::audience) when this guess is wrong (for
    /// example GovCloud).
    pub fn jwt_audience(&self) -> String {
        match self {
            Self::Production => PRODUCTION_URL.to_owned(),
            Self::Sandbox => SANDBOX_URL.to_owned(),
            Self::MyDomain(url) => {
                let host = url.host_str().unwrap_or_default();
                if host.ends_with(".sandbox.my.salesforce.com") {
                    SANDBOX_URL.to_owned()
                } else {
                    PRODUCTION_URL.to_owned()
                }
            }
            Self::Site(url) => url.as_str().trim_end_matches('/').to_owned(),
            Self::Custom(endpoints) => endpoints.base.as_str().trim_end_matches('/').to_owned(),
        }
    }

    /// Whether this is one of the shared login pools, where the client credentials flow is
    /// refused (`request not supported on this domain`).
    pub fn is_login_pool(&self) -> bool {
        matches!(self, Self::Production | Self::Sandbox)
    }

    /// A stable string naming the host, used in [`TokenKey`](crate::TokenKey): the base URL
    /// without a trailing slash.
    pub fn key(&self) -> String {
        self.base_url().as_str().trim_end_matches('/').to_owned()
    }
}

impl fmt::Display for LoginHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

impl FromStr for LoginHost {
    type Err = InvalidValue;

    /// Parses `production`/`login`, `sandbox`/`test`, or a URL: the two login pool URLs map to
    /// their variants, `*.my.salesforce.com` to [`LoginHost::MyDomain`], anything else to
    /// [`LoginHost::Site`]. A My Domain on a custom domain cannot be told from a site by its
    /// name: build it with [`LoginHost::my_domain`].
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        match s.trim() {
            "production" | "login" => return Ok(Self::Production),
            "sandbox" | "test" => return Ok(Self::Sandbox),
            _ => {}
        }
        let url = base_url(s.trim())?;
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let bare = url.path() == "/";
        Ok(match host.as_str() {
            "login.salesforce.com" if bare => Self::Production,
            "test.salesforce.com" if bare => Self::Sandbox,
            _ if bare && host.ends_with(".my.salesforce.com") => Self::MyDomain(url),
            _ => Self::Site(url),
        })
    }
}

/// Every endpoint a flow may call. Built from a base URL, then overridable one by one.
///
/// ```
/// use sfauth_core::{Endpoints, LoginHost};
/// use url::Url;
///
/// let endpoints = Endpoints::from_base(&Url::parse("https://auth.example.com/")?)
///     .with_token(Url::parse("https://proxy.example.com/token")?);
/// let host = LoginHost::Custom(Box::new(endpoints));
/// assert_eq!(host.endpoints().token.as_str(), "https://proxy.example.com/token");
/// assert_eq!(
///     host.endpoints().revoke.as_str(),
///     "https://auth.example.com/services/oauth2/revoke"
/// );
/// # Ok::<(), url::ParseError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Endpoints {
    /// The base URL the others were derived from; also the JWT audience of a custom host.
    pub base: Url,
    /// `/services/oauth2/token`: every grant, both device-flow steps.
    pub token: Url,
    /// `/services/oauth2/authorize`.
    pub authorize: Url,
    /// `/services/oauth2/revoke`.
    pub revoke: Url,
    /// `/services/oauth2/introspect`.
    pub introspect: Url,
    /// `/services/oauth2/userinfo`.
    pub userinfo: Url,
    /// `/id/keys`: the JWKS that signs ID tokens.
    pub jwks: Url,
}

impl Endpoints {
    /// The standard Salesforce paths under `base` (whose path, if any, is kept as a prefix).
    pub fn from_base(base: &Url) -> Self {
        let join = |path: &str| {
            let mut url = base.clone();
            let prefix = base.path().trim_end_matches('/');
            url.set_path(&format!("{prefix}{path}"));
            url.set_query(None);
            url.set_fragment(None);
            url
        };
        Self {
            base: base.clone(),
            token: join("/services/oauth2/token"),
            authorize: join("/services/oauth2/authorize"),
            revoke: join("/services/oauth2/revoke"),
            introspect: join("/services/oauth2/introspect"),
            userinfo: join("/services/oauth2/userinfo"),
            jwks: join("/id/keys"),
        }
    }

    /// Replaces the token endpoint.
    #[must_use]
    pub fn with_token(mut self, url: Url) -> Self {
        self.token = url;
        self
    }

    /// Replaces the authorization endpoint.
    #[must_use]
    pub fn with_authorize(mut self, url: Url) -> Self {
        self.authorize = url;
        self
    }

    /// Replaces the revocation endpoint.
    #[must_use]
    pub fn with_revoke(mut self, url: Url) -> Self {
        self.revoke = url;
        self
    }

    /// Replaces the introspection endpoint.
    #[must_use]
    pub fn with_introspect(mut self, url: Url) -> Self {
        self.introspect = url;
        self
    }

    /// Replaces the userinfo endpoint.
    #[must_use]
    pub fn with_userinfo(mut self, url: Url) -> Self {
        self.userinfo = url;
        self
    }

    /// Replaces the JWKS endpoint.
    #[must_use]
    pub fn with_jwks(mut self, url: Url) -> Self {
        self.jwks = url;
        self
    }
}

#[allow(
    clippy::expect_used,
    reason = "only called with the two login pool constants, which parse"
)]
fn fixed(url: &'static str) -> Url {
    Url::parse(url).expect("login pool constant is a valid url")
}

/// Whether `url` points at this machine, the one place plain `http` is allowed.
///
/// Login hosts and the reqwest transport both ask this, so a URL accepted as a login host is
/// never refused on the wire, nor the other way round. The rule admits only what cannot leave
/// the machine without a resolver's say-so: a loopback IP literal (any of `127.0.0.0/8`, or
/// `[::1]`) and the name `localhost`, which every hosts file maps to loopback. Subdomains of
/// `.localhost` are refused: RFC 6761 asks resolvers to keep them local, but a plain glibc setup
/// forwards them to DNS, where any answer may come back. An IPv4-mapped address such as
/// `[::ffff:127.0.0.1]` is refused too; nothing needs it, and refusing is the safe side.
///
/// ```
/// use sfauth_core::host::is_loopback;
/// use url::Url;
///
/// let local = |s: &str| is_loopback(&Url::parse(s).unwrap());
/// assert!(local("http://127.0.0.1:8080/x"));
/// assert!(local("http://[::1]/"));
/// assert!(local("http://localhost:1717/OauthRedirect"));
/// assert!(!local("http://app.localhost/"));
/// assert!(!local("http://localhost.evil.com/"));
/// ```
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        // `Url` lower-cases the domains of special schemes; other schemes keep their case.
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Parses a host base URL: absolute, `https` (or `http` on loopback), no query or fragment.
pub(crate) fn base_url(s: &str) -> Result<Url, InvalidValue> {
    let url =
        Url::parse(s).map_err(|e| InvalidValue::new(format!("invalid login host url: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        other => {
            return Err(InvalidValue::new(format!(
                "login host must use https, not {other}"
            )));
        }
    }
    if url.host_str().is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err(InvalidValue::new(
            "login host url must be a bare origin or path",
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_forms() {
        for (input, expected_key, expected_aud) in [
            ("production", "https://login.salesforce.com", PRODUCTION_URL),
            (
                "https://test.salesforce.com/",
                "https://test.salesforce.com",
                SANDBOX_URL,
            ),
            (
                "https://acme.my.salesforce.com",
                "https://acme.my.salesforce.com",
                PRODUCTION_URL,
            ),
            (
                "https://acme--dev.sandbox.my.salesforce.com",
                "https://acme--dev.sandbox.my.salesforce.com",
                SANDBOX_URL,
            ),
            (
                "https://acme.my.site.com/customers",
                "https://acme.my.site.com/customers",
                "https://acme.my.site.com/customers",
            ),
        ] {
            let host: LoginHost = input.parse().unwrap();
            assert_eq!(host.key(), expected_key, "{input}");
            assert_eq!(host.jwt_audience(), expected_aud, "{input}");
        }
        assert!(
            "http://acme.my.salesforce.com"
                .parse::<LoginHost>()
                .is_err()
        );
        assert!("http://127.0.0.1:8080".parse::<LoginHost>().is_ok());
        assert!("https://x.test/?a=b".parse::<LoginHost>().is_err());
    }

    /// The one loopback rule, as login hosts and the transport both apply it.
    #[test]
    fn loopback_rule() {
        for url in [
            "http://127.0.0.1/",
            "http://127.0.0.1:8080/x",
            "http://127.8.9.1/",
            "http://[::1]:1717/",
            "http://localhost/",
            "http://LOCALHOST:1717/OauthRedirect",
            "https://localhost/",
            "custom://localhost/",
            "custom://LocalHost/",
        ] {
            assert!(is_loopback(&Url::parse(url).unwrap()), "{url}");
        }
        for url in [
            "http://10.0.0.1/",
            "http://0.0.0.0/",
            "http://[::]/",
            "http://[::2]/",
            "http://[::ffff:127.0.0.1]/",
            "http://login.salesforce.com/",
            "http://localhost.evil.com/",
            "http://app.localhost/",
            "http://localhost./",
            "http://127.0.0.1.nip.io/",
            "file:///etc/passwd",
            "mailto:a@localhost",
        ] {
            assert!(!is_loopback(&Url::parse(url).unwrap()), "{url}");
        }
    }

    /// A login host may be plain `http` exactly when it is loopback by [`is_loopback`].
    #[test]
    fn plain_http_login_hosts_follow_the_loopback_rule() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.8.9.1",
            "http://[::1]:8080",
            "http://localhost:8080",
        ] {
            assert!(url.parse::<LoginHost>().is_ok(), "{url}");
        }
        for url in [
            "http://app.localhost",
            "http://localhost.evil.com",
            "http://10.0.0.1",
        ] {
            assert!(url.parse::<LoginHost>().is_err(), "{url}");
        }
    }

    #[test]
    fn site_prefix_is_kept() {
        let host = LoginHost::site("https://acme.force.com/customers/").unwrap();
        let endpoints = host.endpoints();
        assert_eq!(
            endpoints.token.as_str(),
            "https://acme.force.com/customers/services/oauth2/token"
        );
        assert_eq!(
            endpoints.jwks.as_str(),
            "https://acme.force.com/customers/id/keys"
        );
        assert_eq!(host.jwt_audience(), "https://acme.force.com/customers");
    }

    #[test]
    fn host_round_trips_through_serde() {
        for host in [
            LoginHost::Production,
            LoginHost::my_domain("https://a.my.salesforce.com").unwrap(),
        ] {
            let json = serde_json::to_string(&host).unwrap();
            assert_eq!(serde_json::from_str::<LoginHost>(&json).unwrap(), host);
        }
    }
}
