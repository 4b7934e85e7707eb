//! Applying Marathon events to the pods of the current snapshot. Pure: no I/O, no clock.
//!
//! Owns: which events are about a pod, and how each changes the pod (clone-on-write of that pod
//! only) or asks for a pod fetch (`GET /v2/pods/{id}::status`, never `GET /v2/apps/{id}`);
//! replacing one fetched pod or all of them. ../shared/reference/marathon/pods/FACTS.md §3 and §5.
//!
//! An event is about a pod when its run-spec id (`appId` of a `status_update_event`, `runSpecId`
//! of the `instance_*` events, `appId` of `health_status_changed_event` and
//! `app_terminated_event`) names a pod of the snapshot, or, for an id that is neither a known app
//! nor a known pod, when a `status_update_event`'s task id is a pod container's
//! (`<pod>.instance-<uuid>.<container>[.<n>]`; an app task's is `….instance-<uuid>._app.<n>`).
//!
//! ## `status_update_event` (one per container; `taskId` = the container's task id)
//! - `TASK_STAGING`, `TASK_STARTING`, `TASK_RUNNING`: the container's state, task id, and its
//!   `allocatedHostPort`s (the event's `ports`, in the spec order of the endpoints that take a host
//!   port: all of them for host and bridge pods, those with `hostPort` for container pods) are set
//!   at once; its health is kept for the same task id and cleared for a new one. A new instance is
//!   added with the event's `host` as its agent. The pod is also re-fetched when the event cannot
//!   carry everything: a new instance of a container-network pod with endpoints without
//!   `hostPort` (their address is the instance's network address), or another pod version.
//! - `TASK_KILLING`, `TASK_UNREACHABLE`: the container is marked (killing drains; unreachable
//!   gets no backend). `TASK_LOST`: marked unreachable, and the pod re-fetched.
//! - A terminal state: the container is marked; an instance whose containers are all terminal is
//!   removed.
//! - An unknown state, a container the spec does not have, or an unknown pod: re-fetch the pod.
//!
//! ## Other events
//! - `instance_changed_event`: a terminal condition removes the instance; `Running` of an
//!   instance not in the snapshot re-fetches the pod; `Staging`, `Starting`, `Provisioned`,
//!   `Scheduled`, `Killing` change nothing (the container events carry the states); any other
//!   condition re-fetches the pod.
//! - `instance_health_changed_event`, `health_status_changed_event`: re-fetch the pod (the
//!   instance's verdict does not say which container it is about).
//! - `app_terminated_event` with a pod id: the pod is removed.
//!
//! Must not: decide routing (that is `table::pod`), fetch anything, or read a clock.

use super::{find_app, same_app_id, Effects, PodRefetch};
use crate::model::pod::{ContainerStatus, EndpointStatus, ParsedPods, PodInstance};
use crate::model::{AppsSnapshot, Pod, TaskState};
use crate::source::marathon::events::{InstanceChanged, MarathonEvent, StatusUpdate};
use crate::table::marathon::NetworkMode;
use crate::table::pod::pod_network_mode;
use std::sync::Arc;

impl Effects {
    fn pod(id: &str) -> Self {
        Effects {
            pod_refetch: PodRefetch::Pods(vec![id.to_string()]),
            ..Effects::default()
        }
    }
    fn with_pod(mut self, id: &str) -> Self {
        self.pod_refetch = PodRefetch::Pods(vec![id.to_string()]);
        self
    }
}

fn find_pod(snapshot: &AppsSnapshot, id: &str) -> Option<usize> {
    snapshot.pods.iter().position(|p| same_app_id(&p.id, id))
}

fn pod_mut(snapshot: &mut Arc<AppsSnapshot>, i: usize) -> &mut Pod {
    Arc::make_mut(&mut Arc::make_mut(snapshot).pods[i])
}

