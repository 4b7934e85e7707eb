//! Shared checks of the fuzz targets (`fuzz_targets/*.rs`).
//!
//! Owns: the properties every build-shaped target asserts (two builds are equal, the incremental
//! `BuildCache` agrees with `build`) and the deterministic "DNS" the targets resolve agent
//! hostnames with.
//!
//! Must not: do I/O, read the clock or keep state between inputs: a crash must reproduce from
//! its input file alone.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use vipd::model::AppsSnapshot;
use vipd::table::build::hosts_to_resolve;
use vipd::table::{build, BuildCache, BuildOptions, Built, Resolved};

/// Answers for every agent hostname of `snapshot` that needs DNS, chosen from the name alone:
/// about one name in four does not resolve (the builder must skip those backends with a warning).
pub fn resolve(snapshot: &AppsSnapshot) -> Resolved {
    let mut hosts = HashMap::new();
    for host in hosts_to_resolve(snapshot) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        host.hash(&mut h);
        let v = h.finish();
        let ip = (v % 4 != 0).then(|| IpAddr::V4(Ipv4Addr::from((v >> 8) as u32 | 0x0a00_0000))); // 10.x.y.z
        hosts.insert(host.to_string(), ip);
    }
    Resolved { hosts }
}

/// Builds `snapshot` and asserts the properties of `table::build`:
/// - two builds of the same input are equal, as values and as JSON bytes;
/// - `BuildCache::build` (fresh, then again with every part cached) equals `build`;
/// - frontends are sorted and unique by key, and every frontend's backends are sorted.
///
/// Returns the build, for target-specific checks.
pub fn check_build(snapshot: &AppsSnapshot, resolved: &Resolved, opts: &BuildOptions) -> Built {
    let first = build(snapshot, resolved, opts);
    let second = build(snapshot, resolved, opts);
    assert_eq!(first, second, "two builds of one input differ");
    let json1 = serde_json::to_vec(&first).expect("a table serializes");
    let json2 = serde_json::to_vec(&second).expect("a table serializes");
    assert_eq!(json1, json2, "two builds of one input differ as JSON");

    let mut cache = BuildCache::new();
    let cold = cache.build(snapshot, resolved, opts);
    assert_eq!(cold, first, "BuildCache::build (cold) differs from build");
    let warm = cache.build(snapshot, resolved, opts);
    assert_eq!(warm, first, "BuildCache::build (warm) differs from build");

    for pair in first.frontends.windows(2) {
        assert!(
            pair[0].key() < pair[1].key(),
            "frontends not sorted and unique by key: {} then {}",
            pair[0].key(),
            pair[1].key()
        );
    }
    for f in &first.frontends {
        assert!(
            f.backends.windows(2).all(|b| b[0].address <= b[1].address),
            "backends of {} not sorted by address",
            f.key()
        );
    }
    first
}

/// [`check_build`] after an edit: `cache` has built `before`, and building `after` with it must
/// give what a fresh `build` gives (the incremental path the Marathon source takes per event).
pub fn check_incremental(
    cache: &mut BuildCache,
    after: &AppsSnapshot,
    resolved: &Resolved,
    opts: &BuildOptions,
) {
    let fresh = check_build(after, resolved, opts);
    let incremental = cache.build(after, resolved, opts);
    assert_eq!(
        incremental, fresh,
        "BuildCache::build after an edit differs from build"
    );
}

/// The same snapshot with its apps and pods in reverse document order.
pub fn reversed(snapshot: &AppsSnapshot) -> AppsSnapshot {
    let mut r = snapshot.clone();
    r.apps.reverse();
    r.pods.reverse();
    r
}

/// Whether every app id and every pod id is unique (the build's output then does not depend on
/// document order).
pub fn ids_unique(snapshot: &AppsSnapshot) -> bool {
    let mut apps: Vec<&str> = snapshot.apps.iter().map(|a| a.id.as_str()).collect();
    let mut pods: Vec<&str> = snapshot.pods.iter().map(|p| p.id.as_str()).collect();
    let (na, np) = (apps.len(), pods.len());
    apps.sort_unstable();
    apps.dedup();
    pods.sort_unstable();
    pods.dedup();
    apps.len() == na && pods.len() == np
}

/// A snapshot that owns nothing but `snapshot`'s apps and pods (shared `Arc`s).
pub fn share(snapshot: &AppsSnapshot) -> Arc<AppsSnapshot> {
    Arc::new(snapshot.clone())
}
