//! Property tests for pods: `table::build` never panics on arbitrary pod JSON (right types,
//! wrong types, nulls, missing keys), its output does not depend on the order of pods, and the
//! incremental `BuildCache::build` equals `build` when pods change between builds.

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use vipd::model::parse_apps_document;
use vipd::table::{build, BuildCache, BuildOptions, Resolved};

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
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

/// Usually `good`, sometimes missing, `null`, or a wrong-typed value.
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

fn name() -> impl Strategy<Value = Value> {
    prop::sample::select(vec!["a", "b", "c", "http"]).prop_map(|s| json!(s))
}

fn port() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => Just(json!(0)),
        10 => (8080u16..8083).prop_map(|p| json!(p)),
        10 => (31000u16..31006).prop_map(|p| json!(p)),
        1 => Just(json!(70000)),
    ]
}

fn labels() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        prop::sample::select(vec!["VIP_0", "VIP_1", "VIPD_BALANCE", "other"]),
        prop::sample::select(vec![
            "/x:80",
            "/y:53",
            "127.0.0.1:9000",
            "bad",
            "maglev",
            "10.10.0.1:80",
        ]),
        0..3,
    )
    .prop_map(|m| json!(m))
}

fn endpoint() -> impl Strategy<Value = Value> {
    (
        field(name()),
        field(port()),
        field(port()),
        field(
            prop::sample::subsequence(vec!["tcp", "udp", "http", "sctp"], 0..3)
                .prop_map(|v| json!(v)),
        ),
        field(labels()),
        field(prop::sample::subsequence(vec!["dcos", "blue"], 0..2).prop_map(|v| json!(v))),
    )
        .prop_map(|(n, cp, hp, proto, l, nets)| {
            obj(vec![
                ("name", n),
                ("containerPort", cp),
                ("hostPort", hp),
                ("protocol", proto),
                ("labels", l),
                ("networkNames", nets),
            ])
        })
}

fn spec_container() -> impl Strategy<Value = Value> {
    (
        field(name()),
        field(prop::collection::vec(endpoint(), 0..3).prop_map(Value::Array)),
        field(prop_oneof![
            Just(json!({"http": {"endpoint": "http", "path": "/h"}})),
            Just(json!({"tcp": {"endpoint": "a"}, "intervalSeconds": 0})),
        ]),
    )
        .prop_map(|(n, e, hc)| obj(vec![("name", n), ("endpoints", e), ("healthCheck", hc)]))
}

fn container_status() -> impl Strategy<Value = Value> {
    (
        field(name()),
        field(
            prop::sample::select(vec![
                "TASK_RUNNING",
                "TASK_KILLING",
                "TASK_STAGING",
                "TASK_FINISHED",
                "TASK_NEW",
            ])
            .prop_map(|s| json!(s)),
        ),
        field(
            prop::sample::select(vec!["true", "false"])
                .prop_map(|v| json!([{"name": "healthy", "value": v}])),
        ),
        field(prop::sample::select(vec!["p.i.a.1", "p.i.b.1", ""]).prop_map(|s| json!(s))),
        field(
            prop::collection::vec(
                (
                    name(),
                    field(port()),
                    field(any::<bool>().prop_map(Value::Bool)),
                )
                    .prop_map(|(n, p, h)| {
                        obj(vec![
                            ("name", Some(n)),
                            ("allocatedHostPort", p),
                            ("healthy", h),
                        ])
                    }),
                0..3,
            )
            .prop_map(Value::Array),
        ),
    )
        .prop_map(|(n, st, c, id, e)| {
            obj(vec![
                ("name", n),
                ("status", st),
                ("conditions", c),
                ("containerId", id),
                ("endpoints", e),
            ])
        })
}

fn instance() -> impl Strategy<Value = Value> {
    (
        field(prop::sample::select(vec!["10.0.0.1", "agent-a", "agent-b", ""]).prop_map(|s| json!(s))),
        field(
            prop::sample::select(vec![
                json!([{"name": "dcos", "addresses": ["9.0.0.1"]}, {"name": "blue", "addresses": ["9.1.0.1"]}]),
                json!([{"addresses": ["10.0.0.1"]}]),
                json!([{"name": "dcos", "addresses": ["not-an-ip"]}]),
                json!([]),
            ]),
        ),
        field(prop::collection::vec(container_status(), 0..3).prop_map(Value::Array)),
    )
        .prop_map(|(agent, nets, cs)| {
            obj(vec![
                ("id", Some(json!("p.i"))),
                ("agentHostname", agent),
                ("networks", nets),
                ("containers", cs),
            ])
        })
}

