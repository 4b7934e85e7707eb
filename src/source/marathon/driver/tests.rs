//! The driver's transitions, with no socket and no clock: time is an `Instant` the test moves.

use super::*;
use crate::model::parse_apps_document;
use crate::source::marathon::events::parse_event;
use rand::SeedableRng;

const U1: &str = "11111111-1111-1111-1111-111111111111";
const U2: &str = "22222222-2222-2222-2222-222222222222";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cfg() -> DriverConfig {
    DriverConfig {
        connect_timeout: Duration::from_secs(3),
        resync_interval: Duration::from_secs(300),
        event_debounce: ms(200),
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
        healthy_after: Duration::from_secs(60),
        max_replay_bytes: 1 << 20,
    }
}

fn driver_with(cfg: DriverConfig, stale: Option<AppsSnapshot>) -> Driver<rand::rngs::StdRng> {
    Driver::new(
        cfg,
        MarathonStatusHandle::default(),
        stale.map(|s| (s, SystemTime::UNIX_EPOCH)),
        rand::rngs::StdRng::seed_from_u64(7),
    )
}

fn task_id(app: &str, u: &str) -> String {
    format!("{app}.instance-{u}._app.1")
}

fn app_json(id: &str, tasks: &[&str]) -> String {
    let name = id.trim_start_matches('/');
    let tasks: Vec<String> = tasks
        .iter()
        .enumerate()
        .map(|(i, u)| {
            format!(
                r#"{{"id":"{}","appId":"{id}","host":"10.0.0.{}","ports":[{}],"state":"TASK_RUNNING"}}"#,
                task_id(name, u),
                i + 1,
                31001 + i
            )
        })
        .collect();
    format!(
        r#"{{"id":"{id}","portDefinitions":[{{"port":10000}}],"tasks":[{}]}}"#,
        tasks.join(",")
    )
}

fn doc(apps: &[String]) -> String {
    format!(r#"{{"apps":[{}]}}"#, apps.join(","))
}

fn snapshot(apps: &[String]) -> AppsSnapshot {
    parse_apps_document(doc(apps).as_bytes()).unwrap()
}

fn full_ok(apps: &[String], at: Instant) -> Input {
    Input::FetchDone(FetchOutcome::Full(Ok(FullFetch {
        body: Bytes::from(doc(apps)),
        pods_body: None,
        snapshot: snapshot(apps),
        fetched_at: at,
        url: "http://m1:8080/".into(),
        redirected: false,
    })))
}

fn full_redirected(apps: &[String], at: Instant) -> Input {
    Input::FetchDone(FetchOutcome::Full(Ok(FullFetch {
        body: Bytes::from(doc(apps)),
        pods_body: None,
        snapshot: snapshot(apps),
        fetched_at: at,
        url: "http://m2:8080/".into(),
        redirected: true,
    })))
}

fn err500() -> FetchError {
    FetchError::HttpStatus {
        url: "http://m1:8080/".into(),
        status: 500,
    }
}

fn full_err() -> Input {
    Input::FetchDone(FetchOutcome::Full(Err(err500())))
}

fn event(ev: MarathonEvent, at: Instant) -> StreamRecord {
    StreamRecord::Event {
        event: ev,
        received: at,
        bytes: 300,
    }
}

fn status_update(app: &str, u: &str, state: &str) -> MarathonEvent {
    let name = app.trim_start_matches('/');
    let json = format!(
        r#"{{"eventType":"status_update_event","taskId":"{}","appId":"{app}","taskStatus":"{state}","host":"10.0.0.9","ports":[31009],"ipAddresses":[]}}"#,
        task_id(name, u)
    );
    parse_event(Some("status_update_event"), &json).unwrap()
}

fn api_post(app: &str) -> MarathonEvent {
    MarathonEvent::ApiPost {
        app_id: Some(app.into()),
    }
}

fn fetches(actions: &[Action]) -> Vec<FetchJob> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Fetch(j) => Some(j.clone()),
            _ => None,
        })
        .collect()
}

