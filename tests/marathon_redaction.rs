//! Credentials never reach logs, errors, status or Debug output of the Marathon source.
//!
//! A global tracing subscriber at `debug` for every crate (vipd, reqwest, hyper) writes into a
//! buffer; connections with a password fail (wrong password, refused port, 500) and succeed
//! (URL userinfo, flags, redirect to a leader); the password must never appear in the buffer.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::fake_marathon::{app, apps_doc, wait_until, FakeMarathon, Mode};
use tokio_util::sync::CancellationToken;
use vipd::source::marathon::{spawn, MarathonConfig, Secret, SyncErrorKind};

const PASSWORD: &str = "Pw-7f3c9e1a-DoNotLog";

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn config(urls: &[&str]) -> MarathonConfig {
    let mut c = MarathonConfig::new(urls).unwrap();
    c.connect_timeout = Duration::from_secs(1);
    c.request_timeout = Duration::from_secs(5);
    c.backoff_initial = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(100);
    c.event_debounce = Duration::from_millis(20);
    c
}

#[tokio::test]
async fn the_password_never_appears_in_logs_status_or_debug() {
    let buf = Buf::default();
    let writer = buf.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let doc = apps_doc(vec![app("/web", &[])]);
    let leader = FakeMarathon::start(doc.clone()).await;
    leader.require_basic("alice", PASSWORD);
    let follower = FakeMarathon::start(doc.clone()).await;
    follower.require_basic("alice", PASSWORD);
    follower.redirect_events_to(&leader.url());
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };

    let mut statuses = Vec::new();
    let mut debug_dumps = Vec::new();

    // 1. Success: password in the URL, a dead first URL, the events redirect to the leader.
    {
        let mut cfg = config(&[
            &format!(
                "http://alice:{PASSWORD}@{}",
                dead.trim_start_matches("http://")
            ),
            &follower.url_with("alice", PASSWORD),
        ]);
        // The leader is another authority (another port): trusted by name.
        cfg.trusted_redirect_hosts =
            vec![
                vipd::source::marathon::client::RedirectHost::parse(&leader.addr.to_string())
                    .unwrap(),
            ];
        debug_dumps.push(format!("{cfg:?}"));
        let shutdown = CancellationToken::new();
        let (h, status) = spawn(cfg, shutdown.clone());
        let s = status.clone();
        wait_until("synced via redirect", || {
            let g = s.get();
            g.sse_connected && g.stream_synced
        })
        .await;
        assert!(h.snapshots.borrow().is_some());
        statuses.push(format!("{:?}", status.get()));
        shutdown.cancel();
    }
    // 2. Failure: wrong password given by flag (401 on every call).
    {
        let mut cfg = config(&[&leader.url()]);
        cfg.auth.basic = Some(("alice".into(), Secret::new(format!("{PASSWORD}-wrong"))));
        debug_dumps.push(format!("{cfg:?}"));
        let shutdown = CancellationToken::new();
        let (_h, status) = spawn(cfg, shutdown.clone());
        let s = status.clone();
        wait_until("401s", || {
            s.get().errors_of(SyncErrorKind::Unauthorized) >= 2
        })
        .await;
        statuses.push(format!("{:?}", status.get()));
        shutdown.cancel();
    }
    // 3. Failure: right password, Marathon answers 500.
    {
        leader.set_api_mode(Mode::Error500);
        let mut cfg = config(&[&leader.url()]);
        cfg.auth.basic = Some(("alice".into(), Secret::new(PASSWORD)));
        let shutdown = CancellationToken::new();
        let (_h, status) = spawn(cfg, shutdown.clone());
        let s = status.clone();
        wait_until("500s", || s.get().errors_of(SyncErrorKind::HttpStatus) >= 2).await;
        statuses.push(format!("{:?}", status.get()));
        shutdown.cancel();
    }

    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    // The test can fail: the failures above were logged, with their (redacted) URLs.
    assert!(logs.contains("Marathon sync failed"), "{logs}");
    assert!(logs.contains(&leader.url()), "{logs}");
    for (what, text) in [
        ("logs", &logs),
        ("status", &statuses.join("\n")),
        ("Debug", &debug_dumps.join("\n")),
    ] {
        assert!(!text.contains(PASSWORD), "password in {what}:\n{text}");
    }
    // Not even base64-encoded in an Authorization header dump.
    let b64 = {
        // "alice:<PASSWORD>" in base64, computed with the std-only encoder below.
        encode(format!("alice:{PASSWORD}").as_bytes())
    };
    assert!(!logs.contains(&b64), "basic auth header in logs");
}

fn encode(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in input.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}
