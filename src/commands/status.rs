//! `vipd status [--admin URL] [--json | --ready]`: a running vipd's frontends and backends, read
//! from its admin API (`GET /v1/vips`), printed in the manner of `ipvsadm -Ln` or as JSON; or,
//! with `--ready`, its `/readyz` answer (exit 0 only when ready: a container's health check).
//!
//! Owns: the view of `/v1/vips` it reads ([`VipsView`]: the fields it shows, parsed leniently so
//! an older or newer vipd still answers), the pure formatting ([`render_table`]), and the thin
//! HTTP fetch. Errors name the URL and say why no answer came (refused, timeout, status).
//!
//! Must not: change anything on the vipd it asks (one GET), exit the process or print errors
//! (`main.rs` prints [`StatusError`] as one line and exits 1).

use crate::cli::StatusArgs;
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::time::Duration;

/// Why no status was printed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("--admin {0:?} is not an address: give host:port or http://host:port")]
    BadAdmin(String),
    #[error("no vipd answers at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered {status}, not 200: is that vipd's admin port?")]
    Status { url: String, status: String },
    #[error("{url} did not answer with vipd's /v1/vips JSON: {reason}")]
    Parse { url: String, reason: String },
    #[error("{url} answered {status}: {reason}")]
    NotReady {
        url: String,
        status: String,
        reason: String,
    },
    #[error("cannot write the status: {0}")]
    Write(#[source] io::Error),
}

