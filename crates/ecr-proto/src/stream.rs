//! Turning one direction's byte stream into frames (D1).
//!
//! Bytes arrive in chunks of any size (a USB transfer of 1 byte, a TCP segment with
//! ten frames), each with the capture time it was seen. The [`StreamDecoder`] yields
//! every frame with the time of its first and last byte, and accounts for every byte:
//! each one ends up in a [`StreamEvent::Frame`], a [`StreamEvent::Rejected`] frame or a
//! [`StreamEvent::Skipped`] run.
//!
//! Frames are found by their length fields. After bytes that are not a frame the
//! decoder scans for the next `2f 6e 01 <known type>` (D1: a resynchronisation candidate
//! must have version 0x01 and a known type). A frame-shaped unit with a bad version, an
//! unknown type or inconsistent lengths, met where a frame was expected and closed by a
//! correct end marker, is reported whole as `Rejected` so that its fields can be shown.
//!
//! Zero-copy: frames that lie wholly inside one chunk are handed out as borrowed
//! slices of it; only a frame split across chunks is copied into the decoder's buffer.
//! The buffer never holds more than one frame's worth of bytes (at most 65535) plus
//! the chunk being scanned.

use std::collections::VecDeque;

use crate::frame::{self, Frame, FrameError, FrameType, Header, ParseError, MARKER, VERSION};
use crate::time::Timestamp;

/// A valid frame found in the stream.
#[derive(Clone, Copy, Debug)]
pub struct StreamFrame<'a> {
    /// The frame.
    pub frame: Frame<&'a [u8]>,
    /// Stream offset of its first byte.
    pub offset: u64,
    /// Capture time of its first byte.
    pub first_ts: Timestamp,
    /// Capture time of its last byte.
    pub last_ts: Timestamp,
}

/// A frame-shaped unit (start marker, length fields, end marker where the length says)
/// with a field the spec does not allow.
#[derive(Clone, Copy, Debug)]
pub struct Rejected<'a> {
    /// All of its bytes.
    pub bytes: &'a [u8],
    /// Its header as read.
    pub header: Header,
    /// What is wrong with it.
    pub error: FrameError,
    /// Stream offset of its first byte.
    pub offset: u64,
    /// Capture time of its first byte.
    pub first_ts: Timestamp,
    /// Capture time of its last byte.
    pub last_ts: Timestamp,
}

/// Why bytes were skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipCause {
    /// Bytes that do not start a frame (the analyzer's `garbage-bytes`).
    NotAFrame,
    /// A frame start whose frame turned out invalid (bad end marker, impossible
    /// lengths); the decoder skipped past its start to resynchronise.
    Invalid(FrameError),
    /// The start of a frame that never completed: the stream ended or had a gap.
    Truncated,
}

/// A run of bytes that are not part of any frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Stream offset of the first skipped byte.
    pub offset: u64,
    /// How many bytes.
    pub len: u64,
    /// Capture time of the first skipped byte.
    pub first_ts: Timestamp,
    /// Capture time of the last skipped byte.
    pub last_ts: Timestamp,
    /// Why the run began.
    pub cause: SkipCause,
    /// For a run that began at an invalid frame: that frame's header as read, so
    /// that e.g. its ref can still be matched with the answer it provoked.
    pub header: Option<Header>,
}

/// What the decoder found.
#[derive(Clone, Copy, Debug)]
pub enum StreamEvent<'a> {
    /// A valid frame.
    Frame(StreamFrame<'a>),
    /// A frame-shaped unit with a bad version, type or length field.
    Rejected(Rejected<'a>),
    /// Bytes skipped to resynchronise.
    Skipped(Skipped),
}

/// What to do with the bytes at the start of a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Frame(usize),
    Reject(usize, FrameError),
    Skip(usize, SkipCause),
    NeedMore(usize),
}

/// Whether `w` starts with a resynchronisation candidate, as far as its bytes show.
fn candidate_prefix(w: &[u8]) -> bool {
    w.first() == Some(&MARKER[0])
        && w.get(1).is_none_or(|&b| b == MARKER[1])
        && w.get(2).is_none_or(|&b| b == VERSION)
        && w.get(3).is_none_or(|&b| FrameType(b).is_known())
}

