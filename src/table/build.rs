//! `table::build`: Marathon snapshot → routing table. Pure and deterministic.
//!
//! Owns: every rule that turns apps and tasks into frontends and backends (networking modes,
//! legacy forms, service ports, VIP labels, task filter, health state, per-port options,
//! conflicts). The rules and the reasons behind each decision are written up in
//! `README.table.md`; FACTS.md §2, §3, §6 and §8 are the source for the Marathon side.
//!
//! Must not: do I/O, read a clock, resolve hostnames (they arrive in [`Resolved`]), use a
//! randomised hasher or iteration order, or panic on any input.

use super::vip::{self, VipTarget};
use super::{Backend, BackendState, Built, Frontend, FrontendKey, FrontendKind, Protocol, Warning};
use crate::model::{App, AppsSnapshot, HealthCheck, Labels, Task};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Options that shape the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// Address service-port frontends bind (`--bind-address`).
    pub bind_address: IpAddr,
    /// Pool that named VIPs draw their address from (`--vip-cidr`).
    pub vip_cidr: IpNet,
    /// DNS zone of named VIPs.
    pub zone: String,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            bind_address: IpAddr::from([0, 0, 0, 0]),
            vip_cidr: "11.0.0.0/8".parse().expect("valid default CIDR"),
            zone: "l4lb.thisdcos.directory".to_string(),
        }
    }
}

/// Agent hostnames resolved before the build. A host that is an IP literal needs no entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// `None` records a host that could not be resolved.
    pub hosts: HashMap<String, Option<IpAddr>>,
}

/// Parses a task `host` that is an IP literal (`10.0.0.1`, `fd00::1`, `[fd00::1]`).
pub fn host_ip_literal(host: &str) -> Option<IpAddr> {
    // Hot path (once per task): a plain literal or a hostname starting with a letter.
    match host.as_bytes().first() {
        None => return None,
        Some(b) if b.is_ascii_alphabetic() && !host.contains(':') => return None,
        _ => {}
    }
    if let Ok(ip) = host.parse() {
        return Some(ip);
    }
    let h = host.trim();
    let h = h
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(h);
    h.parse().ok()
}

/// The agent hostnames of a snapshot that need DNS (IP literals excluded), sorted and unique.
pub fn hosts_to_resolve(snapshot: &AppsSnapshot) -> BTreeSet<&str> {
    snapshot
        .apps
        .iter()
        .flat_map(|a| a.tasks.iter())
        .filter_map(|t| t.host.as_deref())
        .filter(|h| !h.is_empty() && host_ip_literal(h).is_none())
        .collect()
}

/// How an app's tasks are reached (FACTS.md §3.1, §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    /// Agent address + host port.
    Host,
    /// `container/bridge` (docker BRIDGE, mesos-bridge): agent address + mapped host port.
    Bridge,
    /// `container` (IP-per-task): task IP + container port, or agent + host port for mappings
    /// that declare one.
    Container,
}

/// The networking mode of an app.
///
/// Precedence (documented in README.table.md): a non-empty `networks` decides, and with several
/// networks the last one's mode wins (marathon-lb's rule; Marathon itself only accepts networks of
/// one kind). Otherwise the legacy `container.docker.network` decides (HOST, BRIDGE, USER; NONE is
/// an error: nothing is reachable). Otherwise a legacy `ipAddress` means `container`, or
/// `container/bridge` when its `networkName` is `mesos-bridge`. Otherwise host.
pub fn network_mode(app: &App) -> Result<NetworkMode, String> {
    if let Some(last) = app.networks.last() {
        return match last.mode.as_deref().map(str::trim) {
            None => Ok(NetworkMode::Container),
            Some(m) if m.eq_ignore_ascii_case("container") => Ok(NetworkMode::Container),
            Some(m) if m.eq_ignore_ascii_case("container/bridge") => Ok(NetworkMode::Bridge),
            Some(m) if m.eq_ignore_ascii_case("host") => Ok(NetworkMode::Host),
            Some(m) => Err(format!("networks: unknown mode {m:?}; app skipped")),
        };
    }
    let docker_network = app
        .container
        .as_ref()
        .and_then(|c| c.docker.as_ref())
        .and_then(|d| d.network.as_deref());
    if let Some(n) = docker_network {
        let n = n.trim();
        return if n.eq_ignore_ascii_case("HOST") {
            Ok(NetworkMode::Host)
        } else if n.eq_ignore_ascii_case("BRIDGE") {
            Ok(NetworkMode::Bridge)
        } else if n.eq_ignore_ascii_case("USER") {
            Ok(NetworkMode::Container)
        } else if n.eq_ignore_ascii_case("NONE") {
            Err(
                "container.docker.network is NONE: the task has no reachable network; app skipped"
                    .into(),
            )
        } else {
            Err(format!(
                "container.docker.network: unknown value {n:?}; app skipped"
            ))
        };
    }
    if let Some(ip) = &app.ip_address {
        return Ok(if ip.network_name.as_deref() == Some("mesos-bridge") {
            NetworkMode::Bridge
        } else {
            NetworkMode::Container
        });
    }
    Ok(NetworkMode::Host)
}

