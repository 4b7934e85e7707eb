//! The Mesos source's state machine, sans-io: when to subscribe and where, what the cluster
//! looks like, what to publish.
//!
//! Owns: the subscription's life (connect, the leader redirect: a protocol-relative `Location`
//! is joined to the URL asked, an https→http redirect is refused, at most
//! [`DriverConfig::max_redirects`] in a row; liveness: no record for 3 × the master's
//! `heartbeat_interval_seconds` reconnects; jittered exponential backoff, rotating through the
//! `--mesos` URLs after each failure); the cluster state the events describe (frameworks id →
//! name, agents id → hostname, tasks by (framework id, task id), `TASK_UPDATED` overlaid on the
//! task of `TASK_ADDED`, its top-level `state` winning over `status.state`, terminal tasks
//! dropped); the tasks handed to the builder (a task whose framework or agent is unknown waits);
//! and the `recovered_agents` gate: after a `SUBSCRIBED`, the last known tasks of every agent
//! listed there are kept until it re-registers (plus [`DriverConfig::tasks_grace`] for its tasks
//! to arrive) or `--mesos-recovery-timeout` passes.
//!
//! It is fed [`Input`]s with the time passed in (`now`) and answers [`Action`]s; the shell in
//! `mod.rs` does the I/O and calls [`Driver::handle`] with [`Input::Tick`] at
//! [`Driver::next_deadline`].
//!
//! Must not: do I/O, sleep or read the clock, or publish less than it knows because of an error:
//! a failure only schedules a reconnect, and the last published tasks keep serving.

use crate::backoff::Backoff;
use crate::model::mesos::{MesosEvent, MesosModelError, MesosTask, Task, TaskRejection};
use crate::model::TaskState;
use rand::rngs::StdRng;
use rand::SeedableRng;
use reqwest::Url;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The heartbeat interval when `SUBSCRIBED` does not say (Mesos' compile-time constant).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// Liveness: this many heartbeat intervals without a record reconnect (dcos-net's rule).
pub const LIVENESS_HEARTBEATS: u32 = 3;
/// A task keeps at most this many statuses (the newest, plus the newest that reported IPs).
pub const MAX_STATUSES: usize = 4;

/// A task's key: (framework id, task id).
pub type TaskKey = (String, String);

/// Timings and bounds.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The `--mesos` URLs, without credentials, tried in order.
    pub endpoints: Vec<Url>,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// `--mesos-recovery-timeout`: how long the tasks of a recovered agent are kept at most.
    pub recovery_timeout: Duration,
    /// After a recovered agent re-registers, how long its tasks have to arrive.
    pub tasks_grace: Duration,
    pub max_redirects: usize,
    /// Seed of the jitter (tests fix it).
    pub seed: u64,
}

/// What the shell reports.
#[derive(Debug)]
pub enum Input {
    /// Once, first.
    Start,
    /// The `SUBSCRIBE` call answered 200; records follow.
    Connected,
    /// The call answered a redirect with this `Location` (the leader is elsewhere).
    Redirect { location: Option<String> },
    /// The call could not be made, answered another status (503: no leader yet), or the stream
    /// broke or ended. `error` is printable (no credentials).
    Failed { error: String },
    /// Records decoded from the stream, in order; `received` is when their bytes arrived.
    Records {
        records: Vec<Result<MesosEvent, MesosModelError>>,
        received: Instant,
    },
    /// The time given by [`Driver::next_deadline`] has come (early ticks are harmless).
    Tick,
}

/// What the shell is to do, in order.
#[derive(Debug)]
pub enum Action {
    /// Drop any open stream and `POST {"type":"SUBSCRIBE"}` to `url`, with the credentials of
    /// `--mesos` URL number `endpoint` (sent again on a redirect).
    Subscribe { url: Url, endpoint: usize },
    /// Drop the open stream (silent, or of the wrong shape); a reconnect is scheduled.
    Disconnect,
    /// Hand these tasks to the builder (full list; unchanged tasks keep their `Arc`).
    Publish {
        tasks: Vec<Arc<MesosTask>>,
        rejected: Vec<TaskRejection>,
        observed_at: Instant,
    },
}

#[derive(Debug, Clone)]
enum Link {
    /// Waiting to (re)connect at `at` (`None`: not started).
    Down { at: Option<Instant> },
    /// [`Action::Subscribe`] given at `since`, to `url`, after `redirects` redirects.
    Opening {
        since: Instant,
        url: Url,
        redirects: usize,
    },
    /// Answered 200; `last` is when the last record (or the answer) arrived.
    Up { last: Instant, subscribed: bool },
}

