//! The status page (`GET /` on the admin port) through the real binary and a real browser:
//! Debian's headless Chromium loads it against a running vipd, finds the frontend and its
//! backend's state in the rendered DOM, and saves a screenshot under `target/tmp/`. The filter
//! box and the escaping of cluster values are exercised over plain HTTP.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::daemon::{http_get, VipdProcess};
use support::{free_port, roundtrip, TaggedEchoServer, LOCALHOST, PATIENCE};

/// Debian's Chromium (`apt-get install chromium`; `.ci/run` installs it).
fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Runs headless Chromium with the flags the project's tests use, bounded in time. Returns
/// stdout.
fn run_chromium(chromium: &Path, profile: &Path, extra: &[&str], url: &str) -> String {
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match child.try_wait().expect("wait chromium") {
            Some(_) => break,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish within 60 s");
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let out = child.wait_with_output().expect("chromium output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_frontends_backends_source_and_changes_in_a_real_browser() {
    let Some(chromium) = chromium() else {
        println!("skipped: chromium is not installed (apt-get install chromium)");
        return;
    };
    let backend = TaggedEchoServer::start("b1").await;
    let port = free_port(LOCALHOST);
    let dir = tempfile::tempdir().unwrap();
    let apps = serde_json::json!({"apps": [{
        "id": "/web<b>",
        "portDefinitions": [{"port": port, "name": "http"}],
        "tasks": [{"id": "web.1", "host": "127.0.0.1", "ports": [backend.addr.port()],
                   "state": "TASK_RUNNING"}],
    }]});
    let (_vipd, admin) = VipdProcess::run_on_apps(dir.path(), &apps, &[], PATIENCE);
    let frontend = (LOCALHOST, port).into();
    assert!(
        support::eventually_async(PATIENCE, || async {
            roundtrip(frontend, b"hello").await.is_ok()
        })
        .await
    );
    let key = format!("tcp:127.0.0.1:{port}");

    // Plain HTTP: the page, its headers, and the filter.
    let (code, page) = http_get(&format!("http://{admin}/")).await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains(&format!("data-frontend=\"{key}\"")), "{page}");
    assert!(
        page.contains("· app /web&lt;b&gt;"),
        "the owner kind and the escaped app id: {page}"
    );
    assert!(page.contains("<th>source</th><td>file</td>"), "{page}");
    assert!(page.contains("id=\"changes\""), "{page}");
    let (_, filtered) = http_get(&format!("http://{admin}/?q=nothing-matches")).await;
    assert!(filtered.contains("0 of 1 frontends match"), "{filtered}");
    assert!(!filtered.contains("data-frontend="), "{filtered}");
    let (_, by_task) = http_get(&format!("http://{admin}/?q=WEB.1")).await;
    assert!(by_task.contains("1 of 1 frontends match"), "{by_task}");

    // The browser: the DOM has the frontend and its backend's state. Everything is in the
    // server's HTML (the page's only script reloads it), so without JavaScript a browser shows
    // the same; Chromium's --dump-dom cannot run with scripting off, so that case is the HTTP
    // check above.
    let url = format!("http://{admin}/");
    let profile = tempfile::tempdir().unwrap();
    let dom = run_chromium(&chromium, profile.path(), &["--dump-dom"], &url);
    assert!(
        dom.contains(&format!("data-frontend=\"{key}\"")),
        "no frontend in the DOM:\n{dom}"
    );
    let row = format!("data-backend=\"{}\"", backend.addr);
    let at = dom
        .find(&row)
        .unwrap_or_else(|| panic!("no backend row:\n{dom}"));
    assert!(
        dom[at..].contains("class=\"up\">up</td>"),
        "the backend's state is not up:\n{}",
        &dom[at..]
    );
    assert!(
        dom.contains("<span class=\"up\" id=\"ready\">ready</span>"),
        "{dom}"
    );
    assert_eq!(
        dom.matches("data-frontend=").count(),
        page.matches("data-frontend=").count()
    );

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    run_chromium(
        &chromium,
        profile.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,900",
        ],
        &url,
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 5_000, "screenshot suspiciously small");
    println!("screenshot: {}", shot.display());
}