fn published(actions: &[Action]) -> Vec<&SourceSnapshot> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Publish { snapshot, .. } => Some(snapshot),
            _ => None,
        })
        .collect()
}

fn has(actions: &[Action], pred: impl Fn(&Action) -> bool) -> bool {
    actions.iter().any(pred)
}

fn tasks_of(s: &AppsSnapshot, app: &str) -> Vec<String> {
    s.apps
        .iter()
        .find(|a| a.id == app)
        .map(|a| a.tasks.iter().map(|t| t.id.clone()).collect())
        .unwrap_or_default()
}

/// A driver that has started, connected its stream and finished both full fetches with `apps`.
fn synced(apps: &[String], t0: Instant) -> Driver<rand::rngs::StdRng> {
    let mut d = driver_with(cfg(), None);
    d.handle(Input::Start, t0);
    d.handle(
        Input::Stream(vec![StreamRecord::Connected {
            url: "http://m1:8080/v2/events".into(),
        }]),
        t0,
    );
    let a = d.handle(full_ok(apps, t0), t0);
    assert_eq!(
        fetches(&a),
        vec![FetchJob::Full],
        "the connect's full fetch"
    );
    d.handle(full_ok(apps, t0), t0);
    assert!(!d.fetch_in_flight());
    d
}

#[test]
fn start_fetches_everything_and_opens_the_stream() {
    let t0 = Instant::now();
    let mut d = driver_with(cfg(), None);
    let a = d.handle(Input::Start, t0);
    assert_eq!(fetches(&a), vec![FetchJob::Full]);
    assert!(has(&a, |a| matches!(a, Action::ConnectStream)));
    assert!(d.fetch_in_flight());
    // Only the periodic resync is left to wait for.
    let next = d.next_deadline().unwrap();
    assert!(next >= t0 + Duration::from_secs(255) && next <= t0 + Duration::from_secs(345));
    // A second start does nothing.
    assert!(d.handle(Input::Start, t0).is_empty());
}

#[test]
fn a_full_fetch_publishes_and_persists_and_an_unchanged_one_only_persists() {
    let t0 = Instant::now();
    let web = app_json("/web", &[U1]);
    let mut d = driver_with(cfg(), None);
    d.handle(Input::Start, t0);
    let a = d.handle(full_ok(std::slice::from_ref(&web), t0), t0);
    let p = published(&a);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].origin, Origin::MarathonFull);
    assert!(has(&a, |a| matches!(a, Action::Persist(_))));
    d.handle(Input::ResyncRequested, t0);
    let a = d.handle(full_ok(&[web], t0), t0);
    assert!(published(&a).is_empty(), "same apps: nothing to publish");
    assert!(has(&a, |a| matches!(a, Action::Persist(_))));
}

#[test]
fn at_most_one_fetch_is_in_flight_and_the_queued_one_starts_when_it_finishes() {
    let t0 = Instant::now();
    let web = vec![app_json("/web", &[U1])];
    let mut d = driver_with(cfg(), None);
    d.handle(Input::Start, t0);
    let a = d.handle(Input::ResyncRequested, t0);
    assert!(fetches(&a).is_empty(), "one is in flight already");
    let a = d.handle(Input::ResyncRequested, t0);
    assert!(fetches(&a).is_empty());
    let a = d.handle(full_ok(&web, t0), t0);
    assert_eq!(
        fetches(&a),
        vec![FetchJob::Full],
        "both requests: one fetch"
    );
    let a = d.handle(full_ok(&web, t0), t0);
    assert!(fetches(&a).is_empty());
}

