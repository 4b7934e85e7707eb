//! The Mesos master's operator API (v1 JSON), as vipd reads it.
//!
//! Owns: the serde model of the events of `SUBSCRIBE` (`SUBSCRIBED`, `TASK_ADDED`,
//! `TASK_UPDATED`, `AGENT_*`, `FRAMEWORK_*`, `HEARTBEAT`) and of a `GET_STATE` answer, in the
//! shapes ../shared/reference/mesos/FACTS.md §3–§5 describe: snake_case names, ids wrapped as
//! `{"value": …}`, labels doubly nested (`labels.labels[]`), empty repeated fields omitted. Also
//! the per-task fault isolation: a task of the wrong shape is reported with its id and the failing
//! field, and every other task still parses.
//!
//! Must not: interpret fields for routing (that is `table::mesos`), keep state between events
//! (that is the source's driver), do I/O or read a clock. Unknown keys are ignored: new Mesos
//! versions add fields.

use super::{Labels, TaskState};
use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// A record that is not a usable operator-API document at all.
#[derive(Debug, thiserror::Error)]
pub enum MesosModelError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("not a Mesos {what}: {reason}")]
    Shape { what: &'static str, reason: String },
}

/// A task left out because part of it has the wrong shape.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TaskRejection {
    /// The task's `task_id.value`, when it could be read.
    pub task: Option<String>,
    /// The JSON path that failed and why (`discovery.ports.ports[0].number: invalid type: …`).
    pub message: String,
}

/// `{"value": "…"}`, the wire form of every Mesos id.
fn id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    struct Id {
        value: String,
    }
    Ok(Id::deserialize(d)?.value)
}

fn opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    struct Id {
        value: String,
    }
    Ok(Option::<Id>::deserialize(d)?.map(|i| i.value))
}

/// `{"labels": [{"key": …, "value": …}]}` → a map (a label without value is `""`; a repeated
/// key keeps its last value).
fn labels<'de, D: Deserializer<'de>>(d: D) -> Result<Labels, D::Error> {
    #[derive(Deserialize)]
    struct Label {
        key: String,
        #[serde(default)]
        value: Option<String>,
    }
    #[derive(Deserialize)]
    struct Wrapped {
        #[serde(default, deserialize_with = "super::null_default")]
        labels: Vec<Label>,
    }
    Ok(Option::<Wrapped>::deserialize(d)?
        .map(|w| {
            w.labels
                .into_iter()
                .map(|l| (l.key, l.value.unwrap_or_default()))
                .collect::<BTreeMap<_, _>>()
        })
        .unwrap_or_default())
}

/// `{"ports": [Port]}` → the ports.
fn discovery_ports<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<DiscoveryPort>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped {
        #[serde(default, deserialize_with = "super::null_default")]
        ports: Vec<DiscoveryPort>,
    }
    Ok(Option::<Wrapped>::deserialize(d)?
        .map(|w| w.ports)
        .unwrap_or_default())
}

/// `{"range": [{"begin", "end"}]}` → the ranges.
fn ranges<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PortRange>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped {
        #[serde(default, deserialize_with = "super::null_default")]
        range: Vec<PortRange>,
    }
    Ok(Option::<Wrapped>::deserialize(d)?
        .map(|w| w.range)
        .unwrap_or_default())
}

/// `Task` (mesos.proto), the fields vipd reads.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Task {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(deserialize_with = "id", serialize_with = "ser_id")]
    pub task_id: String,
    #[serde(deserialize_with = "id", serialize_with = "ser_id")]
    pub framework_id: String,
    #[serde(
        default,
        deserialize_with = "opt_id",
        serialize_with = "ser_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub agent_id: Option<String>,
    /// The latest state. `TASK_UPDATED`'s top-level `state` overwrites it.
    #[serde(
        default,
        serialize_with = "ser_state",
        skip_serializing_if = "Option::is_none"
    )]
    pub state: Option<TaskState>,
    /// The status history; `TASK_UPDATED`'s `status` is appended.
    #[serde(default, deserialize_with = "super::null_default")]
    pub statuses: Vec<TaskStatus>,
    #[serde(default, deserialize_with = "labels", serialize_with = "ser_labels")]
    pub labels: Labels,
    #[serde(default)]
    pub discovery: Option<DiscoveryInfo>,
    #[serde(default)]
    pub container: Option<ContainerInfo>,
    /// Whether a Mesos health check is configured (its content does not matter here).
    #[serde(
        default,
        deserialize_with = "present",
        serialize_with = "ser_present",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub health_check: bool,
    #[serde(default, deserialize_with = "super::null_default")]
    pub resources: Vec<Resource>,
}

