//! The one duration grammar of every flag: a bare number of seconds (`1.5`), or one or more
//! `<number><unit>` terms (`1500ms`, `2s`, `1m`, `1h`, `1m30s`, `1m 30s`) with units `ms`, `s`, `m`
//! and `h`. Numbers may have a fraction (`0.5s`); signs and other units are errors.
//!
//! Owns: [`parse_duration`] and its variants for clap's `value_parser`, and [`format_duration`]
//! (the inverse, for `/v1/config` and help defaults).
//!
//! Must not: know any flag; range rules beyond "more than zero" belong to the flag.

use std::time::Duration;

const HINT: &str = "expected a duration such as 1.5, 500ms, 30s, 5m or 1h";

/// Parses the grammar above.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("empty duration ({HINT})"));
    }
    if let Ok(secs) = t.parse::<f64>() {
        if t.starts_with(['+', '-']) || !t.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(format!("invalid duration {t:?} ({HINT})"));
        }
        return Duration::try_from_secs_f64(secs)
            .map_err(|e| format!("invalid duration {t:?}: {e}"));
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("invalid duration {t:?}: a number needs a unit ({HINT})"))?;
        let (num, after) = rest.split_at(num_len);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("invalid duration {t:?} ({HINT})"))?;
        let unit_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => {
                return Err(format!(
                    "invalid duration unit {unit:?} in {t:?} (ms, s, m or h)"
                ))
            }
        };
        total += n * scale;
        rest = after.trim_start();
    }
    Duration::try_from_secs_f64(total).map_err(|e| format!("invalid duration {t:?}: {e}"))
}

/// [`parse_duration`], refusing zero.
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be more than 0".to_string()),
        d => Ok(d),
    }
}

/// The shortest exact form in the grammar: `0`, `250ms`, `30s`, `5m`, `1h`, `1500ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if d.is_zero() {
        "0".to_string()
    } else if d.subsec_nanos() % 1_000_000 != 0 {
        format!("{}", d.as_secs_f64())
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_form_parses() {
        let ms = Duration::from_millis;
        for (s, d) in [
            ("1.5", ms(1500)),
            ("0", Duration::ZERO),
            ("10", ms(10_000)),
            ("1500ms", ms(1500)),
            ("2s", ms(2000)),
            ("0.5s", ms(500)),
            ("1m", ms(60_000)),
            ("1h", ms(3_600_000)),
            ("1m30s", ms(90_000)),
            ("1m 30s", ms(90_000)),
            (" 3s ", ms(3000)),
        ] {
            assert_eq!(parse_duration(s), Ok(d), "{s:?}");
        }
    }

    #[test]
    fn bad_forms_are_errors_that_show_the_grammar() {
        for s in [
            "",
            "soon",
            "-1s",
            "-1",
            "+2",
            "5 parsecs",
            "3d",
            "1.2.3s",
            "10 s x",
            "1e3",
        ] {
            let err = parse_duration(s).unwrap_err();
            assert!(
                err.contains("duration") || err.contains("unit"),
                "{s:?}: {err}"
            );
        }
        assert!(parse_duration("soon").unwrap_err().contains("1.5, 500ms"));
        assert_eq!(
            parse_positive_duration("0ms").unwrap_err(),
            "must be more than 0"
        );
    }

    #[test]
    fn format_round_trips() {
        for d in [
            0, 1, 250, 1500, 30_000, 90_000, 300_000, 3_600_000, 7_200_000,
        ] {
            let d = Duration::from_millis(d);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{d:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(format_duration(Duration::from_micros(1500)), "0.0015");
    }
}
