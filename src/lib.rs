//! vipd: a per-agent layer-4 load balancer for Marathon service ports and VIPs.
//!
//! Layout, from the pure core outwards:
//! - [`model`]: Marathon's JSON (apps, tasks, legacy fields), parsed with per-app fault isolation.
//! - [`table`]: the routing table and the pure builder `table::build` (no I/O, no clock).
//! - [`published`]: the one `ArcSwap` that holds the current table, and its single writer.
//! - [`source`], [`control`]: the control plane (file/Marathon sources, the control loop, the
//!   active health checker).
//! - [`balance`]: who gets the next connection: policy, health tiers, algorithms, routes,
//!   per-backend runtime state. [`health`]: the pure passive/active health state machines and
//!   probes.
//! - [`cli`]: every flag and its defaults. docs/architecture.md draws the layers.
//! - [`dataplane`]: listeners, TCP and UDP forwarding.
//! - [`dns`]: the authoritative DNS server for named VIPs; [`addresses`]: VIP addresses on `lo`;
//!   [`admin`] and [`status_page`]: the admin API and the status page.

pub mod addresses;
pub mod admin;
pub mod backoff;
pub mod balance;
pub mod capabilities;
pub mod cli;
pub mod commands;
pub mod conn_slots;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod demo;
pub mod dns;
pub mod fd_budget;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod published;
pub mod signals;
pub mod source;
pub mod status_page;
pub mod table;
