//! Handing the listening sockets of a running vipd to its successor, so an upgrade neither
//! refuses nor loses a connection: the sockets themselves move (SCM_RIGHTS), nothing is bound
//! anew, and a connection waiting in an accept backlog is accepted by whichever process is
//! accepting.
//!
//! Owns: the wire protocol ([`Message`], one JSON message per `SOCK_SEQPACKET` packet, the
//! descriptors of a `sockets` batch attached to it), both ends of the conversation (the
//! predecessor's [`offer`], the successor's [`take`] and [`Successor::serving`]), the peer-uid check
//! (`SO_PEERCRED`, on both ends: only the same effective uid may take or give sockets), the
//! SIGUSR2 re-exec ([`spawn_successor`]: the binary at its own path, same arguments, one end of
//! a socket pair inherited as [`HANDOVER_FD_ENV`]) and the `--handover-socket` listener
//! ([`HandoverListener`]) and client ([`connect`]). The daemon drives it through [`shell`].
//!
//! The conversation (successor → S, predecessor → P):
//! 1. S: `hello {version, pid}`. P checks the version and S's uid (S checks P's uid too).
//! 2. P: `sockets {entries, last}` batches, each with at most [`MAX_FDS_PER_MESSAGE`]
//!    descriptors in entry order: every bound frontend, the admin listener, the DNS sockets.
//!    Or `refused {reason}`.
//! 3. S adopts them, reads its source, publishes, and once ready sends `serving {pid}`.
//! 4. P stops accepting and answers `draining {addresses}`: the VIP addresses it added, which S
//!    now owns. P drains and exits 0. If P gives up waiting first, it sends `abort {reason}`.
//!
//! Any failure before `serving` leaves the predecessor serving as before.
//!
//! Must not: decide when to drain or what to serve (the daemon does), bind a frontend, or read
//! the table. Blocking calls here are bounded by timeouts; callers run them off the runtime.

mod shell;

pub use shell::{take_predecessor, Event, Handed, Next, Pending, UpgradeState};

use crate::table::{FrontendKey, Protocol};
use nix::sys::socket::{
    getsockopt, recvmsg, sendmsg, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
};
use serde::{Deserialize, Serialize};
use socket2::{Domain, SockAddr, Socket, Type};
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The protocol version both ends must speak.
pub const PROTOCOL_VERSION: u32 = 1;
/// Descriptors per message (the kernel's `SCM_MAX_FD` is 253).
pub const MAX_FDS_PER_MESSAGE: usize = 200;
/// Largest message accepted (a batch of entries is a few dozen kilobytes).
const MAX_MESSAGE: usize = 256 * 1024;
/// Set by [`spawn_successor`] in the new process's environment: the number of its end of the
/// handover socket pair.
pub const HANDOVER_FD_ENV: &str = "VIPD_HANDOVER_FD";
/// How long either end waits for the other's next step, except for `serving`, which waits for
/// the successor's whole start (`--handover-timeout`).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a handed-over socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum SocketRole {
    Frontend { key: FrontendKey },
    Admin,
    DnsUdp,
    DnsTcp,
}

/// One socket of a `sockets` batch; its descriptor travels at the same index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketEntry {
    pub role: SocketRole,
    /// The address it is bound to.
    pub local: SocketAddr,
}

/// One packet of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    Hello {
        version: u32,
        pid: u32,
    },
    Sockets {
        entries: Vec<SocketEntry>,
        last: bool,
    },
    Refused {
        reason: String,
    },
    Serving {
        pid: u32,
    },
    Draining {
        addresses: Vec<IpAddr>,
    },
    Abort {
        reason: String,
    },
}

impl Message {
    fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Sockets { .. } => "sockets",
            Message::Refused { .. } => "refused",
            Message::Serving { .. } => "serving",
            Message::Draining { .. } => "draining",
            Message::Abort { .. } => "abort",
        }
    }
}

