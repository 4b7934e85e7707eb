//! Routing-core benchmark at Marathon's documented ceiling: 2,000 apps / 50,000 tasks, generated in
//! code as the JSON bytes of `GET /v2/apps?embed=apps.tasks` (1.10 shape). Measures the parse
//! (`model::parse_apps_document`), the build (`table::build`) and the incremental build of one
//! changed app (`BuildCache::build`) separately.
//!
//! Mix per 20 apps: 10 host (2 ports, one `udp,tcp`), 5 container/bridge (1 mapping), 5 container
//! (IP-per-task; one mapping with a host port, one without). Every 10th app carries a named VIP,
//! every 20th an IP VIP; every 3rd has a MESOS_HTTP health check with results. Half the agents
//! are hostnames (resolved through `Resolved`), half IP literals.
//!
//! Each case is measured twice: wall-clock time (criterion's default) and the benchmark thread's
//! CPU time (`CLOCK_THREAD_CPUTIME_ID`), because the bench machine is shared and wall time there
//! includes waiting for a core.
//!
//! Run: `cargo bench --bench table`.

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use vipd::model::parse_apps_document;
use vipd::table::{build, BuildCache, BuildOptions, Resolved};

const APPS: usize = 2_000;
const TASKS_PER_APP: usize = 25;
const AGENTS: usize = 400;

fn agent(n: usize) -> String {
    if n % 2 == 0 {
        format!("10.{}.{}.{}", 1 + n / 65536, (n / 256) % 256, n % 256)
    } else {
        format!("agent-{n}.cluster.internal")
    }
}

fn labels_for(i: usize, port: usize) -> Value {
    let mut m = serde_json::Map::new();
    if i % 10 == 0 && port == 0 {
        m.insert("VIP_0".into(), json!(format!("/svc/app{i}:80")));
    }
    if i % 20 == 5 && port == 0 {
        m.insert(
            "VIP_0".into(),
            json!(format!("10.200.{}.{}:443", i / 256, i % 256)),
        );
    }
    Value::Object(m)
}

fn task(i: usize, t: usize, ports: &[u16], ip: Option<String>, health: bool) -> Value {
    let uuid = format!("{i:08x}-0000-4000-8000-{t:012x}");
    let app = format!("svc_app{i}");
    let host = agent((i * 7 + t * 13) % AGENTS);
    json!({
        "appId": format!("/svc/app{i}"),
        "id": format!("{app}.instance-{uuid}._app.1"),
        "host": host,
        "ports": ports,
        "servicePorts": [],
        "ipAddresses": ip.map(|ip| vec![json!({"ipAddress": ip, "protocol": "IPv4"})]).unwrap_or_default(),
        "healthCheckResults": if health {
            vec![json!({"alive": t % 11 != 0, "consecutiveFailures": 0, "firstSuccess": "2021-03-01T10:00:20.000Z",
                        "lastFailure": null, "lastSuccess": "2021-03-01T10:05:00.000Z", "lastFailureCause": null,
                        "instanceId": format!("{app}.instance-{uuid}")})]
        } else { vec![] },
        "localVolumes": [],
        "slaveId": format!("b1c2d3e4-0000-4000-8000-{:012x}-S1", t),
        "stagedAt": "2021-03-01T10:00:01.000Z",
        "startedAt": "2021-03-01T10:00:05.000Z",
        "state": if t % 50 == 49 { "TASK_KILLING" } else { "TASK_RUNNING" },
        "version": "2021-03-01T10:00:00.000Z",
        "role": "*"
    })
}

