//! `vipd run`: assembles the daemon from its parts and runs it until a signal.
//!
//! Owns: the wiring (source → control loop → publisher → followers: VIP addresses first, then
//! listeners; the active health checker follows the table on its own), the side servers (admin
//! on its own thread, DNS), the signal handling
//! (SIGTERM/SIGINT: stop accepting, drain up to the grace period, remove the VIP addresses vipd
//! added, exit 0; a second SIGTERM/SIGINT during the drain cuts the remaining connections at once
//! and the shutdown goes on; SIGHUP: re-read the source now; SIGUSR2: upgrade in place), and the
//! order of shutdown.
//!
//! Upgrades ([`crate::handover`] does the socket passing): at start, a predecessor's sockets are
//! taken (re-exec'd child, or `--handover-socket` takeover) before anything binds, and adopted by
//! the admin server, DNS and the data plane. A running daemon offers its sockets on SIGUSR2 (to
//! the re-executed binary) or to a peer on `--handover-socket`; once the successor serves, it
//! stops accepting, drains (TCP up to the grace period, UDP flows until idle), leaves its VIP
//! addresses to the successor and exits 0. A failed attempt changes nothing: it keeps serving.
//!
//! Must not: contain routing, forwarding or Marathon logic of its own; every decision lives in the
//! module that owns it.

