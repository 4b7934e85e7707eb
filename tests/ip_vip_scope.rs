//! `vipd run`'s IP VIP rule through the real binary: without `--manage-addresses` an IP VIP
//! label must name an address of this agent (or loopback, or one in `--vip-cidr` /
//! `--ip-vip-cidr`); any other is a warning naming the app and the label, and the rest of the app
//! still serves. `--ip-vip-cidr` admits a range the operator vouches for. (With
//! `--manage-addresses` only the named ranges are accepted: `cli::tests` and `table::vip`.)

mod support;

use support::daemon::{http_get, VipdProcess};
use support::{free_port, LOCALHOST, PATIENCE};

async fn vips(admin: std::net::SocketAddr) -> serde_json::Value {
    let (code, body) = http_get(&format!("http://{admin}/v1/vips")).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// `/v1/vips` once a table is published.
async fn first_table(admin: std::net::SocketAddr) -> serde_json::Value {
    support::poll_until(PATIENCE, || async {
        let v = vips(admin).await;
        (v["generation"].as_u64() > Some(0)).then_some(v)
    })
    .await
    .expect("a table")
}

fn listens(v: &serde_json::Value) -> Vec<String> {
    v["frontends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["listen"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_vip_that_is_not_an_agent_address_is_a_warning_unless_its_range_is_named() {
    let (service, vip_port) = (free_port(LOCALHOST), free_port(support::loopback(9)));
    let dir = tempfile::tempdir().unwrap();
    let apps = serde_json::json!({"apps": [{"id": "/v", "portDefinitions": [{"port": service, "labels": {
        "VIP_0": "192.0.2.10:80", "VIP_1": format!("127.0.0.9:{vip_port}")}}],
        "tasks": [{"id": "v.1", "host": "127.0.0.1", "ports": [9], "state": "TASK_RUNNING"}]}]});

    let (vipd, admin) = VipdProcess::run_on_apps(dir.path(), &apps, &[], PATIENCE);
    let v = first_table(admin).await;
    let mut got = listens(&v);
    got.sort();
    let mut want = vec![
        format!("127.0.0.1:{service}"),
        format!("127.0.0.9:{vip_port}"),
    ];
    want.sort();
    assert_eq!(got, want, "the service port and the loopback VIP serve");
    let warnings = v["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| w["app"] == "/v"
            && w["message"].as_str().unwrap().contains(
                "VIP_0=\"192.0.2.10:80\": 192.0.2.10 is not an address of this agent, nor in 11.0.0.0/8 (--ip-vip-cidr)"
            )),
        "{warnings:?}"
    );
    drop(vipd);

    // The operator vouches for the range: the VIP is in the table (binding it is the host's job).
    let (_vipd, admin) = VipdProcess::run_on_apps(
        dir.path(),
        &apps,
        &["--ip-vip-cidr", "192.0.2.0/24"],
        PATIENCE,
    );
    let v = first_table(admin).await;
    assert!(listens(&v).contains(&"192.0.2.10:80".to_string()), "{v}");
    assert!(v["warnings"].as_array().unwrap().is_empty(), "{v}");
}
