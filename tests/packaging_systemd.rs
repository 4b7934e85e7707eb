//! `packaging/systemd/`: the unit passes `systemd-analyze verify` with no warning and has what
//! the operations docs promise (Type=notify, capabilities for a non-root user, hardening, a
//! reload that upgrades in place by SIGUSR2); every variable of the example environment file is a flag of
//! `vipd run`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn packaging(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging/systemd")
        .join(name)
}

/// `false` (after printing `skipped:`) when the tool is not installed outside CI; a failure in
/// CI, which must have it.
fn installed(program: &str, package: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{program} is missing, and CI must run this test: install the Debian package {package} (.ci/run does)");
        }
        println!(
            "skipped: {program} not installed (Debian package {package}; .ci/run installs it)"
        );
    }
    found
}

/// `KEY=value` lines of the unit (comments and sections left out).
fn directives(unit: &str) -> Vec<(&str, &str)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .collect()
}

fn value<'a>(unit: &'a str, key: &str) -> &'a str {
    let found: Vec<&str> = directives(unit)
        .into_iter()
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(found.len(), 1, "{key}= should be set once: {found:?}");
    found[0]
}

#[test]
fn unit_passes_systemd_analyze_verify_without_warnings() {
    if !installed("systemd-analyze", "systemd") {
        return;
    }
    // verify checks that ExecStart's binary exists: point it at the binary this build made.
    let unit = std::fs::read_to_string(packaging("vipd.service")).unwrap();
    assert_eq!(value(&unit, "ExecStart"), "/usr/bin/vipd run");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("vipd.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/bin/vipd", env!("CARGO_BIN_EXE_vipd")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("run systemd-analyze");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{report}"
    );
    // An unknown key or a bad value is only a warning for systemd: none is allowed here.
    let warnings: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("vipd.service"))
        .collect();
    assert!(
        warnings.is_empty(),
        "systemd-analyze verify warns:\n{report}"
    );
}

#[test]
fn unit_is_notify_unprivileged_hardened_and_reloads_by_upgrading_with_sigusr2() {
    let unit = std::fs::read_to_string(packaging("vipd.service")).unwrap();
    assert_eq!(value(&unit, "Type"), "notify");
    // The upgraded process (a child of the main one) notifies MAINPID= and READY=1.
    assert_eq!(value(&unit, "NotifyAccess"), "all");
    assert_eq!(value(&unit, "EnvironmentFile"), "/etc/default/vipd");
    let user = value(&unit, "User");
    assert!(!user.is_empty() && user != "root" && user != "0", "{user}");
    let caps: Vec<&str> = value(&unit, "AmbientCapabilities")
        .split_whitespace()
        .collect();
    assert_eq!(caps, ["CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN"]);
    assert_eq!(value(&unit, "ProtectSystem"), "strict");
    assert_eq!(value(&unit, "StateDirectory"), "vipd");
    assert_eq!(value(&unit, "NoNewPrivileges"), "yes");
    let nofile: u64 = value(&unit, "LimitNOFILE").parse().unwrap();
    assert!(nofile >= 65536, "{nofile}");
    // Reload is the in-place upgrade (SIGUSR2); vipd handles it and SIGHUP (resync), installed in
    // src/signals.rs.
    let signals =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/signals.rs")).unwrap();
    assert!(signals.contains("SignalKind::hangup()"));
    assert!(signals.contains("SignalKind::user_defined2()"));
    assert_eq!(value(&unit, "ExecReload"), "/bin/kill -USR2 $MAINPID");
}

#[test]
fn every_variable_of_the_example_environment_is_a_flag_of_vipd_run() {
    let help = Command::new(env!("CARGO_BIN_EXE_vipd"))
        .args(["run", "--help"])
        .output()
        .expect("vipd run --help");
    let help = String::from_utf8_lossy(&help.stdout);
    let env = std::fs::read_to_string(packaging("vipd.env")).unwrap();
    let mut set = 0;
    for line in env.lines() {
        // Commented-out settings are examples too: they must name real variables.
        let setting = line.trim().trim_start_matches('#').trim();
        let Some((name, _)) = setting.split_once('=') else {
            continue;
        };
        if !name.starts_with("VIPD_") || name.contains(' ') {
            continue;
        }
        assert!(
            help.contains(&format!("[env: {name}=")),
            "vipd.env sets {name}, which vipd run does not read"
        );
        if !line.trim_start().starts_with('#') {
            set += 1;
        }
    }
    assert!(set >= 5, "{set} variables set");
    // The state directory the unit creates is the one the environment names.
    assert!(env.contains("\nVIPD_STATE_DIR=/var/lib/vipd\n"));
}
