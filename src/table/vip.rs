//! VIP labels: parsing `VIP_n` values, DC/OS name mangling, and the named-VIP address pool.
//!
//! Owns: which port-label keys are VIP labels, the value grammar (`IP:port`, `[v6]:port`,
//! `name:port`, optional legacy `tcp://`/`udp://` prefix), the DNS name of a named VIP (dcos-net's
//! `domain_frag` mangling), and the deterministic name → address allocation.
//!
//! Must not: do I/O or depend on arrival order; the same set of names gives the same addresses
//! on every agent. Never panics on any input.
//!
//! Sources read (stored snapshots):
//! - dcos/mesos_state `src/mesos_state.erl` (`domain_frag/1`, `label/3` and its eunit vectors,
//!   which the tests below replay byte for byte);
//! - dcos/dcos-net `apps/dcos_l4lb/src/dcos_l4lb_lashup_vip_listener.erl` (`binary_to_name`,
//!   `binary_join`: the name is `domain_frag(Label) ++ "." ++ domain_frag(Framework)`, then the zone;
//!   IPv4 pool hashed with `erlang:phash2` plus linear probing in *insertion* order);
//! - dcos/dcos-net `apps/dcos_l4lb/src/dcos_l4lb_mesos_poller.erl` (`key/3`: split the value on the
//!   LAST `:`, port must be an integer > 0, left part tried as a strict IP, otherwise a name);
//! - dcos/dcos-net `apps/dcos_net/src/dcos_net_mesos_listener.erl` (`handle_vip_labels`: keys
//!   starting with `VIP`/`vip`; legacy `tcp://`/`udp://` task-label values).
//!
//! Deliberate differences from dcos-net, all for determinism or safety:
//! - the hash is SHA-1 of the full DNS name (not `phash2`), and collisions are resolved by
//!   allocating in sorted name order, so two agents that see the same names agree even when they
//!   learned them in a different order;
//! - label keys must be `VIP_…`/`vip_…` or exactly `VIP`/`vip` (the Marathon docs example), so that
//!   keys such as `VIPD_0_BALANCE` are never read as VIPs;
//! - a name whose mangled form is empty or has an empty DNS label (`/acme./`) is rejected instead
//!   of producing an unusable record.
//!
//! Dual-stack (`--vip-cidr6`, as dcos-net's separate IPv4 and IPv6 VIP pools): a named VIP then
//! gets one address from each pool, each allocated by the same rule within its own pool. Each
//! side carries only the backends of its family: a dual-stack task's primary address feeds the
//! side of its family, its other-family address (`Endpoint::secondary_family`) the other side.
//! The IPv6 side exists only while it has backends; the IPv4 side is dropped only when the IPv6
//! side alone has backends. An IP VIP has one side, its own family's. Without `--vip-cidr6` a
//! named VIP has one address and every primary backend, of either family, as before.

use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The framework part of every named VIP vipd serves (Marathon apps only).
pub const FRAMEWORK: &str = "marathon";

/// True for a port-label key that declares a VIP.
pub fn is_vip_label_key(key: &str) -> bool {
    key == "VIP" || key == "vip" || key.starts_with("VIP_") || key.starts_with("vip_")
}

/// Where a VIP label points.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VipTarget {
    /// `IP:port`: listen on that address.
    Ip(IpAddr),
    /// `name:port`: the raw name as written (e.g. `/acme`); see [`dns_name`].
    Name(String),
}

/// A parsed VIP label value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipLabel {
    pub target: VipTarget,
    pub port: u16,
}

/// Why a VIP label value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VipLabelError {
    #[error("expected IP:port or name:port")]
    NoPort,
    #[error("port {0:?} is not a number in 1..=65535")]
    BadPort(String),
    #[error("empty address or name")]
    EmptyTarget,
}

