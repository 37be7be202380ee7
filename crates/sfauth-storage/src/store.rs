//! The [`TokenStore`] trait every backend implements, and [`TokenStoreExt`], its helpers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sfauth_core::TokenKey;

use crate::error::Result;
use crate::record::{EntryPage, HeaderPage, Lease, ListPage, ListQuery, RecordHeader, TokenRecord};

/// Durable, versioned storage of [`TokenRecord`]s, keyed by [`TokenKey`], with a per-key refresh
/// lease.
///
/// Object-safe: hold it as `Arc<dyn TokenStore>`.
///
/// # Contract
///
/// Every backend promises the following, and `sfauth_storage::conformance` checks it. A
/// "version" is a per-key counter: `1` after [`insert`](Self::insert), `+1` on every successful
/// [`put`](Self::put).
///
/// - [`get`](Self::get) returns the latest committed version, never an older one once a newer
///   write has returned (read-your-writes and monotonic reads, across handles and processes on
///   the same data). A record that cannot be decoded is an error
///   ([`Corrupt`](crate::ErrorKind::Corrupt) or [`WrongKey`](crate::ErrorKind::WrongKey)) and is
///   left untouched.
/// - [`list`](Self::list) returns the matching records in the order of the key's string form,
///   at most the query's limit, and a cursor for the next page. Paging through a set of keys
///   that does not change meanwhile yields each key exactly once. Each record is the latest
///   version at the time it was read (a page is not a snapshot across keys). An undecodable
///   matching record fails the call.
/// - [`list_entries`](Self::list_entries) pages exactly as `list` does (same filters on the
///   clear columns, same order, same cursors), but yields each matching key with its record or
///   the error opening it gave: a record sealed with another key or damaged is an entry
///   ([`WrongKey`](crate::ErrorKind::WrongKey), [`Corrupt`](crate::ErrorKind::Corrupt)), not a
///   failed call, and is left untouched. Only a key that cannot be read at all (such as a file
///   store's record file whose clear head is damaged) fails the call.
/// - [`header`](Self::header) returns the header of the latest committed version, as `get`
///   would read it (`None` for a missing key): key, version, status and times agree with the
///   record's to the millisecond. A header that carries its record carries that version; a
///   record that is not active, or that carries a refresh-in-flight mark, always comes with its
///   record, so that a header without one is of an active record whose tokens are as stored.
/// - [`insert`](Self::insert) stores the record only if the key is absent, at version 1; an
///   existing key is [`Conflict`](crate::ErrorKind::Conflict).
/// - [`put`](Self::put) is compare-and-swap: it replaces the record only if the stored version
///   is `expected_version`, and then stores it at `expected_version + 1`. Of many concurrent
///   puts on one version exactly one succeeds. A stale version is
///   [`Conflict`](crate::ErrorKind::Conflict), a missing key
///   [`NotFound`](crate::ErrorKind::NotFound); with `Some(lease)`, the write also requires that
///   lease (holder and fence) to be the key's current, unexpired lease, else
///   [`LeaseLost`](crate::ErrorKind::LeaseLost). A failed put changes nothing. The `version`
///   field of the record passed in is ignored.
/// - [`put_and_release`](Self::put_and_release) is `put` under the lease followed by
///   `release` of it: when it returns a version, the record is written and the lease is freed
///   (or, for a backend that cannot do both at once, lapses at its expiry); when it fails,
///   nothing changed and the lease is still held, as after a failed `put`.
/// - [`delete`](Self::delete) removes the record (only at `expected_version` when given; a
///   different version is [`Conflict`](crate::ErrorKind::Conflict)) and returns whether there
///   was one. It does not reset the key's fence.
/// - [`try_acquire`](Self::try_acquire) gives at most one holder at a time a lease on a key (the
///   key needs no record). A free or expired lease is taken, with a fence strictly greater than
///   any fence ever issued for that key (persisted: it survives restarts, release, expiry and
///   deletion). The current holder asking again (before expiry) renews: same fence, expiry
///   set to now + `ttl`. Anybody else
///   gets `None` while the lease is live.
/// - [`release`](Self::release) frees the lease if it is still the current one (same holder and
///   fence); otherwise it does nothing.
/// - [`lease`](Self::lease) returns the key's current lease (holder, fence, expiry) while it is
///   unexpired, `None` when it is free, released or expired. It changes nothing.
/// - [`renew`](Self::renew) extends a lease: if it is still the key's current, unexpired lease
///   (same holder and fence), its expiry becomes now + `ttl` and its fence stays. Otherwise
///   (expired, released, taken over) it returns `None` and changes nothing; a write
///   conditional on that lease then fails with [`LeaseLost`](crate::ErrorKind::LeaseLost).
/// - [`take_over`](Self::take_over) replaces the key's current lease if it is still exactly
///   `stale` (same holder and fence), expired or not, with a lease for `holder` whose fence is
///   strictly greater than any fence ever issued for the key. Of many concurrent take-overs of
///   one lease exactly one succeeds. When the current lease is anything else, free included,
///   it returns `None` and changes nothing. Writes conditional on `stale` fail with
///   [`LeaseLost`](crate::ErrorKind::LeaseLost) afterwards, and its holder's
///   [`renew`](Self::renew) and [`release`](Self::release) no longer touch the lease.
///
/// Writes are durable when they return (file and SQLite backends sync to disk). Times are the
/// wall clock of the machine doing the operation: processes sharing a store need roughly
/// synchronised clocks for lease expiry.
///
/// # Wrappers
///
/// A wrapper (metrics, tracing, caching) implements every method by forwarding; the helpers of
/// [`TokenStoreExt`] come for free through its blanket impl, so it cannot forget one. A wrapper
/// that does not forward [`list_entries`](TokenStore::list_entries) gets its default, built on
/// `list`, under which one unreadable record fails the whole listing again; one that does not
/// forward [`list_headers`](TokenStore::list_headers) or [`header`](TokenStore::header) still
/// works, but opens every record the inner store would have answered for by its header. A caching
/// wrapper must not serve a read from cache after another handle may have written: the contract
/// above is about the latest version.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// The record for `key` at its latest version, or `None`.
    async fn get(&self, key: &TokenKey) -> Result<Option<TokenRecord>>;

    /// One page of the records matching `query`, in key order.
    async fn list(&self, query: &ListQuery) -> Result<ListPage>;

    /// One page of the keys matching `query`, in key order, each with its record or the error
    /// opening it gave, so that one unreadable record does not hide the others.
    ///
    /// Every backend of this crate implements it. The default, for stores written before it
    /// existed, is [`list`](Self::list)'s page, which an unreadable record still fails.
    async fn list_entries(&self, query: &ListQuery) -> Result<EntryPage> {
        self.list(query).await.map(EntryPage::from)
    }

    /// One page of the headers of the records matching `query` (key, version, status and the
    /// times their tokens fall due by), paged exactly as [`list`](Self::list) pages, for a warm
    /// start that opens each record on its first use instead of all of them at once.
    ///
    /// A backend that keeps these fields in clear (SQLite) answers without decrypting; a
    /// header it cannot trust (a row from before the fields existed, or written by an older
    /// version since) or of a record that is not active comes with its opened record in
    /// [`RecordHeader::record`](crate::RecordHeader::record). The default is
    /// [`list`](Self::list)'s page, every header carrying its record, so it fails as `list`
    /// does on an unreadable record.
    async fn list_headers(&self, query: &ListQuery) -> Result<HeaderPage> {
        self.list(query).await.map(HeaderPage::from)
    }

    /// The header of `key`'s latest record (key, version, status and the times its tokens fall
    /// due by), or `None`: how a process that caches the tenant learns that another one stored
    /// newer tokens, and when they fall due, without opening the record.
    ///
    /// A backend that keeps a clear header beside each record (Redis) answers without
    /// decrypting, unless the record is not active, carries a refresh-in-flight mark, or has no
    /// header it can trust: then, as the default ([`get`](Self::get)) always does, the header
    /// carries the opened record in [`RecordHeader::record`](crate::RecordHeader::record).
    async fn header(&self, key: &TokenKey) -> Result<Option<RecordHeader>> {
        Ok(self.get(key).await?.map(RecordHeader::with_record))
    }

    /// Stores `record` under `record.key` if the key is absent; returns the new version (1).
    async fn insert(&self, record: TokenRecord) -> Result<u64>;

    /// Replaces the record under `record.key` if it is at `expected_version` (and, with a lease,
    /// if that lease is still current); returns the new version.
    async fn put<'a>(
        &self,
        record: TokenRecord,
        expected_version: u64,
        lease: Option<&'a Lease>,
    ) -> Result<u64>;

    /// [`put`](Self::put) under `lease`, then [`release`](Self::release) of it, in one atomic
    /// step where the backend has one (one script, one statement): how a refresh ends, saving
    /// the new tokens and letting the lease go in one round trip (on PostgreSQL, one commit
    /// instead of two).
    ///
    /// Fails as `put` fails, changing nothing and keeping the lease, so that the caller may
    /// retry the save under it. The default is `put`, then `release`, whose failure it leaves
    /// alone: the save, which is what counts, is done, and a lease not released lapses at its
    /// expiry.
    async fn put_and_release<'a>(
        &self,
        record: TokenRecord,
        expected_version: u64,
        lease: &'a Lease,
    ) -> Result<u64> {
        let version = self.put(record, expected_version, Some(lease)).await?;
        // Not an error of this call: see above.
        let _ = self.release(lease).await;
        Ok(version)
    }

    /// Removes the record for `key` (only at `expected_version`, when given); returns whether
    /// one was removed.
    async fn delete(&self, key: &TokenKey, expected_version: Option<u64>) -> Result<bool>;

    /// Takes or renews the refresh lease on `key` for `ttl`; `None` when somebody else holds it.
    async fn try_acquire(
        &self,
        key: &TokenKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>>;

    /// Frees `lease` if it is still the current lease of its key.
    async fn release(&self, lease: &Lease) -> Result<()>;

    /// The current, unexpired lease on `key`, or `None` when nobody holds it.
    ///
    /// For diagnostics ("held by whom, until when") and take-over decisions; the answer may be
    /// stale by the time it is used, so act on it only through [`take_over`](Self::take_over),
    /// which checks again atomically.
    async fn lease(&self, key: &TokenKey) -> Result<Option<Lease>>;

    /// Extends `lease` to now + `ttl` (same fence) if it is still the current, unexpired lease
    /// of its key; `None`, changing nothing, if it is not.
    ///
    /// A holder renews while its work is really running, so that a short `ttl` can both cover
    /// a slow refresh and let a dead holder's lease lapse quickly. `None` means the lease is
    /// lost: stop, because a write conditional on it will fail.
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>>;

    /// Gives the lease on `stale.key` to `holder` for `ttl`, with a fence greater than any
    /// issued before, if the key's current lease is still exactly `stale` (same holder and
    /// fence), even though it has not expired; `None`, changing nothing, otherwise (free
    /// included: use [`try_acquire`](Self::try_acquire) then).
    ///
    /// Only for a caller that has proof the holder of `stale` is dead (such as a process on
    /// this host that no longer exists): a live holder loses its lease, and its conditional
    /// writes fail with [`LeaseLost`](crate::ErrorKind::LeaseLost).
    async fn take_over(&self, stale: &Lease, holder: &str, ttl: Duration) -> Result<Option<Lease>>;

    /// A [`Watch`] on `key`: it resolves when a write to `key` (insert, put, delete, release
    /// of its lease) may have happened after this call returned.
    ///
    /// Lets a process that lost the lease learn that the winner's tokens are stored without
    /// polling: watch first, then read, then wait on the watch (a write between the read and
    /// the wait is not missed, because the watch was registered before the read). Backends
    /// with a notification channel (Redis pub/sub, PostgreSQL `LISTEN/NOTIFY`, an in-process
    /// map) implement it; the default is a watch that never fires, so callers always bound
    /// the wait with [`Watch::changed`]'s fallback and poll. Wake-ups may be spurious:
    /// re-read after every one.
    async fn watch(&self, key: &TokenKey) -> Result<Watch> {
        let _ = key;
        Ok(Watch::never())
    }

    /// The headers of records as they are written, by this process or any other sharing the
    /// store, from the store's notifications: `None` for a backend whose notifications carry
    /// no header (the default).
    ///
    /// How a worker of a fleet learns that another one refreshed a tenant without asking the
    /// store (a [`header`](Self::header) read per worker and refresh otherwise). Only what
    /// [`header`](Self::header) would answer without opening the record is sent: headers of
    /// active records with no refresh in flight; other writes (a mark, a re-authorization, a
    /// deletion) are not. The feed is best effort: a notice lost with a connection, or missed
    /// by a receiver that fell behind, is simply not seen, so a caller acts on a notice only to
    /// save a read it would make anyway, never waits for one. Must be called inside a Tokio
    /// runtime (a backend may start its listening task).
    fn changes(&self) -> Option<Changes> {
        None
    }
}

