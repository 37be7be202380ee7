//! The emulator's in-memory state and the pure token logic: issue, refresh, revoke, policies.
//!
//! Nothing here does I/O; the HTTP layer holds a [`State`] behind a mutex and calls into it.
//! The state is one value; its methods are split by concern: the orgs, users and apps
//! (`directory.rs`), the scopes a request may be granted (`scopes.rs`), and the tokens with
//! their families and policies (`tokens.rs`). The records it holds are in `records.rs`, the
//! public counters in `counters.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};

use rand::rngs::StdRng;

use crate::faults::Fault;
use crate::model::Settings;

mod counters;
mod directory;
mod records;
mod scopes;
mod tokens;

pub use counters::Counters;
pub(crate) use counters::bump;
pub(crate) use records::{
    AccessToken, App, AuthCode, DeviceGrant, DeviceStatus, Family, Issued, Org, RefreshState,
    RefreshToken, User,
};
pub(crate) use scopes::KNOWN_SCOPES;
pub use tokens::RefreshTokenStatus;

/// The whole mutable state. Its `Debug` shows counts only: the maps are keyed by live tokens.
pub(crate) struct State {
    pub(crate) settings: Settings,
    pub(crate) orgs: Vec<Org>,
    pub(crate) users: Vec<User>,
    pub(crate) apps: Vec<App>,
    pub(crate) access: HashMap<String, AccessToken>,
    pub(crate) refresh: HashMap<String, RefreshToken>,
    pub(crate) families: BTreeMap<u64, Family>,
    next_family: u64,
    pub(crate) codes: HashMap<String, AuthCode>,
    pub(crate) devices: Vec<DeviceGrant>,
    /// Login tickets of the HTML flow: ticket → (user id, expiry).
    pub(crate) tickets: HashMap<String, (String, i64)>,
    /// Refresh tokens with a request in flight (the concurrency lock).
    pub(crate) in_flight: HashSet<String>,
    /// Granted logins per user id (times in ms, oldest first), for the login rate limit.
    pub(crate) logins: HashMap<String, std::collections::VecDeque<i64>>,
    /// One-time frontdoor passwords from `/services/oauth2/singleaccess`: otp → (access token,
    /// expiry in ms).
    pub(crate) frontdoor: HashMap<String, (String, i64)>,
    pub(crate) counters: Counters,
    pub(crate) faults: Vec<Fault>,
    pub(crate) rng: StdRng,
    /// The emulator's own URL, known once bound.
    pub(crate) base_url: String,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("orgs", &self.orgs.len())
            .field("users", &self.users.len())
            .field("apps", &self.apps.len())
            .field("access_tokens", &self.access.len())
            .field("refresh_tokens", &self.refresh.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}
