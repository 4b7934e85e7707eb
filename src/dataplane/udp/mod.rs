//! UDP forwarding: one socket per UDP frontend, one flow per client address.
//!
//! Owns: the UDP frontend task ([`run_udp_frontend`]: bind with retry, then the receive loop),
//! the sans-io flow table ([`flows`]), the per-flow upstream sockets and return tasks
//! (`upstream.rs`), the batched receive syscall (`sys.rs`), and the UDP counters ([`stats`]).
//!
//! How a datagram travels (`frontend.rs`):
//! - The frontend's receive loop owns its [`flows::FlowTable`] (no shared map, no lock). It reads
//!   the table through an `arc_swap::Cache` (no atomic read-modify-write per datagram while the
//!   table is unchanged).
//! - A client's first datagram creates its flow: the frontend's route from the snapshot (the
//!   same algorithms and health tiers as TCP) picks a backend, and the flow gets its own socket bound to an ephemeral
//!   port and CONNECTED to the backend. The datagram is sent with a nonblocking `send(2)`;
//!   there is no queue between the receive loop and the backends (a full socket send buffer
//!   drops the datagram and counts it).
//! - Each flow has a return task that reads its connected socket and sends replies to the client
//!   from the frontend's socket (nonblocking `sendto(2)`, no queue either). Dropping a flow aborts it.
//! - A flow is refreshed by traffic in both directions; the return path only stores a timestamp
//!   into a per-flow atomic, which the flow table reads at expiry (no lock per datagram).
//! - A flow keeps its backend while the route says a pick could still use it
//!   ([`crate::balance::Route::keeps`], the same tier rule as a pick): a backend that left the
//!   table, is `draining`, or sits in the fail-open tier (table `unhealthy`, ejected, probe not
//!   up) while better backends are left, or at all under `--fail-open=false`, makes the flow's
//!   next client datagram re-pick (a new upstream socket), or, if nothing is eligible, drop as a
//!   new flow would. The check runs only when the table generation changed since the flow last
//!   checked or the flow's own backend looks demoted (a few atomic loads per datagram). ICMP errors (ECONNREFUSED on
//!   the connected socket, on send or on receive) count as a failure on the backend
//!   (`record_failure`) and make the flow re-pick, skipping that backend; a send that hits one is
//!   retried once on the new backend. A backend counts as connected (`record_connected`) when
//!   the first reply of a flow arrives: for UDP that is the only proof of life.
//! - Over `--udp-max-flows`, datagrams from NEW clients are dropped and counted; existing flows
//!   are unaffected. The same holds past the process-wide flow budget ([`FlowBudget`], derived
//!   from `RLIMIT_NOFILE`), which every UDP frontend shares, so flows never take the
//!   descriptors TCP, the admin server and DNS need.
//!
//! Lifecycle: a removed frontend closes its socket at once, and its flows with it: their replies
//! would need that socket, and a UDP client has no connection to drain. Shutdown does the same
//! for every frontend, except after a handover: the successor then receives on the same socket,
//! and each frontend only stops receiving, forwarding its live flows' replies until they idle
//! out (bounded by the drain). The frontend task returns only after every return task (each holding the
//! frontend socket) has ended, so the port is really free when the task reports it closed.
//!
//! Socket options: the frontend socket does NOT set `SO_REUSEADDR`. For UDP it has no TIME_WAIT
//! to skip, and on Linux it lets a second socket with the option bind the same address and take
//! its datagrams, so two daemons (or a stale socket) would split traffic silently instead of the
//! second bind failing and being reported. `IPV6_V6ONLY` is set for IPv6 addresses (like TCP).
//!
//! Must not: build or change tables, keep a lock or allocate per datagram on the hot path, or log
//! per datagram above `trace`.

mod budget;
pub mod flows;
mod frontend;
pub mod stats;
mod sys;
mod upstream;

pub use budget::{FlowBudget, FlowPermit};
pub use stats::{
    UdpBackendStats, UdpBackendStatsSnapshot, UdpFrontendStats, UdpFrontendStatsSnapshot,
    UdpStatsRegistry,
};

