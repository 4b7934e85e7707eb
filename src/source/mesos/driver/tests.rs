use super::*;
use crate::model::mesos::parse_event;

fn cfg(urls: &[&str]) -> DriverConfig {
    DriverConfig {
        endpoints: urls.iter().map(|u| Url::parse(u).unwrap()).collect(),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(2),
        recovery_timeout: Duration::from_secs(600),
        tasks_grace: Duration::from_secs(10),
        max_redirects: 3,
        seed: 7,
    }
}

fn ev(json: &str) -> Result<MesosEvent, MesosModelError> {
    parse_event(json.as_bytes())
}

fn task_json(fw: &str, id: &str, agent: &str, state: &str, vip: &str) -> String {
    format!(
        r#"{{"name":"{id}","task_id":{{"value":"{id}"}},"framework_id":{{"value":"{fw}"}},
        "agent_id":{{"value":"{agent}"}},"state":"{state}",
        "statuses":[{{"state":"{state}","timestamp":1.0,"container_status":{{"network_infos":[{{"ip_addresses":[{{"ip_address":"9.0.0.1"}}]}}]}}}}],
        "discovery":{{"visibility":"FRAMEWORK","ports":{{"ports":[{{"number":80,"protocol":"tcp",
          "labels":{{"labels":[{{"key":"VIP_0","value":"{vip}"}}]}}}}]}}}}}}"#
    )
}

fn subscribed(tasks: &[String], recovered: &[&str]) -> String {
    let recovered: Vec<String> = recovered
        .iter()
        .map(|a| format!(r#"{{"id":{{"value":"{a}"}},"hostname":"{a}.host"}}"#))
        .collect();
    let agents = if recovered.is_empty() {
        r#"{"agent_info":{"id":{"value":"a1"},"hostname":"10.0.0.1"}},{"agent_info":{"id":{"value":"a2"},"hostname":"10.0.0.2"}}"#
    } else {
        ""
    };
    format!(
        r#"{{"type":"SUBSCRIBED","subscribed":{{"heartbeat_interval_seconds":1.0,"get_state":{{
        "get_tasks":{{"tasks":[{}]}},
        "get_frameworks":{{"frameworks":[{{"framework_info":{{"id":{{"value":"fw-m"}},"name":"marathon"}}}},
                                         {{"framework_info":{{"id":{{"value":"fw-h"}},"name":"hello-world"}}}}]}},
        "get_agents":{{"agents":[{agents}],"recovered_agents":[{}]}}}}}}}}"#,
        tasks.join(","),
        recovered.join(",")
    )
}

struct Harness {
    d: Driver,
    now: Instant,
}

impl Harness {
    fn new(urls: &[&str]) -> Self {
        Harness {
            d: Driver::new(cfg(urls)),
            now: Instant::now(),
        }
    }
    fn run(&mut self, input: Input) -> Vec<Action> {
        self.d.handle(input, self.now)
    }
    fn records(&mut self, jsons: &[&str]) -> Vec<Action> {
        let records = jsons.iter().map(|j| ev(j)).collect();
        let received = self.now;
        self.run(Input::Records { records, received })
    }
    fn connect(&mut self) {
        let a = self.run(Input::Start);
        assert!(matches!(a[..], [Action::Subscribe { .. }]), "{a:?}");
        self.run(Input::Connected);
    }
    fn advance(&mut self, d: Duration) -> Vec<Action> {
        self.now += d;
        self.run(Input::Tick)
    }
}

/// The published tasks as (task id, framework name, agent host, state).
fn published(actions: &[Action]) -> Option<Vec<(String, String, String, String)>> {
    actions.iter().rev().find_map(|a| match a {
        Action::Publish { tasks, .. } => Some(
            tasks
                .iter()
                .map(|t| {
                    (
                        t.task.task_id.clone(),
                        t.framework.clone(),
                        t.agent_host.clone(),
                        t.task
                            .state
                            .as_ref()
                            .map(|s| s.as_str().to_string())
                            .unwrap_or_default(),
                    )
                })
                .collect(),
        ),
        _ => None,
    })
}

fn row(id: &str, fw: &str, host: &str, state: &str) -> (String, String, String, String) {
    (id.into(), fw.into(), host.into(), state.into())
}

