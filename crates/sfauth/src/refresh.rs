//! The refresh protocol: how one tenant's tokens are replaced without ever dropping or
//! re-spending a refresh token.
//!
//! 1. **Single flight in the process.** A per-tenant async mutex; a caller that waited on it and
//!    finds a new generation takes that result instead of refreshing again.
//! 2. **Single flight across processes.** The store's lease on the key. A caller that cannot get
//!    it watches the key ([`TokenStore::watch`]: Redis pub/sub, PostgreSQL `LISTEN/NOTIFY`,
//!    in-process channels) and adopts the winner's tokens when they land; stores without
//!    notifications (file, SQLite) are polled, soon at first, then less often.
//! 3. **Write-ahead mark.** Before a refresh token is sent, the record is marked "refresh in
//!    flight" (holder, fence, time) under the lease. The mark is cleared only when Salesforce's
//!    answer proves the token unspent or the new tokens are saved. A refresher that finds a mark
//!    knows a rotation may have been lost and makes one careful attempt: if Salesforce refuses the
//!    token, the tenant needs re-authorization, with that cause.
//! 4. **Save before use.** New tokens are written with compare-and-swap under the lease before
//!    they are installed in the cache. If the store fails, they stay in memory (never handed out)
//!    and are saved first on the next call.
//! 5. **Re-send only what is provably unspent, or when nothing is left to lose.** An answer in
//!    Salesforce's own words (an OAuth error document, whatever its status, 5xx included) proves
//!    the token unspent: it may be sent again. Anything else that may have reached Salesforce
//!    (a timeout, a broken connection, a 2xx we could not read, a bare 502/503/504 from a load
//!    balancer, proxy or API gateway, which may have forwarded the request and let Salesforce
//!    rotate) leaves the token *possibly spent*. Re-sending a rotated-out token makes Salesforce
//!    revoke the whole family, the working access token with it, so a possibly spent token is
//!    re-sent only when there is nothing left to lose: the current access token is dead (a 401
//!    was seen, or a probe of it with `userinfo` is refused) or expires within the refresh
//!    margin. Until then the tenant's refresh is on hold and the cached token is served; then
//!    one careful attempt is made, and a refusal means re-authorization, with that cause.
//! 6. **Nothing between the answer and the save can fail but the save.** The refresh runs as a
//!    task of its own (a caller that gives up does not cancel it), introspection and event
//!    emission come after the save, and the parsed tokens are saved as they came.
//! 7. **A lease sized to the work.** The lease is renewed every third of its time-to-live while
//!    the refresh runs, so a dead refresher's lease lapses fast while a slow one never loses it;
//!    a lease whose holder is a process on this host that is gone is taken over at once.
//! 8. **The background never waits on another refresher.** A refresh the background refresher
//!    starts ([`Refresher::refresh_background`]) first reads the record's header
//!    ([`TokenStore::header`]) and, if another process stored tokens since, takes the header's
//!    times as a sealed view (no token, nothing decrypted: the tenant's next use opens the
//!    record) or, from a store without clear headers, adopts the record, with no lease
//!    attempt either way. A header that shows no refresh in flight is followed by one lease
//!    attempt at once; otherwise (or if that attempt is refused) it reads the lease, and makes
//!    one lease attempt only if nobody (alive) holds it. If the lease is held, or taken between
//!    the read and the attempt, or a caller of this process holds the tenant's lock, it moves
//!    on instead of waiting: the holder writes, foreground callers adopt through the watch, and
//!    the next scan adopts what was written. Waiting would tie up one of the
//!    background's few permits for up to `lease_wait` per tenant some other process is already
//!    refreshing. Everything after the lease is the same protocol as above. Which worker of a
//!    fleet gets there first is the background refresher's business (`background.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sfauth_core::backoff::Backoff;
use sfauth_core::http::HttpTransport;
use sfauth_core::{
    Error as CoreError, ErrorKind as CoreKind, OAuthClient, RefreshToken, TokenKey, TokenSet,
};
use sfauth_storage::{
    ErrorKind as StoreErrorKind, InFlight, Lease, RecordHeader, RecordStatus, StatusKind,
    TokenRecord, TokenStore,
};
use tokio::sync::broadcast;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::clock;
use crate::clock::duration_ms;
use crate::error::{Error, ErrorKind, LeaseHolder, Result};
use crate::events::{Event, EventKind};
use crate::idle::Idle;
use crate::lifetime::Lifetimes;
use crate::policy::RefreshPolicy;
use crate::renewal::{Renewal, RenewalResolver};
use crate::rotation::Rotation;
use crate::state::{Cached, CachedState, Failure, NEVER, Reauth, TenantState, lock};
use crate::stats::{Counters, names};

/// How long a loser waits on a live store watch before it reads again anyway: the bound on
/// what one missed notification costs.
const WATCH_FALLBACK: Duration = Duration::from_millis(500);

/// What asked for a refresh: it decides whether a possibly spent refresh token may be re-sent
/// (only a dead or dying access token leaves nothing to lose) and labels the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// The cached token reached its refresh deadline.
    Expiring,
    /// Salesforce refused the access token (401): it is dead.
    SessionExpired,
    /// The application asked for a refresh.
    Forced,
    /// The background refresher found the token due.
    Background,
}

impl Trigger {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Expiring => "expiring",
            Self::SessionExpired => "session_expired",
            Self::Forced => "forced",
            Self::Background => "background",
        }
    }
}

/// Refuses tokens of another org or user than `key` names: they must never be stored under it.
pub(crate) fn check_identity(key: &TokenKey, tokens: &TokenSet) -> Result<()> {
    let identity = &tokens.identity;
    if identity.org_id() != key.org_id() || identity.user_id() != key.user_id() {
        return Err(Error::IdentityMismatch {
            key: Box::new(key.clone()),
            found: Box::new(identity.clone()),
        });
    }
    Ok(())
}

/// What a failed token request says about the refresh token that was sent.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// Salesforce refused the grant for good.
    Refused,
    /// Salesforce says another request is spending this token right now.
    InProgress,
    /// Salesforce answered in its own words, or the request never left: the token is unspent.
    Unspent,
    /// Salesforce answered 2xx and issued tokens, but they failed a check (signature, missing
    /// field): the token was spent, and the refresh token it issued must be kept.
    Rejected,
    /// The request may have reached Salesforce and rotated the token, and no usable answer
    /// came back.
    MaybeSpent,
}

fn classify(error: &CoreError) -> Answer {
    match error.kind() {
        CoreKind::ReauthorizationRequired => return Answer::Refused,
        CoreKind::RefreshInProgress => return Answer::InProgress,
        _ => {}
    }
    match error {
        CoreError::TokensRejected(_) => Answer::Rejected,
        // Salesforce's own error document, whatever the status: it read the request and
        // refused it, so nothing was spent. A bare `{"error":…}` without a description under a
        // 5xx may be a gateway's own, and proves nothing.
        CoreError::Server(server) if server.is_salesforce_answer() => Answer::Unspent,
        CoreError::Server(server) if (500..600).contains(&server.status()) => Answer::MaybeSpent,
        CoreError::Server(_) => Answer::Unspent,
        CoreError::Transport(transport) if transport.kind().never_sent() => Answer::Unspent,
        CoreError::Transport(_) | CoreError::SignatureMismatch => Answer::MaybeSpent,
        CoreError::Parse { status, .. } if (200..300).contains(status) => Answer::MaybeSpent,
        // A 5xx that is not in Salesforce's words comes from whatever stands in front of it (a
        // load balancer, a corporate proxy, an API gateway), which may have forwarded the
        // request and let Salesforce rotate before it failed.
        CoreError::Status { status, .. } if (500..600).contains(status) => Answer::MaybeSpent,
        _ => Answer::Unspent,
    }
}

/// How a refresh under the lease ended, when it did not fail.
enum Outcome {
    /// New tokens were obtained and saved by this process.
    Refreshed,
    /// Another process's tokens were found in the store and installed.
    Adopted,
    /// Salesforce says another request is spending this refresh token: release the lease and
    /// wait for its result.
    WaitForOther,
    /// Another refresher was at work on the tenant, and this background refresh left it alone.
    Skipped,
}

