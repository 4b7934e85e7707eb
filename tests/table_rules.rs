//! One test per routing rule of `table::build` (docs/routing.md), on Marathon-shaped JSON.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use vipd::model::parse_apps_document;
use vipd::table::vip::{self, VipPool};
use vipd::table::{
    build, BackendState, BuildOptions, Built, Frontend, FrontendKind, Protocol, Resolved,
};

fn build_doc_with(doc: &Value, resolved: &Resolved, opts: &BuildOptions) -> Built {
    let bytes = serde_json::to_vec(doc).unwrap();
    let snap = parse_apps_document(&bytes).expect("an apps document");
    build(&snap, resolved, opts)
}

fn build_doc(doc: &Value) -> Built {
    build_doc_with(doc, &Resolved::default(), &BuildOptions::default())
}

fn apps(list: Vec<Value>) -> Value {
    json!({ "apps": list })
}

fn find<'a>(b: &'a Built, proto: &str, listen: &str) -> &'a Frontend {
    let listen: SocketAddr = listen.parse().unwrap();
    let proto = match proto {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => panic!("protocol"),
    };
    b.frontends
        .iter()
        .find(|f| f.protocol == proto && f.listen == listen)
        .unwrap_or_else(|| panic!("no {proto} {listen} in {:#?}", b.frontends))
}

fn addrs(f: &Frontend) -> Vec<String> {
    f.backends.iter().map(|b| b.address.to_string()).collect()
}

fn keys(b: &Built) -> Vec<String> {
    b.frontends
        .iter()
        .map(|f| format!("{}:{}", f.protocol, f.listen))
        .collect()
}

fn task(id: &str, host: &str, ports: &[u16]) -> Value {
    json!({ "id": id, "host": host, "ports": ports, "state": "TASK_RUNNING",
            "ipAddresses": [], "servicePorts": [], "healthCheckResults": [] })
}

fn host_app(id: &str, port_defs: Value, tasks: Vec<Value>) -> Value {
    json!({ "id": id, "networks": [{"mode": "host"}], "portDefinitions": port_defs, "tasks": tasks })
}

fn warned(b: &Built, app: &str, needle: &str) -> bool {
    b.warnings
        .iter()
        .any(|w| w.app.as_deref() == Some(app) && w.message.contains(needle))
}

// ---------------------------------------------------------------- networking modes

#[test]
fn host_mode_uses_agent_address_and_task_ports_in_order() {
    let b = build_doc(&apps(vec![host_app(
        "/web",
        json!([{"port": 10000, "protocol": "tcp", "name": "http"}, {"port": 10001}]),
        vec![
            task("t1", "10.0.0.1", &[31000, 31001]),
            task("t2", "10.0.0.2", &[31002, 31003]),
        ],
    )]));
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    assert_eq!(keys(&b), ["tcp:0.0.0.0:10000", "tcp:0.0.0.0:10001"]);
    let f = find(&b, "tcp", "0.0.0.0:10000");
    assert_eq!(addrs(f), ["10.0.0.1:31000", "10.0.0.2:31002"]);
    assert_eq!(f.kind, FrontendKind::ServicePort);
    assert_eq!(f.port_name.as_deref(), Some("http"));
    assert_eq!(f.app, "/web");
    assert_eq!(f.apps, ["/web"]);
    assert_eq!(f.port_index, 0);
    let g = find(&b, "tcp", "0.0.0.0:10001");
    assert_eq!(addrs(g), ["10.0.0.1:31001", "10.0.0.2:31003"]);
    assert_eq!(g.port_index, 1);
    assert_eq!(&*f.backends[0].task, "t1");
    assert_eq!(f.backends[0].state, BackendState::Up);
}

#[test]
fn no_networks_and_legacy_top_level_ports_is_host_mode() {
    let b = build_doc(&apps(vec![json!({
        "id": "/myapp", "ports": [10013, 10015], "container": null,
        "tasks": [{"id": "myapp.1", "host": "10.0.0.1", "ports": [31000, 31001]}]
    })]));
    assert_eq!(addrs(find(&b, "tcp", "0.0.0.0:10013")), ["10.0.0.1:31000"]);
    assert_eq!(addrs(find(&b, "tcp", "0.0.0.0:10015")), ["10.0.0.1:31001"]);
}

#[test]
fn port_definitions_win_over_legacy_ports_and_empty_definitions_fall_back() {
    let b = build_doc(&apps(vec![
        json!({"id": "/a", "ports": [10001], "portDefinitions": [{"port": 10002}],
               "tasks": [task("a.1", "10.0.0.1", &[31000])]}),
        json!({"id": "/b", "ports": [10003], "portDefinitions": [],
               "tasks": [task("b.1", "10.0.0.1", &[31001])]}),
    ]));
    assert_eq!(keys(&b), ["tcp:0.0.0.0:10002", "tcp:0.0.0.0:10003"]);
}

#[test]
fn container_bridge_uses_agent_and_host_port_never_the_bridge_ip() {
    let b = build_doc(&apps(vec![json!({
        "id": "/db", "networks": [{"mode": "container/bridge"}],
        "container": {"type": "DOCKER", "docker": {"image": "pg"},
            "portMappings": [{"containerPort": 5432, "hostPort": 0, "servicePort": 10002, "protocol": "tcp"}]},
        "tasks": [{"id": "db.1", "host": "10.0.2.20", "state": "TASK_RUNNING", "ports": [31500],
                   "ipAddresses": [{"ipAddress": "172.17.0.2", "protocol": "IPv4"}]}]
    })]));
    assert_eq!(addrs(find(&b, "tcp", "0.0.0.0:10002")), ["10.0.2.20:31500"]);
}

