//! vipd is never an open proxy: it forwards only to the backends in its table. Through the real
//! binary, a client that names another destination in every way a proxy might honour (an HTTP
//! `CONNECT` or absolute URI with a `Host` header, a PROXY protocol v1 or v2 header, a SOCKS5
//! request, a destination written into a UDP datagram) still reaches the table's backend with
//! its bytes passed through verbatim, and the decoy it named never sees a packet. A port on
//! vipd's address that is not a frontend refuses the connection.

mod support;
mod udp_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::daemon::VipdProcess;
use support::{free_port, read_tag, TaggedEchoServer, LOCALHOST, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use udp_support::{Reply, UdpClient, UdpServer};

/// A TCP and UDP listener on another loopback address, counting whatever reaches it.
struct Decoy {
    addr: std::net::SocketAddr,
    tcp_connections: Arc<AtomicUsize>,
    udp_datagrams: Arc<AtomicUsize>,
}

impl Decoy {
    async fn start() -> Decoy {
        let ip = support::loopback(2);
        let tcp = TcpListener::bind((ip, 0)).await.expect("bind the decoy");
        let addr = tcp.local_addr().unwrap();
        let udp = UdpSocket::bind(addr).await.expect("bind the UDP decoy");
        let tcp_connections = Arc::new(AtomicUsize::new(0));
        let udp_datagrams = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&tcp_connections);
        tokio::spawn(async move {
            while tcp.accept().await.is_ok() {
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        let count = Arc::clone(&udp_datagrams);
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while udp.recv_from(&mut buf).await.is_ok() {
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        Decoy {
            addr,
            tcp_connections,
            udp_datagrams,
        }
    }
}

/// Sends `payload` through `frontend`, half-closes, and returns (the backend's tag, the echo).
async fn through(frontend: std::net::SocketAddr, payload: &[u8]) -> (String, Vec<u8>) {
    let work = async {
        let mut s = TcpStream::connect(frontend).await?;
        let tag = read_tag(&mut s).await?;
        s.write_all(payload).await?;
        s.shutdown().await?;
        let mut echo = Vec::new();
        s.read_to_end(&mut echo).await?;
        std::io::Result::Ok((tag, echo))
    };
    tokio::time::timeout(PATIENCE, work)
        .await
        .expect("bounded")
        .expect("the connection through vipd")
}

/// The PROXY protocol v2 header for a TCP/IPv4 connection from 127.0.0.9:1234 to `dest`.
fn proxy_v2(dest: std::net::SocketAddr) -> Vec<u8> {
    let std::net::IpAddr::V4(ip) = dest.ip() else {
        unreachable!()
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&[127, 0, 0, 9]);
    h.extend_from_slice(&ip.octets());
    h.extend_from_slice(&1234u16.to_be_bytes());
    h.extend_from_slice(&dest.port().to_be_bytes());
    h
}

/// A SOCKS5 greeting and CONNECT request to `dest`.
fn socks5(dest: std::net::SocketAddr) -> Vec<u8> {
    let std::net::IpAddr::V4(ip) = dest.ip() else {
        unreachable!()
    };
    let mut m = vec![5, 1, 0, 5, 1, 0, 1];
    m.extend_from_slice(&ip.octets());
    m.extend_from_slice(&dest.port().to_be_bytes());
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_bytes_can_steer_vipd_to_a_destination_outside_its_table() {
    let backend = TaggedEchoServer::start("table-backend").await;
    let udp_backend = UdpServer::start("table-backend", Reply::Tagged).await;
    let decoy = Decoy::start().await;
    let (tcp_port, udp_port) = (
        free_port(LOCALHOST),
        udp_support::free_udp_addr(LOCALHOST).port(),
    );
    let dir = tempfile::tempdir().unwrap();
    let apps = serde_json::json!({"apps": [
        {"id": "/web", "portDefinitions": [{"port": tcp_port}],
         "tasks": [{"id": "web.1", "host": "127.0.0.1", "ports": [backend.addr.port()],
                    "state": "TASK_RUNNING"}]},
        {"id": "/dns", "portDefinitions": [{"port": udp_port, "protocol": "udp"}],
         "tasks": [{"id": "dns.1", "host": "127.0.0.1", "ports": [udp_backend.addr.port()],
                    "state": "TASK_RUNNING"}]},
    ]});
    let (vipd, _admin) = VipdProcess::run_on_apps(dir.path(), &apps, &[], PATIENCE);
    let frontend = std::net::SocketAddr::from((LOCALHOST, tcp_port));
    assert!(
        support::eventually_async(PATIENCE, || async {
            support::roundtrip(frontend, b"ready?").await.is_ok()
        })
        .await,
        "log:\n{}",
        vipd.log().join("\n")
    );

    let d = decoy.addr;
    let attempts: Vec<(&str, Vec<u8>)> = vec![
        (
            "HTTP CONNECT",
            format!("CONNECT {d} HTTP/1.1\r\nHost: {d}\r\n\r\n").into_bytes(),
        ),
        (
            "HTTP absolute URI and Host",
            format!("GET http://{d}/ HTTP/1.1\r\nHost: {d}\r\nX-Forwarded-Host: {d}\r\n\r\n")
                .into_bytes(),
        ),
        (
            "PROXY v1",
            format!("PROXY TCP4 127.0.0.9 {} 1234 {}\r\nhello", d.ip(), d.port()).into_bytes(),
        ),
        ("PROXY v2", proxy_v2(d)),
        ("SOCKS5", socks5(d)),
    ];
    for (what, payload) in &attempts {
        let (tag, echo) = through(frontend, payload).await;
        assert_eq!(tag, "table-backend", "{what}");
        assert_eq!(&echo, payload, "{what}: bytes passed through verbatim");
    }

    // UDP: a datagram naming the decoy (SOCKS5 UDP header, then text) goes to the table's backend.
    let client = UdpClient::new().await;
    let udp_frontend = std::net::SocketAddr::from((LOCALHOST, udp_port));
    let mut socks_udp = vec![0, 0, 0, 1, 127, 0, 0, 2];
    socks_udp.extend_from_slice(&d.port().to_be_bytes());
    socks_udp.extend_from_slice(format!("to {d}").as_bytes());
    let reply = client
        .ask_until_reply(
            udp_frontend,
            &socks_udp,
            std::time::Duration::from_millis(500),
        )
        .await
        .expect("a reply through vipd");
    let (tag, echoed) = udp_support::split_tag(&reply);
    assert_eq!(tag, "table-backend");
    assert_eq!(echoed, socks_udp);

    // A port on vipd's address that is not a frontend: refused, never forwarded.
    let not_a_frontend = (LOCALHOST, free_port(LOCALHOST));
    assert!(TcpStream::connect(not_a_frontend).await.is_err());

    // Nothing ever reached the decoy. Every attempt above finished with the table backend's echo,
    // so a forward to the decoy would already have been counted.
    assert_eq!(decoy.tcp_connections.load(Ordering::SeqCst), 0);
    assert_eq!(decoy.udp_datagrams.load(Ordering::SeqCst), 0);
    assert!(backend.connections() > attempts.len());
}
