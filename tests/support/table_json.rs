//! `vipd table` through the real binary, and lookups in its JSON: for the tests of the pure
//! path (`pods_table`, `mesos_table`). The environment's `VIPD_*` table flags are removed, so a
//! test sees the defaults it states.
#![allow(dead_code)]

use serde_json::Value;
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `vipd table ARGS`, with `stdin` on its standard input (for `--apps -`).
pub fn vipd_table(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vipd"))
        .arg("table")
        .args(args)
        .env_remove("VIPD_APPS")
        .env_remove("VIPD_MESOS_STATE")
        .env_remove("VIPD_BIND_ADDRESS")
        .env_remove("VIPD_VIP_CIDR")
        .env_remove("VIPD_VIP_CIDR6")
        .env_remove("VIPD_ZONE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vipd");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// [`vipd_table`], which must succeed; its JSON.
pub fn table(args: &[&str], stdin: &[u8]) -> Value {
    let out = vipd_table(args, stdin);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The frontend of protocol `proto` whose `vip_name` is `name` (the full DNS name).
pub fn vip_frontend<'a>(t: &'a Value, proto: &str, name: &str) -> Option<&'a Value> {
    t["frontends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["protocol"] == proto && f["vip_name"] == name)
}

/// Every frontend of protocol `proto` whose `vip_name` is `name` (one per address family for a
/// dual-stack named VIP).
pub fn vip_frontends<'a>(t: &'a Value, proto: &str, name: &str) -> Vec<&'a Value> {
    t["frontends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["protocol"] == proto && f["vip_name"] == name)
        .collect()
}

/// `(address, state)` of every backend of `frontend`.
pub fn backend_states(frontend: &Value) -> Vec<(String, String)> {
    frontend["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap().to_string(),
                b["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Owned `(address, state)` pairs, to compare with [`backend_states`].
pub fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|&(a, s)| (a.to_string(), s.to_string()))
        .collect()
}