/// Parses a VIP label value: `10.0.0.1:80`, `[fd01::1]:80`, `fd01::1:80`, `/acme:10000`, each
/// optionally prefixed with `tcp://` or `udp://` (legacy Minuteman; the prefix is dropped, the
/// frontend protocol comes from the port's `protocol`).
pub fn parse_vip_label(value: &str) -> Result<VipLabel, VipLabelError> {
    let v = value.trim();
    let v = strip_prefix_ci(v, "tcp://")
        .or_else(|| strip_prefix_ci(v, "udp://"))
        .unwrap_or(v);
    let (left, port) = v.rsplit_once(':').ok_or(VipLabelError::NoPort)?;
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => p,
        _ => return Err(VipLabelError::BadPort(port.to_string())),
    };
    if left.is_empty() {
        return Err(VipLabelError::EmptyTarget);
    }
    let unbracketed = left
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(left);
    match unbracketed.parse::<IpAddr>() {
        Ok(ip) => Ok(VipLabel {
            target: VipTarget::Ip(ip),
            port,
        }),
        Err(_) => Ok(VipLabel {
            target: VipTarget::Name(left.to_string()),
            port,
        }),
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len()
        && s.is_char_boundary(prefix.len())
        && s[..prefix.len()].eq_ignore_ascii_case(prefix)
    {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// dcos/mesos_state `domain_frag/1`: split on `.`, drop empty pieces, mangle each piece with
/// [`mangle_label`], join with `.`. A piece that mangles to nothing stays as an empty label
/// (as in the Erlang code); [`dns_name`] rejects such names.
pub fn domain_frag(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut first = true;
    for piece in name.split('.').filter(|p| !p.is_empty()) {
        if !first {
            out.push('.');
        }
        first = false;
        out.push_str(&mangle_label(piece));
    }
    out
}

/// dcos/mesos_state `label/3`, a three-state machine over the bytes of one DNS label:
/// - `start`: drop everything until the first `[a-z0-9]` (after lower-casing `A-Z`);
/// - `middle`: `-`, `_`, `.` become `-`; `[a-z0-9]` is kept; everything else is dropped; once 63
///   characters are collected, trailing `-` are stripped and the machine moves to `terminate`;
/// - `terminate`: only `[a-z0-9]` are appended, until 63 characters;
/// - at the end, trailing `-` are stripped.
pub fn mangle_label(piece: &str) -> String {
    #[derive(PartialEq)]
    enum St {
        Start,
        Middle,
        Terminate,
    }
    fn allowed(c: u8) -> bool {
        c.is_ascii_lowercase() || c.is_ascii_digit()
    }
    fn strip_trailing_dashes(acc: &mut Vec<u8>) {
        while acc.last() == Some(&b'-') {
            acc.pop();
        }
    }
    let bytes = piece.as_bytes();
    let mut acc: Vec<u8> = Vec::with_capacity(bytes.len().min(63));
    let mut st = St::Start;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i].to_ascii_lowercase();
        match st {
            St::Start => {
                if allowed(c) {
                    st = St::Middle; // re-examine the same byte in `middle`
                } else {
                    i += 1;
                }
            }
            St::Middle => {
                if acc.len() > 62 {
                    strip_trailing_dashes(&mut acc);
                    st = St::Terminate;
                } else {
                    if c == b'-' || c == b'_' || c == b'.' {
                        acc.push(b'-');
                    } else if allowed(c) {
                        acc.push(c);
                    }
                    i += 1;
                }
            }
            St::Terminate => {
                if acc.len() == 63 {
                    break;
                }
                if allowed(c) {
                    acc.push(c);
                }
                i += 1;
            }
        }
    }
    strip_trailing_dashes(&mut acc);
    // Only ASCII bytes were pushed.
    String::from_utf8(acc).unwrap_or_default()
}

/// Why a named VIP has no DNS name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VipNameError {
    #[error("name {0:?} mangles to an empty DNS label")]
    Empty(String),
    #[error("DNS name {name:?} is {octets} octets long; the limit is 255")]
    TooLong { name: String, octets: usize },
    #[error("DNS name {name:?} has a label of {len} octets; the limit is 63")]
    LabelTooLong { name: String, len: usize },
}

/// The longest DNS name on the wire (RFC 1035 §2.3.4), length octets and root label included.
pub const MAX_NAME_OCTETS: usize = 255;
/// The longest DNS label (RFC 1035 §2.3.4).
pub const MAX_LABEL_OCTETS: usize = 63;

