//! `vipd table --mesos-state FILE` through the real binary, on tests/fixtures/mesos/: two
//! frameworks (Marathon, and an SDK-style `hello-world` with `VIP_<uuid>` labels and
//! container-scope ports), every translation rule that shows in a table, and the rule of
//! `--apps` with `--mesos-state` (service ports from Marathon, VIPs from Mesos alone).

mod support;

use serde_json::Value;
use std::path::PathBuf;
use std::process::Output;
use support::table_json::{backend_states, pairs, vip_frontend, vip_frontends};

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mesos")
        .join(name)
        .display()
        .to_string()
}

fn vipd_table(args: &[&str]) -> Output {
    support::table_json::vipd_table(args, b"")
}

fn table(args: &[&str]) -> Value {
    support::table_json::table(args, b"")
}

fn backends(t: &Value, proto: &str, name: &str) -> Vec<(String, String)> {
    let f = vip_frontend(t, proto, name).unwrap_or_else(|| panic!("no {proto} {name}: {t:#}"));
    backend_states(f)
}

fn warnings(t: &Value) -> Vec<(String, String)> {
    t["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["app"].as_str().unwrap_or_default().to_string(),
                w["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn two_frameworks_give_named_vips_under_each_framework_name() {
    let t = table(&["--mesos-state", &fixture("two-frameworks-state.json")]);
    // Marathon's tasks: host networking (the task IP is the agent's), health false, a terminal
    // task left out.
    assert_eq!(
        backends(&t, "tcp", "web.marathon.l4lb.thisdcos.directory"),
        pairs(&[("10.0.0.1:31001", "up"), ("10.0.0.2:31002", "unhealthy")])
    );
    // docker BRIDGE with network-scope=host: the agent and the host port.
    assert_eq!(
        backends(&t, "tcp", "api.marathon.l4lb.thisdcos.directory"),
        pairs(&[("10.0.0.2:31500", "up")])
    );
    // The SDK framework: VIP_<uuid> labels, container scope (task IP + port), KILLING drains.
    assert_eq!(
        backends(&t, "tcp", "overlay-vip.hello-world.l4lb.thisdcos.directory"),
        pairs(&[("9.0.2.3:4044", "up"), ("9.0.2.4:4044", "draining")])
    );
    // No scope label on a host-network task.
    assert_eq!(
        backends(&t, "tcp", "host-vip.hello-world.l4lb.thisdcos.directory"),
        pairs(&[("10.0.0.2:4043", "up")])
    );
    // A udp port; the port numbered 0 is no backend.
    assert_eq!(
        backends(&t, "udp", "dns.marathon.l4lb.thisdcos.directory"),
        pairs(&[("9.0.1.7:53", "up")])
    );
    // The legacy vip_port0 task label, indexed into the ports resource.
    assert_eq!(
        backends(&t, "tcp", "def.marathon.l4lb.thisdcos.directory"),
        pairs(&[("10.0.0.1:9999", "up")])
    );
    let f = vip_frontend(&t, "tcp", "overlay-vip.hello-world.l4lb.thisdcos.directory").unwrap();
    assert_eq!(f["owner_kind"], "task");
    assert_eq!(f["kind"], "vip");
    assert_eq!(
        f["apps"],
        serde_json::json!(["hello-0-server__5c5bd8c2", "hello-1-server__6d6ce9d3"])
    );
    assert_eq!(t["frontends"].as_array().unwrap().len(), 6, "{t:#}");
}

#[test]
fn bad_tasks_are_warnings_naming_the_task_and_the_rest_is_served() {
    let t = table(&["--mesos-state", &fixture("two-frameworks-state.json")]);
    assert_eq!(
        warnings(&t),
        [
            (
                "broken.1".to_string(),
                "Mesos task: discovery.ports.ports[0].number: invalid type: string \"eighty\", expected u32".to_string()
            ),
            (
                "dns.1".to_string(),
                "framework marathon: task dns.1: discovery port 2: unknown protocol \"sctp\"; port skipped".to_string()
            ),
            (
                "kafka-0-broker__1".to_string(),
                "Mesos task: framework \"fw-unknown\" is not in get_frameworks; task skipped".to_string()
            ),
        ]
    );
}

#[test]
fn named_vip_addresses_are_keyed_on_the_full_dns_name() {
    // The same address on every run and whatever else is in the state: the pool hashes the name.
    let a = table(&["--mesos-state", &fixture("two-frameworks-state.json")]);
    let b = table(&["--mesos-state", &fixture("two-frameworks-state.json")]);
    assert_eq!(a, b);
    let listen = |t: &Value, name: &str| vip_frontend(t, "tcp", name).unwrap()["listen"].clone();
    assert_ne!(
        listen(&a, "overlay-vip.hello-world.l4lb.thisdcos.directory"),
        listen(&a, "host-vip.hello-world.l4lb.thisdcos.directory")
    );
}

#[test]
fn with_apps_service_ports_come_from_marathon_and_vips_from_mesos_alone() {
    let apps = fixture("marathon-apps.json");
    let state = fixture("two-frameworks-state.json");
    // The apps document alone: its VIP label serves both of its tasks.
    let alone = table(&["--apps", &apps]);
    assert_eq!(
        backends(&alone, "tcp", "web.marathon.l4lb.thisdcos.directory"),
        pairs(&[("10.0.0.1:31001", "up"), ("10.0.0.3:31003", "up")])
    );
    let both = table(&["--apps", &apps, "--mesos-state", &state]);
    let service_port = both["frontends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "service_port")
        .unwrap();
    assert_eq!(service_port["listen"], "0.0.0.0:10000");
    assert_eq!(service_port["backends"].as_array().unwrap().len(), 2);
    // Marathon's VIP label is not read: the VIP has the Mesos tasks only, each once.
    assert_eq!(
        backends(&both, "tcp", "web.marathon.l4lb.thisdcos.directory"),
        pairs(&[("10.0.0.1:31001", "up"), ("10.0.0.2:31002", "unhealthy")])
    );
    let f = vip_frontend(&both, "tcp", "web.marathon.l4lb.thisdcos.directory").unwrap();
    assert_eq!(f["owner_kind"], "task");
}

#[test]
fn a_document_that_is_not_a_get_state_answer_is_an_error_naming_the_file() {
    let out = vipd_table(&["--mesos-state", &fixture("marathon-apps.json")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("marathon-apps.json") && err.contains("no \"get_state\" object"),
        "{err}"
    );
    let out = vipd_table(&[]);
    assert!(!out.status.success());
}

#[test]
fn with_vip_cidr6_a_dual_stack_task_feeds_both_sides_of_its_named_vip() {
    let state = fixture("dual-stack-state.json");
    let name = "dual-vip.hello-world.l4lb.thisdcos.directory";
    let t = table(&["--mesos-state", &state, "--vip-cidr6", "fd01:c::/64"]);
    let sides = vip_frontends(&t, "tcp", name);
    assert_eq!(sides.len(), 2, "one frontend per family: {t:#}");
    let side = |v6: bool| {
        let f = sides
            .iter()
            .find(|f| f["listen"].as_str().unwrap().starts_with('[') == v6)
            .unwrap();
        (f["listen"].as_str().unwrap().to_string(), backend_states(f))
    };
    let (v4_listen, v4) = side(false);
    let (v6_listen, v6) = side(true);
    assert!(
        v4_listen.starts_with("11.") && v4_listen.ends_with(":80"),
        "{v4_listen}"
    );
    assert!(v6_listen.starts_with("[fd01:c::"), "{v6_listen}");
    assert_eq!(v4, pairs(&[("9.0.1.2:8080", "up"), ("9.0.1.3:8080", "up")]));
    // The IPv6-only task is the IPv6 side's too (its primary address is IPv6).
    assert_eq!(
        v6,
        pairs(&[
            ("[fd00:9::2]:8080", "up"),
            ("[fd00:9::3]:8080", "up"),
            ("[fd00:9::4]:8080", "up")
        ])
    );
    // Without --vip-cidr6: one address, every task's primary address (either family).
    let t = table(&["--mesos-state", &state]);
    let sides = vip_frontends(&t, "tcp", name);
    assert_eq!(sides.len(), 1, "{t:#}");
    assert_eq!(
        backend_states(sides[0]),
        pairs(&[
            ("9.0.1.2:8080", "up"),
            ("9.0.1.3:8080", "up"),
            ("[fd00:9::4]:8080", "up")
        ])
    );
}