/// `(instance id, container name)` of a pod container's task id
/// (`web_frontend.instance-<uuid>.nginx[.1]`); `None` for anything else, an app task's id
/// (`….instance-<uuid>._app.1`) included.
pub fn split_pod_task_id(task_id: &str) -> Option<(&str, &str)> {
    const MARK: &str = ".instance-";
    let at = task_id.find(MARK)? + MARK.len();
    let dot = at + task_id[at..].find('.')?;
    let container = task_id[dot + 1..].split('.').next()?;
    if container.is_empty() || container.starts_with('_') || dot == at {
        return None;
    }
    Some((&task_id[..dot], container))
}

/// `Some` when `event` is about a pod (module docs); `None` leaves it to the app rules.
pub(super) fn apply_pod_event(
    snapshot: &mut Arc<AppsSnapshot>,
    event: &MarathonEvent,
) -> Option<Effects> {
    let is_pod = |id: &str| find_pod(snapshot, id).is_some();
    Some(match event {
        MarathonEvent::StatusUpdate(s) => {
            let unknown_pod_task =
                find_app(snapshot, &s.app_id).is_none() && split_pod_task_id(&s.task_id).is_some();
            if !is_pod(&s.app_id) && !unknown_pod_task {
                return None;
            }
            status_update(snapshot, s)
        }
        MarathonEvent::InstanceChanged(e) => {
            let pi = match e.run_spec_id.as_deref() {
                Some(id) => find_pod(snapshot, id)?,
                None => snapshot
                    .pods
                    .iter()
                    .position(|p| p.instances.iter().any(|i| i.id == e.instance_id))?,
            };
            instance_changed(snapshot, pi, e)
        }
        MarathonEvent::InstanceHealthChanged {
            app_id: Some(id), ..
        }
        | MarathonEvent::HealthStatusChanged {
            app_id: Some(id), ..
        } if is_pod(id) => Effects::pod(id),
        MarathonEvent::AppTerminated { app_id } if is_pod(app_id) => {
            let pi = find_pod(snapshot, app_id)?;
            Arc::make_mut(snapshot).pods.remove(pi);
            Effects::changed()
        }
        _ => return None,
    })
}

/// The spec endpoints of container `name` that take a host port, in spec order (what a
/// `status_update_event`'s `ports` are zipped with).
fn takes_host_port(mode: NetworkMode, host_port: Option<u16>) -> bool {
    match mode {
        NetworkMode::Host | NetworkMode::Bridge => true,
        NetworkMode::Container => host_port.is_some(),
    }
}

