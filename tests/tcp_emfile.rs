//! The accept loop survives running out of file descriptors (EMFILE).
//!
//! The test re-executes its own test binary as a child process that runs only `emfile_child`
//! (an ignored test that does nothing unless `VIPD_EMFILE_CHILD_BACKEND` is set). The child starts
//! a data plane, lowers its own RLIMIT_NOFILE so that exactly two proxied connections fit (two fds
//! each), and answers `STATS`/`EXIT` commands on stdin. The parent fills the child's fds, sees the
//! child count EMFILE accept errors, frees the fds, and checks that the connections left waiting in
//! the backlog are then served: the accept loop paused and went on instead of exiting. The lower
//! limit only ever applies to the child process, which the parent kills by PID if it lingers.
#![cfg(target_os = "linux")]

mod support;

use std::time::Duration;
use support::child::{self, expect_line, leave_only_spare_fds, ChildTest};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const CHILD_ENV: &str = "VIPD_EMFILE_CHILD_BACKEND";
/// Free descriptor slots the child keeps below its new limit: two proxied connections.
const SPARE_FDS: usize = 4;

#[tokio::test]
async fn accept_loop_survives_emfile() {
    init_tracing();
    let backend = TaggedEchoServer::start("a").await;
    let ChildTest {
        mut child,
        mut stdin,
        mut lines,
    } = child::spawn("emfile_child", (CHILD_ENV, &backend.addr.to_string()));
    let listen: std::net::SocketAddr = expect_line(&mut lines, "READY").await.parse().unwrap();

    // Two connections take the child's four spare descriptors.
    let mut c1 = TcpStream::connect(listen).await.unwrap();
    assert_eq!(within("c1 tag", read_tag(&mut c1)).await.unwrap(), "a");
    let mut c2 = TcpStream::connect(listen).await.unwrap();
    assert_eq!(within("c2 tag", read_tag(&mut c2)).await.unwrap(), "a");
    // These two complete the handshake in the kernel backlog but cannot be accepted yet.
    let mut c3 = TcpStream::connect(listen).await.unwrap();
    let mut c4 = TcpStream::connect(listen).await.unwrap();

    let mut emfile_errors = 0u64;
    for _ in 0..2000 {
        stdin.write_all(b"STATS\n").await.unwrap();
        emfile_errors = expect_line(&mut lines, "STATS").await.parse().unwrap();
        if emfile_errors >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        emfile_errors >= 2,
        "child saw no repeated EMFILE ({emfile_errors})"
    );
    echo_once(&mut c1, b"still relaying while out of fds")
        .await
        .unwrap();

    // Free the descriptors: the waiting connections are accepted and served.
    drop(c1);
    drop(c2);
    assert_eq!(within("c3 tag", read_tag(&mut c3)).await.unwrap(), "a");
    echo_once(&mut c3, b"served after EMFILE").await.unwrap();
    drop(c3);
    assert_eq!(within("c4 tag", read_tag(&mut c4)).await.unwrap(), "a");
    drop(c4);
    assert_eq!(roundtrip(listen, b"and new ones too").await.unwrap(), "a");

    stdin.write_all(b"EXIT\n").await.unwrap();
    let status = within("child exit", child.wait()).await.unwrap();
    assert!(status.success(), "child failed: {status}");
}

#[tokio::test]
#[ignore = "runs only as the child process of accept_loop_survives_emfile"]
async fn emfile_child() {
    let Ok(backend) = std::env::var(CHILD_ENV) else {
        eprintln!("skipped: emfile_child only runs as a child of accept_loop_survives_emfile");
        return;
    };
    init_tracing();
    let backend: std::net::SocketAddr = backend.parse().unwrap();
    let mut h = Harness::new(test_config());
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

    leave_only_spare_fds(SPARE_FDS);
    println!("READY {listen}");
    let frontends = h.dataplane.frontends();
    while let Some(cmd) = rx.recv().await {
        match cmd.trim() {
            "STATS" => {
                let s = frontends.get(&tcp_key(listen)).unwrap().snapshot();
                println!("STATS {}", s.accept_errors_resource);
            }
            "EXIT" => break,
            other => panic!("unknown command {other:?}"),
        }
    }
}
