//! The admin server of a real `vipd run`: readiness, metrics (checked by the real `promtool`),
//! `/v1/vips` following the table, and `/v1/config` without secrets.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::daemon::{http_get, VipdProcess};
use support::{free_port, roundtrip, TaggedEchoServer, LOCALHOST, PATIENCE};

fn app(id: &str, service_port: u16, backends: &[SocketAddr]) -> serde_json::Value {
    let tasks: Vec<_> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            serde_json::json!({
                "id": format!("{}.{i:08}-0000-0000-0000-000000000000", id.trim_start_matches('/')),
                "host": b.ip().to_string(), "ports": [b.port()], "state": "TASK_RUNNING",
            })
        })
        .collect();
    serde_json::json!({"id": id, "portDefinitions": [{"port": service_port}], "tasks": tasks})
}

fn doc(apps: Vec<serde_json::Value>) -> String {
    serde_json::json!({ "apps": apps }).to_string()
}

fn start(path: &std::path::Path, extra: &[&str]) -> (VipdProcess, SocketAddr) {
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
        .admin_addr(PATIENCE)
        .unwrap_or_else(|| panic!("no admin address; log:\n{}", vipd.log().join("\n")));
    (vipd, admin)
}

async fn wait_status(url: &str, want: u16) -> bool {
    support::eventually_async(PATIENCE, || async move { http_get(url).await.0 == want }).await
}

