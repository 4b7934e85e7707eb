//! Hostile input to the Marathon and file sources (issue 22 items 2-4, issue 20 "Source
//! documents"): bodies past `--max-document-size`, large events during a slow fetch, redirects
//! to another host, deeply nested JSON. Each test is named after the finding it pins. Real HTTP
//! fakes on 127.0.0.1:0; waits are bounded polls on conditions.

mod support;

use std::time::Duration;
use support::fake_marathon::{app, apps_doc, status_update, wait_until, FakeMarathon};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vipd::source::marathon::client::RedirectHost;
use vipd::source::marathon::{spawn, MarathonConfig, MarathonStatusHandle, SyncErrorKind};
use vipd::source::SourceSnapshot;

const U1: &str = "11111111-1111-1111-1111-111111111111";

fn task(app: &str, u: &str) -> String {
    format!("{app}.instance-{u}._app.1")
}

fn config(urls: &[&str]) -> MarathonConfig {
    support::fake_marathon::fast_config(urls)
}

fn web_apps() -> serde_json::Value {
    apps_doc(vec![
        app("/web", &[(&task("web", U1), "10.0.0.1", 31001)]),
        app("/db", &[]),
    ])
}

/// `n` apps without tasks: about 200 bytes each.
fn many_apps(n: usize) -> serde_json::Value {
    apps_doc((0..n).map(|i| app(&format!("/app{i}"), &[])).collect())
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

impl Running {
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

    fn apps(&self) -> Vec<String> {
        self.rx
            .borrow()
            .as_ref()
            .map(|s| s.apps.apps.iter().map(|a| a.id.clone()).collect())
            .unwrap_or_default()
    }

    async fn synced(&self) {
        let st = self.status.clone();
        wait_until("stream connected and synced", || {
            let s = st.get();
            s.sse_connected && s.stream_synced && !s.fetch_pending
        })
        .await;
    }

    async fn errors(&self, kind: SyncErrorKind, at_least: u64) {
        let st = self.status.clone();
        wait_until(&format!("{kind} errors >= {at_least}"), || {
            st.get().errors_of(kind) >= at_least
        })
        .await;
    }
}

#[tokio::test]
async fn an_apps_body_over_max_document_size_is_refused_and_the_last_good_snapshot_keeps_serving() {
    let fake = FakeMarathon::start(web_apps()).await;
    let mut cfg = config(&[&fake.url()]);
    cfg.max_document_size = 64 * 1024;
    let r = Running::start(cfg);
    r.synced().await;
    assert_eq!(r.apps(), ["/web", "/db"]);
    let emitted = r.status.get().snapshots_emitted;

    // ~400 KB with a Content-Length: refused before the body is read.
    let big = many_apps(2_000);
    assert!(big.to_string().len() > 4 * 64 * 1024);
    fake.set_apps(big);
    r.handle.resync();
    r.errors(SyncErrorKind::Parse, 1).await;
    // Streamed without a Content-Length: refused while it streams in.
    fake.set_chunked_bodies(true);
    r.handle.resync();
    r.errors(SyncErrorKind::Parse, 2).await;
    assert_eq!(r.apps(), ["/web", "/db"], "the last good snapshot stays");
    assert_eq!(r.status.get().snapshots_emitted, emitted, "nothing emitted");

    // A body under the cap is read again (chunked too).
    fake.set_apps(many_apps(3));
    r.handle.resync();
    let st = r.status.clone();
    wait_until("recovered", || st.get().snapshots_emitted > emitted).await;
    assert_eq!(r.apps(), ["/app0", "/app1", "/app2"]);
}

#[tokio::test]
async fn large_events_during_a_slow_fetch_past_the_replay_byte_bound_drop_the_buffer_and_resync() {
    let fake = FakeMarathon::start(web_apps()).await;
    let mut cfg = config(&[&fake.url()]);
    cfg.max_replay_bytes = 2 << 20;
    let r = Running::start(cfg);
    r.synced().await;
    let before = fake.count("/v2/apps");

    fake.set_apps_delay(Some(Duration::from_millis(1500)));
    r.handle.resync();
    wait_until("the slow fetch started", || {
        fake.count("/v2/apps") == before + 1
    })
    .await;
    // Five task events of 1 MiB each while it is in flight: 5 MiB to replay, over the bound.
    let padding = "x".repeat(1 << 20);
    for i in 0..5 {
        let u = format!("{i:08}-2222-2222-2222-222222222222");
        let mut ev = status_update("/web", &task("web", &u), "TASK_RUNNING", "10.0.0.2", 31002);
        ev["message"] = serde_json::Value::String(padding.clone());
        fake.send_event("status_update_event", &ev);
    }
    let st = r.status.clone();
    wait_until("the five events applied", || st.get().events_applied >= 5).await;
    // The replay was dropped: a full resync follows the slow fetch.
    wait_until("a full resync after the slow fetch", || {
        fake.count("/v2/apps") >= before + 2
    })
    .await;
    fake.set_apps_delay(None);
    r.synced().await;
}

#[tokio::test]
async fn an_event_larger_than_the_channel_byte_budget_still_gets_through() {
    let fake = FakeMarathon::start(web_apps()).await;
    let mut cfg = config(&[&fake.url()]);
    // The reader may queue 4 KiB of events for the driver; this event alone is 64 KiB.
    cfg.max_queued_event_bytes = 4 * 1024;
    let r = Running::start(cfg);
    r.synced().await;
    let t = task("web", "33333333-3333-3333-3333-333333333333");
    for i in 0..3u16 {
        let mut ev = status_update("/web", &t, "TASK_RUNNING", "10.0.0.3", 31003 + i);
        ev["message"] = serde_json::Value::String("y".repeat(64 * 1024));
        fake.send_event("status_update_event", &ev);
    }
    let st = r.status.clone();
    wait_until("three big events applied", || st.get().events_applied >= 3).await;
}

#[tokio::test]
async fn a_redirect_to_another_host_never_receives_the_credentials_and_its_answer_is_not_applied() {
    let marathon = FakeMarathon::start(web_apps()).await;
    marathon.require_basic("alice", "pw-marathon");
    // Another authority: same address, another port.
    let other = FakeMarathon::start(apps_doc(vec![])).await;
    let r = Running::start(config(&[&marathon.url_with("alice", "pw-marathon")]));
    r.synced().await;
    assert_eq!(r.apps(), ["/web", "/db"]);

    marathon.redirect_api_to(&other.url());
    r.handle.resync();
    r.errors(SyncErrorKind::HttpStatus, 1).await;
    assert_eq!(other.count("/v2/apps"), 0, "refused before any request");
    assert!(other.api_authorizations().is_empty());
    assert_eq!(r.apps(), ["/web", "/db"], "its empty answer is not applied");
}

#[tokio::test]
async fn a_redirect_to_a_host_named_by_trust_redirect_host_is_followed_with_the_credentials() {
    let marathon = FakeMarathon::start(web_apps()).await;
    marathon.require_basic("alice", "pw-marathon");
    let leader = FakeMarathon::start(apps_doc(vec![app("/moved", &[])])).await;
    leader.require_basic("alice", "pw-marathon");
    let mut cfg = config(&[&marathon.url_with("alice", "pw-marathon")]);
    cfg.trusted_redirect_hosts = vec![RedirectHost::parse(&leader.addr.to_string()).unwrap()];
    let r = Running::start(cfg);
    r.synced().await;

    marathon.redirect_api_to(&leader.url());
    r.handle.resync();
    let rx = r.rx.clone();
    wait_until("the trusted host's answer applied", || {
        rx.borrow()
            .as_ref()
            .is_some_and(|s| s.apps.apps.iter().any(|a| a.id == "/moved"))
    })
    .await;
    assert!(leader
        .api_authorizations()
        .iter()
        .all(|a| a.as_deref().is_some_and(|a| a.starts_with("Basic "))));
}

#[test]
fn trust_redirect_host_values_parse_or_are_refused_with_an_error() {
    // Matching is pinned in client.rs and through the fakes above. Here: what parses.
    for ok in [
        "m1.example",
        "M1.Example:8080",
        "10.0.0.1:8080",
        "[fd00::1]:8080",
        "fd00::1",
    ] {
        RedirectHost::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in ["", "m1:http", "http://m1", "m1/x", "[fd00::1", "a@b:1"] {
        assert!(RedirectHost::parse(bad).is_err(), "{bad:?} must be refused");
    }
}

#[test]
fn deeply_nested_json_is_an_error_never_a_stack_overflow() {
    // serde_json stops typed parsing at 128 levels and skips raw values without recursing; a
    // small stack proves that nothing recurses per level.
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let open = |prefix: &str| format!("{prefix}{}", "[".repeat(200_000));
            let closed = |prefix: &str, suffix: &str| {
                format!(
                    "{prefix}{}{}{suffix}",
                    "[".repeat(200_000),
                    "]".repeat(200_000)
                )
            };
            // The whole document: an error.
            assert!(vipd::model::parse_apps_document(open(r#"{"apps":"#).as_bytes()).is_err());
            // One app nested deep inside a valid document: that app is rejected, the rest kept.
            let doc = closed(r#"{"apps":[{"id":"/ok"},{"id":"/deep","labels":"#, "}]}");
            let snapshot = vipd::model::parse_apps_document(doc.as_bytes()).unwrap();
            assert_eq!(snapshot.apps.len(), 1);
            assert_eq!(snapshot.apps[0].id, "/ok");
            assert_eq!(snapshot.rejected.len(), 1);
            let one = closed(r#"{"app":{"id":"/deep","labels":"#, "}}");
            assert!(!matches!(
                vipd::model::parse_single_app_document(one.as_bytes()),
                Ok(Ok(_))
            ));
            // Events: deep nesting in an ignored field is skipped, in a typed field an error.
            let ev = |field: &str| {
                vipd::source::marathon::events::parse_event(
                    Some("status_update_event"),
                    &closed(
                        &format!(
                            r#"{{"taskId":"t","appId":"/a","taskStatus":"TASK_RUNNING","{field}":"#
                        ),
                        "}",
                    ),
                )
            };
            assert!(ev("unknownField").is_ok());
            assert!(ev("ports").is_err());
            let e = vipd::source::marathon::events::parse_event(None, &open(r#"{"eventType":"#));
            assert!(e.is_err());
        })
        .unwrap();
    handle.join().expect("no stack overflow, no panic");
}

#[tokio::test]
async fn an_apps_file_over_max_document_size_keeps_the_last_good_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    std::fs::write(&path, web_apps().to_string()).unwrap();
    let shutdown = CancellationToken::new();
    let mut handle = vipd::source::file::spawn(path.clone(), 4 * 1024, shutdown.clone());
    tokio::time::timeout(Duration::from_secs(5), handle.snapshots.changed())
        .await
        .unwrap()
        .unwrap();
    let ids = |h: &vipd::source::SourceHandle| -> Vec<String> {
        h.snapshots
            .borrow()
            .as_ref()
            .unwrap()
            .apps
            .apps
            .iter()
            .map(|a| a.id.clone())
            .collect()
    };
    assert_eq!(ids(&handle), ["/web", "/db"]);
    std::fs::write(&path, many_apps(100).to_string()).unwrap();
    let r = tokio::time::timeout(Duration::from_millis(1200), handle.snapshots.changed()).await;
    assert!(r.is_err(), "an oversized file must not publish");
    assert_eq!(ids(&handle), ["/web", "/db"]);
    shutdown.cancel();
}

/// Runs `vipd ARGS`, waiting at most 30 s (then kills it and fails): stdout, stderr, exit code.
fn vipd_bounded(args: &[&str]) -> (Option<i32>, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_vipd"))
        .args(args)
        .env_remove("VIPD_APPS")
        .env_remove("VIPD_MAX_DOCUMENT_SIZE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vipd");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            return (status.code(), stderr);
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("vipd {args:?} did not finish in 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn vipd_table_on_dev_zero_is_one_error_line_not_an_endless_read() {
    let (code, stderr) = vipd_bounded(&[
        "table",
        "--apps",
        "/dev/zero",
        "--max-document-size",
        "1MiB",
    ]);
    assert_ne!(code, Some(0));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("/dev/zero") && stderr.contains("larger than 1048576 bytes"),
        "{stderr}"
    );
}

#[test]
fn vipd_table_refuses_an_apps_file_over_max_document_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    std::fs::write(&path, many_apps(100).to_string()).unwrap();
    let p = path.to_str().unwrap();
    let (code, stderr) = vipd_bounded(&["table", "--apps", p, "--max-document-size", "4KiB"]);
    assert_ne!(code, Some(0));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("larger than 4096 bytes"), "{stderr}");
    // The same file under the default cap is fine.
    let (code, stderr) = vipd_bounded(&["table", "--apps", p]);
    assert_eq!(code, Some(0), "{stderr}");
}
