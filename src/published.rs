//! The published routing table: one `ArcSwap`, one writer.
//!
//! Owns: [`TablePublisher`], the only handle that can store a new table (it is not `Clone`, and
//! the control loop owns the single instance), and [`TableReader`], the cheap cloneable handle
//! the data plane, DNS and admin API read through. Each publish stamps a generation number.
//!
//! Must not: build tables or hold per-backend runtime state. Readers take one snapshot per unit of
//! work (`load_full` per TCP connection; an `arc_swap::Cache` per UDP receive loop) and never
//! hold a `Guard` across an `.await`.

use crate::table::Table;
use arc_swap::ArcSwap;
use std::sync::Arc;
use tokio::sync::watch;

/// A table as published: immutable, stamped with its generation (0 = nothing published yet).
#[derive(Debug, Default)]
pub struct PublishedTable {
    pub generation: u64,
    pub table: Table,
}

/// Creates the publisher/reader pair around an empty generation-0 table.
pub fn channel() -> (TablePublisher, TableReader) {
    let current = Arc::new(ArcSwap::from_pointee(PublishedTable::default()));
    let (notify, changes) = watch::channel(0u64);
    (
        TablePublisher {
            current: current.clone(),
            notify,
        },
        TableReader { current, changes },
    )
}

/// The single writer. Owned by the control loop.
#[derive(Debug)]
pub struct TablePublisher {
    current: Arc<ArcSwap<PublishedTable>>,
    notify: watch::Sender<u64>,
}

impl TablePublisher {
    /// Publishes `table` with one atomic store and returns it with its new generation.
    pub fn publish(&mut self, table: Table) -> Arc<PublishedTable> {
        let generation = self.current.load().generation + 1;
        let published = Arc::new(PublishedTable { generation, table });
        self.current.store(published.clone());
        self.notify.send_replace(generation);
        published
    }

    pub fn current(&self) -> Arc<PublishedTable> {
        self.current.load_full()
    }
}

/// A read handle. Clone freely.
#[derive(Debug, Clone)]
pub struct TableReader {
    current: Arc<ArcSwap<PublishedTable>>,
    changes: watch::Receiver<u64>,
}

impl TableReader {
    /// The current table, owned: safe to keep across `.await`.
    pub fn load_full(&self) -> Arc<PublishedTable> {
        self.current.load_full()
    }

    /// A per-task cache for hot loops (UDP): `cache.load()` costs no atomic RMW when unchanged.
    pub fn cache(&self) -> arc_swap::Cache<Arc<ArcSwap<PublishedTable>>, Arc<PublishedTable>> {
        arc_swap::Cache::new(self.current.clone())
    }

    /// A receiver that changes on every publish (the value is the generation).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_increase_and_readers_see_the_latest() {
        let (mut publisher, reader) = channel();
        assert_eq!(reader.load_full().generation, 0);
        publisher.publish(Table::default());
        let p = publisher.publish(Table::default());
        assert_eq!(p.generation, 2);
        assert_eq!(reader.load_full().generation, 2);
        assert_eq!(*reader.subscribe().borrow(), 2);
    }
}
