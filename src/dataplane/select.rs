//! Backend selection for one new connection (or one retry of it).
//!
//! Owns: the health tiers ([`Tier`]) that decide which backends are eligible, the [`Candidates`]
//! view a selector picks from, the [`Select`] trait, the health-aware per-frontend selector
//! [`FrontendSelector`] (round-robin, least-conn, p2c, Maglev) and the plain [`RoundRobin`]
//! (table states only).
//!
//! Tiers, in order: the `up` backends; if none is left, the `unknown` ones; if none of those, any
//! backend that is not `draining` (fail open: an `unhealthy` backend beats a certain failure;
//! `--fail-open=false` removes this tier). "Left" means not yet tried by this connection, so a
//! retry falls through to the next tier once every backend of the better tier has failed.
//! `draining` backends are never picked. [`FrontendSelector`] refines the table's state with
//! vipd's own observations: a passively ejected backend (within the frontend's
//! max-ejection-percent budget) and, on an actively checked frontend, a backend whose probe is
//! not `up` (pending or down) drop to the fail-open tier. README.health.md has the whole policy.
//!
//! Must not: do I/O, allocate or lock on the common path of a pick, or keep per-connection
//! state. A selector lives in the listener (not in the table), so its state (round-robin counter,
//! Maglev lookup table) survives table swaps; it follows option changes through
//! [`FrontendSelector::update`], called at every reconcile. The clock is read at most once per
//! pick, and only while some backend of the frontend has an ejection recorded.

use super::backends::{millis, BackendRegistry, BackendStats};
use crate::health::{self, ActiveState, Balance, HealthConfig};
use crate::table::{Backend, BackendState, Frontend, FrontendKey};
use arc_swap::ArcSwap;
use rand::Rng;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
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

    pub fn admits(self, state: BackendState) -> bool {
        match self {
            Tier::Up => state == BackendState::Up,
            Tier::Unknown => state == BackendState::Unknown,
            Tier::FailOpen => state != BackendState::Draining,
        }
    }

    fn index(self) -> usize {
        match self {
            Tier::Up => 0,
            Tier::Unknown => 1,
            Tier::FailOpen => 2,
        }
    }
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
    /// (table states only).
    pub fn tier(&self) -> Option<(Tier, usize)> {
        Tier::ORDER.into_iter().find_map(|tier| {
            let n = self.in_tier(tier).count();
            (n > 0).then_some((tier, n))
        })
    }

    /// Indexes of the untried backends of `tier`, in table order (table states only).
    pub fn in_tier(&self, tier: Tier) -> impl Iterator<Item = usize> + '_ {
        self.backends
            .iter()
            .enumerate()
            .filter(move |(i, b)| tier.admits(b.state) && self.untried(*i))
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
/// per pick. Knows nothing of vipd's own health observations (see [`FrontendSelector`]).
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

// === FrontendSelector ===

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
    /// Resolves `frontend`'s options against `cfg`. The warnings are always empty now: the
    /// builder validates options and reports bad values among its warnings.
    pub fn resolve(frontend: &Frontend, cfg: &HealthConfig) -> (SelectorSettings, Vec<String>) {
        let warnings = Vec::new();
        // The builder validated the options; an unset one takes the flag.
        let balance = frontend.options.balance().unwrap_or(cfg.balance);
        let checked = health::probe_for_frontend(frontend, &cfg.active).is_some();
        (
            SelectorSettings {
                balance,
                checked,
                fail_open: cfg.fail_open,
                max_ejection_percent: cfg.max_ejection_percent.min(100),
            },
            warnings,
        )
    }
}

/// One backend set (addresses in table order), with the runtime entries of its backends and
/// the Maglev lookup table, built once per set.
struct Pool {
    addrs: Vec<SocketAddr>,
    stats: Vec<Arc<BackendStats>>,
    maglev: OnceLock<Option<maglev::Maglev>>,
}