/// The sans-io Mesos source.
#[derive(Debug)]
pub struct Driver {
    cfg: DriverConfig,
    rng: StdRng,
    backoff: Backoff,
    endpoint: usize,
    link: Link,
    heartbeat: Duration,
    frameworks: HashMap<String, String>,
    agents: HashMap<String, String>,
    tasks: BTreeMap<TaskKey, Task>,
    rejected: Vec<TaskRejection>,
    /// What was last handed to the builder, by key.
    owners: BTreeMap<TaskKey, Arc<MesosTask>>,
    /// Tasks of recovered agents kept through the gate (only keys absent from `owners`).
    carried: BTreeMap<TaskKey, (String, Arc<MesosTask>)>,
    /// Recovered agents not re-registered yet; `Some(t)`: re-registered, released at `t`.
    pending_agents: BTreeMap<String, Option<Instant>>,
    gate_deadline: Option<Instant>,
    dirty: BTreeSet<TaskKey>,
    all_dirty: bool,
    changed: bool,
}

/// `state` is terminal (a task gone for good, or lost: dcos-net removes `TASK_LOST`).
fn gone(state: Option<&TaskState>) -> bool {
    state.is_some_and(|s| s.is_terminal() || *s == TaskState::Lost)
}

impl Driver {
    pub fn new(cfg: DriverConfig) -> Self {
        Driver {
            rng: StdRng::seed_from_u64(cfg.seed),
            backoff: Backoff::new(cfg.backoff_initial, cfg.backoff_max),
            endpoint: 0,
            link: Link::Down { at: None },
            heartbeat: DEFAULT_HEARTBEAT,
            frameworks: HashMap::new(),
            agents: HashMap::new(),
            tasks: BTreeMap::new(),
            rejected: Vec::new(),
            owners: BTreeMap::new(),
            carried: BTreeMap::new(),
            pending_agents: BTreeMap::new(),
            gate_deadline: None,
            dirty: BTreeSet::new(),
            all_dirty: false,
            changed: false,
            cfg,
        }
    }

    /// Seeds the driver with tasks published before (from `--state-dir`): they serve until the
    /// first `SUBSCRIBED`, and through the gate for agents that master lists as recovered.
    pub fn restore(&mut self, tasks: Vec<Arc<MesosTask>>) {
        for t in tasks {
            let key = (t.task.framework_id.clone(), t.task.task_id.clone());
            self.owners.insert(key, t);
        }
    }

    /// The `--mesos` URL in use.
    pub fn endpoint(&self) -> usize {
        self.endpoint
    }

    /// The heartbeat interval the master announced.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// Recovered agents still waited for.
    pub fn pending_agents(&self) -> usize {
        self.pending_agents.len()
    }

