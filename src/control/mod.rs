//! The control plane's heart: the control loop, the single writer of the routing table.
//!
//! Owns: turning each source snapshot into a table (resolve agent hostnames → `table::build`,
//! incrementally through a [`BuildCache`] that recomputes only the apps whose `Arc` changed),
//! publishing it when it differs from the current one (the publisher builds every frontend's
//! route, `balance::Route`, and stores table and routes with one `ArcSwap` store), and then telling
//! the consumers that follow the table (VIP address manager, listeners) to reconcile. Also the
//! log line per publish with a one-line diff summary, the last publishes ([`history`], for the
//! status page), and warnings logged once each. The active health checker ([`checker`]) is
//! control plane too: it follows the published table and writes probe verdicts into the
//! per-backend runtime state.
//!
//! Must not: forward traffic or open sockets other than the checker's probes (the data plane
//! does), talk to Marathon (sources do), or publish anything when a source fails: sources only
//! ever hand over good snapshots, so the last good table keeps serving.

pub mod checker;
pub mod history;
pub mod resolve;

use crate::published::{PublishedTable, TablePublisher};
use crate::source::{SourceHandle, SourceSnapshot};
use crate::table::diff::TableDiff;
use crate::table::{BuildCache, BuildOptions, Resolved, Warning};
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Resolves agent hostnames before a build.
pub trait ResolveHosts: Send + Sync {
    fn resolve_all(&self, hosts: Vec<String>) -> impl Future<Output = Resolved> + Send;
}

/// Something that follows the published table (listeners, VIP addresses).
pub trait FollowTable: Send {
    fn follow(&mut self, published: &Arc<PublishedTable>) -> impl Future<Output = ()> + Send;
}

/// No follower (for `vipd table`-like uses and tests).
impl FollowTable for () {
    async fn follow(&mut self, _published: &Arc<PublishedTable>) {}
}

/// Followers run in order: the first finishes before the second starts (addresses before
/// listeners, so that a VIP's address exists when its listener binds).
impl<A: FollowTable, B: FollowTable> FollowTable for (A, B) {
    async fn follow(&mut self, published: &Arc<PublishedTable>) {
        self.0.follow(published).await;
        self.1.follow(published).await;
    }
}

/// What one pass of the loop did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new table was published with this generation.
    Published { generation: u64 },
    /// The built table equals the current one; nothing was stored.
    Unchanged,
}

/// Timings of the last pass, for logs and metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassTimings {
    pub resolve: Duration,
    pub build: Duration,
    /// From when the source saw its input to the end of publishing.
    pub input_to_publish: Duration,
}

/// The control loop. There is exactly one, and it owns the only [`TablePublisher`].
#[derive(Debug)]
pub struct ControlLoop<R, F> {
    /// `None` only while a publish runs on the blocking pool.
    publisher: Option<TablePublisher>,
    resolver: R,
    options: BuildOptions,
    followers: F,
    logged_warnings: BTreeSet<Warning>,
    pub last_timings: PassTimings,
    metrics: Option<crate::metrics::ControlMetrics>,
    /// The last build's warnings, for the admin API.
    warnings: Arc<Mutex<Vec<Warning>>>,
    /// The last publishes, for the status page.
    changes: history::ChangeLog,
    /// Each app's part of the table, kept between builds (moved into the blocking build task and
    /// back; lost, and rebuilt from scratch, only if a build panics).
    build_cache: BuildCache,
}

impl<R: ResolveHosts, F: FollowTable> ControlLoop<R, F> {
    pub fn new(
        publisher: TablePublisher,
        resolver: R,
        options: BuildOptions,
        followers: F,
    ) -> Self {
        ControlLoop {
            publisher: Some(publisher),
            resolver,
            options,
            followers,
            logged_warnings: BTreeSet::new(),
            last_timings: PassTimings::default(),
            metrics: None,
            warnings: Arc::default(),
            changes: history::ChangeLog::default(),
            build_cache: BuildCache::new(),
        }
    }