impl Pool {
    fn build(backends: &[Backend], registry: &BackendRegistry) -> Pool {
        Pool {
            addrs: backends.iter().map(|b| b.address).collect(),
            stats: backends.iter().map(|b| registry.entry(b.address)).collect(),
            maglev: OnceLock::new(),
        }
    }

    fn matches(&self, backends: &[Backend]) -> bool {
        self.addrs.len() == backends.len()
            && self
                .addrs
                .iter()
                .zip(backends)
                .all(|(a, b)| *a == b.address)
    }

    fn maglev(&self) -> Option<&maglev::Maglev> {
        self.maglev
            .get_or_init(|| maglev::Maglev::build(&self.addrs))
            .as_ref()
    }
}

/// The health-aware selector of one frontend. Shared by the listener entry (which updates it at
/// every reconcile) and the connections (which pick through it).
pub struct FrontendSelector {
    key: FrontendKey,
    registry: Arc<BackendRegistry>,
    settings: ArcSwap<SelectorSettings>,
    pool: ArcSwap<Pool>,
    /// Round-robin position (also the tie-break rotation of least-conn).
    next: AtomicUsize,
    /// The option warnings logged last, so each is logged once (touched at reconcile only).
    warned: Mutex<Vec<String>>,
}

impl fmt::Debug for FrontendSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrontendSelector")
            .field("key", &self.key)
            .field("settings", &**self.settings.load())
            .field("backends", &self.pool.load().addrs.len())
            .finish()
    }
}

impl FrontendSelector {
    /// A selector with `settings` and no backends yet ([`FrontendSelector::update`] fills it).
    pub fn new(
        key: FrontendKey,
        registry: Arc<BackendRegistry>,
        settings: SelectorSettings,
    ) -> Self {
        FrontendSelector {
            key,
            registry,
            settings: ArcSwap::from_pointee(settings),
            pool: ArcSwap::from_pointee(Pool {
                addrs: Vec::new(),
                stats: Vec::new(),
                maglev: OnceLock::new(),
            }),
            next: AtomicUsize::new(0),
            warned: Mutex::new(Vec::new()),
        }
    }

    /// A selector following `frontend` under `cfg`.
    pub fn for_frontend(
        frontend: &Frontend,
        registry: Arc<BackendRegistry>,
        cfg: &HealthConfig,
    ) -> Self {
        let (settings, _) = SelectorSettings::resolve(frontend, cfg);
        let s = Self::new(frontend.key(), registry, settings);
        s.update(frontend, cfg);
        s
    }

    pub fn settings(&self) -> SelectorSettings {
        **self.settings.load()
    }

    /// Follows a (possibly changed) table entry: options, backend set, Maglev table. Called at
    /// every reconcile; cheap when nothing changed. Warns once per bad option value.
    pub fn update(&self, frontend: &Frontend, cfg: &HealthConfig) {
        let (settings, warnings) = SelectorSettings::resolve(frontend, cfg);
        {
            let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
            if *warned != warnings {
                for w in &warnings {
                    tracing::warn!(frontend = %self.key, app = %frontend.app, "{w}");
                }
                *warned = warnings;
            }
        }
        let old = self.settings();
        if old != settings {
            if old.balance != settings.balance || old.checked != settings.checked {
                tracing::info!(
                    frontend = %self.key,
                    balance = settings.balance.as_str(),
                    active_checks = settings.checked,
                    "selection settings changed"
                );
            }
            self.settings.store(Arc::new(settings));
        }
        if !self.pool.load().matches(&frontend.backends) {
            self.pool
                .store(Arc::new(Pool::build(&frontend.backends, &self.registry)));
        }
        if settings.balance == Balance::Maglev {
            // Build the lookup table now, not on the first connection.
            let _ = self.pool.load().maglev();
        }
    }

    /// Picks at `now` (tests step a clock; [`Select::select`] reads it lazily).
    pub fn select_at(&self, candidates: &Candidates<'_>, now: Instant) -> Option<usize> {
        self.pick(candidates, Some(now))
    }

