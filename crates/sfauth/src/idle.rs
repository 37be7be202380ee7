//! [`Idle`]: how long a tenant's refresh token has gone unused, against the idle limit after
//! which Salesforce expires it.
//!
//! The partner-app mandate (from May 2026) forces a 30-day idle limit on refresh tokens, and any
//! app can set "expire refresh token if not used for N": a tenant that makes no call for that
//! long loses its refresh token, and Salesforce then says only `expired access/refresh token`,
//! the same words as for a revocation. The manager cannot prevent that by itself unless the
//! background refresher's keep-alive is on ([`BackgroundConfig`](crate::BackgroundConfig)); what
//! it can do is show each tenant's standing before it is too late ("idle 27 days, refresh
//! before 30"), and name the likely cause after.
//!
//! Salesforce counts idleness from the refresh token's last use (a refresh) or its issue (a
//! login); the manager knows both as the moment the tokens were last obtained, which is what a
//! record's `last_refreshed_at` (or, for older records, the token set's `issued_at`) holds.

use std::fmt;
use std::time::{Duration, SystemTime};

use sfauth_storage::TokenRecord;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Salesforce's idle limit under the partner-app mandate: 30 days.
pub const PARTNER_IDLE_LIMIT: Duration = Duration::from_secs(30 * 24 * 3600);

/// A tenant's refresh token, as idle as it is at one moment.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use sfauth::Idle;
///
/// let day = Duration::from_secs(24 * 3600);
/// let now = SystemTime::now();
/// let idle = Idle::new(now - 27 * day, now, sfauth::PARTNER_IDLE_LIMIT);
/// assert_eq!(idle.to_string(), "idle 27 days, refresh before 30");
/// assert_eq!(idle.days_left(), 3);
/// assert!(!idle.is_past_limit());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Idle {
    /// When the refresh token was last used (refreshed) or issued (logged in).
    pub last_used: SystemTime,
    /// How long ago that was.
    pub idle_for: Duration,
    /// The idle limit it is measured against.
    pub limit: Duration,
    /// When Salesforce expires the refresh token unless it is used before: `last_used + limit`.
    pub refresh_before: SystemTime,
}

impl Idle {
    /// The standing at `now` of a refresh token last used at `last_used`, against `limit`. A
    /// `last_used` in the future (clock skew between hosts) counts as used just now.
    pub fn new(last_used: SystemTime, now: SystemTime, limit: Duration) -> Self {
        let idle_for = now.duration_since(last_used).unwrap_or_default();
        Self {
            last_used,
            idle_for,
            limit,
            refresh_before: last_used.checked_add(limit).unwrap_or(last_used),
        }
    }

    /// The standing at `now` of a stored record's refresh token, or `None` when it has none (a
    /// tenant renewed by its own flow does not idle out).
    ///
    /// ```
    /// # fn show(record: &sfauth::storage::TokenRecord) {
    /// use std::time::SystemTime;
    /// if let Some(idle) = sfauth::Idle::of_record(record, SystemTime::now(), sfauth::PARTNER_IDLE_LIMIT) {
    ///     eprintln!("{}: {idle}", record.key);
    /// }
    /// # }
    /// ```
    pub fn of_record(record: &TokenRecord, now: SystemTime, limit: Duration) -> Option<Self> {
        record.tokens.refresh_token.as_ref()?;
        let last_used = record
            .last_refreshed_at
            .or(record.tokens.issued_at)
            .unwrap_or(record.issued_at);
        Some(Self::new(last_used, now, limit))
    }

    /// Whole days idle (rounded down).
    pub fn days_idle(&self) -> u64 {
        self.idle_for
            .as_secs()
            .checked_div(DAY.as_secs())
            .unwrap_or_default()
    }

    /// The limit in whole days (rounded down).
    pub fn limit_days(&self) -> u64 {
        self.limit
            .as_secs()
            .checked_div(DAY.as_secs())
            .unwrap_or_default()
    }

    /// Whole days left before the limit (rounded down; 0 once past it).
    pub fn days_left(&self) -> u64 {
        self.remaining()
            .as_secs()
            .checked_div(DAY.as_secs())
            .unwrap_or_default()
    }

    /// Time left before the limit; zero once past it.
    pub fn remaining(&self) -> Duration {
        self.limit.saturating_sub(self.idle_for)
    }

    /// Whether the refresh token has been idle for the whole limit, so Salesforce has most
    /// likely expired it.
    pub fn is_past_limit(&self) -> bool {
        self.idle_for >= self.limit
    }
}

impl fmt::Display for Idle {
    /// `idle 27 days, refresh before 30`, or `idle 31 days, past the 30-day idle limit`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.days_idle();
        let unit = if days == 1 { "day" } else { "days" };
        if self.is_past_limit() {
            write!(
                f,
                "idle {days} {unit}, past the {}-day idle limit",
                self.limit_days()
            )
        } else {
            write!(
                f,
                "idle {days} {unit}, refresh before {}",
                self.limit_days()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standing_against_the_limit() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let cases = [
            (Duration::ZERO, "idle 0 days, refresh before 30", 30, false),
            (DAY, "idle 1 day, refresh before 30", 29, false),
            (
                27 * DAY + DAY / 2,
                "idle 27 days, refresh before 30",
                2,
                false,
            ),
            (
                30 * DAY,
                "idle 30 days, past the 30-day idle limit",
                0,
                true,
            ),
            (
                45 * DAY,
                "idle 45 days, past the 30-day idle limit",
                0,
                true,
            ),
        ];
        for (ago, shown, left, past) in cases {
            let idle = Idle::new(now - ago, now, PARTNER_IDLE_LIMIT);
            assert_eq!(idle.to_string(), shown);
            assert_eq!(idle.days_left(), left, "{shown}");
            assert_eq!(idle.is_past_limit(), past, "{shown}");
            assert_eq!(idle.refresh_before, now - ago + PARTNER_IDLE_LIMIT);
        }
        // Another host's clock ahead of ours: used just now, not idle for a negative time.
        let ahead = Idle::new(now + DAY, now, PARTNER_IDLE_LIMIT);
        assert_eq!(ahead.idle_for, Duration::ZERO);
    }
}
