//! `table::build` on real Marathon responses from the shared reference set (not copied into the
//! repo): `$VIPD_SHARED_DIR/reference/marathon/api`, default `<manifest>/../shared/...` (found by
//! `build.rs`). When it is missing these tests are `ignored` with that reason, never silently
//! passed; `.ci/run` fails on them.

use std::path::PathBuf;
use vipd::model::parse_apps_document;
use vipd::table::{build, BackendState, BuildOptions, Built, Protocol, Resolved};

fn api_dir() -> PathBuf {
    let dir = PathBuf::from(env!("VIPD_SHARED_REFERENCE")).join("marathon/api");
    assert!(
        dir.is_dir(),
        "{} does not exist (set VIPD_SHARED_DIR)",
        dir.display()
    );
    dir
}

fn build_file(dir: &std::path::Path, name: &str) -> Built {
    let body = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let snap = parse_apps_document(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(snap.rejected.is_empty(), "{name}: {:?}", snap.rejected);
    build(&snap, &Resolved::default(), &BuildOptions::default())
}

fn backends(b: &Built, port: u16) -> Vec<(String, BackendState)> {
    let f = b
        .frontends
        .iter()
        .find(|f| f.protocol == Protocol::Tcp && f.listen.port() == port)
        .unwrap_or_else(|| panic!("no tcp frontend on {port}: {b:#?}"));
    f.backends
        .iter()
        .map(|b| (b.address.to_string(), b.state))
        .collect()
}

fn up(addrs: &[&str]) -> Vec<(String, BackendState)> {
    addrs
        .iter()
        .map(|a| ((*a).to_string(), BackendState::Up))
        .collect()
}

#[test]
#[cfg_attr(
    not(vipd_shared_reference),
    ignore = "needs ../shared/reference (VIPD_SHARED_DIR)"
)]
fn marathon_1_5_container_bridge_routes_to_agent_host_ports() {
    let dir = api_dir();
    let b = build_file(
        &dir,
        "v2_apps_embed_tasks__marathon1.5__container-bridge__mlb-test.json",
    );
    assert_eq!(b.frontends.len(), 1);
    assert_eq!(b.frontends[0].app, "/pywebserver");
    assert_eq!(b.frontends[0].port_name.as_deref(), Some("test"));
    // Agent 10.0.2.148 + host port 1565, never the docker bridge IP 172.17.0.2.
    assert_eq!(backends(&b, 10101), up(&["10.0.2.148:1565"]));
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
}

#[test]
#[cfg_attr(
    not(vipd_shared_reference),
    ignore = "needs ../shared/reference (VIPD_SHARED_DIR)"
)]
fn marathon_1_5_container_bridge_with_mesos_http_health_checks() {
    let dir = api_dir();
    let b = build_file(
        &dir,
        "v2_apps_embed_tasks__marathon1.5__container-bridge-healthchecks__mlb-test.json",
    );
    assert_eq!(
        backends(&b, 10000),
        up(&["10.0.6.25:16916", "10.0.6.25:23336", "10.0.6.25:31184"])
    );
    let f = &b.frontends[0];
    assert_eq!(f.options.get("probe").as_deref(), Some("http"));
    assert_eq!(f.options.get("probe_path").as_deref(), Some("/"));
    assert_eq!(f.options.get("probe_interval_s").as_deref(), Some("3"));
    assert_eq!(f.options.get("probe_timeout_s").as_deref(), Some("15"));
}

#[test]
#[cfg_attr(
    not(vipd_shared_reference),
    ignore = "needs ../shared/reference (VIPD_SHARED_DIR)"
)]
fn pre_1_5_docker_bridge_with_docker_port_mappings() {
    let dir = api_dir();
    let b = build_file(
        &dir,
        "v2_apps_embed_tasks__pre1.5-docker-BRIDGE-ports__mlb-test.json",
    );
    // Tasks carry no `state` (old server) and pre-1.4 `taskId` health results: all alive.
    assert_eq!(
        backends(&b, 10000),
        up(&["10.0.6.25:16916", "10.0.6.25:23336", "10.0.6.25:31184"])
    );
    assert_eq!(b.frontends.len(), 1);
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
}

#[test]
#[cfg_attr(
    not(vipd_shared_reference),
    ignore = "needs ../shared/reference (VIPD_SHARED_DIR)"
)]
fn pre_1_5_two_apps_blue_green() {
    let dir = api_dir();
    let b = build_file(
        &dir,
        "v2_apps_embed_tasks__pre1.5-two-apps-zdd__mlb-test.json",
    );
    assert_eq!(
        backends(&b, 10000),
        up(&["10.0.6.25:16916", "10.0.6.25:23336", "10.0.6.25:31184"])
    );
    assert_eq!(backends(&b, 10001), up(&["10.0.1.147:25724"]));
}

#[test]
#[cfg_attr(
    not(vipd_shared_reference),
    ignore = "needs ../shared/reference (VIPD_SHARED_DIR)"
)]
fn docs_example_legacy_list_keeps_empty_frontends() {
    let dir = api_dir();
    let b = build_file(&dir, "v2_apps__list__docs-example-legacy-fields.json");
    assert!(backends(&b, 10013).is_empty());
    assert!(backends(&b, 10015).is_empty());
}

#[test]
#[cfg_attr(
    not(vipd_shared_reference),
    ignore = "needs ../shared/reference (VIPD_SHARED_DIR)"
)]
fn every_reference_response_builds_without_panicking() {
    let dir = api_dir();
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let body = std::fs::read(&path).unwrap();
        if let Ok(snap) = parse_apps_document(&body) {
            let a = build(&snap, &Resolved::default(), &BuildOptions::default());
            let b = build(&snap, &Resolved::default(), &BuildOptions::default());
            assert_eq!(
                serde_json::to_string(&a).unwrap(),
                serde_json::to_string(&b).unwrap()
            );
            seen += 1;
        }
    }
    assert!(
        seen >= 5,
        "only {seen} apps documents found in {}",
        dir.display()
    );
}
