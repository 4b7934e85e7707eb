//! Named VIPs end to end, across several agents: three network namespaces ("agents") joined by
//! veth pairs to a bridge in a fourth ("switch"), each agent running its own `vipd run` with the
//! same apps file, `--manage-addresses` and `--dns-listen`. Backends run on agents B and C.
//!
//! Shows that a client in agent A resolves the VIP name through A's DNS and reaches backends on B
//! and C; that stopping B's backend moves traffic to C with no client-visible failure beyond what
//! was in flight; and that stopping B's vipd does not affect clients in A or C (and that B's vipd
//! removed the VIP address it had added, on SIGTERM).
//!
//! Needs root and `ip netns`; without them it prints why it skipped. Traffic stays inside the
//! namespaces this test creates (10.77.0.0/24 exists only there) and their loopbacks.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;
use support::daemon::VipdProcess;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(20);
const VIP_NAME: &str = "billing-api.marathon.l4lb.thisdcos.directory";

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespaces of one run; deleted on drop (also when the test fails).
struct Lab {
    switch: String,
    agents: Vec<String>,
}

impl Lab {
    fn create() -> Result<Lab, String> {
        let pid = std::process::id();
        let lab = Lab {
            switch: format!("vipd-sw-{pid}"),
            agents: ["a", "b", "c"]
                .iter()
                .map(|n| format!("vipd-{n}-{pid}"))
                .collect(),
        };
        ip(&["netns", "add", &lab.switch])?;
        for agent in &lab.agents {
            ip(&["netns", "add", agent])?;
        }
        let sw = lab.switch.as_str();
        ip(&["-n", sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", sw, "link", "set", "br0", "up"])?;
        for (i, agent) in lab.agents.iter().enumerate() {
            let port = format!("p{i}");
            ip(&[
                "-n", sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                agent,
            ])?;
            ip(&["-n", sw, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", agent, "link", "set", "lo", "up"])?;
            let addr = format!("10.77.0.{}/24", i + 1);
            ip(&["-n", agent, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", agent, "link", "set", "eth0", "up"])?;
        }
        Ok(lab)
    }

    fn agent(&self, i: usize) -> &str {
        &self.agents[i]
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.agents.iter().chain(std::iter::once(&self.switch)) {
            let _ = ip(&["netns", "delete", ns]);
        }
    }
}

/// Runs `f` on a thread that has entered network namespace `ns`; sockets it creates live there.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        enter_netns(&path);
        f()
    })
    .join()
    .expect("thread in namespace panicked")
}

fn enter_netns(path: &str) {
    let file = std::fs::File::open(path).expect("open netns");
    // SAFETY: setns(2) with a valid namespace fd moves only the calling thread (a thread this
    // test created for the purpose) into that network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// A tagged echo backend on a thread inside `ns`; stops when `stop` is cancelled.
fn start_backend(ns: &str, addr: SocketAddr, tag: &'static str, stop: CancellationToken) {
    let path = format!("/var/run/netns/{ns}");
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        enter_netns(&path);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .expect("bind backend");
            ready_tx.send(()).unwrap();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => {
                        let Ok((mut conn, _)) = accepted else { continue };
                        tokio::spawn(async move {
                            use tokio::io::AsyncWriteExt;
                            let _ = conn.write_all(format!("{tag}\n").as_bytes()).await;
                            let mut buf = [0u8; 64];
                            let _ = conn.read(&mut buf).await;
                        });
                    }
                }
            }
        });
    });
    ready_rx
        .recv_timeout(PATIENCE)
        .expect("backend did not start");
}

/// From inside `ns`: `n` sequential connections to `addr`, each reading the backend's tag.
/// Returns the tags (an error string for a failed connection).
fn connect_many(ns: &str, addr: SocketAddr, n: usize) -> Vec<String> {
    in_netns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut tags = Vec::with_capacity(n);
            for _ in 0..n {
                let one = async {
                    let mut conn = tokio::net::TcpStream::connect(addr).await?;
                    let mut buf = [0u8; 16];
                    let len = conn.read(&mut buf).await?;
                    std::io::Result::Ok(String::from_utf8_lossy(&buf[..len]).trim().to_string())
                };
                let tag = match tokio::time::timeout(Duration::from_secs(5), one).await {
                    Ok(Ok(t)) if !t.is_empty() => t,
                    Ok(Ok(_)) => "error: closed without a tag".into(),
                    Ok(Err(e)) => format!("error: {e}"),
                    Err(_) => "error: timeout".into(),
                };
                tags.push(tag);
            }
            tags
        })
    })
}

/// `dig` run inside `ns` against `server`; returns the A records (empty until the name serves).
fn dig_a(ns: &str, server: SocketAddr) -> Vec<IpAddr> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "dig",
            &format!("@{}", server.ip()),
            "-p",
            &server.port().to_string(),
            VIP_NAME,
            "A",
            "+short",
            "+time=1",
            "+tries=1",
        ])
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn has_address(ns: &str, addr: IpAddr) -> bool {
    let out = Command::new("ip")
        .args(["-n", ns, "-o", "addr", "show", "dev", "lo"])
        .output()
        .expect("ip addr");
    String::from_utf8_lossy(&out.stdout).contains(&format!(" {addr}/"))
}

