//! `vipd run`: assembles the daemon from its parts and runs it until a signal.
//!
//! Owns: the wiring (source → control loop → publisher → followers: VIP addresses first, then
//! listeners; the active health checker follows the table on its own), the side servers (admin
//! on its own thread, DNS), the signal handling
//! (SIGTERM/SIGINT: stop accepting, drain up to the grace period, remove the VIP addresses vipd
//! added, exit 0; SIGHUP: re-read the source now), and the order of shutdown.
//!
//! Must not: contain routing, forwarding or Marathon logic of its own; every decision lives in the
//! module that owns it.

use crate::addresses::{AddressError, AddressManager};
use crate::admin::{AdminError, AdminServer, AdminState};
use crate::cli::{RunArgs, SourceArgs};
use crate::control::resolve::HostResolver;
use crate::control::{ControlLoop, FollowTable, ResolveHosts};
use crate::dataplane::{Dataplane, DataplaneConfig, ListenerStatusHandle};
use crate::dns::{DnsError, DnsServer, ServingCheck};
use crate::health::HealthConfig;
use crate::metrics::{DataplaneCollector, Metrics};
use crate::published::{self, PublishedTable, TableReader};
use crate::source::{self, SourceHandle};
use crate::table::{BuildOptions, FrontendKey, Resolved};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Errors that stop the daemon from starting. Each names what to change.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no source given: pass --apps FILE or --marathon URL")]
    NoSource,
    #[error("Marathon source: {0}")]
    Marathon(#[from] crate::source::marathon::ConfigError),
    #[error("cannot install signal handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error(transparent)]
    Addresses(#[from] AddressError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("DNS server: {0}")]
    Dns(#[from] DnsError),
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
}

impl Daemon {
    /// Starts every part. Must be called inside a tokio runtime. `config` is the redacted
    /// effective configuration shown by `/v1/config`.
    pub async fn start(args: &RunArgs, config: serde_json::Value) -> Result<Daemon, StartError> {
        // Fail fast on what the operator must fix, before anything is bound.
        let addresses = if args.addresses.manage_addresses {
            Some(AddressManager::new(&args.addresses).await?)
        } else {
            None
        };
        let shutdown = CancellationToken::new();
        let (source, marathon_status) = start_source(&args.source, shutdown.clone())?;
        let (publisher, tables) = published::channel();
        let options = BuildOptions {
            bind_address: args.table.bind_address,
            vip_cidr: args.table.vip_cidr,
            zone: args.table.zone.clone(),
        };
        let mut dataplane_config = DataplaneConfig::from(&args.dataplane);
        dataplane_config.health = HealthConfig::from(&args.health);
        let grace = dataplane_config.drain_timeout;
        let active = dataplane_config.health.active;
        let dataplane = Dataplane::new(dataplane_config, tables.clone());
        // Always running: a port label can turn active checks on without the global flag.
        let checker = crate::health::checker::spawn(
            tables.clone(),
            dataplane.backends(),
            active,
            shutdown.clone(),
        );
        let listeners = dataplane.listener_status();
        crate::notify::spawn_ready(tables.clone(), listeners.clone(), shutdown.clone());

        let metrics = Arc::new(Metrics::new());
        metrics.register(Box::new(DataplaneCollector::new(
            dataplane.backends(),
            dataplane.frontends(),
            dataplane.udp_stats(),
            listeners.clone(),
        )));
        if let Some(status) = marathon_status {
            metrics.register(Box::new(crate::metrics::MarathonCollector::new(status)));
        }
        let warnings = Arc::default();
        let admin = match args.admin.admin_listen {
            Some(listen) if !args.admin.no_admin => Some(AdminServer::start(
                listen,
                AdminState {
                    metrics: metrics.clone(),
                    tables: tables.clone(),
                    listeners: listeners.clone(),
                    backends: dataplane.backends(),
                    frontends: dataplane.frontends(),
                    warnings: Arc::clone(&warnings),
                    config: Arc::new(config),
                },
            )?),
            _ => None,
        };

        let (dns, dns_addr) = match args.dns.dns_listen {
            Some(listen) => {
                let zone = crate::dns::parse_zone(&args.table.zone)?;
                let server = DnsServer::bind(listen).await?;
                let local = server.local_addr();
                let serving: Arc<dyn ServingCheck + Send + Sync> =
                    Arc::new(ListenersServing(listeners.clone()));
                let task =
                    tokio::spawn(server.run(tables.clone(), serving, zone, shutdown.clone()));
                (Some(task), Some(local))
            }
            None => (None, None),
        };

        let followers: Followers = (addresses, dataplane);
        let control = ControlLoop::new(
            publisher,
            HostResolver::new(Default::default()),
            options,
            followers,
        )
        .with_observability(metrics.control.clone(), warnings);
        let control = tokio::spawn(control.run(source.clone(), shutdown.clone()));
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
        })
    }

    /// Runs until SIGTERM or SIGINT, then drains and returns.
    pub async fn run_until_signal(self) -> Result<(), StartError> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(StartError::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(StartError::Signal)?;
        let mut hup = signal(SignalKind::hangup()).map_err(StartError::Signal)?;
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: draining"); break; }
                _ = int.recv() => { tracing::info!("SIGINT: draining"); break; }
                _ = hup.recv() => { tracing::info!("SIGHUP: re-reading the source"); self.source.resync(); }
            }
        }
        crate::notify::stopping();
        self.stop().await;
        Ok(())
    }

    /// Stops accepting, waits for live connections up to the grace period, removes the VIP
    /// addresses vipd added, and returns.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        match self.control.await {
            Ok((mut addresses, dataplane)) => {
                let report = dataplane.shutdown(self.grace).await;
                tracing::info!(?report, "data plane stopped");
                if let Some(addresses) = addresses.as_mut() {
                    let report = addresses.cleanup().await;
                    tracing::info!(removed = ?report.removed, errors = report.errors.len(), "VIP addresses removed");
                }
            }
            Err(e) => tracing::error!(error = %e, "control loop ended abnormally"),
        }
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

fn start_source(
    args: &SourceArgs,
    shutdown: CancellationToken,
) -> Result<(SourceHandle, MarathonStatus), StartError> {
    if args.marathon.enabled() {
        let config = args.marathon.clone().into_config()?;
        let (handle, status) = source::marathon::spawn(config, shutdown);
        return Ok((handle, Some(status)));
    }
    match &args.apps {
        Some(path) => Ok((source::file::spawn(path.clone(), shutdown), None)),
        None => Err(StartError::NoSource),
    }
}
