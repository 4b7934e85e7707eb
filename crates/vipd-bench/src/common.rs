//! Shared plumbing of the load modes: target safety check, run bounds (time and count), per-thread
//! runtimes, statistics (hdrhistogram, errors by kind), the TTY progress line and the result
//! output (one JSON line on stdout, a human summary on stderr).
//!
//! Must NOT: open any socket (the modes do that, after `check_target` has passed), allocate per
//! request, or print anything per request.

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default run length when neither `--duration` nor `--requests` is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Time bound applied when only `--requests` is given, so no run is unbounded in time.
pub const SAFETY_DURATION: Duration = Duration::from_secs(600);
/// Largest latency the histograms hold (larger values are clamped).
const HIST_MAX_NS: u64 = 60_000_000_000;

/// Options every load mode takes.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Target `IP:PORT` (or `localhost:PORT`). Only loopback and private test ranges are accepted
    /// without `--force`.
    #[arg(long)]
    pub target: String,
    /// Run length, e.g. `10`, `10s`, `500ms`, `2m`. Default 10 s; if only `--requests` is given, a
    /// safety bound of 600 s still applies.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many operations (requests, connections, chunks or datagrams, per mode).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Per-operation timeout (a TCP request/response, a connection, a UDP datagram's answer).
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub timeout: Duration,
    /// OS threads, each running a single-threaded tokio runtime with its share of the load.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Free-form label copied into the JSON result (the harness uses it to name the target).
    #[arg(long)]
    pub label: Option<String>,
    /// Allow targets outside loopback and the private test ranges.
    #[arg(long)]
    pub force: bool,
    /// Never print the live progress line, even on a TTY.
    #[arg(long)]
    pub no_progress: bool,
}

/// Parses `10`, `1.5`, `10s`, `250ms`, `2m` into a duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (examples: 10, 10s, 500ms, 2m)"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!(
            "invalid duration {s:?}: must be a finite, non-negative number"
        ));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

/// Whether `ip` is loopback (127/8, ::1) or one of the private test ranges this tool accepts
/// without `--force`: RFC 1918 (10/8, 172.16/12, 192.168/16), vipd's default VIP pool 11/8 and
/// IPv6 ULA fd00::/8. IPv4-mapped IPv6 addresses are judged by their IPv4 address.
pub fn is_allowed_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 127
                || o[0] == 10
                || o[0] == 11
                || (o[0] == 172 && (16..=31).contains(&o[1]))
                || (o[0] == 192 && o[1] == 168)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_allowed_ip(IpAddr::V4(v4));
            }
            v6.is_loopback() || v6.octets()[0] == 0xfd
        }
    }
}

/// Resolves `target` and refuses it (before any socket exists) unless every address it resolves
/// to is allowed, or `force` is set.
pub fn check_target(target: &str, force: bool) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = if let Ok(a) = target.parse::<SocketAddr>() {
        vec![a]
    } else if let Some(port) = target.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .with_context(|| format!("bad port in {target:?}"))?;
        vec![SocketAddr::from(([127, 0, 0, 1], port))]
    } else {
        // Resolution of a name can itself send traffic (DNS); only do it when forced.
        if !force {
            bail!(
                "refusing target {target:?}: give an IP:PORT in loopback or a private test range \
                 (names other than localhost are resolved only with --force)"
            );
        }
        target
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {target:?}"))?
            .collect()
    };
    let Some(&first) = addrs.first() else {
        bail!("{target:?} resolved to no address");
    };
    if first.port() == 0 {
        bail!("target {target:?} has port 0");
    }
    if !force {
        for a in &addrs {
            if !is_allowed_ip(a.ip()) {
                bail!(
                    "refusing target {a}: not loopback (127.0.0.0/8, ::1) or a private test range \
                     (10/8, 172.16/12, 192.168/16, 11/8, fd00::/8); pass --force to override"
                );
            }
        }
    }
    Ok(first)
}

/// The time and count bounds of one run.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub start: Instant,
    pub deadline: Instant,
    pub duration: Duration,
    pub requests: Option<u64>,
}

impl Bounds {
    pub fn from_args(args: &CommonArgs) -> Self {
        let duration = match (args.duration, args.requests) {
            (Some(d), _) => d,
            (None, Some(_)) => SAFETY_DURATION,
            (None, None) => DEFAULT_DURATION,
        };
        let start = Instant::now();
        Bounds {
            start,
            deadline: start + duration,
            duration,
            requests: args.requests,
        }
    }

    /// Deadline of one operation started at `now`: its timeout, capped by the run's deadline.
    #[inline]
    pub fn op_deadline(&self, now: Instant, timeout: Duration) -> tokio::time::Instant {
        tokio::time::Instant::from_std((now + timeout).min(self.deadline))
    }
}

/// Counters shared by all threads: the count bound and the progress line.
#[derive(Debug, Default)]
pub struct Shared {
    claimed: AtomicU64,
    pub completed: AtomicU64,
    pub errors: AtomicU64,
    pub bytes: AtomicU64,
    limit: Option<u64>,
}

