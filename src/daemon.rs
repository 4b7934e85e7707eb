//! `vipd run`: assembles the daemon from its parts and runs it until a signal.
//!
//! Owns: the wiring (source → control loop → publisher → followers: VIP addresses, then
//! listeners; the active health checker follows the table on its own), the signal handling (SIGTERM/SIGINT: stop accepting, drain up to the grace period,
//! exit 0; SIGHUP: re-read the source now), and the order of shutdown.
//!
//! Must not: contain routing, forwarding or Marathon logic of its own; every decision lives in the
//! module that owns it.

use crate::cli::{RunArgs, SourceArgs};
use crate::control::resolve::HostResolver;
use crate::control::{ControlLoop, FollowTable, ResolveHosts};
use crate::dataplane::{Dataplane, DataplaneConfig};
use crate::health::HealthConfig;
use crate::published::{self, PublishedTable, TableReader};
use crate::source::{self, SourceHandle};
use crate::table::{BuildOptions, Resolved};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no source given: pass --apps FILE or --marathon URL")]
    NoSource,
    #[error("cannot install signal handler: {0}")]
    Signal(#[source] std::io::Error),
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

/// A running daemon, for `run` and `demo`.
pub struct Daemon {
    pub tables: TableReader,
    pub shutdown: CancellationToken,
    source: SourceHandle,
    task: tokio::task::JoinHandle<Dataplane>,
    checker: tokio::task::JoinHandle<()>,
    grace: std::time::Duration,
}

impl Daemon {
    /// Starts every part. Must be called inside a tokio runtime.
    pub fn start(args: &RunArgs) -> Result<Daemon, StartError> {
        let shutdown = CancellationToken::new();
        let source = start_source(&args.source, shutdown.clone())?;
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
        let control = ControlLoop::new(
            publisher,
            HostResolver::new(Default::default()),
            options,
            dataplane,
        );
        let task = tokio::spawn(control.run(source.clone(), shutdown.clone()));
        Ok(Daemon {
            tables,
            shutdown,
            source,
            task,
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
        self.stop().await;
        Ok(())
    }

    /// Stops accepting, waits for live connections up to the grace period, and returns.
    pub async fn stop(self) {
        self.shutdown.cancel();
        if let Err(e) = self.checker.await {
            tracing::error!(error = %e, "active checker ended abnormally");
        }
        match self.task.await {
            Ok(dataplane) => {
                let report = dataplane.shutdown(self.grace).await;
                tracing::info!(?report, "stopped");
            }
            Err(e) => tracing::error!(error = %e, "control loop ended abnormally"),
        }
    }
}

fn start_source(
    args: &SourceArgs,
    shutdown: CancellationToken,
) -> Result<SourceHandle, StartError> {
    match &args.apps {
        Some(path) => Ok(source::file::spawn(path.clone(), shutdown)),
        None => Err(StartError::NoSource),
    }
}
