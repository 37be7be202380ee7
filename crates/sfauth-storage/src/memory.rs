//! [`MemoryStore`]: records in a map, for tests and for processes that keep nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sfauth_core::TokenKey;

use crate::error::{Error, Result};
use crate::lease::LeaseState;
use crate::record::{Lease, ListPage, ListQuery, TokenRecord};
use crate::store::TokenStore;

/// A [`TokenStore`] in memory: one process, nothing survives it. Always available.
///
/// Every operation takes one lock for its whole read-check-write, so the contract holds
/// between tasks and threads of the process. Clone it through an `Arc` to share it.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Keyed by the key's string form, which is also the listing order.
    records: BTreeMap<String, TokenRecord>,
    leases: HashMap<String, LeaseState>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the maps consistent before anything can panic, so a
        // poisoned lock holds good data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn get(&self, key: &TokenKey) -> Result<Option<TokenRecord>> {
        Ok(self.lock().records.get(&key.to_string()).cloned())
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        let limit = query.effective_limit();
        let inner = self.lock();
        let matches = inner
            .records
            .iter()
            .filter(|(key, _)| query.is_after_cursor(key))
            .filter(|(_, record)| query.matches(&record.key, record.status.kind()))
            .take(limit.saturating_add(1))
            .map(|(_, record)| record.clone())
            .collect();
        Ok(ListPage::from_matches(matches, limit))
    }

    async fn insert(&self, mut record: TokenRecord) -> Result<u64> {
        let name = record.key.to_string();
        let mut inner = self.lock();
        if inner.records.contains_key(&name) {
            return Err(Error::conflict(format!(
                "a record for {name} already exists"
            )));
        }
        record.version = 1;
        inner.records.insert(name, record);
        Ok(1)
    }

    async fn put<'a>(
        &self,
        mut record: TokenRecord,
        expected_version: u64,
        lease: Option<&'a Lease>,
    ) -> Result<u64> {
        let name = record.key.to_string();
        let mut inner = self.lock();
        let current = match inner.records.get(&name) {
            Some(current) => current.version,
            None => return Err(Error::not_found(&name)),
        };
        if current != expected_version {
            return Err(Error::conflict(format!(
                "{name} is at version {current}, not {expected_version}"
            )));
        }
        if let Some(lease) = lease {
            let held = inner.leases.get(&name).is_some_and(|state| {
                lease.key == record.key && state.is_current(lease, SystemTime::now())
            });
            if !held {
                return Err(Error::lease_lost(&name));
            }
        }
        let version = expected_version + 1;
        record.version = version;
        inner.records.insert(name, record);
        Ok(version)
    }

    async fn delete(&self, key: &TokenKey, expected_version: Option<u64>) -> Result<bool> {
        let name = key.to_string();
        let mut inner = self.lock();
        match (inner.records.get(&name), expected_version) {
            (None, _) => Ok(false),
            (Some(current), Some(expected)) if current.version != expected => Err(Error::conflict(
                format!("{name} is at version {}, not {expected}", current.version),
            )),
            (Some(_), _) => Ok(inner.records.remove(&name).is_some()),
        }
    }

    async fn try_acquire(
        &self,
        key: &TokenKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        let mut inner = self.lock();
        inner
            .leases
            .entry(key.to_string())
            .or_default()
            .try_acquire(key, holder, ttl, SystemTime::now())
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        if let Some(state) = self.lock().leases.get_mut(&lease.key.to_string()) {
            state.release(lease);
        }
        Ok(())
    }
}