/// True when the field is present and not `null`, whatever it holds.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<serde::de::IgnoredAny>::deserialize(d)?.is_some())
}

/// A task as the table builder reads it: the task, its framework's name and its agent's
/// hostname, looked up by the source (a task whose framework or agent is unknown is held there).
#[derive(Debug, Clone, PartialEq)]
pub struct MesosTask {
    pub task: Task,
    pub framework: String,
    pub agent_host: String,
}

/// `TaskStatus`, the fields vipd reads.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct TaskStatus {
    #[serde(
        default,
        serialize_with = "ser_state",
        skip_serializing_if = "Option::is_none"
    )]
    pub state: Option<TaskState>,
    /// Present only once a Mesos health check has produced a result.
    #[serde(default)]
    pub healthy: Option<bool>,
    /// Float seconds.
    #[serde(default)]
    pub timestamp: Option<f64>,
    #[serde(
        default,
        deserialize_with = "opt_id",
        serialize_with = "ser_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub agent_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_id",
        serialize_with = "ser_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub task_id: Option<String>,
    #[serde(default)]
    pub container_status: Option<ContainerStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ContainerStatus {
    #[serde(default, deserialize_with = "super::null_default")]
    pub network_infos: Vec<NetworkInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct NetworkInfo {
    #[serde(default, deserialize_with = "super::null_default")]
    pub ip_addresses: Vec<IpAddress>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "super::null_default")]
    pub port_mappings: Vec<PortMapping>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct IpAddress {
    /// `IPv4` (the default when missing) or `IPv6`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Missing in a request (`container.network_infos`), set in a status.
    #[serde(default)]
    pub ip_address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct PortMapping {
    pub host_port: u32,
    pub container_port: u32,
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct DiscoveryInfo {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(
        default,
        deserialize_with = "discovery_ports",
        serialize_with = "ser_ports"
    )]
    pub ports: Vec<DiscoveryPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct DiscoveryPort {
    pub number: u32,
    #[serde(default)]
    pub name: Option<String>,
    /// A free string (`tcp`, `udp`; frameworks may send others).
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default, deserialize_with = "labels", serialize_with = "ser_labels")]
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ContainerInfo {
    /// `DOCKER` or `MESOS`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub docker: Option<DockerInfo>,
    #[serde(default, deserialize_with = "super::null_default")]
    pub network_infos: Vec<NetworkInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct DockerInfo {
    /// `HOST` (the default), `BRIDGE`, `USER`, `NONE`.
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default, deserialize_with = "super::null_default")]
    pub port_mappings: Vec<PortMapping>,
}

/// A resource; only the `ports` ranges matter (legacy `vip_port<i>` labels index them).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Resource {
    pub name: String,
    #[serde(default, deserialize_with = "ranges", serialize_with = "ser_ranges")]
    pub ranges: Vec<PortRange>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct PortRange {
    pub begin: u64,
    pub end: u64,
}

/// `FrameworkInfo`: id and name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FrameworkInfo {
    #[serde(
        default,
        deserialize_with = "opt_id",
        serialize_with = "ser_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<String>,
    pub name: String,
}

/// `AgentInfo`: id and hostname (an IP or a DNS name, resolved later).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AgentInfo {
    #[serde(
        default,
        deserialize_with = "opt_id",
        serialize_with = "ser_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<String>,
    pub hostname: String,
}

/// The `GetState` of a master (`SUBSCRIBED.get_state`, `GET_STATE.get_state`), or of an agent
/// merged with `GET_AGENT` (dcos-net's shape: `launched_tasks`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MesosState {
    /// The well-formed tasks of `tasks`, `launched_tasks` and `unreachable_tasks`, in order.
    pub tasks: Vec<Task>,
    pub rejected: Vec<TaskRejection>,
    pub frameworks: Vec<FrameworkInfo>,
    pub agents: Vec<AgentInfo>,
    /// Agents the master recovered from its registry that have not re-registered yet.
    pub recovered_agents: Vec<AgentInfo>,
}

