//! The file source: `vipd run --apps FILE`, the embedded default.
//!
//! Owns: watching one apps document on disk (the same shape as `GET /v2/apps?embed=apps.tasks`,
//! plus an optional `pods` array in the shape of `GET /v2/pods/::status`; `apps` may be absent
//! when `pods` is present) and publishing a full snapshot whenever its content changes. Changes are seen through inotify
//! (the `notify` crate, watching the parent directory so that an atomic rename is noticed) and,
//! as a fallback for filesystems without inotify, by polling the file's metadata every 250 ms.
//! Both an in-place write and a write-to-temp-then-rename are picked up within 1 s.
//!
//! Must not: publish anything for an unreadable or malformed file. The last good snapshot stays in
//! the channel and the reason is logged once per change of state (no log storm while a file stays
//! broken).

use super::marathon::apply::share_unchanged_apps;
use super::{Origin, SourceHandle, SourceSnapshot};
use crate::model::{self, AppsSnapshot};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

/// How often the metadata is polled when no inotify event arrives.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Why the file could not be turned into a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: model::ModelError,
    },
}

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// Starts watching `path`. The first snapshot is published as soon as the file parses. A file
/// larger than `max_document_size` bytes is an error (the last good snapshot stays).
pub fn spawn(path: PathBuf, max_document_size: usize, shutdown: CancellationToken) -> SourceHandle {
    spawn_with_initial(path, max_document_size, None, shutdown)
}

/// Like [`spawn`], with `initial` (a saved state) served until the file gives a snapshot.
pub fn spawn_with_initial(
    path: PathBuf,
    max_document_size: usize,
    initial: Option<SourceSnapshot>,
    shutdown: CancellationToken,
) -> SourceHandle {
    let (tx, rx) = watch::channel(initial);
    let resync = Arc::new(Notify::new());
    tokio::spawn(run(path, max_document_size, tx, resync.clone(), shutdown));
    SourceHandle::new(rx, resync)
}

async fn run(
    path: PathBuf,
    max_document_size: usize,
    tx: watch::Sender<Option<SourceSnapshot>>,
    resync: Arc<Notify>,
    shutdown: CancellationToken,
) {
    // inotify wakeups; the watcher must stay alive for as long as the loop runs.
    let (wake_tx, mut wake_rx) = mpsc::channel::<()>(1);
    let _watcher = watch_parent(&path, wake_tx);

    let mut last_stamp: Option<FileStamp> = None;
    let mut last_body_hash: Option<u64> = None;
    let mut last_error: Option<String> = None;
    // Whether a table exists to keep when the file is unusable (for the warning's wording).
    let mut have_snapshot = tx.borrow().is_some();
    // The last published snapshot: a new parse shares every app and pod equal to one in it, so
    // that the incremental build recomputes only the owners the edit changed.
    let mut last_apps: Option<Arc<AppsSnapshot>> =
        tx.borrow().as_ref().map(|s| Arc::clone(&s.apps));
    let mut force = true;
    // An inotify event makes the file be read even if its metadata looks unchanged (a same-size
    // write within the filesystem's timestamp granularity); the content hash then decides.
    let mut woken = false;
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    while !shutdown.is_cancelled() {
        let current = stamp(&path);
        if force || woken || current != last_stamp {
            let observed_at = Instant::now();
            let p = path.clone();
            let result = tokio::task::spawn_blocking(move || {
                let body = super::read_document_file(&p, max_document_size);
                (p, body)
            })
            .await;
            let Ok((p, body)) = result else {
                // The blocking task panicked or was cancelled at shutdown.
                return;
            };
            last_stamp = current;
            match body {
                Err(source) => report_error(
                    &mut last_error,
                    have_snapshot,
                    FileSourceError::Read {
                        path: p.display().to_string(),
                        source,
                    },
                ),
                Ok(body) => {
                    let hash = content_hash(&body);
                    if force || Some(hash) != last_body_hash {
                        let prev = last_apps.clone();
                        let parsed = tokio::task::spawn_blocking(move || {
                            parse_sharing(&body, prev.as_deref())
                        })
                        .await;
                        match parsed {
                            Ok(Ok(apps)) => {
                                if last_error.take().is_some() {
                                    tracing::info!(path = %p.display(), "apps file readable again");
                                }
                                last_body_hash = Some(hash);
                                tracing::debug!(
                                    path = %p.display(),
                                    apps = apps.apps.len(),
                                    rejected = apps.rejected.len(),
                                    pods = apps.pods.len(),
                                    rejected_pods = apps.rejected_pods.len(),
                                    "apps file loaded"
                                );
                                have_snapshot = true;
                                let apps = Arc::new(apps);
                                last_apps = Some(Arc::clone(&apps));
                                tx.send_replace(Some(SourceSnapshot {
                                    apps,
                                    origin: Origin::File,
                                    observed_at,
                                }));
                            }
                            Ok(Err(source)) => report_error(
                                &mut last_error,
                                have_snapshot,
                                FileSourceError::Parse {
                                    path: p.display().to_string(),
                                    source,
                                },
                            ),
                            Err(_) => return,
                        }
                    }
                }
            }
            force = false;
            woken = false;
        }

        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = resync.notified() => {
                tracing::info!(path = %path.display(), "re-reading apps file");
                force = true;
            }
            _ = wake_rx.recv() => woken = true,
            _ = poll.tick() => {}
        }
    }
}

