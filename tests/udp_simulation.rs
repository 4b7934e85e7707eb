//! Seeded simulation of the sans-io UDP flow table against a plain reference model, on a virtual
//! clock: random client datagrams, backend replies (the return-path refresh hook), removals,
//! refused admissions and expiry calls, early or late.
//!
//! Checked after every step: created − expired − removed = live = the model's size; the cap
//! holds; the cap refuses exactly the model's refusals; `expire(now)` closes exactly the flows
//! whose last activity (either direction) is `idle_timeout` or more before `now`, so no flow
//! outlives its idle timeout and none is closed early (stale timers of removed and re-created
//! flows included); `poll_timeout()` is never later than the earliest real deadline; the timer
//! queue stays bounded.
//!
//! 256 seeds × 4,000 steps by default. Replay one seed with `VIPD_SIM_SEED=<n>`; a failing seed
//! is printed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use vipd::dataplane::udp::flows::{Admit, FlowTable};

const SEEDS: u64 = 256;
const STEPS: usize = 4_000;

/// The value the shell would keep per flow: here, the last reply time (return path) and an id.
#[derive(Debug)]
struct Value {
    id: u64,
    last_reply: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct ModelFlow {
    id: u64,
    /// Last datagram in either direction.
    last_activity: Instant,
}

fn client(i: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10_000 + i))
}

fn simulate(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let idle = Duration::from_millis(rng.random_range(1..=2_000));
    let cap = rng.random_range(1..=48usize);
    let pool = rng.random_range(1..=(3 * cap as u16 + 1));
    let mut now = Instant::now();
    let mut table: FlowTable<Value> = FlowTable::new(idle, cap);
    let mut model: HashMap<SocketAddr, ModelFlow> = HashMap::new();
    let (mut next_id, mut refused_by_cap) = (0u64, 0u64);

    for step in 0..STEPS {
        // Time moves by up to half the idle timeout; sometimes not at all.
        if rng.random_bool(0.7) {
            let max = idle.as_micros() as u64 / 2 + 1;
            now += Duration::from_micros(rng.random_range(0..=max));
        }
        let c = client(rng.random_range(0..pool));
        match rng.random_range(0..100) {
            // A client datagram.
            0..=54 => {
                let had = model.contains_key(&c);
                let take = rng.random_bool(0.9); // 10%: no backend, vacancy not taken
                match table.lookup_or_admit(c, now) {
                    Admit::Existing(v) => {
                        assert!(had, "step {step}: table has a flow the model lacks");
                        let m = model.get_mut(&c).unwrap();
                        assert_eq!(v.id, m.id);
                        m.last_activity = m.last_activity.max(now);
                    }
                    Admit::Vacant(slot) => {
                        assert!(!had && model.len() < cap, "step {step}: wrong vacancy");
                        if take {
                            next_id += 1;
                            slot.insert(Value {
                                id: next_id,
                                last_reply: None,
                            });
                            model.insert(
                                c,
                                ModelFlow {
                                    id: next_id,
                                    last_activity: now,
                                },
                            );
                        }
                    }
                    Admit::Full => {
                        assert!(!had && model.len() >= cap, "step {step}: wrong refusal");
                        refused_by_cap += 1;
                    }
                }
            }
            // A backend reply on the return path (seen by the table only through the hook).
            55..=74 => {
                if let Some(v) = table.get_mut(&c) {
                    v.last_reply = Some(now);
                    let m = model.get_mut(&c).unwrap();
                    m.last_activity = m.last_activity.max(now);
                }
            }
            // The shell closes a flow (e.g. its frontend goes).
            75..=79 => {
                let removed = table.remove(&c).map(|v| v.id);
                assert_eq!(removed, model.remove(&c).map(|m| m.id), "step {step}");
            }
            // Expiry: at the due time (as the shell does) or whenever.
            _ => {
                if rng.random_bool(0.5) {
                    if let Some(due) = table.poll_timeout() {
                        now = now.max(due);
                    }
                }
                let mut expired: Vec<(SocketAddr, u64)> = table
                    .expire_with(now, |v| v.last_reply)
                    .into_iter()
                    .map(|(c, v)| (c, v.id))
                    .collect();
                expired.sort();
                let mut due: Vec<(SocketAddr, u64)> = model
                    .iter()
                    .filter(|(_, m)| m.last_activity + idle <= now)
                    .map(|(c, m)| (*c, m.id))
                    .collect();
                due.sort();
                assert_eq!(expired, due, "step {step}: expired exactly the idle flows");
                for (c, _) in &due {
                    model.remove(c);
                }
                for m in model.values() {
                    assert!(m.last_activity + idle > now, "step {step}: outlived idle");
                }
            }
        }

        let counts = table.counts();
        assert_eq!(
            counts.created - counts.expired - counts.removed,
            counts.live,
            "step {step}: {counts:?}"
        );
        assert_eq!(counts.live as usize, table.len(), "step {step}");
        assert_eq!(table.len(), model.len(), "step {step}");
        assert!(table.len() <= cap, "step {step}: cap");
        assert_eq!(counts.dropped_by_cap, refused_by_cap, "step {step}");
        if let Some(earliest) = model.values().map(|m| m.last_activity + idle).min() {
            let poll = table.poll_timeout().expect("flows but no timer");
            assert!(
                poll <= earliest,
                "step {step}: the shell would sleep past a due flow"
            );
        }
        assert!(
            table.timer_len() <= 2 * cap + 65,
            "step {step}: timer queue {} for cap {cap}",
            table.timer_len()
        );
    }
}

fn run_seed(seed: u64) {
    let outcome = std::panic::catch_unwind(|| simulate(seed));
    if let Err(panic) = outcome {
        eprintln!("udp flow simulation failed for seed {seed}; replay with VIPD_SIM_SEED={seed}");
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn flow_table_matches_the_model_over_random_workloads() {
    if let Ok(seed) = std::env::var("VIPD_SIM_SEED") {
        let seed: u64 = seed.parse().expect("VIPD_SIM_SEED must be a u64");
        run_seed(seed);
        return;
    }
    for seed in 0..SEEDS {
        run_seed(seed);
    }
}