fn app(i: usize) -> Value {
    let health = i % 3 == 0;
    let sp = 10_000 + (i as u16) * 3;
    let hp = |t: usize, k: usize| 20_000 + ((i * 31 + t * 7 + k) % 12_000) as u16;
    let common = |v: &mut Value| {
        v["instances"] = json!(TASKS_PER_APP);
        v["cpus"] = json!(0.1);
        v["mem"] = json!(128);
        v["labels"] = if i % 4 == 0 {
            json!({"HAPROXY_0_BALANCE": "leastconn", "HAPROXY_GROUP": "external"})
        } else {
            json!({})
        };
        v["healthChecks"] = if health {
            json!([{"gracePeriodSeconds": 300, "intervalSeconds": 10, "maxConsecutiveFailures": 3, "portIndex": 0,
                    "timeoutSeconds": 5, "delaySeconds": 15, "protocol": "MESOS_HTTP", "path": "/health"}])
        } else {
            json!([])
        };
        v["version"] = json!("2021-03-01T10:00:00.000Z");
        v["upgradeStrategy"] = json!({"maximumOverCapacity": 1, "minimumHealthCapacity": 1});
        v["tasksStaged"] = json!(0);
        v["tasksRunning"] = json!(TASKS_PER_APP);
        v["deployments"] = json!([]);
    };
    let id = format!("/svc/app{i}");
    let mut v = match i % 20 {
        0..=9 => json!({
            "id": id,
            "cmd": "./serve",
            "networks": [{"mode": "host"}],
            "container": {"type": "MESOS", "volumes": []},
            "portDefinitions": [
                {"port": sp, "protocol": "tcp", "name": "http", "labels": labels_for(i, 0)},
                {"port": sp + 1, "protocol": "udp,tcp", "name": "dns", "labels": {}}
            ],
            "requirePorts": false,
            "tasks": (0..TASKS_PER_APP).map(|t| task(i, t, &[hp(t, 0), hp(t, 1)], None, health)).collect::<Vec<_>>()
        }),
        10..=14 => json!({
            "id": id,
            "networks": [{"mode": "container/bridge"}],
            "container": {"type": "DOCKER", "docker": {"image": "nginx:1.19", "forcePullImage": false, "parameters": [], "privileged": false},
                "volumes": [],
                "portMappings": [{"containerPort": 80, "hostPort": 0, "servicePort": sp, "protocol": "tcp", "name": "web", "labels": labels_for(i, 0)}]},
            "tasks": (0..TASKS_PER_APP).map(|t| task(i, t, &[hp(t, 0)], Some("172.17.0.2".into()), health)).collect::<Vec<_>>()
        }),
        _ => json!({
            "id": id,
            "networks": [{"mode": "container", "name": "dcos"}],
            "container": {"type": "MESOS", "volumes": [],
                "portMappings": [
                    {"containerPort": 8080, "hostPort": 0, "servicePort": sp, "protocol": "tcp", "name": "admin", "labels": labels_for(i, 0)},
                    {"containerPort": 9000, "servicePort": sp + 1, "protocol": "tcp", "name": "api", "labels": {}}
                ]},
            "tasks": (0..TASKS_PER_APP).map(|t| task(i, t, &[hp(t, 0)], Some(format!("9.{}.{}.{}", i / 256 % 256, i % 256, t)), health)).collect::<Vec<_>>()
        }),
    };
    common(&mut v);
    v
}

fn document() -> Vec<u8> {
    let apps: Vec<Value> = (0..APPS).map(app).collect();
    serde_json::to_vec(&json!({ "apps": apps })).unwrap()
}

fn resolved() -> Resolved {
    let mut r = Resolved::default();
    for n in (1..AGENTS).step_by(2) {
        r.hosts.insert(
            agent(n),
            Some(format!("10.128.{}.{}", n / 256, n % 256).parse().unwrap()),
        );
    }
    r
}

/// CPU time of the calling thread, in nanoseconds.
struct ThreadCpuTime;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is supported on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

struct NsFormatter;

