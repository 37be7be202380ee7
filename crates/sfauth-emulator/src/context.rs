//! The context every handler runs in: the state shared by all requests, and the marks the
//! middleware and the handlers leave on a request or a response for each other.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::clock::Clock;
use crate::crypto::SigningKeys;
use crate::state::State;

/// How much of a request body is read, and for how long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    /// A larger body is answered 413.
    pub(crate) max_bytes: usize,
    /// A body not received whole within this time is answered 408.
    pub(crate) read_timeout: std::time::Duration,
}

/// State shared by every request handler.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) clock: Clock,
    pub(crate) keys: SigningKeys,
    pub(crate) base_url: String,
    /// The site prefix without slashes (empty: no site), fixed at start.
    pub(crate) site_prefix: String,
    shutdown: watch::Receiver<bool>,
    /// How request bodies are read, fixed at start.
    pub(crate) body: BodyLimits,
    /// How many requests are being processed, counting those whose client has gone.
    work: watch::Sender<usize>,
}

impl Shared {
    /// The context of a server that has not started serving yet: no request in progress.
    pub(crate) fn new(
        state: State,
        clock: Clock,
        keys: SigningKeys,
        base_url: String,
        site_prefix: String,
        shutdown: watch::Receiver<bool>,
        body: BodyLimits,
    ) -> Self {
        Self {
            state: Mutex::new(state),
            clock,
            keys,
            base_url,
            site_prefix,
            shutdown,
            body,
            work: watch::Sender::new(0),
        }
    }

    /// Locks the state. A handler that panicked cannot leave it half-updated in a way that matters
    /// more than stopping the emulator would, so a poisoned lock is simply taken over.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Resolves when the emulator shuts down.
    pub(crate) async fn shutting_down(&self) {
        let mut rx = self.shutdown.clone();
        // An error means the sender is gone, which also means shutting down.
        let _ = rx.wait_for(|down| *down).await;
    }

    /// The URL of the Experience Cloud-style site.
    pub(crate) fn site_url(&self) -> String {
        format!("{}/{}", self.base_url, self.site_prefix)
    }

    /// How many requests (admin requests aside) are being processed now.
    pub(crate) fn in_progress(&self) -> usize {
        *self.work.borrow()
    }

    /// Resolves when no request (admin requests aside) is being processed.
    pub(crate) async fn idle(&self) {
        let mut rx = self.work.subscribe();
        // The sender lives in `self`, so this cannot fail while we hold it.
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// One request being processed; counted in [`Shared::work`] until dropped, however its task
/// ends. Admin requests are not counted, so that the admin API's own wait for idleness does not
/// wait for itself.
pub(crate) struct Work {
    pub(crate) shared: Arc<Shared>,
    counted: bool,
}

impl Work {
    pub(crate) fn begin(shared: &Arc<Shared>, counted: bool) -> Self {
        if counted {
            shared.work.send_modify(|n| *n = n.saturating_add(1));
        }
        Self {
            shared: shared.clone(),
            counted,
        }
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if self.counted {
            self.shared.work.send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}

/// Whether the request came through the Experience Cloud-style site prefix.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ViaSite(pub(crate) bool);

/// Marks a token response whose refresh rotated the refresh token, so the server can count a
/// rotation whose answer no client received.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rotated;

/// The TCP peer address of the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) std::net::SocketAddr);
