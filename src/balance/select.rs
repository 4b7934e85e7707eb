//! Backend selection for one new connection (or one retry of it), and whether a UDP flow keeps
//! its backend.
//!
//! Owns: the health tiers ([`Tier`], [`tier`]: the one eligibility rule), the [`Candidates`]
//! view a pick chooses from, the [`Select`] trait, the resolved per-frontend policy
//! ([`SelectorSettings`]), the health-aware per-frontend [`Route`] (round-robin, least-conn,
//! p2c, Maglev; [`Route::keeps`] for UDP flows) and the plain [`RoundRobin`] (table states only).
//!
//! Tiers, in order: the `up` backends; if none is left, the `unknown` ones; if none of those, any
//! backend that is not `draining` (fail open: an `unhealthy` backend beats a certain failure;
//! `--fail-open=false` removes this tier). "Left" means not yet tried by this connection, so a
//! retry falls through to the next tier once every backend of the better tier has failed.
//! `draining` backends are never picked. A [`Route`] refines the table's state with vipd's own
//! observations: a passively ejected backend (within the frontend's max-ejection-percent budget)
//! and, on an actively checked frontend, a backend whose probe is not `up` (pending or down) drop
//! to the fail-open tier. A UDP flow keeps its backend while the backend is in a tier a pick
//! could still choose from ([`Route::keeps`]): the same rule, so `--fail-open=false` refuses
//! existing flows exactly as it refuses new connections.
//!
//! A [`Route`] is immutable and lives in the published snapshot beside the table it was built
//! for ([`super::route`]): its settings, its backends' runtime entries (by `Arc`, index-aligned
//! with the frontend's backends) and its Maglev table. Only its round-robin cursor (an atomic,
//! carried over to the next route of the same frontend) and the backends' entries change.
//!
//! Must not: do I/O, allocate or lock on the common path of a pick, or keep per-connection
//! state. The clock is read at most once per pick, and only while some backend of the frontend
//! has an ejection recorded.

use super::backend::{millis, ActiveBackend, BackendKey, BackendRegistry, BackendStats};
use super::maglev;
use super::policy::{self, Balance, HealthConfig};
use crate::health::ActiveState;
use crate::table::{Backend, BackendState, Frontend, FrontendKey};
use rand::Rng;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// Eligibility classes, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Up,
    Unknown,
    /// Anything but `draining`.
    FailOpen,
}

impl Tier {
    pub const ORDER: [Tier; 3] = [Tier::Up, Tier::Unknown, Tier::FailOpen];

    pub(crate) fn index(self) -> usize {
        match self {
            Tier::Up => 0,
            Tier::Unknown => 1,
            Tier::FailOpen => 2,
        }
    }
}

/// The one eligibility rule: the tier of a backend in `state`, `demoted` by vipd's own health
/// observations (ejected, or its probe not `up` where that matters), under `fail_open`. `None`:
/// never picked (`draining`, or the fail-open tier with `--fail-open=false`).
pub fn tier(state: BackendState, demoted: bool, fail_open: bool) -> Option<Tier> {
    let tier = match state {
        BackendState::Draining => return None,
        _ if demoted => Tier::FailOpen,
        BackendState::Up => Tier::Up,
        BackendState::Unknown => Tier::Unknown,
        BackendState::Unhealthy => Tier::FailOpen,
    };
    (tier != Tier::FailOpen || fail_open).then_some(tier)
}

/// What a selector chooses from: a frontend's backends (from one table snapshot) minus the ones
/// this connection already tried, and the client (for consistent hashing).
#[derive(Debug, Clone, Copy)]
pub struct Candidates<'a> {
    pub backends: &'a [Backend],
    /// Indexes into `backends` already tried by this connection.
    pub tried: &'a [usize],
    /// The client's IP: the Maglev key. Without it Maglev falls back to round-robin.
    pub client: Option<IpAddr>,
}

impl<'a> Candidates<'a> {
    pub fn new(backends: &'a [Backend], tried: &'a [usize]) -> Self {
        Candidates {
            backends,
            tried,
            client: None,
        }
    }

    /// Candidates of a connection from `client` (Maglev hashes its IP).
    pub fn with_client(backends: &'a [Backend], tried: &'a [usize], client: IpAddr) -> Self {
        Candidates {
            backends,
            tried,
            client: Some(client),
        }
    }

    fn untried(&self, i: usize) -> bool {
        !self.tried.contains(&i)
    }

    /// The best tier with at least one untried backend, and how many backends it has left
    /// (table states only, failing open: [`tier`] with nothing demoted).
    pub fn tier(&self) -> Option<(Tier, usize)> {
        Tier::ORDER.into_iter().find_map(|tier| {
            let n = self.in_tier(tier).count();
            (n > 0).then_some((tier, n))
        })
    }