enum Acquired {
    Lease(Lease),
    Adopted,
}

/// What a refresh does when another refresher is at work on the tenant (the store lease is
/// held, or in this process the tenant's lock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WhenBusy {
    /// Wait for its result and adopt it: a caller needs a token now.
    Wait,
    /// Leave it to that refresher: the background refresher looks again at its next scan.
    Skip,
}

/// Salesforce's longest session timeout: no lifetime is believed beyond it.
pub(crate) const MAX_SESSION: Duration = Duration::from_secs(24 * 3600);

/// The refresh protocol as a value: everything a refresh needs (the OAuth client, the transport,
/// the store, the policy, where events and counts go) and nothing of the manager's tenant map.
/// The manager hands it a tenant; it installs the tenant's new state, or answers with an error.
pub(crate) struct Refresher {
    client: OAuthClient,
    transport: Arc<dyn HttpTransport>,
    store: Arc<dyn TokenStore>,
    policy: RefreshPolicy,
    /// This manager's name as a lease holder: unique per process and instance.
    holder: String,
    /// Session lifetimes believed per org.
    lifetimes: Lifetimes,
    events: broadcast::Sender<Event>,
    counters: Counters,
    default_renewal: Option<Renewal>,
    renewal_resolver: Option<RenewalResolver>,
    /// Refreshes run as tasks of their own, so that a caller that gives up (a dropped future, a
    /// timeout) never cancels a refresh between Salesforce's answer and the save.
    tasks: TaskTracker,
    /// Set by [`shutdown`](Self::shutdown): no new token request is sent.
    closing: AtomicBool,
    /// The leases refreshes hold right now, released by a shutdown.
    held: Mutex<Vec<Lease>>,
    /// The client's secret switches already reported (see [`Refresher::note_secret`]).
    secret_switches_seen: AtomicU64,
}

/// What a [`Refresher`] is made of.
pub(crate) struct Parts {
    pub(crate) client: OAuthClient,
    pub(crate) transport: Arc<dyn HttpTransport>,
    pub(crate) store: Arc<dyn TokenStore>,
    pub(crate) policy: RefreshPolicy,
    pub(crate) holder: String,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) default_renewal: Option<Renewal>,
    pub(crate) renewal_resolver: Option<RenewalResolver>,
}