/// One declared port of an app, whatever field it came from.
#[derive(Debug, Clone)]
struct PortSpec<'a> {
    /// Non-zero service port.
    service_port: Option<u16>,
    protocol: Option<&'a str>,
    name: Option<&'a str>,
    labels: Option<&'a Labels>,
    container_port: Option<u16>,
    declares_host_port: bool,
}

/// The port declarations for `mode` (FACTS.md §3.2, §3.3): host mode reads `portDefinitions`,
/// else legacy `ports`; the container modes read `container.portMappings`, else legacy
/// `container.docker.portMappings`, else legacy `ipAddress.discovery.ports`.
fn port_specs(app: &App, mode: NetworkMode) -> Vec<PortSpec<'_>> {
    let nonzero = |p: Option<u16>| p.filter(|&p| p != 0);
    match mode {
        NetworkMode::Host => {
            if let Some(defs) = app.port_definitions.as_ref().filter(|d| !d.is_empty()) {
                defs.iter()
                    .map(|d| PortSpec {
                        service_port: nonzero(d.port),
                        protocol: d.protocol.as_deref(),
                        name: d.name.as_deref(),
                        labels: Some(&d.labels),
                        container_port: None,
                        declares_host_port: true,
                    })
                    .collect()
            } else {
                app.ports
                    .iter()
                    .flatten()
                    .map(|&p| PortSpec {
                        service_port: nonzero(Some(p)),
                        protocol: None,
                        name: None,
                        labels: None,
                        container_port: None,
                        declares_host_port: true,
                    })
                    .collect()
            }
        }
        NetworkMode::Bridge | NetworkMode::Container => {
            let container = app.container.as_ref();
            let mappings = container
                .and_then(|c| c.port_mappings.as_ref())
                .filter(|m| !m.is_empty())
                .or_else(|| {
                    container
                        .and_then(|c| c.docker.as_ref())
                        .and_then(|d| d.port_mappings.as_ref())
                        .filter(|m| !m.is_empty())
                });
            if let Some(mappings) = mappings {
                mappings
                    .iter()
                    .map(|m| PortSpec {
                        service_port: nonzero(m.service_port),
                        protocol: m.protocol.as_deref(),
                        name: m.name.as_deref(),
                        labels: Some(&m.labels),
                        container_port: m.container_port,
                        // In bridge mode every mapping has a host port (Marathon normalises a
                        // missing one to 0 = "any").
                        declares_host_port: mode == NetworkMode::Bridge || m.host_port.is_some(),
                    })
                    .collect()
            } else {
                app.ip_address
                    .iter()
                    .flat_map(|ip| ip.discovery.iter())
                    .flat_map(|d| d.ports.iter())
                    .map(|p| PortSpec {
                        service_port: None,
                        protocol: p.protocol.as_deref(),
                        name: p.name.as_deref(),
                        labels: Some(&p.labels),
                        container_port: p.number,
                        declares_host_port: mode == NetworkMode::Bridge,
                    })
                    .collect()
            }
        }
    }
}

const TCP: &[Protocol] = &[Protocol::Tcp];
const UDP: &[Protocol] = &[Protocol::Udp];
const BOTH: &[Protocol] = &[Protocol::Tcp, Protocol::Udp];

