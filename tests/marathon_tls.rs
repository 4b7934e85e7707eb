//! The Marathon source over HTTPS against the fake Marathon served by rustls, with certificates
//! made at test time (rcgen): a custom CA bundle (`--marathon-ca-file`, which replaces the
//! built-in roots), a wrong CA, no CA at all, `--marathon-insecure`, client certificates (mTLS),
//! the event stream over TLS, the real `vipd` binary with the real flags, and bad PEM files.
//!
//! Everything listens on 127.0.0.1:0 and the server certificate is for the IP address 127.0.0.1,
//! so no name is ever resolved. Waits are bounded polls on conditions, never fixed sleeps.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::daemon::VipdProcess;
use support::fake_marathon::{app, apps_doc, status_update, wait_until, FakeMarathon, TestPki};
use support::{free_port, read_tag, TaggedEchoServer, LOCALHOST, PATIENCE};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vipd::source::marathon::client::MarathonClient;
use vipd::source::marathon::{
    spawn, ConfigError, FetchError, MarathonConfig, MarathonStatusHandle, Secret, SyncErrorKind,
};
use vipd::source::{Origin, SourceSnapshot};

const PASSWORD: &str = "Tls-Pw-41d8cd98-DoNotLog";
const U1: &str = "11111111-1111-1111-1111-111111111111";
const U2: &str = "22222222-2222-2222-2222-222222222222";

fn task(app: &str, u: &str) -> String {
    format!("{app}.instance-{u}._app.1")
}

fn web_apps() -> serde_json::Value {
    apps_doc(vec![app("/web", &[(&task("web", U1), "10.0.0.1", 31001)])])
}

fn config(url: &str) -> MarathonConfig {
    let mut c = MarathonConfig::new(&[url]).unwrap();
    c.connect_timeout = Duration::from_secs(2);
    c.request_timeout = Duration::from_secs(5);
    c.stream_timeout = Duration::from_secs(5);
    c.event_debounce = Duration::from_millis(50);
    c.backoff_initial = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c.resync_interval = Duration::from_secs(3600);
    c
}

/// `config(url)` trusting only `ca` (like `--marathon-ca-file`).
fn config_with_ca(url: &str, ca: &Path) -> MarathonConfig {
    let mut c = config(url);
    c.tls.ca_file = Some(ca.to_path_buf());
    c
}

struct Running {
    rx: watch::Receiver<Option<SourceSnapshot>>,
    status: MarathonStatusHandle,
    shutdown: CancellationToken,
    _handle: vipd::source::SourceHandle,
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
        status,
        shutdown,
        _handle: handle,
    }
}

