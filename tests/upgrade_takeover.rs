//! Upgrades by takeover through the real binary: a second vipd started with the same
//! `--handover-socket` takes the running one's sockets (SCM_RIGHTS, same uid only) and the
//! running one drains and exits. Each wait is a bounded condition.

mod support;
mod udp_support;
mod upgrade_support;

use support::daemon::VipdProcess;
use support::{free_port, roundtrip, TaggedEchoServer, LOCALHOST, PATIENCE};
use upgrade_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_takeovers_under_load_drop_nothing() {
    upgrades_under_load(How::Takeover, 20).await;
}

/// As root: a vipd running as another uid (nobody) connects to the handover socket. Both ends
/// refuse (each checks SO_PEERCRED): the newcomer exits non-zero naming the uid, the running
/// vipd logs why and keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_another_uid_is_refused_both_ways() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to start a vipd as another uid");
        return;
    }
    let backend = TaggedEchoServer::start("b1").await;
    let udp_backend = udp_support::UdpServer::start("u1", udp_support::Reply::Echo).await;
    let tcp: std::net::SocketAddr = (LOCALHOST, free_port(LOCALHOST)).into();
    let udp = udp_support::free_udp_addr(LOCALHOST);
    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path().join("apps.json");
    std::fs::write(
        &apps,
        apps_doc(tcp.port(), udp.port(), backend.addr, udp_backend.addr),
    )
    .unwrap();
    let socket = dir.path().join("handover.sock");
    let extra = [
        "--handover-socket".to_string(),
        socket.display().to_string(),
    ];
    let args = vipd_args(&apps, &extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let old = VipdProcess::start(&args);
    let served =
        support::poll_until(PATIENCE, || async { roundtrip(tcp, b"ping").await.ok() }).await;
    assert!(served.is_some(), "vipd never served: {:#?}", old.log());
    // Let the other uid reach the socket: only the credentials check stands in its way.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();

    let mut setpriv_args = vec![
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        env!("CARGO_BIN_EXE_vipd"),
    ];
    setpriv_args.extend(args.iter().copied());
    let mut other = VipdProcess::start_with_program("setpriv", &setpriv_args);
    let status = other.wait_exit(PATIENCE).expect("the other-uid vipd exits");
    assert!(!status.success(), "{:#?}", other.log());
    assert!(
        other.log().iter().any(|l| l.contains("uid 0")),
        "the newcomer names the running vipd's uid: {:#?}",
        other.log()
    );
    assert!(
        old.wait_for_log("runs as uid 65534", PATIENCE),
        "the running vipd logs the refusal: {:#?}",
        old.log()
    );
    assert!(old.count_log("upgrade failed; still serving") >= 1);
    roundtrip(tcp, b"still")
        .await
        .expect("the running vipd still serves");
    // And a same-uid takeover still works afterwards.
    let mut old = old;
    let new = VipdProcess::start(&args);
    assert!(
        new.wait_for_log("upgrade complete: serving", PATIENCE),
        "{:#?}",
        new.log()
    );
    assert_eq!(old.wait_exit(PATIENCE).and_then(|s| s.code()), Some(0));
    roundtrip(tcp, b"after").await.unwrap();
    new.signal(libc::SIGTERM);
    let mut new = new;
    assert_eq!(new.wait_exit(PATIENCE).and_then(|s| s.code()), Some(0));
    assert!(
        !socket.exists(),
        "a normal exit removes its own handover socket"
    );
}