use crate::addresses::{AddressError, AddressManager};
use crate::admin::{AdminError, AdminServer, AdminState};
use crate::balance::HealthConfig;
use crate::cli::{RunArgs, SourceArgs};
use crate::control::resolve::HostResolver;
use crate::control::{ControlLoop, FollowTable, ResolveHosts};
use crate::dataplane::{Dataplane, DataplaneConfig, ListenerStatusHandle};
use crate::dns::{DnsError, DnsServer, ServingCheck};
use crate::handover::{self, HandoverError};
use crate::metrics::{DataplaneCollector, Metrics};
use crate::published::{self, PublishedTable, TableReader};
use crate::signals::ShutdownSignals;
use crate::source::{self, SourceHandle};
use crate::table::{BuildOptions, FrontendKey, Resolved};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Errors that stop the daemon from starting. Each names what to change.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no source given: pass --apps FILE, --marathon URL or --mesos URL")]
    NoSource,
    #[error(
        "cannot read the apps file {path}: {source}; no saved state (--state-dir) to serve instead"
    )]
    AppsFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Marathon source: {0}")]
    Marathon(#[from] crate::source::marathon::ConfigError),
    #[error("Mesos source: {0}")]
    Mesos(#[source] crate::source::mesos::ConfigError),
    #[error("cannot install signal handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error(transparent)]
    Addresses(#[from] AddressError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("DNS server: {0}")]
    Dns(#[from] DnsError),
    #[error("upgrade: {0}")]
    Handover(#[from] HandoverError),
    #[error(transparent)]
    VipPools(#[from] crate::cli::VipPoolsError),
}

impl ResolveHosts for HostResolver {
    async fn resolve_all(&self, hosts: Vec<String>) -> Resolved {
        HostResolver::resolve_all(self, hosts.iter().map(String::as_str)).await
    }
}

/// The listeners follow the table.
impl FollowTable for Dataplane {
    async fn follow(&mut self, published: &Arc<PublishedTable>) {
        self.reconcile(published);
    }
}

/// VIP addresses follow the table (before the listeners, which need them to bind).
impl FollowTable for AddressManager {
    async fn follow(&mut self, published: &Arc<PublishedTable>) {
        let report = self.reconcile(&published.table).await;
        if !report.added.is_empty() || !report.removed.is_empty() {
            tracing::info!(added = ?report.added, removed = ?report.removed, "VIP addresses reconciled");
        }
    }
}

impl<T: FollowTable> FollowTable for Option<T> {
    async fn follow(&mut self, published: &Arc<PublishedTable>) {
        if let Some(inner) = self {
            inner.follow(published).await;
        }
    }
}

/// DNS answers a VIP name only once one of its listeners is bound (dcos-net #130).
struct ListenersServing(ListenerStatusHandle);

impl ServingCheck for ListenersServing {
    fn is_serving(&self, key: &FrontendKey) -> bool {
        self.0.is_bound(key)
    }
}

type Followers = (Option<AddressManager>, Dataplane);

/// A running daemon, for `run` and `demo`.
#[derive(Debug)]
pub struct Daemon {
    pub tables: TableReader,
    pub shutdown: CancellationToken,
    pub admin_addr: Option<std::net::SocketAddr>,
    pub dns_addr: Option<std::net::SocketAddr>,
    source: SourceHandle,
    control: tokio::task::JoinHandle<Followers>,
    dns: Option<tokio::task::JoinHandle<Result<(), DnsError>>>,
    admin: Option<AdminServer>,
    checker: tokio::task::JoinHandle<()>,
    grace: std::time::Duration,
    upgrade: handover::UpgradeState,
}

impl Daemon {
    /// Starts every part. Must be called inside a tokio runtime. `config` is the redacted
    /// effective configuration shown by `/v1/config`.
    pub async fn start(args: &RunArgs, config: serde_json::Value) -> Result<Daemon, StartError> {
        // Temp files of a crashed run (never renamed into place).
        if let Some(dir) = &args.source.marathon.state_dir {
            let removed = crate::source::marathon::state_dir::remove_stale_temp_files(dir);
            if removed > 0 {
                tracing::info!(dir = %dir.display(), removed, "removed stale state-dir temp files");
            }
        }
        // Fail fast on what the operator must fix, before anything is bound.
        args.table.check_pools()?;
        let addresses = if args.addresses.manage_addresses {
            Some(AddressManager::new(&args.addresses).await?)
        } else {
            None
        };
        // An upgrade: the predecessor's sockets, before anything binds.
        let (mut inherited, successor) = handover::take_predecessor(&args.handover).await?;
        let shutdown = CancellationToken::new();
        let (source, marathon_status, mesos_status) = start_source(&args.source, shutdown.clone())?;
        let health = HealthConfig::from(&args.health);
        let (publisher, tables) = published::channel_with(crate::balance::Router::new(health));
        let mut options = BuildOptions::from(&args.table);
        let local = if args.addresses.manage_addresses {
            Vec::new()
        } else {
            crate::interfaces::local_addresses().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot list this agent's addresses; IP VIPs must be loopback or in --vip-cidr/--ip-vip-cidr");
                Vec::new()
            })
        };
        options.ip_vip_scope = args
            .table
            .run_ip_vip_scope(args.addresses.manage_addresses, local);
        // With Marathon (or an apps file) beside Mesos, VIPs come from Mesos alone.
        options.marathon_vips = !(args.source.mesos.enabled()
            && (args.source.marathon.enabled() || args.source.apps.is_some()));
        let dataplane_config = DataplaneConfig::from(&args.dataplane);
        let grace = dataplane_config.drain_timeout;
        let active = health.active;
        let mut dataplane = Dataplane::new(dataplane_config, tables.clone());
        // Always running: a port label can turn active checks on without the global flag.
        let checker = crate::control::checker::spawn(
            tables.clone(),
            dataplane.backends(),
            active,
            shutdown.clone(),
        );
        dataplane.adopt(std::mem::take(&mut inherited.frontends));
        let listeners = dataplane.listener_status();
        if successor.is_none() {
            crate::notify::spawn_ready(tables.clone(), listeners.clone(), shutdown.clone());
        }

        let metrics = Arc::new(Metrics::new());
        metrics.register(Box::new(crate::metrics::ResourceCollector::new(
            dataplane.flow_budget(),
            listeners.clone(),
        )));
        metrics.register(Box::new(DataplaneCollector::new(
            dataplane.backends(),
            dataplane.frontends(),
            dataplane.udp_stats(),
            listeners.clone(),
        )));
        metrics.register(Box::new(crate::metrics::TableCollector::new(
            tables.clone(),
        )));
        let source_status =
            source_status_rows(&args.source, marathon_status.clone(), mesos_status.clone());
        if let Some(status) = marathon_status {
            metrics.register(Box::new(crate::metrics::MarathonCollector::new(status)));
        }
        if let Some(status) = mesos_status {
            metrics.register(Box::new(crate::metrics::MesosCollector::new(status)));
        }
        let warnings = Arc::default();
        let changes = crate::control::history::ChangeLog::default();
        let admin = match args.admin.admin_listen {
            Some(listen) if !args.admin.no_admin => {
                let state = AdminState {
                    metrics: metrics.clone(),
                    tables: tables.clone(),
                    listeners: listeners.clone(),
                    backends: dataplane.backends(),
                    frontends: dataplane.frontends(),
                    warnings: Arc::clone(&warnings),
                    config: Arc::new(config),
                    changes: changes.clone(),
                    source_status,
                };
                Some(match inherited.take_admin(listen) {
                    Some(listener) => AdminServer::start_on(listener, state, Default::default())?,
                    None => AdminServer::start(listen, state)?,
                })
            }
            _ => None,
        };

        let mut dns_sockets = None;
        let (dns, dns_addr) = match args.dns.dns_listen {
            Some(listen) => {
                let zone = crate::dns::parse_zone(&args.table.zone)?;
                let server = match inherited.take_dns(listen) {
                    Some((udp, tcp)) => DnsServer::from_std(udp, tcp)?,
                    None => DnsServer::bind(listen).await?,
                };
                let local = server.local_addr();
                dns_sockets = server.handover_sockets().ok().map(|s| (local, s));
                metrics.register(Box::new(crate::metrics::Scraped::new(server.stats())));
                let serving: Arc<dyn ServingCheck + Send + Sync> =
                    Arc::new(ListenersServing(listeners.clone()));
                let task =
                    tokio::spawn(server.run(tables.clone(), serving, zone, shutdown.clone()));
                (Some(task), Some(local))
            }
            None => (None, None),
        };

        let adoption = addresses.as_ref().map(AddressManager::adoption);
        let followers: Followers = (addresses, dataplane);
        let control = ControlLoop::new(
            publisher,
            HostResolver::new(Default::default()),
            options,
            followers,
        )
        .with_observability(metrics.control.clone(), warnings)
        .with_change_log(changes);
        let control = tokio::spawn(control.run(source.clone(), shutdown.clone()));
        let upgrade = handover::UpgradeState::new(
            &args.handover,
            listeners.clone(),
            dns_sockets,
            successor.map(|s| {
                s.finish(
                    tables.clone(),
                    listeners.clone(),
                    shutdown.clone(),
                    adoption,
                    args.handover.handover_socket.clone(),
                )
            }),
        )?;
        Ok(Daemon {
            tables,
            shutdown,
            admin_addr: admin.as_ref().map(|a| a.local_addr),
            dns_addr,
            source,
            control,
            dns,
            admin,
            checker,
            grace,
            upgrade,
        })
    }

    /// Installs the signal handlers, runs until SIGTERM or SIGINT, then drains and returns.
    pub async fn run_until_signal(self) -> Result<(), StartError> {
        let signals = ShutdownSignals::install().map_err(StartError::Signal)?;
        self.run_until(signals).await;
        Ok(())
    }

    /// Runs until SIGTERM or SIGINT, then drains and returns. A second SIGTERM or SIGINT during
    /// the drain cuts the remaining connections at once (the rest of the shutdown, VIP address
    /// removal included, still runs).
    ///
    /// SIGUSR2 upgrades in place, and a peer on `--handover-socket` takes over: once the
    /// successor serves, this daemon drains as after SIGTERM, but leaves its VIP addresses to the
    /// successor and sends no `STOPPING=1`. A failed upgrade is logged and changes nothing.
    pub async fn run_until(mut self, mut signals: ShutdownSignals) {
        let handed_over = loop {
            let event = tokio::select! {
                _ = signals.term.recv() => handover::Event::Stop("SIGTERM: draining (send SIGTERM or SIGINT again to cut connections now)"),
                _ = signals.int.recv() => handover::Event::Stop("SIGINT: draining (press Ctrl-C again to cut connections now)"),
                _ = signals.hup.recv() => { tracing::info!("SIGHUP: re-reading the source"); self.source.resync(); continue; }
                _ = signals.usr2.recv() => handover::Event::Reexec,
                event = self.upgrade.next_event() => event,
            };
            let admin = || {
                let admin = self.admin.as_ref()?;
                Some((admin.local_addr, admin.handover_socket().ok()?))
            };
            match self.upgrade.handle(event, admin) {
                handover::Next::Serve => {}
                handover::Next::Stop(why) => {
                    tracing::info!("{why}");
                    break None;
                }
                handover::Next::HandedOver(successor) => break Some(successor),
            }
        };
        let cut = CancellationToken::new();
        let stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
            match handed_over {
                None => {
                    crate::notify::stopping();
                    Box::pin(self.stop_or_cut(cut.clone()))
                }
                Some(successor) => Box::pin(self.drain_after_handover(successor, cut.clone())),
            };
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = signals.term.recv() => {}
                _ = signals.int.recv() => {}
                _ = signals.hup.recv() => continue,
                _ = signals.usr2.recv() => { tracing::info!("SIGUSR2 ignored: draining"); continue; }
            }
            if !cut.is_cancelled() {
                tracing::warn!("second signal: cutting the remaining connections now");
                cut.cancel();
            }
        }
    }

    /// Stops accepting, waits for live connections up to the grace period, removes the VIP
    /// addresses vipd added, and returns.
    pub async fn stop(self) {
        self.stop_or_cut(CancellationToken::new()).await;
    }

    /// [`Daemon::stop`], cutting the live connections at once when `cut` is cancelled.
    pub async fn stop_or_cut(mut self, cut: CancellationToken) {
        self.shutdown.cancel();
        self.upgrade.stop();
        match (&mut self.control).await {
            Ok((mut addresses, dataplane)) => {
                // The data plane logs its own report ("data plane stopped").
                let _report = dataplane.shutdown_or_cut(self.grace, cut).await;
                if let Some(addresses) = addresses.as_mut() {
                    let report = addresses.cleanup().await;
                    tracing::info!(removed = ?report.removed, errors = report.errors.len(), "VIP addresses removed");
                }
            }
            Err(e) => tracing::error!(error = %e, "control loop ended abnormally"),
        }
        self.stop_side_servers().await;
    }

    /// After a handover: the successor answers on the admin port and the handover path now; this
    /// daemon stops accepting, tells the successor which VIP addresses are its own, drains, and
    /// returns without removing an address.
    async fn drain_after_handover(mut self, successor: handover::Handed, cut: CancellationToken) {
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
        self.shutdown.cancel();
        self.upgrade.stop_after_handover();
        match (&mut self.control).await {
            Ok((addresses, dataplane)) => {
                let owned: Vec<std::net::IpAddr> = addresses
                    .as_ref()
                    .map(|a| a.added().iter().copied().collect())
                    .unwrap_or_default();
                successor.draining(owned.clone()).await;
                let _report = dataplane.drain_after_handover(self.grace, cut).await;
                if !owned.is_empty() {
                    tracing::info!(addresses = ?owned, "VIP addresses left to the successor");
                }
            }
            Err(e) => tracing::error!(error = %e, "control loop ended abnormally"),
        }
        self.stop_side_servers().await;
        tracing::info!("handed over and drained; exiting");
    }

    async fn stop_side_servers(&mut self) {
        if let Err(e) = (&mut self.checker).await {
            tracing::warn!(error = %e, "health checker task failed");
        }
        if let Some(dns) = self.dns.take() {
            match dns.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "DNS server ended with an error"),
                Err(e) => tracing::warn!(error = %e, "DNS server task failed"),
                Ok(Ok(())) => {}
            }
        }
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
    }
}

