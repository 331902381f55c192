//! A duplex link that carries `0x2f6e` frames: the serial line, or a TCP connection
//! whose stream starts with `2f 6e 01` (D6).
//!
//! It runs, per direction, the stream decoder and the reassembler of `ecr-proto`, and
//! one link tracker for both directions, and turns their events into complete
//! messages and frame-level findings with the spec rule each breaks.

use std::borrow::Cow;

use ecr_proto::frame::{FrameError, FrameType, Header};
use ecr_proto::link::{LinkEvent, LinkTracker, Side};
use ecr_proto::reassembly::{IncompleteReason, Reassembler, ReassemblyEvent, FRAGMENT_TIMEOUT_MS};
use ecr_proto::stream::{SkipCause, StreamDecoder, StreamEvent};
use ecr_proto::Timestamp;

use crate::findings::Code;
use crate::record::FragmentInfo;

/// A complete message on the link (a data message, an ack or an error frame).
#[derive(Debug)]
pub struct LinkMessage<'a> {
    /// Who sent it.
    pub from: Side,
    /// Frame type.
    pub frame_type: FrameType,
    /// Ref number.
    pub ref_num: u8,
    /// The message's data (empty for a bare ack).
    pub data: Cow<'a, [u8]>,
    /// Header of its first frame.
    pub header: Header,
    /// Frames that carried it.
    pub fragments: u16,
    /// Stream offset of its first frame.
    pub offset: u64,
    /// First byte.
    pub first_ts: Timestamp,
    /// Last byte.
    pub last_ts: Timestamp,
    /// The frames of a split message with their header fields (empty for a message
    /// in one frame).
    pub parts: Vec<FragmentInfo>,
}

/// Most fragment headers remembered per direction while their messages are open.
const MAX_PARTS: usize = 4096;
/// Bytes counted per remembered fragment header (see [`FrameLink::held`]).
const PART_COST: usize = 96;

/// The fragments seen per direction, until their message completes: the reassembler
/// keeps only data, the text tree shows each fragment's header.
#[derive(Debug, Default)]
struct PartLog {
    /// (ref, first and last byte's time, the fragment).
    open: Vec<(u8, Timestamp, Timestamp, FragmentInfo)>,
}

impl PartLog {
    fn push(&mut self, ref_num: u8, ts: (Timestamp, Timestamp), part: FragmentInfo) {
        if self.open.len() >= MAX_PARTS {
            self.open.drain(..MAX_PARTS / 2);
        }
        self.open.push((ref_num, ts.0, ts.1, part));
    }

    /// Takes the fragments of the message of `ref_num` whose first frame is at
    /// `offset`, and forgets older ones of that ref.
    fn take(&mut self, ref_num: u8, offset: u64) -> Vec<FragmentInfo> {
        let mut parts: Vec<FragmentInfo> = vec![];
        let mut prev_last: Option<Timestamp> = None;
        for (r, first, last, p) in &self.open {
            if *r == ref_num && p.offset >= offset {
                let mut p = p.clone();
                p.gap_ms = prev_last.map(|l| first.millis_since(l));
                prev_last = Some(*last);
                parts.push(p);
            }
        }
        self.open.retain(|(r, ..)| *r != ref_num);
        parts
    }
}

/// A frame-level problem.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkFinding {
    /// The code.
    pub code: Code,
    /// Who sent the offending bytes (for ack timeouts: who sent the request).
    pub from: Side,
    /// When.
    pub ts: Timestamp,
    /// What exactly.
    pub detail: String,
}

/// What the link reports.
#[derive(Debug)]
pub enum LinkOutput<'a> {
    /// A complete message.
    Message(LinkMessage<'a>),
    /// A problem.
    Finding(LinkFinding),
    /// An answer matched a request: the ack latency, for display.
    Answered {
        /// Who sent the request.
        request_from: Side,
        /// Ref.
        ref_num: u8,
        /// Milliseconds from the request's last byte to the answer's first.
        latency_ms: f64,
    },
}

