//! The Marathon source against a fake Marathon over real HTTP: initial sync, incremental events,
//! coalescing, reconnects, liveness, leader redirect with credentials, failures that keep the
//! last snapshot, and the state dir. Waits are bounded polls on conditions, never fixed sleeps.

mod support;

use std::time::Duration;
use support::fake_marathon::{app, apps_doc, status_update, wait_until, FakeMarathon, Mode};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vipd::source::marathon::client::RedirectHost;
use vipd::source::marathon::{spawn, MarathonConfig, MarathonStatusHandle, SyncErrorKind};
use vipd::source::{Origin, SourceSnapshot};

const U1: &str = "11111111-1111-1111-1111-111111111111";
const U2: &str = "22222222-2222-2222-2222-222222222222";

fn task(app: &str, u: &str) -> String {
    format!("{app}.instance-{u}._app.1")
}

fn config(urls: &[&str]) -> MarathonConfig {
    support::fake_marathon::fast_config(urls)
}

fn two_apps() -> serde_json::Value {
    apps_doc(vec![
        app("/web", &[(&task("web", U1), "10.0.0.1", 31001)]),
        app("/db", &[]),
    ])
}

struct Running {
    rx: watch::Receiver<Option<SourceSnapshot>>,
    handle: vipd::source::SourceHandle,
    status: MarathonStatusHandle,
    shutdown: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn start(cfg: MarathonConfig) -> Running {
    let shutdown = CancellationToken::new();
    let (handle, status) = spawn(cfg, shutdown.clone());
    Running {
        rx: handle.snapshots.clone(),
        handle,
        status,
        shutdown,
    }
}

impl Running {
    /// Waits for a snapshot that satisfies `pred` and returns it.
    async fn snapshot_where(
        &mut self,
        what: &str,
        pred: impl Fn(&SourceSnapshot) -> bool,
    ) -> SourceSnapshot {
        let fut = async {
            loop {
                if let Some(s) = self.rx.borrow_and_update().as_ref() {
                    if pred(s) {
                        return s.clone();
                    }
                }
                self.rx.changed().await.expect("source alive");
            }
        };
        tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for snapshot: {what}"))
    }

    /// Waits until the stream is connected and a full fetch after that connect completed.
    async fn synced(&self) {
        let st = self.status.clone();
        wait_until("stream connected and synced", || {
            let s = st.get();
            s.sse_connected && s.stream_synced && !s.fetch_pending
        })
        .await;
    }
}

fn task_of<'a>(s: &'a SourceSnapshot, app: &str, id: &str) -> Option<&'a vipd::model::Task> {
    s.apps
        .apps
        .iter()
        .find(|a| a.id == app)
        .and_then(|a| a.tasks.iter().find(|t| t.id == id))
}

#[tokio::test]
async fn initial_sync_publishes_a_full_snapshot_and_subscribes_correctly() {
    let fake = FakeMarathon::start(two_apps()).await;
    let mut r = start(config(&[&fake.url()]));
    let s = r
        .snapshot_where("two apps", |s| s.apps.apps.len() == 2)
        .await;
    assert_eq!(s.origin, Origin::MarathonFull);
    assert!(task_of(&s, "/web", &task("web", U1)).is_some());
    r.synced().await;
    let st = r.status.get();
    assert!(st.full_fetches >= 1);
    assert_eq!(st.current_url, format!("{}/", fake.url()));
    // The events request: exact Accept, no-cache, light plans, every subscribed type.
    let req = fake.events_requests().pop().unwrap();
    assert_eq!(req.accept, vec!["text/event-stream".to_string()]);
    assert_eq!(req.cache_control.as_deref(), Some("no-cache"));
    assert!(req.query.contains("plan-format=light"), "{}", req.query);
    for t in vipd::source::marathon::events::SUBSCRIBED_EVENT_TYPES {
        assert!(
            req.query.contains(&format!("event_type={t}")),
            "{t} in {}",
            req.query
        );
    }
}

#[tokio::test]
async fn the_fake_enforces_the_exact_accept_rule() {
    // Guards the fake itself: a client that sends another Accept gets 405, like Jetty.
    let fake = FakeMarathon::start(two_apps()).await;
    let client = reqwest::Client::new();
    for accept in ["text/event-stream, */*", "*/*", "application/json"] {
        let resp = client
            .get(format!("{}/v2/events", fake.url()))
            .header("Accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{accept}");
    }
}

