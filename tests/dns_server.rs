//! The DNS server's socket behaviour with a raw client: TCP framing and pipelining, the TCP
//! connection cap, the idle timeout, bind errors, and garbage over UDP.

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use vipd::dns::{parse_zone, serve, AlwaysServing, DnsError, DnsServer, ServerLimits};
use vipd::published::{channel, TablePublisher};
use vipd::table::{Backend, BackendState, Frontend, FrontendKind, Protocol, Table};

const BOUND: Duration = Duration::from_secs(10);

fn sample_table() -> Table {
    Table {
        frontends: vec![Frontend {
            protocol: Protocol::Tcp,
            listen: "11.0.0.1:80".parse().unwrap(),
            kind: FrontendKind::Vip,
            vip_name: Some("acme.marathon.l4lb.thisdcos.directory".into()),
            app: "/acme".into(),
            owner_kind: vipd::table::OwnerKind::App,
            apps: vec!["/acme".into()],
            port_index: 0,
            port_name: None,
            options: Default::default(),
            backends: vec![Backend {
                address: "10.0.0.1:31000".parse().unwrap(),
                task: "acme.1".into(),
                state: BackendState::Up,
            }]
            .into(),
        }],
    }
}

fn query_bytes(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

async fn start(
    limits: ServerLimits,
) -> (
    SocketAddr,
    TablePublisher,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), DnsError>>,
) {
    let (mut publisher, reader) = channel();
    publisher.publish(sample_table());
    let server = DnsServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .with_limits(limits);
    let addr = server.local_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(
        reader,
        Arc::new(AlwaysServing),
        parse_zone("l4lb.thisdcos.directory").unwrap(),
        shutdown.clone(),
    ));
    (addr, publisher, shutdown, task)
}

async fn tcp_ask(stream: &mut TcpStream, id: u16, name: &str) -> Message {
    let q = query_bytes(id, name);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    stream.write_all(&framed).await.unwrap();
    tcp_read(stream).await
}

async fn tcp_read(stream: &mut TcpStream) -> Message {
    let len = tokio::time::timeout(BOUND, stream.read_u16())
        .await
        .expect("response within bound")
        .unwrap();
    let mut buf = vec![0; usize::from(len)];
    stream.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

/// Waits (bounded) until the peer closes: read returns 0 or a reset.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(BOUND, stream.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => false,
    }
}

