//! Marathon source costs at 2,000 apps / 50,000 tasks:
//! - `event_apply`: parse one `status_update_event` data line and apply it to the current
//!   snapshot, producing the new snapshot (the previous one stays shared, as the watch channel
//!   holds it), i.e. the source's part of event→publish.
//! - `full_resync_fetch_parse`: `GET /v2/apps?embed=apps.tasks` from a fake Marathon on loopback,
//!   body read and parsed (the source's part of a full resync).
//! - `full_resync/parse_only`: `model::parse_apps_document` alone on the same body.
//! - `full_resync_carry_and_compare`: the leader-failover health carry and the "unchanged?"
//!   comparison the source runs on each full snapshot.
//!
//! Run: `cargo bench --bench marathon`

#[path = "../tests/support/mod.rs"]
mod support;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use support::fake_marathon;
use vipd::control::resolve::HostResolver;
use vipd::control::{ControlLoop, FollowTable, Outcome};
use vipd::model::parse_apps_document;
use vipd::source::marathon::apply::{apply_event, carry_forward_health, share_unchanged_apps};
use vipd::source::marathon::client::MarathonClient;
use vipd::source::marathon::events::parse_event;
use vipd::source::marathon::MarathonConfig;
use vipd::source::{Origin, SourceSnapshot};

const APPS: usize = 2_000;
const TASKS_PER_APP: usize = 25;

fn uuid(app: usize, task: usize) -> String {
    format!("{app:08x}-{task:04x}-4000-8000-{:012x}", app * 1000 + task)
}

fn big_doc() -> serde_json::Value {
    let apps: Vec<serde_json::Value> = (0..APPS)
        .map(|a| {
            let id = format!("/group{}/app{a}", a % 20);
            let part = id.trim_start_matches('/').replace('/', "_");
            let tasks: Vec<serde_json::Value> = (0..TASKS_PER_APP)
                .map(|t| {
                    serde_json::json!({
                        "id": format!("{part}.instance-{}._app.1", uuid(a, t)),
                        "appId": id, "host": format!("10.1.{}.{}", t, a % 250),
                        "ports": [31000 + t], "servicePorts": [], "state": "TASK_RUNNING",
                        "ipAddresses": [{"ipAddress": format!("10.1.{}.{}", t, a % 250), "protocol": "IPv4"}],
                        "stagedAt": "2024-01-01T00:00:00.000Z", "startedAt": "2024-01-01T00:00:01.000Z",
                        "version": "2024-01-01T00:00:00.000Z", "localVolumes": [],
                        "healthCheckResults": [{"alive": true, "consecutiveFailures": 0,
                            "firstSuccess": "2024-01-01T00:00:05.000Z", "lastSuccess": "2024-01-01T00:01:05.000Z",
                            "lastFailure": null, "lastFailureCause": null,
                            "instanceId": format!("{part}.instance-{}", uuid(a, t))}]
                    })
                })
                .collect();
            serde_json::json!({
                "id": id, "instances": TASKS_PER_APP, "cpus": 0.1, "mem": 128,
                "version": "2024-01-01T00:00:00.000Z",
                "networks": [{"mode": "host"}],
                "portDefinitions": [{"port": 10000 + a, "protocol": "tcp", "name": "http", "labels": {"VIP_0": format!("/app{a}:80")}}],
                "requirePorts": false,
                "healthChecks": [{"protocol": "MESOS_HTTP", "portIndex": 0, "path": "/health"}],
                "labels": {"team": "bench"},
                "tasks": tasks
            })
        })
        .collect();
    serde_json::json!({ "apps": apps })
}

/// One event end to end: parse the SSE data line, apply it to `current`, and run the control
/// loop's pass (resolve, build, diff, publish, followers). Returns the time from receipt.
fn event_pass<F: FollowTable>(
    rt: &tokio::runtime::Runtime,
    control: &mut ControlLoop<HostResolver, F>,
    data: &str,
    current: &mut Arc<vipd::model::AppsSnapshot>,
) -> Duration {
    let received = Instant::now();
    let event = parse_event(Some("status_update_event"), data).unwrap();
    let fx = apply_event(current, &event);
    assert!(fx.changed);
    let source = SourceSnapshot {
        apps: current.clone(),
        origin: Origin::MarathonEvent,
        observed_at: received,
    };
    let outcome = rt.block_on(control.handle(&source));
    assert!(matches!(outcome, Outcome::Published { .. }));
    received.elapsed()
}

