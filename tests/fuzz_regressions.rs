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