impl Refresher {
    pub(crate) fn new(parts: Parts) -> Self {
        let switches = parts.client.secret_switches();
        let lifetimes = Lifetimes::new(
            parts.policy.min_learned_lifetime,
            MAX_SESSION,
            parts.policy.relearn_after,
        );
        Self {
            client: parts.client,
            transport: parts.transport,
            store: parts.store,
            policy: parts.policy,
            holder: parts.holder,
            lifetimes,
            events: parts.events,
            counters: Counters::default(),
            default_renewal: parts.default_renewal,
            renewal_resolver: parts.renewal_resolver,
            tasks: TaskTracker::new(),
            secret_switches_seen: AtomicU64::new(switches),
            closing: AtomicBool::new(false),
            held: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn client(&self) -> &OAuthClient {
        &self.client
    }

    pub(crate) fn transport(&self) -> &Arc<dyn HttpTransport> {
        &self.transport
    }

    pub(crate) fn store(&self) -> &Arc<dyn TokenStore> {
        &self.store
    }

    pub(crate) fn policy(&self) -> &RefreshPolicy {
        &self.policy
    }

    pub(crate) fn holder(&self) -> &str {
        &self.holder
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    pub(crate) fn lifetimes(&self) -> &Lifetimes {
        &self.lifetimes
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// No new token request from now on; refreshes in flight get up to `grace` to finish; then
    /// every lease still held is released. Returns how many refreshes were still running.
    pub(crate) async fn shutdown(&self, grace: Duration) -> usize {
        self.closing.store(true, Ordering::Release);
        self.tasks.close();
        let _ = tokio::time::timeout(grace, self.tasks.wait()).await;
        let unfinished = self.tasks.len();
        let held = std::mem::take(&mut *lock(&self.held));
        for lease in held {
            if let Err(error) = self.store.release(&lease).await {
                tracing::warn!(key = %lease.key, error = %error, "cannot release a refresh lease at shutdown; it lapses on its own");
            }
        }
        unfinished
    }

    /// Refreshes `tenant` unless somebody already replaced the token of generation
    /// `seen_generation`.
    ///
    /// The work runs as a task of its own when there is a runtime: a caller that stops waiting
    /// (a dropped future, a timeout around the call) must not cancel a refresh between
    /// Salesforce's rotation and the save of the new refresh token.
    pub(crate) async fn refresh(
        self: &Arc<Self>,
        tenant: &Arc<TenantState>,
        seen_generation: u64,
        trigger: Trigger,
    ) -> Result<()> {
        self.refresh_with(tenant, seen_generation, trigger, WhenBusy::Wait)
            .await
    }

    /// The background refresher's refresh of `tenant` at `seen_generation`: like
    /// [`refresh`](Self::refresh), but it adopts another process's newer tokens before any
    /// lease attempt and never waits on another refresher (point 8 of the module doc).
    pub(crate) async fn refresh_background(
        self: &Arc<Self>,
        tenant: &Arc<TenantState>,
        seen_generation: u64,
    ) -> Result<()> {
        self.refresh_with(tenant, seen_generation, Trigger::Background, WhenBusy::Skip)
            .await
    }

    async fn refresh_with(
        self: &Arc<Self>,
        tenant: &Arc<TenantState>,
        seen_generation: u64,
        trigger: Trigger,
        when_busy: WhenBusy,
    ) -> Result<()> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return self
                .refresh_here(tenant, seen_generation, trigger, when_busy)
                .await;
        };
        let inner = self.clone();
        let owned = tenant.clone();
        let work = self.tasks.track_future(async move {
            let result = inner
                .refresh_here(&owned, seen_generation, trigger, when_busy)
                .await;
            if matches!(result, Err(Error::Unsaved { .. })) {
                inner.keep_saving(&owned);
            }
            result
        });
        match runtime.spawn(work).await {
            Ok(result) => result,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            // Only a runtime shutting down cancels the task.
            Err(_) => Err(Error::ShuttingDown {
                key: Box::new((*tenant.key).clone()),
            }),
        }
    }

    /// Tokens Salesforce issued could not be saved (the store stumbled), and the rotated-out
    /// refresh token is all the store holds: retry the save in the background, under the lease
    /// that was kept for it, instead of waiting for the next caller. Gives up when the tokens
    /// are saved, replaced or dropped, or after a few lease lifetimes (the next call retries).
    fn keep_saving(self: &Arc<Self>, tenant: &Arc<TenantState>) {
        let inner = self.clone();
        let tenant = tenant.clone();
        let every = self
            .policy
            .lease_ttl
            .div_f64(3.0)
            .max(Duration::from_millis(10));
        self.tasks.spawn(async move {
            let pauses = Backoff::new(Duration::from_millis(200).min(every), every);
            for retry in 0..12 {
                tokio::time::sleep(pauses.ceiling(retry)).await;
                if !tenant.has_unsaved() || inner.closing.load(Ordering::Acquire) {
                    return;
                }
                let seen = tenant.current.load().generation;
                match inner
                    .refresh_here(&tenant, seen, Trigger::Background, WhenBusy::Wait)
                    .await
                {
                    Err(Error::Unsaved { .. }) => {}
                    _ => return,
                }
            }
        });
    }

    async fn refresh_here(
        &self,
        tenant: &Arc<TenantState>,
        seen_generation: u64,
        trigger: Trigger,
        when_busy: WhenBusy,
    ) -> Result<()> {
        let _single = match when_busy {
            WhenBusy::Wait => tenant.refresh_lock.lock().await,
            WhenBusy::Skip => match tenant.refresh_lock.try_lock() {
                Ok(single) => single,
                Err(_) => {
                    // A caller of this process is refreshing (or waiting on another process):
                    // whatever it gets is installed here, so there is nothing to add.
                    Counters::bump(&self.counters.background_skipped);
                    metrics::counter!(
                        names::REFRESHES,
                        "outcome" => "skipped",
                        "cause" => "none",
                        "trigger" => trigger.as_str()
                    )
                    .increment(1);
                    return Ok(());
                }
            },
        };
        let current = tenant.current.load_full();
        if current.generation != seen_generation {
            self.counters.coalesced();
            return match current.unavailable_error(&tenant.key) {
                Some(error) => Err(error),
                None => Ok(()),
            };
        }
        // Tokens waiting to be saved are never held back by the pause: saving them is urgent.
        // Nor is a refresh on hold once its access token has died or is about to: that is what
        // it waited for, and a pause that outlived the token would fail callers for nothing.
        let hold_over =
            tenant.on_hold() && (trigger == Trigger::SessionExpired || self.dying(&current));
        if tenant.in_failure_backoff() && !tenant.has_unsaved() && !hold_over {
            let failure = tenant.last_failure().unwrap_or_else(|| Failure {
                kind: ErrorKind::Transient,
                cause: None,
                message: "refresh failed".into(),
            });
            return Err(Error::RecentlyFailed {
                key: Box::new((*tenant.key).clone()),
                kind: failure.kind,
                cause: failure.cause,
                message: failure.message,
            });
        }

        let span = tracing::info_span!(
            "sfauth.refresh",
            key = %tenant.key,
            trigger = trigger.as_str(),
            outcome = tracing::field::Empty,
            cause = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = self
            .refresh_exclusive(tenant, &current, trigger, when_busy)
            .instrument(span.clone())
            .await;
        let (outcome, cause) = match &result {
            Ok(Outcome::Refreshed) => ("refreshed", "none"),
            Ok(Outcome::Adopted) => ("adopted", "none"),
            Ok(Outcome::WaitForOther) => ("waited", "none"),
            Ok(Outcome::Skipped) => ("skipped", "none"),
            Err(Error::ReauthorizationRequired { cause, .. }) => (
                "reauth_required",
                cause.map_or("unknown", sfauth_core::Cause::as_str),
            ),
            Err(error) => ("failed", error.kind().as_str()),
        };
        span.record("outcome", outcome);
        span.record("cause", cause);
        metrics::counter!(
            names::REFRESHES,
            "outcome" => outcome,
            "cause" => cause,
            "trigger" => trigger.as_str()
        )
        .increment(1);
        metrics::histogram!(names::REFRESH_SECONDS).record(started.elapsed().as_secs_f64());

        match result {
            // Nothing was tried: the failures of earlier attempts still stand.
            Ok(Outcome::Skipped) => Ok(()),
            Ok(_) => {
                tenant.clear_failures();
                Ok(())
            }
            Err(error) => {
                // A missing renewal or a shutdown is no failure of Salesforce's to pause for.
                let failed = error.kind() != ErrorKind::ReauthorizationRequired
                    && !matches!(error, Error::NoRenewal { .. } | Error::ShuttingDown { .. });
                if failed {
                    self.note_failure(tenant, &error);
                }
                Err(error)
            }
        }
    }

    fn note_failure(&self, tenant: &TenantState, error: &Error) {
        Counters::bump(&self.counters.refresh_failures);
        // The whole chain and the fix: "salesforce request … failed" alone would leave whoever
        // reads the pause or the event without Salesforce's words or what to do about them.
        let message = describe(error);
        let failure = Failure {
            kind: error.kind(),
            cause: error.cause(),
            message: message.clone(),
        };
        let pause = tenant.note_failure(failure, self.policy.failure_pause());
        tracing::warn!(key = %tenant.key, error = %message, retry_in_ms = duration_ms(pause), "refresh failed");
        self.emit(
            &tenant.key,
            EventKind::RefreshFailed {
                kind: error.kind(),
                message,
            },
        );
    }

    /// Reports a switch of the client's consumer secret (Salesforce refused one and accepted the
    /// other) that happened since the last report: a log line, an event and a metric, so that an
    /// operator learns the rotation was applied and the old secret can be retired.
    fn note_secret(&self, key: &TokenKey) {
        let switches = self.client.secret_switches();
        let seen = self
            .secret_switches_seen
            .fetch_max(switches, Ordering::AcqRel);
        if switches <= seen {
            return;
        }
        let Some(slot) = self.client.secret_in_use() else {
            return;
        };
        tracing::warn!(
            key = %key,
            secret = slot.as_str(),
            refused = slot.other().as_str(),
            "salesforce refused the {} consumer secret and accepted the {}: requests now use the {}; once every process reports this, the refused one can be removed from the configuration",
            slot.other(),
            slot,
            slot,
        );
        metrics::counter!(names::SECRET_SWITCHES, "to" => slot.as_str()).increment(1);
        metrics::gauge!(names::SECRET_IN_USE, "slot" => slot.as_str()).set(1.0);
        metrics::gauge!(names::SECRET_IN_USE, "slot" => slot.other().as_str()).set(0.0);
        self.emit(key, EventKind::ClientSecretSwitched { to: slot });
    }

    async fn refresh_exclusive(
        &self,
        tenant: &Arc<TenantState>,
        current: &Cached,
        trigger: Trigger,
        when_busy: WhenBusy,
    ) -> Result<Outcome> {
        let acquired = match when_busy {
            WhenBusy::Wait => self.acquire_or_adopt(tenant, current).await?,
            WhenBusy::Skip => match self.acquire_or_skip(tenant, current).await? {
                Some(acquired) => acquired,
                None => return Ok(Outcome::Skipped),
            },
        };
        let lease = match acquired {
            Acquired::Lease(lease) => lease,
            Acquired::Adopted => return Ok(Outcome::Adopted),
        };
        lock(&self.held).push(lease.clone());
        // Boxed: the refresh proper is the bulk of this future (tens of kilobytes), and most
        // background attempts adopt without a lease; inline, every one of them would allocate
        // and copy it as its task is spawned.
        let result = Box::pin(self.keeping_lease(
            &lease,
            self.refresh_leased(tenant, current, &lease, trigger),
        ))
        .await;
        if matches!(result, Err(Error::Unsaved { .. })) {
            // Keep the lease (it lapses by itself): released, it would let another process find
            // our mark and, once its access token dies, re-send the refresh token Salesforce
            // already rotated, which revokes the family and with it the tokens we hold.
            lock(&self.held).retain(|held| held.key != lease.key || held.fence != lease.fence);
        } else if self.holds(&lease) {
            self.release(&lease).await;
        }
        match result {
            Ok(Outcome::WaitForOther) if when_busy == WhenBusy::Skip => {
                // Whoever spends the token is at work: the next scan adopts what it stores.
                Counters::bump(&self.counters.background_skipped);
                Ok(Outcome::Skipped)
            }
            Ok(Outcome::WaitForOther) => {
                // Our lease is released, so a refresher elsewhere can save its result.
                match self.acquire_or_adopt(tenant, current).await? {
                    Acquired::Adopted => Ok(Outcome::Adopted),
                    Acquired::Lease(lease) => {
                        lock(&self.held).push(lease.clone());
                        self.release(&lease).await;
                        Err(Error::RefreshInProgress {
                            key: Box::new((*tenant.key).clone()),
                            waited: self.policy.lease_wait,
                            held_by: None,
                        })
                    }
                }
            }
            other => other,
        }
    }

    /// Whether `lease` is still one this refresher must release: not yet released with the
    /// save that ended its refresh (`save_refreshed`), nor by a shutdown.
    fn holds(&self, lease: &Lease) -> bool {
        lock(&self.held)
            .iter()
            .any(|held| held.key == lease.key && held.fence == lease.fence)
    }

    async fn release(&self, lease: &Lease) {
        lock(&self.held).retain(|held| held.key != lease.key || held.fence != lease.fence);
        if let Err(error) = self.store.release(lease).await {
            tracing::warn!(key = %lease.key, error = %error, "cannot release the refresh lease; it lapses on its own");
        }
    }

    /// Runs `work` while renewing `lease` every third of its time-to-live, so that a refresh
    /// slower than the lease (a slow token endpoint, a store retry) never lets another process
    /// in, while the lease of a refresher that died still lapses soon.
    async fn keeping_lease<T>(&self, lease: &Lease, work: impl Future<Output = T>) -> T {
        let ttl = self.policy.lease_ttl;
        let every = ttl.div_f64(3.0).max(Duration::from_millis(10));
        let mut work = std::pin::pin!(work);
        let mut current = lease.clone();
        loop {
            tokio::select! {
                biased;
                done = &mut work => return done,
                () = tokio::time::sleep(every) => {
                    match self.store.renew(&current, ttl).await {
                        Ok(Some(renewed)) => current = renewed,
                        Ok(None) => tracing::warn!(key = %lease.key, "the refresh lease was lost while refreshing; writes under it will be refused"),
                        Err(error) => tracing::warn!(key = %lease.key, error = %error, "cannot renew the refresh lease"),
                    }
                }
            }
        }
    }

    /// Takes the lease, or waits for its holder's result and adopts it. A lease whose holder
    /// is a process on this host that is gone is taken over instead of waited out.
    async fn acquire_or_adopt(&self, tenant: &TenantState, current: &Cached) -> Result<Acquired> {
        let key: &TokenKey = &tenant.key;
        let started = Instant::now();
        // Polls the store for the holder's result: soon at first, then less often.
        let polls = Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
        let mut poll: u32 = 0;
        let mut seen: Option<Lease> = None;
        let mut woken = false;
        loop {
            // Watched before anything is read, so that the holder's write (or release) after
            // our read still wakes us: with a store that notifies, a loser learns of the
            // winner's tokens at once instead of at its next poll.
            let watch = self
                .store
                .watch(key)
                .await
                .map_err(|source| Error::store(&tenant.key, source))?;
            // After a wait, the wake is most likely the winner's save: read before trying the
            // lease, so that adopting costs one read. Trying first would, once the winner has
            // released, take and release a lease only to adopt (two durable writes on
            // PostgreSQL, for every loser).
            if woken && self.adopt_from_store(tenant, current).await? {
                return Ok(Acquired::Adopted);
            }
            let lease = self
                .store
                .try_acquire(key, &self.holder, self.policy.lease_ttl)
                .await
                .map_err(|source| Error::store(&tenant.key, source))?;
            if let Some(lease) = lease {
                return Ok(Acquired::Lease(lease));
            }
            let held = self
                .store
                .lease(key)
                .await
                .map_err(|source| Error::store(&tenant.key, source))?;
            if let Some(held) = held {
                if crate::holder::is_gone(&held.holder) {
                    let taken = self
                        .store
                        .take_over(&held, &self.holder, self.policy.lease_ttl)
                        .await
                        .map_err(|source| Error::store(&tenant.key, source))?;
                    if let Some(lease) = taken {
                        tracing::warn!(key = %key, dead = %held.holder, "took over the refresh lease of a process that is gone");
                        return Ok(Acquired::Lease(lease));
                    }
                    continue;
                }
                if seen.as_ref().is_none_or(|seen| seen.holder != held.holder) {
                    tracing::info!(key = %key, holder = %held.holder, until = %httpdate::fmt_http_date(held.expires_at), "waiting for another refresher");
                }
                seen = Some(held);
            }
            if !woken && self.adopt_from_store(tenant, current).await? {
                return Ok(Acquired::Adopted);
            }
            let waited = started.elapsed();
            if waited >= self.policy.lease_wait {
                return Err(Error::RefreshInProgress {
                    key: Box::new(key.clone()),
                    waited,
                    held_by: seen.as_ref().map(|lease| Box::new(LeaseHolder::of(lease))),
                });
            }
            let remaining = self.policy.lease_wait.saturating_sub(waited);
            if watch.is_live() {
                // A missed notification (a reconnecting listener) costs one fallback period.
                watch.changed(remaining.min(WATCH_FALLBACK)).await;
            } else {
                tokio::time::sleep(polls.ceiling(poll).min(remaining)).await;
                poll = poll.saturating_add(1);
            }
            woken = true;
        }
    }

    /// Reads the record and installs it if another process stored newer tokens (or a
    /// re-authorization mark) since `current` was cached; whether it did.
    async fn adopt_from_store(&self, tenant: &TenantState, current: &Cached) -> Result<bool> {
        let record = self
            .store
            .get(&tenant.key)
            .await
            .map_err(|source| Error::store(&tenant.key, source))?;
        Ok(record.is_some_and(|record| self.adopt_if_newer(tenant, current, &record)))
    }

    /// The background's way to the lease (point 8 of the module doc): adopt what another
    /// process stored, else one lease attempt if nobody holds the lease; `None` when another
    /// refresher is at work, which is left to finish without us waiting for it.
    async fn acquire_or_skip(
        &self,
        tenant: &TenantState,
        current: &Cached,
    ) -> Result<Option<Acquired>> {
        let key: &TokenKey = &tenant.key;
        // Reads first: after another worker's refresh the record's header is all that is
        // needed, and while one is under way the lease says so. A lease attempt is a write (on
        // SQLite and files, the one writer's lock), and a refused one is a write for nothing.
        let header = self
            .store
            .header(key)
            .await
            .map_err(|source| Error::store(key, source))?;
        // A header without its record is of an active record with no refresh in flight.
        let (adopted, idle) = match header {
            Some(RecordHeader {
                record: Some(record),
                ..
            }) => (self.adopt_if_newer(tenant, current, &record), false),
            Some(header) => (self.seal_if_newer(tenant, current, &header), true),
            None => (false, false),
        };
        if adopted {
            Counters::bump(&self.counters.background_adopted);
            return Ok(Some(Acquired::Adopted));
        }
        if idle {
            // Nobody was refreshing a moment ago, so the lease is almost surely free: one
            // attempt now saves the read below on every refresh of a fleet, and a refusal (a
            // refresh that started since) costs one write and the same read as before.
            let lease = self
                .store
                .try_acquire(key, &self.holder, self.policy.lease_ttl)
                .await
                .map_err(|source| Error::store(key, source))?;
            if let Some(lease) = lease {
                return Ok(Some(Acquired::Lease(lease)));
            }
        }
        let held = self
            .store
            .lease(key)
            .await
            .map_err(|source| Error::store(key, source))?;
        if let Some(held) = held
            && held.holder != self.holder
        {
            if !crate::holder::is_gone(&held.holder) {
                tracing::debug!(key = %key, holder = %held.holder, "another refresher holds the lease; the background moves on");
                Counters::bump(&self.counters.background_skipped);
                return Ok(None);
            }
            // Nobody will write: skipping would leave the tenant to lapse with the lease.
            let taken = self
                .store
                .take_over(&held, &self.holder, self.policy.lease_ttl)
                .await
                .map_err(|source| Error::store(key, source))?;
            if let Some(lease) = taken {
                tracing::warn!(key = %key, dead = %held.holder, "took over the refresh lease of a process that is gone");
                return Ok(Some(Acquired::Lease(lease)));
            }
        }
        // Free (or ours, kept for tokens waiting to be saved: asking again renews it).
        let lease = self
            .store
            .try_acquire(key, &self.holder, self.policy.lease_ttl)
            .await
            .map_err(|source| Error::store(key, source))?;
        if lease.is_none() {
            // Another refresher took it since our read.
            Counters::bump(&self.counters.background_skipped);
        }
        Ok(lease.map(Acquired::Lease))
    }

    /// Installs `header` as a sealed view (its times, no token) if another process stored
    /// newer tokens since `current` was cached: the background's way of learning that a tenant
    /// was refreshed elsewhere without opening its record, which a worker that does not serve
    /// the tenant would only decrypt for nothing. The tenant's next use opens the record
    /// (`Engine::open`), and its next refresh is scheduled by the header's times.
    ///
    /// A header without its record is of an active record with no refresh in flight (the
    /// store's contract), so a newer version holds tokens stored since, not a mere mark. Tokens
    /// waiting to be saved here are never covered up: the lease path saves them.
    fn seal_if_newer(&self, tenant: &TenantState, current: &Cached, header: &RecordHeader) -> bool {
        if header.version <= current.version
            || header.status != StatusKind::Active
            || tenant.has_unsaved()
        {
            return false;
        }
        let generation = tenant.current.load().generation.wrapping_add(1);
        tenant.set_current(Arc::new(self.cached_from_header(header, generation)));
        Counters::bump(&self.counters.adopted);
        self.emit(&tenant.key, EventKind::Refreshed { adopted: true });
        true
    }

    /// Takes `header`, from the store's change feed, as a background attempt would after
    /// reading it ([`seal_if_newer`](Self::seal_if_newer)): only for a tenant whose refresh
    /// falls due before `horizon_ms` (the ones the background refresher is about to attempt,
    /// each of which would read the header), and not while a refresh of it runs here (that
    /// refresh deals with what is stored). Saves the attempt its read; `true` if installed.
    pub(crate) fn adopt_notified(
        &self,
        tenant: &TenantState,
        header: &RecordHeader,
        horizon_ms: u64,
    ) -> bool {
        let seen = tenant.current.load();
        if header.version <= seen.version || seen.refresh_at_ms > horizon_ms {
            return false;
        }
        let Ok(_single) = tenant.refresh_lock.try_lock() else {
            return false;
        };
        let current = tenant.current.load_full();
        if !self.seal_if_newer(tenant, &current, header) {
            return false;
        }
        Counters::bump(&self.counters.background_adopted);
        true
    }

    /// Installs `record` if another process stored newer tokens (or a re-authorization mark)
    /// since `current` was cached. A sealed `current` holds no token to compare with: any
    /// record at least as new as its header is adopted, so that no refresh token is spent on
    /// a view that only a header gave (the refresh would replace tokens nobody here has seen).
    fn adopt_if_newer(&self, tenant: &TenantState, current: &Cached, record: &TokenRecord) -> bool {
        let newer = if current.is_sealed() {
            record.version >= current.version
        } else {
            record.version > current.version
                && (record.tokens.access_token != current.access_token
                    || record.status != RecordStatus::Active)
        };
        if !newer {
            return false;
        }
        let cached = self.install(tenant, record);
        match cached.unavailable_error(&tenant.key) {
            Some(Error::ReauthorizationRequired { reason, cause, .. }) => {
                self.emit(&tenant.key, EventKind::ReauthRequired { reason, cause });
            }
            _ => {
                Counters::bump(&self.counters.adopted);
                self.emit(&tenant.key, EventKind::Refreshed { adopted: true });
            }
        }
        true
    }

    async fn refresh_leased(
        &self,
        tenant: &TenantState,
        current: &Cached,
        lease: &Lease,
        trigger: Trigger,
    ) -> Result<Outcome> {
        let key: &TokenKey = &tenant.key;
        let record = self.read(key).await?;
        let pending = tenant.take_unsaved();
        if let Some(pending) = pending {
            return self.save_pending(tenant, record, pending, lease).await;
        }
        if self.adopt_if_newer(tenant, current, &record) {
            return Ok(Outcome::Adopted);
        }
        let renewable = record.tokens.refresh_token.is_none()
            && self.renewal_for(tenant.renewal(), &record).is_some();
        if matches!(record.status, RecordStatus::ReauthRequired { .. }) && !renewable {
            // The record's status becomes the cached state, so the error comes from there.
            let cached = self.install(tenant, &record);
            return Err(cached
                .unavailable_error(key)
                .unwrap_or_else(|| Error::unknown_tenant(key)));
        }
        match record.tokens.refresh_token.clone() {
            Some(refresh_token) => {
                self.spend(tenant, record, refresh_token, lease, trigger)
                    .await
            }
            None => self.renew(tenant, record, lease).await,
        }
    }

    /// Saves tokens an earlier refresh obtained but could not store.
    async fn save_pending(
        &self,
        tenant: &TenantState,
        stored: TokenRecord,
        pending: TokenRecord,
        lease: &Lease,
    ) -> Result<Outcome> {
        let ours = stored
            .refresh_in_flight
            .as_ref()
            .is_some_and(|mark| mark.holder == self.holder);
        if !ours {
            // The record was rewritten since (a new login): its tokens win over ours.
            tracing::warn!(key = %tenant.key, "dropping unsaved tokens: the stored record was replaced meanwhile");
            self.install(tenant, &stored);
            return Ok(Outcome::Adopted);
        }
        let mut record = pending;
        match self
            .put_retrying(record.clone(), stored.version, lease)
            .await
        {
            Ok(version) => {
                record.version = version;
                self.install(tenant, &record);
                Counters::bump(&self.counters.refreshes);
                self.emit(&tenant.key, EventKind::Refreshed { adopted: false });
                Ok(Outcome::Refreshed)
            }
            Err(source) => {
                tenant.keep_unsaved(record);
                Err(Error::Unsaved {
                    key: Box::new((*tenant.key).clone()),
                    source: Box::new(source),
                })
            }
        }
    }

    /// Spends the refresh token, under the write-ahead mark.
    async fn spend(
        &self,
        tenant: &TenantState,
        record: TokenRecord,
        refresh_token: RefreshToken,
        lease: &Lease,
        trigger: Trigger,
    ) -> Result<Outcome> {
        let key: &TokenKey = &tenant.key;
        let interrupted = record.refresh_in_flight.clone();
        if let Some(mark) = &interrupted {
            if !self.nothing_to_lose(tenant, trigger).await {
                tenant.hold();
                return Err(Error::RefreshOnHold {
                    key: Box::new(key.clone()),
                    reason: "an earlier refresh sent the refresh token and got no usable answer, \
                             so it may have been rotated; it is not sent again while the current \
                             access token works"
                        .into(),
                });
            }
            tracing::warn!(key = %key, holder = %mark.holder, fence = mark.fence, "an earlier refresh may have spent the refresh token; making one careful attempt");
        }
        if self.closing.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown {
                key: Box::new(key.clone()),
            });
        }
        let mut marked = record.clone();
        marked.refresh_in_flight = Some(InFlight {
            holder: self.holder.clone(),
            fence: lease.fence,
            since: SystemTime::now(),
        });
        marked.version = self
            .store
            .put(marked.clone(), record.version, Some(lease))
            .await
            .map_err(|source| Error::store(&tenant.key, source))?;

        // Once a request may have spent the token, the mark stays until new tokens are saved.
        let mut maybe_spent = interrupted.is_some();
        let mut careful = interrupted.is_some();
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            self.count_token_request();
            let result = self.client.refresh(&*self.transport, &refresh_token).await;
            self.note_secret(key);
            let error = match result {
                Ok(tokens) => return self.save_refreshed(tenant, marked, tokens, lease).await,
                Err(error) => error,
            };
            let answer = classify(&error);
            match answer {
                Answer::Refused => {
                    let cause = error.server().map(|server| server.cause());
                    let reason = if maybe_spent {
                        format!(
                            "an earlier request may have rotated the refresh token without an answer, and the stored one was refused: {error}"
                        )
                    } else {
                        error.to_string()
                    };
                    let obtained = SystemTime::UNIX_EPOCH
                        .checked_add(Duration::from_millis(tenant.current.load().obtained_at_ms))
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                    let idle = Idle::new(obtained, SystemTime::now(), self.policy.idle_limit);
                    let reason = with_idle_evidence(reason, cause, &idle);
                    return self.mark_reauth(tenant, marked, reason, cause, lease).await;
                }
                Answer::MaybeSpent => {
                    maybe_spent = true;
                    if !careful && self.nothing_to_lose(tenant, trigger).await {
                        // The access token is dead or dying: a re-send can cost nothing that is
                        // not lost already, and may save the tenant.
                        tracing::warn!(key = %key, error = %error, "no usable answer to a refresh; the access token is dead, so re-sending once");
                        careful = true;
                        continue;
                    }
                    // Keep the mark, so that the next refresher knows, and hold the token back
                    // while the access token works. On hold is transient whatever the failure
                    // was (a malformed 2xx is a protocol error): the still-valid token is served.
                    tenant.hold();
                    return Err(Error::RefreshOnHold {
                        key: Box::new(key.clone()),
                        reason: format!(
                            "the refresh got no usable answer ({error}), so Salesforce may have rotated the refresh token; it is not sent again while the current access token works"
                        ),
                    });
                }
                Answer::Rejected => {
                    return self
                        .keep_issued_refresh_token(tenant, marked, &refresh_token, error, lease)
                        .await;
                }
                Answer::InProgress if !maybe_spent => {
                    self.clear_mark(tenant, &mut marked, lease).await;
                    return Ok(Outcome::WaitForOther);
                }
                Answer::InProgress | Answer::Unspent => {}
            }
            if !careful
                && !self.closing.load(Ordering::Acquire)
                && let Some(pause) = self.retry_pause(&error, attempt)
            {
                tokio::time::sleep(pause).await;
                continue;
            }
            if !maybe_spent {
                // Salesforce answered, so the token was not consumed: lift the mark.
                self.clear_mark(tenant, &mut marked, lease).await;
            }
            return Err(Error::oauth(&tenant.key, error));
        }
    }

