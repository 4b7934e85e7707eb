//! RecordIO framing of the Mesos `SUBSCRIBE` stream: `<decimal length>\n<that many bytes>`,
//! repeated, with no separator (../shared/reference/mesos/FACTS.md §2).
//!
//! Owns: cutting an HTTP body, arriving in chunks whose boundaries are arbitrary, into records;
//! the bound on one record (a length above the cap is refused before any of its bytes are
//! buffered); and the one failure rule: a bad length line leaves the decoder failed for good
//! (RecordIO cannot resynchronise), so the shell reconnects.
//!
//! Must not: parse the JSON inside a record, do I/O, or buffer more than one record plus one
//! length line.

use bytes::{Buf, Bytes, BytesMut};

/// A length line longer than this without `\n` is refused (u64 has 20 digits).
pub const MAX_LENGTH_LINE: usize = 20;

/// Why the stream cannot be read further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("bad RecordIO length line {0:?}")]
    BadLength(String),
    #[error("RecordIO record of {len} bytes is larger than the cap of {max} bytes (--max-document-size)")]
    TooLarge { len: u64, max: usize },
    #[error("the stream ended inside a record ({have} of {want} bytes)")]
    Truncated { have: usize, want: usize },
    #[error("the stream ended inside a length line")]
    TruncatedLength,
    #[error("the RecordIO decoder failed earlier")]
    Failed,
}

/// An incremental RecordIO decoder.
#[derive(Debug)]
pub struct RecordDecoder {
    buf: BytesMut,
    /// The length of the record being read, once its line is complete.
    want: Option<usize>,
    max_record: usize,
    failed: bool,
    /// An error met after some records of the same chunk completed: those are returned first,
    /// and this by [`RecordDecoder::take_error`] (or the next call).
    pending: Option<RecordError>,
}

impl RecordDecoder {
    /// A decoder that refuses records longer than `max_record` bytes.
    pub fn new(max_record: usize) -> Self {
        RecordDecoder {
            buf: BytesMut::new(),
            want: None,
            max_record,
            failed: false,
            pending: None,
        }
    }

    /// Feeds one chunk; returns the records it completed, in order. A chunk that completes
    /// records and then meets an error returns the records; the error is kept for
    /// [`RecordDecoder::take_error`] and the next call, so the records do not depend on how the
    /// stream was cut into chunks (a fuzz finding). After an error every call fails with
    /// [`RecordError::Failed`].
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Bytes>, RecordError> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        if self.failed {
            return Err(RecordError::Failed);
        }
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        match self.decode(&mut out) {
            Ok(()) => Ok(out),
            Err(e) if out.is_empty() => Err(e),
            Err(e) => {
                self.pending = Some(e);
                Ok(out)
            }
        }
    }

    /// The error met after the records the last [`RecordDecoder::push`] returned, if any.
    pub fn take_error(&mut self) -> Option<RecordError> {
        self.pending.take()
    }

    fn decode(&mut self, out: &mut Vec<Bytes>) -> Result<(), RecordError> {
        loop {
            match self.want {
                None => {
                    let Some(nl) = self.buf.iter().position(|&b| b == b'\n') else {
                        if self.buf.len() > MAX_LENGTH_LINE {
                            return Err(self.fail_length(self.buf.len()));
                        }
                        return Ok(());
                    };
                    if nl == 0
                        || nl > MAX_LENGTH_LINE
                        || !self.buf[..nl].iter().all(u8::is_ascii_digit)
                    {
                        return Err(self.fail_length(nl));
                    }
                    let text = std::str::from_utf8(&self.buf[..nl]).unwrap_or_default();
                    let len: u64 = match text.parse() {
                        Ok(l) => l,
                        Err(_) => return Err(self.fail_length(nl)),
                    };
                    if len > self.max_record as u64 {
                        self.failed = true;
                        self.buf = BytesMut::new();
                        return Err(RecordError::TooLarge {
                            len,
                            max: self.max_record,
                        });
                    }
                    self.buf.advance(nl + 1);
                    // Bounded by the cap just checked.
                    let len = usize::try_from(len).unwrap_or(usize::MAX);
                    self.buf.reserve(len.saturating_sub(self.buf.len()));
                    self.want = Some(len);
                }
                Some(len) => {
                    if self.buf.len() < len {
                        return Ok(());
                    }
                    out.push(self.buf.split_to(len).freeze());
                    self.want = None;
                }
            }
        }
    }

    /// Bytes held between calls: at most one record's worth (`max_record`) or one length line.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The stream ended: an error if it ended inside a record or a length line.
    pub fn finish(&self) -> Result<(), RecordError> {
        if let Some(e) = &self.pending {
            return Err(e.clone());
        }
        if self.failed {
            return Err(RecordError::Failed);
        }
        match self.want {
            Some(want) => Err(RecordError::Truncated {
                have: self.buf.len(),
                want,
            }),
            None if !self.buf.is_empty() => Err(RecordError::TruncatedLength),
            None => Ok(()),
        }
    }

    fn fail_length(&mut self, upto: usize) -> RecordError {
        self.failed = true;
        let shown =
            String::from_utf8_lossy(&self.buf[..upto.min(self.buf.len()).min(32)]).into_owned();
        self.buf = BytesMut::new();
        RecordError::BadLength(shown)
    }
}

