//! The Marathon translation: one app → one neutral [`Service`]. Pure.
//!
//! Owns: the Marathon rules: networking modes ([`network_mode`]), port declarations
//! (`portDefinitions`, `portMappings`, legacy `ports`, `docker.portMappings`,
//! `ipAddress.discovery`), host-port slots, the protocol string, task state and health
//! ([`task_state`]) and per-port options (labels and the port's Marathon health check).
//! ../shared/reference/marathon/FACTS.md §2, §3, §6 and §8 are the source; docs/routing.md
//! explains each decision.
//!
//! Must not: know about frontends, VIP addresses or agents' IPs (that is [`super::build`]), do
//! I/O, or allocate per backend: a service borrows from its app.

use super::options::{self, MarathonProbe, PortLabels, PortOptions, ProbeKind};
use super::service::{Endpoint, OwnerKind, PortAddress, Service, ServicePort};
use super::vip;
use super::{BackendState, Protocol, Warning};
use crate::model::{App, HealthCheck, Labels, Task, TaskIpAddress, TaskState};
use std::borrow::Cow;
use std::net::IpAddr;

/// How an app's tasks are reached (../shared/reference/marathon/FACTS.md §3.1, §3.2).
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
/// Precedence (documented in docs/routing.md): a non-empty `networks` decides, and with several
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

/// The port declarations for `mode` (../shared/reference/marathon/FACTS.md §3.2, §3.3): host mode
/// reads `portDefinitions`,
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
    use TaskState as S;
    match &task.state {
        None | Some(S::Running) => {}
        Some(S::Killing) => return Ok(Some(BackendState::Draining)),
        // Partitioned: kept as `unknown` (docs/routing.md).
        Some(S::Unreachable | S::Lost) => return Ok(Some(BackendState::Unknown)),
        Some(S::Other(other)) => {
            return Err(format!(
                "task {}: unknown state {:?}; task skipped",
                task.id,
                other.trim()
            ))
        }
        // Not started yet, or gone for good (`TaskState::is_terminal`): no backend.
        Some(_) => return Ok(None),
    }
    Ok(Some(if !app_has_health_checks {
        BackendState::Up
    } else {
        match task.health_check_results.as_deref() {
            None | Some([]) => BackendState::Unknown,
            Some(results) if results.iter().all(|r| r.alive) => BackendState::Up,
            Some(_) => BackendState::Unhealthy,
        }
    }))
}

/// Per-port options: labels in the precedence order of [`options::read_port_setting`] (the
/// port's own labels, the app's `VIPD_{n}_…`, marathon-lb's alias), and the probe of the port's
/// Marathon health check. A bad value is a warning naming the port and the label or field, and
/// leaves that option unset (the daemon flag applies).
fn port_options(
    app: &App,
    index: usize,
    port_labels: Option<&Labels>,
    warnings: &mut Vec<String>,
) -> PortOptions {
    let mut bad = Vec::new();
    let mut opts = options::label_options(
        PortLabels {
            port: port_labels,
            owner: &app.labels,
            index,
        },
        &mut bad,
    );
    if let Some((i, hc)) = app
        .health_checks
        .iter()
        .enumerate()
        .find(|(_, hc)| health_check_port_index(hc) == Some(index))
    {
        let protocol = hc.protocol.as_deref().unwrap_or("HTTP").trim();
        let kind = match protocol.to_ascii_uppercase().as_str() {
            "TCP" | "MESOS_TCP" | "HTTPS" | "MESOS_HTTPS" => Some(ProbeKind::Tcp),
            "HTTP" | "MESOS_HTTP" => {
                let path = hc.path.as_deref().filter(|p| !p.is_empty()).unwrap_or("/");
                let path = if options::valid_probe_path(path) {
                    path
                } else {
                    bad.push(format!(
                        "healthChecks[{i}].path {path:?}: the path must start with '/' and \
                         contain no spaces or control characters; probing /"
                    ));
                    "/"
                };
                Some(ProbeKind::Http {
                    path: path.to_string(),
                })
            }
            _ => None,
        };
        if let Some(kind) = kind {
            let mut seconds = |field: &str, v: Option<f64>| {
                let v = v?;
                let d = options::probe_seconds(v);
                if d.is_none() {
                    bad.push(format!(
                        "healthChecks[{i}].{field} {v}: not a number of seconds above 0 and \
                         below 86400"
                    ));
                }
                d
            };
            let interval = seconds("intervalSeconds", hc.interval_seconds);
            let timeout = seconds("timeoutSeconds", hc.timeout_seconds);
            opts.probe = Some(MarathonProbe {
                kind,
                interval,
                timeout,
            });
        }
    }
    warnings.extend(
        bad.into_iter()
            .map(|b| format!("port {index}: {b}; the port uses the default")),
    );
    opts
}

