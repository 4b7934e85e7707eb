//! Smoke test of the `vipd-bench` binary: real `serve` processes on ephemeral loopback ports, and
//! every load mode run against them for about a second with small bounds; the JSON results must be
//! sane (answers > 0, no errors, no UDP loss on loopback). Also checks that a public target is
//! refused before anything is sent unless `--force` is given. Performance is not asserted.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_vipd-bench");

/// A `vipd-bench serve` process, killed by PID on drop.
struct Server {
    child: Child,
    tcp_ports: Vec<u16>,
    udp_ports: Vec<u16>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(args)
            .args(["--duration", "120s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn vipd-bench serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("serve did not print its ports within 10 s");
            }
        };
        let v: Value = serde_json::from_str(&line).expect("listening line is JSON");
        assert_eq!(v["event"], "listening", "{line}");
        let ports = |k: &str| -> Vec<u16> {
            v[k].as_array()
                .expect("ports array")
                .iter()
                .map(|p| p.as_u64().expect("port") as u16)
                .collect()
        };
        Server {
            tcp_ports: ports("tcp_ports"),
            udp_ports: ports("udp_ports"),
            child,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a load mode; returns (exit success, parsed JSON result or Null, stderr).
fn run(args: &[&str]) -> (bool, Value, String) {
    // A generous per-operation timeout: a loaded CI machine must not turn into "errors".
    let out = Command::new(BIN)
        .args(args)
        .args(["--timeout", "10s"])
        .output()
        .expect("run vipd-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let v = stdout
        .lines()
        .last()
        .map(|l| serde_json::from_str(l).expect("result line is JSON"))
        .unwrap_or(Value::Null);
    (out.status.success(), v, stderr)
}

fn assert_clean(v: &Value, mode: &str, stderr: &str) {
    assert_eq!(v["mode"], mode, "{v} / {stderr}");
    assert!(v["ok"].as_u64().unwrap() > 0, "no answers: {v} / {stderr}");
    assert_eq!(v["errors_total"], 0, "errors: {v} / {stderr}");
    assert!(v["rate_per_s"].as_f64().unwrap() > 0.0, "{v}");
}

fn assert_latency(v: &Value) {
    let l = &v["latency_us"];
    let p50 = l["p50"].as_f64().expect("p50");
    let p99 = l["p99"].as_f64().expect("p99");
    let p999 = l["p999"].as_f64().expect("p999");
    let max = l["max"].as_f64().expect("max");
    assert!(
        p50 > 0.0 && p50 <= p99 && p99 <= p999 && p999 <= max,
        "percentiles out of order: {l}"
    );
}

#[test]
fn serve_and_every_load_mode_against_it() {
    let echo = Server::start(&["--tcp-ports", "2", "--udp-ports", "1", "--mode", "echo"]);
    let small = Server::start(&[
        "--tcp-ports",
        "1",
        "--udp-ports",
        "1",
        "--mode",
        "small-response",
        "--request-size",
        "32",
        "--response-size",
        "300",
    ]);
    let sink = Server::start(&["--tcp-ports", "1", "--mode", "sink"]);
    assert_eq!(echo.tcp_ports.len(), 2);
    assert_eq!(echo.udp_ports.len(), 1);
    assert!(echo.tcp_ports.iter().all(|&p| p != 0));

    let t = |p: u16| format!("127.0.0.1:{p}");

    // tcp-rr against echo and small-response.
    let (ok, v, e) = run(&[
        "tcp-rr",
        "--target",
        &t(echo.tcp_ports[1]),
        "--duration",
        "1s",
        "--requests",
        "20000",
        "--connections",
        "4",
    ]);
    assert!(ok, "{e}");
    assert_clean(&v, "tcp-rr", &e);
    assert_latency(&v);
    let (ok, v, e) = run(&[
        "tcp-rr",
        "--target",
        &t(small.tcp_ports[0]),
        "--duration",
        "1s",
        "--requests",
        "20000",
        "--request-size",
        "32",
        "--response-size",
        "300",
        "--label",
        "small",
    ]);
    assert!(ok, "{e}");
    assert_clean(&v, "tcp-rr", &e);
    assert_eq!(v["label"], "small");

    // A count bound alone stops the run at exactly that many requests.
    let (ok, v, e) = run(&[
        "tcp-rr",
        "--target",
        &t(echo.tcp_ports[0]),
        "--requests",
        "500",
    ]);
    assert!(ok, "{e}");
    assert_clean(&v, "tcp-rr", &e);
    assert_eq!(v["ok"], 500, "{v}");
    assert_eq!(v["stopped_by"], "requests", "{v}");

    // tcp-connect: a new connection per request.
    let (ok, v, e) = run(&[
        "tcp-connect",
        "--target",
        &t(echo.tcp_ports[0]),
        "--duration",
        "1s",
        "--requests",
        "3000",
        "--concurrency",
        "4",
    ]);
    assert!(ok, "{e}");
    assert_clean(&v, "tcp-connect", &e);
    assert_latency(&v);

    // tcp-stream against the sink, and against echo (both directions).
    let (ok, v, e) = run(&[
        "tcp-stream",
        "--target",
        &t(sink.tcp_ports[0]),
        "--duration",
        "1s",
        "--streams",
        "2",
    ]);
    assert!(ok, "{e}");
    assert_clean(&v, "tcp-stream", &e);
    assert!(v["gbit_per_s"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["bytes_sent"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["bytes_received"], 0, "{v}");
    let (ok, v, e) = run(&[
        "tcp-stream",
        "--target",
        &t(echo.tcp_ports[0]),
        "--duration",
        "1s",
        "--echo",
    ]);
    assert!(ok, "{e}");
    assert_clean(&v, "tcp-stream", &e);
    assert_eq!(
        v["bytes_sent"], v["bytes_received"],
        "echo returns all: {v}"
    );

    // udp-rr against echo and small-response: no loss on loopback at this modest load.
    for (port, label) in [(echo.udp_ports[0], "echo"), (small.udp_ports[0], "small")] {
        let (ok, v, e) = run(&[
            "udp-rr",
            "--target",
            &t(port),
            "--duration",
            "1s",
            "--requests",
            "20000",
            "--flows",
            "3",
            "--window",
            "4",
            "--label",
            label,
        ]);
        assert!(ok, "{e}");
        assert_clean(&v, "udp-rr", &e);
        assert_latency(&v);
        assert_eq!(v["lost"], 0, "{v}");
        assert_eq!(v["loss_pct"].as_f64(), Some(0.0), "{v}");
        assert_eq!(v["late"], 0, "{v}");
        assert!(v["sent"].as_u64().unwrap() >= v["received"].as_u64().unwrap());
    }
}

#[test]
fn refused_targets_fail_fast_without_sending() {
    for args in [
        &["tcp-rr", "--target", "8.8.8.8:53"][..],
        &["tcp-connect", "--target", "8.8.8.8:53"][..],
        &["tcp-stream", "--target", "8.8.8.8:53"][..],
        &["udp-rr", "--target", "8.8.8.8:53"][..],
        &["udp-rr", "--target", "[2001:4860:4860::8888]:53"][..],
        &["tcp-rr", "--target", "172.32.0.1:80"][..],
        // A name other than localhost is not even resolved without --force.
        &["tcp-rr", "--target", "example.com:80"][..],
    ] {
        let started = Instant::now();
        let out = Command::new(BIN)
            .args(args)
            .args(["--duration", "5s"])
            .output()
            .expect("run vipd-bench");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was not refused");
        assert!(stderr.contains("refusing"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed a result");
        // Refusal is immediate: no connect attempt, no run of --duration.
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{args:?} took too long"
        );
    }
    let out = Command::new(BIN)
        .args(["serve", "--bind", "8.8.8.8", "--tcp-ports", "1"])
        .output()
        .expect("run vipd-bench");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing"));
}

#[test]
fn bad_arguments_are_clear_errors() {
    for (args, needle) in [
        (&["tcp-rr", "--target", "127.0.0.1:0"][..], "port 0"),
        (
            &["tcp-rr", "--target", "127.0.0.1:9", "--duration", "x"][..],
            "invalid duration",
        ),
        (
            &["udp-rr", "--target", "127.0.0.1:9", "--request-size", "8"][..],
            "request-size",
        ),
        (
            &["tcp-rr", "--target", "127.0.0.1:9", "--connections", "0"][..],
            "connections",
        ),
        (&["serve"][..], "--tcp-ports"),
    ] {
        let out = Command::new(BIN).args(args).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
