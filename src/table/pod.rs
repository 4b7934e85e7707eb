//! The Marathon pod translation: one pod (`PodStatus`, spec and status) → one neutral
//! [`Service`]. Pure.
//!
//! Owns: the pod rules (docs/routing.md "Pods"; ../shared/reference/marathon/pods/FACTS.md §2–§4):
//! the pod's networking mode, one port per spec endpoint (index `{n}` counted over all
//! containers' endpoints in spec order), the `protocol` array, the join of a container's status
//! endpoints to its spec endpoints **by name**, the backend address of each endpoint (agent +
//! `allocatedHostPort`, or the instance's address on the endpoint's network + `containerPort`),
//! the container state and health (keyed on the container, never the instance), and the
//! per-port options (endpoint labels, then the pod's labels, and the probe of the container's
//! health check when it targets the endpoint).
//!
//! How it fits the neutral model: every port reads [`PortAddress::AgentPort`] of its own index,
//! and each container task becomes at most one [`Endpoint`] per address it is reached on: one
//! whose `agent` is the agent hostname (slots of its host-port endpoints filled with
//! `allocatedHostPort`), and one per instance network address (an IP literal, so it needs no
//! DNS) whose slots of container-port endpoints hold `containerPort`. Slots of other containers'
//! endpoints are 0, which the builder skips, so an endpoint only gets the backends of its own
//! container.
//!
//! Must not: know about frontends or VIP addresses (that is [`super::build`]), do I/O, or
//! resolve a hostname.

use super::marathon::NetworkMode;
use super::options::{self, MarathonProbe, PortLabels, PortOptions, ProbeKind};
use super::service::{Endpoint, OwnerKind, PortAddress, Service, ServicePort};
use super::vip;
use super::{BackendState, Protocol, Warning};
use crate::model::pod::{
    ContainerStatus, PodContainer, PodEndpoint, PodInstance, PodNetworkStatus,
};
use crate::model::{Pod, TaskState};
use std::borrow::Cow;

const TCP: &[Protocol] = &[Protocol::Tcp];
const UDP: &[Protocol] = &[Protocol::Udp];
const BOTH: &[Protocol] = &[Protocol::Tcp, Protocol::Udp];

/// The reason Marathon gives a `healthy` condition when a check is configured but Mesos has not
/// reported yet (value `"false"`): no result, not a failure (FACTS.md §3.3).
const HEALTH_UNREPORTED: &str = "health-unreported-by-mesos";

/// The networking mode of a pod: the last network's mode (`host`, `container/bridge`,
/// `container`; a network without `mode` is `container`, the RAML default); no networks is host.
pub fn pod_network_mode(pod: &Pod) -> Result<NetworkMode, String> {
    let Some(last) = pod.spec.networks.last() else {
        return Ok(NetworkMode::Host);
    };
    match last.mode.as_deref().map(str::trim) {
        None | Some("container") => Ok(NetworkMode::Container),
        Some("container/bridge") => Ok(NetworkMode::Bridge),
        Some("host") => Ok(NetworkMode::Host),
        Some(other) => Err(format!(
            "unknown network mode {other:?}; pod skipped (expected host, container/bridge or container)"
        )),
    }
}

/// A pod endpoint's `protocol` array: `tcp`, `udp` (any case); `http`, `https`, `h2` are TCP
/// application protocols and count as `tcp`; empty is `tcp`. `None` for any other name.
pub fn parse_pod_protocols(names: &[String]) -> Option<&'static [Protocol]> {
    let (mut tcp, mut udp) = (names.is_empty(), false);
    for name in names {
        match name.trim().to_ascii_lowercase().as_str() {
            "tcp" | "http" | "https" | "h2" => tcp = true,
            "udp" => udp = true,
            _ => return None,
        }
    }
    Some(match (tcp, udp) {
        (true, true) => BOTH,
        (false, true) => UDP,
        _ => TCP,
    })
}

