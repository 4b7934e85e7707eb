//! Sources of Marathon state: a local file (the embedded default) or a Marathon cluster.
//!
//! Owns: the contract between a source and the control loop. A source is a task that publishes
//! **full snapshots** into a `watch` channel (which coalesces bursts for free) and re-reads its
//! input when asked through [`SourceHandle::resync`].
//!
//! Must not: build tables or touch the data plane. A source that fails keeps its last good
//! snapshot in the channel; it never publishes an empty one because of an error.

pub mod file;
pub mod marathon;

use crate::model::AppsSnapshot;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{watch, Notify};

/// Where a snapshot came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File,
    /// A full fetch from Marathon.
    MarathonFull,
    /// A Marathon snapshot with events applied on top of it.
    MarathonEvent,
    /// Loaded from `--state-dir` because Marathon could not be reached: stale.
    StateDir,
}

/// One full view of Marathon's apps and tasks.
#[derive(Debug, Clone)]
pub struct SourceSnapshot {
    pub apps: Arc<AppsSnapshot>,
    pub origin: Origin,
    /// When the input behind this snapshot was seen (file change, event received, fetch done);
    /// the control loop measures input→publish latency from here.
    pub observed_at: Instant,
}

/// What the control loop holds of a running source.
#[derive(Debug, Clone)]
pub struct SourceHandle {
    pub snapshots: watch::Receiver<Option<SourceSnapshot>>,
    resync: Arc<Notify>,
}

impl SourceHandle {
    pub fn new(snapshots: watch::Receiver<Option<SourceSnapshot>>, resync: Arc<Notify>) -> Self {
        SourceHandle { snapshots, resync }
    }

    /// Asks the source to re-read its input now (SIGHUP).
    pub fn resync(&self) {
        self.resync.notify_one();
    }
}
