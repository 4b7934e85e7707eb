//! The last table changes, for the status page.
//!
//! Owns: [`ChangeLog`], a bounded list of the most recent publishes (generation, when, where the
//! input came from, the diff summary and the first frontends it touched). The control loop is the
//! only writer; the admin server reads copies.
//!
//! Must not: grow without bound (it keeps [`ChangeLog::CAPACITY`] entries), or hold a lock for
//! longer than a push or a copy.

use crate::table::diff::TableDiff;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// One publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableChange {
    pub generation: u64,
    #[serde(serialize_with = "unix_seconds")]
    pub at: SystemTime,
    /// Where the snapshot came from (`File`, `MarathonEvent`, …).
    pub origin: String,
    /// The diff's one-line summary.
    pub summary: String,
    /// Up to [`TableChange::KEYS`] frontends added, removed or changed, `+tcp:…`, `-…`, `~…`.
    pub frontends: Vec<String>,
}

impl TableChange {
    /// Frontend keys kept per change.
    pub const KEYS: usize = 8;

    pub fn new(generation: u64, at: SystemTime, origin: String, diff: &TableDiff) -> Self {
        let marked = [
            ("+", &diff.added),
            ("-", &diff.removed),
            ("~", &diff.changed),
        ];
        let frontends = marked
            .iter()
            .flat_map(|(mark, keys)| keys.iter().map(move |k| format!("{mark}{k}")))
            .take(Self::KEYS)
            .collect();
        TableChange {
            generation,
            at,
            origin,
            summary: diff.summary(),
            frontends,
        }
    }
}

fn unix_seconds<S: serde::Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    s.serialize_u64(secs)
}

/// The most recent publishes, newest first. Cloned freely (one shared list).
#[derive(Debug, Clone, Default)]
pub struct ChangeLog {
    entries: Arc<Mutex<VecDeque<TableChange>>>,
}

impl ChangeLog {
    /// Publishes kept.
    pub const CAPACITY: usize = 20;

    pub fn push(&self, change: TableChange) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() == Self::CAPACITY {
            entries.pop_back();
        }
        entries.push_front(change);
    }

    /// A copy, newest first.
    pub fn recent(&self) -> Vec<TableChange> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{FrontendKey, Protocol};

    fn key(port: u16) -> FrontendKey {
        FrontendKey {
            protocol: Protocol::Tcp,
            listen: ([0, 0, 0, 0], port).into(),
        }
    }

    #[test]
    fn keeps_the_newest_capacity_entries_newest_first() {
        let log = ChangeLog::default();
        for g in 1..=(ChangeLog::CAPACITY as u64 + 5) {
            log.push(TableChange::new(
                g,
                SystemTime::UNIX_EPOCH,
                "File".into(),
                &TableDiff::default(),
            ));
        }
        let recent = log.recent();
        assert_eq!(recent.len(), ChangeLog::CAPACITY);
        assert_eq!(recent[0].generation, ChangeLog::CAPACITY as u64 + 5);
        assert_eq!(recent.last().unwrap().generation, 6);
    }

    #[test]
    fn names_the_first_frontends_touched_with_their_mark() {
        let diff = TableDiff {
            added: (1..=10).map(key).collect(),
            removed: vec![key(20)],
            changed: vec![key(30)],
            backends_added: 10,
            backends_removed: 1,
        };
        let change = TableChange::new(7, SystemTime::UNIX_EPOCH, "MarathonEvent".into(), &diff);
        assert_eq!(change.frontends.len(), TableChange::KEYS);
        assert_eq!(change.frontends[0], "+tcp:0.0.0.0:1");
        assert_eq!(change.summary, diff.summary());
        let only_removed = TableDiff {
            removed: vec![key(20)],
            changed: vec![key(30)],
            ..TableDiff::default()
        };
        let change = TableChange::new(8, SystemTime::UNIX_EPOCH, "File".into(), &only_removed);
        assert_eq!(change.frontends, ["-tcp:0.0.0.0:20", "~tcp:0.0.0.0:30"]);
    }
}