#[test]
fn a_fetch_in_flight_while_events_arrive_gets_them_replayed_onto_its_result() {
    let t0 = Instant::now();
    let mut d = synced(&[app_json("/web", &[U1])], t0);
    let a = d.handle(Input::ResyncRequested, t0);
    assert_eq!(fetches(&a), vec![FetchJob::Full]);
    // While the fetch is in flight, U2 starts: applied and published at once...
    let t1 = t0 + ms(10);
    let a = d.handle(
        Input::Stream(vec![event(status_update("/web", U2, "TASK_RUNNING"), t1)]),
        t1,
    );
    let p = published(&a);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].origin, Origin::MarathonEvent);
    assert_eq!(p[0].observed_at, t1);
    assert_eq!(tasks_of(&p[0].apps, "/web").len(), 2);
    // ...and the fetch, served before the event, does not undo it.
    let a = d.handle(full_ok(&[app_json("/web", &[U1])], t0), t1);
    assert!(
        published(&a).is_empty(),
        "the replayed result equals what is served"
    );
    assert_eq!(tasks_of(d.current().unwrap(), "/web").len(), 2);
    assert_eq!(d.replay_bytes(), 0);
}

#[test]
fn an_event_replayed_onto_a_fetch_that_removed_the_task_elsewhere_still_applies() {
    // The fetch saw U1 and U2; the event killed U2 meanwhile: the result keeps it killed.
    let t0 = Instant::now();
    let mut d = synced(&[app_json("/web", &[U1, U2])], t0);
    d.handle(Input::ResyncRequested, t0);
    d.handle(
        Input::Stream(vec![event(status_update("/web", U2, "TASK_FAILED"), t0)]),
        t0,
    );
    assert_eq!(tasks_of(d.current().unwrap(), "/web").len(), 1);
    d.handle(full_ok(&[app_json("/web", &[U1, U2])], t0), t0);
    assert_eq!(
        tasks_of(d.current().unwrap(), "/web"),
        vec![task_id("web", U1)]
    );
}

#[test]
fn definition_events_within_the_debounce_window_coalesce_into_one_app_fetch() {
    let t0 = Instant::now();
    let mut d = synced(&[app_json("/web", &[U1])], t0);
    let mut batch = |ev, at| d.handle(Input::Stream(vec![event(ev, at)]), at);
    assert!(fetches(&batch(api_post("/a"), t0)).is_empty());
    assert!(fetches(&batch(api_post("/b"), t0 + ms(50))).is_empty());
    assert!(fetches(&batch(api_post("a"), t0 + ms(100))).is_empty());
    // Armed by the first event: due one debounce after it.
    assert_eq!(d.next_deadline(), Some(t0 + ms(200)));
    assert!(fetches(&d.handle(Input::Tick, t0 + ms(199))).is_empty());
    let a = d.handle(Input::Tick, t0 + ms(200));
    assert_eq!(
        fetches(&a),
        vec![FetchJob::Apps(vec!["/a".into(), "/b".into()])]
    );
}

#[test]
fn more_than_sixteen_queued_apps_become_one_full_fetch() {
    let t0 = Instant::now();
    let mut d = synced(&[app_json("/web", &[U1])], t0);
    let records = (0..=MAX_QUEUED_APPS)
        .map(|i| event(api_post(&format!("/app{i}")), t0))
        .collect();
    d.handle(Input::Stream(records), t0);
    let a = d.handle(Input::Tick, t0 + ms(200));
    assert_eq!(fetches(&a), vec![FetchJob::Full]);
}

#[test]
fn an_app_fetch_patches_the_snapshot_and_a_404_removes_the_app() {
    let t0 = Instant::now();
    let mut d = synced(&[app_json("/web", &[U1]), app_json("/db", &[])], t0);
    d.handle(Input::Stream(vec![event(api_post("/web"), t0)]), t0);
    d.handle(Input::Stream(vec![event(api_post("/db"), t0)]), t0);
    let a = d.handle(Input::Tick, t0 + ms(200));
    assert_eq!(
        fetches(&a),
        vec![FetchJob::Apps(vec!["/web".into(), "/db".into()])]
    );
    let web = crate::model::parse_single_app_document(
        format!(r#"{{"app":{}}}"#, app_json("/web", &[U1, U2])).as_bytes(),
    )
    .unwrap()
    .unwrap();
    let t1 = t0 + ms(250);
    let a = d.handle(
        Input::FetchDone(FetchOutcome::Apps {
            results: vec![
                ("/web".into(), Ok((AppFetch::Found(Box::new(web)), t1))),
                ("/db".into(), Ok((AppFetch::Gone, t1))),
            ],
            url: "http://m1:8080/".into(),
        }),
        t1,
    );
    let p = published(&a);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].observed_at, t1);
    assert_eq!(tasks_of(&p[0].apps, "/web").len(), 2);
    assert!(p[0].apps.apps.iter().all(|a| a.id != "/db"));
}

