//! Sources of Marathon state: a local file (the embedded default) or a Marathon cluster.
//!
//! Owns: the contract between a source and the control loop. A source is a task that publishes
//! **full snapshots** into a `watch` channel (which coalesces bursts for free) and re-reads its
//! input when asked through [`SourceHandle::resync`].
//!
//! Also owns the bound on source documents ([`DEFAULT_MAX_DOCUMENT_SIZE`], [`read_document`]):
//! every apps document (file, stdin, Marathon response body) is read with a size cap, so a huge
//! or endless input is one error and its partial buffer is freed.
//!
//! Must not: build tables or touch the data plane. A source that fails keeps its last good
//! snapshot in the channel; it never publishes an empty one because of an error.

pub mod file;
pub mod marathon;
pub mod mesos;

use crate::model::AppsSnapshot;
use std::io::Read;
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
    /// The Mesos master's event stream (alone, or merged with Marathon's apps).
    Mesos,
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

/// Default `--max-document-size`: 128 MiB. The apps document at Marathon's ceiling (2,000 apps /
/// 50,000 tasks, generated like `benches/table.rs`) is 27,202,592 bytes (26 MiB); the default
/// leaves about 5x for larger app definitions (env, labels, constraints) and pretty-printing.
pub const DEFAULT_MAX_DOCUMENT_SIZE: usize = 128 << 20;

/// A document over the size cap. Carried as the source of an `io::Error` on read paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("document larger than {max} bytes (--max-document-size)")]
pub struct DocumentTooLarge {
    pub max: usize,
}

/// Reads all of `reader`, but at most `max` bytes: one byte more is a [`DocumentTooLarge`]
/// error (as `io::ErrorKind::InvalidData`), and what was read is freed.
pub fn read_document(reader: impl Read, max: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    reader
        .take(max.saturating_add(1) as u64)
        .read_to_end(&mut buf)?;
    if buf.len() > max {
        drop(buf);
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            DocumentTooLarge { max },
        ));
    }
    Ok(buf)
}

/// [`read_document`] of a file; a regular file whose size already says it is too large is
/// refused without reading it.
pub fn read_document_file(path: &std::path::Path, max: usize) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    if let Ok(meta) = file.metadata() {
        if meta.is_file() && meta.len() > max as u64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                DocumentTooLarge { max },
            ));
        }
    }
    read_document(file, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_over_the_cap_is_an_error_and_one_at_the_cap_is_read() {
        assert_eq!(read_document(&b"12345"[..], 5).unwrap(), b"12345");
        let e = read_document(&b"123456"[..], 5).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(
            e.to_string(),
            "document larger than 5 bytes (--max-document-size)"
        );
        // An endless input stops at the cap.
        let e = read_document(std::io::repeat(0), 1 << 16).unwrap_err();
        assert!(e.get_ref().unwrap().is::<DocumentTooLarge>());
    }
}