/// Checks a dotted DNS name (no trailing dot) against the RFC 1035 limits: every label at most
/// 63 octets, the whole name at most 255 octets in wire form (one length octet per label plus
/// the root, so 253 characters written out).
pub fn check_dns_name_length(name: &str) -> Result<(), VipNameError> {
    if let Some(len) = name
        .split('.')
        .map(str::len)
        .find(|&len| len > MAX_LABEL_OCTETS)
    {
        return Err(VipNameError::LabelTooLong {
            name: name.to_string(),
            len,
        });
    }
    let octets = name.len() + 2;
    if octets > MAX_NAME_OCTETS {
        return Err(VipNameError::TooLong {
            name: name.to_string(),
            octets,
        });
    }
    Ok(())
}

/// Why an IP VIP address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VipAddressError {
    #[error("{0} is the unspecified address (it would bind every address of the host)")]
    Unspecified(IpAddr),
    #[error("{0} is a broadcast address")]
    Broadcast(IpAddr),
    #[error("{0} is a multicast address")]
    Multicast(IpAddr),
    #[error("{ip} is neither loopback nor in {allowed}")]
    OutOfScope { ip: IpAddr, allowed: String },
    #[error("{ip} is not an address of this agent, nor in {allowed} (--ip-vip-cidr)")]
    NotLocal { ip: IpAddr, allowed: String },
}

/// Which addresses an IP VIP label may name. Unspecified, broadcast and multicast addresses are
/// refused in every scope; loopback (127.0.0.0/8, ::1) is always accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum IpVipScope {
    /// Any other unicast address: `vipd table`, a preview with no agent to check against.
    #[default]
    AnyUnicast,
    /// Only addresses inside these ranges: `vipd run --manage-addresses` (`--vip-cidr` and
    /// `--ip-vip-cidr`). vipd adds every IP VIP address to `lo`, so an address outside the ranges
    /// the operator named would let an app capture traffic to any host (Minuteman's
    /// `10.0.0.1:80`-style VIPs need their range in `--ip-vip-cidr`).
    Within(Vec<IpNet>),
    /// An address of this agent (read from its interfaces at start), or one inside these ranges:
    /// `vipd run` without `--manage-addresses`, where an address that is neither could never be
    /// bound.
    LocalOrWithin {
        local: Vec<IpAddr>,
        nets: Vec<IpNet>,
    },
}

fn ranges(nets: &[IpNet]) -> String {
    if nets.is_empty() {
        "no configured range".to_string()
    } else {
        nets.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Checks an IP VIP address against `scope`. Pure: the caller decides what is local.
pub fn check_ip_vip(ip: IpAddr, scope: &IpVipScope) -> Result<(), VipAddressError> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if ip.is_unspecified() {
        return Err(VipAddressError::Unspecified(ip));
    }
    if ip.is_multicast() {
        return Err(VipAddressError::Multicast(ip));
    }
    if let IpAddr::V4(v4) = ip {
        if v4.is_broadcast() {
            return Err(VipAddressError::Broadcast(ip));
        }
    }
    if ip.is_loopback() {
        return Ok(());
    }
    match scope {
        IpVipScope::AnyUnicast => Ok(()),
        IpVipScope::Within(nets) if nets.iter().any(|n| n.contains(&ip)) => Ok(()),
        IpVipScope::Within(nets) => Err(VipAddressError::OutOfScope {
            ip,
            allowed: ranges(nets),
        }),
        IpVipScope::LocalOrWithin { local, nets }
            if local.contains(&ip) || nets.iter().any(|n| n.contains(&ip)) =>
        {
            Ok(())
        }
        IpVipScope::LocalOrWithin { nets, .. } => Err(VipAddressError::NotLocal {
            ip,
            allowed: ranges(nets),
        }),
    }
}

/// The DNS name of a named VIP of a Marathon app: `<domain_frag(name)>.marathon.<zone>`, e.g.
/// `/acme` → `acme.marathon.l4lb.thisdcos.directory`.
pub fn dns_name(raw: &str, zone: &str) -> Result<String, VipNameError> {
    framework_dns_name(raw, FRAMEWORK, zone)
}

/// The DNS name of a named VIP of any framework: `<domain_frag(name)>.<domain_frag(framework)>.<zone>`,
/// e.g. `overlay-vip` of `hello-world` → `overlay-vip.hello-world.l4lb.thisdcos.directory`
/// (dcos-net `to_name/1`).
pub fn framework_dns_name(raw: &str, framework: &str, zone: &str) -> Result<String, VipNameError> {
    let frag = domain_frag(raw);
    if frag.is_empty() || frag.split('.').any(str::is_empty) {
        return Err(VipNameError::Empty(raw.to_string()));
    }
    let framework_frag;
    let framework = if framework == FRAMEWORK {
        FRAMEWORK
    } else {
        framework_frag = domain_frag(framework);
        if framework_frag.is_empty() || framework_frag.split('.').any(str::is_empty) {
            return Err(VipNameError::Empty(framework.to_string()));
        }
        &framework_frag
    };
    let zone = zone.trim_matches('.');
    let mut s = String::with_capacity(frag.len() + framework.len() + zone.len() + 2);
    s.push_str(&frag);
    s.push('.');
    s.push_str(framework);
    if !zone.is_empty() {
        s.push('.');
        s.push_str(zone);
    }
    check_dns_name_length(&s)?;
    Ok(s)
}

/// The usable addresses of a `--vip-cidr` pool, as offsets from `base`.
///
/// IPv4: the network and broadcast addresses are excluded (except in /31 and /32, which have
/// none). IPv6: the all-zeros Subnet-Router anycast address (RFC 4291 §2.6.1) is excluded (except
/// in /127 and /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipPool {
    v4: bool,
    base: u128,
    size: u128,
}

