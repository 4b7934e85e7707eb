//! The load of the upgrade tests, through a real vipd: clients that open new TCP connections
//! continuously, long-lived TCP connections that stream data both ways and must see every byte
//! and a clean close, and a UDP flow exchanging numbered datagrams. Also the process plumbing:
//! this test process becomes a child subreaper, so every vipd an upgrade leaves behind (the
//! re-executed successors, orphaned when their predecessor exits) is reaped here, by its PID.
//!
//! Every loop is bounded in count and time; no wait is a fixed sleep.
#![allow(dead_code)]

use crate::support::{read_tag, PATIENCE};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

/// The most time one load phase may run.
pub const LOAD_BOUND: Duration = Duration::from_secs(120);

/// An app with a TCP and a UDP service port, both served by `host`'s two backend ports.
pub fn apps_doc(
    tcp_port: u16,
    udp_port: u16,
    tcp_backend: SocketAddr,
    udp_backend: SocketAddr,
) -> String {
    serde_json::json!({"apps": [{
        "id": "/svc",
        "portDefinitions": [
            {"port": tcp_port, "protocol": "tcp"},
            {"port": udp_port, "protocol": "udp"}
        ],
        "tasks": [{
            "id": "svc.instance-00000000-0000-0000-0000-000000000000._app.1",
            "host": tcp_backend.ip().to_string(),
            "ports": [tcp_backend.port(), udp_backend.port()],
            "state": "TASK_RUNNING"
        }]
    }]})
    .to_string()
}

// === processes ===

/// Makes this test process the reaper of orphaned descendants (the successors of a vipd it
/// started), so that their exit status can be read with [`wait_pid`].
pub fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers and only sets a flag of this
    // process.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "prctl(PR_SET_CHILD_SUBREAPER)");
}

/// Reaps `pid` (a child or an orphan reparented here) if it has exited: its exit code, or
/// `Some(-signal)`.
pub fn try_reap(pid: i32) -> Option<i32> {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on one PID writes the status to a valid local.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if rc != pid {
        return None;
    }
    if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else {
        Some(-libc::WTERMSIG(status))
    }
}

/// Waits (bounded) for `pid` to exit; its exit code.
pub fn wait_pid(pid: i32, timeout: Duration) -> Option<i32> {
    crate::support::poll_until_blocking(timeout, || try_reap(pid))
}

pub fn signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) on a PID this test started (directly or as a vipd upgrade) and has not
    // reaped.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}

/// The `key=VALUE` number on a log line.
pub fn field(line: &str, key: &str) -> Option<i32> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.trim_matches('"').parse().ok())
}

// === TCP: new connections ===

/// What the connection churn saw.
#[derive(Debug, Default)]
pub struct Churn {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub errors: Mutex<Vec<String>>,
}

/// Opens new connections to `addr` back to back until `stop` (or [`LOAD_BOUND`], or 200,000
/// connections): each reads the backend's tag, sends a line, reads its echo, half-closes and
/// expects a clean EOF. Any refusal, reset or short echo is a failure.
pub fn spawn_churn(
    addr: SocketAddr,
    stop: CancellationToken,
) -> (Arc<Churn>, tokio::task::JoinHandle<()>) {
    let churn = Arc::new(Churn::default());
    let c = churn.clone();
    let task = tokio::spawn(async move {
        let started = Instant::now();
        for i in 0..200_000u64 {
            if stop.is_cancelled() || started.elapsed() > LOAD_BOUND {
                return;
            }
            let payload = format!("hello {i}\n");
            let once = async {
                let mut s = TcpStream::connect(addr).await?;
                read_tag(&mut s).await?;
                s.write_all(payload.as_bytes()).await?;
                s.shutdown().await?;
                let mut echo = Vec::new();
                s.read_to_end(&mut echo).await?;
                if echo != payload.as_bytes() {
                    return Err(std::io::Error::other(format!("echo {echo:?}")));
                }
                std::io::Result::Ok(())
            };
            match tokio::time::timeout(PATIENCE, once).await {
                Ok(Ok(())) => {
                    c.ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    c.failed.fetch_add(1, Ordering::Relaxed);
                    c.errors.lock().unwrap().push(format!("#{i}: {e}"));
                }
                Err(_) => {
                    c.failed.fetch_add(1, Ordering::Relaxed);
                    c.errors.lock().unwrap().push(format!("#{i}: timed out"));
                }
            }
        }
    });
    (churn, task)
}

// === TCP: long-lived streams ===

/// What one long-lived connection saw.
#[derive(Debug)]
pub struct StreamOutcome {
    pub sent: u64,
    pub received: u64,
    pub error: Option<String>,
}