#[test]
fn legacy_docker_bridge_with_docker_port_mappings() {
    let b = build_doc(&apps(vec![json!({
        "id": "/nginx", "ports": [10000], "portDefinitions": null, "networks": null, "ipAddress": null,
        "container": {"type": "DOCKER", "docker": {"image": "nginx", "network": "BRIDGE",
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "servicePort": 10000, "protocol": "tcp"}]}},
        "tasks": [{"id": "nginx.1", "host": "10.0.6.25", "ports": [16916],
                   "ipAddresses": [{"ipAddress": "172.17.1.72", "protocol": "IPv4"}]}]
    })]));
    assert_eq!(addrs(find(&b, "tcp", "0.0.0.0:10000")), ["10.0.6.25:16916"]);
}

#[test]
fn legacy_docker_host_is_host_mode() {
    let b = build_doc(&apps(vec![json!({
        "id": "/h", "portDefinitions": [{"port": 10040}],
        "container": {"type": "DOCKER", "docker": {"image": "x", "network": "HOST"}},
        "tasks": [task("h.1", "10.0.4.45", &[31900])]
    })]));
    assert_eq!(addrs(find(&b, "tcp", "0.0.0.0:10040")), ["10.0.4.45:31900"]);
}

#[test]
fn legacy_docker_user_is_container_mode_task_ip_and_container_port() {
    let b = build_doc(&apps(vec![json!({
        "id": "/u",
        "container": {"type": "DOCKER", "docker": {"image": "redis", "network": "USER",
            "portMappings": [{"containerPort": 6379, "servicePort": 10030, "protocol": "tcp"}]}},
        "ipAddress": {"networkName": "dcos"},
        "tasks": [{"id": "u.1", "host": "10.0.4.44", "ports": [],
                   "ipAddresses": [{"ipAddress": "9.0.1.6", "protocol": "IPv4"}]}]
    })]));
    assert_eq!(addrs(find(&b, "tcp", "0.0.0.0:10030")), ["9.0.1.6:6379"]);
}

#[test]
fn legacy_ip_address_discovery_ports_are_container_ports_without_service_ports() {
    let b = build_doc(&apps(vec![json!({
        "id": "/ippt", "ports": [], "container": null,
        "ipAddress": {"networkName": "dcos", "groups": [], "labels": {},
            "discovery": {"ports": [
                {"number": 7000, "name": "thrift", "protocol": "tcp", "labels": {"VIP_0": "10.10.0.7:7000"}},
                {"number": 7001, "name": "plain", "protocol": "tcp"}
            ]}},
        "tasks": [{"id": "ippt.1", "host": "10.0.4.43", "ports": [],
                   "ipAddresses": [{"ipAddress": "9.0.1.5", "protocol": "IPv4"}]}]
    })]));
    // Port 1 has no service port and no VIP: nothing to listen on.
    assert_eq!(keys(&b), ["tcp:10.10.0.7:7000"]);
    let f = find(&b, "tcp", "10.10.0.7:7000");
    assert_eq!(addrs(f), ["9.0.1.5:7000"]);
    assert_eq!(f.port_name.as_deref(), Some("thrift"));
}

#[test]
fn ip_address_on_mesos_bridge_is_bridge_mode() {
    let b = build_doc(&apps(vec![json!({
        "id": "/mb",
        "ipAddress": {"networkName": "mesos-bridge",
            "discovery": {"ports": [{"number": 80, "protocol": "tcp", "labels": {"VIP_0": "10.10.0.8:80"}}]}},
        "tasks": [{"id": "mb.1", "host": "10.0.0.9", "ports": [31555],
                   "ipAddresses": [{"ipAddress": "172.31.0.2", "protocol": "IPv4"}]}]
    })]));
    assert_eq!(addrs(find(&b, "tcp", "10.10.0.8:80")), ["10.0.0.9:31555"]);
}

#[test]
fn network_without_mode_is_container() {
    let b = build_doc(&apps(vec![json!({
        "id": "/c", "networks": [{"name": "dcos"}],
        "container": {"type": "MESOS", "portMappings": [{"containerPort": 80, "servicePort": 10060}]},
        "tasks": [{"id": "c.1", "host": "10.0.0.1", "ports": [],
                   "ipAddresses": [{"ipAddress": "9.0.0.1", "protocol": "IPv4"}]}]
    })]));
    assert_eq!(addrs(find(&b, "tcp", "0.0.0.0:10060")), ["9.0.0.1:80"]);
}

#[test]
fn canonical_networks_win_over_legacy_fields() {
    // marathon-lb CI 1.9 style: docker.network HOST *and* networks container/bridge.
    let b = build_doc(&apps(vec![json!({
        "id": "/mixed", "networks": [{"mode": "container/bridge"}],
        "container": {"type": "DOCKER", "docker": {"image": "x", "network": "HOST"},
            "portMappings": [{"containerPort": 80, "hostPort": 0, "servicePort": 10070}]},
        "ipAddress": {"networkName": "dcos"},
        "tasks": [{"id": "m.1", "host": "10.0.0.1", "ports": [31070],
                   "ipAddresses": [{"ipAddress": "172.17.0.9", "protocol": "IPv4"}]}]
    })]));
    assert_eq!(addrs(find(&b, "tcp", "0.0.0.0:10070")), ["10.0.0.1:31070"]);
    // With several networks, the last one's mode wins (marathon-lb).
    let b = build_doc(&apps(vec![json!({
        "id": "/two", "networks": [{"mode": "host"}, {"mode": "container", "name": "dcos"}],
        "portDefinitions": [{"port": 10071}],
        "container": {"type": "MESOS", "portMappings": [{"containerPort": 81, "servicePort": 10072}]},
        "tasks": [{"id": "t.1", "host": "10.0.0.1", "ports": [31071],
                   "ipAddresses": [{"ipAddress": "9.0.0.2", "protocol": "IPv4"}]}]
    })]));
    assert_eq!(keys(&b), ["tcp:0.0.0.0:10072"]);
    assert_eq!(addrs(find(&b, "tcp", "0.0.0.0:10072")), ["9.0.0.2:81"]);
}