/// The offset of the next candidate in `w` at or after `from`, or of an undecidable
/// candidate prefix at its end; `w.len()` if there is none.
fn next_candidate(w: &[u8], from: usize) -> usize {
    let Some(tail) = w.get(from..) else {
        return w.len();
    };
    for i in memchr::memchr_iter(MARKER[0], tail) {
        if tail.get(i..).is_some_and(candidate_prefix) {
            return from + i;
        }
    }
    w.len()
}

/// Decides what the bytes at the start of `w` are.
fn step(w: &[u8], synced: bool) -> Step {
    match frame::parse(w) {
        Ok((f, _)) => Step::Frame(f.as_bytes().len()),
        Err(ParseError::Incomplete(n)) => Step::NeedMore(n),
        Err(ParseError::Invalid(err)) => {
            let skip = |cause| Step::Skip(next_candidate(w, 1).max(1), cause);
            match err {
                FrameError::BadStartMarker { .. } => {
                    // Not even a marker here: skip to the next candidate.
                    Step::Skip(next_candidate(w, 0).max(1), SkipCause::NotAFrame)
                }
                FrameError::UnsupportedVersion(_)
                | FrameError::UnknownType(_)
                | FrameError::DataLenTooShort { .. }
                    if synced =>
                {
                    // Where a frame was due: a frame-shaped unit with a bad field is
                    // reported whole if its declared end holds the end marker.
                    let Some(h) = frame::peek_header(w) else {
                        return Step::NeedMore(frame::HEADER_LEN - w.len());
                    };
                    let total = usize::from(h.total_len);
                    if total < frame::OVERHEAD {
                        return skip(SkipCause::Invalid(err));
                    }
                    match w.get(total - 2..total) {
                        None => Step::NeedMore(total - w.len()),
                        Some(end) if end == MARKER => Step::Reject(total, err),
                        Some(_) => skip(SkipCause::Invalid(err)),
                    }
                }
                FrameError::UnsupportedVersion(_) | FrameError::UnknownType(_) => {
                    skip(SkipCause::NotAFrame)
                }
                _ => skip(SkipCause::Invalid(err)),
            }
        }
    }
}

/// Counters kept by a decoder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Bytes fed.
    pub bytes: u64,
    /// Valid frames yielded.
    pub frames: u64,
    /// Rejected frames yielded.
    pub rejected: u64,
    /// Bytes skipped.
    pub skipped_bytes: u64,
}

/// The per-direction frame decoder. See the module documentation.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    /// Bytes of an unfinished frame (or scan window), from `buf[start..]`.
    buf: Vec<u8>,
    start: usize,
    /// Stream offset of `buf[start]`.
    buf_offset: u64,
    /// (stream offset, capture time) where each buffered chunk began.
    marks: VecDeque<(u64, Timestamp)>,
    /// Stream offset of the next byte to be fed.
    offset: u64,
    /// Whether the next byte is where a frame is due (start, or after a frame).
    desynced: bool,
    /// A skipped run not yet reported.
    pending_skip: Option<Skipped>,
    stats: StreamStats,
}

