//! `examples/marathon/vipd.json`: the Marathon app that runs vipd on every agent has host
//! networking, one instance per agent, the two capabilities, a `/readyz` health check on the
//! admin port, and an upgrade that replaces one agent's vipd at a time.

use std::process::Command;

fn app() -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/marathon/vipd.json"
    ))
    .unwrap();
    serde_json::from_str(&text).expect("vipd.json is JSON")
}

fn docker_parameters(app: &serde_json::Value) -> Vec<(String, String)> {
    app["container"]["docker"]["parameters"]
        .as_array()
        .expect("docker parameters")
        .iter()
        .map(|p| {
            (
                p["key"].as_str().unwrap().to_string(),
                p["value"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn one_vipd_per_agent_on_the_host_network() {
    let app = app();
    assert_eq!(
        app["constraints"],
        serde_json::json!([["hostname", "UNIQUE"]])
    );
    assert_eq!(app["networks"], serde_json::json!([{"mode": "host"}]));
    assert!(app["instances"].as_u64().unwrap() >= 1);
    assert_eq!(app["container"]["docker"]["privileged"], false);
}

#[test]
fn capabilities_are_the_two_vipd_needs_and_no_more() {
    let params = docker_parameters(&app());
    let values = |key: &str| -> Vec<&str> {
        params
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(values("cap-drop"), ["ALL"]);
    assert_eq!(values("cap-add"), ["NET_ADMIN", "NET_BIND_SERVICE"]);
    // Docker gives a non-root user no ambient capabilities: uid 0, holding only those two.
    assert_eq!(values("user"), ["0:0"]);
    assert_eq!(values("security-opt"), ["no-new-privileges"]);
    assert_eq!(values("ulimit"), ["nofile=1048576:1048576"]);
}

#[test]
fn health_check_is_readyz_on_the_admin_port() {
    let app = app();
    let admin: std::net::SocketAddr = app["env"]["VIPD_ADMIN_LISTEN"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let checks = app["healthChecks"].as_array().unwrap();
    assert_eq!(checks.len(), 1);
    let check = &checks[0];
    assert_eq!(check["path"], "/readyz");
    assert_eq!(check["port"], admin.port());
    // MESOS_HTTP runs on the agent, so an admin server on 127.0.0.1 answers it.
    assert_eq!(check["protocol"], "MESOS_HTTP");
    assert!(admin.ip().is_loopback());
}

#[test]
fn upgrade_replaces_one_agent_at_a_time_after_the_drain() {
    let app = app();
    let instances = app["instances"].as_u64().unwrap() as f64;
    let strategy = &app["upgradeStrategy"];
    // No room for an extra instance (one per agent), and all but one stay up.
    assert_eq!(strategy["maximumOverCapacity"], 0);
    let min_health = strategy["minimumHealthCapacity"].as_f64().unwrap();
    assert_eq!((instances * min_health).ceil(), instances - 1.0);
    // Marathon's SIGKILL comes after vipd's drain.
    let drain: u64 = app["env"]["VIPD_DRAIN_TIMEOUT"]
        .as_str()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(app["taskKillGracePeriodSeconds"].as_u64().unwrap() > drain);
}

#[test]
fn every_variable_is_a_flag_of_vipd_run_and_vipd_reads_the_app_cleanly() {
    let app = app();
    let help = Command::new(env!("CARGO_BIN_EXE_vipd"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let env = app["env"].as_object().unwrap();
    assert!(env.contains_key("VIPD_MARATHON"));
    for name in env.keys() {
        assert!(
            help.contains(&format!("[env: {name}=")),
            "vipd.json sets {name}, which vipd run does not read"
        );
    }
    assert_eq!(app["args"], serde_json::json!(["run"]));
    // vipd following this Marathon sees its own app: no frontend, no warning.
    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path().join("apps.json");
    let mut own = app.clone();
    own["tasks"] = serde_json::json!([]);
    std::fs::write(&apps, serde_json::json!({"apps": [own]}).to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vipd"))
        .args(["table", "--apps", apps.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(table["frontends"], serde_json::json!([]));
    assert_eq!(table["warnings"], serde_json::json!([]));
}

#[test]
fn the_takeover_socket_is_on_the_host_volume_both_versions_see() {
    let app = app();
    let socket = app["env"]["VIPD_HANDOVER_SOCKET"].as_str().unwrap();
    let volumes = app["container"]["volumes"].as_array().unwrap();
    assert!(
        volumes.iter().any(|v| {
            let path = v["containerPath"].as_str().unwrap();
            socket.starts_with(&format!("{path}/"))
                && v["hostPath"] == v["containerPath"]
                && v["mode"] == "RW"
        }),
        "{socket} must be on a read-write host volume"
    );
}