/// The routing state of a container, or `None` when it gets no backend. `Err` is a warning
/// (unknown state string).
///
/// `TASK_RUNNING`: `unhealthy` if a `healthy` condition or an endpoint's `healthy` is false;
/// `unknown` if the spec container has a health check but no result is in yet (no condition,
/// or Marathon's `health-unreported-by-mesos`); `up` otherwise. `TASK_KILLING`: `draining`.
/// Anything else: no backend.
pub fn container_state(
    status: &ContainerStatus,
    spec: &PodContainer,
) -> Result<Option<BackendState>, String> {
    match &status.status {
        Some(TaskState::Running) => {}
        Some(TaskState::Killing) => return Ok(Some(BackendState::Draining)),
        Some(TaskState::Other(other)) => {
            return Err(format!(
                "container {}: unknown state {:?}; container skipped",
                status.container_id.as_deref().unwrap_or(&status.name),
                other.trim()
            ))
        }
        _ => return Ok(None),
    }
    let mut reported = false;
    let mut failing = false;
    for c in status.conditions.iter().filter(|c| c.name == "healthy") {
        if c.reason.as_deref() == Some(HEALTH_UNREPORTED) {
            continue;
        }
        reported = true;
        failing |= c
            .value
            .as_deref()
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
    }
    for e in &status.endpoints {
        if let Some(h) = e.healthy {
            reported = true;
            failing |= !h;
        }
    }
    Ok(Some(if failing {
        BackendState::Unhealthy
    } else if spec.health_check.is_some() && !reported {
        BackendState::Unknown
    } else {
        BackendState::Up
    }))
}