#[test]
fn a_failed_app_fetch_retries_only_the_failed_apps_after_a_backoff() {
    let t0 = Instant::now();
    let mut d = synced(&[app_json("/web", &[U1])], t0);
    d.handle(Input::Stream(vec![event(api_post("/web"), t0)]), t0);
    d.handle(Input::Tick, t0 + ms(200));
    let t1 = t0 + ms(300);
    let a = d.handle(
        Input::FetchDone(FetchOutcome::Apps {
            results: vec![("/web".into(), Err(err500()))],
            url: "http://m1:8080/".into(),
        }),
        t1,
    );
    assert!(fetches(&a).is_empty() && published(&a).is_empty());
    let due = d.next_deadline().unwrap();
    assert!(
        due >= t1 + ms(500) && due <= t1 + ms(1000),
        "{:?}",
        due - t1
    );
    let a = d.handle(Input::Tick, due);
    assert_eq!(fetches(&a), vec![FetchJob::Apps(vec!["/web".into()])]);
}

#[test]
fn a_stream_reconnect_starts_a_new_epoch_and_a_full_fetch() {
    let t0 = Instant::now();
    let apps = [app_json("/web", &[U1])];
    let status = MarathonStatusHandle::default();
    let mut d = Driver::new(
        cfg(),
        status.clone(),
        None,
        rand::rngs::StdRng::seed_from_u64(1),
    );
    d.handle(Input::Start, t0);
    // The first fetch started before the stream connected (epoch 0).
    d.handle(
        Input::Stream(vec![StreamRecord::Connected { url: "u".into() }]),
        t0,
    );
    let a = d.handle(full_ok(&apps, t0), t0);
    assert!(!status.get().stream_synced, "fetched under an older epoch");
    assert_eq!(fetches(&a), vec![FetchJob::Full]);
    d.handle(full_ok(&apps, t0), t0);
    assert!(status.get().stream_synced);
    // The stream breaks (a leader change) and comes back: events may have been missed.
    let t1 = t0 + ms(500);
    d.handle(
        Input::Stream(vec![StreamRecord::Closed { error: err500() }]),
        t1,
    );
    assert!(!status.get().stream_synced && !status.get().sse_connected);
    let t2 = d.next_deadline().unwrap();
    let a = d.handle(Input::Tick, t2);
    assert!(has(&a, |a| matches!(a, Action::ConnectStream)));
    // A fetch in flight when the new epoch starts does not count as its sync.
    d.handle(Input::ResyncRequested, t2);
    let a = d.handle(
        Input::Stream(vec![StreamRecord::Connected { url: "u".into() }]),
        t2,
    );
    assert!(fetches(&a).is_empty());
    let a = d.handle(full_ok(&apps, t2), t2);
    assert!(!status.get().stream_synced);
    assert_eq!(fetches(&a), vec![FetchJob::Full], "the new epoch's fetch");
    d.handle(full_ok(&apps, t2), t2);
    assert!(status.get().stream_synced);
}

#[test]
fn events_before_any_snapshot_only_queue_a_full_fetch() {
    let t0 = Instant::now();
    let mut d = driver_with(cfg(), None);
    d.handle(Input::Start, t0);
    let a = d.handle(
        Input::Stream(vec![event(status_update("/web", U1, "TASK_RUNNING"), t0)]),
        t0,
    );
    assert!(published(&a).is_empty());
    let a = d.handle(Input::FetchDone(FetchOutcome::Full(Err(err500()))), t0);
    assert!(published(&a).is_empty());
}

