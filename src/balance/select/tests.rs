//! Unit tests of selection: tiers, health refinement, max-ejection budget, and the distribution
//! of every algorithm (the Maglev remap measurements are printed; `--nocapture` shows them).

use super::*;
use crate::balance::backend::{BackendKey, ConnectFailure};
use crate::health::OutlierConfig;
use crate::table::{FrontendKind, PortOptions, Protocol};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use BackendState::*;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from((
        [127, 0, (i / 250) as u8, (i % 250) as u8 + 1],
        1000 + i as u16,
    ))
}

fn backends(states: &[BackendState]) -> Vec<Backend> {
    states
        .iter()
        .enumerate()
        .map(|(i, s)| Backend {
            address: addr(i),
            task: format!("t{i}").into(),
            state: *s,
        })
        .collect()
}

fn picks(sel: &RoundRobin, b: &[Backend], n: usize) -> Vec<usize> {
    (0..n)
        .map(|_| sel.select(&Candidates::new(b, &[])).unwrap())
        .collect()
}

// === RoundRobin (table states only) ===

#[test]
fn round_robin_cycles_evenly() {
    let b = backends(&[Up, Up, Up]);
    let rr = RoundRobin::new();
    assert_eq!(picks(&rr, &b, 6), vec![0, 1, 2, 0, 1, 2]);
}

#[test]
fn up_beats_unknown_beats_unhealthy_and_draining_is_never_picked() {
    let rr = RoundRobin::new();
    let b = backends(&[Unhealthy, Up, Unknown, Draining, Up]);
    assert_eq!(picks(&rr, &b, 4), vec![1, 4, 1, 4]);
    let b = backends(&[Unhealthy, Unknown, Draining, Unknown]);
    assert_eq!(picks(&rr, &b, 4), vec![1, 3, 1, 3]);
    let b = backends(&[Unhealthy, Draining, Unhealthy]);
    assert_eq!(picks(&rr, &b, 4), vec![0, 2, 0, 2], "fail open");
    let b = backends(&[Draining, Draining]);
    assert_eq!(rr.select(&Candidates::new(&b, &[])), None);
    assert_eq!(rr.select(&Candidates::new(&[], &[])), None);
}

#[test]
fn retries_skip_tried_and_fall_through_tiers() {
    let rr = RoundRobin::new();
    let b = backends(&[Up, Unknown, Up, Unhealthy, Draining]);
    let mut tried = Vec::new();
    while let Some(i) = rr.select(&Candidates::new(&b, &tried)) {
        tried.push(i);
    }
    tried[..2].sort();
    assert_eq!(tried, vec![0, 2, 1, 3]);
}

#[test]
fn counter_lives_in_the_selector_across_tables() {
    let rr = RoundRobin::new();
    let t1 = backends(&[Up, Up, Up]);
    let t2 = t1.clone();
    assert_eq!(picks(&rr, &t1, 2), vec![0, 1]);
    assert_eq!(picks(&rr, &t2, 2), vec![2, 0]);
}

// === Route ===

fn frontend(b: Vec<Backend>, options: &[(&str, &str)]) -> Frontend {
    Frontend {
        protocol: Protocol::Tcp,
        listen: SocketAddr::from(([127, 0, 0, 1], 80)),
        kind: FrontendKind::ServicePort,
        vip_name: None,
        app: "/app".into(),
        owner_kind: crate::table::OwnerKind::App,
        apps: vec!["/app".into()],
        port_index: 0,
        port_name: None,
        options: PortOptions::from_pairs(options.iter().copied()).unwrap(),
        backends: b.into(),
    }
}

fn cfg() -> HealthConfig {
    HealthConfig {
        outlier: OutlierConfig {
            eject_after: 3,
            base: Duration::from_secs(10),
            max: Duration::from_secs(60),
        },
        ..HealthConfig::default()
    }
}

struct Fixture {
    registry: Arc<BackendRegistry>,
    frontend: Frontend,
    sel: Route,
    t0: Instant,
}

impl Fixture {
    fn new(states: &[BackendState], options: &[(&str, &str)], cfg: HealthConfig) -> Fixture {
        let registry = Arc::new(BackendRegistry::with_outlier(cfg.outlier));
        let frontend = frontend(backends(states), options);
        let sel = Route::for_frontend(&frontend, &registry, &cfg);
        Fixture {
            registry,
            frontend,
            sel,
            t0: Instant::now(),
        }
    }

    fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    fn pick_at(&self, tried: &[usize], secs: u64) -> Option<usize> {
        self.sel.select_at(
            &Candidates::new(&self.frontend.backends, tried),
            self.at(secs),
        )
    }

