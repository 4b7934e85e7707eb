//! Passive health (outlier detection): the pure per-backend ejection state machine.
//!
//! Owns: [`Outlier`], which turns connect outcomes (with the time passed in) into ejections, and
//! [`OutlierConfig`]. Consecutive connect failures (`eject_after`) eject a backend for a backoff
//! that doubles with each ejection (`base`, `2·base`, `4·base`, … capped at `max`). When the
//! ejection expires the backend is half-open: it is eligible again, the first failure re-ejects
//! it at once (with the next, longer backoff) and the first success makes it healthy. The
//! backoff level goes back to zero at the next ejection if the backend stayed healthy at least as
//! long as its last ejection lasted.
//!
//! Must not: read a clock (every method takes `now`), lock, log, or know about pools: the
//! max-ejection-percent rule is applied per frontend at selection time (`balance::select`).

use std::time::{Duration, Instant};

/// Settings of passive ejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Consecutive connect failures that eject a backend; 0 disables passive ejection.
    pub eject_after: u32,
    /// First ejection time.
    pub base: Duration,
    /// Cap of the ejection time.
    pub max: Duration,
}

impl OutlierConfig {
    /// Ejection time at backoff level `level` (0 = first): `base · 2^level`, capped at `max`.
    pub fn ejection_time(&self, level: u32) -> Duration {
        let factor = 1u32.checked_shl(level.min(31)).unwrap_or(u32::MAX);
        self.base
            .saturating_mul(factor)
            .min(self.max.max(self.base))
    }
}

/// Where a backend stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passive {
    Healthy,
    /// Out of selection until `until`.
    Ejected {
        since: Instant,
        until: Instant,
    },
    /// The ejection expired; the next outcome decides.
    HalfOpen,
}

/// A change worth logging (exactly one per flip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Healthy → Ejected (`consecutive` failures in a row) or HalfOpen → Ejected (`consecutive`
    /// is then the streak including the failed half-open try).
    Ejected {
        since: Instant,
        until: Instant,
        duration: Duration,
        consecutive: u32,
        /// 1 for a first ejection, 2 for a re-ejection after a half-open failure, ...
        level: u32,
    },
    /// HalfOpen → Healthy (a success after the ejection expired).
    Recovered,
}

/// The passive-health state machine of one backend.
#[derive(Debug, Clone)]
pub struct Outlier {
    state: Passive,
    consecutive: u32,
    /// Backoff level of the next ejection (0 = `base`).
    level: u32,
    /// How long the last ejection was.
    last_duration: Duration,
    /// When the backend last became healthy again after an ejection.
    healthy_since: Option<Instant>,
    ejections: u64,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            state: Passive::Healthy,
            consecutive: 0,
            level: 0,
            last_duration: Duration::ZERO,
            healthy_since: None,
            ejections: 0,
        }
    }
}

impl Outlier {
    pub fn new() -> Self {
        Self::default()
    }

    /// The state at `now` (an expired ejection reads as half-open).
    pub fn state(&self, now: Instant) -> Passive {
        match self.state {
            Passive::Ejected { until, .. } if now >= until => Passive::HalfOpen,
            s => s,
        }
    }

    pub fn is_ejected(&self, now: Instant) -> bool {
        matches!(self.state(now), Passive::Ejected { .. })
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }

    /// Ejections so far (monotonic).
    pub fn ejections(&self) -> u64 {
        self.ejections
    }

    /// Backoff level the next ejection would use.
    pub fn level(&self) -> u32 {
        self.level
    }

    fn settle(&mut self, now: Instant) {
        self.state = self.state(now);
    }

    /// A connect failed at `now`.
    pub fn on_failure(&mut self, now: Instant, cfg: &OutlierConfig) -> Option<Transition> {
        self.settle(now);
        self.consecutive = self.consecutive.saturating_add(1);
        if cfg.eject_after == 0 {
            return None;
        }
        match self.state {
            // Failures of connections that were already in flight do not extend an ejection.
            Passive::Ejected { .. } => None,
            Passive::HalfOpen => Some(self.eject(now, cfg)),
            Passive::Healthy if self.consecutive >= cfg.eject_after => Some(self.eject(now, cfg)),
            Passive::Healthy => None,
        }
    }

    /// A connect succeeded at `now`.
    pub fn on_success(&mut self, now: Instant) -> Option<Transition> {
        self.settle(now);
        self.consecutive = 0;
        match self.state {
            Passive::HalfOpen => {
                self.state = Passive::Healthy;
                self.healthy_since = Some(now);
                Some(Transition::Recovered)
            }
            // A connection that started before the ejection may still succeed: the ejection
            // runs its course anyway (as in Envoy).
            Passive::Ejected { .. } | Passive::Healthy => None,
        }
    }

