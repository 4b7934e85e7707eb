//! Findings of adversarial testing (issues 20, 21, 22), each pinned on the real `vipd` binary:
//! a closed stderr, duplicate JSON keys, readiness with failed binds, startup errors, signals at
//! startup and during the drain, slowloris on the admin server, the UDP flow budget, and the
//! admin server at the descriptor limit. Every wait is a bounded condition.

mod support;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::daemon::{http_get, write_atomically, VipdProcess};
use support::{free_port, read_tag, roundtrip, TaggedEchoServer, LOCALHOST, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

fn app(id: &str, protocol: &str, service_port: u16, backends: &[SocketAddr]) -> serde_json::Value {
    let tasks: Vec<_> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            serde_json::json!({
                "id": format!("{}.instance-{i:08}-0000-0000-0000-000000000000._app.1", id.trim_start_matches('/')),
                "host": b.ip().to_string(),
                "ports": [b.port()],
                "state": "TASK_RUNNING",
            })
        })
        .collect();
    serde_json::json!({
        "id": id,
        "portDefinitions": [{"port": service_port, "protocol": protocol}],
        "tasks": tasks,
    })
}

fn doc(apps: Vec<serde_json::Value>) -> String {
    serde_json::json!({ "apps": apps }).to_string()
}

fn base_args<'a>(apps: &'a str, admin: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "--apps",
        apps,
        "--bind-address",
        "127.0.0.1",
        "--worker-threads",
        "2",
        "--admin-listen",
        admin,
    ]
}

async fn wait_serving(addr: SocketAddr) -> bool {
    let start = Instant::now();
    while start.elapsed() < PATIENCE {
        if roundtrip(addr, b"ping").await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Polls `url` until `cond(status, body)` holds (bounded).
async fn wait_http(url: &str, cond: impl Fn(u16, &str) -> bool) -> Option<(u16, String)> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < PATIENCE {
        if let Ok(resp) = client.get(url).send().await {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            if cond(status, &body) {
                return Some((status, body));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn metric(body: &str, name_and_labels: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) on the PID of a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0);
}

/// Starts vipd with its stderr collected (like `VipdProcess`) and `nofile` as both its soft and
/// hard RLIMIT_NOFILE.
fn spawn_with_nofile(args: &[&str], nofile: u64) -> (Child, Arc<Mutex<Vec<String>>>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vipd"));
    cmd.args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and only calls setrlimit, which
    // is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let rl = libc::rlimit {
                rlim_cur: nofile as libc::rlim_t,
                rlim_max: nofile as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start vipd");
    let log = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().unwrap().push(line);
        }
    });
    (child, log)
}

