//! Agent hostname resolution for the table builder, with a cache.
//!
//! Owns: turning the `host` strings of Marathon tasks into IP addresses before `table::build`
//! runs ([`Resolved`]): lookups in parallel (bounded), a timeout per lookup, a positive cache with
//! a TTL, a short negative cache so that a dead name does not stall every rebuild, and the
//! IPv4-or-IPv6 choice when a name has both.
//!
//! Must not: block the runtime (lookups go through tokio's `lookup_host`, which runs getaddrinfo
//! on the blocking pool), read the wall clock (time is `tokio::time::Instant`, so tests can pause
//! it), or fail the whole batch because of one name: an unresolvable host is `None` in the result
//! and the builder warns about the tasks it skips.

use crate::table::build::host_ip_literal;
use crate::table::Resolved;
use futures::future::BoxFuture;
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Resolver settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Bound on one lookup.
    pub timeout: Duration,
    /// How long a successful answer is reused.
    pub ttl: Duration,
    /// How long a failure is reused before the name is tried again.
    pub negative_ttl: Duration,
    /// Lookups in flight at once.
    pub concurrency: usize,
    /// Take an IPv4 address when a name has both families (else the first answer).
    pub prefer_ipv4: bool,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            timeout: Duration::from_secs(2),
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            concurrency: 16,
            prefer_ipv4: true,
        }
    }
}

/// Why one host did not resolve.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("lookup of {host:?} timed out after {timeout:?}")]
    Timeout { host: String, timeout: Duration },
    #[error("lookup of {host:?} failed: {source}")]
    Lookup {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("{host:?} resolved to no address")]
    NoAddress { host: String },
    #[error("{host:?} is under .invalid, which never resolves (RFC 6761)")]
    Invalid { host: String },
}

/// The name-to-addresses step, replaceable in tests.
pub trait Lookup: Send + Sync + 'static {
    fn lookup(&self, host: &str) -> BoxFuture<'static, io::Result<Vec<IpAddr>>>;
}

/// The system resolver through `tokio::net::lookup_host` (port 0).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> {
        let host = host.to_string();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|sa| sa.ip())
                .collect())
        })
    }
}

/// RFC 6761 §6.4: resolver libraries should answer names under `.invalid` negatively at once,
/// without asking a name server.
fn is_invalid_tld(host: &str) -> bool {
    let h = host.trim().trim_end_matches('.');
    let tail = h.len().saturating_sub(".invalid".len());
    h.eq_ignore_ascii_case("invalid")
        || (h.is_char_boundary(tail) && h[tail..].eq_ignore_ascii_case(".invalid"))
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    answer: Option<IpAddr>,
    expires: Instant,
}

/// Resolves agent hostnames, caching answers and failures.
pub struct HostResolver {
    cfg: ResolverConfig,
    lookup: Arc<dyn Lookup>,
    cache: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for HostResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostResolver")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl HostResolver {
    /// A resolver on the system resolver.
    pub fn new(cfg: ResolverConfig) -> HostResolver {
        HostResolver::with_lookup(cfg, Arc::new(SystemLookup))
    }

