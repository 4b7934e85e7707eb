//! `table::build`: neutral services → routing table. Pure and deterministic.
//!
//! Owns: every rule that turns neutral services ([`super::service`], translated from Marathon
//! apps by [`super::marathon`] and from Marathon pods by [`super::pod`]) into frontends and
//! backends (service ports, VIP labels, agent addresses, merging, conflicts), the one per-owner
//! path every owner kind goes through ([`OwnerRef`]: apps, then pods), and the incremental
//! [`BuildCache`] (parts keyed by owner kind and id). The rules and the reasons behind each
//! decision are written up in `docs/routing.md`.
//!
//! Must not: do I/O, read a clock, resolve hostnames (they arrive in [`Resolved`]), use a
//! randomised hasher or iteration order, or panic on any input.

use super::marathon::marathon_service;
use super::mesos::mesos_service;
use super::options::PortOptions;
use super::pod::pod_service;
use super::service::{OwnerKind, PortAddress, Service};
use super::vip::{self, IpVipScope, VipTarget};
use super::{Backend, Built, Frontend, FrontendKey, FrontendKind, Protocol, Warning};
use crate::model::mesos::MesosTask;
use crate::model::{App, AppsSnapshot, Pod};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Options that shape the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// Address service-port frontends bind (`--bind-address`).
    pub bind_address: IpAddr,
    /// Pool that named VIPs draw their address from (`--vip-cidr`).
    pub vip_cidr: IpNet,
    /// Pool of named VIPs' IPv6 addresses (`--vip-cidr6`). When set, a named VIP is dual-stack:
    /// an IPv4 side with its IPv4 backends and an IPv6 side with its IPv6 ones ([`Merger::finish`]).
    pub vip_cidr6: Option<IpNet>,
    /// DNS zone of named VIPs.
    pub zone: String,
    /// Which addresses an IP VIP label may name (`vip::check_ip_vip`). Passed in, never looked
    /// up: the builder does no I/O.
    pub ip_vip_scope: IpVipScope,
    /// Whether VIP labels of Marathon apps and pods are read. `false` when Mesos tasks are a
    /// source too (`--marathon` with `--mesos`): Marathon writes the same labels into its Mesos
    /// tasks, so VIPs then come from Mesos alone and no backend is counted twice.
    pub marathon_vips: bool,
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

/// The agent hostnames of a snapshot that need DNS (IP literals excluded), sorted and unique:
/// app task hosts, then pod instance agents.
pub fn hosts_to_resolve(snapshot: &AppsSnapshot) -> BTreeSet<&str> {
    let mut hosts = BTreeSet::new();
    for owner in owners(snapshot) {
        owner.for_each_host(|h| {
            if !h.is_empty() && host_ip_literal(h).is_none() {
                hosts.insert(h);
            }
        });
    }
    hosts
}