fn logged_admin(log: &Arc<Mutex<Vec<String>>>) -> Option<SocketAddr> {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        let found = log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("admin server listening"))
            .and_then(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("local=")?.parse().ok())
            });
        if found.is_some() {
            return found;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

// === issue 20, finding 1 ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_stderr_does_not_kill_the_daemon() {
    let backend = TaggedEchoServer::start("b1").await;
    let (port_a, port_b) = (free_port(LOCALHOST), free_port(LOCALHOST));
    let admin = SocketAddr::new(LOCALHOST, free_port(LOCALHOST));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    std::fs::write(&path, doc(vec![app("/a", "tcp", port_a, &[backend.addr])])).unwrap();
    let admin_s = admin.to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vipd"))
        .args(base_args(path.to_str().unwrap(), &admin_s))
        .args(["--log-level", "debug"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away at once: every log write now fails with EPIPE.
    drop(child.stderr.take());
    let a: SocketAddr = (LOCALHOST, port_a).into();
    let b: SocketAddr = (LOCALHOST, port_b).into();
    assert!(wait_serving(a).await, "serves with a closed stderr");
    // Traffic, table changes and a SIGHUP: each logs lines that cannot be written.
    for round in 0..3 {
        for _ in 0..20 {
            roundtrip(a, b"x").await.expect("forwarding keeps working");
        }
        let apps = if round % 2 == 0 {
            vec![
                app("/a", "tcp", port_a, &[backend.addr]),
                app("/b", "tcp", port_b, &[backend.addr]),
            ]
        } else {
            vec![app("/a", "tcp", port_a, &[backend.addr])]
        };
        write_atomically(&path, &doc(apps));
        kill(child.id(), libc::SIGHUP);
        if round % 2 == 0 {
            assert!(wait_serving(b).await, "table change followed");
        }
    }
    assert!(child.try_wait().unwrap().is_none(), "still running");
    let url = format!("http://{admin}/metrics");
    let (_, body) = wait_http(&url, |s, b| {
        s == 200 && metric(b, "vipd_log_lines_dropped_total").unwrap_or(0.0) > 0.0
    })
    .await
    .expect("dropped log lines are counted");
    assert!(metric(&body, "vipd_log_lines_dropped_total").unwrap() >= 10.0);
    kill(child.id(), libc::SIGTERM);
    let status = wait_exit(&mut child, PATIENCE).expect("exits on SIGTERM");
    assert_eq!(status.code(), Some(0), "{status:?}");
}

// === issue 20, finding 2 ===

/// A JSON value that refuses a repeated key in any object.
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<UniqueKeys, A::Error> {
                let mut seen = std::collections::HashSet::new();
                while let Some(k) = m.next_key::<String>()? {
                    if !seen.insert(k.clone()) {
                        return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
                    }
                    m.next_value::<UniqueKeys>()?;
                }
                Ok(UniqueKeys)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<UniqueKeys, A::Error> {
                while s.next_element::<UniqueKeys>()?.is_some() {}
                Ok(UniqueKeys)
            }
            fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
            fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
            fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
            fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
            fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
            fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
        }
        d.deserialize_any(V)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_have_unique_keys() {
    let good = TaggedEchoServer::start("good").await;
    let refusing = support::refusing_addr(LOCALHOST);
    let port = free_port(LOCALHOST);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    std::fs::write(
        &path,
        doc(vec![app("/a", "tcp", port, &[good.addr, refusing])]),
    )
    .unwrap();
    let mut args = base_args(path.to_str().unwrap(), "127.0.0.1:0");
    args.extend(["--log-format", "json", "--log-level", "debug"]);
    let mut vipd = VipdProcess::start(&args);
    let a: SocketAddr = (LOCALHOST, port).into();
    assert!(wait_serving(a).await);
    // Busy: connections (some to the refusing backend until it is ejected), a table change,
    // a SIGHUP, then shutdown.
    for _ in 0..30 {
        let _ = roundtrip(a, b"x").await;
    }
    assert!(
        vipd.wait_for_log("backend ejected", PATIENCE),
        "the refusing backend is ejected"
    );
    write_atomically(&path, &doc(vec![app("/a", "tcp", port, &[good.addr])]));
    assert!(vipd.wait_for_log_count("published table", 2, PATIENCE));
    vipd.signal(libc::SIGHUP);
    vipd.signal(libc::SIGTERM);
    assert_eq!(vipd.wait_exit(PATIENCE).and_then(|s| s.code()), Some(0));
    let lines = vipd.log();
    assert!(lines.len() > 10, "a busy run: {} lines", lines.len());
    for line in &lines {
        if let Err(e) = serde_json::from_str::<UniqueKeys>(line) {
            panic!("{e}: {line}");
        }
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["level"].is_string(), "{line}");
    }
    let ejected = lines
        .iter()
        .find(|l| l.contains("backend ejected"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(ejected).unwrap();
    assert_eq!(v["level"], "WARN", "{ejected}");
    assert!(
        v["backoff_level"].is_u64(),
        "the ejection's own level is a field of its own: {ejected}"
    );
}

// === issue 20, finding 8: rounded floats, one shutdown report ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_fields_are_rounded_and_the_shutdown_report_is_logged_once() {
    let backend = TaggedEchoServer::start("b1").await;
    let port = free_port(LOCALHOST);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    std::fs::write(&path, doc(vec![app("/a", "tcp", port, &[backend.addr])])).unwrap();
    let mut vipd = VipdProcess::start(&base_args(path.to_str().unwrap(), "127.0.0.1:0"));
    assert!(vipd.wait_for_log("published table", PATIENCE));
    vipd.signal(libc::SIGTERM);
    assert_eq!(vipd.wait_exit(PATIENCE).and_then(|s| s.code()), Some(0));
    let line = vipd
        .log()
        .into_iter()
        .find(|l| l.contains("published table"))
        .unwrap();
    for field in ["latency_ms=", "build_ms="] {
        let value = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(field))
            .unwrap_or_else(|| panic!("{field} in {line}"));
        let decimals = value.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 3, "{field}{value} is rounded: {line}");
    }
    assert_eq!(vipd.count_log("data plane stopped"), 1, "{:#?}", vipd.log());
}

