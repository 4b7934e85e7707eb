//! Applying Marathon events to the current snapshot, incrementally, and the leader-failover
//! health rule. Pure: no I/O, no clock.
//!
//! Owns: how each event changes an [`AppsSnapshot`] (clone-on-write of the touched app only:
//! apps are `Arc<App>` and untouched apps are shared with the previous snapshot), which events
//! instead ask for a re-fetch, and how a freshly fetched app or snapshot inherits health results.
//!
//! Must not: decide routing (which states or health verdicts route is `table::build`'s job; this
//! module only records what Marathon said), fetch anything, or read a clock.
//!
//! ## Task states from `status_update_event`
//! - `TASK_STAGING`, `TASK_STARTING`, `TASK_RUNNING`: add the task or update it (host, ports,
//!   ipAddresses, state, version; health results are kept).
//! - `TASK_KILLING`: mark the task (the builder makes it draining).
//! - `TASK_UNREACHABLE`: mark the task; the builder keeps it as a routable `unknown`.
//! - `TASK_LOST`: treated like `TASK_UNREACHABLE` (Marathon itself reports a lost-but-maybe-back
//!   task as `TASK_UNREACHABLE` in `/v2/apps`), and the app is re-fetched so Marathon's own
//!   verdict replaces the guess.
//! - `TASK_FINISHED`, `TASK_FAILED`, `TASK_KILLED`, `TASK_ERROR`, `TASK_DROPPED`, `TASK_GONE`,
//!   `TASK_GONE_BY_OPERATOR`, `TASK_UNKNOWN`: remove the task.
//! - An event for an app not in the snapshot, or an unknown state: re-fetch that app.
//!
//! Tasks are matched by task id, then by [`instance_key`] (a new incarnation of the same
//! instance replaces the old task). Health events carry instance ids and are matched by
//! [`instance_key`] only, never by string equality (../shared/reference/marathon/FACTS.md §2).
//!
//! ## Health events
//! - `instance_health_changed_event` `healthy: true|false` sets the task's results to one result
//!   with that verdict (unless the current results already say so); `healthy: null` keeps what
//!   is known (leader-failover rule below).
//! - `health_status_changed_event` (one check's result) replaces the results when the task has at
//!   most one result; with several checks vipd cannot tell which one flipped, so it leaves them
//!   and re-fetches the app.
//!
//! ## Leader-failover health rule
//! Marathon keeps health results in the leader's memory only: after a leader election every task
//! shows no results until its checks run again (../shared/reference/marathon/FACTS.md §4, marathon
//! #3419/#4220/#4917). So when
//! a fetched task of an app that has health checks has no results (`[]` or missing) but the
//! previous snapshot had results for the same instance (by [`instance_key`]), the old results are
//! carried forward, until Marathon reports a result again. Tasks never seen before are not
//! affected (a new task really has no verdict yet), and apps without health checks never carry.

use super::events::{InstanceChanged, MarathonEvent, StatusUpdate};
use crate::model::ids::{instance_key, InstanceKey};
use crate::model::{App, AppsSnapshot, HealthResult, Task, TaskState};
use std::collections::HashMap;
use std::sync::Arc;

/// What a fetch an event asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Refetch {
    #[default]
    None,
    /// Re-fetch these apps (`GET /v2/apps/{id}`).
    Apps(Vec<String>),
    /// Re-fetch everything.
    Full,
}

/// The result of applying one event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Effects {
    /// The snapshot changed.
    pub changed: bool,
    pub refetch: Refetch,
    /// The event carried nothing vipd acts on (unknown type, unknown task, no-op).
    pub ignored: bool,
}

impl Effects {
    fn changed() -> Self {
        Effects {
            changed: true,
            ..Effects::default()
        }
    }
    fn ignored() -> Self {
        Effects {
            ignored: true,
            ..Effects::default()
        }
    }
    fn app(id: &str) -> Self {
        Effects {
            refetch: Refetch::Apps(vec![id.to_string()]),
            ..Effects::default()
        }
    }
    fn with_app(mut self, id: &str) -> Self {
        self.refetch = Refetch::Apps(vec![id.to_string()]);
        self
    }
}

/// True when the event changes tasks directly (and so must be replayed onto a fetch that was in
/// flight when it arrived).
pub fn is_task_event(event: &MarathonEvent) -> bool {
    matches!(
        event,
        MarathonEvent::StatusUpdate(_)
            | MarathonEvent::InstanceChanged(_)
            | MarathonEvent::InstanceHealthChanged { .. }
            | MarathonEvent::HealthStatusChanged { .. }
            | MarathonEvent::AppTerminated { .. }
    )
}

