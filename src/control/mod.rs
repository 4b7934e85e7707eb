//! The control plane: the control loop (the single writer of the table), hostname resolution,
//! and health. Kept apart from the data plane, which only reads what this publishes.

pub mod resolve;
