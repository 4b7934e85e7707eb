//! `table::build` on the project's own per-version fixtures (tests/fixtures/), written in the
//! shapes Marathon 1.10, 1.5 and ≤1.4 emit.

use vipd::model::parse_apps_document;
use vipd::table::{build, BackendState, BuildOptions, Built, Protocol, Resolved};

fn build_fixture(name: &str) -> Built {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let snap = parse_apps_document(&std::fs::read(path).unwrap()).unwrap();
    build(&snap, &Resolved::default(), &BuildOptions::default())
}

fn at(b: &Built, proto: Protocol, listen: &str) -> Vec<(String, String, BackendState)> {
    let listen: std::net::SocketAddr = listen.parse().unwrap();
    b.frontends
        .iter()
        .find(|f| f.protocol == proto && f.listen == listen)
        .unwrap_or_else(|| panic!("no {proto} {listen}"))
        .backends
        .iter()
        .map(|b| (b.address.to_string(), b.task.to_string(), b.state))
        .collect()
}

fn s(a: &str, t: &str, st: BackendState) -> (String, String, BackendState) {
    (a.to_string(), t.to_string(), st)
}

#[test]
fn marathon_1_5_shape() {
    let b = build_fixture("marathon-1.5-apps.json");
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    use BackendState::*;
    // TCP check without portIndex covers port 0; the task without `healthCheckResults` (1.5 omits
    // the empty key) is unknown, the unreachable one too.
    assert_eq!(
        at(&b, Protocol::Tcp, "0.0.0.0:10000"),
        [
            s(
                "10.0.1.10:31000",
                "web.instance-8cad6a69-6ca8-11e7-beb2-0e2beceebfcc._app",
                Up
            ),
            s(
                "10.0.1.11:31010",
                "web.instance-9cad6a69-6ca8-11e7-beb2-0e2beceebfcc._app",
                Unknown
            ),
            s(
                "10.0.1.12:31020",
                "web.instance-acad6a69-6ca8-11e7-beb2-0e2beceebfcc._app",
                Unknown
            ),
        ]
    );
    let web = b.frontends.iter().find(|f| f.app == "/web").unwrap();
    assert_eq!(web.options.get("probe").as_deref(), Some("tcp"));
    assert_eq!(
        at(&b, Protocol::Tcp, "0.0.0.0:10002"),
        [s(
            "10.0.2.20:31500",
            "db.instance-bcad6a69-6ca8-11e7-beb2-0e2beceebfcc._app",
            Up
        )]
    );
    assert_eq!(b.frontends.len(), 2);
}

#[test]
fn marathon_1_4_legacy_shape() {
    let b = build_fixture("marathon-1.4-legacy-apps.json");
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    use BackendState::*;
    // Top-level ports + portDefinitions, host mode, tcp and udp.
    assert_eq!(
        at(&b, Protocol::Tcp, "0.0.0.0:10013"),
        [s(
            "10.0.4.40:31700",
            "legacy_host.3a58a46a-c937-11e5-9836-026ee08d9f6f",
            Up
        )]
    );
    assert_eq!(
        at(&b, Protocol::Udp, "0.0.0.0:10015"),
        [s(
            "10.0.4.40:31701",
            "legacy_host.3a58a46a-c937-11e5-9836-026ee08d9f6f",
            Up
        )]
    );
    // docker BRIDGE + docker.portMappings; tcp:// IP VIP; HTTP check; health results with taskId.
    let bridge = [
        s(
            "10.0.4.41:31800",
            "legacy_bridge.1883a887-c931-11e5-9836-026ee08d9f6f",
            Up,
        ),
        s(
            "10.0.4.42:31801",
            "legacy_bridge.0dbabba6-c931-11e5-9836-026ee08d9f6f",
            Unknown,
        ),
    ];
    assert_eq!(at(&b, Protocol::Tcp, "0.0.0.0:10020"), bridge);
    assert_eq!(at(&b, Protocol::Tcp, "10.10.0.20:80"), bridge);
    let f = b
        .frontends
        .iter()
        .find(|f| f.listen.port() == 10020)
        .unwrap();
    assert_eq!(f.options.get("balance").as_deref(), Some("round-robin"));
    assert_eq!(f.options.get("probe_path").as_deref(), Some("/"));
    // ipAddress + discovery.ports: a named VIP on the task IP.
    let ippt = b
        .frontends
        .iter()
        .find(|f| f.vip_name.as_deref() == Some("legacyippt.marathon.l4lb.thisdcos.directory"))
        .expect("named VIP");
    assert_eq!(ippt.listen.port(), 7000);
    assert_eq!(ippt.backends[0].address.to_string(), "9.0.1.5:7000");
    // docker USER: task IP + containerPort.
    assert_eq!(
        at(&b, Protocol::Tcp, "0.0.0.0:10030"),
        [s(
            "9.0.1.6:6379",
            "legacy_user.6a58a46a-c937-11e5-9836-026ee08d9f6f",
            Up
        )]
    );
    // docker HOST: host mode.
    assert_eq!(
        at(&b, Protocol::Tcp, "0.0.0.0:10040"),
        [s(
            "10.0.4.45:31900",
            "legacy_dockerhost.7a58a46a-c937-11e5-9836-026ee08d9f6f",
            Up
        )]
    );
    assert_eq!(b.frontends.len(), 7);
}