/// `tcp`, `udp`, `udp,tcp` (or `tcp,udp`), case-insensitive, whitespace-trimmed; missing = tcp.
pub fn parse_protocols(raw: Option<&str>) -> Option<&'static [Protocol]> {
    let Some(raw) = raw else { return Some(TCP) };
    let (mut tcp, mut udp) = (false, false);
    for part in raw.split(',') {
        let part = part.trim();
        if part.eq_ignore_ascii_case("tcp") {
            tcp = true;
        } else if part.eq_ignore_ascii_case("udp") {
            udp = true;
        } else {
            return None;
        }
    }
    match (tcp, udp) {
        (true, true) => Some(BOTH),
        (true, false) => Some(TCP),
        (false, true) => Some(UDP),
        (false, false) => None,
    }
}

/// The routing state of a task, or `None` when it gets no backend.
///
/// `Err` carries a warning (unknown state string).
pub fn task_state(
    task: &Task,
    app_has_health_checks: bool,
) -> Result<Option<BackendState>, String> {
    // Exact spellings first (what Marathon sends); the lenient match only runs for the rest.
    let class = match task.state.as_deref() {
        None | Some("TASK_RUNNING") => TaskClass::Running,
        Some("TASK_KILLING") => TaskClass::Draining,
        Some(
            "TASK_STAGING" | "TASK_STARTING" | "TASK_FINISHED" | "TASK_FAILED" | "TASK_KILLED",
        ) => TaskClass::Absent,
        Some(other) => classify_state(other).ok_or_else(|| {
            format!(
                "task {}: unknown state {:?}; task skipped",
                task.id,
                other.trim()
            )
        })?,
    };
    Ok(match class {
        TaskClass::Absent => None,
        TaskClass::Draining => Some(BackendState::Draining),
        TaskClass::Partitioned => Some(BackendState::Unknown),
        TaskClass::Running if !app_has_health_checks => Some(BackendState::Up),
        TaskClass::Running => Some(match task.health_check_results.as_deref() {
            None | Some([]) => BackendState::Unknown,
            Some(results) if results.iter().all(|r| r.alive) => BackendState::Up,
            Some(_) => BackendState::Unhealthy,
        }),
    })
}

enum TaskClass {
    Running,
    Draining,
    /// `TASK_UNREACHABLE` / `TASK_LOST`: kept as `unknown` (README.table.md).
    Partitioned,
    Absent,
}

/// Case-insensitive, whitespace-trimmed state match; `None` for an unknown state.
fn classify_state(state: &str) -> Option<TaskClass> {
    let s = state.trim();
    let is = |k: &str| s.eq_ignore_ascii_case(k);
    if is("TASK_RUNNING") {
        Some(TaskClass::Running)
    } else if is("TASK_KILLING") {
        Some(TaskClass::Draining)
    } else if is("TASK_UNREACHABLE") || is("TASK_LOST") {
        Some(TaskClass::Partitioned)
    } else if [
        "TASK_STAGING",
        "TASK_STARTING",
        "TASK_FINISHED",
        "TASK_FAILED",
        "TASK_KILLED",
        "TASK_ERROR",
        "TASK_DROPPED",
        "TASK_GONE",
        "TASK_GONE_BY_OPERATOR",
        "TASK_UNKNOWN",
    ]
    .iter()
    .any(|k| is(k))
    {
        Some(TaskClass::Absent)
    } else {
        None
    }
}