/// The tasks of a one-shot state joined with their framework's name and agent's hostname, for
/// `vipd table --mesos-state`; terminal tasks are left out, and a task whose framework or agent
/// the state does not list is reported (it would wait in the event stream).
pub fn join_state(state: MesosState) -> (Vec<MesosTask>, Vec<TaskRejection>) {
    let frameworks: BTreeMap<String, String> = state
        .frameworks
        .into_iter()
        .filter_map(|f| Some((f.id?, f.name)))
        .collect();
    let agents: BTreeMap<String, String> = state
        .agents
        .into_iter()
        .filter_map(|a| Some((a.id?, a.hostname)))
        .collect();
    let mut rejected = state.rejected;
    let mut tasks = Vec::with_capacity(state.tasks.len());
    for task in state.tasks {
        if task.state.as_ref().is_some_and(TaskState::is_terminal) {
            continue;
        }
        let framework = frameworks.get(&task.framework_id);
        let agent = task.agent_id.as_ref().and_then(|a| agents.get(a));
        match (framework, agent) {
            (Some(framework), Some(agent)) => tasks.push(MesosTask {
                framework: framework.clone(),
                agent_host: agent.clone(),
                task,
            }),
            (None, _) => rejected.push(TaskRejection {
                message: format!(
                    "framework {:?} is not in get_frameworks; task skipped",
                    task.framework_id
                ),
                task: Some(task.task_id),
            }),
            (Some(_), None) => rejected.push(TaskRejection {
                message: format!(
                    "agent {:?} is not in get_agents; task skipped",
                    task.agent_id.as_deref().unwrap_or_default()
                ),
                task: Some(task.task_id),
            }),
        }
    }
    (tasks, rejected)
}

/// One event of the `SUBSCRIBE` stream.
#[derive(Debug, Clone, PartialEq)]
pub enum MesosEvent {
    Subscribed {
        state: MesosState,
        /// `heartbeat_interval_seconds` (15 s on every Mesos master), if sent.
        heartbeat_interval_seconds: Option<f64>,
    },
    /// A new task, or one re-learnt from a re-registering agent; or one that had the wrong shape.
    TaskAdded(Result<Box<Task>, TaskRejection>),
    TaskUpdated {
        framework_id: String,
        status: Box<TaskStatus>,
        /// The agent's latest state; wins over `status.state`.
        state: Option<TaskState>,
    },
    AgentAdded(AgentInfo),
    AgentRemoved {
        agent_id: String,
    },
    FrameworkAdded(FrameworkInfo),
    FrameworkUpdated(FrameworkInfo),
    FrameworkRemoved(FrameworkInfo),
    Heartbeat,
    /// An event type vipd does not read (`TASK_UPDATED` of executors, future types).
    Other(String),
}

// The wire shapes again, for `--state-dir` (a `GET_STATE` document that reads back as one).

fn ser_id<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Id<'a> {
        value: &'a str,
    }
    Id { value: v }.serialize(s)
}

fn ser_opt_id<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => ser_id(v, s),
        None => s.serialize_none(),
    }
}

fn ser_labels<S: Serializer>(v: &Labels, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Label<'a> {
        key: &'a str,
        value: &'a str,
    }
    #[derive(Serialize)]
    struct Wrapped<'a> {
        labels: Vec<Label<'a>>,
    }
    Wrapped {
        labels: v.iter().map(|(key, value)| Label { key, value }).collect(),
    }
    .serialize(s)
}

fn ser_ports<S: Serializer>(v: &[DiscoveryPort], s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Wrapped<'a> {
        ports: &'a [DiscoveryPort],
    }
    Wrapped { ports: v }.serialize(s)
}

fn ser_ranges<S: Serializer>(v: &[PortRange], s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Wrapped<'a> {
        range: &'a [PortRange],
    }
    Wrapped { range: v }.serialize(s)
}

fn ser_present<S: Serializer>(_: &bool, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    s.serialize_map(Some(0))?.end()
}

fn ser_state<S: Serializer>(v: &Option<TaskState>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(v.as_str()),
        None => s.serialize_none(),
    }
}

