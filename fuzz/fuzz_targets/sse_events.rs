//! Target 4: Marathon's `/v2/events` stream: SSE framing, event parsing and event apply.
//!
//! Input: byte 0 sets the parser's `max_line` (8..=2048), byte 1 seeds the chunk sizes, the rest
//! is the stream. Properties:
//! - the parser never holds more than `max_line` bytes in any of its buffers, after any chunk;
//! - the result does not depend on how the stream is cut into chunks (same events, same errors);
//! - every event that parses applies to a snapshot of the `marathon-1.10` fixture without panic,
//!   an event that reports no change leaves the snapshot equal, and after the events the
//!   incremental `BuildCache` (which built the snapshot before them) agrees with a fresh build,
//!   which is deterministic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock};
use vipd::model::{parse_apps_document, AppsSnapshot};
use vipd::source::marathon::apply::apply_event;
use vipd::source::marathon::events::parse_event;
use vipd::source::marathon::sse::{SseEvent, SseParser};
use vipd::table::{BuildCache, BuildOptions, Resolved};
use vipd_fuzz::{check_incremental, resolve};

static BASE: LazyLock<Arc<AppsSnapshot>> = LazyLock::new(|| {
    Arc::new(
        parse_apps_document(include_bytes!(
            "../../tests/fixtures/marathon-1.10-apps.json"
        ))
        .expect("the fixture parses"),
    )
});

/// At most this many events are applied per input (the build after them is the slow part).
const MAX_APPLIED: usize = 16;

/// Feeds `stream` in chunks whose sizes come from `seed` (0: all at once), checking the buffer
/// bound after every chunk. Returns the events, the error if one stopped the stream, and the
/// invalid-UTF-8 count.
fn feed(stream: &[u8], max_line: usize, seed: u8) -> (Vec<SseEvent>, bool, u64) {
    let mut parser = SseParser::new(max_line);
    let mut events = Vec::new();
    let mut rest = stream;
    let mut state = u32::from(seed) | 1;
    while !rest.is_empty() {
        let n = if seed == 0 {
            rest.len()
        } else {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            1 + (state as usize % 97).min(rest.len() - 1)
        };
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let result = parser.feed(chunk, &mut events);
        for (what, len) in ["partial line", "event data", "event type"]
            .iter()
            .zip(parser.buffered())
        {
            assert!(
                len <= max_line,
                "SSE parser holds a {what} of {len} bytes; max_line is {max_line}"
            );
        }
        if result.is_err() {
            return (events, true, parser.invalid_utf8);
        }
    }
    (events, false, parser.invalid_utf8)
}

fuzz_target!(|data: &[u8]| {
    let [max, seed, stream @ ..] = data else {
        return;
    };
    let max_line = 8 + usize::from(*max) * 8;
    let (whole, whole_err, whole_bad) = feed(stream, max_line, 0);
    let (cut, cut_err, cut_bad) = feed(stream, max_line, *seed | 1);
    assert_eq!(whole_err, cut_err, "an SSE error depends on the chunking");
    if !whole_err {
        assert_eq!(whole, cut, "SSE events depend on the chunking");
        assert_eq!(
            whole_bad, cut_bad,
            "invalid UTF-8 count depends on the chunking"
        );
    }

    let opts = BuildOptions::default();
    let mut snapshot = Arc::clone(&BASE);
    let mut cache = BuildCache::new();
    let mut resolved: Option<Resolved> = None;
    for event in whole.iter().take(MAX_APPLIED) {
        let Ok(event) = parse_event(event.event_type.as_deref(), &event.data) else {
            continue;
        };
        if resolved.is_none() {
            let r = resolve(&snapshot);
            cache.build(&snapshot, &r, &opts);
            resolved = Some(r);
        }
        let before = Arc::clone(&snapshot);
        let effects = apply_event(&mut snapshot, &event);
        if !effects.changed {
            assert_eq!(
                *snapshot, *before,
                "{event:?} changed the snapshot but said it did not"
            );
        }
        if effects.ignored {
            assert!(
                !effects.changed,
                "{event:?} was ignored but changed the snapshot"
            );
        }
    }
    if resolved.is_some() {
        // Hosts the events added get their answers too (as the Marathon source resolves them).
        let r = resolve(&snapshot);
        check_incremental(&mut cache, &snapshot, &r, &opts);
    }
});
