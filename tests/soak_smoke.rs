//! The 45 s smokes of the chaos soak (`benches/soak/soak.py`, issue 20): the real vipd binary
//! against the script's fake Marathon (and, in the second, its fake Mesos master) and echo
//! backends, under load and seeded chaos (table
//! changes, backend kills, Marathon 500s/restart/silence/garbage, SIGHUP, admin scrapes, a
//! SIGUSR2 upgrade). Asserts exit 0 and a well-formed last JSON line with 0 defects and 0 panics.
//! Needs `python3` (3.11, standard library only); all traffic stays on 127.0.0.1.

use std::path::Path;
use std::process::Command;

const KEYS: [&str; 10] = [
    "connections",
    "flows",
    "failed",
    "allowed",
    "defects",
    "panics",
    "rss_start_mib",
    "rss_end_mib",
    "fds_start",
    "fds_end",
];

#[test]
fn soak_smoke_45s_has_no_defects_and_no_panics() {
    smoke("marathon");
}

#[test]
fn soak_smoke_45s_on_the_mesos_source_has_no_defects_and_no_panics() {
    smoke("mesos");
}

fn smoke(source: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/soak/soak.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([
            "--duration",
            "45s",
            "--seed",
            "1",
            "--source",
            source,
            "--vipd",
        ])
        .arg(env!("CARGO_BIN_EXE_vipd"))
        .output()
        .expect("run python3 benches/soak/soak.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stdout.lines().last().unwrap_or_default();
    let report: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last:?}\nstderr:\n{stderr}"));
    for key in KEYS {
        assert!(
            report.get(key).is_some_and(serde_json::Value::is_number),
            "key {key} missing or not a number in {last}"
        );
    }
    assert_eq!(report["source"], source, "{last}");
    assert_eq!(report["defects"], 0, "defects: {last}\nstderr:\n{stderr}");
    assert_eq!(report["panics"], 0, "panics: {last}\nstderr:\n{stderr}");
    assert!(
        report["connections"].as_u64().unwrap() > 0 && report["flows"].as_u64().unwrap() > 0,
        "no load went through: {last}"
    );
    assert!(
        out.status.success(),
        "soak exited {:?}: {last}\nstderr:\n{stderr}",
        out.status
    );
}
