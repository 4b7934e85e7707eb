//! vipd as a non-root user with permitted-only file capabilities (the container image's way: the
//! `setcap` argument is read from the `Dockerfile`), inside a network namespace this test creates
//! (so that `ip_unprivileged_port_start` is 1024 whatever the host says, and the VIP address goes
//! on that namespace's `lo`).
//!
//! With the capabilities, uid 65534 binds service port 80 and a named VIP on 443 and adds the
//! VIP's address (`--manage-addresses`): `/readyz` is 200. The same binary without them is refused
//! the bind: `/readyz` stays 503. Without root or netns support the test prints "skipped: <why>"
//! and passes (CI runs as root, and fails on a skip).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::daemon::VipdProcess;
use support::netns::Netns;

/// A namespace of this test's, where privileged ports start at 1024 whatever the host says.
fn namespace() -> Result<Netns, String> {
    let ns = Netns::create("caps")?;
    let set = ns.exec(&[
        "sh",
        "-c",
        "echo 1024 > /proc/sys/net/ipv4/ip_unprivileged_port_start",
    ]);
    assert!(set.status.success(), "sysctl: {set:?}");
    Ok(ns)
}

/// A copy of the vipd binary at `path`, world-executable.
fn copy_vipd(path: &Path) {
    std::fs::copy(env!("CARGO_BIN_EXE_vipd"), path).expect("copy vipd");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Starts `bin run ...` as uid/gid 65534 with no inheritable capabilities, inside `ns`.
fn start_unprivileged(ns: &Netns, bin: &Path, apps: &Path, extra: &[&str]) -> VipdProcess {
    let mut args = vec![
        "netns",
        "exec",
        ns.name(),
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        bin.to_str().unwrap(),
        "run",
        "--apps",
        apps.to_str().unwrap(),
        "--bind-address",
        "127.0.0.1",
        "--admin-listen",
        "127.0.0.1:61421",
    ];
    args.extend_from_slice(extra);
    VipdProcess::start_with_program("ip", &args)
}

/// `vipd status --ready` inside `ns` until it exits with `want`, bounded.
fn wait_ready(ns: &Netns, want: i32) -> Output {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = ns.exec(&[
            env!("CARGO_BIN_EXE_vipd"),
            "status",
            "--ready",
            "--admin",
            "127.0.0.1:61421",
            "--timeout",
            "1s",
        ]);
        let got = out.status.code().unwrap_or(-1);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Until the admin port answers, `status` says "no vipd answers": keep waiting.
        if got == want && !stderr.contains("no vipd answers") {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "vipd status --ready never exited {want}: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The capabilities the `Dockerfile` gives the binary (`setcap <caps> /usr/local/bin/vipd`).
fn dockerfile_setcap() -> String {
    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile"))
        .expect("read the Dockerfile");
    let words: Vec<&str> = dockerfile.split_whitespace().collect();
    let at = words
        .windows(3)
        .position(|w| w[0] == "setcap" && w[2] == "/usr/local/bin/vipd")
        .expect("the Dockerfile runs `setcap <caps> /usr/local/bin/vipd`");
    words[at + 1].to_string()
}

fn uid_of(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .unwrap_or_default()
}

#[test]
fn permitted_file_capabilities_let_a_non_root_vipd_bind_low_ports_and_add_vip_addresses() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: needs root (setcap, setpriv, ip netns)");
        return;
    }
    if Command::new("setcap").arg("-v").output().is_err() {
        println!("skipped: setcap is not installed (apt-get install libcap2-bin)");
        return;
    }
    let ns = match namespace() {
        Ok(ns) => ns,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let apps = dir.path().join("apps.json");
    std::fs::write(
        &apps,
        serde_json::json!({"apps": [{
            "id": "/web",
            "portDefinitions": [{"port": 80, "labels": {"VIP_0": "/web:443"}}],
            "tasks": [{"id": "web.1", "host": "127.0.0.1", "ports": [9], "state": "TASK_RUNNING"}],
        }]})
        .to_string(),
    )
    .unwrap();
    std::fs::set_permissions(&apps, std::fs::Permissions::from_mode(0o644)).unwrap();

    let with_caps = dir.path().join("vipd-caps");
    copy_vipd(&with_caps);
    let caps = dockerfile_setcap();
    assert!(
        caps.ends_with("+p"),
        "permitted-only, so the image starts without --cap-add: {caps}"
    );
    let setcap = Command::new("setcap")
        .args([caps.as_str(), with_caps.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(setcap.status.success(), "setcap: {setcap:?}");

    let mut vipd = start_unprivileged(&ns, &with_caps, &apps, &["--manage-addresses"]);
    let out = wait_ready(&ns, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\n");
    assert_eq!(uid_of(vipd.pid()), "65534", "vipd runs as nobody");
    assert!(
        vipd.wait_for_log(
            "capabilities effective=[\"net_admin\", \"net_bind_service\"]",
            Duration::from_secs(5)
        ),
        "log:\n{}",
        vipd.log().join("\n")
    );
    let addrs = ns.exec(&["ip", "-o", "addr", "show", "dev", "lo"]);
    let addrs = String::from_utf8_lossy(&addrs.stdout);
    assert!(
        addrs.lines().any(|l| l.contains("inet 11.")),
        "the named VIP's address is on lo: {addrs}"
    );
    vipd.signal(libc::SIGTERM);
    assert!(vipd.wait_exit(Duration::from_secs(15)).is_some());

    // The same binary without file capabilities: the kernel refuses the bind of port 80.
    let without = dir.path().join("vipd-plain");
    copy_vipd(&without);
    let mut plain = start_unprivileged(&ns, &without, &apps, &[]);
    let out = wait_ready(&ns, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("failed to bind"), "{stderr}");
    assert!(
        plain.wait_for_log("ermission denied", Duration::from_secs(5)),
        "log:\n{}",
        plain.log().join("\n")
    );
    plain.signal(libc::SIGTERM);
    assert!(plain.wait_exit(Duration::from_secs(15)).is_some());
}
