//! The refresh protocol: how one tenant's tokens are replaced without ever dropping or
//! re-spending a refresh token.
//!
//! 1. **Single flight in the process.** A per-tenant async mutex; a caller that waited on it and
//!    finds a new generation takes that result instead of refreshing again.
//! 2. **Single flight across processes.** The store's lease on the key. A caller that cannot get
//!    it polls the store and adopts the winner's tokens as soon as they land.
//! 3. **Write-ahead mark.** Before a refresh token is sent, the record is marked "refresh in
//!    flight" (holder, fence, time) under the lease. The mark is cleared only when Salesforce's
//!    answer proves the token unspent or the new tokens are saved. A refresher that finds a mark
//!    knows a rotation may have been lost and makes one careful attempt: if Salesforce refuses the
//!    token, the tenant needs re-authorization, with that cause.
//! 4. **Save before use.** New tokens are written with compare-and-swap under the lease before
//!    they are installed in the cache. If the store fails, they stay in memory (never handed out)
//!    and are saved first on the next call.
//! 5. **Re-spend only the provably unspent.** A refresh that Salesforce answered with a 5xx or
//!    429 may be sent again; one that may have reached Salesforce without an answer (timeout,
//!    broken connection, a 2xx we could not read) is never re-sent blindly.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use sfauth_core::{Error as CoreError, ErrorKind as CoreKind, RefreshToken, TokenKey, TokenSet};
use sfauth_storage::{ErrorKind as StoreErrorKind, InFlight, Lease, RecordStatus, TokenRecord};
use tracing::Instrument as _;

use crate::clock;
use crate::clock::duration_ms;
use crate::error::{Error, ErrorKind, Result};
use crate::events::EventKind;
use crate::manager::{Inner, check_identity, lock};
use crate::renewal::Renewal;
use crate::stats::{Counters, names};
use crate::tenant::{Cached, TenantState};

/// How a refresh under the lease ended, when it did not fail.
enum Outcome {
    /// New tokens were obtained and saved by this process.
    Refreshed,
    /// Another process's tokens were found in the store and installed.
    Adopted,
    /// Salesforce says another request is spending this refresh token: release the lease and
    /// wait for its result.
    WaitForOther,
}

enum Acquired {
    Lease(Lease),
    Adopted,
}

