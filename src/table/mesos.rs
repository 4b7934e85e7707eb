//! The Mesos translation: one task of any framework → one neutral [`Service`]. Pure.
//!
//! Owns: the Mesos rules (../shared/reference/mesos/FACTS.md §5–§7, dcos-net's listener): VIPs
//! are port labels of `discovery.ports.ports[]` and legacy `vip_port<i>` task labels; the
//! `network-scope` label decides between the agent address (`host`) and each task IP
//! (`container` or none); container port mappings pair a container port with a host port; task
//! IPs come from the latest status that has any; task state and health ([`task_state`]). The
//! framework's name goes into [`Service::framework`], so a named VIP is
//! `<name>.<framework>.<zone>`.
//!
//! Must not: know about frontends, VIP addresses or agents' IPs (that is [`super::build`]), keep
//! state between events (the source does), or do I/O.

use super::marathon::parse_protocols;
use super::options::{self, PortLabels};
use super::service::{Endpoint, OwnerKind, PortAddress, Service, ServicePort};
use super::{BackendState, Protocol, Warning};
use crate::model::mesos::{MesosTask, PortMapping, Task, TaskStatus};
use crate::model::{Labels, TaskState};
use std::borrow::Cow;
use std::net::IpAddr;

/// The label that says whether a discovery port number is a host port or a container port.
pub const NETWORK_SCOPE_LABEL: &str = "network-scope";
/// The prefix of legacy task labels (`vip_port0 = tcp://name:80`).
pub const LEGACY_VIP_PREFIX: &str = "vip_port";

/// The latest status: the highest `timestamp`, the later one on a tie (dcos-net's rule).
pub fn latest_status(task: &Task) -> Option<&TaskStatus> {
    task.statuses.iter().max_by(|a, b| {
        let (a, b) = (
            a.timestamp.unwrap_or(f64::NEG_INFINITY),
            b.timestamp.unwrap_or(f64::NEG_INFINITY),
        );
        a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal)
    })
}

/// The routing state of a task, or `None` when it gets no backend; `Err` for a state vipd does
/// not know (a warning).
///
/// `TASK_RUNNING` is `up`, refined by the latest status' `healthy`: `false` is `unhealthy`; no
/// value yet while a `health_check` is configured is `unknown`. `TASK_KILLING` drains.
/// `TASK_UNREACHABLE` is `unknown` (vipd's rule for partitioned tasks; dcos-net keeps such a
/// task out of the table until it is running again). Everything else has no backend.
pub fn task_state(task: &Task) -> Result<Option<BackendState>, String> {
    use TaskState as S;
    let latest = latest_status(task);
    let state = task
        .state
        .as_ref()
        .or(latest.and_then(|s| s.state.as_ref()));
    match state {
        Some(S::Running) => {}
        Some(S::Killing) => return Ok(Some(BackendState::Draining)),
        Some(S::Unreachable) => return Ok(Some(BackendState::Unknown)),
        Some(S::Other(other)) => {
            return Err(format!(
                "task {}: unknown state {:?}; task skipped",
                task.task_id,
                other.trim()
            ))
        }
        None | Some(_) => return Ok(None),
    }
    Ok(Some(match latest.and_then(|s| s.healthy) {
        Some(true) => BackendState::Up,
        Some(false) => BackendState::Unhealthy,
        None if task.health_check => BackendState::Unknown,
        None => BackendState::Up,
    }))
}

/// The task's IPs: those of the latest status that reports any (an update without
/// `container_status` does not erase them). IPv4 only when there is one, else the IPv6 ones; the
/// IPv6 ones beside IPv4 are [`other_family_ips`]. Unparsable strings are kept: the builder warns
/// about them.
pub fn task_ips(task: &Task) -> Vec<&str> {
    let ips = latest_ips(task);
    if ips.iter().any(|a| !is_v6(a)) {
        return ips.into_iter().filter(|a| !is_v6(a)).collect();
    }
    ips
}

