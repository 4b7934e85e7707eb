//! Backend selection for one new connection (or one retry of it).
//!
//! Owns: the health tiers ([`Tier`]) that decide which backends are eligible, the [`Candidates`]
//! view a selector picks from, the [`Select`] trait, and [`RoundRobin`].
//!
//! Tiers, in order: the `up` backends; if none is left, the `unknown` ones; if none of those, any
//! backend that is not `draining` (fail open: an `unhealthy` backend beats a certain failure).
//! "Left" means not yet tried by this connection, so a retry falls through to the next tier
//! once every backend of the better tier has failed. `draining` backends are never picked.
//!
//! Must not: do I/O, read the clock, or keep per-connection state. A selector instance lives in
//! the listener (not in the table), so its state (the round-robin counter) survives table swaps.
//!
//! Seam for later work (least-conn, power of two choices, Maglev, passive ejection, active
//! health): add fields to [`Candidates`] (e.g. the backend registry for active counts, an
//! ejection view) and new [`Select`] impls; the connection code only calls `select`.

use crate::table::{Backend, BackendState};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Eligibility classes, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Up,
    Unknown,
    /// Anything but `draining`.
    FailOpen,
}

impl Tier {
    pub const ORDER: [Tier; 3] = [Tier::Up, Tier::Unknown, Tier::FailOpen];

    pub fn admits(self, state: BackendState) -> bool {
        match self {
            Tier::Up => state == BackendState::Up,
            Tier::Unknown => state == BackendState::Unknown,
            Tier::FailOpen => state != BackendState::Draining,
        }
    }
}

/// What a selector chooses from: a frontend's backends (from one table snapshot) minus the ones
/// this connection already tried.
#[derive(Debug, Clone, Copy)]
pub struct Candidates<'a> {
    pub backends: &'a [Backend],
    /// Indexes into `backends` already tried by this connection.
    pub tried: &'a [usize],
}

impl<'a> Candidates<'a> {
    pub fn new(backends: &'a [Backend], tried: &'a [usize]) -> Self {
        Candidates { backends, tried }
    }

    fn untried(&self, i: usize) -> bool {
        !self.tried.contains(&i)
    }

    /// The best tier with at least one untried backend, and how many backends it has left.
    pub fn tier(&self) -> Option<(Tier, usize)> {
        Tier::ORDER.into_iter().find_map(|tier| {
            let n = self.in_tier(tier).count();
            (n > 0).then_some((tier, n))
        })
    }

    /// Indexes of the untried backends of `tier`, in table order.
    pub fn in_tier(&self, tier: Tier) -> impl Iterator<Item = usize> + '_ {
        self.backends
            .iter()
            .enumerate()
            .filter(move |(i, b)| tier.admits(b.state) && self.untried(*i))
            .map(|(i, _)| i)
    }
}

/// A load-balancing algorithm. Implementations keep their state in atomics: one instance serves
/// every connection of a frontend concurrently.
pub trait Select: Send + Sync + fmt::Debug {
    /// The index (into `candidates.backends`) to try next, or `None` if nothing is eligible.
    fn select(&self, candidates: &Candidates<'_>) -> Option<usize>;
}

/// Round-robin within the best non-empty tier: one shared counter, one step per pick.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Select for RoundRobin {
    fn select(&self, candidates: &Candidates<'_>) -> Option<usize> {
        let (tier, n) = candidates.tier()?;
        let k = self.next.fetch_add(1, Relaxed) % n;
        candidates.in_tier(tier).nth(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn backends(states: &[BackendState]) -> Vec<Backend> {
        states
            .iter()
            .enumerate()
            .map(|(i, s)| Backend {
                address: SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
                task: format!("t{i}").into(),
                state: *s,
            })
            .collect()
    }

    fn picks(sel: &RoundRobin, b: &[Backend], n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| sel.select(&Candidates::new(b, &[])).unwrap())
            .collect()
    }

    use BackendState::*;

    #[test]
    fn round_robin_cycles_evenly() {
        let b = backends(&[Up, Up, Up]);
        let rr = RoundRobin::new();
        assert_eq!(picks(&rr, &b, 6), vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn up_beats_unknown_beats_unhealthy_and_draining_is_never_picked() {
        let rr = RoundRobin::new();
        let b = backends(&[Unhealthy, Up, Unknown, Draining, Up]);
        assert_eq!(picks(&rr, &b, 4), vec![1, 4, 1, 4]);
        let b = backends(&[Unhealthy, Unknown, Draining, Unknown]);
        assert_eq!(picks(&rr, &b, 4), vec![1, 3, 1, 3]);
        let b = backends(&[Unhealthy, Draining, Unhealthy]);
        assert_eq!(picks(&rr, &b, 4), vec![0, 2, 0, 2], "fail open");
        let b = backends(&[Draining, Draining]);
        assert_eq!(rr.select(&Candidates::new(&b, &[])), None);
        assert_eq!(rr.select(&Candidates::new(&[], &[])), None);
    }

    #[test]
    fn retries_skip_tried_and_fall_through_tiers() {
        let rr = RoundRobin::new();
        let b = backends(&[Up, Unknown, Up, Unhealthy, Draining]);
        let mut tried = Vec::new();
        while let Some(i) = rr.select(&Candidates::new(&b, &tried)) {
            tried.push(i);
        }
        tried[..2].sort();
        assert_eq!(tried, vec![0, 2, 1, 3]);
    }

    #[test]
    fn counter_lives_in_the_selector_across_tables() {
        // Two "tables" with the same backends: the rotation continues instead of restarting.
        let rr = RoundRobin::new();
        let t1 = backends(&[Up, Up, Up]);
        let t2 = t1.clone();
        assert_eq!(picks(&rr, &t1, 2), vec![0, 1]);
        assert_eq!(picks(&rr, &t2, 2), vec![2, 0]);
    }
}
