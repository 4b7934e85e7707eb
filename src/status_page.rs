//! The status page served on `GET /` of the admin port: the balancer at a glance.
//!
//! Owns: the page's view model ([`StatusView`]: frontends with their backends' state and
//! counters, the source's status, the last table changes), the query it understands
//! ([`PageQuery`]: `q` filters, `page` pages), and rendering it to one self-contained HTML
//! document ([`render`]): no external asset, usable with JavaScript off (a `<noscript>` meta
//! refresh), and with JavaScript on a small inline script that refreshes unless the filter box
//! is being typed in. Every value from the cluster (app ids, task ids, VIP names, labels) is
//! HTML-escaped.
//!
//! Must not: read runtime state itself or a clock (the admin server assembles the view, with the
//! time passed in), or render more than one page of frontends: at 5,000 frontends the page shows
//! [`PageQuery::PER_PAGE`] of them and a filter box.

use std::fmt::Write;

/// What the page was asked for: `?q=<filter>&page=<n>` (pages count from 1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageQuery {
    /// Case-insensitive substring of a frontend's listen key, VIP name, owners, port name, or a
    /// backend's address or task id. Empty: every frontend.
    pub filter: String,
    /// 1-based; 0 and values past the last page show the nearest page.
    pub page: usize,
}

impl PageQuery {
    /// Frontends shown per page.
    pub const PER_PAGE: usize = 100;
}

/// One backend row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendRow {
    pub address: String,
    pub task: String,
    /// What the table says (`up`, `unknown`, `unhealthy`, `draining`).
    pub table_state: &'static str,
    /// What vipd observed (`healthy`, `ejected`, `probe_down`, `probe_pending`).
    pub health: &'static str,
    /// Why vipd last found it unhealthy (`connect_refused`, `probe_timeout`, …), if ever.
    pub health_reason: Option<&'static str>,
    pub active: u64,
    pub total: u64,
    pub bytes_to_backend: u64,
    pub bytes_from_backend: u64,
    pub ejections: u64,
}

impl BackendRow {
    /// The one state an operator needs, and why: draining wins (the source said so), then vipd's
    /// own verdicts, then the source's health.
    pub fn verdict(&self) -> (&'static str, String) {
        match (self.table_state, self.health) {
            ("draining", _) => ("draining", "task is being killed (source)".into()),
            (_, "ejected") => (
                "ejected",
                format!(
                    "passive ejection: {}",
                    self.health_reason.unwrap_or("connect failures")
                ),
            ),
            (_, "probe_down") => (
                "down",
                format!(
                    "active check: {}",
                    self.health_reason.unwrap_or("probe failed")
                ),
            ),
            ("unhealthy", _) => ("unhealthy", "health check failing (source)".into()),
            ("unknown", _) => ("unknown", "no health check result yet (source)".into()),
            (_, "probe_pending") => ("pending", "first active check not finished".into()),
            (state, _) => (state, String::new()),
        }
    }
}

/// One frontend and its backends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrontendRow {
    /// `tcp:0.0.0.0:10000`.
    pub key: String,
    /// `service_port` or `vip`.
    pub kind: &'static str,
    pub vip_name: Option<String>,
    /// `app`, `pod` or `task` (a Mesos task).
    pub owner_kind: &'static str,
    /// The owners contributing backends (app or pod ids), sorted.
    pub owners: Vec<String>,
    pub port_name: Option<String>,
    /// `bound`, `pending`, `failed: …`, `unsupported: …`.
    pub listener: String,
    pub accepted: u64,
    pub active: u64,
    pub no_backend: u64,
    pub backends: Vec<BackendRow>,
}

/// What the filter box searches: a frontend's listen key, VIP name, port name, owners, and its
/// backends' addresses and task ids.
pub trait Filterable {
    /// Whether `needle` (already lowercase; empty matches everything) occurs in any field the
    /// filter covers.
    fn matches(&self, needle: &str) -> bool;
}

fn has(field: &str, needle: &str) -> bool {
    field.to_ascii_lowercase().contains(needle)
}

impl Filterable for FrontendRow {
    fn matches(&self, needle: &str) -> bool {
        needle.is_empty()
            || has(&self.key, needle)
            || self.vip_name.as_deref().is_some_and(|v| has(v, needle))
            || self.port_name.as_deref().is_some_and(|p| has(p, needle))
            || self.owners.iter().any(|o| has(o, needle))
            || self
                .backends
                .iter()
                .any(|b| has(&b.address, needle) || has(&b.task, needle))
    }
}

