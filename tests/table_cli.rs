//! `vipd table` through the real binary: output shape, stdin, exit codes, one-line errors.

use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn vipd(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vipd"));
    cmd.args(args)
        .env_remove("VIPD_APPS")
        .env_remove("VIPD_BIND_ADDRESS")
        .env_remove("VIPD_VIP_CIDR")
        .env_remove("VIPD_ZONE")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn vipd");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort();
    k
}

#[test]
fn prints_the_table_in_the_documented_shape() {
    let path = fixture("marathon-1.10-apps.json");
    let out = vipd(&["table", "--apps", path.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.ends_with("}\n"), "trailing newline");
    assert!(text.starts_with("{\n  \"frontends\": ["), "pretty-printed");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(keys(&v), ["frontends", "warnings"]);
    let fronts = v["frontends"].as_array().unwrap();
    for f in fronts {
        let k = keys(f);
        for required in [
            "app",
            "owner_kind",
            "backends",
            "kind",
            "listen",
            "port_index",
            "port_name",
            "protocol",
            "vip_name",
        ] {
            assert!(k.contains(&required), "{required} missing in {f}");
        }
        for extra in &k {
            assert!(
                [
                    "app",
                    "apps",
                    "backends",
                    "kind",
                    "listen",
                    "options",
                    "owner_kind",
                    "port_index",
                    "port_name",
                    "protocol",
                    "vip_name"
                ]
                .contains(extra),
                "unexpected field {extra}"
            );
        }
        for b in f["backends"].as_array().unwrap() {
            assert_eq!(keys(b), ["address", "state", "task"]);
        }
    }
    // Specific entries.
    let first = &fronts[0];
    assert_eq!(first["protocol"], "tcp");
    assert_eq!(first["listen"], "0.0.0.0:10000");
    assert_eq!(first["kind"], "service_port");
    assert_eq!(first["vip_name"], Value::Null);
    assert_eq!(first["app"], "/web");
    assert_eq!(first["owner_kind"], "app");
    assert_eq!(first["port_index"], 0);
    assert_eq!(first["port_name"], "http");
    assert_eq!(first["backends"][0]["address"], "10.0.1.10:31000");
    assert_eq!(
        first["backends"][0]["task"],
        "web.instance-0a1b2c3d-0000-4000-8000-000000000001._app.1"
    );
    assert_eq!(first["backends"][0]["state"], "up");
    // `localhost` was resolved by the command's resolver.
    assert_eq!(first["backends"][2]["address"], "127.0.0.1:31020");
    let by_listen = |proto: &str, listen: &str| {
        fronts
            .iter()
            .find(|f| f["protocol"] == proto && f["listen"] == listen)
            .unwrap_or_else(|| panic!("{proto} {listen}"))
    };
    let db = by_listen("tcp", "0.0.0.0:10002");
    assert_eq!(db["backends"].as_array().unwrap().len(), 2);
    assert_eq!(db["backends"][1]["state"], "draining");
    assert_eq!(by_listen("udp", "0.0.0.0:10001")["port_name"], "dns");
    assert_eq!(
        by_listen("tcp", "10.10.0.5:5432")["backends"][0]["address"],
        "10.0.2.20:31500"
    );
    assert_eq!(
        by_listen("tcp", "0.0.0.0:10004")["backends"][0]["address"],
        "9.0.0.7:9000"
    );
    assert_eq!(
        by_listen("tcp", "0.0.0.0:10003")["backends"][0]["address"],
        "10.0.3.30:31600"
    );
    assert_eq!(
        by_listen("tcp", "0.0.0.0:10005")["backends"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let mut named: Vec<&str> = fronts
        .iter()
        .filter_map(|f| f["vip_name"].as_str())
        .collect();
    named.sort();
    assert_eq!(
        named,
        [
            "iptapi.marathon.l4lb.thisdcos.directory",
            "web.marathon.l4lb.thisdcos.directory"
        ]
    );
    assert_eq!(v["warnings"].as_array().unwrap().len(), 0);
}

#[test]
fn stdin_dash_gives_the_same_table_as_the_file() {
    let path = fixture("marathon-1.4-legacy-apps.json");
    let from_file = vipd(&["table", "--apps", path.to_str().unwrap()], None);
    let body = std::fs::read(&path).unwrap();
    let from_stdin = vipd(&["table", "--apps", "-"], Some(&body));
    assert!(from_file.status.success() && from_stdin.status.success());
    assert_eq!(from_file.stdout, from_stdin.stdout);
    assert!(!from_file.stdout.is_empty());
}

fn assert_one_line_failure(out: &Output, needle: &str) {
    assert!(!out.status.success(), "must fail");
    assert!(out.stdout.is_empty(), "no table on failure");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one stderr line: {err:?}");
    assert!(err.ends_with('\n'));
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
}

#[test]
fn garbage_on_stdin_fails_with_one_line() {
    let out = vipd(&["table", "--apps", "-"], Some(b"this is not json\n{{{"));
    assert_one_line_failure(&out, "stdin");
}

#[test]
fn not_an_apps_document_fails_with_one_line() {
    let out = vipd(&["table", "--apps", "-"], Some(br#"{"tasks": []}"#));
    assert_one_line_failure(&out, "not a Marathon apps document");
}

#[test]
fn missing_file_fails_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.json");
    let out = vipd(&["table", "--apps", path.to_str().unwrap()], None);
    assert_one_line_failure(&out, "nope.json");
}

#[test]
fn warnings_still_exit_zero() {
    let path = fixture("malformed-app.json");
    let out = vipd(&["table", "--apps", path.to_str().unwrap()], None);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let w = v["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0]["app"], "/bad");
    assert!(w[0]["message"]
        .as_str()
        .unwrap()
        .starts_with("portDefinitions: "));
    assert_eq!(v["frontends"][0]["listen"], "0.0.0.0:10050");
    assert_eq!(
        v["frontends"][0]["backends"][0]["address"],
        "10.0.5.50:31950"
    );
}

#[test]
fn table_options_are_honoured() {
    let path = fixture("marathon-1.10-apps.json");
    let out = vipd(
        &[
            "table",
            "--apps",
            path.to_str().unwrap(),
            "--bind-address",
            "127.0.0.1",
            "--vip-cidr",
            "fd01:c::/64",
            "--zone",
            "example.internal",
        ],
        None,
    );
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let fronts = v["frontends"].as_array().unwrap();
    assert!(fronts.iter().any(|f| f["listen"] == "127.0.0.1:10000"));
    let named = fronts
        .iter()
        .find(|f| f["vip_name"] == "web.marathon.example.internal")
        .expect("named VIP in the custom zone");
    assert!(named["listen"].as_str().unwrap().starts_with("[fd01:c::"));
}