#[test]
fn the_stale_state_is_served_after_the_connect_timeout_and_replaced_by_marathon() {
    let t0 = Instant::now();
    let saved = snapshot(&[app_json("/web", &[U1])]);
    let mut d = driver_with(cfg(), Some(saved));
    d.handle(Input::Start, t0);
    assert_eq!(d.next_deadline(), Some(t0 + Duration::from_secs(3)));
    assert!(published(&d.handle(Input::Tick, t0 + ms(2999))).is_empty());
    let a = d.handle(Input::Tick, t0 + Duration::from_secs(3));
    let [Action::Publish {
        snapshot,
        stale_as_of,
    }] = a.as_slice()
    else {
        panic!("{a:?}");
    };
    assert_eq!(snapshot.origin, Origin::StateDir);
    assert_eq!(*stale_as_of, Some(SystemTime::UNIX_EPOCH));
    // Marathon answers the same apps: published anyway, now as fresh.
    let t1 = t0 + Duration::from_secs(4);
    let a = d.handle(full_ok(&[app_json("/web", &[U1])], t1), t1);
    let p = published(&a);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].origin, Origin::MarathonFull);
}

#[test]
fn the_stale_state_is_served_at_once_when_the_first_fetch_fails() {
    let t0 = Instant::now();
    let mut d = driver_with(cfg(), Some(snapshot(&[app_json("/web", &[U1])])));
    d.handle(Input::Start, t0);
    let a = d.handle(full_err(), t0 + ms(10));
    let p = published(&a);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].origin, Origin::StateDir);
    // Not published a second time when the deadline passes.
    assert!(published(&d.handle(Input::Tick, t0 + Duration::from_secs(3))).is_empty());
}

#[test]
fn a_stale_state_is_never_served_over_marathons_answer() {
    let t0 = Instant::now();
    let mut d = driver_with(cfg(), Some(snapshot(&[app_json("/old", &[U1])])));
    d.handle(Input::Start, t0);
    d.handle(full_ok(&[app_json("/web", &[U1])], t0), t0 + ms(10));
    let a = d.handle(Input::Tick, t0 + Duration::from_secs(3));
    assert!(published(&a).is_empty());
    assert_eq!(d.current().unwrap().apps[0].id, "/web");
}

#[test]
fn failed_full_fetches_back_off_exponentially_and_a_success_resets_the_backoff() {
    let t0 = Instant::now();
    let mut d = driver_with(cfg(), None);
    d.handle(Input::Start, t0);
    let mut now = t0;
    for ceiling in [1u64, 2, 4, 8] {
        let a = d.handle(full_err(), now);
        assert!(fetches(&a).is_empty() && published(&a).is_empty());
        let due = d.next_deadline().unwrap();
        let delay = due - now;
        assert!(
            delay >= Duration::from_millis(ceiling * 500) && delay <= Duration::from_secs(ceiling),
            "{delay:?} for ceiling {ceiling}s"
        );
        assert!(fetches(&d.handle(Input::Tick, due - ms(1))).is_empty());
        assert_eq!(fetches(&d.handle(Input::Tick, due)), vec![FetchJob::Full]);
        now = due;
    }
    d.handle(full_ok(&[app_json("/web", &[U1])], now), now);
    d.handle(Input::ResyncRequested, now);
    let a = d.handle(full_err(), now);
    assert!(fetches(&a).is_empty());
    let delay = d.next_deadline().unwrap() - now;
    assert!(delay <= Duration::from_secs(1), "reset: {delay:?}");
}

#[test]
fn a_lost_fetch_task_is_retried_after_a_backoff() {
    let t0 = Instant::now();
    let mut d = driver_with(cfg(), None);
    d.handle(Input::Start, t0);
    assert!(fetches(&d.handle(Input::FetchLost, t0)).is_empty());
    assert!(!d.fetch_in_flight());
    let due = d.next_deadline().unwrap();
    assert!(due <= t0 + Duration::from_secs(1));
    assert_eq!(fetches(&d.handle(Input::Tick, due)), vec![FetchJob::Full]);
}