fn status_update(snapshot: &mut Arc<AppsSnapshot>, s: &StatusUpdate) -> Effects {
    let status = TaskState::parse(&s.task_status);
    let Some(pi) = find_pod(snapshot, &s.app_id) else {
        return if status.is_terminal() {
            Effects::ignored()
        } else {
            Effects::pod(&s.app_id)
        };
    };
    let pod = &snapshot.pods[pi];
    let Some((instance_id, name)) = split_pod_task_id(&s.task_id) else {
        return Effects::pod(&s.app_id);
    };
    let Some(spec) = pod.spec.containers.iter().find(|c| c.name == name) else {
        return Effects::pod(&s.app_id);
    };
    let Ok(mode) = pod_network_mode(pod) else {
        return Effects::pod(&s.app_id);
    };
    let ii = pod.instances.iter().position(|i| i.id == instance_id);
    let ci = ii.and_then(|ii| {
        pod.instances[ii]
            .containers
            .iter()
            .position(|c| c.name == name)
    });
    let existing = ii.zip(ci).map(|(ii, ci)| &pod.instances[ii].containers[ci]);
    match status {
        TaskState::Other(_) => Effects::pod(&s.app_id),
        TaskState::Staging | TaskState::Starting | TaskState::Running => {
            let same_task = existing.is_some_and(|c| c.container_id.as_deref() == Some(&s.task_id));
            let mut ports = s.ports.iter().copied();
            let endpoints: Vec<EndpointStatus> = if s.ports.is_empty() && same_task {
                existing.map(|c| c.endpoints.clone()).unwrap_or_default()
            } else {
                spec.endpoints
                    .iter()
                    .map(|e| {
                        let healthy = existing
                            .filter(|_| same_task)
                            .and_then(|c| c.endpoints.iter().find(|x| x.name == e.name))
                            .and_then(|x| x.healthy);
                        EndpointStatus {
                            name: e.name.clone(),
                            allocated_host_port: if takes_host_port(mode, e.host_port) {
                                ports.next()
                            } else {
                                None
                            },
                            healthy,
                        }
                    })
                    .collect()
            };
            let next = ContainerStatus {
                name: name.to_string(),
                status: Some(status),
                conditions: existing
                    .filter(|_| same_task)
                    .map(|c| c.conditions.clone())
                    .unwrap_or_default(),
                container_id: Some(s.task_id.clone()),
                endpoints,
            };
            let version_moved =
                matches!((&s.version, &pod.spec.version), (Some(a), Some(b)) if a != b);
            let needs_network = ii.is_none()
                && mode == NetworkMode::Container
                && spec.endpoints.iter().any(|e| e.host_port.is_none());
            let effects = if existing == Some(&next) {
                Effects::ignored()
            } else {
                let pod = pod_mut(snapshot, pi);
                match ii {
                    Some(ii) => {
                        let inst = &mut pod.instances[ii];
                        if inst.agent_hostname.is_none() {
                            inst.agent_hostname.clone_from(&s.host);
                        }
                        match ci {
                            Some(ci) => inst.containers[ci] = next,
                            None => inst.containers.push(next),
                        }
                    }
                    None => pod.instances.push(PodInstance {
                        id: instance_id.to_string(),
                        status: None,
                        agent_hostname: s.host.clone(),
                        agent_id: None,
                        agent_zone: None,
                        agent_region: None,
                        networks: Vec::new(),
                        containers: vec![next],
                    }),
                }
                Effects::changed()
            };
            if version_moved || needs_network {
                effects.with_pod(&s.app_id)
            } else {
                effects
            }
        }
        marked => {
            let lost = marked == TaskState::Lost;
            let marked = if lost { TaskState::Unreachable } else { marked };
            let effects = match (ii, ci) {
                (Some(ii), Some(ci))
                    if existing.and_then(|c| c.status.as_ref()) != Some(&marked) =>
                {
                    let terminal = marked.is_terminal();
                    let pod = pod_mut(snapshot, pi);
                    let inst = &mut pod.instances[ii];
                    inst.containers[ci].status = Some(marked);
                    if terminal
                        && inst
                            .containers
                            .iter()
                            .all(|c| c.status.as_ref().is_some_and(TaskState::is_terminal))
                    {
                        pod.instances.remove(ii);
                    }
                    Effects::changed()
                }
                _ => Effects::ignored(),
            };
            if lost {
                effects.with_pod(&s.app_id)
            } else {
                effects
            }
        }
    }
}

fn instance_changed(snapshot: &mut Arc<AppsSnapshot>, pi: usize, e: &InstanceChanged) -> Effects {
    let id = snapshot.pods[pi].id.clone();
    let ii = snapshot.pods[pi]
        .instances
        .iter()
        .position(|i| i.id == e.instance_id);
    match e.condition.as_str() {
        "Killed" | "Finished" | "Failed" | "Error" | "Gone" | "Dropped" | "Unknown" => match ii {
            Some(ii) => {
                pod_mut(snapshot, pi).instances.remove(ii);
                Effects::changed()
            }
            None => Effects::ignored(),
        },
        "Running" if ii.is_some() => Effects::ignored(),
        "Running" => Effects::pod(&id),
        "Staging" | "Starting" | "Provisioned" | "Scheduled" | "Killing" => Effects::ignored(),
        _ => Effects::pod(&id),
    }
}

/// Replaces pod `id` with its fetched version (`None`: gone). Returns whether the snapshot
/// changed.
pub fn replace_pod(snapshot: &mut Arc<AppsSnapshot>, id: &str, fetched: Option<Pod>) -> bool {
    match (find_pod(snapshot, id), fetched) {
        (None, None) => false,
        (Some(i), None) => {
            Arc::make_mut(snapshot).pods.remove(i);
            true
        }
        (None, Some(pod)) => {
            Arc::make_mut(snapshot).pods.push(Arc::new(pod));
            true
        }
        (Some(i), Some(pod)) => {
            if *snapshot.pods[i] == pod {
                return false;
            }
            Arc::make_mut(snapshot).pods[i] = Arc::new(pod);
            true
        }
    }
}