/// Per-port options: the endpoint's labels, then the pod's `VIPD_{n}_…` (and marathon-lb's
/// alias), and the probe of the container's health check when it targets this endpoint.
fn port_options(
    pod: &Pod,
    container: &PodContainer,
    endpoint: &PodEndpoint,
    index: usize,
    warnings: &mut Vec<String>,
) -> PortOptions {
    let mut bad = Vec::new();
    let mut opts = options::label_options(
        PortLabels {
            port: Some(&endpoint.labels),
            owner: &pod.spec.labels,
            index,
        },
        &mut bad,
    );
    if let Some(hc) = &container.health_check {
        let targets = |e: &Option<String>| e.as_deref() == Some(endpoint.name.as_str());
        let kind = if let Some(http) = hc.http.as_ref().filter(|h| targets(&h.endpoint)) {
            let path = http
                .path
                .as_deref()
                .filter(|p| !p.is_empty())
                .unwrap_or("/");
            let path = if options::valid_probe_path(path) {
                path
            } else {
                bad.push(format!(
                    "healthCheck.http.path {path:?}: the path must start with '/' and contain \
                     no spaces or control characters; probing /"
                ));
                "/"
            };
            Some(ProbeKind::Http {
                path: path.to_string(),
            })
        } else if hc.tcp.as_ref().is_some_and(|t| targets(&t.endpoint)) {
            Some(ProbeKind::Tcp)
        } else {
            None
        };
        if let Some(kind) = kind {
            let mut seconds = |field: &str, v: Option<f64>| {
                let v = v?;
                let d = options::probe_seconds(v);
                if d.is_none() {
                    bad.push(format!(
                        "healthCheck.{field} {v}: not a number of seconds above 0 and below 86400"
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

fn pod_warning(pod: &Pod, message: String) -> Warning {
    Warning {
        app: Some(pod.id.clone()),
        message,
    }
}

/// The instance network an endpoint's address comes from: the first of its `networkNames` the
/// instance has, else the instance's first network.
fn endpoint_network<'a>(
    instance: &'a PodInstance,
    endpoint: &PodEndpoint,
) -> Option<&'a PodNetworkStatus> {
    if endpoint.network_names.is_empty() {
        instance.networks.first()
    } else {
        endpoint.network_names.iter().find_map(|want| {
            instance
                .networks
                .iter()
                .find(|n| n.name.as_deref() == Some(want.as_str()))
        })
    }
}

/// The instance's address for a container-network endpoint: on the first network named in
/// `networkNames` that the instance has, or on the instance's first network when the endpoint
/// names none. The first address of that network.
fn instance_address<'a>(instance: &'a PodInstance, endpoint: &PodEndpoint) -> Option<&'a str> {
    let network = endpoint_network(instance, endpoint)?;
    network
        .addresses
        .first()
        .map(String::as_str)
        .filter(|a| !a.is_empty())
}

/// The first address of the endpoint's network whose family differs from `primary`'s (a
/// dual-stack instance's IPv6 address beside its IPv4 one).
fn other_family_address<'a>(
    instance: &'a PodInstance,
    endpoint: &PodEndpoint,
    primary: &str,
) -> Option<&'a str> {
    let family = |raw: &str| raw.parse::<std::net::IpAddr>().ok().map(|ip| ip.is_ipv6());
    let want = !family(primary)?;
    let network = endpoint_network(instance, endpoint)?;
    network
        .addresses
        .iter()
        .map(String::as_str)
        .find(|a| family(a) == Some(want))
}

/// The pod translation: one pod → one neutral [`Service`] (module docs). `None` when the pod's
/// networking mode is unknown (the reason is in `warnings`). Pure; borrows from `pod`.
pub fn pod_service<'a>(pod: &'a Pod, warnings: &mut Vec<Warning>) -> Option<Service<'a>> {
    let mode = match pod_network_mode(pod) {
        Ok(m) => m,
        Err(msg) => {
            warnings.push(pod_warning(pod, msg));
            return None;
        }
    };
    let total: usize = pod.spec.containers.iter().map(|c| c.endpoints.len()).sum();
    let mut ports = Vec::with_capacity(total);
    // Per spec container: whether one of its usable endpoints has a VIP label (only those
    // containers' tasks can back a frontend: pods have no service ports).
    let mut container_has_vip = vec![false; pod.spec.containers.len()];
    let mut index = 0usize;
    for (ci, container) in pod.spec.containers.iter().enumerate() {
        for endpoint in &container.endpoints {
            let n = index;
            index += 1;
            let Some(protocols) = parse_pod_protocols(&endpoint.protocol) else {
                warnings.push(pod_warning(
                    pod,
                    format!(
                        "port {n} (endpoint {}): unknown protocol in {:?}; endpoint skipped",
                        endpoint.name, endpoint.protocol
                    ),
                ));
                continue;
            };
            container_has_vip[ci] |= endpoint.labels.keys().any(|k| vip::is_vip_label_key(k));
            let mut option_warnings = Vec::new();
            let options = port_options(pod, container, endpoint, n, &mut option_warnings);
            ports.push(ServicePort {
                index: n,
                name: Some(endpoint.name.as_str()),
                protocols,
                service_port: None,
                vip_labels: (!endpoint.labels.is_empty())
                    .then_some(Cow::Borrowed(&endpoint.labels)),
                options,
                option_warnings,
                address: PortAddress::AgentPort(n),
            });
        }
    }
    let mut endpoints = Vec::new();
    let mut endpoint_warnings = Vec::new();
    if container_has_vip.contains(&true) {
        // Where each spec container's endpoints start in the global index.
        let mut starts = Vec::with_capacity(pod.spec.containers.len());
        let mut at = 0usize;
        for c in &pod.spec.containers {
            starts.push(at);
            at += c.endpoints.len();
        }
        for instance in &pod.instances {
            for status in &instance.containers {
                let Some((ci, spec)) = pod
                    .spec
                    .containers
                    .iter()
                    .enumerate()
                    .find(|(_, c)| c.name == status.name)
                else {
                    continue;
                };
                if !container_has_vip[ci] {
                    continue;
                }
                let state = match container_state(status, spec) {
                    Ok(Some(s)) => s,
                    Ok(None) => continue,
                    Err(msg) => {
                        endpoint_warnings.push(msg);
                        continue;
                    }
                };
                let Some(task) = status.container_id.as_deref().filter(|t| !t.is_empty()) else {
                    continue;
                };
                container_endpoints(
                    ContainerInput {
                        mode,
                        instance,
                        status,
                        spec,
                        first_index: starts[ci],
                        total,
                        task,
                        state,
                    },
                    &mut endpoints,
                    &mut endpoint_warnings,
                );
            }
        }
    }
    Some(Service {
        kind: OwnerKind::Pod,
        id: &pod.id,
        framework: vip::FRAMEWORK,
        ports,
        endpoints,
        endpoint_warnings,
    })
}