#[test]
fn subscribed_publishes_the_tasks_of_every_framework_with_names_and_hosts() {
    let mut h = Harness::new(&["http://m1:5050/api/v1"]);
    h.connect();
    let a = h.records(&[&subscribed(
        &[
            task_json("fw-m", "web.1", "a1", "TASK_RUNNING", "/web:80"),
            task_json("fw-h", "hello-0", "a2", "TASK_RUNNING", "overlay-vip:80"),
            task_json("fw-h", "done-0", "a2", "TASK_FINISHED", "x:80"),
        ],
        &[],
    )]);
    assert_eq!(
        published(&a).unwrap(),
        [
            row("hello-0", "hello-world", "10.0.0.2", "TASK_RUNNING"),
            row("web.1", "marathon", "10.0.0.1", "TASK_RUNNING"),
        ]
    );
    assert_eq!(h.d.heartbeat(), Duration::from_secs(1));
    // A heartbeat changes nothing: no publish.
    assert!(published(&h.records(&[r#"{"type":"HEARTBEAT"}"#])).is_none());
}

#[test]
fn task_updated_keeps_the_discovery_of_task_added_and_its_top_level_state_wins() {
    let mut h = Harness::new(&["http://m1:5050/api/v1"]);
    h.connect();
    h.records(&[&subscribed(&[], &[])]);
    let added = format!(
        r#"{{"type":"TASK_ADDED","task_added":{{"task":{}}}}}"#,
        task_json("fw-m", "web.1", "a1", "TASK_STAGING", "/web:80")
    );
    let a = h.records(&[&added]);
    assert_eq!(
        published(&a).unwrap(),
        [row("web.1", "marathon", "10.0.0.1", "TASK_STAGING")]
    );
    let updated = |state: &str, status_state: &str| {
        format!(
            r#"{{"type":"TASK_UPDATED","task_updated":{{"framework_id":{{"value":"fw-m"}},"state":"{state}",
            "status":{{"task_id":{{"value":"web.1"}},"state":"{status_state}","timestamp":2.0,"healthy":true}}}}}}"#
        )
    };
    let a = h.records(&[&updated("TASK_RUNNING", "TASK_RUNNING")]);
    assert_eq!(
        published(&a).unwrap(),
        [row("web.1", "marathon", "10.0.0.1", "TASK_RUNNING")]
    );
    let Some(Action::Publish { tasks, .. }) = a.last() else {
        panic!("{a:?}")
    };
    let t = &tasks[0].task;
    assert_eq!(
        t.discovery.as_ref().unwrap().ports[0].labels["VIP_0"],
        "/web:80"
    );
    assert_eq!(t.statuses.len(), 2);
    // The acknowledged status says RUNNING, the agent's latest state says KILLING.
    let a = h.records(&[&updated("TASK_KILLING", "TASK_RUNNING")]);
    assert_eq!(
        published(&a).unwrap(),
        [row("web.1", "marathon", "10.0.0.1", "TASK_KILLING")]
    );
    // A terminal state removes the task.
    let a = h.records(&[&updated("TASK_KILLED", "TASK_KILLED")]);
    assert_eq!(published(&a).unwrap(), []);
    // An update for a task not known is ignored.
    assert!(published(&h.records(&[&updated("TASK_RUNNING", "TASK_RUNNING")])).is_none());
}

