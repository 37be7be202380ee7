//! The lease rules shared by the backends that keep a key's lease as one value (memory, file):
//! who may take it, how the fence grows, when a lease is still current.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sfauth_core::TokenKey;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
use crate::crypto::Keyring;
use crate::error::{Error, Result};
use crate::record::Lease;

/// One key's lease: the last fence ever issued and the current holder, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LeaseState {
    /// The greatest fence issued for the key so far; never decreases.
    pub(crate) last_fence: u64,
    /// The lease issued last, unless it was released. It may have expired.
    pub(crate) current: Option<Held>,
}

/// A lease as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Held {
    pub(crate) holder: String,
    pub(crate) fence: u64,
    pub(crate) expires_at: SystemTime,
}

pub(crate) fn check_holder(holder: &str) -> Result<()> {
    if holder.is_empty() {
        return Err(Error::config("a lease holder name must not be empty"));
    }
    Ok(())
}

/// Refuses a write conditional on `lease` when the lease covers another key than `key`.
pub(crate) fn check_key(lease: &Lease, key: &TokenKey) -> Result<()> {
    if lease.key != *key {
        return Err(Error::lease_lost(key));
    }
    Ok(())
}

pub(crate) fn expiry(now: SystemTime, ttl: Duration) -> Result<SystemTime> {
    now.checked_add(ttl)
        .ok_or_else(|| Error::config("lease ttl is too large"))
}

impl LeaseState {
    /// Takes the lease for `holder` if it is free, expired or already theirs (a renewal keeps
    /// the fence). Returns `None`, changing nothing, when somebody else holds it.
    pub(crate) fn try_acquire(
        &mut self,
        key: &TokenKey,
        holder: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Option<Lease>> {
        check_holder(holder)?;
        let expires_at = expiry(now, ttl)?;
        let fence = match &self.current {
            Some(held) if held.expires_at > now && held.holder != holder => return Ok(None),
            Some(held) if held.expires_at > now => held.fence,
            _ => self.next_fence()?,
        };
        self.last_fence = self.last_fence.max(fence);
        self.current = Some(Held {
            holder: holder.to_owned(),
            fence,
            expires_at,
        });
        Ok(Some(Lease {
            key: key.clone(),
            holder: holder.to_owned(),
            fence,
            expires_at,
        }))
    }

    /// The current lease of `key`, unless it was released or has expired at `now`.
    pub(crate) fn current_lease(&self, key: &TokenKey, now: SystemTime) -> Option<Lease> {
        self.current
            .as_ref()
            .filter(|held| held.expires_at > now)
            .map(|held| Lease {
                key: key.clone(),
                holder: held.holder.clone(),
                fence: held.fence,
                expires_at: held.expires_at,
            })
    }

    /// Extends `lease` to `now + ttl`, keeping its fence, if it is still the current, unexpired
    /// lease. Returns `None`, changing nothing, otherwise.
    pub(crate) fn renew(
        &mut self,
        lease: &Lease,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Option<Lease>> {
        let expires_at = expiry(now, ttl)?;
        if !self.is_current(lease, now) {
            return Ok(None);
        }
        self.current = Some(Held {
            holder: lease.holder.clone(),
            fence: lease.fence,
            expires_at,
        });
        Ok(Some(Lease {
            expires_at,
            ..lease.clone()
        }))
    }

    /// Gives the lease to `holder` with a new fence if the current lease is exactly `stale`
    /// (same holder and fence), expired or not. Returns `None`, changing nothing, when the
    /// lease is free or anybody else's.
    pub(crate) fn take_over(
        &mut self,
        stale: &Lease,
        holder: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Option<Lease>> {
        check_holder(holder)?;
        let expires_at = expiry(now, ttl)?;
        let matches = self
            .current
            .as_ref()
            .is_some_and(|held| held.holder == stale.holder && held.fence == stale.fence);
        if !matches {
            return Ok(None);
        }
        let fence = self.next_fence()?;
        self.last_fence = fence;
        self.current = Some(Held {
            holder: holder.to_owned(),
            fence,
            expires_at,
        });
        Ok(Some(Lease {
            key: stale.key.clone(),
            holder: holder.to_owned(),
            fence,
            expires_at,
        }))
    }

    /// The fence after every fence issued so far. Checked: a stored counter at its end (a
    /// damaged or hand-made lease file; 2^64 acquisitions are out of reach) must not wrap to
    /// a fence that was issued before.
    fn next_fence(&self) -> Result<u64> {
        self.last_fence
            .checked_add(1)
            .ok_or_else(|| Error::corrupt("the lease's fence counter is exhausted"))
    }

    /// Whether `lease` is the current, unexpired lease.
    pub(crate) fn is_current(&self, lease: &Lease, now: SystemTime) -> bool {
        self.current.as_ref().is_some_and(|held| {
            held.holder == lease.holder && held.fence == lease.fence && held.expires_at > now
        })
    }

    /// Frees the lease if `lease` is the current one (expired or not); returns whether it did.
    pub(crate) fn release(&mut self, lease: &Lease) -> bool {
        let current = self
            .current
            .as_ref()
            .is_some_and(|held| held.holder == lease.holder && held.fence == lease.fence);
        if current {
            self.current = None;
        }
        current
    }
}

/// For the SQL backends, whose columns hold `i64`: the new `version` and the lease's fence as
/// the columns hold them, or `None` when either does not fit. A record at `i64::MAX` is at the
/// end of its counter, and a fence the column cannot hold was never issued; either way nothing
/// may be written, and [`refusal`] (after a read) says why.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn sql_columns(version: u64, lease: Option<&Lease>) -> Option<(i64, Option<i64>)> {
    let version = i64::try_from(version).ok()?;
    let fence = lease
        .map(|lease| i64::try_from(lease.fence))
        .transpose()
        .ok()?;
    Some((version, fence))
}

/// Why a conditional put of `name` at `expected` changed nothing, from the row as it is now
/// (`stored`: its version and key id, `None` if there is none): missing, stale, at the end of
/// its version counter, sealed with a key the keyring lacks, or (all else holding) the lease
/// was lost.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn refusal(
    name: &str,
    stored: Option<(i64, &str)>,
    expected: u64,
    keyring: &Keyring,
) -> Error {
    let Some((current, key_id)) = stored else {
        return Error::not_found(&name);
    };
    if u64::try_from(current).ok() != Some(expected) {
        Error::stale(&name, current, expected)
    } else if current == i64::MAX {
        Error::corrupt(format!("{name} is at the end of its version counter"))
    } else if !keyring.knows(key_id) {
        Error::unknown_key(&name, key_id)
    } else {
        Error::lease_lost(&name)
    }
}

/// The error of an SQL store's statement that computes `last_fence + 1` when the database
/// refused the sum: the fence counter is at its end, which 2^63 acquisitions cannot reach (a
/// damaged or hand-made row). Reported as damage, never wrapped, and never as a backend failure
/// that a caller would retry.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn fence_exhausted(store: &str, key: &TokenKey, error: sqlx::Error) -> Error {
    Error::with_source(
        crate::ErrorKind::Corrupt,
        format!("{store}: the lease's fence counter of {key} is exhausted"),
        error,
    )
}
