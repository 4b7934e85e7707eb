//! The UDP flow table, sans-io: which client addresses have a live flow, when each flow expires,
//! and the per-frontend flow cap.
//!
//! Owns: [`FlowTable`] (client address → flow value `T`, last activity, generation), its timer
//! queue, and the counts ([`FlowCounts`]). A flow is created by [`FlowTable::lookup_or_admit`]
//! (entry-style: the caller inserts the value once it has a backend), refreshed by traffic in
//! either direction (client datagrams through `lookup_or_admit`/[`FlowTable::touch`]; backend
//! replies through the `refresh` hook of [`FlowTable::expire_with`], which the shell feeds from a
//! per-flow atomic), and expired once `idle_timeout` has passed without traffic.
//!
//! Timers are lazy (sozu's `timer_gen` idea): a touch only moves the flow's `last_seen`; the timer
//! queue keeps one entry per live flow, tagged with the flow's generation. When an entry comes
//! due, the flow is expired only if the entry's generation is still the flow's (a flow that was
//! removed and re-created under the same client address has a new generation, so a stale entry
//! can never close it) AND its real deadline (`last_seen + idle_timeout`) has passed; otherwise
//! the entry is re-armed at the real deadline. So a datagram costs one hash lookup and one store,
//! never a heap operation. Entries of removed flows linger until due, or until the queue is
//! compacted when they outnumber the live flows.
//!
//! Must not: own sockets, read the clock (time is passed in as `now`), use randomness, or lock.
//! The receive loop of one frontend owns its table (`&mut self`), so nothing here is shared.
//! The map uses std's SipHash with a random key: client addresses are attacker-chosen.

use std::cmp::Reverse;
use std::collections::hash_map::{self, HashMap};
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Monotonic counts of a flow table, plus the live count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCounts {
    /// Flows alive now. Always `created - expired - removed`.
    pub live: u64,
    pub created: u64,
    /// Flows closed by the idle timeout.
    pub expired: u64,
    /// Flows closed by [`FlowTable::remove`] or [`FlowTable::clear`].
    pub removed: u64,
    /// Datagrams of new clients refused because the table was full.
    pub dropped_by_cap: u64,
}

#[derive(Debug)]
struct Entry<T> {
    generation: u64,
    last_seen: Instant,
    value: T,
}

/// A timer: (deadline, generation, client). Ordered by deadline first.
type Timer = Reverse<(Instant, u64, SocketAddr)>;

/// The flows of one frontend. See the module docs.
#[derive(Debug)]
pub struct FlowTable<T> {
    idle_timeout: Duration,
    max_flows: usize,
    flows: HashMap<SocketAddr, Entry<T>>,
    timers: BinaryHeap<Timer>,
    next_generation: u64,
    counts: FlowCounts,
}

/// What [`FlowTable::lookup_or_admit`] found for a client.
#[derive(Debug)]
pub enum Admit<'a, T> {
    /// A live flow (already refreshed to `now`).
    Existing(&'a mut T),
    /// No flow, and there is room for one: insert it (or drop the vacancy to admit nothing).
    Vacant(VacantFlow<'a, T>),
    /// No flow and the table is full: the datagram is to be dropped (already counted).
    Full,
}

/// Room for a new flow, from [`Admit::Vacant`].
#[derive(Debug)]
pub struct VacantFlow<'a, T> {
    slot: hash_map::VacantEntry<'a, SocketAddr, Entry<T>>,
    timers: &'a mut BinaryHeap<Timer>,
    counts: &'a mut FlowCounts,
    next_generation: &'a mut u64,
    idle_timeout: Duration,
    now: Instant,
}

impl<'a, T> VacantFlow<'a, T> {
    /// Creates the flow with `value`, last seen at the `now` given to `lookup_or_admit`.
    pub fn insert(self, value: T) -> &'a mut T {
        let generation = *self.next_generation;
        *self.next_generation += 1;
        self.counts.created += 1;
        self.counts.live += 1;
        let client = *self.slot.key();
        self.timers
            .push(Reverse((self.now + self.idle_timeout, generation, client)));
        let entry = self.slot.insert(Entry {
            generation,
            last_seen: self.now,
            value,
        });
        &mut entry.value
    }

    pub fn client(&self) -> SocketAddr {
        *self.slot.key()
    }
}

impl<T> FlowTable<T> {
    /// `idle_timeout` is raised to 1 ms and `max_flows` to 1.
    pub fn new(idle_timeout: Duration, max_flows: usize) -> Self {
        FlowTable {
            idle_timeout: idle_timeout.max(Duration::from_millis(1)),
            max_flows: max_flows.max(1),
            flows: HashMap::new(),
            timers: BinaryHeap::new(),
            next_generation: 1,
            counts: FlowCounts::default(),
        }
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    pub fn max_flows(&self) -> usize {
        self.max_flows
    }

    /// The client's flow, refreshed to `now`; or room for a new one; or `Full` (counted).
    pub fn lookup_or_admit(&mut self, client: SocketAddr, now: Instant) -> Admit<'_, T> {
        let full = self.flows.len() >= self.max_flows;
        match self.flows.entry(client) {
            hash_map::Entry::Occupied(o) => {
                let entry = o.into_mut();
                entry.last_seen = entry.last_seen.max(now);
                Admit::Existing(&mut entry.value)
            }
            hash_map::Entry::Vacant(_) if full => {
                self.counts.dropped_by_cap += 1;
                Admit::Full
            }
            hash_map::Entry::Vacant(slot) => Admit::Vacant(VacantFlow {
                slot,
                timers: &mut self.timers,
                counts: &mut self.counts,
                next_generation: &mut self.next_generation,
                idle_timeout: self.idle_timeout,
                now,
            }),
        }
    }

