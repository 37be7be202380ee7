//! [`MemoryStore`]: records in a map, for tests and for processes that keep nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sfauth_core::TokenKey;
use tokio::sync::broadcast;

use crate::error::{Error, Result};
use crate::lease::{LeaseState, check_key};
use crate::record::{
    EntryPage, Lease, ListPage, ListQuery, RecordHeader, StatusKind, TokenRecord, next_version,
};
use crate::store::{Changes, TokenStore, Watch};

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
    /// One channel per watched key; a write sends on it. Kept for the store's life, like
    /// the lease states: a few bytes per key ever watched.
    watchers: HashMap<String, tokio::sync::watch::Sender<()>>,
    /// The change feed's sender, made by the first [`TokenStore::changes`].
    feed: Option<broadcast::Sender<Arc<RecordHeader>>>,
}

impl Inner {
    fn changed(&self, name: &str) {
        if let Some(sender) = self.watchers.get(name) {
            sender.send_replace(());
        }
    }

    /// Announces the header of `record`, just written, to the change feed: only an active
    /// record's with no refresh in flight, as the feed's contract says.
    fn announce(&self, record: &TokenRecord) {
        if let Some(feed) = &self.feed
            && record.status.kind() == StatusKind::Active
            && record.refresh_in_flight.is_none()
        {
            // Nobody listening is no error: the feed is best effort.
            let _ = feed.send(Arc::new(RecordHeader::of(record)));
        }
    }
}

/// Headers the change feed keeps for a receiver that is behind.
const FEED_CAPACITY: usize = 1_024;

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

    async fn list_entries(&self, query: &ListQuery) -> Result<EntryPage> {
        // Records in memory are never sealed, so every one of them opens.
        self.list(query).await.map(EntryPage::from)
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
        inner.changed(&name);
        inner.announce(&record);
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
            return Err(Error::stale(&name, current, expected_version));
        }
        if let Some(lease) = lease {
            check_key(lease, &record.key)?;
            let held = inner
                .leases
                .get(&name)
                .is_some_and(|state| state.is_current(lease, SystemTime::now()));
            if !held {
                return Err(Error::lease_lost(&name));
            }
        }
        let version = next_version(expected_version)?;
        record.version = version;
        inner.changed(&name);
        inner.announce(&record);
        inner.records.insert(name, record);
        Ok(version)
    }

    async fn delete(&self, key: &TokenKey, expected_version: Option<u64>) -> Result<bool> {
        let name = key.to_string();
        let mut inner = self.lock();
        match (inner.records.get(&name), expected_version) {
            (None, _) => Ok(false),
            (Some(current), Some(expected)) if current.version != expected => {
                Err(Error::stale(&name, current.version, expected))
            }
            (Some(_), _) => {
                inner.changed(&name);
                Ok(inner.records.remove(&name).is_some())
            }
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
        let name = lease.key.to_string();
        let mut inner = self.lock();
        if let Some(state) = inner.leases.get_mut(&name) {
            state.release(lease);
            inner.changed(&name);
        }
        Ok(())
    }

    async fn lease(&self, key: &TokenKey) -> Result<Option<Lease>> {
        Ok(self
            .lock()
            .leases
            .get(&key.to_string())
            .and_then(|state| state.current_lease(key, SystemTime::now())))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        match self.lock().leases.get_mut(&lease.key.to_string()) {
            Some(state) => state.renew(lease, ttl, SystemTime::now()),
            None => Ok(None),
        }
    }

    async fn take_over(&self, stale: &Lease, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        match self.lock().leases.get_mut(&stale.key.to_string()) {
            Some(state) => state.take_over(stale, holder, ttl, SystemTime::now()),
            // Checked here too, so that a bad holder is refused whatever the lease's state.
            None => crate::lease::check_holder(holder).map(|()| None),
        }
    }

    async fn watch(&self, key: &TokenKey) -> Result<Watch> {
        let mut receiver = self
            .lock()
            .watchers
            .entry(key.to_string())
            .or_insert_with(|| tokio::sync::watch::channel(()).0)
            .subscribe();
        // Subscribing marks the current value seen, so only a later send wakes this watch.
        Ok(Watch::new(async move {
            // An error means the store was dropped: nothing more will change.
            let _ = receiver.changed().await;
        }))
    }

    fn changes(&self) -> Option<Changes> {
        let receiver = self
            .lock()
            .feed
            .get_or_insert_with(|| broadcast::Sender::new(FEED_CAPACITY))
            .subscribe();
        Some(Changes::new(receiver))
    }
}

#[cfg(test)]
mod tests {
    use sfauth_core::{AccessToken, LoginHost, TokenSet};

    use super::*;
    use crate::error::ErrorKind;

    fn record() -> TokenRecord {
        let identity = "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK"
            .parse()
            .unwrap();
        let tokens = TokenSet::new(
            AccessToken::new("token"),
            "https://acme.my.salesforce.com".parse().unwrap(),
            identity,
        );
        let key = TokenKey::new(&LoginHost::Production, &tokens.identity, "client", "a");
        TokenRecord::new(key, tokens, SystemTime::now())
    }

    #[tokio::test]
    async fn put_refuses_a_stale_version_and_an_exhausted_counter() {
        let store = MemoryStore::new();
        let record = record();
        let name = record.key.to_string();
        store.insert(record.clone()).await.unwrap();
        let stale = store.put(record.clone(), 7, None).await.unwrap_err();
        assert_eq!(stale.kind(), ErrorKind::Conflict);
        assert_eq!(
            stale.to_string(),
            format!("conflict: {name} is at version 1, not 7")
        );
        // Reaching u64::MAX through puts is out of reach, so the test sets it directly.
        if let Some(stored) = store.lock().records.get_mut(&name) {
            stored.version = u64::MAX;
        }
        let exhausted = store.put(record.clone(), u64::MAX, None).await.unwrap_err();
        assert_eq!(exhausted.kind(), ErrorKind::Corrupt);
        assert_eq!(
            store.get(&record.key).await.unwrap().map(|r| r.version),
            Some(u64::MAX),
            "nothing written"
        );
    }
}