// === issue 20, finding 4 ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_every_listener_failed_to_bind() {
    let backend = TaggedEchoServer::start("b1").await;
    // Three ports taken by someone else.
    let taken: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind((LOCALHOST, 0)).unwrap())
        .collect();
    let ports: Vec<u16> = taken
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    let apps = ports
        .iter()
        .enumerate()
        .map(|(i, p)| app(&format!("/app{i}"), "tcp", *p, &[backend.addr]))
        .collect();
    std::fs::write(&path, doc(apps)).unwrap();
    let vipd = VipdProcess::start(&base_args(path.to_str().unwrap(), "127.0.0.1:0"));
    let admin = vipd.admin_addr(PATIENCE).expect("admin address");
    let (status, body) = wait_http(&format!("http://{admin}/readyz"), |s, b| {
        s == 503 && b.contains("failed to bind")
    })
    .await
    .expect("/readyz reports the failed binds");
    assert_eq!(status, 503);
    for p in &ports {
        assert!(body.contains(&format!("127.0.0.1:{p}")), "{body}");
    }
    let (_, vips) = http_get(&format!("http://{admin}/v1/vips")).await;
    let vips: serde_json::Value = serde_json::from_str(&vips).unwrap();
    assert_eq!(
        vips["listeners_failed"].as_array().unwrap().len(),
        3,
        "{vips}"
    );
    for f in vips["frontends"].as_array().unwrap() {
        assert_eq!(f["listener"]["state"], "failed", "{f}");
    }
    let (_, metrics) = http_get(&format!("http://{admin}/metrics")).await;
    assert_eq!(metric(&metrics, "vipd_listeners_failed"), Some(3.0));
    assert!(
        vipd.wait_for_log("some failed to bind", PATIENCE),
        "the log tells the truth: {:#?}",
        vipd.log()
    );
    // The ports free up: bound on retry, ready.
    drop(taken);
    wait_http(&format!("http://{admin}/readyz"), |s, _| s == 200)
        .await
        .expect("ready once every listener is bound");
}

// === issue 20, findings 5, 6 and 8 (startup errors and help) ===