    /// Refreshes the client's flow to `now` (traffic seen). False if it has no flow.
    pub fn touch(&mut self, client: &SocketAddr, now: Instant) -> bool {
        match self.flows.get_mut(client) {
            Some(entry) => {
                entry.last_seen = entry.last_seen.max(now);
                true
            }
            None => false,
        }
    }

    pub fn get_mut(&mut self, client: &SocketAddr) -> Option<&mut T> {
        self.flows.get_mut(client).map(|e| &mut e.value)
    }

    pub fn contains(&self, client: &SocketAddr) -> bool {
        self.flows.contains_key(client)
    }

    /// When the client's flow expires if nothing refreshes it (the return path's activity, which
    /// is merged only at expiry, not counted).
    pub fn deadline(&self, client: &SocketAddr) -> Option<Instant> {
        self.flows
            .get(client)
            .map(|e| e.last_seen + self.idle_timeout)
    }

    /// Closes the client's flow now (counted as removed).
    pub fn remove(&mut self, client: &SocketAddr) -> Option<T> {
        let entry = self.flows.remove(client)?;
        self.counts.removed += 1;
        self.counts.live -= 1;
        self.maybe_compact();
        Some(entry.value)
    }

    /// Closes every flow (counted as removed) and returns their values.
    pub fn clear(&mut self) -> Vec<(SocketAddr, T)> {
        let out: Vec<_> = self.flows.drain().map(|(c, e)| (c, e.value)).collect();
        self.counts.removed += out.len() as u64;
        self.counts.live = 0;
        self.timers.clear();
        out
    }

    /// Expires flows idle for `idle_timeout` at `now`. See [`FlowTable::expire_with`].
    pub fn expire(&mut self, now: Instant) -> Vec<(SocketAddr, T)> {
        self.expire_with(now, |_| None)
    }

    /// Expires every flow whose last activity is `idle_timeout` or more before `now`, and returns
    /// them. `refresh` reports activity seen outside the table (backend replies on the return
    /// path); it is asked only for flows that look due, and its answer is merged into the flow's
    /// last activity before deciding.
    pub fn expire_with(
        &mut self,
        now: Instant,
        mut refresh: impl FnMut(&T) -> Option<Instant>,
    ) -> Vec<(SocketAddr, T)> {
        let mut expired = Vec::new();
        while let Some(Reverse((due, generation, client))) = self.timers.peek().copied() {
            if due > now {
                break;
            }
            self.timers.pop();
            let Some(entry) = self.flows.get_mut(&client) else {
                continue; // removed flow: stale timer
            };
            if entry.generation != generation {
                continue; // a newer flow of the same client has its own timer
            }
            if let Some(seen) = refresh(&entry.value) {
                entry.last_seen = entry.last_seen.max(seen);
            }
            let deadline = entry.last_seen + self.idle_timeout;
            if deadline > now {
                self.timers.push(Reverse((deadline, generation, client)));
            } else if let Some(entry) = self.flows.remove(&client) {
                self.counts.expired += 1;
                self.counts.live -= 1;
                expired.push((client, entry.value));
            }
        }
        expired
    }

    /// The earliest time [`FlowTable::expire`] may have something to do (it may find nothing:
    /// timers are lazy). `None` when there are no flows.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((due, _, _))| *due)
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn counts(&self) -> FlowCounts {
        self.counts
    }

    /// Entries in the timer queue (live flows plus stale ones), for tests.
    pub fn timer_len(&self) -> usize {
        self.timers.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&SocketAddr, &T)> {
        self.flows.iter().map(|(c, e)| (c, &e.value))
    }

    /// Rebuilds the timer queue from the live flows when stale entries outnumber them.
    fn maybe_compact(&mut self) {
        if self.timers.len() <= 2 * self.flows.len() + 64 {
            return;
        }
        let idle = self.idle_timeout;
        self.timers = self
            .flows
            .iter()
            .map(|(c, e)| Reverse((e.last_seen + idle, e.generation, *c)))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    const IDLE: Duration = Duration::from_secs(10);

    fn admit(t: &mut FlowTable<u32>, client: SocketAddr, now: Instant, v: u32) -> bool {
        match t.lookup_or_admit(client, now) {
            Admit::Vacant(slot) => {
                slot.insert(v);
                true
            }
            Admit::Existing(_) => true,
            Admit::Full => false,
        }
    }

    #[test]
    fn a_quiet_flow_expires_exactly_at_the_idle_timeout() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(IDLE, 10);
        assert!(admit(&mut t, addr(1), t0, 7));
        assert_eq!(t.poll_timeout(), Some(t0 + IDLE));
        assert!(t.expire(t0 + IDLE - Duration::from_millis(1)).is_empty());
        assert_eq!(t.expire(t0 + IDLE), vec![(addr(1), 7)]);
        assert!(t.is_empty());
        assert_eq!(t.poll_timeout(), None);
        let c = t.counts();
        assert_eq!((c.created, c.expired, c.live), (1, 1, 0));
    }