/// Per-port options from app labels and Marathon health checks.
fn port_options(app: &App, index: usize) -> BTreeMap<String, String> {
    let mut opts = BTreeMap::new();
    let label = |k: String| app.labels.get(&k).map(|v| v.trim().to_string());
    if let Some(b) = label(format!("VIPD_{index}_BALANCE")) {
        opts.insert("balance".to_string(), b);
    } else if let Some(b) = label(format!("HAPROXY_{index}_BALANCE")) {
        let mapped = match b.as_str() {
            "roundrobin" => "round-robin".to_string(),
            "leastconn" => "least-conn".to_string(),
            "source" => "maglev".to_string(),
            _ => b,
        };
        opts.insert("balance".to_string(), mapped);
    }
    if let Some(h) = label(format!("VIPD_{index}_HEALTHCHECK")) {
        opts.insert("active_health_check".to_string(), h);
    }
    if let Some(hc) = app
        .health_checks
        .iter()
        .find(|hc| health_check_port_index(hc) == Some(index))
    {
        let protocol = hc.protocol.as_deref().unwrap_or("HTTP").trim();
        let probe = match protocol.to_ascii_uppercase().as_str() {
            "TCP" | "MESOS_TCP" | "HTTPS" | "MESOS_HTTPS" => Some("tcp"),
            "HTTP" | "MESOS_HTTP" => Some("http"),
            _ => None,
        };
        if let Some(probe) = probe {
            opts.insert("probe".to_string(), probe.to_string());
            if probe == "http" {
                let path = hc.path.as_deref().filter(|p| !p.is_empty()).unwrap_or("/");
                opts.insert("probe_path".to_string(), path.to_string());
            }
            if let Some(s) = hc.interval_seconds.and_then(seconds) {
                opts.insert("probe_interval_s".to_string(), s);
            }
            if let Some(s) = hc.timeout_seconds.and_then(seconds) {
                opts.insert("probe_timeout_s".to_string(), s);
            }
        }
    }
    opts
}

/// The port index a health check targets: `portIndex`, or 0 when it has neither `port` nor
/// `portIndex` (FACTS.md §3.3). COMMAND checks target no port.
fn health_check_port_index(hc: &HealthCheck) -> Option<usize> {
    if hc
        .protocol
        .as_deref()
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("COMMAND"))
    {
        return None;
    }
    match (hc.port_index, hc.port) {
        (Some(i), _) => usize::try_from(i).ok(),
        (None, None) => Some(0),
        (None, Some(_)) => None,
    }
}

/// `3` for 3.0, `1.5` for 1.5; nothing for negative or non-finite values.
fn seconds(v: f64) -> Option<String> {
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    if v.fract() == 0.0 && v < 1e15 {
        Some(format!("{}", v as u64))
    } else {
        Some(format!("{v}"))
    }
}

/// Where a port's backend address comes from, per task.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// Agent address + `task.ports[k]`.
    HostPort(usize),
    /// First task IP + this container port.
    TaskIp(u16),
}

/// The address part of a VIP key: an IP, or a named VIP's DNS name (resolved to an IP later).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum VipAddr {
    Ip(IpAddr),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct VipKey {
    protocol: Protocol,
    addr: VipAddr,
    port: u16,
}

/// What one usable port of an app contributes.
struct PortPlan<'a> {
    index: usize,
    spec: PortSpec<'a>,
    protocols: &'static [Protocol],
    slot: Slot,
    vips: Vec<(VipAddr, u16)>,
    options: BTreeMap<String, String>,
    backends: Vec<Backend>,
}

struct Builder<'o> {
    opts: &'o BuildOptions,
    resolved: &'o Resolved,
    /// Agent addresses already looked up in this build (a few hundred agents, 50,000 tasks).
    agents: HashMap<&'o str, Option<IpAddr>, Fnv>,
    services: BTreeMap<FrontendKey, Frontend>,
    vips: BTreeMap<VipKey, Frontend>,
    warnings: Vec<Warning>,
}

/// FNV-1a: a fixed (not randomised) hasher for the per-build agent memo. Iteration order of that
/// map never reaches the output.
#[derive(Default, Clone, Copy)]
struct Fnv;

struct FnvHasher(u64);

