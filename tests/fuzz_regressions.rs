//! Regression tests for what the fuzz targets in `fuzz/` found (docs/reliability.md). Each test
//! is named after its finding and replays the input that found it.

use vipd::source::marathon::sse::{SseError, SseParser};

/// sse_events, crash-13d50531: a line longer than `max_line` that arrived inside one chunk was
/// accepted (only lines spanning chunks were checked), so the parser kept an `event:` type of
/// 29 bytes with `max_line` 16, and the same stream cut into small chunks gave an error instead.
#[test]
fn sse_line_longer_than_max_line_in_one_chunk_is_an_error() {
    let stream = b"event: status_update_event_but_longer\n";
    let mut whole = SseParser::new(16);
    let mut events = Vec::new();
    assert_eq!(
        whole.feed(stream, &mut events),
        Err(SseError::LineTooLong { max: 16 })
    );
    assert!(
        whole.buffered().iter().all(|&n| n <= 16),
        "buffered {:?}",
        whole.buffered()
    );

    let mut cut = SseParser::new(16);
    let result = stream
        .chunks(3)
        .try_for_each(|chunk| cut.feed(chunk, &mut events));
    assert_eq!(result, Err(SseError::LineTooLong { max: 16 }));
    assert!(events.is_empty());
}

/// The bound is on the line, not the stream: lines up to `max_line` in one chunk still parse.
#[test]
fn sse_lines_up_to_max_line_in_one_chunk_parse() {
    let mut p = SseParser::new(16);
    let mut events = Vec::new();
    p.feed(b"event: 123456789\ndata: 0123456789\n\n", &mut events)
        .expect("lines of 16 bytes are allowed");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type.as_deref(), Some("123456789"));
    assert_eq!(events[0].data, "0123456789");
}

/// label_values, crash-20832638: `probe_interval_s` `86399.9999999999` is below a day, so it was
/// accepted, but it rounds to 86400 s in nanoseconds; the table's JSON then says `"86400"`, which
/// does not read back (a saved table would not load). Likewise a value that rounds to 0 s.
#[test]
fn probe_seconds_that_round_to_a_day_or_to_zero_are_refused() {
    use vipd::table::options::probe_seconds;
    use vipd::table::PortOptions;
    assert_eq!(probe_seconds(86_399.999_999_999_9), None);
    assert_eq!(probe_seconds(1e-12), None);
    for v in ["86399.9999999999", "1e-12"] {
        assert!(
            PortOptions::from_pairs([("probe", "tcp"), ("probe_interval_s", v)]).is_err(),
            "{v} accepted"
        );
    }
    // The largest and smallest values that stay inside the range still round-trip.
    for v in ["86399.999999999", "0.000000001"] {
        let opts = PortOptions::from_pairs([("probe", "tcp"), ("probe_interval_s", v)])
            .unwrap_or_else(|e| panic!("{v}: {e}"));
        let back = PortOptions::from_pairs(opts.entries());
        assert_eq!(back.as_ref(), Ok(&opts), "{v}");
    }
}

/// The same finding through the builder: an app whose health check says
/// `intervalSeconds: 86399.9999999999` gets a warning instead of a probe period whose JSON form
/// the table cannot read back, and the built table survives a JSON round trip.
#[test]
fn health_check_interval_that_rounds_to_a_day_gives_a_table_that_reads_back() {
    use vipd::model::parse_apps_document;
    use vipd::table::{build, BuildOptions, Built, Resolved};
    let doc = br#"{"apps":[{"id":"/slow","portDefinitions":[{"port":10000}],
        "healthChecks":[{"protocol":"TCP","portIndex":0,"intervalSeconds":86399.9999999999}],
        "tasks":[{"id":"slow.1","appId":"/slow","host":"10.0.0.1","ports":[31000],
                  "state":"TASK_RUNNING"}]}]}"#;
    let snapshot = parse_apps_document(doc).expect("the document parses");
    let built = build(&snapshot, &Resolved::default(), &BuildOptions::default());
    assert_eq!(built.frontends.len(), 1, "{built:?}");
    assert!(
        built
            .warnings
            .iter()
            .any(|w| w.message.contains("intervalSeconds")),
        "{:?}",
        built.warnings
    );
    let json = serde_json::to_string(&built).expect("the table serializes");
    let back: Built = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("the table's JSON does not read back: {e}\n{json}"));
    assert_eq!(back, built);
}

/// sse_events, crash-a18cfe56: an `event:` value of invalid UTF-8 within `max_line` grew up to
/// three times (each bad byte became U+FFFD) and the parser held an event type of 589 bytes with
/// `max_line` 520.
#[test]
fn sse_event_type_of_invalid_utf8_is_bounded_by_max_line() {
    let mut stream = b"event: ".to_vec();
    stream.extend_from_slice(&[0xff; 9]);
    stream.push(b'\n');
    let mut p = SseParser::new(16);
    let mut events = Vec::new();
    let result = p.feed(&stream, &mut events);
    assert!(
        p.buffered().iter().all(|&n| n <= 16),
        "buffered {:?} with max_line 16",
        p.buffered()
    );
    assert_eq!(result, Err(SseError::LineTooLong { max: 16 }));

    // A short invalid type still parses (as U+FFFD), as before.
    let mut p = SseParser::new(16);
    p.feed(b"event: \xff\ndata: x\n\n", &mut events)
        .expect("a short invalid event type is kept");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type.as_deref(), Some("\u{fffd}"));
}