use super::frontends::FrontendStats;
use super::listener::{ListenerSocket, ListenerTask};
use crate::published::TableReader;
use crate::table::FrontendKey;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The largest datagram vipd relays, with room to spare: IPv4's maximum UDP payload is 65,507
/// bytes, IPv6's (without jumbograms) 65,527.
pub const MAX_DATAGRAM: usize = 65_536;

/// UDP settings of the data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpConfig {
    /// A flow with no datagram in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// Flows per frontend; datagrams of new clients beyond it are dropped.
    pub max_flows: usize,
    /// `SO_RCVBUF` of each frontend socket; `None` = the kernel default (not a flag).
    pub recv_buffer: Option<usize>,
    /// Flows of ALL UDP frontends together: one descriptor each, so derived from
    /// `RLIMIT_NOFILE` ([`crate::fd_budget::udp_flow_budget`]); not a flag.
    pub flow_budget: usize,
}

/// Binds a nonblocking UDP socket on `addr` for a frontend (see the module docs for options).
pub fn bind_udp(addr: SocketAddr, recv_buffer: Option<usize>) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    sys::enable_rx_overflow_count(&socket)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Everything the receive loop of one UDP frontend needs.
pub(crate) struct UdpContext {
    pub key: FrontendKey,
    /// The snapshot source: the frontend's route (policy, Maglev table, backend entries) comes
    /// from the same snapshot as its backends, as for TCP.
    pub tables: TableReader,
    pub frontend_stats: Arc<FrontendStats>,
    pub udp_stats: Arc<UdpStatsRegistry>,
    pub flow_budget: Arc<FlowBudget>,
    pub config: UdpConfig,
    pub linger: Linger,
}

/// How a UDP frontend ends after a handover ([`crate::dataplane::Dataplane::drain_after_handover`]).
#[derive(Debug, Clone)]
pub(crate) struct Linger {
    /// Cancelled: stop receiving but let the live flows idle out instead of closing them.
    pub enabled: CancellationToken,
    /// Where the lingering runs (the data plane's connections: the drain waits for it).
    pub tracker: tokio_util::task::TaskTracker,
    /// Ends the lingering (drain timeout or a second signal).
    pub cut: CancellationToken,
}

/// Binds with retry (status and backoff like TCP), then receives until `stop`; then closes the
/// socket and every flow. Never returns early on errors.
pub(crate) async fn run_udp_frontend(mut task: ListenerTask, ctx: UdpContext) {
    let _closed = task.socket_closed.clone().drop_guard();
    let key = task.key;
    let recv_buffer = ctx.config.recv_buffer;
    let from_std = |s: std::net::UdpSocket| {
        s.set_nonblocking(true)?;
        let s = tokio::net::UdpSocket::from_std(s)?;
        s.local_addr().map(|a| (s, a))
    };
    let bound = task
        .bind_with_retry(
            |fd| {
                let socket = Socket::from(fd);
                sys::enable_rx_overflow_count(&socket)?;
                from_std(socket.into())
            },
            |addr| bind_udp(addr, recv_buffer).and_then(from_std),
        )
        .await;
    let Some(socket) = bound else {
        return;
    };
    let socket = Arc::new(socket);
    task.status.set_socket(
        &key,
        task.owner,
        ListenerSocket::Udp(Arc::downgrade(&socket)),
    );
    let linger = ctx.linger.clone();
    let mut frontend = frontend::Frontend::new(ctx, socket);
    frontend.run(&task.stop).await;
    if linger.enabled.is_cancelled() {
        // After a handover: the successor receives on this socket now; the live flows still
        // get their replies until they idle out (or the drain is cut).
        let flows = frontend.flows();
        tracing::info!(frontend = %key, flows, "stopped receiving (handed over); flows finish as they idle out");
        linger.tracker.spawn(async move {
            let closed = frontend.linger(linger.cut).await;
            tracing::info!(frontend = %key, flows = closed, "handed-over frontend: remaining flows closed");
        });
        return;
    }
    let closed = frontend.close().await;
    tracing::info!(frontend = %key, flows = closed, "stopped receiving; flows closed");
}