    /// Records build and publish metrics into `metrics`, and keeps the last warnings in
    /// `warnings` (read by the admin API).
    pub fn with_observability(
        mut self,
        metrics: crate::metrics::ControlMetrics,
        warnings: Arc<Mutex<Vec<Warning>>>,
    ) -> Self {
        self.metrics = Some(metrics);
        self.warnings = warnings;
        self
    }

    /// Records each publish in `changes` (read by the status page).
    pub fn with_change_log(mut self, changes: history::ChangeLog) -> Self {
        self.changes = changes;
        self
    }

    /// Gives the followers back (for a shutdown driven from outside [`ControlLoop::run`]).
    pub fn into_followers(self) -> F {
        self.followers
    }

    /// Runs until `shutdown` fires, handling every snapshot the source publishes. Bursts coalesce:
    /// the watch channel only ever holds the newest snapshot.
    pub async fn run(mut self, mut source: SourceHandle, shutdown: CancellationToken) -> F {
        loop {
            let snapshot = source.snapshots.borrow_and_update().clone();
            if let Some(snapshot) = snapshot {
                self.handle(&snapshot).await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return self.followers,
                changed = source.snapshots.changed() => {
                    if changed.is_err() {
                        // The source ended (only at shutdown); keep serving what we have.
                        shutdown.cancelled().await;
                        return self.followers;
                    }
                }
            }
        }
    }

    /// One pass: resolve, build, compare, publish, follow.
    pub async fn handle(&mut self, snapshot: &SourceSnapshot) -> Outcome {
        let started = Instant::now();
        // Only names need resolving: IP literals are read by the builder directly. The cache
        // answers for every app it holds unchanged, so an event does not rescan 50,000 tasks.
        let hosts = self.build_cache.hosts_to_resolve(&snapshot.apps);
        let resolved = self.resolver.resolve_all(hosts).await;
        let resolve_time = started.elapsed();

        let build_started = Instant::now();
        // The build is CPU work (tens of ms at Marathon's ceiling): it runs on the blocking pool
        // so that the data plane's workers keep accepting while it runs (with one worker thread,
        // building inline stalled every new connection for the duration of the build).
        let apps = Arc::clone(&snapshot.apps);
        let options = self.options.clone();
        let mut cache = std::mem::take(&mut self.build_cache);
        let built = tokio::task::spawn_blocking(move || {
            let built = cache.build(&apps, &resolved, &options);
            (built, cache)
        })
        .await;
        let (new_table, warnings) = match built {
            Ok((built, cache)) => {
                self.build_cache = cache;
                built.into_parts()
            }
            Err(e) => {
                // table::build does not panic (proptests); if it ever does, keep the last table.
                tracing::error!(error = %e, "table build failed; keeping the current table");
                return Outcome::Unchanged;
            }
        };
        let build_time = build_started.elapsed();
        if let Some(m) = &self.metrics {
            m.built(build_time, warnings.len());
        }
        if let Ok(mut shared) = self.warnings.lock() {
            shared.clone_from(&warnings);
        }
        self.log_new_warnings(warnings);

        // Diffing and building the routes (a Maglev table per changed frontend) are CPU work
        // too: they run on the blocking pool with the publisher, never on a data-plane worker.
        let mut publisher = self
            .publisher
            .take()
            .expect("the publisher is back after each pass");
        let passed = tokio::task::spawn_blocking(move || {
            let current = publisher.current();
            // One pass over both tables: the diff is empty exactly when they are equal.
            let diff = TableDiff::between(&current.table, &new_table);
            let published =
                (current.generation == 0 || !diff.is_empty()).then(|| publisher.publish(new_table));
            (publisher, current, diff, published)
        })
        .await;
        let Ok((publisher, current, diff, published)) = passed else {
            // Neither the diff nor the publish panics; if one ever does, the publisher is lost
            // with the task and vipd cannot publish again: stop loudly rather than serve stale.
            panic!("the publish pass panicked; the table publisher is gone");
        };
        self.publisher = Some(publisher);
        let Some(published) = published else {
            tracing::debug!(origin = ?snapshot.origin, "table unchanged; nothing published");
            self.last_timings = PassTimings {
                resolve: resolve_time,
                build: build_time,
                input_to_publish: snapshot.observed_at.elapsed(),
            };
            return Outcome::Unchanged;
        };
        self.followers.follow(&published).await;
        // Freeing a table of 50,000 backends takes milliseconds: not on the publish path. (If a
        // reader still holds it, this only drops our reference.) When the table shrank a lot, the
        // freed heap goes back to the OS: glibc keeps it otherwise, and RSS stays at the peak.
        let backends = |t: &crate::table::Table| -> usize {
            t.frontends.iter().map(|f| f.backends.len()).sum()
        };
        let shrank =
            backends(&current.table) > backends(&published.table) + RELEASE_MEMORY_AFTER_SHRINK_BY;
        tokio::task::spawn_blocking(move || {
            drop(current);
            if shrank {
                release_free_memory();
            }
        });
        let input_to_publish = snapshot.observed_at.elapsed();
        self.last_timings = PassTimings {
            resolve: resolve_time,
            build: build_time,
            input_to_publish,
        };
        if let Some(m) = &self.metrics {
            m.publish_latency.observe(input_to_publish.as_secs_f64());
            m.published(
                published.generation,
                published.table.frontends.len(),
                published
                    .table
                    .frontends
                    .iter()
                    .map(|f| f.backends.len())
                    .sum(),
            );
        }
        self.changes.push(history::TableChange::new(
            published.generation,
            std::time::SystemTime::now(),
            format!("{:?}", snapshot.origin),
            &diff,
        ));
        tracing::info!(
            generation = published.generation,
            frontends = published.table.frontends.len(),
            origin = ?snapshot.origin,
            build_ms = build_time.as_secs_f64() * 1e3,
            apps_rebuilt = self.build_cache.last_stats().computed,
            latency_ms = input_to_publish.as_secs_f64() * 1e3,
            "published table: {}",
            diff.summary()
        );
        Outcome::Published {
            generation: published.generation,
        }
    }

