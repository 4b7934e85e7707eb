//! A test that re-executes its own test binary as a child process (to lower the child's
//! RLIMIT_NOFILE without touching the test runner): spawning the child, reading its stdout
//! protocol lines, and the descriptor-limit helpers the child uses.
//!
//! Must not: change any limit of the parent process (only the child calls
//! [`leave_only_spare_fds`]/[`set_nofile`]), or wait without a bound.
#![allow(dead_code)]

use super::within;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};

pub type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

/// The running child: killed on drop if it lingers.
pub struct ChildTest {
    pub child: tokio::process::Child,
    pub stdin: tokio::process::ChildStdin,
    pub lines: Lines,
}

/// Runs the ignored test `name` of this binary as a child, with `env` set (the child test does
/// nothing without it).
pub fn spawn(name: &str, env: (&str, &str)) -> ChildTest {
    let exe = std::env::current_exe().unwrap();
    let mut child = tokio::process::Command::new(exe)
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(env.0, env.1)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("re-exec the test binary");
    let stdin = child.stdin.take().unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    ChildTest {
        child,
        stdin,
        lines,
    }
}

/// Reads child stdout until a line containing `prefix`; returns what follows it.
pub async fn expect_line(lines: &mut Lines, prefix: &str) -> String {
    within(prefix, async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("child exited early");
            // libtest may print `test <name> ... ` on the same line first.
            if let Some((_, rest)) = line.split_once(prefix) {
                return rest.trim().to_string();
            }
            eprintln!("child: {line}");
        }
    })
    .await
}

/// Whether `fd` is an open descriptor of this process.
pub fn fd_is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only reads the descriptor flags of an fd number; it touches no memory and
    // fails with EBADF for a closed number.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

pub fn nofile() -> libc::rlimit {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the plain struct we pass by valid pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
    rl
}

pub fn set_nofile(rl: &libc::rlimit) {
    // SAFETY: setrlimit reads the plain struct we pass by valid pointer; only this (child)
    // process's limit changes.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, rl) }, 0);
}

/// Lowers this process's soft RLIMIT_NOFILE so that exactly `spare` descriptor numbers are left.
pub fn leave_only_spare_fds(spare: usize) {
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
    let mut rl = nofile();
    rl.rlim_cur = limit as libc::rlim_t;
    set_nofile(&rl);
}