fn pattern(offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = ((offset + i as u64) % 251) as u8;
    }
}

/// One long-lived connection through `addr`: writes a known byte pattern in 4 KiB chunks (one
/// every 2 ms) until `stop`, then half-closes; checks every echoed byte and that the close is a
/// clean EOF after all of them. Bounded by [`LOAD_BOUND`] and 20,000 chunks.
pub fn spawn_stream(
    addr: SocketAddr,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<StreamOutcome> {
    tokio::spawn(async move {
        let mut s = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => {
                return StreamOutcome {
                    sent: 0,
                    received: 0,
                    error: Some(format!("connect: {e}")),
                }
            }
        };
        if let Err(e) = read_tag(&mut s).await {
            return StreamOutcome {
                sent: 0,
                received: 0,
                error: Some(format!("tag: {e}")),
            };
        }
        let (mut r, mut w) = s.into_split();
        let writer = async move {
            let started = Instant::now();
            let mut sent = 0u64;
            let mut chunk = vec![0u8; 4096];
            let mut tick = tokio::time::interval(Duration::from_millis(2));
            for _ in 0..20_000 {
                if stop.is_cancelled() || started.elapsed() > LOAD_BOUND {
                    break;
                }
                tick.tick().await;
                pattern(sent, &mut chunk);
                w.write_all(&chunk).await?;
                sent += chunk.len() as u64;
            }
            w.shutdown().await?;
            std::io::Result::Ok(sent)
        };
        let reader = async move {
            let mut received = 0u64;
            let mut buf = vec![0u8; 16384];
            let mut want = vec![0u8; 16384];
            loop {
                let n = r.read(&mut buf).await?;
                if n == 0 {
                    return std::io::Result::Ok(received);
                }
                pattern(received, &mut want[..n]);
                if buf[..n] != want[..n] {
                    return Err(std::io::Error::other(format!(
                        "corrupt bytes after {received}"
                    )));
                }
                received += n as u64;
            }
        };
        let (sent, received) = tokio::join!(writer, reader);
        match (sent, received) {
            (Ok(sent), Ok(received)) => StreamOutcome {
                sent,
                received,
                error: (sent != received).then(|| format!("sent {sent}, echoed {received}")),
            },
            (sent, received) => StreamOutcome {
                sent: *sent.as_ref().unwrap_or(&0),
                received: *received.as_ref().unwrap_or(&0),
                error: Some(format!(
                    "write: {:?}, read: {:?}",
                    sent.err(),
                    received.err()
                )),
            },
        }
    })
}

// === UDP ===

/// What the UDP flow saw.
#[derive(Debug, Clone, Copy)]
pub struct UdpOutcome {
    pub sent: u64,
    pub received: u64,
}

impl UdpOutcome {
    pub fn lost(&self) -> u64 {
        self.sent - self.received
    }
}

/// One UDP flow to `addr` (an echo backend behind it): numbered datagrams, one every 2 ms, until
/// `stop` (bounded by [`LOAD_BOUND`] and 100,000 datagrams); then waits up to 2 s for the last
/// replies. Counts distinct replies.
pub fn spawn_udp(addr: SocketAddr, stop: CancellationToken) -> tokio::task::JoinHandle<UdpOutcome> {
    tokio::spawn(async move {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let (rx, seen_rx) = (socket.clone(), seen.clone());
        let receiver = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            // A refused send shows up here once (ICMP on the connected socket); keep reading.
            for _ in 0..1_000_000 {
                if let Ok(8) = rx.recv(&mut buf).await {
                    let seq = u64::from_be_bytes(buf[..8].try_into().unwrap());
                    seen_rx.lock().unwrap().insert(seq);
                }
            }
        });
        socket.connect(addr).await.unwrap();
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        let mut sent = 0u64;
        while sent < 100_000 && !stop.is_cancelled() && started.elapsed() < LOAD_BOUND {
            tick.tick().await;
            if socket.send(&sent.to_be_bytes()).await.is_ok() {
                sent += 1;
            }
        }
        let all = || seen.lock().unwrap().len() as u64 >= sent;
        crate::support::eventually(Duration::from_secs(2), all).await;
        receiver.abort();
        let received = seen.lock().unwrap().len() as u64;
        UdpOutcome { sent, received }
    })
}

// === the scenario ===

/// How each upgrade is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// SIGUSR2 to the serving vipd: it re-executes its binary.
    Reexec,
    /// A second vipd started with the same `--handover-socket`.
    Takeover,
}

