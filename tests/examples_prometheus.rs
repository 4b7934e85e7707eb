//! The Prometheus examples: `examples/prometheus.yml` and `examples/alerts.yml` pass the real
//! `promtool` (check config, check rules), `examples/alerts.test.yml` shows every alert firing
//! (`promtool test rules`), and every metric the rules name is one vipd exports.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// `false` (after printing `skipped:`) when promtool is not installed outside CI; a failure in
/// CI, which must have it.
fn promtool_installed() -> bool {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("promtool is missing, and CI must run this test: install the Debian package prometheus (.ci/run does)");
        }
        println!(
            "skipped: promtool not installed (Debian package prometheus; .ci/run installs it)"
        );
    }
    found
}

/// Runs `promtool ARGS` and returns its output; fails the test on a non-zero exit.
fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn prometheus_yml_and_alerts_yml_pass_promtool_check() {
    if !promtool_installed() {
        return;
    }
    let config = example("prometheus.yml");
    let out = promtool(&["check", "config", path_str(&config)]);
    // The config loads the rules file, so a broken rule fails the config check too.
    assert!(out.contains("alerts.yml"), "{out}");
    let rules = example("alerts.yml");
    let out = promtool(&["check", "rules", path_str(&rules)]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_alert_fires_in_promtool_test_rules() {
    if !promtool_installed() {
        return;
    }
    let tests = example("alerts.test.yml");
    let out = promtool(&["test", "rules", path_str(&tests)]);
    assert!(out.contains("SUCCESS"), "{out}");
    // Each alert of alerts.yml has a firing case in the test file.
    let rules = std::fs::read_to_string(example("alerts.yml")).unwrap();
    let test_text = std::fs::read_to_string(&tests).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 6, "{alerts:?}");
    for alert in alerts {
        let fires = test_text.split("- eval_time:").any(|case| {
            case.contains(&format!("alertname: {alert}\n")) && case.contains("exp_labels")
        });
        assert!(fires, "alerts.test.yml has no case where {alert} fires");
    }
}

#[test]
fn alerts_name_only_metrics_vipd_exports() {
    let rules = std::fs::read_to_string(example("alerts.yml")).unwrap();
    let metrics_source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics.rs"))
            .unwrap();
    let names: std::collections::BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("vipd_"))
        .collect();
    assert!(names.len() >= 8, "{names:?}");
    for name in names {
        assert!(
            metrics_source.contains(&format!("\"{name}\"")),
            "alerts.yml uses {name}, which src/metrics.rs does not export"
        );
    }
}