/// Frame-level counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Valid frames.
    pub frames: u64,
    /// Bytes skipped.
    pub skipped_bytes: u64,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct FrameLink {
    /// What each direction's decoding holds: index 0 for the cash register's bytes,
    /// 1 for the terminal's.
    halves: [Half; 2],
    link: LinkTracker,
    last_ts: Timestamp,
}

/// The state of one direction.
#[derive(Debug, Default)]
struct Half {
    decoder: StreamDecoder,
    reassembler: Reassembler,
    /// The stream offset of a skipped run whose broken frame was already registered
    /// with the link tracker before the run was reported.
    early: Option<u64>,
    /// Headers of fragments of open split messages.
    parts: PartLog,
    /// Arrival of the chunk where the frame now held incomplete by the decoder
    /// began. At 9600 baud a 1 KB fragment takes a second on the line, so a deadline
    /// may pass while the next fragment or the answer is still arriving: time only
    /// counts for the ack timeout up to there.
    in_progress: Option<Timestamp>,
}

impl FrameLink {
    /// One direction's state and the link tracker shared by both.
    fn half(&mut self, side: Side) -> (&mut Half, &mut LinkTracker) {
        let [ecr, pos] = &mut self.halves;
        let half = match side {
            Side::Ecr => ecr,
            Side::Pos => pos,
        };
        (half, &mut self.link)
    }
}

fn finding(code: Code, from: Side, ts: Timestamp, detail: String) -> LinkOutput<'static> {
    LinkOutput::Finding(LinkFinding {
        code,
        from,
        ts,
        detail,
    })
}

fn frame_error_code(e: &FrameError) -> Code {
    match e {
        FrameError::BadStartMarker { .. } => Code::GarbageBytes,
        FrameError::UnsupportedVersion(_) => Code::UnsupportedVersion,
        FrameError::UnknownType(_) => Code::UnknownFrameType,
        FrameError::BadEndMarker { .. } => Code::BadEndMarker,
        FrameError::TotalTooShort { .. }
        | FrameError::DataLenTooShort { .. }
        | FrameError::TrailingBytes { .. } => Code::BadLength,
    }
}

impl FrameLink {
    /// A link with nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Frame counters of both directions together.
    pub fn stats(&self) -> LinkStats {
        let mut s = LinkStats::default();
        for h in &self.halves {
            let st = h.decoder.stats();
            s.frames += st.frames;
            s.skipped_bytes += st.skipped_bytes;
        }
        s
    }

    /// Bytes held by both directions: a frame still arriving, the data of open
    /// split messages (see [`Reassembler::held`]) and their fragment headers.
    pub fn held(&self) -> usize {
        self.halves
            .iter()
            .map(|h| h.decoder.buffered() + h.reassembler.held() + h.parts.open.len() * PART_COST)
            .sum::<usize>()
            + self.link.held()
    }

    /// Bytes reserved from the allocator for what [`FrameLink::held`] counts.
    pub fn reserved(&self) -> usize {
        self.halves
            .iter()
            .map(|h| {
                h.decoder.buffered()
                    + h.reassembler.reserved()
                    + h.parts.open.capacity() * PART_COST
            })
            .sum::<usize>()
            + self.link.reserved()
    }

    /// Split messages open in both directions.
    pub fn open_refs(&self) -> usize {
        self.halves.iter().map(|h| h.reassembler.open()).sum()
    }

    /// Gives up every open split message of both directions and every request
    /// waiting for its ack or answer, without reporting them (the caller reports
    /// why); an answer that comes later for a forgotten request is not reported as
    /// unexpected. Returns how many split messages there were, their bytes, and how
    /// many requests were forgotten.
    pub fn abandon(&mut self) -> (usize, usize, usize) {
        let mut total = (0, 0, 0);
        for h in &mut self.halves {
            let (n, b) = h.reassembler.abandon();
            h.parts.open = Vec::new();
            total.0 += n;
            total.1 += b;
        }
        total.2 = self.link.abandon();
        total
    }

