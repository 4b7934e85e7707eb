//! Property tests: `table::build` never panics on Marathon-like JSON (right types, wrong types,
//! nulls, missing keys), is deterministic, and does not depend on the order of apps; and the
//! incremental `BuildCache::build` always equals `build`.

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use vipd::model::parse_apps_document;
use vipd::table::{build, BuildCache, BuildOptions, Resolved};

/// Any small JSON value: the "wrong type" generator.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        "[a-zA-Z0-9/:._ -]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,6}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Usually `good`, sometimes missing (`None`), `null`, or a wrong-typed value.
fn field(good: impl Strategy<Value = Value> + 'static) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        40 => good.prop_map(Some),
        8 => Just(None),
        3 => Just(Some(Value::Null)),
        1 => any_json().prop_map(Some),
    ]
}

fn obj(fields: Vec<(&'static str, Option<Value>)>) -> Value {
    let mut m = Map::new();
    for (k, v) in fields {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    }
    Value::Object(m)
}

fn port_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => Just(json!(0)),
        20 => (10000u16..10006).prop_map(|p| json!(p)),
        20 => (31000u16..31010).prop_map(|p| json!(p)),
        1 => Just(json!(70000)),
        1 => Just(json!(-1)),
    ]
}

fn protocol() -> impl Strategy<Value = Value> {
    prop::sample::select(vec!["tcp", "udp", "udp,tcp", "TCP, udp", "sctp", ""])
        .prop_map(|s| json!(s))
}

fn port_labels() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        prop::sample::select(vec!["VIP_0", "vip_1", "VIP", "other", "VIPD_0_BALANCE"]),
        prop::sample::select(vec![
            "/acme:80",
            "/g/app:53",
            "10.10.0.1:80",
            "[fd00::1]:80",
            "tcp://10.10.0.2:90",
            "/acme",
            "/___:80",
            "/x:0",
            "bad:99999",
            "/shared:80",
        ]),
        0..3,
    )
    .prop_map(|m| json!(m))
}

fn port_definition() -> impl Strategy<Value = Value> {
    (
        field(port_number()),
        field(protocol()),
        field("[a-z]{1,5}".prop_map(|s| json!(s))),
        field(port_labels()),
    )
        .prop_map(|(port, proto, name, labels)| {
            obj(vec![
                ("port", port),
                ("protocol", proto),
                ("name", name),
                ("labels", labels),
            ])
        })
}

fn port_mapping() -> impl Strategy<Value = Value> {
    (
        field(port_number()),
        prop::option::of(port_number()),
        field(port_number()),
        field(protocol()),
        field(port_labels()),
    )
        .prop_map(|(cp, hp, sp, proto, labels)| {
            obj(vec![
                ("containerPort", cp),
                ("hostPort", hp),
                ("servicePort", sp),
                ("protocol", proto),
                ("labels", labels),
            ])
        })
}

fn network() -> impl Strategy<Value = Value> {
    prop::option::of(prop::sample::select(vec![
        "host",
        "container",
        "container/bridge",
        "overlay",
    ]))
    .prop_map(|m| match m {
        Some(m) => json!({"mode": m, "name": "dcos"}),
        None => json!({"name": "dcos"}),
    })
}

fn container() -> impl Strategy<Value = Value> {
    (
        field(
            prop::sample::select(vec!["HOST", "BRIDGE", "USER", "NONE", "bogus"])
                .prop_map(|s| json!(s)),
        ),
        field(prop::collection::vec(port_mapping(), 0..3).prop_map(Value::Array)),
        field(prop::collection::vec(port_mapping(), 0..3).prop_map(Value::Array)),
    )
        .prop_map(|(net, docker_pm, pm)| {
            obj(vec![
                ("type", Some(json!("DOCKER"))),
                (
                    "docker",
                    Some(obj(vec![("network", net), ("portMappings", docker_pm)])),
                ),
                ("portMappings", pm),
            ])
        })
}

fn ip_address() -> impl Strategy<Value = Value> {
    (
        field(prop::sample::select(vec!["dcos", "mesos-bridge"]).prop_map(|s| json!(s))),
        field(
            prop::collection::vec(
                (
                    field(port_number()),
                    field(protocol()),
                    field(port_labels()),
                )
                    .prop_map(|(n, p, l)| obj(vec![("number", n), ("protocol", p), ("labels", l)])),
                0..3,
            )
            .prop_map(|ports| json!({ "ports": ports })),
        ),
    )
        .prop_map(|(name, discovery)| obj(vec![("networkName", name), ("discovery", discovery)]))
}

