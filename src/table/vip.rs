//! VIP labels: parsing `VIP_n` values, DC/OS name mangling, and the named-VIP address pool.
//!
//! Must not: do I/O or depend on arrival order; the same set of names gives the same addresses
//! on every agent.