/// Runs vipd to completion (killed after [`PATIENCE`]: a command that should fail at once but
/// starts instead fails the test, not hangs it). Returns the exit code and stderr + stdout.
fn run_vipd(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vipd"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if wait_exit(&mut child, PATIENCE).is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn log_level_verbose_is_a_one_line_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    std::fs::write(&path, doc(vec![])).unwrap();
    let (code, out) = run_vipd(&[
        "--log-level",
        "verbose",
        "run",
        "--apps",
        path.to_str().unwrap(),
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(out.trim().lines().count(), 1, "{out}");
    assert!(out.contains("verbose"), "{out}");
}

#[test]
fn apps_file_missing_at_start_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let (code, out) = run_vipd(&[
        "run",
        "--apps",
        missing.to_str().unwrap(),
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(1), "{out}");
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("Error:")).collect();
    assert_eq!(errors.len(), 1, "{out}");
    assert!(errors[0].contains("missing.json"), "{out}");
    assert!(!out.contains("last good table"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_file_missing_serves_the_state_dir_state_and_stale_temp_files_are_removed() {
    let backend = TaggedEchoServer::start("saved").await;
    let port = free_port(LOCALHOST);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(
        state.join("marathon-apps.json"),
        doc(vec![app("/a", "tcp", port, &[backend.addr])]),
    )
    .unwrap();
    let stale = state.join(".marathon-apps.json.tmp-999999");
    std::fs::write(&stale, "partial").unwrap();
    let missing = dir.path().join("missing.json");
    let mut args = base_args(missing.to_str().unwrap(), "127.0.0.1:0");
    args.extend(["--state-dir", state.to_str().unwrap()]);
    let mut vipd = VipdProcess::start(&args);
    let a: SocketAddr = (LOCALHOST, port).into();
    assert!(
        wait_serving(a).await,
        "serves the saved state: {:#?}",
        vipd.log()
    );
    assert!(vipd.wait_for_log("serving the saved state", PATIENCE));
    assert!(!stale.exists(), "stale temp file removed at start");
    assert!(vipd.wait_for_log("removed stale state-dir temp files", PATIENCE));
    vipd.signal(libc::SIGTERM);
    assert_eq!(vipd.wait_exit(PATIENCE).and_then(|s| s.code()), Some(0));
}

#[test]
fn vip_cidr_error_names_the_prefix_length() {
    let (code, out) = run_vipd(&["table", "--apps", "-", "--vip-cidr", "11.0.0.0/33"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("prefix length /33"), "{out}");
    assert!(!out.contains("invalid IP address syntax"), "{out}");
}

#[test]
fn help_renders_label_names_on_one_line() {
    let (code, out) = run_vipd(&["run", "--help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("`VIPD_<n>_BALANCE`"), "{out}");
    assert!(out.contains("`VIPD_<n>_HEALTHCHECK`"), "{out}");
    assert!(
        !out.lines().any(|l| l.trim_end().ends_with("`VIPD_")),
        "no line break inside a label name"
    );
}

// === issue 20, finding 7; issue 22 item 8 (signals) ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_cuts_the_drain_and_exits_at_once() {
    let backend = TaggedEchoServer::start("b1").await;
    let port = free_port(LOCALHOST);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    std::fs::write(&path, doc(vec![app("/a", "tcp", port, &[backend.addr])])).unwrap();
    let mut args = base_args(path.to_str().unwrap(), "127.0.0.1:0");
    args.extend(["--drain-timeout", "60s"]);
    let mut vipd = VipdProcess::start(&args);
    let a: SocketAddr = (LOCALHOST, port).into();
    assert!(wait_serving(a).await);
    // One idle connection, established through vipd.
    let mut idle = TcpStream::connect(a).await.unwrap();
    assert_eq!(read_tag(&mut idle).await.unwrap(), "b1");
    vipd.signal(libc::SIGINT);
    assert!(
        vipd.wait_for_log("cuts them now", PATIENCE),
        "the drain says how to cut it: {:#?}",
        vipd.log()
    );
    let second = Instant::now();
    vipd.signal(libc::SIGINT);
    let status = vipd.wait_exit(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{:#?}", vipd.log());
    assert!(second.elapsed() < Duration::from_secs(5));
    assert!(vipd.count_log("cutting the remaining connections now") == 1);
    let mut buf = [0u8; 8];
    let closed = tokio::time::timeout(PATIENCE, idle.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "the idle connection was cut"
    );
}

/// Waits (bounded) until the process's main thread blocks or handles SIGHUP (/proc status).
/// True if it was seen blocked (the startup window, before the handlers exist).
fn wait_signals_blocked(pid: u32) -> bool {
    let deadline = Instant::now() + PATIENCE;
    let hup = 1u64 << (libc::SIGHUP - 1);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let mask = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or(0)
        };
        if mask("SigBlk:") & hup != 0 {
            return true;
        }
        // This thread was descheduled past the window: the handlers are already there.
        if mask("SigCgt:") & hup != 0 {
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "vipd never blocked or handled SIGHUP"
        );
        std::thread::yield_now();
    }
}

/// Issue 22 item 8: a signal in the first milliseconds (before the daemon's handlers exist)
/// is held, not acted on with its default action (SIGHUP would kill). The dynamic loader runs
/// before any code of vipd can, so the signal is sent as soon as the process has blocked the
/// signals (its ELF constructor, about 1 ms after exec), while it is still starting.
#[test]
fn sighup_right_after_spawn_does_not_kill_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    std::fs::write(&path, doc(vec![])).unwrap();
    let mut hit_the_window = 0;
    for attempt in 0..10 {
        let signal = if attempt % 2 == 0 {
            libc::SIGHUP
        } else {
            libc::SIGTERM
        };
        let mut vipd = VipdProcess::start(&base_args(path.to_str().unwrap(), "127.0.0.1:0"));
        if wait_signals_blocked(vipd.pid()) {
            hit_the_window += 1;
        }
        vipd.signal(signal);
        if signal == libc::SIGHUP {
            assert!(
                vipd.admin_addr(PATIENCE).is_some(),
                "survived SIGHUP: {:#?}",
                vipd.log()
            );
            assert!(
                vipd.wait_exit(Duration::from_millis(100)).is_none(),
                "still running"
            );
            vipd.signal(libc::SIGTERM);
        }
        let status = vipd.wait_exit(PATIENCE).expect("exits");
        assert_eq!(
            status.code(),
            Some(0),
            "graceful exit, not a signal death: {status:?}"
        );
    }
    assert!(
        hit_the_window > 0,
        "the signals were never seen held during startup"
    );
}

// === issue 20 "Bounded resources"; issue 22 item 5: the admin server ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_metrics_answers_while_500_half_sent_requests_are_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    std::fs::write(&path, doc(vec![])).unwrap();
    let vipd = VipdProcess::start(&base_args(path.to_str().unwrap(), "127.0.0.1:0"));
    let admin = vipd.admin_addr(PATIENCE).unwrap();
    let mut held = Vec::new();
    for _ in 0..500 {
        let mut s = TcpStream::connect(admin).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    let started = Instant::now();
    let (status, body) = http_get(&format!("http://{admin}/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        metric(
            &body,
            "vipd_admin_connections_dropped_total{reason=\"evicted\"}"
        )
        .unwrap()
            > 0.0,
        "half-sent requests were evicted to make room"
    );
    assert!(metric(&body, "vipd_admin_connections_open").unwrap() <= 64.0);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_refuses_large_bodies_and_closes_idle_connections() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    std::fs::write(&path, doc(vec![])).unwrap();
    let vipd = VipdProcess::start(&base_args(path.to_str().unwrap(), "127.0.0.1:0"));
    let admin = vipd.admin_addr(PATIENCE).unwrap();
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(PATIENCE, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 413"));
    // A half-sent request head is closed by the header-read timeout (5 s).
    let mut slow = TcpStream::connect(admin).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(15), slow.read(&mut buf)).await;
    assert!(r.is_ok(), "closed by the server");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

// === issue 22 item 1: UDP flows vs descriptors ===

async fn udp_echo() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], peer).await;
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_flows_cannot_exhaust_descriptors() {
    let (echo, _echo_task) = udp_echo().await;
    let backend = TaggedEchoServer::start("tcp").await;
    let (udp_port, tcp_port) = (free_port(LOCALHOST), free_port(LOCALHOST));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    std::fs::write(
        &path,
        doc(vec![
            app("/dns", "udp", udp_port, &[echo]),
            app("/web", "tcp", tcp_port, &[backend.addr]),
        ]),
    )
    .unwrap();
    // 1024 descriptors: a flow budget of (1024 - 512) / 2 = 256 flows, less half of the two
    // listeners: 255.
    let (mut child, log) =
        spawn_with_nofile(&base_args(path.to_str().unwrap(), "127.0.0.1:0"), 1024);
    let admin = logged_admin(&log).expect("admin address");
    let tcp: SocketAddr = (LOCALHOST, tcp_port).into();
    assert!(wait_serving(tcp).await);
    let frontend: SocketAddr = (LOCALHOST, udp_port).into();
    // An existing flow, established before the flood.
    let first = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    first.connect(frontend).await.unwrap();
    let mut buf = [0u8; 64];
    let start = Instant::now();
    loop {
        first.send(b"hello").await.unwrap();
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), first.recv(&mut buf)).await
        {
            assert_eq!(&buf[..n], b"hello");
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the UDP frontend never answered"
        );
    }
    // 1,200 distinct sources (127.0.0.2-13, 100 ports each): more than the budget, and more
    // than the whole descriptor limit if each became a flow.
    let mut flood = Vec::new();
    for host in 2..14u8 {
        for _ in 0..100 {
            let s = UdpSocket::bind((std::net::Ipv4Addr::new(127, 0, 0, host), 0))
                .await
                .unwrap();
            s.send_to(b"flood", frontend).await.unwrap();
            flood.push(s);
        }
    }
    // The flood goes on while TCP, /metrics and the existing flow are checked (bounded: at most
    // 2,000 rounds of 1,200 datagrams, and it stops when the checks are done).
    let flood = std::sync::Arc::new(flood);
    let stop = tokio_util::sync::CancellationToken::new();
    let (first_round, first_round_sent) = tokio::sync::oneshot::channel();
    let flooding = {
        let (flood, stop) = (flood.clone(), stop.clone());
        tokio::spawn(async move {
            let mut sent = 0u64;
            let mut first_round = Some(first_round);
            for _ in 0..2000 {
                for s in flood.iter() {
                    if s.send_to(b"flood", frontend).await.is_ok() {
                        sent += 1;
                    }
                }
                if let Some(tx) = first_round.take() {
                    let _ = tx.send(());
                }
                if stop.is_cancelled() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            sent
        })
    };
    // The checks start once the flood is under way; it finishes at least one more round.
    first_round_sent.await.unwrap();
    // TCP and /metrics keep answering; the existing flow too.
    for _ in 0..20 {
        roundtrip(tcp, b"still").await.expect("TCP keeps working");
    }
    let url = format!("http://{admin}/metrics");
    let (_, body) = wait_http(&url, |s, b| {
        s == 200 && metric(b, "vipd_udp_flows_refused_total").unwrap_or(0.0) > 0.0
    })
    .await
    .expect("/metrics answers and counts refused flows");
    let limit = metric(&body, "vipd_udp_flow_budget{kind=\"limit\"}").unwrap();
    let used = metric(&body, "vipd_udp_flow_budget{kind=\"used\"}").unwrap();
    assert_eq!(limit, 255.0, "{body}");
    assert!(used <= limit, "used {used} <= limit {limit}");
    // The flood can overflow the frontend socket's receive queue (the kernel drops, as for any
    // UDP sender): the client resends, as a UDP client does, within a bound.
    let start = Instant::now();
    let n = loop {
        first.send(b"again").await.unwrap();
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), first.recv(&mut buf)).await
        {
            break n;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the existing flow keeps working"
        );
    };
    assert_eq!(&buf[..n], b"again");
    stop.cancel();
    let sent = flooding.await.unwrap();
    assert!(
        sent >= 2 * 1200,
        "the flood ran during the checks ({sent} datagrams)"
    );
    let logged = log.lock().unwrap().clone();
    assert!(
        !logged.iter().any(|l| l.contains("Too many open files")),
        "never out of descriptors: {logged:#?}"
    );
    drop(flood);
    kill(child.id(), libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut child, PATIENCE).and_then(|s| s.code()),
        Some(0)
    );
}