    fn picks_at(&self, n: usize, secs: u64) -> Vec<usize> {
        (0..n).map(|_| self.pick_at(&[], secs).unwrap()).collect()
    }

    fn stats(&self, i: usize) -> Arc<BackendStats> {
        self.registry.entry(BackendKey::tcp(addr(i)))
    }

    /// `eject_after` refused connects on backend `i` at `secs`.
    fn eject(&self, i: usize, secs: u64) {
        for _ in 0..3 {
            self.stats(i)
                .record_failure_at(ConnectFailure::Refused, self.at(secs));
        }
    }
}

#[test]
fn health_aware_round_robin_keeps_the_table_tiers() {
    let f = Fixture::new(&[Unhealthy, Up, Unknown, Draining, Up], &[], cfg());
    assert_eq!(f.picks_at(4, 0), vec![1, 4, 1, 4]);
    let f = Fixture::new(&[Unhealthy, Draining, Unhealthy], &[], cfg());
    assert_eq!(f.picks_at(4, 0), vec![0, 2, 0, 2], "fail open");
    let f = Fixture::new(&[Draining], &[], cfg());
    assert_eq!(f.pick_at(&[], 0), None, "draining is never picked");
}

#[test]
fn fail_open_off_refuses_instead_of_using_unhealthy_or_demoted_backends() {
    let off = HealthConfig {
        fail_open: false,
        ..cfg()
    };
    let f = Fixture::new(&[Unhealthy, Unhealthy], &[], off);
    assert_eq!(f.pick_at(&[], 0), None);
    let f = Fixture::new(&[Unhealthy, Unknown], &[], off);
    assert_eq!(f.picks_at(2, 0), vec![1, 1], "unknown is still a tier");
    let f = Fixture::new(&[Up, Up], &[], off);
    f.eject(0, 0);
    assert_eq!(
        f.pick_at(&[1], 1),
        None,
        "an ejected backend is not a fallback"
    );
}

#[test]
fn an_ejected_backend_gets_nothing_until_its_ejection_expires_then_half_open() {
    let f = Fixture::new(&[Up, Up, Up, Up], &[], cfg());
    f.eject(1, 0);
    assert!(f.stats(1).snapshot().ejections == 1);
    let during = f.picks_at(30, 5);
    assert!(!during.contains(&1), "{during:?}");
    // Expired at t = 10 s: eligible again.
    let after = f.picks_at(8, 10);
    assert!(after.contains(&1), "{after:?}");
    // Half-open: the next failure re-ejects at once, for twice as long.
    f.stats(1)
        .record_failure_at(ConnectFailure::Timeout, f.at(10));
    assert!(!f.picks_at(30, 29).contains(&1));
    assert!(f.picks_at(8, 30).contains(&1));
    // A success in half-open clears it for good.
    f.stats(1).record_connected_at(f.at(30));
    let s = f.stats(1).snapshot();
    assert_eq!((s.ejections, s.consecutive_failures), (2, 0));
    assert_eq!(
        s.health_reason,
        Some(crate::health::HealthReason::ConnectTimeout)
    );
    assert!(f.picks_at(8, 1000).contains(&1));
}

#[test]
fn an_ejected_backend_is_still_used_when_nothing_else_is_left() {
    let f = Fixture::new(&[Up, Up, Up, Up], &[], cfg());
    f.eject(0, 0);
    assert_eq!(f.pick_at(&[1, 2, 3], 1), Some(0), "fail-open tier");
    // A Marathon-unknown backend beats an ejected up one.
    let f = Fixture::new(&[Up, Up, Unknown, Up], &[], cfg());
    f.eject(0, 0);
    assert_eq!(f.pick_at(&[1, 3], 1), Some(2));
}

#[test]
fn max_ejection_percent_honors_only_the_earliest_ejections() {
    let f = Fixture::new(&[Up, Up, Up, Up], &[], cfg());
    f.eject(2, 0);
    f.eject(0, 1);
    f.eject(3, 2); // the third of four: over 50 %
    for s in [0, 1, 2, 3] {
        assert!(f.stats(s).snapshot().ejections <= 1);
    }
    let p = f.picks_at(12, 3);
    assert!(
        !p.contains(&2) && !p.contains(&0),
        "earliest two honored: {p:?}"
    );
    assert!(p.contains(&3) && p.contains(&1), "{p:?}");
    // Once the first expires (t = 10), the later one is within budget and honored.
    f.stats(2).record_connected_at(f.at(10));
    let p = f.picks_at(12, 10);
    assert!(!p.contains(&0) && !p.contains(&3), "{p:?}");

    // 0 % disables ejection effects; 100 % allows every backend out (then fail open).
    let none = Fixture::new(
        &[Up, Up],
        &[],
        HealthConfig {
            max_ejection_percent: 0,
            ..cfg()
        },
    );
    none.eject(0, 0);
    assert!(none.picks_at(4, 1).contains(&0));
    // A pool of one at 50 %: never ejected (the pool would be empty).
    let one = Fixture::new(&[Up], &[], cfg());
    one.eject(0, 0);
    assert_eq!(one.pick_at(&[], 1), Some(0));
}