/// A dual-stack task's IPv6 addresses (those of the latest status, beside IPv4 ones): they back
/// only the IPv6 side of VIPs ([`Endpoint::secondary_family`]).
pub fn other_family_ips(task: &Task) -> Vec<&str> {
    let ips = latest_ips(task);
    if ips.iter().any(|a| !is_v6(a)) {
        return ips.into_iter().filter(is_v6).collect();
    }
    Vec::new()
}

fn is_v6(a: &&str) -> bool {
    a.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6())
}

fn latest_ips(task: &Task) -> Vec<&str> {
    let mut statuses: Vec<(usize, &TaskStatus)> = task.statuses.iter().enumerate().collect();
    statuses.sort_by(|(ia, a), (ib, b)| {
        let (ta, tb) = (
            a.timestamp.unwrap_or(f64::NEG_INFINITY),
            b.timestamp.unwrap_or(f64::NEG_INFINITY),
        );
        tb.partial_cmp(&ta)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(ib.cmp(ia))
    });
    for (_, status) in statuses {
        let ips: Vec<&str> = status
            .container_status
            .iter()
            .flat_map(|c| &c.network_infos)
            .flat_map(|n| &n.ip_addresses)
            .filter_map(|a| a.ip_address.as_deref())
            .filter(|a| !a.is_empty())
            .collect();
        if !ips.is_empty() {
            return ips;
        }
    }
    Vec::new()
}

/// Every container port mapping of the task: `container.docker.port_mappings`,
/// `container.network_infos[].port_mappings`, and (pods: networking is on the executor) those of
/// the statuses' `network_infos`.
fn port_mappings(task: &Task) -> Vec<&PortMapping> {
    let container = task.container.as_ref();
    container
        .and_then(|c| c.docker.as_ref())
        .into_iter()
        .flat_map(|d| &d.port_mappings)
        .chain(
            container
                .into_iter()
                .flat_map(|c| &c.network_infos)
                .flat_map(|n| &n.port_mappings),
        )
        .chain(
            task.statuses
                .iter()
                .filter_map(|s| s.container_status.as_ref())
                .flat_map(|c| &c.network_infos)
                .flat_map(|n| &n.port_mappings),
        )
        .collect()
}

/// The host ports of the task's `ports` resource, ranges expanded in order (legacy `vip_port<i>`
/// labels index it). Bounded: a range is never expanded past 65,536 ports.
fn resource_ports(task: &Task) -> Vec<u16> {
    let mut out = Vec::new();
    for r in task.resources.iter().filter(|r| r.name == "ports") {
        for range in &r.ranges {
            let end = range.end.min(u64::from(u16::MAX));
            let mut p = range.begin;
            while p <= end && out.len() <= usize::from(u16::MAX) {
                out.push(u16::try_from(p).unwrap_or(0));
                p += 1;
            }
        }
    }
    out
}

fn same_protocol(mapping: Option<&str>, protocols: &[Protocol]) -> bool {
    parse_protocols(mapping).is_some_and(|m| m.iter().any(|p| protocols.contains(p)))
}

