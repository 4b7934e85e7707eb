//! The splice relay falls back to copying when no pipe can be made (EMFILE), silently.
//!
//! The test re-executes its own test binary as a child process that runs only `fallback_child`
//! (an ignored test that does nothing unless `VIPD_SPLICE_FALLBACK_CHILD_BACKEND` is set), like
//! `tcp_emfile.rs`. The child starts a data plane with `--tcp-relay splice`, lowers its own
//! RLIMIT_NOFILE so that exactly one proxied connection fits (the accepted socket and the backend
//! socket) and no pipe can be created, and answers `STATS`/`RAISE`/`EXIT` on stdin. The parent
//! pushes 1 MiB each way through a connection and checks that it arrives intact, that both
//! directions tried a pipe once, failed, and copied (nothing spliced), and that the bytes were
//! counted. After `RAISE` (the child restores its limit) the next connection splices again. The
//! lower limit only ever applies to the child process, which the parent kills by PID if it
//! lingers.
#![cfg(all(feature = "splice", target_os = "linux"))]

mod support;

use std::collections::HashMap;
use support::child::{
    self, expect_line, leave_only_spare_fds, nofile, set_nofile, ChildTest, Lines,
};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vipd::dataplane::relay::thread_pipe_stats;
use vipd::dataplane::{DataplaneConfig, RelayMode};

const CHILD_ENV: &str = "VIPD_SPLICE_FALLBACK_CHILD_BACKEND";
/// Free descriptor slots the child keeps below its lowered limit: one proxied connection.
const SPARE_FDS: usize = 2;
const LEN: usize = 1 << 20;

/// Asks the child for its counters: `key=value` pairs.
async fn stats(stdin: &mut tokio::process::ChildStdin, lines: &mut Lines) -> HashMap<String, u64> {
    stdin.write_all(b"STATS\n").await.unwrap();
    expect_line(lines, "STATS")
        .await
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// Asks for counters until the child's backend connection is released (bounded).
async fn stats_when_released(
    stdin: &mut tokio::process::ChildStdin,
    lines: &mut Lines,
) -> HashMap<String, u64> {
    for _ in 0..2000 {
        let s = stats(stdin, lines).await;
        if s["active"] == 0 {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("the child's connection was never released");
}

/// 1 MiB through `listen` to the echo backend while reading the echo; checks it all came back.
async fn echo_a_mebibyte(listen: std::net::SocketAddr) {
    let payload: Vec<u8> = (0..LEN as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut c = TcpStream::connect(listen).await.unwrap();
    assert_eq!(within("tag", read_tag(&mut c)).await.unwrap(), "a");
    let (mut r, mut w) = c.into_split();
    let expected = payload.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&payload).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut echo = Vec::new();
    within("echo", r.read_to_end(&mut echo)).await.unwrap();
    within("writer", writer).await.unwrap();
    assert!(echo == expected, "echo intact ({} bytes back)", echo.len());
}

#[tokio::test]
async fn splice_relay_copies_when_no_pipe_can_be_made() {
    init_tracing();
    let backend = TaggedEchoServer::start("a").await;
    let ChildTest {
        mut child,
        mut stdin,
        mut lines,
    } = child::spawn("fallback_child", (CHILD_ENV, &backend.addr.to_string()));
    let listen: std::net::SocketAddr = expect_line(&mut lines, "READY").await.parse().unwrap();

    // No descriptor for a pipe: both directions copy, the client notices nothing.
    echo_a_mebibyte(listen).await;
    let s = stats_when_released(&mut stdin, &mut lines).await;
    assert_eq!(s["create_failures"], 2, "each direction tried once: {s:?}");
    assert_eq!(s["created"], 0, "{s:?}");
    assert_eq!(s["spliced"], 0, "nothing went through a pipe: {s:?}");
    assert_eq!(s["to_backend"], LEN as u64, "{s:?}");
    assert_eq!(s["from_backend"], LEN as u64 + 2, "tag line + echo: {s:?}");

    // With descriptors again, the next connection splices.
    stdin.write_all(b"RAISE\n").await.unwrap();
    expect_line(&mut lines, "RAISED").await;
    echo_a_mebibyte(listen).await;
    let s = stats_when_released(&mut stdin, &mut lines).await;
    assert_eq!(s["create_failures"], 2, "{s:?}");
    assert!(s["created"] >= 1, "{s:?}");
    assert_eq!(s["spliced"], 2 * LEN as u64 + 2, "all of it spliced: {s:?}");
    assert_eq!(s["to_backend"], 2 * LEN as u64, "{s:?}");

    stdin.write_all(b"EXIT\n").await.unwrap();
    let status = within("child exit", child.wait()).await.unwrap();
    assert!(status.success(), "child failed: {status}");
}

#[tokio::test]
#[ignore = "runs only as the child process of splice_relay_copies_when_no_pipe_can_be_made"]
async fn fallback_child() {
    let Ok(backend) = std::env::var(CHILD_ENV) else {
        eprintln!("skipped: fallback_child only runs as a child of its parent test");
        return;
    };
    init_tracing();
    let backend: std::net::SocketAddr = backend.parse().unwrap();
    let mut h = Harness::new(DataplaneConfig {
        tcp_relay: RelayMode::Splice,
        ..test_config()
    });
    let listen = free_addr(LOCALHOST);
    h.publish(table(vec![frontend(listen, vec![up(backend)])]));
    h.wait_bound(listen).await;

    // Commands from the parent, read on a plain thread started before the limit drops.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let original = nofile();
    leave_only_spare_fds(SPARE_FDS);
    println!("READY {listen}");
    // The runtime is current-thread: every relay runs on this thread, so its pipe counters are
    // the data plane's.
    while let Some(cmd) = rx.recv().await {
        match cmd.trim() {
            "STATS" => {
                let p = thread_pipe_stats();
                let b = h.backend_stats(backend);
                println!(
                    "STATS created={} create_failures={} spliced={} to_backend={} \
                     from_backend={} active={}",
                    p.created,
                    p.create_failures,
                    p.spliced_bytes,
                    b.bytes_to_backend,
                    b.bytes_from_backend,
                    b.active
                );
            }
            "RAISE" => {
                set_nofile(&original);
                println!("RAISED");
            }
            "EXIT" => break,
            other => panic!("unknown command {other:?}"),
        }
    }
}