/// Applies `event` to `snapshot`, cloning only what it changes.
pub fn apply_event(snapshot: &mut Arc<AppsSnapshot>, event: &MarathonEvent) -> Effects {
    match event {
        MarathonEvent::StatusUpdate(s) => status_update(snapshot, s),
        MarathonEvent::InstanceChanged(e) => instance_changed(snapshot, e),
        MarathonEvent::InstanceHealthChanged {
            instance_id,
            app_id,
            healthy,
        } => match healthy {
            None => Effects::ignored(),
            Some(h) => health(snapshot, instance_id, app_id.as_deref(), *h, true),
        },
        MarathonEvent::HealthStatusChanged {
            instance_id,
            app_id,
            alive,
        } => health(snapshot, instance_id, app_id.as_deref(), *alive, false),
        MarathonEvent::AppTerminated { app_id } => match find_app(snapshot, app_id) {
            Some(i) => {
                Arc::make_mut(snapshot).apps.remove(i);
                Effects::changed()
            }
            None => Effects::ignored(),
        },
        MarathonEvent::ApiPost { app_id: Some(id) } => Effects::app(id),
        MarathonEvent::ApiPost { app_id: None } => Effects {
            refetch: Refetch::Full,
            ..Effects::default()
        },
        MarathonEvent::DeploymentFinished { app_ids } if !app_ids.is_empty() => Effects {
            refetch: Refetch::Apps(app_ids.clone()),
            ..Effects::default()
        },
        MarathonEvent::DeploymentFinished { .. } | MarathonEvent::GroupChangeSuccess { .. } => {
            Effects {
                refetch: Refetch::Full,
                ..Effects::default()
            }
        }
        MarathonEvent::Other { .. } => Effects::ignored(),
    }
}

/// App ids compare without their leading `/` (`/a` and `a` are one app).
pub fn same_app_id(a: &str, b: &str) -> bool {
    a.trim_start_matches('/') == b.trim_start_matches('/')
}

fn find_app(snapshot: &AppsSnapshot, id: &str) -> Option<usize> {
    snapshot.apps.iter().position(|a| same_app_id(&a.id, id))
}

/// Finds a task by exact id, then by instance key.
fn find_task(app: &App, task_id: &str) -> Option<usize> {
    if let Some(i) = app.tasks.iter().position(|t| t.id == task_id) {
        return Some(i);
    }
    let key = instance_key(task_id)?;
    app.tasks
        .iter()
        .position(|t| instance_key(&t.id).as_ref() == Some(&key))
}

/// Indices of tasks that belong to the instance `key`.
fn tasks_of_instance(app: &App, key: &InstanceKey) -> Vec<usize> {
    app.tasks
        .iter()
        .enumerate()
        .filter(|(_, t)| instance_key(&t.id).as_ref() == Some(key))
        .map(|(i, _)| i)
        .collect()
}

fn app_mut(snapshot: &mut Arc<AppsSnapshot>, i: usize) -> &mut App {
    Arc::make_mut(&mut Arc::make_mut(snapshot).apps[i])
}

enum StatusKind {
    Upsert,
    Mark(TaskState),
    Remove,
}

fn status_kind(status: &TaskState) -> Option<StatusKind> {
    use TaskState as S;
    Some(match status {
        S::Staging | S::Starting | S::Running => StatusKind::Upsert,
        S::Killing => StatusKind::Mark(S::Killing),
        S::Unreachable | S::Lost => StatusKind::Mark(S::Unreachable),
        S::Other(_) => return None,
        terminal => {
            debug_assert!(terminal.is_terminal(), "{terminal:?}");
            StatusKind::Remove
        }
    })
}

