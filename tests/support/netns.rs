//! Network namespaces made by a test: created with `ip netns add` and `lo` up, deleted on drop
//! (also when the test fails). Traffic and kernel state (addresses, sysctls, nftables) stay
//! inside them.
//!
//! Two ways to run code inside one: start a process there ([`Netns::exec`], [`Netns::vipd`]),
//! or re-run the current test binary there for one `#[ignore]`d inner test
//! ([`Netns::run_inner`]); the inner test calls [`inside_namespace`] first, which panics unless
//! `ip netns identify` confirms it runs in the namespace the outer test named.

use super::daemon::VipdProcess;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Names the namespace the inner test must run in.
pub const INNER_ENV: &str = "VIPD_NETNS_INNER";
static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `vipd-<tag>-<pid>-<n>` with `lo` up, or says why it cannot (no root, no netns).
    pub fn create(tag: &str) -> Result<Netns, String> {
        let name = format!(
            "vipd-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| format!("cannot run ip: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot create a network namespace (needs root and netns support): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let ns = Netns { name };
        let up = ns.ip(&["link", "set", "lo", "up"]);
        if !up.status.success() {
            return Err(format!(
                "cannot bring lo up: {}",
                String::from_utf8_lossy(&up.stderr)
            ));
        }
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME args...`.
    pub fn ip(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("run ip")
    }

    /// Runs `cmd` inside the namespace and waits for it.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .expect("run ip netns exec")
    }

    /// The addresses on the namespace's `lo` (without prefix lengths).
    pub fn lo_addresses(&self) -> Vec<String> {
        let out = self.ip(&["-j", "addr", "show", "dev", "lo"]);
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let mut addrs = Vec::new();
        for link in links.as_array().into_iter().flatten() {
            for info in link["addr_info"].as_array().into_iter().flatten() {
                addrs.extend(info["local"].as_str().map(str::to_string));
            }
        }
        addrs
    }

    pub fn has(&self, ip: &str) -> bool {
        self.lo_addresses().iter().any(|a| a == ip)
    }

    /// Starts vipd inside the namespace (`ip netns exec` execs it in place: the PID is vipd's).
    pub fn vipd(&self, args: &[&str]) -> VipdProcess {
        let mut all = vec!["netns", "exec", &self.name, env!("CARGO_BIN_EXE_vipd")];
        all.extend_from_slice(args);
        VipdProcess::start_with_program("ip", &all)
    }

    /// Runs `prefix... <this test binary> --exact <inner> --ignored` inside the namespace.
    pub fn run_inner(&self, prefix: &[&str], inner: &str) -> Output {
        let exe = std::env::current_exe().expect("current exe");
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(prefix)
            .arg(exe)
            .args([
                "--exact",
                inner,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(INNER_ENV, &self.name)
            .output()
            .expect("run the inner test")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Fails unless the inner test ran and passed; prints its output either way.
pub fn assert_inner_passed(out: &Output, inner: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- inner {inner} stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    assert!(out.status.success(), "inner test {inner} failed");
    // Make sure the inner test really ran (and was not filtered out).
    assert!(
        stdout.contains("1 passed"),
        "inner test {inner} did not run"
    );
}

/// Inside the namespace only: `None` when run directly (not by [`Netns::run_inner`]); panics if
/// this process is not in the namespace the outer test named, so an inner test can never touch
/// the host's interfaces.
pub fn inside_namespace() -> Option<String> {
    let name = std::env::var(INNER_ENV).ok()?;
    let out = Command::new("ip")
        .args(["netns", "identify", &std::process::id().to_string()])
        .output()
        .expect("ip netns identify");
    let actual = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(actual, name, "refusing to run outside namespace {name}");
    Some(name)
}