    fn eject(&mut self, now: Instant, cfg: &OutlierConfig) -> Transition {
        // Healthy for at least as long as the last ejection: start the backoff over.
        if let (Passive::Healthy, Some(since)) = (self.state, self.healthy_since) {
            if now.saturating_duration_since(since) >= self.last_duration {
                self.level = 0;
            }
        }
        let duration = cfg.ejection_time(self.level);
        let until = now + duration;
        self.state = Passive::Ejected { since: now, until };
        self.level = self.level.saturating_add(1);
        self.ejections += 1;
        self.last_duration = duration;
        self.healthy_since = None;
        Transition::Ejected {
            since: now,
            until,
            duration,
            consecutive: self.consecutive,
            level: self.level,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OutlierConfig {
        OutlierConfig {
            eject_after: 3,
            base: Duration::from_secs(10),
            max: Duration::from_secs(35),
        }
    }

    /// A stepped clock.
    struct Clock(Instant);
    impl Clock {
        fn now(&self) -> Instant {
            self.0
        }
        fn advance(&mut self, secs: u64) -> Instant {
            self.0 += Duration::from_secs(secs);
            self.0
        }
    }

    fn ejected_for(t: Option<Transition>) -> Duration {
        match t {
            Some(Transition::Ejected { duration, .. }) => duration,
            other => panic!("expected an ejection, got {other:?}"),
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let c = cfg();
        assert_eq!(c.ejection_time(0), Duration::from_secs(10));
        assert_eq!(c.ejection_time(1), Duration::from_secs(20));
        assert_eq!(c.ejection_time(2), Duration::from_secs(35));
        assert_eq!(c.ejection_time(40), Duration::from_secs(35));
    }

    #[test]
    fn healthy_stays_healthy_below_the_threshold_and_a_success_resets_the_count() {
        let (c, t) = (cfg(), Clock(Instant::now()));
        let mut o = Outlier::new();
        assert_eq!(o.on_failure(t.now(), &c), None);
        assert_eq!(o.on_failure(t.now(), &c), None);
        assert_eq!(o.consecutive_failures(), 2);
        assert_eq!(
            o.on_success(t.now()),
            None,
            "healthy → healthy is not a flip"
        );
        assert_eq!(o.consecutive_failures(), 0);
        assert_eq!(o.on_failure(t.now(), &c), None);
        assert_eq!(o.on_failure(t.now(), &c), None);
        assert_eq!(o.state(t.now()), Passive::Healthy);
    }

    #[test]
    fn every_transition_with_a_stepped_clock() {
        let (c, mut t) = (cfg(), Clock(Instant::now()));
        let mut o = Outlier::new();
        // Healthy → Ejected after 3 in a row.
        o.on_failure(t.now(), &c);
        o.on_failure(t.now(), &c);
        let e = o.on_failure(t.now(), &c);
        assert_eq!(
            e,
            Some(Transition::Ejected {
                since: t.now(),
                until: t.now() + Duration::from_secs(10),
                duration: Duration::from_secs(10),
                consecutive: 3,
                level: 1
            })
        );
        assert!(o.is_ejected(t.now()));
        assert_eq!(o.ejections(), 1);
        // Ejected: more failures (in-flight connections) and successes change nothing.
        assert_eq!(o.on_failure(t.advance(1), &c), None);
        assert_eq!(o.on_success(t.now()), None);
        assert!(o.is_ejected(t.now()));
        // Still ejected one instant before expiry; half-open at expiry.
        assert!(o.is_ejected(t.now() + Duration::from_secs(9) - Duration::from_millis(1)));
        t.advance(9);
        assert_eq!(o.state(t.now()), Passive::HalfOpen);
        // HalfOpen → Ejected at once on a failure, with the doubled time.
        assert_eq!(
            ejected_for(o.on_failure(t.now(), &c)),
            Duration::from_secs(20)
        );
        assert_eq!(o.ejections(), 2);
        // HalfOpen → Ejected again: capped.
        t.advance(20);
        assert_eq!(o.state(t.now()), Passive::HalfOpen);
        assert_eq!(
            ejected_for(o.on_failure(t.now(), &c)),
            Duration::from_secs(35)
        );
        // HalfOpen → Healthy on a success.
        t.advance(35);
        assert_eq!(o.on_success(t.now()), Some(Transition::Recovered));
        assert_eq!(o.state(t.now()), Passive::Healthy);
        assert_eq!(o.consecutive_failures(), 0);
        assert_eq!(o.on_success(t.now()), None, "one log line per flip");
        // Failing again soon after: the backoff continues where it was (capped).
        t.advance(5);
        o.on_failure(t.now(), &c);
        o.on_failure(t.now(), &c);
        assert_eq!(
            ejected_for(o.on_failure(t.now(), &c)),
            Duration::from_secs(35)
        );
        // Recover, then stay healthy for as long as the last ejection: the backoff restarts.
        t.advance(35);
        assert_eq!(o.on_success(t.now()), Some(Transition::Recovered));
        t.advance(35);
        o.on_failure(t.now(), &c);
        o.on_failure(t.now(), &c);
        assert_eq!(
            ejected_for(o.on_failure(t.now(), &c)),
            Duration::from_secs(10)
        );
        assert_eq!(o.ejections(), 5);
    }

    #[test]
    fn a_failure_streak_broken_by_a_success_does_not_eject() {
        let (c, t) = (cfg(), Clock(Instant::now()));
        let mut o = Outlier::new();
        for _ in 0..10 {
            assert_eq!(o.on_failure(t.now(), &c), None);
            assert_eq!(o.on_failure(t.now(), &c), None);
            assert_eq!(o.on_success(t.now()), None);
        }
        assert_eq!(o.ejections(), 0);
    }

    #[test]
    fn eject_after_zero_disables_passive_ejection() {
        let c = OutlierConfig {
            eject_after: 0,
            ..cfg()
        };
        let t = Clock(Instant::now());
        let mut o = Outlier::new();
        for _ in 0..100 {
            assert_eq!(o.on_failure(t.now(), &c), None);
        }
        assert_eq!(o.state(t.now()), Passive::Healthy);
        assert_eq!(o.consecutive_failures(), 100);
    }

    #[test]
    fn eject_after_one_ejects_on_the_first_failure() {
        let c = OutlierConfig {
            eject_after: 1,
            ..cfg()
        };
        let t = Clock(Instant::now());
        let mut o = Outlier::new();
        assert_eq!(
            ejected_for(o.on_failure(t.now(), &c)),
            Duration::from_secs(10)
        );
    }
}