/// The vipd flags of the scenario (`extra` appended).
pub fn vipd_args(apps: &std::path::Path, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "--apps",
        apps.to_str().unwrap(),
        "--bind-address",
        "127.0.0.1",
        "--worker-threads",
        "2",
        "--drain-timeout",
        "30s",
        "--udp-idle-timeout",
        "1s",
        // Tests run in parallel: never the fixed default admin port.
        "--admin-listen",
        "127.0.0.1:0",
        "--dns-listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    args.extend(extra.iter().cloned());
    args
}

/// Waits (bounded, async) until `count()` reaches `n`.
pub async fn wait_count(what: &str, n: usize, timeout: Duration, count: impl Fn() -> usize) {
    let ok = crate::support::eventually(timeout, || count() >= n).await;
    assert!(ok, "{what}: {} of {n} within {timeout:?}", count());
}

/// `rounds` consecutive upgrades while the load runs; asserts 0 failed new connections, 0
/// broken long-lived connections, no UDP loss beyond the no-upgrade baseline, every replaced
/// vipd exiting 0, and every frontend socket adopted (never bound anew) by each successor.
pub async fn upgrades_under_load(how: How, rounds: usize) {
    use crate::support::daemon::VipdProcess;
    use crate::support::{free_port, roundtrip, TaggedEchoServer, LOCALHOST};
    use crate::udp_support::{free_udp_addr, Reply, UdpServer};

    if how == How::Reexec {
        become_subreaper();
    }
    let tcp_backend = TaggedEchoServer::start("b1").await;
    let udp_backend = UdpServer::start("u1", Reply::Echo).await;
    let tcp: SocketAddr = (LOCALHOST, free_port(LOCALHOST)).into();
    let udp = free_udp_addr(LOCALHOST);
    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path().join("apps.json");
    std::fs::write(
        &apps,
        apps_doc(tcp.port(), udp.port(), tcp_backend.addr, udp_backend.addr),
    )
    .unwrap();
    let socket = dir.path().join("handover.sock");
    let extra = match how {
        How::Reexec => vec![],
        How::Takeover => vec![
            "--handover-socket".to_string(),
            socket.display().to_string(),
        ],
    };
    let args = vipd_args(&apps, &extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = VipdProcess::start(&args);
    let serving =
        crate::support::poll_until(PATIENCE, || async { roundtrip(tcp, b"ping").await.ok() }).await;
    assert!(serving.is_some(), "vipd never served: {:#?}", first.log());
    let udp_probe = crate::udp_support::UdpClient::new().await;
    assert!(
        udp_probe
            .ask_until_reply(udp, b"probe", Duration::from_millis(100))
            .await
            .is_some(),
        "no UDP through vipd"
    );

    // The baseline: the same UDP load and churn, no upgrade.
    let baseline_time = Duration::from_secs(3);
    let stop = CancellationToken::new();
    let (base_churn, churn_task) = spawn_churn(tcp, stop.clone());
    let base_udp = spawn_udp(udp, stop.clone());
    tokio::time::sleep(baseline_time).await; // the load runs for this long
    stop.cancel();
    churn_task.await.unwrap();
    let base_udp = base_udp.await.unwrap();
    assert_eq!(
        base_churn.failed.load(Ordering::Relaxed),
        0,
        "{:?}",
        base_churn.errors.lock().unwrap()
    );

    // The upgrades.
    let started = Instant::now();
    let stop = CancellationToken::new();
    let (churn, churn_task) = spawn_churn(tcp, stop.clone());
    let udp_task = spawn_udp(udp, stop.clone());
    let mut streams: Vec<(CancellationToken, tokio::task::JoinHandle<StreamOutcome>)> = Vec::new();
    let mut processes = vec![first];
    let mut current_pid = processes[0].pid() as i32;
    let mut replaced: Vec<i32> = Vec::new();
    for round in 0..rounds {
        // Each vipd serves some of the churn before it is replaced.
        let before = churn.ok.load(Ordering::Relaxed);
        wait_count("churn progress", 3, PATIENCE, || {
            (churn.ok.load(Ordering::Relaxed) - before) as usize
        })
        .await;
        let token = CancellationToken::new();
        streams.push((token.clone(), spawn_stream(tcp, token)));
        // Each stream lives through two upgrades.
        if round >= 2 {
            streams[round - 2].0.cancel();
        }
        match how {
            How::Reexec => {
                signal(current_pid, libc::SIGUSR2);
                let log = &processes[0];
                wait_count(
                    "re-exec upgrades complete",
                    round + 1,
                    Duration::from_secs(30),
                    || log.count_log("upgrade complete: serving"),
                )
                .await;
                let line = log
                    .log()
                    .into_iter()
                    .filter(|l| l.contains("upgrade complete: serving"))
                    .nth(round)
                    .unwrap();
                replaced.push(current_pid);
                current_pid = field(&line, "pid").expect("pid= on the completion line");
            }
            How::Takeover => {
                let next = VipdProcess::start(&args);
                wait_count("takeover complete", 1, Duration::from_secs(30), || {
                    next.count_log("upgrade complete: serving")
                })
                .await;
                replaced.push(current_pid);
                current_pid = next.pid() as i32;
                processes.push(next);
            }
        }
    }
    let upgrade_time = started.elapsed();
    stop.cancel();
    for (token, _) in &streams {
        token.cancel();
    }
    churn_task.await.unwrap();
    let udp_outcome = udp_task.await.unwrap();
    let mut broken = Vec::new();
    let mut streamed = 0;
    for (i, (_, task)) in streams.into_iter().enumerate() {
        let outcome = task.await.unwrap();
        streamed += outcome.received;
        if outcome.error.is_some() || outcome.sent == 0 {
            broken.push((i, outcome));
        }
    }

    // Every replaced vipd exits 0 once drained; then the last one stops on SIGTERM.
    fn logs(processes: &[crate::support::daemon::VipdProcess]) -> Vec<String> {
        processes.iter().flat_map(|p| p.log()).collect()
    }
    for (i, pid) in replaced.iter().enumerate() {
        let code = match how {
            How::Takeover => processes[i]
                .wait_exit(Duration::from_secs(40))
                .and_then(|s| s.code()),
            How::Reexec if i == 0 => processes[0]
                .wait_exit(Duration::from_secs(40))
                .and_then(|s| s.code()),
            How::Reexec => wait_pid(*pid, Duration::from_secs(40)),
        };
        assert_eq!(
            code,
            Some(0),
            "replaced vipd {pid} (round {i}) exit: {:#?}",
            logs(&processes)
        );
    }
    signal(current_pid, libc::SIGTERM);
    let last = match how {
        How::Takeover => processes
            .last_mut()
            .unwrap()
            .wait_exit(PATIENCE)
            .and_then(|s| s.code()),
        How::Reexec => wait_pid(current_pid, PATIENCE),
    };
    assert_eq!(last, Some(0), "the last vipd on SIGTERM");

    let ok = churn.ok.load(Ordering::Relaxed);
    let failed = churn.failed.load(Ordering::Relaxed);
    eprintln!(
        "{how:?}: {rounds} upgrades in {upgrade_time:?}; new connections ok {ok}, failed {failed}; \
         {} long-lived connections ({streamed} bytes echoed), broken {}; UDP sent {} lost {} \
         (baseline: {} in {baseline_time:?}, lost {})",
        rounds,
        broken.len(),
        udp_outcome.sent,
        udp_outcome.lost(),
        base_udp.sent,
        base_udp.lost()
    );
    assert_eq!(
        failed,
        0,
        "failed new connections: {:?}",
        churn.errors.lock().unwrap()
    );
    assert!(ok > rounds as u64, "the churn ran ({ok} connections)");
    assert!(
        broken.is_empty(),
        "broken long-lived connections: {broken:?}"
    );
    // The baseline's loss rate, applied to this run's datagrams, rounded up.
    let allowed = (base_udp.lost() * udp_outcome.sent).div_ceil(base_udp.sent.max(1));
    assert!(
        udp_outcome.lost() <= allowed,
        "UDP lost {} of {} (baseline allows {allowed})",
        udp_outcome.lost(),
        udp_outcome.sent
    );
    let all = logs(&processes);
    let adopted = all
        .iter()
        .filter(|l| l.contains("listening (socket handed over)"))
        .count();
    assert_eq!(
        adopted,
        2 * rounds,
        "each successor adopts both frontend sockets"
    );
    // The admin and DNS sockets moved too: every process served on the first one's addresses.
    for (needle, key) in [
        ("admin server listening", "local="),
        ("DNS server listening", "listen="),
    ] {
        let addrs: HashSet<&str> = all
            .iter()
            .filter(|l| l.contains(needle))
            .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix(key)))
            .collect();
        let n = all.iter().filter(|l| l.contains(needle)).count();
        assert_eq!(n, rounds + 1, "{needle}: one line per process");
        assert_eq!(addrs.len(), 1, "{needle}: one address for all: {addrs:?}");
    }
    let rebinds: Vec<_> = all.iter().filter(|l| l.contains("bind failed")).collect();
    assert!(
        rebinds.is_empty(),
        "no frontend is bound anew: {rebinds:#?}"
    );
}
