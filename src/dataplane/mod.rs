//! The data plane: listeners that follow the published table, and TCP/UDP forwarding.
//!
//! Must not: build or publish tables, or talk to Marathon. It reads the published table and keeps
//! per-backend runtime state (active connections, recent failures) that survives table swaps.