/// The same fields, read from the table itself: the admin server filters the published
/// frontends first and builds rows (with their runtime counters) for one page only.
impl Filterable for &crate::table::Frontend {
    fn matches(&self, needle: &str) -> bool {
        needle.is_empty()
            || has(&self.key().to_string(), needle)
            || self.vip_name.as_deref().is_some_and(|v| has(v, needle))
            || self.port_name.as_deref().is_some_and(|p| has(p, needle))
            || self.apps.iter().any(|o| has(o, needle))
            || self
                .backends
                .iter()
                .any(|b| has(&b.address.to_string(), needle) || has(&b.task, needle))
    }
}

/// One recent publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeRow {
    pub generation: u64,
    /// Seconds before the page was rendered.
    pub age_secs: u64,
    pub origin: String,
    pub summary: String,
    pub frontends: Vec<String>,
}

/// Everything the page shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusView {
    pub version: String,
    pub generation: u64,
    pub ready: bool,
    /// The `/readyz` reason (`ready`, `no table published yet`, …).
    pub readiness: String,
    /// The source's status as label/value rows (connected, last sync, snapshot age, stale).
    pub source: Vec<(String, String)>,
    pub changes: Vec<ChangeRow>,
    /// Frontends in the table.
    pub total_frontends: usize,
    /// Frontends matching the filter.
    pub matched: usize,
    /// The page shown (1-based) and the number of pages.
    pub page: usize,
    pub pages: usize,
    pub query: PageQuery,
    /// The frontends of this page.
    pub frontends: Vec<FrontendRow>,
    /// Build warnings in the current table.
    pub warnings: usize,
}

