//! The active checker (control plane): probes backends and writes the verdicts selection reads.
//! It sits above [`crate::balance`] and [`crate::published`], which it reads, and uses the pure
//! parts of [`crate::health`] (the rise/fall counter, the probe).
//!
//! Owns: one task ([`spawn`]) that follows the published table, and one probe task per
//! (backend, probe kind), a backend being its protocol and address — a backend shared by several
//! frontends of one protocol is probed once per kind. Probe tasks start when a backend appears in an actively checked frontend and stop when
//! it leaves (or on shutdown). Results come back over a channel to the checker task, which runs
//! the pure [`RiseFall`] counter per probe, combines the probes of a backend
//! ([`ActiveState::combine`]) and stores the verdict in the backend's
//! [`BackendStats`](crate::balance::BackendStats).
//!
//! Timing: the first probe of a new backend runs after a random delay in `[0, min(interval,
//! 1 s))` (so 1,000 new backends do not probe in one burst, yet a new backend joins quickly),
//! then every `interval` ±10 % (the jitter keeps probes from falling into lock-step). Flips are
//! logged once each: `up` at info, `down` at warn, with the backend, the probe and the reason.
//!
//! A probe that fails locally ([`crate::health::fault`]: vipd out of descriptors, ...) is not
//! counted: it neither takes a backend down nor brings it up.
//!
//! Must not: pick backends, change the table, or block the data plane: it only stores atomics.

use crate::balance::{probe_for_frontend, ActiveConfig, BackendKey, BackendRegistry};
use crate::health::counter::{ActiveState, RiseFall};
use crate::health::probe::{probe, ProbeError};
use crate::health::{HealthReason, ProbeKind};
use crate::published::TableReader;
use crate::table::{BackendState, Table};
use rand::Rng;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest delay before the first probe of a new backend.
const FIRST_PROBE_SPREAD: Duration = Duration::from_secs(1);

/// What is probed: one backend, one kind.
type ProbeKey = (BackendKey, ProbeKind);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Params {
    interval: Duration,
    timeout: Duration,
}

struct Running {
    /// Results from an older task of this key are ignored.
    id: u64,
    params: Params,
    counter: RiseFall,
    /// Reason of the last failure (kept for the verdict).
    last_reason: Option<HealthReason>,
    stop: CancellationToken,
}

struct ProbeResult {
    id: u64,
    key: ProbeKey,
    outcome: Result<(), ProbeError>,
}

/// Starts the checker. It runs until `shutdown`, then stops every probe.
pub fn spawn(
    tables: TableReader,
    registry: Arc<BackendRegistry>,
    cfg: ActiveConfig,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(tables, registry, cfg, shutdown))
}

async fn run(
    tables: TableReader,
    registry: Arc<BackendRegistry>,
    cfg: ActiveConfig,
    shutdown: CancellationToken,
) {
    let mut changes = tables.subscribe();
    let (tx, mut rx) = mpsc::channel::<ProbeResult>(1024);
    let tasks = TaskTracker::new();
    let mut checker = Checker {
        registry,
        cfg,
        probes: HashMap::new(),
        verdicts: HashMap::new(),
        next_id: 0,
        stop_all: shutdown.child_token(),
    };
    checker.follow(&tables.load_full().table, &tx, &tasks);
    let mut table_open = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = changes.changed(), if table_open => {
                if changed.is_err() {
                    table_open = false;
                    continue;
                }
                checker.follow(&tables.load_full().table, &tx, &tasks);
            }
            Some(result) = rx.recv() => checker.apply(result),
        }
    }
    checker.stop_all.cancel();
    tasks.close();
    tasks.wait().await;
    tracing::debug!("active checker stopped");
}

struct Checker {
    registry: Arc<BackendRegistry>,
    cfg: ActiveConfig,
    probes: HashMap<ProbeKey, Running>,
    /// The verdict last stored per backend (to store only changes and clear on removal).
    verdicts: HashMap<BackendKey, ActiveState>,
    next_id: u64,
    stop_all: CancellationToken,
}

