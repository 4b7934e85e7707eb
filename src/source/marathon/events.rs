//! Marathon event-bus payloads (`/v2/events` `data:` lines), reduced to what vipd acts on.
//!
//! Owns: the list of subscribed event types and the typed parse of each payload
//! (../shared/reference/marathon/FACTS.md §5.3; pods: ../shared/reference/marathon/pods/FACTS.md
//! §5: `pod_*_event` carry only `{clientIp, uri}`, a create's `uri` has no pod id).
//! Unknown fields are ignored; arrays are `null`-tolerant; deployment plans (up to megabytes,
//! ../shared/reference/marathon/FACTS.md §7) are read only for the app ids they touch.
//!
//! Must not: apply events (that is `apply.rs`) or do I/O.

use crate::model::{null_default, TaskIpAddress};
use serde::Deserialize;

/// The `event_type=` filters sent on `GET /v2/events`.
pub const SUBSCRIBED_EVENT_TYPES: &[&str] = &[
    "status_update_event",
    "instance_changed_event",
    "instance_health_changed_event",
    "health_status_changed_event",
    "api_post_event",
    "app_terminated_event",
    "deployment_success",
    "deployment_failed",
    "group_change_success",
    "pod_created_event",
    "pod_updated_event",
    "pod_deleted_event",
];

/// One event, as far as vipd cares.
#[derive(Debug, Clone, PartialEq)]
pub enum MarathonEvent {
    StatusUpdate(StatusUpdate),
    InstanceChanged(InstanceChanged),
    /// Instance-level health flip; `healthy: None` means Marathon has no verdict.
    InstanceHealthChanged {
        instance_id: String,
        app_id: Option<String>,
        healthy: Option<bool>,
    },
    /// One Marathon-level health check's result flipped.
    HealthStatusChanged {
        instance_id: String,
        app_id: Option<String>,
        alive: bool,
    },
    AppTerminated {
        app_id: String,
    },
    /// An app was created, changed or deleted through the API; `app_id` from `appDefinition`.
    ApiPost {
        app_id: Option<String>,
    },
    /// `deployment_success` / `deployment_failed`; the app ids and the pod ids its plan names
    /// (either may be empty).
    DeploymentFinished {
        app_ids: Vec<String>,
        pod_ids: Vec<String>,
    },
    /// `pod_updated_event` / `pod_deleted_event` (`uri` = `/v2/pods/<id>`): that pod changed.
    /// `pod_created_event`, or a `uri` without an id: `pod_id: None`, some pod changed.
    PodDefinition {
        pod_id: Option<String>,
    },
    GroupChangeSuccess {
        group_id: Option<String>,
    },
    /// Any other event type: counted and ignored.
    Other {
        event_type: String,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusUpdate {
    pub task_id: String,
    pub app_id: String,
    /// Raw Mesos `TASK_*`.
    pub task_status: String,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub ports: Vec<u16>,
    #[serde(default, deserialize_with = "null_default")]
    pub ip_addresses: Vec<TaskIpAddress>,
    #[serde(default)]
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceChanged {
    pub instance_id: String,
    /// Marathon's Condition: `Running`, `Killing`, `Unreachable`, `Killed`, …
    pub condition: String,
    #[serde(default)]
    pub run_spec_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event payload: {0}")]
    Json(#[from] serde_json::Error),
    #[error("event payload has no eventType")]
    NoType,
}

/// Parses one `data:` line. `event_type` is the SSE `event:` field when present (Marathon always
/// sends it); otherwise the payload's `eventType` is read.
pub fn parse_event(event_type: Option<&str>, data: &str) -> Result<MarathonEvent, EventError> {
    let owned;
    let event_type = match event_type {
        Some(t) if !t.is_empty() && t != "message" => t,
        _ => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct TypeOnly {
                event_type: Option<String>,
            }
            owned = serde_json::from_str::<TypeOnly>(data)?
                .event_type
                .ok_or(EventError::NoType)?;
            owned.as_str()
        }
    };
    Ok(match event_type {
        "status_update_event" => MarathonEvent::StatusUpdate(serde_json::from_str(data)?),
        "instance_changed_event" => MarathonEvent::InstanceChanged(serde_json::from_str(data)?),
        "instance_health_changed_event" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct E {
                instance_id: String,
                #[serde(default)]
                run_spec_id: Option<String>,
                #[serde(default)]
                healthy: Option<bool>,
            }
            let e: E = serde_json::from_str(data)?;
            MarathonEvent::InstanceHealthChanged {
                instance_id: e.instance_id,
                app_id: e.run_spec_id,
                healthy: e.healthy,
            }
        }
        "health_status_changed_event" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct E {
                // Pre-1.4 servers sent `taskId` (../shared/reference/marathon/FACTS.md §5.3
                // version notes).
                #[serde(alias = "taskId")]
                instance_id: String,
                #[serde(default)]
                app_id: Option<String>,
                alive: bool,
            }
            let e: E = serde_json::from_str(data)?;
            MarathonEvent::HealthStatusChanged {
                instance_id: e.instance_id,
                app_id: e.app_id,
                alive: e.alive,
            }
        }
        "app_terminated_event" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct E {
                app_id: String,
            }
            MarathonEvent::AppTerminated {
                app_id: serde_json::from_str::<E>(data)?.app_id,
            }
        }
        "api_post_event" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Def {
                #[serde(default)]
                id: Option<String>,
            }
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct E {
                #[serde(default)]
                app_definition: Option<Def>,
            }
            let e: E = serde_json::from_str(data)?;
            MarathonEvent::ApiPost {
                app_id: e.app_definition.and_then(|d| d.id),
            }
        }
        "deployment_success" | "deployment_failed" => {
            let (app_ids, pod_ids) = plan_ids(data)?;
            MarathonEvent::DeploymentFinished { app_ids, pod_ids }
        }
        "pod_created_event" => {
            serde_json::from_str::<serde::de::IgnoredAny>(data)?;
            MarathonEvent::PodDefinition { pod_id: None }
        }
        "pod_updated_event" | "pod_deleted_event" => {
            #[derive(Deserialize)]
            struct E {
                #[serde(default)]
                uri: Option<String>,
            }
            MarathonEvent::PodDefinition {
                pod_id: serde_json::from_str::<E>(data)?
                    .uri
                    .as_deref()
                    .and_then(pod_id_of_uri),
            }
        }
        "group_change_success" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct E {
                #[serde(default)]
                group_id: Option<String>,
            }
            MarathonEvent::GroupChangeSuccess {
                group_id: serde_json::from_str::<E>(data)?.group_id,
            }
        }
        other => MarathonEvent::Other {
            event_type: other.to_string(),
        },
    })
}

