//! Prometheus metrics: names, help texts, label sets, and how each is produced.
//!
//! Owns: the [`Metrics`] registry. Control-plane metrics (table generation, publish time, build
//! duration, input→publish latency) are ordinary metrics the control loop records into. Data-plane
//! metrics are produced **at scrape time** by [`DataplaneCollector`] from the per-frontend and
//! per-backend runtime registries, so the hot path pays nothing beyond the atomics it already
//! keeps, and a backend or frontend that leaves the table stops being exported with it.
//!
//! Label sets are bounded by the table: `frontend` is `protocol:listen` (one value per frontend),
//! `backend` is the backend address and `protocol` its protocol (`tcp`/`udp`: a TCP and a UDP
//! service on one `ip:port` are two backends), and the remaining labels (`reason`,
//! `direction`, `kind`, `state`) take a fixed handful of values. A cluster with F frontends and B
//! backends (U of the frontends UDP) exports about 7·F + 14·U + 15·B data-plane series.
//!
//! Must not: hold locks that the data plane takes per packet, or label anything by client address.

use crate::balance::BackendRegistry;
use crate::dataplane::udp::UdpStatsRegistry;
use crate::dataplane::{FrontendRegistry, ListenerState, ListenerStatusHandle};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{Encoder, Histogram, HistogramOpts, IntGauge, Opts, Registry};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The version `vipd_build_info` reports (the crate's).
pub const BUILD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit `vipd_build_info` reports: set by `build.rs` (`git rev-parse --short HEAD`, or
/// `$VIPD_BUILD_COMMIT`), `unknown` when the build had neither.
pub const BUILD_COMMIT: &str = match option_env!("VIPD_GIT_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// Everything vipd exports.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub control: ControlMetrics,
}

/// Recorded by the control loop at each pass.
#[derive(Debug, Clone)]
pub struct ControlMetrics {
    pub generation: IntGauge,
    pub last_publish: prometheus::Gauge,
    pub build_duration: Histogram,
    pub publish_latency: Histogram,
    pub frontends: IntGauge,
    pub backends: IntGauge,
    pub warnings: IntGauge,
}

impl ControlMetrics {
    /// Records a publish.
    pub fn published(&self, generation: u64, frontends: usize, backends: usize) {
        self.generation.set(generation as i64);
        self.frontends.set(frontends as i64);
        self.backends.set(backends as i64);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_publish.set(now.as_secs_f64());
    }

    pub fn built(&self, build: Duration, warnings: usize) {
        self.build_duration.observe(build.as_secs_f64());
        self.warnings.set(warnings as i64);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::with_opts(Opts::new(name, help)).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique");
            g
        };
        let generation = gauge(
            "vipd_table_generation",
            "Generation of the published table.",
        );
        let frontends = gauge("vipd_table_frontends", "Frontends in the published table.");
        let backends = gauge(
            "vipd_table_backends",
            "Backends in the published table (summed over frontends).",
        );
        let warnings = gauge(
            "vipd_table_warnings",
            "Warnings from the last table build (apps or ports skipped).",
        );
        let last_publish = prometheus::Gauge::with_opts(Opts::new(
            "vipd_table_last_publish_timestamp_seconds",
            "Unix time of the last table publish.",
        ))
        .expect("valid metric");
        registry
            .register(Box::new(last_publish.clone()))
            .expect("unique");
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric");
            registry.register(Box::new(h.clone())).expect("unique");
            h
        };
        let build_duration = histogram(
            "vipd_table_build_duration_seconds",
            "Time to build a table from a snapshot (table::build).",
            vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
        );
        let publish_latency = histogram(
            "vipd_table_publish_latency_seconds",
            "From the source seeing a change (event received, file changed, fetch done) to the new table being published and followed.",
            vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
        );
        let build_info = prometheus::IntGaugeVec::new(
            Opts::new(
                "vipd_build_info",
                "Always 1; the labels say which build runs (crate version, git commit).",
            ),
            &["version", "commit"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[BUILD_VERSION, BUILD_COMMIT])
            .set(1);
        registry.register(Box::new(build_info)).expect("unique");
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique");
        Metrics {
            registry,
            control: ControlMetrics {
                generation,
                last_publish,
                build_duration,
                publish_latency,
                frontends,
                backends,
                warnings,
            },
        }
    }

    /// Registers an extra collector (data plane, source status).
    pub fn register(&self, collector: Box<dyn Collector>) {
        if let Err(e) = self.registry.register(collector) {
            tracing::error!(error = %e, "metrics collector not registered");
        }
    }

    /// The Prometheus text exposition of everything.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        let families = self.registry.gather();
        if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

// === Building families by hand (scrape-time collectors) ===

/// The `{kind="resource"|"other"}` counter family of a side server's accept errors.
pub fn accept_errors_family(
    name: &'static str,
    help: &'static str,
    counts: &crate::dataplane::listener::AcceptErrorCounts,
) -> Family {
    let (resource, other) = counts.get();
    let mut errors = Family::counter(name, help);
    errors.add(&[("kind", "resource")], resource as f64);
    errors.add(&[("kind", "other")], other as f64);
    errors
}

/// One metric family under construction.
#[derive(Debug)]
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    metrics: Vec<proto::Metric>,
}

impl Family {
    pub fn counter(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: MetricType::COUNTER,
            metrics: Vec::new(),
        }
    }

    pub fn gauge(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: MetricType::GAUGE,
            metrics: Vec::new(),
        }
    }

    /// Adds one sample with the given labels.
    pub fn add(&mut self, labels: &[(&str, &str)], value: f64) {
        let mut m = proto::Metric::default();
        m.set_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut l = proto::LabelPair::default();
                    l.set_name((*k).to_string());
                    l.set_value((*v).to_string());
                    l
                })
                .collect(),
        );
        match self.kind {
            MetricType::COUNTER => {
                let mut c = proto::Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            _ => {
                let mut g = proto::Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        self.metrics.push(m);
    }

    pub fn desc(&self) -> Desc {
        Desc::new(
            self.name.to_string(),
            self.help.to_string(),
            Vec::new(),
            Default::default(),
        )
        .expect("valid metric name")
    }

    pub fn finish(self) -> Option<MetricFamily> {
        if self.metrics.is_empty() {
            return None;
        }
        let mut f = MetricFamily::default();
        f.set_name(self.name.to_string());
        f.set_help(self.help.to_string());
        f.set_field_type(self.kind);
        f.set_metric(self.metrics);
        Some(f)
    }
}

/// Something that produces metric families at scrape time.
pub trait ScrapeFamilies: Send + Sync {
    fn families(&self) -> Vec<Family>;
}

/// A Prometheus collector over a [`ScrapeFamilies`]: the descriptions are taken once, the
/// samples at every scrape.
#[derive(Debug)]
pub struct Scraped<T> {
    source: T,
    descs: Vec<Desc>,
}

impl<T: ScrapeFamilies> Scraped<T> {
    pub fn new(source: T) -> Self {
        let descs = source.families().iter().map(Family::desc).collect();
        Scraped { source, descs }
    }
}

impl<T: ScrapeFamilies> Collector for Scraped<T> {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.source
            .families()
            .into_iter()
            .filter_map(Family::finish)
            .collect()
    }
}