#[test]
fn docker_network_none_and_unknown_modes_skip_the_app_with_a_warning() {
    let b = build_doc(&apps(vec![
        json!({"id": "/none", "container": {"type": "DOCKER", "docker": {"image": "x", "network": "NONE"}},
               "portDefinitions": [{"port": 10080}], "tasks": [task("n.1", "10.0.0.1", &[31080])]}),
        json!({"id": "/odd", "networks": [{"mode": "overlay"}], "portDefinitions": [{"port": 10081}]}),
        host_app("/ok", json!([{"port": 10082}]), vec![]),
    ]));
    assert_eq!(keys(&b), ["tcp:0.0.0.0:10082"]);
    assert!(warned(&b, "/none", "NONE"), "{:?}", b.warnings);
    assert!(warned(&b, "/odd", "\"overlay\""), "{:?}", b.warnings);
}

#[test]
fn container_mode_mixed_host_port_mappings_consume_task_ports_in_order() {
    let b = build_doc(&apps(vec![json!({
        "id": "/mix", "networks": [{"mode": "container", "name": "dcos"}],
        "container": {"type": "MESOS", "portMappings": [
            {"containerPort": 8080, "hostPort": 0, "servicePort": 10100, "name": "a"},
            {"containerPort": 9000, "servicePort": 10101, "name": "b"},
            {"containerPort": 0, "hostPort": 31999, "servicePort": 10102, "name": "c"},
            {"containerPort": 0, "servicePort": 10103, "name": "d"}
        ]},
        "tasks": [{"id": "mix.1", "host": "10.0.3.30", "ports": [31600, 31999], "state": "TASK_RUNNING",
                   "ipAddresses": [{"ipAddress": "9.0.0.7", "protocol": "IPv4"},
                                   {"ipAddress": "9.9.9.9", "protocol": "IPv4"}]}]
    })]));
    assert_eq!(addrs(find(&b, "tcp", "0.0.0.0:10100")), ["10.0.3.30:31600"]);
    assert_eq!(addrs(find(&b, "tcp", "0.0.0.0:10101")), ["9.0.0.7:9000"]);
    assert_eq!(addrs(find(&b, "tcp", "0.0.0.0:10102")), ["10.0.3.30:31999"]);
    // containerPort 0 without a host port: no usable port; the frontend stays, empty.
    assert!(find(&b, "tcp", "0.0.0.0:10103").backends.is_empty());
}

#[test]
fn container_task_without_ip_skips_only_its_ip_ports() {
    let b = build_doc(&apps(vec![json!({
        "id": "/noip", "networks": [{"mode": "container", "name": "dcos"}],
        "container": {"type": "MESOS", "portMappings": [
            {"containerPort": 8080, "hostPort": 0, "servicePort": 10110},
            {"containerPort": 9000, "servicePort": 10111}
        ]},
        "tasks": [{"id": "noip.1", "host": "10.0.3.31", "ports": [31610], "ipAddresses": []}]
    })]));
    assert_eq!(addrs(find(&b, "tcp", "0.0.0.0:10110")), ["10.0.3.31:31610"]);
    assert!(find(&b, "tcp", "0.0.0.0:10111").backends.is_empty());
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
}

#[test]
fn unparsable_task_ip_is_warned_and_skipped() {
    let b = build_doc(&apps(vec![json!({
        "id": "/badip", "networks": [{"mode": "container"}],
        "container": {"portMappings": [{"containerPort": 9000, "servicePort": 10112}]},
        "tasks": [{"id": "badip.1", "host": "10.0.3.31", "ipAddresses": [{"ipAddress": "not-an-ip"}]}]
    })]));
    assert!(find(&b, "tcp", "0.0.0.0:10112").backends.is_empty());
    assert!(warned(&b, "/badip", "badip.1"), "{:?}", b.warnings);
}

// ---------------------------------------------------------------- ports and protocols

#[test]
fn port_zero_backends_are_skipped_and_service_port_zero_has_no_frontend() {
    let b = build_doc(&apps(vec![host_app(
        "/z",
        json!([{"port": 10120}, {"port": 0, "labels": {"VIP_1": "10.10.0.12:80"}}, {"port": 0}]),
        vec![
            task("z.1", "10.0.0.1", &[0, 31121, 31122]),
            task("z.2", "10.0.0.2", &[31120, 31123, 31124]),
        ],
    )]));
    assert_eq!(keys(&b), ["tcp:0.0.0.0:10120", "tcp:10.10.0.12:80"]);
    assert_eq!(addrs(find(&b, "tcp", "0.0.0.0:10120")), ["10.0.0.2:31120"]);
    assert_eq!(
        addrs(find(&b, "tcp", "10.10.0.12:80")),
        ["10.0.0.1:31121", "10.0.0.2:31123"]
    );
}

#[test]
fn protocols_udp_and_both() {
    let b = build_doc(&apps(vec![host_app(
        "/p",
        json!([
            {"port": 10130, "protocol": "udp"},
            {"port": 10131, "protocol": "udp,tcp"},
            {"port": 10132, "protocol": " TCP , UDP "},
            {"port": 10133}
        ]),
        vec![task("p.1", "10.0.0.1", &[31130, 31131, 31132, 31133])],
    )]));
    assert_eq!(
        keys(&b),
        [
            "tcp:0.0.0.0:10131",
            "tcp:0.0.0.0:10132",
            "tcp:0.0.0.0:10133",
            "udp:0.0.0.0:10130",
            "udp:0.0.0.0:10131",
            "udp:0.0.0.0:10132",
        ]
    );
    assert_eq!(addrs(find(&b, "udp", "0.0.0.0:10131")), ["10.0.0.1:31131"]);
    assert_eq!(addrs(find(&b, "tcp", "0.0.0.0:10131")), ["10.0.0.1:31131"]);
    assert!(b.warnings.is_empty());
}

