//! vipd: a per-agent layer-4 load balancer for Marathon service ports and VIPs.
//!
//! Layout, from the pure core outwards:
//! - [`model`]: Marathon's JSON (apps, tasks, legacy fields), parsed with per-app fault isolation.
//! - [`table`]: the routing table and the pure builder `table::build` (no I/O, no clock).
//! - [`published`]: the one `ArcSwap` that holds the current table, and its single writer.
//! - [`source`], [`control`]: the control plane (file/Marathon sources, the control loop).
//! - [`dataplane`]: listeners, TCP and UDP forwarding, per-backend runtime state.
//! - [`dns`]: the authoritative DNS server for named VIPs; [`addresses`]: VIP addresses on `lo`.
#![deny(rust_2018_idioms)]

pub mod addresses;
pub mod admin;
pub mod backoff;
pub mod cli;
pub mod commands;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod demo;
pub mod dns;
pub mod health;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod published;
pub mod source;
pub mod table;