    /// Salesforce answered 2xx but the tokens failed a check (a signature mismatch, a missing
    /// field): they are not used, but the refresh token it issued is the only one Salesforce
    /// still accepts, so it replaces the spent one in the store (the rest of the record stays
    /// as it was) before the error is returned. A later refresh with it gets a whole new set,
    /// checked again.
    async fn keep_issued_refresh_token(
        &self,
        tenant: &TenantState,
        marked: TokenRecord,
        sent: &RefreshToken,
        error: CoreError,
        lease: &Lease,
    ) -> Result<Outcome> {
        let key: &TokenKey = &tenant.key;
        let mut next = marked.clone();
        next.refresh_in_flight = None;
        if let Some(issued) = error.issued_refresh_token()
            && issued != sent
        {
            next.tokens.refresh_token = Some(issued.clone());
            tracing::warn!(key = %key, error = %error, "salesforce's tokens failed a check; keeping only the refresh token it issued");
        }
        match self.put_retrying(next.clone(), marked.version, lease).await {
            Ok(version) => {
                next.version = version;
                self.install(tenant, &next);
                Err(Error::oauth(key, error))
            }
            Err(source) => {
                tenant.keep_unsaved(next);
                Err(Error::Unsaved {
                    key: Box::new(key.clone()),
                    source: Box::new(source),
                })
            }
        }
    }

