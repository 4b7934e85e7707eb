//! Dual-stack named VIPs end to end, in a network namespace this test creates: `vipd run
//! --vip-cidr6 fd01:c::/64 --manage-addresses --dns-listen` on an apps document whose tasks each
//! have an IPv4 and an IPv6 address. The VIP's name answers A and AAAA through `dig`; connections
//! to the IPv4 address reach only the IPv4 backends, and to the IPv6 address only the IPv6 ones
//! (`::1` and addresses in `fd00::/8` the test puts on the namespace's `lo`).
//!
//! The outer test creates the namespace and re-runs this binary inside it for the `#[ignore]`d
//! inner test. Needs root, `ip` and `dig` (CI installs them).

mod support;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use support::daemon::VipdProcess;
use support::netns::{assert_inner_passed, inside_namespace, Netns};
use support::{read_tag, TaggedEchoServer, PATIENCE};
use tokio::net::TcpStream;

const NAME: &str = "dual.marathon.l4lb.thisdcos.directory";
const INNER: &str =
    "inner_a_dual_stack_named_vip_answers_a_and_aaaa_and_forwards_within_each_family";

#[test]
fn a_dual_stack_named_vip_answers_a_and_aaaa_and_forwards_within_each_family() {
    if Command::new("dig").arg("-v").output().is_err() {
        panic!("dig is not installed (Debian: dnsutils; .ci/run installs it)");
    }
    let ns = match Netns::create("ds") {
        Ok(ns) => ns,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let out = ns.run_inner(&[], INNER);
    assert_inner_passed(&out, INNER);
}

/// `dig +short` for `rtype`, over UDP.
fn dig_short(server: SocketAddr, rtype: &str) -> Vec<IpAddr> {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args([
            "-p",
            &server.port().to_string(),
            "+tries=3",
            "+time=2",
            "+short",
        ])
        .args([NAME, rtype])
        .output()
        .expect("run dig");
    assert!(out.status.success(), "dig failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            l.trim()
                .parse()
                .unwrap_or_else(|_| panic!("not an address: {l:?}"))
        })
        .collect()
}

/// The tags of `n` connections to `vip`, each read once.
async fn tags_through(vip: SocketAddr, n: usize) -> BTreeSet<String> {
    let mut tags = BTreeSet::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(vip).await.expect("connect to the VIP");
        tags.insert(read_tag(&mut s).await.expect("backend tag"));
    }
    tags
}

#[tokio::test]
#[ignore = "runs inside a network namespace created by the outer test"]
async fn inner_a_dual_stack_named_vip_answers_a_and_aaaa_and_forwards_within_each_family() {
    let Some(_ns) = inside_namespace() else {
        println!("not inside a test namespace: nothing to do");
        return;
    };
    // The namespace's own IPv6 on lo, and two ULA addresses for the tasks (this namespace only).
    std::fs::write("/proc/sys/net/ipv6/conf/lo/disable_ipv6", "0").expect("enable IPv6 on lo");
    for addr in ["fd00:77::2/128", "fd00:77::3/128"] {
        let out = Command::new("ip")
            .args(["addr", "add", addr, "dev", "lo", "nodad"])
            .output()
            .unwrap();
        assert!(out.status.success(), "ip addr add {addr}: {out:?}");
    }

    // Container ports are one number for every task: the first backend picks it, the rest share.
    let first = TaggedEchoServer::start_on("127.0.0.2".parse().unwrap(), "v4-a").await;
    let port = first.addr.port();
    let mut backends = vec![first];
    for (ip, tag) in [
        ("127.0.0.3", "v4-b"),
        ("::1", "v6-a"),
        ("fd00:77::2", "v6-b"),
    ] {
        let addr = SocketAddr::new(ip.parse().unwrap(), port);
        backends.push(TaggedEchoServer::start_at(addr, tag).await);
    }
    let task = |id: &str, v4: &str, v6: &str| {
        serde_json::json!({"id": id, "host": "127.0.0.1", "state": "TASK_RUNNING", "ports": [],
            "ipAddresses": [{"ipAddress": v4, "protocol": "IPv4"}, {"ipAddress": v6, "protocol": "IPv6"}]})
    };
    let apps = serde_json::json!({"apps": [{
        "id": "/dual",
        "networks": [{"mode": "container", "name": "dcos6"}],
        "container": {"type": "MESOS", "portMappings": [
            {"containerPort": port, "protocol": "tcp", "labels": {"VIP_0": "/dual:80"}}]},
        "tasks": [task("dual.1", "127.0.0.2", "::1"), task("dual.2", "127.0.0.3", "fd00:77::2")]
    }]});
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    std::fs::write(&path, apps.to_string()).unwrap();

    let vipd = VipdProcess::start(&[
        "run",
        "--apps",
        path.to_str().unwrap(),
        "--vip-cidr6",
        "fd01:c::/64",
        "--manage-addresses",
        "--dns-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let dns = vipd
        .logged_addr("DNS server listening", PATIENCE)
        .unwrap_or_else(|| panic!("no DNS address; log:\n{}", vipd.log().join("\n")));

    let a = dig_short(dns, "A");
    let aaaa = dig_short(dns, "AAAA");
    assert_eq!(a.len(), 1, "one A record: {a:?}");
    assert_eq!(aaaa.len(), 1, "one AAAA record: {aaaa:?}");
    assert!(a[0].is_ipv4(), "A is IPv4: {a:?}");
    let v6: ipnet::IpNet = "fd01:c::/64".parse().unwrap();
    assert!(v6.contains(&aaaa[0]), "AAAA {aaaa:?} is from --vip-cidr6");

    let (v4_vip, v6_vip) = (SocketAddr::new(a[0], 80), SocketAddr::new(aaaa[0], 80));
    // vipd adds the addresses and opens the listeners after it publishes: wait for both.
    let reachable = support::poll_until(PATIENCE, || async {
        let v4 = TcpStream::connect(v4_vip).await.ok()?;
        let v6 = TcpStream::connect(v6_vip).await.ok()?;
        Some((v4, v6))
    })
    .await;
    assert!(
        reachable.is_some(),
        "the VIP never accepted on both families; log:\n{}",
        vipd.log().join("\n")
    );
    drop(reachable);

    // Round-robin over each side: 8 connections see both backends of that family and no other.
    let want = |a: &str, b: &str| BTreeSet::from([a.to_string(), b.to_string()]);
    assert_eq!(tags_through(v4_vip, 8).await, want("v4-a", "v4-b"));
    assert_eq!(tags_through(v6_vip, 8).await, want("v6-a", "v6-b"));
    drop(backends);
}
