//! Pure diff between two tables: which frontends to open, close, or update, and a one-line
//! summary for the publish log.
//!
//! Must not: touch sockets; the listener manager applies the diff.

use super::{FrontendKey, Table};
use std::collections::BTreeSet;

/// What changed between two tables, by frontend key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableDiff {
    pub added: Vec<FrontendKey>,
    pub removed: Vec<FrontendKey>,
    /// Same key, different backends or options.
    pub changed: Vec<FrontendKey>,
    pub backends_added: usize,
    pub backends_removed: usize,
}

impl TableDiff {
    pub fn between(old: &Table, new: &Table) -> TableDiff {
        let mut diff = TableDiff::default();
        let (mut i, mut j) = (0, 0);
        let (a, b) = (&old.frontends, &new.frontends);
        while i < a.len() || j < b.len() {
            let ka = a.get(i).map(|f| f.key());
            let kb = b.get(j).map(|f| f.key());
            match (ka, kb) {
                (Some(x), Some(y)) if x == y => {
                    if a[i] != b[j] {
                        diff.changed.push(x);
                        let old_b: BTreeSet<_> = a[i].backends.iter().map(|b| b.address).collect();
                        let new_b: BTreeSet<_> = b[j].backends.iter().map(|b| b.address).collect();
                        diff.backends_added += new_b.difference(&old_b).count();
                        diff.backends_removed += old_b.difference(&new_b).count();
                    }
                    i += 1;
                    j += 1;
                }
                (Some(x), Some(y)) if x < y => {
                    diff.removed.push(x);
                    diff.backends_removed += a[i].backends.len();
                    i += 1;
                }
                (Some(x), None) => {
                    diff.removed.push(x);
                    diff.backends_removed += a[i].backends.len();
                    i += 1;
                }
                (_, Some(y)) => {
                    diff.added.push(y);
                    diff.backends_added += b[j].backends.len();
                    j += 1;
                }
                (None, None) => unreachable!(),
            }
        }
        diff
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// `+2 frontends, -1 frontend, ~3 changed, +5/-4 backends`.
    pub fn summary(&self) -> String {
        format!(
            "+{} -{} ~{} frontends, +{}/-{} backends",
            self.added.len(),
            self.removed.len(),
            self.changed.len(),
            self.backends_added,
            self.backends_removed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Backend, BackendState, Frontend, FrontendKind, Protocol};

    fn frontend(port: u16, backends: &[u16]) -> Frontend {
        Frontend {
            protocol: Protocol::Tcp,
            listen: ([0, 0, 0, 0], port).into(),
            kind: FrontendKind::ServicePort,
            vip_name: None,
            app: "/a".into(),
            owner_kind: crate::table::OwnerKind::App,
            apps: vec!["/a".into()],
            port_index: 0,
            port_name: None,
            options: Default::default(),
            backends: backends
                .iter()
                .map(|p| Backend {
                    address: ([10, 0, 0, 1], *p).into(),
                    task: format!("t{p}").into(),
                    state: BackendState::Up,
                })
                .collect(),
        }
    }

    fn table(frontends: Vec<Frontend>) -> Table {
        Table { frontends }
    }

    #[test]
    fn equal_tables_give_an_empty_diff() {
        let t = table(vec![frontend(10000, &[1, 2]), frontend(10001, &[3])]);
        let d = TableDiff::between(&t, &t.clone());
        assert!(d.is_empty());
        assert_eq!(d.summary(), "+0 -0 ~0 frontends, +0/-0 backends");
    }

    #[test]
    fn added_removed_and_changed_frontends_are_told_apart() {
        let old = table(vec![frontend(10000, &[1, 2]), frontend(10001, &[3])]);
        let new = table(vec![frontend(10000, &[2, 4]), frontend(10002, &[5, 6])]);
        let d = TableDiff::between(&old, &new);
        assert_eq!(d.added.len(), 1);
        assert_eq!(d.added[0].listen.port(), 10002);
        assert_eq!(d.removed.len(), 1);
        assert_eq!(d.removed[0].listen.port(), 10001);
        assert_eq!(d.changed.len(), 1);
        assert_eq!(d.changed[0].listen.port(), 10000);
        // 10000: +4 -1; 10002: +5 +6; 10001: -3.
        assert_eq!((d.backends_added, d.backends_removed), (3, 2));
        assert!(!d.is_empty());
    }

    #[test]
    fn a_state_change_alone_is_a_change() {
        let old = table(vec![frontend(10000, &[1])]);
        let mut new = old.clone();
        let mut backends = new.frontends[0].backends.to_vec();
        backends[0].state = BackendState::Draining;
        new.frontends[0].backends = backends.into();
        let d = TableDiff::between(&old, &new);
        assert_eq!(d.changed.len(), 1);
        assert_eq!((d.backends_added, d.backends_removed), (0, 0));
    }
}