#[tokio::test]
async fn task_running_event_adds_the_task_without_any_fetch() {
    let fake = FakeMarathon::start(two_apps()).await;
    let mut r = start(config(&[&fake.url()]));
    r.synced().await;
    let (full_before, app_before) = (fake.count("/v2/apps"), fake.app_fetches());
    let new_task = task("web", U2);
    fake.send_event(
        "status_update_event",
        &status_update("/web", &new_task, "TASK_RUNNING", "10.0.0.2", 31002),
    );
    let s = r
        .snapshot_where("new task", |s| task_of(s, "/web", &new_task).is_some())
        .await;
    assert_eq!(s.origin, Origin::MarathonEvent);
    let t = task_of(&s, "/web", &new_task).unwrap();
    assert_eq!(
        (t.host.as_deref(), &t.ports[..]),
        (Some("10.0.0.2"), &[31002][..])
    );
    assert_eq!(
        t.state.as_ref().map(vipd::model::TaskState::as_str),
        Some("TASK_RUNNING")
    );
    assert!(
        task_of(&s, "/web", &task("web", U1)).is_some(),
        "old task kept"
    );
    assert_eq!(fake.count("/v2/apps"), full_before, "no extra GET /v2/apps");
    assert_eq!(
        fake.app_fetches(),
        app_before,
        "no GET /v2/apps/{{id}} either"
    );
    assert!(r.status.get().events_applied >= 1);
}

#[tokio::test]
async fn killing_marks_and_terminal_status_removes() {
    let fake = FakeMarathon::start(two_apps()).await;
    let mut r = start(config(&[&fake.url()]));
    r.synced().await;
    let t1 = task("web", U1);
    fake.send_event(
        "status_update_event",
        &status_update("/web", &t1, "TASK_KILLING", "10.0.0.1", 31001),
    );
    r.snapshot_where("killing", |s| {
        task_of(s, "/web", &t1).and_then(|t| t.state.as_ref().map(vipd::model::TaskState::as_str))
            == Some("TASK_KILLING")
    })
    .await;
    fake.send_event(
        "status_update_event",
        &status_update("/web", &t1, "TASK_KILLED", "10.0.0.1", 31001),
    );
    let s = r
        .snapshot_where("removed", |s| task_of(s, "/web", &t1).is_none())
        .await;
    assert_eq!(s.apps.apps.len(), 2, "the app stays, without the task");
    // app_terminated_event removes the app.
    fake.send_event(
        "app_terminated_event",
        &serde_json::json!({"eventType":"app_terminated_event","appId":"/db"}),
    );
    r.snapshot_where("db gone", |s| s.apps.apps.iter().all(|a| a.id != "/db"))
        .await;
}

#[tokio::test]
async fn event_for_an_unknown_app_fetches_only_that_app() {
    let fake = FakeMarathon::start(two_apps()).await;
    let mut r = start(config(&[&fake.url()]));
    r.synced().await;
    let full_before = fake.count("/v2/apps");
    let mut doc = two_apps();
    doc["apps"]
        .as_array_mut()
        .unwrap()
        .push(app("/new", &[(&task("new", U2), "10.0.0.9", 31009)]));
    fake.set_apps(doc);
    fake.send_event(
        "status_update_event",
        &status_update("/new", &task("new", U2), "TASK_RUNNING", "10.0.0.9", 31009),
    );
    r.snapshot_where("new app", |s| s.apps.apps.iter().any(|a| a.id == "/new"))
        .await;
    assert_eq!(fake.count("/v2/apps/new"), 1);
    assert_eq!(fake.count("/v2/apps"), full_before);
}