fn status_update(snapshot: &mut Arc<AppsSnapshot>, s: &StatusUpdate) -> Effects {
    let status = TaskState::parse(&s.task_status);
    let Some(kind) = status_kind(&status) else {
        return Effects::app(&s.app_id);
    };
    let Some(ai) = find_app(snapshot, &s.app_id) else {
        return match kind {
            StatusKind::Remove => Effects::ignored(),
            _ => Effects::app(&s.app_id),
        };
    };
    let app = &snapshot.apps[ai];
    let ti = find_task(app, &s.task_id);
    let lost = status == TaskState::Lost;
    match kind {
        StatusKind::Upsert => {
            let version_moved = matches!((&s.version, &app.version), (Some(a), Some(b)) if a != b);
            let effects = match ti {
                Some(ti) => {
                    let old = &app.tasks[ti];
                    let mut t = old.clone();
                    t.id.clone_from(&s.task_id);
                    if s.host.is_some() {
                        t.host.clone_from(&s.host);
                    }
                    t.ports.clone_from(&s.ports);
                    if !s.ip_addresses.is_empty() {
                        t.ip_addresses.clone_from(&s.ip_addresses);
                    }
                    t.state = Some(status.clone());
                    if s.version.is_some() {
                        t.version.clone_from(&s.version);
                    }
                    if t == *old {
                        Effects::ignored()
                    } else {
                        app_mut(snapshot, ai).tasks[ti] = t;
                        Effects::changed()
                    }
                }
                None => {
                    let t = Task {
                        id: s.task_id.clone(),
                        app_id: Some(app.id.clone()),
                        host: s.host.clone(),
                        ports: s.ports.clone(),
                        ip_addresses: s.ip_addresses.clone(),
                        state: Some(status.clone()),
                        health_check_results: Some(Vec::new()),
                        version: s.version.clone(),
                        started_at: None,
                    };
                    app_mut(snapshot, ai).tasks.push(t);
                    Effects::changed()
                }
            };
            // A task of another app version may carry ports of a definition vipd has not seen.
            if version_moved {
                effects.with_app(&s.app_id)
            } else {
                effects
            }
        }
        StatusKind::Mark(state) => {
            let effects = match ti {
                Some(ti) if app.tasks[ti].state.as_ref() != Some(&state) => {
                    app_mut(snapshot, ai).tasks[ti].state = Some(state);
                    Effects::changed()
                }
                _ => Effects::ignored(),
            };
            if lost {
                effects.with_app(&s.app_id)
            } else {
                effects
            }
        }
        StatusKind::Remove => match ti {
            Some(ti) => {
                app_mut(snapshot, ai).tasks.remove(ti);
                Effects::changed()
            }
            None => Effects::ignored(),
        },
    }
}

fn instance_changed(snapshot: &mut Arc<AppsSnapshot>, e: &InstanceChanged) -> Effects {
    let Some(key) = instance_key(&e.instance_id) else {
        return Effects::ignored();
    };
    let located = locate_instance(snapshot, e.run_spec_id.as_deref(), &key);
    let Some((ai, tis)) = located else {
        return match (&e.run_spec_id, e.condition.as_str()) {
            (Some(app), "Running") => Effects::app(app),
            _ => Effects::ignored(),
        };
    };
    enum Op {
        State(TaskState, bool),
        Remove,
    }
    let op = match e.condition.as_str() {
        "Running" => Op::State(TaskState::Running, false),
        "Killing" => Op::State(TaskState::Killing, false),
        "Unreachable" => Op::State(TaskState::Unreachable, false),
        // Not active: Marathon reports it with `ports: []` (../shared/reference/marathon/FACTS.md
        // §2).
        "UnreachableInactive" => Op::State(TaskState::Unreachable, true),
        "Killed" | "Finished" | "Failed" | "Error" | "Gone" | "Dropped" | "Unknown" => Op::Remove,
        "Staging" | "Starting" | "Provisioned" | "Scheduled" => return Effects::ignored(),
        _ => return Effects::app(&snapshot.apps[ai].id.clone()),
    };
    match op {
        Op::Remove => {
            let app = app_mut(snapshot, ai);
            for ti in tis.into_iter().rev() {
                app.tasks.remove(ti);
            }
            Effects::changed()
        }
        Op::State(state, clear_ports) => {
            let app = &snapshot.apps[ai];
            let needs = tis.iter().any(|&ti| {
                let t = &app.tasks[ti];
                t.state.as_ref() != Some(&state) || (clear_ports && !t.ports.is_empty())
            });
            if !needs {
                return Effects::ignored();
            }
            let app = app_mut(snapshot, ai);
            for ti in tis {
                let t = &mut app.tasks[ti];
                t.state = Some(state.clone());
                if clear_ports {
                    t.ports.clear();
                }
            }
            Effects::changed()
        }
    }
}

/// Finds the app and the tasks of an instance: in the named app when known, else everywhere.
fn locate_instance(
    snapshot: &AppsSnapshot,
    app_id: Option<&str>,
    key: &InstanceKey,
) -> Option<(usize, Vec<usize>)> {
    if let Some(ai) = app_id.and_then(|id| find_app(snapshot, id)) {
        let tis = tasks_of_instance(&snapshot.apps[ai], key);
        return (!tis.is_empty()).then_some((ai, tis));
    }
    snapshot.apps.iter().enumerate().find_map(|(ai, app)| {
        let tis = tasks_of_instance(app, key);
        (!tis.is_empty()).then_some((ai, tis))
    })
}

