//! Building every frontend's [`Route`] for a new table: the selection half of a published
//! snapshot.
//!
//! Owns: the [`Router`] (the health policy and the per-backend [`BackendRegistry`]) and [`Routes`] (one [`Route`] per frontend, index-aligned with the
//! table's frontends). [`Router::routes`] resolves each frontend's policy, reuses the previous
//! route when nothing it depends on changed (settings and backend addresses), otherwise builds a
//! new one that keeps the frontend's round-robin cursor and, when the backend set is unchanged,
//! its Maglev table. It then prunes registry entries that left the table and that no connection
//! uses, so per-backend state survives every swap while the backend stays.
//!
//! Must not: do I/O or read the clock. It runs on the control plane's publish path (once per
//! table), never per connection. Bad option values never reach it: `table::build` reports them
//! among its warnings and leaves the option unset.

use super::backend::{BackendKey, BackendRegistry};
use super::policy::HealthConfig;
use super::select::{Route, SelectorSettings};
use crate::table::{FrontendKey, Table};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// One [`Route`] per frontend of a table, in the table's order.
#[derive(Debug, Default, Clone)]
pub struct Routes {
    routes: Vec<Arc<Route>>,
}

impl Routes {
    /// The route of the table's `i`-th frontend.
    pub fn get(&self, i: usize) -> Option<&Arc<Route>> {
        self.routes.get(i)
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }
}

/// Builds [`Routes`] for each new table. Owned by the table's single writer.
#[derive(Debug)]
pub struct Router {
    cfg: HealthConfig,
    registry: Arc<BackendRegistry>,
}

impl Default for Router {
    fn default() -> Self {
        Router::new(HealthConfig::default())
    }
}

impl Router {
    /// A router with `cfg`, whose backend entries eject with `cfg.outlier`.
    pub fn new(cfg: HealthConfig) -> Self {
        Router {
            cfg,
            registry: Arc::new(BackendRegistry::with_outlier(cfg.outlier)),
        }
    }

    /// The per-backend runtime state the routes hold (the active checker writes its verdicts
    /// here; metrics and the admin API read it).
    pub fn registry(&self) -> &Arc<BackendRegistry> {
        &self.registry
    }

    pub fn config(&self) -> &HealthConfig {
        &self.cfg
    }

