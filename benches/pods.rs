//! Pods at scale: 2,000 apps / 50,000 tasks plus 1,000 pods × 10 instances × 2 containers
//! (20,000 container tasks) in one snapshot. Measures the whole parse
//! (`model::parse_apps_document` of `{"apps":[…],"pods":[…]}`), the full build
//! (`table::build`), and a pod container event (`status_update_event` TASK_RUNNING of a new
//! instance) to the table that would be published: `apply_event` on the snapshot, then
//! `BuildCache::hosts_to_resolve` and `BuildCache::build` (the control loop's pure part; no
//! sockets). Reports min / median / p99 / max over the runs.
//!
//! Pods: host networking, two containers (`web` with an `["udp","tcp"]` endpoint carrying a named
//! VIP, `side` with a tcp endpoint carrying an IP VIP every 4th pod), agents as for the apps.
//!
//! Run: `cargo bench --bench pods` (a plain timing loop, not criterion). Under `cargo test`
//! (no `--bench` argument) it runs once at 1/100 of the size, as a smoke test.

use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vipd::model::parse_apps_document;
use vipd::source::marathon::apply::apply_event;
use vipd::source::marathon::events::parse_event;
use vipd::table::{build, BuildCache, BuildOptions, Resolved};

const TASKS_PER_APP: usize = 25;
/// `VIPD_BENCH_PODS=0` measures the same apps without pods (the baseline under the same load).
fn pods_count(quick: bool) -> usize {
    std::env::var("VIPD_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 10 } else { 1_000 })
}

/// `cargo bench` passes `--bench`; `cargo test` does not.
fn quick() -> bool {
    !std::env::args().any(|a| a == "--bench")
}
const INSTANCES: usize = 10;
const AGENTS: usize = 400;

fn agent(n: usize) -> String {
    if n % 2 == 0 {
        format!("10.{}.{}.{}", 1 + n / 65536, (n / 256) % 256, n % 256)
    } else {
        format!("agent-{n}.cluster.internal")
    }
}

fn app(i: usize) -> Value {
    let tasks: Vec<Value> = (0..TASKS_PER_APP)
        .map(|t| {
            json!({
                "id": format!("svc_app{i}.instance-{i:08x}-0000-4000-8000-{t:012x}._app.1"),
                "appId": format!("/svc/app{i}"), "host": agent((i * 7 + t * 13) % AGENTS),
                "ports": [31000 + (t as u16) * 2, 31001 + (t as u16) * 2], "ipAddresses": [],
                "healthCheckResults": [], "state": "TASK_RUNNING",
                "version": "2021-03-01T10:00:00.000Z", "startedAt": "2021-03-01T10:00:05.000Z"
            })
        })
        .collect();
    let mut labels = serde_json::Map::new();
    if i % 10 == 0 {
        labels.insert("VIP_0".into(), json!(format!("/svc/app{i}:80")));
    }
    json!({
        "id": format!("/svc/app{i}"), "version": "2021-03-01T10:00:00.000Z",
        "networks": [{"mode": "host"}],
        "portDefinitions": [
            {"port": 10000 + (i as u16) * 3, "protocol": "tcp", "name": "http", "labels": labels},
            {"port": 10001 + (i as u16) * 3, "protocol": "udp,tcp", "name": "dns", "labels": {}}
        ],
        "healthChecks": [], "tasks": tasks
    })
}

fn instance_id(p: usize, n: usize) -> String {
    format!("svc_pod{p}.instance-{p:08x}-1111-4000-8000-{n:012x}")
}

fn pod(p: usize) -> Value {
    let instances: Vec<Value> = (0..INSTANCES)
        .map(|n| {
            let id = instance_id(p, n);
            let host = agent((p * 11 + n * 17) % AGENTS);
            let port = 32000 + (n as u16) * 2;
            json!({
                "id": id, "status": "STABLE", "agentHostname": host,
                "agentZone": "zone-a", "networks": [{"addresses": [host]}],
                "containers": [
                    {"name": "web", "status": "TASK_RUNNING", "conditions": [
                        {"name": "healthy", "value": "true", "reason": "health-reported-by-mesos"}],
                     "containerId": format!("{id}.web.1"),
                     "endpoints": [{"name": "http", "allocatedHostPort": port, "healthy": true}]},
                    {"name": "side", "status": "TASK_RUNNING", "conditions": [],
                     "containerId": format!("{id}.side.1"),
                     "endpoints": [{"name": "metrics", "allocatedHostPort": port + 1}]}
                ]
            })
        })
        .collect();
    let side_labels = if p % 4 == 0 {
        json!({"VIP_0": format!("10.201.{}.{}:9100", p / 256, p % 256)})
    } else {
        json!({})
    };
    json!({
        "id": format!("/svc/pod{p}"),
        "spec": {
            "id": format!("/svc/pod{p}"), "version": "2021-03-01T10:00:00.000Z",
            "containers": [
                {"name": "web", "resources": {"cpus": 0.5, "mem": 256},
                 "endpoints": [{"name": "http", "hostPort": 0, "protocol": ["udp", "tcp"],
                                "labels": {"VIP_0": format!("/svc/pod{p}:80")}}],
                 "healthCheck": {"http": {"endpoint": "http", "path": "/health"}, "intervalSeconds": 10}},
                {"name": "side", "resources": {"cpus": 0.1, "mem": 64},
                 "endpoints": [{"name": "metrics", "hostPort": 0, "protocol": ["tcp"], "labels": side_labels}]}
            ],
            "networks": [{"mode": "host"}]
        },
        "status": "STABLE", "instances": instances
    })
}

fn resolved() -> Resolved {
    let mut r = Resolved::default();
    for n in (1..AGENTS).step_by(2) {
        r.hosts.insert(
            agent(n),
            Some(std::net::IpAddr::from([
                10,
                100,
                (n / 256) as u8,
                (n % 256) as u8,
            ])),
        );
    }
    r
}

fn stats(what: &str, mut v: Vec<Duration>) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{what}: n={} min={:.2?} median={:.2?} p99={:.2?} max={:.2?}",
        v.len(),
        v[0],
        at(0.5),
        at(0.99),
        v[v.len() - 1]
    );
}

