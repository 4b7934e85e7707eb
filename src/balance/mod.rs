//! Who gets the next connection: the one home of backend selection.
//!
//! Owns:
//! - [`policy`]: the per-frontend policy: what the daemon flags ([`crate::cli::HealthArgs`]) and a port's
//!   options resolve to (algorithm, active probe, fail-open, max-ejection budget).
//! - [`select`]: the health tiers (the one eligibility rule) and the algorithms (round-robin,
//!   least-conn, p2c, Maglev) that pick among the eligible backends.
//! - [`route`]: every frontend's [`select::Route`] for a new table (built by the table's single
//!   writer and published with the table in the one snapshot).
//! - [`maglev`]: the Maglev lookup table.
//! - [`backend`]: the per-backend runtime state (active connections, failures, passive ejection,
//!   the active-check verdict), keyed by backend and surviving every table swap.
//!
//! Layering: reads the table ([`crate::table`]) and the pure health state machines
//! ([`crate::health::outlier`], [`crate::health::counter`]); the control plane and the data plane
//! read it. Must not: do I/O, read the clock more than once per pick, or allocate or lock on the
//! common path of a pick.

pub mod backend;
pub mod maglev;
pub mod policy;
pub mod route;
pub mod select;

pub use backend::{
    BackendKey, BackendRegistry, BackendStats, BackendStatsSnapshot, ConnectFailure,
};
pub use policy::{probe_for, probe_for_default, probe_for_frontend};
pub use policy::{ActiveConfig, Balance, HealthConfig};
pub use route::{Router, Routes};
pub use select::{Candidates, Route, Select};