impl Checker {
    /// Starts, restarts (changed interval/timeout) and stops probes to match `table`.
    fn follow(&mut self, table: &Table, tx: &mpsc::Sender<ProbeResult>, tasks: &TaskTracker) {
        let mut wanted: BTreeMap<ProbeKey, Params> = BTreeMap::new();
        for frontend in &table.frontends {
            let Some(spec) = probe_for_frontend(frontend, &self.cfg) else {
                continue;
            };
            let params = Params {
                interval: spec.interval,
                timeout: spec.timeout,
            };
            for b in frontend.backends.iter() {
                if b.state == BackendState::Draining {
                    continue;
                }
                // The first frontend (in table order) asking for a key sets its timing.
                wanted
                    .entry((
                        BackendKey::new(frontend.protocol, b.address),
                        spec.kind.clone(),
                    ))
                    .or_insert(params);
            }
        }

        let stale: Vec<ProbeKey> = self
            .probes
            .iter()
            .filter(|(k, r)| wanted.get(*k) != Some(&r.params))
            .map(|(k, _)| k.clone())
            .collect();
        let mut touched: Vec<BackendKey> = Vec::new();
        let mut kept_counters: HashMap<ProbeKey, (RiseFall, Option<HealthReason>)> = HashMap::new();
        for key in stale {
            if let Some(r) = self.probes.remove(&key) {
                r.stop.cancel();
                touched.push(key.0);
                if wanted.contains_key(&key) {
                    kept_counters.insert(key, (r.counter, r.last_reason));
                }
            }
        }
        let stopped = touched.len() - kept_counters.len();
        let mut started = 0usize;
        for (key, params) in wanted {
            if self.probes.contains_key(&key) {
                continue;
            }
            let (counter, last_reason) = kept_counters
                .remove(&key)
                .unwrap_or_else(|| (RiseFall::new(self.cfg.rise, self.cfg.fall), None));
            self.next_id += 1;
            let id = self.next_id;
            let stop = self.stop_all.child_token();
            tasks.spawn(probe_loop(
                id,
                key.clone(),
                params,
                tx.clone(),
                stop.clone(),
            ));
            touched.push(key.0);
            self.probes.insert(
                key,
                Running {
                    id,
                    params,
                    counter,
                    last_reason,
                    stop,
                },
            );
            started += 1;
        }
        touched.sort();
        touched.dedup();
        for addr in touched {
            self.store_verdict(addr);
        }
        if started > 0 || stopped > 0 {
            tracing::info!(
                started,
                stopped,
                probes = self.probes.len(),
                "active health checks follow the table"
            );
        }
    }

    fn apply(&mut self, result: ProbeResult) {
        let Some(running) = self.probes.get_mut(&result.key) else {
            return;
        };
        if running.id != result.id {
            return;
        }
        let (backend, kind) = &result.key;
        let addr = &backend.address;
        if let Some(fault) = result.outcome.as_ref().err().and_then(ProbeError::local) {
            // vipd's own fault (out of descriptors, ...): not a verdict input.
            tracing::debug!(backend = %addr, probe = %kind, fault = fault.as_str(), "probe failed locally; not counted");
            return;
        }
        let ok = result.outcome.is_ok();
        if let Err(e) = &result.outcome {
            running.last_reason = Some(e.reason());
            tracing::debug!(backend = %addr, probe = %kind, error = %e, "probe failed");
        }
        if let Some(state) = running.counter.record(ok) {
            match (&result.outcome, state) {
                (Err(e), _) => tracing::warn!(
                    backend = %addr,
                    probe = %kind,
                    reason = e.reason().as_str(),
                    error = %e,
                    "backend probe down"
                ),
                (Ok(()), _) => tracing::info!(backend = %addr, probe = %kind, "backend probe up"),
            }
            self.store_verdict(*backend);
        }
    }