/// Exports what each published frontend is (`vipd_frontend_info`): its kind, its owner's kind
/// (`app`, `pod`, `task`) and owner id, and a named VIP's DNS name, so that the per-frontend
/// series (labelled by `frontend` only) can be joined to their owner in PromQL.
#[derive(Debug)]
pub struct TableCollector {
    tables: crate::published::TableReader,
}

impl TableCollector {
    pub fn new(tables: crate::published::TableReader) -> Scraped<Self> {
        Scraped::new(TableCollector { tables })
    }
}

impl ScrapeFamilies for TableCollector {
    fn families(&self) -> Vec<Family> {
        let mut info = Family::gauge(
            "vipd_frontend_info",
            "Always 1 per published frontend; labels: kind (service_port, vip), owner_kind (app, pod, task), owner (the first owner id), vip_name (named VIPs; empty otherwise).",
        );
        let published = self.tables.load_full();
        for f in &published.table.frontends {
            let key = f.key().to_string();
            let kind = match f.kind {
                crate::table::FrontendKind::ServicePort => "service_port",
                crate::table::FrontendKind::Vip => "vip",
            };
            info.add(
                &[
                    ("frontend", &key),
                    ("kind", kind),
                    ("owner_kind", f.owner_kind.as_str()),
                    ("owner", &f.app),
                    ("vip_name", f.vip_name.as_deref().unwrap_or("")),
                ],
                1.0,
            );
        }
        vec![info]
    }
}