    /// Bytes of `from`'s stream, seen at `ts`.
    pub fn feed<F: FnMut(LinkOutput<'_>)>(
        &mut self,
        from: Side,
        chunk: &[u8],
        ts: Timestamp,
        out: &mut F,
    ) {
        self.last_ts = self.last_ts.max(ts);
        let (h, link) = self.half(from);
        let (dec, re, log) = (&mut h.decoder, &mut h.reassembler, &mut h.parts);
        let mut registered = h.early;
        let mut completed = false;
        dec.feed(chunk, ts, |ev| {
            completed = true;
            if let StreamEvent::Skipped(s) = &ev {
                if registered == Some(s.offset) {
                    registered = None;
                    let mut s = *s;
                    s.header = None;
                    return on_stream_event(from, StreamEvent::Skipped(s), re, link, log, out);
                }
            }
            on_stream_event(from, ev, re, link, log, out)
        });
        // A broken frame whose run is still open may already have been answered by
        // the time the run is reported: expect that answer now.
        if let Some(s) = dec.pending_skip() {
            if let (Some(h), true) = (s.header, registered != Some(s.offset)) {
                expect_answer(from, h, s.first_ts, s.last_ts, link, out);
                registered = Some(s.offset);
            }
        }
        h.early = registered;
        h.in_progress = match (h.decoder.buffered() > 0, h.in_progress) {
            (false, _) => None,
            // Still the same frame unless a frame completed in this chunk.
            (true, Some(t)) if !completed => Some(t),
            (true, _) => Some(ts),
        };
    }

    /// Bytes of `from`'s stream were lost (a TCP hole).
    pub fn gap<F: FnMut(LinkOutput<'_>)>(&mut self, from: Side, missing: u64, out: &mut F) {
        let (h, link) = self.half(from);
        let (re, log) = (&mut h.reassembler, &mut h.parts);
        h.decoder
            .gap(missing, |ev| on_stream_event(from, ev, re, link, log, out));
        // A split message cannot complete across a hole.
        re.finish(|_| {});
    }

    /// Reports ack timeouts whose deadline is before `now` (call with each packet's
    /// time so that timeouts show even when the link goes quiet).
    pub fn advance<F: FnMut(LinkOutput<'_>)>(&mut self, now: Timestamp, out: &mut F) {
        self.last_ts = self.last_ts.max(now);
        let horizon = self
            .halves
            .iter()
            .filter_map(|h| h.in_progress)
            .fold(now, Timestamp::min);
        self.link.advance(horizon, |ev| on_link_event(ev, out));
    }

    /// The end of the capture at capture time `end`.
    pub fn finish<F: FnMut(LinkOutput<'_>)>(&mut self, end: Timestamp, out: &mut F) {
        let end = end.max(self.last_ts);
        for side in [Side::Ecr, Side::Pos] {
            let (h, link) = self.half(side);
            let (re, log) = (&mut h.reassembler, &mut h.parts);
            h.decoder
                .finish(|ev| on_stream_event(side, ev, re, link, log, out));
            re.finish(|ev| {
                if let ReassemblyEvent::Incomplete {
                    ref_num,
                    fragments,
                    collected,
                    declared,
                    last_ts,
                    ..
                } = ev
                {
                    // Cut off by the end of the capture within the timeout: not a fault.
                    let waited = end - last_ts;
                    if waited > FRAGMENT_TIMEOUT_MS * 1_000_000 {
                        out(finding(
                            Code::ReassemblyTimeout,
                            side,
                            last_ts,
                            format!(
                                "split message ref {ref_num} never completed: {collected} of {declared} bytes in {fragments} fragment(s), nothing more in the {:.0} ms to the end of the capture",
                                waited as f64 / 1e6
                            ),
                        ));
                    }
                }
            });
        }
        self.link.finish(end, |ev| on_link_event(ev, out));
    }
}