impl StreamDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters so far.
    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// Stream offset of the next byte to be fed.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The skipped run not reported yet (it is reported when the next frame or the
    /// end shows where it stops). Lets a caller act on a broken frame at once, e.g.
    /// expect the error frame that answers it.
    pub fn pending_skip(&self) -> Option<&Skipped> {
        self.pending_skip.as_ref()
    }

    /// Bytes held back waiting for the rest of a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    fn ts_at(&self, offset: u64, now: Timestamp) -> Timestamp {
        // Offsets at or past the buffered bytes belong to the chunk being fed.
        if offset >= self.buf_offset + self.buffered() as u64 {
            return now;
        }
        let mut ts = now;
        for &(o, t) in &self.marks {
            if o <= offset {
                ts = t;
            } else {
                break;
            }
        }
        ts
    }

    fn note_skip(
        &mut self,
        offset: u64,
        len: usize,
        cause: SkipCause,
        first: Timestamp,
        last: Timestamp,
        header: Option<Header>,
    ) {
        let len = len as u64;
        self.stats.skipped_bytes += len;
        if let Some(p) = &mut self.pending_skip {
            if p.offset + p.len == offset {
                p.len += len;
                p.last_ts = last;
                return;
            }
        }
        // A run that is not contiguous with the pending one replaces it only after
        // the pending one was reported (callers flush before frames and at gaps).
        self.pending_skip = Some(Skipped {
            offset,
            len,
            first_ts: first,
            last_ts: last,
            cause,
            header: match cause {
                SkipCause::Invalid(_) => header,
                _ => None,
            },
        });
    }

    fn flush_skip<F: FnMut(StreamEvent<'_>)>(&mut self, emit: &mut F) {
        if let Some(s) = self.pending_skip.take() {
            emit(StreamEvent::Skipped(s));
        }
    }

    /// Drops `n` consumed bytes from the front of the buffer.
    fn consume_buf(&mut self, n: usize) {
        self.start += n;
        self.buf_offset += n as u64;
        if self.start >= self.buf.len() {
            self.buf.clear();
            self.start = 0;
            self.marks.clear();
            return;
        }
        while self.marks.len() > 1
            && self
                .marks
                .get(1)
                .is_some_and(|&(o, _)| o <= self.buf_offset)
        {
            self.marks.pop_front();
        }
        if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// Feeds the next chunk of the stream, seen at capture time `ts`, and reports what
    /// it completes. Frames in the chunk borrow from it where they can.
    pub fn feed<F: FnMut(StreamEvent<'_>)>(&mut self, chunk: &[u8], ts: Timestamp, mut emit: F) {
        self.stats.bytes += chunk.len() as u64;
        let chunk_offset = self.offset;
        self.offset += chunk.len() as u64;
        let mut pos = 0usize;
        let mut marked = false;

        // Phase 1: finish what the buffer holds, pulling bytes from the chunk as needed.
        while self.buffered() > 0 {
            let window = self.buf.get(self.start..).unwrap_or(&[]);
            let decision = step(window, !self.desynced);
            match decision {
                Step::NeedMore(n) => {
                    let Some(rest) = chunk.get(pos..).filter(|r| !r.is_empty()) else {
                        break;
                    };
                    // A frame's length is known once its header is in: pull the rest
                    // of it at once; otherwise pull byte by byte up to the header.
                    let take = n.max(1).min(rest.len());
                    if !marked {
                        self.marks.push_back((chunk_offset + pos as u64, ts));
                        marked = true;
                    }
                    self.buf.extend_from_slice(rest.get(..take).unwrap_or(&[]));
                    pos += take;
                }
                Step::Frame(len) | Step::Reject(len, _) => {
                    self.flush_skip(&mut emit);
                    let offset = self.buf_offset;
                    let first_ts = self.ts_at(offset, ts);
                    let last_ts = self.ts_at(offset + len as u64 - 1, ts);
                    let bytes = self.buf.get(self.start..self.start + len).unwrap_or(&[]);
                    emit_unit(bytes, decision, offset, first_ts, last_ts, &mut emit);
                    self.count(decision);
                    self.desynced = false;
                    self.consume_buf(len);
                }
                Step::Skip(n, cause) => {
                    let offset = self.buf_offset;
                    let first = self.ts_at(offset, ts);
                    let last = self.ts_at(offset + n as u64 - 1, ts);
                    let header = frame::peek_header(window);
                    self.note_skip(offset, n, cause, first, last, header);
                    self.desynced = true;
                    self.consume_buf(n);
                }
            }
        }
        if self.buffered() > 0 {
            return;
        }

        // Phase 2: decode straight from the chunk.
        while let Some(window) = chunk.get(pos..).filter(|w| !w.is_empty()) {
            let offset = chunk_offset + pos as u64;
            let decision = step(window, !self.desynced);
            match decision {
                Step::Frame(len) | Step::Reject(len, _) => {
                    self.flush_skip(&mut emit);
                    let bytes = window.get(..len).unwrap_or(&[]);
                    emit_unit(bytes, decision, offset, ts, ts, &mut emit);
                    self.count(decision);
                    self.desynced = false;
                    pos += len;
                }
                Step::Skip(n, cause) => {
                    self.note_skip(offset, n, cause, ts, ts, frame::peek_header(window));
                    self.desynced = true;
                    pos += n;
                }
                Step::NeedMore(_) => {
                    self.buf.clear();
                    self.start = 0;
                    self.marks.clear();
                    self.marks.push_back((offset, ts));
                    self.buf.extend_from_slice(window);
                    self.buf_offset = offset;
                    break;
                }
            }
        }
    }

    fn count(&mut self, decision: Step) {
        match decision {
            Step::Frame(_) => self.stats.frames += 1,
            Step::Reject(..) => self.stats.rejected += 1,
            _ => {}
        }
    }

    fn drop_buffered<F: FnMut(StreamEvent<'_>)>(&mut self, emit: &mut F) {
        let n = self.buffered();
        if n > 0 {
            let offset = self.buf_offset;
            let first = self.ts_at(offset, Timestamp::default());
            let last = self.marks.back().map_or(first, |&(_, t)| t);
            // A truncated frame is its own run, not part of earlier garbage.
            self.flush_skip(emit);
            self.note_skip(offset, n, SkipCause::Truncated, first, last, None);
            self.consume_buf(n);
        }
        self.flush_skip(emit);
    }

    /// Tells the decoder that `missing` bytes of the stream were lost (a TCP hole):
    /// a frame in progress is reported as truncated and decoding resynchronises on the
    /// next candidate.
    pub fn gap<F: FnMut(StreamEvent<'_>)>(&mut self, missing: u64, mut emit: F) {
        self.drop_buffered(&mut emit);
        self.offset += missing;
        self.buf_offset = self.offset;
        self.desynced = true;
    }

    /// Reports whatever is still pending at the end of the stream: a frame that never
    /// completed (as truncated) and skipped bytes not yet reported.
    pub fn finish<F: FnMut(StreamEvent<'_>)>(&mut self, mut emit: F) {
        self.drop_buffered(&mut emit);
    }

    /// Reports a pending skipped run now (e.g. in a live view, when the line goes
    /// quiet) instead of waiting for the next frame.
    pub fn flush<F: FnMut(StreamEvent<'_>)>(&mut self, mut emit: F) {
        self.flush_skip(&mut emit);
    }
}