#[test]
fn a_task_waits_for_its_agent_and_framework_and_agent_removed_withdraws_it() {
    let mut h = Harness::new(&["http://m1:5050/api/v1"]);
    h.connect();
    h.records(&[&subscribed(&[], &[])]);
    let added = format!(
        r#"{{"type":"TASK_ADDED","task_added":{{"task":{}}}}}"#,
        task_json("fw-new", "kafka-0", "a9", "TASK_RUNNING", "broker:9092")
    );
    assert!(published(&h.records(&[&added])).is_none(), "waits for both");
    let a = h.records(&[r#"{"type":"AGENT_ADDED","agent_added":{"agent":{"agent_info":{"id":{"value":"a9"},"hostname":"agent-9"}}}}"#]);
    assert!(published(&a).is_none(), "still waits for the framework");
    let a = h.records(&[r#"{"type":"FRAMEWORK_ADDED","framework_added":{"framework":{"framework_info":{"id":{"value":"fw-new"},"name":"kafka"}}}}"#]);
    assert_eq!(
        published(&a).unwrap(),
        [row("kafka-0", "kafka", "agent-9", "TASK_RUNNING")]
    );
    // Renamed.
    let a = h.records(&[r#"{"type":"FRAMEWORK_UPDATED","framework_updated":{"framework":{"framework_info":{"id":{"value":"fw-new"},"name":"confluent-kafka"}}}}"#]);
    assert_eq!(
        published(&a).unwrap(),
        [row("kafka-0", "confluent-kafka", "agent-9", "TASK_RUNNING")]
    );
    let a = h.records(&[r#"{"type":"AGENT_REMOVED","agent_removed":{"agent_id":{"value":"a9"}}}"#]);
    assert_eq!(published(&a).unwrap(), []);
    // Back: its task serves again.
    let a = h.records(&[r#"{"type":"AGENT_ADDED","agent_added":{"agent":{"agent_info":{"id":{"value":"a9"},"hostname":"agent-9b"}}}}"#]);
    assert_eq!(
        published(&a).unwrap(),
        [row(
            "kafka-0",
            "confluent-kafka",
            "agent-9b",
            "TASK_RUNNING"
        )]
    );
    let a = h.records(&[r#"{"type":"FRAMEWORK_REMOVED","framework_removed":{"framework_info":{"id":{"value":"fw-new"},"name":"confluent-kafka"}}}"#]);
    assert_eq!(published(&a).unwrap(), []);
}

#[test]
fn the_leader_redirect_is_followed_protocol_relative_and_bounded() {
    let mut h = Harness::new(&["http://m1:5050/api/v1", "http://m2:5050/api/v1"]);
    h.run(Input::Start);
    let a = h.run(Input::Redirect {
        location: Some("//leader:5050/master/api/v1".into()),
    });
    match &a[..] {
        [Action::Subscribe { url, endpoint }] => {
            assert_eq!(url.as_str(), "http://leader:5050/master/api/v1");
            assert_eq!(*endpoint, 0, "the credentials of the URL asked go with it");
        }
        other => panic!("{other:?}"),
    }
    // Bounded: after max_redirects the attempt fails and the next URL is tried later.
    for _ in 0..3 {
        h.run(Input::Redirect {
            location: Some("//leader:5050/master/api/v1".into()),
        });
    }
    assert_eq!(h.d.endpoint(), 1);
    let a = h.advance(Duration::from_secs(5));
    match &a[..] {
        [Action::Subscribe { url, endpoint }] => {
            assert_eq!(url.as_str(), "http://m2:5050/api/v1");
            assert_eq!(*endpoint, 1);
        }
        other => panic!("{other:?}"),
    }
    // https -> http is refused.
    let mut h = Harness::new(&["https://m1:5050/api/v1"]);
    h.run(Input::Start);
    let a = h.run(Input::Redirect {
        location: Some("http://leader:5050/api/v1".into()),
    });
    assert!(a.is_empty(), "{a:?}");
    // Protocol-relative keeps https.
    let mut h = Harness::new(&["https://m1:5050/api/v1"]);
    h.run(Input::Start);
    let a = h.run(Input::Redirect {
        location: Some("//leader:5050/master/api/v1".into()),
    });
    assert!(matches!(&a[..], [Action::Subscribe { url, .. }] if url.scheme() == "https"));
}

#[test]
fn failures_back_off_exponentially_with_jitter_and_rotate_through_the_urls() {
    let mut h = Harness::new(&["http://m1:5050/api/v1", "http://m2:5050/api/v1"]);
    h.run(Input::Start);
    let mut seen = Vec::new();
    for _ in 0..6 {
        h.run(Input::Failed {
            error: "HTTP 503".into(),
        });
        let at = h.d.next_deadline().unwrap();
        let delay = at - h.now;
        h.now = at;
        let a = h.run(Input::Tick);
        let Some(Action::Subscribe { url, .. }) = a.first() else {
            panic!("{a:?}")
        };
        seen.push((url.host_str().unwrap().to_string(), delay));
    }
    let hosts: Vec<&str> = seen.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(hosts, ["m2", "m1", "m2", "m1", "m2", "m1"]);
    let ceilings = [100u64, 200, 400, 800, 1600, 2000];
    for ((_, d), c) in seen.iter().zip(ceilings) {
        let c = Duration::from_millis(c);
        assert!(*d >= c / 2 && *d <= c, "{d:?} outside [{:?}, {c:?}]", c / 2);
    }
    // A SUBSCRIBED resets the backoff.
    h.run(Input::Connected);
    h.records(&[&subscribed(&[], &[])]);
    h.run(Input::Failed {
        error: "stream ended".into(),
    });
    assert!(h.d.next_deadline().unwrap() - h.now <= Duration::from_millis(100));
}

#[test]
fn a_silent_stream_is_dropped_after_three_heartbeats_and_the_tasks_stay() {
    let mut h = Harness::new(&["http://m1:5050/api/v1"]);
    h.connect();
    let a = h.records(&[&subscribed(
        &[task_json("fw-m", "web.1", "a1", "TASK_RUNNING", "/web:80")],
        &[],
    )]);
    assert_eq!(published(&a).unwrap().len(), 1);
    // Heartbeat 1 s: records keep it alive.
    for _ in 0..5 {
        h.now += Duration::from_millis(900);
        assert!(h.run(Input::Tick).is_empty());
        h.records(&[r#"{"type":"HEARTBEAT"}"#]);
    }
    assert!(h.advance(Duration::from_millis(2900)).is_empty());
    let a = h.advance(Duration::from_millis(200));
    assert!(matches!(a[..], [Action::Disconnect]), "{a:?}");
    // Reconnects after the backoff; nothing was published on the failure.
    let a = h.advance(Duration::from_millis(100));
    assert!(matches!(a[..], [Action::Subscribe { .. }]), "{a:?}");
}

#[test]
fn a_record_of_the_wrong_shape_resubscribes() {
    let mut h = Harness::new(&["http://m1:5050/api/v1"]);
    h.connect();
    h.records(&[&subscribed(
        &[task_json("fw-m", "web.1", "a1", "TASK_RUNNING", "/web:80")],
        &[],
    )]);
    let a = h.records(&[r#"{"type":"TASK_UPDATED","task_updated":{"framework_id":"fw-m"}}"#]);
    assert!(matches!(a[..], [Action::Disconnect]), "{a:?}");
    let a = h.advance(Duration::from_millis(100));
    assert!(matches!(a[..], [Action::Subscribe { .. }]), "{a:?}");
}

#[test]
fn recovered_agents_keep_their_last_tasks_until_they_reregister_or_the_timeout() {
    let mut h = Harness::new(&["http://m1:5050/api/v1"]);
    h.connect();
    h.records(&[&subscribed(
        &[
            task_json("fw-m", "web.1", "a1", "TASK_RUNNING", "/web:80"),
            task_json("fw-m", "web.2", "a2", "TASK_RUNNING", "/web:80"),
        ],
        &[],
    )]);
    // Master failover: the new leader knows a1 and a2 only from its registry.
    h.run(Input::Failed {
        error: "stream ended".into(),
    });
    h.advance(Duration::from_secs(1));
    h.run(Input::Connected);
    let a = h.records(&[&subscribed(&[], &["a1", "a2"])]);
    assert_eq!(published(&a).unwrap().len(), 2, "kept through the gate");
    assert_eq!(h.d.pending_agents(), 2);
    // a1 re-registers and its task comes back: served from the new state.
    let a = h.records(&[
        r#"{"type":"AGENT_ADDED","agent_added":{"agent":{"agent_info":{"id":{"value":"a1"},"hostname":"10.0.0.1"}}}}"#,
        &format!(
            r#"{{"type":"TASK_ADDED","task_added":{{"task":{}}}}}"#,
            task_json("fw-m", "web.1", "a1", "TASK_RUNNING", "/web:80")
        ),
    ]);
    assert_eq!(published(&a).unwrap().len(), 2);
    // The grace for a1's tasks passes: nothing carried for a1 any more, a2 still waits.
    h.advance(Duration::from_secs(11));
    assert_eq!(h.d.pending_agents(), 1);
    // The recovery timeout drops a2's kept task.
    let a = h.advance(Duration::from_secs(600));
    assert_eq!(
        published(&a).unwrap(),
        [row("web.1", "marathon", "10.0.0.1", "TASK_RUNNING")]
    );
    assert_eq!(h.d.pending_agents(), 0);
}

#[test]
fn a_recovered_agent_whose_task_died_loses_it_after_the_grace() {
    let mut h = Harness::new(&["http://m1:5050/api/v1"]);
    h.d.restore(vec![Arc::new(MesosTask {
        task: crate::model::mesos::parse_task(&task_json(
            "fw-m",
            "web.1",
            "a1",
            "TASK_RUNNING",
            "/web:80",
        ))
        .unwrap(),
        framework: "marathon".into(),
        agent_host: "10.0.0.1".into(),
    })]);
    h.connect();
    let a = h.records(&[&subscribed(&[], &["a1"])]);
    assert_eq!(published(&a).unwrap().len(), 1, "the restored task is kept");
    let a = h.records(&[
        r#"{"type":"AGENT_ADDED","agent_added":{"agent":{"agent_info":{"id":{"value":"a1"},"hostname":"10.0.0.1"}}}}"#,
        &format!(
            r#"{{"type":"TASK_ADDED","task_added":{{"task":{}}}}}"#,
            task_json("fw-m", "web.1", "a1", "TASK_FAILED", "/web:80")
        ),
    ]);
    // The dead incarnation removed it from the new state; the carried copy is gone too.
    assert_eq!(published(&a).map(|p| p.len()), Some(0));
}

#[test]
fn statuses_are_trimmed_but_the_last_one_with_ips_is_kept() {
    use crate::model::mesos::parse_task;
    let mut t = parse_task(&task_json("fw-m", "web.1", "a1", "TASK_RUNNING", "/web:80")).unwrap();
    for i in 0..10 {
        let mut s = t.statuses[0].clone();
        s.container_status = None;
        s.timestamp = Some(2.0 + f64::from(i));
        t.statuses.push(s);
        trim_statuses(&mut t.statuses);
    }
    assert_eq!(t.statuses.len(), MAX_STATUSES + 1);
    assert_eq!(crate::table::mesos::task_ips(&t), ["9.0.0.1"]);
}
