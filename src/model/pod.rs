//! Marathon pods as vipd reads them: `PodStatus` (`GET /v2/pods/::status`, a bare top-level
//! array, and `GET /v2/pods/{id}::status`, one object), spec and status together.
//!
//! Owns: the serde model of a `PodStatus` (spec containers, endpoints, networks, health checks;
//! instances, their networks and container statuses), as Marathon 1.4 through 1.10 write it
//! (`null` for unset fields in 1.4, omitted later), and the per-pod fault isolation: a malformed
//! pod is reported with its id and the JSON path that failed, and every other pod still parses.
//! ../shared/reference/marathon/pods/FACTS.md §2 and §3 are the source.
//!
//! Must not: interpret fields for routing (that is `table::pod`), join status to spec, do I/O,
//! or read a clock. As in [`super`], every array is `null`-tolerant, every scalar an `Option`,
//! unknown fields are ignored.

use super::{describe_failure, null_default, AppRejection, Labels, ModelError, TaskState};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::sync::Arc;

/// One pod with its status: a `PodStatus` object.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    pub id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub spec: PodSpec,
    /// `STABLE`, `DEGRADED`, `TERMINAL`. Not used for routing (containers decide).
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub instances: Vec<PodInstance>,
}

/// The pod definition embedded in a `PodStatus`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub labels: Labels,
    #[serde(default, deserialize_with = "null_default")]
    pub containers: Vec<PodContainer>,
    /// Empty: host networking (Marathon writes no `networks` for a pod posted without them).
    #[serde(default, deserialize_with = "null_default")]
    pub networks: Vec<super::Network>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodContainer {
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub endpoints: Vec<PodEndpoint>,
    /// Mesos-native check (`http`, `tcp` or `exec`); `null` on 1.4 when unset.
    #[serde(default)]
    pub health_check: Option<PodHealthCheck>,
}

/// A spec endpoint. `protocol` is an array here (`["tcp","udp"]`), not the apps' string.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodEndpoint {
    pub name: String,
    #[serde(default)]
    pub container_port: Option<u16>,
    /// Present (0 = allocate) when the endpoint asks for a host port.
    #[serde(default)]
    pub host_port: Option<u16>,
    #[serde(default, deserialize_with = "null_default")]
    pub protocol: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub labels: Labels,
    #[serde(default, deserialize_with = "null_default")]
    pub network_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodHealthCheck {
    #[serde(default)]
    pub http: Option<PodHttpCheck>,
    #[serde(default)]
    pub tcp: Option<PodTcpCheck>,
    #[serde(default)]
    pub interval_seconds: Option<f64>,
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodHttpCheck {
    /// The endpoint name the check targets.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodTcpCheck {
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// One instance of a pod (`<pod>.instance-<uuid>`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodInstance {
    pub id: String,
    /// `PENDING`, `STAGING`, `STABLE`, `DEGRADED`, `TERMINAL`: not used for routing (a killing
    /// container's instance already says `TERMINAL`).
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub agent_hostname: Option<String>,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub agent_zone: Option<String>,
    #[serde(default)]
    pub agent_region: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub networks: Vec<PodNetworkStatus>,
    #[serde(default, deserialize_with = "null_default")]
    pub containers: Vec<ContainerStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodNetworkStatus {
    /// Absent for the host network.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub addresses: Vec<String>,
}

/// One container of an instance: one Mesos task.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    pub name: String,
    /// The raw Mesos state (`TASK_RUNNING`, `TASK_KILLING`, …).
    #[serde(default)]
    pub status: Option<TaskState>,
    #[serde(default, deserialize_with = "null_default")]
    pub conditions: Vec<StatusCondition>,
    /// The Mesos task id (`<instance>.<container>[.<incarnation>]`).
    #[serde(default)]
    pub container_id: Option<String>,
    /// In Marathon's order (not the spec's): join by `name`.
    #[serde(default, deserialize_with = "null_default")]
    pub endpoints: Vec<EndpointStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusCondition {
    pub name: String,
    /// A string (`"true"`, `"false"`), ≤ 64 characters.
    #[serde(default)]
    pub value: Option<String>,
    /// `health-reported-by-mesos`, `health-unreported-by-mesos`, …
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    pub name: String,
    #[serde(default)]
    pub allocated_host_port: Option<u16>,
    #[serde(default)]
    pub healthy: Option<bool>,
}

/// The good pods in document order, and what was skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedPods {
    pub pods: Vec<Arc<Pod>>,
    pub rejected: Vec<AppRejection>,
}

/// Parses each raw pod on its own.
pub(super) fn parse_pod_values(raw: &[&RawValue]) -> ParsedPods {
    let mut out = ParsedPods {
        pods: Vec::with_capacity(raw.len()),
        rejected: Vec::new(),
    };
    for r in raw {
        match parse_pod_value(r.get()) {
            Ok(p) => out.pods.push(Arc::new(p)),
            Err(rej) => out.rejected.push(rej),
        }
    }
    out
}

/// Parses one `PodStatus` object; a malformed one is a rejection naming its id and the JSON path.
pub fn parse_pod_value(json: &str) -> Result<Pod, AppRejection> {
    match serde_json::from_str::<Pod>(json) {
        Ok(p) => Ok(p),
        Err(_) => {
            let mut r = describe_failure::<Pod>(json);
            r.message = format!("malformed pod skipped: {}", r.message);
            Err(r)
        }
    }
}

/// Parses the body of `GET /v2/pods/::status`: a JSON array of `PodStatus`.
pub fn parse_pods_status(body: &[u8]) -> Result<ParsedPods, ModelError> {
    let raw: Vec<&RawValue> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return Err(ModelError::NotAnAppsDocument(format!(
                "not a Marathon pods status array: {e}"
            )))
        }
        Err(e) => return Err(ModelError::Json(e)),
    };
    Ok(parse_pod_values(&raw))
}