/// The pod id of a pod event's `uri` (`/v2/pods/web/frontend` → `/web/frontend`); `None` for
/// `/v2/pods` itself.
fn pod_id_of_uri(uri: &str) -> Option<String> {
    let path = uri.split(['?', '#']).next().unwrap_or_default();
    let rest = path.strip_prefix("/v2/pods")?.trim_matches('/');
    let rest = rest.split("::").next().unwrap_or_default();
    (!rest.is_empty()).then(|| format!("/{rest}"))
}

/// App ids and pod ids named by a deployment plan's steps: light plans
/// (`steps[].actions[].app`, `.pod`) and the flattened documentation form (`steps[].app`). The
/// heavy `original`/`target` trees are skipped.
fn plan_ids(data: &str) -> Result<(Vec<String>, Vec<String>), serde_json::Error> {
    #[derive(Deserialize, Default)]
    struct Action {
        #[serde(default)]
        app: Option<String>,
        #[serde(default)]
        pod: Option<String>,
    }
    #[derive(Deserialize, Default)]
    struct Step {
        #[serde(default)]
        app: Option<String>,
        #[serde(default)]
        pod: Option<String>,
        #[serde(default, deserialize_with = "null_default")]
        actions: Vec<Action>,
    }
    #[derive(Deserialize, Default)]
    struct Plan {
        #[serde(default, deserialize_with = "null_default")]
        steps: Vec<Step>,
    }
    #[derive(Deserialize)]
    struct E {
        #[serde(default, deserialize_with = "null_default")]
        plan: Plan,
    }
    let e: E = serde_json::from_str(data)?;
    let mut apps: Vec<String> = Vec::new();
    let mut pods: Vec<String> = Vec::new();
    let mut add = |ids: &mut Vec<String>, id: String| {
        if !ids.contains(&id) {
            ids.push(id);
        }
    };
    for step in e.plan.steps {
        add_all(&mut apps, step.app, &mut add);
        add_all(&mut pods, step.pod, &mut add);
        for a in step.actions {
            add_all(&mut apps, a.app, &mut add);
            add_all(&mut pods, a.pod, &mut add);
        }
    }
    Ok((apps, pods))
}