impl VipPool {
    pub fn new(cidr: IpNet) -> VipPool {
        match cidr.trunc() {
            IpNet::V4(n) => {
                let net = u128::from(u32::from(n.network()));
                let total: u128 = 1u128 << (32 - u32::from(n.prefix_len()));
                let (base, size) = if n.prefix_len() <= 30 {
                    (net + 1, total - 2)
                } else {
                    (net, total)
                };
                VipPool {
                    v4: true,
                    base,
                    size,
                }
            }
            IpNet::V6(n) => {
                let net = u128::from(n.network());
                let bits = 128 - u32::from(n.prefix_len());
                // A /0 holds 2^128 addresses; u128::MAX is as good for hashing and probing.
                let total = if bits >= 128 {
                    u128::MAX
                } else {
                    1u128 << bits
                };
                let (base, size) = if n.prefix_len() <= 126 {
                    (net.wrapping_add(1), total - 1)
                } else {
                    (net, total)
                };
                VipPool {
                    v4: false,
                    base,
                    size,
                }
            }
        }
    }

    /// Number of usable addresses.
    pub fn size(&self) -> u128 {
        self.size
    }

    fn addr(&self, offset: u128) -> IpAddr {
        let n = self.base.wrapping_add(offset);
        if self.v4 {
            IpAddr::V4(Ipv4Addr::from(n as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(n))
        }
    }

    fn offset_of(&self, ip: IpAddr) -> Option<u128> {
        let n = match (ip, self.v4) {
            (IpAddr::V4(a), true) => u128::from(u32::from(a)),
            (IpAddr::V6(a), false) => u128::from(a),
            _ => return None,
        };
        let off = n.wrapping_sub(self.base);
        (n >= self.base && off < self.size).then_some(off)
    }

    /// The slot a name hashes to: SHA-1 of the DNS name, first 16 bytes big-endian, mod size.
    pub fn home_slot(&self, dns_name: &str) -> u128 {
        let digest = sha1_smol::Sha1::from(dns_name.as_bytes()).digest().bytes();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        u128::from_be_bytes(first) % self.size.max(1)
    }
}

/// Result of [`allocate`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocation {
    /// DNS name → address.
    pub addresses: BTreeMap<String, IpAddr>,
    /// Names that found no free address (pool exhausted), in name order.
    pub exhausted: Vec<String>,
}