#[test]
fn unknown_protocol_skips_that_port_with_a_warning() {
    let b = build_doc(&apps(vec![host_app(
        "/sctp",
        json!([{"port": 10140, "protocol": "sctp"}, {"port": 10141, "protocol": "tcp"}]),
        vec![task("s.1", "10.0.0.1", &[31140, 31141])],
    )]));
    assert_eq!(keys(&b), ["tcp:0.0.0.0:10141"]);
    assert!(warned(&b, "/sctp", "port 0"), "{:?}", b.warnings);
    assert!(warned(&b, "/sctp", "\"sctp\""), "{:?}", b.warnings);
}

#[test]
fn shorter_task_ports_contribute_only_aligned_ports_without_warning() {
    // An old app version during a deploy has one port; the new one has two.
    let b = build_doc(&apps(vec![host_app(
        "/zip",
        json!([{"port": 10150}, {"port": 10151}]),
        vec![
            task("zip.old", "10.0.0.1", &[31150]),
            task("zip.new", "10.0.0.2", &[31160, 31161]),
        ],
    )]));
    assert_eq!(
        addrs(find(&b, "tcp", "0.0.0.0:10150")),
        ["10.0.0.1:31150", "10.0.0.2:31160"]
    );
    assert_eq!(addrs(find(&b, "tcp", "0.0.0.0:10151")), ["10.0.0.2:31161"]);
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
}

#[test]
fn frontend_without_backends_is_kept() {
    let b = build_doc(&apps(vec![json!({
        "id": "/idle", "instances": 0, "networks": [{"mode": "host"}],
        "portDefinitions": [{"port": 10160, "labels": {"VIP_0": "/idle:80"}}], "tasks": []
    })]));
    assert_eq!(b.frontends.len(), 2);
    assert!(b.frontends.iter().all(|f| f.backends.is_empty()));
}

#[test]
fn duplicate_backend_addresses_collapse_to_the_smallest_task_id() {
    let b = build_doc(&apps(vec![host_app(
        "/dup",
        json!([{"port": 10170}]),
        vec![
            task("dup.b", "10.0.0.1", &[31170]),
            task("dup.a", "10.0.0.1", &[31170]),
        ],
    )]));
    let f = find(&b, "tcp", "0.0.0.0:10170");
    assert_eq!(addrs(f), ["10.0.0.1:31170"]);
    assert_eq!(&*f.backends[0].task, "dup.a");
}

// ---------------------------------------------------------------- VIPs

