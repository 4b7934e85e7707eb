//! systemd service notifications (`sd_notify(3)`, through the `sd-notify` crate): `READY=1` once
//! vipd serves, `STOPPING=1` when it starts to drain. Under `Type=notify` this is what tells
//! systemd (and units ordered after vipd) that the listeners are there.
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

/// Sends `READY=1` (with a `STATUS=` line) once vipd is ready; ends early on `shutdown`.
pub fn spawn_ready(
    tables: TableReader,
    listeners: ListenerStatusHandle,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
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
            while !is_ready(&tables, &listeners).0 {
                tokio::time::sleep(READY_POLL).await;
            }
            true
        };
        let ready = tokio::select! {
            _ = shutdown.cancelled() => false,
            ready = ready => ready,
        };
        if ready {
            let published = tables.load_full();
            let status = format!(
                "serving table generation {}: {} frontends",
                published.generation,
                published.table.frontends.len()
            );
            send(
                &[NotifyState::Ready, NotifyState::Status(&status)],
                "READY=1",
            );
        }
    })
}

/// Sends `STOPPING=1`: vipd stops accepting and drains.
pub fn stopping() {
    send(
        &[NotifyState::Stopping, NotifyState::Status("draining")],
        "STOPPING=1",
    );
}