/// The stream of record headers from [`TokenStore::changes`].
///
/// ```
/// use std::sync::Arc;
/// use sfauth_storage::{Changes, RecordHeader};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // A backend keeps the sender and hands out receivers.
/// let (sender, receiver) = tokio::sync::broadcast::channel::<Arc<RecordHeader>>(16);
/// let mut changes = Changes::new(receiver);
/// drop(sender);
/// assert!(changes.next().await.is_none(), "the feed ends with its backend");
/// # }
/// ```
#[derive(Debug)]
pub struct Changes {
    receiver: tokio::sync::broadcast::Receiver<Arc<RecordHeader>>,
}

impl Changes {
    /// A feed reading `receiver`, for a backend that broadcasts its headers.
    pub fn new(receiver: tokio::sync::broadcast::Receiver<Arc<RecordHeader>>) -> Self {
        Self { receiver }
    }

    /// The next header, or `None` once the backend is gone. Headers missed by falling behind
    /// are skipped (the feed is best effort, see [`TokenStore::changes`]).
    pub async fn next(&mut self) -> Option<Arc<RecordHeader>> {
        loop {
            match self.receiver.recv().await {
                Ok(header) => return Some(header),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(
                        missed,
                        "the store's change feed fell behind; headers skipped"
                    );
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// A registered interest in one key's changes, from [`TokenStore::watch`].
///
/// ```
/// use std::time::Duration;
/// use sfauth_storage::Watch;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // A backend without notifications: the fallback bounds the wait.
/// let fired = Watch::never().changed(Duration::from_millis(5)).await;
/// assert!(!fired);
/// # }
/// ```
pub struct Watch {
    fired: Option<Pin<Box<dyn Future<Output = ()> + Send + 'static>>>,
}

impl Watch {
    /// A watch that resolves when `fired` does. `fired` must already be registered with
    /// the notification source when this is built (the contract of [`TokenStore::watch`]).
    pub fn new(fired: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            fired: Some(Box::pin(fired)),
        }
    }

    /// A watch that never fires: for backends without notifications.
    pub fn never() -> Self {
        Self { fired: None }
    }

    /// Whether this watch can fire at all (false for [`Watch::never`]).
    pub fn is_live(&self) -> bool {
        self.fired.is_some()
    }

    /// Waits until the key may have changed (`true`) or `fallback` has passed (`false`).
    pub async fn changed(self, fallback: Duration) -> bool {
        match self.fired {
            Some(fired) => tokio::time::timeout(fallback, fired).await.is_ok(),
            None => {
                tokio::time::sleep(fallback).await;
                false
            }
        }
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch")
            .field("live", &self.is_live())
            .finish()
    }
}

/// Helpers over any [`TokenStore`], through a blanket impl.
#[async_trait]
pub trait TokenStoreExt: TokenStore {
    /// Every record matching `query` (its cursor and limit set the start and the page size),
    /// following cursors to the end.
    async fn list_all(&self, query: &ListQuery) -> Result<Vec<TokenRecord>> {
        let mut query = query.clone();
        let mut all = Vec::new();
        loop {
            let page = self.list(&query).await?;
            all.extend(page.records);
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// Stores `record`, as [`TokenStore::insert`] when `expected_version` is `None` and as
    /// [`TokenStore::put`] without a lease otherwise.
    async fn save(&self, record: TokenRecord, expected_version: Option<u64>) -> Result<u64> {
        match expected_version {
            None => self.insert(record).await,
            Some(version) => self.put(record, version, None).await,
        }
    }
}

impl<T: TokenStore + ?Sized> TokenStoreExt for T {}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use sfauth_core::{AccessToken, LoginHost, TokenSet};

    use super::*;
    use crate::error::ErrorKind;
    use crate::memory::MemoryStore;

    #[tokio::test]
    async fn save_inserts_then_compares_and_swaps() {
        let identity = "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK"
            .parse()
            .unwrap();
        let tokens = TokenSet::new(
            AccessToken::new("token"),
            "https://acme.my.salesforce.com".parse().unwrap(),
            identity,
        );
        let key = TokenKey::new(
            &LoginHost::Production,
            &tokens.identity,
            "client",
            "default",
        );
        let record = TokenRecord::new(key, tokens, SystemTime::now());
        let store: &dyn TokenStore = &MemoryStore::new();
        assert_eq!(store.save(record.clone(), None).await.unwrap(), 1);
        let again = store.save(record.clone(), None).await.unwrap_err();
        assert_eq!(again.kind(), ErrorKind::Conflict);
        assert_eq!(store.save(record.clone(), Some(1)).await.unwrap(), 2);
        assert_eq!(
            store
                .list_all(&ListQuery::new().limit(1))
                .await
                .unwrap()
                .len(),
            1
        );
    }
}