    /// Whether `cached` is unusable or expires within the refresh margin (and its jitter), by
    /// the clock alone.
    fn dying(&self, cached: &Cached) -> bool {
        if !cached.is_usable() {
            return true;
        }
        if cached.expires_at_ms == NEVER {
            return false;
        }
        let born = cached.issued_at.map_or(cached.obtained_at_ms, clock::to_ms);
        let (margin, jitter) = crate::state::scaled_margin(
            duration_ms(self.policy.margin),
            duration_ms(self.policy.jitter),
            cached.expires_at_ms.saturating_sub(born),
        );
        clock::precise_ms().saturating_add(margin.saturating_add(jitter)) >= cached.expires_at_ms
    }

    /// Whether the tenant's current access token is dead or about to die, so that a possibly
    /// spent refresh token may be re-sent at no risk to a working session. Short of a 401 or an
    /// expiry within the refresh margin, the token is tried against `userinfo` (which spends
    /// nothing): an expiry is mostly an estimate, and a token can die early (revoked,
    /// expired by an admin), which is exactly when the refresh cannot wait.
    async fn nothing_to_lose(&self, tenant: &TenantState, trigger: Trigger) -> bool {
        if trigger == Trigger::SessionExpired {
            return true;
        }
        let cached = tenant.current.load_full();
        if self.dying(&cached) {
            return true;
        }
        match self
            .client
            .userinfo(&*self.transport, &cached.access_token)
            .await
        {
            Ok(_) => false,
            Err(error) => error.kind() == CoreKind::SessionExpired,
        }
    }

