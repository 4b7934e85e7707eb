//! Marathon's JSON, as vipd reads it.
//!
//! Owns: the serde model of the apps document (`GET /v2/apps?embed=apps.tasks`, `{"apps":[…]}`)
//! and of a single app (`GET /v2/apps/{id}`, `{"app":{…}}`), as Marathon 0.x through 1.10 send
//! them, legacy fields included; and the per-app fault isolation: one malformed app is reported
//! with its id and the failing field, and every other app still parses.
//!
//! Must not: interpret what the fields mean for routing (that is `table::build`), do I/O, or
//! read a clock. Every array is `#[serde(default)]` with `null` treated as missing, every scalar
//! is an `Option`, and unknown fields are ignored, because Marathon omits empty fields in some
//! versions and emits them in others (../shared/reference/marathon/FACTS.md §2).

pub mod ids;
pub mod mesos;
pub mod pod;

pub use pod::Pod;

use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A document that could not be read as an apps document at all. No partial result exists.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a Marathon apps document: {0}")]
    NotAnAppsDocument(String),
}

/// One app that was skipped because part of it has the wrong type.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AppRejection {
    /// The app's `id`, when it could be read.
    pub app: Option<String>,
    /// The JSON path that failed and why, e.g. `portDefinitions: invalid type: …`.
    pub message: String,
}

/// The build input: the good apps and pods in document order, plus what was skipped.
///
/// (The name is historical: it holds every owner kind a source reads, apps first.)
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppsSnapshot {
    /// Each app behind an `Arc`, so that applying an event to one app clones only that app.
    pub apps: Vec<Arc<App>>,
    pub rejected: Vec<AppRejection>,
    /// Marathon pods (`PodStatus`, spec and status together), each behind an `Arc` like apps.
    pub pods: Vec<Arc<Pod>>,
    /// Pods that were skipped (malformed), with their id and the failing JSON path.
    pub rejected_pods: Vec<AppRejection>,
    /// Mesos tasks of any framework (the Mesos source), each behind an `Arc` like apps.
    pub tasks: Vec<Arc<mesos::MesosTask>>,
    /// Mesos tasks that were skipped (malformed), with their id and the failing JSON path.
    pub rejected_tasks: Vec<AppRejection>,
}

/// Parses the body of `GET /v2/apps?embed=apps.tasks`, or the file source's document
/// `{"apps": [...], "pods": [...]}` (`pods` in the shape of `GET /v2/pods/::status`).
///
/// Each app and each pod is parsed on its own: a wrong type inside one rejects only that one. A
/// body that is not a JSON object with an `apps` or a `pods` array is an error.
pub fn parse_apps_document(body: &[u8]) -> Result<AppsSnapshot, ModelError> {
    let doc: AppsDoc<'_> = match serde_json::from_slice(body) {
        Ok(doc) => doc,
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return Err(ModelError::NotAnAppsDocument(e.to_string()))
        }
        Err(e) => return Err(ModelError::Json(e)),
    };
    let AppsDocFields { apps, pods } = doc.0;
    if apps.is_none() && pods.is_none() {
        return Err(ModelError::NotAnAppsDocument(
            "no \"apps\" (or \"pods\") array".into(),
        ));
    }
    let raw_apps = apps.unwrap_or_default();
    let pods = pod::parse_pod_values(&pods.unwrap_or_default());
    let mut snapshot = AppsSnapshot {
        apps: Vec::with_capacity(raw_apps.len()),
        rejected: Vec::new(),
        pods: pods.pods,
        rejected_pods: pods.rejected,
        ..Default::default()
    };
    for parsed in parse_in_parallel(&raw_apps, parse_app_value) {
        match parsed {
            Ok(app) => snapshot.apps.push(Arc::new(app)),
            Err(rejection) => snapshot.rejected.push(rejection),
        }
    }
    Ok(snapshot)
}

/// The top level of an apps document: a JSON object whose `apps` member is read as raw values.
///
/// Read through [`ObjectOnly`], so that a top-level array is refused with a clear message instead
/// of serde's derived sequence form (which took `[[{app}]]` as `{"apps":[{app}]}` and described
/// `[]` as "struct RawDoc").
#[derive(Deserialize)]
struct AppsDocFields<'a> {
    #[serde(borrow)]
    apps: Option<Vec<&'a RawValue>>,
    #[serde(borrow)]
    pods: Option<Vec<&'a RawValue>>,
}