#[test]
fn draining_backends_do_not_count_in_the_pool_size_for_the_budget() {
    // 2 live + 2 draining: 50 % of the live pool is 1.
    let f = Fixture::new(&[Up, Up, Draining, Draining], &[], cfg());
    f.eject(0, 0);
    assert_eq!(f.picks_at(3, 1), vec![1, 1, 1]);
    f.eject(1, 1);
    let p = f.picks_at(4, 2);
    assert!(p.contains(&1) && !p.contains(&0), "{p:?}");
}

#[test]
fn active_checks_gate_backends_until_their_probe_is_up() {
    let checked = [("active_health_check", "tcp")];
    let f = Fixture::new(&[Up, Up, Up], &checked, cfg());
    assert!(f.sel.settings().checked);
    // Nothing probed yet: all pending → fail-open tier, still served.
    assert_eq!(f.picks_at(3, 0), vec![0, 1, 2]);
    f.stats(1).set_active_health(ActiveState::Up, None);
    assert_eq!(f.picks_at(3, 0), vec![1, 1, 1], "only the probed-up one");
    f.stats(2).set_active_health(ActiveState::Pending, None);
    f.stats(0).set_active_health(ActiveState::Down, None);
    assert_eq!(f.picks_at(2, 0), vec![1, 1]);
    // On a frontend without active checks, only a down verdict (from another frontend's probe
    // of the same address) demotes.
    let g = Route::for_frontend(&frontend(backends(&[Up, Up, Up]), &[]), &f.registry, &cfg());
    assert!(!g.settings().checked);
    let b = backends(&[Up, Up, Up]);
    let p: Vec<_> = (0..4)
        .map(|_| g.select(&Candidates::new(&b, &[])).unwrap())
        .collect();
    assert!(p.contains(&2) && p.contains(&1) && !p.contains(&0), "{p:?}");
}

#[test]
fn least_conn_picks_the_least_loaded_and_rotates_ties() {
    let f = Fixture::new(&[Up, Up, Up], &[("balance", "least-conn")], cfg());
    let _g0: Vec<_> = (0..3)
        .map(|_| f.registry.begin_connect(BackendKey::tcp(addr(0))))
        .collect();
    let _g1 = f.registry.begin_connect(BackendKey::tcp(addr(1)));
    assert_eq!(f.picks_at(3, 0), vec![2, 2, 2]);
    let _g2 = f.registry.begin_connect(BackendKey::tcp(addr(2)));
    // 1 and 2 tie at one connection: rotate between them.
    let p = f.picks_at(4, 0);
    assert!(p.iter().all(|&i| i == 1 || i == 2), "{p:?}");
    assert!(p.contains(&1) && p.contains(&2), "{p:?}");
    // Holding each pick: the load stays level.
    let f = Fixture::new(&[Up; 5], &[("balance", "least-conn")], cfg());
    let mut held = Vec::new();
    for _ in 0..50 {
        let i = f.pick_at(&[], 0).unwrap();
        held.push(f.registry.begin_connect(BackendKey::tcp(addr(i))));
    }
    for i in 0..5 {
        assert_eq!(f.stats(i).active(), 10);
    }
}

#[test]
fn p2c_never_picks_the_most_loaded_and_keeps_load_level() {
    let f = Fixture::new(&[Up; 4], &[("balance", "p2c")], cfg());
    let _heavy: Vec<_> = (0..100)
        .map(|_| f.registry.begin_connect(BackendKey::tcp(addr(3))))
        .collect();
    let mut counts = [0usize; 4];
    for _ in 0..2000 {
        counts[f.pick_at(&[], 0).unwrap()] += 1;
    }
    assert_eq!(counts[3], 0, "{counts:?}");
    // Sequential picks that each hold a connection: max - min stays small (random picking
    // would spread by tens over 2,000 picks on 10 backends).
    let f = Fixture::new(&[Up; 10], &[("balance", "p2c")], cfg());
    let mut held = Vec::new();
    for _ in 0..2000 {
        let i = f.pick_at(&[], 0).unwrap();
        held.push(f.registry.begin_connect(BackendKey::tcp(addr(i))));
    }
    let loads: Vec<u64> = (0..10).map(|i| f.stats(i).active()).collect();
    let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
    assert!(max - min <= 6, "{loads:?}");
    // One candidate left: it is the pick.
    assert_eq!(f.pick_at(&(0..9).collect::<Vec<_>>(), 0), Some(9));
}