/// The port index a health check targets: `portIndex`, or 0 when it has neither `port` nor
/// `portIndex` (../shared/reference/marathon/FACTS.md §3.3). COMMAND checks target no port.
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

/// The Marathon translation: one app → one neutral [`Service`], with today's rules for
/// networking modes ([`network_mode`]), port declarations (`portDefinitions`, `portMappings`,
/// legacy `ports`, `docker.portMappings`, `ipAddress.discovery`), host-port slots, task state
/// and health ([`task_state`]) and per-port options. `None` when the app has no usable network
/// (the reason is in `warnings`). Pure; borrows from `app`.
pub fn marathon_service<'a>(app: &'a App, warnings: &mut Vec<Warning>) -> Option<Service<'a>> {
    let mode = match network_mode(app) {
        Ok(m) => m,
        Err(msg) => {
            warnings.push(app_warning(app, msg));
            return None;
        }
    };
    let specs = port_specs(app, mode);
    let mut ports = Vec::with_capacity(specs.len());
    let mut next_host_port = 0usize;
    for (index, spec) in specs.into_iter().enumerate() {
        // The slot is computed for every port, usable or not: host ports are consumed in
        // declaration order (../shared/reference/marathon/FACTS.md §3.5, §3.6).
        let address = match mode {
            NetworkMode::Host | NetworkMode::Bridge => PortAddress::AgentPort(index),
            NetworkMode::Container if spec.declares_host_port => {
                next_host_port += 1;
                PortAddress::AgentPort(next_host_port - 1)
            }
            NetworkMode::Container => PortAddress::EndpointIp(spec.container_port.unwrap_or(0)),
        };
        let Some(protocols) = parse_protocols(spec.protocol) else {
            warnings.push(app_warning(
                app,
                format!(
                    "port {index}: unknown protocol {:?}; port skipped",
                    spec.protocol.unwrap_or_default()
                ),
            ));
            continue;
        };
        let mut option_warnings = Vec::new();
        let options = port_options(app, index, spec.labels, &mut option_warnings);
        ports.push(ServicePort {
            index,
            name: spec.name,
            protocols,
            service_port: spec.service_port,
            vip_labels: spec.labels.map(Cow::Borrowed),
            options,
            option_warnings,
            address,
        });
    }
    let mut endpoints = Vec::new();
    let mut endpoint_warnings = Vec::new();
    if !ports.is_empty() {
        endpoints.reserve(app.tasks.len());
        let has_hc = !app.health_checks.is_empty();
        for task in &app.tasks {
            let state = match task_state(task, has_hc) {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(msg) => {
                    endpoint_warnings.push(msg);
                    continue;
                }
            };
            let Some(host) = task.host.as_deref().filter(|h| !h.is_empty()) else {
                continue;
            };
            let ip = task.ip_addresses.first().map(|a| a.ip_address.as_str());
            endpoints.push(Endpoint {
                task: &task.id,
                agent: Some(host),
                ip,
                host_ports: Cow::Borrowed(&task.ports),
                state,
                zone: None,
                secondary_family: false,
            });
            if let Some(other) = ip.and_then(|ip| other_family_ip(ip, &task.ip_addresses)) {
                // No host ports: the agent-port backends are the primary endpoint's.
                endpoints.push(Endpoint {
                    task: &task.id,
                    agent: Some(host),
                    ip: Some(other),
                    host_ports: Cow::Borrowed(&[]),
                    state,
                    zone: None,
                    secondary_family: true,
                });
            }
        }
    }
    Some(Service {
        kind: OwnerKind::App,
        id: &app.id,
        framework: vip::FRAMEWORK,
        ports,
        endpoints,
        endpoint_warnings,
    })
}

/// The first of `all` whose family differs from `primary`'s (a dual-stack task's IPv6 address
/// beside its IPv4 one), when both parse.
fn other_family_ip<'a>(primary: &str, all: &'a [TaskIpAddress]) -> Option<&'a str> {
    let family = |raw: &str| raw.parse::<IpAddr>().ok().map(|ip| ip.is_ipv6());
    let primary = family(primary)?;
    all.iter()
        .map(|a| a.ip_address.as_str())
        .find(|a| family(a) == Some(!primary))
}

pub(super) fn app_warning(app: &App, message: String) -> Warning {
    Warning {
        app: Some(app.id.clone()),
        message,
    }
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
}