#[tokio::test]
async fn tcp_pipelined_queries_in_one_write_get_answers_in_order() {
    let (addr, _p, shutdown, task) = start(ServerLimits::default()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut framed = Vec::new();
    for (id, name) in [
        (1u16, "acme.marathon.l4lb.thisdcos.directory."),
        (2, "nope.marathon.l4lb.thisdcos.directory."),
        (3, "example.org."),
    ] {
        let q = query_bytes(id, name);
        framed.extend_from_slice(&(q.len() as u16).to_be_bytes());
        framed.extend_from_slice(&q);
    }
    stream.write_all(&framed).await.unwrap();
    let codes: Vec<(u16, ResponseCode)> = [
        tcp_read(&mut stream).await,
        tcp_read(&mut stream).await,
        tcp_read(&mut stream).await,
    ]
    .iter()
    .map(|m| (m.id(), m.response_code()))
    .collect();
    assert_eq!(
        codes,
        vec![
            (1, ResponseCode::NoError),
            (2, ResponseCode::NXDomain),
            (3, ResponseCode::Refused)
        ]
    );
    shutdown.cancel();
    tokio::time::timeout(BOUND, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn tcp_connections_over_the_cap_are_closed_and_the_held_one_still_works() {
    let (addr, _p, shutdown, task) = start(ServerLimits {
        max_tcp_connections: 1,
        tcp_idle_timeout: Duration::from_secs(30),
        ..ServerLimits::default()
    })
    .await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    // Make sure the server has accepted and counted the first connection.
    let m = tcp_ask(&mut first, 7, "acme.marathon.l4lb.thisdcos.directory.").await;
    assert_eq!(m.answers().len(), 1);
    // Mid-query (length prefix and part of the body sent), the first connection is busy: an idle
    // one would be evicted for the newcomer, a busy one keeps its slot.
    let q = query_bytes(8, "acme.marathon.l4lb.thisdcos.directory.");
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    first.write_all(&framed[..4]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await; // let the server read the prefix
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_by_server(&mut second).await,
        "second connection must be closed"
    );
    first.write_all(&framed[4..]).await.unwrap();
    let len = tokio::time::timeout(BOUND, first.read_u16())
        .await
        .unwrap()
        .unwrap();
    let mut body = vec![0u8; usize::from(len)];
    first.read_exact(&mut body).await.unwrap();
    assert_eq!(Message::from_vec(&body).unwrap().id(), 8);
    // Once the first one leaves, a new connection gets its slot (the permit is released when the
    // server notices EOF, so retry a bounded number of times).
    drop(first);
    let deadline = Instant::now() + BOUND;
    loop {
        let mut third = TcpStream::connect(addr).await.unwrap();
        let q = query_bytes(9, "acme.marathon.l4lb.thisdcos.directory.");
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        if third.write_all(&framed).await.is_ok() {
            if let Ok(Ok(len)) = tokio::time::timeout(BOUND, third.read_u16()).await {
                assert!(len > 12);
                break;
            }
        }
        assert!(Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(BOUND, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn idle_tcp_connections_are_closed() {
    let (addr, _p, shutdown, task) = start(ServerLimits {
        max_tcp_connections: 8,
        tcp_idle_timeout: Duration::from_millis(200),
        ..ServerLimits::default()
    })
    .await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    // Half a length prefix, then silence.
    idle.write_all(&[0]).await.unwrap();
    let started = Instant::now();
    assert!(
        closed_by_server(&mut idle).await,
        "idle connection not closed"
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
    shutdown.cancel();
    tokio::time::timeout(BOUND, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn udp_garbage_is_ignored_or_answered_and_the_server_keeps_serving() {
    let (addr, _p, shutdown, task) = start(ServerLimits::default()).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(addr).await.unwrap();
    // A runt (no reply) and a header with a broken body (FORMERR).
    client.send(&[1, 2, 3]).await.unwrap();
    let mut broken = query_bytes(77, "acme.marathon.l4lb.thisdcos.directory.");
    broken.truncate(15);
    client.send(&broken).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(BOUND, client.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!((m.id(), m.response_code()), (77, ResponseCode::FormErr));
    client
        .send(&query_bytes(78, "acme.marathon.l4lb.thisdcos.directory."))
        .await
        .unwrap();
    let n = tokio::time::timeout(BOUND, client.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!((m.id(), m.response_code()), (78, ResponseCode::NoError));
    assert!(m.authoritative());
    shutdown.cancel();
    tokio::time::timeout(BOUND, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn bind_errors_and_bad_zones_are_errors_not_panics() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (_p, reader) = channel();
    let e = serve(
        addr,
        reader.clone(),
        Arc::new(AlwaysServing),
        "l4lb.thisdcos.directory".into(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            e,
            DnsError::Bind {
                protocol: Protocol::Udp,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains(&addr.to_string()), "{e}");

    let e = serve(
        "127.0.0.1:0".parse().unwrap(),
        reader,
        Arc::new(AlwaysServing),
        "bad..zone".into(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, DnsError::InvalidZone { .. }), "{e}");
}

/// Issue 22 item 6: idle clients cannot hold the DNS-over-TCP cap. 200 idle connections (more
/// than the default cap of 128), then a real query over TCP is answered: the oldest idle
/// connections were evicted to make room.
#[tokio::test]
async fn dns_tcp_cap_cannot_be_held_by_200_idle_connections() {
    let (addr, _p, shutdown, task) = start(ServerLimits::default()).await;
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut client = TcpStream::connect(addr).await.unwrap();
    let m = tokio::time::timeout(
        BOUND,
        tcp_ask(&mut client, 42, "acme.marathon.l4lb.thisdcos.directory."),
    )
    .await
    .expect("a real query is answered while 200 idle connections are open");
    assert_eq!((m.id(), m.answers().len()), (42, 1));
    drop(idle);
    shutdown.cancel();
    tokio::time::timeout(BOUND, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Issue 20 "Bounded resources": a TCP length prefix over the query limit closes the connection
/// at once (no 64 KiB buffer held for a client that will never send it).
#[tokio::test]
async fn dns_tcp_oversized_length_prefix_is_refused() {
    let (addr, _p, shutdown, task) = start(ServerLimits {
        tcp_idle_timeout: Duration::from_secs(30),
        ..ServerLimits::default()
    })
    .await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&u16::MAX.to_be_bytes()).await.unwrap();
    let started = Instant::now();
    assert!(
        closed_by_server(&mut s).await,
        "oversized prefix not refused"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed at once, not by the idle timeout"
    );
    shutdown.cancel();
    tokio::time::timeout(BOUND, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