    /// Indexes of the untried backends of `tier`, in table order (table states only).
    pub fn in_tier(&self, t: Tier) -> impl Iterator<Item = usize> + '_ {
        self.backends
            .iter()
            .enumerate()
            .filter(move |(i, b)| tier(b.state, false, true) == Some(t) && self.untried(*i))
            .map(|(i, _)| i)
    }
}

/// A load-balancing algorithm. Implementations keep their state in atomics: one instance serves
/// every connection of a frontend concurrently.
pub trait Select: Send + Sync + fmt::Debug {
    /// The index (into `candidates.backends`) to try next, or `None` if nothing is eligible.
    fn select(&self, candidates: &Candidates<'_>) -> Option<usize>;
}

/// Round-robin within the best non-empty tier of the table states: one shared counter, one step
/// per pick. Knows nothing of vipd's own health observations (see [`Route`]).
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Select for RoundRobin {
    fn select(&self, candidates: &Candidates<'_>) -> Option<usize> {
        let (tier, n) = candidates.tier()?;
        let k = self.next.fetch_add(1, Relaxed) % n;
        candidates.in_tier(tier).nth(k)
    }
}

// === Route ===

/// What a frontend's options and the global flags resolve to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectorSettings {
    pub balance: Balance,
    /// Active checks cover this frontend: only backends whose probe is `up` stay in their tier.
    pub checked: bool,
    pub fail_open: bool,
    /// 0-100.
    pub max_ejection_percent: u8,
}

impl SelectorSettings {
    /// Resolves `frontend`'s options against `cfg`. The builder has validated the options (a bad
    /// value is a build warning and leaves the option unset); an unset option takes the flag.
    pub fn resolve(frontend: &Frontend, cfg: &HealthConfig) -> SelectorSettings {
        SelectorSettings {
            balance: frontend.options.balance().unwrap_or(cfg.balance),
            checked: policy::probe_for_frontend(frontend, &cfg.active).is_some(),
            fail_open: cfg.fail_open,
            max_ejection_percent: cfg.max_ejection_percent.min(100),
        }
    }
}

/// The selection structures of one frontend for one published table: immutable, shared by every
/// connection that loaded that snapshot. Built by [`super::route::Router`].
pub struct Route {
    key: FrontendKey,
    settings: SelectorSettings,
    /// The frontend's backend addresses, in table order (to reuse a route whose set is unchanged).
    addrs: Box<[SocketAddr]>,
    /// The runtime entry of each backend, index-aligned with `addrs`.
    stats: Box<[Arc<BackendStats>]>,
    /// Built for Maglev frontends; shared with the next route while the backend set is unchanged.
    maglev: Option<Arc<maglev::Maglev>>,
    /// Round-robin position (also the tie-break rotation of least-conn): carried over from the
    /// frontend's previous route, so it survives swaps.
    next: Arc<AtomicUsize>,
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("key", &self.key)
            .field("settings", &self.settings)
            .field("backends", &self.addrs.len())
            .finish()
    }
}

impl Route {
    /// The route of `frontend` under `settings`, taking its backends' entries from `registry`
    /// and, from `previous` (the same frontend's last route), the cursor and, when the backend
    /// set is unchanged, the Maglev table.
    pub fn new(
        frontend: &Frontend,
        settings: SelectorSettings,
        registry: &BackendRegistry,
        previous: Option<&Route>,
    ) -> Route {
        let addrs: Box<[SocketAddr]> = frontend.backends.iter().map(|b| b.address).collect();
        let same_set = previous.is_some_and(|p| p.addrs == addrs);
        let maglev = match settings.balance {
            Balance::Maglev => match previous.and_then(|p| p.maglev.clone()) {
                Some(table) if same_set => Some(table),
                _ => maglev::Maglev::build(&addrs).map(Arc::new),
            },
            _ => None,
        };
        let stats = match previous {
            Some(p) if same_set => p.stats.clone(),
            _ => addrs
                .iter()
                .map(|a| registry.entry(BackendKey::new(frontend.protocol, *a)))
                .collect(),
        };
        Route {
            key: frontend.key(),
            settings,
            addrs,
            stats,
            maglev,
            next: previous.map_or_else(Arc::default, |p| p.next.clone()),
        }
    }

    /// A route of `frontend` under `cfg`, on its own (tests, benches).
    pub fn for_frontend(
        frontend: &Frontend,
        registry: &BackendRegistry,
        cfg: &HealthConfig,
    ) -> Self {
        Route::new(
            frontend,
            SelectorSettings::resolve(frontend, cfg),
            registry,
            None,
        )
    }