    pub fn with_lookup(cfg: ResolverConfig, lookup: Arc<dyn Lookup>) -> HostResolver {
        HostResolver {
            cfg,
            lookup,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &ResolverConfig {
        &self.cfg
    }

    /// One uncached lookup, bounded by the timeout. IP literals return at once.
    pub async fn resolve(&self, host: &str) -> Result<IpAddr, ResolveError> {
        if let Some(ip) = host_ip_literal(host) {
            return Ok(ip);
        }
        if is_invalid_tld(host) {
            return Err(ResolveError::Invalid {
                host: host.to_string(),
            });
        }
        let answers = tokio::time::timeout(self.cfg.timeout, self.lookup.lookup(host))
            .await
            .map_err(|_| ResolveError::Timeout {
                host: host.to_string(),
                timeout: self.cfg.timeout,
            })?
            .map_err(|source| ResolveError::Lookup {
                host: host.to_string(),
                source,
            })?;
        let pick = if self.cfg.prefer_ipv4 {
            answers
                .iter()
                .find(|ip| ip.is_ipv4())
                .or_else(|| answers.first())
        } else {
            answers.first()
        };
        pick.copied().ok_or_else(|| ResolveError::NoAddress {
            host: host.to_string(),
        })
    }

    /// Resolves every host (duplicates once), from the cache where fresh, the rest in parallel.
    /// IP literals get no entry (the builder reads them directly). Failures are `None`.
    pub async fn resolve_all<'a>(&self, hosts: impl IntoIterator<Item = &'a str>) -> Resolved {
        let unique: BTreeSet<&str> = hosts
            .into_iter()
            .filter(|h| host_ip_literal(h).is_none())
            .collect();
        let mut out = Resolved::default();
        let mut todo = Vec::new();
        {
            let now = Instant::now();
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            for host in unique {
                match cache.get(host) {
                    Some(e) if e.expires > now => {
                        out.hosts.insert(host.to_string(), e.answer);
                    }
                    _ => todo.push(host.to_string()),
                }
            }
        }
        if todo.is_empty() {
            return out;
        }
        // Owned names: a future that borrows them through a closure is not provably `Send` for
        // every lifetime, which the control loop (spawned) needs.
        let results: Vec<(String, Result<IpAddr, ResolveError>)> = futures::stream::iter(todo)
            .map(|host| async move {
                let result = self.resolve(&host).await;
                (host, result)
            })
            .buffer_unordered(self.cfg.concurrency.max(1))
            .collect()
            .await;
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|_, e| e.expires > now);
        for (host, result) in results {
            let (answer, ttl) = match result {
                Ok(ip) => {
                    tracing::debug!(host = %host, %ip, "resolved agent host");
                    (Some(ip), self.cfg.ttl)
                }
                Err(error) => {
                    tracing::warn!(host = %host, %error, "agent host did not resolve");
                    (None, self.cfg.negative_ttl)
                }
            };
            cache.insert(
                host.clone(),
                Entry {
                    answer,
                    expires: now + ttl,
                },
            );
            out.hosts.insert(host, answer);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fake resolver: fixed answers, counts calls and the peak number in flight.
    #[derive(Default)]
    struct Fake {
        answers: HashMap<String, io::Result<Vec<IpAddr>>>,
        hang: bool,
        delay: Duration,
        calls: AtomicUsize,
        in_flight: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
    }

    impl Lookup for Fake {
        fn lookup(&self, host: &str) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let answer = match self.answers.get(host) {
                Some(Ok(v)) => Ok(v.clone()),
                Some(Err(e)) => Err(io::Error::new(e.kind(), e.to_string())),
                None => Err(io::Error::new(io::ErrorKind::NotFound, "no such host")),
            };
            let (hang, delay) = (self.hang, self.delay);
            let (in_flight, peak) = (self.in_flight.clone(), self.peak.clone());
            Box::pin(async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                if hang {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(delay).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                answer
            })
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn fake(answers: &[(&str, &[&str])]) -> Fake {
        Fake {
            answers: answers
                .iter()
                .map(|(h, ips)| ((*h).to_string(), Ok(ips.iter().map(|s| ip(s)).collect())))
                .collect(),
            ..Fake::default()
        }
    }

    #[tokio::test]
    async fn ip_literals_short_circuit() {
        let f = Arc::new(fake(&[]));
        let r = HostResolver::with_lookup(ResolverConfig::default(), f.clone());
        let out = r.resolve_all(["10.0.0.1", "::1", "[fd00::1]"]).await;
        assert!(out.hosts.is_empty());
        assert_eq!(f.calls.load(Ordering::SeqCst), 0);
        assert_eq!(r.resolve("10.0.0.1").await.unwrap(), ip("10.0.0.1"));
    }

    #[tokio::test]
    async fn localhost_resolves_through_the_system_resolver() {
        let r = HostResolver::new(ResolverConfig::default());
        let out = r.resolve_all(["localhost"]).await;
        let got = out.hosts["localhost"].expect("localhost resolves");
        assert!(got.is_loopback(), "{got}");
        // IPv4 is preferred when both families are present.
        assert_eq!(got, ip("127.0.0.1"));
    }

    #[tokio::test]
    async fn invalid_tld_never_resolves_and_never_asks() {
        // RFC 6761: names under .invalid never resolve; they are answered without a lookup, so
        // the test sends no DNS query off the machine.
        let f = Arc::new(fake(&[("agent.vipd-test.invalid", &["10.0.0.1"])]));
        let r = HostResolver::with_lookup(ResolverConfig::default(), f.clone());
        for host in ["agent.vipd-test.invalid", "x.INVALID.", "invalid"] {
            let out = r.resolve_all([host]).await;
            assert_eq!(out.hosts.get(host), Some(&None), "{host}");
            assert!(matches!(
                r.resolve(host).await,
                Err(ResolveError::Invalid { .. })
            ));
        }
        assert_eq!(f.calls.load(Ordering::SeqCst), 0);
        // The same through the system resolver path.
        let r = HostResolver::new(ResolverConfig::default());
        let out = r.resolve_all(["agent.vipd-test.invalid"]).await;
        assert_eq!(out.hosts.get("agent.vipd-test.invalid"), Some(&None));
        assert!(!is_invalid_tld("notinvalid") && !is_invalid_tld("invalid.example"));
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_cached_for_the_ttl() {
        let f = Arc::new(fake(&[("a.example", &["10.0.0.1"])]));
        let r = HostResolver::with_lookup(ResolverConfig::default(), f.clone());
        for _ in 0..3 {
            let out = r.resolve_all(["a.example", "a.example"]).await;
            assert_eq!(out.hosts["a.example"], Some(ip("10.0.0.1")));
        }
        assert_eq!(f.calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(61)).await;
        r.resolve_all(["a.example"]).await;
        assert_eq!(f.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_cached_briefly() {
        let f = Arc::new(fake(&[]));
        let r = HostResolver::with_lookup(ResolverConfig::default(), f.clone());
        assert_eq!(
            r.resolve_all(["dead.example"]).await.hosts["dead.example"],
            None
        );
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            r.resolve_all(["dead.example"]).await.hosts["dead.example"],
            None
        );
        assert_eq!(f.calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        r.resolve_all(["dead.example"]).await;
        assert_eq!(f.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_lookup_times_out_and_the_others_still_answer() {
        let hung = Arc::new(Fake {
            hang: true,
            ..Fake::default()
        });
        let r = HostResolver::with_lookup(ResolverConfig::default(), hung);
        let started = Instant::now();
        let err = r.resolve("slow.example").await.unwrap_err();
        assert!(matches!(err, ResolveError::Timeout { .. }), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        let out = r.resolve_all(["slow.example", "slow2.example"]).await;
        assert_eq!(out.hosts.len(), 2);
        assert!(out.hosts.values().all(Option::is_none));
    }

    #[tokio::test(start_paused = true)]
    async fn lookups_run_in_parallel_within_the_bound() {
        let hosts: Vec<String> = (0..10).map(|i| format!("h{i}.example")).collect();
        let answers: Vec<(&str, &[&str])> = hosts
            .iter()
            .map(|h| (h.as_str(), &["10.0.0.1"][..]))
            .collect();
        let mut f = fake(&answers);
        f.delay = Duration::from_millis(100);
        let f = Arc::new(f);
        let cfg = ResolverConfig {
            concurrency: 3,
            ..ResolverConfig::default()
        };
        let r = HostResolver::with_lookup(cfg, f.clone());
        let started = Instant::now();
        let out = r.resolve_all(hosts.iter().map(String::as_str)).await;
        assert_eq!(out.hosts.len(), 10);
        assert!(out.hosts.values().all(Option::is_some));
        assert_eq!(f.peak.load(Ordering::SeqCst), 3);
        // ceil(10 / 3) rounds of 100 ms, not 10 sequential lookups.
        assert_eq!(started.elapsed(), Duration::from_millis(400));
    }

    #[tokio::test]
    async fn family_preference() {
        let f = Arc::new(fake(&[("dual.example", &["fd00::1", "10.0.0.1"])]));
        let r = HostResolver::with_lookup(ResolverConfig::default(), f.clone());
        assert_eq!(r.resolve("dual.example").await.unwrap(), ip("10.0.0.1"));
        let r = HostResolver::with_lookup(
            ResolverConfig {
                prefer_ipv4: false,
                ..ResolverConfig::default()
            },
            f,
        );
        assert_eq!(r.resolve("dual.example").await.unwrap(), ip("fd00::1"));
        let empty = Arc::new(fake(&[("none.example", &[])]));
        let r = HostResolver::with_lookup(ResolverConfig::default(), empty);
        assert!(matches!(
            r.resolve("none.example").await,
            Err(ResolveError::NoAddress { .. })
        ));
    }
}
