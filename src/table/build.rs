//! `table::build`: Marathon snapshot → routing table. Pure and deterministic.
//!
//! Owns: every rule that turns apps and tasks into frontends and backends (networking modes,
//! legacy forms, service ports, VIP labels, task filter, health state, conflicts).
//!
//! Must not: do I/O, read a clock, resolve hostnames (they arrive in [`Resolved`]), use a
//! randomised hasher or iteration order, or panic on any input.

use super::{Built, Warning};
use crate::model::AppsSnapshot;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;

/// Options that shape the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// Address service-port frontends bind (`--bind-address`).
    pub bind_address: IpAddr,
    /// Pool that named VIPs draw their address from (`--vip-cidr`).
    pub vip_cidr: IpNet,
    /// DNS zone of named VIPs.
    pub zone: String,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            bind_address: IpAddr::from([0, 0, 0, 0]),
            vip_cidr: "11.0.0.0/8".parse().expect("valid default CIDR"),
            zone: "l4lb.thisdcos.directory".to_string(),
        }
    }
}

/// Agent hostnames resolved before the build. A host that is an IP literal needs no entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// `None` records a host that could not be resolved.
    pub hosts: HashMap<String, Option<IpAddr>>,
}

/// Builds the table. Deterministic: equal inputs give equal outputs, byte for byte as JSON.
pub fn build(snapshot: &AppsSnapshot, _resolved: &Resolved, _opts: &BuildOptions) -> Built {
    // Placeholder until the routing core lands: only the parse rejections are reported.
    let warnings = snapshot
        .rejected
        .iter()
        .map(|r| Warning {
            app: r.app.clone(),
            message: r.message.clone(),
        })
        .collect();
    Built {
        frontends: Vec::new(),
        warnings,
    }
}