fn named_ip(b: &Built, name: &str) -> IpAddr {
    b.frontends
        .iter()
        .find(|f| f.vip_name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no VIP {name}: {:#?}", b.frontends))
        .listen
        .ip()
}

#[test]
fn ip_and_named_vips() {
    let b = build_doc(&apps(vec![host_app(
        "/g/app",
        json!([
            {"port": 10180, "labels": {"VIP_0": "10.10.0.1:80"}},
            {"port": 10181, "protocol": "udp,tcp", "labels": {"VIP_1": "/g/app:53"}},
            {"port": 10182, "labels": {"vip_2": "[fd00::10]:8080", "VIP": "udp://10.10.0.2:90"}}
        ]),
        vec![task("g.1", "10.0.0.1", &[31180, 31181, 31182])],
    )]));
    // An IP VIP forwards within its family: the IPv6 VIP keeps its frontend, without the IPv4
    // backend.
    assert_eq!(
        b.warnings.iter().map(|w| w.message.as_str()).collect::<Vec<_>>(),
        ["VIP tcp [fd00::10]:8080: 1 backend(s) of the other address family left out (an IP VIP forwards within its family)"]
    );
    let ip_vip = find(&b, "tcp", "10.10.0.1:80");
    assert_eq!(ip_vip.kind, FrontendKind::Vip);
    assert_eq!(ip_vip.vip_name, None);
    assert_eq!(addrs(ip_vip), ["10.0.0.1:31180"]);
    // The legacy udp:// prefix is dropped; the port's protocol (tcp) decides.
    assert_eq!(addrs(find(&b, "tcp", "10.10.0.2:90")), ["10.0.0.1:31182"]);
    assert!(addrs(find(&b, "tcp", "[fd00::10]:8080")).is_empty());

    let name = "gapp.marathon.l4lb.thisdcos.directory";
    let ip = named_ip(&b, name);
    let cidr: ipnet::IpNet = "11.0.0.0/8".parse().unwrap();
    assert!(cidr.contains(&ip) && ip != "11.0.0.0".parse::<IpAddr>().unwrap());
    // One IP for both protocols of the named VIP.
    let tcp = find(&b, "tcp", &SocketAddr::new(ip, 53).to_string());
    let udp = find(&b, "udp", &SocketAddr::new(ip, 53).to_string());
    assert_eq!(tcp.vip_name.as_deref(), Some(name));
    assert_eq!(udp.vip_name.as_deref(), Some(name));
    assert_eq!(addrs(udp), ["10.0.0.1:31181"]);
    // The address is the pool's home slot for the name (nothing else collides).
    let pool = VipPool::new(cidr);
    let home = vip::allocate([name], &Default::default(), cidr).addresses[name];
    assert_eq!(ip, home);
    assert!(pool.size() > 0);
}

#[test]
fn zone_option_shapes_the_vip_name() {
    let opts = BuildOptions {
        zone: "example.internal".into(),
        ..BuildOptions::default()
    };
    let b = build_doc_with(
        &apps(vec![host_app(
            "/acme",
            json!([{"port": 0, "labels": {"VIP_0": "/acme:10000"}}]),
            vec![],
        )]),
        &Resolved::default(),
        &opts,
    );
    named_ip(&b, "acme.marathon.example.internal");
}

#[test]
fn same_vip_on_several_apps_and_ports_is_one_frontend_with_merged_backends() {
    let b = build_doc(&apps(vec![
        host_app(
            "/zeta",
            json!([{"port": 0, "labels": {"VIP_0": "/shared:80"}}, {"port": 0, "labels": {"VIP_1": "10.10.0.30:80"}}]),
            vec![task("zeta.1", "10.0.0.3", &[31003, 31004])],
        ),
        host_app(
            "/alpha",
            json!([{"port": 0, "name": "web", "labels": {"VIP_0": "/shared:80"}}]),
            vec![task("alpha.1", "10.0.0.1", &[31001])],
        ),
        host_app(
            "/mid",
            json!([{"port": 0, "labels": {"VIP_0": "10.10.0.30:80"}}, {"port": 0, "labels": {"VIP_1": "10.10.0.30:80"}}]),
            vec![task("mid.1", "10.0.0.2", &[31002, 31005])],
        ),
    ]));
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    let ip = named_ip(&b, "shared.marathon.l4lb.thisdcos.directory");
    let named = find(&b, "tcp", &SocketAddr::new(ip, 80).to_string());
    assert_eq!(named.app, "/alpha");
    assert_eq!(named.apps, ["/alpha", "/zeta"]);
    assert_eq!(named.port_name.as_deref(), Some("web"));
    assert_eq!(addrs(named), ["10.0.0.1:31001", "10.0.0.3:31003"]);
    let ipv = find(&b, "tcp", "10.10.0.30:80");
    assert_eq!(ipv.app, "/mid");
    assert_eq!(ipv.apps, ["/mid", "/zeta"]);
    assert_eq!(
        addrs(ipv),
        ["10.0.0.2:31002", "10.0.0.2:31005", "10.0.0.3:31004"]
    );
    assert_eq!(b.frontends.len(), 2);
}

#[test]
fn adding_a_vip_does_not_move_existing_ones() {
    let base = vec![
        host_app(
            "/a",
            json!([{"port": 0, "labels": {"VIP_0": "/a:80"}}]),
            vec![],
        ),
        host_app(
            "/b",
            json!([{"port": 0, "labels": {"VIP_0": "/b:80"}}]),
            vec![],
        ),
    ];
    let before = build_doc(&apps(base.clone()));
    let mut more = base;
    for i in 0..50 {
        more.push(host_app(
            &format!("/new{i}"),
            json!([{"port": 0, "labels": {"VIP_0": format!("/new{i}:80")}}]),
            vec![],
        ));
    }
    let after = build_doc(&apps(more));
    for name in ["a", "b"] {
        let n = format!("{name}.marathon.l4lb.thisdcos.directory");
        assert_eq!(named_ip(&before, &n), named_ip(&after, &n), "{n}");
    }
    assert_eq!(after.frontends.len(), 52);
}

/// Two raw names whose DNS names share a home slot in `cidr`.
fn colliding_names(cidr: ipnet::IpNet) -> (String, String) {
    let pool = VipPool::new(cidr);
    let dns = |i: usize| format!("n{i}.marathon.l4lb.thisdcos.directory");
    for i in 0..200 {
        for j in i + 1..200 {
            if pool.home_slot(&dns(i)) == pool.home_slot(&dns(j)) {
                return (format!("n{i}"), format!("n{j}"));
            }
        }
    }
    unreachable!("a 6-address pool has collisions among 200 names")
}

#[test]
fn named_vip_collisions_resolve_by_name_order_not_arrival_order() {
    let cidr: ipnet::IpNet = "10.99.0.0/29".parse().unwrap(); // 6 usable
    let opts = BuildOptions {
        vip_cidr: cidr,
        ..BuildOptions::default()
    };
    let (x, y) = colliding_names(cidr);
    let app = |id: &str, name: &str| {
        host_app(
            id,
            json!([{"port": 0, "labels": {"VIP_0": format!("/{name}:80")}}]),
            vec![],
        )
    };
    // The app ids sort opposite to the names, so app order cannot explain the result.
    let one = build_doc_with(
        &apps(vec![app("/z", &x), app("/a", &y)]),
        &Resolved::default(),
        &opts,
    );
    let two = build_doc_with(
        &apps(vec![app("/a", &y), app("/z", &x)]),
        &Resolved::default(),
        &opts,
    );
    assert_eq!(one, two);
    let (lo, hi) = if x < y { (&x, &y) } else { (&y, &x) };
    let dns = |n: &str| format!("{n}.marathon.l4lb.thisdcos.directory");
    let home = vip::allocate([dns(lo).as_str()], &Default::default(), cidr).addresses[&dns(lo)];
    assert_eq!(
        named_ip(&one, &dns(lo)),
        home,
        "the smaller name keeps its home slot"
    );
    assert_ne!(named_ip(&one, &dns(hi)), home);
}

#[test]
fn named_vips_skip_addresses_used_by_ip_vips() {
    let cidr: ipnet::IpNet = "10.99.0.0/30".parse().unwrap(); // 10.99.0.1, 10.99.0.2
    let opts = BuildOptions {
        vip_cidr: cidr,
        ..BuildOptions::default()
    };
    let dns = "acme.marathon.l4lb.thisdcos.directory";
    let home = vip::allocate([dns], &Default::default(), cidr).addresses[dns];
    let b = build_doc_with(
        &apps(vec![
            host_app(
                "/acme",
                json!([{"port": 0, "labels": {"VIP_0": "/acme:80"}}]),
                vec![],
            ),
            host_app(
                "/ipv",
                json!([{"port": 0, "labels": {"VIP_0": format!("{home}:9999")}}]),
                vec![],
            ),
        ]),
        &Resolved::default(),
        &opts,
    );
    let got = named_ip(&b, dns);
    assert_ne!(got, home);
    assert!(cidr.contains(&got));
}

#[test]
fn pool_exhaustion_skips_the_vip_with_a_warning() {
    let opts = BuildOptions {
        vip_cidr: "10.99.0.0/30".parse().unwrap(),
        ..BuildOptions::default()
    };
    let list = (0..3)
        .map(|i| {
            host_app(
                &format!("/x{i}"),
                json!([{"port": 0, "labels": {"VIP_0": format!("/x{i}:80")}}]),
                vec![],
            )
        })
        .collect();
    let b = build_doc_with(&apps(list), &Resolved::default(), &opts);
    assert_eq!(b.frontends.len(), 2);
    assert_eq!(
        b.warnings
            .iter()
            .filter(|w| w.message.contains("no free address"))
            .count(),
        1,
        "{:?}",
        b.warnings
    );
}

#[test]
fn bad_vip_labels_are_warned_and_skipped_rest_of_app_builds() {
    let b = build_doc(&apps(vec![host_app(
        "/badvip",
        json!([{"port": 10190, "labels": {
            "VIP_0": "/acme", "VIP_1": "/acme:0", "VIP_2": "/acme:99999", "VIP_3": "/___:80",
            "VIP_4": "10.10.0.40:80", "vip_5": "10.10.0.41:x"
        }}]),
        vec![task("bv.1", "10.0.0.1", &[31190])],
    )]));
    assert_eq!(keys(&b), ["tcp:0.0.0.0:10190", "tcp:10.10.0.40:80"]);
    for key in ["VIP_0", "VIP_1", "VIP_2", "VIP_3", "vip_5"] {
        assert!(warned(&b, "/badvip", key), "{key}: {:?}", b.warnings);
    }
    assert_eq!(b.warnings.len(), 5);
}

#[test]
fn vip_equal_to_a_service_port_frontend_loses_with_a_warning() {
    let opts = BuildOptions {
        bind_address: "10.10.0.50".parse().unwrap(),
        ..BuildOptions::default()
    };
    let b = build_doc_with(
        &apps(vec![
            host_app(
                "/svc",
                json!([{"port": 10200}]),
                vec![task("svc.1", "10.0.0.1", &[31200])],
            ),
            host_app(
                "/vip",
                json!([{"port": 0, "labels": {"VIP_0": "10.10.0.50:10200"}}]),
                vec![task("vip.1", "10.0.0.2", &[31201])],
            ),
        ]),
        &Resolved::default(),
        &opts,
    );
    let f = find(&b, "tcp", "10.10.0.50:10200");
    assert_eq!(f.kind, FrontendKind::ServicePort);
    assert_eq!(f.app, "/svc");
    assert_eq!(b.frontends.len(), 1);
    assert!(warned(&b, "/vip", "/svc"), "{:?}", b.warnings);
}

// ---------------------------------------------------------------- tasks and health

fn state_task(
    id: &str,
    host: &str,
    port: u16,
    state: Option<&str>,
    results: Option<Value>,
) -> Value {
    let mut t = json!({"id": id, "host": host, "ports": [port]});
    if let Some(s) = state {
        t["state"] = json!(s);
    }
    if let Some(r) = results {
        t["healthCheckResults"] = r;
    }
    t
}

#[test]
fn task_state_filter() {
    let states = [
        ("TASK_RUNNING", Some(BackendState::Up)),
        ("TASK_KILLING", Some(BackendState::Draining)),
        ("TASK_UNREACHABLE", Some(BackendState::Unknown)),
        ("TASK_LOST", Some(BackendState::Unknown)),
        ("TASK_STAGING", None),
        ("TASK_STARTING", None),
        ("TASK_FINISHED", None),
        ("TASK_FAILED", None),
        ("TASK_KILLED", None),
        ("TASK_ERROR", None),
        ("TASK_DROPPED", None),
        ("TASK_GONE", None),
        ("TASK_GONE_BY_OPERATOR", None),
        ("TASK_UNKNOWN", None),
    ];
    let mut tasks: Vec<Value> = states
        .iter()
        .enumerate()
        .map(|(i, (s, _))| {
            state_task(
                &format!("t{i:02}"),
                &format!("10.0.0.{}", i + 1),
                31000,
                Some(s),
                None,
            )
        })
        .collect();
    tasks.push(state_task("nostate", "10.0.1.1", 31000, None, None));
    tasks.push(state_task(
        "weird",
        "10.0.1.2",
        31000,
        Some("TASK_WEIRD"),
        None,
    ));
    tasks.push(json!({"id": "nohost", "ports": [31000], "state": "TASK_RUNNING"}));
    let b = build_doc(&apps(vec![host_app("/s", json!([{"port": 10210}]), tasks)]));
    let f = find(&b, "tcp", "0.0.0.0:10210");
    let got: HashMap<&str, BackendState> = f.backends.iter().map(|b| (&*b.task, b.state)).collect();
    for (i, (s, want)) in states.iter().enumerate() {
        assert_eq!(got.get(format!("t{i:02}").as_str()).copied(), *want, "{s}");
    }
    assert_eq!(got.get("nostate"), Some(&BackendState::Up));
    assert_eq!(got.get("weird"), None);
    assert_eq!(got.get("nohost"), None);
    assert!(warned(&b, "/s", "TASK_WEIRD"), "{:?}", b.warnings);
    assert_eq!(b.warnings.len(), 1);
}

#[test]
fn health_states() {
    let alive = |a: bool| json!({"alive": a, "consecutiveFailures": 0, "instanceId": "x"});
    let tasks = vec![
        state_task(
            "all-alive",
            "10.0.0.1",
            31001,
            Some("TASK_RUNNING"),
            Some(json!([alive(true), alive(true)])),
        ),
        state_task(
            "one-dead",
            "10.0.0.2",
            31002,
            Some("TASK_RUNNING"),
            Some(json!([alive(true), alive(false)])),
        ),
        state_task("absent", "10.0.0.3", 31003, Some("TASK_RUNNING"), None),
        state_task(
            "empty",
            "10.0.0.4",
            31004,
            Some("TASK_RUNNING"),
            Some(json!([])),
        ),
        state_task(
            "killing",
            "10.0.0.5",
            31005,
            Some("TASK_KILLING"),
            Some(json!([alive(true)])),
        ),
        state_task(
            "unreachable",
            "10.0.0.6",
            31006,
            Some("TASK_UNREACHABLE"),
            Some(json!([alive(true)])),
        ),
    ];
    let mut app = host_app("/hc", json!([{"port": 10220}]), tasks.clone());
    app["healthChecks"] = json!([{"protocol": "COMMAND", "command": {"value": "true"}}]);
    let b = build_doc(&apps(vec![
        app,
        host_app("/nohc", json!([{"port": 10221}]), tasks),
    ]));
    let states = |port: &str| -> Vec<(String, BackendState)> {
        find(&b, "tcp", port)
            .backends
            .iter()
            .map(|b| (b.task.to_string(), b.state))
            .collect()
    };
    use BackendState::*;
    let s = |t: &str, st| (t.to_string(), st);
    assert_eq!(
        states("0.0.0.0:10220"),
        [
            s("all-alive", Up),
            s("one-dead", Unhealthy),
            s("absent", Unknown),
            s("empty", Unknown),
            s("killing", Draining),
            s("unreachable", Unknown)
        ]
    );
    assert_eq!(
        states("0.0.0.0:10221"),
        [
            s("all-alive", Up),
            s("one-dead", Up),
            s("absent", Up),
            s("empty", Up),
            s("killing", Draining),
            s("unreachable", Unknown)
        ]
    );
    // COMMAND checks give no probe.
    assert!(find(&b, "tcp", "0.0.0.0:10220").options.is_empty());
}

#[test]
fn empty_arrays_of_1_6_and_omitted_keys_of_1_5_give_the_same_table() {
    let hc = json!([{"protocol": "MESOS_TCP", "portIndex": 0}]);
    let v16 = apps(vec![json!({
        "id": "/v", "networks": [{"mode": "host"}], "portDefinitions": [{"port": 10230, "protocol": "tcp", "labels": {}}],
        "healthChecks": hc, "labels": {},
        "tasks": [{"id": "v.instance-00000000-0000-4000-8000-000000000001._app.1", "appId": "/v", "host": "10.0.0.1",
                   "ports": [31230], "servicePorts": [], "ipAddresses": [], "healthCheckResults": [],
                   "localVolumes": [], "state": "TASK_RUNNING", "role": "*"}]
    })]);
    let v15 = apps(vec![json!({
        "id": "/v", "networks": [{"mode": "host"}], "portDefinitions": [{"port": 10230, "protocol": "tcp", "labels": {}}],
        "healthChecks": hc, "labels": {},
        "tasks": [{"id": "v.instance-00000000-0000-4000-8000-000000000001._app.1", "appId": "/v", "host": "10.0.0.1",
                   "ports": [31230], "ipAddresses": [{"ipAddress": "10.0.0.1", "protocol": "IPv4"}],
                   "state": "TASK_RUNNING"}]
    })]);
    let a = build_doc(&v16);
    let b = build_doc(&v15);
    assert_eq!(a, b);
    assert_eq!(
        find(&a, "tcp", "0.0.0.0:10230").backends[0].state,
        BackendState::Unknown
    );
}

#[test]
fn unresolvable_and_unknown_hosts_are_warned_and_skipped() {
    let mut resolved = Resolved::default();
    resolved
        .hosts
        .insert("agent-1.example".into(), Some("10.0.0.1".parse().unwrap()));
    resolved.hosts.insert("dead.invalid".into(), None);
    let b = build_doc_with(
        &apps(vec![host_app(
            "/r",
            json!([{"port": 10240}]),
            vec![
                task("r.1", "agent-1.example", &[31241]),
                task("r.2", "dead.invalid", &[31242]),
                task("r.3", "missing.example", &[31243]),
                task("r.4", "[fd00::4]", &[31244]),
            ],
        )]),
        &resolved,
        &BuildOptions::default(),
    );
    assert_eq!(
        addrs(find(&b, "tcp", "0.0.0.0:10240")),
        ["10.0.0.1:31241", "[fd00::4]:31244"]
    );
    assert!(
        warned(&b, "/r", "r.2") && warned(&b, "/r", "dead.invalid"),
        "{:?}",
        b.warnings
    );
    assert!(
        warned(&b, "/r", "r.3") && warned(&b, "/r", "missing.example"),
        "{:?}",
        b.warnings
    );
    assert_eq!(b.warnings.len(), 2);
}

// ---------------------------------------------------------------- options

#[test]
fn per_port_options_from_labels_and_health_checks() {
    let mut app = host_app(
        "/o",
        json!([{"port": 10250}, {"port": 10251}, {"port": 10252}, {"port": 10253}]),
        vec![],
    );
    app["labels"] = json!({
        "VIPD_0_BALANCE": "maglev", "HAPROXY_0_BALANCE": "leastconn",
        "HAPROXY_1_BALANCE": "leastconn", "HAPROXY_2_BALANCE": "source", "HAPROXY_3_BALANCE": "uri",
        "VIPD_1_HEALTHCHECK": "tcp"
    });
    app["healthChecks"] = json!([
        {"protocol": "COMMAND", "command": {"value": "true"}},
        {"protocol": "MESOS_HTTP", "intervalSeconds": 3, "timeoutSeconds": 1.5},
        {"protocol": "TCP", "portIndex": 1, "intervalSeconds": 10},
        {"protocol": "HTTP", "portIndex": 1, "path": "/ignored"},
        {"protocol": "HTTP", "port": 8080, "path": "/explicit-port"},
        {"portIndex": 3, "path": "/health"}
    ]);
    let b = build_doc(&apps(vec![app]));
    let opts = |p: &str| -> Vec<(String, String)> {
        find(&b, "tcp", p)
            .options
            .entries()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    };
    let o = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        opts("0.0.0.0:10250"),
        [
            o("balance", "maglev"),
            o("probe", "http"),
            o("probe_interval_s", "3"),
            o("probe_path", "/"),
            o("probe_timeout_s", "1.5")
        ]
    );
    assert_eq!(
        opts("0.0.0.0:10251"),
        [
            o("active_health_check", "tcp"),
            o("balance", "least-conn"),
            o("probe", "tcp"),
            o("probe_interval_s", "10")
        ]
    );
    assert_eq!(opts("0.0.0.0:10252"), [o("balance", "maglev")]);
    // A check without protocol is HTTP (Marathon's default). An unknown balance ("uri") is a
    // warning naming the port and the label, and the port keeps the default (the flag).
    assert_eq!(
        opts("0.0.0.0:10253"),
        [o("probe", "http"), o("probe_path", "/health")]
    );
    assert_eq!(
        b.warnings,
        [vipd::table::Warning {
            app: Some("/o".into()),
            message: "port 3: label HAPROXY_3_BALANCE=\"uri\": balance is not one of round-robin, least-conn, p2c, maglev; the port uses the default".into()
        }]
    );
}

#[test]
fn haproxy_roundrobin_maps_to_round_robin() {
    let mut app = host_app("/rr", json!([{"port": 10260}]), vec![]);
    app["labels"] = json!({"HAPROXY_0_BALANCE": "roundrobin"});
    let b = build_doc(&apps(vec![app]));
    assert_eq!(
        find(&b, "tcp", "0.0.0.0:10260")
            .options
            .get("balance")
            .as_deref(),
        Some("round-robin")
    );
}

// ---------------------------------------------------------------- conflicts and bad input

#[test]
fn service_port_conflict_smallest_app_id_wins_loser_keeps_other_ports() {
    let b = build_doc(&apps(vec![
        host_app(
            "/zz",
            json!([{"port": 10270, "protocol": "udp,tcp"}, {"port": 10271, "labels": {"VIP_1": "10.10.0.70:80"}}]),
            vec![task("zz.1", "10.0.0.2", &[31002, 31003])],
        ),
        host_app(
            "/aa",
            json!([{"port": 10270}]),
            vec![task("aa.1", "10.0.0.1", &[31001])],
        ),
    ]));
    let f = find(&b, "tcp", "0.0.0.0:10270");
    assert_eq!(f.app, "/aa");
    assert_eq!(addrs(f), ["10.0.0.1:31001"]);
    // The udp half of the loser's port does not conflict and stays.
    assert_eq!(find(&b, "udp", "0.0.0.0:10270").app, "/zz");
    assert_eq!(find(&b, "tcp", "0.0.0.0:10271").app, "/zz");
    assert_eq!(find(&b, "tcp", "10.10.0.70:80").app, "/zz");
    let w: Vec<_> = b.warnings.iter().collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].app.as_deref(), Some("/zz"));
    assert!(
        w[0].message.contains("/aa") && w[0].message.contains("10270"),
        "{w:?}"
    );
}

