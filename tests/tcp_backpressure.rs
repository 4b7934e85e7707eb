//! A backend that accepts but never reads, and a client that sends as fast as it can: TCP
//! backpressure must reach the client (its writes stop completing) and vipd's memory must not
//! grow past its relay buffers and the kernel's socket buffers. Through the real binary, with
//! the RSS read from `/proc`.

mod support;

use std::time::Duration;
use support::daemon::VipdProcess;
use support::{free_port, LOCALHOST, PATIENCE};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// Writes 64 KiB chunks until one has not completed for `stall` (the push-back), or `cap` bytes
/// are written (no push-back: the test fails). Returns the bytes written.
async fn write_until_blocked(s: &mut TcpStream, stall: Duration, cap: u64) -> u64 {
    let chunk = vec![0x5au8; 64 * 1024];
    let mut written = 0u64;
    while written < cap {
        match tokio::time::timeout(stall, s.write_all(&chunk)).await {
            Ok(r) => r.expect("write to vipd"),
            Err(_) => break,
        }
        written += chunk.len() as u64;
    }
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_reads_pushes_back_on_the_client_and_vipd_memory_stays_flat() {
    // Accepts, then holds every connection without reading a byte.
    let backend = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = backend.accept().await {
            conns.push(s);
        }
    });
    let port = free_port(LOCALHOST);
    let dir = tempfile::tempdir().unwrap();
    let apps = serde_json::json!({"apps": [{"id": "/sink", "portDefinitions": [{"port": port}],
        "tasks": [{"id": "sink.1", "host": "127.0.0.1", "ports": [backend_addr.port()],
                   "state": "TASK_RUNNING"}]}]});
    for relay in ["copy", "splice"] {
        let (vipd, admin) =
            VipdProcess::run_on_apps(dir.path(), &apps, &["--tcp-relay", relay], PATIENCE);
        let frontend = std::net::SocketAddr::from((LOCALHOST, port));
        assert!(
            support::eventually_async(PATIENCE, || async {
                support::daemon::http_get(&format!("http://{admin}/readyz"))
                    .await
                    .0
                    == 200
            })
            .await
        );
        let before = rss_kib(vipd.pid());
        // Four clients at once, each pushing until its writes stop completing.
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(tokio::spawn(async move {
                let mut s = TcpStream::connect(frontend).await.expect("connect");
                let written =
                    write_until_blocked(&mut s, Duration::from_millis(500), 1 << 30).await;
                (s, written)
            }));
        }
        let mut streams = Vec::new();
        for c in clients {
            let (s, written) = c.await.unwrap();
            // Socket buffers on both sides of vipd plus its relay buffer: megabytes, never the
            // gigabyte cap.
            assert!(
                written < 128 << 20,
                "{relay}: {written} bytes accepted: no backpressure"
            );
            streams.push(s);
        }
        let after = rss_kib(vipd.pid());
        assert!(
            after < before + 32 * 1024,
            "{relay}: vipd RSS grew from {before} KiB to {after} KiB with 4 stalled connections"
        );
        println!("{relay}: RSS {before} KiB -> {after} KiB");
        drop(streams);
        drop(vipd);
    }
    held.abort();
}