/// A `GET_STATE` document of `tasks` with their frameworks and agents (what `--state-dir`
/// keeps); [`parse_get_state`] and [`join_state`] read it back.
pub fn state_document(tasks: &[std::sync::Arc<MesosTask>]) -> serde_json::Value {
    let mut frameworks = BTreeMap::new();
    let mut agents = BTreeMap::new();
    for t in tasks {
        frameworks.insert(t.task.framework_id.as_str(), t.framework.as_str());
        if let Some(a) = t.task.agent_id.as_deref() {
            agents.insert(a, t.agent_host.as_str());
        }
    }
    serde_json::json!({
        "type": "GET_STATE",
        "get_state": {
            "get_tasks": {"tasks": tasks.iter().map(|t| &t.task).collect::<Vec<_>>()},
            "get_frameworks": {"frameworks": frameworks.iter().map(|(id, name)| serde_json::json!({
                "framework_info": {"id": {"value": id}, "name": name}
            })).collect::<Vec<_>>()},
            "get_agents": {"agents": agents.iter().map(|(id, host)| serde_json::json!({
                "agent_info": {"id": {"value": id}, "hostname": host}
            })).collect::<Vec<_>>()},
        }
    })
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(borrow, default)]
    subscribed: Option<&'a RawValue>,
    #[serde(borrow, default)]
    task_added: Option<&'a RawValue>,
    #[serde(borrow, default)]
    task_updated: Option<&'a RawValue>,
    #[serde(borrow, default)]
    agent_added: Option<&'a RawValue>,
    #[serde(borrow, default)]
    agent_removed: Option<&'a RawValue>,
    #[serde(borrow, default)]
    framework_added: Option<&'a RawValue>,
    #[serde(borrow, default)]
    framework_updated: Option<&'a RawValue>,
    #[serde(borrow, default)]
    framework_removed: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawGetState<'a> {
    #[serde(borrow, default)]
    get_tasks: Option<RawGetTasks<'a>>,
    #[serde(default)]
    get_frameworks: Option<GetFrameworks>,
    #[serde(default)]
    get_agents: Option<GetAgents>,
}

#[derive(Deserialize)]
struct RawGetTasks<'a> {
    #[serde(borrow, default)]
    tasks: Vec<&'a RawValue>,
    #[serde(borrow, default)]
    launched_tasks: Vec<&'a RawValue>,
    #[serde(borrow, default)]
    unreachable_tasks: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct GetFrameworks {
    #[serde(default)]
    frameworks: Vec<FrameworkWrapper>,
}

#[derive(Deserialize)]
struct FrameworkWrapper {
    framework_info: FrameworkInfo,
}

#[derive(Deserialize)]
struct GetAgents {
    #[serde(default)]
    agents: Vec<AgentWrapper>,
    #[serde(default)]
    recovered_agents: Vec<AgentInfo>,
}

#[derive(Deserialize)]
struct AgentWrapper {
    agent_info: AgentInfo,
}

/// Parses `T`, describing a failure by JSON path (`a.b[0].c: reason`).
fn parse_with_path<T: DeserializeOwned>(json: &str) -> Result<T, String> {
    match serde_json::from_str::<T>(json) {
        Ok(v) => Ok(v),
        Err(_) => {
            let mut de = serde_json::Deserializer::from_str(json);
            Err(match serde_path_to_error::deserialize::<_, T>(&mut de) {
                Ok(_) => "malformed".to_string(),
                Err(e) => {
                    let path = e.path().to_string();
                    let mut reason = e.into_inner().to_string();
                    if let Some(pos) = reason.find(" at line ") {
                        reason.truncate(pos);
                    }
                    if path == "." || path.is_empty() {
                        reason
                    } else {
                        format!("{path}: {reason}")
                    }
                }
            })
        }
    }
}

/// Parses one task object; a wrong shape is a [`TaskRejection`] naming the task and the field.
pub fn parse_task(json: &str) -> Result<Task, TaskRejection> {
    parse_with_path::<Task>(json).map_err(|message| {
        #[derive(Deserialize)]
        struct IdOnly {
            #[serde(default, deserialize_with = "opt_id")]
            task_id: Option<String>,
        }
        TaskRejection {
            task: serde_json::from_str::<IdOnly>(json)
                .ok()
                .and_then(|i| i.task_id),
            message,
        }
    })
}