impl fmt::Display for Allocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, ip) in &self.addresses {
            writeln!(f, "{n} {ip}")?;
        }
        Ok(())
    }
}

/// Gives every named VIP an address from `cidr`.
///
/// Names are taken in sorted order; each starts at its [`VipPool::home_slot`] and probes linearly
/// (wrapping) to the next address that is neither taken by an earlier name nor in `reserved` (the
/// IP VIPs of the table). So a name keeps its address unless a name sorting before it lands on the
/// same address (a true collision), and the result never depends on arrival order.
pub fn allocate<'a>(
    names: impl IntoIterator<Item = &'a str>,
    reserved: &BTreeSet<IpAddr>,
    cidr: IpNet,
) -> Allocation {
    let pool = VipPool::new(cidr);
    let names: BTreeSet<&str> = names.into_iter().collect();
    let mut taken: BTreeSet<u128> = reserved
        .iter()
        .filter_map(|ip| pool.offset_of(*ip))
        .collect();
    let mut out = Allocation::default();
    for name in names {
        if taken.len() as u128 >= pool.size {
            out.exhausted.push(name.to_string());
            continue;
        }
        let mut slot = pool.home_slot(name);
        // Terminates: fewer than `size` slots are taken.
        while taken.contains(&slot) {
            slot = if slot + 1 >= pool.size { 0 } else { slot + 1 };
        }
        taken.insert(slot);
        out.addresses.insert(name.to_string(), pool.addr(slot));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mangling_matches_mesos_state_eunit_vectors() {
        // Every assertion of mesos_state.erl `remap_test/0`.
        let cases = [
            (
                "fd%gsf---gs7-f$gs--d7fddg-123",
                "fdgsf---gs7-fgs--d7fddg-123",
            ),
            ("4abc123", "4abc123"),
            (
                "89fdgsf---gs7-fgs--d7fddg-123",
                "89fdgsf---gs7-fgs--d7fddg-123",
            ),
            (
                "##fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789-",
                "fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789",
            ),
            (
                "fd%gsf---gs7-f$gs--d7fddg123456789012345678901234567890123456789-123",
                "fdgsf---gs7-fgs--d7fddg1234567890123456789012345678901234567891",
            ),
            (
                "89fdgsf---gs7-fgs--d7fddg---123",
                "89fdgsf---gs7-fgs--d7fddg---123",
            ),
            (
                "%%fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789---123",
                "fdgsf---gs7-fgs--d7fddg1234567890123456789012345678901234567891",
            ),
            ("-4abc123", "4abc123"),
            (
                "$$fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789-123",
                "fdgsf---gs7-fgs--d7fddg1234567890123456789012345678901234567891",
            ),
            ("89fdgsf---gs7-fgs--d7fddg-", "89fdgsf---gs7-fgs--d7fddg"),
            ("0-0", "0-0"),
        ];
        for (input, want) in cases {
            assert_eq!(mangle_label(input), want, "input {input:?}");
        }
    }

    #[test]
    fn mangled_labels_only_hold_allowed_chars_and_at_most_63() {
        for s in [
            "ÄÖÜ_ß-x",
            "___",
            "A_B-C",
            &"x".repeat(200),
            &"-_".repeat(100),
            "/g/app",
        ] {
            let m = mangle_label(s);
            assert!(m.len() <= 63, "{s:?} -> {m:?}");
            assert!(
                m.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'),
                "{s:?} -> {m:?}"
            );
            assert!(!m.starts_with('-') && !m.ends_with('-'), "{s:?} -> {m:?}");
        }
        assert_eq!(mangle_label("A_B-C"), "a-b-c");
    }

    #[test]
    fn marathon_names_mangle_like_dcos_net() {
        assert_eq!(domain_frag("/acme"), "acme");
        assert_eq!(domain_frag("/g/app"), "gapp");
        assert_eq!(domain_frag("/prod/web.v2"), "prodweb.v2");
        assert_eq!(domain_frag("My_App"), "my-app");
        assert_eq!(domain_frag("a..b"), "a.b");
        assert_eq!(
            dns_name("/acme", "l4lb.thisdcos.directory").unwrap(),
            "acme.marathon.l4lb.thisdcos.directory"
        );
        assert_eq!(
            dns_name("/g/app", "example.").unwrap(),
            "gapp.marathon.example"
        );
    }

    #[test]
    fn names_that_mangle_to_nothing_are_rejected() {
        assert!(dns_name("/", "z").is_err());
        assert!(dns_name("___", "z").is_err());
        assert!(dns_name("/acme./", "z").is_err());
        assert!(dns_name("", "z").is_err());
    }

    #[test]
    fn dns_names_over_the_rfc_1035_limits_are_rejected() {
        let zone = "l4lb.thisdcos.directory";
        // 6 labels of 40 characters: 6*41 + "marathon." + zone > 253.
        let long: String = (0..6)
            .map(|i| format!("{}{}", i, "a".repeat(39)))
            .collect::<Vec<_>>()
            .join(".");
        assert!(matches!(
            dns_name(&long, zone),
            Err(VipNameError::TooLong { octets, .. }) if octets > MAX_NAME_OCTETS
        ));
        // Exactly at the limit: 253 characters written out (255 octets on the wire).
        let fill = 253 - ".marathon.".len() - zone.len();
        let three = ["b", "c", "d"].map(|c| c.repeat(63)).join(".");
        let at_limit = format!("{three}.{}", "e".repeat(fill - three.len() - 1));
        assert_eq!(dns_name(&at_limit, zone).unwrap().len(), 253);
        let over = format!("{three}.{}", "e".repeat(fill - three.len()));
        assert!(matches!(
            dns_name(&over, zone),
            Err(VipNameError::TooLong { octets: 256, .. })
        ));
        // A zone label over 63 octets.
        assert!(matches!(
            dns_name("/acme", &format!("{}.directory", "z".repeat(64))),
            Err(VipNameError::LabelTooLong { len: 64, .. })
        ));
        assert!(check_dns_name_length(&format!("{}.x", "y".repeat(63))).is_ok());
        assert!(check_dns_name_length(&"a.".repeat(126)[..251]).is_ok());
        assert!(check_dns_name_length(&"a".repeat(254)).is_err());
    }

    #[test]
    fn ip_vips_refuse_unspecified_broadcast_multicast_and_out_of_scope() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let any = IpVipScope::AnyUnicast;
        for bad in ["0.0.0.0", "::", "::ffff:0.0.0.0"] {
            assert!(
                matches!(
                    check_ip_vip(ip(bad), &any),
                    Err(VipAddressError::Unspecified(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            check_ip_vip(ip("255.255.255.255"), &any),
            Err(VipAddressError::Broadcast(_))
        ));
        for bad in ["224.0.0.1", "239.1.2.3", "ff02::1"] {
            assert!(
                matches!(
                    check_ip_vip(ip(bad), &any),
                    Err(VipAddressError::Multicast(_))
                ),
                "{bad}"
            );
        }
        for good in ["10.10.0.1", "127.1.0.1", "fd00::10", "::1"] {
            assert_eq!(check_ip_vip(ip(good), &any), Ok(()), "{good}");
        }
        let scoped = IpVipScope::Within(vec!["11.0.0.0/8".parse().unwrap()]);
        assert_eq!(check_ip_vip(ip("11.1.2.3"), &scoped), Ok(()));
        assert_eq!(check_ip_vip(ip("127.1.0.1"), &scoped), Ok(()), "loopback");
        assert_eq!(check_ip_vip(ip("::1"), &scoped), Ok(()), "loopback");
        let err = check_ip_vip(ip("10.10.0.1"), &scoped).unwrap_err();
        assert_eq!(
            err.to_string(),
            "10.10.0.1 is neither loopback nor in 11.0.0.0/8"
        );
        assert!(check_ip_vip(ip("0.0.0.0"), &scoped).is_err());
    }

    #[test]
    fn without_address_management_an_ip_vip_must_be_local_or_in_a_named_range() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let scope = IpVipScope::LocalOrWithin {
            local: vec![ip("10.0.1.5"), ip("fd00::5")],
            nets: vec![
                "11.0.0.0/8".parse().unwrap(),
                "10.10.0.0/24".parse().unwrap(),
            ],
        };
        for good in [
            "10.0.1.5",
            "fd00::5",
            "11.2.3.4",
            "10.10.0.7",
            "127.1.0.1",
            "::1",
        ] {
            assert_eq!(check_ip_vip(ip(good), &scope), Ok(()), "{good}");
        }
        let err = check_ip_vip(ip("192.0.2.10"), &scope).unwrap_err();
        assert_eq!(
            err.to_string(),
            "192.0.2.10 is not an address of this agent, nor in 11.0.0.0/8, 10.10.0.0/24 (--ip-vip-cidr)"
        );
        // Being local never admits the unspecified, broadcast or multicast addresses.
        let odd = IpVipScope::LocalOrWithin {
            local: vec![ip("0.0.0.0"), ip("224.0.0.1")],
            nets: vec![],
        };
        assert!(check_ip_vip(ip("0.0.0.0"), &odd).is_err());
        assert!(check_ip_vip(ip("224.0.0.1"), &odd).is_err());
    }

    #[test]
    fn label_keys() {
        for k in ["VIP_0", "vip_1", "VIP", "vip", "VIP_http"] {
            assert!(is_vip_label_key(k), "{k}");
        }
        for k in ["VIPD_0_BALANCE", "Vip_0", "xVIP_0", "vipx", ""] {
            assert!(!is_vip_label_key(k), "{k}");
        }
    }

    #[test]
    fn label_values() {
        let ip = |s: &str| VipTarget::Ip(s.parse().unwrap());
        let p = |s| parse_vip_label(s).unwrap();
        assert_eq!(
            p("10.0.0.1:80"),
            VipLabel {
                target: ip("10.0.0.1"),
                port: 80
            }
        );
        assert_eq!(p("tcp://10.0.0.1:80").target, ip("10.0.0.1"));
        assert_eq!(p("UDP://10.0.0.1:53").port, 53);
        assert_eq!(p("[fd01::1]:443").target, ip("fd01::1"));
        assert_eq!(p("fd01::1:443").target, ip("fd01::1"));
        assert_eq!(
            p("/acme:10000"),
            VipLabel {
                target: VipTarget::Name("/acme".into()),
                port: 10000
            }
        );
        // Only the last ':' splits: a name may hold ':'.
        assert_eq!(p("a:b:8080").target, VipTarget::Name("a:b".into()));
        // 256.1.1.1 is not an IP: a name, as in dcos-net.
        assert_eq!(
            p("256.1.1.1:80").target,
            VipTarget::Name("256.1.1.1".into())
        );

        assert_eq!(parse_vip_label("/acme"), Err(VipLabelError::NoPort));
        for bad in [
            "/acme:0",
            "/acme:65536",
            "/acme:",
            "/acme:-1",
            "/acme:+80",
            "/acme:x",
        ] {
            assert!(
                matches!(parse_vip_label(bad), Err(VipLabelError::BadPort(_))),
                "{bad}"
            );
        }
        assert_eq!(parse_vip_label(":80"), Err(VipLabelError::EmptyTarget));
    }

    #[test]
    fn pool_bounds() {
        let p = VipPool::new("11.0.0.0/8".parse().unwrap());
        assert_eq!(p.size(), (1 << 24) - 2);
        assert_eq!(p.addr(0), "11.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            p.addr(p.size() - 1),
            "11.255.255.254".parse::<IpAddr>().unwrap()
        );
        assert_eq!(p.offset_of("11.0.0.0".parse().unwrap()), None);
        assert_eq!(p.offset_of("11.255.255.255".parse().unwrap()), None);
        assert_eq!(p.offset_of("11.0.0.1".parse().unwrap()), Some(0));
        assert_eq!(p.offset_of("fd01::1".parse().unwrap()), None);
        assert_eq!(VipPool::new("10.0.0.0/32".parse().unwrap()).size(), 1);
        assert_eq!(VipPool::new("10.0.0.0/31".parse().unwrap()).size(), 2);
        assert_eq!(VipPool::new("10.0.0.0/30".parse().unwrap()).size(), 2);
        assert_eq!(
            VipPool::new("10.0.0.0/0".parse().unwrap()).size(),
            (1 << 32) - 2
        );
        let v6 = VipPool::new("fd01:c::/64".parse().unwrap());
        assert_eq!(v6.size(), (1u128 << 64) - 1);
        assert_eq!(v6.addr(0), "fd01:c::1".parse::<IpAddr>().unwrap());
        assert_eq!(VipPool::new("::/0".parse().unwrap()).size(), u128::MAX - 1);
        // A host-bits-set CIDR is truncated to its network.
        assert_eq!(
            VipPool::new("11.1.2.3/8".parse().unwrap()),
            VipPool::new("11.0.0.0/8".parse().unwrap())
        );
    }

    #[test]
    fn allocation_is_stable_and_order_independent() {
        let cidr: IpNet = "11.0.0.0/8".parse().unwrap();
        let none = BTreeSet::new();
        let a = allocate(["a.marathon.z", "b.marathon.z"], &none, cidr);
        let b = allocate(["b.marathon.z", "a.marathon.z"], &none, cidr);
        assert_eq!(a, b);
        let c = allocate(
            ["b.marathon.z", "c.marathon.z", "a.marathon.z"],
            &none,
            cidr,
        );
        assert_eq!(a.addresses["a.marathon.z"], c.addresses["a.marathon.z"]);
        assert_eq!(a.addresses["b.marathon.z"], c.addresses["b.marathon.z"]);
        for ip in c.addresses.values() {
            assert!(cidr.contains(ip));
        }
    }

    #[test]
    fn collisions_resolve_by_name_order_and_skip_reserved() {
        // A /30 has two usable addresses: 10.0.0.1 and 10.0.0.2.
        let cidr: IpNet = "10.0.0.0/30".parse().unwrap();
        let pool = VipPool::new(cidr);
        // Find two names with the same home slot.
        let names: Vec<String> = (0..20).map(|i| format!("n{i}.marathon.z")).collect();
        let (x, y) = {
            let mut found = None;
            'o: for i in 0..names.len() {
                for j in i + 1..names.len() {
                    if pool.home_slot(&names[i]) == pool.home_slot(&names[j]) {
                        found = Some((names[i].clone(), names[j].clone()));
                        break 'o;
                    }
                }
            }
            found.unwrap()
        };
        let (lo, hi) = if x < y { (x, y) } else { (y, x) };
        let home = pool.addr(pool.home_slot(&lo));
        let other = pool.addr(1 - pool.home_slot(&lo));
        for order in [[lo.as_str(), hi.as_str()], [hi.as_str(), lo.as_str()]] {
            let a = allocate(order, &BTreeSet::new(), cidr);
            assert_eq!(a.addresses[&lo], home, "smaller name keeps its home slot");
            assert_eq!(a.addresses[&hi], other, "larger name probes on");
        }
        // Alone, the larger name gets the home slot; reserving it pushes it on.
        assert_eq!(
            allocate([hi.as_str()], &BTreeSet::new(), cidr).addresses[&hi],
            home
        );
        let reserved: BTreeSet<IpAddr> = [home].into();
        assert_eq!(
            allocate([hi.as_str()], &reserved, cidr).addresses[&hi],
            other
        );
        // Pool exhaustion.
        let a = allocate(
            names.iter().map(String::as_str).take(3),
            &BTreeSet::new(),
            cidr,
        );
        assert_eq!(a.addresses.len(), 2);
        assert_eq!(a.exhausted.len(), 1);
        let both: BTreeSet<IpAddr> = [home, other].into();
        let a = allocate([lo.as_str()], &both, cidr);
        assert!(a.addresses.is_empty());
        assert_eq!(a.exhausted, vec![lo.clone()]);
    }

    #[test]
    fn ipv6_pool() {
        let cidr: IpNet = "fd01:c::/64".parse().unwrap();
        let a = allocate(["acme.marathon.z"], &BTreeSet::new(), cidr);
        let ip = a.addresses["acme.marathon.z"];
        assert!(ip.is_ipv6() && cidr.contains(&ip));
        assert_ne!(ip, "fd01:c::".parse::<IpAddr>().unwrap());
    }
}