/// Value of the first sample whose line starts with `prefix` (name plus labels).
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_until_the_first_publish_then_200() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    // A file that does not parse yet: nothing can be published. (A missing file is a startup
    // error since issue 20 finding 6.)
    std::fs::write(&path, "not an apps document yet").unwrap();
    let (_vipd, admin) = start(&path, &[]);
    let (status, body) = http_get(&format!("http://{admin}/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(http_get(&format!("http://{admin}/healthz")).await.0, 200);

    let backend = TaggedEchoServer::start("b1").await;
    std::fs::write(
        &path,
        doc(vec![app("/a", free_port(LOCALHOST), &[backend.addr])]),
    )
    .unwrap();
    assert!(wait_status(&format!("http://{admin}/readyz"), 200).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_counters_move_with_traffic() {
    let backend = TaggedEchoServer::start("b1").await;
    let port = free_port(LOCALHOST);
    // A UDP echo backend and a UDP app, so the UDP families are exported (and linted) too.
    let udp_backend = tokio::net::UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let udp_backend_addr = udp_backend.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = udp_backend.recv_from(&mut buf).await {
            let _ = udp_backend.send_to(&buf[..n], from).await;
        }
    });
    let udp_port = free_port(LOCALHOST);
    let mut udp_app = app("/u", udp_port, &[udp_backend_addr]);
    udp_app["portDefinitions"][0]["protocol"] = "udp".into();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    std::fs::write(&path, doc(vec![app("/a", port, &[backend.addr]), udp_app])).unwrap();
    let (_vipd, admin) = start(&path, &[]);
    assert!(wait_status(&format!("http://{admin}/readyz"), 200).await);
    let url = format!("http://{admin}/metrics");

    let client = tokio::net::UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    client.connect((LOCALHOST, udp_port)).await.unwrap();
    let mut reply = [0u8; 64];
    let echoed = tokio::time::timeout(PATIENCE, async {
        loop {
            client.send(b"udp metrics").await.unwrap();
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(200), client.recv(&mut reply)).await
            {
                return n;
            }
        }
    })
    .await
    .expect("no UDP echo through vipd");
    assert_eq!(&reply[..echoed], b"udp metrics");
    let udp_in = format!(
        "vipd_frontend_udp_datagrams_total{{frontend=\"udp:127.0.0.1:{udp_port}\",direction=\"in\"}}"
    );
    let udp_created = format!(
        "vipd_frontend_udp_flows_total{{frontend=\"udp:127.0.0.1:{udp_port}\",event=\"created\"}}"
    );

    let frontend = format!("vipd_frontend_connections_total{{frontend=\"tcp:127.0.0.1:{port}\"}}");
    let bytes = format!(
        "vipd_backend_bytes_total{{backend=\"{}\",protocol=\"tcp\",direction=\"to_backend\"}}",
        backend.addr
    );
    let (_, before) = http_get(&url).await;
    assert_eq!(sample(&before, &frontend), Some(0.0), "{before}");
    assert_eq!(sample(&before, "vipd_table_generation"), Some(1.0));

    for _ in 0..5 {
        roundtrip((LOCALHOST, port).into(), b"hello metrics")
            .await
            .unwrap();
    }
    // Counters are read at scrape time; the relay updates them as bytes flow.
    let moved = {
        let (url, frontend, bytes) = (&url, &frontend, &bytes);
        support::poll_until(PATIENCE, || async move {
            let (_, m) = http_get(url).await;
            let moved =
                sample(&m, frontend) == Some(5.0) && sample(&m, bytes).unwrap_or(0.0) >= 65.0;
            moved.then_some(m)
        })
        .await
    };
    let Some(after) = moved else {
        panic!("counters did not move:\n{}", http_get(&url).await.1);
    };
    assert!(sample(&after, "vipd_table_build_duration_seconds_count").unwrap() >= 1.0);
    assert!(sample(&after, &udp_in).unwrap_or(0.0) >= 1.0, "{after}");
    assert_eq!(sample(&after, &udp_created), Some(1.0), "{after}");
    let healthy = format!(
        "vipd_backend_health{{backend=\"{}\",protocol=\"tcp\",state=\"healthy\"}}",
        backend.addr
    );
    assert_eq!(sample(&after, &healthy), Some(1.0), "{after}");
    assert!(after.contains("vipd_backend_ejections_total"));
    assert!(after.contains("process_resident_memory_bytes"));
    assert!(after.contains("vipd_frontend_listener_up"));

    // Every metric the example dashboard queries is exported (a rename must update it).
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/grafana-dashboard.json"
    ))
    .unwrap();
    let names: std::collections::BTreeSet<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("vipd_"))
        .collect();
    assert!(names.len() >= 8, "{names:?}");
    for name in names {
        assert!(
            after.lines().any(|l| l.starts_with(name)),
            "dashboard uses {name}, which /metrics does not export"
        );
    }

    // The real promtool lints the exposition.
    let Ok(mut promtool) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        println!(
            "skipped: promtool not installed (Debian package prometheus; .ci/run installs it)"
        );
        return;
    };
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(after.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_vips_reflects_a_table_change() {
    let backend = TaggedEchoServer::start("b1").await;
    let (pa, pb) = (free_port(LOCALHOST), free_port(LOCALHOST));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    std::fs::write(&path, doc(vec![app("/a", pa, &[backend.addr])])).unwrap();
    let (_vipd, admin) = start(&path, &[]);
    assert!(wait_status(&format!("http://{admin}/readyz"), 200).await);
    let url = format!("http://{admin}/v1/vips");
    let v: serde_json::Value = serde_json::from_str(&http_get(&url).await.1).unwrap();
    assert_eq!(v["generation"], 1);
    assert_eq!(v["frontends"].as_array().unwrap().len(), 1);
    let f = &v["frontends"][0];
    assert_eq!(f["listen"], format!("127.0.0.1:{pa}"));
    assert_eq!(f["kind"], "service_port");
    assert_eq!(f["listener"]["state"], "bound");
    assert_eq!(f["backends"][0]["address"], backend.addr.to_string());
    assert_eq!(f["backends"][0]["state"], "up");
    assert!(f["backends"][0]["runtime"]["active"].is_number());

    roundtrip((LOCALHOST, pa).into(), b"x").await.unwrap();
    std::fs::write(
        &path,
        doc(vec![
            app("/a", pa, &[backend.addr]),
            app("/b", pb, &[backend.addr]),
        ]),
    )
    .unwrap();
    let url = &url;
    let generation_2 = support::poll_until(PATIENCE, || async move {
        let v: serde_json::Value = serde_json::from_str(&http_get(url).await.1).unwrap();
        (v["generation"] == 2).then_some(v)
    })
    .await;
    let Some(v) = generation_2 else {
        panic!("no generation 2: {}", http_get(url).await.1);
    };
    let listens: Vec<_> = v["frontends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["listen"].as_str().unwrap().to_string())
        .collect();
    assert!(listens.contains(&format!("127.0.0.1:{pb}")), "{v}");
    assert_eq!(
        v["frontends"][0]["backends"][0]["runtime"]["total"], 1,
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_config_shows_effective_values_and_their_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    std::fs::write(&path, doc(vec![])).unwrap();
    let (_vipd, admin) = start(&path, &["--connect-timeout", "750ms"]);
    let (status, body) = http_get(&format!("http://{admin}/v1/config")).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["connect_timeout"]["value"], "750ms");
    assert_eq!(v["connect_timeout"]["source"], "command_line");
    assert_eq!(v["vip_cidr"]["source"], "default");
}
