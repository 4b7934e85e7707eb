//! `vipd demo`: a one-command tour for a newcomer.
//!
//! Owns: starting three in-process example backends on loopback, writing an example apps file
//! (a service port and an IP VIP on 127.1.0.1) into a temporary directory, running the real daemon
//! on it, and printing what to try.
//!
//! Must not: bind anything outside loopback, or use a code path of the daemon that `vipd run`
//! does not use: the demo is `vipd run --apps FILE` with a generated file.

/// `println!` that never panics: a closed stdout must not take the demo daemon down.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

use crate::cli::{DemoArgs, RunArgs};
use crate::daemon::{Daemon, StartError};
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The demo's IP VIP address: in 127.0.0.0/8, so it is local without any address management.
pub const DEMO_VIP: Ipv4Addr = Ipv4Addr::new(127, 1, 0, 1);

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start an example backend: {0}")]
    Backend(#[source] std::io::Error),
    #[error("cannot write the example apps file: {0}")]
    AppsFile(#[source] std::io::Error),
    #[error(transparent)]
    Start(#[from] StartError),
}

/// Picks `preferred` if it is free on `ip`, else any free port.
fn pick_port(ip: Ipv4Addr, preferred: u16) -> u16 {
    if StdTcpListener::bind((ip, preferred)).is_ok() {
        return preferred;
    }
    StdTcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(preferred)
}

/// Starts one example backend: it greets with its name, then echoes.
async fn start_backend(name: String) -> Result<SocketAddr, DemoError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(DemoError::Backend)?;
    let addr = listener.local_addr().map_err(DemoError::Backend)?;
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let greeting = format!("hello from {name} ({addr})\n");
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                if conn.write_all(greeting.as_bytes()).await.is_err() {
                    return;
                }
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// The example apps document: one host-mode app, three running tasks, a service port with an IP VIP.
pub fn apps_document(service_port: u16, vip_port: u16, backends: &[SocketAddr]) -> String {
    let tasks: Vec<serde_json::Value> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            serde_json::json!({
                "id": format!("demo_hello.instance-0000000{i}-0000-0000-0000-000000000000._app.1"),
                "appId": "/demo/hello",
                "host": b.ip().to_string(),
                "ports": [b.port()],
                "state": "TASK_RUNNING",
            })
        })
        .collect();
    let doc = serde_json::json!({
        "apps": [{
            "id": "/demo/hello",
            "networks": [{"mode": "host"}],
            "portDefinitions": [{
                "port": service_port,
                "protocol": "tcp",
                "name": "echo",
                "labels": {"VIP_0": format!("{DEMO_VIP}:{vip_port}")}
            }],
            "tasks": tasks,
        }]
    });
    serde_json::to_string_pretty(&doc).expect("a JSON value serializes")
}

/// Connects `n` times (retrying while the listener comes up, for at most 5 s in all) and returns
/// the greeting line of each connection.
async fn self_check(addr: SocketAddr, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut out = Vec::new();
    while out.len() < n && tokio::time::Instant::now() < deadline {
        let attempt = async {
            let mut conn = tokio::net::TcpStream::connect(addr).await?;
            let mut buf = [0u8; 256];
            let len = conn.read(&mut buf).await?;
            std::io::Result::Ok(String::from_utf8_lossy(&buf[..len]).trim().to_string())
        };
        match tokio::time::timeout(std::time::Duration::from_secs(1), attempt).await {
            Ok(Ok(line)) if !line.is_empty() => out.push(line),
            _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    out
}

/// Runs the demo until Ctrl-C.
pub async fn run(args: DemoArgs) -> Result<(), DemoError> {
    let mut backends = Vec::new();
    for i in 1..=3 {
        backends.push(start_backend(format!("backend-{i}")).await?);
    }
    let service_port = pick_port(Ipv4Addr::LOCALHOST, args.service_port);
    let vip_port = pick_port(DEMO_VIP, args.vip_port);
    let dir = tempfile::Builder::new()
        .prefix("vipd-demo-")
        .tempdir()
        .map_err(DemoError::AppsFile)?;
    let path: PathBuf = dir.path().join("apps.json");
    std::fs::write(&path, apps_document(service_port, vip_port, &backends))
        .map_err(DemoError::AppsFile)?;

    let mut run_args = RunArgs::for_apps_file(path.clone());
    run_args.table.bind_address = Ipv4Addr::LOCALHOST.into();
    // Any free port: a second demo (or a real vipd) may hold the default one.
    run_args.admin.admin_listen = Some((Ipv4Addr::LOCALHOST, 0).into());
    let daemon = Daemon::start(&run_args, serde_json::json!({"demo": true})).await?;
    let admin = daemon.admin_addr;

    // Prove it works before telling the user to try: three connections, three greetings.
    let greetings = self_check((Ipv4Addr::LOCALHOST, service_port).into(), 3).await;

    say!("vipd demo: 3 example backends behind");
    say!("  service port  tcp 127.0.0.1:{service_port}");
    say!("  IP VIP        tcp {DEMO_VIP}:{vip_port}");
    say!();
    for g in &greetings {
        say!("  self-check: {g}");
    }
    say!();
    say!("Try:   nc 127.0.0.1 {service_port}     (a few times: round-robin over the 3 backends)");
    say!("       nc {DEMO_VIP} {vip_port}");
    say!("       (without nc: bash -c 'exec 3<>/dev/tcp/127.0.0.1/{service_port}; head -1 <&3')");
    // The binary's own path: after `cargo run` there is no `vipd` on PATH.
    let me = std::env::current_exe()
        .ok()
        .and_then(|p| {
            let cwd = std::env::current_dir().ok()?;
            Some(p.strip_prefix(&cwd).map(|r| r.to_path_buf()).unwrap_or(p))
        })
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "vipd".into());
    say!("Table: {me} table --apps {}", path.display());
    if let Some(admin) = admin {
        say!("Admin: curl http://{admin}/v1/vips   (and /metrics, /readyz)");
    }
    say!(
        "Edit {} to change the table live; Ctrl-C stops.",
        path.display()
    );
    daemon.run_until_signal().await?;
    drop(dir);
    Ok(())
}
