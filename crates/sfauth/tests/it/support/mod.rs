//! Test support shared by the manager's scripted tests: a store that forwards every call to a
//! `MemoryStore` and lets a test step into puts and deletes (and count header reads and lease
//! attempts).

use std::time::Duration;

use async_trait::async_trait;
use sfauth::MemoryStore;
use sfauth::storage::{
    Changes, Lease, ListPage, ListQuery, RecordHeader, Result, TokenRecord, TokenStore,
};
use sfauth_core::TokenKey;

/// What a test does before a put or a delete reaches the store.
#[async_trait]
pub(crate) trait Intercept: Send + Sync + 'static {
    /// Runs before `record` is put; an error fails the put instead.
    async fn put(&self, _record: &TokenRecord) -> Result<()> {
        Ok(())
    }

    /// Runs before a delete.
    async fn delete(&self) {}

    /// Runs before a header read.
    fn header(&self) {}

    /// Runs before a lease attempt.
    fn try_acquire(&self) {}
}

/// A [`MemoryStore`] behind an [`Intercept`].
pub(crate) struct Intercepted<I> {
    pub(crate) inner: MemoryStore,
    pub(crate) intercept: I,
}

impl<I> Intercepted<I> {
    pub(crate) fn new(intercept: I) -> Self {
        Self {
            inner: MemoryStore::new(),
            intercept,
        }
    }
}

#[async_trait]
impl<I: Intercept> TokenStore for Intercepted<I> {
    async fn get(&self, key: &TokenKey) -> Result<Option<TokenRecord>> {
        self.inner.get(key).await
    }
    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        self.inner.list(query).await
    }
    async fn header(&self, key: &TokenKey) -> Result<Option<RecordHeader>> {
        self.intercept.header();
        self.inner.header(key).await
    }
    async fn insert(&self, record: TokenRecord) -> Result<u64> {
        self.inner.insert(record).await
    }
    async fn put<'a>(
        &self,
        record: TokenRecord,
        expected_version: u64,
        lease: Option<&'a Lease>,
    ) -> Result<u64> {
        self.intercept.put(&record).await?;
        self.inner.put(record, expected_version, lease).await
    }
    async fn delete(&self, key: &TokenKey, expected: Option<u64>) -> Result<bool> {
        self.intercept.delete().await;
        self.inner.delete(key, expected).await
    }
    async fn try_acquire(
        &self,
        key: &TokenKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        self.intercept.try_acquire();
        self.inner.try_acquire(key, holder, ttl).await
    }
    async fn release(&self, lease: &Lease) -> Result<()> {
        self.inner.release(lease).await
    }
    async fn lease(&self, key: &TokenKey) -> Result<Option<Lease>> {
        self.inner.lease(key).await
    }
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        self.inner.renew(lease, ttl).await
    }
    async fn take_over(&self, stale: &Lease, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        self.inner.take_over(stale, holder, ttl).await
    }
    fn changes(&self) -> Option<Changes> {
        self.inner.changes()
    }
}