/// The top level of a single-app document (`{"app": {…}}`).
#[derive(Deserialize)]
struct SingleAppDocFields<'a> {
    #[serde(borrow)]
    app: Option<&'a RawValue>,
}

type AppsDoc<'a> = ObjectOnly<AppsDocFields<'a>>;
type SingleAppDoc<'a> = ObjectOnly<SingleAppDocFields<'a>>;

/// Deserializes `T` only from a JSON object: anything else is
/// `invalid type: …, expected a JSON object with an "apps" array` (or `"app"` object).
struct ObjectOnly<T>(T);

/// What a top-level document must be, for the error message.
trait Expected {
    const EXPECTED: &'static str;
}

impl Expected for AppsDocFields<'_> {
    const EXPECTED: &'static str = "a JSON object with an \"apps\" array";
}

impl Expected for SingleAppDocFields<'_> {
    const EXPECTED: &'static str = "a JSON object with an \"app\" object";
}

impl<'de, T: Deserialize<'de> + Expected> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Expected> serde::de::Visitor<'de> for Visit<T> {
            type Value = ObjectOnly<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(T::EXPECTED)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(ObjectOnly)
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// Below this many apps one thread parses them all (spawning costs more than it saves).
const PARALLEL_PARSE_MIN_APPS: usize = 256;

/// Parses each app on its own, in document order. Apps are independent, so a large document
/// (Marathon's ceiling is 2,000 apps / 50,000 tasks) is split into contiguous chunks parsed on
/// up to 4 scoped threads; the result keeps the document's order, so it is the same as a
/// sequential parse.
///
/// Pods (`f` = `pod::parse_pod_value`) go the same way.
fn parse_in_parallel<T: Send>(
    raw_apps: &[&RawValue],
    f: fn(&str) -> Result<T, AppRejection>,
) -> Vec<Result<T, AppRejection>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4);
    if threads < 2 || raw_apps.len() < PARALLEL_PARSE_MIN_APPS {
        return raw_apps.iter().map(|r| f(r.get())).collect();
    }
    let chunk = raw_apps.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = raw_apps
            .chunks(chunk)
            .map(|apps| scope.spawn(move || apps.iter().map(|r| f(r.get())).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// Parses the body of `GET /v2/apps/{id}` (`{"app": {…}}`).
pub fn parse_single_app_document(body: &[u8]) -> Result<Result<App, AppRejection>, ModelError> {
    let doc: SingleAppDoc<'_> = match serde_json::from_slice(body) {
        Ok(doc) => doc,
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return Err(ModelError::NotAnAppsDocument(e.to_string()))
        }
        Err(e) => return Err(ModelError::Json(e)),
    };
    let raw = doc
        .0
        .app
        .ok_or_else(|| ModelError::NotAnAppsDocument("no \"app\" object".into()))?;
    Ok(parse_app_value(raw.get()))
}

/// Parses one app object. The fast path is a plain serde parse; only on failure is the app
/// parsed again with path tracking, so that the warning names the field that failed.
pub fn parse_app_value(json: &str) -> Result<App, AppRejection> {
    match serde_json::from_str::<App>(json) {
        Ok(app) => Ok(app),
        Err(_) => Err(describe_failure::<App>(json)),
    }
}

fn describe_failure<T: DeserializeOwned>(json: &str) -> AppRejection {
    #[derive(Deserialize)]
    struct IdOnly {
        id: Option<serde_json::Value>,
    }
    let app = serde_json::from_str::<IdOnly>(json)
        .ok()
        .and_then(|i| i.id)
        .map(|id| match id {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        });
    let mut de = serde_json::Deserializer::from_str(json);
    let message = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(_) => "malformed app".to_string(),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // serde_json appends " at line L column C"; the path says more.
            let mut reason = inner.to_string();
            if let Some(pos) = reason.find(" at line ") {
                reason.truncate(pos);
            }
            if path == "." || path.is_empty() {
                reason
            } else {
                format!("{path}: {reason}")
            }
        }
    };
    AppRejection { app, message }
}