    /// When the shell must call [`Input::Tick`] next.
    pub fn next_deadline(&self) -> Option<Instant> {
        let liveness = self.heartbeat * LIVENESS_HEARTBEATS;
        let link = match &self.link {
            Link::Down { at } => *at,
            Link::Opening { since, .. } => Some(*since + liveness),
            Link::Up { last, .. } => Some(*last + liveness),
        };
        let releases = self.pending_agents.values().flatten().copied();
        link.into_iter()
            .chain(self.gate_deadline)
            .chain(releases)
            .min()
    }

    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Start => out.push(self.subscribe(self.endpoint_url(), 0, now)),
            Input::Connected => {
                if let Link::Opening { url, .. } = &self.link {
                    tracing::info!(url = %crate::source::marathon::redact::redact_url(url), "Mesos event stream connected");
                }
                self.link = Link::Up {
                    last: now,
                    subscribed: false,
                };
            }
            Input::Redirect { location } => self.redirect(location, now, &mut out),
            Input::Failed { error } => self.fail(&error, now),
            Input::Records { records, received } => {
                if let Link::Up { last, .. } = &mut self.link {
                    *last = received.max(*last);
                }
                for r in records {
                    match r {
                        Ok(event) => self.apply(event, now),
                        Err(e) => {
                            // A record we cannot read may have changed the state: resubscribe.
                            self.fail(&format!("event of the wrong shape: {e}"), now);
                            out.push(Action::Disconnect);
                            break;
                        }
                    }
                }
            }
            Input::Tick => self.tick(now, &mut out),
        }
        if let Some(p) = self.publish(now) {
            out.push(p);
        }
        out
    }

    fn endpoint_url(&self) -> Url {
        self.cfg.endpoints[self.endpoint % self.cfg.endpoints.len()].clone()
    }

    fn subscribe(&mut self, url: Url, redirects: usize, now: Instant) -> Action {
        self.link = Link::Opening {
            since: now,
            url: url.clone(),
            redirects,
        };
        Action::Subscribe {
            url,
            endpoint: self.endpoint,
        }
    }

    fn redirect(&mut self, location: Option<String>, now: Instant, out: &mut Vec<Action>) {
        let Link::Opening { url, redirects, .. } = self.link.clone() else {
            return;
        };
        let shown = crate::source::marathon::redact::redact_url(&url);
        let next = location.as_deref().and_then(|l| url.join(l).ok());
        let error = match next {
            None => format!("{shown}: redirect without a usable Location"),
            Some(_) if redirects >= self.cfg.max_redirects => {
                format!(
                    "{shown}: too many redirects (more than {})",
                    self.cfg.max_redirects
                )
            }
            Some(next) if url.scheme() == "https" && next.scheme() != "https" => format!(
                "{shown}: refused a redirect from https to {}: credentials would travel in clear",
                crate::source::marathon::redact::redact_url(&next)
            ),
            Some(next) if next.scheme() != "http" && next.scheme() != "https" => {
                format!("{shown}: redirect to a scheme that is not http(s)")
            }
            Some(next) => {
                tracing::info!(from = %shown, to = %crate::source::marathon::redact::redact_url(&next), "Mesos master is not the leader; following its redirect");
                out.push(self.subscribe(next, redirects + 1, now));
                return;
            }
        };
        self.fail(&error, now);
    }

    /// The stream is down: rotate to the next URL and reconnect after a jittered backoff.
    fn fail(&mut self, error: &str, now: Instant) {
        let delay = self.backoff.next_delay(&mut self.rng);
        let n = self.cfg.endpoints.len();
        self.endpoint = (self.endpoint + 1) % n;
        tracing::warn!(error, retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), next_url = %crate::source::marathon::redact::redact_url(&self.endpoint_url()), "Mesos subscription failed; keeping the last good tasks");
        self.link = Link::Down {
            at: Some(now + delay),
        };
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        let liveness = self.heartbeat * LIVENESS_HEARTBEATS;
        match self.link.clone() {
            Link::Down { at: Some(at) } if now >= at => {
                out.push(self.subscribe(self.endpoint_url(), 0, now));
            }
            Link::Opening { since, .. } if now >= since + liveness => {
                out.push(Action::Disconnect);
                self.fail("no answer to SUBSCRIBE", now);
            }
            Link::Up { last, .. } if now >= last + liveness => {
                out.push(Action::Disconnect);
                let silent = format!(
                    "no record for {} ms (3 x heartbeat_interval_seconds)",
                    liveness.as_millis()
                );
                self.fail(&silent, now);
            }
            _ => {}
        }
        if self.gate_deadline.is_some_and(|d| now >= d) {
            tracing::warn!(
                agents = self.pending_agents.len(),
                "recovered agents did not re-register within --mesos-recovery-timeout; their tasks are dropped"
            );
            self.gate_deadline = None;
            self.pending_agents.clear();
            if !self.carried.is_empty() {
                self.carried.clear();
                self.changed = true;
            }
        }
        let released: Vec<String> = self
            .pending_agents
            .iter()
            .filter(|(_, at)| at.is_some_and(|at| now >= at))
            .map(|(a, _)| a.clone())
            .collect();
        for agent in released {
            self.release_agent(&agent);
        }
    }

    fn release_agent(&mut self, agent: &str) {
        self.pending_agents.remove(agent);
        let before = self.carried.len();
        self.carried.retain(|_, (a, _)| a != agent);
        self.changed |= self.carried.len() != before;
        if self.pending_agents.is_empty() {
            self.gate_deadline = None;
        }
    }

    fn tasks_of(&self, pred: impl Fn(&Task) -> bool) -> Vec<TaskKey> {
        self.tasks
            .iter()
            .filter(|(_, t)| pred(t))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn apply(&mut self, event: MesosEvent, now: Instant) {
        match event {
            MesosEvent::Subscribed {
                state,
                heartbeat_interval_seconds,
            } => {
                self.heartbeat = heartbeat_interval_seconds
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .map_or(DEFAULT_HEARTBEAT, |s| {
                        Duration::from_secs_f64(s.clamp(0.01, 3600.0))
                    });
                if let Link::Up { subscribed, .. } = &mut self.link {
                    *subscribed = true;
                }
                self.backoff.reset();
                self.frameworks = state
                    .frameworks
                    .into_iter()
                    .filter_map(|f| Some((f.id?, f.name)))
                    .collect();
                self.agents = state
                    .agents
                    .into_iter()
                    .filter_map(|a| Some((a.id?, a.hostname)))
                    .collect();
                self.tasks = state
                    .tasks
                    .into_iter()
                    .filter(|t| !gone(t.state.as_ref()))
                    .map(|t| ((t.framework_id.clone(), t.task_id.clone()), t))
                    .collect();
                for r in &state.rejected {
                    tracing::warn!(task = r.task.as_deref().unwrap_or("?"), reason = %r.message, "Mesos task skipped");
                }
                self.rejected = state.rejected;
                // The gate: tasks last known on agents the master has not heard from yet.
                self.pending_agents = state
                    .recovered_agents
                    .into_iter()
                    .filter_map(|a| a.id)
                    .filter(|id| !self.agents.contains_key(id))
                    .map(|id| (id, None))
                    .collect();
                let mut carried = std::mem::take(&mut self.carried);
                for (key, owner) in std::mem::take(&mut self.owners) {
                    if let Some(agent) = owner.task.agent_id.clone() {
                        carried.insert(key, (agent, owner));
                    }
                }
                carried.retain(|_, (a, _)| self.pending_agents.contains_key(a));
                self.carried = carried;
                self.gate_deadline = if self.pending_agents.is_empty() {
                    None
                } else {
                    tracing::info!(
                        agents = self.pending_agents.len(),
                        kept_tasks = self.carried.len(),
                        "Mesos master lists recovered agents; keeping their last known tasks until they re-register"
                    );
                    Some(now + self.cfg.recovery_timeout)
                };
                self.all_dirty = true;
                self.changed = true;
            }
            MesosEvent::TaskAdded(Ok(task)) => {
                let key = (task.framework_id.clone(), task.task_id.clone());
                if gone(task.state.as_ref()) {
                    self.tasks.remove(&key);
                } else {
                    self.tasks.insert(key.clone(), *task);
                }
                self.rejected.retain(|r| r.task.as_deref() != Some(&key.1));
                // Re-learnt from its agent, in whatever state: the carried copy is stale.
                self.changed |= self.carried.remove(&key).is_some();
                self.dirty.insert(key);
            }
            MesosEvent::TaskAdded(Err(r)) => {
                tracing::warn!(task = r.task.as_deref().unwrap_or("?"), reason = %r.message, "Mesos task skipped");
                self.rejected.retain(|o| o.task != r.task);
                self.rejected.push(r);
                self.changed = true;
            }
            MesosEvent::TaskUpdated {
                framework_id,
                status,
                state,
            } => {
                let Some(task_id) = status.task_id.clone() else {
                    return;
                };
                let key = (framework_id, task_id);
                let Some(task) = self.tasks.get_mut(&key) else {
                    tracing::debug!(framework = %key.0, task = %key.1, "TASK_UPDATED for a task not known; ignored");
                    return;
                };
                task.state = state.or_else(|| status.state.clone());
                if task.agent_id.is_none() {
                    task.agent_id.clone_from(&status.agent_id);
                }
                task.statuses.push(*status);
                trim_statuses(&mut task.statuses);
                if gone(task.state.as_ref()) {
                    self.tasks.remove(&key);
                }
                self.dirty.insert(key);
            }
            MesosEvent::AgentAdded(agent) => {
                let Some(id) = agent.id else { return };
                if let Some(release) = self.pending_agents.get_mut(&id) {
                    *release = Some(now + self.cfg.tasks_grace);
                }
                self.agents.insert(id.clone(), agent.hostname);
                let keys = self.tasks_of(|t| t.agent_id.as_deref() == Some(&id));
                self.dirty.extend(keys);
            }
            MesosEvent::AgentRemoved { agent_id } => {
                self.agents.remove(&agent_id);
                if self.pending_agents.contains_key(&agent_id) {
                    self.release_agent(&agent_id);
                }
                let keys = self.tasks_of(|t| t.agent_id.as_deref() == Some(&agent_id));
                self.dirty.extend(keys);
            }
            MesosEvent::FrameworkAdded(f) | MesosEvent::FrameworkUpdated(f) => {
                let Some(id) = f.id else { return };
                if self.frameworks.get(&id) != Some(&f.name) {
                    self.frameworks.insert(id.clone(), f.name);
                    let keys = self.tasks_of(|t| t.framework_id == id);
                    self.dirty.extend(keys);
                }
            }
            MesosEvent::FrameworkRemoved(f) => {
                let Some(id) = f.id else { return };
                self.frameworks.remove(&id);
                let keys = self.tasks_of(|t| t.framework_id == id);
                for k in &keys {
                    self.tasks.remove(k);
                }
                self.dirty.extend(keys);
            }
            MesosEvent::Heartbeat | MesosEvent::Other(_) => {}
        }
    }

    /// The builder's view of one task: `None` while its framework or agent is unknown.
    fn owner(&self, key: &TaskKey) -> Option<MesosTask> {
        let task = self.tasks.get(key)?;
        let framework = self.frameworks.get(&task.framework_id)?;
        let agent_host = self.agents.get(task.agent_id.as_deref()?)?;
        Some(MesosTask {
            task: task.clone(),
            framework: framework.clone(),
            agent_host: agent_host.clone(),
        })
    }

    fn publish(&mut self, now: Instant) -> Option<Action> {
        if self.all_dirty {
            self.all_dirty = false;
            self.dirty.clear();
            let keys: Vec<TaskKey> = self.tasks.keys().cloned().collect();
            self.owners = keys
                .into_iter()
                .filter_map(|k| Some((k.clone(), Arc::new(self.owner(&k)?))))
                .collect();
            self.changed = true;
        } else if !self.dirty.is_empty() {
            for key in std::mem::take(&mut self.dirty) {
                match self.owner(&key) {
                    Some(o) => {
                        if self.owners.get(&key).map(|a| &**a) != Some(&o) {
                            self.owners.insert(key.clone(), Arc::new(o));
                            self.changed = true;
                        }
                    }
                    None => self.changed |= self.owners.remove(&key).is_some(),
                }
                // A task that is back needs no carrying.
                if self.owners.contains_key(&key) {
                    self.changed |= self.carried.remove(&key).is_some();
                }
            }
        }
        // Publish only once a SUBSCRIBED was seen (or state was restored and changed since).
        if !std::mem::take(&mut self.changed) {
            return None;
        }
        let tasks = self
            .owners
            .values()
            .cloned()
            .chain(
                self.carried
                    .iter()
                    .filter(|(k, _)| !self.owners.contains_key(*k))
                    .map(|(_, (_, o))| Arc::clone(o)),
            )
            .collect();
        Some(Action::Publish {
            tasks,
            rejected: self.rejected.clone(),
            observed_at: now,
        })
    }
}

