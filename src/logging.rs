//! Log output of the daemon: the stderr writer that never fails, the field formatting (text and
//! JSON lines), and the `--log-level` check.
//!
//! Owns: [`LossyStderr`] (writes each line to fd 2; a line that cannot be written, because the
//! reader went away or the pipe is broken, is dropped and counted in [`lines_dropped`], exported
//! as `vipd_log_lines_dropped_total`), [`TextFields`] and [`JsonLines`] (floats rounded to 3
//! decimals; JSON keys unique: a field named like a reserved key or like an earlier field is
//! renamed `field_<name>`), and [`parse_filter`].
//!
//! Must not: panic, block on anything but the write(2) itself, or print through `eprintln!`
//! (which panics on a broken pipe).

use std::fmt;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

static LINES_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines that could not be written (stderr closed or broken) since the process started.
pub fn lines_dropped() -> u64 {
    LINES_DROPPED.load(Relaxed)
}

/// A `MakeWriter` for stderr whose writes never fail: on an error the rest of the line is dropped
/// and counted. Use with `log_internal_errors(false)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LossyStderr;

impl io::Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut rest = buf;
        while !rest.is_empty() {
            // SAFETY: write(2) on fd 2 reads `rest.len()` bytes from a live slice; a closed or
            // invalid fd 2 only makes it return -1.
            let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
            if n > 0 {
                rest = &rest[n as usize..];
                continue;
            }
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            LINES_DROPPED.fetch_add(1, Relaxed);
            return Ok(());
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LossyStderr {
    type Writer = LossyStderr;
    fn make_writer(&'a self) -> LossyStderr {
        LossyStderr
    }
}

/// Writes one line to stderr without ever panicking (for messages before or outside logging).
pub fn stderr_line(line: &str) {
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    let _ = io::Write::write_all(&mut LossyStderr, buf.as_bytes());
}

/// Error for a `--log-level` value that is not a valid filter.
#[derive(Debug, thiserror::Error)]
#[error("invalid --log-level {value:?}: {reason} (use error, warn, info, debug, trace, off, or a filter such as vipd=debug,warn)")]
pub struct FilterError {
    value: String,
    reason: String,
}

const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// Parses a `--log-level` value strictly. `EnvFilter` silently ignores a directive it cannot
/// parse and reads a bare word such as `verbose` as a target name (logging nothing); both are
/// errors here. A bare word must be a level; `target=level` directives are checked by
/// `EnvFilter` itself.
pub fn parse_filter(value: &str) -> Result<EnvFilter, FilterError> {
    let err = |reason: String| FilterError {
        value: value.to_string(),
        reason,
    };
    if value.trim().is_empty() {
        return Err(err("empty".into()));
    }
    for directive in value.split(',').map(str::trim) {
        if directive.is_empty() {
            continue;
        }
        let is_level = |s: &str| LEVELS.contains(&s.to_ascii_lowercase().as_str());
        let ok = match directive.rsplit_once('=') {
            Some((_, level)) => is_level(level),
            None => is_level(directive),
        };
        if !ok {
            return Err(err(format!("{directive:?} is not a level")));
        }
    }
    EnvFilter::builder()
        .parse(value)
        .map_err(|e| err(e.to_string()))
}

/// Rounds a float for display: 3 decimals is finer than any duration or ratio vipd logs.
fn round3(v: f64) -> f64 {
    if v.is_finite() && v.abs() < 1e12 {
        (v * 1000.0).round() / 1000.0
    } else {
        v
    }
}

// === text ===

/// Text fields: `message` first, then `name=value` (strings quoted), floats rounded.
#[derive(Debug, Default)]
pub struct TextFields;

struct TextVisitor<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl TextVisitor<'_, '_> {
    fn sep(&mut self) -> fmt::Result {
        if std::mem::take(&mut self.first) {
            Ok(())
        } else {
            self.writer.write_char(' ')
        }
    }

    fn put(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        self.result = self.sep().and_then(|()| {
            if field.name() == "message" {
                self.writer.write_fmt(value)
            } else {
                write!(self.writer, "{}={}", field.name(), value)
            }
        });
    }
}

impl Visit for TextVisitor<'_, '_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, format_args!("{}", round3(value)));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.put(field, format_args!("{value}"));
        } else {
            self.put(field, format_args!("{value:?}"));
        }
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, format_args!("{value}"));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format_args!("{value:?}"));
    }
}

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> fmt::Result {
        let mut v = TextVisitor {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let first = current.fields.is_empty();
        let mut v = TextVisitor {
            writer: &mut current.as_writer(),
            first,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

// === JSON ===

/// Keys every JSON line has; a field with one of these names is renamed.
const RESERVED: [&str; 5] = ["timestamp", "level", "target", "spans", "message_template"];

/// Collects fields as JSON, keeping keys unique.
struct JsonVisitor<'a> {
    map: &'a mut serde_json::Map<String, serde_json::Value>,
}

impl JsonVisitor<'_> {
    fn put(&mut self, name: &str, value: serde_json::Value) {
        let mut key = name.to_string();
        while RESERVED.contains(&key.as_str()) || self.map.contains_key(&key) {
            key = format!("field_{key}");
        }
        self.map.insert(key, value);
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(round3(value))
            .map(serde_json::Value::Number)
            .unwrap_or_else(|| serde_json::Value::String(value.to_string()));
        self.put(field.name(), v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field.name(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field.name(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field.name(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field.name(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field.name(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field.name(), format!("{value:?}").into());
    }
}

/// One JSON object per line: `timestamp`, `level`, `target`, the event's fields (flattened,
/// `message` included), and `spans` (the names and text fields of the enclosing spans) when
/// there are any. Keys are unique by construction.
#[derive(Debug, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut map = serde_json::Map::new();
        map.insert("timestamp".into(), rfc3339_now().into());
        map.insert(
            "level".into(),
            event.metadata().level().as_str().to_string().into(),
        );
        map.insert("target".into(), event.metadata().target().into());
        event.record(&mut JsonVisitor { map: &mut map });
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<serde_json::Value> = scope
                .from_root()
                .map(|span| {
                    let ext = span.extensions();
                    let fields = ext
                        .get::<FormattedFields<N>>()
                        .map(|f| f.fields.clone())
                        .unwrap_or_default();
                    serde_json::json!({"name": span.name(), "fields": fields})
                })
                .collect();
            if !spans.is_empty() {
                map.insert("spans".into(), spans.into());
            }
        }
        let line = serde_json::Value::Object(map).to_string();
        writeln!(writer, "{line}")
    }
}

/// The current UTC time as RFC 3339 with microseconds.
fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_level_verbose_is_an_error() {
        let e = parse_filter("verbose").unwrap_err().to_string();
        assert!(e.contains("verbose") && !e.contains('\n'), "{e}");
        assert!(parse_filter("vipd=verbose").is_err());
        assert!(parse_filter("").is_err());
        for ok in ["info", "DEBUG", "vipd=debug,warn", "off", "vipd::dns=trace"] {
            parse_filter(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn floats_are_rounded_to_three_decimals() {
        assert_eq!(round3(1.682_410_999_999_999_9).to_string(), "1.682");
        assert_eq!(round3(0.0004).to_string(), "0");
        assert!(round3(f64::NAN).is_nan());
    }

    #[test]
    fn json_fields_named_like_reserved_keys_are_renamed() {
        let mut map = serde_json::Map::new();
        map.insert("level".into(), "WARN".into());
        let mut v = JsonVisitor { map: &mut map };
        v.put("level", 1.into());
        v.put("a", 1.into());
        v.put("a", 2.into());
        assert_eq!(map["level"], "WARN");
        assert_eq!(map["field_level"], 1);
        assert_eq!(map["field_a"], 2);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = rfc3339_now();
        assert_eq!(t.len(), "2026-12-02T01:02:03.123456Z".len(), "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