fn health_check() -> impl Strategy<Value = Value> {
    (
        field(
            prop::sample::select(vec![
                "HTTP",
                "MESOS_HTTP",
                "TCP",
                "MESOS_TCP",
                "COMMAND",
                "HTTPS",
                "X",
            ])
            .prop_map(|s| json!(s)),
        ),
        field((0u32..3).prop_map(|i| json!(i))),
        field(port_number()),
        field(prop::sample::select(vec!["/", "/health", ""]).prop_map(|s| json!(s))),
        field(prop_oneof![
            (0.0f64..100.0).prop_map(|f| json!(f)),
            Just(json!(-5))
        ]),
    )
        .prop_map(|(p, pi, port, path, iv)| {
            obj(vec![
                ("protocol", p),
                ("portIndex", pi),
                ("port", port),
                ("path", path),
                ("intervalSeconds", iv),
            ])
        })
}

fn task(i: usize) -> impl Strategy<Value = Value> {
    (
        field(
            prop::sample::select(vec![
                "10.0.0.1",
                "10.0.0.2",
                "agent-a",
                "agent-b",
                "dead.invalid",
                "",
                "[fd00::9]",
            ])
            .prop_map(|s| json!(s)),
        ),
        field(prop::collection::vec(port_number(), 0..4).prop_map(Value::Array)),
        field(
            prop::collection::vec(
                prop::sample::select(vec!["9.0.0.1", "fd00::1", "nope"])
                    .prop_map(|ip| json!({"ipAddress": ip, "protocol": "IPv4"})),
                0..2,
            )
            .prop_map(Value::Array),
        ),
        field(
            prop::sample::select(vec![
                "TASK_RUNNING",
                "TASK_KILLING",
                "TASK_UNREACHABLE",
                "TASK_LOST",
                "TASK_STAGING",
                "TASK_FAILED",
                "TASK_WHATEVER",
            ])
            .prop_map(|s| json!(s)),
        ),
        field(
            prop::collection::vec(any::<bool>().prop_map(|a| json!({"alive": a})), 0..3)
                .prop_map(Value::Array),
        ),
        prop::sample::select(vec!["a", "b", "c"]),
    )
        .prop_map(move |(host, ports, ips, state, hcr, suffix)| {
            obj(vec![
                ("id", Some(json!(format!("task{i}.{suffix}")))),
                ("host", host),
                ("ports", ports),
                ("ipAddresses", ips),
                ("state", state),
                ("healthCheckResults", hcr),
            ])
        })
}

fn app(i: usize) -> impl Strategy<Value = Value> {
    let id = prop_oneof![
        9 => prop::sample::select(vec!["", "/grp"]).prop_map(move |g| json!(format!("{g}/app{i}"))),
        1 => any_json(),
    ];
    (
        id,
        field(prop::collection::vec(network(), 0..3).prop_map(Value::Array)),
        field(prop::collection::vec(port_definition(), 0..4).prop_map(Value::Array)),
        field(prop::collection::vec(port_number(), 0..3).prop_map(Value::Array)),
        field(container()),
        field(ip_address()),
        field(prop::collection::vec(health_check(), 0..3).prop_map(Value::Array)),
        field(
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "VIPD_0_BALANCE",
                    "HAPROXY_1_BALANCE",
                    "VIPD_0_HEALTHCHECK",
                    "x",
                ]),
                prop::sample::select(vec!["roundrobin", "leastconn", "source", "p2c"]),
                0..3,
            )
            .prop_map(|m| json!(m)),
        ),
        field(
            (0..4usize).prop_flat_map(move |n| {
                (0..n).map(task).collect::<Vec<_>>().prop_map(Value::Array)
            }),
        ),
    )
        .prop_map(
            |(id, networks, pds, ports, container, ip, hcs, labels, tasks)| {
                obj(vec![
                    ("id", Some(id)),
                    ("networks", networks),
                    ("portDefinitions", pds),
                    ("ports", ports),
                    ("container", container),
                    ("ipAddress", ip),
                    ("healthChecks", hcs),
                    ("labels", labels),
                    ("tasks", tasks),
                ])
            },
        )
}

fn apps_doc() -> impl Strategy<Value = Vec<Value>> {
    (0..8usize).prop_flat_map(|n| {
        (0..n)
            .map(|i| prop_oneof![19 => app(i).boxed(), 1 => any_json().boxed()])
            .collect::<Vec<_>>()
    })
}