impl Shared {
    pub fn new(limit: Option<u64>) -> Arc<Self> {
        Arc::new(Shared {
            limit,
            ..Default::default()
        })
    }

    /// Claims one operation against `--requests`; false once the bound is used up.
    #[inline]
    pub fn claim(&self) -> bool {
        match self.limit {
            None => true,
            Some(limit) => self.claimed.fetch_add(1, Ordering::Relaxed) < limit,
        }
    }
}

/// Statistics one thread collects; merged after the run. Only touched between awaits.
#[derive(Debug)]
pub struct Stats {
    pub hist: Histogram<u64>,
    pub ok: u64,
    pub errors: BTreeMap<&'static str, u64>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub sent: u64,
    pub lost: u64,
    pub late: u64,
    pub in_flight_at_end: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            hist: Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("valid histogram bounds"),
            ok: 0,
            errors: BTreeMap::new(),
            bytes_sent: 0,
            bytes_received: 0,
            sent: 0,
            lost: 0,
            late: 0,
            in_flight_at_end: 0,
        }
    }
}

impl Stats {
    #[inline]
    pub fn record(&mut self, latency: Duration) {
        self.hist
            .saturating_record((latency.as_nanos() as u64).clamp(1, HIST_MAX_NS));
        self.ok += 1;
    }

    pub fn error(&mut self, kind: &'static str) {
        *self.errors.entry(kind).or_insert(0) += 1;
    }

    pub fn merge(&mut self, other: Stats) {
        self.hist.add(&other.hist).expect("same histogram bounds");
        self.ok += other.ok;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_insert(0) += v;
        }
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        self.sent += other.sent;
        self.lost += other.lost;
        self.late += other.late;
        self.in_flight_at_end += other.in_flight_at_end;
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Per-thread stats handle (single-threaded runtime, so `Rc<RefCell>`; never borrowed across an
/// await).
pub type LocalStats = Rc<RefCell<Stats>>;

/// Names an I/O error by kind for the result's `errors` map.
pub fn io_kind(e: &io::Error) -> &'static str {
    use io::ErrorKind as K;
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => return "too_many_open_files",
        Some(libc::EADDRNOTAVAIL) => return "addr_not_available",
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH) => return "unreachable",
        _ => {}
    }
    match e.kind() {
        K::ConnectionRefused => "connection_refused",
        K::ConnectionReset => "connection_reset",
        K::ConnectionAborted => "connection_aborted",
        K::BrokenPipe => "broken_pipe",
        K::TimedOut => "timed_out",
        K::UnexpectedEof => "closed_early",
        K::AddrInUse => "addr_in_use",
        K::AddrNotAvailable => "addr_not_available",
        _ => "other_io",
    }
}

/// Runs `threads` OS threads, each a current-thread tokio runtime with a `LocalSet`, calling
/// `body(thread_index, stats)`; prints the progress line from the calling thread meanwhile and
/// returns the merged stats and the wall time until the last thread finished.
pub fn run_threads<F, Fut>(
    threads: usize,
    mode: &str,
    shared: &Arc<Shared>,
    bounds: &Bounds,
    progress: bool,
    body: F,
) -> anyhow::Result<(Stats, Duration)>
where
    F: Fn(usize, LocalStats) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let threads = threads.max(1);
    let body = Arc::new(body);
    let mut handles = Vec::with_capacity(threads);
    for idx in 0..threads {
        let body = body.clone();
        let h = std::thread::Builder::new()
            .name(format!("vipd-bench-{idx}"))
            .spawn(move || -> anyhow::Result<Stats> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("building tokio runtime")?;
                let stats: LocalStats = Rc::new(RefCell::new(Stats::default()));
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, body(idx, stats.clone()));
                drop(local);
                let stats = Rc::try_unwrap(stats)
                    .map_err(|_| anyhow::anyhow!("stats still shared after the run"))?
                    .into_inner();
                Ok(stats)
            })
            .context("spawning worker thread")?;
        handles.push(h);
    }
    let mut last_print = Instant::now();
    let mut last_done = 0u64;
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
        if progress && last_print.elapsed() >= Duration::from_secs(1) {
            let done = shared.completed.load(Ordering::Relaxed);
            let rate = (done - last_done) as f64 / last_print.elapsed().as_secs_f64();
            last_done = done;
            last_print = Instant::now();
            let mut err = io::stderr().lock();
            let _ = write!(
                err,
                "\r\x1b[K[{mode}] {:5.1}s/{:.0}s  ok {done}  {rate:.0}/s  errors {}  bytes {}",
                bounds.start.elapsed().as_secs_f64(),
                bounds.duration.as_secs_f64(),
                shared.errors.load(Ordering::Relaxed),
                shared.bytes.load(Ordering::Relaxed),
            );
            let _ = err.flush();
        }
    }
    let elapsed = bounds.start.elapsed();
    if progress {
        eprint!("\r\x1b[K");
    }
    let mut total = Stats::default();
    for h in handles {
        let s = h
            .join()
            .map_err(|_| anyhow::anyhow!("worker thread panicked"))??;
        total.merge(s);
    }
    Ok((total, elapsed))
}