fn emit_unit<F: FnMut(StreamEvent<'_>)>(
    bytes: &[u8],
    decision: Step,
    offset: u64,
    first_ts: Timestamp,
    last_ts: Timestamp,
    emit: &mut F,
) {
    match decision {
        Step::Frame(_) => {
            if let Ok((frame, _)) = frame::parse(bytes) {
                emit(StreamEvent::Frame(StreamFrame {
                    frame,
                    offset,
                    first_ts,
                    last_ts,
                }));
            }
        }
        Step::Reject(_, error) => {
            if let Some(header) = frame::peek_header(bytes) {
                emit(StreamEvent::Rejected(Rejected {
                    bytes,
                    header,
                    error,
                    offset,
                    first_ts,
                    last_ts,
                }));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{split_message, FrameRepr};

    #[derive(Debug, PartialEq, Eq, Clone)]
    enum Ev {
        Frame {
            ty: u8,
            r: u8,
            data: Vec<u8>,
            off: u64,
            first: i64,
            last: i64,
        },
        Rejected {
            err: FrameError,
            off: u64,
            len: usize,
        },
        Skipped {
            off: u64,
            len: u64,
            cause: SkipCause,
        },
    }

    fn collect(ev: StreamEvent<'_>, out: &mut Vec<Ev>) {
        out.push(match ev {
            StreamEvent::Frame(f) => Ev::Frame {
                ty: f.frame.frame_type().0,
                r: f.frame.ref_num(),
                data: f.frame.data().to_vec(),
                off: f.offset,
                first: f.first_ts.0,
                last: f.last_ts.0,
            },
            StreamEvent::Rejected(r) => Ev::Rejected {
                err: r.error,
                off: r.offset,
                len: r.bytes.len(),
            },
            StreamEvent::Skipped(s) => Ev::Skipped {
                off: s.offset,
                len: s.len,
                cause: s.cause,
            },
        });
    }

    fn run(chunks: &[&[u8]]) -> Vec<Ev> {
        let mut d = StreamDecoder::new();
        let mut out = vec![];
        for (i, c) in chunks.iter().enumerate() {
            d.feed(c, Timestamp(i as i64), |e| collect(e, &mut out));
        }
        d.finish(|e| collect(e, &mut out));
        out
    }

    fn req(r: u8, data: &[u8]) -> Vec<u8> {
        FrameRepr::new(FrameType::REQUEST, r, data)
            .to_bytes()
            .unwrap()
    }

    #[test]
    fn frames_in_one_chunk_and_byte_by_byte_agree() {
        let mut s = req(1, b"hello");
        s.extend(FrameRepr::ack(1).to_bytes().unwrap());
        s.extend(req(2, b"x/ny/n2f6e"));
        let whole = run(&[&s]);
        assert_eq!(whole.len(), 3);
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        let one = run(&bytes);
        assert_eq!(one.len(), 3);
        for (a, b) in whole.iter().zip(&one) {
            match (a, b) {
                (
                    Ev::Frame {
                        data: d1, r: r1, ..
                    },
                    Ev::Frame {
                        data: d2, r: r2, ..
                    },
                ) => {
                    assert_eq!((d1, r1), (d2, r2))
                }
                _ => panic!("{a:?} {b:?}"),
            }
        }
        // Timestamps of first and last byte.
        assert_eq!(
            one[0],
            Ev::Frame {
                ty: 0x10,
                r: 1,
                data: b"hello".to_vec(),
                off: 0,
                first: 0,
                last: 15
            }
        );
    }

    #[test]
    fn garbage_between_frames_is_one_skip() {
        let mut s = b"xx".to_vec();
        s.extend(req(1, b"a"));
        s.extend(b"garbage\n/n");
        s.extend(req(2, b"b"));
        let ev = run(&[&s]);
        assert_eq!(
            ev,
            vec![
                Ev::Skipped {
                    off: 0,
                    len: 2,
                    cause: SkipCause::NotAFrame
                },
                Ev::Frame {
                    ty: 0x10,
                    r: 1,
                    data: b"a".to_vec(),
                    off: 2,
                    first: 0,
                    last: 0
                },
                Ev::Skipped {
                    off: 14,
                    len: 10,
                    cause: SkipCause::NotAFrame
                },
                Ev::Frame {
                    ty: 0x10,
                    r: 2,
                    data: b"b".to_vec(),
                    off: 24,
                    first: 0,
                    last: 0
                },
            ]
        );
        // The same byte by byte: one run each, not one per byte.
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        let ev1 = run(&bytes);
        assert_eq!(ev1.len(), 4);
        assert_eq!(
            ev1[2],
            Ev::Skipped {
                off: 14,
                len: 10,
                cause: SkipCause::NotAFrame
            }
        );
    }

    #[test]
    fn bad_end_marker_resyncs_to_next_frame() {
        let mut bad = req(1, b"abc");
        let n = bad.len();
        bad[n - 1] = 0x00;
        let mut s = bad.clone();
        s.extend(req(2, b"ok"));
        let ev = run(&[&s]);
        assert_eq!(ev.len(), 2);
        assert!(matches!(
            ev[0],
            Ev::Skipped {
                off: 0,
                len: 14,
                cause: SkipCause::Invalid(FrameError::BadEndMarker { .. })
            }
        ));
        assert!(matches!(ev[1], Ev::Frame { r: 2, off: 14, .. }));
    }

    #[test]
    fn bad_version_and_type_are_rejected_whole_when_in_sync() {
        let mut v2 = FrameRepr::ack(3).to_bytes().unwrap();
        v2[2] = 2;
        let mut t40 = FrameRepr::ack(4).to_bytes().unwrap();
        t40[3] = 0x40;
        let mut s = req(1, b"a");
        s.extend(&v2);
        s.extend(&t40);
        s.extend(req(5, b"z"));
        let ev = run(&[&s]);
        assert_eq!(ev.len(), 4);
        assert_eq!(
            ev[1],
            Ev::Rejected {
                err: FrameError::UnsupportedVersion(2),
                off: 12,
                len: 11
            }
        );
        assert_eq!(
            ev[2],
            Ev::Rejected {
                err: FrameError::UnknownType(0x40),
                off: 23,
                len: 11
            }
        );
        assert!(matches!(ev[3], Ev::Frame { r: 5, .. }));
    }

    #[test]
    fn bad_version_after_garbage_is_not_a_candidate() {
        let mut v2 = FrameRepr::ack(3).to_bytes().unwrap();
        v2[2] = 2;
        let mut s = b"zz".to_vec();
        s.extend(&v2);
        s.extend(req(5, b"z"));
        let ev = run(&[&s]);
        assert_eq!(
            ev[0],
            Ev::Skipped {
                off: 0,
                len: 13,
                cause: SkipCause::NotAFrame
            }
        );
        assert!(matches!(ev[1], Ev::Frame { r: 5, off: 13, .. }));
    }

    #[test]
    fn data_len_too_short_is_rejected() {
        let mut f = req(1, b"abcd");
        f[8] = 2; // data length 2 < 4 carried
        let ev = run(&[&f]);
        assert!(matches!(
            ev[0],
            Ev::Rejected {
                err: FrameError::DataLenTooShort { .. },
                off: 0,
                len: 15
            }
        ));
    }

    #[test]
    fn truncated_at_end_and_at_gap() {
        let f = req(1, b"abcdef");
        let ev = run(&[&f[..8]]);
        assert_eq!(
            ev,
            vec![Ev::Skipped {
                off: 0,
                len: 8,
                cause: SkipCause::Truncated
            }]
        );

        let mut d = StreamDecoder::new();
        let mut out = vec![];
        d.feed(&f[..8], Timestamp(0), |e| collect(e, &mut out));
        d.gap(100, |e| collect(e, &mut out));
        d.feed(&f[8..], Timestamp(1), |e| collect(e, &mut out));
        d.feed(&req(2, b"q"), Timestamp(2), |e| collect(e, &mut out));
        d.finish(|e| collect(e, &mut out));
        assert_eq!(
            out[0],
            Ev::Skipped {
                off: 0,
                len: 8,
                cause: SkipCause::Truncated
            }
        );
        assert_eq!(
            out[1],
            Ev::Skipped {
                off: 108,
                len: 9,
                cause: SkipCause::NotAFrame
            }
        );
        assert!(matches!(
            out[2],
            Ev::Frame {
                r: 2,
                off: 117,
                first: 2,
                ..
            }
        ));
    }

    #[test]
    fn split_vector_fragments_across_odd_chunks() {
        let data: Vec<u8> = (0..2500u32).map(|i| (i * 7) as u8).collect();
        let s = split_message(FrameType::REQUEST, 0x11, &data, 1024).unwrap();
        for size in [1usize, 2, 3, 7, 100, 1035, 4096] {
            let chunks: Vec<&[u8]> = s.chunks(size).collect();
            let ev = run(&chunks);
            assert_eq!(ev.len(), 3, "chunk size {size}");
            let total: usize = ev
                .iter()
                .map(|e| match e {
                    Ev::Frame { data, .. } => data.len(),
                    _ => panic!("{e:?}"),
                })
                .sum();
            assert_eq!(total, 2500);
        }
    }

    #[test]
    fn marker_split_across_chunks_after_garbage() {
        let f = req(7, b"m");
        let mut s = b"abc".to_vec();
        s.extend(&f);
        let ev = run(&[&s[..4], &s[4..5], &s[5..]]);
        assert_eq!(
            ev[0],
            Ev::Skipped {
                off: 0,
                len: 3,
                cause: SkipCause::NotAFrame
            }
        );
        assert!(matches!(
            ev[1],
            Ev::Frame {
                r: 7,
                off: 3,
                first: 0,
                last: 2,
                ..
            }
        ));
    }

    #[test]
    fn stats_account_for_every_byte() {
        let mut s = b"junk".to_vec();
        s.extend(req(1, b"abc"));
        s.extend(b"/n\x01");
        let mut d = StreamDecoder::new();
        d.feed(&s, Timestamp(0), |_| {});
        d.finish(|_| {});
        let st = d.stats();
        assert_eq!(st.bytes, s.len() as u64);
        assert_eq!(st.frames, 1);
        assert_eq!(st.skipped_bytes, 4 + 3);
    }
}