/// The Mesos translation: one task (with its framework's name and its agent's hostname) → one
/// neutral [`Service`] whose id is the task id. A task in no routable state gives a service
/// without ports. Pure; borrows from `t` except for the labels of legacy `vip_port<i>` ports.
pub fn mesos_service<'a>(t: &'a MesosTask, warnings: &mut Vec<Warning>) -> Option<Service<'a>> {
    let task = &t.task;
    let warn = |warnings: &mut Vec<Warning>, message: String| {
        warnings.push(Warning {
            app: Some(task.task_id.clone()),
            message: format!("framework {}: {message}", t.framework),
        })
    };
    let mut service = Service {
        kind: OwnerKind::Task,
        id: &task.task_id,
        framework: &t.framework,
        ports: Vec::new(),
        endpoints: Vec::new(),
        endpoint_warnings: Vec::new(),
    };
    let state = match task_state(task) {
        Ok(Some(s)) => s,
        Ok(None) => return Some(service),
        Err(msg) => {
            warn(warnings, msg);
            return Some(service);
        }
    };
    let ips = task_ips(task);
    let mappings = port_mappings(task);
    let mut host_ports: Vec<u16> = Vec::new();
    let agent_port = |host_ports: &mut Vec<u16>, port: u16| {
        host_ports.push(port);
        PortAddress::AgentPort(host_ports.len() - 1)
    };
    let discovery = task.discovery.as_ref().map_or(&[][..], |d| &d.ports[..]);
    for (index, port) in discovery.iter().enumerate() {
        if port.number == 0 {
            // Marathon's placeholder for a container network without a port.
            continue;
        }
        let Ok(number) = u16::try_from(port.number) else {
            warn(
                warnings,
                format!(
                    "task {}: discovery port {index}: number {} is not a port; port skipped",
                    task.task_id, port.number
                ),
            );
            continue;
        };
        let Some(protocols) = parse_protocols(port.protocol.as_deref()) else {
            warn(
                warnings,
                format!(
                    "task {}: discovery port {index}: unknown protocol {:?}; port skipped",
                    task.task_id,
                    port.protocol.as_deref().unwrap_or_default()
                ),
            );
            continue;
        };
        let host_scope = port
            .labels
            .get(NETWORK_SCOPE_LABEL)
            .is_some_and(|s| s.trim().eq_ignore_ascii_case("host"));
        let address = if host_scope {
            agent_port(&mut host_ports, number)
        } else if let Some(m) = mappings.iter().find(|m| {
            m.container_port == port.number
                && m.host_port != 0
                && same_protocol(m.protocol.as_deref(), protocols)
        }) {
            agent_port(&mut host_ports, u16::try_from(m.host_port).unwrap_or(0))
        } else if ips.is_empty() {
            // Host networking without a reported IP: the task's IP is the agent's.
            agent_port(&mut host_ports, number)
        } else {
            PortAddress::EndpointIp(number)
        };
        let mut bad = Vec::new();
        let options = options::label_options(
            PortLabels {
                port: Some(&port.labels),
                owner: &task.labels,
                index,
            },
            &mut bad,
        );
        service.ports.push(ServicePort {
            index,
            name: port.name.as_deref(),
            protocols,
            service_port: None,
            vip_labels: Some(Cow::Borrowed(&port.labels)),
            options,
            option_warnings: bad
                .into_iter()
                .map(|b| format!("port {index}: {b}; the port uses the default"))
                .collect(),
            address,
        });
    }
    let legacy: Vec<(&String, &String, usize)> = task
        .labels
        .iter()
        .filter_map(|(k, v)| {
            let i = k.strip_prefix(LEGACY_VIP_PREFIX)?.parse::<usize>().ok()?;
            Some((k, v, i))
        })
        .collect();
    if !legacy.is_empty() {
        let resource = resource_ports(task);
        for (key, value, i) in legacy {
            let index = discovery.len() + i;
            let v = value.trim();
            let protocols = if v.len() >= 6 && v[..6].eq_ignore_ascii_case("udp://") {
                parse_protocols(Some("udp"))
            } else {
                parse_protocols(Some("tcp"))
            };
            let (Some(&number), Some(protocols)) = (resource.get(i), protocols) else {
                warn(
                    warnings,
                    format!(
                        "task {}: label {key}={value:?}: the task has no port {i} in its ports resource; label skipped",
                        task.task_id
                    ),
                );
                continue;
            };
            if number == 0 {
                continue;
            }
            let labels: Labels = [(key.clone(), value.clone())].into_iter().collect();
            service.ports.push(ServicePort {
                index,
                name: None,
                protocols,
                service_port: None,
                vip_labels: Some(Cow::Owned(labels)),
                options: Default::default(),
                option_warnings: Vec::new(),
                address: agent_port(&mut host_ports, number),
            });
        }
    }
    if service.ports.is_empty() {
        return Some(service);
    }
    let host_ports: Cow<'a, [u16]> = Cow::Owned(host_ports);
    let endpoint = |ip| Endpoint {
        task: &task.task_id,
        agent: Some(t.agent_host.as_str()),
        ip,
        host_ports: host_ports.clone(),
        state,
        zone: None,
        secondary_family: false,
    };
    if ips.is_empty() {
        service.endpoints.push(endpoint(None));
    } else {
        service
            .endpoints
            .extend(ips.iter().map(|ip| endpoint(Some(*ip))));
    }
    // No host ports: the host-scope backends are the primary endpoints'.
    service
        .endpoints
        .extend(other_family_ips(task).into_iter().map(|ip| Endpoint {
            task: &task.task_id,
            agent: Some(t.agent_host.as_str()),
            ip: Some(ip),
            host_ports: Cow::Borrowed(&[]),
            state,
            zone: None,
            secondary_family: true,
        }));
    Some(service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mesos::parse_task;
    use crate::table::vip::framework_dns_name;

    fn task(json: &str) -> MesosTask {
        MesosTask {
            task: parse_task(json).unwrap(),
            framework: "marathon".into(),
            agent_host: "10.0.0.1".into(),
        }
    }

    /// A Marathon task on an overlay network (FACTS §6: container scope, task IP + port).
    fn overlay(extra: &str) -> String {
        format!(
            r#"{{"name":"web","task_id":{{"value":"web.1"}},"framework_id":{{"value":"fw-m"}},
            "agent_id":{{"value":"ag-1"}},
            "state":"TASK_RUNNING","statuses":[{{"state":"TASK_RUNNING","timestamp":2.0,
              "container_status":{{"network_infos":[{{"name":"dcos","ip_addresses":[{{"protocol":"IPv4","ip_address":"9.0.0.2"}}]}}]}}}}],
            "discovery":{{"visibility":"FRAMEWORK","name":"web","ports":{{"ports":[
              {{"number":80,"name":"http","protocol":"tcp","labels":{{"labels":[
                {{"key":"VIP_0","value":"/web:80"}},{{"key":"network-scope","value":"container"}},
                {{"key":"network-name","value":"dcos"}}]}}}}]}}}}{extra}}}"#
        )
    }

    fn summary(svc: &Service<'_>) -> Vec<(usize, PortAddress)> {
        svc.ports.iter().map(|p| (p.index, p.address)).collect()
    }

    #[test]
    fn container_scope_uses_each_task_ip_and_the_port_number() {
        let t = task(&overlay(""));
        let svc = mesos_service(&t, &mut Vec::new()).unwrap();
        assert_eq!(
            (svc.kind, svc.id, svc.framework),
            (OwnerKind::Task, "web.1", "marathon")
        );
        assert_eq!(summary(&svc), [(0, PortAddress::EndpointIp(80))]);
        assert_eq!(svc.endpoints.len(), 1);
        let ep = &svc.endpoints[0];
        assert_eq!(
            (ep.task, ep.agent, ep.ip, ep.state),
            ("web.1", Some("10.0.0.1"), Some("9.0.0.2"), BackendState::Up)
        );
        assert_eq!(
            svc.ports[0].vip_labels.as_ref().unwrap()["VIP_0"],
            "/web:80"
        );
    }

    #[test]
    fn host_scope_uses_the_agent_and_the_port_number() {
        let t = task(&overlay("").replace(
            r#"{"key":"network-scope","value":"container"}"#,
            r#"{"key":"network-scope","value":"host"}"#,
        ));
        let svc = mesos_service(&t, &mut Vec::new()).unwrap();
        assert_eq!(summary(&svc), [(0, PortAddress::AgentPort(0))]);
        assert_eq!(&svc.endpoints[0].host_ports[..], [80]);
    }

    #[test]
    fn no_scope_label_is_container_scope_and_without_ips_the_agent() {
        let no_scope = overlay("").replace(r#"{"key":"network-scope","value":"container"},"#, "");
        let svc_t = task(&no_scope);
        let svc = mesos_service(&svc_t, &mut Vec::new()).unwrap();
        assert_eq!(summary(&svc), [(0, PortAddress::EndpointIp(80))]);
        // Host networking that reports no IP: the task's IP is the agent's.
        let no_ip = task(&no_scope.replace(r#""ip_address":"9.0.0.2""#, r#""ip_address":"""#));
        let svc = mesos_service(&no_ip, &mut Vec::new()).unwrap();
        assert_eq!(summary(&svc), [(0, PortAddress::AgentPort(0))]);
        assert_eq!(svc.endpoints[0].ip, None);
        assert_eq!(&svc.endpoints[0].host_ports[..], [80]);
    }

    #[test]
    fn a_container_port_with_a_host_port_mapping_uses_the_agent_and_the_host_port() {
        // docker BRIDGE: container port 8080 mapped to host port 31005.
        let t = task(&overlay(
            r#","container":{"type":"DOCKER","docker":{"image":"x","network":"BRIDGE",
              "port_mappings":[{"host_port":31005,"container_port":80,"protocol":"tcp"},
                               {"host_port":31006,"container_port":80,"protocol":"udp"}]}}"#,
        ));
        let svc = mesos_service(&t, &mut Vec::new()).unwrap();
        assert_eq!(summary(&svc), [(0, PortAddress::AgentPort(0))]);
        assert_eq!(&svc.endpoints[0].host_ports[..], [31005]);
        // A pod on a bridge: the mapping is in the status' network_infos.
        let pod = task(&overlay("").replace(
            r#""name":"dcos","ip_addresses""#,
            r#""name":"mesos-bridge","port_mappings":[{"host_port":2254,"container_port":80}],"ip_addresses""#,
        ));
        let svc = mesos_service(&pod, &mut Vec::new()).unwrap();
        assert_eq!(&svc.endpoints[0].host_ports[..], [2254]);
    }

    #[test]
    fn port_number_zero_is_never_a_backend_and_unknown_protocols_warn() {
        let t = task(&overlay("").replace(
            r#"{"number":80,"name":"http","protocol":"tcp","#,
            r#"{"number":0,"name":"default","protocol":"tcp"},
               {"number":7,"protocol":"sctp"},
               {"number":80,"name":"http","protocol":"tcp","#,
        ));
        let mut warnings = Vec::new();
        let svc = mesos_service(&t, &mut warnings).unwrap();
        assert_eq!(summary(&svc), [(2, PortAddress::EndpointIp(80))]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].app.as_deref(), Some("web.1"));
        assert_eq!(
            warnings[0].message,
            "framework marathon: task web.1: discovery port 1: unknown protocol \"sctp\"; port skipped"
        );
    }

    #[test]
    fn task_states_map_to_backend_states() {
        let with_state = |state: &str, healthy: &str, hc: bool| {
            let mut json = overlay(if hc {
                r#","health_check":{"type":"HTTP"}"#
            } else {
                ""
            })
            .replace(
                r#""state":"TASK_RUNNING","statuses""#,
                &format!(r#""state":"{state}","statuses""#),
            );
            if !healthy.is_empty() {
                json = json.replace(
                    r#""timestamp":2.0,"#,
                    &format!(r#""timestamp":2.0,"healthy":{healthy},"#),
                );
            }
            let t = task(&json);
            let mut warnings = Vec::new();
            let svc = mesos_service(&t, &mut warnings).unwrap();
            (
                svc.endpoints.first().map(|e| e.state),
                warnings.len(),
                svc.ports.len(),
            )
        };
        use BackendState as B;
        assert_eq!(with_state("TASK_RUNNING", "", false), (Some(B::Up), 0, 1));
        assert_eq!(
            with_state("TASK_RUNNING", "true", true),
            (Some(B::Up), 0, 1)
        );
        assert_eq!(
            with_state("TASK_RUNNING", "false", true),
            (Some(B::Unhealthy), 0, 1)
        );
        assert_eq!(
            with_state("TASK_RUNNING", "false", false),
            (Some(B::Unhealthy), 0, 1)
        );
        assert_eq!(
            with_state("TASK_RUNNING", "", true),
            (Some(B::Unknown), 0, 1)
        );
        assert_eq!(
            with_state("TASK_KILLING", "", false),
            (Some(B::Draining), 0, 1)
        );
        assert_eq!(
            with_state("TASK_UNREACHABLE", "", false),
            (Some(B::Unknown), 0, 1)
        );
        for gone in [
            "TASK_STAGING",
            "TASK_STARTING",
            "TASK_FINISHED",
            "TASK_FAILED",
            "TASK_KILLED",
            "TASK_LOST",
            "TASK_ERROR",
            "TASK_DROPPED",
            "TASK_GONE",
            "TASK_GONE_BY_OPERATOR",
            "TASK_UNKNOWN",
        ] {
            assert_eq!(with_state(gone, "", false), (None, 0, 0), "{gone}");
        }
        assert_eq!(with_state("TASK_NEW_IN_MESOS_2", "", false), (None, 1, 0));
    }

    #[test]
    fn top_level_state_wins_over_the_status_state() {
        // TASK_UPDATED overlays the agent's latest state; the acknowledged status may lag.
        let t = task(&overlay("").replace(
            r#""state":"TASK_RUNNING","statuses""#,
            r#""state":"TASK_KILLING","statuses""#,
        ));
        assert_eq!(task_state(&t.task), Ok(Some(BackendState::Draining)));
        // Without a top-level state, the latest status decides.
        let t = task(&overlay("").replace(r#""state":"TASK_RUNNING","statuses""#, r#""statuses""#));
        assert_eq!(task_state(&t.task), Ok(Some(BackendState::Up)));
    }

    #[test]
    fn health_and_ips_come_from_the_latest_status_and_an_update_without_ips_keeps_them() {
        let t = task(&overlay("").replace(
            r#""statuses":["#,
            r#""statuses":[{"state":"TASK_RUNNING","timestamp":3.0,"healthy":false},
                           {"state":"TASK_STARTING","timestamp":1.0,
                            "container_status":{"network_infos":[{"ip_addresses":[{"ip_address":"9.9.9.9"}]}]}},"#,
        ));
        assert_eq!(task_ips(&t.task), ["9.0.0.2"]);
        assert_eq!(task_state(&t.task), Ok(Some(BackendState::Unhealthy)));
    }

    #[test]
    fn ipv4_ips_are_preferred_and_each_is_an_endpoint() {
        let t = task(&overlay("").replace(
            r#"[{"protocol":"IPv4","ip_address":"9.0.0.2"}]"#,
            r#"[{"protocol":"IPv4","ip_address":"9.0.0.2"},{"protocol":"IPv6","ip_address":"fd01:b::2"},
                {"protocol":"IPv4","ip_address":"9.0.0.3"}]"#,
        ));
        assert_eq!(task_ips(&t.task), ["9.0.0.2", "9.0.0.3"]);
        assert_eq!(other_family_ips(&t.task), ["fd01:b::2"]);
        let svc = mesos_service(&t, &mut Vec::new()).unwrap();
        let eps: Vec<_> = svc
            .endpoints
            .iter()
            .map(|e| (e.ip, e.secondary_family))
            .collect();
        assert_eq!(
            eps,
            [
                (Some("9.0.0.2"), false),
                (Some("9.0.0.3"), false),
                (Some("fd01:b::2"), true)
            ]
        );
        let v6 = task(&overlay("").replace("9.0.0.2", "fd01:b::2"));
        assert_eq!(task_ips(&v6.task), ["fd01:b::2"]);
        assert!(other_family_ips(&v6.task).is_empty());
    }

    #[test]
    fn legacy_vip_port_labels_index_the_ports_resource() {
        let t = task(
            r#"{"name":"app","task_id":{"value":"app.1"},"framework_id":{"value":"fw-m"},
            "state":"TASK_RUNNING",
            "resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":0.1}},
              {"name":"ports","type":"RANGES","ranges":{"range":[{"begin":9999,"end":10000},{"begin":10005,"end":10005}]}}],
            "labels":{"labels":[{"key":"vip_port0","value":"tcp://def:80"},
              {"key":"vip_port2","value":"udp://jkl:53"},{"key":"vip_port7","value":"tcp://far:1"}]}}"#,
        );
        let mut warnings = Vec::new();
        let svc = mesos_service(&t, &mut warnings).unwrap();
        assert_eq!(
            summary(&svc),
            [
                (0, PortAddress::AgentPort(0)),
                (2, PortAddress::AgentPort(1))
            ]
        );
        assert_eq!(&svc.endpoints[0].host_ports[..], [9999, 10005]);
        assert_eq!(svc.ports[1].protocols, [Protocol::Udp]);
        assert_eq!(
            svc.ports[0]
                .vip_labels
                .as_ref()
                .unwrap()
                .get("vip_port0")
                .map(String::as_str),
            Some("tcp://def:80")
        );
        assert_eq!(svc.ports[0].vip_labels.as_ref().unwrap().len(), 1);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].message.contains("vip_port7"), "{warnings:?}");
    }

    #[test]
    fn the_framework_name_is_part_of_the_named_vip() {
        assert_eq!(
            framework_dns_name("overlay-vip", "hello-world", "l4lb.thisdcos.directory").unwrap(),
            "overlay-vip.hello-world.l4lb.thisdcos.directory"
        );
        assert_eq!(
            framework_dns_name("/web", "marathon", "l4lb.thisdcos.directory").unwrap(),
            "web.marathon.l4lb.thisdcos.directory"
        );
        assert_eq!(
            framework_dns_name("/api.hello-world", "Hello_World", "zone").unwrap(),
            "api.hello-world.hello-world.zone"
        );
        assert!(framework_dns_name("x", "__", "zone").is_err());
    }

    #[test]
    fn the_build_cache_recomputes_only_the_task_whose_arc_changed() {
        use crate::table::{build, BuildCache, BuildOptions, CacheStats, Resolved};
        use std::sync::Arc;
        let one = task(&overlay(""));
        let mut two = task(
            &overlay("")
                .replace("web.1", "web.2")
                .replace("9.0.0.2", "9.0.0.3"),
        );
        two.framework = "hello-world".into();
        let mut snap = crate::model::AppsSnapshot {
            tasks: vec![Arc::new(one), Arc::new(two)],
            ..Default::default()
        };
        let (r, opts) = (Resolved::default(), BuildOptions::default());
        let mut cache = BuildCache::new();
        assert_eq!(cache.build(&snap, &r, &opts), build(&snap, &r, &opts));
        let mut changed = (*snap.tasks[1]).clone();
        changed.task.state = Some(TaskState::Killing);
        snap.tasks[1] = Arc::new(changed);
        let got = cache.build(&snap, &r, &opts);
        assert_eq!(got, build(&snap, &r, &opts));
        assert_eq!(
            cache.last_stats(),
            CacheStats {
                reused: 1,
                computed: 1
            }
        );
        let state_of = |name: &str| {
            let f = got
                .frontends
                .iter()
                .find(|f| f.vip_name.as_deref() == Some(name))
                .unwrap();
            f.backends[0].state
        };
        assert_eq!(
            state_of("web.hello-world.l4lb.thisdcos.directory"),
            BackendState::Draining
        );
        assert_eq!(
            state_of("web.marathon.l4lb.thisdcos.directory"),
            BackendState::Up
        );
    }

    #[test]
    fn port_options_are_read_from_port_and_task_labels() {
        let t = task(&overlay("").replace(
            r#"{"key":"network-name","value":"dcos"}"#,
            r#"{"key":"VIPD_BALANCE","value":"maglev"}"#,
        ));
        let svc = mesos_service(&t, &mut Vec::new()).unwrap();
        assert_eq!(
            svc.ports[0].options.balance(),
            Some(crate::table::Balance::Maglev)
        );
    }
}