fn shape(what: &'static str, reason: impl Into<String>) -> MesosModelError {
    MesosModelError::Shape {
        what,
        reason: reason.into(),
    }
}

fn top_level<'a, T: Deserialize<'a>>(
    json: &'a str,
    what: &'static str,
) -> Result<T, MesosModelError> {
    serde_json::from_str::<T>(json).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => shape(what, e.to_string()),
        _ => MesosModelError::Json(e.to_string()),
    })
}

fn parse_state(json: &str) -> Result<MesosState, MesosModelError> {
    let raw: RawGetState<'_> = top_level(json, "GetState")?;
    let mut state = MesosState::default();
    if let Some(t) = raw.get_tasks {
        for task in t
            .tasks
            .iter()
            .chain(&t.launched_tasks)
            .chain(&t.unreachable_tasks)
        {
            match parse_task(task.get()) {
                Ok(task) => state.tasks.push(task),
                Err(r) => state.rejected.push(r),
            }
        }
    }
    if let Some(f) = raw.get_frameworks {
        state.frameworks = f.frameworks.into_iter().map(|f| f.framework_info).collect();
    }
    if let Some(a) = raw.get_agents {
        state.agents = a.agents.into_iter().map(|a| a.agent_info).collect();
        state.recovered_agents = a.recovered_agents;
    }
    Ok(state)
}

/// Parses the body of a `GET_STATE` answer (`{"type":"GET_STATE","get_state":{…}}`).
pub fn parse_get_state(body: &[u8]) -> Result<MesosState, MesosModelError> {
    #[derive(Deserialize)]
    struct Doc<'a> {
        #[serde(rename = "type", default)]
        kind: Option<String>,
        #[serde(borrow, default)]
        get_state: Option<&'a RawValue>,
    }
    let json = std::str::from_utf8(body).map_err(|e| MesosModelError::Json(e.to_string()))?;
    let doc: Doc<'_> = top_level(json, "GET_STATE answer")?;
    if let Some(kind) = doc.kind.as_deref().filter(|k| *k != "GET_STATE") {
        return Err(shape("GET_STATE answer", format!("type is {kind:?}")));
    }
    let state = doc
        .get_state
        .ok_or_else(|| shape("GET_STATE answer", "no \"get_state\" object"))?;
    parse_state(state.get())
}

