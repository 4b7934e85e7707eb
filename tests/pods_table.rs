//! Marathon pods in the file source's document (`{"apps": [...], "pods": [...]}`, `pods` in the
//! shape of `GET /v2/pods/::status`): `vipd table` through the real binary on
//! tests/fixtures/pods/, and `table::build` on the same fixture.

mod support;

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Output;
use support::table_json::{backend_states, pairs, vip_frontend};
use vipd::model::parse_apps_document;
use vipd::table::{build, BuildOptions, Resolved};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pods")
        .join(name)
}

fn vipd_table(stdin: &[u8]) -> Output {
    support::table_json::vipd_table(&["--apps", "-"], stdin)
}

fn table_json(doc: &[u8]) -> Value {
    support::table_json::table(&["--apps", "-"], doc)
}

/// `(address, state)` of the frontend `proto` + `vip_name`.
fn backends(t: &Value, proto: &str, name: &str) -> Vec<(String, String)> {
    backend_states(frontend(t, proto, name))
}

fn frontend<'a>(t: &'a Value, proto: &str, name: &str) -> &'a Value {
    let full = format!("{name}.marathon.l4lb.thisdcos.directory");
    vip_frontend(t, proto, &full).unwrap_or_else(|| panic!("no {proto} {full} in {t:#}"))
}

#[test]
fn every_pod_rule_through_vipd_table() {
    let t = table_json(&std::fs::read(fixture("apps-and-pods.json")).unwrap());
    // An app and a pod share the named VIP /shop:80: one frontend, both sets of backends. The
    // pod's status lists its endpoints in another order than the spec (matched by name); the
    // TASK_KILLING container under a TERMINAL instance drains; `healthy` false is unhealthy;
    // the TASK_STAGING one gives nothing.
    let shop = frontend(&t, "tcp", "shop");
    assert_eq!(shop["apps"], json!(["/catalog", "/shop/host"]));
    assert_eq!(shop["app"], "/catalog");
    assert_eq!(shop["owner_kind"], "app");
    assert_eq!(
        backends(&t, "tcp", "shop"),
        pairs(&[
            ("10.0.1.23:31001", "up"),
            ("10.0.1.24:31011", "draining"),
            ("10.0.1.25:31021", "unhealthy"),
            ("10.0.9.1:31900", "up"),
        ])
    );
    let task = |f: &Value, addr: &str| {
        f["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["address"] == addr)
            .map(|b| b["task"].as_str().unwrap().to_string())
    };
    assert_eq!(
        task(shop, "10.0.1.23:31001").as_deref(),
        Some("shop_host.instance-6a3c1f52-7b4d-11eb-9f21-0242ac110001.web.1")
    );
    // ["udp","tcp"]: one frontend of each, pod-owned.
    for proto in ["tcp", "udp"] {
        let dns = frontend(&t, proto, "shop-dns");
        assert_eq!(dns["owner_kind"], "pod");
        assert_eq!(dns["app"], "/shop/host");
        assert_eq!(dns["kind"], "vip");
        assert_eq!(dns["port_index"], 1);
        assert_eq!(dns["port_name"], "dns");
        assert_eq!(
            backends(&t, proto, "shop-dns"),
            pairs(&[
                ("10.0.1.23:31002", "up"),
                ("10.0.1.24:31012", "draining"),
                ("10.0.1.25:31022", "unhealthy"),
            ])
        );
    }
    // Bridge: agent + allocated host port (not the bridge address).
    assert_eq!(
        backends(&t, "tcp", "shop-bridge"),
        pairs(&[("10.0.2.1:31500", "up")])
    );
    // Container networks: with hostPort the agent; without, the named network's address, or the
    // first network's when the endpoint names none; with the container port.
    assert_eq!(
        backends(&t, "tcp", "overlay-pub"),
        pairs(&[("10.0.3.1:31800", "up")])
    );
    assert_eq!(
        backends(&t, "tcp", "overlay-priv"),
        pairs(&[("9.1.3.1:8081", "up")])
    );
    assert_eq!(
        backends(&t, "tcp", "overlay-dflt"),
        pairs(&[("9.0.3.1:8082", "up")])
    );
    // No service-port frontends for pods, none for the pod without VIP labels.
    let fronts = t["frontends"].as_array().unwrap();
    assert_eq!(fronts.len(), 8, "{t:#}");
    assert!(fronts
        .iter()
        .all(|f| f["owner_kind"] != "pod" || f["kind"] == "vip"));
    assert!(!fronts.iter().any(|f| f["app"] == "/shop/novip"));
    // The malformed pod is one warning naming it and the path; every other pod still builds.
    assert_eq!(
        t["warnings"],
        json!([{"app": "/shop/broken",
                "message": "malformed pod skipped: spec.containers: invalid type: map, expected a sequence"}])
    );
}

#[test]
fn a_document_with_pods_only_is_read_and_one_with_neither_key_is_an_error() {
    let doc: Value =
        serde_json::from_slice(&std::fs::read(fixture("apps-and-pods.json")).unwrap()).unwrap();
    let pods_only = json!({ "pods": doc["pods"] });
    let t = table_json(pods_only.to_string().as_bytes());
    assert_eq!(
        backends(&t, "tcp", "shop"),
        pairs(&[
            ("10.0.1.23:31001", "up"),
            ("10.0.1.24:31011", "draining"),
            ("10.0.1.25:31021", "unhealthy"),
        ])
    );
    assert_eq!(frontend(&t, "tcp", "shop")["owner_kind"], "pod");
    let out = vipd_table(br#"{"groups":[]}"#);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(r#"no "apps" (or "pods") array"#), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn the_table_does_not_depend_on_pod_order() {
    let body = std::fs::read(fixture("apps-and-pods.json")).unwrap();
    let snap = parse_apps_document(&body).unwrap();
    let mut reversed = snap.clone();
    reversed.pods.reverse();
    let opts = BuildOptions::default();
    let r = Resolved::default();
    assert_eq!(build(&snap, &r, &opts), build(&reversed, &r, &opts));
    assert_eq!(snap.pods.len(), 4);
    assert_eq!(snap.rejected_pods.len(), 1);
}
