//! The receive loop of one UDP frontend: batched receive, flow lookup/admission, backend choice
//! and re-pick, forwarding, idle expiry, and closing.
//!
//! Owns: [`Frontend`] (the socket, the receive batch, and the flow state: the flow table, the
//! table cache, the return tasks' `JoinSet`). One task runs it; nothing else touches the flows.
//!
//! Per datagram: one `Cache::load` (a generation compare while the table is unchanged), one hash
//! lookup, one nonblocking `send(2)`, a few relaxed counter adds; no allocation, no lock, no clock
//! read (the clock is read once per received batch). Whether a flow keeps its backend is decided
//! by the route's one eligibility rule ([`Route::keeps`]), re-checked only when the table
//! generation changed since the flow last checked or its backend looks demoted.
//!
//! Must not: block, await per datagram, or log per datagram above `trace`.

use super::flows::{Admit, FlowTable};
use super::stats::UdpFrontendStats;
use super::sys::RecvBatch;
use super::upstream::{connect_upstream, is_backend_error, ReturnPath, Upstream};
use super::UdpContext;
use crate::balance::{Candidates, ConnectFailure, Route, Select};
use crate::dataplane::frontends::ActiveFrontend;
use crate::dataplane::listener::LogLimiter;
use crate::health::LocalFault;
use crate::published::PublishedTable;
use crate::table;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Receive batches handled before the loop goes back to `select!` (stop, timers).
const RECV_BATCHES_PER_WAKE: usize = 8;

type TableCache = arc_swap::Cache<Arc<arc_swap::ArcSwap<PublishedTable>>, Arc<PublishedTable>>;

/// One client's flow.
struct Flow {
    /// `None` after a re-pick found no backend; the next datagram tries again.
    upstream: Option<Upstream>,
    /// The table generation at which the upstream's backend was last found eligible.
    checked_generation: u64,
    /// The route of that generation has active checks (a probe not `up` demotes a backend).
    active_checks: bool,
    /// One unit of the frontend's `active` count (shared with TCP's `FrontendStats`).
    _active: ActiveFrontend,
    /// This flow's share of the process-wide flow budget (its upstream socket's descriptor).
    _budget: super::FlowPermit,
}

/// What every flow operation reads.
struct Env {
    ctx: UdpContext,
    socket: Arc<UdpSocket>,
    stats: Arc<UdpFrontendStats>,
    /// The clock base of the return paths' timestamps.
    base: Instant,
}

struct FlowState {
    env: Env,
    flows: FlowTable<Flow>,
    cache: TableCache,
    returns: JoinSet<()>,
    limiter: LogLimiter,
}

/// A bound UDP frontend.
pub(crate) struct Frontend {
    socket: Arc<UdpSocket>,
    batch: RecvBatch,
    state: FlowState,
}

impl Frontend {
    pub fn new(ctx: UdpContext, socket: Arc<UdpSocket>) -> Self {
        let stats = ctx.udp_stats.frontend_or_insert(ctx.key);
        let flows = FlowTable::new(ctx.config.idle_timeout, ctx.config.max_flows);
        let cache = ctx.tables.cache();
        Frontend {
            socket: socket.clone(),
            batch: RecvBatch::new(),
            state: FlowState {
                env: Env {
                    ctx,
                    socket,
                    stats,
                    base: Instant::now(),
                },
                flows,
                cache,
                returns: JoinSet::new(),
                limiter: LogLimiter::new(Duration::from_secs(5)),
            },
        }
    }