    /// Logs each warning once while it persists; a warning that goes away and comes back is logged
    /// again. Avoids a log storm from a broken app on every rebuild.
    fn log_new_warnings(&mut self, warnings: Vec<Warning>) {
        let current: BTreeSet<Warning> = warnings.into_iter().collect();
        for w in current.difference(&self.logged_warnings) {
            tracing::warn!(app = w.app.as_deref().unwrap_or("-"), "{}", w.message);
        }
        self.logged_warnings = current;
    }
}

/// Backends a new table must have lost, against the previous one, before the freed memory is
/// handed back to the OS (about 10 MB of table and snapshot at ~1 KB per backend).
const RELEASE_MEMORY_AFTER_SHRINK_BY: usize = 10_000;

/// Returns the allocator's free memory to the OS (glibc `malloc_trim`). A no-op elsewhere.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists; it takes no
    // pointer and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_apps_document;
    use crate::published;
    use crate::source::Origin;
    use std::sync::Mutex;

    struct NoResolve;
    impl ResolveHosts for NoResolve {
        async fn resolve_all(&self, _hosts: Vec<String>) -> Resolved {
            Resolved::default()
        }
    }

    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<u64>>>);
    impl FollowTable for Recorder {
        async fn follow(&mut self, published: &Arc<PublishedTable>) {
            self.0.lock().unwrap().push(published.generation);
        }
    }

    fn snapshot(doc: &str) -> SourceSnapshot {
        SourceSnapshot {
            apps: Arc::new(parse_apps_document(doc.as_bytes()).unwrap()),
            origin: Origin::File,
            observed_at: Instant::now(),
        }
    }

    #[tokio::test]
    async fn first_snapshot_always_publishes_and_an_equal_one_does_not() {
        let (publisher, reader) = published::channel();
        let recorder = Recorder::default();
        let mut control = ControlLoop::new(
            publisher,
            NoResolve,
            BuildOptions::default(),
            recorder.clone(),
        );
        let empty = snapshot(r#"{"apps":[]}"#);
        assert_eq!(
            control.handle(&empty).await,
            Outcome::Published { generation: 1 }
        );
        assert_eq!(control.handle(&empty).await, Outcome::Unchanged);
        assert_eq!(reader.load_full().generation, 1);
        assert_eq!(*recorder.0.lock().unwrap(), vec![1]);
    }
}
