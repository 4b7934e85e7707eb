//! The published snapshot: the routing table and its routes, in one `ArcSwap`, with one writer.
//!
//! Owns: [`PublishedTable`] (a table, the [`Routes`] built for it, and its generation),
//! [`TablePublisher`], the only handle that can store a new snapshot (it is not `Clone`, and the
//! control loop owns the single instance), and [`TableReader`], the cheap cloneable handle the
//! data plane, DNS, the active checker and the admin API read through. Each publish builds the
//! table's routes with the publisher's [`Router`] (policy, Maglev tables, the backends' runtime
//! entries by `Arc`) and stores table and routes with ONE atomic store, so a connection reads its
//! frontend, its balance mode, its policy and its Maglev table from the one snapshot it loaded.
//!
//! Must not: build tables. Readers take one snapshot per unit of work (`load_full` per TCP
//! connection; an `arc_swap::Cache` per UDP receive loop) and never hold a `Guard` across an
//! `.await`.

use crate::balance::{BackendRegistry, Route, Router, Routes};
use crate::table::{Frontend, FrontendKey, Table};
use arc_swap::ArcSwap;
use std::sync::Arc;
use tokio::sync::watch;

/// A snapshot as published: immutable, stamped with its generation (0 = nothing published yet).
#[derive(Debug, Default)]
pub struct PublishedTable {
    pub generation: u64,
    pub table: Table,
    /// One route per frontend of `table`, in the same order.
    pub routes: Routes,
}

impl PublishedTable {
    /// The frontend `key` and its route.
    pub fn frontend(&self, key: &FrontendKey) -> Option<(&Frontend, &Route)> {
        let i = self
            .table
            .frontends
            .binary_search_by(|f| f.key().cmp(key))
            .ok()?;
        Some((&self.table.frontends[i], self.routes.get(i)?))
    }
}

/// Creates the publisher/reader pair around an empty generation-0 snapshot, with the default
/// health policy.
pub fn channel() -> (TablePublisher, TableReader) {
    channel_with(Router::default())
}

/// [`channel`] whose routes are built by `router`.
pub fn channel_with(router: Router) -> (TablePublisher, TableReader) {
    let current = Arc::new(ArcSwap::from_pointee(PublishedTable::default()));
    let (notify, changes) = watch::channel(0u64);
    let backends = router.registry().clone();
    (
        TablePublisher {
            current: current.clone(),
            notify,
            router,
        },
        TableReader {
            current,
            changes,
            backends,
        },
    )
}

/// The single writer. Owned by the control loop.
#[derive(Debug)]
pub struct TablePublisher {
    current: Arc<ArcSwap<PublishedTable>>,
    notify: watch::Sender<u64>,
    router: Router,
}

impl TablePublisher {
    /// Builds `table`'s routes, publishes both with one atomic store, and returns the snapshot
    /// with its new generation.
    pub fn publish(&mut self, table: Table) -> Arc<PublishedTable> {
        let previous = self.current.load_full();
        let routes = self
            .router
            .routes(&table, &previous.table, &previous.routes);
        let generation = previous.generation + 1;
        let published = Arc::new(PublishedTable {
            generation,
            table,
            routes,
        });
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
    backends: Arc<BackendRegistry>,
}

impl TableReader {
    /// The current snapshot, owned: safe to keep across `.await`.
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

    /// The per-backend runtime state the published routes hold (keyed by backend; survives
    /// swaps).
    pub fn backends(&self) -> Arc<BackendRegistry> {
        self.backends.clone()
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

    #[test]
    fn a_snapshot_holds_each_frontends_route_and_keeps_it_across_later_publishes() {
        use crate::balance::Balance;
        use crate::table::{Backend, BackendState, FrontendKind, Protocol};
        let frontend = |balance: &str| Frontend {
            protocol: Protocol::Tcp,
            listen: "127.0.0.1:80".parse().unwrap(),
            kind: FrontendKind::ServicePort,
            vip_name: None,
            app: "/a".into(),
            owner_kind: crate::table::OwnerKind::App,
            apps: vec!["/a".into()],
            port_index: 0,
            port_name: None,
            options: crate::table::PortOptions::from_pairs([("balance", balance)]).unwrap(),
            backends: vec![Backend {
                address: "127.0.0.2:8080".parse().unwrap(),
                task: "t".into(),
                state: BackendState::Up,
            }]
            .into(),
        };
        let (mut publisher, reader) = channel();
        publisher.publish(Table {
            frontends: vec![frontend("round-robin")],
        });
        let first = reader.load_full();
        let key = first.table.frontends[0].key();
        publisher.publish(Table {
            frontends: vec![frontend("maglev")],
        });
        let second = reader.load_full();
        // A connection on the first snapshot keeps the first policy; the next one gets the new.
        let (_, route) = first.frontend(&key).unwrap();
        assert_eq!(route.settings().balance, Balance::RoundRobin);
        let (f, route) = second.frontend(&key).unwrap();
        assert_eq!(route.settings().balance, Balance::Maglev);
        assert_eq!((f.backends.len(), second.routes.len()), (1, 1));
        assert!(second
            .frontend(&FrontendKey {
                protocol: Protocol::Udp,
                listen: key.listen
            })
            .is_none());
    }
}