    pub fn key(&self) -> FrontendKey {
        self.key
    }

    pub fn settings(&self) -> SelectorSettings {
        self.settings
    }

    /// Whether this route can serve `frontend` as is (same settings, same backend addresses).
    pub(crate) fn matches(&self, frontend: &Frontend, settings: &SelectorSettings) -> bool {
        self.settings == *settings
            && self.addrs.len() == frontend.backends.len()
            && self
                .addrs
                .iter()
                .zip(frontend.backends.iter())
                .all(|(a, b)| *a == b.address)
    }

    /// The runtime entry of backend `i` (index into the frontend's backends).
    pub fn stats(&self, i: usize) -> &Arc<BackendStats> {
        &self.stats[i]
    }

    /// Counts one more active user of backend `i` (a connect attempt, a UDP flow) without any
    /// lookup: the route holds the entry.
    pub fn begin_connect(&self, i: usize) -> ActiveBackend {
        ActiveBackend::begin(self.stats[i].clone())
    }

    /// Picks at `now` (tests step a clock; [`Select::select`] reads it lazily).
    pub fn select_at(&self, candidates: &Candidates<'_>, now: Instant) -> Option<usize> {
        self.pick(candidates, Some(now))
    }

    /// Whether a UDP flow on backend `i` keeps it: the backend is in a tier a pick could use now
    /// (`up` and `unknown` always; the fail-open tier only while nothing better is left). The
    /// same rule as a pick, so `--fail-open=false` refuses a flow as it refuses a connection.
    pub fn keeps(&self, candidates: &Candidates<'_>, i: usize, now: Instant) -> bool {
        let Some(view) = View::new(candidates, self, Some(now)) else {
            return false;
        };
        match view.tier_of(i) {
            None => false,
            Some(Tier::Up | Tier::Unknown) => true,
            Some(Tier::FailOpen) => matches!(view.best_tier(), Some((Tier::FailOpen, _))),
        }
    }

    /// Cheap pre-check for [`Route::keeps`] (a few atomic loads): whether vipd's own observations
    /// demote backend `i` now. A flow re-checks with `keeps` only when this says so or the table
    /// changed.
    pub fn maybe_demoted(&self, i: usize, now: Instant) -> bool {
        let stats = &self.stats[i];
        stats.excluded_by_health(now)
            || (self.settings.checked && stats.active_health() != ActiveState::Up)
    }

    fn pick(&self, c: &Candidates<'_>, now: Option<Instant>) -> Option<usize> {
        let view = View::new(c, self, now)?;
        let (tier, n) = view.best_tier()?;
        match self.settings.balance {
            Balance::RoundRobin => self.round_robin(&view, tier, n),
            Balance::LeastConn => self.least_conn(&view, tier, n),
            Balance::P2c => p2c(&view, tier, n),
            Balance::Maglev => self.maglev(&view, tier, n),
        }
    }

    fn round_robin(&self, view: &View<'_>, tier: Tier, n: usize) -> Option<usize> {
        let k = self.next.fetch_add(1, Relaxed) % n;
        view.members(tier).nth(k)
    }

    /// Fewest active connections; among equals, the first at or after a rotating offset.
    fn least_conn(&self, view: &View<'_>, tier: Tier, n: usize) -> Option<usize> {
        let offset = self.next.fetch_add(1, Relaxed) % n;
        view.members(tier)
            .enumerate()
            .min_by_key(|(pos, i)| (self.stats[*i].active(), (pos + n - offset) % n))
            .map(|(_, i)| i)
    }

    fn maglev(&self, view: &View<'_>, tier: Tier, n: usize) -> Option<usize> {
        let (Some(client), Some(table)) = (view.c.client, self.maglev.as_deref()) else {
            return self.round_robin(view, tier, n);
        };
        table
            .walk(maglev::key_of(client))
            .find(|&i| i < view.c.backends.len() && view.in_tier(i, tier))
            .or_else(|| self.round_robin(view, tier, n))
    }
}

impl Select for Route {
    fn select(&self, candidates: &Candidates<'_>) -> Option<usize> {
        self.pick(candidates, None)
    }
}