fn client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i * 7919))
}

#[test]
fn maglev_sends_one_client_to_one_backend_across_selectors_and_spreads_evenly() {
    let f = Fixture::new(&[Up; 10], &[("balance", "maglev")], cfg());
    let other = Fixture::new(&[Up; 10], &[("balance", "maglev")], cfg());
    let mut counts = [0usize; 10];
    for c in 0..20_000 {
        let cand = Candidates::with_client(&f.frontend.backends, &[], client(c));
        let a = f.sel.select(&cand).unwrap();
        assert_eq!(f.sel.select(&cand), Some(a));
        assert_eq!(
            other.sel.select(&cand),
            Some(a),
            "same table on every agent"
        );
        counts[a] += 1;
    }
    for c in counts {
        assert!((1_400..=2_600).contains(&c), "{counts:?}");
    }
}

#[test]
fn maglev_falls_back_deterministically_and_returns_when_the_backend_is_back() {
    let f = Fixture::new(&[Up; 5], &[("balance", "maglev")], cfg());
    let ip = client(42);
    let pick = |tried: &[usize], secs| {
        f.sel.select_at(
            &Candidates::with_client(&f.frontend.backends, tried, ip),
            f.at(secs),
        )
    };
    let home = pick(&[], 0).unwrap();
    let retry = pick(&[home], 0).unwrap();
    assert_ne!(retry, home);
    assert_eq!(pick(&[home], 0), Some(retry), "same fallback every time");
    f.eject(home, 0);
    assert_eq!(
        pick(&[], 1),
        Some(retry),
        "ejected: the next entry, deterministically"
    );
    assert_eq!(pick(&[], 1), Some(retry));
    assert_eq!(pick(&[], 10), Some(home), "back after the ejection");
    // No client (e.g. a caller using `Candidates::new`): round-robin.
    let p: Vec<_> = (0..5)
        .map(|_| {
            f.sel
                .select_at(&Candidates::new(&f.frontend.backends, &[]), f.at(10))
                .unwrap()
        })
        .collect();
    let mut sorted = p.clone();
    sorted.sort();
    assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
}

/// Share of lookup-table positions whose backend (by address) differs between two sets.
fn moved(before: &[SocketAddr], after: &[SocketAddr]) -> f64 {
    let a = maglev::Maglev::build(before).unwrap();
    let b = maglev::Maglev::build(after).unwrap();
    let changed = a
        .entries()
        .iter()
        .zip(b.entries())
        .filter(|(x, y)| before[usize::from(**x)] != after[usize::from(**y)])
        .count();
    changed as f64 / maglev::TABLE_SIZE as f64
}

#[test]
fn maglev_remaps_close_to_the_minimum_on_add_and_remove() {
    for n in [10usize, 100] {
        let base: Vec<SocketAddr> = (0..n).map(addr).collect();
        let mut added = base.clone();
        added.push(addr(n));
        added.sort();
        let mut removed = base.clone();
        removed.remove(n / 2);
        let add = moved(&base, &added);
        let rem = moved(&base, &removed);
        println!(
            "maglev N={n}: add one → {:.2} % moved (minimum {:.2} %), remove one → {:.2} % moved \
             (minimum {:.2} %)",
            add * 100.0,
            100.0 / (n + 1) as f64,
            rem * 100.0,
            100.0 / n as f64
        );
        let slack = 0.02;
        assert!(
            add >= 1.0 / (n + 1) as f64 - 0.005 && add <= 1.0 / n as f64 + slack,
            "{add}"
        );
        assert!(
            rem >= 1.0 / n as f64 - 0.005 && rem <= 1.0 / n as f64 + slack,
            "{rem}"
        );
    }
}