/// Replaces every pod with a fresh `GET /v2/pods/::status` answer, sharing the pods that did not
/// change. Returns whether the snapshot changed (a pod that disappeared is removed).
pub fn replace_all_pods(snapshot: &mut Arc<AppsSnapshot>, mut fetched: ParsedPods) -> bool {
    let mut next = AppsSnapshot {
        pods: std::mem::take(&mut fetched.pods),
        ..AppsSnapshot::default()
    };
    super::share_unchanged_apps(snapshot.as_ref(), &mut next);
    let same = next.pods.len() == snapshot.pods.len()
        && next
            .pods
            .iter()
            .zip(&snapshot.pods)
            .all(|(a, b)| Arc::ptr_eq(a, b))
        && fetched.rejected == snapshot.rejected_pods;
    if same {
        return false;
    }
    let s = Arc::make_mut(snapshot);
    s.pods = next.pods;
    s.rejected_pods = fetched.rejected;
    true
}

#[cfg(test)]
mod tests {
    use super::super::{apply_event, Refetch};
    use super::*;
    use crate::model::parse_apps_document;
    use crate::model::TaskIpAddress;

    const I1: &str = "web_frontend.instance-6a3c1f52-7b4d-11eb-9f21-0242ac110001";
    const I2: &str = "web_frontend.instance-6a3c1f52-7b4d-11eb-9f21-0242ac110002";