fn apps_document() -> String {
    let task = |i: u8, tag: &str| {
        serde_json::json!({
            "id": format!("billing-api.instance-0000000{i}-1111-2222-3333-444444444444._app.1"),
            "host": format!("10.77.0.{i}"),
            "ports": [31001],
            "state": "TASK_RUNNING",
            "slaveId": tag,
        })
    };
    serde_json::json!({"apps": [{
        "id": "/billing-api",
        "networks": [{"mode": "host"}],
        "portDefinitions": [{"port": 10101, "protocol": "tcp", "name": "http",
                             "labels": {"VIP_0": "/billing-api:80"}}],
        "tasks": [task(2, "agent-b"), task(3, "agent-c")],
    }]})
    .to_string()
}

fn start_vipd(ns: &str, apps: &std::path::Path) -> VipdProcess {
    let vipd = env!("CARGO_BIN_EXE_vipd");
    VipdProcess::start_with_program(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            vipd,
            "run",
            "--apps",
            apps.to_str().unwrap(),
            "--manage-addresses",
            "--dns-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--drain-timeout",
            "2s",
        ],
    )
}

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root to create network namespaces".into());
    }
    for tool in ["ip", "dig"] {
        if Command::new(tool).arg("-V").output().is_err()
            && Command::new(tool).arg("-v").output().is_err()
        {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

#[test]
fn named_vip_across_three_agents() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let lab = match Lab::create() {
        Ok(lab) => lab,
        Err(e) => {
            println!("skipped: cannot build the namespaces: {e}");
            return;
        }
    };
    let (a, b, c) = (lab.agent(0), lab.agent(1), lab.agent(2));
    let stop_b = CancellationToken::new();
    let stop_c = CancellationToken::new();
    start_backend(b, "10.77.0.2:31001".parse().unwrap(), "b", stop_b.clone());
    start_backend(c, "10.77.0.3:31001".parse().unwrap(), "c", stop_c.clone());

    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path().join("apps.json");
    std::fs::write(&apps, apps_document()).unwrap();
    let vipd_a = start_vipd(a, &apps);
    let mut vipd_b = start_vipd(b, &apps);
    let vipd_c = start_vipd(c, &apps);
    let dns_a = vipd_a
        .logged_addr("DNS server listening", PATIENCE)
        .unwrap_or_else(|| panic!("no DNS address; log:\n{}", vipd_a.log().join("\n")));

    // A client in A resolves the name through A's vipd (SERVFAIL until the listener is bound).
    let vip_ip = support::poll_until_blocking(PATIENCE, || dig_a(a, dns_a).first().copied())
        .unwrap_or_else(|| panic!("name never resolved; log:\n{}", vipd_a.log().join("\n")));
    assert!(
        "11.0.0.0/8"
            .parse::<ipnet::IpNet>()
            .unwrap()
            .contains(&vip_ip),
        "{vip_ip}"
    );
    // Every agent derived the same address for the name, and added it to its own loopback.
    for ns in [a, b, c] {
        assert!(
            support::eventually_blocking(PATIENCE, || has_address(ns, vip_ip)),
            "{vip_ip} never added in {ns}"
        );
    }

    // ...and reaches backends on B and C, round-robin.
    let vip: SocketAddr = (vip_ip, 80).into();
    let tags = connect_many(a, vip, 20);
    assert!(tags.iter().all(|t| t == "b" || t == "c"), "{tags:?}");
    assert_eq!(tags.iter().filter(|t| *t == "b").count(), 10, "{tags:?}");

    // Stopping B's backend moves traffic to C; connections are sequential, so at most the one in
    // flight may fail, and the refused connect is retried on C by vipd.
    stop_b.cancel();
    let tags = connect_many(a, vip, 20);
    let failed = tags.iter().filter(|t| t.starts_with("error")).count();
    assert!(failed <= 1, "{tags:?}");
    assert!(
        tags.iter().rev().take(10).all(|t| t == "c"),
        "traffic did not move to C: {tags:?}"
    );

    // Stopping B's vipd does not affect clients in A or C; B removes the address it added.
    vipd_b.signal(libc::SIGTERM);
    let status = vipd_b.wait_exit(PATIENCE).expect("B's vipd did not exit");
    assert_eq!(status.code(), Some(0), "{}", vipd_b.log().join("\n"));
    assert!(
        !has_address(b, vip_ip),
        "B's vipd left {vip_ip} on lo after SIGTERM"
    );
    for ns in [a, c] {
        let tags = connect_many(ns, vip, 10);
        assert!(tags.iter().all(|t| t == "c"), "from {ns}: {tags:?}");
    }
    assert!(
        has_address(a, vip_ip) && has_address(c, vip_ip),
        "other agents lost the VIP"
    );
    println!("{VIP_NAME} -> {vip_ip}: served across {a}, {b}, {c}");
    drop((vipd_a, vipd_c));
    stop_c.cancel();
}
