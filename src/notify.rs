//! systemd service notifications (`sd_notify(3)`, through the `sd-notify` crate): `READY=1` once
//! vipd serves, `STOPPING=1` when it starts to drain. Under `Type=notify` this is what tells
//! systemd (and units ordered after vipd) that the listeners are there. A successor started by
//! an upgrade (SIGUSR2) sends `MAINPID=<its pid>` with its `READY=1`, before its predecessor
//! exits, so systemd follows it (`NotifyAccess=all`); the predecessor then exits without
//! `STOPPING=1` (the service is not stopping).
//!
//! Owns: when each notification is sent. Ready is `/readyz`'s rule ([`crate::admin::is_ready`]):
//! the first table is published and each of its listeners has been attempted. Without
//! `$NOTIFY_SOCKET` (not started by systemd) every call does nothing.
//!
//! Must not: fail the daemon (a notification that cannot be sent is logged), or unset
//! `$NOTIFY_SOCKET` (a later notification still needs it).

use crate::admin::is_ready;
use crate::dataplane::ListenerStatusHandle;
use crate::published::TableReader;
use sd_notify::NotifyState;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often readiness is re-checked between the first publish and the listeners' first bind
/// attempts (a few milliseconds, once per start).
const READY_POLL: Duration = Duration::from_millis(10);

fn send(states: &[NotifyState<'_>], what: &'static str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    match sd_notify::notify(false, states) {
        Ok(()) => tracing::info!(notification = what, "notified the service manager"),
        Err(e) => {
            tracing::warn!(notification = what, error = %e, "cannot notify the service manager")
        }
    }
}

/// Resolves to true once vipd is ready (the `/readyz` rule), false if `shutdown` comes first.
pub async fn wait_ready(
    tables: &TableReader,
    listeners: &ListenerStatusHandle,
    shutdown: &CancellationToken,
) -> bool {
    let mut changes = tables.subscribe();
    let ready = async {
        // The first publish, then the listeners' first attempts.
        if changes
            .wait_for(|generation| *generation > 0)
            .await
            .is_err()
        {
            return false;
        }
        while !is_ready(tables, listeners).0 {
            tokio::time::sleep(READY_POLL).await;
        }
        true
    };
    tokio::select! {
        _ = shutdown.cancelled() => false,
        ready = ready => ready,
    }
}

/// Sends `READY=1` (with a `STATUS=` line) once vipd is ready; ends early on `shutdown`.
pub fn spawn_ready(
    tables: TableReader,
    listeners: ListenerStatusHandle,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if wait_ready(&tables, &listeners, &shutdown).await {
            ready(&tables, false);
        }
    })
}

/// Sends `READY=1` now, with `MAINPID=<this process>` when `main_pid` (an upgrade's successor).
pub fn ready(tables: &TableReader, main_pid: bool) {
    let published = tables.load_full();
    let status = format!(
        "serving table generation {}: {} frontends",
        published.generation,
        published.table.frontends.len()
    );
    let mut states = vec![NotifyState::Ready, NotifyState::Status(&status)];
    let what = if main_pid {
        states.insert(0, NotifyState::MainPid(std::process::id()));
        "MAINPID, READY=1"
    } else {
        "READY=1"
    };
    send(&states, what);
}

/// Sends `STOPPING=1`: vipd stops accepting and drains.
pub fn stopping() {
    send(
        &[NotifyState::Stopping, NotifyState::Status("draining")],
        "STOPPING=1",
    );
}