#[test]
fn same_app_claiming_a_service_port_twice_keeps_the_first_port() {
    let b = build_doc(&apps(vec![json!({
        "id": "/twice", "networks": [{"mode": "container/bridge"}],
        "container": {"portMappings": [
            {"containerPort": 1, "hostPort": 0, "servicePort": 10280},
            {"containerPort": 2, "hostPort": 0, "servicePort": 10280}
        ]},
        "tasks": [task("tw.1", "10.0.0.1", &[31001, 31002])]
    })]));
    let f = find(&b, "tcp", "0.0.0.0:10280");
    assert_eq!(f.port_index, 0);
    assert_eq!(addrs(f), ["10.0.0.1:31001"]);
    assert!(warned(&b, "/twice", "port 1"), "{:?}", b.warnings);
}

#[test]
fn malformed_app_is_a_warning_and_the_rest_still_builds() {
    let b = build_doc(&apps(vec![
        json!({"id": "/bad", "portDefinitions": {"port": 1}}),
        json!({"id": "/bad-task", "portDefinitions": [{"port": 10290}], "tasks": [{"id": "x", "ports": ["31000"]}]}),
        host_app(
            "/good",
            json!([{"port": 10291}]),
            vec![task("g.1", "10.0.0.1", &[31291])],
        ),
    ]));
    assert_eq!(keys(&b), ["tcp:0.0.0.0:10291"]);
    assert!(warned(&b, "/bad", "portDefinitions"), "{:?}", b.warnings);
    assert!(
        warned(&b, "/bad-task", "tasks[0].ports[0]"),
        "{:?}",
        b.warnings
    );
}

