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

use std::process::Stdio;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const CHILD_ENV: &str = "VIPD_EMFILE_CHILD_BACKEND";
/// Free descriptor slots the child keeps below its new limit: two proxied connections.
const SPARE_FDS: usize = 4;

#[tokio::test]
async fn accept_loop_survives_emfile() {
    init_tracing();
    let backend = TaggedEchoServer::start("a").await;
    let exe = std::env::current_exe().unwrap();
    let mut child = tokio::process::Command::new(exe)
        .args([
            "emfile_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, backend.addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("re-exec the test binary");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Reads child stdout until a line containing `prefix` (libtest prints its own lines too).
    async fn expect_line(
        lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
        prefix: &str,
    ) -> String {
        within(prefix, async {
            loop {
                let line = lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("child exited early");
                // libtest may print `test emfile_child ... ` on the same line first.
                if let Some((_, rest)) = line.split_once(prefix) {
                    return rest.trim().to_string();
                }
                eprintln!("child: {line}");
            }
        })
        .await
    }
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

/// Whether `fd` is an open descriptor of this process.
fn fd_is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only reads the descriptor flags of an fd number; it touches no memory and
    // fails with EBADF for a closed number.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Lowers this process's soft RLIMIT_NOFILE so that exactly `spare` descriptor numbers are left.
fn leave_only_spare_fds(spare: usize) {
    let max_listed = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .max()
        .unwrap();
    let (mut limit, mut free) = (0i32, 0usize);
    while free < spare {
        if limit > max_listed || !fd_is_open(limit) {
            free += 1;
        }
        limit += 1;
    }
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read/write the plain struct we pass by valid pointer; only the
    // soft limit of this (child) process changes.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl), 0);
        rl.rlim_cur = limit as libc::rlim_t;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &rl), 0);
    }
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