/// Exports the data plane's runtime registries at scrape time.
#[derive(Debug)]
pub struct DataplaneCollector {
    backends: Arc<BackendRegistry>,
    frontends: Arc<FrontendRegistry>,
    udp: Arc<UdpStatsRegistry>,
    listeners: ListenerStatusHandle,
}

impl DataplaneCollector {
    pub fn new(
        backends: Arc<BackendRegistry>,
        frontends: Arc<FrontendRegistry>,
        udp: Arc<UdpStatsRegistry>,
        listeners: ListenerStatusHandle,
    ) -> Scraped<Self> {
        Scraped::new(DataplaneCollector {
            backends,
            frontends,
            udp,
            listeners,
        })
    }
}

impl ScrapeFamilies for DataplaneCollector {
    /// Every family, filled from the registries' current snapshots.
    fn families(&self) -> Vec<Family> {
        let mut accepted = Family::counter(
            "vipd_frontend_connections_total",
            "Connections accepted by the frontend (UDP: flows created).",
        );
        let active = Family::gauge(
            "vipd_frontend_connections_active",
            "Connections currently open through the frontend (UDP: live flows).",
        );
        let mut active = active;
        let mut no_backend = Family::counter(
            "vipd_frontend_no_backend_total",
            "Connections closed because no eligible backend answered.",
        );
        let mut cut = Family::counter(
            "vipd_frontend_connections_cut_total",
            "Connections cut by a drain timeout or shutdown grace period.",
        );
        let mut accept_errors = Family::counter(
            "vipd_frontend_accept_errors_total",
            "accept(2) errors by kind (resource: EMFILE/ENFILE/ENOBUFS/ENOMEM).",
        );
        let mut local_failures = Family::counter(
            "vipd_frontend_local_failures_total",
            "Connect attempts (TCP) and upstream sockets (UDP) that failed for vipd's own reasons, by reason (emfile, enfile, enobufs, enomem, eaddrnotavail, bind); never counted against a backend.",
        );
        let mut listener_up = Family::gauge(
            "vipd_frontend_listener_up",
            "1 when the frontend's socket is bound, 0 while binding fails or is pending.",
        );
        for (key, s) in self.frontends.snapshot() {
            let f = key.to_string();
            let l = [("frontend", f.as_str())];
            accepted.add(&l, s.accepted as f64);
            active.add(&l, s.active as f64);
            no_backend.add(&l, s.no_backend as f64);
            cut.add(&l, s.cut as f64);
            accept_errors.add(
                &[("frontend", &f), ("kind", "resource")],
                s.accept_errors_resource as f64,
            );
            accept_errors.add(
                &[("frontend", &f), ("kind", "other")],
                s.accept_errors_other as f64,
            );
            for fault in crate::health::LocalFault::ALL {
                local_failures.add(
                    &[("frontend", &f), ("reason", fault.as_str())],
                    s.local_failures_of(fault) as f64,
                );
            }
        }
        for (key, state) in self.listeners.snapshot() {
            let up = matches!(state, ListenerState::Bound { .. });
            listener_up.add(&[("frontend", &key.to_string())], f64::from(u8::from(up)));
        }

        let mut b_total = Family::counter(
            "vipd_backend_connections_total",
            "Connections established to the backend.",
        );
        let mut b_active = Family::gauge(
            "vipd_backend_connections_active",
            "Connections currently open (or connecting) to the backend.",
        );
        let mut b_failures = Family::counter(
            "vipd_backend_connect_failures_total",
            "Failed connection attempts to the backend, by reason (refused, timeout, other).",
        );
        let mut b_consecutive = Family::gauge(
            "vipd_backend_consecutive_failures",
            "Connect failures since the backend's last success.",
        );
        let mut b_bytes = Family::counter(
            "vipd_backend_bytes_total",
            "Bytes relayed, by direction: to_backend (client→backend) and from_backend.",
        );
        let mut b_health = Family::gauge(
            "vipd_backend_health",
            "vipd's own view of the backend: 1 for the current state (healthy, ejected, probe_down, probe_pending), 0 for the others.",
        );
        let mut b_ejections = Family::counter(
            "vipd_backend_ejections_total",
            "Passive ejections of the backend (consecutive connect failures).",
        );
        let backends = self.backends.snapshot();
        for (key, s) in &backends {
            let b = key.address.to_string();
            let p = key.protocol.as_str();
            let current = s.health_state();
            for state in ["healthy", "ejected", "probe_down", "probe_pending"] {
                b_health.add(
                    &[("backend", &b), ("protocol", p), ("state", state)],
                    f64::from(u8::from(state == current)),
                );
            }
            b_ejections.add(&[("backend", &b), ("protocol", p)], s.ejections as f64);
        }
        for (key, s) in &backends {
            let b = key.address.to_string();
            let p = key.protocol.as_str();
            let l = [("backend", b.as_str()), ("protocol", p)];
            b_total.add(&l, s.total as f64);
            b_active.add(&l, s.active as f64);
            b_consecutive.add(&l, s.consecutive_failures as f64);
            for (reason, v) in [
                ("refused", s.failures_refused),
                ("timeout", s.failures_timeout),
                ("other", s.failures_other),
            ] {
                b_failures.add(
                    &[("backend", &b), ("protocol", p), ("reason", reason)],
                    v as f64,
                );
            }
            b_bytes.add(
                &[
                    ("backend", &b),
                    ("protocol", p),
                    ("direction", "to_backend"),
                ],
                s.bytes_to_backend as f64,
            );
            b_bytes.add(
                &[
                    ("backend", &b),
                    ("protocol", p),
                    ("direction", "from_backend"),
                ],
                s.bytes_from_backend as f64,
            );
        }
        let mut udp_flows = Family::gauge(
            "vipd_frontend_udp_flows_active",
            "Live UDP flows (one per client address).",
        );
        let mut udp_flow_events = Family::counter(
            "vipd_frontend_udp_flows_total",
            "UDP flow lifecycle events: created, expired (idle), closed (frontend removed), repicked (backend changed).",
        );
        let mut udp_datagrams = Family::counter(
            "vipd_frontend_udp_datagrams_total",
            "UDP datagrams: in (from clients), to_backends, out (replies to clients).",
        );
        let mut udp_dropped = Family::counter(
            "vipd_frontend_udp_dropped_total",
            "UDP datagrams dropped, by reason (flow_cap, fd_budget, no_backend, upstream_full, reply_full, send_error, kernel_rx).",
        );
        for (key, s) in self.udp.frontends_snapshot() {
            let f = key.to_string();
            udp_flows.add(&[("frontend", &f)], s.flows_active as f64);
            for (event, v) in [
                ("created", s.flows_created),
                ("expired", s.flows_expired),
                ("closed", s.flows_closed),
                ("repicked", s.flows_repicked),
            ] {
                udp_flow_events.add(&[("frontend", &f), ("event", event)], v as f64);
            }
            for (direction, v) in [
                ("in", s.datagrams_in),
                ("to_backends", s.datagrams_to_backends),
                ("out", s.datagrams_out),
            ] {
                udp_datagrams.add(&[("frontend", &f), ("direction", direction)], v as f64);
            }
            for (reason, v) in [
                ("flow_cap", s.dropped_by_cap),
                ("fd_budget", s.dropped_by_budget),
                ("no_backend", s.dropped_no_backend),
                ("upstream_full", s.dropped_upstream_full),
                ("reply_full", s.dropped_reply_full),
                ("send_error", s.dropped_send_error),
                ("kernel_rx", s.dropped_kernel_rx),
            ] {
                udp_dropped.add(&[("frontend", &f), ("reason", reason)], v as f64);
            }
        }
        let mut udp_backend = Family::counter(
            "vipd_backend_udp_datagrams_total",
            "UDP datagrams exchanged with the backend, by direction (to_backend, from_backend).",
        );
        for (addr, s) in self.udp.backends_snapshot() {
            let b = addr.to_string();
            udp_backend.add(
                &[("backend", &b), ("direction", "to_backend")],
                s.datagrams_to_backend as f64,
            );
            udp_backend.add(
                &[("backend", &b), ("direction", "from_backend")],
                s.datagrams_from_backend as f64,
            );
        }
        vec![
            accepted,
            active,
            no_backend,
            cut,
            accept_errors,
            local_failures,
            listener_up,
            b_total,
            b_active,
            b_failures,
            b_consecutive,
            b_bytes,
            b_health,
            b_ejections,
            udp_flows,
            udp_flow_events,
            udp_datagrams,
            udp_dropped,
            udp_backend,
        ]
    }
}