/// `null` and a missing key both become the type's default.
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

pub type Labels = BTreeMap<String, String>;

// === Apps ===

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    pub id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub labels: Labels,
    /// 1.5+ networking. Empty means "not given" (legacy fields or host mode decide).
    #[serde(default, deserialize_with = "null_default")]
    pub networks: Vec<Network>,
    /// Host-mode port declarations. `None` when missing or null.
    #[serde(default)]
    pub port_definitions: Option<Vec<PortDefinition>>,
    /// Legacy (≤1.4) top-level service ports.
    #[serde(default)]
    pub ports: Option<Vec<u16>>,
    #[serde(default)]
    pub require_ports: Option<bool>,
    #[serde(default)]
    pub container: Option<Container>,
    /// Legacy (≤1.4) IP-per-task declaration.
    #[serde(default)]
    pub ip_address: Option<IpAddressSpec>,
    #[serde(default, deserialize_with = "null_default")]
    pub health_checks: Vec<HealthCheck>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub tasks: Vec<Task>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// `host`, `container` or `container/bridge`; RAML default when omitted is `container`.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortDefinition {
    /// The service port (Marathon rewrites it to the assigned service port in responses).
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub docker: Option<DockerSpec>,
    #[serde(default)]
    pub port_mappings: Option<Vec<PortMapping>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerSpec {
    /// Legacy `HOST`, `BRIDGE`, `USER` (or `NONE`).
    #[serde(default)]
    pub network: Option<String>,
    /// Legacy location of port mappings.
    #[serde(default)]
    pub port_mappings: Option<Vec<PortMapping>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    #[serde(default)]
    pub container_port: Option<u16>,
    /// Absent means no host port was requested (IP-per-task); 0 means "any".
    #[serde(default)]
    pub host_port: Option<u16>,
    #[serde(default)]
    pub service_port: Option<u16>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub labels: Labels,
    #[serde(default, deserialize_with = "null_default")]
    pub network_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAddressSpec {
    #[serde(default)]
    pub network_name: Option<String>,
    #[serde(default)]
    pub discovery: Option<Discovery>,
    #[serde(default, deserialize_with = "null_default")]
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Discovery {
    #[serde(default, deserialize_with = "null_default")]
    pub ports: Vec<DiscoveryPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryPort {
    #[serde(default)]
    pub number: Option<u16>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// `HTTP`, `HTTPS`, `TCP`, `COMMAND`, `MESOS_HTTP`, `MESOS_HTTPS`, `MESOS_TCP`.
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub port_index: Option<u32>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub interval_seconds: Option<f64>,
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
    #[serde(default)]
    pub grace_period_seconds: Option<f64>,
    #[serde(default)]
    pub max_consecutive_failures: Option<u32>,
}

// === Tasks ===

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    #[serde(default)]
    pub app_id: Option<String>,
    /// Agent hostname as Mesos reports it (FQDN or IP). Missing for tasks not yet placed.
    #[serde(default)]
    pub host: Option<String>,
    /// Host ports, flattened over the mappings that requested one.
    #[serde(default, deserialize_with = "null_default")]
    pub ports: Vec<u16>,
    #[serde(default, deserialize_with = "null_default")]
    pub ip_addresses: Vec<TaskIpAddress>,
    /// `TASK_*`. Missing on old servers, which means running.
    #[serde(default)]
    pub state: Option<TaskState>,
    /// `None` when the key is absent (≤1.5 omits it when empty), `Some([])` when present and empty.
    #[serde(default)]
    pub health_check_results: Option<Vec<HealthResult>>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
}

/// A Mesos task state as Marathon reports it (`TASK_RUNNING`, …).
///
/// Parsed case-insensitively with surrounding whitespace ignored; a state vipd does not know is
/// kept as [`TaskState::Other`] (the builder warns and skips the task, the event applier
/// re-fetches the app), so a new Mesos state never fails the parse of a whole app.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TaskState {
    Staging,
    Starting,
    Running,
    Killing,
    Finished,
    Failed,
    Killed,
    Error,
    Lost,
    Dropped,
    Unreachable,
    Gone,
    GoneByOperator,
    Unknown,
    /// Anything else, as sent.
    Other(String),
}

impl TaskState {
    const KNOWN: [(&'static str, TaskState); 14] = [
        ("TASK_STAGING", TaskState::Staging),
        ("TASK_STARTING", TaskState::Starting),
        ("TASK_RUNNING", TaskState::Running),
        ("TASK_KILLING", TaskState::Killing),
        ("TASK_FINISHED", TaskState::Finished),
        ("TASK_FAILED", TaskState::Failed),
        ("TASK_KILLED", TaskState::Killed),
        ("TASK_ERROR", TaskState::Error),
        ("TASK_LOST", TaskState::Lost),
        ("TASK_DROPPED", TaskState::Dropped),
        ("TASK_UNREACHABLE", TaskState::Unreachable),
        ("TASK_GONE", TaskState::Gone),
        ("TASK_GONE_BY_OPERATOR", TaskState::GoneByOperator),
        ("TASK_UNKNOWN", TaskState::Unknown),
    ];

    /// A state of a task that is gone for good (finished, failed, killed, dropped, gone,
    /// unknown): it is no backend and never will be.
    pub fn is_terminal(&self) -> bool {
        use TaskState as S;
        matches!(
            self,
            S::Finished
                | S::Failed
                | S::Killed
                | S::Error
                | S::Dropped
                | S::Gone
                | S::GoneByOperator
                | S::Unknown
        )
    }

    /// Reads a state string. Exact spellings (what Marathon sends) take the fast path.
    pub fn parse(raw: &str) -> TaskState {
        if let Some((_, state)) = Self::KNOWN.iter().find(|(k, _)| *k == raw) {
            return state.clone();
        }
        let trimmed = raw.trim();
        match Self::KNOWN
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(trimmed))
        {
            Some((_, state)) => state.clone(),
            None => TaskState::Other(raw.to_string()),
        }
    }

    /// The Mesos spelling (`TASK_RUNNING`); an unknown state as it was sent.
    pub fn as_str(&self) -> &str {
        match self {
            TaskState::Other(s) => s,
            known => Self::KNOWN
                .iter()
                .find(|(_, s)| s == known)
                .map_or("", |(k, _)| k),
        }
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TaskState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = TaskState;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a task state string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TaskState, E> {
                Ok(TaskState::parse(v))
            }
        }
        // No allocation for a known state.
        d.deserialize_str(Visit)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskIpAddress {
    pub ip_address: String,
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthResult {
    pub alive: bool,
    /// 1.4+ form.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// Pre-1.4 form.
    #[serde(default)]
    pub task_id: Option<String>,
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_and_missing_arrays_are_empty() {
        let doc = br#"{"apps":[{"id":"/a","networks":null,"tasks":null,"healthChecks":null,"labels":null}]}"#;
        let s = parse_apps_document(doc).unwrap();
        assert_eq!(s.apps.len(), 1);
        assert!(s.apps[0].networks.is_empty());
        assert!(s.apps[0].tasks.is_empty());
        assert!(s.rejected.is_empty());
    }

    #[test]
    fn malformed_app_is_rejected_with_id_and_field_others_survive() {
        let doc = br#"{"apps":[
            {"id":"/good","portDefinitions":[{"port":10000}]},
            {"id":"/bad","portDefinitions":{"port":1}},
            {"id":"/bad2","tasks":[{"id":"t1","ports":["x"]}]}
        ]}"#;
        let s = parse_apps_document(doc).unwrap();
        assert_eq!(s.apps.len(), 1);
        assert_eq!(s.apps[0].id, "/good");
        assert_eq!(s.rejected.len(), 2);
        assert_eq!(s.rejected[0].app.as_deref(), Some("/bad"));
        assert!(
            s.rejected[0].message.starts_with("portDefinitions: "),
            "{}",
            s.rejected[0].message
        );
        assert_eq!(s.rejected[1].app.as_deref(), Some("/bad2"));
        assert!(
            s.rejected[1].message.starts_with("tasks[0].ports[0]: "),
            "{}",
            s.rejected[1].message
        );
    }

    #[test]
    fn not_an_apps_document_is_an_error() {
        assert!(matches!(
            parse_apps_document(b"[1,2]"),
            Err(ModelError::NotAnAppsDocument(_))
        ));
        assert!(matches!(
            parse_apps_document(br#"{"tasks":[]}"#),
            Err(ModelError::NotAnAppsDocument(_))
        ));
        assert!(matches!(
            parse_apps_document(br#"{"apps":{}}"#),
            Err(ModelError::NotAnAppsDocument(_))
        ));
        assert!(matches!(
            parse_apps_document(b"{\"apps\": [}"),
            Err(ModelError::Json(_))
        ));
    }

    #[test]
    fn a_top_level_array_is_refused_with_a_clear_message() {
        for doc in [&b"[]"[..], br#"[[{"id":"/a"}]]"#, br#"[[]]"#] {
            match parse_apps_document(doc) {
                Err(ModelError::NotAnAppsDocument(m)) => {
                    assert!(
                        m.contains(r#"expected a JSON object with an "apps" array"#),
                        "{m}"
                    );
                    assert!(!m.contains("RawDoc") && !m.contains("struct"), "{m}");
                }
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(doc)),
            }
        }
        match parse_single_app_document(br#"[{"id":"/a"}]"#) {
            Err(ModelError::NotAnAppsDocument(m)) => {
                assert!(
                    m.contains(r#"expected a JSON object with an "app" object"#),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn task_states_parse_to_the_enum_and_unknown_ones_are_kept() {
        let doc = br#"{"apps":[{"id":"/a","tasks":[
            {"id":"t1","state":"TASK_RUNNING"},
            {"id":"t2","state":" task_killing "},
            {"id":"t3","state":"TASK_SOMETHING_NEW"},
            {"id":"t4"}]}]}"#;
        let s = parse_apps_document(doc).unwrap();
        let states: Vec<Option<TaskState>> =
            s.apps[0].tasks.iter().map(|t| t.state.clone()).collect();
        assert_eq!(
            states,
            [
                Some(TaskState::Running),
                Some(TaskState::Killing),
                Some(TaskState::Other("TASK_SOMETHING_NEW".into())),
                None
            ]
        );
        assert_eq!(TaskState::GoneByOperator.as_str(), "TASK_GONE_BY_OPERATOR");
        assert_eq!(
            TaskState::parse("TASK_GONE_BY_OPERATOR"),
            TaskState::GoneByOperator
        );
    }

    #[test]
    fn app_without_id_is_rejected() {
        let s = parse_apps_document(br#"{"apps":[{"instances":1}]}"#).unwrap();
        assert_eq!(s.rejected.len(), 1);
        assert_eq!(s.rejected[0].app, None);
        assert!(
            s.rejected[0].message.contains("id"),
            "{}",
            s.rejected[0].message
        );
    }

    #[test]
    fn a_large_document_parses_in_order_with_rejections_isolated() {
        let apps: Vec<String> = (0..1000)
            .map(|i| {
                if i % 97 == 0 {
                    format!(r#"{{"id":"/app{i}","ports":"not-an-array"}}"#)
                } else {
                    format!(r#"{{"id":"/app{i}","ports":[{}]}}"#, 10000 + i)
                }
            })
            .collect();
        let doc = format!(r#"{{"apps":[{}]}}"#, apps.join(","));
        let s = parse_apps_document(doc.as_bytes()).unwrap();
        let bad: Vec<usize> = (0..1000).filter(|i| i % 97 == 0).collect();
        assert_eq!(s.rejected.len(), bad.len());
        assert_eq!(s.apps.len(), 1000 - bad.len());
        let ids: Vec<&str> = s.apps.iter().map(|a| a.id.as_str()).collect();
        let want: Vec<String> = (0..1000)
            .filter(|i| i % 97 != 0)
            .map(|i| format!("/app{i}"))
            .collect();
        assert_eq!(ids, want.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(s.rejected[1].app.as_deref(), Some("/app97"));
        assert!(s.rejected[1].message.starts_with("ports: "));
    }

    #[test]
    fn single_app_document() {
        let app = parse_single_app_document(br#"{"app":{"id":"/x"}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(app.id, "/x");
    }
}