/// One routable container task, as [`container_endpoints`] needs it.
struct ContainerInput<'a> {
    mode: NetworkMode,
    instance: &'a PodInstance,
    status: &'a ContainerStatus,
    spec: &'a PodContainer,
    /// Index `{n}` of the container's first spec endpoint.
    first_index: usize,
    /// Number of spec endpoints of the pod (the length of every slot list).
    total: usize,
    task: &'a str,
    state: BackendState,
}

/// The endpoints of one container task: one on the agent for its host-port endpoints, one per
/// instance address for its container-port endpoints (module docs).
fn container_endpoints<'a>(
    c: ContainerInput<'a>,
    out: &mut Vec<Endpoint<'a>>,
    warnings: &mut Vec<String>,
) {
    let mut agent_slots: Option<Vec<u16>> = None;
    let mut ip_slots: Vec<(&'a str, Vec<u16>, bool)> = Vec::new();
    for (k, endpoint) in c.spec.endpoints.iter().enumerate() {
        let n = c.first_index + k;
        let on_agent = match c.mode {
            NetworkMode::Host | NetworkMode::Bridge => true,
            NetworkMode::Container => endpoint.host_port.is_some(),
        };
        if on_agent {
            // Joined by name: Marathon reorders the status endpoints.
            let port = c
                .status
                .endpoints
                .iter()
                .find(|e| e.name == endpoint.name)
                .and_then(|e| e.allocated_host_port)
                .unwrap_or(0);
            if port != 0 {
                agent_slots.get_or_insert_with(|| vec![0; c.total])[n] = port;
            }
        } else {
            let port = endpoint.container_port.unwrap_or(0);
            if port == 0 {
                continue;
            }
            let Some(addr) = instance_address(c.instance, endpoint) else {
                continue; // no address yet
            };
            if super::build::host_ip_literal(addr).is_none() {
                warnings.push(format!(
                    "container {}: network address {addr:?} is not an IP address; its container-port backends skipped",
                    c.task
                ));
                continue;
            }
            let other = other_family_address(c.instance, endpoint, addr);
            for (addr, secondary) in std::iter::once((addr, false)).chain(other.map(|a| (a, true)))
            {
                match ip_slots.iter_mut().find(|(a, _, _)| *a == addr) {
                    Some((_, slots, _)) => slots[n] = port,
                    None => {
                        let mut slots = vec![0; c.total];
                        slots[n] = port;
                        ip_slots.push((addr, slots, secondary));
                    }
                }
            }
        }
    }
    let zone = c.instance.agent_zone.as_deref();
    let agent = c
        .instance
        .agent_hostname
        .as_deref()
        .filter(|h| !h.is_empty());
    if let (Some(slots), Some(agent)) = (agent_slots, agent) {
        out.push(Endpoint {
            task: c.task,
            agent: Some(agent),
            ip: None,
            host_ports: Cow::Owned(slots),
            state: c.state,
            zone,
            secondary_family: false,
        });
    }
    for (addr, slots, secondary_family) in ip_slots {
        out.push(Endpoint {
            task: c.task,
            agent: Some(addr),
            ip: None,
            host_ports: Cow::Owned(slots),
            state: c.state,
            zone,
            secondary_family,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::pod::parse_pod_value;
    use crate::table::{build, BuildOptions, Resolved};

    fn pod(json: &str) -> Pod {
        parse_pod_value(json).unwrap_or_else(|r| panic!("{r:?}"))
    }

    /// `(protocol, listen, [(address, task, state)])` of every frontend.
    fn table(pods: &[&str], resolved: &Resolved) -> (Vec<String>, Vec<String>) {
        let snap = crate::model::AppsSnapshot {
            pods: pods.iter().map(|p| std::sync::Arc::new(pod(p))).collect(),
            ..Default::default()
        };
        let b = build(&snap, resolved, &BuildOptions::default());
        let fronts = b
            .frontends
            .iter()
            .map(|f| {
                let backends: Vec<String> = f
                    .backends
                    .iter()
                    .map(|b| format!("{} {} {}", b.address, b.task, b.state.as_str()))
                    .collect();
                format!(
                    "{} {} {:?} {} [{}]",
                    f.protocol,
                    f.vip_name.as_deref().unwrap_or("-"),
                    f.owner_kind,
                    f.app,
                    backends.join(", ")
                )
            })
            .collect();
        let warnings = b.warnings.iter().map(|w| w.message.clone()).collect();
        (fronts, warnings)
    }

    fn host_pod(endpoints_status: &str, container_extra: &str) -> String {
        format!(
            r#"{{"id":"/p","spec":{{"containers":[{{"name":"web","endpoints":[
                {{"name":"http","hostPort":0,"protocol":["tcp"],"labels":{{"VIP_0":"/p:80"}}}},
                {{"name":"admin","hostPort":0,"protocol":["tcp"]}}]{container_extra}}}],
              "networks":[{{"mode":"host"}}]}},
             "instances":[{{"id":"p.instance-1","agentHostname":"10.0.0.1","agentZone":"z1",
               "containers":[{{"name":"web","status":"TASK_RUNNING","containerId":"p.instance-1.web",
                 "endpoints":{endpoints_status}}}]}}]}}"#
        )
    }

    #[test]
    fn host_pod_endpoint_gets_agent_and_allocated_port_matched_by_name() {
        // The status lists `admin` first: matched by name, never by position.
        let p = host_pod(
            r#"[{"name":"admin","allocatedHostPort":31001},{"name":"http","allocatedHostPort":31000}]"#,
            "",
        );
        let (f, w) = table(&[&p], &Resolved::default());
        assert_eq!(
            f,
            ["tcp p.marathon.l4lb.thisdcos.directory Pod /p [10.0.0.1:31000 p.instance-1.web up]"]
        );
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn no_allocated_port_yet_is_no_backend_and_no_warning() {
        let p = host_pod(r#"[{"name":"http"}]"#, "");
        let (f, w) = table(&[&p], &Resolved::default());
        assert_eq!(f, ["tcp p.marathon.l4lb.thisdcos.directory Pod /p []"]);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn an_unresolvable_agent_is_a_warning_and_a_resolved_one_is_used() {
        let p = host_pod(r#"[{"name":"http","allocatedHostPort":31000}]"#, "")
            .replace("\"10.0.0.1\"", "\"agent-1\"");
        let (f, w) = table(&[&p], &Resolved::default());
        assert_eq!(f, ["tcp p.marathon.l4lb.thisdcos.directory Pod /p []"]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("host \"agent-1\" did not resolve"), "{w:?}");
        let mut r = Resolved::default();
        r.hosts.insert("agent-1".into(), Some([10, 0, 0, 9].into()));
        let (f, _) = table(&[&p], &r);
        assert_eq!(
            f,
            ["tcp p.marathon.l4lb.thisdcos.directory Pod /p [10.0.0.9:31000 p.instance-1.web up]"]
        );
    }

    #[test]
    fn health_unhealthy_unknown_and_up() {
        let eps = r#"[{"name":"http","allocatedHostPort":31000}]"#;
        let check = r#","healthCheck":{"http":{"endpoint":"http","path":"/h"}}"#;
        let state = |p: &Pod| {
            container_state(&p.instances[0].containers[0], &p.spec.containers[0]).unwrap()
        };
        // No check: up.
        assert_eq!(state(&pod(&host_pod(eps, ""))), Some(BackendState::Up));
        // A check, no result yet (no condition): unknown.
        assert_eq!(
            state(&pod(&host_pod(eps, check))),
            Some(BackendState::Unknown)
        );
        // A check, Marathon's "unreported" condition: still unknown.
        let unreported = host_pod(eps, check).replace(
            r#""endpoints":["#,
            r#""conditions":[{"name":"healthy","value":"false","reason":"health-unreported-by-mesos"}],"endpoints":["#,
        );
        assert_eq!(state(&pod(&unreported)), Some(BackendState::Unknown));
        // A reported false condition: unhealthy.
        let failing = host_pod(eps, check).replace(
            r#""endpoints":["#,
            r#""conditions":[{"name":"healthy","value":"false","reason":"health-reported-by-mesos"}],"endpoints":["#,
        );
        assert_eq!(state(&pod(&failing)), Some(BackendState::Unhealthy));
        // An endpoint's `healthy: false`: unhealthy; `true`: up.
        let ep_false = host_pod(
            r#"[{"name":"http","allocatedHostPort":31000,"healthy":false}]"#,
            check,
        );
        assert_eq!(state(&pod(&ep_false)), Some(BackendState::Unhealthy));
        let ep_true = host_pod(
            r#"[{"name":"http","allocatedHostPort":31000,"healthy":true}]"#,
            check,
        );
        assert_eq!(state(&pod(&ep_true)), Some(BackendState::Up));
        // The probe of the check lands on the endpoint it targets.
        let p = pod(&host_pod(eps, check));
        let mut w = Vec::new();
        let svc = pod_service(&p, &mut w).unwrap();
        assert_eq!(
            svc.ports[0].options.probe.as_ref().map(|p| p.kind.clone()),
            Some(ProbeKind::Http { path: "/h".into() })
        );
        assert!(svc.ports[1].options.probe.is_none());
    }

    #[test]
    fn killing_container_under_a_terminal_instance_drains_and_others_give_nothing() {
        let eps = r#"[{"name":"http","allocatedHostPort":31000}]"#;
        let p = host_pod(eps, "").replace(
            r#""agentZone":"z1","#,
            r#""agentZone":"z1","status":"TERMINAL","#,
        );
        let killing = p.replace("TASK_RUNNING", "TASK_KILLING");
        let (f, _) = table(&[&killing], &Resolved::default());
        assert_eq!(
            f,
            ["tcp p.marathon.l4lb.thisdcos.directory Pod /p [10.0.0.1:31000 p.instance-1.web draining]"]
        );
        for other in [
            "TASK_STAGING",
            "TASK_FINISHED",
            "TASK_KILLED",
            "TASK_UNREACHABLE",
        ] {
            let (f, w) = table(&[&p.replace("TASK_RUNNING", other)], &Resolved::default());
            assert_eq!(
                f,
                ["tcp p.marathon.l4lb.thisdcos.directory Pod /p []"],
                "{other}"
            );
            assert!(w.is_empty(), "{other}: {w:?}");
        }
        let (_, w) = table(
            &[&p.replace("TASK_RUNNING", "TASK_NEW")],
            &Resolved::default(),
        );
        assert_eq!(
            w,
            ["container p.instance-1.web: unknown state \"TASK_NEW\"; container skipped"]
        );
    }

    #[test]
    fn container_pod_with_and_without_host_port_and_two_networks() {
        let p = r#"{"id":"/c","spec":{
            "networks":[{"name":"dcos","mode":"container"},{"name":"blue","mode":"container"}],
            "containers":[
              {"name":"a","endpoints":[
                {"name":"hp","containerPort":80,"hostPort":0,"networkNames":["dcos"],"protocol":["tcp"],"labels":{"VIP_0":"/c-hp:80"}},
                {"name":"blue","containerPort":8080,"networkNames":["blue"],"protocol":["udp","tcp"],"labels":{"VIP_0":"/c-blue:8080"}},
                {"name":"dflt","containerPort":9090,"protocol":["tcp"],"labels":{"VIP_0":"/c-dflt:9090"}}]},
              {"name":"b","endpoints":[
                {"name":"side","containerPort":7070,"protocol":["tcp"],"labels":{"VIP_0":"/c-side:7070"}}]}]},
          "instances":[{"id":"c.instance-1","agentHostname":"10.0.0.5",
            "networks":[{"name":"dcos","addresses":["9.0.0.5"]},{"name":"blue","addresses":["9.1.0.5"]}],
            "containers":[
              {"name":"a","status":"TASK_RUNNING","containerId":"c.instance-1.a",
               "endpoints":[{"name":"blue"},{"name":"dflt"},{"name":"hp","allocatedHostPort":31500}]},
              {"name":"b","status":"TASK_RUNNING","containerId":"c.instance-1.b","endpoints":[{"name":"side"}]}]}]}"#;
        let (f, w) = table(&[p], &Resolved::default());
        assert!(w.is_empty(), "{w:?}");
        let mut f = f;
        f.sort();
        assert_eq!(
            f,
            [
                "tcp c-blue.marathon.l4lb.thisdcos.directory Pod /c [9.1.0.5:8080 c.instance-1.a up]",
                "tcp c-dflt.marathon.l4lb.thisdcos.directory Pod /c [9.0.0.5:9090 c.instance-1.a up]",
                "tcp c-hp.marathon.l4lb.thisdcos.directory Pod /c [10.0.0.5:31500 c.instance-1.a up]",
                "tcp c-side.marathon.l4lb.thisdcos.directory Pod /c [9.0.0.5:7070 c.instance-1.b up]",
                "udp c-blue.marathon.l4lb.thisdcos.directory Pod /c [9.1.0.5:8080 c.instance-1.a up]",
            ]
        );
        // No address yet: no backend, no warning; a non-IP address: a warning.
        let none = p.replace(
            r#"{"name":"blue","addresses":["9.1.0.5"]}"#,
            r#"{"name":"blue"}"#,
        );
        let (f, w) = table(&[&none], &Resolved::default());
        assert!(w.is_empty(), "{w:?}");
        assert!(
            f.iter()
                .any(|f| f.starts_with("tcp c-blue") && f.ends_with("[]")),
            "{f:?}"
        );
        let bad = p.replace("9.1.0.5", "blue-host");
        let (_, w) = table(&[&bad], &Resolved::default());
        assert_eq!(
            w,
            ["container c.instance-1.a: network address \"blue-host\" is not an IP address; its container-port backends skipped"]
        );
    }

    #[test]
    fn a_dual_stack_instance_network_feeds_the_ipv6_side_and_host_ports_only_the_ipv4_side() {
        let p = r#"{"id":"/d","spec":{"networks":[{"name":"dcos6","mode":"container"}],
            "containers":[{"name":"a","endpoints":[
                {"name":"c","containerPort":9090,"protocol":["tcp"],"labels":{"VIP_0":"/d-c:9090"}},
                {"name":"h","containerPort":80,"hostPort":0,"protocol":["tcp"],"labels":{"VIP_0":"/d-h:80"}}]}]},
          "instances":[{"id":"d.instance-1","agentHostname":"10.0.0.5",
            "networks":[{"name":"dcos6","addresses":["9.0.0.5","fd00:9::5"]}],
            "containers":[{"name":"a","status":"TASK_RUNNING","containerId":"d.instance-1.a",
               "endpoints":[{"name":"c"},{"name":"h","allocatedHostPort":31600}]}]}]}"#;
        let snap = crate::model::AppsSnapshot {
            pods: vec![std::sync::Arc::new(pod(p))],
            ..Default::default()
        };
        let opts = BuildOptions {
            vip_cidr6: Some("fd01:c::/64".parse().unwrap()),
            ..Default::default()
        };
        let b = build(&snap, &Resolved::default(), &opts);
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
        let mut sides: Vec<(String, bool, Vec<String>)> = b
            .frontends
            .iter()
            .map(|f| {
                let backends = f.backends.iter().map(|b| b.address.to_string()).collect();
                (f.vip_name.clone().unwrap(), f.listen.is_ipv6(), backends)
            })
            .collect();
        sides.sort();
        let side = |name: &str, v6: bool, backends: &[&str]| {
            let backends = backends.iter().map(|b| (*b).to_string()).collect();
            (
                format!("{name}.marathon.l4lb.thisdcos.directory"),
                v6,
                backends,
            )
        };
        assert_eq!(
            sides,
            [
                side("d-c", false, &["9.0.0.5:9090"]),
                side("d-c", true, &["[fd00:9::5]:9090"]),
                // The agent's one address: no IPv6 side.
                side("d-h", false, &["10.0.0.5:31600"]),
            ]
        );
    }

    #[test]
    fn bridge_pod_uses_the_agent_and_allocated_port() {
        let p = r#"{"id":"/b","spec":{"networks":[{"mode":"container/bridge"}],
            "containers":[{"name":"a","endpoints":[
              {"name":"e","containerPort":80,"hostPort":0,"protocol":["tcp"],"labels":{"VIP_0":"1.2.3.4:80"}}]}]},
          "instances":[{"id":"b.instance-1","agentHostname":"10.0.0.7",
            "networks":[{"name":"mesos-bridge","addresses":["172.31.254.3"]}],
            "containers":[{"name":"a","status":"TASK_RUNNING","containerId":"b.instance-1.a",
              "endpoints":[{"name":"e","allocatedHostPort":31700}]}]}]}"#;
        let (f, w) = table(&[p], &Resolved::default());
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(f, ["tcp - Pod /b [10.0.0.7:31700 b.instance-1.a up]"]);
    }

    #[test]
    fn protocols_from_the_array_and_an_unknown_one_skips_the_endpoint() {
        assert_eq!(parse_pod_protocols(&[]), Some(TCP));
        let v = |s: &[&str]| s.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
        assert_eq!(parse_pod_protocols(&v(&["udp", "tcp"])), Some(BOTH));
        assert_eq!(parse_pod_protocols(&v(&["UDP"])), Some(UDP));
        assert_eq!(parse_pod_protocols(&v(&["http"])), Some(TCP));
        assert_eq!(parse_pod_protocols(&v(&["tcp", "sctp"])), None);
        let p = host_pod(r#"[{"name":"http","allocatedHostPort":31000}]"#, "").replace(
            r#""protocol":["tcp"],"labels""#,
            r#""protocol":["sctp"],"labels""#,
        );
        let (f, w) = table(&[&p], &Resolved::default());
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(
            w,
            ["port 0 (endpoint http): unknown protocol in [\"sctp\"]; endpoint skipped"]
        );
    }

    #[test]
    fn a_pod_without_vip_labels_has_no_frontend_and_no_endpoints() {
        let p = host_pod(r#"[{"name":"http","allocatedHostPort":31000}]"#, "")
            .replace(r#","labels":{"VIP_0":"/p:80"}"#, "");
        let (f, w) = table(&[&p], &Resolved::default());
        assert!(f.is_empty() && w.is_empty(), "{f:?} {w:?}");
        let mut w = Vec::new();
        assert!(pod_service(&pod(&p), &mut w).unwrap().endpoints.is_empty());
    }

    #[test]
    fn options_read_the_endpoint_labels_then_the_pod_labels_with_the_global_index() {
        // `{n}` counts every container's endpoints in spec order: `side` is port 2.
        let p = r#"{"id":"/o","spec":{"labels":{"VIPD_2_BALANCE":"maglev","VIPD_0_BALANCE":"p2c"},
            "containers":[
              {"name":"a","endpoints":[{"name":"x","hostPort":0,"labels":{"VIPD_BALANCE":"least-conn"}},{"name":"y","hostPort":0}]},
              {"name":"b","endpoints":[{"name":"side","hostPort":0}]}]}}"#;
        let p = pod(p);
        let mut w = Vec::new();
        let svc = pod_service(&p, &mut w).unwrap();
        let balances: Vec<_> = svc
            .ports
            .iter()
            .map(|p| (p.index, p.name, p.options.balance()))
            .collect();
        use crate::table::Balance::*;
        assert_eq!(
            balances,
            [
                (0, Some("x"), Some(LeastConn)),
                (1, Some("y"), None),
                (2, Some("side"), Some(Maglev))
            ]
        );
    }

    #[test]
    fn unknown_network_mode_skips_the_pod_with_a_warning_and_no_networks_is_host() {
        let p = pod(r#"{"id":"/m","spec":{"networks":[{"mode":"overlay"}]}}"#);
        let mut w = Vec::new();
        assert!(pod_service(&p, &mut w).is_none());
        assert_eq!(w[0].app.as_deref(), Some("/m"));
        assert!(w[0].message.contains("unknown network mode \"overlay\""));
        let p = pod(r#"{"id":"/h"}"#);
        assert_eq!(pod_network_mode(&p), Ok(NetworkMode::Host));
        let p = pod(r#"{"id":"/h","spec":{"networks":[{"name":"dcos"}]}}"#);
        assert_eq!(pod_network_mode(&p), Ok(NetworkMode::Container));
    }
}
