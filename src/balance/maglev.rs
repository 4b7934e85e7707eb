//! Maglev consistent hashing (Eisenbud et al., NSDI 2016) with fixed seeds, so every agent and
//! every restart builds the same table for the same backend set.
//!
//! Owns: the lookup table ([`Maglev`]) and the client key hash ([`key_of`]).
//!
//! Must not: know about health or tiers (a route walks the table and skips ineligible
//! entries), or use a hasher whose output may change between releases.

use std::net::{IpAddr, SocketAddr};

/// Lookup table size: a prime, much larger than any pool (≥ 100× for pools up to 655).
pub const TABLE_SIZE: usize = 65_537;
const EMPTY: u16 = u16::MAX;
const SEED_OFFSET: u64 = 0x6d61_676c_6576_3031; // "maglev01"
const SEED_SKIP: u64 = 0x6d61_676c_6576_3032;
const SEED_KEY: u64 = 0x6d61_676c_6576_3033;

/// A lookup table: position → backend index (into the address list it was built from).
#[derive(Debug)]
pub struct Maglev {
    table: Box<[u16]>,
}

impl Maglev {
    /// Builds the table for `addrs`; `None` for an empty set or one too large for `u16`
    /// indexes (more than 65,534 backends).
    pub fn build(addrs: &[SocketAddr]) -> Option<Maglev> {
        let n = addrs.len();
        if n == 0 || n >= usize::from(EMPTY) {
            return None;
        }
        let m = TABLE_SIZE as u64;
        let perms: Vec<(u64, u64)> = addrs
            .iter()
            .map(|a| {
                let bytes = addr_bytes(a);
                let offset = hash(SEED_OFFSET, &bytes) % m;
                let skip = hash(SEED_SKIP, &bytes) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0u64; n];
        let mut table = vec![EMPTY; TABLE_SIZE].into_boxed_slice();
        let mut filled = 0usize;
        loop {
            for (i, &(offset, skip)) in perms.iter().enumerate() {
                let mut slot = ((offset + next[i] * skip) % m) as usize;
                while table[slot] != EMPTY {
                    next[i] += 1;
                    slot = ((offset + next[i] * skip) % m) as usize;
                }
                table[slot] = i as u16;
                next[i] += 1;
                filled += 1;
                if filled == TABLE_SIZE {
                    return Some(Maglev { table });
                }
            }
        }
    }

    /// The backend index at every position, starting at `key`'s and wrapping once: the
    /// first entry is the key's backend; the rest is the deterministic fallback order.
    pub fn walk(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let start = (key % TABLE_SIZE as u64) as usize;
        (0..TABLE_SIZE).map(move |s| usize::from(self.table[(start + s) % TABLE_SIZE]))
    }

    /// The backend index of `key`.
    pub fn lookup(&self, key: u64) -> usize {
        usize::from(self.table[(key % TABLE_SIZE as u64) as usize])
    }

    /// The raw table (for measurements).
    pub fn entries(&self) -> &[u16] {
        &self.table
    }
}

/// The hash key of a client IP (IPv4-mapped IPv6 hashes as IPv4).
pub fn key_of(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => hash(SEED_KEY, &v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => hash(SEED_KEY, &v4.octets()),
            None => hash(SEED_KEY, &v6.octets()),
        },
    }
}

fn addr_bytes(a: &SocketAddr) -> Vec<u8> {
    let mut v = match a.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    v.extend_from_slice(&a.port().to_be_bytes());
    v
}

/// FNV-1a over `bytes` from a seeded basis, finished with the splitmix64 mixer: stable
/// across platforms, releases and processes (unlike `std`'s `DefaultHasher`).
fn hash(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}