fn resolved() -> Resolved {
    let mut r = Resolved::default();
    r.hosts
        .insert("agent-a".into(), Some("10.1.0.1".parse().unwrap()));
    r.hosts
        .insert("agent-b".into(), Some("fd00::b".parse().unwrap()));
    r.hosts.insert("dead.invalid".into(), None);
    r
}

/// Agent answers that differ from [`resolved`] in every way that matters to a kept part: a changed
/// address, a host gone from the answers, a host that now resolves.
fn resolved_variant(v: usize) -> Resolved {
    let mut r = resolved();
    match v {
        1 => {
            r.hosts
                .insert("agent-a".into(), Some("10.1.0.99".parse().unwrap()));
        }
        2 => {
            r.hosts.remove("agent-b");
        }
        3 => {
            r.hosts
                .insert("dead.invalid".into(), Some("10.1.0.3".parse().unwrap()));
        }
        _ => {}
    }
    r
}

fn opts() -> Vec<BuildOptions> {
    vec![
        BuildOptions::default(),
        BuildOptions {
            // A tiny pool forces collisions and exhaustion.
            vip_cidr: "10.99.0.0/30".parse().unwrap(),
            bind_address: "10.10.0.1".parse().unwrap(),
            ..BuildOptions::default()
        },
        BuildOptions {
            vip_cidr: "fd01:c::/120".parse().unwrap(),
            ..BuildOptions::default()
        },
    ]
}

fn table_json(apps: &[Value], opts: &BuildOptions) -> Option<String> {
    let doc = serde_json::to_vec(&json!({ "apps": apps })).unwrap();
    let snap = parse_apps_document(&doc).ok()?;
    Some(serde_json::to_string(&build(&snap, &resolved(), opts)).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_deterministic_and_order_independent(
        (apps, shuffled) in apps_doc().prop_flat_map(|a| (Just(a.clone()), Just(a).prop_shuffle()))
    ) {
        for o in opts() {
            let first = table_json(&apps, &o).expect("an apps array is an apps document");
            let again = table_json(&apps, &o).unwrap();
            prop_assert_eq!(&first, &again);
            let other = table_json(&shuffled, &o).unwrap();
            prop_assert_eq!(&first, &other);
        }
    }

    #[test]
    fn arbitrary_documents_never_panic(doc in any_json()) {
        let bytes = serde_json::to_vec(&doc).unwrap();
        if let Ok(snap) = parse_apps_document(&bytes) {
            let _ = build(&snap, &resolved(), &BuildOptions::default());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(snap) = parse_apps_document(&bytes) {
            let _ = build(&snap, &resolved(), &BuildOptions::default());
        }
    }

    /// The cache sees a first snapshot, then a second that keeps some of the first one's apps
    /// (the same `Arc`s, as an applied event does), replaces others and drops the rest, under
    /// agent answers and options that may change in between: every result equals a fresh build,
    /// and the hosts the cache says need DNS are the snapshot's.
    #[test]
    fn incremental_build_equals_build(
        first in apps_doc(),
        second in apps_doc(),
        keep in prop::collection::vec(0..3u8, 8),
        (r1, r2) in (0..4usize, 0..4usize),
        (o1, o2) in (0..3usize, 0..3usize),
    ) {
        let parse = |apps: &[Value]| {
            parse_apps_document(&serde_json::to_vec(&json!({ "apps": apps })).unwrap()).unwrap()
        };
        let (a, b) = (parse(&first), parse(&second));
        let mut next = vipd::model::AppsSnapshot { apps: Vec::new(), rejected: b.rejected.clone(), ..Default::default() };
        for (i, app) in a.apps.iter().enumerate() {
            match keep[i % keep.len()] {
                0 => next.apps.push(Arc::clone(app)),
                1 => next.apps.extend(b.apps.get(i).cloned()),
                _ => {}
            }
        }
        next.apps.extend(b.apps.iter().skip(a.apps.len()).cloned());
        let opts = opts();
        let mut cache = BuildCache::new();
        for (snap, r, o) in [(&a, r1, o1), (&next, r2, o2), (&next, r2, o2)] {
            let mut hosts = cache.hosts_to_resolve(snap);
            hosts.sort();
            let want_hosts: Vec<String> = vipd::table::build::hosts_to_resolve(snap)
                .into_iter()
                .map(str::to_owned)
                .collect();
            prop_assert_eq!(hosts, want_hosts);
            let resolved = resolved_variant(r);
            let want = build(snap, &resolved, &opts[o]);
            let got = cache.build(snap, &resolved, &opts[o]);
            prop_assert_eq!(got, want);
        }
    }
}