    /// Renews a tenant without a refresh token by running its own flow again.
    async fn renew(
        &self,
        tenant: &TenantState,
        record: TokenRecord,
        lease: &Lease,
    ) -> Result<Outcome> {
        let own = tenant.renewal();
        let Some(renewal) = self.renewal_for(own, &record) else {
            // A missing setting, not a refusal by Salesforce: nothing is marked in the store,
            // so the tenant works again as soon as a renewal is configured.
            return Err(Error::NoRenewal {
                key: Box::new((*tenant.key).clone()),
            });
        };
        if self.closing.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown {
                key: Box::new((*tenant.key).clone()),
            });
        }
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            self.count_token_request();
            let transport = &*self.transport;
            let result = match &renewal {
                Renewal::ClientCredentials => self.client.client_credentials(transport).await,
                Renewal::JwtBearer(jwt) => self.client.jwt_bearer(transport, jwt).await,
                Renewal::Password { username, password } => {
                    self.client.password(transport, username, password).await
                }
            };
            self.note_secret(&tenant.key);
            let error = match result {
                Ok(tokens) => return self.save_refreshed(tenant, record, tokens, lease).await,
                Err(error) => error,
            };
            if error.kind() == CoreKind::ReauthorizationRequired {
                let cause = error.server().map(|server| server.cause());
                return self
                    .mark_reauth(tenant, record, error.to_string(), cause, lease)
                    .await;
            }
            match self.retry_pause(&error, attempt) {
                Some(pause) => tokio::time::sleep(pause).await,
                None => return Err(Error::oauth(&tenant.key, error)),
            }
        }
    }

    /// The pause before re-sending after a 5xx or 429 answer, or `None` to give up.
    fn retry_pause(&self, error: &CoreError, attempt: u32) -> Option<Duration> {
        if !matches!(error.kind(), CoreKind::Transient | CoreKind::RateLimited)
            || attempt >= self.policy.attempts
        {
            return None;
        }
        let backoff = self
            .policy
            .retry_backoff()
            .ceiling(attempt.saturating_sub(1));
        let pause = error.retry_after().unwrap_or(backoff);
        // Waiting minutes while holding the lease would stall every caller; the failure backoff
        // takes over instead.
        (pause <= self.policy.lease_ttl.div_f64(4.0)).then_some(pause)
    }

    /// Saves new tokens (clearing the mark) and only then installs them.
    async fn save_refreshed(
        &self,
        tenant: &TenantState,
        marked: TokenRecord,
        tokens: TokenSet,
        lease: &Lease,
    ) -> Result<Outcome> {
        let key: &TokenKey = &tenant.key;
        // Tokens of another org or user must never be stored under this key. The mark stays
        // on a mismatch: the refresh token was spent on them.
        check_identity(key, &tokens)?;
        let rotated = tokens.refresh_token != marked.tokens.refresh_token;
        let moved = (tokens.instance_url != marked.tokens.instance_url).then(|| {
            (
                marked.tokens.instance_url.clone(),
                tokens.instance_url.clone(),
            )
        });
        let mut next = marked.clone();
        next.tokens = tokens;
        next.status = RecordStatus::Active;
        next.refresh_in_flight = None;
        next.last_refreshed_at = Some(SystemTime::now());
        next.refresh_count = next.refresh_count.saturating_add(1);
        // What this refresh showed of the app's rotation, for tools that check a login (a
        // renewal by the tenant's own flow spent no refresh token and shows nothing).
        if marked.tokens.refresh_token.is_some() {
            let seen = if rotated {
                Rotation::Rotated
            } else {
                Rotation::Kept
            };
            seen.write_to(&mut next.metadata);
        }
        // Only a lifetime read from an `exp` claim is kept with the record; one agreed from
        // dying tokens stays in memory, where it is relearned (and a stale stored one is
        // dropped here).
        self.learn_from_claims(key, &next.tokens);
        next.learned_lifetime = self
            .lifetimes
            .strong_of(key.org_id())
            .map(Duration::from_millis);
        // Nothing written under the lease follows the save unless introspection may add what
        // it learns: then the lease is released afterwards, as usual; otherwise the save
        // releases it (one round trip, on PostgreSQL one commit, fewer per refresh).
        let release = !self.policy.learn_from_introspection;
        let saved = if release {
            self.put_releasing(next.clone(), marked.version, lease)
                .await
        } else {
            self.put_retrying(next.clone(), marked.version, lease).await
        };
        match saved {
            Ok(version) => {
                next.version = version;
                if self.policy.learn_from_introspection {
                    self.introspect_saved(tenant, &mut next, lease).await;
                }
                self.install(tenant, &next);
                Counters::bump(&self.counters.refreshes);
                self.emit(key, EventKind::Refreshed { adopted: false });
                if rotated {
                    Counters::bump(&self.counters.rotations);
                    self.emit(key, EventKind::Rotated);
                }
                if let Some((from, to)) = moved {
                    tracing::info!(key = %key, from = %from, to = %to, "instance url changed");
                    self.emit(key, EventKind::InstanceUrlChanged { from, to });
                }
                Ok(Outcome::Refreshed)
            }
            Err(source) if source.kind() == StoreErrorKind::Conflict => {
                // The record was replaced while we refreshed (a new login): the stored tokens
                // are newer than ours.
                let stored = self.read(key).await?;
                self.install(tenant, &stored);
                Ok(Outcome::Adopted)
            }
            Err(source) => {
                tenant.keep_unsaved(next);
                Err(Error::Unsaved {
                    key: Box::new(key.clone()),
                    source: Box::new(source),
                })
            }
        }
    }

    /// Believes the lifetime an `exp` claim (`expires_in`, a JWT access token) gives.
    fn learn_from_claims(&self, key: &TokenKey, tokens: &TokenSet) {
        use sfauth_core::ExpirySource;
        let strong = matches!(
            tokens.expiry_source,
            Some(ExpirySource::ExpiresIn | ExpirySource::JwtExp | ExpirySource::Introspection)
        );
        if let (true, Some(expires), Some(issued)) = (strong, tokens.expires_at, tokens.issued_at) {
            // `exp` claims have whole seconds, counted from the issuing second.
            let seconds =
                (clock::to_ms(expires) / 1000).saturating_sub(clock::to_ms(issued) / 1000);
            let lifetime = seconds.saturating_mul(1000);
            self.lifetimes.strong(key.org_id(), lifetime);
        }
    }

    /// Asks Salesforce when the just saved access token expires, when the response did not
    /// say, and saves what it learned. It runs after the save, so a slow or failing
    /// introspection costs nothing but the knowledge.
    async fn introspect_saved(&self, tenant: &TenantState, saved: &mut TokenRecord, lease: &Lease) {
        use sfauth_core::ExpirySource;
        use sfauth_core::flows::TokenTypeHint;
        let key: &TokenKey = &tenant.key;
        if matches!(
            saved.tokens.expiry_source,
            Some(ExpirySource::ExpiresIn | ExpirySource::JwtExp)
        ) {
            return;
        }
        let token = sfauth_core::SecretValue::from(saved.tokens.access_token.clone());
        let introspection = match self
            .client
            .introspect(&*self.transport, &token, Some(TokenTypeHint::AccessToken))
            .await
        {
            Ok(introspection) => introspection,
            Err(error) => {
                tracing::debug!(key = %key, error = %error, "introspection failed; expiry stays unknown");
                return;
            }
        };
        let mut next = saved.clone();
        next.tokens.apply_introspection(&introspection);
        if next.tokens.expires_at == saved.tokens.expires_at {
            return;
        }
        self.learn_from_claims(key, &next.tokens);
        next.learned_lifetime = self
            .lifetimes
            .strong_of(key.org_id())
            .map(Duration::from_millis);
        match self
            .store
            .put(next.clone(), saved.version, Some(lease))
            .await
        {
            Ok(version) => {
                next.version = version;
                *saved = next;
            }
            Err(error) => {
                tracing::debug!(key = %key, error = %error, "cannot save the introspected expiry")
            }
        }
    }

    /// A put under the lease, retried a few times when the store itself stumbles (never on a
    /// conflict or a lost lease, which are answers, not accidents).
    async fn put_retrying(
        &self,
        record: TokenRecord,
        expected: u64,
        lease: &Lease,
    ) -> Result<u64, sfauth_storage::Error> {
        self.put_retried(record, expected, lease, false).await
    }

    /// [`put_retrying`](Self::put_retrying) that also releases the lease with the save
    /// ([`TokenStore::put_and_release`]); once saved, the lease is no longer this refresher's
    /// to release. A failed save keeps it, as `put_retrying` does.
    async fn put_releasing(
        &self,
        record: TokenRecord,
        expected: u64,
        lease: &Lease,
    ) -> Result<u64, sfauth_storage::Error> {
        let version = self.put_retried(record, expected, lease, true).await?;
        lock(&self.held).retain(|held| held.key != lease.key || held.fence != lease.fence);
        Ok(version)
    }

    async fn put_retried(
        &self,
        record: TokenRecord,
        expected: u64,
        lease: &Lease,
        release: bool,
    ) -> Result<u64, sfauth_storage::Error> {
        let pauses = Backoff::new(Duration::from_millis(50), Duration::from_millis(200));
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            let written = if release {
                self.store
                    .put_and_release(record.clone(), expected, lease)
                    .await
            } else {
                self.store.put(record.clone(), expected, Some(lease)).await
            };
            match written {
                Ok(version) => return Ok(version),
                Err(error)
                    if attempt < 3
                        && matches!(error.kind(), StoreErrorKind::Io | StoreErrorKind::Backend) =>
                {
                    tracing::warn!(key = %record.key, error = %error, "saving refreshed tokens failed; retrying");
                    tokio::time::sleep(pauses.ceiling(attempt.saturating_sub(1))).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn clear_mark(&self, tenant: &TenantState, marked: &mut TokenRecord, lease: &Lease) {
        marked.refresh_in_flight = None;
        match self
            .store
            .put(marked.clone(), marked.version, Some(lease))
            .await
        {
            Ok(version) => marked.version = version,
            Err(error) => {
                tracing::warn!(key = %tenant.key, error = %error, "cannot clear the refresh mark; the next refresher will be careful")
            }
        }
    }

    async fn mark_reauth(
        &self,
        tenant: &TenantState,
        mut record: TokenRecord,
        reason: String,
        cause: Option<sfauth_core::Cause>,
        lease: &Lease,
    ) -> Result<Outcome> {
        let expected = record.version;
        record.status = RecordStatus::ReauthRequired {
            reason: reason.clone(),
            since: SystemTime::now(),
        };
        record.refresh_in_flight = None;
        match self.store.put(record.clone(), expected, Some(lease)).await {
            Ok(version) => record.version = version,
            Err(error) => {
                tracing::warn!(key = %tenant.key, error = %error, "cannot store the re-authorization mark")
            }
        }
        self.install_reauth(tenant, &record, &reason, cause);
        Counters::bump(&self.counters.reauth_required);
        tracing::warn!(key = %tenant.key, reason = %reason, "re-authorization required");
        self.emit(
            &tenant.key,
            EventKind::ReauthRequired {
                reason: reason.clone(),
                cause,
            },
        );
        Err(Error::ReauthorizationRequired {
            key: Box::new((*tenant.key).clone()),
            reason,
            cause,
        })
    }

    /// The stored record of `key`; a missing one is [`Error::UnknownTenant`].
    pub(crate) async fn read(&self, key: &TokenKey) -> Result<TokenRecord> {
        self.store
            .get(key)
            .await
            .map_err(|source| Error::store(key, source))?
            .ok_or_else(|| Error::unknown_tenant(key))
    }

    /// The cached view of `record` for a tenant, at `generation`.
    pub(crate) fn cached_from(&self, record: &TokenRecord, generation: u64) -> Cached {
        let hint = self
            .lifetimes
            .get(record.key.org_id(), clock::precise_ms())
            .or_else(|| self.client.session_timeout().map(duration_ms));
        let mut cached = Cached::from_record(
            record,
            generation,
            hint,
            duration_ms(self.policy.margin),
            duration_ms(self.policy.jitter),
        );
        if matches!(cached.state, CachedState::Reauth(_)) && self.renewable(record) {
            // Marked for a login only because no renewal was known: now one is, so the next
            // call renews instead of failing. The old access token is not served meanwhile.
            cached.state = CachedState::Active;
            cached.refresh_at_ms = 0;
            cached.expires_at_ms = 0;
        }
        cached
    }

    /// The sealed view of a tenant listed by its header, at `generation`.
    pub(crate) fn cached_from_header(&self, header: &RecordHeader, generation: u64) -> Cached {
        let hint = self
            .lifetimes
            .get(header.key.org_id(), clock::precise_ms())
            .or_else(|| self.client.session_timeout().map(duration_ms));
        Cached::from_header(
            header,
            generation,
            hint,
            duration_ms(self.policy.margin),
            duration_ms(self.policy.jitter),
        )
    }

    /// Makes `record` the tenant's current token, with a new generation.
    pub(crate) fn install(&self, tenant: &TenantState, record: &TokenRecord) -> Arc<Cached> {
        let generation = tenant.current.load().generation.wrapping_add(1);
        tenant.set_current(Arc::new(self.cached_from(record, generation)))
    }

    /// Marks the tenant as needing a login, in memory.
    pub(crate) fn install_reauth(
        &self,
        tenant: &TenantState,
        record: &TokenRecord,
        reason: &str,
        cause: Option<sfauth_core::Cause>,
    ) {
        let mut cached = self.cached_from(record, tenant.current.load().generation.wrapping_add(1));
        cached.state = CachedState::Reauth(Box::new(Reauth {
            reason: reason.to_owned(),
            cause,
        }));
        tenant.set_current(Arc::new(cached));
    }

    pub(crate) fn emit(&self, key: &TokenKey, kind: EventKind) {
        // No subscriber is not an error.
        let _ = self.events.send(Event {
            key: key.clone(),
            kind,
        });
    }

    /// Whether a tenant without a refresh token whose record says it needs a login can be
    /// renewed now after all (its record was marked when no renewal was configured).
    pub(crate) fn renewable(&self, record: &TokenRecord) -> bool {
        record.tokens.refresh_token.is_none() && self.renewal_for(None, record).is_some()
    }

    /// How to renew `record`'s tenant without a refresh token: the tenant's own renewal, the
    /// one its record names (client credentials by itself, others through the resolver), or
    /// the manager's default.
    pub(crate) fn renewal_for(
        &self,
        own: Option<Renewal>,
        record: &TokenRecord,
    ) -> Option<Renewal> {
        own.or_else(|| {
            let hint = record.renewal.as_ref()?;
            self.renewal_resolver
                .as_ref()
                .and_then(|resolve| resolve(hint))
                .or_else(|| Renewal::without_credentials(hint))
        })
        .or_else(|| self.default_renewal.clone())
    }

    fn count_token_request(&self) {
        Counters::bump(&self.counters.token_requests);
        metrics::counter!(names::TOKEN_REQUESTS).increment(1);
    }
}

/// `error` with its sources and, when Salesforce named a cause, what to do about it.
pub(crate) fn describe(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    if let Some(cause) = error
        .cause()
        .filter(|cause| *cause != sfauth_core::Cause::Other)
    {
        text.push_str(" (");
        text.push_str(cause.fix());
        text.push(')');
    }
    text
}

/// A refusal's reason, with what the manager knows that Salesforce's words do not say: that
/// `expired access/refresh token` came after the refresh token had been idle past the limit, so
/// idleness (not a revocation) is the likely cause.
fn with_idle_evidence(reason: String, cause: Option<sfauth_core::Cause>, idle: &Idle) -> String {
    if cause != Some(sfauth_core::Cause::TokenExpiredOrRevoked) || !idle.is_past_limit() {
        return reason;
    }
    format!(
        "{reason}; the refresh token was {idle}, so it most likely expired for idleness (the background refresher's keep-alive prevents that)"
    )
}

#[cfg(test)]
mod tests {
    use sfauth_core::error::ServerError;
    use sfauth_core::http::{TransportError, TransportErrorKind};

    use super::*;

    #[test]
    fn an_expired_token_after_the_idle_limit_names_idleness() {
        let day = Duration::from_secs(24 * 3600);
        let now = SystemTime::now();
        let revoked = Some(sfauth_core::Cause::TokenExpiredOrRevoked);
        let limit = crate::idle::PARTNER_IDLE_LIMIT;
        let reason = with_idle_evidence(
            "refused".into(),
            revoked,
            &Idle::new(now - 31 * day, now, limit),
        );
        assert_eq!(
            reason,
            "refused; the refresh token was idle 31 days, past the 30-day idle limit, so it most likely expired for idleness (the background refresher's keep-alive prevents that)"
        );
        // A token used last week was revoked, not idle; nor is another cause about idleness.
        let week = Idle::new(now - 7 * day, now, limit);
        assert_eq!(
            with_idle_evidence("refused".into(), revoked, &week),
            "refused"
        );
        let old = Idle::new(now - 40 * day, now, limit);
        let inactive = Some(sfauth_core::Cause::UserInactive);
        assert_eq!(
            with_idle_evidence("refused".into(), inactive, &old),
            "refused"
        );
    }

    #[test]
    fn a_refusal_for_the_address_is_described_with_its_fix() {
        let identity: sfauth_core::IdentityUrl =
            "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK"
                .parse()
                .unwrap();
        let key = TokenKey::new(
            &sfauth_core::LoginHost::Production,
            &identity,
            "3MVG9",
            "default",
        );
        let error = Error::oauth(
            &key,
            ServerError::new(400, "invalid_grant", Some("ip restricted")).into(),
        );
        assert_eq!(error.kind(), ErrorKind::Config);
        assert_eq!(error.cause(), Some(sfauth_core::Cause::IpNotAllowed));
        let text = describe(&error);
        assert!(
            text.contains("server error invalid_grant: ip restricted"),
            "{text}"
        );
        assert!(
            text.contains(sfauth_core::Cause::IpNotAllowed.fix()),
            "{text}"
        );
    }

    fn status(code: u16) -> CoreError {
        CoreError::Status {
            status: code,
            retry_after: None,
            excerpt: "<html>Bad Gateway</html>".into(),
        }
    }

    fn server(code: u16, error: &str) -> CoreError {
        ServerError::new(code, error, Some("described")).into()
    }

    fn transport(kind: TransportErrorKind) -> CoreError {
        TransportError::new(kind, "failed").into()
    }

    #[test]
    fn only_salesforce_words_or_a_request_that_never_left_prove_a_token_unspent() {
        let cases = [
            // A gateway's own 5xx may come after Salesforce rotated.
            (status(502), Answer::MaybeSpent),
            (status(503), Answer::MaybeSpent),
            (status(504), Answer::MaybeSpent),
            (status(500), Answer::MaybeSpent),
            // Salesforce's own error document, whatever the status.
            (server(503, "server_error"), Answer::Unspent),
            (server(500, "unknown_error"), Answer::Unspent),
            (server(400, "invalid_request"), Answer::Unspent),
            (server(400, "invalid_grant"), Answer::Refused),
            // Rate limiting answers before anything is spent; other odd statuses are refusals.
            (status(429), Answer::Unspent),
            (status(404), Answer::Unspent),
            // No answer at all.
            (transport(TransportErrorKind::Timeout), Answer::MaybeSpent),
            (transport(TransportErrorKind::Connect), Answer::Unspent),
            (
                CoreError::Parse {
                    status: 200,
                    reason: "not json".into(),
                    excerpt: String::new(),
                },
                Answer::MaybeSpent,
            ),
            (CoreError::SignatureMismatch, Answer::MaybeSpent),
            // A gateway's own `{"error":…}` without a description, under a 5xx.
            (
                ServerError::new(502, "bad_gateway", None).into(),
                Answer::MaybeSpent,
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(classify(&error), expected, "{error}");
        }
    }

    #[test]
    fn triggers_have_stable_metric_names() {
        let names: Vec<_> = [
            Trigger::Expiring,
            Trigger::SessionExpired,
            Trigger::Forced,
            Trigger::Background,
        ]
        .iter()
        .map(|t| t.as_str())
        .collect();
        assert_eq!(
            names,
            ["expiring", "session_expired", "forced", "background"]
        );
    }
}
