//! In-place upgrades by SIGUSR2 through the real binary: the running vipd re-executes its own
//! binary with the same arguments and hands it every listening socket; it drains and exits only
//! once the new process serves. Each wait is a bounded condition.

mod support;
mod udp_support;
mod upgrade_support;

use upgrade_support::{upgrades_under_load, How};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sigusr2_upgrades_under_load_drop_nothing() {
    upgrades_under_load(How::Reexec, 20).await;
}

/// The binary at vipd's path is replaced by a program that exits 1 at once: SIGUSR2 logs why the
/// upgrade failed, the old vipd keeps serving (a connection held across it still echoes, new
/// ones are accepted), and once the real binary is back the next SIGUSR2 upgrades.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_binary_that_exits_at_once_leaves_the_old_one_serving() {
    use std::time::Duration;
    use support::daemon::VipdProcess;
    use support::{
        echo_once, free_port, read_tag, roundtrip, TaggedEchoServer, LOCALHOST, PATIENCE,
    };
    use upgrade_support::*;

    become_subreaper();
    let backend = TaggedEchoServer::start("b1").await;
    let udp_backend = udp_support::UdpServer::start("u1", udp_support::Reply::Echo).await;
    let tcp: std::net::SocketAddr = (LOCALHOST, free_port(LOCALHOST)).into();
    let udp = udp_support::free_udp_addr(LOCALHOST);
    // Under target/ so the binary can be hard-linked (same file system).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let apps = dir.path().join("apps.json");
    std::fs::write(
        &apps,
        apps_doc(tcp.port(), udp.port(), backend.addr, udp_backend.addr),
    )
    .unwrap();
    let bin = dir.path().join("vipd");
    let install = |from: &std::path::Path| {
        let tmp = dir.path().join("vipd.new");
        let _ = std::fs::remove_file(&tmp);
        std::fs::hard_link(from, &tmp)
            .or_else(|_| std::fs::copy(from, &tmp).map(|_| ()))
            .unwrap();
        std::fs::rename(&tmp, &bin).unwrap();
    };
    install(std::path::Path::new(env!("CARGO_BIN_EXE_vipd")));
    let args = vipd_args(&apps, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut vipd = VipdProcess::start_with_program(bin.to_str().unwrap(), &args);
    let served =
        support::poll_until(PATIENCE, || async { roundtrip(tcp, b"ping").await.ok() }).await;
    assert!(served.is_some(), "vipd never served: {:#?}", vipd.log());
    let mut held = tokio::net::TcpStream::connect(tcp).await.unwrap();
    read_tag(&mut held).await.unwrap();

    // The "upgrade" is a program that fails before serving.
    let script = dir.path().join("exit1.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 1\n").unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&script).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    install(&script);
    vipd.signal(libc::SIGUSR2);
    assert!(
        vipd.wait_for_log("upgrade failed; still serving", PATIENCE),
        "{:#?}",
        vipd.log()
    );
    let line = vipd
        .log()
        .into_iter()
        .find(|l| l.contains("upgrade failed; still serving"))
        .unwrap();
    assert!(
        line.contains("exit status: 1"),
        "says how the new process ended: {line}"
    );
    assert!(
        vipd.wait_exit(Duration::ZERO).is_none(),
        "the old vipd still runs"
    );
    echo_once(&mut held, b"still here")
        .await
        .expect("the held connection still works");
    roundtrip(tcp, b"new")
        .await
        .expect("new connections are still accepted");
    let client = udp_support::UdpClient::new().await;
    assert!(client
        .ask_until_reply(udp, b"u", Duration::from_millis(100))
        .await
        .is_some());

    // The real binary again: the next SIGUSR2 upgrades.
    install(std::path::Path::new(env!("CARGO_BIN_EXE_vipd")));
    vipd.signal(libc::SIGUSR2);
    assert!(
        vipd.wait_for_log("upgrade complete: serving", PATIENCE),
        "{:#?}",
        vipd.log()
    );
    let line = vipd
        .log()
        .into_iter()
        .find(|l| l.contains("upgrade complete: serving"))
        .unwrap();
    let successor = field(&line, "pid").unwrap();
    echo_once(&mut held, b"across the upgrade").await.unwrap();
    drop(held);
    assert_eq!(vipd.wait_exit(PATIENCE).and_then(|s| s.code()), Some(0));
    roundtrip(tcp, b"after")
        .await
        .expect("the successor serves");
    signal(successor, libc::SIGTERM);
    assert_eq!(wait_pid(successor, PATIENCE), Some(0));
}