impl ValueFormatter for NsFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = if typical >= 1e6 {
            (1e6, "ms cpu")
        } else if typical >= 1e3 {
            (1e3, "us cpu")
        } else {
            (1.0, "ns cpu")
        };
        for v in values {
            *v /= div;
        }
        unit
    }
    fn scale_throughputs(&self, _t: f64, _th: &Throughput, values: &mut [f64]) -> &'static str {
        for v in values {
            *v = 0.0;
        }
        "n/a"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns() - start
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &NsFormatter
    }
}

struct Inputs {
    doc: Vec<u8>,
    snap: vipd::model::AppsSnapshot,
    resolved: Resolved,
    opts: BuildOptions,
}

fn inputs() -> &'static Inputs {
    static INPUTS: std::sync::OnceLock<Inputs> = std::sync::OnceLock::new();
    INPUTS.get_or_init(|| {
        let doc = document();
        let snap = parse_apps_document(&doc).unwrap();
        let tasks: usize = snap.apps.iter().map(|a| a.tasks.len()).sum();
        assert_eq!((snap.apps.len(), tasks), (APPS, APPS * TASKS_PER_APP));
        let resolved = resolved();
        let opts = BuildOptions::default();
        let built = build(&snap, &resolved, &opts);
        let backends: usize = built.frontends.iter().map(|f| f.backends.len()).sum();
        assert!(built.warnings.is_empty(), "{:?}", &built.warnings[..3]);
        eprintln!(
            "document {} MiB, {} apps, {} tasks -> {} frontends, {} backends",
            doc.len() / (1 << 20),
            snap.apps.len(),
            tasks,
            built.frontends.len(),
            backends
        );
        Inputs {
            doc,
            snap,
            resolved,
            opts,
        }
    })
}

fn cases<M: Measurement>(c: &mut Criterion<M>, group: &str) {
    let inp = inputs();
    let mut g = c.benchmark_group(group);
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    // The outputs are dropped outside the timed section (`iter_with_large_drop`); freeing them is
    // measured on its own below, because in vipd it happens elsewhere (the snapshot when the
    // next one replaces it, the table when its last reader lets go).
    g.bench_function("parse_2000_apps_50000_tasks", |b| {
        b.iter_with_large_drop(|| parse_apps_document(black_box(&inp.doc)).unwrap())
    });
    g.bench_function("build_2000_apps_50000_tasks", |b| {
        b.iter_with_large_drop(|| {
            build(
                black_box(&inp.snap),
                black_box(&inp.resolved),
                black_box(&inp.opts),
            )
        })
    });
    // What an event costs: one app replaced (a new `Arc`, as `apply_event` gives), the other
    // 1,999 parts reused from the cache.
    g.bench_function("build_incremental_one_app_changed", |b| {
        let mut cache = BuildCache::new();
        let mut snap = inp.snap.clone();
        cache.build(&snap, &inp.resolved, &inp.opts);
        let mut flip = false;
        b.iter_with_large_drop(|| {
            flip = !flip;
            let i = APPS / 2;
            let mut app = (*snap.apps[i]).clone();
            app.tasks[0].ports[0] = if flip { 40001 } else { 40002 };
            snap.apps[i] = Arc::new(app);
            let built = cache.build(black_box(&snap), &inp.resolved, &inp.opts);
            assert_eq!(cache.last_stats().computed, 1);
            built
        })
    });
    g.bench_function("drop_snapshot", |b| {
        b.iter_batched(
            || parse_apps_document(&inp.doc).unwrap(),
            drop,
            criterion::BatchSize::PerIteration,
        )
    });
    g.bench_function("drop_table", |b| {
        b.iter_batched(
            || build(&inp.snap, &inp.resolved, &inp.opts),
            drop,
            criterion::BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn wall(c: &mut Criterion) {
    cases(c, "table_wall");
}

fn cpu(c: &mut Criterion<ThreadCpuTime>) {
    cases(c, "table_cpu");
}

criterion_group!(wall_benches, wall);
criterion_group! {
    name = cpu_benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = cpu
}
criterion_main!(wall_benches, cpu_benches);