/// Why a handover did not happen. The predecessor keeps serving after each of them.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("handover socket {path}: {source}")]
    Path {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("handover I/O: {0}")]
    Io(#[from] io::Error),
    #[error("the peer closed the handover before sending {expected}")]
    Closed { expected: &'static str },
    #[error("no {expected} from the peer within {timeout:?}")]
    Timeout {
        expected: &'static str,
        timeout: Duration,
    },
    #[error("handover protocol: {0}")]
    Protocol(String),
    #[error("the peer runs as uid {peer}, this process as uid {own}: refused")]
    PeerUid { peer: u32, own: u32 },
    #[error("the running vipd refused the handover: {0}")]
    Refused(String),
    #[error("the running vipd aborted the handover: {0}")]
    Aborted(String),
    #[error("{HANDOVER_FD_ENV}={value:?} does not name an inherited handover socket: {reason}")]
    BadInheritedFd { value: String, reason: String },
    #[error("cannot start the new binary {}: {source}", path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl From<nix::Error> for HandoverError {
    fn from(e: nix::Error) -> Self {
        HandoverError::Io(io::Error::from(e))
    }
}

// === the wire format (pure) ===

pub fn encode(message: &Message) -> Vec<u8> {
    serde_json::to_vec(message).expect("a handover message always serializes")
}

pub fn decode(bytes: &[u8]) -> Result<Message, HandoverError> {
    serde_json::from_slice(bytes).map_err(|e| HandoverError::Protocol(format!("bad message: {e}")))
}

/// Splits `n` entries into the `(start, end, last)` ranges of the `sockets` messages (always at
/// least one message, so an empty offer still ends with `last`).
pub fn batches(n: usize) -> Vec<(usize, usize, bool)> {
    if n == 0 {
        return vec![(0, 0, true)];
    }
    (0..n)
        .step_by(MAX_FDS_PER_MESSAGE)
        .map(|start| {
            let end = (start + MAX_FDS_PER_MESSAGE).min(n);
            (start, end, end == n)
        })
        .collect()
}

/// Checks that a received socket is what its entry says: the right type, bound to `local`, and
/// listening for TCP.
pub fn check_socket(entry: &SocketEntry, fd: &OwnedFd) -> Result<(), String> {
    let sock = socket2::SockRef::from(fd);
    let want = match entry.role {
        SocketRole::Frontend { key } => match key.protocol {
            Protocol::Tcp => Type::STREAM,
            Protocol::Udp => Type::DGRAM,
        },
        SocketRole::Admin | SocketRole::DnsTcp => Type::STREAM,
        SocketRole::DnsUdp => Type::DGRAM,
    };
    let ty = sock.r#type().map_err(|e| e.to_string())?;
    if ty != want {
        return Err(format!("socket type {ty:?}, expected {want:?}"));
    }
    let local = sock
        .local_addr()
        .map_err(|e| e.to_string())?
        .as_socket()
        .ok_or("not an IP socket")?;
    if local != entry.local {
        return Err(format!("bound to {local}, expected {}", entry.local));
    }
    if want == Type::STREAM && !sock.is_listener().map_err(|e| e.to_string())? {
        return Err("not listening".into());
    }
    Ok(())
}

// === the channel (one connected SOCK_SEQPACKET socket) ===

/// One end of a handover conversation.
#[derive(Debug)]
pub struct Channel {
    socket: Socket,
}

fn own_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

impl Channel {
    fn new(socket: Socket) -> io::Result<Channel> {
        socket.set_nonblocking(false)?;
        socket.set_write_timeout(Some(STEP_TIMEOUT))?;
        Ok(Channel { socket })
    }

    /// The peer's (pid, uid), from `SO_PEERCRED`.
    pub fn peer(&self) -> Result<(i32, u32), HandoverError> {
        let cred = getsockopt(&self.socket, sockopt::PeerCredentials)?;
        Ok((cred.pid(), cred.uid()))
    }

    /// Fails unless the peer runs with this process's effective uid.
    pub fn check_peer_uid(&self) -> Result<i32, HandoverError> {
        let (pid, peer) = self.peer()?;
        let own = own_uid();
        if peer != own {
            return Err(HandoverError::PeerUid { peer, own });
        }
        Ok(pid)
    }

    pub fn send(&self, message: &Message, fds: &[BorrowedFd<'_>]) -> Result<(), HandoverError> {
        let bytes = encode(message);
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let rights = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
        let sent = sendmsg::<()>(
            self.socket.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        if sent != bytes.len() {
            return Err(HandoverError::Protocol(format!(
                "short send: {sent} of {} bytes",
                bytes.len()
            )));
        }
        Ok(())
    }

    /// Receives the next message and the descriptors that came with it, waiting up to `timeout`.
    pub fn recv(
        &self,
        timeout: Duration,
        expected: &'static str,
    ) -> Result<(Message, Vec<OwnedFd>), HandoverError> {
        self.socket.set_read_timeout(Some(timeout))?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut space = nix::cmsg_space!([RawFd; MAX_FDS_PER_MESSAGE]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let (len, flags, fds) = loop {
            match recvmsg::<()>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let mut fds = Vec::new();
                    // The control data is complete unless MSG_CTRUNC, checked below; an error
                    // here is that case.
                    if let Ok(cmsgs) = msg.cmsgs() {
                        for cmsg in cmsgs {
                            if let ControlMessageOwned::ScmRights(received) = cmsg {
                                for fd in received {
                                    // SAFETY: the kernel has just installed `fd` in this
                                    // process's table for this message (SCM_RIGHTS); nothing
                                    // else knows the number, so this is its only owner.
                                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                                }
                            }
                        }
                    }
                    break (msg.bytes, msg.flags, fds);
                }
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::EAGAIN) => {
                    return Err(HandoverError::Timeout { expected, timeout })
                }
                Err(e) => return Err(e.into()),
            }
        };
        if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
            return Err(HandoverError::Protocol(format!(
                "a message larger than {MAX_MESSAGE} bytes or {MAX_FDS_PER_MESSAGE} descriptors"
            )));
        }
        if len == 0 {
            return Err(HandoverError::Closed { expected });
        }
        Ok((decode(&buf[..len])?, fds))
    }
}