    /// The routes of `table`, reusing what `previous` (the routes of `previous_table`) allows.
    pub fn routes(&mut self, table: &Table, previous_table: &Table, previous: &Routes) -> Routes {
        let old: HashMap<FrontendKey, &Arc<Route>> = previous_table
            .frontends
            .iter()
            .zip(previous.iter())
            .map(|(f, r)| (f.key(), r))
            .collect();
        let routes = table
            .frontends
            .iter()
            .map(|frontend| {
                let key = frontend.key();
                let settings = SelectorSettings::resolve(frontend, &self.cfg);
                let prev = old.get(&key).copied();
                match prev {
                    Some(p) if p.matches(frontend, &settings) => p.clone(),
                    _ => {
                        if let Some(p) = prev {
                            let was = p.settings();
                            if was.balance != settings.balance || was.checked != settings.checked {
                                tracing::info!(
                                    frontend = %key,
                                    balance = settings.balance.as_str(),
                                    active_checks = settings.checked,
                                    "selection settings changed"
                                );
                            }
                        }
                        Arc::new(Route::new(
                            frontend,
                            settings,
                            &self.registry,
                            prev.map(|p| &**p),
                        ))
                    }
                }
            })
            .collect();
        let keys: HashSet<_> = table
            .frontends
            .iter()
            .flat_map(|f| {
                f.backends
                    .iter()
                    .map(|b| BackendKey::new(f.protocol, b.address))
            })
            .collect();
        let pruned = self.registry.prune(&keys);
        if pruned > 0 {
            tracing::debug!(pruned, "backend runtime entries pruned");
        }
        Routes { routes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::select::{Candidates, Select};
    use crate::balance::Balance;
    use crate::table::{Backend, BackendState, Frontend, FrontendKind, Protocol};
    use std::net::SocketAddr;

    fn frontend(port: u16, backends: &[u16], options: &[(&str, &str)]) -> Frontend {
        Frontend {
            protocol: Protocol::Tcp,
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            kind: FrontendKind::ServicePort,
            vip_name: None,
            app: "/app".into(),
            owner_kind: crate::table::OwnerKind::App,
            apps: vec!["/app".into()],
            port_index: 0,
            port_name: None,
            options: crate::table::PortOptions::from_pairs(options.iter().copied()).unwrap(),
            backends: backends
                .iter()
                .map(|p| Backend {
                    address: SocketAddr::from(([127, 0, 0, 2], *p)),
                    task: "t".into(),
                    state: BackendState::Up,
                })
                .collect(),
        }
    }

    fn table(frontends: Vec<Frontend>) -> Table {
        Table { frontends }
    }

    #[test]
    fn an_unchanged_frontend_keeps_its_route_and_a_changed_one_keeps_its_cursor() {
        let mut router = Router::default();
        let t1 = table(vec![frontend(80, &[1, 2, 3], &[])]);
        let r1 = router.routes(&t1, &Table::default(), &Routes::default());
        let route = r1.get(0).unwrap().clone();
        let pick = |r: &Route, f: &Frontend| r.select(&Candidates::new(&f.backends, &[]));
        assert_eq!(pick(&route, &t1.frontends[0]), Some(0));
        let r2 = router.routes(&t1, &t1, &r1);
        assert!(Arc::ptr_eq(&route, r2.get(0).unwrap()), "reused as is");
        // A changed option builds a new route; the rotation goes on where it was.
        let t3 = table(vec![frontend(80, &[1, 2, 3], &[("balance", "least-conn")])]);
        let r3 = router.routes(&t3, &t1, &r2);
        let new = r3.get(0).unwrap();
        assert!(!Arc::ptr_eq(&route, new));
        assert_eq!(new.settings().balance, Balance::LeastConn);
        let t4 = table(vec![frontend(80, &[1, 2, 3], &[])]);
        let r4 = router.routes(&t4, &t3, &r3);
        assert_eq!(pick(r4.get(0).unwrap(), &t4.frontends[0]), Some(1));
        // The backends' runtime entries are the registry's.
        assert!(Arc::ptr_eq(
            r4.get(0).unwrap().stats(2),
            &router
                .registry()
                .entry(BackendKey::tcp(t4.frontends[0].backends[2].address))
        ));
    }

    #[test]
    fn a_maglev_table_is_shared_while_the_backend_set_is_unchanged() {
        let mut router = Router::default();
        let maglev = [("balance", "maglev")];
        let t1 = table(vec![frontend(80, &[1, 2], &maglev)]);
        let r1 = router.routes(&t1, &Table::default(), &Routes::default());
        let client = "10.0.0.1".parse().unwrap();
        let home = r1
            .get(0)
            .unwrap()
            .select(&Candidates::with_client(
                &t1.frontends[0].backends,
                &[],
                client,
            ))
            .unwrap();
        // Another frontend added: this one's route is reused.
        let t2 = table(vec![
            frontend(80, &[1, 2], &maglev),
            frontend(81, &[3], &[]),
        ]);
        let r2 = router.routes(&t2, &t1, &r1);
        assert!(Arc::ptr_eq(r1.get(0).unwrap(), r2.get(0).unwrap()));
        assert_eq!(
            r2.get(0).unwrap().select(&Candidates::with_client(
                &t2.frontends[0].backends,
                &[],
                client
            )),
            Some(home)
        );
    }

    #[test]
    fn entries_of_backends_that_left_the_table_are_pruned_unless_in_use() {
        let mut router = Router::default();
        let t1 = table(vec![frontend(80, &[1, 2], &[])]);
        let r1 = router.routes(&t1, &Table::default(), &Routes::default());
        let busy = r1.get(0).unwrap().begin_connect(1);
        let t2 = table(vec![frontend(80, &[3], &[])]);
        router.routes(&t2, &t1, &r1);
        let addr = |p| BackendKey::tcp(SocketAddr::from(([127, 0, 0, 2], p)));
        assert!(router.registry().get(&addr(1)).is_none(), "idle, gone");
        assert!(router.registry().get(&addr(2)).is_some(), "in use");
        assert!(router.registry().get(&addr(3)).is_some(), "listed");
        drop(busy);
    }
}
