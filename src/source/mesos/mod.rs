//! The Mesos source: the master's operator event stream (`POST /api/v1 {"type":"SUBSCRIBE"}`).
//!
//! Owns: `recordio.rs` (framing).
//!
//! Must not: build tables or touch the data plane.

pub mod driver;
pub mod recordio;
