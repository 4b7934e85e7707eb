//! Subcommands of the `vipd` binary that are more than a thin call: each reads its input, runs the
//! library, and returns a `thiserror` error that `main.rs` turns into an exit code and one stderr
//! line.
//!
//! Must not: call `std::process::exit` or print errors itself (main does), or hold logic that
//! belongs to the library modules.

pub mod status;
pub mod table;