/// Parses one record of the `SUBSCRIBE` stream.
pub fn parse_event(record: &[u8]) -> Result<MesosEvent, MesosModelError> {
    let json = std::str::from_utf8(record).map_err(|e| MesosModelError::Json(e.to_string()))?;
    let raw: RawEvent<'_> = top_level(json, "event")?;
    let kind = raw.kind.as_str();
    fn need<'a>(
        v: Option<&'a RawValue>,
        kind: &str,
        key: &'static str,
    ) -> Result<&'a str, MesosModelError> {
        v.map(RawValue::get)
            .ok_or_else(|| shape("event", format!("{kind} without {key:?}")))
    }
    let framework = |v: Option<&RawValue>, key: &'static str| -> Result<FrameworkInfo, _> {
        #[derive(Deserialize)]
        struct W {
            framework: FrameworkWrapper,
        }
        let w: W = parse_with_path(need(v, kind, key)?).map_err(|r| shape("event", r))?;
        Ok(w.framework.framework_info)
    };
    Ok(match kind {
        "SUBSCRIBED" => {
            #[derive(Deserialize)]
            struct S<'a> {
                #[serde(borrow, default)]
                get_state: Option<&'a RawValue>,
                #[serde(default)]
                heartbeat_interval_seconds: Option<f64>,
            }
            let s: S<'_> = top_level(need(raw.subscribed, kind, "subscribed")?, "SUBSCRIBED")?;
            MesosEvent::Subscribed {
                state: match s.get_state {
                    Some(g) => parse_state(g.get())?,
                    None => MesosState::default(),
                },
                heartbeat_interval_seconds: s.heartbeat_interval_seconds,
            }
        }
        "TASK_ADDED" => {
            #[derive(Deserialize)]
            struct A<'a> {
                #[serde(borrow)]
                task: &'a RawValue,
            }
            let a: A<'_> = top_level(need(raw.task_added, kind, "task_added")?, "TASK_ADDED")?;
            MesosEvent::TaskAdded(parse_task(a.task.get()).map(Box::new))
        }
        "TASK_UPDATED" => {
            #[derive(Deserialize)]
            struct U {
                #[serde(deserialize_with = "id")]
                framework_id: String,
                status: TaskStatus,
                #[serde(default)]
                state: Option<TaskState>,
            }
            let u: U = parse_with_path(need(raw.task_updated, kind, "task_updated")?)
                .map_err(|r| shape("TASK_UPDATED", r))?;
            if u.status.task_id.is_none() {
                return Err(shape("TASK_UPDATED", "status without task_id"));
            }
            MesosEvent::TaskUpdated {
                framework_id: u.framework_id,
                status: Box::new(u.status),
                state: u.state,
            }
        }
        "AGENT_ADDED" => {
            #[derive(Deserialize)]
            struct W {
                agent: AgentWrapper,
            }
            let w: W = parse_with_path(need(raw.agent_added, kind, "agent_added")?)
                .map_err(|r| shape("AGENT_ADDED", r))?;
            MesosEvent::AgentAdded(w.agent.agent_info)
        }
        "AGENT_REMOVED" => {
            #[derive(Deserialize)]
            struct R {
                #[serde(deserialize_with = "id")]
                agent_id: String,
            }
            let r: R = parse_with_path(need(raw.agent_removed, kind, "agent_removed")?)
                .map_err(|r| shape("AGENT_REMOVED", r))?;
            MesosEvent::AgentRemoved {
                agent_id: r.agent_id,
            }
        }
        "FRAMEWORK_ADDED" => {
            MesosEvent::FrameworkAdded(framework(raw.framework_added, "framework_added")?)
        }
        "FRAMEWORK_UPDATED" => {
            MesosEvent::FrameworkUpdated(framework(raw.framework_updated, "framework_updated")?)
        }
        "FRAMEWORK_REMOVED" => {
            #[derive(Deserialize)]
            struct R {
                framework_info: FrameworkInfo,
            }
            let r: R = parse_with_path(need(raw.framework_removed, kind, "framework_removed")?)
                .map_err(|r| shape("FRAMEWORK_REMOVED", r))?;
            MesosEvent::FrameworkRemoved(r.framework_info)
        }
        "HEARTBEAT" => MesosEvent::Heartbeat,
        other => MesosEvent::Other(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TASK: &str = r#"{"name":"web","task_id":{"value":"web.1"},
        "framework_id":{"value":"fw-1"},"agent_id":{"value":"ag-1"},"state":"TASK_RUNNING",
        "statuses":[{"state":"TASK_RUNNING","timestamp":1521215081.86528,"healthy":true,
          "container_status":{"network_infos":[{"ip_addresses":[{"protocol":"IPv4","ip_address":"9.0.0.2"}]}]}}],
        "labels":{"labels":[{"key":"vip_port0","value":"tcp://def:80"},{"key":"bare"}]},
        "discovery":{"visibility":"FRAMEWORK","name":"web","ports":{"ports":[
          {"number":80,"name":"http","protocol":"tcp","labels":{"labels":[
            {"key":"VIP_0","value":"/web:80"},{"key":"network-scope","value":"container"}]}}]}},
        "health_check":{"type":"HTTP"},
        "resources":[{"name":"ports","type":"RANGES","ranges":{"range":[{"begin":31000,"end":31001}]}}],
        "limits":{"cpus":{"value":1}},"unknown_future_field":[1,2]}"#;

    #[test]
    fn a_task_parses_in_the_wire_shape() {
        let t = parse_task(TASK).unwrap();
        assert_eq!(
            (&*t.task_id, &*t.framework_id, t.agent_id.as_deref()),
            ("web.1", "fw-1", Some("ag-1"))
        );
        assert_eq!(t.state, Some(TaskState::Running));
        assert_eq!(t.labels["vip_port0"], "tcp://def:80");
        assert_eq!(t.labels["bare"], "");
        let d = t.discovery.as_ref().unwrap();
        assert_eq!(d.ports[0].labels["VIP_0"], "/web:80");
        assert_eq!(d.ports[0].labels["network-scope"], "container");
        assert!(t.health_check);
        assert_eq!(t.statuses[0].healthy, Some(true));
        assert_eq!(
            t.statuses[0]
                .container_status
                .as_ref()
                .unwrap()
                .network_infos[0]
                .ip_addresses[0]
                .ip_address
                .as_deref(),
            Some("9.0.0.2")
        );
        assert_eq!(
            t.resources[0].ranges[0],
            PortRange {
                begin: 31000,
                end: 31001
            }
        );
    }

    #[test]
    fn empty_repeated_fields_may_be_omitted_or_empty_objects() {
        let t = parse_task(
            r#"{"task_id":{"value":"t"},"framework_id":{"value":"f"},"labels":{},
            "discovery":{"visibility":"FRAMEWORK","ports":{}}}"#,
        )
        .unwrap();
        assert!(t.labels.is_empty());
        assert!(t.discovery.unwrap().ports.is_empty());
        assert!(!t.health_check);
        assert!(t.statuses.is_empty());
    }

    #[test]
    fn a_task_of_the_wrong_shape_is_rejected_with_its_id_and_path_others_survive() {
        let doc = format!(
            r#"{{"type":"GET_STATE","get_state":{{"get_tasks":{{"tasks":[{TASK},
              {{"task_id":{{"value":"bad.1"}},"framework_id":{{"value":"f"}},
                "discovery":{{"ports":{{"ports":[{{"number":"eighty"}}]}}}}}},
              {{"framework_id":{{"value":"f"}}}}]}}}}}}"#
        );
        let s = parse_get_state(doc.as_bytes()).unwrap();
        assert_eq!(s.tasks.len(), 1);
        assert_eq!(s.rejected.len(), 2);
        assert_eq!(s.rejected[0].task.as_deref(), Some("bad.1"));
        assert!(
            s.rejected[0]
                .message
                .starts_with("discovery.ports.ports[0].number: invalid type"),
            "{}",
            s.rejected[0].message
        );
        assert_eq!(s.rejected[1].task, None);
        assert!(
            s.rejected[1].message.contains("task_id"),
            "{:?}",
            s.rejected[1]
        );
    }

    #[test]
    fn get_state_reads_frameworks_agents_and_recovered_agents() {
        let s = parse_get_state(
            br#"{"type":"GET_STATE","get_state":{"get_tasks":{},
            "get_frameworks":{"frameworks":[{"framework_info":{"id":{"value":"f1"},"name":"marathon"},"active":true}]},
            "get_agents":{"agents":[{"agent_info":{"id":{"value":"a1"},"hostname":"10.0.0.1","port":5051},"active":true}],
              "recovered_agents":[{"id":{"value":"a2"},"hostname":"agent-2"}]}}}"#,
        )
        .unwrap();
        assert_eq!(s.frameworks[0].name, "marathon");
        assert_eq!(s.agents[0].hostname, "10.0.0.1");
        assert_eq!(s.recovered_agents[0].id.as_deref(), Some("a2"));
        assert!(matches!(
            parse_get_state(br#"{"type":"GET_TASKS","get_tasks":{}}"#),
            Err(MesosModelError::Shape { .. })
        ));
        assert!(matches!(
            parse_get_state(br#"[1]"#),
            Err(MesosModelError::Shape { .. })
        ));
        assert!(matches!(
            parse_get_state(br#"{"get_state": "#),
            Err(MesosModelError::Json(_))
        ));
    }

    #[test]
    fn events_parse_in_the_recorded_shapes() {
        let ev = |s: &str| parse_event(s.as_bytes()).unwrap();
        assert_eq!(ev(r#"{"type":"HEARTBEAT"}"#), MesosEvent::Heartbeat);
        match ev(
            r#"{"task_updated":{"framework_id":{"value":"f"},"state":"TASK_KILLING",
            "status":{"task_id":{"value":"t"},"state":"TASK_RUNNING","healthy":false}},"type":"TASK_UPDATED"}"#,
        ) {
            MesosEvent::TaskUpdated {
                framework_id,
                status,
                state,
            } => {
                assert_eq!(framework_id, "f");
                assert_eq!(state, Some(TaskState::Killing));
                assert_eq!(status.state, Some(TaskState::Running));
                assert_eq!(status.healthy, Some(false));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ev(r#"{"type":"AGENT_REMOVED","agent_removed":{"agent_id":{"value":"a1"}}}"#),
            MesosEvent::AgentRemoved {
                agent_id: "a1".into()
            }
        );
        assert_eq!(
            ev(
                r#"{"type":"FRAMEWORK_REMOVED","framework_removed":{"framework_info":{"id":{"value":"f"},"name":"hello"}}}"#
            ),
            MesosEvent::FrameworkRemoved(FrameworkInfo {
                id: Some("f".into()),
                name: "hello".into()
            })
        );
        assert_eq!(
            ev(
                r#"{"type":"FRAMEWORK_UPDATED","framework_updated":{"framework":{"framework_info":{"id":{"value":"f"},"name":"hello2"},"active":true}}}"#
            ),
            MesosEvent::FrameworkUpdated(FrameworkInfo {
                id: Some("f".into()),
                name: "hello2".into()
            })
        );
        assert_eq!(
            ev(
                r#"{"type":"AGENT_ADDED","agent_added":{"agent":{"agent_info":{"id":{"value":"a"},"hostname":"h"}}}}"#
            ),
            MesosEvent::AgentAdded(AgentInfo {
                id: Some("a".into()),
                hostname: "h".into()
            })
        );
        assert_eq!(
            ev(r#"{"type":"SOMETHING_NEW","something_new":{}}"#),
            MesosEvent::Other("SOMETHING_NEW".into())
        );
        match ev(&format!(
            r#"{{"type":"TASK_ADDED","task_added":{{"task":{TASK}}}}}"#
        )) {
            MesosEvent::TaskAdded(Ok(t)) => assert_eq!(t.task_id, "web.1"),
            other => panic!("{other:?}"),
        }
        match ev(
            r#"{"type":"SUBSCRIBED","subscribed":{"get_state":{"get_tasks":{}},"heartbeat_interval_seconds":15.0}}"#,
        ) {
            MesosEvent::Subscribed {
                state,
                heartbeat_interval_seconds,
            } => {
                assert!(state.tasks.is_empty());
                assert_eq!(heartbeat_interval_seconds, Some(15.0));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn records_of_the_wrong_shape_are_errors_naming_the_problem() {
        for (rec, want) in [
            (r#"[1,2]"#, "not a Mesos event"),
            (r#"{"kind":"HEARTBEAT"}"#, "missing field `type`"),
            (
                r#"{"type":"TASK_ADDED"}"#,
                "TASK_ADDED without \"task_added\"",
            ),
            (
                r#"{"type":"TASK_UPDATED","task_updated":{"framework_id":{"value":"f"},"status":{"state":"TASK_RUNNING"}}}"#,
                "status without task_id",
            ),
            (
                r#"{"type":"AGENT_REMOVED","agent_removed":{"agent_id":"a1"}}"#,
                "agent_id: invalid type",
            ),
            ("{\"type\":", "not valid JSON"),
        ] {
            let e = parse_event(rec.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{rec}: {e}");
        }
        // A task of the wrong shape in TASK_ADDED is isolated, not an error of the record.
        match parse_event(
            br#"{"type":"TASK_ADDED","task_added":{"task":{"task_id":{"value":"x"},"framework_id":{"value":"f"},"statuses":{}}}}"#,
        )
        .unwrap()
        {
            MesosEvent::TaskAdded(Err(r)) => {
                assert_eq!(r.task.as_deref(), Some("x"));
                assert!(r.message.starts_with("statuses: "), "{}", r.message);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_state_document_reads_back_as_the_same_tasks() {
        let t = MesosTask {
            task: parse_task(TASK).unwrap(),
            framework: "marathon".into(),
            agent_host: "10.0.0.1".into(),
        };
        let doc = state_document(&[std::sync::Arc::new(t.clone())]);
        let (tasks, rejected) = join_state(parse_get_state(doc.to_string().as_bytes()).unwrap());
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(tasks, [t]);
    }

    #[test]
    fn big_timestamps_and_exponent_doubles_parse() {
        let t = parse_task(
            r#"{"task_id":{"value":"t"},"framework_id":{"value":"f"},
            "statuses":[{"timestamp":1.5e9,"unreachable_time":{"nanoseconds":1566970849683100928}}]}"#,
        )
        .unwrap();
        assert_eq!(t.statuses[0].timestamp, Some(1.5e9));
    }
}