    fn pick(&self, c: &Candidates<'_>, now: Option<Instant>) -> Option<usize> {
        let settings = **self.settings.load();
        let guard = self.pool.load();
        let rebuilt;
        let pool: &Pool = if guard.matches(c.backends) {
            &guard
        } else {
            // A connection saw a table before the reconcile that follows it: build for it.
            rebuilt = Arc::new(Pool::build(c.backends, &self.registry));
            self.pool.store(rebuilt.clone());
            &rebuilt
        };
        let view = View::new(c, pool, &settings, now);
        let (tier, n) = view.best_tier()?;
        match settings.balance {
            Balance::RoundRobin => self.round_robin(&view, tier, n),
            Balance::LeastConn => self.least_conn(&view, tier, n),
            Balance::P2c => p2c(&view, tier, n),
            Balance::Maglev => self.maglev(&view, pool, tier, n),
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
            .min_by_key(|(pos, i)| (view.pool.stats[*i].active(), (pos + n - offset) % n))
            .map(|(_, i)| i)
    }

    fn maglev(&self, view: &View<'_>, pool: &Pool, tier: Tier, n: usize) -> Option<usize> {
        let (Some(client), Some(table)) = (view.c.client, pool.maglev()) else {
            return self.round_robin(view, tier, n);
        };
        table
            .walk(maglev::key_of(client))
            .find(|&i| i < view.c.backends.len() && view.in_tier(i, tier))
            .or_else(|| self.round_robin(view, tier, n))
    }
}

impl Select for FrontendSelector {
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
        (Some(x), Some(y)) if view.pool.stats[y].active() < view.pool.stats[x].active() => Some(y),
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
    pool: &'a Pool,
    settings: &'a SelectorSettings,
    ejections: Ejections,
}

impl<'a> View<'a> {
    fn new(
        c: &'a Candidates<'a>,
        pool: &'a Pool,
        settings: &'a SelectorSettings,
        now: Option<Instant>,
    ) -> Self {
        let mut view = View {
            c,
            pool,
            settings,
            ejections: Ejections::None,
        };
        let live = |i: &usize| c.backends[*i].state != BackendState::Draining;
        if !(0..c.backends.len())
            .filter(live)
            .any(|i| pool.stats[i].maybe_ejected())
        {
            return view;
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
        view
    }

    fn ejected(&self, i: usize) -> bool {
        match self.ejections {
            Ejections::None => false,
            Ejections::All { now_ms } => self.pool.stats[i].ejected_at(now_ms),
            Ejections::Budget {
                now_ms,
                first_unhonored,
            } => {
                let stats = &self.pool.stats[i];
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
        let active = self.pool.stats[i].active_health();
        let demoted = self.ejected(i)
            || active == ActiveState::Down
            || (self.settings.checked && active != ActiveState::Up);
        let tier = match state {
            _ if demoted => Tier::FailOpen,
            BackendState::Up => Tier::Up,
            BackendState::Unknown => Tier::Unknown,
            BackendState::Unhealthy | BackendState::Draining => Tier::FailOpen,
        };
        (tier != Tier::FailOpen || self.settings.fail_open).then_some(tier)
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

/// Maglev consistent hashing (Eisenbud et al., NSDI 2016) with fixed seeds, so every agent and
/// every restart builds the same table for the same backend set.
pub mod maglev {
    use std::net::{IpAddr, SocketAddr};

    /// Lookup table size: a prime, much larger than any pool (≥ 100× for pools up to 655).
    pub const TABLE_SIZE: usize = 65_537;
    const EMPTY: u16 = u16::MAX;
    const SEED_OFFSET: u64 = 0x6d61_676c_6576_3031; // "maglev01"
    const SEED_SKIP: u64 = 0x6d61_676c_6576_3032;
    const SEED_KEY: u64 = 0x6d61_676c_6576_3033;

    /// A lookup table: position → backend index (into the address list it was built from).
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
}

#[cfg(test)]
mod tests;
