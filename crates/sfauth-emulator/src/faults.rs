//! Fault injection: make an endpoint slow, fail, rate-limit, reset or answer garbage.

use std::time::Duration;

use rand::Rng;

/// An endpoint (family of paths) a fault or counter applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `/services/oauth2/token`.
    Token,
    /// `/services/oauth2/authorize`.
    Authorize,
    /// `/services/oauth2/revoke`.
    Revoke,
    /// `/services/oauth2/introspect`.
    Introspect,
    /// `/services/oauth2/userinfo`.
    UserInfo,
    /// `/id/{org}/{user}`.
    Identity,
    /// `/services/data/...`.
    Rest,
    /// `/.well-known/openid-configuration`.
    Discovery,
    /// `/id/keys`.
    Keys,
    /// Every endpoint above.
    Any,
}

impl Endpoint {
    /// The name used in [`Counters::requests`](crate::Counters::requests).
    pub fn name(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Authorize => "authorize",
            Self::Revoke => "revoke",
            Self::Introspect => "introspect",
            Self::UserInfo => "userinfo",
            Self::Identity => "identity",
            Self::Rest => "rest",
            Self::Discovery => "discovery",
            Self::Keys => "keys",
            Self::Any => "any",
        }
    }

    /// Parses [`Endpoint::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::Token,
            Self::Authorize,
            Self::Revoke,
            Self::Introspect,
            Self::UserInfo,
            Self::Identity,
            Self::Rest,
            Self::Discovery,
            Self::Keys,
            Self::Any,
        ]
        .into_iter()
        .find(|e| e.name() == name)
    }

    /// Which endpoint serves `path` (after any site prefix was stripped).
    pub(crate) fn classify(path: &str) -> Option<Self> {
        Some(match path {
            "/services/oauth2/token" => Self::Token,
            "/services/oauth2/authorize" => Self::Authorize,
            "/services/oauth2/revoke" => Self::Revoke,
            "/services/oauth2/introspect" => Self::Introspect,
            "/services/oauth2/userinfo" => Self::UserInfo,
            "/.well-known/openid-configuration" => Self::Discovery,
            "/id/keys" | "/services/oauth2/id/keys" => Self::Keys,
            p if p.starts_with("/id/") => Self::Identity,
            p if p.starts_with("/services/data") => Self::Rest,
            _ => return None,
        })
    }
}

/// What an injected fault does.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultKind {
    /// Answer with this status and a short plain-text body (500, 502, 503, ...).
    Status(u16),
    /// Answer 429 with a `Retry-After` header of this many seconds.
    RateLimited {
        /// `Retry-After`, in seconds.
        retry_after_secs: u64,
    },
    /// Wait this long, then handle the request normally: the server is slow before it acts. The
    /// request is still handled if its client gives up during the wait (it reached the server).
    Latency(Duration),
    /// Handle the request normally, committing whatever it changes, then wait this long before
    /// answering: the answer is slow to come back. A client that gives up during the wait has
    /// lost an answer whose effect (a rotation, a revocation) already happened. Unlike
    /// [`AppPolicy::refresh_latency_ms`](crate::AppPolicy::refresh_latency_ms), the refresh
    /// token's concurrency lock is already released during the wait, so a retry with a
    /// rotated-out token meets reuse detection.
    LatencyAfterCommit(Duration),
    /// Start a 200 response and then drop the connection before the body completes.
    ConnectionReset,
    /// Answer 200 with a body that is not valid JSON.
    MalformedBody,
    /// Answer 503 with an HTML maintenance page, as a proxy in front of Salesforce would.
    HtmlErrorPage,
    /// Never answer (until the emulator shuts down).
    Hang,
    /// Answer an OAuth error body `{"error":..,"error_description":..}` with this status, e.g.
    /// `rate_limit_exceeded` / "Number of logins exceeded" or "IP restricted or invalid login
    /// hours" (any row of Salesforce's token-endpoint error table).
    OAuthError {
        /// HTTP status (Salesforce uses 400).
        status: u16,
        /// The `error` code.
        error: String,
        /// The `error_description`.
        description: String,
    },
    /// Answer exactly this response (e.g. a REST 401 with another message).
    Response {
        /// HTTP status.
        status: u16,
        /// `Content-Type` header.
        content_type: String,
        /// The body.
        body: String,
    },
}