/// Frames one record (what the Mesos encoder writes; for tests and fakes).
pub fn encode(record: &[u8]) -> Vec<u8> {
    let mut out = format!("{}\n", record.len()).into_bytes();
    out.extend_from_slice(record);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(records: &[&str]) -> Vec<u8> {
        records.iter().flat_map(|r| encode(r.as_bytes())).collect()
    }

    const RECORDS: [&str; 4] = [
        r#"{"type":"SUBSCRIBED","subscribed":{"get_state":{}}}"#,
        r#"{"type":"HEARTBEAT"}"#,
        "",
        r#"{"type":"TASK_UPDATED","x":"é\n12\n"}"#,
    ];

    #[test]
    fn a_stream_split_at_every_byte_gives_the_same_records() {
        let bytes = stream(&RECORDS);
        for split in 0..=bytes.len() {
            let mut d = RecordDecoder::new(1 << 20);
            let mut got = d.push(&bytes[..split]).unwrap();
            got.extend(d.push(&bytes[split..]).unwrap());
            d.finish().unwrap();
            let got: Vec<&[u8]> = got.iter().map(|b| &b[..]).collect();
            let want: Vec<&[u8]> = RECORDS.iter().map(|r| r.as_bytes()).collect();
            assert_eq!(got, want, "split at {split}");
        }
        // And one byte at a time.
        let mut d = RecordDecoder::new(1 << 20);
        let mut n = 0;
        for b in &bytes {
            n += d.push(std::slice::from_ref(b)).unwrap().len();
        }
        assert_eq!(n, RECORDS.len());
    }

    #[test]
    fn a_bad_length_line_fails_the_decoder_for_good() {
        for bad in [
            &b"12x\n{}"[..],
            b"\n{}",
            b"-1\n",
            b" 2\n{}",
            b"123456789012345678901",
        ] {
            let mut d = RecordDecoder::new(1 << 20);
            let e = d.push(bad).unwrap_err();
            assert!(matches!(e, RecordError::BadLength(_)), "{bad:?}: {e:?}");
            assert_eq!(d.push(b"2\n{}").unwrap_err(), RecordError::Failed);
        }
        // A length that overflows u64 is a bad line too.
        let mut d = RecordDecoder::new(usize::MAX);
        assert!(matches!(
            d.push(b"99999999999999999999\n").unwrap_err(),
            RecordError::BadLength(_)
        ));
    }

    #[test]
    fn a_truncated_record_or_length_line_is_an_error_at_the_end() {
        let mut d = RecordDecoder::new(1 << 20);
        assert!(d.push(b"10\n{\"a\"").unwrap().is_empty());
        assert_eq!(
            d.finish().unwrap_err(),
            RecordError::Truncated { have: 4, want: 10 }
        );
        let mut d = RecordDecoder::new(1 << 20);
        assert_eq!(d.push(b"2\n{}1").unwrap().len(), 1);
        assert_eq!(d.finish().unwrap_err(), RecordError::TruncatedLength);
    }

    #[test]
    fn a_record_over_the_cap_is_refused_before_its_bytes_are_buffered() {
        let big = vec![b'x'; 8 << 20];
        let framed = encode(&big);
        let mut d = RecordDecoder::new(4 << 20);
        // Only the length line and a first chunk: refused already.
        let e = d.push(&framed[..64 * 1024]).unwrap_err();
        assert_eq!(
            e,
            RecordError::TooLarge {
                len: 8 << 20,
                max: 4 << 20
            }
        );
        assert_eq!(d.buf.capacity(), 0);
        // With the cap above it, the same record arrives whole.
        let mut d = RecordDecoder::new(16 << 20);
        let mut got = Vec::new();
        for chunk in framed.chunks(64 * 1024 + 7) {
            got.extend(d.push(chunk).unwrap());
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), 8 << 20);
        d.finish().unwrap();
    }

    #[test]
    fn a_framed_fixture_decodes_to_its_records() {
        // Our own fixture, framed like Mesos' encoder: 8 records and a heartbeat.
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/mesos/stream.recordio"
        ))
        .unwrap();
        let mut d = RecordDecoder::new(1 << 20);
        let mut got = Vec::new();
        for chunk in bytes.chunks(97) {
            got.extend(d.push(chunk).unwrap());
        }
        d.finish().unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(&got[2][..], br#"{"type":"HEARTBEAT"}"#);
    }

    #[test]
    fn records_before_a_bad_length_line_in_the_same_chunk_are_returned_then_the_error() {
        // Fuzz finding: the whole stream in one chunk lost the good record that chunked reads
        // delivered.
        let stream = [encode(b"{\"a\":1}"), b"12x\n{}".to_vec()].concat();
        let mut whole = RecordDecoder::new(1024);
        let got = whole.push(&stream).unwrap();
        assert_eq!(got, [Bytes::from_static(b"{\"a\":1}")]);
        assert!(matches!(
            whole.take_error(),
            Some(RecordError::BadLength(_))
        ));
        assert_eq!(whole.push(b"2\n{}").unwrap_err(), RecordError::Failed);
        // Byte by byte: the same record, then the same error.
        let mut split = RecordDecoder::new(1024);
        let mut records = Vec::new();
        let mut error = None;
        for b in &stream {
            match split.push(std::slice::from_ref(b)) {
                Ok(r) => records.extend(r),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        assert_eq!(records, got);
        assert!(matches!(error, Some(RecordError::BadLength(_))));
        // An error kept for later is also what `finish` reports.
        let mut d = RecordDecoder::new(1024);
        d.push(&stream).unwrap();
        assert!(matches!(d.finish(), Err(RecordError::BadLength(_))));
    }
}