// === the predecessor's end ===

/// The sockets a predecessor hands over (its own duplicates; closed once sent).
#[derive(Debug, Default)]
pub struct Offer {
    pub sockets: Vec<(SocketEntry, OwnedFd)>,
}

/// The predecessor's conversation up to `serving`: checks the peer, sends every socket, waits
/// up to `serving_timeout` for the successor to serve. Returns the successor's pid. On any error
/// the caller keeps serving (and should send [`Message::Abort`] if the channel still works).
pub fn offer(
    channel: &Channel,
    offer: Offer,
    serving_timeout: Duration,
) -> Result<u32, HandoverError> {
    if let Err(e) = channel.check_peer_uid() {
        let _ = channel.send(
            &Message::Refused {
                reason: e.to_string(),
            },
            &[],
        );
        return Err(e);
    }
    let pid = match channel.recv(STEP_TIMEOUT, "hello")?.0 {
        Message::Hello { version, pid } if version == PROTOCOL_VERSION => pid,
        Message::Hello { version, .. } => {
            let reason = format!("protocol version {version}; this vipd speaks {PROTOCOL_VERSION}");
            let _ = channel.send(
                &Message::Refused {
                    reason: reason.clone(),
                },
                &[],
            );
            return Err(HandoverError::Protocol(reason));
        }
        other => return Err(unexpected("hello", &other)),
    };
    for (start, end, last) in batches(offer.sockets.len()) {
        let part = &offer.sockets[start..end];
        let entries = part.iter().map(|(e, _)| *e).collect();
        let fds: Vec<BorrowedFd<'_>> = part.iter().map(|(_, fd)| fd.as_fd()).collect();
        channel.send(&Message::Sockets { entries, last }, &fds)?;
    }
    drop(offer);
    match channel.recv(serving_timeout, "serving")?.0 {
        Message::Serving { pid: serving } if serving == pid => Ok(pid),
        other => Err(unexpected("serving", &other)),
    }
}

fn unexpected(expected: &str, got: &Message) -> HandoverError {
    match got {
        Message::Refused { reason } => HandoverError::Refused(reason.clone()),
        Message::Abort { reason } => HandoverError::Aborted(reason.clone()),
        other => HandoverError::Protocol(format!(
            "expected {expected}, got {} ({other:?})",
            other.name()
        )),
    }
}

// === the successor's end ===

/// Sockets received from a predecessor, by role, each checked against its entry.
#[derive(Debug, Default)]
pub struct Inherited {
    pub frontends: HashMap<FrontendKey, OwnedFd>,
    pub admin: Option<(SocketAddr, OwnedFd)>,
    pub dns_udp: Option<(SocketAddr, OwnedFd)>,
    pub dns_tcp: Option<(SocketAddr, OwnedFd)>,
}

