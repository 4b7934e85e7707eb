//! The routing table: what vipd listens on (frontends) and where it forwards (backends).
//!
//! Owns: the immutable [`Table`] value, its JSON form (the `vipd table` output and the admin
//! API's shape), and the pure builder [`build`] that turns a snapshot (Marathon apps and pods)
//! into a table.
//!
//! Must not: do I/O, read a clock, resolve hostnames, or hold runtime state (connection counts,
//! passive health). Runtime state lives in the data plane, keyed by backend address, so that it
//! survives every table swap. A `Table` is built once and never mutated after it is published.

pub mod build;
pub mod diff;
pub mod marathon;
pub mod mesos;
pub mod options;
pub mod pod;
pub mod service;
pub mod vip;

pub use build::{build, BuildCache, BuildOptions, CacheStats, Resolved};
pub use options::{Balance, PortOptions};
pub use service::OwnerKind;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// Transport protocol of a frontend. `udp,tcp` ports give one frontend of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a frontend exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrontendKind {
    /// An app port's `servicePort`, bound on `--bind-address` (the marathon-lb way).
    ServicePort,
    /// A `VIP_n` port label, bound on the VIP address (the Minuteman way).
    Vip,
}

/// What the table says about a backend. The data plane refines it with its own observations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Running, and healthy or without health checks.
    Up,
    /// Running with health checks, but no result yet (new task, or after a leader failover).
    Unknown,
    /// Running, and at least one health check result is not alive.
    Unhealthy,
    /// Being killed (`TASK_KILLING`): no new connections; live ones continue.
    Draining,
}

impl BackendState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Up => "up",
            BackendState::Unknown => "unknown",
            BackendState::Unhealthy => "unhealthy",
            BackendState::Draining => "draining",
        }
    }
}

/// The identity of a frontend: what the data plane binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FrontendKey {
    pub protocol: Protocol,
    pub listen: SocketAddr,
}

impl fmt::Display for FrontendKey {
    /// `tcp:0.0.0.0:10000`, the metrics label form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.protocol, self.listen)
    }
}

/// Where a frontend forwards to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Backend {
    pub address: SocketAddr,
    /// Marathon task id. Shared (`Arc<str>`): one allocation per task, however many frontends
    /// the task backs (the build at 50,000 tasks spent most of its time allocating and freeing
    /// per-backend `String`s; see BENCHMARKS.md).
    pub task: Arc<str>,
    pub state: BackendState,
}

/// One listening address and its backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frontend {
    pub protocol: Protocol,
    pub listen: SocketAddr,
    pub kind: FrontendKind,
    /// DNS name of a named VIP (`acme.marathon.l4lb.thisdcos.directory`); `null` otherwise.
    pub vip_name: Option<String>,
    /// The owner the frontend belongs to (an app's or a pod's id); for a VIP spanning owners,
    /// the first app by id, else the first pod by id.
    pub app: String,
    /// What `app` is: `"app"` (a Marathon app), `"pod"` (a Marathon pod) or `"task"` (a Mesos
    /// task). Read as `"app"` when absent (tables written before pods).
    #[serde(default)]
    pub owner_kind: OwnerKind,
    /// Every owner that contributes backends: apps sorted by id, then pods sorted by id (more
    /// than one only for shared VIPs).
    pub apps: Vec<String>,
    pub port_index: usize,
    pub port_name: Option<String>,
    /// Per-port options, typed and validated by the builder (`VIPD_{n}_BALANCE`,
    /// `HAPROXY_{n}_BALANCE`, …). JSON: an object of strings, omitted when empty.
    #[serde(default, skip_serializing_if = "PortOptions::is_empty")]
    pub options: PortOptions,
    /// Sorted by address. Shared (`Arc<[_]>`): a frontend whose app did not change keeps the same
    /// allocation from table to table, so an incremental build copies no backends, the diff skips
    /// unchanged lists by pointer, and freeing the old table touches no backend.
    pub backends: Arc<[Backend]>,
}

impl Frontend {
    pub fn key(&self) -> FrontendKey {
        FrontendKey {
            protocol: self.protocol,
            listen: self.listen,
        }
    }
}

/// A problem found while building; the named app (or the part of it) was skipped.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Warning {
    pub app: Option<String>,
    pub message: String,
}

/// The whole routing table. Frontends are sorted by (protocol, listen) and unique on that key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub frontends: Vec<Frontend>,
}

impl Table {
    /// Finds a frontend by key (binary search: frontends are sorted by key).
    pub fn frontend(&self, key: &FrontendKey) -> Option<&Frontend> {
        self.frontends
            .binary_search_by(|f| f.key().cmp(key))
            .ok()
            .map(|i| &self.frontends[i])
    }
}

/// The output of [`build`]: a table and the warnings that explain what was left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Built {
    pub frontends: Vec<Frontend>,
    pub warnings: Vec<Warning>,
}

impl Built {
    pub fn into_parts(self) -> (Table, Vec<Warning>) {
        (
            Table {
                frontends: self.frontends,
            },
            self.warnings,
        )
    }
}