#[tokio::test]
async fn a_burst_of_definition_events_costs_at_most_two_fetches() {
    let fake = FakeMarathon::start(two_apps()).await;
    let mut r = start(config(&[&fake.url()]));
    r.synced().await;
    let full_before = fake.count("/v2/apps");
    // Marathon's new view: a label changed and the barrier task (below) runs.
    let barrier = task("web", U2);
    let mut doc = apps_doc(vec![
        app(
            "/web",
            &[
                (&task("web", U1), "10.0.0.1", 31001),
                (&barrier, "10.0.0.2", 31002),
            ],
        ),
        app("/db", &[]),
    ]);
    doc["apps"][0]["labels"] = serde_json::json!({"changed": "yes"});
    fake.set_apps(doc);
    let post = serde_json::json!({"eventType":"api_post_event","clientIp":"1.2.3.4","uri":"/v2/apps/web",
        "appDefinition": {"id": "/web", "instances": 2}});
    for _ in 0..50 {
        fake.send_event("api_post_event", &post);
    }
    // A task event behind the burst: once it is applied, the driver has seen all 50.
    fake.send_event(
        "status_update_event",
        &status_update("/web", &barrier, "TASK_RUNNING", "10.0.0.2", 31002),
    );
    r.snapshot_where("label and barrier", |s| {
        task_of(s, "/web", &barrier).is_some()
            && s.apps.apps[0].labels.get("changed").map(String::as_str) == Some("yes")
    })
    .await;
    let st = r.status.clone();
    wait_until("no fetch pending", || !st.get().fetch_pending).await;
    let n = fake.count("/v2/apps/web");
    assert!(
        (1..=2).contains(&n),
        "{n} fetches of /v2/apps/web for 50 events"
    );
    assert_eq!(fake.count("/v2/apps"), full_before, "per-app, not full");
}

#[tokio::test]
async fn a_cut_stream_reconnects_resyncs_and_sees_changes_made_while_down() {
    let fake = FakeMarathon::start(two_apps()).await;
    let mut r = start(config(&[&fake.url()]));
    r.synced().await;
    let full_before = fake.count("/v2/apps");
    // Keep the stream down while the cluster changes.
    fake.set_events_mode(Mode::Unavailable);
    fake.cut_streams();
    let st = r.status.clone();
    wait_until("stream down", || !st.get().sse_connected).await;
    let mut doc = two_apps();
    doc["apps"]
        .as_array_mut()
        .unwrap()
        .push(app("/while-down", &[]));
    fake.set_apps(doc);
    fake.set_events_mode(Mode::Normal);
    let s = r
        .snapshot_where("app added while down", |s| {
            s.apps.apps.iter().any(|a| a.id == "/while-down")
        })
        .await;
    assert_eq!(s.origin, Origin::MarathonFull);
    r.synced().await;
    assert!(
        fake.count("/v2/apps") > full_before,
        "resync after reconnect"
    );
    assert!(r.status.get().errors_of(SyncErrorKind::Stream) >= 1);
}

/// A full resync shares every app that did not change with the previous snapshot (the same
/// `Arc`), which is what lets the table build reuse those apps' parts; a changed app is new.
#[tokio::test]
async fn a_full_resync_keeps_unchanged_apps_shared_with_the_previous_snapshot() {
    let fake = FakeMarathon::start(two_apps()).await;
    let mut r = start(config(&[&fake.url()]));
    r.synced().await;
    let before = r.snapshot_where("first snapshot", |_| true).await;
    let mut doc = two_apps();
    doc["apps"][1]["tasks"] =
        serde_json::json!([serde_json::from_str::<serde_json::Value>(&format!(
            r#"{{"id":"{}","host":"10.0.0.2","ports":[31002],"state":"TASK_RUNNING"}}"#,
            task("db", U2)
        ))
        .unwrap()]);
    fake.set_apps(doc);
    // Reconnect: every (re)connect triggers a full resync.
    fake.cut_streams();
    let after = r
        .snapshot_where("/db changed by a full resync", |s| {
            task_of(s, "/db", &task("db", U2)).is_some()
        })
        .await;
    assert_eq!(after.origin, Origin::MarathonFull);
    let find = |s: &SourceSnapshot, id: &str| {
        s.apps
            .apps
            .iter()
            .find(|a| a.id == id)
            .cloned()
            .expect("app present")
    };
    assert!(
        std::sync::Arc::ptr_eq(&find(&before, "/web"), &find(&after, "/web")),
        "unchanged /web is the same Arc after the full resync"
    );
    assert!(!std::sync::Arc::ptr_eq(
        &find(&before, "/db"),
        &find(&after, "/db")
    ));
}