type MarathonStatus = Option<crate::source::marathon::MarathonStatusHandle>;
use crate::source::mesos::MesosStatusHandle;

/// The status page's source rows: the live status of the Marathon and Mesos sources that run, or
/// the apps file.
fn source_status_rows(
    args: &SourceArgs,
    marathon: MarathonStatus,
    mesos: Option<MesosStatusHandle>,
) -> crate::admin::SourceStatus {
    let mesos = mesos.map(|status| {
        let urls = args
            .mesos
            .mesos
            .iter()
            .map(|u| crate::cli::config::strip_userinfo(u))
            .collect::<Vec<_>>()
            .join(",");
        (status, urls)
    });
    let primary = marathon_status_rows(args, marathon);
    crate::admin::SourceStatus::new(move || {
        let mut rows = primary.as_ref().map(|p| p()).unwrap_or_default();
        if let Some((status, urls)) = &mesos {
            let s = status.get();
            let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
            rows.extend([
                ("source".into(), "mesos".into()),
                ("masters".into(), urls.clone()),
                ("event stream connected".into(), yes_no(s.connected)),
                (
                    "serving stale state (--state-dir)".into(),
                    yes_no(s.serving_stale_state),
                ),
                ("tasks".into(), s.tasks.to_string()),
                (
                    "recovered agents not re-registered".into(),
                    s.recovered_agents_pending.to_string(),
                ),
                (
                    "subscriptions / failures".into(),
                    format!("{} / {}", s.subscriptions, s.failures),
                ),
            ]);
        }
        rows
    })
}

