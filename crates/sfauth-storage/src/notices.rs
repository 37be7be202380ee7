//! What the network stores' listeners share (Redis pub/sub, PostgreSQL `LISTEN`): one wake-up
//! channel per watched key for [`TokenStore::watch`](crate::TokenStore::watch), and the
//! broadcast of announced headers for [`TokenStore::changes`](crate::TokenStore::changes). Each backend reads its own notices' wire format and hands the
//! key and the header's text here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{broadcast, watch};

use crate::record::{RecordHeader, StatusKind, parse_header};
use crate::store::Changes;

/// Headers the change feed keeps for a receiver that is behind, before it skips some: a burst
/// of saves between two polls of a busy worker's runtime.
const FEED_CAPACITY: usize = 4_096;

/// The per-key wake-ups and the change feed of one store, shared with its listening task.
pub(crate) struct Notices {
    /// By whatever names a key in the backend's notices (its text, or its hash). An entry
    /// without receivers is dropped when next woken.
    watches: Mutex<HashMap<String, watch::Sender<()>>>,
    feed: broadcast::Sender<Arc<RecordHeader>>,
}

impl Notices {
    pub(crate) fn new() -> Self {
        Self {
            watches: Mutex::default(),
            feed: broadcast::Sender::new(FEED_CAPACITY),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, watch::Sender<()>>> {
        // Every critical section leaves the map consistent, so a poisoned lock holds good data.
        self.watches.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A receiver that sees every later wake-up of `name` (subscribing marks the current
    /// value seen).
    pub(crate) fn subscribe(&self, name: String) -> watch::Receiver<()> {
        self.lock()
            .entry(name)
            .or_insert_with(|| watch::Sender::new(()))
            .subscribe()
    }

    /// Wakes the watches of `name`, forgetting it when nobody watches it any more.
    pub(crate) fn wake(&self, name: &str) {
        let mut watches = self.lock();
        if let Some(sender) = watches.get(name) {
            sender.send_replace(());
            if sender.receiver_count() == 0 {
                watches.remove(name);
            }
        }
    }

    /// Wakes every watch (the listener may have missed writes) and forgets unwatched names.
    pub(crate) fn wake_all(&self) {
        self.lock().retain(|_, sender| {
            sender.send_replace(());
            sender.receiver_count() > 0
        });
    }

    /// A follower of the change feed.
    pub(crate) fn changes(&self) -> Changes {
        Changes::new(self.follow())
    }

    /// The feed's receiver itself, which a test can poll without waiting.
    pub(crate) fn follow(&self) -> broadcast::Receiver<Arc<RecordHeader>> {
        self.feed.subscribe()
    }

    /// Sends the header a notice tells of the key whose text is `key` (`notice` being
    /// `version|status|header`) to the change feed, if somebody follows it and the header is
    /// one to announce (see [`notice_header`]).
    pub(crate) fn announce(&self, key: &str, notice: &str) {
        if self.feed.receiver_count() == 0 {
            return;
        }
        if let Some(header) = notice_header(key, notice) {
            // A follower gone meanwhile is no error: the feed is best effort.
            let _ = self.feed.send(Arc::new(header));
        }
    }
}

/// The header a store's change notice carries (`version|status|header`, of the key `name`),
/// if it is one [`TokenStore::header`](crate::TokenStore::header) would answer with: an active
/// record's, no refresh in flight. Anything else (or a notice that does not parse) is not sent:
/// the feed is an optimisation, and a reader missing a notice reads instead.
fn notice_header(name: &str, rest: &str) -> Option<RecordHeader> {
    let mut parts = rest.splitn(3, '|');
    let (version, status, header) = (parts.next()?, parts.next()?, parts.next()?);
    if status != StatusKind::Active.as_str() {
        return None;
    }
    let version = version.parse().ok()?;
    let key = name.parse().ok()?;
    parse_header(&key, version, header).ok().flatten()
}

/// A key whose client id and label hold the separator of the key's text form, for the tests
/// of the change notices, which must find the key's end in spite of them.
#[cfg(test)]
pub(crate) fn key_with_separators() -> sfauth_core::TokenKey {
    let identity = "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK"
        .parse()
        .unwrap_or_else(|_| unreachable!("a valid identity URL"));
    sfauth_core::TokenKey::new(
        &sfauth_core::LoginHost::Production,
        &identity,
        "3MVG9|x",
        "a|b|c",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_feeds_only_a_header_the_store_would_trust() {
        let notices = Notices::new();
        let key = key_with_separators();
        let name = key.to_string();
        let mut changes = notices.follow();
        notices.announce(&name, "7|active|0:1700000000000::::1700007200000");
        let header = changes.try_recv().unwrap();
        assert_eq!((&header.key, header.version), (&key, 7));
        assert_eq!(
            header.tokens_expires_at,
            Some(crate::record::from_millis(1_700_007_200_000))
        );
        // A refresh in flight, a record that is not active, or damage: nothing to announce.
        for notice in [
            "7|active|1:1700000000000::::",
            "7|reauth_required|0:1700000000000::::",
            "x|active|0:1700000000000::::",
            "7|active|garbage",
        ] {
            notices.announce(&name, notice);
            assert!(changes.try_recv().is_err(), "{notice}");
        }
    }

    #[test]
    fn a_wake_up_reaches_its_name_and_forgets_unwatched_ones() {
        let notices = Notices::new();
        let watched = notices.subscribe("a".to_owned());
        notices.wake("b");
        assert!(!watched.has_changed().unwrap());
        notices.wake("a");
        assert!(watched.has_changed().unwrap());
        drop(watched);
        notices.wake("a");
        assert!(notices.lock().is_empty(), "an unwatched name is forgotten");
    }
}
