//! The daemon's side of upgrades: what its run loop waits for ([`UpgradeState::next_event`]),
//! what it does about each event ([`UpgradeState::handle`]: start a re-exec on SIGUSR2, serve a
//! takeover on `--handover-socket`, refuse a second attempt while one is in flight), and a
//! successor's finish ([`Pending::finish`]: `READY=1`/`MAINPID=`, `serving`, the VIP addresses,
//! its own listener). The blocking conversations run on the blocking pool.
//!
//! Must not: drain, stop or bind anything itself; it tells the daemon what happened
//! ([`Next`]).

use super::*;

/// What the daemon's run loop saw.
#[derive(Debug)]
pub enum Event {
    Stop(&'static str),
    /// SIGUSR2.
    Reexec,
    /// A peer connected to `--handover-socket`.
    Accepted(io::Result<Channel>),
    /// An attempt (re-exec or takeover) ended.
    Attempt(Result<Handed, String>),
    /// This process (a successor) finished its own handover and listens on the path now.
    Listening(HandoverListener),
    /// This process (a successor) finished its own handover.
    Finished,
    /// The predecessor aborted this process's takeover: it goes on serving, so this one stops.
    SuccessorAborted(String),
}

/// What the run loop does next.
#[derive(Debug)]
pub enum Next {
    Serve,
    Stop(String),
    HandedOver(Handed),
}

/// A successor serves; the predecessor still owes it `draining`.
#[derive(Debug)]
pub struct Handed {
    channel: Channel,
    pub successor: u32,
}

impl Handed {
    /// Sends `draining {addresses}`: the successor owns these VIP addresses now.
    pub async fn draining(self, addresses: Vec<IpAddr>) {
        let successor = self.successor;
        tracing::info!(
            successor,
            "handover accepted: the successor serves; stopped accepting, draining"
        );
        let sent = tokio::task::spawn_blocking(move || {
            self.channel.send(&Message::Draining { addresses }, &[])
        })
        .await;
        if let Ok(Err(e)) = sent {
            tracing::warn!(successor, error = %e, "could not tell the successor its VIP addresses");
        }
    }
}

/// A successor that has taken its sockets, until it tells its predecessor it serves.
#[derive(Debug)]
pub struct Pending {
    successor: Successor,
    /// Started by the predecessor's SIGUSR2 (under systemd: becomes the main PID).
    reexec: bool,
}

/// The predecessor's sockets, if this process is a successor: the inherited channel of a
/// re-exec, or a live vipd on `--handover-socket`. Runs before anything binds.
pub async fn take_predecessor(
    args: &crate::cli::HandoverArgs,
) -> Result<(Inherited, Option<Pending>), HandoverError> {
    let path = args.handover_socket.clone();
    let taken = tokio::task::spawn_blocking(move || -> Result<_, HandoverError> {
        if let Some(channel) = inherited_channel()? {
            return Ok(Some((take(channel)?, true)));
        }
        match path.as_deref().map(connect).transpose()?.flatten() {
            Some(channel) => Ok(Some((take(channel)?, false))),
            None => Ok(None),
        }
    })
    .await
    .map_err(|e| HandoverError::Io(io::Error::other(e.to_string())))??;
    let Some((taken, reexec)) = taken else {
        return Ok((Inherited::default(), None));
    };
    let (sockets, successor) = taken.into_parts();
    tracing::info!(
        predecessor = successor.predecessor,
        sockets = sockets.len(),
        how = if reexec { "re-exec" } else { "takeover" },
        "took over the listening sockets"
    );
    Ok((sockets, Some(Pending { successor, reexec })))
}

type Finishing = tokio::task::JoinHandle<Result<Option<HandoverListener>, String>>;

impl Pending {
    /// Once ready (the `/readyz` rule): `READY=1` (with `MAINPID=` after a re-exec, before the
    /// predecessor can exit), then `serving` to the predecessor, the VIP addresses it hands back
    /// into `adoption`, and, with `--handover-socket`, this process's own listener on `path`.
    pub fn finish(
        self,
        tables: crate::published::TableReader,
        listeners: crate::dataplane::ListenerStatusHandle,
        shutdown: tokio_util::sync::CancellationToken,
        adoption: Option<crate::addresses::AddressAdoption>,
        path: Option<PathBuf>,
    ) -> Finishing {
        tokio::spawn(async move {
            if !crate::notify::wait_ready(&tables, &listeners, &shutdown).await {
                return Ok(None);
            }
            crate::notify::ready(&tables, self.reexec);
            let predecessor = self.successor.predecessor;
            let successor = self.successor;
            match tokio::task::spawn_blocking(move || successor.serving()).await {
                Ok(Ok(addresses)) => {
                    tracing::info!(
                        predecessor,
                        pid = std::process::id(),
                        addresses = addresses.len(),
                        "upgrade complete: serving; the predecessor drains and exits"
                    );
                    if let Some(adoption) = adoption {
                        adoption.adopt(addresses);
                    }
                }
                Ok(Err(HandoverError::Aborted(reason))) => {
                    return Err(format!(
                        "the predecessor (pid {predecessor}) aborted the handover: {reason}"
                    ))
                }
                Ok(Err(e)) => {
                    tracing::warn!(predecessor, error = %e, "the predecessor did not confirm the handover; serving anyway")
                }
                Err(e) => tracing::warn!(predecessor, error = %e, "handover task failed"),
            }
            match path.map(|p| HandoverListener::bind(&p)).transpose() {
                Ok(listener) => Ok(listener),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen on --handover-socket; no takeover possible until restart");
                    Ok(None)
                }
            }
        })
    }
}