/// Whether to show the live progress line: stderr is a TTY and it was not turned off.
/// Runs every worker as a local task on the current thread's runtime and waits for all of them.
pub async fn join_local_workers<F>(workers: impl IntoIterator<Item = F>)
where
    F: Future<Output = ()> + 'static,
{
    let tasks: Vec<_> = workers.into_iter().map(tokio::task::spawn_local).collect();
    for t in tasks {
        let _ = t.await;
    }
}

pub fn progress_enabled(args: &CommonArgs) -> bool {
    // SAFETY: isatty only inspects the given file descriptor number; it has no memory effects.
    let tty = unsafe { libc::isatty(libc::STDERR_FILENO) } == 1;
    tty && !args.no_progress
}

/// Latency percentiles in microseconds.
pub fn latency_json(hist: &Histogram<u64>) -> Value {
    let us = |ns: u64| (ns as f64 / 1000.0 * 10.0).round() / 10.0;
    if hist.is_empty() {
        return Value::Null;
    }
    json!({
        "p50": us(hist.value_at_quantile(0.50)),
        "p90": us(hist.value_at_quantile(0.90)),
        "p99": us(hist.value_at_quantile(0.99)),
        "p999": us(hist.value_at_quantile(0.999)),
        "max": us(hist.max()),
        "mean": (hist.mean() / 100.0).round() / 10.0,
    })
}

/// Builds the common part of a result object.
pub fn base_result(
    mode: &str,
    args: &CommonArgs,
    target: SocketAddr,
    bounds: &Bounds,
    stats: &Stats,
    elapsed: Duration,
) -> Map<String, Value> {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let stopped_by =
        if bounds.requests.is_some() && elapsed + Duration::from_millis(50) < bounds.duration {
            "requests"
        } else {
            "duration"
        };
    let mut m = Map::new();
    m.insert("mode".into(), json!(mode));
    m.insert("label".into(), json!(args.label));
    m.insert("target".into(), json!(target.to_string()));
    m.insert("threads".into(), json!(args.threads));
    m.insert(
        "duration_limit_s".into(),
        json!(bounds.duration.as_secs_f64()),
    );
    m.insert("requests_limit".into(), json!(bounds.requests));
    m.insert("stopped_by".into(), json!(stopped_by));
    m.insert("elapsed_s".into(), json!((secs * 1e6).round() / 1e6));
    m.insert("ok".into(), json!(stats.ok));
    m.insert(
        "rate_per_s".into(),
        json!((stats.ok as f64 / secs * 10.0).round() / 10.0),
    );
    m.insert("latency_us".into(), latency_json(&stats.hist));
    m.insert("errors".into(), json!(stats.errors));
    m.insert("errors_total".into(), json!(stats.errors_total()));
    m
}

/// Prints the result as one JSON line on stdout and a short summary on stderr.
pub fn emit(result: Map<String, Value>, summary: &str) -> anyhow::Result<()> {
    let line = serde_json::to_string(&Value::Object(result))?;
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    eprintln!("{summary}");
    Ok(())
}

/// Human summary of the latency part.
pub fn latency_summary(hist: &Histogram<u64>) -> String {
    if hist.is_empty() {
        return "latency: none recorded".into();
    }
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "latency us: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        hist.max() as f64 / 1000.0
    )
}

pub fn errors_summary(stats: &Stats) -> String {
    if stats.errors.is_empty() {
        return "errors: 0".into();
    }
    let parts: Vec<String> = stats
        .errors
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!("errors: {} ({})", stats.errors_total(), parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_ranges() {
        for ok in [
            "127.0.0.1",
            "127.3.4.5",
            "10.1.2.3",
            "11.0.0.1",
            "172.16.0.1",
            "172.31.255.1",
            "192.168.1.1",
            "::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_allowed_ip(ok.parse().unwrap()), "{ok} should be allowed");
        }
        for bad in [
            "8.8.8.8",
            "172.32.0.1",
            "172.15.0.1",
            "192.169.0.1",
            "1.1.1.1",
            "2001:4860::8888",
            "fe80::1",
            "fc00::1",
            "::ffff:8.8.8.8",
            "0.0.0.0",
        ] {
            assert!(
                !is_allowed_ip(bad.parse().unwrap()),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn check_target_refuses_public_and_names() {
        assert!(check_target("8.8.8.8:53", false).is_err());
        assert!(check_target("example.com:80", false).is_err());
        assert!(check_target("127.0.0.1:0", false).is_err());
        assert_eq!(
            check_target("localhost:80", false).unwrap(),
            "127.0.0.1:80".parse().unwrap()
        );
        assert!(check_target("8.8.8.8:53", true).is_ok());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("-1").is_err());
    }
}