/// Keeps the items matching `query` and cuts out its page. Returns (matched, page, pages, the
/// items of the page).
pub fn paginate<T: Filterable>(
    items: impl Iterator<Item = T>,
    query: &PageQuery,
) -> (usize, usize, usize, Vec<T>) {
    let needle = query.filter.trim().to_ascii_lowercase();
    let matching: Vec<T> = items.filter(|r| r.matches(&needle)).collect();
    let matched = matching.len();
    let pages = matched.div_ceil(PageQuery::PER_PAGE).max(1);
    let page = query.page.clamp(1, pages);
    let shown = matching
        .into_iter()
        .skip((page - 1) * PageQuery::PER_PAGE)
        .take(PageQuery::PER_PAGE)
        .collect();
    (matched, page, pages, shown)
}

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query value (everything but unreserved characters).
fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Seconds between refreshes.
pub const REFRESH_SECS: u32 = 5;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em}\
table{border-collapse:collapse;margin:.3em 0 1em}\
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}\
th{background:#f2f2f2}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.up,.healthy{color:#176117}.draining,.unknown,.pending{color:#8a6d00}\
.ejected,.down,.unhealthy,.failed{color:#b00020;font-weight:bold}\
.fe{margin-top:1em}.muted{color:#777}code{font-size:.95em}";

/// Refreshes every [`REFRESH_SECS`], but not while the filter box has the focus.
const SCRIPT: &str = "setInterval(function(){var q=document.getElementById('q');\
if(document.activeElement!==q){location.reload();}},5000);";

/// Renders the page.
pub fn render(v: &StatusView) -> String {
    let mut h = String::with_capacity(16 * 1024 + v.frontends.len() * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>vipd status</title>\
<noscript><meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\"></noscript>\
<style>{STYLE}</style><script>{SCRIPT}</script></head><body>\n"
    );
    let (ready_class, ready_word) = if v.ready {
        ("up", "ready")
    } else {
        ("failed", "not ready")
    };
    let _ = write!(
        h,
        "<h1>vipd {}</h1>\n<p>Table generation <b id=\"generation\">{}</b> · \
<span class=\"{ready_class}\" id=\"ready\">{ready_word}</span>{} · {} frontends · {} warnings · \
<a href=\"/v1/vips\">/v1/vips</a> · <a href=\"/metrics\">/metrics</a> · <a href=\"/v1/config\">/v1/config</a></p>\n",
        escape(&v.version),
        v.generation,
        if v.ready {
            String::new()
        } else {
            format!(" ({})", escape(&v.readiness))
        },
        v.total_frontends,
        v.warnings,
    );

    h.push_str("<h2>Source</h2>\n<table id=\"source\">");
    for (label, value) in &v.source {
        let _ = write!(
            h,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(label),
            escape(value)
        );
    }
    h.push_str("</table>\n");

    h.push_str("<h2>Last table changes</h2>\n");
    if v.changes.is_empty() {
        h.push_str("<p class=\"muted\">none yet</p>\n");
    } else {
        h.push_str(
            "<table id=\"changes\"><tr><th>generation</th><th>age</th><th>origin</th>\
<th>change</th><th>frontends</th></tr>",
        );
        for c in &v.changes {
            let _ = write!(
                h,
                "<tr><td class=\"n\">{}</td><td class=\"n\">{}s</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                c.generation,
                c.age_secs,
                escape(&c.origin),
                escape(&c.summary),
                escape(&c.frontends.join(" "))
            );
        }
        h.push_str("</table>\n");
    }

    let _ = write!(
        h,
        "<h2>Frontends</h2>\n<form method=\"get\" action=\"/\">\
<input type=\"search\" id=\"q\" name=\"q\" value=\"{}\" placeholder=\"filter: address, VIP, app, task\" size=\"40\"> \
<button type=\"submit\">Filter</button></form>\n<p id=\"shown\">{} of {} frontends match; page {} of {}.",
        escape(&v.query.filter),
        v.matched,
        v.total_frontends,
        v.page,
        v.pages
    );
    let link = |page: usize| {
        format!(
            "/?q={}&amp;page={page}",
            encode_query_value(&v.query.filter)
        )
    };
    if v.page > 1 {
        let _ = write!(h, " <a href=\"{}\">previous</a>", link(v.page - 1));
    }
    if v.page < v.pages {
        let _ = write!(h, " <a href=\"{}\">next</a>", link(v.page + 1));
    }
    h.push_str("</p>\n");

    for f in &v.frontends {
        render_frontend(&mut h, f);
    }
    h.push_str("</body></html>\n");
    h
}

fn render_frontend(h: &mut String, f: &FrontendRow) {
    let listener_class = if f.listener == "bound" {
        "up"
    } else {
        "failed"
    };
    let _ = write!(
        h,
        "<div class=\"fe\" data-frontend=\"{key}\"><b><code>{key}</code></b> {kind}",
        key = escape(&f.key),
        kind = f.kind
    );
    if let Some(name) = &f.vip_name {
        let _ = write!(h, " <code>{}</code>", escape(name));
    }
    let _ = write!(h, " · {} {} ", f.owner_kind, escape(&f.owners.join(", ")));
    if let Some(name) = &f.port_name {
        let _ = write!(h, "· port {} ", escape(name));
    }
    let _ = write!(
        h,
        "· listener <span class=\"{listener_class}\">{}</span> · accepted {} · active {} · no backend {}",
        escape(&f.listener),
        f.accepted,
        f.active,
        f.no_backend
    );
    if f.backends.is_empty() {
        h.push_str("<p class=\"failed\">no backends</p></div>\n");
        return;
    }
    h.push_str(
        "<table><tr><th>backend</th><th>task</th><th>state</th><th>why</th><th>active</th>\
<th>total</th><th>bytes to</th><th>bytes from</th><th>ejections</th></tr>",
    );
    for b in &f.backends {
        let (state, why) = b.verdict();
        let _ = write!(
            h,
            "<tr data-backend=\"{addr}\"><td><code>{addr}</code></td><td>{}</td><td class=\"{state}\">{state}</td>\
<td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&b.task),
            escape(&why),
            b.active,
            b.total,
            b.bytes_to_backend,
            b.bytes_from_backend,
            b.ejections,
            addr = escape(&b.address),
        );
    }
    h.push_str("</table></div>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frontend(port: u16, owner: &str, backends: usize) -> FrontendRow {
        FrontendRow {
            key: format!("tcp:0.0.0.0:{port}"),
            kind: "service_port",
            owners: vec![owner.into()],
            listener: "bound".into(),
            backends: (0..backends)
                .map(|i| BackendRow {
                    address: format!("10.0.0.{i}:8080"),
                    task: format!("{owner}.task-{i}"),
                    table_state: "up",
                    health: "healthy",
                    ..BackendRow::default()
                })
                .collect(),
            ..FrontendRow::default()
        }
    }

    #[test]
    fn cluster_values_are_escaped_everywhere() {
        let mut f = frontend(80, "/<script>alert(1)</script>", 1);
        f.vip_name = Some("\"><img src=x>".into());
        f.backends[0].task = "t<b>".into();
        let view = StatusView {
            frontends: vec![f],
            query: PageQuery {
                filter: "\"><script>".into(),
                page: 1,
            },
            source: vec![("url".into(), "<http://m>".into())],
            ..StatusView::default()
        };
        let html = render(&view);
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("t<b>"), "{html}");
        assert!(!html.contains("\"><script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        // The only script is the page's own refresh.
        assert_eq!(html.matches("<script>").count(), 1);
    }

    #[test]
    fn works_without_javascript_and_loads_nothing_external() {
        let html = render(&StatusView::default());
        assert!(html.contains("<noscript><meta http-equiv=\"refresh\""));
        for external in ["src=\"http", "href=\"http", "//cdn", "<link"] {
            assert!(!html.contains(external), "{external} in {html}");
        }
    }

    #[test]
    fn filter_matches_owner_vip_backend_and_task_case_insensitively() {
        let mut web = frontend(80, "/web", 2);
        web.vip_name = Some("web.marathon.l4lb.thisdcos.directory".into());
        let db = frontend(5432, "/db", 1);
        for (needle, want) in [
            ("", 2),
            ("/WEB", 1),
            ("l4lb", 1),
            ("10.0.0.1:8080", 1),
            ("/db.task-0", 1),
            (":5432", 1),
            ("nothing", 0),
        ] {
            let q = PageQuery {
                filter: needle.into(),
                page: 1,
            };
            let (matched, _, _, rows) = paginate([web.clone(), db.clone()].into_iter(), &q);
            assert_eq!(matched, want, "{needle}");
            assert_eq!(rows.len(), want, "{needle}");
        }
    }

    #[test]
    fn five_thousand_frontends_render_one_page_with_links_to_the_next() {
        let rows = (0..5000u16).map(|p| frontend(10000 + p, "/app", 3));
        let q = PageQuery {
            filter: String::new(),
            page: 2,
        };
        let (matched, page, pages, shown) = paginate(rows, &q);
        assert_eq!((matched, page, pages, shown.len()), (5000, 2, 50, 100));
        assert_eq!(shown[0].key, "tcp:0.0.0.0:10100");
        let view = StatusView {
            total_frontends: 5000,
            matched,
            page,
            pages,
            query: q,
            frontends: shown,
            ..StatusView::default()
        };
        let html = render(&view);
        assert_eq!(html.matches("data-frontend=").count(), 100);
        assert!(html.contains("href=\"/?q=&amp;page=1\">previous"));
        assert!(html.contains("href=\"/?q=&amp;page=3\">next"));
        // Pages past the end show the last one.
        let (_, page, _, _) = paginate(
            (0..150u16).map(|p| frontend(p, "/a", 0)),
            &PageQuery {
                filter: String::new(),
                page: 99,
            },
        );
        assert_eq!(page, 2);
    }

    #[test]
    fn filter_survives_in_page_links() {
        let view = StatusView {
            page: 1,
            pages: 2,
            query: PageQuery {
                filter: "a b&c".into(),
                page: 1,
            },
            ..StatusView::default()
        };
        assert!(render(&view).contains("href=\"/?q=a%20b%26c&amp;page=2\">next"));
    }

    #[test]
    fn verdict_names_the_state_and_its_reason() {
        let b = |table_state, health, reason| BackendRow {
            table_state,
            health,
            health_reason: reason,
            ..BackendRow::default()
        };
        assert_eq!(b("up", "healthy", None).verdict(), ("up", String::new()));
        assert_eq!(
            b("up", "ejected", Some("connect_refused")).verdict(),
            ("ejected", "passive ejection: connect_refused".into())
        );
        assert_eq!(
            b("up", "probe_down", Some("probe_timeout")).verdict(),
            ("down", "active check: probe_timeout".into())
        );
        assert_eq!(b("draining", "ejected", None).verdict().0, "draining");
        assert_eq!(b("unhealthy", "healthy", None).verdict().0, "unhealthy");
        assert_eq!(b("unknown", "healthy", None).verdict().0, "unknown");
    }

    #[test]
    fn the_table_and_the_row_filter_the_same_fields() {
        use crate::table::{Backend, BackendState, Frontend, FrontendKind, Protocol};
        let f = Frontend {
            protocol: Protocol::Tcp,
            listen: ([0, 0, 0, 0], 80).into(),
            kind: FrontendKind::Vip,
            vip_name: Some("web.marathon.l4lb.thisdcos.directory".into()),
            app: "/web".into(),
            apps: vec!["/web".into(), "/web-canary".into()],
            owner_kind: Default::default(),
            port_index: 0,
            port_name: Some("http".into()),
            options: Default::default(),
            backends: vec![Backend {
                address: "10.0.0.7:31000".parse().unwrap(),
                task: "web.abc".into(),
                state: BackendState::Up,
            }]
            .into(),
        };
        let row = FrontendRow {
            key: f.key().to_string(),
            kind: "vip",
            vip_name: f.vip_name.clone(),
            owners: f.apps.clone(),
            port_name: f.port_name.clone(),
            backends: vec![BackendRow {
                address: "10.0.0.7:31000".into(),
                task: "web.abc".into(),
                ..BackendRow::default()
            }],
            ..FrontendRow::default()
        };
        for needle in [
            "",
            "tcp:0.0.0.0:80",
            "l4lb",
            "http",
            "canary",
            "10.0.0.7:31",
            "web.abc",
            "nope",
        ] {
            assert_eq!((&f).matches(needle), row.matches(needle), "{needle}");
        }
    }
}