    /// Receives and forwards until `stop`.
    pub async fn run(&mut self, stop: &CancellationToken) {
        let socket = self.socket.clone();
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = &mut sleep, if armed.is_some() => {
                    armed = None;
                    self.state.expire(Instant::now());
                }
                ready = socket.readable() => match ready {
                    Ok(()) => self.receive(),
                    Err(error) => {
                        UdpFrontendStats::add(&self.state.env.stats.recv_errors, 1);
                        tracing::warn!(frontend = %self.state.env.ctx.key, %error, "waiting for datagrams failed; pausing");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                            _ = stop.cancelled() => return,
                        }
                    }
                }
            }
            let next = self.state.flows.poll_timeout();
            if next != armed {
                if let Some(at) = next {
                    sleep.as_mut().reset(tokio::time::Instant::from_std(at));
                }
                armed = next;
            }
        }
    }

    /// Drains the socket's queue (bounded by [`RECV_BATCHES_PER_WAKE`]).
    fn receive(&mut self) {
        let fd = self.socket.as_raw_fd();
        for _ in 0..RECV_BATCHES_PER_WAKE {
            let batch = &mut self.batch;
            match self.socket.try_io(Interest::READABLE, || batch.recv(fd)) {
                Ok((n, kernel_dropped)) => {
                    let stats = &self.state.env.stats;
                    if kernel_dropped > 0 {
                        UdpFrontendStats::add(&stats.dropped_kernel_rx, kernel_dropped);
                    }
                    let now = Instant::now();
                    for i in 0..n {
                        match self.batch.get(i) {
                            Some((r, payload)) if !r.truncated => {
                                self.state.on_datagram(r.from, payload, now)
                            }
                            _ => UdpFrontendStats::add(&self.state.env.stats.recv_errors, 1),
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    UdpFrontendStats::add(&self.state.env.stats.recv_errors, 1);
                    if let Some(suppressed) = self.state.limiter.allow(tokio::time::Instant::now())
                    {
                        tracing::warn!(frontend = %self.state.env.ctx.key, %error, suppressed, "receive failed");
                    }
                    break;
                }
            }
        }
        let state = &mut self.state;
        if state.returns.len() > state.flows.len() {
            state.reap();
        }
    }

    /// Live flows.
    pub fn flows(&self) -> usize {
        self.state.flows.len()
    }

    /// Without receiving any more (a successor reads the socket), lets each live flow forward
    /// its replies until it idles out, or until `cut`; then [`Frontend::close`]s.
    pub async fn linger(mut self, cut: CancellationToken) -> usize {
        loop {
            self.state.expire(Instant::now());
            if self.state.flows.is_empty() {
                break;
            }
            let Some(at) = self.state.flows.poll_timeout() else {
                break;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                _ = cut.cancelled() => break,
            }
        }
        self.close().await
    }

    /// Closes every flow and waits until every return task has ended (so the frontend socket is
    /// really closed once `self` is dropped). Returns how many flows were closed.
    pub async fn close(mut self) -> usize {
        let state = &mut self.state;
        let flows = state.flows.clear();
        let n = flows.len();
        for _ in 0..n {
            state.env.ctx.frontend_stats.record_cut();
        }
        UdpFrontendStats::add(&state.env.stats.flows_closed, n as u64);
        drop(flows);
        state.returns.abort_all();
        while state.returns.join_next().await.is_some() {}
        state.env.stats.flows_active.store(0, Relaxed);
        n
    }
}

impl FlowState {
    fn on_datagram(&mut self, client: SocketAddr, payload: &[u8], now: Instant) {
        let env = &self.env;
        let stats = &env.stats;
        UdpFrontendStats::add(&stats.datagrams_in, 1);
        UdpFrontendStats::add(&stats.bytes_in, payload.len() as u64);
        let published = self.cache.load();
        let generation = published.generation;
        let key = env.ctx.key;

        let flow = match self.flows.lookup_or_admit(client, now) {
            Admit::Full => {
                UdpFrontendStats::add(&stats.dropped_by_cap, 1);
                tracing::trace!(frontend = %key, %client, "flow cap reached; datagram dropped");
                return;
            }
            Admit::Existing(flow) => flow,
            Admit::Vacant(slot) => {
                let Some((frontend, route)) = published.frontend(&key) else {
                    UdpFrontendStats::add(&stats.dropped_no_backend, 1);
                    return;
                };
                // The descriptor budget before the socket: past it, new flows are refused.
                let Some(budget) = env.ctx.flow_budget.try_acquire() else {
                    UdpFrontendStats::add(&stats.dropped_by_budget, 1);
                    if let Some(suppressed) = self.limiter.allow(tokio::time::Instant::now()) {
                        tracing::warn!(frontend = %key, limit = env.ctx.flow_budget.limit(), suppressed, "UDP flow budget spent (descriptor limit); new flows dropped");
                    }
                    return;
                };
                let Some(upstream) = open(
                    env,
                    &mut self.returns,
                    &mut self.limiter,
                    frontend,
                    route,
                    &[],
                    client,
                ) else {
                    return;
                };
                UdpFrontendStats::add(&stats.flows_created, 1);
                tracing::debug!(frontend = %key, %client, backend = %upstream.backend, "flow created");
                slot.insert(Flow {
                    upstream: Some(upstream),
                    checked_generation: generation,
                    active_checks: route.settings().checked,
                    _active: env.ctx.frontend_stats.accepted(),
                    _budget: budget,
                })
            }
        };

        // Keep the backend while the route would still use it; check only when the table changed
        // or the backend looks demoted (ejected, probe down, or not up on a checked frontend).
        let repick = match &flow.upstream {
            None => true,
            Some(up) if up.signals.failed() => true,
            Some(up) => {
                let demoted = up.stats.excluded_by_health(now)
                    || (flow.active_checks
                        && up.stats.active_health() != crate::health::ActiveState::Up);
                if flow.checked_generation != generation || demoted {
                    match published.frontend(&key) {
                        Some((frontend, route)) => {
                            flow.active_checks = route.settings().checked;
                            !keeps(frontend, route, up.backend, now)
                        }
                        None => true,
                    }
                } else {
                    false
                }
            }
        };
        flow.checked_generation = generation;
        if repick
            && !repick_flow(
                env,
                &mut self.returns,
                &mut self.limiter,
                flow,
                published,
                client,
            )
        {
            return;
        }
        let sent = match &flow.upstream {
            Some(up) => send(env, up, payload),
            None => return,
        };
        if let Err(error) = sent {
            // An ICMP error was pending on the connected socket: the backend is not there. Count
            // it, re-pick (skipping it) and retry this datagram once.
            if let Some(up) = &flow.upstream {
                up.stats.record_failure(ConnectFailure::from_io(&error));
                tracing::debug!(frontend = %key, %client, backend = %up.backend, %error, "backend error on send; re-picking");
            }
            if repick_flow(
                env,
                &mut self.returns,
                &mut self.limiter,
                flow,
                published,
                client,
            ) {
                if let Some(up) = &flow.upstream {
                    if let Err(error) = send(env, up, payload) {
                        up.stats.record_failure(ConnectFailure::from_io(&error));
                        up.signals.mark_failed();
                        UdpFrontendStats::add(&stats.dropped_send_error, 1);
                    }
                }
            }
        }
        stats.flows_active.store(self.flows.len() as u64, Relaxed);
    }

    fn expire(&mut self, now: Instant) {
        let base = self.env.base;
        let expired = self.flows.expire_with(now, |flow| {
            flow.upstream
                .as_ref()
                .and_then(|u| u.signals.last_reply(base))
        });
        if !expired.is_empty() {
            UdpFrontendStats::add(&self.env.stats.flows_expired, expired.len() as u64);
            tracing::debug!(frontend = %self.env.ctx.key, expired = expired.len(), live = self.flows.len(), "idle flows expired");
        }
        drop(expired);
        self.env
            .stats
            .flows_active
            .store(self.flows.len() as u64, Relaxed);
        self.reap();
    }

    /// Collects the return tasks that have ended (aborted by expiry or re-pick).
    fn reap(&mut self) {
        while self.returns.try_join_next().is_some() {}
    }
}

/// Does the flow keep backend `addr` under this snapshot? Not if it left the frontend; else the
/// route's eligibility rule decides ([`Route::keeps`]: `up` and `unknown` backends are kept, so
/// flows do not move on a health gain; the fail-open tier only while nothing better is left).
fn keeps(frontend: &table::Frontend, route: &Route, addr: SocketAddr, now: Instant) -> bool {
    frontend
        .backends
        .iter()
        .position(|b| b.address == addr)
        .is_some_and(|i| route.keeps(&Candidates::new(&frontend.backends, &[]), i, now))
}

/// Replaces the flow's upstream with a newly picked one, skipping the current backend. False if
/// none could be opened (the flow stays, without upstream; the drop is counted).
fn repick_flow(
    env: &Env,
    returns: &mut JoinSet<()>,
    limiter: &mut LogLimiter,
    flow: &mut Flow,
    published: &PublishedTable,
    client: SocketAddr,
) -> bool {
    let Some((frontend, route)) = published.frontend(&env.ctx.key) else {
        flow.upstream = None;
        UdpFrontendStats::add(&env.stats.dropped_no_backend, 1);
        return false;
    };
    let old = flow.upstream.take();
    let skip = old.as_ref().and_then(|u| {
        frontend
            .backends
            .iter()
            .position(|b| b.address == u.backend)
    });
    let tried_one;
    let tried: &[usize] = match skip {
        Some(i) => {
            tried_one = [i];
            &tried_one
        }
        None => &[],
    };
    if let Some(old) = &old {
        UdpFrontendStats::add(&env.stats.flows_repicked, 1);
        tracing::debug!(frontend = %env.ctx.key, %client, from = %old.backend, "flow re-picking its backend");
    }
    drop(old); // aborts the old return task
    flow.active_checks = route.settings().checked;
    flow.upstream = open(env, returns, limiter, frontend, route, tried, client);
    flow.upstream.is_some()
}

/// Picks a backend through the frontend's route and opens the flow's upstream to it. `None` (the
/// datagram's drop counted) if nothing is eligible or the socket cannot be opened.
fn open(
    env: &Env,
    returns: &mut JoinSet<()>,
    limiter: &mut LogLimiter,
    frontend: &table::Frontend,
    route: &Route,
    tried: &[usize],
    client: SocketAddr,
) -> Option<Upstream> {
    let ctx = &env.ctx;
    let Some(i) = route.select(&Candidates::new(&frontend.backends, tried)) else {
        UdpFrontendStats::add(&env.stats.dropped_no_backend, 1);
        tracing::trace!(frontend = %ctx.key, %client, "no eligible backend; datagram dropped");
        return None;
    };
    let addr = frontend.backends[i].address;
    let socket = match connect_upstream(addr) {
        Ok(socket) => socket,
        Err(error) => {
            // Always local (a socket of our own could not be made): never the backend's fault.
            let fault = LocalFault::of_local_socket(&error);
            ctx.frontend_stats.record_local_failure(fault);
            UdpFrontendStats::add(&env.stats.upstream_open_errors, 1);
            UdpFrontendStats::add(&env.stats.dropped_send_error, 1);
            if let Some(suppressed) = limiter.allow(tokio::time::Instant::now()) {
                tracing::warn!(frontend = %ctx.key, backend = %addr, %error, suppressed, "cannot open an upstream socket; datagram dropped");
            }
            return None;
        }
    };
    let active = route.begin_connect(i);
    let stats = route.stats(i).clone();
    let udp_stats = ctx.udp_stats.backend_or_insert(addr);
    Some(Upstream::start(
        addr,
        socket,
        active,
        stats,
        udp_stats,
        ReturnPath {
            frontend: env.socket.clone(),
            client,
            frontend_stats: env.stats.clone(),
            base: env.base,
        },
        returns,
    ))
}

/// Sends one datagram to the flow's backend. `Err` only for backend errors (ICMP); every other
/// outcome is counted here.
fn send(env: &Env, up: &Upstream, payload: &[u8]) -> Result<(), io::Error> {
    // Straight to the syscall (the socket is nonblocking): tokio's `try_send` would report
    // WouldBlock until its reactor has seen the new socket writable.
    match socket2::SockRef::from(&*up.socket).send(payload) {
        Ok(_) => {
            UdpFrontendStats::add(&env.stats.datagrams_to_backends, 1);
            up.stats
                .byte_counters()
                .0
                .fetch_add(payload.len() as u64, Relaxed);
            up.udp_stats.datagrams_to_backend.fetch_add(1, Relaxed);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            UdpFrontendStats::add(&env.stats.dropped_upstream_full, 1);
            Ok(())
        }
        Err(e) if is_backend_error(&e) => {
            UdpFrontendStats::add(&env.stats.upstream_errors, 1);
            Err(e)
        }
        Err(error) => {
            UdpFrontendStats::add(&env.stats.dropped_send_error, 1);
            tracing::trace!(backend = %up.backend, %error, "send to backend failed");
            Ok(())
        }
    }
}
