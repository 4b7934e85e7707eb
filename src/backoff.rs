//! Jittered exponential backoff (Marathon reconnects and fetch retries, listener bind retries),
//! and jitter for the periodic resync.
//!
//! Owns: the delay arithmetic, for every retry loop of the daemon. The delay for attempt `n` is drawn uniformly from
//! `[d/2, d]` with `d = min(initial * 2^n, max)` ("equal jitter"), so a fleet of vipd instances
//! that lost Marathon together does not come back in lockstep. `reset` after a healthy period.
//!
//! Must not: sleep, read a clock or own a random generator (callers pass one, tests seed it).

use rand::Rng;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The un-jittered ceiling of the next delay.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(30)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before the next attempt; advances the attempt counter.
    pub fn next_delay<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let lo = ceiling / 2;
        let span = ceiling - lo;
        lo + span.mul_f64(rng.random_range(0.0..=1.0))
    }

    /// Back to the initial delay (after a connection stayed healthy for a while).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

/// `base` scaled by a uniform factor in `[1 - fraction, 1 + fraction]`.
pub fn jittered<R: Rng + ?Sized>(base: Duration, fraction: f64, rng: &mut R) -> Duration {
    let f = fraction.clamp(0.0, 1.0);
    base.mul_f64(rng.random_range(1.0 - f..=1.0 + f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn grows_is_capped_jittered_and_resets() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            let c = b.ceiling();
            let d = b.next_delay(&mut rng);
            assert!(d >= c / 2 && d <= c, "{d:?} outside [{:?}, {c:?}]", c / 2);
            ceilings.push(c.as_millis());
        }
        assert_eq!(
            ceilings,
            [100, 200, 400, 800, 1600, 2000, 2000, 2000, 2000, 2000]
        );
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn delays_are_not_all_equal() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let delays: Vec<_> = (0..20)
            .map(|_| {
                let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
                b.next_delay(&mut rng)
            })
            .collect();
        assert!(delays.iter().any(|d| *d != delays[0]));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..1000 {
            assert!(b.next_delay(&mut rng) <= Duration::from_secs(60));
        }
    }

    #[test]
    fn resync_jitter_stays_in_range() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let base = Duration::from_secs(300);
        for _ in 0..1000 {
            let d = jittered(base, 0.15, &mut rng);
            assert!(d >= Duration::from_secs(255) && d <= Duration::from_secs(345));
        }
    }
}
