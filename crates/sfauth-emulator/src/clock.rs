//! A clock the tests can move: token lifetimes, code expiry and refresh-token policies all read it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The emulator's notion of "now", in milliseconds since the Unix epoch.
///
/// A clock is either the system clock shifted by an offset (the default) or a manual clock that
/// only moves when told. Both can be advanced with [`Clock::advance`], which is how tests expire
/// tokens without sleeping. Clones share the same time.
#[derive(Debug, Clone)]
pub struct Clock {
    inner: Arc<ClockInner>,
}

#[derive(Debug)]
struct ClockInner {
    manual: bool,
    /// For a manual clock the current time; for a system clock the offset added to it.
    value_ms: AtomicI64,
}

impl Clock {
    /// The system clock (plus any later [`advance`](Clock::advance)).
    pub fn system() -> Self {
        Self {
            inner: Arc::new(ClockInner {
                manual: false,
                value_ms: AtomicI64::new(0),
            }),
        }
    }

    /// A clock frozen at `start_ms` (milliseconds since the Unix epoch) until advanced.
    pub fn manual(start_ms: i64) -> Self {
        Self {
            inner: Arc::new(ClockInner {
                manual: true,
                value_ms: AtomicI64::new(start_ms),
            }),
        }
    }

    /// A manual clock starting at the current system time.
    pub fn manual_now() -> Self {
        Self::manual(system_ms())
    }

    /// The current time in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        let value = self.inner.value_ms.load(Ordering::SeqCst);
        if self.inner.manual {
            value
        } else {
            system_ms().saturating_add(value)
        }
    }

    /// The current time in whole seconds since the Unix epoch.
    pub fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// Moves the clock forward by `by`. A move past the end of the clock's range (about 292
    /// million years from 1970) stops there.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        // `fetch_add` would wrap to a time before 1970; saturating keeps "later" later.
        let _ = self
            .inner
            .value_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |value| {
                Some(value.saturating_add(ms))
            });
    }

    /// Moves the clock forward by `by` and returns the new time, or, when that time would be
    /// past the end of the clock's range, leaves the clock alone and returns `None`: for the
    /// admin API, which answers such a request with an error instead of a clamped clock.
    pub(crate) fn try_advance(&self, by: Duration) -> Option<i64> {
        let ms = i64::try_from(by.as_millis()).ok()?;
        self.now_ms().checked_add(ms)?;
        self.advance(by);
        Some(self.now_ms())
    }

    /// Whether this clock only moves when advanced.
    pub fn is_manual(&self) -> bool {
        self.inner.manual
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

fn system_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = Clock::manual(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.clone().advance(Duration::from_secs(2));
        assert_eq!(clock.now_ms(), 3_000);
        assert_eq!(clock.now_secs(), 3);
    }

    #[test]
    fn advancing_past_the_end_stops_at_the_end() {
        let clock = Clock::manual(1_000);
        assert_eq!(clock.try_advance(Duration::from_secs(u64::MAX)), None);
        assert_eq!(
            clock.try_advance(Duration::from_millis(i64::MAX as u64)),
            None
        );
        assert_eq!(
            clock.now_ms(),
            1_000,
            "a refused advance leaves the clock alone"
        );
        assert_eq!(clock.try_advance(Duration::from_millis(500)), Some(1_500));
        clock.advance(Duration::from_secs(u64::MAX));
        assert_eq!(clock.now_ms(), i64::MAX);
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.now_ms(), i64::MAX, "no wrap to a time before 1970");

        let system = Clock::system();
        system.advance(Duration::MAX);
        system.advance(Duration::MAX);
        assert_eq!(system.now_ms(), i64::MAX);
    }

    #[test]
    fn system_clock_advance_adds_an_offset() {
        let clock = Clock::system();
        let before = clock.now_ms();
        clock.advance(Duration::from_secs(3600));
        assert!(clock.now_ms() >= before + 3_600_000);
    }
}