fn add_all(
    ids: &mut Vec<String>,
    id: Option<String>,
    add: &mut impl FnMut(&mut Vec<String>, String),
) {
    if let Some(id) = id {
        add(ids, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_update_with_and_without_event_line() {
        let data = r#"{"slaveId":"s","taskId":"t1","taskStatus":"TASK_RUNNING","appId":"/a","host":"h","ipAddresses":null,"ports":[31000],"version":"v","eventType":"status_update_event","timestamp":"x"}"#;
        let a = parse_event(Some("status_update_event"), data).unwrap();
        let b = parse_event(None, data).unwrap();
        assert_eq!(a, b);
        let MarathonEvent::StatusUpdate(s) = a else {
            panic!("{a:?}")
        };
        assert_eq!(s.ports, vec![31000]);
        assert!(s.ip_addresses.is_empty());
    }

    #[test]
    fn health_events_old_and_new_spellings() {
        let e = parse_event(
            None,
            r#"{"eventType":"health_status_changed_event","appId":"/a","taskId":"a.1","alive":false}"#,
        )
        .unwrap();
        assert!(matches!(
            e,
            MarathonEvent::HealthStatusChanged { alive: false, .. }
        ));
        let e = parse_event(
            Some("instance_health_changed_event"),
            r#"{"instanceId":"a.instance-1","healthy":null,"runSpecId":"/a"}"#,
        )
        .unwrap();
        assert_eq!(
            e,
            MarathonEvent::InstanceHealthChanged {
                instance_id: "a.instance-1".into(),
                app_id: Some("/a".into()),
                healthy: None
            }
        );
    }

    #[test]
    fn deployment_plans_light_flat_and_missing() {
        let light = r#"{"eventType":"deployment_success","id":"d","plan":{"id":"d","steps":[{"actions":[{"action":"StartApplication","app":"/a"},{"action":"ScaleApplication","app":"/b"}]},{"actions":[{"app":"/a"}]}]}}"#;
        assert_eq!(
            parse_event(None, light).unwrap(),
            MarathonEvent::DeploymentFinished {
                app_ids: vec!["/a".into(), "/b".into()],
                pod_ids: vec![]
            }
        );
        let flat = r#"{"eventType":"deployment_failed","plan":{"steps":[{"action":"ScaleApplication","app":"/x"}]}}"#;
        assert_eq!(
            parse_event(None, flat).unwrap(),
            MarathonEvent::DeploymentFinished {
                app_ids: vec!["/x".into()],
                pod_ids: vec![]
            }
        );
        let none = r#"{"eventType":"deployment_success","id":"d"}"#;
        assert_eq!(
            parse_event(None, none).unwrap(),
            MarathonEvent::DeploymentFinished {
                app_ids: vec![],
                pod_ids: vec![]
            }
        );
        let pods = r#"{"eventType":"deployment_success","plan":{"steps":[{"actions":[{"action":"StartPod","pod":"/p"},{"action":"ScaleApplication","app":"/a"}]},{"actions":[{"action":"ScalePod","pod":"/p"}]}]}}"#;
        assert_eq!(
            parse_event(None, pods).unwrap(),
            MarathonEvent::DeploymentFinished {
                app_ids: vec!["/a".into()],
                pod_ids: vec!["/p".into()]
            }
        );
    }

    #[test]
    fn pod_events_name_the_pod_by_uri_and_a_create_names_none() {
        let ev = |t: &str, uri: &str| {
            parse_event(
                None,
                &format!(
                    r#"{{"clientIp":"10.0.5.12","uri":"{uri}","eventType":"{t}","timestamp":"x"}}"#
                ),
            )
            .unwrap()
        };
        let named = |id: &str| MarathonEvent::PodDefinition {
            pod_id: Some(id.into()),
        };
        assert_eq!(
            ev("pod_deleted_event", "/v2/pods/web/frontend"),
            named("/web/frontend")
        );
        assert_eq!(
            ev("pod_updated_event", "/v2/pods/p?force=true"),
            named("/p")
        );
        assert_eq!(
            ev("pod_updated_event", "/v2/pods"),
            MarathonEvent::PodDefinition { pod_id: None }
        );
        assert_eq!(
            ev("pod_created_event", "/v2/pods"),
            MarathonEvent::PodDefinition { pod_id: None }
        );
    }

    #[test]
    fn bad_payloads_are_errors_and_unknown_types_are_other() {
        assert!(parse_event(Some("status_update_event"), "{").is_err());
        assert!(parse_event(Some("status_update_event"), r#"{"taskId":1}"#).is_err());
        assert!(matches!(parse_event(None, "{}"), Err(EventError::NoType)));
        assert_eq!(
            parse_event(Some("event_stream_attached"), "{}").unwrap(),
            MarathonEvent::Other {
                event_type: "event_stream_attached".into()
            }
        );
    }

    /// The real payloads in the shared reference parse (ignored when `build.rs` did not find it).
    #[test]
    #[cfg_attr(
        not(vipd_shared_reference),
        ignore = "needs ../shared/reference (VIPD_SHARED_DIR)"
    )]
    fn reference_payloads_parse() {
        let dir = std::path::Path::new(env!("VIPD_SHARED_REFERENCE")).join("marathon/events");
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut n = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let data = std::fs::read_to_string(&path).unwrap();
            let e = parse_event(None, &data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("status_update_event") {
                assert!(matches!(e, MarathonEvent::StatusUpdate(_)), "{name}");
            }
            if name.starts_with("api_post_event") {
                assert_eq!(
                    e,
                    MarathonEvent::ApiPost {
                        app_id: Some("/my-app".into())
                    }
                );
            }
            n += 1;
        }
        assert!(n > 10);
    }
}
