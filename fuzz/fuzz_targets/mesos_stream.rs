//! Target 3: the Mesos `SUBSCRIBE` stream: RecordIO framing, event parsing, the sans-io driver
//! and the build of what it publishes.
//!
//! Input: byte 0 sets the record cap (16..=16,336 bytes), byte 1 seeds the chunk sizes, the rest
//! is the stream. Properties:
//! - the decoder never holds more than one record (the cap) or one length line between calls;
//! - the records do not depend on how the stream is cut into chunks (same records, same error);
//! - every record, parsed or not, goes to the driver without panic, and each table it publishes
//!   builds deterministically (with the incremental cache equal to a fresh build).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};
use vipd::model::mesos::parse_event;
use vipd::model::AppsSnapshot;
use vipd::source::mesos::driver::{Action, Driver, DriverConfig, Input};
use vipd::source::mesos::recordio::{RecordDecoder, MAX_LENGTH_LINE};
use vipd::table::BuildOptions;
use vipd_fuzz::{check_build, resolve};

/// Feeds `stream` in chunks whose sizes come from `seed` (0: all at once), checking the buffer
/// bound after every chunk. Returns the records and whether an error stopped the stream.
fn decode(stream: &[u8], max_record: usize, seed: u8) -> (Vec<Vec<u8>>, bool) {
    let mut decoder = RecordDecoder::new(max_record);
    let mut records = Vec::new();
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
        let result = decoder.push(chunk);
        let held = decoder.buffered();
        assert!(
            held <= max_record.max(MAX_LENGTH_LINE),
            "the RecordIO decoder holds {held} bytes; the cap is {max_record}"
        );
        match result {
            Ok(done) => records.extend(done.into_iter().map(|b| b.to_vec())),
            Err(_) => return (records, true),
        }
    }
    // An error met after the last chunk's records is kept for the caller.
    (records, decoder.take_error().is_some())
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max_record = 16 + usize::from(data[0]) * 64;
    let stream = &data[2..];
    let whole = decode(stream, max_record, 0);
    let chunked = decode(stream, max_record, data[1]);
    assert_eq!(whole, chunked, "records depend on the chunking");

    let mut driver = Driver::new(DriverConfig {
        endpoints: vec!["http://master.mesos:5050/api/v1".parse().unwrap()],
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(30),
        recovery_timeout: Duration::from_secs(600),
        tasks_grace: Duration::from_secs(10),
        max_redirects: 3,
        seed: 1,
    });
    let t0 = Instant::now();
    driver.handle(Input::Start, t0);
    driver.handle(Input::Connected, t0);
    let records = whole.0.iter().map(|r| parse_event(r)).collect();
    let actions = driver.handle(
        Input::Records {
            records,
            received: t0,
        },
        t0,
    );
    // And the gate's clock running out, as after --mesos-recovery-timeout.
    let later = driver.handle(Input::Tick, t0 + Duration::from_secs(3600));
    for action in actions.into_iter().chain(later) {
        if let Action::Publish { tasks, .. } = action {
            let snapshot = AppsSnapshot {
                tasks,
                ..AppsSnapshot::default()
            };
            let resolved = resolve(&snapshot);
            check_build(&snapshot, &resolved, &BuildOptions::default());
        }
    }
});