    #[test]
    fn traffic_from_the_client_keeps_a_flow_alive() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(IDLE, 10);
        admit(&mut t, addr(1), t0, 1);
        for s in 1..=5 {
            let now = t0 + Duration::from_secs(8 * s);
            assert!(t.expire(now).is_empty(), "alive at {s}");
            assert!(matches!(
                t.lookup_or_admit(addr(1), now),
                Admit::Existing(1)
            ));
        }
        let last = t0 + Duration::from_secs(40);
        assert!(t.expire(last + IDLE - Duration::from_nanos(1)).is_empty());
        assert_eq!(t.expire(last + IDLE).len(), 1);
    }

    #[test]
    fn return_path_activity_keeps_a_flow_alive_through_the_refresh_hook() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(IDLE, 10);
        admit(&mut t, addr(1), t0, 1);
        let reply = t0 + Duration::from_secs(9);
        assert!(t.expire_with(t0 + IDLE, |_| Some(reply)).is_empty());
        assert_eq!(
            t.poll_timeout(),
            Some(reply + IDLE),
            "re-armed at the real deadline"
        );
        // The hook reports the same (old) time: now the flow is due.
        assert_eq!(t.expire_with(reply + IDLE, |_| Some(reply)).len(), 1);
    }

    #[test]
    fn touch_refreshes_and_never_moves_backwards() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(IDLE, 10);
        admit(&mut t, addr(1), t0 + Duration::from_secs(5), 1);
        assert!(t.touch(&addr(1), t0)); // older than last_seen: ignored
        assert_eq!(t.deadline(&addr(1)), Some(t0 + Duration::from_secs(15)));
        assert!(!t.touch(&addr(2), t0));
    }

    #[test]
    fn a_stale_timer_never_closes_a_recreated_flow() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(IDLE, 10);
        admit(&mut t, addr(1), t0, 1);
        assert_eq!(t.remove(&addr(1)), Some(1));
        // Re-created later under the same address: the first flow's timer is still queued.
        let t1 = t0 + Duration::from_secs(5);
        admit(&mut t, addr(1), t1, 2);
        assert_eq!(t.timer_len(), 2);
        assert!(t.expire(t0 + IDLE).is_empty(), "stale timer ignored");
        assert!(t.contains(&addr(1)));
        assert_eq!(t.expire(t1 + IDLE), vec![(addr(1), 2)]);
        let c = t.counts();
        assert_eq!((c.created, c.removed, c.expired, c.live), (2, 1, 1, 0));
    }

    #[test]
    fn the_cap_refuses_new_clients_only() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(IDLE, 2);
        assert!(admit(&mut t, addr(1), t0, 1));
        assert!(admit(&mut t, addr(2), t0, 2));
        assert!(!admit(&mut t, addr(3), t0, 3));
        assert!(!admit(&mut t, addr(3), t0, 3));
        assert!(admit(&mut t, addr(1), t0, 0), "existing flows unaffected");
        assert_eq!(t.counts().dropped_by_cap, 2);
        assert_eq!(t.len(), 2);
        t.remove(&addr(2));
        assert!(admit(&mut t, addr(3), t0, 3), "room again");
    }

    #[test]
    fn a_vacancy_not_taken_admits_nothing() {
        let t0 = Instant::now();
        let mut t: FlowTable<u32> = FlowTable::new(IDLE, 2);
        assert!(matches!(t.lookup_or_admit(addr(1), t0), Admit::Vacant(_)));
        assert!(t.is_empty());
        assert_eq!(t.counts(), FlowCounts::default());
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn stale_timers_are_compacted() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(IDLE, 10);
        for _ in 0..1000 {
            admit(&mut t, addr(1), t0, 1);
            t.remove(&addr(1));
        }
        assert!(t.timer_len() <= 2 * t.len() + 65, "{}", t.timer_len());
    }

    #[test]
    fn clear_counts_every_flow_as_removed() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(IDLE, 10);
        admit(&mut t, addr(1), t0, 1);
        admit(&mut t, addr(2), t0, 2);
        let mut all = t.clear();
        all.sort();
        assert_eq!(all, vec![(addr(1), 1), (addr(2), 2)]);
        assert_eq!(t.counts().removed, 2);
        assert_eq!(t.counts().live, 0);
        assert_eq!(t.poll_timeout(), None);
    }
}
