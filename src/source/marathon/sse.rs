//! An incremental Server-Sent Events parser over raw bytes, for Marathon's `/v2/events`.
//!
//! Owns: splitting a byte stream into SSE events (`event:` type + `data:` lines, dispatched on a
//! blank line), with CRLF, LF and lone-CR line ends, line ends split across chunks, Marathon's
//! `\r\n` heartbeat, and lines of many megabytes (deployment events,
//! ../shared/reference/marathon/FACTS.md §7). Every byte is
//! scanned once: a partial line is kept and only the new chunk is searched for its end.
//!
//! Must not: interpret event payloads (that is `events.rs`), do I/O, or grow without bound: a
//! line longer than `max_line` is an error (the caller reconnects and resyncs).
//!
//! Why not `eventsource-stream`: version 0.2 re-parses its whole pending buffer from the start on
//! every chunk and copies the remainder after each line (`String::split_off`), which is quadratic
//! for a multi-megabyte line arriving in 16 KiB chunks.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event_type: Option<String>,
    /// The `data:` lines joined with `\n` (SSE rules). Marathon sends one JSON object per line.
    pub data: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("SSE line longer than {max} bytes")]
    LineTooLong { max: usize },
}

/// The parser state. Feed it chunks as they arrive.
#[derive(Debug)]
pub struct SseParser {
    /// The current line, when it spans chunks.
    partial: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` at the start of the next one belongs to it.
    skip_lf: bool,
    event_type: Option<String>,
    data: Vec<u8>,
    has_data: bool,
    max_line: usize,
    /// Events dropped because their data was not UTF-8.
    pub invalid_utf8: u64,
}

impl SseParser {
    /// `max_line` bounds one line and one event's data.
    pub fn new(max_line: usize) -> Self {
        SseParser {
            partial: Vec::new(),
            skip_lf: false,
            event_type: None,
            data: Vec::new(),
            has_data: false,
            max_line,
            invalid_utf8: 0,
        }
    }

    /// Parses `chunk`, appending every event it completes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let mut i = 0;
        if self.skip_lf && !chunk.is_empty() {
            if chunk[0] == b'\n' {
                i = 1;
            }
            self.skip_lf = false;
        }
        while i < chunk.len() {
            let rest = &chunk[i..];
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(j) => {
                    if self.partial.is_empty() {
                        // Checked here too: a long line inside one chunk is as long as one that
                        // spans chunks (found by fuzz/fuzz_targets/sse_events.rs).
                        self.check_len(j)?;
                        self.line(&rest[..j], out)?;
                    } else {
                        self.check_len(self.partial.len() + j)?;
                        let mut line = std::mem::take(&mut self.partial);
                        line.extend_from_slice(&rest[..j]);
                        self.line(&line, out)?;
                        line.clear();
                        self.partial = line; // keep the allocation
                    }
                    let mut next = i + j + 1;
                    if rest[j] == b'\r' {
                        match chunk.get(next) {
                            Some(b'\n') => next += 1,
                            Some(_) => {}
                            None => self.skip_lf = true,
                        }
                    }
                    i = next;
                }
                None => {
                    self.check_len(self.partial.len() + rest.len())?;
                    self.partial.extend_from_slice(rest);
                    break;
                }
            }
        }
        Ok(())
    }

    /// Bytes held between calls to [`SseParser::feed`]: the partial line, the pending event's
    /// data and its `event:` type. Each is at most `max_line` (the fuzz target checks it).
    pub fn buffered(&self) -> [usize; 3] {
        [
            self.partial.len(),
            self.data.len(),
            self.event_type.as_ref().map_or(0, String::len),
        ]
    }

    fn check_len(&self, len: usize) -> Result<(), SseError> {
        if len > self.max_line {
            Err(SseError::LineTooLong { max: self.max_line })
        } else {
            Ok(())
        }
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(()); // comment
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => {
                // Lossy decoding can triple the length (U+FFFD for each bad byte): bound the
                // result too (found by fuzz/fuzz_targets/sse_events.rs).
                let event_type = String::from_utf8_lossy(value);
                self.check_len(event_type.len())?;
                self.event_type = Some(event_type.into_owned());
            }
            b"data" => {
                self.check_len(self.data.len() + value.len() + 1)?;
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            _ => {} // id, retry and unknown fields: Marathon sends none that matter
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event_type = self.event_type.take();
        if !self.has_data {
            return; // heartbeat or an event without data
        }
        self.has_data = false;
        let data = std::mem::take(&mut self.data);
        match String::from_utf8(data) {
            Ok(data) => out.push(SseEvent { event_type, data }),
            Err(_) => self.invalid_utf8 += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new(64 << 20);
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out).unwrap();
        }
        out
    }

    fn ev(t: &str, d: &str) -> SseEvent {
        SseEvent {
            event_type: Some(t.into()),
            data: d.into(),
        }
    }

    #[test]
    fn crlf_frames_as_marathon_writes_them() {
        let s = b"event: a\r\ndata: {\"x\":1}\r\n\r\nevent: b\r\ndata: {}\r\n\r\n";
        assert_eq!(
            parse_chunks(&[s]),
            vec![ev("a", "{\"x\":1}"), ev("b", "{}")]
        );
    }

    #[test]
    fn lf_and_lone_cr_frames() {
        assert_eq!(
            parse_chunks(&[b"event: a\ndata: 1\n\n"]),
            vec![ev("a", "1")]
        );
        assert_eq!(
            parse_chunks(&[b"event: a\rdata: 1\r\r"]),
            vec![ev("a", "1")]
        );
    }

    #[test]
    fn heartbeats_dispatch_nothing() {
        assert!(parse_chunks(&[b"\r\n", b"\r", b"\n", b"\r\n\r\n"]).is_empty());
        // A heartbeat between events does not disturb them.
        assert_eq!(
            parse_chunks(&[b"\r\nevent: a\r\ndata: 1\r\n\r\n\r\n"]),
            vec![ev("a", "1")]
        );
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let s: &[u8] =
            b"event: a\r\ndata: {\"x\":1}\r\n\r\n\r\nevent: b\r\ndata: 2\r\ndata: 3\r\n\r\n";
        let want = vec![ev("a", "{\"x\":1}"), ev("b", "2\n3")];
        for cut in 0..=s.len() {
            assert_eq!(parse_chunks(&[&s[..cut], &s[cut..]]), want, "cut at {cut}");
        }
        // One byte at a time.
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(parse_chunks(&bytes), want);
    }

    #[test]
    fn cr_at_chunk_end_followed_by_lf_is_one_line_end() {
        // If the \n after a chunk-final \r were taken as a second line end, the event would be
        // dispatched early with no data; instead both data lines must land in one event.
        assert_eq!(
            parse_chunks(&[
                b"event: a\r",
                b"\ndata: 1\r",
                b"\ndata: 2\r",
                b"\n\r",
                b"\n"
            ]),
            vec![ev("a", "1\n2")]
        );
    }

    #[test]
    fn eight_megabyte_line_split_across_small_chunks() {
        let payload = "x".repeat(8 << 20);
        let frame = format!("event: deployment_info\r\ndata: {payload}\r\n\r\n");
        let chunks: Vec<&[u8]> = frame.as_bytes().chunks(16 * 1024).collect();
        let out = parse_chunks(&chunks);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data.len(), 8 << 20);
    }

    #[test]
    fn too_long_line_is_an_error_not_unbounded_growth() {
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        p.feed(b"data: ", &mut out).unwrap();
        let big = vec![b'x'; 2000];
        assert_eq!(
            p.feed(&big, &mut out),
            Err(SseError::LineTooLong { max: 1024 })
        );
    }

    #[test]
    fn comments_unknown_fields_and_bad_utf8() {
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        p.feed(b": hi\r\nid: 3\r\nretry: 5\r\ndata: ok\r\n\r\n", &mut out)
            .unwrap();
        p.feed(b"data: \xff\xfe\r\n\r\n", &mut out).unwrap();
        assert_eq!(
            out,
            vec![SseEvent {
                event_type: None,
                data: "ok".into()
            }]
        );
        assert_eq!(p.invalid_utf8, 1);
    }
}
