//! Request and token counters, read by tests through
//! [`Emulator::counters`](crate::Emulator::counters).

use std::collections::BTreeMap;

/// Request and token counters, for tests that assert "exactly one refresh".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Requests per endpoint name (`token`, `authorize`, `revoke`, `introspect`, `userinfo`,
    /// `identity`, `rest`, `discovery`, `keys`).
    pub requests: BTreeMap<String, u64>,
    /// Token-endpoint requests per grant (`authorization_code`, `refresh_token`, `password`,
    /// `client_credentials`, `jwt_bearer`, `device`, `device_code`, `token_exchange`,
    /// `saml_bearer`, or the unknown `grant_type` as sent).
    pub grants: BTreeMap<String, u64>,
    /// Access tokens issued.
    pub access_tokens_issued: u64,
    /// Refresh tokens issued (new approvals and rotations).
    pub refresh_tokens_issued: u64,
    /// Refresh tokens retired by rotation.
    pub refresh_tokens_rotated: u64,
    /// Refresh requests rejected (unknown, expired, revoked, reused, or locked).
    pub refresh_tokens_rejected: u64,
    /// Rotated-out refresh tokens presented again (each revoked its whole family). Also counted
    /// in `refresh_tokens_rejected`.
    pub refresh_tokens_reused: u64,
    /// Requests per endpoint name whose client was gone (timed out, disconnected) by the time
    /// the answer was ready. Each was still processed to its end, as Salesforce does; the answer
    /// went nowhere.
    pub answers_abandoned: BTreeMap<String, u64>,
    /// Rotations whose answer no client received (the client was gone when it was ready): the
    /// old refresh token is retired and the new one was never delivered. Also counted in
    /// `refresh_tokens_rotated`.
    pub refresh_tokens_rotated_unanswered: u64,
}

/// Adds one to a counter. Counters saturate rather than wrap (or panic): a test reading one
/// never sees it drop back to zero.
pub(crate) fn bump(counter: &mut u64) {
    *counter = counter.saturating_add(1);
}

impl Counters {
    /// Requests seen by `endpoint`.
    pub fn requests(&self, endpoint: &str) -> u64 {
        self.requests.get(endpoint).copied().unwrap_or(0)
    }

    /// Token requests seen for `grant`.
    pub fn grant(&self, grant: &str) -> u64 {
        self.grants.get(grant).copied().unwrap_or(0)
    }

    /// Answers of `endpoint` whose client was gone when they were ready.
    pub fn abandoned(&self, endpoint: &str) -> u64 {
        self.answers_abandoned.get(endpoint).copied().unwrap_or(0)
    }
}