fn health(
    snapshot: &mut Arc<AppsSnapshot>,
    instance_id: &str,
    app_id: Option<&str>,
    alive: bool,
    instance_level: bool,
) -> Effects {
    let Some(key) = instance_key(instance_id) else {
        return Effects::ignored();
    };
    let Some((ai, tis)) = locate_instance(snapshot, app_id, &key) else {
        return Effects::ignored();
    };
    let app = &snapshot.apps[ai];
    let synthetic = vec![HealthResult {
        alive,
        instance_id: Some(instance_id.to_string()),
        task_id: None,
        consecutive_failures: None,
    }];
    let mut updates = Vec::new();
    let mut refetch = false;
    for ti in tis {
        let results = app.tasks[ti].health_check_results.as_deref().unwrap_or(&[]);
        let already = if alive {
            !results.is_empty() && results.iter().all(|r| r.alive)
        } else {
            results.iter().any(|r| !r.alive)
        };
        if already {
            continue;
        }
        if !instance_level && results.len() > 1 {
            refetch = true; // which of several checks flipped is unknown
            continue;
        }
        updates.push(ti);
    }
    let mut effects = if updates.is_empty() {
        Effects::ignored()
    } else {
        let app = app_mut(snapshot, ai);
        for ti in updates {
            app.tasks[ti].health_check_results = Some(synthetic.clone());
        }
        Effects::changed()
    };
    if refetch {
        effects = effects.with_app(&snapshot.apps[ai].id.clone());
    }
    effects
}

// === Fetch results ===

/// Replaces (or adds, or with `None` removes) one app after a per-app fetch, carrying health
/// results forward under the leader-failover rule. Returns whether the snapshot changed.
pub fn replace_app(snapshot: &mut Arc<AppsSnapshot>, app_id: &str, fetched: Option<App>) -> bool {
    let at = find_app(snapshot, app_id);
    match (at, fetched) {
        (None, None) => false,
        (Some(i), None) => {
            Arc::make_mut(snapshot).apps.remove(i);
            true
        }
        (None, Some(app)) => {
            Arc::make_mut(snapshot).apps.push(Arc::new(app));
            true
        }
        (Some(i), Some(mut app)) => {
            carry_app_health(&snapshot.apps[i], &mut app);
            if *snapshot.apps[i] == app {
                return false;
            }
            Arc::make_mut(snapshot).apps[i] = Arc::new(app);
            true
        }
    }
}

/// Applies the leader-failover health rule to a full snapshot `next` fetched after `prev`.
/// Returns the number of tasks whose results were carried forward.
pub fn carry_forward_health(prev: &AppsSnapshot, next: &mut AppsSnapshot) -> usize {
    let needs = |app: &App| !app.health_checks.is_empty() && app.tasks.iter().any(lacks_results);
    if !next.apps.iter().any(|a| needs(a)) {
        return 0;
    }
    let prev_apps: HashMap<&str, &App> = prev
        .apps
        .iter()
        .map(|a| (a.id.trim_start_matches('/'), a.as_ref()))
        .collect();
    let mut carried = 0;
    for app in next.apps.iter_mut() {
        if !needs(app) {
            continue;
        }
        let Some(old) = prev_apps.get(app.id.trim_start_matches('/')) else {
            continue;
        };
        // Freshly parsed apps are not shared: `make_mut` does not copy them.
        carried += carry_app_health(old, Arc::make_mut(app));
    }
    carried
}

/// Replaces every app (and pod) of `next` that equals its namesake in `prev` with `prev`'s
/// `Arc`, so that a full snapshot shares what did not change: the table's build cache then
/// reuses those owners' parts (a full resync rebuilds only what changed), and the previous
/// copies are what stay in memory. Returns how many apps and pods are shared. Run after
/// [`carry_forward_health`].
pub fn share_unchanged_apps(prev: &AppsSnapshot, next: &mut AppsSnapshot) -> usize {
    share_unchanged(&prev.apps, &mut next.apps, |a| &a.id)
        + share_unchanged(&prev.pods, &mut next.pods, |p| &p.id)
}