impl std::hash::BuildHasher for Fnv {
    type Hasher = FnvHasher;
    fn build_hasher(&self) -> FnvHasher {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

impl<'o> Builder<'o> {
    fn warn(&mut self, app: &str, message: String) {
        self.warnings.push(Warning {
            app: Some(app.to_string()),
            message,
        });
    }

    fn agent_ip(&mut self, host: &'o str) -> Option<IpAddr> {
        if let Some(ip) = self.agents.get(host) {
            return *ip;
        }
        let ip = host_ip_literal(host).or_else(|| self.resolved.hosts.get(host).copied().flatten());
        self.agents.insert(host, ip);
        ip
    }

    fn add_app(&mut self, app: &'o App) {
        let mode = match network_mode(app) {
            Ok(m) => m,
            Err(msg) => return self.warn(&app.id, msg),
        };
        let specs = port_specs(app, mode);
        let mut plans: Vec<PortPlan<'_>> = Vec::with_capacity(specs.len());
        let mut next_host_port = 0usize;
        for (index, spec) in specs.into_iter().enumerate() {
            // The slot is computed for every port, usable or not: host ports are consumed in
            // declaration order (FACTS.md §3.5, §3.6).
            let slot = match mode {
                NetworkMode::Host | NetworkMode::Bridge => Slot::HostPort(index),
                NetworkMode::Container if spec.declares_host_port => {
                    next_host_port += 1;
                    Slot::HostPort(next_host_port - 1)
                }
                NetworkMode::Container => Slot::TaskIp(spec.container_port.unwrap_or(0)),
            };
            let Some(protocols) = parse_protocols(spec.protocol) else {
                self.warn(
                    &app.id,
                    format!(
                        "port {index}: unknown protocol {:?}; port skipped",
                        spec.protocol.unwrap_or_default()
                    ),
                );
                continue;
            };
            let mut vips = Vec::new();
            for (key, value) in spec.labels.into_iter().flatten() {
                if !vip::is_vip_label_key(key) {
                    continue;
                }
                let parsed = match vip::parse_vip_label(value) {
                    Ok(p) => p,
                    Err(e) => {
                        self.warn(
                            &app.id,
                            format!("port {index}: label {key}={value:?}: {e}; label skipped"),
                        );
                        continue;
                    }
                };
                let addr = match parsed.target {
                    VipTarget::Ip(ip) => VipAddr::Ip(ip),
                    VipTarget::Name(name) => match vip::dns_name(&name, &self.opts.zone) {
                        Ok(dns) => VipAddr::Name(dns),
                        Err(e) => {
                            self.warn(
                                &app.id,
                                format!("port {index}: label {key}={value:?}: {e}; label skipped"),
                            );
                            continue;
                        }
                    },
                };
                if !vips.contains(&(addr.clone(), parsed.port)) {
                    vips.push((addr, parsed.port));
                }
            }
            if spec.service_port.is_none() && vips.is_empty() {
                continue;
            }
            plans.push(PortPlan {
                index,
                options: port_options(app, index),
                spec,
                protocols,
                slot,
                vips,
                backends: Vec::with_capacity(app.tasks.len()),
            });
        }
        if plans.is_empty() {
            return;
        }

        self.collect_backends(app, &mut plans);

        for plan in plans {
            self.emit(app, plan);
        }
    }

    fn collect_backends(&mut self, app: &'o App, plans: &mut [PortPlan<'_>]) {
        let has_hc = !app.health_checks.is_empty();
        for task in &app.tasks {
            let state = match task_state(task, has_hc) {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(msg) => {
                    self.warn(&app.id, msg);
                    continue;
                }
            };
            let Some(host) = task.host.as_deref().filter(|h| !h.is_empty()) else {
                continue;
            };
            // Looked up on first use, so a task that needs neither is never warned about.
            let mut agent: Option<Option<IpAddr>> = None;
            let mut task_ip: Option<Option<IpAddr>> = None;
            // One shared id per task, made on its first backend.
            let mut id: Option<Arc<str>> = None;
            for plan in plans.iter_mut() {
                let address = match plan.slot {
                    Slot::HostPort(k) => {
                        // Zip rule: a task with fewer ports (older app version) contributes only
                        // the aligned ones.
                        let Some(&port) = task.ports.get(k) else {
                            continue;
                        };
                        if port == 0 {
                            continue;
                        }
                        let ip = match agent {
                            Some(ip) => ip,
                            None => {
                                let ip = self.agent_ip(host);
                                if ip.is_none() {
                                    self.warn(
                                        &app.id,
                                        format!(
                                            "task {}: host {host:?} did not resolve; its agent-address backends skipped",
                                            task.id
                                        ),
                                    );
                                }
                                agent = Some(ip);
                                ip
                            }
                        };
                        let Some(ip) = ip else { continue };
                        SocketAddr::new(ip, port)
                    }
                    Slot::TaskIp(port) => {
                        if port == 0 {
                            continue;
                        }
                        let ip = match task_ip {
                            Some(ip) => ip,
                            None => {
                                let ip = match task.ip_addresses.first() {
                                    None => None,
                                    Some(a) => {
                                        let parsed = host_ip_literal(&a.ip_address);
                                        if parsed.is_none() {
                                            self.warn(
                                                &app.id,
                                                format!(
                                                    "task {}: ipAddresses[0] {:?} is not an IP address; its container-port backends skipped",
                                                    task.id, a.ip_address
                                                ),
                                            );
                                        }
                                        parsed
                                    }
                                };
                                task_ip = Some(ip);
                                ip
                            }
                        };
                        let Some(ip) = ip else { continue };
                        SocketAddr::new(ip, port)
                    }
                };
                let task_id = id
                    .get_or_insert_with(|| Arc::from(task.id.as_str()))
                    .clone();
                plan.backends.push(Backend {
                    address,
                    task: task_id,
                    state,
                });
            }
        }
    }

    /// Turns one port's plan into service-port and VIP frontend entries.
    fn emit(&mut self, app: &App, mut plan: PortPlan<'_>) {
        sort_backends(&mut plan.backends);
        // Every target gets a copy of the backends; the last one takes the vector itself.
        let mut uses = plan.protocols.len()
            * (usize::from(plan.spec.service_port.is_some()) + plan.vips.len());
        let mut backends_for = |v: &mut Vec<Backend>| {
            uses = uses.saturating_sub(1);
            if uses == 0 {
                std::mem::take(v)
            } else {
                v.clone()
            }
        };
        let port_name = plan.spec.name.map(str::to_string);
        let make = |listen: SocketAddr, protocol: Protocol, kind, vip_name, backends| Frontend {
            protocol,
            listen,
            kind,
            vip_name,
            app: app.id.clone(),
            apps: vec![app.id.clone()],
            port_index: plan.index,
            port_name: port_name.clone(),
            options: plan.options.clone(),
            backends,
        };
        for &protocol in plan.protocols {
            if let Some(sp) = plan.spec.service_port {
                let key = FrontendKey {
                    protocol,
                    listen: SocketAddr::new(self.opts.bind_address, sp),
                };
                match self.services.get(&key) {
                    None => {
                        let f = make(
                            key.listen,
                            protocol,
                            FrontendKind::ServicePort,
                            None,
                            backends_for(&mut plan.backends),
                        );
                        self.services.insert(key, f);
                    }
                    Some(winner) if winner.app == app.id => {
                        let msg = format!(
                            "port {}: {protocol} service port {sp} is already used by port {} of this app; port {} dropped for {protocol}",
                            plan.index, winner.port_index, plan.index
                        );
                        self.warn(&app.id, msg);
                    }
                    Some(winner) => {
                        let msg = format!(
                            "port {}: {protocol} service port {sp} is also claimed by {}; {} keeps it (smallest app id), this app's port {} is dropped",
                            plan.index, winner.app, winner.app, plan.index
                        );
                        self.warn(&app.id, msg);
                    }
                }
            }
            for (addr, port) in &plan.vips {
                let key = VipKey {
                    protocol,
                    addr: addr.clone(),
                    port: *port,
                };
                match self.vips.get_mut(&key) {
                    Some(existing) => {
                        if existing.apps.last() != Some(&app.id) {
                            existing.apps.push(app.id.clone());
                        }
                        existing.backends.extend(backends_for(&mut plan.backends));
                    }
                    None => {
                        let (listen, vip_name) = match addr {
                            VipAddr::Ip(ip) => (SocketAddr::new(*ip, *port), None),
                            // Placeholder until the name is allocated an address.
                            VipAddr::Name(n) => (
                                SocketAddr::new(IpAddr::from([0, 0, 0, 0]), *port),
                                Some(n.clone()),
                            ),
                        };
                        let f = make(
                            listen,
                            protocol,
                            FrontendKind::Vip,
                            vip_name,
                            backends_for(&mut plan.backends),
                        );
                        self.vips.insert(key, f);
                    }
                }
            }
        }
    }

    fn finish(mut self) -> Built {
        let reserved: BTreeSet<IpAddr> = self
            .vips
            .keys()
            .filter_map(|k| match k.addr {
                VipAddr::Ip(ip) => Some(ip),
                VipAddr::Name(_) => None,
            })
            .collect();
        let names: BTreeSet<&str> = self
            .vips
            .keys()
            .filter_map(|k| match &k.addr {
                VipAddr::Name(n) => Some(n.as_str()),
                VipAddr::Ip(_) => None,
            })
            .collect();
        let allocation = vip::allocate(names, &reserved, self.opts.vip_cidr);

        let mut frontends = std::mem::take(&mut self.services);
        let vips = std::mem::take(&mut self.vips);
        for (key, mut f) in vips {
            if let VipAddr::Name(name) = &key.addr {
                match allocation.addresses.get(name) {
                    Some(ip) => f.listen = SocketAddr::new(*ip, key.port),
                    None => {
                        let msg = format!(
                            "named VIP {name}: no free address left in {}; VIP skipped",
                            self.opts.vip_cidr
                        );
                        self.warn(&f.app.clone(), msg);
                        continue;
                    }
                }
            }
            let fkey = f.key();
            if let Some(sp) = frontends.get(&fkey) {
                let msg = format!(
                    "VIP {} {} equals the service-port frontend of {} port {}; the service port wins, VIP skipped",
                    f.protocol, f.listen, sp.app, sp.port_index
                );
                self.warn(&f.app.clone(), msg);
                continue;
            }
            sort_backends(&mut f.backends);
            frontends.insert(fkey, f);
        }
        let mut warnings = self.warnings;
        warnings.sort();
        warnings.dedup();
        Built {
            frontends: frontends.into_values().collect(),
            warnings,
        }
    }
}

/// Sorted by address, one backend per address (the smallest task id wins a tie).
fn sort_backends(backends: &mut Vec<Backend>) {
    backends.sort_unstable_by(|a, b| {
        a.address
            .cmp(&b.address)
            .then_with(|| a.task.cmp(&b.task))
            .then_with(|| a.state.cmp(&b.state))
    });
    backends.dedup_by(|later, first| later.address == first.address);
}

/// Builds the table. Deterministic: equal inputs give equal outputs, byte for byte as JSON, and
/// the order of apps in the document does not matter (except between two apps with the same id:
/// the first in document order is used, with a warning).
pub fn build(snapshot: &AppsSnapshot, resolved: &Resolved, opts: &BuildOptions) -> Built {
    let mut b = Builder {
        opts,
        resolved,
        agents: HashMap::with_hasher(Fnv),
        services: BTreeMap::new(),
        vips: BTreeMap::new(),
        warnings: snapshot
            .rejected
            .iter()
            .map(|r| Warning {
                app: r.app.clone(),
                message: r.message.clone(),
            })
            .collect(),
    };
    let mut apps: Vec<&App> = snapshot.apps.iter().map(|a| &**a).collect();
    // Stable: duplicates keep document order.
    apps.sort_by(|a, b| a.id.cmp(&b.id));
    let mut prev: Option<&str> = None;
    for app in apps {
        if prev == Some(app.id.as_str()) {
            b.warn(
                &app.id,
                "duplicate app id in the document; only the first one is used".to_string(),
            );
            continue;
        }
        prev = Some(app.id.as_str());
        b.add_app(app);
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols() {
        assert_eq!(parse_protocols(None), Some(TCP));
        assert_eq!(parse_protocols(Some("tcp")), Some(TCP));
        assert_eq!(parse_protocols(Some(" UDP ")), Some(UDP));
        assert_eq!(parse_protocols(Some("udp,tcp")), Some(BOTH));
        assert_eq!(parse_protocols(Some("tcp, udp")), Some(BOTH));
        assert_eq!(parse_protocols(Some("TCP,UDP")), Some(BOTH));
        for bad in ["", "sctp", "tcp,", "http", "tcp;udp"] {
            assert_eq!(parse_protocols(Some(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn seconds_format() {
        assert_eq!(seconds(3.0).as_deref(), Some("3"));
        assert_eq!(seconds(1.5).as_deref(), Some("1.5"));
        assert_eq!(seconds(-1.0), None);
        assert_eq!(seconds(f64::NAN), None);
        assert_eq!(seconds(f64::INFINITY), None);
    }

    #[test]
    fn ip_literals() {
        assert_eq!(host_ip_literal("10.0.0.1"), Some([10, 0, 0, 1].into()));
        assert_eq!(host_ip_literal("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(host_ip_literal("agent-1.example"), None);
    }
}
