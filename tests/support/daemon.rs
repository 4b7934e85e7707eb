//! A real `vipd` process for end-to-end tests: started with arguments, its stderr collected line
//! by line so tests can wait for a log line (a condition, not a sleep), stopped by its own PID.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct VipdProcess {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl VipdProcess {
    /// Starts `vipd <args>` with plain-text logs at info (or `RUST_LOG` if the test sets one).
    pub fn start(args: &[&str]) -> VipdProcess {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> VipdProcess {
        Self::spawn(env!("CARGO_BIN_EXE_vipd"), args, env)
    }

    /// Starts another program that execs vipd in place (e.g. `ip netns exec NS vipd …`), so the
    /// PID is still vipd's.
    pub fn start_with_program(program: &str, args: &[&str]) -> VipdProcess {
        Self::spawn(program, args, &[])
    }

    fn spawn(program: &str, args: &[&str], env: &[(&str, &str)]) -> VipdProcess {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start vipd");
        let log = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            });
        }
        VipdProcess { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line written so far (stderr and stdout interleaved).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle`, for at most `timeout`; true if it appeared.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_log_count(needle, 1, timeout)
    }

    /// Waits until at least `n` log lines contain `needle`.
    pub fn wait_for_log_count(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        super::eventually_blocking(timeout, || self.count_log(needle) >= n)
    }

    pub fn count_log(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the PID of a child this test started and has not yet reaped.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.child.id());
    }

    /// Waits for the process to exit, for at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        super::poll_until_blocking(timeout, || self.child.try_wait().expect("try_wait"))
    }
}

impl Drop for VipdProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Writes `content` to `path` atomically (temp file + rename), as config management tools do.
pub fn write_atomically(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl VipdProcess {
    /// Writes `apps` to `dir/apps.json` and starts `vipd run --apps` on it, with service ports on
    /// 127.0.0.1, an admin server on 127.0.0.1:0 and the `extra` flags. Returns vipd and its
    /// admin address (panics with the log if none is logged within `timeout`).
    pub fn run_on_apps(
        dir: &Path,
        apps: &serde_json::Value,
        extra: &[&str],
        timeout: Duration,
    ) -> (VipdProcess, std::net::SocketAddr) {
        let path = dir.join("apps.json");
        std::fs::write(&path, apps.to_string()).unwrap();
        let mut args = vec![
            "run",
            "--apps",
            path.to_str().unwrap(),
            "--bind-address",
            "127.0.0.1",
            "--admin-listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let vipd = VipdProcess::start(&args);
        let admin = vipd
            .admin_addr(timeout)
            .unwrap_or_else(|| panic!("no admin address; log:\n{}", vipd.log().join("\n")));
        (vipd, admin)
    }

    /// The address the admin server logged (`admin server listening local=ADDR`).
    pub fn admin_addr(&self, timeout: Duration) -> Option<std::net::SocketAddr> {
        self.logged_addr("admin server listening", timeout)
    }

    /// Finds `local=ADDR` (or `listen=ADDR`) on the first log line containing `needle`.
    pub fn logged_addr(&self, needle: &str, timeout: Duration) -> Option<std::net::SocketAddr> {
        if !self.wait_for_log(needle, timeout) {
            return None;
        }
        let line = self.log().into_iter().find(|l| l.contains(needle))?;
        line.split_whitespace()
            .filter_map(|w| {
                w.strip_prefix("local=")
                    .or_else(|| w.strip_prefix("listen="))
            })
            .find_map(|a| a.trim_matches('"').parse().ok())
    }
}

/// A plain HTTP GET on loopback; returns (status, body).
pub async fn http_get(url: &str) -> (u16, String) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let resp = client.get(url).send().await.expect("admin request");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}