#[test]
fn the_stream_reconnects_with_backoff_rotating_only_when_it_never_connected() {
    let t0 = Instant::now();
    let mut d = driver_with(cfg(), None);
    let a = d.handle(Input::Start, t0);
    assert!(has(&a, |a| matches!(a, Action::ConnectStream)));
    let closed = || Input::Stream(vec![StreamRecord::Closed { error: err500() }]);
    let connected = || Input::Stream(vec![StreamRecord::Connected { url: "u".into() }]);
    let reconnect_at = |d: &Driver<_>| {
        // The fetch is in flight, so the next deadline is the reconnect (or the periodic).
        d.next_deadline().unwrap()
    };
    // Never connected: next URL, then wait.
    let a = d.handle(closed(), t0);
    assert!(has(&a, |a| matches!(a, Action::RotateEndpoint)));
    assert!(!has(&a, |a| matches!(a, Action::ConnectStream)));
    let at = reconnect_at(&d);
    assert!(at - t0 >= ms(500) && at - t0 <= ms(1000));
    assert!(!has(&d.handle(Input::Tick, at - ms(1)), |a| matches!(
        a,
        Action::ConnectStream
    )));
    assert!(has(&d.handle(Input::Tick, at), |a| matches!(
        a,
        Action::ConnectStream
    )));
    // Connected, then broke soon: same URL, longer wait.
    d.handle(connected(), at);
    let a = d.handle(closed(), at + ms(100));
    assert!(!has(&a, |a| matches!(a, Action::RotateEndpoint)));
    let at2 = reconnect_at(&d);
    let delay = at2 - (at + ms(100));
    assert!(delay >= ms(1000) && delay <= ms(2000), "{delay:?}");
    d.handle(Input::Tick, at2);
    // Connected and healthy for longer than `healthy_after`: the backoff starts over.
    d.handle(connected(), at2);
    let broke = at2 + Duration::from_secs(61);
    d.handle(Input::Tick, broke);
    d.handle(closed(), broke);
    let delay = reconnect_at(&d) - broke;
    assert!(delay <= ms(1000), "reset: {delay:?}");
}

#[test]
fn the_periodic_resync_fetches_everything_after_the_jittered_interval() {
    let t0 = Instant::now();
    let mut d = synced(&[app_json("/web", &[U1])], t0);
    let due = d.next_deadline().unwrap();
    assert!(due >= t0 + Duration::from_secs(255) && due <= t0 + Duration::from_secs(345));
    assert!(fetches(&d.handle(Input::Tick, due - ms(1))).is_empty());
    let a = d.handle(Input::Tick, due);
    assert_eq!(fetches(&a), vec![FetchJob::Full]);
    // A successful full fetch pushes the next one back by a whole interval.
    let t1 = due + Duration::from_secs(100);
    d.handle(full_ok(&[app_json("/web", &[U1])], t1), t1);
    let next = d.next_deadline().unwrap();
    assert!(next >= t1 + Duration::from_secs(255), "{:?}", next - t1);
}

#[test]
fn a_resync_request_fetches_everything_now() {
    let t0 = Instant::now();
    let mut d = synced(&[app_json("/web", &[U1])], t0);
    let a = d.handle(Input::ResyncRequested, t0 + ms(5));
    assert_eq!(fetches(&a), vec![FetchJob::Full]);
}

#[test]
fn events_buffered_past_the_replay_byte_bound_are_dropped_and_a_full_resync_follows() {
    let t0 = Instant::now();
    let mut d = driver_with(
        DriverConfig {
            max_replay_bytes: 3_000,
            ..cfg()
        },
        None,
    );
    d.handle(Input::Start, t0);
    let apps = [app_json("/web", &[U1])];
    d.handle(full_ok(&apps, t0), t0);
    d.handle(Input::ResyncRequested, t0);
    assert!(d.fetch_in_flight());
    let big = |u: &str| StreamRecord::Event {
        event: status_update("/web", u, "TASK_RUNNING"),
        received: t0,
        bytes: 1_000,
    };
    d.handle(Input::Stream(vec![big(U1), big(U2)]), t0);
    assert_eq!(d.replay_bytes(), 2 * (1_000 + EVENT_OVERHEAD_BYTES));
    d.handle(Input::Stream(vec![big(U2)]), t0);
    assert_eq!(d.replay_bytes(), 0, "dropped, memory returned");
    // More events are not buffered once the replay is dropped.
    d.handle(Input::Stream(vec![big(U2)]), t0);
    assert_eq!(d.replay_bytes(), 0);
    let a = d.handle(full_ok(&apps, t0), t0);
    assert_eq!(
        fetches(&a),
        vec![FetchJob::Full],
        "the events are re-read by a full fetch"
    );
}