/// Parses the body of `GET /v2/pods/{id}::status`: one `PodStatus` object.
pub fn parse_single_pod_status(body: &[u8]) -> Result<Result<Pod, AppRejection>, ModelError> {
    let raw: &RawValue = serde_json::from_slice(body)?;
    if !raw.get().trim_start().starts_with('{') {
        return Err(ModelError::NotAnAppsDocument(
            "a pod status must be a JSON object".into(),
        ));
    }
    Ok(parse_pod_value(raw.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_1_4_pod_with_nulls_parses() {
        let body = br#"[{"id":"/p","spec":{"id":"/p","labels":null,"networks":null,
            "containers":[{"name":"c","endpoints":null,"healthCheck":null}]},
            "instances":[{"id":"p.instance-1","networks":null,"containers":[
              {"name":"c","status":"TASK_RUNNING","conditions":null,"endpoints":null}]}]}]"#;
        let p = parse_pods_status(body).unwrap();
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        let pod = &p.pods[0];
        assert!(pod.spec.containers[0].health_check.is_none());
        assert_eq!(
            pod.instances[0].containers[0].status,
            Some(TaskState::Running)
        );
    }

    #[test]
    fn a_malformed_pod_is_rejected_with_its_id_and_path_and_others_survive() {
        let body = br#"[{"id":"/good"},
            {"id":"/bad","spec":{"containers":[{"name":"c","endpoints":[{"name":"e","hostPort":"x"}]}]}},
            {"id":"/good2"}]"#;
        let p = parse_pods_status(body).unwrap();
        let ids: Vec<&str> = p.pods.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["/good", "/good2"]);
        assert_eq!(p.rejected.len(), 1);
        assert_eq!(p.rejected[0].app.as_deref(), Some("/bad"));
        assert!(
            p.rejected[0]
                .message
                .starts_with("malformed pod skipped: spec.containers[0].endpoints[0].hostPort: "),
            "{}",
            p.rejected[0].message
        );
    }

    #[test]
    fn an_object_is_not_a_pods_status_array_and_a_single_status_must_be_an_object() {
        assert!(matches!(
            parse_pods_status(br#"{"pods":[]}"#),
            Err(ModelError::NotAnAppsDocument(_))
        ));
        assert!(matches!(parse_pods_status(b"[{"), Err(ModelError::Json(_))));
        assert!(parse_single_pod_status(b"[]").is_err());
        let one = parse_single_pod_status(br#"{"id":"/x"}"#).unwrap().unwrap();
        assert_eq!(one.id, "/x");
    }

    /// The real payloads in the shared reference parse (ignored without it).
    #[test]
    #[cfg_attr(
        not(vipd_shared_reference),
        ignore = "needs ../shared/reference (VIPD_SHARED_DIR)"
    )]
    fn reference_pod_status_payloads_parse() {
        let dir = std::path::Path::new(env!("VIPD_SHARED_REFERENCE")).join("marathon/pods");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let body = std::fs::read(&path).unwrap();
            if name.starts_with("v2_pods_status__") {
                let p = parse_pods_status(&body).unwrap();
                assert!(p.rejected.is_empty(), "{name}: {:?}", p.rejected);
                assert!(!p.pods.is_empty(), "{name}");
                n += 1;
            } else if name.starts_with("v2_pods_id_status__") {
                parse_single_pod_status(&body)
                    .unwrap()
                    .unwrap_or_else(|r| panic!("{name}: {r:?}"));
                n += 1;
            }
        }
        assert!(n >= 3, "{n}");
    }
}
