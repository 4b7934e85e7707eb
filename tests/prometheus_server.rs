//! A real Prometheus server (the Debian `prometheus` binary) scraping a real `vipd run`: the
//! target comes up, and a counter the test drove (TCP connections accepted by a frontend) reaches
//! the expected value in Prometheus's own query API.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::daemon::VipdProcess;
use support::{free_port, roundtrip, TaggedEchoServer, LOCALHOST, PATIENCE};

/// Prometheus takes a few seconds to start its TSDB and run the first scrapes.
const PROMETHEUS_PATIENCE: Duration = Duration::from_secs(60);

/// The connections the test makes through the frontend.
const CONNECTIONS: usize = 7;

/// `None` (after printing `skipped:`) when the tool is not installed outside CI; a failure in
/// CI, which must have it.
fn require_tool(program: &str, package: &str) -> Option<()> {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if found {
        return Some(());
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{program} is missing, and CI must run this test: install the Debian package {package} (.ci/run does)");
    }
    println!("skipped: {program} not installed (Debian package {package}; .ci/run installs it)");
    None
}

/// A Prometheus server this test started; stopped by its PID (SIGTERM, then SIGKILL).
struct PrometheusProcess {
    child: Child,
    listen: SocketAddr,
    log: std::path::PathBuf,
}

impl PrometheusProcess {
    fn start(dir: &Path, admin: SocketAddr) -> PrometheusProcess {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: vipd\n    static_configs:\n      - targets: [\"{admin}\"]\n"
            ),
        )
        .unwrap();
        let listen = SocketAddr::new(LOCALHOST, free_port(LOCALHOST));
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start prometheus");
        PrometheusProcess { child, listen, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path` on Prometheus's HTTP API; `None` until it answers with JSON.
    async fn api(&self, path: &str) -> Option<serde_json::Value> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let resp = client
            .get(format!("http://{}{path}", self.listen))
            .send()
            .await
            .ok()?;
        resp.json().await.ok()
    }

    /// Polls `check` on the API answer of `path` until it holds, for at most
    /// [`PROMETHEUS_PATIENCE`]; returns the last answer either way.
    async fn wait_for(
        &self,
        path: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> (bool, Option<serde_json::Value>) {
        let deadline = Instant::now() + PROMETHEUS_PATIENCE;
        let mut last = None;
        while Instant::now() < deadline {
            last = self.api(path).await;
            if last.as_ref().is_some_and(&check) {
                return (true, last);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        (false, last)
    }
}

impl Drop for PrometheusProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on the PID of a child this test started and has not yet reaped.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of the first series of an instant-query answer, as a number.
fn first_value(answer: &serde_json::Value) -> Option<f64> {
    answer["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_vipd_and_sees_the_connections_the_test_made() {
    if require_tool("prometheus", "prometheus").is_none() {
        return;
    }
    let backend = TaggedEchoServer::start("b1").await;
    let port = free_port(LOCALHOST);
    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path().join("apps.json");
    std::fs::write(
        &apps,
        serde_json::json!({"apps": [{
            "id": "/web",
            "portDefinitions": [{"port": port}],
            "tasks": [{"id": "web.1", "host": "127.0.0.1", "ports": [backend.addr.port()],
                       "state": "TASK_RUNNING"}],
        }]})
        .to_string(),
    )
    .unwrap();
    let vipd = VipdProcess::start(&[
        "run",
        "--apps",
        apps.to_str().unwrap(),
        "--bind-address",
        "127.0.0.1",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let admin = vipd
        .admin_addr(PATIENCE)
        .unwrap_or_else(|| panic!("no admin address; log:\n{}", vipd.log().join("\n")));
    let frontend: SocketAddr = (LOCALHOST, port).into();
    assert!(
        support::eventually_async(PATIENCE, || async {
            roundtrip(frontend, b"warm up").await.is_ok()
        })
        .await,
        "the frontend never served; vipd log:\n{}",
        vipd.log().join("\n")
    );
    for i in 1..CONNECTIONS {
        roundtrip(frontend, format!("connection {i}").as_bytes())
            .await
            .unwrap();
    }

    let prometheus = PrometheusProcess::start(dir.path(), admin);
    let (up, targets) = prometheus
        .wait_for("/api/v1/targets?state=active", |v| {
            v["data"]["activeTargets"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["health"] == "up"))
        })
        .await;
    assert!(
        up,
        "the vipd target never became up: {targets:?}\nprometheus log:\n{}",
        prometheus.log()
    );

    let query = format!("vipd_frontend_connections_total{{frontend=\"tcp:127.0.0.1:{port}\"}}");
    let path = format!(
        "/api/v1/query?query={}",
        query
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    );
    let (seen, answer) = prometheus
        .wait_for(&path, |v| first_value(v) == Some(CONNECTIONS as f64))
        .await;
    assert!(
        seen,
        "Prometheus never saw {CONNECTIONS} connections in {query}: {answer:?}\nprometheus log:\n{}",
        prometheus.log()
    );
    // The scrape target is the vipd this test started.
    let up_query = prometheus.api("/api/v1/query?query=up").await.unwrap();
    assert_eq!(first_value(&up_query), Some(1.0), "{up_query}");
    assert_eq!(
        up_query["data"]["result"][0]["metric"]["instance"],
        admin.to_string()
    );
}