#[test]
fn a_redirected_empty_answer_does_not_replace_a_non_empty_snapshot_until_confirmed() {
    let t0 = Instant::now();
    let mut d = synced(&[app_json("/web", &[U1])], t0);
    d.handle(Input::ResyncRequested, t0);
    let a = d.handle(full_redirected(&[], t0), t0);
    assert!(published(&a).is_empty(), "held back");
    assert!(!has(&a, |a| matches!(a, Action::Persist(_))));
    assert_eq!(d.current().unwrap().apps.len(), 1);
    // A confirming full fetch follows soon; a second empty answer is applied.
    let due = d.next_deadline().unwrap();
    assert_eq!(due, t0 + ms(200));
    assert_eq!(fetches(&d.handle(Input::Tick, due)), vec![FetchJob::Full]);
    let a = d.handle(full_redirected(&[], due), due);
    assert_eq!(published(&a).len(), 1);
    assert!(d.current().unwrap().apps.is_empty());
    // Not redirected: an empty answer is applied at once (Marathon may really have no apps).
    let mut d = synced(&[app_json("/web", &[U1])], t0);
    d.handle(Input::ResyncRequested, t0);
    let a = d.handle(full_ok(&[], t0), t0);
    assert_eq!(published(&a).len(), 1);
}

const POD_INSTANCE: &str = "shop.instance-33333333-3333-3333-3333-333333333333";

/// A synced driver whose full fetches carried one host pod `/shop`.
fn synced_with_pod(t0: Instant) -> Driver<rand::rngs::StdRng> {
    let pods = format!(
        r#"[{{"id":"/shop","spec":{{"containers":[{{"name":"web","endpoints":[
            {{"name":"http","hostPort":0,"labels":{{"VIP_0":"/shop:80"}}}}]}}]}},
          "instances":[{{"id":"{POD_INSTANCE}","agentHostname":"10.0.0.5","containers":[
            {{"name":"web","status":"TASK_RUNNING","containerId":"{POD_INSTANCE}.web.1",
              "endpoints":[{{"name":"http","allocatedHostPort":31005}}]}}]}}]}}]"#
    );
    let full = || {
        let mut snapshot = snapshot(&[]);
        let parsed = crate::model::pod::parse_pods_status(pods.as_bytes()).unwrap();
        snapshot.pods = parsed.pods;
        Input::FetchDone(FetchOutcome::Full(Ok(FullFetch {
            body: Bytes::from(doc(&[])),
            pods_body: Some(Bytes::from(pods.clone())),
            snapshot,
            fetched_at: t0,
            url: "http://m1:8080/".into(),
            redirected: false,
        })))
    };
    let mut d = driver_with(cfg(), None);
    d.handle(Input::Start, t0);
    d.handle(
        Input::Stream(vec![StreamRecord::Connected {
            url: "http://m1:8080/v2/events".into(),
        }]),
        t0,
    );
    let a = d.handle(full(), t0);
    assert!(has(&a, |a| matches!(
        a,
        Action::Persist(StateBodies { pods: Some(_), .. })
    )));
    d.handle(full(), t0);
    assert_eq!(d.current().unwrap().pods.len(), 1);
    d
}

fn pod_event(json: &str) -> MarathonEvent {
    parse_event(None, json).unwrap()
}