#[test]
fn maglev_entries_are_balanced_and_stable() {
    let addrs: Vec<SocketAddr> = (0..7).map(addr).collect();
    let m = maglev::Maglev::build(&addrs).unwrap();
    let mut counts: HashMap<u16, usize> = HashMap::new();
    for e in m.entries() {
        *counts.entry(*e).or_default() += 1;
    }
    let mean = maglev::TABLE_SIZE / 7;
    for c in counts.values() {
        assert!(c.abs_diff(mean) <= mean / 100 + 1, "{counts:?}");
    }
    assert!(maglev::Maglev::build(&[]).is_none());
    // Fixed seeds: the same key maps to the same backend in every build.
    let again = maglev::Maglev::build(&addrs).unwrap();
    assert_eq!(m.entries(), again.entries());
    assert_eq!(
        maglev::key_of("10.1.2.3".parse().unwrap()),
        maglev::key_of("::ffff:10.1.2.3".parse().unwrap())
    );
}

/// The next route of the same frontend, as the router builds it for a new table.
fn next_route(
    previous: &Route,
    frontend: &Frontend,
    registry: &BackendRegistry,
    cfg: &HealthConfig,
) -> Route {
    let settings = SelectorSettings::resolve(frontend, cfg);
    Route::new(frontend, settings, registry, Some(previous))
}

#[test]
fn options_follow_the_table_without_losing_the_rotation() {
    let cfg = cfg();
    let f = Fixture::new(&[Up, Up, Up], &[], cfg);
    assert_eq!(f.picks_at(2, 0), vec![0, 1]);
    let lc = frontend(backends(&[Up, Up, Up]), &[("balance", "least-conn")]);
    let lc_route = next_route(&f.sel, &lc, &f.registry, &cfg);
    assert_eq!(lc_route.settings().balance, Balance::LeastConn);
    let back = frontend(backends(&[Up, Up, Up]), &[("balance", "round-robin")]);
    let back_route = next_route(&lc_route, &back, &f.registry, &cfg);
    // New routes never touch the counter; only picks advance it.
    let p = back_route.select(&Candidates::new(&back.backends, &[]));
    assert_eq!(p, Some(2), "the counter survived");
    // Unset (the builder drops unknown values with a warning: table::build tests) uses the
    // global default.
    let bad = frontend(backends(&[Up, Up, Up]), &[]);
    let bad_route = next_route(
        &back_route,
        &bad,
        &f.registry,
        &HealthConfig {
            balance: Balance::P2c,
            ..cfg
        },
    );
    assert_eq!(bad_route.settings().balance, Balance::P2c);
    // A bad probe label never reaches the table (table::build warns and leaves it unset).
    let unset_probe = frontend(backends(&[Up]), &[]);
    let s = SelectorSettings::resolve(&unset_probe, &cfg);
    assert!(!s.checked);
}

#[test]
fn a_new_backend_set_is_picked_up_by_the_next_route() {
    let f = Fixture::new(&[Up, Up], &[], cfg());
    let wider = frontend(backends(&[Up, Up, Up]), &[]);
    let route = next_route(&f.sel, &wider, &f.registry, &cfg());
    let p: Vec<_> = (0..3)
        .map(|_| {
            route
                .select(&Candidates::new(&wider.backends, &[]))
                .unwrap()
        })
        .collect();
    assert!(p.contains(&2), "{p:?}");
    // A backend list that is not the route's picks nothing (never a wrong index).
    assert_eq!(f.sel.select(&Candidates::new(&wider.backends, &[])), None);
}

#[test]
fn a_flow_keeps_its_backend_by_the_same_rule_as_a_pick() {
    let keeps = |f: &Fixture, i: usize, secs: u64| {
        f.sel
            .keeps(&Candidates::new(&f.frontend.backends, &[]), i, f.at(secs))
    };
    // Up and unknown are kept (no move on a health gain); draining never.
    let f = Fixture::new(&[Unknown, Up, Draining], &[], cfg());
    assert!(keeps(&f, 0, 0) && keeps(&f, 1, 0));
    assert!(!keeps(&f, 2, 0));
    // The fail-open tier only while nothing better is left.
    let f = Fixture::new(&[Unhealthy, Up], &[], cfg());
    assert!(!keeps(&f, 0, 0));
    let f = Fixture::new(&[Unhealthy, Unhealthy], &[], cfg());
    assert!(keeps(&f, 0, 0));
    // An ejected backend is left for an up one, kept when every backend is ejected.
    let f = Fixture::new(&[Up, Up], &[], cfg());
    f.eject(0, 0);
    assert!(!keeps(&f, 0, 1) && keeps(&f, 1, 1));
    // --fail-open=false: refused exactly as a new pick is.
    let off = HealthConfig {
        fail_open: false,
        ..cfg()
    };
    let f = Fixture::new(&[Unhealthy, Unhealthy], &[], off);
    assert_eq!(f.pick_at(&[], 0), None);
    assert!(!keeps(&f, 0, 0) && !keeps(&f, 1, 0));
}