/// A fault rule: what to do, on which endpoint, how often.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub(crate) endpoint: Endpoint,
    pub(crate) kind: FaultKind,
    pub(crate) remaining: Option<u32>,
    pub(crate) probability: f64,
}

impl Fault {
    /// A fault on `endpoint` that fires on every request until cleared.
    pub fn new(endpoint: Endpoint, kind: FaultKind) -> Self {
        Self {
            endpoint,
            kind,
            remaining: None,
            probability: 1.0,
        }
    }

    /// Fire only for the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.remaining = Some(n);
        self
    }

    /// Fire with this probability (0.0 to 1.0, a NaN counts as 0.0), drawn from the emulator's
    /// seeded generator.
    pub fn probability(mut self, p: f64) -> Self {
        // `clamp` passes NaN through, and drawing with it would panic at request time.
        self.probability = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        self
    }
}

/// Picks the fault to apply to a request on `endpoint`, consuming one use of it.
pub(crate) fn take(
    faults: &mut Vec<Fault>,
    endpoint: Endpoint,
    rng: &mut impl Rng,
) -> Option<FaultKind> {
    let index = faults
        .iter()
        .position(|f| f.endpoint == endpoint || f.endpoint == Endpoint::Any)?;
    let fault = faults.get_mut(index)?;
    let fire = fault.probability >= 1.0 || rng.random_bool(fault.probability);
    if !fire {
        return None;
    }
    let kind = fault.kind.clone();
    if let Some(n) = fault.remaining.as_mut() {
        *n = n.saturating_sub(1);
        if *n == 0 {
            faults.remove(index);
        }
    }
    Some(kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn times_limits_and_endpoint_matching() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut faults = vec![Fault::new(Endpoint::Token, FaultKind::Status(503)).times(2)];
        assert_eq!(take(&mut faults, Endpoint::Revoke, &mut rng), None);
        assert_eq!(
            take(&mut faults, Endpoint::Token, &mut rng),
            Some(FaultKind::Status(503))
        );
        assert_eq!(
            take(&mut faults, Endpoint::Token, &mut rng),
            Some(FaultKind::Status(503))
        );
        assert_eq!(take(&mut faults, Endpoint::Token, &mut rng), None);
    }

    #[test]
    fn out_of_range_probabilities_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for (p, fires) in [
            (f64::NAN, false),
            (f64::NEG_INFINITY, false),
            (-1.0, false),
            (f64::INFINITY, true),
            (2.0, true),
        ] {
            let mut faults =
                vec![Fault::new(Endpoint::Token, FaultKind::MalformedBody).probability(p)];
            assert_eq!(
                take(&mut faults, Endpoint::Token, &mut rng).is_some(),
                fires,
                "{p}"
            );
        }
    }

    #[test]
    fn probability_is_deterministic_under_a_seed() {
        let run = || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(9);
            let mut faults =
                vec![Fault::new(Endpoint::Any, FaultKind::MalformedBody).probability(0.5)];
            (0..32)
                .map(|_| take(&mut faults, Endpoint::Rest, &mut rng).is_some())
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        assert!(a.iter().any(|x| *x) && a.iter().any(|x| !*x));
    }

    #[test]
    fn classify_paths() {
        assert_eq!(
            Endpoint::classify("/services/oauth2/token"),
            Some(Endpoint::Token)
        );
        assert_eq!(Endpoint::classify("/id/keys"), Some(Endpoint::Keys));
        assert_eq!(Endpoint::classify("/id/00D/005"), Some(Endpoint::Identity));
        assert_eq!(
            Endpoint::classify("/services/data/v60.0/query"),
            Some(Endpoint::Rest)
        );
        assert_eq!(Endpoint::from_name("userinfo"), Some(Endpoint::UserInfo));
    }
}