/// Parses `body` and shares with `prev` every app that is equal to its previous version.
fn parse_sharing(
    body: &[u8],
    prev: Option<&AppsSnapshot>,
) -> Result<AppsSnapshot, model::ModelError> {
    let mut apps = model::parse_apps_document(body)?;
    if let Some(prev) = prev {
        share_unchanged_apps(prev, &mut apps);
    }
    Ok(apps)
}

/// Logs the error unless it is the same as the last one.
fn report_error(last_error: &mut Option<String>, have_snapshot: bool, error: FileSourceError) {
    let text = error.to_string();
    if last_error.as_deref() != Some(text.as_str()) {
        if have_snapshot {
            tracing::warn!(error = %text, "apps file unusable; keeping the last good table");
        } else {
            tracing::warn!(error = %text, "apps file unusable; no table yet");
        }
        *last_error = Some(text);
    }
}

fn content_hash(body: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    h.finish()
}

/// Watches the file's directory (not the file: a rename replaces the inode we would be watching).
/// Whether an inotify event on the apps file means its content may have changed.
///
/// Opening, reading and closing the file without writing (which the source itself does on every
/// read) must not wake it: that would make each read trigger the next one, a busy loop that keeps
/// a core fully used while nothing changes.
fn wakes(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

/// Returns `None` when inotify is unavailable; polling still works then.
fn watch_parent(path: &Path, wake: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = path.file_name().map(|n| n.to_os_string());
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                let ours = event
                    .paths
                    .iter()
                    .any(|p| p.file_name().map(|n| n.to_os_string()) == name);
                if ours && wakes(&event.kind) {
                    // A full channel already holds a wakeup; that is enough.
                    let _ = wake.try_send(());
                }
            }
            Err(e) => tracing::debug!(error = %e, "inotify error; polling continues"),
        })
        .map_err(|e| tracing::info!(error = %e, "inotify unavailable; polling the apps file"))
        .ok()?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| tracing::info!(error = %e, dir = %dir.display(), "cannot watch directory; polling the apps file"))
        .ok()?;
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next_snapshot(
        rx: &mut watch::Receiver<Option<SourceSnapshot>>,
    ) -> Option<SourceSnapshot> {
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .ok()?
            .ok()?;
        rx.borrow_and_update().clone()
    }

    fn doc(app: &str) -> String {
        format!(r#"{{"apps":[{{"id":"{app}","portDefinitions":[{{"port":10000}}]}}]}}"#)
    }

    #[tokio::test]
    async fn an_edit_shares_the_unchanged_apps_with_the_previous_snapshot() {
        let two = |b_port: u16| {
            format!(
                r#"{{"apps":[{{"id":"/a","portDefinitions":[{{"port":10000}}]}},
                             {{"id":"/b","portDefinitions":[{{"port":{b_port}}}]}}]}}"#
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("apps.json");
        std::fs::write(&path, two(10001)).unwrap();
        let shutdown = CancellationToken::new();
        let mut handle = spawn(
            path.clone(),
            crate::source::DEFAULT_MAX_DOCUMENT_SIZE,
            shutdown.clone(),
        );
        let first = next_snapshot(&mut handle.snapshots).await.unwrap();
        std::fs::write(&path, two(10002)).unwrap();
        let second = next_snapshot(&mut handle.snapshots).await.unwrap();
        assert!(
            Arc::ptr_eq(&first.apps.apps[0], &second.apps.apps[0]),
            "unchanged /a is shared"
        );
        assert!(!Arc::ptr_eq(&first.apps.apps[1], &second.apps.apps[1]));
        assert_eq!(
            second.apps.apps[1].port_definitions.as_ref().unwrap()[0].port,
            Some(10002)
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_pods_only_document_is_read_and_an_edit_shares_the_unchanged_pods() {
        let two = |b_port: u16| {
            format!(
                r#"{{"pods":[{{"id":"/a","spec":{{"containers":[{{"name":"c"}}]}}}},
                             {{"id":"/b","spec":{{"containers":[{{"name":"c","endpoints":[
                               {{"name":"e","hostPort":{b_port}}}]}}]}}}}]}}"#
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("apps.json");
        std::fs::write(&path, two(0)).unwrap();
        let shutdown = CancellationToken::new();
        let mut handle = spawn(
            path.clone(),
            crate::source::DEFAULT_MAX_DOCUMENT_SIZE,
            shutdown.clone(),
        );
        let first = next_snapshot(&mut handle.snapshots).await.unwrap();
        assert!(first.apps.apps.is_empty());
        assert_eq!(first.apps.pods.len(), 2);
        std::fs::write(&path, two(80)).unwrap();
        let second = next_snapshot(&mut handle.snapshots).await.unwrap();
        assert!(
            Arc::ptr_eq(&first.apps.pods[0], &second.apps.pods[0]),
            "unchanged /a is shared"
        );
        assert!(!Arc::ptr_eq(&first.apps.pods[1], &second.apps.pods[1]));
        assert_eq!(
            second.apps.pods[1].spec.containers[0].endpoints[0].host_port,
            Some(80)
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn in_place_write_and_atomic_rename_are_seen_and_garbage_keeps_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("apps.json");
        std::fs::write(&path, doc("/one")).unwrap();
        let shutdown = CancellationToken::new();
        let mut handle = spawn(
            path.clone(),
            crate::source::DEFAULT_MAX_DOCUMENT_SIZE,
            shutdown.clone(),
        );

        let s = next_snapshot(&mut handle.snapshots).await.unwrap();
        assert_eq!(s.apps.apps[0].id, "/one");
        assert_eq!(s.origin, Origin::File);

        // In-place write.
        std::fs::write(&path, doc("/two")).unwrap();
        let s = next_snapshot(&mut handle.snapshots).await.unwrap();
        assert_eq!(s.apps.apps[0].id, "/two");

        // Atomic rename over the file.
        let tmp = dir.path().join(".apps.json.tmp");
        std::fs::write(&tmp, doc("/three")).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let s = next_snapshot(&mut handle.snapshots).await.unwrap();
        assert_eq!(s.apps.apps[0].id, "/three");

        // Garbage: nothing is published; the last good snapshot stays.
        std::fs::write(&path, "{ not json").unwrap();
        let r = tokio::time::timeout(Duration::from_millis(800), handle.snapshots.changed()).await;
        assert!(r.is_err(), "garbage must not publish");
        assert_eq!(
            handle.snapshots.borrow().as_ref().unwrap().apps.apps[0].id,
            "/three"
        );

        // Removal: also nothing published.
        std::fs::remove_file(&path).unwrap();
        let r = tokio::time::timeout(Duration::from_millis(600), handle.snapshots.changed()).await;
        assert!(r.is_err(), "a missing file must not publish");

        // And recovery.
        std::fs::write(&path, doc("/four")).unwrap();
        let s = next_snapshot(&mut handle.snapshots).await.unwrap();
        assert_eq!(s.apps.apps[0].id, "/four");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn resync_republishes_the_same_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("apps.json");
        std::fs::write(&path, doc("/one")).unwrap();
        let shutdown = CancellationToken::new();
        let mut handle = spawn(
            path.clone(),
            crate::source::DEFAULT_MAX_DOCUMENT_SIZE,
            shutdown.clone(),
        );
        next_snapshot(&mut handle.snapshots).await.unwrap();
        handle.resync();
        let s = next_snapshot(&mut handle.snapshots).await.unwrap();
        assert_eq!(s.apps.apps[0].id, "/one");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_file_missing_at_start_is_picked_up_when_it_appears() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("later.json");
        let shutdown = CancellationToken::new();
        let mut handle = spawn(
            path.clone(),
            crate::source::DEFAULT_MAX_DOCUMENT_SIZE,
            shutdown.clone(),
        );
        std::fs::write(&path, doc("/late")).unwrap();
        let s = next_snapshot(&mut handle.snapshots).await.unwrap();
        assert_eq!(s.apps.apps[0].id, "/late");
        shutdown.cancel();
    }

    /// The source's own open/read/close of the file must not wake it (that was a busy loop);
    /// writes, close-after-write, creation (atomic rename) and removal must.
    #[test]
    fn only_changes_wake_the_source() {
        use notify::event::{
            AccessKind, AccessMode, CreateKind, DataChange, ModifyKind, RemoveKind, RenameMode,
        };
        use notify::EventKind;
        for quiet in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Any),
        ] {
            assert!(!wakes(&quiet), "{quiet:?} must not wake the source");
        }
        for change in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Create(CreateKind::File),
            EventKind::Remove(RemoveKind::File),
            EventKind::Any,
        ] {
            assert!(wakes(&change), "{change:?} must wake the source");
        }
    }
}