fn on_stream_event<'a, F: FnMut(LinkOutput<'_>)>(
    from: Side,
    ev: StreamEvent<'a>,
    re: &mut Reassembler,
    link: &mut LinkTracker,
    log: &mut PartLog,
    out: &mut F,
) {
    match ev {
        StreamEvent::Skipped(s) => {
            let (code, what) = match s.cause {
                SkipCause::NotAFrame => {
                    (Code::GarbageBytes, "bytes that are not a frame".to_string())
                }
                SkipCause::Invalid(e) => (frame_error_code(&e), format!("invalid frame: {e}")),
                // A frame cut by the end of the capture or a TCP hole (reported as
                // such): not a protocol fault.
                SkipCause::Truncated => return,
            };
            out(finding(
                code,
                from,
                s.first_ts,
                format!(
                    "{what}; skipped {} byte(s) at stream offset {} to resynchronise",
                    s.len, s.offset
                ),
            ));
        }
        StreamEvent::Rejected(r) => {
            let code = frame_error_code(&r.error);
            out(finding(
                code,
                from,
                r.first_ts,
                format!(
                    "frame at stream offset {} ({} bytes, ref {}): {}",
                    r.offset,
                    r.bytes.len(),
                    r.header.ref_num,
                    r.error
                ),
            ));
            expect_answer(from, r.header, r.first_ts, r.last_ts, link, out);
        }
        StreamEvent::Frame(f) => {
            let frame = f.frame;
            if !frame.ref_in_range() {
                out(finding(
                    Code::BadRef,
                    from,
                    f.first_ts,
                    format!(
                        "{} frame with ref 0x{:02x} (valid: 0x01..0x7f)",
                        frame.frame_type(),
                        frame.ref_num()
                    ),
                ));
            }
            if frame.is_oversize() {
                out(finding(
                    Code::OversizeFrame,
                    from,
                    f.first_ts,
                    format!(
                        "frame ref {} carries {} data bytes (recommended at most 1024)",
                        frame.ref_num(),
                        frame.data().len()
                    ),
                ));
            }
            link.on_frame(
                from,
                frame.frame_type(),
                frame.ref_num(),
                f.first_ts,
                f.last_ts,
                |ev| on_link_event(ev, out),
            );
            let header = frame.header();
            if frame.data().len() < usize::from(header.data_len) {
                log.push(
                    header.ref_num,
                    (f.first_ts, f.last_ts),
                    FragmentInfo {
                        total_len: header.total_len,
                        data_len: header.data_len,
                        carried: frame.data().len(),
                        offset: f.offset,
                        ts: f.first_ts.as_secs_f64(),
                        gap_ms: None,
                    },
                );
            }
            re.push(&f, |ev| on_reassembly_event(from, header, ev, log, out));
        }
    }
}

/// A broken frame still provokes an answer (typically an error frame): track it as a
/// request so that the answer is matched rather than reported as unexpected.
fn expect_answer<F: FnMut(LinkOutput<'_>)>(
    from: Side,
    h: Header,
    first_ts: Timestamp,
    last_ts: Timestamp,
    link: &mut LinkTracker,
    out: &mut F,
) {
    if !h.frame_type.is_answer() {
        link.on_frame(
            from,
            FrameType::REQUEST,
            h.ref_num,
            first_ts,
            last_ts,
            |ev| on_link_event(ev, out),
        );
    }
}