#[tokio::test]
async fn a_silent_stream_is_reconnected_after_the_liveness_timeout() {
    let fake = FakeMarathon::start(two_apps()).await;
    fake.set_heartbeat(Some(Duration::from_millis(50)));
    let mut cfg = config(&[&fake.url()]);
    cfg.stream_timeout = Duration::from_millis(400);
    let r = start(cfg);
    r.synced().await;
    let connects = fake.count("/v2/events");
    fake.set_silent(true);
    let st = r.status.clone();
    wait_until("liveness timeout", || {
        st.get().errors_of(SyncErrorKind::Timeout) >= 1
    })
    .await;
    wait_until("reconnected", || fake.count("/v2/events") > connects).await;
    fake.set_silent(false);
    r.synced().await;
}

#[tokio::test]
async fn heartbeats_keep_a_quiet_stream_alive() {
    // Heartbeats every 20 ms, liveness 300 ms: while 60 heartbeats (four liveness periods) go
    // out, no timeout may fire and the stream must not be reopened.
    let fake = FakeMarathon::start(two_apps()).await;
    fake.set_heartbeat(Some(Duration::from_millis(20)));
    let mut cfg = config(&[&fake.url()]);
    cfg.stream_timeout = Duration::from_millis(300);
    let r = start(cfg);
    r.synced().await;
    let from = fake.heartbeats_sent();
    wait_until("60 heartbeats", || fake.heartbeats_sent() >= from + 60).await;
    assert_eq!(r.status.get().errors_of(SyncErrorKind::Timeout), 0);
    assert_eq!(fake.count("/v2/events"), 1, "never reconnected");
}

#[tokio::test]
async fn a_multi_megabyte_event_line_does_not_stall_the_stream() {
    let fake = FakeMarathon::start(two_apps()).await;
    let mut r = start(config(&[&fake.url()]));
    r.synced().await;
    // A heavy deployment event (../shared/reference/marathon/FACTS.md §7: up to ~7.5 MB on one
    // line), then a task event.
    let pad = "x".repeat(8 << 20);
    fake.send_event(
        "deployment_success",
        &serde_json::json!({"eventType":"deployment_success","id":"d1",
            "plan":{"id":"d1","original":{"pad": pad},"steps":[{"actions":[{"action":"ScaleApplication","app":"/web"}]}]}}),
    );
    let t = task("web", U2);
    let mut doc = two_apps();
    doc["apps"][0] = app(
        "/web",
        &[
            (&task("web", U1), "10.0.0.1", 31001),
            (&t, "10.0.0.2", 31002),
        ],
    );
    fake.set_apps(doc);
    fake.send_event(
        "status_update_event",
        &status_update("/web", &t, "TASK_RUNNING", "10.0.0.2", 31002),
    );
    r.snapshot_where("task after the big event", |s| {
        task_of(s, "/web", &t).is_some()
    })
    .await;
    let st = r.status.clone();
    wait_until("app refetched for the deployment", || {
        fake.count("/v2/apps/web") >= 1 && !st.get().fetch_pending
    })
    .await;
    assert_eq!(r.status.get().errors_of(SyncErrorKind::Stream), 0);
}

#[tokio::test]
async fn non_leader_redirect_is_followed_with_credentials_sent_again() {
    let leader = FakeMarathon::start(two_apps()).await;
    leader.require_basic("alice", "leaderpw");
    let follower = FakeMarathon::start(two_apps()).await;
    follower.require_basic("alice", "leaderpw");
    follower.redirect_events_to(&leader.url());
    let mut cfg = config(&[&follower.url_with("alice", "leaderpw")]);
    // The leader is another authority (another port): trusted by name.
    cfg.trusted_redirect_hosts = vec![RedirectHost::parse(&leader.addr.to_string()).unwrap()];
    let mut r = start(cfg);
    r.synced().await;
    let st = r.status.get();
    assert_eq!(
        st.stream_url.as_deref(),
        Some(format!("{}/v2/events", leader.url()).as_str())
    );
    assert!(follower.count("/v2/events") >= 1);
    let reqs = leader.events_requests();
    assert!(!reqs.is_empty());
    assert!(reqs.iter().all(|q| q
        .authorization
        .as_deref()
        .is_some_and(|a| a.starts_with("Basic "))));
    // Events come from the leader.
    let t = task("web", U2);
    leader.send_event(
        "status_update_event",
        &status_update("/web", &t, "TASK_RUNNING", "10.0.0.2", 31002),
    );
    r.snapshot_where("event via leader", |s| task_of(s, "/web", &t).is_some())
        .await;
}