/// Exports the Marathon source's status at scrape time.
#[derive(Debug)]
pub struct MarathonCollector {
    status: crate::source::marathon::MarathonStatusHandle,
}

impl MarathonCollector {
    pub fn new(status: crate::source::marathon::MarathonStatusHandle) -> Scraped<Self> {
        Scraped::new(MarathonCollector { status })
    }
}

impl ScrapeFamilies for MarathonCollector {
    fn families(&self) -> Vec<Family> {
        let s = self.status.get();
        let mut errors = Family::counter(
            "vipd_source_sync_errors_total",
            "Marathon sync errors by kind (connect, timeout, http_status, unauthorized, parse, stream).",
        );
        for (kind, n) in &s.errors {
            errors.add(&[("kind", kind.as_str())], *n as f64);
        }
        let mut connected = Family::gauge(
            "vipd_source_sse_connected",
            "1 while the Marathon event stream is connected.",
        );
        connected.add(&[], f64::from(u8::from(s.sse_connected)));
        let mut stale = Family::gauge(
            "vipd_source_serving_stale_state",
            "1 while the table comes from --state-dir because Marathon was not reached yet.",
        );
        stale.add(&[], f64::from(u8::from(s.serving_stale_state)));
        let mut age = Family::gauge(
            "vipd_source_snapshot_age_seconds",
            "Age of the data behind the last snapshot the source handed over.",
        );
        if let Some(a) = s.snapshot_age {
            age.add(&[], a.as_secs_f64());
        }
        let mut events = Family::counter(
            "vipd_source_events_total",
            "Marathon events, by outcome (applied incrementally, or ignored).",
        );
        events.add(&[("outcome", "applied")], s.events_applied as f64);
        events.add(&[("outcome", "ignored")], s.events_ignored as f64);
        let mut fetches = Family::counter(
            "vipd_source_fetches_total",
            "Fetches from Marathon, by scope (full snapshot, or one app).",
        );
        fetches.add(&[("scope", "full")], s.full_fetches as f64);
        fetches.add(&[("scope", "app")], s.app_fetches as f64);
        vec![errors, connected, stale, age, events, fetches]
    }
}