fn on_reassembly_event<F: FnMut(LinkOutput<'_>)>(
    from: Side,
    header: Header,
    ev: ReassemblyEvent<'_>,
    log: &mut PartLog,
    out: &mut F,
) {
    match ev {
        ReassemblyEvent::Message(m) => {
            let parts = if m.fragments > 1 {
                log.take(m.ref_num, m.offset)
            } else {
                vec![]
            };
            out(LinkOutput::Message(LinkMessage {
                parts,
                from,
                frame_type: m.frame_type,
                ref_num: m.ref_num,
                header,
                fragments: m.fragments,
                offset: m.offset,
                first_ts: m.first_ts,
                last_ts: m.last_ts,
                data: m.data,
            }))
        }
        ReassemblyEvent::Timeout {
            ref_num,
            gap_ms,
            fragments,
            collected,
            declared,
            ts,
        } => out(finding(
            Code::ReassemblyTimeout,
            from,
            ts,
            format!(
                "fragment {} of ref {ref_num} came {gap_ms:.1} ms after the previous one (limit 500 ms; {collected} of {declared} bytes collected): a receiver discards the message and answers 0x35",
                fragments + 1
            ),
        )),
        ReassemblyEvent::Overflow {
            ref_num,
            collected,
            declared,
            ts,
        } => out(finding(
            Code::BadLength,
            from,
            ts,
            format!("fragments of ref {ref_num} carry {collected} bytes, more than the declared data length {declared}; the message is dropped"),
        )),
        ReassemblyEvent::LengthChanged { ref_num, was, now, ts } => out(finding(
            Code::BadLength,
            from,
            ts,
            format!("a fragment of ref {ref_num} declares data length {now}, earlier fragments {was}; the earlier ones are dropped"),
        )),
        ReassemblyEvent::Incomplete {
            ref_num,
            fragments,
            collected,
            declared,
            last_ts,
            reason,
            ..
        } => {
            let why = match reason {
                IncompleteReason::Superseded => "an unsplit frame with the same ref came instead of the next fragment",
                IncompleteReason::Evicted => {
                    // Dropped by the bound on open messages, not by the sender's timing.
                    out(finding(
                        Code::LimitEvicted,
                        from,
                        last_ts,
                        format!("split message ref {ref_num} dropped unfinished ({collected} of {declared} bytes in {fragments} fragment(s)): more than {} split messages were open in this direction (limit: open refs)", ecr_proto::reassembly::MAX_OPEN),
                    ));
                    return;
                }
                IncompleteReason::Ended => return,
            };
            out(finding(
                Code::ReassemblyTimeout,
                from,
                last_ts,
                format!("split message ref {ref_num} never completed ({collected} of {declared} bytes in {fragments} fragment(s)): {why}"),
            ));
        }
    }
}