fn pod() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["/p1", "/p2", "/p3", "/g/p4"]),
        field(prop::sample::select(vec![
            json!([{"mode": "host"}]),
            json!([{"mode": "container/bridge"}]),
            json!([{"name": "dcos", "mode": "container"}, {"name": "blue"}]),
            json!([{"mode": "overlay"}]),
            json!([]),
        ])),
        field(prop::collection::vec(spec_container(), 0..3).prop_map(Value::Array)),
        field(labels()),
        field(prop::collection::vec(instance(), 0..3).prop_map(Value::Array)),
    )
        .prop_map(|(id, nets, containers, l, inst)| {
            obj(vec![
                ("id", Some(json!(id))),
                (
                    "spec",
                    Some(obj(vec![
                        ("networks", nets),
                        ("containers", containers),
                        ("labels", l),
                    ])),
                ),
                ("instances", inst),
            ])
        })
}

fn pods() -> impl Strategy<Value = Vec<Value>> {
    prop::collection::vec(pod(), 0..5)
}

fn resolved() -> Resolved {
    let mut r = Resolved::default();
    r.hosts.insert("agent-a".into(), Some([10, 0, 9, 1].into()));
    r.hosts.insert("agent-b".into(), None);
    r
}

fn parse(pods: &[Value]) -> vipd::model::AppsSnapshot {
    let app = json!({"id": "/app", "portDefinitions": [{"port": 10000, "labels": {"VIP_0": "/x:80"}}],
                     "tasks": [{"id": "app.1", "host": "10.0.0.7", "ports": [31999], "state": "TASK_RUNNING"}]});
    let doc = json!({"apps": [app], "pods": pods});
    parse_apps_document(&serde_json::to_vec(&doc).unwrap()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Never panics, and the order of pods in the document does not change the table (pods with
    /// the same id excepted: the first one wins, so the generator's duplicates are dropped).
    #[test]
    fn build_never_panics_and_ignores_pod_order(pods in pods(), seed in any::<u64>()) {
        let mut seen = std::collections::BTreeSet::new();
        let unique: Vec<Value> = pods
            .into_iter()
            .filter(|p| seen.insert(p["id"].as_str().unwrap_or_default().to_string()))
            .collect();
        let snap = parse(&unique);
        let opts = BuildOptions::default();
        let r = resolved();
        let want = build(&snap, &r, &opts);
        prop_assert_eq!(&build(&snap, &r, &opts), &want, "deterministic");
        let mut shuffled = unique.clone();
        // A deterministic permutation from the seed.
        let n = shuffled.len();
        if n > 1 {
            for i in (1..n).rev() {
                let j = (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) % (i as u64 + 1)) as usize;
                shuffled.swap(i, j);
            }
        }
        prop_assert_eq!(build(&parse(&shuffled), &r, &opts), want);
    }

    /// The cache reuses pods whose `Arc` it saw, recomputes the others, and equals `build`.
    #[test]
    fn incremental_build_with_pods_equals_build(first in pods(), second in pods(), keep in prop::collection::vec(any::<bool>(), 5)) {
        let a = parse(&first);
        let b = parse(&second);
        let mut next = b.clone();
        for (i, p) in a.pods.iter().enumerate() {
            if keep[i % keep.len()] {
                next.pods.push(Arc::clone(p));
            }
        }
        let opts = BuildOptions::default();
        let r = resolved();
        let mut cache = BuildCache::new();
        for snap in [&a, &next, &next] {
            let mut hosts = cache.hosts_to_resolve(snap);
            hosts.sort();
            let want_hosts: Vec<String> = vipd::table::build::hosts_to_resolve(snap)
                .into_iter()
                .map(str::to_owned)
                .collect();
            prop_assert_eq!(hosts, want_hosts);
            prop_assert_eq!(cache.build(snap, &r, &opts), build(snap, &r, &opts));
        }
    }
}