/// What `vipd status` reads from `/v1/vips` (and prints with `--json`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct VipsView {
    pub generation: u64,
    pub frontends: Vec<FrontendView>,
    pub warnings: Vec<WarningView>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct FrontendView {
    pub protocol: String,
    pub listen: String,
    pub kind: String,
    pub vip_name: Option<String>,
    /// The owner app.
    pub app: String,
    pub listener: Option<ListenerView>,
    pub stats: Option<FrontendStatsView>,
    pub backends: Vec<BackendView>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct ListenerView {
    /// `bound`, `pending`, `failed`, `unsupported`, `unknown`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct FrontendStatsView {
    /// Connections accepted (UDP: flows created).
    pub accepted: u64,
    /// Open connections (UDP: live flows).
    pub active: u64,
    pub no_backend: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct BackendView {
    pub address: String,
    pub task: String,
    /// What the table says: `up`, `unknown`, `unhealthy`, `draining`.
    pub state: String,
    /// vipd's own runtime view; absent for a backend the data plane has not seen yet.
    pub runtime: Option<BackendRuntimeView>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct BackendRuntimeView {
    /// `healthy`, `ejected`, `probe_down`, `probe_pending`.
    pub health: String,
    pub health_reason: Option<String>,
    pub active: u64,
    pub total: u64,
    pub bytes_to_backend: u64,
    pub bytes_from_backend: u64,
    pub ejections: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct WarningView {
    pub app: Option<String>,
    pub message: String,
}

/// The `/v1/vips` URL of the admin server `admin` names (`host:port` or `http://host:port[/]`).
pub fn vips_url(admin: &str) -> Result<reqwest::Url, StatusError> {
    let bad = || StatusError::BadAdmin(admin.to_string());
    let given = admin.trim();
    let base = if given.contains("://") {
        given.to_string()
    } else {
        format!("http://{given}")
    };
    let mut url = reqwest::Url::parse(&base).map_err(|_| bad())?;
    let is_root = matches!(url.path(), "" | "/") && url.query().is_none();
    if !matches!(url.scheme(), "http" | "https") || !url.host_str().is_some_and(|h| !h.is_empty()) {
        return Err(bad());
    }
    if !is_root {
        return Err(bad());
    }
    url.set_path("/v1/vips");
    Ok(url)
}

/// The table: one line per frontend (protocol, listen address, kind, listener state, connections,
/// owner app and VIP name), each followed by its backends (`  -> address`, table state, vipd's
/// health and why, connections, bytes each way, task).
pub fn render_table(view: &VipsView) -> String {
    let mut rows: Vec<Vec<String>> = vec![
        [
            "Prot",
            "LocalAddress:Port",
            "Kind",
            "Listener",
            "ActiveConn",
            "Accepted",
            "",
            "",
            "Owner [VIP name]",
        ]
        .map(String::from)
        .to_vec(),
        [
            "  ->",
            "RemoteAddress:Port",
            "State",
            "Health",
            "ActiveConn",
            "Total",
            "ToBackend",
            "FromBackend",
            "Task",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let dash = || "-".to_string();
    for f in &view.frontends {
        let listener = f.listener.as_ref().map_or_else(dash, |l| match &l.error {
            Some(e) => format!("{}({e})", l.state),
            None => l.state.clone(),
        });
        let (active, accepted) = f.stats.as_ref().map_or_else(
            || (dash(), dash()),
            |s| (s.active.to_string(), s.accepted.to_string()),
        );
        let owner = match &f.vip_name {
            Some(name) => format!("{} [{name}]", f.app),
            None => f.app.clone(),
        };
        rows.push(vec![
            f.protocol.to_uppercase(),
            f.listen.clone(),
            f.kind.clone(),
            listener,
            active,
            accepted,
            String::new(),
            String::new(),
            owner,
        ]);
        for b in &f.backends {
            let row = match &b.runtime {
                Some(r) => vec![
                    match &r.health_reason {
                        Some(why) if r.health != "healthy" => format!("{}({why})", r.health),
                        _ => r.health.clone(),
                    },
                    r.active.to_string(),
                    r.total.to_string(),
                    r.bytes_to_backend.to_string(),
                    r.bytes_from_backend.to_string(),
                ],
                None => vec![dash(), dash(), dash(), dash(), dash()],
            };
            let mut line = vec!["  ->".to_string(), b.address.clone(), b.state.clone()];
            line.extend(row);
            line.push(b.task.clone());
            rows.push(line);
        }
    }
    let mut out = format!(
        "vipd table generation {}: {} frontend{}, {} backend{}\n",
        view.generation,
        view.frontends.len(),
        plural(view.frontends.len()),
        view.frontends
            .iter()
            .map(|f| f.backends.len())
            .sum::<usize>(),
        plural(view.frontends.iter().map(|f| f.backends.len()).sum()),
    );
    out.push_str(&align(&rows));
    for w in &view.warnings {
        match &w.app {
            Some(app) => out.push_str(&format!("warning: {app}: {}\n", w.message)),
            None => out.push_str(&format!("warning: {}\n", w.message)),
        }
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Pads every column but the last to its widest cell; trailing spaces are trimmed.
fn align(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c] - cell.chars().count() + 2;
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The one line that says why a request got no answer: refused, timed out, or the lowest cause.
fn unreachable_reason(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!(
            "no answer within {}",
            crate::cli::duration::format_duration(timeout)
        );
    }
    let mut lowest: &dyn std::error::Error = e;
    while let Some(next) = lowest.source() {
        lowest = next;
    }
    if let Some(io) = (lowest as &(dyn std::error::Error + 'static)).downcast_ref::<io::Error>() {
        if io.kind() == io::ErrorKind::ConnectionRefused {
            return "connection refused (is vipd running, with this --admin-listen?)".into();
        }
    }
    lowest.to_string()
}

/// GETs `url`, one request, no proxy.
async fn get(
    url: reqwest::Url,
    timeout: Duration,
) -> Result<(reqwest::StatusCode, bytes::Bytes), StatusError> {
    let shown = url.to_string();
    let unreachable = |e: reqwest::Error| StatusError::Unreachable {
        url: shown.clone(),
        reason: unreachable_reason(&e, timeout),
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .map_err(unreachable)?;
    let resp = client.get(url).send().await.map_err(unreachable)?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(unreachable)?;
    Ok((status, body))
}

/// GETs `/readyz`: `Ok(body)` when it is 200, [`StatusError::NotReady`] with its first line
/// otherwise.
pub async fn ready(admin: &str, timeout: Duration) -> Result<String, StatusError> {
    let mut url = vips_url(admin)?;
    url.set_path("/readyz");
    let shown = url.to_string();
    let (status, body) = get(url, timeout).await?;
    let body = String::from_utf8_lossy(&body).into_owned();
    if status != reqwest::StatusCode::OK {
        return Err(StatusError::NotReady {
            url: shown,
            status: status.to_string(),
            reason: body.lines().next().unwrap_or("").to_string(),
        });
    }
    Ok(body)
}

/// GETs `/v1/vips` from the admin server `admin`.
pub async fn fetch(admin: &str, timeout: Duration) -> Result<VipsView, StatusError> {
    let url = vips_url(admin)?;
    let shown = url.to_string();
    let (status, body) = get(url, timeout).await?;
    if status != reqwest::StatusCode::OK {
        return Err(StatusError::Status {
            url: shown,
            status: status.to_string(),
        });
    }
    serde_json::from_slice(&body).map_err(|e| StatusError::Parse {
        url: shown,
        reason: e.to_string(),
    })
}

/// `vipd status`: fetch, then print the table or (`--json`) the same as pretty JSON; with
/// `--ready`, print `/readyz` (an error unless it is 200).
pub async fn run(args: &StatusArgs, out: &mut impl Write) -> Result<(), StatusError> {
    if args.ready {
        let body = ready(&args.admin, args.timeout).await?;
        return out
            .write_all(body.as_bytes())
            .and_then(|()| out.flush())
            .map_err(StatusError::Write);
    }
    let view = fetch(&args.admin, args.timeout).await?;
    let text = if args.json {
        let mut s =
            serde_json::to_string_pretty(&view).map_err(|e| StatusError::Write(e.into()))?;
        s.push('\n');
        s
    } else {
        render_table(&view)
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(StatusError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `/v1/vips` answer as vipd's admin server writes it (fields `vipd status` ignores
    /// included): a service port with a healthy and an ejected backend, a named VIP whose
    /// backend the data plane has not seen, and a warning.
    fn answer() -> serde_json::Value {
        serde_json::json!({
            "generation": 7,
            "frontends": [
                {
                    "protocol": "tcp", "listen": "0.0.0.0:10000", "kind": "service_port",
                    "vip_name": null, "app": "/web", "apps": ["/web"], "port_index": 0,
                    "port_name": "http",
                    "listener": {"state": "bound", "local": "0.0.0.0:10000"},
                    "stats": {"accepted": 12, "active": 2, "no_backend": 0, "cut": 0,
                              "accept_errors_resource": 0, "accept_errors_other": 0},
                    "backends": [
                        {"address": "10.0.0.1:31000", "task": "web.1", "state": "up",
                         "runtime": {"active": 2, "total": 10, "failures_refused": 0,
                                     "failures_timeout": 0, "failures_other": 0,
                                     "consecutive_failures": 0, "last_failure": null,
                                     "bytes_to_backend": 1234, "bytes_from_backend": 56789,
                                     "health": "healthy", "health_reason": null,
                                     "ejected": false, "ejections": 0}},
                        {"address": "10.0.0.2:31000", "task": "web.2", "state": "up",
                         "runtime": {"active": 0, "total": 2, "bytes_to_backend": 0,
                                     "bytes_from_backend": 0, "health": "ejected",
                                     "health_reason": "connect_refused", "ejected": true,
                                     "ejections": 1}}
                    ]
                },
                {
                    "protocol": "udp", "listen": "11.0.0.7:53", "kind": "vip",
                    "vip_name": "dns.marathon.l4lb.thisdcos.directory", "app": "/dns",
                    "apps": ["/dns"], "port_index": 0, "port_name": null,
                    "listener": {"state": "failed", "error": "address in use", "attempts": 3},
                    "backends": [
                        {"address": "10.0.0.3:5353", "task": "dns.1", "state": "unknown"}
                    ]
                }
            ],
            "warnings": [{"app": "/bad", "message": "port 0 has no servicePort"}]
        })
    }

    fn view() -> VipsView {
        serde_json::from_value(answer()).unwrap()
    }

    #[test]
    fn table_lists_each_frontend_then_its_backends_in_columns() {
        let text = render_table(&view());
        let want = "\
vipd table generation 7: 2 frontends, 3 backends
Prot  LocalAddress:Port   Kind          Listener                  ActiveConn  Accepted                          Owner [VIP name]
  ->  RemoteAddress:Port  State         Health                    ActiveConn  Total     ToBackend  FromBackend  Task
TCP   0.0.0.0:10000       service_port  bound                     2           12                                /web
  ->  10.0.0.1:31000      up            healthy                   2           10        1234       56789        web.1
  ->  10.0.0.2:31000      up            ejected(connect_refused)  0           2         0          0            web.2
UDP   11.0.0.7:53         vip           failed(address in use)    -           -                                 /dns [dns.marathon.l4lb.thisdcos.directory]
  ->  10.0.0.3:5353       unknown       -                         -           -         -          -            dns.1
warning: /bad: port 0 has no servicePort
";
        assert_eq!(text, want);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "vipd table generation 7: 2 frontends, 3 backends");
        assert!(
            lines[1].starts_with("Prot  LocalAddress:Port   Kind"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("  ->  RemoteAddress:Port  State"),
            "{text}"
        );
        let web = lines[3];
        assert!(web.starts_with("TCP   0.0.0.0:10000"), "{text}");
        assert!(web.ends_with("/web"), "{text}");
        let cells = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            cells(web),
            [
                "TCP",
                "0.0.0.0:10000",
                "service_port",
                "bound",
                "2",
                "12",
                "/web"
            ]
        );
        assert_eq!(
            cells(lines[4]),
            [
                "->",
                "10.0.0.1:31000",
                "up",
                "healthy",
                "2",
                "10",
                "1234",
                "56789",
                "web.1"
            ]
        );
        assert_eq!(
            cells(lines[5]),
            [
                "->",
                "10.0.0.2:31000",
                "up",
                "ejected(connect_refused)",
                "0",
                "2",
                "0",
                "0",
                "web.2"
            ]
        );
        assert_eq!(
            cells(lines[6]),
            [
                "UDP",
                "11.0.0.7:53",
                "vip",
                "failed(address",
                "in",
                "use)",
                "-",
                "-",
                "/dns",
                "[dns.marathon.l4lb.thisdcos.directory]"
            ]
        );
        // Not seen by the data plane yet: dashes, not zeros.
        assert_eq!(
            cells(lines[7]),
            [
                "->",
                "10.0.0.3:5353",
                "unknown",
                "-",
                "-",
                "-",
                "-",
                "-",
                "dns.1"
            ]
        );
        assert_eq!(lines[8], "warning: /bad: port 0 has no servicePort");
        assert_eq!(lines.len(), 9);
        // Columns line up: the address and ActiveConn columns start where the header's do.
        let col = |l: &str, n: usize| {
            let mut seen = 0;
            let mut prev_space = true;
            for (i, ch) in l.char_indices() {
                if ch != ' ' && prev_space {
                    if seen == n {
                        return i;
                    }
                    seen += 1;
                }
                prev_space = ch == ' ';
            }
            usize::MAX
        };
        for l in &lines[2..6] {
            assert_eq!(col(l, 4), col(lines[1], 4), "ActiveConn column:\n{text}");
            assert_eq!(col(l, 1), col(lines[1], 1), "address column:\n{text}");
        }
        assert!(text.lines().all(|l| l == l.trim_end()));
    }

    #[test]
    fn an_empty_table_still_prints_its_header() {
        let text = render_table(&VipsView {
            generation: 1,
            ..VipsView::default()
        });
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.starts_with("vipd table generation 1: 0 frontends, 0 backends\n"));
    }

    #[test]
    fn json_carries_what_the_table_shows() {
        let v = serde_json::to_value(view()).unwrap();
        assert_eq!(v["generation"], 7);
        let web = &v["frontends"][0];
        assert_eq!(web["listen"], "0.0.0.0:10000");
        assert_eq!(web["app"], "/web");
        assert_eq!(web["stats"]["active"], 2);
        assert_eq!(web["backends"][1]["runtime"]["health"], "ejected");
        assert_eq!(web["backends"][0]["runtime"]["bytes_from_backend"], 56789);
        assert_eq!(
            v["frontends"][1]["vip_name"],
            "dns.marathon.l4lb.thisdcos.directory"
        );
        // Fields vipd status does not show are not echoed.
        assert!(web.get("port_index").is_none());
        // And it reads back to the same view.
        assert_eq!(serde_json::from_value::<VipsView>(v).unwrap(), view());
    }

    #[test]
    fn admin_accepts_host_port_or_url() {
        for (given, want) in [
            ("127.0.0.1:61421", "http://127.0.0.1:61421/v1/vips"),
            ("http://127.0.0.1:61421", "http://127.0.0.1:61421/v1/vips"),
            ("http://127.0.0.1:61421/", "http://127.0.0.1:61421/v1/vips"),
            ("[::1]:61421", "http://[::1]:61421/v1/vips"),
            (
                "agent-1.example:8080",
                "http://agent-1.example:8080/v1/vips",
            ),
        ] {
            assert_eq!(vips_url(given).unwrap().as_str(), want, "{given}");
        }
        for bad in [
            "",
            "ftp://x:1",
            "http://",
            "not a url:x",
            "http://127.0.0.1:61421/v1/vips",
        ] {
            let e = vips_url(bad).unwrap_err();
            assert!(matches!(e, StatusError::BadAdmin(_)), "{bad}: {e}");
        }
    }
}
