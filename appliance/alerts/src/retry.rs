//! When to try a failed delivery again, or when to give up (dead-letter).
//!
//! Exponential backoff with "full jitter", from Marc Brooker, "Exponential Backoff And
//! Jitter", AWS Architecture Blog, 2015
//! (<https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/>):
//! `sleep = random_between(0, min(cap, base * 2 ** attempt))`. Of the schemes compared
//! there it spreads retries of many clients best while keeping the total work low, which
//! is what a receiver coming back after an outage needs from thousands of pending
//! deliveries.
//!
//! The randomness is passed in (sans-IO), so tests fix it.

use std::time::Duration;
use time::OffsetDateTime;

/// The retry schedule of a receiver's deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The ceiling of the first retry's delay; doubled per failed attempt.
    pub base: Duration,
    /// The largest ceiling.
    pub max: Duration,
    /// Attempts (the first included) before the delivery is given up.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// Base 2 s, cap 10 min, 12 attempts: the ceilings run 2, 4, 8 .. 512 s, then 600 s;
    /// the expected total wait before giving up is about half their sum (~35 min).
    fn default() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(2),
            max: Duration::from_secs(10 * 60),
            max_attempts: 12,
        }
    }
}

impl RetryPolicy {
    /// The ceiling of the delay after `attempts_so_far` failed attempts (>= 1):
    /// `min(max, base * 2^(attempts_so_far - 1))`, saturating. Zero attempts: zero.
    pub fn ceiling(&self, attempts_so_far: u32) -> Duration {
        let Some(doublings) = attempts_so_far.checked_sub(1) else {
            return Duration::ZERO;
        };
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// When to make the next attempt, after `attempts_so_far` attempts have failed (the
    /// one that just failed included), at `now`, with `random` a uniformly random
    /// `u64`: a uniformly random point in `[now, now + ceiling]` (millisecond steps).
    /// `None` = give up: `attempts_so_far >= max_attempts` (dead-letter). With no
    /// attempt yet, `now`.
    pub fn next(
        &self,
        attempts_so_far: u32,
        now: OffsetDateTime,
        random: u64,
    ) -> Option<OffsetDateTime> {
        if attempts_so_far >= self.max_attempts {
            return None;
        }
        let ceiling_ms = self.ceiling(attempts_so_far).as_millis();
        let delay_ms = u128::from(random) % (ceiling_ms + 1);
        let delay = time::Duration::milliseconds(i64::try_from(delay_ms).unwrap_or(i64::MAX));
        // Only overflows past the year 9999; retrying at once is then as good as any.
        Some(now.checked_add(delay).unwrap_or(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2025-03-07 12:00 UTC);

    #[test]
    fn defaults() {
        let p = RetryPolicy::default();
        assert_eq!(p.base, Duration::from_secs(2));
        assert_eq!(p.max, Duration::from_secs(600));
        assert_eq!(p.max_attempts, 12);
    }

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let p = RetryPolicy::default();
        let secs: Vec<u64> = (0..=13).map(|n| p.ceiling(n).as_secs()).collect();
        assert_eq!(
            secs,
            [0, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600, 600, 600]
        );
        // No overflow for absurd counts or durations.
        assert_eq!(p.ceiling(u32::MAX), p.max);
        let huge = RetryPolicy {
            base: Duration::MAX,
            max: Duration::MAX,
            max_attempts: u32::MAX,
        };
        assert_eq!(huge.ceiling(40), Duration::MAX);
        assert!(huge.next(40, NOW, u64::MAX).is_some());
    }

    #[test]
    fn next_is_full_jitter_with_a_fixed_random() {
        let p = RetryPolicy::default();
        // random = 0: retry at once (the low end of full jitter).
        assert_eq!(p.next(3, NOW, 0), Some(NOW));
        // random = ceiling_ms: the top of the range. After 3 failures, the ceiling is 8 s.
        assert_eq!(
            p.next(3, NOW, 8_000),
            Some(NOW + time::Duration::seconds(8))
        );
        // Wraps modulo (ceiling_ms + 1).
        assert_eq!(
            p.next(3, NOW, 8_001 + 1_234),
            Some(NOW + time::Duration::milliseconds(1_234))
        );
        // Always within [now, now + ceiling].
        for n in 1..12 {
            for r in [1, 7, 999_999, u64::MAX / 3, u64::MAX] {
                let t = p.next(n, NOW, r).unwrap();
                assert!(t >= NOW && t - NOW <= p.ceiling(n), "n {n} r {r}");
            }
        }
        assert_eq!(p.next(0, NOW, 12345), Some(NOW));
    }

    #[test]
    fn gives_up_after_max_attempts() {
        let p = RetryPolicy::default();
        assert!(p.next(11, NOW, 5).is_some());
        assert_eq!(p.next(12, NOW, 5), None);
        assert_eq!(p.next(13, NOW, 5), None);
        let once = RetryPolicy {
            max_attempts: 1,
            ..p
        };
        assert_eq!(once.next(1, NOW, 5), None);
    }
}
