//! Active health: the pure rise/fall counter of one probe (the rpxy `ConsecutiveCounter` shape).
//!
//! Owns: [`RiseFall`] and [`ActiveState`]. A probe starts `Pending` (never succeeded: the backend
//! gets no traffic while anything better exists). Its FIRST success makes it `Up` at once, so a
//! new backend joins as soon as it answers; after that, `fall` failures in a row make it `Down`
//! and `rise` successes in a row make it `Up` again. A pending probe that fails `fall` times
//! becomes `Down` (same eligibility, clearer state).
//!
//! Must not: do I/O, read a clock, or log. [`RiseFall::record`] returns the new state only when
//! it changed, so the caller logs each flip exactly once.

use serde::Serialize;

/// What active checks say about a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActiveState {
    /// No probe covers this backend.
    NotChecked,
    /// Probed, but no success yet.
    Pending,
    Up,
    Down,
}

impl ActiveState {
    pub fn as_str(self) -> &'static str {
        match self {
            ActiveState::NotChecked => "not_checked",
            ActiveState::Pending => "pending",
            ActiveState::Up => "up",
            ActiveState::Down => "down",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            ActiveState::NotChecked => 0,
            ActiveState::Pending => 1,
            ActiveState::Up => 2,
            ActiveState::Down => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Self {
        match code {
            1 => ActiveState::Pending,
            2 => ActiveState::Up,
            3 => ActiveState::Down,
            _ => ActiveState::NotChecked,
        }
    }

    /// Combines the verdicts of several probes of one address: any `Down` wins, then any
    /// `Pending`, then `Up`; no probe at all is `NotChecked`.
    pub fn combine(states: impl IntoIterator<Item = ActiveState>) -> ActiveState {
        let mut out = ActiveState::NotChecked;
        for s in states {
            out = match (out, s) {
                (ActiveState::Down, _) | (_, ActiveState::Down) => ActiveState::Down,
                (ActiveState::Pending, _) | (_, ActiveState::Pending) => ActiveState::Pending,
                (_, ActiveState::Up) | (ActiveState::Up, _) => ActiveState::Up,
                _ => ActiveState::NotChecked,
            };
        }
        out
    }
}

/// Consecutive success/failure thresholds of one probe.
#[derive(Debug, Clone)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    state: ActiveState,
    successes: u32,
    failures: u32,
}

impl RiseFall {
    /// `rise` and `fall` are at least 1.
    pub fn new(rise: u32, fall: u32) -> Self {
        RiseFall {
            rise: rise.max(1),
            fall: fall.max(1),
            state: ActiveState::Pending,
            successes: 0,
            failures: 0,
        }
    }

    pub fn state(&self) -> ActiveState {
        self.state
    }

    /// Records one probe result; returns the new state if it changed.
    pub fn record(&mut self, ok: bool) -> Option<ActiveState> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
        }
        let next = match (self.state, ok) {
            (ActiveState::Pending, true) => ActiveState::Up,
            (ActiveState::Pending, false) if self.failures >= self.fall => ActiveState::Down,
            (ActiveState::Up, false) if self.failures >= self.fall => ActiveState::Down,
            (ActiveState::Down, true) if self.successes >= self.rise => ActiveState::Up,
            (s, _) => s,
        };
        (next != self.state).then(|| {
            self.state = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ActiveState::*;
    use super::*;

    #[test]
    fn first_success_joins_at_once() {
        let mut c = RiseFall::new(2, 3);
        assert_eq!(c.state(), Pending);
        assert_eq!(c.record(true), Some(Up));
        assert_eq!(c.record(true), None);
    }

    #[test]
    fn pending_falls_to_down_after_fall_failures_then_needs_rise() {
        let mut c = RiseFall::new(2, 3);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), Some(Down));
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(true), None, "one success is not enough once down");
        assert_eq!(c.record(true), Some(Up));
    }

    #[test]
    fn up_needs_fall_consecutive_failures_and_a_success_resets_them() {
        let mut c = RiseFall::new(2, 3);
        c.record(true);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(true), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), Some(Down));
        // A failure between successes restarts the rise count.
        assert_eq!(c.record(true), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(true), None);
        assert_eq!(c.record(true), Some(Up));
    }

    #[test]
    fn thresholds_of_zero_act_as_one() {
        let mut c = RiseFall::new(0, 0);
        assert_eq!(c.record(true), Some(Up));
        assert_eq!(c.record(false), Some(Down));
        assert_eq!(c.record(true), Some(Up));
    }

    #[test]
    fn combine_prefers_the_worst_verdict() {
        assert_eq!(ActiveState::combine([]), NotChecked);
        assert_eq!(ActiveState::combine([Up, Up]), Up);
        assert_eq!(ActiveState::combine([Up, Pending]), Pending);
        assert_eq!(ActiveState::combine([Pending, Down, Up]), Down);
        for s in [NotChecked, Pending, Up, Down] {
            assert_eq!(ActiveState::from_code(s.code()), s);
        }
    }
}