type SourceRows = Box<dyn Fn() -> Vec<(String, String)> + Send + Sync>;

/// The Marathon source's rows, or the apps file's; `None` with `--mesos` alone.
fn marathon_status_rows(args: &SourceArgs, marathon: MarathonStatus) -> Option<SourceRows> {
    use crate::cli::duration::format_duration;
    let Some(status) = marathon else {
        let path = args.apps.as_ref()?.display().to_string();
        return Some(Box::new(move || {
            vec![
                ("source".into(), "file".into()),
                ("path".into(), path.clone()),
            ]
        }));
    };
    Some(Box::new(move || {
        let s = status.get();
        let ago = |t: Option<std::time::SystemTime>| match t.and_then(|t| t.elapsed().ok()) {
            Some(d) => format!(
                "{} ago",
                format_duration(std::time::Duration::from_secs(d.as_secs()))
            ),
            None => "never".into(),
        };
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
        let errors: u64 = s.errors.iter().map(|(_, n)| n).sum();
        vec![
            ("source".into(), "marathon".into()),
            ("url".into(), s.current_url.clone()),
            ("event stream connected".into(), yes_no(s.sse_connected)),
            (
                "event stream".into(),
                s.stream_url.clone().unwrap_or_else(|| "-".into()),
            ),
            ("synced with the stream".into(), yes_no(s.stream_synced)),
            ("last successful sync".into(), ago(s.last_successful_sync)),
            (
                "snapshot age".into(),
                s.snapshot_age.map_or_else(
                    || "-".into(),
                    |a| format_duration(std::time::Duration::from_secs(a.as_secs())),
                ),
            ),
            (
                "serving stale state (--state-dir)".into(),
                yes_no(s.serving_stale_state),
            ),
            ("sync errors".into(), errors.to_string()),
            (
                "events applied / ignored".into(),
                format!("{} / {}", s.events_applied, s.events_ignored),
            ),
        ]
    }))
}