    /// Combines the probes of `addr` and stores the verdict when it changed.
    fn store_verdict(&mut self, addr: BackendKey) {
        let mut reason = None;
        let verdict =
            ActiveState::combine(self.probes.iter().filter(|((a, _), _)| *a == addr).map(
                |(_, r)| {
                    if r.counter.state() == ActiveState::Down {
                        reason = reason.or(r.last_reason);
                    }
                    r.counter.state()
                },
            ));
        let previous = self
            .verdicts
            .get(&addr)
            .copied()
            .unwrap_or(ActiveState::NotChecked);
        // Store even when unchanged here: the registry entry may have been pruned and recreated.
        self.registry.entry(addr).set_active_health(verdict, reason);
        if verdict == ActiveState::NotChecked {
            self.verdicts.remove(&addr);
        } else {
            self.verdicts.insert(addr, verdict);
        }
        if previous != verdict {
            tracing::debug!(backend = %addr.address, protocol = addr.protocol.as_str(), from = previous.as_str(), to = verdict.as_str(), "active verdict");
        }
    }
}

/// Probes one key until stopped: a short random first delay, then `interval` ±10 %.
async fn probe_loop(
    id: u64,
    key: ProbeKey,
    params: Params,
    tx: mpsc::Sender<ProbeResult>,
    stop: CancellationToken,
) {
    let first = {
        let spread = params.interval.min(FIRST_PROBE_SPREAD);
        Duration::from_nanos(rand::rng().random_range(0..spread.as_nanos().max(1) as u64))
    };
    let mut delay = first;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            r = probe(key.0.address, &key.1, params.timeout) => r,
        };
        let result = ProbeResult {
            id,
            key: key.clone(),
            outcome,
        };
        if tx.send(result).await.is_err() {
            return;
        }
        delay = params.interval.mul_f64(rand::rng().random_range(0.9..=1.1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Backend, Frontend, FrontendKind, Protocol};
    use std::net::SocketAddr;

    fn frontend(
        port: u16,
        protocol: Protocol,
        backends: &[SocketAddr],
        opts: &[(&str, &str)],
    ) -> Frontend {
        Frontend {
            protocol,
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            kind: FrontendKind::ServicePort,
            vip_name: None,
            app: "/a".into(),
            owner_kind: crate::table::OwnerKind::App,
            apps: vec!["/a".into()],
            port_index: 0,
            port_name: None,
            options: crate::table::PortOptions::from_pairs(opts.iter().copied()).unwrap(),
            backends: backends
                .iter()
                .map(|a| Backend {
                    address: *a,
                    task: "t".into(),
                    state: BackendState::Up,
                })
                .collect(),
        }
    }

    fn checker(enabled: bool) -> (Checker, Arc<BackendRegistry>) {
        let registry = Arc::new(BackendRegistry::new());
        let cfg = ActiveConfig {
            enabled,
            interval: Duration::from_secs(3600),
            ..ActiveConfig::default()
        };
        let c = Checker {
            registry: registry.clone(),
            cfg,
            probes: HashMap::new(),
            verdicts: HashMap::new(),
            next_id: 0,
            stop_all: CancellationToken::new(),
        };
        (c, registry)
    }

    #[tokio::test]
    async fn a_shared_backend_is_probed_once_per_kind_and_probes_follow_the_table() {
        let (x, y) = (
            SocketAddr::from(([127, 0, 0, 1], 9001)),
            SocketAddr::from(([127, 0, 0, 1], 9002)),
        );
        let (mut c, registry) = checker(true);
        let (tx, _rx) = mpsc::channel(16);
        let tasks = TaskTracker::new();
        let table = Table {
            frontends: vec![
                frontend(1, Protocol::Tcp, &[x, y], &[]),
                frontend(2, Protocol::Tcp, &[x], &[]),
                frontend(
                    3,
                    Protocol::Tcp,
                    &[x],
                    &[("active_health_check", "http:/h")],
                ),
                // The global flag alone does not TCP-probe a UDP port.
                frontend(
                    4,
                    Protocol::Udp,
                    &[SocketAddr::from(([127, 0, 0, 1], 9003))],
                    &[],
                ),
            ],
        };
        c.follow(&table, &tx, &tasks);
        assert_eq!(c.probes.len(), 3, "x: tcp + http, y: tcp");
        assert_eq!(
            registry.entry(BackendKey::tcp(x)).active_health(),
            ActiveState::Pending
        );
        // y leaves: its probe stops and its verdict is cleared.
        let table = Table {
            frontends: vec![frontend(1, Protocol::Tcp, &[x], &[])],
        };
        c.follow(&table, &tx, &tasks);
        assert_eq!(c.probes.len(), 1);
        assert_eq!(
            registry.entry(BackendKey::tcp(y)).active_health(),
            ActiveState::NotChecked
        );
        // A stale result of a stopped probe is ignored; a current one counts.
        c.apply(ProbeResult {
            id: 0,
            key: (BackendKey::tcp(x), ProbeKind::Tcp),
            outcome: Ok(()),
        });
        assert_eq!(
            registry.entry(BackendKey::tcp(x)).active_health(),
            ActiveState::Pending
        );
        let id = c.probes[&(BackendKey::tcp(x), ProbeKind::Tcp)].id;
        c.apply(ProbeResult {
            id,
            key: (BackendKey::tcp(x), ProbeKind::Tcp),
            outcome: Ok(()),
        });
        assert_eq!(
            registry.entry(BackendKey::tcp(x)).active_health(),
            ActiveState::Up
        );
        // Turned off by label: no probe left, verdict cleared.
        let table = Table {
            frontends: vec![frontend(
                1,
                Protocol::Tcp,
                &[x],
                &[("active_health_check", "off")],
            )],
        };
        c.follow(&table, &tx, &tasks);
        assert!(c.probes.is_empty());
        assert_eq!(
            registry.entry(BackendKey::tcp(x)).active_health(),
            ActiveState::NotChecked
        );
        c.stop_all.cancel();
        tasks.close();
        tasks.wait().await;
    }

    #[tokio::test]
    async fn probes_that_fail_locally_are_not_counted() {
        let x = SocketAddr::from(([127, 0, 0, 1], 9001));
        let (mut c, registry) = checker(true);
        let (tx, _rx) = mpsc::channel(16);
        let tasks = TaskTracker::new();
        let table = Table {
            frontends: vec![frontend(1, Protocol::Tcp, &[x], &[])],
        };
        c.follow(&table, &tx, &tasks);
        let key = (BackendKey::tcp(x), ProbeKind::Tcp);
        let id = c.probes[&key].id;
        for _ in 0..10 {
            c.apply(ProbeResult {
                id,
                key: key.clone(),
                outcome: Err(ProbeError::Local(
                    crate::health::LocalFault::Emfile,
                    std::io::Error::from_raw_os_error(libc::EMFILE),
                )),
            });
        }
        let state = registry.entry(BackendKey::tcp(x)).active_health();
        assert_eq!(
            state,
            ActiveState::Pending,
            "never down for vipd's own fault"
        );
        c.stop_all.cancel();
        tasks.close();
        tasks.wait().await;
    }

    #[tokio::test]
    async fn a_changed_interval_restarts_the_probe_but_keeps_its_state() {
        let x = SocketAddr::from(([127, 0, 0, 1], 9001));
        let (mut c, registry) = checker(false);
        let (tx, _rx) = mpsc::channel(16);
        let tasks = TaskTracker::new();
        let t = |interval: &str| Table {
            frontends: vec![frontend(
                1,
                Protocol::Tcp,
                &[x],
                &[
                    ("active_health_check", "tcp"),
                    ("probe", "tcp"),
                    ("probe_interval_s", interval),
                ],
            )],
        };
        c.follow(&t("10"), &tx, &tasks);
        let id = c.probes[&(BackendKey::tcp(x), ProbeKind::Tcp)].id;
        c.apply(ProbeResult {
            id,
            key: (BackendKey::tcp(x), ProbeKind::Tcp),
            outcome: Ok(()),
        });
        c.follow(&t("20"), &tx, &tasks);
        let r = &c.probes[&(BackendKey::tcp(x), ProbeKind::Tcp)];
        assert_ne!(r.id, id);
        assert_eq!(r.params.interval, Duration::from_secs(20));
        assert_eq!(
            registry.entry(BackendKey::tcp(x)).active_health(),
            ActiveState::Up
        );
        c.stop_all.cancel();
        tasks.close();
        tasks.wait().await;
    }
}