impl Inherited {
    /// Files `fds` under `entries` (same order); a socket that is not what its entry says is
    /// logged and closed.
    pub fn add(
        &mut self,
        entries: Vec<SocketEntry>,
        fds: Vec<OwnedFd>,
    ) -> Result<(), HandoverError> {
        if entries.len() != fds.len() {
            return Err(HandoverError::Protocol(format!(
                "{} entries but {} descriptors",
                entries.len(),
                fds.len()
            )));
        }
        for (entry, fd) in entries.into_iter().zip(fds) {
            if let Err(reason) = check_socket(&entry, &fd) {
                tracing::warn!(socket = ?entry.role, %reason, "handed-over socket unusable; closed");
                continue;
            }
            match entry.role {
                SocketRole::Frontend { key } => {
                    self.frontends.insert(key, fd);
                }
                SocketRole::Admin => self.admin = Some((entry.local, fd)),
                SocketRole::DnsUdp => self.dns_udp = Some((entry.local, fd)),
                SocketRole::DnsTcp => self.dns_tcp = Some((entry.local, fd)),
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.frontends.len()
            + usize::from(self.admin.is_some())
            + usize::from(self.dns_udp.is_some())
            + usize::from(self.dns_tcp.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The admin listener, if the predecessor's is usable for `listen` (the same address, or the
    /// same IP when `listen` asks for any port).
    pub fn take_admin(&mut self, listen: SocketAddr) -> Option<std::net::TcpListener> {
        take_matching(&mut self.admin, listen).map(std::net::TcpListener::from)
    }

    /// The DNS sockets (UDP, TCP), if both match `listen`.
    pub fn take_dns(
        &mut self,
        listen: SocketAddr,
    ) -> Option<(std::net::UdpSocket, std::net::TcpListener)> {
        let both = self.dns_udp.as_ref().map(|(a, _)| *a) == self.dns_tcp.as_ref().map(|(a, _)| *a);
        if !both {
            return None;
        }
        let udp = take_matching(&mut self.dns_udp, listen)?;
        let tcp = take_matching(&mut self.dns_tcp, listen)?;
        Some((udp.into(), tcp.into()))
    }
}

fn take_matching(slot: &mut Option<(SocketAddr, OwnedFd)>, listen: SocketAddr) -> Option<OwnedFd> {
    let (local, _) = slot.as_ref()?;
    let fits = *local == listen || (listen.port() == 0 && local.ip() == listen.ip());
    fits.then(|| slot.take().map(|(_, fd)| fd)).flatten()
}

/// A successor that has its sockets and still owes the predecessor its `serving`.
#[derive(Debug)]
pub struct Taken {
    pub sockets: Inherited,
    pub predecessor: u32,
    channel: Channel,
}

/// The successor's conversation up to the sockets: checks the peer, says hello, receives every
/// batch.
pub fn take(channel: Channel) -> Result<Taken, HandoverError> {
    let predecessor = channel.check_peer_uid()?;
    channel.send(
        &Message::Hello {
            version: PROTOCOL_VERSION,
            pid: std::process::id(),
        },
        &[],
    )?;
    let mut sockets = Inherited::default();
    loop {
        match channel.recv(STEP_TIMEOUT, "sockets")? {
            (Message::Sockets { entries, last }, fds) => {
                sockets.add(entries, fds)?;
                if last {
                    break;
                }
            }
            (other, _) => return Err(unexpected("sockets", &other)),
        }
    }
    Ok(Taken {
        sockets,
        predecessor: u32::try_from(predecessor).unwrap_or(0),
        channel,
    })
}

/// The rest of a successor's conversation, after its sockets were taken out of [`Taken`].
#[derive(Debug)]
pub struct Successor {
    pub predecessor: u32,
    channel: Channel,
}

impl Taken {
    pub fn into_parts(self) -> (Inherited, Successor) {
        (
            self.sockets,
            Successor {
                predecessor: self.predecessor,
                channel: self.channel,
            },
        )
    }
}

impl Successor {
    /// Tells the predecessor this process serves; returns the VIP addresses it hands over.
    pub fn serving(self) -> Result<Vec<IpAddr>, HandoverError> {
        let sent = self.channel.send(
            &Message::Serving {
                pid: std::process::id(),
            },
            &[],
        );
        // Even when the send failed, an `abort` may be waiting.
        match self.channel.recv(STEP_TIMEOUT, "draining") {
            Ok((Message::Draining { addresses }, _)) if sent.is_ok() => Ok(addresses),
            Ok((other, _)) => Err(unexpected("draining", &other)),
            Err(e) => Err(sent.err().unwrap_or(e)),
        }
    }
}

/// The channel to the predecessor of a re-exec'd vipd, if this process is one
/// ([`HANDOVER_FD_ENV`] is set). Call once: the descriptor is taken over.
pub fn inherited_channel() -> Result<Option<Channel>, HandoverError> {
    static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let Some(value) = std::env::var_os(HANDOVER_FD_ENV) else {
        return Ok(None);
    };
    if TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Ok(None);
    }
    let value = value.to_string_lossy().into_owned();
    let bad = |reason: &str| HandoverError::BadInheritedFd {
        value: value.clone(),
        reason: reason.into(),
    };
    let fd: RawFd = value.parse().map_err(|_| bad("not a number"))?;
    if fd <= 2 {
        return Err(bad("a standard stream"));
    }
    // SAFETY: the variable is set only by `spawn_successor` in the environment of the process it
    // starts, naming the end of a socket pair it left open across exec for it; the guard above
    // takes it once, so this is the descriptor's only owner in this process.
    let socket = unsafe { Socket::from_raw_fd(fd) };
    match socket.r#type() {
        Ok(ty) if ty == Type::SEQPACKET => {}
        Ok(_) => {
            std::mem::forget(socket); // not ours to close: some other descriptor
            return Err(bad("not a SOCK_SEQPACKET socket"));
        }
        Err(e) => {
            std::mem::forget(socket);
            return Err(bad(&e.to_string()));
        }
    }
    Ok(Some(Channel::new(socket)?))
}

/// Connects to a running vipd's `--handover-socket`. `None` if nothing listens there (no file,
/// or a stale one).
pub fn connect(path: &Path) -> Result<Option<Channel>, HandoverError> {
    let err = |source| HandoverError::Path {
        path: path.to_path_buf(),
        source,
    };
    let addr = SockAddr::unix(path).map_err(err)?;
    let socket = Socket::new(Domain::UNIX, Type::SEQPACKET, None).map_err(err)?;
    match socket.connect(&addr) {
        Ok(()) => Ok(Some(Channel::new(socket).map_err(err)?)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ECONNREFUSED)) => Ok(None),
        Err(e) => Err(err(e)),
    }
}

// === re-exec (SIGUSR2) ===

/// The binary an upgrade re-executes: `argv[0]` as started if it names a path (so replacing
/// that file, or the symlink, upgrades), else the resolved executable at start.
pub fn own_binary() -> io::Result<PathBuf> {
    match std::env::args_os().next() {
        Some(arg0) if Path::new(&arg0).components().count() > 1 => Ok(PathBuf::from(arg0)),
        _ => std::env::current_exe(),
    }
}

/// A started successor and the predecessor's end of its channel.
#[derive(Debug)]
pub struct Spawned {
    pub child: std::process::Child,
    pub channel: Channel,
}

/// Starts `program` with `args` (stdio inherited), giving it one end of a fresh socket pair as
/// [`HANDOVER_FD_ENV`].
pub fn spawn_successor(program: &Path, args: &[OsString]) -> Result<Spawned, HandoverError> {
    let (ours, theirs) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None)?;
    // Both ends are close-on-exec; the child's end must survive exec: dup(2) returns a
    // duplicate without the flag, closed again here once the child has it. (vipd starts no
    // other process meanwhile, so no other child inherits it.)
    let inheritable = nix::unistd::dup(&theirs)?;
    let child = std::process::Command::new(program)
        .args(args)
        .env(HANDOVER_FD_ENV, inheritable.as_raw_fd().to_string())
        .spawn()
        .map_err(|source| HandoverError::Spawn {
            path: program.to_path_buf(),
            source,
        })?;
    drop(inheritable);
    drop(theirs);
    Ok(Spawned {
        child,
        channel: Channel::new(ours)?,
    })
}