    fn base() -> Arc<AppsSnapshot> {
        let doc = format!(
            r#"{{"apps":[{{"id":"/app","tasks":[]}}],"pods":[{{"id":"/web/frontend",
              "spec":{{"version":"v1","containers":[{{"name":"nginx","endpoints":[
                {{"name":"http","hostPort":0,"labels":{{"VIP_0":"/f:80"}}}},
                {{"name":"admin","hostPort":0}}]}}],"networks":[{{"mode":"host"}}]}},
              "instances":[{{"id":"{I1}","agentHostname":"10.0.1.23","containers":[
                {{"name":"nginx","status":"TASK_RUNNING","containerId":"{I1}.nginx.1",
                  "conditions":[{{"name":"healthy","value":"true"}}],
                  "endpoints":[{{"name":"admin","allocatedHostPort":31002}},{{"name":"http","allocatedHostPort":31001,"healthy":true}}]}}]}}]}},
              {{"id":"/other","spec":{{"containers":[]}}}}]}}"#
        );
        Arc::new(parse_apps_document(doc.as_bytes()).unwrap())
    }

    fn status(task: &str, state: &str, ports: &[u16]) -> MarathonEvent {
        MarathonEvent::StatusUpdate(StatusUpdate {
            task_id: task.into(),
            app_id: "/web/frontend".into(),
            task_status: state.into(),
            host: Some("10.0.1.24".into()),
            ports: ports.to_vec(),
            ip_addresses: vec![TaskIpAddress {
                ip_address: "10.0.1.24".into(),
                protocol: None,
            }],
            version: Some("v1".into()),
        })
    }

    #[test]
    fn task_ids_of_pod_containers_and_of_apps() {
        assert_eq!(
            split_pod_task_id(&format!("{I1}.nginx.1")),
            Some((I1, "nginx"))
        );
        assert_eq!(
            split_pod_task_id(&format!("{I1}.nginx")),
            Some((I1, "nginx"))
        );
        assert_eq!(split_pod_task_id(&format!("{I1}._app.1")), None);
        assert_eq!(split_pod_task_id("web.1234"), None);
        assert_eq!(split_pod_task_id(I1), None);
    }

    #[test]
    fn running_for_a_new_instance_is_applied_at_once_without_any_fetch() {
        let before = base();
        let mut s = before.clone();
        let fx = apply_event(
            &mut s,
            &status(&format!("{I2}.nginx.1"), "TASK_RUNNING", &[31011, 31012]),
        );
        assert_eq!(fx, Effects::changed());
        let inst = &s.pods[0].instances[1];
        assert_eq!(inst.id, I2);
        assert_eq!(inst.agent_hostname.as_deref(), Some("10.0.1.24"));
        let c = &inst.containers[0];
        let ports: Vec<_> = c
            .endpoints
            .iter()
            .map(|e| (e.name.as_str(), e.allocated_host_port))
            .collect();
        // Zipped with the spec's endpoints in spec order.
        assert_eq!(ports, [("http", Some(31011)), ("admin", Some(31012))]);
        assert!(c.conditions.is_empty());
        // Clone-on-write: the other pod and the app are shared.
        assert!(Arc::ptr_eq(&s.pods[1], &before.pods[1]));
        assert!(Arc::ptr_eq(&s.apps[0], &before.apps[0]));
        // Applying it again changes nothing.
        let again = apply_event(
            &mut s,
            &status(&format!("{I2}.nginx.1"), "TASK_RUNNING", &[31011, 31012]),
        );
        assert!(again.ignored);
    }

    #[test]
    fn killing_marks_the_container_and_terminal_removes_the_instance() {
        let mut s = base();
        let id = format!("{I1}.nginx.1");
        assert_eq!(
            apply_event(&mut s, &status(&id, "TASK_KILLING", &[])),
            Effects::changed()
        );
        let c = &s.pods[0].instances[0].containers[0];
        assert_eq!(c.status, Some(TaskState::Killing));
        // The health and the ports stay: a draining backend keeps its address.
        assert_eq!(c.endpoints.len(), 2);
        assert_eq!(
            apply_event(&mut s, &status(&id, "TASK_KILLED", &[])),
            Effects::changed()
        );
        assert!(s.pods[0].instances.is_empty());
        assert!(apply_event(&mut s, &status(&id, "TASK_KILLED", &[])).ignored);
    }

    #[test]
    fn lost_unknown_states_other_versions_and_unknown_pods_refetch_the_pod_never_an_app() {
        let id = format!("{I1}.nginx.1");
        let pod = |fx: Effects| {
            assert_eq!(fx.refetch, Refetch::None, "never an app fetch: {fx:?}");
            fx.pod_refetch
        };
        let want = PodRefetch::Pods(vec!["/web/frontend".into()]);
        let mut s = base();
        assert_eq!(
            pod(apply_event(&mut s, &status(&id, "TASK_LOST", &[]))),
            want
        );
        assert_eq!(
            s.pods[0].instances[0].containers[0].status,
            Some(TaskState::Unreachable)
        );
        let mut s = base();
        assert_eq!(
            pod(apply_event(&mut s, &status(&id, "TASK_WEIRD", &[]))),
            want
        );
        let mut s = base();
        let mut e = status(&format!("{I2}.nginx.1"), "TASK_RUNNING", &[1, 2]);
        if let MarathonEvent::StatusUpdate(su) = &mut e {
            su.version = Some("v2".into());
        }
        assert_eq!(pod(apply_event(&mut s, &e)), want);
        // A container the spec does not have.
        let mut s = base();
        assert_eq!(
            pod(apply_event(
                &mut s,
                &status(&format!("{I1}.sidecar.1"), "TASK_RUNNING", &[])
            )),
            want
        );
        // A pod vipd does not know yet: recognised by its task id, fetched as a pod.
        let mut s = base();
        let mut e = status(
            "new_pod.instance-11111111-1111-1111-1111-111111111111.c.1",
            "TASK_RUNNING",
            &[],
        );
        if let MarathonEvent::StatusUpdate(su) = &mut e {
            su.app_id = "/new/pod".into();
        }
        assert_eq!(
            pod(apply_event(&mut s, &e)),
            PodRefetch::Pods(vec!["/new/pod".into()])
        );
        // An app task of an unknown app still fetches the app.
        let mut e = status(
            "new.instance-11111111-1111-1111-1111-111111111111._app.1",
            "TASK_RUNNING",
            &[],
        );
        if let MarathonEvent::StatusUpdate(su) = &mut e {
            su.app_id = "/new".into();
        }
        assert_eq!(
            apply_event(&mut s, &e).refetch,
            Refetch::Apps(vec!["/new".into()])
        );
    }

    #[test]
    fn a_new_instance_of_a_container_network_pod_is_applied_and_refetched_for_its_address() {
        let doc = r#"{"pods":[{"id":"/c","spec":{"networks":[{"name":"dcos"}],"containers":[{"name":"a",
            "endpoints":[{"name":"e","containerPort":80,"labels":{"VIP_0":"/c:80"}}]}]}}]}"#;
        let mut s = Arc::new(parse_apps_document(doc.as_bytes()).unwrap());
        let mut e = status(
            "c.instance-11111111-1111-1111-1111-111111111111.a.1",
            "TASK_RUNNING",
            &[],
        );
        if let MarathonEvent::StatusUpdate(su) = &mut e {
            su.app_id = "/c".into();
        }
        let fx = apply_event(&mut s, &e);
        assert!(fx.changed);
        assert_eq!(fx.pod_refetch, PodRefetch::Pods(vec!["/c".into()]));
    }

    #[test]
    fn instance_and_definition_events() {
        let ev = |c: &str, inst: &str| {
            MarathonEvent::InstanceChanged(InstanceChanged {
                instance_id: inst.into(),
                condition: c.into(),
                run_spec_id: Some("/web/frontend".into()),
            })
        };
        let mut s = base();
        assert!(apply_event(&mut s, &ev("Running", I1)).ignored);
        assert!(apply_event(&mut s, &ev("Killing", I1)).ignored);
        assert_eq!(
            apply_event(&mut s, &ev("Running", I2)).pod_refetch,
            PodRefetch::Pods(vec!["/web/frontend".into()])
        );
        assert!(apply_event(&mut s, &ev("Killed", I1)).changed);
        assert!(s.pods[0].instances.is_empty());
        let mut s = base();
        let health = MarathonEvent::InstanceHealthChanged {
            instance_id: I1.into(),
            app_id: Some("/web/frontend".into()),
            healthy: Some(false),
        };
        let fx = apply_event(&mut s, &health);
        assert_eq!(fx.refetch, Refetch::None);
        assert_eq!(
            fx.pod_refetch,
            PodRefetch::Pods(vec!["/web/frontend".into()])
        );
        assert!(
            apply_event(
                &mut s,
                &MarathonEvent::AppTerminated {
                    app_id: "/web/frontend".into()
                }
            )
            .changed
        );
        assert_eq!(s.pods.len(), 1);
        assert_eq!(
            apply_event(&mut s, &MarathonEvent::PodDefinition { pod_id: None }).pod_refetch,
            PodRefetch::All
        );
        assert_eq!(
            apply_event(
                &mut s,
                &MarathonEvent::PodDefinition {
                    pod_id: Some("/x".into())
                }
            )
            .pod_refetch,
            PodRefetch::Pods(vec!["/x".into()])
        );
        let fx = apply_event(
            &mut s,
            &MarathonEvent::DeploymentFinished {
                app_ids: vec![],
                pod_ids: vec!["/p".into()],
            },
        );
        assert_eq!(
            (fx.refetch, fx.pod_refetch),
            (Refetch::None, PodRefetch::Pods(vec!["/p".into()]))
        );
    }

    #[test]
    fn replacing_one_pod_and_all_pods() {
        let mut s = base();
        let same = (*s.pods[0]).clone();
        assert!(!replace_pod(&mut s, "web/frontend", Some(same)));
        assert!(replace_pod(&mut s, "/web/frontend", None));
        assert_eq!(s.pods.len(), 1);
        let before = base();
        let mut s = before.clone();
        let fetched = ParsedPods {
            pods: vec![Arc::new((*before.pods[1]).clone())],
            rejected: vec![],
        };
        assert!(replace_all_pods(&mut s, fetched));
        assert_eq!(s.pods.len(), 1, "a pod that disappeared is removed");
        assert!(
            Arc::ptr_eq(&s.pods[0], &before.pods[1]),
            "unchanged is shared"
        );
        let again = ParsedPods {
            pods: vec![Arc::new((*before.pods[1]).clone())],
            rejected: vec![],
        };
        assert!(!replace_all_pods(&mut s, again));
    }
}
