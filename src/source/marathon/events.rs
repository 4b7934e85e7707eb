//! Marathon event-bus payloads (`/v2/events` `data:` lines), reduced to what vipd acts on.
//!
//! Owns: the list of subscribed event types and the typed parse of each payload
//! (../shared/reference/marathon/FACTS.md §5.3).
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
    /// `deployment_success` / `deployment_failed`; the app ids its plan names (may be empty).
    DeploymentFinished {
        app_ids: Vec<String>,
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
        "deployment_success" | "deployment_failed" => MarathonEvent::DeploymentFinished {
            app_ids: plan_app_ids(data)?,
        },
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

/// App ids named by a deployment plan's steps: light plans (`steps[].actions[].app`) and the
/// flattened documentation form (`steps[].app`). The heavy `original`/`target` trees are skipped.
fn plan_app_ids(data: &str) -> Result<Vec<String>, serde_json::Error> {
    #[derive(Deserialize, Default)]
    struct Action {
        #[serde(default)]
        app: Option<String>,
    }
    #[derive(Deserialize, Default)]
    struct Step {
        #[serde(default)]
        app: Option<String>,
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
    let mut ids: Vec<String> = Vec::new();
    for step in e.plan.steps {
        for app in step
            .app
            .into_iter()
            .chain(step.actions.into_iter().filter_map(|a| a.app))
        {
            if !ids.contains(&app) {
                ids.push(app);
            }
        }
    }
    Ok(ids)
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
                app_ids: vec!["/a".into(), "/b".into()]
            }
        );
        let flat = r#"{"eventType":"deployment_failed","plan":{"steps":[{"action":"ScaleApplication","app":"/x"}]}}"#;
        assert_eq!(
            parse_event(None, flat).unwrap(),
            MarathonEvent::DeploymentFinished {
                app_ids: vec!["/x".into()]
            }
        );
        let none = r#"{"eventType":"deployment_success","id":"d"}"#;
        assert_eq!(
            parse_event(None, none).unwrap(),
            MarathonEvent::DeploymentFinished { app_ids: vec![] }
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