/// The daemon's upgrade state: what it can hand over, the attempt in flight, its listener.
#[derive(Debug)]
pub struct UpgradeState {
    listeners: crate::dataplane::ListenerStatusHandle,
    dns: Option<(SocketAddr, (OwnedFd, OwnedFd))>,
    program: io::Result<PathBuf>,
    args: Vec<OsString>,
    timeout: Duration,
    listener: Option<HandoverListener>,
    attempt: Option<tokio::task::JoinHandle<Result<Handed, String>>>,
    /// A duplicate of the attempt's channel: shut down to end a blocked attempt at exit.
    attempt_channel: Option<Socket>,
    finishing: Option<Finishing>,
}

impl UpgradeState {
    /// With `--handover-socket` and no handover of its own to finish, listens on the path now.
    pub fn new(
        args: &crate::cli::HandoverArgs,
        listeners: crate::dataplane::ListenerStatusHandle,
        dns: Option<(SocketAddr, (OwnedFd, OwnedFd))>,
        finishing: Option<Finishing>,
    ) -> Result<UpgradeState, HandoverError> {
        let listener = match (&args.handover_socket, &finishing) {
            (Some(path), None) => Some(HandoverListener::bind(path)?),
            _ => None,
        };
        Ok(UpgradeState {
            listeners,
            dns,
            program: own_binary(),
            args: std::env::args_os().skip(1).collect(),
            timeout: args.handover_timeout,
            listener,
            attempt: None,
            attempt_channel: None,
            finishing,
        })
    }

    /// Every socket to hand over: the bound frontends, `admin`, DNS.
    pub fn offer(&self, admin: Option<(SocketAddr, OwnedFd)>) -> Offer {
        let mut sockets: Vec<(SocketEntry, OwnedFd)> = self
            .listeners
            .handover_sockets()
            .into_iter()
            .map(|(key, local, fd)| {
                let role = SocketRole::Frontend { key };
                (SocketEntry { role, local }, fd)
            })
            .collect();
        if let Some((local, fd)) = admin {
            sockets.push((
                SocketEntry {
                    role: SocketRole::Admin,
                    local,
                },
                fd,
            ));
        }
        if let Some((local, (udp, tcp))) = &self.dns {
            if let (Ok(udp), Ok(tcp)) = (udp.try_clone(), tcp.try_clone()) {
                for (role, fd) in [(SocketRole::DnsUdp, udp), (SocketRole::DnsTcp, tcp)] {
                    sockets.push((
                        SocketEntry {
                            role,
                            local: *local,
                        },
                        fd,
                    ));
                }
            }
        }
        Offer { sockets }
    }

