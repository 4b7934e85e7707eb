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