/// One owner of the build input, borrowed from the snapshot. Every owner kind goes through the
/// same path: translated into a neutral [`Service`], made into a part by [`PartMaker`], merged by
/// [`Merger`], cached by [`BuildCache`]. A new owner kind is one more variant here (and in
/// [`HeldOwner`]) and one more translation.
#[derive(Debug, Clone, Copy)]
enum OwnerRef<'s> {
    App(&'s Arc<App>),
    Pod(&'s Arc<Pod>),
    Task(&'s Arc<MesosTask>),
}

impl<'s> OwnerRef<'s> {
    fn kind(self) -> OwnerKind {
        match self {
            OwnerRef::App(_) => OwnerKind::App,
            OwnerRef::Pod(_) => OwnerKind::Pod,
            OwnerRef::Task(_) => OwnerKind::Task,
        }
    }

    fn id(self) -> &'s str {
        match self {
            OwnerRef::App(a) => &a.id,
            OwnerRef::Pod(p) => &p.id,
            OwnerRef::Task(t) => &t.task.task_id,
        }
    }

    /// The owner's translation into the neutral model; `None` when it has nothing usable (the
    /// reason is in `warnings`).
    fn service(self, warnings: &mut Vec<Warning>) -> Option<Service<'s>> {
        match self {
            OwnerRef::App(a) => marathon_service(a, warnings),
            OwnerRef::Pod(p) => pod_service(p, warnings),
            OwnerRef::Task(t) => mesos_service(t, warnings),
        }
    }

    /// Calls `f` with every agent hostname the owner's endpoints name (raw: possibly empty or an
    /// IP literal, possibly repeated).
    fn for_each_host(self, mut f: impl FnMut(&'s str)) {
        match self {
            OwnerRef::App(a) => a.tasks.iter().filter_map(|t| t.host.as_deref()).for_each(f),
            OwnerRef::Pod(p) => {
                for i in &p.instances {
                    if let Some(h) = i.agent_hostname.as_deref() {
                        f(h);
                    }
                }
            }
            OwnerRef::Task(t) => f(&t.agent_host),
        }
    }

    fn hold(self) -> HeldOwner {
        match self {
            OwnerRef::App(a) => HeldOwner::App(Arc::clone(a)),
            OwnerRef::Pod(p) => HeldOwner::Pod(Arc::clone(p)),
            OwnerRef::Task(t) => HeldOwner::Task(Arc::clone(t)),
        }
    }
}

/// An owner as the cache holds it: held, so that no one else can mutate it in place
/// (`Arc::make_mut` must copy) and its address cannot be reused by another owner.
#[derive(Debug)]
enum HeldOwner {
    App(Arc<App>),
    Pod(Arc<Pod>),
    Task(Arc<MesosTask>),
}

impl HeldOwner {
    /// Whether `owner` is the very allocation held (not merely equal).
    fn is(&self, owner: OwnerRef<'_>) -> bool {
        match (self, owner) {
            (HeldOwner::App(a), OwnerRef::App(b)) => Arc::ptr_eq(a, b),
            (HeldOwner::Pod(a), OwnerRef::Pod(b)) => Arc::ptr_eq(a, b),
            (HeldOwner::Task(a), OwnerRef::Task(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// Every owner of a snapshot, in snapshot order: apps, then pods, then Mesos tasks.
fn owners(snapshot: &AppsSnapshot) -> impl Iterator<Item = OwnerRef<'_>> {
    let apps = snapshot.apps.iter().map(OwnerRef::App);
    apps.chain(snapshot.pods.iter().map(OwnerRef::Pod))
        .chain(snapshot.tasks.iter().map(OwnerRef::Task))
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

/// What one usable port of an app contributes: owned, so that it can be kept between builds.
#[derive(Debug, Clone)]
struct PortPart {
    index: usize,
    /// Non-zero service port.
    service_port: Option<u16>,
    port_name: Option<String>,
    protocols: &'static [Protocol],
    vips: Vec<(VipAddr, u16)>,
    options: PortOptions,
    /// Sorted by address, one per address ([`sort_backends`]); shared with the frontends made
    /// from it.
    backends: Arc<[Backend]>,
    /// Backends at dual-stack tasks' other-family addresses ([`Endpoint::secondary_family`]);
    /// read only for VIP sides of their family. Sorted like `backends`; usually empty.
    secondary: Arc<[Backend]>,
}

/// Everything one app contributes to the table, computed from the app alone (plus the options and
/// the agent addresses it looked up). Frontends are assembled from parts by [`Merger`].
#[derive(Debug, Clone, Default)]
struct AppPart {
    ports: Vec<PortPart>,
    warnings: Vec<Warning>,
    /// A task host was neither an IP literal nor a key of [`Resolved`]: the part depends on an
    /// answer that was missing, so [`BuildCache`] never reuses it.
    missed_host: bool,
}

/// What one port of an app needs while its backends are collected.
struct PortPlan {
    slot: PortAddress,
    part: PortPart,
    backends: Vec<Backend>,
    secondary: Vec<Backend>,
}

/// Computes [`AppPart`]s. Holds the per-build memo of agent addresses.
struct PartMaker<'o> {
    opts: &'o BuildOptions,
    resolved: &'o Resolved,
    /// Agent addresses already looked up in this build (a few hundred agents, 50,000 tasks), and
    /// whether the answer was missing from `resolved`.
    agents: HashMap<&'o str, (Option<IpAddr>, bool), Fnv>,
}

/// FNV-1a: a fixed (not randomised) hasher for the per-build agent memo and the build cache.
/// Iteration order of those maps never reaches the output.
#[derive(Debug, Default, Clone, Copy)]
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

impl<'o> PartMaker<'o> {
    fn new(opts: &'o BuildOptions, resolved: &'o Resolved) -> Self {
        PartMaker {
            opts,
            resolved,
            agents: HashMap::with_hasher(Fnv),
        }
    }

    /// The agent address of `host`, and whether `resolved` lacked an answer for it.
    fn agent_ip(&mut self, host: &'o str) -> (Option<IpAddr>, bool) {
        if let Some(answer) = self.agents.get(host) {
            return *answer;
        }
        let answer = match host_ip_literal(host) {
            Some(ip) => (Some(ip), false),
            None => match self.resolved.hosts.get(host) {
                Some(ip) => (*ip, false),
                None => (None, true),
            },
        };
        self.agents.insert(host, answer);
        answer
    }

    /// What one owner contributes, through its neutral service.
    fn owner_part(&mut self, owner: OwnerRef<'o>) -> AppPart {
        let mut warnings = Vec::new();
        match owner.service(&mut warnings) {
            Some(service) => {
                let mut part = self.service_part(&service);
                part.warnings.extend(warnings);
                part
            }
            None => AppPart {
                warnings,
                ..AppPart::default()
            },
        }
    }

    /// What one neutral service contributes: its frontends' parts and backends.
    fn service_part(&mut self, svc: &Service<'o>) -> AppPart {
        let mut out = AppPart::default();
        let warn = |out: &mut AppPart, message: String| {
            out.warnings.push(Warning {
                app: Some(svc.id.to_string()),
                message,
            })
        };
        let mut plans: Vec<PortPlan> = Vec::with_capacity(svc.ports.len());
        let read_vips = self.opts.marathon_vips || svc.kind == OwnerKind::Task;
        for port in &svc.ports {
            let index = port.index;
            let mut vips = Vec::new();
            let labels = port.vip_labels.as_deref().filter(|_| read_vips);
            for (key, value) in labels.into_iter().flatten() {
                if !vip::is_vip_label_key(key) {
                    continue;
                }
                let parsed = match vip::parse_vip_label(value) {
                    Ok(p) => p,
                    Err(e) => {
                        warn(
                            &mut out,
                            format!("port {index}: label {key}={value:?}: {e}; label skipped"),
                        );
                        continue;
                    }
                };
                let addr = match parsed.target {
                    VipTarget::Ip(ip) => match vip::check_ip_vip(ip, &self.opts.ip_vip_scope) {
                        Ok(()) => VipAddr::Ip(ip),
                        Err(e) => {
                            warn(
                                &mut out,
                                format!("port {index}: label {key}={value:?}: {e}; label skipped"),
                            );
                            continue;
                        }
                    },
                    VipTarget::Name(name) => {
                        match vip::framework_dns_name(&name, svc.framework, &self.opts.zone) {
                            Ok(dns) => VipAddr::Name(dns),
                            Err(e) => {
                                warn(
                                    &mut out,
                                    format!(
                                        "port {index}: label {key}={value:?}: {e}; label skipped"
                                    ),
                                );
                                continue;
                            }
                        }
                    }
                };
                if !vips.contains(&(addr.clone(), parsed.port)) {
                    vips.push((addr, parsed.port));
                }
            }
            if port.service_port.is_none() && vips.is_empty() {
                continue;
            }
            for w in &port.option_warnings {
                warn(&mut out, w.clone());
            }
            plans.push(PortPlan {
                part: PortPart {
                    index,
                    service_port: port.service_port,
                    port_name: port.name.map(str::to_string),
                    protocols: port.protocols,
                    vips,
                    options: port.options.clone(),
                    backends: Arc::from([]),
                    secondary: Arc::from([]),
                },
                slot: port.address,
                backends: Vec::with_capacity(svc.endpoints.len()),
                secondary: Vec::new(),
            });
        }
        if plans.is_empty() {
            return out;
        }
        for w in &svc.endpoint_warnings {
            warn(&mut out, w.clone());
        }

        self.collect_backends(svc, &mut plans, &mut out);

        out.ports = plans
            .into_iter()
            .map(|mut plan| {
                sort_backends(&mut plan.backends);
                sort_backends(&mut plan.secondary);
                PortPart {
                    backends: plan.backends.into(),
                    secondary: plan.secondary.into(),
                    ..plan.part
                }
            })
            .collect();
        out
    }

    fn collect_backends(&mut self, svc: &Service<'o>, plans: &mut [PortPlan], out: &mut AppPart) {
        let warn = |out: &mut AppPart, message: String| {
            out.warnings.push(Warning {
                app: Some(svc.id.to_string()),
                message,
            })
        };
        for ep in &svc.endpoints {
            let Some(host) = ep.agent else { continue };
            // Looked up on first use, so an endpoint that needs neither is never warned about.
            let mut agent: Option<Option<IpAddr>> = None;
            let mut own_ip: Option<Option<IpAddr>> = None;
            // One shared id per endpoint, made on its first backend.
            let mut id: Option<Arc<str>> = None;
            for plan in plans.iter_mut() {
                let address = match plan.slot {
                    PortAddress::AgentPort(k) => {
                        // Zip rule: a task with fewer ports (older app version) contributes only
                        // the aligned ones.
                        let Some(&port) = ep.host_ports.get(k) else {
                            continue;
                        };
                        if port == 0 {
                            continue;
                        }
                        let ip = match agent {
                            Some(ip) => ip,
                            None => {
                                let (ip, missed) = self.agent_ip(host);
                                out.missed_host |= missed;
                                if ip.is_none() {
                                    warn(
                                        out,
                                        format!(
                                            "task {}: host {host:?} did not resolve; its agent-address backends skipped",
                                            ep.task
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
                    PortAddress::EndpointIp(port) => {
                        if port == 0 {
                            continue;
                        }
                        let ip = match own_ip {
                            Some(ip) => ip,
                            None => {
                                let ip = match ep.ip {
                                    None => None,
                                    Some(raw) => {
                                        let parsed = host_ip_literal(raw);
                                        if parsed.is_none() {
                                            warn(
                                                out,
                                                format!(
                                                    "task {}: ipAddresses[0] {raw:?} is not an IP address; its container-port backends skipped",
                                                    ep.task
                                                ),
                                            );
                                        }
                                        parsed
                                    }
                                };
                                own_ip = Some(ip);
                                ip
                            }
                        };
                        let Some(ip) = ip else { continue };
                        SocketAddr::new(ip, port)
                    }
                };
                let task_id = id.get_or_insert_with(|| Arc::from(ep.task)).clone();
                let list = if ep.secondary_family {
                    &mut plan.secondary
                } else {
                    &mut plan.backends
                };
                list.push(Backend {
                    address,
                    task: task_id,
                    state: ep.state,
                });
            }
        }
    }
}

/// Assembles frontends from app parts, in app id order: service-port conflicts (smallest app id
/// wins), VIPs shared across apps, named-VIP address allocation. Backend lists are shared with the
/// parts, never copied, except where several ports feed one VIP.
struct Merger<'o> {
    opts: &'o BuildOptions,
    services: BTreeMap<FrontendKey, Frontend>,
    vips: BTreeMap<VipKey, PendingVip>,
    warnings: Vec<Warning>,
}

/// A VIP frontend (backends not filled in yet) and the backend lists of every port that feeds it,
/// in app id order: each port's `backends` and its `secondary` (other-family) backends.
struct PendingVip {
    frontend: Frontend,
    lists: Vec<Arc<[Backend]>>,
    secondary: Vec<Arc<[Backend]>>,
}

impl<'o> Merger<'o> {
    fn new(opts: &'o BuildOptions, snapshot: &AppsSnapshot) -> Self {
        Merger {
            opts,
            services: BTreeMap::new(),
            vips: BTreeMap::new(),
            warnings: snapshot
                .rejected
                .iter()
                .chain(&snapshot.rejected_pods)
                .chain(&snapshot.rejected_tasks)
                .map(|r| Warning {
                    app: r.app.clone(),
                    message: r.message.clone(),
                })
                .collect(),
        }
    }

    fn warn(&mut self, app: &str, message: String) {
        self.warnings.push(Warning {
            app: Some(app.to_string()),
            message,
        });
    }

    /// Adds one owner's part.
    fn add(&mut self, owner: OwnerKind, app_id: &str, part: &AppPart) {
        self.warnings.extend_from_slice(&part.warnings);
        for port in &part.ports {
            self.emit(owner, app_id, port);
        }
    }

    /// Turns one port's part into service-port and VIP frontend entries.
    fn emit(&mut self, owner: OwnerKind, app_id: &str, port: &PortPart) {
        let make = |listen: SocketAddr, protocol: Protocol, kind, vip_name, backends| Frontend {
            protocol,
            listen,
            kind,
            vip_name,
            app: app_id.to_string(),
            owner_kind: owner,
            apps: vec![app_id.to_string()],
            port_index: port.index,
            port_name: port.port_name.clone(),
            options: port.options.clone(),
            backends,
        };
        for &protocol in port.protocols {
            if let Some(sp) = port.service_port {
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
                            Arc::clone(&port.backends),
                        );
                        self.services.insert(key, f);
                    }
                    Some(winner) if winner.app == app_id && winner.owner_kind == owner => {
                        let msg = format!(
                            "port {}: {protocol} service port {sp} is already used by port {} of this app; port {} dropped for {protocol}",
                            port.index, winner.port_index, port.index
                        );
                        self.warn(app_id, msg);
                    }
                    Some(winner) => {
                        let msg = format!(
                            "port {}: {protocol} service port {sp} is also claimed by {}; {} keeps it (smallest app id), this app's port {} is dropped",
                            port.index, winner.app, winner.app, port.index
                        );
                        self.warn(app_id, msg);
                    }
                }
            }
            for (addr, vip_port) in &port.vips {
                let key = VipKey {
                    protocol,
                    addr: addr.clone(),
                    port: *vip_port,
                };
                match self.vips.get_mut(&key) {
                    Some(PendingVip {
                        frontend: existing,
                        lists,
                        secondary,
                    }) => {
                        if existing.apps.last().map(String::as_str) != Some(app_id) {
                            existing.apps.push(app_id.to_string());
                        }
                        lists.push(Arc::clone(&port.backends));
                        if !port.secondary.is_empty() {
                            secondary.push(Arc::clone(&port.secondary));
                        }
                    }
                    None => {
                        let (listen, vip_name) = match addr {
                            VipAddr::Ip(ip) => (SocketAddr::new(*ip, *vip_port), None),
                            // Placeholder until the name is allocated an address.
                            VipAddr::Name(n) => (
                                SocketAddr::new(IpAddr::from([0, 0, 0, 0]), *vip_port),
                                Some(n.clone()),
                            ),
                        };
                        let f = make(listen, protocol, FrontendKind::Vip, vip_name, Arc::from([]));
                        let lists = vec![Arc::clone(&port.backends)];
                        let secondary = if port.secondary.is_empty() {
                            Vec::new()
                        } else {
                            vec![Arc::clone(&port.secondary)]
                        };
                        self.vips.insert(
                            key,
                            PendingVip {
                                frontend: f,
                                lists,
                                secondary,
                            },
                        );
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
        let allocation = vip::allocate(names.iter().copied(), &reserved, self.opts.vip_cidr);
        // The second family's pool, when it is one (the CLI refuses two pools of one family).
        let cidr6 = self
            .opts
            .vip_cidr6
            .filter(|c| c.addr().is_ipv6() != self.opts.vip_cidr.addr().is_ipv6());
        let allocation6 = cidr6.map(|c| vip::allocate(names.iter().copied(), &reserved, c));

        let mut frontends = std::mem::take(&mut self.services);
        let vips = std::mem::take(&mut self.vips);
        for (key, pending) in vips {
            // Each side: (pool, allocation, family filter). An IP VIP has one side, of its own
            // family; a named VIP one per pool (module docs of `table::vip`, "Dual-stack").
            let sides: Vec<(IpNet, Option<IpAddr>, Option<bool>)> = match (&key.addr, cidr6) {
                (VipAddr::Ip(ip), _) => vec![(self.opts.vip_cidr, Some(*ip), Some(ip.is_ipv6()))],
                (VipAddr::Name(name), None) => vec![(
                    self.opts.vip_cidr,
                    allocation.addresses.get(name).copied(),
                    None,
                )],
                (VipAddr::Name(name), Some(c6)) => {
                    let v6_of = |c: IpNet| Some(c.addr().is_ipv6());
                    let a6 = allocation6
                        .as_ref()
                        .and_then(|a| a.addresses.get(name))
                        .copied();
                    vec![
                        (
                            self.opts.vip_cidr,
                            allocation.addresses.get(name).copied(),
                            v6_of(self.opts.vip_cidr),
                        ),
                        (c6, a6, v6_of(c6)),
                    ]
                }
            };
            let mut built: Vec<(IpNet, Option<IpAddr>, Arc<[Backend]>)> = sides
                .into_iter()
                .map(|(pool, ip, family)| {
                    let backends = side_backends(&pending.lists, &pending.secondary, family);
                    (pool, ip, backends)
                })
                .collect();
            if let VipAddr::Ip(ip) = &key.addr {
                let dropped = pending
                    .lists
                    .iter()
                    .flat_map(|l| l.iter())
                    .filter(|b| b.address.is_ipv6() != ip.is_ipv6())
                    .count();
                if dropped > 0 {
                    let msg = format!(
                        "VIP {} {}: {dropped} backend(s) of the other address family left out (an IP VIP forwards within its family)",
                        key.protocol,
                        SocketAddr::new(*ip, key.port)
                    );
                    self.warn(&pending.frontend.app.clone(), msg);
                }
            }
            if built.len() == 2 {
                // Dual-stack: the second side exists when it has backends, the first unless
                // only the second has (a client would be sent to an address with nothing behind).
                if built[1].2.is_empty() {
                    built.pop();
                } else if built[0].2.is_empty() {
                    built.remove(0);
                }
            }
            let mut template = Some(pending.frontend);
            let last = built.len().saturating_sub(1);
            for (i, (pool, ip, backends)) in built.into_iter().enumerate() {
                // The last side takes the frontend; an earlier one copies it.
                let f = if i == last {
                    template.take()
                } else {
                    template.clone()
                };
                let Some(mut f) = f else { break };
                let Some(ip) = ip else {
                    let name = f.vip_name.clone().unwrap_or_default();
                    let msg =
                        format!("named VIP {name}: no free address left in {pool}; VIP skipped");
                    self.warn(&f.app.clone(), msg);
                    continue;
                };
                f.listen = SocketAddr::new(ip, key.port);
                let fkey = f.key();
                if let Some(sp) = frontends.get(&fkey) {
                    let msg = format!(
                        "VIP {} {} equals the service-port frontend of {} port {}; the service port wins, VIP skipped",
                        f.protocol, f.listen, sp.app, sp.port_index
                    );
                    self.warn(&f.app.clone(), msg);
                    continue;
                }
                f.backends = backends;
                frontends.insert(fkey, f);
            }
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

/// The backends of one VIP side, from the lists of the ports that feed it. `family` `None` (a
/// single-stack named VIP): every primary backend, whatever its family. `Some(v6)`: the primary
/// and secondary backends of that family only. A single list that needs no filtering is shared,
/// not copied (the common case).
fn side_backends(
    lists: &[Arc<[Backend]>],
    secondary: &[Arc<[Backend]>],
    family: Option<bool>,
) -> Arc<[Backend]> {
    let fits = |b: &Backend| family.map_or(true, |v6| b.address.is_ipv6() == v6);
    if let ([only], []) = (lists, secondary) {
        if only.iter().all(fits) {
            return Arc::clone(only);
        }
    }
    let pool = if family.is_some() { secondary } else { &[] };
    let mut all: Vec<Backend> = lists
        .iter()
        .chain(pool)
        .flat_map(|l| l.iter())
        .filter(|b| fits(b))
        .cloned()
        .collect();
    sort_backends(&mut all);
    all.into()
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

/// The owners of a snapshot in the order the build visits them: apps by id, then pods by id,
/// each (kind, id) once. A later owner with a (kind, id) already seen is reported and skipped
/// (stable sort: the first in document order wins).
fn owners_in_build_order<'a>(
    snapshot: &'a AppsSnapshot,
    merger: &mut Merger<'_>,
) -> Vec<OwnerRef<'a>> {
    let mut owners: Vec<OwnerRef<'a>> = owners(snapshot).collect();
    owners.sort_by(|a, b| (a.kind(), a.id()).cmp(&(b.kind(), b.id())));
    let mut prev: Option<(OwnerKind, &str)> = None;
    owners.retain(|o| {
        let key = (o.kind(), o.id());
        if prev == Some(key) {
            let what = match o.kind() {
                OwnerKind::App => "app",
                OwnerKind::Pod => "pod",
                OwnerKind::Task => "task",
            };
            merger.warn(
                o.id(),
                format!("duplicate {what} id in the document; only the first one is used"),
            );
            return false;
        }
        prev = Some(key);
        true
    });
    owners
}

/// Builds the table. Deterministic: equal inputs give equal outputs, byte for byte as JSON, and
/// the order of apps and pods in the document does not matter (except between two owners of
/// one kind with the same id: the first in document order is used, with a warning).
pub fn build(snapshot: &AppsSnapshot, resolved: &Resolved, opts: &BuildOptions) -> Built {
    let mut merger = Merger::new(opts, snapshot);
    let mut maker = PartMaker::new(opts, resolved);
    for owner in owners_in_build_order(snapshot, &mut merger) {
        let part = maker.owner_part(owner);
        merger.add(owner.kind(), owner.id(), &part);
    }
    merger.finish()
}

/// An incremental [`build`]: keeps each owner's part between builds and recomputes only the
/// owners (apps, pods) whose `Arc` changed. The Marathon source applies an event by replacing the one app it
/// touches, so an event at 2,000 apps / 50,000 tasks recomputes one app instead of all of them.
///
/// The result is always equal to `build` on the same input (a property test checks it). A part is
/// reused only when it was made from the same `Arc<App>` or `Arc<Pod>` (held here, so its address
/// cannot be reused by another owner), with the same options, no agent address that has changed since, and no
/// host that was missing from `Resolved`. Still pure: no I/O, no clock; the cache is explicit state.
///
/// Costs memory: one more copy of every backend (about 60 bytes each).
#[derive(Debug, Default)]
pub struct BuildCache {
    parts: HashMap<(OwnerKind, String), CachedPart, Fnv>,
    opts: Option<BuildOptions>,
    resolved: Resolved,
    last: CacheStats,
}

/// One owner as the cache keeps it.
#[derive(Debug)]
struct CachedPart {
    owner: HeldOwner,
    part: AppPart,
    /// The owner's agent hosts that need DNS ([`owner_hosts`]).
    hosts: Box<[Box<str>]>,
}

/// The agent hosts of one owner that need DNS: not empty, not an IP literal; unique.
fn owner_hosts(owner: OwnerRef<'_>) -> Box<[Box<str>]> {
    let mut hosts: Vec<Box<str>> = Vec::new();
    owner.for_each_host(|host| {
        if !host.is_empty()
            && host_ip_literal(host).is_none()
            && !hosts.iter().any(|h| &**h == host)
        {
            hosts.push(host.into());
        }
    });
    hosts.into_boxed_slice()
}

/// How the last [`BuildCache::build`] went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Owners (apps, pods) whose part was reused.
    pub reused: usize,
    /// Owners whose part was computed.
    pub computed: usize,
}

impl BuildCache {
    pub fn new() -> Self {
        BuildCache::default()
    }

    /// Builds the table for `snapshot`, reusing every part that is still valid.
    pub fn build(
        &mut self,
        snapshot: &AppsSnapshot,
        resolved: &Resolved,
        opts: &BuildOptions,
    ) -> Built {
        if self.opts.as_ref() != Some(opts) || self.agent_changed(resolved) {
            self.parts.clear();
            self.opts = Some(opts.clone());
        }
        let mut merger = Merger::new(opts, snapshot);
        let mut maker = PartMaker::new(opts, resolved);
        let mut old = std::mem::take(&mut self.parts);
        let mut stats = CacheStats::default();
        // One key buffer for the lookups: a reused part keeps the key it was stored under.
        let mut lookup = (OwnerKind::App, String::new());
        for owner in owners_in_build_order(snapshot, &mut merger) {
            lookup.0 = owner.kind();
            lookup.1.clear();
            lookup.1.push_str(owner.id());
            let (key, cached) = match old.remove_entry(&lookup) {
                Some((key, cached)) if cached.owner.is(owner) && !cached.part.missed_host => {
                    stats.reused += 1;
                    (key, cached)
                }
                _ => {
                    stats.computed += 1;
                    let cached = CachedPart {
                        owner: owner.hold(),
                        part: maker.owner_part(owner),
                        hosts: owner_hosts(owner),
                    };
                    (lookup.clone(), cached)
                }
            };
            merger.add(key.0, &key.1, &cached.part);
            self.parts.insert(key, cached);
        }
        // Parts of owners that are gone are freed here (`old`).
        self.resolved.clone_from(resolved);
        self.last = stats;
        merger.finish()
    }

    /// The agent hostnames of `snapshot` that need DNS before [`BuildCache::build`], unique, in
    /// no particular order. Owners the cache holds unchanged answer from the cache; only the
    /// others have their tasks scanned (50,000 tasks otherwise, on every event).
    pub fn hosts_to_resolve(&self, snapshot: &AppsSnapshot) -> Vec<String> {
        let mut hosts: HashSet<&str, Fnv> = HashSet::with_hasher(Fnv);
        let mut key = (OwnerKind::App, String::new());
        for owner in owners(snapshot) {
            key.0 = owner.kind();
            key.1.clear();
            key.1.push_str(owner.id());
            match self.parts.get(&key) {
                Some(cached) if cached.owner.is(owner) => {
                    hosts.extend(cached.hosts.iter().map(|h| &**h));
                }
                _ => owner.for_each_host(|host| {
                    if !host.is_empty() && host_ip_literal(host).is_none() {
                        hosts.insert(host);
                    }
                }),
            }
        }
        hosts.into_iter().map(str::to_owned).collect()
    }

    /// How the last build went.
    pub fn last_stats(&self) -> CacheStats {
        self.last
    }

    /// Whether an agent address used by an earlier build has a different answer now. Hosts that
    /// are new or gone do not matter: a kept part only used hosts that were answered (see
    /// `missed_host`), and its app still has them if it is unchanged.
    fn agent_changed(&self, resolved: &Resolved) -> bool {
        self.resolved
            .hosts
            .iter()
            .any(|(host, ip)| resolved.hosts.get(host).is_some_and(|now| now != ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::options::ProbeKind;
    use crate::table::service::OwnerKind;
    use crate::table::BackendState;

    #[test]
    fn ip_literals() {
        assert_eq!(host_ip_literal("10.0.0.1"), Some([10, 0, 0, 1].into()));
        assert_eq!(host_ip_literal("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(host_ip_literal("agent-1.example"), None);
    }

    fn snapshot(doc: &str) -> AppsSnapshot {
        crate::model::parse_apps_document(doc.as_bytes()).unwrap()
    }

    const TWO_APPS: &str = r#"{"apps":[
        {"id":"/a","portDefinitions":[{"port":10000}],
         "tasks":[{"id":"a.1","host":"agent-a","ports":[31000],"state":"TASK_RUNNING"}]},
        {"id":"/b","portDefinitions":[{"port":10001}],
         "tasks":[{"id":"b.1","host":"10.0.0.2","ports":[31001],"state":"TASK_RUNNING"}]}]}"#;

    fn answers(ip: Option<&str>) -> Resolved {
        let mut r = Resolved::default();
        if let Some(ip) = ip {
            r.hosts.insert("agent-a".into(), Some(ip.parse().unwrap()));
        }
        r
    }

    #[test]
    fn cache_reuses_unchanged_apps_and_recomputes_replaced_ones() {
        let opts = BuildOptions::default();
        let r = answers(Some("10.0.0.1"));
        let mut snap = snapshot(TWO_APPS);
        let mut cache = BuildCache::new();
        assert_eq!(cache.build(&snap, &r, &opts), build(&snap, &r, &opts));
        assert_eq!(
            cache.last_stats(),
            CacheStats {
                reused: 0,
                computed: 2
            }
        );
        // What an applied event does: replace one app's Arc.
        let mut b = (*snap.apps[1]).clone();
        b.tasks[0].ports = vec![31002];
        snap.apps[1] = Arc::new(b);
        let got = cache.build(&snap, &r, &opts);
        assert_eq!(got, build(&snap, &r, &opts));
        assert_eq!(got.frontends[1].backends[0].address.port(), 31002);
        assert_eq!(
            cache.last_stats(),
            CacheStats {
                reused: 1,
                computed: 1
            }
        );
    }

    #[test]
    fn cache_recomputes_when_an_agent_address_changes() {
        let opts = BuildOptions::default();
        let snap = snapshot(TWO_APPS);
        let mut cache = BuildCache::new();
        cache.build(&snap, &answers(Some("10.0.0.1")), &opts);
        let r = answers(Some("10.0.0.9"));
        let got = cache.build(&snap, &r, &opts);
        assert_eq!(got, build(&snap, &r, &opts));
        assert_eq!(
            got.frontends[0].backends[0].address.ip().to_string(),
            "10.0.0.9"
        );
    }

    #[test]
    fn cache_never_reuses_a_part_made_without_an_answer_for_its_host() {
        let opts = BuildOptions::default();
        let snap = snapshot(TWO_APPS);
        let mut cache = BuildCache::new();
        // No answer for agent-a: its backend is skipped with a warning.
        let first = cache.build(&snap, &answers(None), &opts);
        assert!(first.frontends[0].backends.is_empty());
        let r = answers(Some("10.0.0.1"));
        let got = cache.build(&snap, &r, &opts);
        assert_eq!(got, build(&snap, &r, &opts));
        assert_eq!(got.frontends[0].backends.len(), 1);
        assert_eq!(
            cache.last_stats(),
            CacheStats {
                reused: 1,
                computed: 1
            }
        );
    }

    #[test]
    fn bad_ip_vips_and_overlong_names_are_warnings_naming_app_and_label() {
        let long = "x".repeat(60);
        let doc = format!(
            r#"{{"apps":[{{"id":"/v","portDefinitions":[{{"port":10000,"labels":{{
                "VIP_0":"0.0.0.0:80","VIP_1":"255.255.255.255:80","VIP_2":"224.0.0.1:80",
                "VIP_3":"10.10.0.1:80","VIP_4":"127.1.0.1:80","VIP_5":"{long}.{long}.{long}.{long}:80"}}}}]}}]}}"#
        );
        let snap = snapshot(&doc);
        let r = Resolved::default();
        let b = build(&snap, &r, &BuildOptions::default());
        let vips: Vec<String> = b
            .frontends
            .iter()
            .filter(|f| f.kind == FrontendKind::Vip)
            .map(|f| f.listen.to_string())
            .collect();
        assert_eq!(vips, ["10.10.0.1:80", "127.1.0.1:80"]);
        let texts: Vec<&str> = b.warnings.iter().map(|w| w.message.as_str()).collect();
        for (label, why) in [
            ("VIP_0=\"0.0.0.0:80\"", "unspecified"),
            ("VIP_1=\"255.255.255.255:80\"", "broadcast"),
            ("VIP_2=\"224.0.0.1:80\"", "multicast"),
            ("VIP_5=", "the limit is 255"),
        ] {
            assert!(
                texts.iter().any(|t| t.contains(label) && t.contains(why)),
                "{label}: {texts:?}"
            );
        }
        assert!(b.warnings.iter().all(|w| w.app.as_deref() == Some("/v")));
        assert_eq!(b.warnings.len(), 4, "{texts:?}");
        // A scope: only loopback and the listed ranges.
        let opts = BuildOptions {
            ip_vip_scope: IpVipScope::Within(vec!["11.0.0.0/8".parse().unwrap()]),
            ..BuildOptions::default()
        };
        let b = build(&snap, &r, &opts);
        assert!(b.warnings.iter().any(|w| w.message.contains(
            "label VIP_3=\"10.10.0.1:80\": 10.10.0.1 is neither loopback nor in 11.0.0.0/8; label skipped"
        )));
        assert_eq!(b.warnings.len(), 5);
    }

    /// `(listen, [backend addresses])` of every VIP frontend.
    fn vip_sides(b: &Built) -> Vec<(String, Vec<String>)> {
        b.frontends
            .iter()
            .filter(|f| f.kind == FrontendKind::Vip)
            .map(|f| {
                let backends = f.backends.iter().map(|b| b.address.to_string()).collect();
                (f.listen.to_string(), backends)
            })
            .collect()
    }

    /// A container-network app whose tasks have the given `ipAddresses` (JSON arrays).
    fn dual_stack_app(vip: &str, tasks: &[&str]) -> String {
        let tasks: Vec<String> = tasks
            .iter()
            .enumerate()
            .map(|(i, ips)| {
                format!(
                    r#"{{"id":"w.{i}","host":"10.0.0.1","ports":[31000],"state":"TASK_RUNNING","ipAddresses":{ips}}}"#
                )
            })
            .collect();
        format!(
            r#"{{"apps":[{{"id":"/w","networks":[{{"mode":"container","name":"dcos"}}],
            "container":{{"portMappings":[{{"containerPort":80,"servicePort":10080,
              "labels":{{"VIP_0":"{vip}"}}}}]}},
            "tasks":[{}]}}]}}"#,
            tasks.join(",")
        )
    }

    const V4: &str = r#"[{"ipAddress":"9.0.0.1","protocol":"IPv4"}]"#;
    const DUAL: &str =
        r#"[{"ipAddress":"9.0.0.2","protocol":"IPv4"},{"ipAddress":"fd00::2","protocol":"IPv6"}]"#;
    const V6: &str = r#"[{"ipAddress":"fd00::3","protocol":"IPv6"}]"#;

    #[test]
    fn with_vip_cidr6_a_named_vip_has_a_side_per_family_each_with_its_own_backends() {
        let snap = snapshot(&dual_stack_app("/w:80", &[V4, DUAL, V6]));
        let opts = BuildOptions {
            vip_cidr6: Some("fd01:c::/64".parse().unwrap()),
            ..BuildOptions::default()
        };
        let b = build(&snap, &Resolved::default(), &opts);
        let sides = vip_sides(&b);
        assert_eq!(sides.len(), 2, "{sides:?}");
        let (v4, v6) = (&sides[0], &sides[1]);
        assert!(v4.0.starts_with("11."), "{v4:?}");
        assert_eq!(v4.1, ["9.0.0.1:80", "9.0.0.2:80"]);
        assert!(v6.0.starts_with("[fd01:c::"), "{v6:?}");
        assert_eq!(v6.1, ["[fd00::2]:80", "[fd00::3]:80"]);
        let named: Vec<_> = b
            .frontends
            .iter()
            .filter_map(|f| f.vip_name.as_deref())
            .collect();
        assert_eq!(named, ["w.marathon.l4lb.thisdcos.directory"; 2]);
        // The service port counts each task once, at its primary address.
        let sp = b
            .frontends
            .iter()
            .find(|f| f.kind == FrontendKind::ServicePort)
            .unwrap();
        let sp: Vec<String> = sp.backends.iter().map(|b| b.address.to_string()).collect();
        assert_eq!(sp, ["9.0.0.1:80", "9.0.0.2:80", "[fd00::3]:80"]);
        // The address is a function of the name alone: the same on every agent, whatever the
        // backends.
        let alone = build(
            &snapshot(&dual_stack_app("/w:80", &[DUAL])),
            &Resolved::default(),
            &opts,
        );
        assert_eq!(
            vip_sides(&alone).iter().map(|s| &s.0).collect::<Vec<_>>(),
            [&v4.0, &v6.0]
        );
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    }

    #[test]
    fn a_dual_stack_named_vip_has_only_the_sides_with_backends_and_without_cidr6_one_mixed_side() {
        let opts6 = BuildOptions {
            vip_cidr6: Some("fd01:c::/64".parse().unwrap()),
            ..BuildOptions::default()
        };
        let r = Resolved::default();
        let only_v4 = vip_sides(&build(
            &snapshot(&dual_stack_app("/w:80", &[V4])),
            &r,
            &opts6,
        ));
        assert_eq!(only_v4.len(), 1);
        assert!(only_v4[0].0.starts_with("11."));
        // Only IPv6 backends: no IPv4 side to send a client to an address with nothing behind.
        let only_v6 = vip_sides(&build(
            &snapshot(&dual_stack_app("/w:80", &[V6])),
            &r,
            &opts6,
        ));
        assert_eq!(only_v6.len(), 1);
        assert!(only_v6[0].0.starts_with("[fd01:c::"), "{only_v6:?}");
        // No backends at all: the IPv4 side, as before dual-stack.
        let none = vip_sides(&build(&snapshot(&dual_stack_app("/w:80", &[])), &r, &opts6));
        assert_eq!(none.len(), 1);
        assert!(none[0].0.starts_with("11.") && none[0].1.is_empty());
        // Without --vip-cidr6: one side with every primary backend, whatever its family.
        let mixed = vip_sides(&build(
            &snapshot(&dual_stack_app("/w:80", &[V4, DUAL, V6])),
            &r,
            &BuildOptions::default(),
        ));
        assert_eq!(mixed.len(), 1);
        assert_eq!(mixed[0].1, ["9.0.0.1:80", "9.0.0.2:80", "[fd00::3]:80"]);
    }

    #[test]
    fn an_ip_vip_takes_only_backends_of_its_own_family_and_says_what_it_left_out() {
        let r = Resolved::default();
        let opts = BuildOptions::default();
        let v4 = build(
            &snapshot(&dual_stack_app("10.0.0.7:80", &[V4, DUAL, V6])),
            &r,
            &opts,
        );
        assert_eq!(
            vip_sides(&v4),
            [(
                "10.0.0.7:80".to_string(),
                vec!["9.0.0.1:80".to_string(), "9.0.0.2:80".to_string()]
            )]
        );
        let texts: Vec<&str> = v4.warnings.iter().map(|w| w.message.as_str()).collect();
        assert_eq!(
            texts,
            ["VIP tcp 10.0.0.7:80: 1 backend(s) of the other address family left out (an IP VIP forwards within its family)"]
        );
        let v6 = build(
            &snapshot(&dual_stack_app("[fd00::99]:80", &[V4, DUAL, V6])),
            &r,
            &opts,
        );
        assert_eq!(
            vip_sides(&v6),
            [(
                "[fd00::99]:80".to_string(),
                vec!["[fd00::2]:80".to_string(), "[fd00::3]:80".to_string()]
            )]
        );
        assert_eq!(v6.warnings.len(), 1, "{:?}", v6.warnings);
    }

    #[test]
    fn port_labels_win_over_app_labels_and_bad_values_warn_and_fall_back() {
        let snap = snapshot(
            r#"{"apps":[{"id":"/o",
            "labels":{"VIPD_0_BALANCE":"p2c","VIPD_1_BALANCE":"p2c","VIPD_1_HEALTHCHECK":"icmp"},
            "portDefinitions":[{"port":10000,"labels":{"VIPD_BALANCE":"maglev"}},
                               {"port":10001,"labels":{"VIPD_BALANCE":"random"}}],
            "healthChecks":[{"protocol":"HTTP","portIndex":1,"path":"no-slash",
                             "intervalSeconds":0,"timeoutSeconds":2}]}]}"#,
        );
        let b = build(&snap, &Resolved::default(), &BuildOptions::default());
        let f0 = &b.frontends[0].options;
        assert_eq!(
            f0.balance(),
            Some(crate::table::Balance::Maglev),
            "port label wins"
        );
        let f1 = &b.frontends[1].options;
        assert_eq!(
            f1.balance(),
            None,
            "a bad port label is not replaced by the app label"
        );
        assert_eq!(f1.active_check(), None);
        let probe = f1.probe.as_ref().unwrap();
        assert_eq!(probe.kind, ProbeKind::Http { path: "/".into() });
        assert_eq!(probe.interval, None);
        assert_eq!(probe.timeout, Some(std::time::Duration::from_secs(2)));
        let texts: Vec<&str> = b.warnings.iter().map(|w| w.message.as_str()).collect();
        assert_eq!(
            texts,
            [
                "port 1: healthChecks[0].intervalSeconds 0: not a number of seconds above 0 and below 86400; the port uses the default",
                "port 1: healthChecks[0].path \"no-slash\": the path must start with '/' and contain no spaces or control characters; probing /; the port uses the default",
                "port 1: label VIPD_1_HEALTHCHECK=\"icmp\": active health check \"icmp\" is not one of tcp, http, http:/path, on, off; the port uses the default",
                "port 1: label VIPD_BALANCE=\"random\": balance is not one of round-robin, least-conn, p2c, maglev; the port uses the default",
            ]
        );
        assert!(b.warnings.iter().all(|w| w.app.as_deref() == Some("/o")));
    }

    #[test]
    fn marathon_apps_translate_to_neutral_services() {
        let snap = snapshot(
            r#"{"apps":[{"id":"/c","networks":[{"mode":"container","name":"dcos"}],
            "container":{"portMappings":[
                {"containerPort":80,"hostPort":0,"servicePort":10000,"name":"web"},
                {"containerPort":9000,"protocol":"udp,tcp","labels":{"VIP_0":"/c:9000"}},
                {"containerPort":7,"protocol":"sctp"}]},
            "tasks":[{"id":"c.1","host":"agent-1","ports":[31000],
                      "ipAddresses":[{"ipAddress":"9.0.0.1"}],"state":"TASK_KILLING"},
                     {"id":"c.2","host":"agent-2","state":"TASK_FINISHED"},
                     {"id":"c.3","host":"agent-3","state":"TASK_NEW"}]}]}"#,
        );
        let mut warnings = Vec::new();
        let svc = marathon_service(&snap.apps[0], &mut warnings).unwrap();
        assert_eq!(
            (svc.kind, svc.id, svc.framework),
            (OwnerKind::App, "/c", "marathon")
        );
        let ports: Vec<_> = svc
            .ports
            .iter()
            .map(|p| {
                (
                    p.index,
                    p.name,
                    p.service_port,
                    p.address,
                    p.protocols.len(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                (0, Some("web"), Some(10000), PortAddress::AgentPort(0), 1),
                (1, None, None, PortAddress::EndpointIp(9000), 2),
            ]
        );
        assert_eq!(svc.endpoints.len(), 1);
        let ep = &svc.endpoints[0];
        assert_eq!(
            (ep.task, ep.agent, ep.ip, &ep.host_ports[..], ep.state),
            (
                "c.1",
                Some("agent-1"),
                Some("9.0.0.1"),
                &[31000][..],
                BackendState::Draining
            )
        );
        assert_eq!(
            svc.endpoint_warnings,
            ["task c.3: unknown state \"TASK_NEW\"; task skipped"]
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0]
            .message
            .contains("port 2: unknown protocol \"sctp\""));
    }

    #[test]
    fn cache_recomputes_everything_when_options_change() {
        let snap = snapshot(TWO_APPS);
        let r = answers(Some("10.0.0.1"));
        let mut cache = BuildCache::new();
        cache.build(&snap, &r, &BuildOptions::default());
        let opts = BuildOptions {
            bind_address: "127.0.0.1".parse().unwrap(),
            ..BuildOptions::default()
        };
        assert_eq!(cache.build(&snap, &r, &opts), build(&snap, &r, &opts));
        assert_eq!(
            cache.last_stats(),
            CacheStats {
                reused: 0,
                computed: 2
            }
        );
    }
}