impl Running {
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
        tokio::time::timeout(PATIENCE, fut)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for snapshot: {what}"))
    }

    async fn synced(&self) {
        let st = self.status.clone();
        wait_until("stream connected and synced", || {
            let s = st.get();
            s.sse_connected && s.stream_synced && !s.fetch_pending
        })
        .await;
    }

    /// Waits until at least `n` sync errors of `kind` were counted.
    async fn errors(&self, kind: SyncErrorKind, n: u64) {
        let st = self.status.clone();
        wait_until(&format!("{n} {kind} errors"), || {
            st.get().errors_of(kind) >= n
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

/// The app's backends as the source published them: `(host, ports)` of `/web`'s tasks.
fn web_backends(s: &SourceSnapshot) -> Vec<(String, Vec<u16>)> {
    s.apps
        .apps
        .iter()
        .filter(|a| a.id == "/web")
        .flat_map(|a| a.tasks.iter())
        .map(|t| (t.host.clone().unwrap_or_default(), t.ports.clone()))
        .collect()
}

/// One full fetch through the real client, for its exact error.
async fn fetch_once(cfg: &MarathonConfig) -> Result<usize, FetchError> {
    let client = MarathonClient::new(cfg).expect("client builds");
    client.fetch_apps().await.map(|f| f.snapshot.apps.len())
}

/// A rejected server: the source keeps retrying, counts `Connect` errors, publishes nothing,
/// and no HTTP request (so no credential) ever reached the server.
async fn assert_rejected(fake: &FakeMarathon, cfg: MarathonConfig) {
    let r = start(cfg);
    r.errors(SyncErrorKind::Connect, 2).await;
    let st = r.status.get();
    assert!(!st.sse_connected, "{st:?}");
    assert_eq!(st.full_fetches, 0, "{st:?}");
    assert_eq!(st.snapshots_emitted, 0, "{st:?}");
    assert!(r.rx.borrow().is_none(), "a snapshot was published");
    assert_eq!(fake.count("/v2/apps"), 0, "a request went through");
    assert_eq!(fake.count("/v2/events"), 0, "a request went through");
}

#[tokio::test]
async fn ca_bundle_verifies_the_server_and_the_source_syncs() {
    let pki = TestPki::generate();
    let fake = FakeMarathon::start_tls(web_apps(), pki.server()).await;
    assert!(
        fake.url().starts_with("https://127.0.0.1:"),
        "{}",
        fake.url()
    );
    let mut r = start(config_with_ca(&fake.url(), &pki.ca));
    let s = r
        .snapshot_where("/web over https", |s| !web_backends(s).is_empty())
        .await;
    assert_eq!(s.origin, Origin::MarathonFull);
    assert_eq!(
        web_backends(&s),
        vec![("10.0.0.1".to_string(), vec![31001])]
    );
    r.synced().await;
    let st = r.status.get();
    assert_eq!(st.current_url, format!("{}/", fake.url()));
    assert_eq!(st.errors_of(SyncErrorKind::Connect), 0, "{st:?}");
    assert!(fake.tls_handshakes_ok() >= 1);
    assert_eq!(fake.tls_handshakes_failed(), 0, "{:?}", fake.tls_errors());
}

#[tokio::test]
async fn a_wrong_ca_is_a_reported_connect_error_that_publishes_nothing_and_leaks_no_secret() {
    let pki = TestPki::generate();
    let fake = FakeMarathon::start_tls(web_apps(), pki.server()).await;
    fake.require_basic("alice", PASSWORD);
    let url = fake.url_with("alice", PASSWORD);

    // The exact error of one fetch: a connect error naming the certificate problem, no password.
    let err = fetch_once(&config_with_ca(&url, &pki.other_ca))
        .await
        .expect_err("a server signed by another CA was accepted");
    assert_eq!(err.kind(), SyncErrorKind::Connect, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&fake.url()) && text.to_lowercase().contains("certificate"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "password in the error: {text}");
    assert!(!format!("{err:?}").contains(PASSWORD), "password in Debug");

    // The running source: counted as a connect error, nothing published, nothing sent.
    assert_rejected(&fake, config_with_ca(&url, &pki.other_ca)).await;
    assert!(
        fake.tls_handshakes_failed() >= 1,
        "the client did not abort"
    );
    assert_eq!(fake.tls_handshakes_ok(), 0);
    // Same rule with the password given by flag instead of the URL.
    let mut cfg = config_with_ca(&fake.url(), &pki.other_ca);
    cfg.auth.basic = Some(("alice".into(), Secret::new(PASSWORD)));
    let err = fetch_once(&cfg).await.expect_err("accepted");
    assert!(!err.to_string().contains(PASSWORD), "{err}");
}

#[tokio::test]
async fn without_ca_file_or_insecure_the_built_in_roots_reject_a_private_ca() {
    let pki = TestPki::generate();
    let fake = FakeMarathon::start_tls(web_apps(), pki.server()).await;
    let cfg = config(&fake.url());
    assert!(cfg.tls.ca_file.is_none() && !cfg.tls.insecure);
    let err = fetch_once(&cfg)
        .await
        .expect_err("a private CA was trusted");
    assert_eq!(err.kind(), SyncErrorKind::Connect, "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    assert_rejected(&fake, config(&fake.url())).await;
}

#[tokio::test]
async fn insecure_skips_verification_with_a_wrong_ca_or_none() {
    let pki = TestPki::generate();
    let fake = FakeMarathon::start_tls(web_apps(), pki.server()).await;
    for ca in [None, Some(pki.other_ca.clone())] {
        let mut cfg = config(&fake.url());
        cfg.tls.ca_file = ca.clone();
        cfg.tls.insecure = true;
        let mut r = start(cfg);
        let s = r
            .snapshot_where("/web with --marathon-insecure", |s| {
                !web_backends(s).is_empty()
            })
            .await;
        assert_eq!(
            web_backends(&s),
            vec![("10.0.0.1".to_string(), vec![31001])],
            "ca {ca:?}"
        );
        r.synced().await;
    }
    assert_eq!(fake.tls_handshakes_failed(), 0, "{:?}", fake.tls_errors());
}

#[tokio::test]
async fn mtls_server_rejects_a_client_without_a_certificate() {
    let pki = TestPki::generate();
    let fake = FakeMarathon::start_tls(web_apps(), pki.server_requiring_client_cert()).await;
    let cfg = config_with_ca(&fake.url(), &pki.ca);
    let err = fetch_once(&cfg)
        .await
        .expect_err("no client cert, accepted");
    assert_eq!(err.kind(), SyncErrorKind::Connect, "{err}");
    assert_rejected(&fake, config_with_ca(&fake.url(), &pki.ca)).await;
    // The server refused the handshake because no certificate came.
    assert!(fake.tls_handshakes_failed() >= 1);
    let errors = fake.tls_errors();
    assert!(
        errors
            .iter()
            .any(|e| e.to_lowercase().contains("no certificate")),
        "{errors:?}"
    );
}

#[tokio::test]
async fn mtls_server_rejects_a_client_certificate_from_another_ca() {
    let pki = TestPki::generate();
    let fake = FakeMarathon::start_tls(web_apps(), pki.server_requiring_client_cert()).await;
    let mut cfg = config_with_ca(&fake.url(), &pki.ca);
    cfg.tls.client_cert = Some(pki.stranger_cert.clone());
    cfg.tls.client_key = Some(pki.stranger_key.clone());
    let err = fetch_once(&cfg).await.expect_err("stranger cert accepted");
    assert_eq!(err.kind(), SyncErrorKind::Connect, "{err}");
    assert_rejected(&fake, cfg).await;
    let errors = fake.tls_errors();
    assert!(
        errors
            .iter()
            .any(|e| e.to_lowercase().contains("unknownissuer")
                || e.to_lowercase().contains("unknown issuer")),
        "{errors:?}"
    );
}

#[tokio::test]
async fn mtls_server_accepts_the_client_certificate() {
    let pki = TestPki::generate();
    let fake = FakeMarathon::start_tls(web_apps(), pki.server_requiring_client_cert()).await;
    let mut cfg = config_with_ca(&fake.url(), &pki.ca);
    cfg.tls.client_cert = Some(pki.client_cert.clone());
    cfg.tls.client_key = Some(pki.client_key.clone());
    let mut r = start(cfg);
    let s = r
        .snapshot_where("/web over mTLS", |s| !web_backends(s).is_empty())
        .await;
    assert_eq!(
        web_backends(&s),
        vec![("10.0.0.1".to_string(), vec![31001])]
    );
    r.synced().await;
    assert_eq!(fake.tls_handshakes_failed(), 0, "{:?}", fake.tls_errors());
}

#[tokio::test]
async fn task_running_event_over_tls_adds_the_task_without_any_fetch() {
    let pki = TestPki::generate();
    let fake = FakeMarathon::start_tls(web_apps(), pki.server_requiring_client_cert()).await;
    fake.require_basic("alice", PASSWORD);
    let mut cfg = config_with_ca(&fake.url(), &pki.ca);
    cfg.tls.client_cert = Some(pki.client_cert.clone());
    cfg.tls.client_key = Some(pki.client_key.clone());
    cfg.auth.basic = Some(("alice".into(), Secret::new(PASSWORD)));
    let mut r = start(cfg);
    r.synced().await;
    assert_eq!(fake.open_streams(), 1);
    let stream_url = r.status.get().stream_url.unwrap_or_default();
    assert!(stream_url.starts_with("https://127.0.0.1:"), "{stream_url}");
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
    assert!(
        task_of(&s, "/web", &task("web", U1)).is_some(),
        "old task kept"
    );
    assert_eq!(fake.count("/v2/apps"), full_before, "no extra GET /v2/apps");
    assert_eq!(fake.app_fetches(), app_before, "no GET /v2/apps/{{id}}");
    assert!(r.status.get().events_applied >= 1);
}

// === The real binary ===

/// One host-mode app on `service_port` forwarding to `backend`.
fn e2e_apps(service_port: u16, backend: SocketAddr) -> serde_json::Value {
    serde_json::json!({"apps": [{
        "id": "/web", "version": "2024-01-01T00:00:00.000Z",
        "networks": [{"mode": "host"}],
        "portDefinitions": [{"port": service_port, "protocol": "tcp", "name": "http"}],
        "healthChecks": [],
        "tasks": [{
            "id": task("web", U1), "appId": "/web", "host": backend.ip().to_string(),
            "ports": [backend.port()], "state": "TASK_RUNNING", "ipAddresses": [],
            "healthCheckResults": [], "version": "2024-01-01T00:00:00.000Z"
        }],
    }]})
}

/// True once vipd logged that it listens on `frontend`.
fn listening(vipd: &VipdProcess, frontend: SocketAddr) -> bool {
    let local = format!("local={frontend}");
    vipd.log()
        .iter()
        .any(|l| l.contains("listening") && l.contains(&local))
}

/// Waits until vipd says it listens on `frontend`, then until the backend tagged `tag` answers
/// through it (so a failure tells "never bound" from "bound but not forwarding").
async fn wait_served_by(vipd: &VipdProcess, frontend: SocketAddr, tag: &str) -> bool {
    support::eventually(PATIENCE, || listening(vipd, frontend)).await
        && wait_for_tag(frontend, tag).await
}

/// Connects until the backend tagged `tag` answers through `addr`.
async fn wait_for_tag(addr: SocketAddr, tag: &str) -> bool {
    support::eventually_async(PATIENCE, || async move {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            return false;
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), read_tag(&mut s)).await,
            Ok(Ok(got)) if got == tag
        )
    })
    .await
}

/// A loopback address for one test's service port that nothing else in these tests binds:
/// the kernel hands out the ports of `bind(…:0)` on 127.0.0.1 (fakes, backends, vipd's admin
/// server), one of which could otherwise take the port `free_port` just released.
fn service_ip(test: u8) -> std::net::IpAddr {
    support::loopback(70 + test)
}

fn vipd_args<'a>(bind: &'a str, url: &'a str, tls: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--marathon",
        url,
        "--bind-address",
        bind,
        "--admin-listen",
        "127.0.0.1:0",
        "--marathon-backoff-initial",
        "50ms",
        "--marathon-backoff-max",
        "200ms",
    ];
    args.extend_from_slice(tls);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vipd_binary_follows_marathon_over_mtls_with_the_real_flags() {
    let pki = TestPki::generate();
    let b1 = TaggedEchoServer::start("b1").await;
    let ip = service_ip(1);
    let bind = ip.to_string();
    let port = free_port(ip);
    let frontend: SocketAddr = (ip, port).into();
    let fake =
        FakeMarathon::start_tls(e2e_apps(port, b1.addr), pki.server_requiring_client_cert()).await;
    fake.require_basic("vipd", PASSWORD);
    let url = fake.url_with("vipd", PASSWORD);
    let (ca, cert, key) = (
        pki.ca.to_str().unwrap(),
        pki.client_cert.to_str().unwrap(),
        pki.client_key.to_str().unwrap(),
    );
    let vipd = VipdProcess::start_with_env(
        &vipd_args(
            &bind,
            &url,
            &[
                "--marathon-ca-file",
                ca,
                "--marathon-client-cert",
                cert,
                "--marathon-client-key",
                key,
            ],
        ),
        &[("VIPD_LOG_LEVEL", "debug")],
    );
    assert!(
        wait_served_by(&vipd, frontend, "b1").await,
        "the service port never reached the backend; fake: {} handshakes ok, failed {:?}, \
         {} GET /v2/apps; vipd log:\n{}",
        fake.tls_handshakes_ok(),
        fake.tls_errors(),
        fake.count("/v2/apps"),
        vipd.log().join("\n")
    );
    assert!(fake.tls_handshakes_ok() >= 1);
    assert_eq!(fake.tls_handshakes_failed(), 0, "{:?}", fake.tls_errors());
    wait_until("event stream open over TLS", || fake.open_streams() >= 1).await;
    let log = vipd.log().join("\n");
    assert!(!log.contains(PASSWORD), "password in the log");
    assert!(
        !log.contains("NOT be verified"),
        "insecure warning without --marathon-insecure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vipd_binary_with_the_wrong_ca_publishes_nothing_and_logs_why() {
    let pki = TestPki::generate();
    let b1 = TaggedEchoServer::start("b1").await;
    let ip = service_ip(2);
    let bind = ip.to_string();
    let port = free_port(ip);
    let fake = FakeMarathon::start_tls(e2e_apps(port, b1.addr), pki.server()).await;
    let url = fake.url_with("vipd", PASSWORD);
    let other = pki.other_ca.to_str().unwrap();
    let vipd = VipdProcess::start_with_env(
        &vipd_args(&bind, &url, &["--marathon-ca-file", other]),
        &[("VIPD_LOG_LEVEL", "info")],
    );
    assert!(
        support::eventually(PATIENCE, || vipd.count_log("Marathon sync failed") >= 1).await,
        "{}",
        vipd.log().join("\n")
    );
    // The client aborted the handshakes (the API fetch and the event stream both tried).
    wait_until("two rejected handshakes", || {
        fake.tls_handshakes_failed() >= 2
    })
    .await;
    let log = vipd.log().join("\n");
    let line = vipd
        .log()
        .into_iter()
        .find(|l| l.contains("Marathon sync failed"))
        .unwrap();
    assert!(line.contains("kind=connect"), "{line}");
    assert!(line.to_lowercase().contains("certificate"), "{line}");
    assert!(!log.contains(PASSWORD), "password in the log:\n{log}");
    assert_eq!(vipd.count_log("published table"), 0, "{log}");
    assert_eq!(fake.count("/v2/apps"), 0);
    assert!(
        !listening(&vipd, (ip, port).into()),
        "the service port listens without a table:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vipd_binary_with_insecure_syncs_and_warns() {
    let pki = TestPki::generate();
    let b1 = TaggedEchoServer::start("b1").await;
    let ip = service_ip(3);
    let bind = ip.to_string();
    let port = free_port(ip);
    let frontend: SocketAddr = (ip, port).into();
    let fake = FakeMarathon::start_tls(e2e_apps(port, b1.addr), pki.server()).await;
    let url = fake.url();
    let vipd = VipdProcess::start(&vipd_args(&bind, &url, &["--marathon-insecure"]));
    assert!(
        wait_served_by(&vipd, frontend, "b1").await,
        "fake: {} handshakes ok, failed {:?}, {} GET /v2/apps; vipd log:\n{}",
        fake.tls_handshakes_ok(),
        fake.tls_errors(),
        fake.count("/v2/apps"),
        vipd.log().join("\n")
    );
    assert_eq!(
        vipd.count_log("--marathon-insecure: Marathon's TLS certificate will NOT be verified"),
        1,
        "{}",
        vipd.log().join("\n")
    );
}

/// Runs `vipd run` expecting it to refuse its configuration: returns (exit code, stderr).
fn run_expecting_config_error(tls: &[&str]) -> (Option<i32>, String) {
    // A released port: nothing is reached even if the configuration were (wrongly) accepted.
    let url = format!("https://127.0.0.1:{}", free_port(LOCALHOST));
    let mut child = Command::new(env!("CARGO_BIN_EXE_vipd"))
        .args(vipd_args("127.0.0.1", &url, tls))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vipd");
    let deadline = std::time::Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vipd accepted a bad TLS configuration and kept running");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

/// The only line of a refused start: `Error: Marathon source: <what> <path>: <reason>`.
fn error_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines[..] {
        [line] if line.starts_with("Error: ") => line,
        _ => panic!("expected exactly one `Error:` line in:\n{stderr}"),
    }
}

#[test]
fn bad_pem_files_are_clear_config_errors_of_the_binary() {
    let pki = TestPki::generate();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n").unwrap();
    let truncated = dir.path().join("truncated.pem");
    let ca_pem = std::fs::read_to_string(&pki.ca).unwrap();
    std::fs::write(&truncated, &ca_pem[..ca_pem.len() / 2]).unwrap();
    let missing = dir.path().join("missing.pem");
    // PEM armour around bytes that are not a certificate: only rustls notices.
    let not_der = dir.path().join("not-der.pem");
    std::fs::write(
        &not_der,
        "-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (garbage_s, truncated_s, missing_s) = (s(&garbage), s(&truncated), s(&missing));
    let (cert_s, key_s, not_der_s) = (s(&pki.client_cert), s(&pki.client_key), s(&not_der));
    let stranger_key_s = s(&pki.stranger_key);

    let cases: Vec<(&str, Vec<&str>, &str, &str)> = vec![
        (
            "garbage CA file",
            vec!["--marathon-ca-file", &garbage_s],
            &garbage_s,
            "no PEM certificate",
        ),
        (
            "truncated CA file",
            vec!["--marathon-ca-file", &truncated_s],
            &truncated_s,
            "CA file",
        ),
        (
            "missing CA file",
            vec!["--marathon-ca-file", &missing_s],
            &missing_s,
            "No such file",
        ),
        (
            "CA file entry that is not a certificate",
            vec!["--marathon-ca-file", &not_der_s],
            &not_der_s,
            "certificate #1",
        ),
        (
            "client key of another certificate",
            vec![
                "--marathon-client-cert",
                &cert_s,
                "--marathon-client-key",
                &stranger_key_s,
            ],
            &cert_s,
            &stranger_key_s,
        ),
        (
            "garbage client key",
            vec![
                "--marathon-client-cert",
                &cert_s,
                "--marathon-client-key",
                &garbage_s,
            ],
            &garbage_s,
            "client certificate/key",
        ),
        (
            "missing client key",
            vec![
                "--marathon-client-cert",
                &cert_s,
                "--marathon-client-key",
                &missing_s,
            ],
            &missing_s,
            "client key",
        ),
        (
            "garbage client certificate",
            vec![
                "--marathon-client-cert",
                &garbage_s,
                "--marathon-client-key",
                &key_s,
            ],
            &garbage_s,
            "client certificate/key",
        ),
    ];
    for (what, flags, path, needle) in cases {
        let (code, stderr) = run_expecting_config_error(&flags);
        assert_eq!(code, Some(1), "{what}: exit code; stderr:\n{stderr}");
        let line = error_line(&stderr);
        assert!(
            line.starts_with("Error: Marathon source: ") && line.contains(path),
            "{what}: the error does not name the file: {line}"
        );
        eprintln!("{what}: {line}");
        assert!(line.contains(needle), "{what}: {line}");
        assert!(!stderr.contains("panicked"), "{what}:\n{stderr}");
    }
}

#[test]
fn config_errors_name_the_tls_file() {
    // The library-level counterpart: the typed error for each bad file.
    let pki = TestPki::generate();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    let mut cfg = config("https://127.0.0.1:1");
    cfg.tls.ca_file = Some(garbage.clone());
    match cfg.validate() {
        Err(ConfigError::Tls { path, what, .. }) => {
            assert_eq!((path, what), (garbage.clone(), "CA file"))
        }
        other => panic!("{other:?}"),
    }
    let mut cfg = config("https://127.0.0.1:1");
    cfg.tls.client_cert = Some(pki.client_cert.clone());
    cfg.tls.client_key = None;
    assert!(matches!(cfg.validate(), Err(ConfigError::HalfClientCert)));
    // A good CA with a key of another certificate: the pair is blamed, not the CA.
    let mut cfg = config("https://127.0.0.1:1");
    cfg.tls.ca_file = Some(pki.ca.clone());
    cfg.tls.client_cert = Some(pki.client_cert.clone());
    cfg.tls.client_key = Some(pki.stranger_key.clone());
    match cfg.validate() {
        Err(e @ ConfigError::Tls { .. }) => {
            let text = e.to_string();
            assert!(
                text.starts_with("client certificate/key ")
                    && text.contains(pki.client_cert.to_str().unwrap())
                    && text.contains(pki.stranger_key.to_str().unwrap()),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A valid pair validates; so does the CA bundle.
    let mut cfg = config("https://127.0.0.1:1");
    cfg.tls.ca_file = Some(pki.ca.clone());
    cfg.tls.client_cert = Some(pki.client_cert.clone());
    cfg.tls.client_key = Some(pki.client_key.clone());
    cfg.validate().expect("a good CA and client pair");
}