    /// The next upgrade event (never resolves while there is nothing to wait for).
    pub async fn next_event(&mut self) -> Event {
        tokio::select! {
            r = async {
                match self.attempt.as_mut() {
                    Some(h) => h.await,
                    None => std::future::pending().await,
                }
            } => {
                self.attempt = None;
                self.attempt_channel = None;
                Event::Attempt(r.unwrap_or_else(|e| Err(format!("upgrade task failed: {e}"))))
            }
            r = async {
                match self.finishing.as_mut() {
                    Some(h) => h.await,
                    None => std::future::pending().await,
                }
            } => {
                self.finishing = None;
                match r {
                    Ok(Ok(Some(listener))) => Event::Listening(listener),
                    Ok(Ok(None)) => Event::Finished,
                    Ok(Err(reason)) => Event::SuccessorAborted(reason),
                    Err(e) => Event::SuccessorAborted(format!("handover task failed: {e}")),
                }
            }
            r = async {
                match self.listener.as_ref() {
                    Some(l) => {
                        let r = l.accept().await;
                        if r.is_err() {
                            // No busy loop on a persistent accept error (EMFILE).
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        r
                    }
                    None => std::future::pending().await,
                }
            } => Event::Accepted(r),
        }
    }

    /// Acts on `event`; `admin` (a duplicate of the admin listener and its address) is called
    /// only when a successor is to get the sockets.
    pub fn handle(
        &mut self,
        event: Event,
        admin: impl FnOnce() -> Option<(SocketAddr, OwnedFd)>,
    ) -> Next {
        match event {
            Event::Stop(why) => return Next::Stop(why.into()),
            Event::Reexec if self.attempt.is_some() || self.finishing.is_some() => {
                tracing::info!("SIGUSR2 ignored: an upgrade is already in progress");
            }
            Event::Reexec => match &self.program {
                Err(e) => {
                    tracing::warn!(error = %e, "SIGUSR2: cannot find this binary's path; still serving")
                }
                Ok(program) => match spawn_successor(program, &self.args) {
                    Err(e) => tracing::warn!(error = %e, "upgrade failed; still serving"),
                    Ok(spawned) => {
                        tracing::info!(binary = %program.display(), pid = spawned.child.id(), "SIGUSR2: started the new binary; it takes the sockets once it serves");
                        self.attempt_channel = spawned.channel.socket.try_clone().ok();
                        let (offer, timeout) = (self.offer(admin()), self.timeout);
                        self.attempt = Some(tokio::task::spawn_blocking(move || {
                            reexec(spawned, offer, timeout)
                        }));
                    }
                },
            },
            Event::Accepted(Err(e)) => {
                tracing::warn!(error = %e, "handover socket: accept failed");
            }
            Event::Accepted(Ok(channel)) if self.attempt.is_some() || self.finishing.is_some() => {
                tokio::task::spawn_blocking(move || {
                    let reason = "an upgrade is already in progress".to_string();
                    let _ = channel.send(&Message::Refused { reason }, &[]);
                });
            }
            Event::Accepted(Ok(channel)) => {
                let peer = channel.peer().map(|(pid, _)| pid).unwrap_or(0);
                tracing::info!(peer, "handover socket: a takeover begins");
                self.attempt_channel = channel.socket.try_clone().ok();
                let (offer, timeout) = (self.offer(admin()), self.timeout);
                self.attempt = Some(tokio::task::spawn_blocking(move || {
                    takeover(channel, peer, offer, timeout)
                }));
            }
            Event::Attempt(Ok(handed)) => return Next::HandedOver(handed),
            Event::Attempt(Err(reason)) => {
                tracing::warn!(%reason, "upgrade failed; still serving");
            }
            Event::Listening(listener) => self.listener = Some(listener),
            Event::Finished => {}
            Event::SuccessorAborted(reason) => {
                tracing::error!(%reason, "the predecessor goes on serving; stopping");
                return Next::Stop("stopping after an aborted takeover".into());
            }
        }
        Next::Serve
    }

    /// A normal exit: ends an attempt in flight, removes the handover path if still ours.
    pub fn stop(&mut self) {
        if let Some(socket) = self.attempt_channel.take() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
        if let Some(listener) = self.listener.take() {
            listener.remove();
        }
    }

    /// After a handover: closes the listener but leaves the path (the successor's now).
    pub fn stop_after_handover(&mut self) {
        self.listener = None;
    }
}

fn reexec(spawned: Spawned, offer: Offer, timeout: Duration) -> Result<Handed, String> {
    let Spawned { mut child, channel } = spawned;
    let pid = child.id();
    match super::offer(&channel, offer, timeout) {
        Ok(successor) => Ok(Handed { channel, successor }),
        Err(e) => {
            let _ = channel.send(
                &Message::Abort {
                    reason: e.to_string(),
                },
                &[],
            );
            drop(channel);
            // Our child: stop it if it still runs, and say how it ended.
            let status = match child.try_wait() {
                Ok(Some(status)) => status,
                _ => {
                    let _ = child.kill();
                    match child.wait() {
                        Ok(status) => status,
                        Err(w) => return Err(format!("the new process (pid {pid}): {e}; {w}")),
                    }
                }
            };
            Err(format!(
                "the new process (pid {pid}) did not take over: {e}; it ended with {status}"
            ))
        }
    }
}

fn takeover(
    channel: Channel,
    peer: i32,
    offer: Offer,
    timeout: Duration,
) -> Result<Handed, String> {
    match super::offer(&channel, offer, timeout) {
        Ok(successor) => Ok(Handed { channel, successor }),
        Err(e) => {
            if !matches!(e, HandoverError::PeerUid { .. }) {
                let _ = channel.send(
                    &Message::Abort {
                        reason: e.to_string(),
                    },
                    &[],
                );
            }
            Err(format!("a takeover by pid {peer} failed: {e}"))
        }
    }
}
