//! In-place upgrades by SIGUSR2 through the real binary: the running vipd re-executes its own
//! binary with the same arguments and hands it every listening socket; it drains and exits only
//! once the new process serves. Each wait is a bounded condition.

mod support;
mod udp_support;
mod upgrade_support;

use upgrade_support::{upgrades_under_load, How};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sigusr2_upgrades_under_load_drop_nothing() {
    upgrades_under_load(How::Reexec, 20).await;
}