fn share_unchanged<T: PartialEq>(
    prev: &[Arc<T>],
    next: &mut [Arc<T>],
    id: impl Fn(&T) -> &str,
) -> usize {
    if prev.is_empty() {
        return 0;
    }
    let by_id: HashMap<&str, &Arc<T>> = prev.iter().map(|a| (id(a), a)).collect();
    let mut shared = 0;
    for item in next.iter_mut() {
        if let Some(&old) = by_id.get(id(item)) {
            if Arc::ptr_eq(old, item) || **old == **item {
                *item = Arc::clone(old);
                shared += 1;
            }
        }
    }
    shared
}

/// Whether two snapshots hold the same apps and pods (shared `Arc`s, in the same order) and the
/// same rejections: the cheap "unchanged?" test after [`share_unchanged_apps`].
pub fn same_apps(a: &AppsSnapshot, b: &AppsSnapshot) -> bool {
    fn same<T>(x: &[Arc<T>], y: &[Arc<T>]) -> bool {
        x.len() == y.len() && x.iter().zip(y).all(|(a, b)| Arc::ptr_eq(a, b))
    }
    same(&a.apps, &b.apps)
        && same(&a.pods, &b.pods)
        && a.rejected == b.rejected
        && a.rejected_pods == b.rejected_pods
}

fn lacks_results(t: &Task) -> bool {
    match &t.health_check_results {
        None => true,
        Some(r) => r.is_empty(),
    }
}