/// Under systemd (a fake service manager: a datagram socket named in `$NOTIFY_SOCKET`): the
/// re-executed process sends `MAINPID=<its pid>` with `READY=1`, and the old one exits without
/// `STOPPING=1` (the service is not stopping).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_the_new_process_becomes_the_main_pid() {
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;
    use support::daemon::VipdProcess;
    use support::{free_port, roundtrip, TaggedEchoServer, LOCALHOST, PATIENCE};
    use upgrade_support::*;

    fn next(socket: &UnixDatagram, timeout: Duration) -> Option<String> {
        socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    become_subreaper();
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
    let notify = dir.path().join("notify.sock");
    let manager = UnixDatagram::bind(&notify).unwrap();
    let args = vipd_args(&apps, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut vipd =
        VipdProcess::start_with_env(&args, &[("NOTIFY_SOCKET", notify.to_str().unwrap())]);
    let ready = next(&manager, PATIENCE).expect("READY=1");
    assert_eq!(ready.lines().next(), Some("READY=1"), "{ready}");

    vipd.signal(libc::SIGUSR2);
    let upgraded = next(&manager, PATIENCE)
        .unwrap_or_else(|| panic!("no notification after SIGUSR2: {:#?}", vipd.log()));
    let lines: Vec<&str> = upgraded.lines().collect();
    let main_pid: i32 = lines[0]
        .strip_prefix("MAINPID=")
        .unwrap_or_else(|| panic!("{upgraded}"))
        .parse()
        .unwrap();
    assert_ne!(main_pid, vipd.pid() as i32);
    assert_eq!(lines[1], "READY=1", "{upgraded}");
    assert!(vipd.wait_for_log("upgrade complete: serving", PATIENCE));
    let line = vipd
        .log()
        .into_iter()
        .find(|l| l.contains("upgrade complete: serving"))
        .unwrap();
    assert_eq!(
        field(&line, "pid"),
        Some(main_pid),
        "MAINPID is the new process"
    );
    assert_eq!(vipd.wait_exit(PATIENCE).and_then(|s| s.code()), Some(0));
    assert_eq!(
        next(&manager, Duration::from_millis(100)),
        None,
        "no STOPPING=1 from the old one"
    );
    roundtrip(tcp, b"after").await.unwrap();

    // The new main process stops like any: STOPPING=1, exit 0.
    signal(main_pid, libc::SIGTERM);
    let stopping = next(&manager, PATIENCE).expect("STOPPING=1");
    assert_eq!(stopping.lines().next(), Some("STOPPING=1"));
    assert_eq!(wait_pid(main_pid, PATIENCE), Some(0));
}

/// The new process starts but never serves (the apps file it reads no longer parses, so it never
/// publishes): after `--handover-timeout` the old vipd stops it, logs why, and goes on serving
/// its last good table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_that_never_serves_is_stopped_after_the_handover_timeout() {
    use support::daemon::VipdProcess;
    use support::{free_port, roundtrip, TaggedEchoServer, LOCALHOST, PATIENCE};
    use upgrade_support::*;

    become_subreaper();
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
    let args = vipd_args(&apps, &["--handover-timeout".to_string(), "1s".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut vipd = VipdProcess::start(&args);
    let served =
        support::poll_until(PATIENCE, || async { roundtrip(tcp, b"ping").await.ok() }).await;
    assert!(served.is_some(), "vipd never served: {:#?}", vipd.log());
    support::daemon::write_atomically(&apps, "not json");

    vipd.signal(libc::SIGUSR2);
    assert!(
        vipd.wait_for_log("upgrade failed; still serving", PATIENCE),
        "{:#?}",
        vipd.log()
    );
    let line = vipd
        .log()
        .into_iter()
        .find(|l| l.contains("upgrade failed; still serving"))
        .unwrap();
    assert!(
        line.contains("no serving from the peer within 1s"),
        "{line}"
    );
    assert!(
        line.contains("signal: 9"),
        "the old vipd stopped its child: {line}"
    );
    assert!(vipd.wait_exit(std::time::Duration::ZERO).is_none());
    roundtrip(tcp, b"still")
        .await
        .expect("the old vipd still serves");
    assert_eq!(vipd.count_log("upgrade complete"), 0);
    vipd.signal(libc::SIGTERM);
    assert_eq!(vipd.wait_exit(PATIENCE).and_then(|s| s.code()), Some(0));
}