#[test]
fn a_pod_container_event_is_applied_at_once_and_never_fetches_an_app() {
    let t0 = Instant::now();
    let mut d = synced_with_pod(t0);
    let other = "shop.instance-44444444-4444-4444-4444-444444444444";
    let running = pod_event(&format!(
        r#"{{"eventType":"status_update_event","taskId":"{other}.web.1","appId":"/shop","taskStatus":"TASK_RUNNING","host":"10.0.0.6","ports":[31006],"ipAddresses":[]}}"#
    ));
    let a = d.handle(Input::Stream(vec![event(running, t0)]), t0);
    let p = published(&a);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].apps.pods[0].instances.len(), 2);
    assert_eq!(p[0].origin, Origin::MarathonEvent);
    // No fetch of any kind follows, now or after the debounce.
    assert!(fetches(&a).is_empty());
    assert!(fetches(&d.handle(Input::Tick, t0 + Duration::from_secs(5))).is_empty());
    let killing = pod_event(&format!(
        r#"{{"eventType":"status_update_event","taskId":"{POD_INSTANCE}.web.1","appId":"/shop","taskStatus":"TASK_KILLING","ports":[]}}"#
    ));
    let a = d.handle(Input::Stream(vec![event(killing, t0)]), t0);
    assert_eq!(
        published(&a)[0].apps.pods[0].instances[0].containers[0].status,
        Some(crate::model::TaskState::Killing)
    );
}

#[test]
fn pod_definition_events_fetch_that_pod_or_all_pods_debounced_and_a_404_removes_it() {
    let t0 = Instant::now();
    let mut d = synced_with_pod(t0);
    let deleted = pod_event(
        r#"{"eventType":"pod_deleted_event","clientIp":"1.2.3.4","uri":"/v2/pods/shop"}"#,
    );
    let a = d.handle(Input::Stream(vec![event(deleted, t0)]), t0);
    assert!(fetches(&a).is_empty(), "debounced");
    let a = d.handle(Input::Tick, t0 + ms(200));
    assert_eq!(fetches(&a), vec![FetchJob::Pods(vec!["/shop".into()])]);
    let a = d.handle(
        Input::FetchDone(FetchOutcome::Pods {
            results: vec![("/shop".into(), Ok((PodFetch::Gone, t0)))],
            url: "http://m1:8080/".into(),
        }),
        t0 + ms(300),
    );
    assert!(published(&a)[0].apps.pods.is_empty());
    // A create names no pod: every pod is fetched again, once for a burst.
    let created =
        pod_event(r#"{"eventType":"pod_created_event","clientIp":"1.2.3.4","uri":"/v2/pods"}"#);
    d.handle(
        Input::Stream(vec![event(created.clone(), t0), event(created, t0)]),
        t0 + ms(400),
    );
    let a = d.handle(Input::Tick, t0 + ms(600));
    assert_eq!(fetches(&a), vec![FetchJob::AllPods]);
    let a = d.handle(
        Input::FetchDone(FetchOutcome::AllPods(Ok(PodsFetch {
            pods: crate::model::pod::parse_pods_status(br#"[{"id":"/new"}]"#).unwrap(),
            body: None,
            fetched_at: t0,
        }))),
        t0 + ms(700),
    );
    assert_eq!(published(&a)[0].apps.pods[0].id, "/new");
}

#[test]
fn queued_pods_wait_behind_queued_apps_and_both_are_fetched() {
    let t0 = Instant::now();
    let mut d = synced_with_pod(t0);
    let updated = pod_event(
        r#"{"eventType":"pod_updated_event","clientIp":"1.2.3.4","uri":"/v2/pods/shop"}"#,
    );
    d.handle(
        Input::Stream(vec![event(api_post("/web"), t0), event(updated, t0)]),
        t0,
    );
    let a = d.handle(Input::Tick, t0 + ms(200));
    assert_eq!(fetches(&a), vec![FetchJob::Apps(vec!["/web".into()])]);
    let a = d.handle(
        Input::FetchDone(FetchOutcome::Apps {
            results: vec![("/web".into(), Ok((AppFetch::Gone, t0)))],
            url: "http://m1:8080/".into(),
        }),
        t0 + ms(250),
    );
    assert_eq!(fetches(&a), vec![FetchJob::Pods(vec!["/shop".into()])]);
}