/// Carries results from `old`'s tasks into `new`'s result-less tasks. Returns how many.
///
/// Task ids usually survive a failover unchanged, so tasks are matched by id first (no
/// allocation); only the misses pay for [`instance_key`] (a new incarnation or another era's
/// spelling of the same instance).
fn carry_app_health(old: &App, new: &mut App) -> usize {
    if new.health_checks.is_empty() || !new.tasks.iter().any(lacks_results) {
        return 0;
    }
    let by_id: HashMap<&str, &Vec<HealthResult>> = old
        .tasks
        .iter()
        .filter_map(|t| match &t.health_check_results {
            Some(r) if !r.is_empty() => Some((t.id.as_str(), r)),
            _ => None,
        })
        .collect();
    if by_id.is_empty() {
        return 0;
    }
    let mut by_key: Option<HashMap<InstanceKey, &Vec<HealthResult>>> = None;
    let mut carried = 0;
    for t in new.tasks.iter_mut().filter(|t| lacks_results(t)) {
        let found = match by_id.get(t.id.as_str()) {
            Some(r) => Some(*r),
            None => instance_key(&t.id).and_then(|k| {
                by_key
                    .get_or_insert_with(|| {
                        by_id
                            .iter()
                            .filter_map(|(id, r)| instance_key(id).map(|k| (k, *r)))
                            .collect()
                    })
                    .get(&k)
                    .copied()
            }),
        };
        if let Some(r) = found {
            t.health_check_results = Some(r.clone());
            carried += 1;
        }
    }
    carried
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{parse_apps_document, TaskIpAddress};

    const U1: &str = "11111111-1111-1111-1111-111111111111";
    const U2: &str = "22222222-2222-2222-2222-222222222222";

    fn snap(json: &str) -> Arc<AppsSnapshot> {
        let s = parse_apps_document(json.as_bytes()).unwrap();
        assert!(s.rejected.is_empty(), "{:?}", s.rejected);
        Arc::new(s)
    }

    fn base() -> Arc<AppsSnapshot> {
        snap(&format!(
            r#"{{"apps":[
              {{"id":"/web","version":"v1","healthChecks":[{{"protocol":"MESOS_HTTP"}}],
                "tasks":[{{"id":"web.instance-{U1}._app.1","host":"h1","ports":[31000],"state":"TASK_RUNNING","version":"v1",
                  "healthCheckResults":[{{"alive":true,"instanceId":"web.instance-{U1}"}}]}}]}},
              {{"id":"/other","version":"v1","tasks":[]}}
            ]}}"#
        ))
    }

    fn status(task: &str, app: &str, state: &str) -> MarathonEvent {
        MarathonEvent::StatusUpdate(StatusUpdate {
            task_id: task.into(),
            app_id: app.into(),
            task_status: state.into(),
            host: Some("h2".into()),
            ports: vec![31001],
            ip_addresses: vec![TaskIpAddress {
                ip_address: "10.0.0.2".into(),
                protocol: Some("IPv4".into()),
            }],
            version: Some("v1".into()),
        })
    }

    #[test]
    fn running_adds_a_task_and_shares_untouched_apps() {
        let before = base();
        let mut s = before.clone();
        let id = format!("web.instance-{U2}._app.1");
        let e = apply_event(&mut s, &status(&id, "/web", "TASK_RUNNING"));
        assert_eq!(e, Effects::changed());
        assert_eq!(s.apps[0].tasks.len(), 2);
        let t = &s.apps[0].tasks[1];
        assert_eq!(
            (
                t.host.as_deref(),
                &t.ports[..],
                t.state.as_ref().map(TaskState::as_str)
            ),
            (Some("h2"), &[31001][..], Some("TASK_RUNNING"))
        );
        assert_eq!(t.ip_addresses[0].ip_address, "10.0.0.2");
        assert_eq!(t.health_check_results, Some(vec![]));
        // Clone-on-write: the untouched app is the same allocation, the old snapshot unchanged.
        assert!(Arc::ptr_eq(&s.apps[1], &before.apps[1]));
        assert_eq!(before.apps[0].tasks.len(), 1);
        // Applying it again changes nothing.
        assert!(apply_event(&mut s, &status(&id, "/web", "TASK_RUNNING")).ignored);
    }

    #[test]
    fn running_update_keeps_health_and_new_incarnation_replaces() {
        let mut s = base();
        let id = format!("web.instance-{U1}._app.2");
        assert!(apply_event(&mut s, &status(&id, "/web", "TASK_RUNNING")).changed);
        assert_eq!(s.apps[0].tasks.len(), 1);
        let t = &s.apps[0].tasks[0];
        assert_eq!(t.id, id);
        assert_eq!(t.ports, vec![31001]);
        assert!(t.health_check_results.as_ref().unwrap()[0].alive);
    }

    #[test]
    fn killing_marks_unreachable_marks_lost_marks_and_refetches() {
        let id = format!("web.instance-{U1}._app.1");
        let mut s = base();
        assert!(apply_event(&mut s, &status(&id, "/web", "TASK_KILLING")).changed);
        assert_eq!(
            s.apps[0].tasks[0].state.as_ref().map(TaskState::as_str),
            Some("TASK_KILLING")
        );
        let mut s = base();
        assert!(apply_event(&mut s, &status(&id, "/web", "TASK_UNREACHABLE")).changed);
        assert_eq!(
            s.apps[0].tasks[0].state.as_ref().map(TaskState::as_str),
            Some("TASK_UNREACHABLE")
        );
        let mut s = base();
        let e = apply_event(&mut s, &status(&id, "/web", "TASK_LOST"));
        assert!(e.changed);
        assert_eq!(e.refetch, Refetch::Apps(vec!["/web".into()]));
        assert_eq!(
            s.apps[0].tasks[0].state.as_ref().map(TaskState::as_str),
            Some("TASK_UNREACHABLE")
        );
    }

    #[test]
    fn terminal_states_remove_the_task() {
        for st in [
            "TASK_FINISHED",
            "TASK_FAILED",
            "TASK_KILLED",
            "TASK_ERROR",
            "TASK_DROPPED",
            "TASK_GONE",
            "TASK_GONE_BY_OPERATOR",
            "TASK_UNKNOWN",
        ] {
            let mut s = base();
            let e = apply_event(
                &mut s,
                &status(&format!("web.instance-{U1}._app.1"), "/web", st),
            );
            assert!(e.changed, "{st}");
            assert!(s.apps[0].tasks.is_empty(), "{st}");
        }
        // Terminal for an unknown task: nothing.
        let mut s = base();
        assert!(apply_event(&mut s, &status("nope", "/web", "TASK_KILLED")).ignored);
    }

    #[test]
    fn unknown_app_schedules_an_app_fetch() {
        let mut s = base();
        let before = s.clone();
        let e = apply_event(&mut s, &status("x", "/new", "TASK_RUNNING"));
        assert!(!e.changed);
        assert_eq!(e.refetch, Refetch::Apps(vec!["/new".into()]));
        assert!(Arc::ptr_eq(&s, &before), "no clone for a no-op");
        assert_eq!(
            apply_event(&mut s, &status("x", "/web", "TASK_WEIRD")).refetch,
            Refetch::Apps(vec!["/web".into()])
        );
    }

    #[test]
    fn version_change_schedules_an_app_fetch() {
        let mut s = base();
        let mut e = status(&format!("web.instance-{U2}._app.1"), "/web", "TASK_RUNNING");
        if let MarathonEvent::StatusUpdate(su) = &mut e {
            su.version = Some("v2".into());
        }
        let fx = apply_event(&mut s, &e);
        assert!(fx.changed);
        assert_eq!(fx.refetch, Refetch::Apps(vec!["/web".into()]));
    }

    #[test]
    fn health_events_match_by_instance_key() {
        let mut s = base();
        // Legacy-era instance id spelling of the same instance: matched by key.
        let e = MarathonEvent::InstanceHealthChanged {
            instance_id: format!("web.instance-{U1}"),
            app_id: Some("/web".into()),
            healthy: Some(false),
        };
        assert!(apply_event(&mut s, &e).changed);
        assert!(!s.apps[0].tasks[0].health_check_results.as_ref().unwrap()[0].alive);
        // null keeps what is known.
        let e = MarathonEvent::InstanceHealthChanged {
            instance_id: format!("web.instance-{U1}"),
            app_id: None,
            healthy: None,
        };
        assert!(apply_event(&mut s, &e).ignored);
        assert!(!s.apps[0].tasks[0].health_check_results.as_ref().unwrap()[0].alive);
        // A per-check result with one check: replaces.
        let e = MarathonEvent::HealthStatusChanged {
            instance_id: format!("web.marathon-{U1}"),
            app_id: Some("/web".into()),
            alive: true,
        };
        assert!(apply_event(&mut s, &e).changed);
        assert!(s.apps[0].tasks[0].health_check_results.as_ref().unwrap()[0].alive);
        // Another uuid: no match.
        let e = MarathonEvent::HealthStatusChanged {
            instance_id: format!("web.instance-{U2}"),
            app_id: Some("/web".into()),
            alive: false,
        };
        assert!(apply_event(&mut s, &e).ignored);
    }

    #[test]
    fn per_check_flip_with_several_checks_refetches() {
        let mut s = snap(&format!(
            r#"{{"apps":[{{"id":"/web","healthChecks":[{{}},{{}}],"tasks":[{{"id":"web.instance-{U1}._app.1",
              "healthCheckResults":[{{"alive":true}},{{"alive":true}}]}}]}}]}}"#
        ));
        let e = MarathonEvent::HealthStatusChanged {
            instance_id: format!("web.instance-{U1}"),
            app_id: Some("/web".into()),
            alive: false,
        };
        let fx = apply_event(&mut s, &e);
        assert!(!fx.changed);
        assert_eq!(fx.refetch, Refetch::Apps(vec!["/web".into()]));
    }

    #[test]
    fn instance_changed_conditions() {
        let inst = format!("web.instance-{U1}");
        let ev = |c: &str| {
            MarathonEvent::InstanceChanged(InstanceChanged {
                instance_id: inst.clone(),
                condition: c.into(),
                run_spec_id: Some("/web".into()),
            })
        };
        let mut s = base();
        assert!(apply_event(&mut s, &ev("Killing")).changed);
        assert_eq!(
            s.apps[0].tasks[0].state.as_ref().map(TaskState::as_str),
            Some("TASK_KILLING")
        );
        assert!(apply_event(&mut s, &ev("UnreachableInactive")).changed);
        assert_eq!(
            s.apps[0].tasks[0].state.as_ref().map(TaskState::as_str),
            Some("TASK_UNREACHABLE")
        );
        assert!(s.apps[0].tasks[0].ports.is_empty());
        assert!(apply_event(&mut s, &ev("Staging")).ignored);
        assert!(apply_event(&mut s, &ev("Killed")).changed);
        assert!(s.apps[0].tasks.is_empty());
    }

    #[test]
    fn app_terminated_and_definition_events() {
        let mut s = base();
        assert!(
            apply_event(
                &mut s,
                &MarathonEvent::AppTerminated {
                    app_id: "/web".into()
                }
            )
            .changed
        );
        assert_eq!(s.apps.len(), 1);
        assert!(
            apply_event(
                &mut s,
                &MarathonEvent::AppTerminated {
                    app_id: "/web".into()
                }
            )
            .ignored
        );
        assert_eq!(
            apply_event(
                &mut s,
                &MarathonEvent::ApiPost {
                    app_id: Some("/a".into())
                }
            )
            .refetch,
            Refetch::Apps(vec!["/a".into()])
        );
        assert_eq!(
            apply_event(
                &mut s,
                &MarathonEvent::GroupChangeSuccess { group_id: None }
            )
            .refetch,
            Refetch::Full
        );
        assert_eq!(
            apply_event(
                &mut s,
                &MarathonEvent::DeploymentFinished { app_ids: vec![] }
            )
            .refetch,
            Refetch::Full
        );
        assert!(
            apply_event(
                &mut s,
                &MarathonEvent::Other {
                    event_type: "x".into()
                }
            )
            .ignored
        );
    }

    #[test]
    fn leader_failover_keeps_last_known_health() {
        let prev = base();
        // After a failover Marathon reports the same task (new incarnation spelling even) with
        // no results, and a brand-new task with none.
        let mut next = (*snap(&format!(
            r#"{{"apps":[
              {{"id":"/web","healthChecks":[{{}}],"tasks":[
                {{"id":"web.instance-{U1}._app.1","healthCheckResults":[]}},
                {{"id":"web.instance-{U2}._app.1","healthCheckResults":[]}}]}},
              {{"id":"/other","tasks":[]}}]}}"#
        )))
        .clone();
        assert_eq!(carry_forward_health(&prev, &mut next), 1);
        assert!(next.apps[0].tasks[0].health_check_results.as_ref().unwrap()[0].alive);
        assert_eq!(next.apps[0].tasks[1].health_check_results, Some(vec![]));
        // Kept on the next fetch too, until Marathon reports again.
        let prev2 = next.clone();
        let mut again = (*snap(&format!(
            r#"{{"apps":[{{"id":"/web","healthChecks":[{{}}],"tasks":[{{"id":"web.instance-{U1}._app.1"}}]}}]}}"#
        )))
        .clone();
        assert_eq!(carry_forward_health(&prev2, &mut again), 1);
        // Once Marathon reports a result, that result wins.
        let mut reported = (*snap(&format!(
            r#"{{"apps":[{{"id":"/web","healthChecks":[{{}}],"tasks":[{{"id":"web.instance-{U1}._app.1","healthCheckResults":[{{"alive":false}}]}}]}}]}}"#
        )))
        .clone();
        assert_eq!(carry_forward_health(&prev2, &mut reported), 0);
        assert!(
            !reported.apps[0].tasks[0]
                .health_check_results
                .as_ref()
                .unwrap()[0]
                .alive
        );
    }

    #[test]
    fn no_carry_when_the_app_has_no_health_checks() {
        let prev = base();
        let mut next = (*snap(&format!(
            r#"{{"apps":[{{"id":"/web","tasks":[{{"id":"web.instance-{U1}._app.1","healthCheckResults":[]}}]}}]}}"#
        )))
        .clone();
        assert_eq!(carry_forward_health(&prev, &mut next), 0);
    }

    #[test]
    fn replace_app_carries_health_adds_and_removes() {
        let mut s = base();
        let fetched = parse_apps_document(
            format!(r#"{{"apps":[{{"id":"/web","version":"v1","healthChecks":[{{"protocol":"MESOS_HTTP"}}],"tasks":[{{"id":"web.instance-{U1}._app.1","host":"h1","ports":[31000],"state":"TASK_RUNNING","version":"v1","healthCheckResults":[]}}]}}]}}"#).as_bytes(),
        )
        .unwrap()
        .apps[0]
            .as_ref()
            .clone();
        // Same as before once the health is carried: no change.
        assert!(!replace_app(&mut s, "/web", Some(fetched)));
        assert!(replace_app(&mut s, "/web", None));
        assert_eq!(s.apps.len(), 1);
        assert!(!replace_app(&mut s, "/web", None));
        let app = s.apps[0].as_ref().clone();
        let mut app2 = app.clone();
        app2.id = "/third".into();
        assert!(replace_app(&mut s, "third", Some(app2)));
        assert_eq!(s.apps.len(), 2);
    }

    #[test]
    fn a_full_snapshot_shares_the_apps_that_did_not_change() {
        let prev = base();
        // A fresh parse of the same document, with /other changed.
        let mut next = (*base()).clone();
        Arc::make_mut(&mut next.apps[1]).version = Some("v2".into());
        assert!(!same_apps(&prev, &next));
        assert_eq!(share_unchanged_apps(&prev, &mut next), 1);
        assert!(
            Arc::ptr_eq(&prev.apps[0], &next.apps[0]),
            "unchanged /web is shared"
        );
        assert!(
            !Arc::ptr_eq(&prev.apps[1], &next.apps[1]),
            "changed /other is not"
        );
        assert_eq!(next.apps[1].version.as_deref(), Some("v2"));
        assert!(!same_apps(&prev, &next));

        let mut again = (*base()).clone();
        assert_eq!(share_unchanged_apps(&prev, &mut again), 2);
        assert!(same_apps(&prev, &again));
        // Same apps, other order: not "the same" (the table build decides whether it matters).
        again.apps.reverse();
        assert!(!same_apps(&prev, &again));
    }
}