fn main() {
    let quick = quick();
    let apps_n: usize = if quick { 20 } else { 2_000 };
    let runs = if quick { 1 } else { 7 };
    let apps: Vec<Value> = (0..apps_n).map(app).collect();
    let pods_n = pods_count(quick);
    let pods: Vec<Value> = (0..pods_n).map(pod).collect();
    let body = serde_json::to_vec(&json!({"apps": apps, "pods": pods})).unwrap();
    drop((apps, pods));
    println!(
        "document: {} bytes, {apps_n} apps / {} tasks, {pods_n} pods / {} container tasks",
        body.len(),
        apps_n * TASKS_PER_APP,
        pods_n * INSTANCES * 2
    );
    let opts = BuildOptions::default();
    let r = resolved();

    let mut parse = Vec::new();
    let mut snapshot = None;
    for _ in 0..runs {
        let t = Instant::now();
        let s = parse_apps_document(&body).unwrap();
        parse.push(t.elapsed());
        snapshot = Some(s);
    }
    let snapshot = Arc::new(snapshot.unwrap());
    assert_eq!(snapshot.pods.len(), pods_n);
    stats("parse (apps + pods)", parse);

    let mut full = Vec::new();
    let mut frontends = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let b = build(&snapshot, &r, &opts);
        full.push(t.elapsed());
        frontends = b.frontends.len();
    }
    stats(&format!("build ({frontends} frontends)"), full);

    // Pod container events → table, through the cache, as the control loop runs it.
    let mut cache = BuildCache::new();
    let mut current = Arc::clone(&snapshot);
    cache.build(&current, &r, &opts);
    let mut per_event = Vec::new();
    let events = match (pods_n, quick) {
        (0, _) => 0,
        (_, true) => 5,
        _ => 300,
    };
    for e in 0..events {
        let p = (e * 37) % pods_n;
        let inst = format!("svc_pod{p}.instance-{p:08x}-2222-4000-8000-{e:012x}");
        let data = json!({
            "eventType": "status_update_event", "taskId": format!("{inst}.web.1"),
            "appId": format!("/svc/pod{p}"), "taskStatus": "TASK_RUNNING",
            "host": agent(e % AGENTS), "ports": [33000 + e as u16], "ipAddresses": [],
            "version": "2021-03-01T10:00:00.000Z"
        })
        .to_string();
        let t = Instant::now();
        let event = parse_event(Some("status_update_event"), &data).unwrap();
        let fx = apply_event(&mut current, &event);
        assert!(fx.changed);
        let hosts = cache.hosts_to_resolve(&current);
        std::hint::black_box(hosts);
        let built = cache.build(&current, &r, &opts);
        per_event.push(t.elapsed());
        std::hint::black_box(built);
        let stats = cache.last_stats();
        assert_eq!(stats.computed, 1, "one pod recomputed");
    }
    if !per_event.is_empty() {
        stats(
            "pod container event -> table (apply + incremental build)",
            per_event,
        );
    }
}
