//! The process-wide UDP flow budget: how many upstream sockets (one per flow) every UDP frontend
//! together may hold, derived from the descriptor limit ([`crate::fd_budget::udp_flow_budget`]).
//!
//! Owns: [`FlowBudget`] (the limit, the count in use, the refusals) and [`FlowPermit`] (one
//! unit, returned on drop). The limit follows the listeners: each listening socket is one
//! descriptor less for flows and TCP, so [`FlowBudget::set_listeners`] lowers the limit by half
//! of them (the other half comes out of TCP's share); a lower limit refuses new flows only, the
//! flows over it keep working until they end. A new flow takes a permit before its socket is opened; a flow that
//! cannot get one is not created (its datagram is dropped and counted), while existing flows keep
//! working.
//!
//! Must not: lock, or know about frontends (the per-frontend `--udp-max-flows` cap stays in the
//! flow table).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

#[derive(Debug)]
pub struct FlowBudget {
    /// The limit with no listener ([`crate::fd_budget::udp_flow_budget`]).
    base: usize,
    limit: AtomicUsize,
    used: AtomicUsize,
    refused: AtomicU64,
}

/// One flow's share of the budget.
#[derive(Debug)]
pub struct FlowPermit(Arc<FlowBudget>);

impl Drop for FlowPermit {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Relaxed);
    }
}

impl FlowBudget {
    /// At least 1.
    pub fn new(limit: usize) -> Arc<FlowBudget> {
        Arc::new(FlowBudget {
            base: limit.max(1),
            limit: AtomicUsize::new(limit.max(1)),
            used: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// A permit, or `None` (counted) when the budget is spent.
    pub fn try_acquire(self: &Arc<Self>) -> Option<FlowPermit> {
        let mut used = self.used.load(Relaxed);
        loop {
            if used >= self.limit.load(Relaxed) {
                self.refused.fetch_add(1, Relaxed);
                return None;
            }
            match self
                .used
                .compare_exchange_weak(used, used + 1, Relaxed, Relaxed)
            {
                Ok(_) => return Some(FlowPermit(self.clone())),
                Err(now) => used = now,
            }
        }
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Relaxed)
    }

    /// `listeners` listening sockets are open: the limit is the base less half of them (at
    /// least 1).
    pub fn set_listeners(&self, listeners: usize) {
        let limit = self.base.saturating_sub(listeners.div_ceil(2)).max(1);
        self.limit.store(limit, Relaxed);
    }

    pub fn used(&self) -> usize {
        self.used.load(Relaxed)
    }

    /// New flows refused because the budget was spent.
    pub fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refuses_past_its_limit_and_recovers_on_drop() {
        let b = FlowBudget::new(2);
        let one = b.try_acquire().unwrap();
        let _two = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_none());
        assert_eq!((b.used(), b.refused()), (2, 1));
        drop(one);
        assert!(b.try_acquire().is_some());
        assert_eq!(b.used(), 1, "the temporary permit was returned");
    }

    #[test]
    fn listeners_lower_the_limit_and_flows_over_it_keep_their_permits() {
        let b = FlowBudget::new(10);
        let held: Vec<_> = (0..8).map(|_| b.try_acquire().unwrap()).collect();
        // 6 listeners: 3 descriptors less for flows.
        b.set_listeners(6);
        assert_eq!(b.limit(), 7);
        assert!(b.try_acquire().is_none(), "8 in use, limit 7: refused");
        assert_eq!(b.used(), 8, "the flows over the limit keep their permits");
        drop(held);
        assert!(b.try_acquire().is_some());
        b.set_listeners(1_000);
        assert_eq!(b.limit(), 1, "never below 1");
        b.set_listeners(0);
        assert_eq!(b.limit(), 10);
    }
}
