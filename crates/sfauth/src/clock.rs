//! A wall clock cheap enough for the hot path.
//!
//! Reading the system clock costs about 20 ns, as much as the whole budget of a cached token
//! lookup. A background thread (`coarsetime`'s updater) stores the time every few milliseconds
//! and the hot path reads it with one atomic load. Refresh deadlines sit minutes before expiry,
//! so a few milliseconds of staleness never matter.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// How often the coarse clock is brought up to date.
const TICK_MS: u64 = 5;

static STARTED: OnceLock<Option<coarsetime::Updater>> = OnceLock::new();
static TICKING: AtomicBool = AtomicBool::new(false);

/// Starts the updater thread once per process.
pub(crate) fn start() {
    STARTED.get_or_init(|| {
        coarsetime::Clock::update();
        let updater = coarsetime::Updater::new(TICK_MS).start().ok();
        TICKING.store(updater.is_some(), Ordering::Release);
        updater
    });
}

/// Milliseconds since the Unix epoch, at most a few milliseconds old. If the updater thread
/// could not be started, falls back to the precise clock rather than a stale one.
#[inline]
pub(crate) fn now_ms() -> u64 {
    if TICKING.load(Ordering::Relaxed) {
        coarsetime::Clock::recent_since_epoch().as_millis()
    } else {
        precise_ms()
    }
}

/// The precise wall clock, for the slow path.
pub(crate) fn precise_ms() -> u64 {
    to_ms(SystemTime::now())
}

/// A `SystemTime` as milliseconds since the epoch (0 before it).
pub(crate) fn to_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(duration_ms)
        .unwrap_or(0)
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn duration_ms(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the epoch back to a `SystemTime`.
pub(crate) fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(std::time::Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn coarse_clock_tracks_the_wall_clock() {
        start();
        std::thread::sleep(Duration::from_millis(3 * TICK_MS));
        let coarse = now_ms();
        let precise = precise_ms();
        assert!(precise.abs_diff(coarse) < 1000, "{coarse} vs {precise}");
    }

    #[test]
    fn ms_round_trip() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(to_ms(t), 1_700_000_000_123);
    }
}