fn benches(c: &mut Criterion) {
    let doc = big_doc();
    let body = doc.to_string();
    println!(
        "apps document: {} apps, {} tasks, {:.1} MB",
        APPS,
        APPS * TASKS_PER_APP,
        body.len() as f64 / 1e6
    );
    let snapshot = Arc::new(parse_apps_document(body.as_bytes()).unwrap());

    // --- event apply ---
    let app_i = APPS / 2;
    let id = format!("/group{}/app{app_i}", app_i % 20);
    let part = id.trim_start_matches('/').replace('/', "_");
    let task_id = format!("{part}.instance-{}._app.1", uuid(app_i, 7));
    let line = |port: u16| {
        serde_json::json!({
            "slaveId": "agent-1", "taskId": task_id, "taskStatus": "TASK_RUNNING", "message": "",
            "appId": id, "host": "10.9.9.9", "ipAddresses": [{"ipAddress": "10.9.9.9", "protocol": "IPv4"}],
            "ports": [port], "version": "2024-01-01T00:00:00.000Z",
            "eventType": "status_update_event", "timestamp": "2024-01-01T00:00:02.000Z"
        })
        .to_string()
    };
    let (l1, l2) = (line(32001), line(32002));
    let mut flip = false;
    c.bench_function("event_apply/status_update_2000_apps_50000_tasks", |b| {
        let mut current = snapshot.clone();
        b.iter(|| {
            flip = !flip;
            let data = if flip { &l1 } else { &l2 };
            let event = parse_event(Some("status_update_event"), data).unwrap();
            // `held` plays the watch channel's copy of the previous snapshot.
            let held = current.clone();
            let fx = apply_event(&mut current, &event);
            assert!(fx.changed);
            drop(held);
        })
    });

    // A new task (push) rather than an update.
    c.bench_function("event_apply/new_task_2000_apps_50000_tasks", |b| {
        let new_task = format!("{part}.instance-{}._app.1", uuid(999_999, 1));
        let data = line(32003).replace(&task_id, &new_task);
        b.iter_batched(
            || snapshot.clone(),
            |mut current| {
                let event = parse_event(Some("status_update_event"), &data).unwrap();
                let fx = apply_event(&mut current, &event);
                assert!(fx.changed);
                current
            },
            BatchSize::SmallInput,
        )
    });

    // --- full resync ---
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fake = rt.block_on(fake_marathon::FakeMarathon::start(doc));
    let mut cfg = MarathonConfig::new(&[&fake.url()]).unwrap();
    cfg.request_timeout = Duration::from_secs(60);
    let client = rt.block_on(async { MarathonClient::new(&cfg).unwrap() });
    let mut group = c.benchmark_group("full_resync");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("fetch_parse_2000_apps_50000_tasks", |b| {
        b.iter(|| {
            let f = rt.block_on(client.fetch_apps()).unwrap();
            assert_eq!(f.snapshot.apps.len(), APPS);
            f
        })
    });
    group.bench_function("parse_only_2000_apps_50000_tasks", |b| {
        b.iter(|| parse_apps_document(body.as_bytes()).unwrap())
    });
    // After a failover: every result gone, all 50,000 carried forward, then compared.
    let mut no_health = big_doc();
    for app in no_health["apps"].as_array_mut().unwrap() {
        for t in app["tasks"].as_array_mut().unwrap() {
            t["healthCheckResults"] = serde_json::json!([]);
        }
    }
    let no_health = parse_apps_document(no_health.to_string().as_bytes()).unwrap();
    group.bench_function("carry_health_and_compare_50000_tasks_after_failover", |b| {
        b.iter_batched(
            // Unshared apps, as a fresh parse gives them (deep copy outside the timing).
            || vipd::model::AppsSnapshot {
                apps: no_health
                    .apps
                    .iter()
                    .map(|a| Arc::new((**a).clone()))
                    .collect(),
                rejected: Vec::new(),
                ..Default::default()
            },
            |mut next| {
                let n = carry_forward_health(&snapshot, &mut next);
                assert_eq!(n, APPS * TASKS_PER_APP);
                assert!(next == *snapshot);
                next
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("compare_unchanged_50000_tasks", |b| {
        let same = (*snapshot).clone();
        b.iter(|| assert!(same == *snapshot))
    });
    group.finish();

    // The end-to-end printout below is a measurement, not a smoke test: under `cargo test`
    // (criterion's test mode, a debug build) it is skipped.
    if !std::env::args().any(|a| a == "--bench") {
        drop(fake);
        return;
    }

    // --- end to end through the control loop: event → new snapshot → resolve → build → compare →
    // publish (one ArcSwap store). Followers (listener reconcile) are not included: they only
    // diff listeners and return. Every iteration changes one backend, so every pass publishes.
    let mut control = ControlLoop::new(
        vipd::published::channel().0,
        HostResolver::new(Default::default()),
        vipd::table::BuildOptions::default(),
        (),
    );
    let mut current = snapshot.clone();
    let mut breakdown: Vec<(Duration, Duration)> = Vec::new();
    let mut pass = |data: &str, current: &mut Arc<vipd::model::AppsSnapshot>| {
        let took = event_pass(&rt, &mut control, data, current);
        let t = control.last_timings;
        breakdown.push((t.resolve, t.build));
        took
    };
    pass(&l1, &mut current); // first publish
    let mut samples: Vec<Duration> = (0..60)
        .map(|i| pass(if i % 2 == 0 { &l2 } else { &l1 }, &mut current))
        .collect();
    samples.sort();
    breakdown.sort_by_key(|(r, b)| *r + *b);
    let (r, b) = breakdown[breakdown.len() / 2];
    println!(
        "event_to_publish breakdown (median pass): resolve {:.1} ms, build {:.1} ms",
        r.as_secs_f64() * 1e3,
        b.as_secs_f64() * 1e3
    );
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    println!(
        "event_to_publish (2,000 apps / 50,000 tasks, 60 events): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3
    );

    // The same events with the data plane following the table: the pass ends when the listener
    // manager has reconciled (selectors updated, runtime state pruned), i.e. when the new task is
    // selectable. 4,000 listeners on loopback: service ports on 127.0.0.1 (10000–11999), named
    // VIPs drawn from 127.64.0.0/16 (all of 127/8 is local on Linux, so no address is added).
    {
        let (publisher, reader) = vipd::published::channel();
        let dataplane =
            rt.block_on(async { vipd::dataplane::Dataplane::new(Default::default(), reader) });
        let opts = vipd::table::BuildOptions {
            bind_address: [127, 0, 0, 1].into(),
            vip_cidr: "127.64.0.0/16".parse().unwrap(),
            ..Default::default()
        };
        let mut control = ControlLoop::new(
            publisher,
            HostResolver::new(Default::default()),
            opts,
            dataplane,
        );
        let mut pass = |data: &str, current: &mut Arc<vipd::model::AppsSnapshot>| {
            event_pass(&rt, &mut control, data, current)
        };
        let first = pass(&l2, &mut current); // opens the 4,000 listeners
        let mut samples: Vec<Duration> = (0..60)
            .map(|i| pass(if i % 2 == 0 { &l1 } else { &l2 }, &mut current))
            .collect();
        samples.sort();
        let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
        println!(
            "event_to_selectable (with the data plane following; first pass, opening 4,000 listeners: {:.0} ms): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            first.as_secs_f64() * 1e3,
            pct(0.5).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            samples.last().unwrap().as_secs_f64() * 1e3
        );
        rt.block_on(async move {
            let dataplane = control.into_followers();
            dataplane.shutdown(Duration::from_secs(1)).await;
        });
    }

    // Full resync end to end: fetch + parse + health carry + share unchanged apps + resolve +
    // build + compare + publish.
    let mut previous = current.clone();
    let mut resync: Vec<Duration> = (0..10)
        .map(|i| {
            let started = Instant::now();
            let f = rt.block_on(client.fetch_apps()).unwrap();
            let mut apps = f.snapshot;
            // Force a change so the pass publishes (alternate one task's port).
            let task = &mut Arc::make_mut(&mut apps.apps[0]).tasks[0];
            task.ports = vec![40000 + i as u16];
            // What the source does with every full snapshot: unchanged apps keep their Arc.
            carry_forward_health(&previous, &mut apps);
            share_unchanged_apps(&previous, &mut apps);
            let apps = Arc::new(apps);
            previous = Arc::clone(&apps);
            let source = SourceSnapshot {
                apps,
                origin: Origin::MarathonFull,
                observed_at: started,
            };
            let outcome = rt.block_on(control.handle(&source));
            assert!(matches!(outcome, Outcome::Published { .. }));
            started.elapsed()
        })
        .collect();
    resync.sort();
    println!(
        "full_resync_to_publish (fetch, parse, share unchanged apps, build, publish; 10 runs): median {:.0} ms, max {:.0} ms",
        resync[resync.len() / 2].as_secs_f64() * 1e3,
        resync.last().unwrap().as_secs_f64() * 1e3
    );
    drop(fake);
}

criterion_group!(marathon, benches);
criterion_main!(marathon);