/// Exports the Mesos source's status at scrape time.
#[derive(Debug)]
pub struct MesosCollector {
    status: crate::source::mesos::MesosStatusHandle,
}

impl MesosCollector {
    pub fn new(status: crate::source::mesos::MesosStatusHandle) -> Scraped<Self> {
        Scraped::new(MesosCollector { status })
    }
}

impl ScrapeFamilies for MesosCollector {
    fn families(&self) -> Vec<Family> {
        let s = self.status.get();
        let gauge = |name: &'static str, help: &'static str, v: f64| {
            let mut f = Family::gauge(name, help);
            f.add(&[], v);
            f
        };
        let counter = |name: &'static str, help: &'static str, v: u64| {
            let mut f = Family::counter(name, help);
            f.add(&[], v as f64);
            f
        };
        vec![
            gauge(
                "vipd_mesos_connected",
                "1 while the Mesos master's event stream (SUBSCRIBE) is open.",
                f64::from(u8::from(s.connected)),
            ),
            gauge(
                "vipd_mesos_serving_stale_state",
                "1 while the Mesos tasks come from --state-dir because no master answered yet.",
                f64::from(u8::from(s.serving_stale_state)),
            ),
            gauge(
                "vipd_mesos_tasks",
                "Mesos tasks in the last publish (their agent and framework known).",
                s.tasks as f64,
            ),
            gauge(
                "vipd_mesos_rejected_tasks",
                "Mesos tasks skipped as malformed in the last publish (the build warnings name them).",
                s.rejected_tasks as f64,
            ),
            gauge(
                "vipd_mesos_recovered_agents_pending",
                "Agents listed in recovered_agents that have not re-registered; their tasks' last backends are kept.",
                s.recovered_agents_pending as f64,
            ),
            counter(
                "vipd_mesos_subscriptions_total",
                "Event streams opened (SUBSCRIBE answered 200).",
                s.subscriptions,
            ),
            counter(
                "vipd_mesos_stream_failures_total",
                "Failed SUBSCRIBE calls and broken, silent or malformed event streams (each reconnects).",
                s.failures,
            ),
            counter(
                "vipd_mesos_redirects_total",
                "Leader redirects answered by a master that is not the leader.",
                s.redirects,
            ),
            counter(
                "vipd_mesos_records_total",
                "RecordIO records read from the event stream (heartbeats included).",
                s.records,
            ),
        ]
    }
}