impl Inner {
    /// Refreshes `tenant` unless somebody already replaced the token of generation
    /// `seen_generation`.
    pub(crate) async fn refresh(
        &self,
        tenant: &Arc<TenantState>,
        seen_generation: u64,
        trigger: &'static str,
    ) -> Result<()> {
        let _single = tenant.refresh_lock.lock().await;
        let current = tenant.current.load_full();
        if current.generation != seen_generation {
            self.counters.coalesced();
            return match current.unavailable_error(&tenant.key) {
                Some(error) => Err(error),
                None => Ok(()),
            };
        }
        // Tokens waiting to be saved are never held back by the pause: saving them is urgent.
        if tenant.in_failure_backoff() && lock(&tenant.unsaved).is_none() {
            let (kind, message) = lock(&tenant.last_failure)
                .as_deref()
                .cloned()
                .unwrap_or((ErrorKind::Transient, "refresh failed".into()));
            return Err(Error::RecentlyFailed {
                key: Box::new((*tenant.key).clone()),
                kind,
                message,
            });
        }

        let span = tracing::info_span!(
            "sfauth.refresh",
            key = %tenant.key,
            trigger,
            outcome = tracing::field::Empty,
            cause = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = self
            .refresh_exclusive(tenant, &current)
            .instrument(span.clone())
            .await;
        let (outcome, cause) = match &result {
            Ok(Outcome::Refreshed) => ("refreshed", "none"),
            Ok(Outcome::Adopted) => ("adopted", "none"),
            Ok(Outcome::WaitForOther) => ("waited", "none"),
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
            "trigger" => trigger
        )
        .increment(1);
        metrics::histogram!(names::REFRESH_SECONDS).record(started.elapsed().as_secs_f64());

        match result {
            Ok(_) => {
                tenant.clear_failures();
                Ok(())
            }
            Err(error) => {
                if error.kind() != ErrorKind::ReauthorizationRequired {
                    self.note_failure(tenant, &error);
                }
                Err(error)
            }
        }
    }

    fn note_failure(&self, tenant: &TenantState, error: &Error) {
        Counters::bump(&self.counters.refresh_failures);
        let failures = tenant.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        let exponent = u32::try_from(failures.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(16);
        let pause = self
            .policy
            .failure_backoff
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.policy.max_failure_backoff);
        tenant
            .retry_at_ms
            .store(clock::precise_ms() + duration_ms(pause), Ordering::Release);
        *lock(&tenant.last_failure) = Some(Box::new((error.kind(), error.to_string())));
        tracing::warn!(key = %tenant.key, error = %error, retry_in_ms = duration_ms(pause), "refresh failed");
        self.emit(
            &tenant.key,
            EventKind::RefreshFailed {
                kind: error.kind(),
                message: error.to_string(),
            },
        );
    }

    async fn refresh_exclusive(
        &self,
        tenant: &Arc<TenantState>,
        current: &Cached,
    ) -> Result<Outcome> {
        let lease = match self.acquire_or_adopt(tenant, current).await? {
            Acquired::Lease(lease) => lease,
            Acquired::Adopted => return Ok(Outcome::Adopted),
        };
        let result = self.refresh_leased(tenant, current, &lease).await;
        if let Err(error) = self.store.release(&lease).await {
            tracing::warn!(key = %tenant.key, error = %error, "cannot release the refresh lease; it lapses on its own");
        }
        match result {
            Ok(Outcome::WaitForOther) => {
                // Our lease is released, so a refresher elsewhere can save its result.
                match self.acquire_or_adopt(tenant, current).await? {
                    Acquired::Adopted => Ok(Outcome::Adopted),
                    Acquired::Lease(lease) => {
                        let _ = self.store.release(&lease).await;
                        Err(Error::RefreshInProgress {
                            key: Box::new((*tenant.key).clone()),
                            waited: self.policy.lease_wait,
                        })
                    }
                }
            }
            other => other,
        }
    }

    /// Takes the lease, or waits for its holder's result and adopts it.
    async fn acquire_or_adopt(&self, tenant: &TenantState, current: &Cached) -> Result<Acquired> {
        let key: &TokenKey = &tenant.key;
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let lease = self
                .store
                .try_acquire(key, &self.holder, self.policy.lease_ttl)
                .await
                .map_err(|source| Error::store(&tenant.key, source))?;
            if let Some(lease) = lease {
                return Ok(Acquired::Lease(lease));
            }
            let record = self
                .store
                .get(key)
                .await
                .map_err(|source| Error::store(&tenant.key, source))?;
            if let Some(record) = record
                && self.adopt_if_newer(tenant, current, &record)
            {
                return Ok(Acquired::Adopted);
            }
            let waited = started.elapsed();
            if waited >= self.policy.lease_wait {
                return Err(Error::RefreshInProgress {
                    key: Box::new(key.clone()),
                    waited,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Installs `record` if another process stored newer tokens (or a re-authorization mark)
    /// since `current` was cached.
    fn adopt_if_newer(&self, tenant: &TenantState, current: &Cached, record: &TokenRecord) -> bool {
        let newer = record.version > current.version
            && (record.tokens.access_token != current.access_token
                || record.status != RecordStatus::Active);
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
    ) -> Result<Outcome> {
        let key: &TokenKey = &tenant.key;
        let record = self.read(key).await?;
        let pending = lock(&tenant.unsaved).take();
        if let Some(pending) = pending {
            return self.save_pending(tenant, record, *pending, lease).await;
        }
        if self.adopt_if_newer(tenant, current, &record) {
            return Ok(Outcome::Adopted);
        }
        if matches!(record.status, RecordStatus::ReauthRequired { .. }) {
            // The record's status becomes the cached state, so the error comes from there.
            let cached = self.install(tenant, &record);
            return Err(cached
                .unavailable_error(key)
                .unwrap_or_else(|| Error::unknown_tenant(key)));
        }
        match record.tokens.refresh_token.clone() {
            Some(refresh_token) => self.spend(tenant, record, refresh_token, lease).await,
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
                    source,
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
    ) -> Result<Outcome> {
        let key: &TokenKey = &tenant.key;
        let interrupted = record.refresh_in_flight.clone();
        if let Some(mark) = &interrupted {
            tracing::warn!(key = %key, holder = %mark.holder, fence = mark.fence, "an earlier refresh was interrupted; making one careful attempt");
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

        let mut attempt = 0;
        loop {
            attempt += 1;
            self.count_token_request();
            let error = match self.client.refresh(&*self.transport, &refresh_token).await {
                Ok(tokens) => return self.save_refreshed(tenant, marked, tokens, lease).await,
                Err(error) => error,
            };
            if error.kind() == CoreKind::ReauthorizationRequired {
                let cause = error.server().map(|server| server.cause());
                let reason = match &interrupted {
                    Some(_) => format!(
                        "an interrupted refresh may have rotated the refresh token, and the stored one was refused: {error}"
                    ),
                    None => error.to_string(),
                };
                return self.mark_reauth(tenant, marked, reason, cause, lease).await;
            }
            if may_have_been_spent(&error) {
                // Salesforce may have consumed the token without us seeing the answer: keep the
                // mark so that the next refresher knows, and do not send it again now.
                return Err(Error::oauth(&tenant.key, error));
            }
            if error.kind() == CoreKind::RefreshInProgress {
                self.clear_mark(tenant, &mut marked, lease).await;
                return Ok(Outcome::WaitForOther);
            }
            if let Some(pause) = self.retry_pause(&error, attempt)
                && interrupted.is_none()
            {
                tokio::time::sleep(pause).await;
                continue;
            }
            // Salesforce answered, so the token was not consumed: lift the mark.
            self.clear_mark(tenant, &mut marked, lease).await;
            return Err(Error::oauth(&tenant.key, error));
        }
    }

    /// Renews a tenant without a refresh token by running its own flow again.
    async fn renew(
        &self,
        tenant: &TenantState,
        record: TokenRecord,
        lease: &Lease,
    ) -> Result<Outcome> {
        let renewal = lock(&tenant.renewal)
            .as_deref()
            .cloned()
            .or_else(|| self.default_renewal.clone());
        let Some(renewal) = renewal else {
            let reason =
                "the tokens have no refresh token and no renewal flow is configured".to_owned();
            return self.mark_reauth(tenant, record, reason, None, lease).await;
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.count_token_request();
            let transport = &*self.transport;
            let result = match &renewal {
                Renewal::ClientCredentials => self.client.client_credentials(transport).await,
                Renewal::JwtBearer(jwt) => self.client.jwt_bearer(transport, jwt).await,
                Renewal::Password { username, password } => {
                    self.client.password(transport, username, password).await
                }
            };
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
            .backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        let pause = error.retry_after().unwrap_or(backoff);
        // Waiting minutes while holding the lease would stall every caller; the failure backoff
        // takes over instead.
        (pause <= self.policy.lease_ttl / 4).then_some(pause)
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
        if let Err(error) = check_identity(key, &tokens) {
            // Tokens of another org or user must never be stored under this key.
            let mut marked = marked;
            self.clear_mark(tenant, &mut marked, lease).await;
            return Err(error);
        }
        let mut tokens = tokens;
        if self.policy.learn_from_introspection {
            self.learn_by_introspection(key, &mut tokens).await;
        }
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
        next.refresh_count += 1;
        if let Some(ms) = self.lifetimes.pin().get(key.org_id()) {
            next.learned_lifetime = Some(Duration::from_millis(*ms));
        }
        match self.put_retrying(next.clone(), marked.version, lease).await {
            Ok(version) => {
                next.version = version;
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
                    source,
                })
            }
        }
    }

    /// Asks Salesforce when the new access token expires, when the response did not say, and
    /// remembers the lifetime for the org. A failure here costs nothing but the knowledge.
    async fn learn_by_introspection(&self, key: &sfauth_core::TokenKey, tokens: &mut TokenSet) {
        use sfauth_core::ExpirySource;
        use sfauth_core::flows::TokenTypeHint;
        let strong = matches!(
            tokens.expiry_source,
            Some(ExpirySource::ExpiresIn | ExpirySource::JwtExp)
        );
        if strong {
            return;
        }
        let token = sfauth_core::SecretValue::from(tokens.access_token.clone());
        match self
            .client
            .introspect(&*self.transport, &token, Some(TokenTypeHint::AccessToken))
            .await
        {
            Ok(introspection) => {
                tokens.apply_introspection(&introspection);
                if let (Some(exp), Some(issued)) = (introspection.exp, tokens.issued_at) {
                    // `exp` has whole seconds, counted from the issuing second.
                    let issued_secs = clock::to_ms(issued) / 1000;
                    let lifetime = exp.saturating_sub(issued_secs).saturating_mul(1000);
                    if lifetime > 0 {
                        self.lifetimes.pin().insert(key.org_id().clone(), lifetime);
                    }
                }
            }
            Err(error) => {
                tracing::debug!(key = %key, error = %error, "introspection failed; expiry stays unknown")
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
        let mut pause = Duration::from_millis(50);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.store.put(record.clone(), expected, Some(lease)).await {
                Ok(version) => return Ok(version),
                Err(error)
                    if attempt < 3
                        && matches!(error.kind(), StoreErrorKind::Io | StoreErrorKind::Backend) =>
                {
                    tracing::warn!(key = %record.key, error = %error, "saving refreshed tokens failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
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

    fn count_token_request(&self) {
        Counters::bump(&self.counters.token_requests);
        metrics::counter!(names::TOKEN_REQUESTS).increment(1);
    }
}

/// Whether Salesforce may have consumed the refresh token although we saw no usable answer.
fn may_have_been_spent(error: &CoreError) -> bool {
    match error {
        CoreError::Transport(transport) => !transport.kind().never_sent(),
        CoreError::Parse { status, .. } => (200..300).contains(status),
        CoreError::SignatureMismatch => true,
        _ => false,
    }
}
