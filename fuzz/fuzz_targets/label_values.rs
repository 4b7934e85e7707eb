//! Target 6: label values: VIP label values (`VIP_n`), the DNS names made from them, and the
//! per-port option values (`VIPD_{n}_BALANCE`, `VIPD_{n}_HEALTHCHECK`, `HAPROXY_{n}_BALANCE`, and
//! the table's JSON form of options).
//!
//! Input: text lines (lossy UTF-8). Line 1 is a VIP label value, line 2 a VIP name, every further
//! line a `key=value` pair. Properties:
//! - `parse_vip_label`: a parsed value prints back (`udp://` + IP:port, [IPv6]:port or
//!   name:port) to a value that parses to the same label; the port is never 0;
//! - `mangle_label`: at most 63 octets of `[a-z0-9-]`, no leading or trailing `-`, idempotent;
//! - `dns_name`: a name it gives is inside `marathon.<zone>`, has labels of 1..=63 octets, is at
//!   most 255 octets, parses as a DNS name, and is a fixed point (`dns_name` of its own label
//!   part gives it back);
//! - options: what `label_options` and `PortOptions::from_pairs` accept round-trips through the
//!   table's JSON form (`entries`, serde) to an equal value; `Balance` names parse back.
#![no_main]

use hickory_proto::rr::Name;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use vipd::table::options::{label_options, ActiveCheck, PortLabels};
use vipd::table::vip::{
    dns_name, domain_frag, mangle_label, parse_vip_label, VipTarget, FRAMEWORK,
};
use vipd::table::{Balance, PortOptions};

const ZONE: &str = "l4lb.thisdcos.directory";

fn check_vip_label(value: &str) {
    let Ok(label) = parse_vip_label(value) else {
        return;
    };
    assert_ne!(label.port, 0, "{value:?} parsed with port 0");
    let printed = match &label.target {
        VipTarget::Ip(std::net::IpAddr::V4(ip)) => format!("udp://{ip}:{}", label.port),
        VipTarget::Ip(std::net::IpAddr::V6(ip)) => format!("udp://[{ip}]:{}", label.port),
        VipTarget::Name(name) => {
            assert!(!name.is_empty(), "{value:?} parsed to an empty name");
            format!("udp://{name}:{}", label.port)
        }
    };
    assert_eq!(
        parse_vip_label(&printed).as_ref(),
        Ok(&label),
        "{value:?} -> {printed:?} does not parse back"
    );
}

fn check_names(raw: &str) {
    let mangled = mangle_label(raw);
    assert!(
        mangled.len() <= 63,
        "mangle_label({raw:?}) is {} octets",
        mangled.len()
    );
    assert!(
        mangled
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "mangle_label({raw:?}) = {mangled:?} has a byte outside [a-z0-9-]"
    );
    assert!(
        !mangled.starts_with('-') && !mangled.ends_with('-'),
        "mangle_label({raw:?}) = {mangled:?} starts or ends with '-'"
    );
    assert_eq!(
        mangle_label(&mangled),
        mangled,
        "mangle_label is not idempotent on {raw:?}"
    );

    let Ok(name) = dns_name(raw, ZONE) else {
        return;
    };
    let suffix = format!(".{FRAMEWORK}.{ZONE}");
    let Some(frag) = name.strip_suffix(&suffix) else {
        panic!("dns_name({raw:?}) = {name:?} is not inside {suffix:?}");
    };
    assert_eq!(frag, domain_frag(raw));
    assert!(
        name.len() <= 255,
        "dns_name({raw:?}) is {} octets",
        name.len()
    );
    for label in name.split('.') {
        assert!(
            (1..=63).contains(&label.len()),
            "dns_name({raw:?}) = {name:?} has a label of {} octets",
            label.len()
        );
    }
    let parsed =
        Name::from_ascii(&name).unwrap_or_else(|e| panic!("{name:?} is not a DNS name: {e}"));
    let zone = Name::from_ascii(ZONE).expect("the zone parses");
    assert!(zone.zone_of(&parsed), "{name:?} is outside {ZONE}");
    assert_eq!(
        dns_name(frag, ZONE).as_deref(),
        Ok(name.as_str()),
        "dns_name is not a fixed point on {raw:?}"
    );
}

fn check_options(pairs: &[(String, String)]) {
    let labels: BTreeMap<String, String> = pairs.iter().cloned().collect();
    let empty = BTreeMap::new();
    for (port, owner) in [(None, &labels), (Some(&labels), &empty)] {
        let mut bad = Vec::new();
        let opts = label_options(
            PortLabels {
                port,
                owner,
                index: 0,
            },
            &mut bad,
        );
        round_trip(&opts);
    }
    if let Ok(opts) = PortOptions::from_pairs(pairs.iter().map(|(k, v)| (k, v))) {
        round_trip(&opts);
    }
    for (_, v) in pairs {
        if let Some(b) = Balance::parse_option(v) {
            assert_eq!(Balance::parse_option(b.as_str()), Some(b));
        }
        if let Ok(check) = ActiveCheck::parse(v) {
            assert_eq!(
                ActiveCheck::parse(v.trim()),
                Ok(check),
                "{v:?} parses differently trimmed"
            );
        }
    }
}

fn round_trip(opts: &PortOptions) {
    let entries = opts.entries();
    let back = PortOptions::from_pairs(entries.iter().map(|(k, v)| (*k, v.as_str())));
    assert_eq!(
        back.as_ref(),
        Ok(opts),
        "options {entries:?} do not read back"
    );
    let json = serde_json::to_string(opts).expect("options serialize");
    let back: PortOptions = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("options JSON {json} does not read back: {e}"));
    assert_eq!(&back, opts, "options JSON {json} reads back different");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    check_vip_label(lines.next().unwrap_or_default());
    check_names(lines.next().unwrap_or_default());
    let pairs: Vec<(String, String)> = lines
        .take(16)
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    check_options(&pairs);
});