/// Process resources vipd bounds: log lines it could not write, the descriptor limit, the UDP
/// flow budget, and the listeners that failed to bind.
#[derive(Debug)]
pub struct ResourceCollector {
    flow_budget: Arc<crate::dataplane::udp::FlowBudget>,
    listeners: ListenerStatusHandle,
}

impl ResourceCollector {
    pub fn new(
        flow_budget: Arc<crate::dataplane::udp::FlowBudget>,
        listeners: ListenerStatusHandle,
    ) -> Scraped<Self> {
        Scraped::new(ResourceCollector {
            flow_budget,
            listeners,
        })
    }
}

impl ScrapeFamilies for ResourceCollector {
    fn families(&self) -> Vec<Family> {
        let mut dropped = Family::counter(
            "vipd_log_lines_dropped_total",
            "Log lines that could not be written (stderr closed or broken) and were dropped.",
        );
        dropped.add(&[], crate::logging::lines_dropped() as f64);
        let mut nofile = Family::gauge(
            "vipd_nofile_limit",
            "RLIMIT_NOFILE of the process (soft, after raising it to hard at start; and hard).",
        );
        let limits = crate::fd_budget::current();
        nofile.add(&[("kind", "soft")], limits.soft as f64);
        nofile.add(&[("kind", "hard")], limits.hard as f64);
        let mut budget = Family::gauge(
            "vipd_udp_flow_budget",
            "The process-wide UDP flow budget (limit: derived from RLIMIT_NOFILE; used: flows holding a socket now).",
        );
        budget.add(&[("kind", "limit")], self.flow_budget.limit() as f64);
        budget.add(&[("kind", "used")], self.flow_budget.used() as f64);
        let mut refused = Family::counter(
            "vipd_udp_flows_refused_total",
            "New UDP flows refused because the process-wide flow budget was spent.",
        );
        refused.add(&[], self.flow_budget.refused() as f64);
        let mut failed = Family::gauge(
            "vipd_listeners_failed",
            "Frontends whose socket failed to bind (retrying); /readyz is 503 while this is above 0.",
        );
        let n = self
            .listeners
            .snapshot()
            .iter()
            .filter(|(_, s)| matches!(s, ListenerState::Failed { .. }))
            .count();
        failed.add(&[], n as f64);
        vec![dropped, nofile, budget, refused, failed]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_is_one_labelled_with_version_and_commit() {
        let text = Metrics::new().encode();
        let line = format!(
            "vipd_build_info{{commit=\"{BUILD_COMMIT}\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        assert!(!BUILD_COMMIT.is_empty());
    }
}
