//! [`Backoff`]: the one exponential backoff of the workspace, used by the transport's retries
//! and by the token manager (its token-request retries, its pause after failed refreshes, its
//! polling of a busy lease). Pure arithmetic: it computes waits and sleeps nowhere.

use std::time::Duration;

use rand::Rng as _;

/// Waits that double from `first` up to `max`, optionally with full jitter.
///
/// ```
/// use std::time::Duration;
/// use sfauth_core::backoff::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(1));
/// assert_eq!(backoff.ceiling(0), Duration::from_millis(250));
/// assert_eq!(backoff.ceiling(1), Duration::from_millis(500));
/// assert_eq!(backoff.ceiling(5), Duration::from_secs(1));
/// assert!(backoff.jittered(3) <= Duration::from_secs(1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
}

impl Backoff {
    /// Waits of `first`, `2 × first`, `4 × first`, … never more than `max` (at least `first`).
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max: max.max(first),
        }
    }

    /// The first wait.
    pub fn first(&self) -> Duration {
        self.first
    }

    /// The longest wait.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The wait before retry number `retry` (0 for the first): `min(max, first × 2^retry)`.
    /// Never overflows, whatever `retry` is.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(31));
        self.first.saturating_mul(factor).min(self.max)
    }

    /// A wait drawn uniformly from zero to [`ceiling`](Self::ceiling)`(retry)` ("full jitter"),
    /// which spreads out the retries of many clients that failed together.
    pub fn jittered(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        if ceiling.is_zero() {
            return ceiling;
        }
        rand::rng().random_range(Duration::ZERO..=ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_ceiling_and_never_overflows() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(60));
        let waits: Vec<_> = (0..4).map(|n| backoff.ceiling(n)).collect();
        assert_eq!(
            waits,
            [100, 200, 400, 800].map(Duration::from_millis).to_vec()
        );
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(60));
        let huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(huge.ceiling(u32::MAX), Duration::MAX);
    }

    #[test]
    fn a_max_below_first_is_first() {
        let backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(backoff.ceiling(3), Duration::from_secs(2));
        assert_eq!(
            Backoff::new(Duration::ZERO, Duration::ZERO).jittered(9),
            Duration::ZERO
        );
    }
}