#[tokio::test]
async fn ha_urls_rotate_past_a_dead_one_and_stick() {
    // A port that was bound and released: connection refused.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let fake = FakeMarathon::start(two_apps()).await;
    let mut r = start(config(&[&dead, &fake.url()]));
    r.snapshot_where("apps", |s| s.apps.apps.len() == 2).await;
    r.synced().await;
    assert_eq!(r.status.get().current_url, format!("{}/", fake.url()));
}

#[tokio::test]
async fn failures_keep_the_last_snapshot_and_move_the_counters() {
    let fake = FakeMarathon::start(two_apps()).await;
    let mut r = start(config(&[&fake.url()]));
    r.snapshot_where("apps", |s| s.apps.apps.len() == 2).await;
    r.synced().await;
    for (mode, kind) in [
        (Mode::Error500, SyncErrorKind::HttpStatus),
        (Mode::Unauthorized, SyncErrorKind::Unauthorized),
        (Mode::Garbage, SyncErrorKind::Parse),
    ] {
        fake.set_api_mode(mode);
        r.rx.borrow_and_update();
        let before = r.status.get().errors_of(kind);
        r.handle.resync();
        let st = r.status.clone();
        wait_until(&format!("{kind} counted"), || {
            st.get().errors_of(kind) > before
        })
        .await;
        // Also a definition event: its app fetch fails the same way.
        fake.send_event(
            "api_post_event",
            &serde_json::json!({"eventType":"api_post_event","appDefinition":{"id":"/web"}}),
        );
        wait_until(&format!("{kind} counted again"), || {
            st.get().errors_of(kind) > before + 1
        })
        .await;
        assert!(!r.rx.has_changed().unwrap(), "{mode:?}: nothing emitted");
        let cur = r.rx.borrow().clone().unwrap();
        assert_eq!(cur.apps.apps.len(), 2, "{mode:?}: last good snapshot kept");
    }
    // Recovery.
    fake.set_api_mode(Mode::Normal);
    let mut doc = two_apps();
    doc["apps"].as_array_mut().unwrap().push(app("/third", &[]));
    fake.set_apps(doc);
    r.handle.resync();
    r.snapshot_where("recovered", |s| s.apps.apps.len() == 3)
        .await;
}

#[tokio::test]
async fn restart_with_marathon_down_serves_the_state_dir_until_marathon_answers() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeMarathon::start(two_apps()).await;
    {
        let mut cfg = config(&[&fake.url()]);
        cfg.state_dir = Some(dir.path().to_path_buf());
        let mut r = start(cfg);
        r.snapshot_where("apps", |s| s.apps.apps.len() == 2).await;
        let file = dir
            .path()
            .join(vipd::source::marathon::state_dir::STATE_FILE);
        wait_until("state file written", || file.exists()).await;
    }
    // "Restart" while Marathon fails.
    fake.set_api_mode(Mode::Error500);
    fake.set_events_mode(Mode::Error500);
    let mut cfg = config(&[&fake.url()]);
    cfg.state_dir = Some(dir.path().to_path_buf());
    let mut r = start(cfg);
    let s = r
        .snapshot_where("stale", |s| s.origin == Origin::StateDir)
        .await;
    assert_eq!(s.apps.apps.len(), 2);
    assert!(r.status.get().serving_stale_state);
    // Marathon comes back with a different view: it replaces the stale one.
    let mut doc = two_apps();
    doc["apps"].as_array_mut().unwrap().pop();
    fake.set_apps(doc);
    fake.set_api_mode(Mode::Normal);
    fake.set_events_mode(Mode::Normal);
    let s = r
        .snapshot_where("fresh", |s| s.origin == Origin::MarathonFull)
        .await;
    assert_eq!(s.apps.apps.len(), 1);
    assert!(!r.status.get().serving_stale_state);
}