/// Power of two random choices: two distinct random members, the one with fewer active
/// connections (the first on a tie).
fn p2c(view: &View<'_>, tier: Tier, n: usize) -> Option<usize> {
    if n == 1 {
        return view.members(tier).next();
    }
    let mut rng = rand::rng();
    let a = rng.random_range(0..n);
    let mut b = rng.random_range(0..n - 1);
    if b >= a {
        b += 1;
    }
    let (mut first, mut second) = (None, None);
    for (pos, i) in view.members(tier).enumerate() {
        if pos == a {
            first = Some(i);
        } else if pos == b {
            second = Some(i);
        }
    }
    match (first, second) {
        (Some(x), Some(y)) if view.route.stats[y].active() < view.route.stats[x].active() => {
            Some(y)
        }
        (Some(x), _) => Some(x),
        (None, y) => y,
    }
}

/// How passive ejections apply to this pick.
#[derive(Debug, Clone, Copy)]
enum Ejections {
    /// Nothing is ejected.
    None,
    /// Every ejected backend is honored.
    All { now_ms: u64 },
    /// Over the max-ejection-percent budget: only ejections ordered before `first_unhonored`
    /// (by start time, then index) are honored.
    Budget {
        now_ms: u64,
        first_unhonored: Option<(u64, usize)>,
    },
}

/// The eligibility of one pick's candidates.
struct View<'a> {
    c: &'a Candidates<'a>,
    route: &'a Route,
    ejections: Ejections,
}

impl<'a> View<'a> {
    /// `None` if `c` is not the backend list this route was built for (they come from one
    /// snapshot, so this does not happen; a mismatch picks nothing rather than a wrong index).
    fn new(c: &'a Candidates<'a>, route: &'a Route, now: Option<Instant>) -> Option<Self> {
        if c.backends.len() != route.stats.len() {
            return None;
        }
        let pool = route;
        let settings = &route.settings;
        let mut view = View {
            c,
            route,
            ejections: Ejections::None,
        };
        let live = |i: &usize| c.backends[*i].state != BackendState::Draining;
        if !(0..c.backends.len())
            .filter(live)
            .any(|i| pool.stats[i].maybe_ejected())
        {
            return Some(view);
        }
        let now_ms = millis(now.unwrap_or_else(Instant::now));
        let ejected = (0..c.backends.len())
            .filter(live)
            .filter(|&i| pool.stats[i].ejected_at(now_ms))
            .count();
        let pool_size = (0..c.backends.len()).filter(live).count();
        let budget = pool_size * usize::from(settings.max_ejection_percent) / 100;
        view.ejections = if ejected <= budget {
            Ejections::All { now_ms }
        } else {
            // Rare path (more ejected than allowed): honor the earliest ejections only.
            let mut order: Vec<(u64, usize)> = (0..c.backends.len())
                .filter(live)
                .filter(|&i| pool.stats[i].ejected_at(now_ms))
                .map(|i| (pool.stats[i].ejected_since(), i))
                .collect();
            order.sort_unstable();
            Ejections::Budget {
                now_ms,
                first_unhonored: order.get(budget).copied(),
            }
        };
        Some(view)
    }

    fn ejected(&self, i: usize) -> bool {
        match self.ejections {
            Ejections::None => false,
            Ejections::All { now_ms } => self.route.stats[i].ejected_at(now_ms),
            Ejections::Budget {
                now_ms,
                first_unhonored,
            } => {
                let stats = &self.route.stats[i];
                stats.ejected_at(now_ms)
                    && first_unhonored.map_or(true, |f| (stats.ejected_since(), i) < f)
            }
        }
    }

    /// The tier backend `i` is in for this pick, if any (tried or not).
    fn tier_of(&self, i: usize) -> Option<Tier> {
        let state = self.c.backends[i].state;
        if state == BackendState::Draining {
            return None;
        }
        let settings = &self.route.settings;
        let active = self.route.stats[i].active_health();
        let demoted = self.ejected(i)
            || active == ActiveState::Down
            || (settings.checked && active != ActiveState::Up);
        tier(state, demoted, settings.fail_open)
    }

    fn in_tier(&self, i: usize, tier: Tier) -> bool {
        self.c.untried(i) && self.tier_of(i) == Some(tier)
    }

    fn best_tier(&self) -> Option<(Tier, usize)> {
        let mut counts = [0usize; 3];
        for i in 0..self.c.backends.len() {
            if !self.c.untried(i) {
                continue;
            }
            if let Some(t) = self.tier_of(i) {
                counts[t.index()] += 1;
            }
        }
        Tier::ORDER
            .into_iter()
            .find(|t| counts[t.index()] > 0)
            .map(|t| (t, counts[t.index()]))
    }

    fn members(&self, tier: Tier) -> impl Iterator<Item = usize> + '_ {
        (0..self.c.backends.len()).filter(move |&i| self.in_tier(i, tier))
    }
}

#[cfg(test)]
mod tests;