// === --handover-socket ===

/// The listening `--handover-socket` of a running vipd.
#[derive(Debug)]
pub struct HandoverListener {
    socket: tokio::io::unix::AsyncFd<Socket>,
    path: PathBuf,
    /// (dev, inode) of the path when this process bound it: removed on exit only if unchanged.
    identity: (u64, u64),
}

fn identity(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path)?;
    Ok((m.dev(), m.ino()))
}

impl HandoverListener {
    /// Listens on `path`, replacing whatever file is there in one `rename(2)` (bound on a
    /// temporary name first, so the path never points at nothing). Inside a tokio runtime.
    pub fn bind(path: &Path) -> Result<HandoverListener, HandoverError> {
        let err = |source| HandoverError::Path {
            path: path.to_path_buf(),
            source,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let socket = Socket::new(Domain::UNIX, Type::SEQPACKET, None).map_err(err)?;
        socket
            .bind(&SockAddr::unix(&tmp).map_err(err)?)
            .map_err(err)?;
        let listening = socket
            .listen(16)
            .and_then(|()| socket.set_nonblocking(true))
            .and_then(|()| std::fs::rename(&tmp, path))
            .and_then(|()| identity(path));
        let identity = match listening {
            Ok(id) => id,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(err(e));
            }
        };
        // SAFETY: `socket` is an open socket that the AsyncFd owns from here on: it stays open
        // and keeps its descriptor number until the AsyncFd is dropped.
        let socket = unsafe { tokio::io::unix::AsyncFd::register(socket) }
            .map_err(|e| err(io::Error::other(e.to_string())))?;
        tracing::info!(path = %path.display(), "handover socket listening");
        Ok(HandoverListener {
            socket,
            path: path.to_path_buf(),
            identity,
        })
    }