// === issue 21: the admin server at the descriptor limit ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_recovers_after_descriptor_exhaustion_without_a_log_storm() {
    let backend = TaggedEchoServer::start("b1").await;
    let port = free_port(LOCALHOST);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    std::fs::write(&path, doc(vec![app("/a", "tcp", port, &[backend.addr])])).unwrap();
    let (mut child, log) =
        spawn_with_nofile(&base_args(path.to_str().unwrap(), "127.0.0.1:0"), 256);
    let admin = logged_admin(&log).expect("admin address");
    let a: SocketAddr = (LOCALHOST, port).into();
    assert!(wait_serving(a).await);
    // Exhaust vipd's descriptors with idle client connections (two descriptors each in vipd).
    let mut held = Vec::new();
    for _ in 0..200 {
        match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(a)).await {
            Ok(Ok(s)) => held.push(s),
            _ => break,
        }
    }
    // Admin connections now wait in the backlog while accept fails with EMFILE.
    let mut waiting = Vec::new();
    for _ in 0..5 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(admin)).await
        {
            waiting.push(s);
        }
    }
    let deadline = Instant::now() + PATIENCE;
    while !log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("admin server out of descriptors"))
    {
        assert!(
            Instant::now() < deadline,
            "admin never hit EMFILE: {:#?}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Stay exhausted for a while: the log must not grow a line per error.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(waiting);
    drop(held);
    let freed = Instant::now();
    wait_http(&format!("http://{admin}/metrics"), |s, _| s == 200)
        .await
        .expect("/metrics answers once descriptors free up");
    assert!(
        freed.elapsed() < Duration::from_secs(5),
        "{:?}",
        freed.elapsed()
    );
    let logged = log.lock().unwrap().clone();
    let admin_lines = logged
        .iter()
        .filter(|l| {
            l.contains("admin") && (l.contains("descriptors") || l.contains("Too many open files"))
        })
        .count();
    assert!(admin_lines <= 2, "no log storm: {logged:#?}");
    kill(child.id(), libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut child, PATIENCE).and_then(|s| s.code()),
        Some(0)
    );
}