#[tokio::test]
async fn state_dir_is_served_when_marathon_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path()
            .join(vipd::source::marathon::state_dir::STATE_FILE),
        two_apps().to_string(),
    )
    .unwrap();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut cfg = config(&[&dead]);
    cfg.state_dir = Some(dir.path().to_path_buf());
    let mut r = start(cfg);
    let s = r
        .snapshot_where("stale", |s| s.origin == Origin::StateDir)
        .await;
    assert_eq!(s.apps.apps.len(), 2);
    let st = r.status.clone();
    wait_until("connect errors counted", || {
        st.get().errors_of(SyncErrorKind::Connect) >= 1
    })
    .await;
}

#[tokio::test]
async fn a_corrupt_state_file_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir
        .path()
        .join(vipd::source::marathon::state_dir::STATE_FILE);
    std::fs::write(&file, b"{\"apps\": [ {\"id\": ").unwrap();
    let fake = FakeMarathon::start(two_apps()).await;
    fake.set_api_mode(Mode::Error500);
    let mut cfg = config(&[&fake.url()]);
    cfg.state_dir = Some(dir.path().to_path_buf());
    let mut r = start(cfg);
    let st = r.status.clone();
    wait_until("fetch failures", || {
        st.get().errors_of(SyncErrorKind::HttpStatus) >= 2
    })
    .await;
    assert!(
        r.rx.borrow().is_none(),
        "nothing served from a corrupt file"
    );
    fake.set_api_mode(Mode::Normal);
    let s = r.snapshot_where("fresh", |s| s.apps.apps.len() == 2).await;
    assert_eq!(s.origin, Origin::MarathonFull);
    // And the corrupt file is replaced by a good one.
    wait_until("state file rewritten", || {
        vipd::source::marathon::state_dir::load(dir.path()).is_ok_and(|s| s.is_some())
    })
    .await;
}

#[tokio::test]
async fn leader_failover_keeps_health_through_a_full_resync() {
    let with_health = |results: serde_json::Value| {
        let mut a = app("/web", &[(&task("web", U1), "10.0.0.1", 31001)]);
        a["healthChecks"] = serde_json::json!([{"protocol": "MESOS_HTTP", "portIndex": 0}]);
        a["tasks"][0]["healthCheckResults"] = results;
        apps_doc(vec![a])
    };
    let fake = FakeMarathon::start(with_health(serde_json::json!([
        {"alive": true, "consecutiveFailures": 0, "instanceId": format!("web.instance-{U1}")}
    ])))
    .await;
    let mut r = start(config(&[&fake.url()]));
    r.synced().await;
    // New leader: no results anywhere.
    fake.set_apps(with_health(serde_json::json!([])));
    let before = fake.count("/v2/apps");
    r.handle.resync();
    wait_until("resync done", || {
        fake.count("/v2/apps") > before && !r.status.get().fetch_pending
    })
    .await;
    let s = r.snapshot_where("current", |_| true).await;
    let t = task_of(&s, "/web", &task("web", U1)).unwrap();
    assert_eq!(t.health_check_results.as_ref().map(|r| r.len()), Some(1));
    assert!(t.health_check_results.as_ref().unwrap()[0].alive);
}

#[tokio::test]
async fn periodic_resync_runs_without_events() {
    let fake = FakeMarathon::start(two_apps()).await;
    let mut cfg = config(&[&fake.url()]);
    cfg.resync_interval = Duration::from_millis(100);
    let _r = start(cfg);
    wait_until("three more full fetches", || fake.count("/v2/apps") >= 5).await;
}

#[tokio::test]
async fn token_file_is_reread_so_rotation_works() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "tok-one\n").unwrap();
    let fake = FakeMarathon::start(two_apps()).await;
    fake.require_token("tok-one");
    let mut cfg = config(&[&fake.url()]);
    cfg.auth.token_file = Some(token_file.clone());
    let mut r = start(cfg);
    r.synced().await;
    // Rotate: Marathon now wants the new token, and the file holds it.
    fake.require_token("tok-two");
    std::fs::write(&token_file, "tok-two").unwrap();
    let mut doc = two_apps();
    doc["apps"]
        .as_array_mut()
        .unwrap()
        .push(app("/after-rotation", &[]));
    fake.set_apps(doc);
    r.handle.resync();
    r.snapshot_where("fetched with the new token", |s| s.apps.apps.len() == 3)
        .await;
}