/// The running source, and the status of its Marathon and Mesos parts.
type StartedSource = (SourceHandle, MarathonStatus, Option<MesosStatusHandle>);

fn start_source(
    args: &SourceArgs,
    shutdown: CancellationToken,
) -> Result<StartedSource, StartError> {
    if !args.mesos.enabled() {
        let (source, status) = start_marathon_or_file(args, shutdown)?;
        return Ok((source, status, None));
    }
    let config = args
        .mesos
        .clone()
        .into_config(
            args.marathon.state_dir.clone(),
            args.documents.max_document_size,
        )
        .map_err(StartError::Mesos)?;
    let (mesos, mesos_status) =
        source::mesos::spawn(config, shutdown.clone()).map_err(StartError::Mesos)?;
    if !args.marathon.enabled() && args.apps.is_none() {
        return Ok((mesos, None, Some(mesos_status)));
    }
    let (primary, status) = start_marathon_or_file(args, shutdown.clone())?;
    let combined = source::mesos::combine(primary, mesos, shutdown);
    Ok((combined, status, Some(mesos_status)))
}

fn start_marathon_or_file(
    args: &SourceArgs,
    shutdown: CancellationToken,
) -> Result<(SourceHandle, MarathonStatus), StartError> {
    if args.marathon.enabled() {
        let config = args.marathon.clone().into_config_with(&args.documents)?;
        let (handle, status) = source::marathon::spawn(config, shutdown);
        return Ok((handle, Some(status)));
    }
    let Some(path) = &args.apps else {
        return Err(StartError::NoSource);
    };
    if let Err(source) = std::fs::metadata(path) {
        // Missing at start: serve a saved state if --state-dir has one, else refuse to start.
        let saved = args.marathon.state_dir.as_deref().and_then(|dir| {
            match crate::source::marathon::state_dir::load(dir) {
                Ok(saved) => saved,
                Err(e) => {
                    tracing::warn!(error = %e, "saved state unusable");
                    None
                }
            }
        });
        let Some((apps, saved_at)) = saved else {
            return Err(StartError::AppsFile {
                path: path.clone(),
                source,
            });
        };
        let age = saved_at.elapsed().unwrap_or_default();
        tracing::warn!(path = %path.display(), error = %source, state_age = %crate::cli::duration::format_duration(std::time::Duration::from_secs(age.as_secs())), "apps file unreadable at start; serving the saved state from --state-dir until it is readable");
        let initial = source::SourceSnapshot {
            apps: Arc::new(apps),
            origin: source::Origin::StateDir,
            observed_at: std::time::Instant::now(),
        };
        return Ok((
            source::file::spawn_with_initial(
                path.clone(),
                args.documents.max_document_size,
                Some(initial),
                shutdown,
            ),
            None,
        ));
    }
    Ok((
        source::file::spawn(path.clone(), args.documents.max_document_size, shutdown),
        None,
    ))
}
