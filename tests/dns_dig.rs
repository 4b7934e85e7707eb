//! The DNS server against the real `dig` (ISC BIND's dnsutils), over UDP and TCP on 127.0.0.1.
//!
//! Skips (with a message) when `dig` is not installed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use vipd::dns::{parse_zone, DnsServer, ServingCheck};
use vipd::published::{channel, TablePublisher};
use vipd::table::{Backend, BackendState, Frontend, FrontendKey, FrontendKind, Protocol, Table};

fn dig_available() -> bool {
    std::process::Command::new("dig")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn frontend(protocol: Protocol, listen: &str, name: &str, backends: usize) -> Frontend {
    Frontend {
        protocol,
        listen: listen.parse().unwrap(),
        kind: FrontendKind::Vip,
        vip_name: Some(name.to_string()),
        app: "/acme".into(),
        owner_kind: vipd::table::OwnerKind::App,
        apps: vec!["/acme".into()],
        port_index: 0,
        port_name: Some("http".into()),
        options: Default::default(),
        backends: (0..backends)
            .map(|i| Backend {
                address: format!("10.0.0.{}:31000", i + 1).parse().unwrap(),
                task: format!("acme.{i}").into(),
                state: BackendState::Up,
            })
            .collect(),
    }
}

fn table(mut frontends: Vec<Frontend>) -> Table {
    frontends.sort_by_key(|f| f.key());
    Table { frontends }
}

/// The data plane stand-in: a listener is "bound" unless its key is in the blocked list.
struct Switch {
    pending_bound: AtomicBool,
}

impl ServingCheck for Switch {
    fn is_serving(&self, key: &FrontendKey) -> bool {
        // 11.0.0.3 is the frontend whose listener is bound only when the switch says so.
        key.listen.ip().to_string() != "11.0.0.3" || self.pending_bound.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
struct Dig {
    status: String,
    flags: Vec<String>,
    answers: Vec<Vec<String>>,
    raw: String,
}

async fn dig(server: SocketAddr, args: &[&str]) -> Dig {
    let out = tokio::process::Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .args(["+tries=1", "+time=5"])
        .args(args)
        .output()
        .await
        .expect("run dig");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = raw
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map(|s| s.split(',').next().unwrap().trim().to_string())
        .unwrap_or_else(|| {
            panic!(
                "no status in dig output:\n{raw}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let flags = raw
        .lines()
        .find_map(|l| l.strip_prefix(";; flags: "))
        .map(|s| {
            s.split(';')
                .next()
                .unwrap()
                .split_whitespace()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let mut answers = Vec::new();
    let mut in_answer = false;
    for line in raw.lines() {
        if line.starts_with(";; ANSWER SECTION:") {
            in_answer = true;
            continue;
        }
        if in_answer {
            if line.trim().is_empty() {
                break;
            }
            answers.push(line.split_whitespace().map(str::to_string).collect());
        }
    }
    Dig {
        status,
        flags,
        answers,
        raw,
    }
}

struct Fixture {
    addr: SocketAddr,
    publisher: TablePublisher,
    switch: Arc<Switch>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), vipd::dns::DnsError>>,
}

async fn start() -> Fixture {
    let (mut publisher, reader) = channel();
    let mut big = Vec::new();
    for i in 1..=60 {
        big.push(frontend(
            Protocol::Tcp,
            &format!("11.0.1.{i}:80"),
            "big.marathon.l4lb.thisdcos.directory",
            1,
        ));
    }
    big.extend([
        frontend(
            Protocol::Tcp,
            "11.0.0.1:80",
            "acme.marathon.l4lb.thisdcos.directory",
            2,
        ),
        frontend(
            Protocol::Udp,
            "11.0.0.1:80",
            "acme.marathon.l4lb.thisdcos.directory",
            2,
        ),
        frontend(
            Protocol::Tcp,
            "[fd01:c::1]:80",
            "acme.marathon.l4lb.thisdcos.directory",
            2,
        ),
        frontend(
            Protocol::Tcp,
            "11.0.0.3:5432",
            "pending.marathon.l4lb.thisdcos.directory",
            1,
        ),
    ]);
    publisher.publish(table(big));
    let server = DnsServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .expect("bind");
    let addr = server.local_addr();
    let switch = Arc::new(Switch {
        pending_bound: AtomicBool::new(false),
    });
    let shutdown = CancellationToken::new();
    let zone = parse_zone("l4lb.thisdcos.directory").unwrap();
    let server = tokio::spawn(server.run(reader, switch.clone(), zone, shutdown.clone()));
    Fixture {
        addr,
        publisher,
        switch,
        shutdown,
        server,
    }
}

impl Fixture {
    async fn stop(self) {
        self.shutdown.cancel();
        let r = tokio::time::timeout(std::time::Duration::from_secs(10), self.server)
            .await
            .expect("server stops within 10 s")
            .expect("server task");
        assert!(r.is_ok(), "{r:?}");
    }
}

const TRANSPORTS: [&str; 2] = ["+notcp", "+tcp"];

#[tokio::test]
async fn dig_gets_authoritative_a_and_aaaa_over_udp_and_tcp() {
    if !dig_available() {
        println!("skipped: dig not installed");
        return;
    }
    let f = start().await;
    for transport in TRANSPORTS {
        let d = dig(
            f.addr,
            &[transport, "acme.marathon.l4lb.thisdcos.directory", "A"],
        )
        .await;
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
        assert!(
            d.flags.contains(&"aa".to_string()),
            "{transport}: {}",
            d.raw
        );
        assert!(d.flags.contains(&"qr".to_string()));
        assert!(!d.flags.contains(&"ra".to_string()));
        assert_eq!(
            d.answers,
            vec![vec![
                "acme.marathon.l4lb.thisdcos.directory.",
                "5",
                "IN",
                "A",
                "11.0.0.1"
            ]],
            "{transport}: {}",
            d.raw
        );
        let d = dig(
            f.addr,
            &[transport, "ACME.Marathon.L4LB.thisdcos.directory.", "AAAA"],
        )
        .await;
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
        assert_eq!(
            d.answers,
            vec![vec![
                "ACME.Marathon.L4LB.thisdcos.directory.",
                "5",
                "IN",
                "AAAA",
                "fd01:c::1"
            ]],
            "{transport}: {}",
            d.raw
        );
    }
    f.stop().await;
}

#[tokio::test]
async fn dig_sees_nxdomain_refused_soa_and_srv() {
    if !dig_available() {
        println!("skipped: dig not installed");
        return;
    }
    let f = start().await;
    for transport in TRANSPORTS {
        let d = dig(
            f.addr,
            &[transport, "nope.marathon.l4lb.thisdcos.directory", "A"],
        )
        .await;
        assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
        assert!(d.flags.contains(&"aa".to_string()), "{}", d.raw);
        assert!(d.answers.is_empty());
        assert!(d.raw.contains("IN\tSOA\tns.l4lb.thisdcos.directory. hostmaster.l4lb.thisdcos.directory. 1 60 10 3600 1"), "{}", d.raw);

        let d = dig(f.addr, &[transport, "example.com", "A"]).await;
        assert_eq!(d.status, "REFUSED", "{}", d.raw);
        assert!(!d.flags.contains(&"aa".to_string()), "{}", d.raw);

        let d = dig(f.addr, &[transport, "l4lb.thisdcos.directory", "SOA"]).await;
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
        assert_eq!(d.answers.len(), 1);
        assert_eq!(d.answers[0][3], "SOA");
        assert_eq!(d.answers[0][6], "1", "serial = generation 1: {}", d.raw);

        let d = dig(
            f.addr,
            &[
                transport,
                "_http._tcp.acme.marathon.l4lb.thisdcos.directory",
                "SRV",
            ],
        )
        .await;
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
        assert_eq!(
            d.answers,
            vec![vec![
                "_http._tcp.acme.marathon.l4lb.thisdcos.directory.",
                "5",
                "IN",
                "SRV",
                "0",
                "1",
                "80",
                "acme.marathon.l4lb.thisdcos.directory."
            ]],
            "{}",
            d.raw
        );
    }
    f.stop().await;
}

#[tokio::test]
async fn a_name_resolves_only_once_its_listener_is_bound_and_new_tables_are_seen() {
    if !dig_available() {
        println!("skipped: dig not installed");
        return;
    }
    let mut f = start().await;
    let name = "pending.marathon.l4lb.thisdcos.directory";
    for transport in TRANSPORTS {
        let d = dig(f.addr, &[transport, name, "A"]).await;
        assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
        assert!(d.answers.is_empty());
        assert!(d.raw.contains("EDE: 14 (Not Ready)"), "{}", d.raw);
    }
    f.switch.pending_bound.store(true, Ordering::SeqCst);
    for transport in TRANSPORTS {
        let d = dig(f.addr, &[transport, name, "A"]).await;
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
        assert_eq!(d.answers[0][4], "11.0.0.3");
    }
    // A new generation without `pending` and with `fresh`: the next query sees it.
    f.publisher.publish(table(vec![frontend(
        Protocol::Tcp,
        "11.0.0.9:80",
        "fresh.marathon.l4lb.thisdcos.directory",
        1,
    )]));
    let d = dig(f.addr, &[name, "A"]).await;
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    let d = dig(f.addr, &["fresh.marathon.l4lb.thisdcos.directory", "A"]).await;
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert_eq!(d.answers[0][4], "11.0.0.9");
    let d = dig(f.addr, &["l4lb.thisdcos.directory", "SOA"]).await;
    assert_eq!(
        d.answers[0][6], "2",
        "serial follows the generation: {}",
        d.raw
    );
    f.stop().await;
}

#[tokio::test]
async fn big_udp_answers_set_tc_and_dig_retries_over_tcp() {
    if !dig_available() {
        println!("skipped: dig not installed");
        return;
    }
    let f = start().await;
    let name = "big.marathon.l4lb.thisdcos.directory";
    // No EDNS, no retry: the 512-byte limit applies, TC is set and the answer is empty.
    let d = dig(f.addr, &["+noedns", "+ignore", name, "A"]).await;
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert!(d.flags.contains(&"tc".to_string()), "{}", d.raw);
    assert!(d.answers.is_empty(), "{}", d.raw);
    // Without +ignore, dig retries over TCP on TC and gets all 60 records.
    let d = dig(f.addr, &["+noedns", name, "A"]).await;
    assert!(
        d.raw.contains("Truncated, retrying in TCP mode"),
        "{}",
        d.raw
    );
    assert_eq!(d.answers.len(), 60, "{}", d.raw);
    // With EDNS (dig's default 1232): fits in one datagram.
    let d = dig(f.addr, &[name, "A"]).await;
    assert!(!d.flags.contains(&"tc".to_string()), "{}", d.raw);
    assert_eq!(d.answers.len(), 60, "{}", d.raw);
    f.stop().await;
}
