//! A cap on concurrent connections of a side server (admin HTTP, DNS over TCP) that idle
//! clients cannot hold: when the cap is reached, the oldest IDLE connection is evicted to make
//! room; only when every connection is busy is the new one refused.
//!
//! Owns: [`ConnSlots`] (the open connections, oldest first, each with an idle flag and an
//! eviction token) and [`Slot`] (one connection's place, freed on drop). "Idle" is the owner's
//! call: waiting for the next request (or for the rest of a half-sent one) is idle; serving one
//! is busy.
//!
//! Must not: do I/O or read the clock; the lock is taken once per accept and once per close,
//! never per request byte.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
struct Open {
    idle: Arc<AtomicBool>,
    evict: CancellationToken,
}

/// The open connections of one server.
#[derive(Debug)]
pub struct ConnSlots {
    cap: usize,
    open: Mutex<(u64, BTreeMap<u64, Open>)>,
    evicted: AtomicU64,
    refused: AtomicU64,
}

/// What [`ConnSlots::admit`] decided.
#[derive(Debug)]
pub enum Admission {
    /// Room was free, or the oldest idle connection was evicted (`evicted` = true) to make it.
    Admitted { slot: Slot, evicted: bool },
    /// Every open connection is busy: close the new one.
    Refused,
}

/// One connection's place. Starts idle.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    slots: Arc<ConnSlots>,
    idle: Arc<AtomicBool>,
    evict: CancellationToken,
}

impl Slot {
    pub fn set_idle(&self, idle: bool) {
        self.idle.store(idle, Relaxed);
    }

    pub fn is_idle(&self) -> bool {
        self.idle.load(Relaxed)
    }

    /// Cancelled when this connection is evicted for a newer one.
    pub fn evicted(&self) -> &CancellationToken {
        &self.evict
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        open.1.remove(&self.id);
    }
}

impl ConnSlots {
    /// At least 1.
    pub fn new(cap: usize) -> Arc<ConnSlots> {
        Arc::new(ConnSlots {
            cap: cap.max(1),
            open: Mutex::new((0, BTreeMap::new())),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// A place for a new connection (see the module docs).
    pub fn admit(self: &Arc<Self>) -> Admission {
        let mut guard = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (next, open) = &mut *guard;
        let mut evicted = false;
        if open.len() >= self.cap {
            let oldest_idle = open
                .iter()
                .find(|(_, o)| o.idle.load(Relaxed))
                .map(|(id, _)| *id);
            match oldest_idle {
                Some(id) => {
                    if let Some(o) = open.remove(&id) {
                        o.evict.cancel();
                    }
                    self.evicted.fetch_add(1, Relaxed);
                    evicted = true;
                }
                None => {
                    self.refused.fetch_add(1, Relaxed);
                    return Admission::Refused;
                }
            }
        }
        let id = *next;
        *next += 1;
        let idle = Arc::new(AtomicBool::new(true));
        let evict = CancellationToken::new();
        open.insert(
            id,
            Open {
                idle: idle.clone(),
                evict: evict.clone(),
            },
        );
        Admission::Admitted {
            slot: Slot {
                id,
                slots: self.clone(),
                idle,
                evict,
            },
            evicted,
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).1.len()
    }

    /// Idle connections closed to make room for new ones.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Relaxed)
    }

    /// New connections closed because every open one was busy.
    pub fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(a: Admission) -> (Slot, bool) {
        match a {
            Admission::Admitted { slot, evicted } => (slot, evicted),
            Admission::Refused => panic!("refused"),
        }
    }

    #[test]
    fn the_oldest_idle_connection_makes_room_and_busy_ones_are_kept() {
        let slots = ConnSlots::new(2);
        let (a, _) = admitted(slots.admit());
        let (b, _) = admitted(slots.admit());
        a.set_idle(false);
        let (c, evicted) = admitted(slots.admit());
        assert!(evicted && b.evicted().is_cancelled() && !a.evicted().is_cancelled());
        c.set_idle(false);
        assert!(matches!(slots.admit(), Admission::Refused));
        assert_eq!((slots.evicted(), slots.refused(), slots.open()), (1, 1, 2));
        drop(a);
        assert_eq!(slots.open(), 1);
        drop(b); // already evicted: dropping it frees nothing more
        assert_eq!(slots.open(), 1);
    }
}
