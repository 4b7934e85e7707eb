//! A takeover with `--manage-addresses`, through the real binary, inside a throwaway network
//! namespace (root only; otherwise "skipped: <reason>"): the successor adopts the VIP address the
//! old vipd added, the old one exits without removing it, and the successor removes it on its own
//! SIGTERM. Nothing here sends traffic: the addresses are read with `ip -n NS -j addr`.

mod support;

use support::netns::Netns;
use support::PATIENCE;

#[test]
fn a_takeover_hands_the_vip_addresses_over() {
    let ns = match Netns::create("upg") {
        Ok(ns) => ns,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    const VIP: &str = "11.1.2.3";
    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path().join("apps.json");
    std::fs::write(
        &apps,
        serde_json::json!({"apps": [{
            "id": "/web",
            "portDefinitions": [{"port": 10000, "protocol": "tcp",
                                 "labels": {"VIP_0": format!("{VIP}:8080")}}],
            "tasks": [{"id": "web.1", "host": "127.0.0.1", "ports": [31000],
                       "state": "TASK_RUNNING"}]
        }]})
        .to_string(),
    )
    .unwrap();
    let socket = dir.path().join("handover.sock");
    let args = [
        "run",
        "--apps",
        apps.to_str().unwrap(),
        "--bind-address",
        "127.0.0.1",
        "--manage-addresses",
        "--handover-socket",
        socket.to_str().unwrap(),
        "--admin-listen",
        "127.0.0.1:0",
        "--worker-threads",
        "2",
    ];
    let mut old = ns.vipd(&args);
    assert!(
        support::eventually_blocking(PATIENCE, || ns.has(VIP)),
        "the VIP address was never added: {:#?}",
        old.log()
    );
    assert!(
        old.wait_for_log("handover socket listening", PATIENCE),
        "{:#?}",
        old.log()
    );

    let mut new = ns.vipd(&args);
    assert!(
        new.wait_for_log("upgrade complete: serving", PATIENCE),
        "{:#?}\n{:#?}",
        new.log(),
        old.log()
    );
    let code = old.wait_exit(PATIENCE).and_then(|s| s.code());
    assert_eq!(code, Some(0), "{:#?}", old.log());
    assert!(
        old.count_log("VIP addresses left to the successor") == 1,
        "{:#?}",
        old.log()
    );
    assert!(
        ns.has(VIP),
        "the old vipd removed the address the new one uses"
    );
    assert_eq!(old.count_log("removed VIP address"), 0);

    // The successor owns it now: its own exit removes it.
    new.signal(libc::SIGTERM);
    assert_eq!(
        new.wait_exit(PATIENCE).and_then(|s| s.code()),
        Some(0),
        "{:#?}",
        new.log()
    );
    assert!(
        !ns.has(VIP),
        "the successor removes the adopted address: {:#?}",
        new.log()
    );
}