/// Keeps the newest [`MAX_STATUSES`] statuses, and the newest one that reported IPs (task IPs
/// are read from it when later updates carry none).
fn trim_statuses(statuses: &mut Vec<crate::model::mesos::TaskStatus>) {
    if statuses.len() <= MAX_STATUSES {
        return;
    }
    let ts = |s: &crate::model::mesos::TaskStatus| s.timestamp.unwrap_or(f64::NEG_INFINITY);
    let mut order: Vec<usize> = (0..statuses.len()).collect();
    // Newest first; a later index wins a tie.
    order.sort_by(|&a, &b| {
        ts(&statuses[b])
            .partial_cmp(&ts(&statuses[a]))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.cmp(&a))
    });
    let has_ips = |s: &crate::model::mesos::TaskStatus| {
        s.container_status.as_ref().is_some_and(|c| {
            c.network_infos
                .iter()
                .flat_map(|n| &n.ip_addresses)
                .any(|a| a.ip_address.as_deref().is_some_and(|a| !a.is_empty()))
        })
    };
    let mut keep: BTreeSet<usize> = order.iter().take(MAX_STATUSES).copied().collect();
    if let Some(&i) = order.iter().find(|&&i| has_ips(&statuses[i])) {
        keep.insert(i);
    }
    let mut i = 0;
    statuses.retain(|_| {
        let k = keep.contains(&i);
        i += 1;
        k
    });
}

#[cfg(test)]
mod tests;