    /// The next connection (blocking mode, for [`offer`]).
    pub async fn accept(&self) -> io::Result<Channel> {
        loop {
            let mut guard = self.socket.readable().await?;
            match guard.try_io(|s| s.get_ref().accept()) {
                Ok(Ok((socket, _))) => return Channel::new(socket),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Closes the listener and removes the path if it is still this listener's (a normal exit;
    /// after a handover the successor owns the path).
    pub fn remove(self) {
        if identity(&self.path).ok() == Some(self.identity) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(listen: &str) -> SocketEntry {
        SocketEntry {
            role: SocketRole::Frontend {
                key: FrontendKey {
                    protocol: Protocol::Tcp,
                    listen: listen.parse().unwrap(),
                },
            },
            local: listen.parse().unwrap(),
        }
    }

    #[test]
    fn messages_round_trip() {
        for m in [
            Message::Hello {
                version: PROTOCOL_VERSION,
                pid: 7,
            },
            Message::Sockets {
                entries: vec![entry("127.0.0.1:80")],
                last: true,
            },
            Message::Draining {
                addresses: vec!["11.0.0.1".parse().unwrap()],
            },
            Message::Abort {
                reason: "timeout".into(),
            },
        ] {
            assert_eq!(decode(&encode(&m)).unwrap(), m);
        }
        assert!(matches!(
            decode(b"{\"type\":\"launch\"}"),
            Err(HandoverError::Protocol(_))
        ));
    }

    #[test]
    fn batches_cover_every_entry_and_end_with_last() {
        assert_eq!(batches(0), vec![(0, 0, true)]);
        assert_eq!(batches(3), vec![(0, 3, true)]);
        let b = batches(2 * MAX_FDS_PER_MESSAGE + 1);
        assert_eq!(b.len(), 3);
        assert_eq!(
            b[2],
            (2 * MAX_FDS_PER_MESSAGE, 2 * MAX_FDS_PER_MESSAGE + 1, true)
        );
        assert!(!b[0].2 && !b[1].2);
    }

    #[test]
    fn a_socket_is_checked_against_its_entry() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = l.local_addr().unwrap();
        let fd = OwnedFd::from(l);
        assert_eq!(check_socket(&entry(&local.to_string()), &fd), Ok(()));
        let other = entry("127.0.0.1:1");
        assert!(check_socket(&other, &fd).unwrap_err().contains("bound to"));
        let udp = OwnedFd::from(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
        assert!(check_socket(&entry(&local.to_string()), &udp)
            .unwrap_err()
            .contains("socket type"));
    }

    /// The whole conversation over a socket pair: the successor gets a working listener, the
    /// predecessor the successor's pid, and the addresses travel back.
    #[test]
    fn a_listener_is_handed_over_and_accepts_in_the_successor() {
        let (a, b) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        let (old, new) = (Channel::new(a).unwrap(), Channel::new(b).unwrap());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        // A connection queued in the backlog before the handover.
        let client = std::net::TcpStream::connect(local).unwrap();
        let sockets = vec![(entry(&local.to_string()), OwnedFd::from(listener))];
        let predecessor = std::thread::spawn(move || {
            let pid = offer(&old, Offer { sockets }, STEP_TIMEOUT).unwrap();
            old.send(
                &Message::Draining {
                    addresses: vec!["11.0.0.9".parse().unwrap()],
                },
                &[],
            )
            .unwrap();
            pid
        });
        let (mut inherited, successor) = take(new).unwrap().into_parts();
        let key = FrontendKey {
            protocol: Protocol::Tcp,
            listen: local,
        };
        let fd = inherited.frontends.remove(&key).expect("the listener came");
        let adopted = std::net::TcpListener::from(fd);
        let (accepted, peer) = adopted.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap(), "the queued connection");
        drop(accepted);
        let addresses = successor.serving().unwrap();
        assert_eq!(addresses, vec!["11.0.0.9".parse::<IpAddr>().unwrap()]);
        assert_eq!(predecessor.join().unwrap(), std::process::id());
    }

    #[test]
    fn the_admin_listener_is_adopted_for_its_address_or_any_port_on_its_ip() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = l.local_addr().unwrap();
        let mut inherited = Inherited {
            admin: Some((local, OwnedFd::from(l))),
            ..Inherited::default()
        };
        assert!(inherited
            .take_admin("127.0.0.2:0".parse().unwrap())
            .is_none());
        assert!(inherited
            .take_admin("127.0.0.1:1".parse().unwrap())
            .is_none());
        let taken = inherited
            .take_admin("127.0.0.1:0".parse().unwrap())
            .unwrap();
        assert_eq!(taken.local_addr().unwrap(), local);
        assert!(inherited.is_empty());
    }

    /// More sockets than one message may carry: they travel in batches and all arrive, each
    /// filed under its own frontend.
    #[test]
    fn more_sockets_than_one_message_carries_arrive_in_batches() {
        let (a, b) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        let (old, new) = (Channel::new(a).unwrap(), Channel::new(b).unwrap());
        let n = MAX_FDS_PER_MESSAGE + 50;
        let sockets: Vec<(SocketEntry, OwnedFd)> = (0..n)
            .map(|_| {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let local = s.local_addr().unwrap();
                let key = FrontendKey {
                    protocol: Protocol::Udp,
                    listen: local,
                };
                let role = SocketRole::Frontend { key };
                (SocketEntry { role, local }, OwnedFd::from(s))
            })
            .collect();
        let keys: Vec<FrontendKey> = sockets
            .iter()
            .map(|(e, _)| match e.role {
                SocketRole::Frontend { key } => key,
                _ => unreachable!(),
            })
            .collect();
        let predecessor =
            std::thread::spawn(move || offer(&old, Offer { sockets }, STEP_TIMEOUT).map(|_| old));
        let (inherited, successor) = take(new).unwrap().into_parts();
        assert_eq!(inherited.frontends.len(), n);
        for key in &keys {
            let fd = &inherited.frontends[key];
            let local = socket2::SockRef::from(fd).local_addr().unwrap();
            assert_eq!(local.as_socket(), Some(key.listen));
        }
        drop(successor); // closes before `serving`: the predecessor sees an error, not a hang
        assert!(matches!(
            predecessor.join().unwrap(),
            Err(HandoverError::Closed {
                expected: "serving"
            })
        ));
    }

    #[test]
    fn a_peer_that_closes_early_is_an_error_not_a_hang() {
        let (a, b) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        let old = Channel::new(a).unwrap();
        drop(b);
        let err = offer(&old, Offer::default(), STEP_TIMEOUT).unwrap_err();
        assert!(
            matches!(err, HandoverError::Closed { expected: "hello" }),
            "{err}"
        );
    }
}