#[test]
fn duplicate_app_ids_use_the_first_with_a_warning() {
    let b = build_doc(&apps(vec![
        host_app("/d", json!([{"port": 10300}]), vec![]),
        host_app("/d", json!([{"port": 10301}]), vec![]),
    ]));
    assert_eq!(keys(&b), ["tcp:0.0.0.0:10300"]);
    assert!(warned(&b, "/d", "duplicate"), "{:?}", b.warnings);
}

#[test]
fn not_an_apps_document_is_an_error_and_no_table() {
    assert!(parse_apps_document(br#"{"tasks": []}"#).is_err());
    assert!(parse_apps_document(b"garbage").is_err());
}

// ---------------------------------------------------------------- output shape

#[test]
fn frontends_sorted_unique_and_json_deterministic() {
    let list: Vec<Value> = (0..30)
        .map(|i| {
            host_app(
                &format!("/app{:02}", (i * 7) % 30),
                json!([{"port": 10400 + ((i * 13) % 30), "protocol": if i % 3 == 0 { "udp,tcp" } else { "tcp" },
                        "labels": {"VIP_0": format!("/n{}:80", i % 4)}}]),
                vec![task(&format!("t{i}"), &format!("10.0.{i}.1"), &[31000 + i as u16])],
            )
        })
        .collect();
    let mut rev = list.clone();
    rev.reverse();
    let a = build_doc(&apps(list));
    let b = build_doc(&apps(rev));
    let ja = serde_json::to_string(&a).unwrap();
    assert_eq!(ja, serde_json::to_string(&b).unwrap());
    let ks: Vec<_> = a.frontends.iter().map(|f| f.key()).collect();
    let mut sorted = ks.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ks, sorted);
    for f in &a.frontends {
        let ad: Vec<_> = f.backends.iter().map(|b| b.address).collect();
        let mut s = ad.clone();
        s.sort();
        s.dedup();
        assert_eq!(ad, s);
    }
}