fn on_link_event<F: FnMut(LinkOutput<'_>)>(ev: LinkEvent, out: &mut F) {
    match ev {
        LinkEvent::Answered {
            request,
            latency_ms,
            ..
        } => out(LinkOutput::Answered {
            request_from: request.from,
            ref_num: request.ref_num,
            latency_ms,
        }),
        LinkEvent::Timeout { request } => out(finding(
            Code::AckTimeout,
            request.from,
            request.deadline(),
            format!(
                "request ref {} ({} frame(s)) not answered within 1000 ms of its last byte",
                request.ref_num, request.frames
            ),
        )),
        LinkEvent::Unexpected {
            from,
            ref_num,
            answer,
            ts,
        } => out(finding(
            Code::UnexpectedAck,
            from,
            ts,
            format!(
                "{answer} with ref {ref_num} answers no outstanding request from the other side"
            ),
        )),
        LinkEvent::ErrorFrame {
            from,
            ref_num,
            code,
            ts,
        } => out(finding(
            Code::ErrorFrame,
            from,
            ts,
            format!("error frame {code} for ref {ref_num}"),
        )),
        LinkEvent::Replaced { .. } => {}
        LinkEvent::UnansweredAtEnd { request } => out(finding(
            Code::UnansweredAtEnd,
            request.from,
            request.last_ts,
            format!(
                "request ref {} was still waiting for its ack when the capture ended",
                request.ref_num
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecr_proto::frame::{split_message, FrameRepr};

    fn ms(v: i64) -> Timestamp {
        Timestamp::from_millis(v)
    }

    #[derive(Debug, PartialEq)]
    enum Out {
        Msg(Side, u8, u8, usize, u16),
        Find(Code),
        Ans(u8),
    }

    fn collect(o: LinkOutput<'_>, v: &mut Vec<Out>) {
        v.push(match o {
            LinkOutput::Message(m) => {
                Out::Msg(m.from, m.frame_type.0, m.ref_num, m.data.len(), m.fragments)
            }
            LinkOutput::Finding(f) => Out::Find(f.code),
            LinkOutput::Answered { ref_num, .. } => Out::Ans(ref_num),
        });
    }

    #[test]
    fn request_ack_and_split_message() {
        let mut l = FrameLink::new();
        let mut v = vec![];
        let data = vec![b'a'; 2000];
        let req = split_message(FrameType::REQUEST, 1, &data, 1024).unwrap();
        l.feed(Side::Ecr, &req[..500], ms(0), &mut |o| collect(o, &mut v));
        l.feed(Side::Ecr, &req[500..], ms(300), &mut |o| collect(o, &mut v));
        l.feed(
            Side::Pos,
            &FrameRepr::ack(1).to_bytes().unwrap(),
            ms(400),
            &mut |o| collect(o, &mut v),
        );
        l.finish(ms(500), &mut |o| collect(o, &mut v));
        assert_eq!(
            v,
            vec![
                Out::Msg(Side::Ecr, 0x10, 1, 2000, 2),
                Out::Ans(1),
                Out::Msg(Side::Pos, 0x20, 1, 0, 1)
            ]
        );
    }

    #[test]
    fn slow_fragments_are_not_ack_timeouts_and_keep_their_headers() {
        // 9600 baud: each fragment takes about a second to arrive in 16-byte pieces,
        // longer than the 1000 ms ack timeout; the ack follows the last fragment.
        let mut l = FrameLink::new();
        let mut v = vec![];
        let mut parts = vec![];
        let data = vec![b'a'; 2000];
        let req = split_message(FrameType::REQUEST, 1, &data, 1024).unwrap();
        let mut t_us = 0i64;
        for c in req.chunks(16) {
            t_us += 16 * 1042;
            let ts = Timestamp::from_parts(t_us / 1_000_000, (t_us % 1_000_000) as u32 * 1000);
            l.feed(Side::Ecr, c, ts, &mut |o| {
                if let LinkOutput::Message(m) = &o {
                    parts = m.parts.clone();
                }
                collect(o, &mut v)
            });
            l.advance(ts, &mut |o| collect(o, &mut v));
        }
        let ack_at = ms(t_us / 1000 + 50);
        l.advance(ack_at, &mut |o| collect(o, &mut v));
        l.feed(
            Side::Pos,
            &FrameRepr::ack(1).to_bytes().unwrap(),
            ack_at,
            &mut |o| collect(o, &mut v),
        );
        l.finish(ms(t_us / 1000 + 100), &mut |o| collect(o, &mut v));
        assert_eq!(
            v,
            vec![
                Out::Msg(Side::Ecr, 0x10, 1, 2000, 2),
                Out::Ans(1),
                Out::Msg(Side::Pos, 0x20, 1, 0, 1)
            ]
        );
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (parts[0].total_len, parts[0].data_len, parts[0].carried),
            (1035, 2000, 1024)
        );
        assert_eq!(
            (parts[1].total_len, parts[1].carried, parts[1].offset),
            (987, 976, 1035)
        );
        assert!(parts[1].gap_ms.is_some_and(|g| (0.0..20.0).contains(&g)));
    }

    #[test]
    fn faults_become_findings() {
        let mut l = FrameLink::new();
        let mut v = vec![];
        let mut s = b"xx".to_vec();
        s.extend(
            FrameRepr::new(FrameType::REQUEST, 0x80, b"x")
                .to_bytes()
                .unwrap(),
        );
        s.extend(
            FrameRepr::new(FrameType::REQUEST, 2, &[b'y'; 1100])
                .to_bytes()
                .unwrap(),
        );
        l.feed(Side::Ecr, &s, ms(0), &mut |o| collect(o, &mut v));
        l.feed(
            Side::Pos,
            &FrameRepr::error(ecr_proto::frame::ErrorCode::VALIDATION, 2)
                .to_bytes()
                .unwrap(),
            ms(10),
            &mut |o| collect(o, &mut v),
        );
        l.feed(
            Side::Pos,
            &FrameRepr::ack(9).to_bytes().unwrap(),
            ms(20),
            &mut |o| collect(o, &mut v),
        );
        l.finish(ms(3000), &mut |o| collect(o, &mut v));
        let codes: Vec<Code> = v
            .iter()
            .filter_map(|o| match o {
                Out::Find(c) => Some(*c),
                _ => None,
            })
            .collect();
        assert_eq!(
            codes,
            vec![
                Code::GarbageBytes,
                Code::BadRef,
                Code::OversizeFrame,
                Code::ErrorFrame,
                Code::UnexpectedAck,
                Code::AckTimeout
            ]
        );
    }
}
