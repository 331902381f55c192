//! The serial link layer (spec 10.5, 10.6, docs/protocol.md D2).
//!
//! Every request frame (0x10) must be answered by the other side with a frame of the
//! same ref: 0x20 when accepted, 0x30..0x35 on error, within 1000 ms from the last byte
//! of the request to the first byte of the answer. The answer is only a link-level
//! acknowledgement; the business result comes later as a request of its own.
//!
//! A split message's fragments are all 0x10 frames of one ref. Whether a receiver acks
//! each fragment or only the whole message is not specified, so both work here: a
//! further fragment of an unanswered request extends it (the deadline then runs from
//! the last fragment), and an ack clears it.
//!
//! All times are capture times. [`LinkTracker::advance`] reports requests whose
//! deadline has passed as soon as any later capture time is seen, so a live view can
//! say "no ack" without waiting for the end.

use crate::frame::{ErrorCode, FrameType};
use crate::time::Timestamp;

/// The spec's answer timeout in milliseconds.
pub const ACK_TIMEOUT_MS: i64 = 1000;

/// One side of a serial link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The cash register.
    Ecr,
    /// The payment terminal.
    Pos,
}

impl Side {
    /// The other side.
    pub const fn peer(self) -> Side {
        match self {
            Side::Ecr => Side::Pos,
            Side::Pos => Side::Ecr,
        }
    }

    const fn index(self) -> usize {
        match self {
            Side::Ecr => 0,
            Side::Pos => 1,
        }
    }
}

/// A request waiting for its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    /// Who sent the request.
    pub from: Side,
    /// Its ref.
    pub ref_num: u8,
    /// First byte of the request (of its first fragment).
    pub first_ts: Timestamp,
    /// Last byte of the request (of its latest fragment): the deadline runs from here.
    pub last_ts: Timestamp,
    /// Request frames seen for it (fragments).
    pub frames: u16,
    /// Whether a timeout was already reported for it.
    pub timed_out: bool,
}

impl Pending {
    /// The capture time after which the request is late.
    pub fn deadline(&self) -> Timestamp {
        self.last_ts.add_millis(ACK_TIMEOUT_MS)
    }
}

/// What the link tracker reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LinkEvent {
    /// An answer (ack or error frame) matched a request.
    Answered {
        /// The request.
        request: Pending,
        /// The answer's type (0x20 or an error).
        answer: FrameType,
        /// First byte of the answer.
        answer_ts: Timestamp,
        /// Milliseconds from the request's last byte to the answer's first.
        latency_ms: f64,
        /// Whether that was more than 1000 ms.
        late: bool,
    },
    /// No answer arrived within 1000 ms (reported once per request, as soon as a later
    /// capture time shows it; a late answer still matches it afterwards).
    Timeout {
        /// The request.
        request: Pending,
    },
    /// An answer whose ref matches no outstanding request from the other side.
    Unexpected {
        /// Who sent the answer.
        from: Side,
        /// Its ref.
        ref_num: u8,
        /// Its type.
        answer: FrameType,
        /// When it began.
        ts: Timestamp,
    },
    /// An error frame was sent (also reported as `Answered` or `Unexpected`); named
    /// separately so that every error frame is listed with its meaning.
    ErrorFrame {
        /// Who sent it.
        from: Side,
        /// Its ref.
        ref_num: u8,
        /// The error code.
        code: ErrorCode,
        /// When it began.
        ts: Timestamp,
    },
    /// A request was replaced by a new request with the same ref before it was answered.
    Replaced {
        /// The unanswered request.
        request: Pending,
    },
    /// At the end of the capture, a request was still waiting and its deadline had not
    /// passed (the capture simply stopped).
    UnansweredAtEnd {
        /// The request.
        request: Pending,
    },
}

/// Pairs requests with answers for one serial link (both directions).
#[derive(Debug)]
pub struct LinkTracker {
    /// Outstanding requests per sender, sorted by ref (any of the 256 byte values,
    /// since a broken peer may use refs outside 0x01..0x7f; one entry per ref, so at
    /// most 256). Only the requests held take room: a connection that waits for
    /// one answer at a time holds one entry, not 512 empty slots (12 KB).
    pending: [Vec<Pending>; 2],
    outstanding: usize,
    /// The earliest deadline among outstanding requests, to make `advance` cheap.
    next_deadline: Option<Timestamp>,
    /// Per sender, the refs whose requests [`LinkTracker::abandon`] forgot (a bit
    /// per ref value): an answer to one of them is let pass quietly, once, rather
    /// than reported as unexpected, since the request was dropped here, not missing
    /// on the link. A new request with the ref clears its bit.
    forgotten: [[u64; 4]; 2],
}

/// The bit of `ref_num` in a [`LinkTracker::forgotten`] set: word and mask.
fn ref_bit(ref_num: u8) -> (usize, u64) {
    (usize::from(ref_num >> 6), 1u64 << (ref_num & 63))
}

impl Default for LinkTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl LinkTracker {
    /// A tracker with nothing outstanding.
    pub fn new() -> Self {
        LinkTracker {
            pending: [Vec::new(), Vec::new()],
            outstanding: 0,
            next_deadline: None,
            forgotten: [[0; 4]; 2],
        }
    }

    /// Bytes held by the outstanding requests (for a memory budget: a peer that
    /// sends a request with each of the 256 refs, both ways, makes a link hold
    /// 512 of them).
    pub fn held(&self) -> usize {
        self.outstanding * std::mem::size_of::<Pending>()
    }

    /// Bytes reserved from the allocator for them (the lists' capacities).
    pub fn reserved(&self) -> usize {
        self.pending.iter().map(Vec::capacity).sum::<usize>() * std::mem::size_of::<Pending>()
    }

    /// Forgets every outstanding request without reporting it (the caller reports
    /// why, e.g. a memory budget); an answer that comes later for one of them
    /// passes quietly. Returns how many there were.
    pub fn abandon(&mut self) -> usize {
        let n = self.outstanding;
        for (list, forgotten) in self.pending.iter_mut().zip(self.forgotten.iter_mut()) {
            for p in list.iter() {
                let (word, bit) = ref_bit(p.ref_num);
                if let Some(w) = forgotten.get_mut(word) {
                    *w |= bit;
                }
            }
            *list = Vec::new();
        }
        self.outstanding = 0;
        self.next_deadline = None;
        n
    }

    /// Whether `side`'s request with `ref_num` was forgotten; it is not any more
    /// (an answer passes quietly once, a new request is tracked as usual).
    fn take_forgotten(&mut self, side: Side, ref_num: u8) -> bool {
        let (word, bit) = ref_bit(ref_num);
        match self
            .forgotten
            .get_mut(side.index())
            .and_then(|f| f.get_mut(word))
        {
            Some(w) => {
                let was = *w & bit != 0;
                *w &= !bit;
                was
            }
            None => false,
        }
    }

    /// Requests still waiting for an answer.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// The requests of `side`, and where the one with `ref_num` is (`Ok`) or would
    /// go (`Err`).
    fn find(
        &mut self,
        side: Side,
        ref_num: u8,
    ) -> Option<(&mut Vec<Pending>, Result<usize, usize>)> {
        let list = self.pending.get_mut(side.index())?;
        let at = list.binary_search_by_key(&ref_num, |p| p.ref_num);
        Some((list, at))
    }

    fn recompute_deadline(&mut self) {
        if self.outstanding == 0 {
            // Nothing is pending (the count is of entries held): skip the scan,
            // which would find nothing.
            self.next_deadline = None;
            return;
        }
        self.next_deadline = self
            .pending
            .iter()
            .flatten()
            .filter(|p| !p.timed_out)
            .map(Pending::deadline)
            .min();
    }

    /// Reports requests whose deadline is before `now`.
    pub fn advance<F: FnMut(LinkEvent)>(&mut self, now: Timestamp, mut emit: F) {
        match self.next_deadline {
            Some(d) if now > d => {}
            _ => return,
        }
        for p in self.pending.iter_mut().flatten() {
            if !p.timed_out && now > p.deadline() {
                p.timed_out = true;
                emit(LinkEvent::Timeout { request: *p });
            }
        }
        self.recompute_deadline();
    }

    /// Takes a frame sent by `from`, with the capture times of its first and last byte.
    pub fn on_frame<F: FnMut(LinkEvent)>(
        &mut self,
        from: Side,
        frame_type: FrameType,
        ref_num: u8,
        first_ts: Timestamp,
        last_ts: Timestamp,
        mut emit: F,
    ) {
        self.advance(first_ts, &mut emit);
        if frame_type == FrameType::REQUEST {
            self.take_forgotten(from, ref_num);
            let mut replaced = None;
            let mut new = false;
            let request = Pending {
                from,
                ref_num,
                first_ts,
                last_ts,
                frames: 1,
                timed_out: false,
            };
            match self.find(from, ref_num) {
                Some((list, Ok(i))) => match list.get_mut(i) {
                    Some(p) if !p.timed_out => {
                        // Another fragment of the same message.
                        p.last_ts = last_ts;
                        p.frames = p.frames.saturating_add(1);
                    }
                    Some(p) => {
                        replaced = Some(std::mem::replace(p, request));
                        new = true;
                    }
                    None => {}
                },
                Some((list, Err(i))) => {
                    list.insert(i, request);
                    new = true;
                }
                None => {}
            }
            if let Some(request) = replaced {
                emit(LinkEvent::Replaced { request });
            } else if new {
                self.outstanding += 1;
                // A new request beside the others: its deadline is the only
                // candidate for a new minimum, no need to scan every entry.
                let d = request.deadline();
                self.next_deadline = Some(self.next_deadline.map_or(d, |n| n.min(d)));
                return;
            }
            self.recompute_deadline();
            return;
        }
        if !frame_type.is_answer() {
            return;
        }
        if let Some(code) = frame_type.error_code() {
            emit(LinkEvent::ErrorFrame {
                from,
                ref_num,
                code,
                ts: first_ts,
            });
        }
        let answered = match self.find(from.peer(), ref_num) {
            Some((list, Ok(i))) if i < list.len() => Some(list.remove(i)),
            _ => None,
        };
        match answered {
            Some(request) => {
                self.outstanding = self.outstanding.saturating_sub(1);
                let latency_ms = first_ts.millis_since(request.last_ts);
                emit(LinkEvent::Answered {
                    request,
                    answer: frame_type,
                    answer_ts: first_ts,
                    latency_ms,
                    late: first_ts - request.last_ts > ACK_TIMEOUT_MS * 1_000_000,
                });
                self.recompute_deadline();
            }
            None if self.take_forgotten(from.peer(), ref_num) => {}
            None => emit(LinkEvent::Unexpected {
                from,
                ref_num,
                answer: frame_type,
                ts: first_ts,
            }),
        }
    }

    /// At the end of the capture (`end` = the last capture time seen): requests past
    /// their deadline are timeouts (if not reported yet), the others unanswered-at-end.
    pub fn finish<F: FnMut(LinkEvent)>(&mut self, end: Timestamp, mut emit: F) {
        self.advance(end, &mut emit);
        for list in &mut self.pending {
            for p in list.drain(..) {
                if !p.timed_out {
                    emit(LinkEvent::UnansweredAtEnd { request: p });
                }
            }
        }
        self.outstanding = 0;
        self.next_deadline = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: i64) -> Timestamp {
        Timestamp::from_millis(v)
    }

    #[test]
    fn abandoned_requests_are_counted_then_forgotten_quietly() {
        let mut t = LinkTracker::new();
        let mut ev = vec![];
        // Every ref value from both sides: 512 requests held.
        for side in [Side::Ecr, Side::Pos] {
            for r in 0..=255u8 {
                t.on_frame(side, FrameType::REQUEST, r, ms(0), ms(1), |e| ev.push(e));
            }
        }
        assert!(ev.is_empty());
        assert_eq!(t.outstanding(), 512);
        assert_eq!(t.held(), 512 * std::mem::size_of::<Pending>());
        assert!(t.reserved() >= t.held());
        assert_eq!(t.abandon(), 512);
        assert_eq!((t.outstanding(), t.held(), t.reserved()), (0, 0, 0));
        // The answer to a forgotten request passes quietly, once.
        t.on_frame(Side::Pos, FrameType::ACK, 7, ms(10), ms(10), |e| ev.push(e));
        assert!(ev.is_empty());
        t.on_frame(Side::Pos, FrameType::ACK, 7, ms(11), ms(11), |e| ev.push(e));
        assert!(matches!(
            ev.as_slice(),
            [LinkEvent::Unexpected { ref_num: 7, .. }]
        ));
        ev.clear();
        // A new request with a forgotten ref is tracked (and answered) as usual, and
        // a second answer to it is unexpected again.
        t.on_frame(Side::Ecr, FrameType::REQUEST, 9, ms(20), ms(20), |e| {
            ev.push(e)
        });
        t.on_frame(Side::Pos, FrameType::ACK, 9, ms(30), ms(30), |e| ev.push(e));
        t.on_frame(Side::Pos, FrameType::ACK, 9, ms(31), ms(31), |e| ev.push(e));
        assert!(matches!(
            ev.as_slice(),
            [
                LinkEvent::Answered { .. },
                LinkEvent::Unexpected { ref_num: 9, .. }
            ]
        ));
        // Nothing is left to time out or to be reported at the end.
        ev.clear();
        t.finish(ms(100_000), |e| ev.push(e));
        assert!(ev.is_empty());
    }

    fn ack_after(delay: i64) -> Vec<LinkEvent> {
        let mut t = LinkTracker::new();
        let mut ev = vec![];
        t.on_frame(Side::Ecr, FrameType::REQUEST, 5, ms(0), ms(100), |e| {
            ev.push(e)
        });
        t.on_frame(
            Side::Pos,
            FrameType::ACK,
            5,
            ms(100 + delay),
            ms(101 + delay),
            |e| ev.push(e),
        );
        t.finish(ms(5000), |e| ev.push(e));
        ev
    }

    #[test]
    fn requests_held_in_ref_order_and_only_those() {
        let mut t = LinkTracker::new();
        let mut ev = vec![];
        // Refs out of order, from both sides, one of them twice (a second fragment).
        for (side, r, at) in [
            (Side::Ecr, 9, 0),
            (Side::Ecr, 2, 1),
            (Side::Pos, 200, 2),
            (Side::Ecr, 0x7f, 3),
            (Side::Ecr, 2, 4),
        ] {
            t.on_frame(side, FrameType::REQUEST, r, ms(at), ms(at), |e| ev.push(e));
        }
        assert_eq!(t.outstanding(), 4);
        // Only what is held takes room: 3 + 1 entries, not 2 x 256 slots.
        assert_eq!(t.pending[0].len() + t.pending[1].len(), 4);
        // An answer to a ref nobody used is unexpected; to ref 9 it pairs.
        t.on_frame(Side::Pos, FrameType::ACK, 5, ms(10), ms(10), |e| ev.push(e));
        t.on_frame(Side::Pos, FrameType::ACK, 9, ms(11), ms(11), |e| ev.push(e));
        assert!(matches!(
            ev[..],
            [
                LinkEvent::Unexpected { ref_num: 5, .. },
                LinkEvent::Answered {
                    request: Pending { ref_num: 9, .. },
                    ..
                }
            ]
        ));
        assert_eq!(t.outstanding(), 3);
        ev.clear();
        // The others time out in the order of the 512 slots they used to have:
        // the cash register's by ref, then the terminal's.
        t.advance(ms(5_000), |e| ev.push(e));
        let refs: Vec<(Side, u8, u16)> = ev
            .iter()
            .filter_map(|e| match e {
                LinkEvent::Timeout { request } => {
                    Some((request.from, request.ref_num, request.frames))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            refs,
            [(Side::Ecr, 2, 2), (Side::Ecr, 0x7f, 1), (Side::Pos, 200, 1)]
        );
        // A timed-out ref used again is a new request that replaces the old one.
        ev.clear();
        t.on_frame(
            Side::Ecr,
            FrameType::REQUEST,
            2,
            ms(6_000),
            ms(6_000),
            |e| ev.push(e),
        );
        assert!(matches!(
            ev[..],
            [LinkEvent::Replaced {
                request: Pending { ref_num: 2, .. }
            }]
        ));
        ev.clear();
        t.finish(ms(6_001), |e| ev.push(e));
        assert!(matches!(
            ev[..],
            [LinkEvent::UnansweredAtEnd {
                request: Pending { ref_num: 2, .. }
            }]
        ));
        assert!(t.pending.iter().all(Vec::is_empty));
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn ack_at_999_ms_is_in_time() {
        let ev = ack_after(999);
        assert_eq!(ev.len(), 1);
        match ev[0] {
            LinkEvent::Answered {
                latency_ms,
                late,
                answer,
                ..
            } => {
                assert!((latency_ms - 999.0).abs() < 1e-9);
                assert!(!late);
                assert_eq!(answer, FrameType::ACK);
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn ack_at_1000_ms_is_in_time() {
        assert!(matches!(
            ack_after(1000)[..],
            [LinkEvent::Answered { late: false, .. }]
        ));
    }

    #[test]
    fn ack_at_1001_ms_is_late() {
        let ev = ack_after(1001);
        // The deadline passes at the answer's own timestamp: first the timeout, then
        // the late answer matching it.
        assert!(matches!(
            ev[0],
            LinkEvent::Timeout {
                request: Pending { ref_num: 5, .. }
            }
        ));
        assert!(matches!(ev[1], LinkEvent::Answered { late: true, .. }));
        assert_eq!(ev.len(), 2);
    }

    #[test]
    fn timeout_reported_when_time_passes_and_never_answered() {
        let mut t = LinkTracker::new();
        let mut ev = vec![];
        t.on_frame(Side::Ecr, FrameType::REQUEST, 1, ms(0), ms(10), |e| {
            ev.push(e)
        });
        t.advance(ms(1010), |e| ev.push(e));
        assert!(ev.is_empty());
        t.advance(ms(1011), |e| ev.push(e));
        assert!(matches!(ev[..], [LinkEvent::Timeout { .. }]));
        t.finish(ms(9000), |e| ev.push(e));
        assert_eq!(ev.len(), 1, "no second report at the end");
    }

    #[test]
    fn unanswered_at_end_when_capture_stops_early() {
        let mut t = LinkTracker::new();
        let mut ev = vec![];
        t.on_frame(Side::Pos, FrameType::REQUEST, 9, ms(0), ms(10), |e| {
            ev.push(e)
        });
        t.finish(ms(500), |e| ev.push(e));
        assert!(matches!(
            ev[..],
            [LinkEvent::UnansweredAtEnd {
                request: Pending {
                    from: Side::Pos,
                    ref_num: 9,
                    ..
                }
            }]
        ));
    }

    #[test]
    fn unexpected_ack_and_error_frames() {
        let mut t = LinkTracker::new();
        let mut ev = vec![];
        t.on_frame(Side::Pos, FrameType::ACK, 7, ms(0), ms(0), |e| ev.push(e));
        assert!(matches!(
            ev[..],
            [LinkEvent::Unexpected {
                from: Side::Pos,
                ref_num: 7,
                ..
            }]
        ));
        ev.clear();
        // An ack from the same side as the request does not answer it.
        t.on_frame(Side::Ecr, FrameType::REQUEST, 8, ms(0), ms(0), |e| {
            ev.push(e)
        });
        t.on_frame(Side::Ecr, FrameType::ACK, 8, ms(1), ms(1), |e| ev.push(e));
        assert!(matches!(
            ev[..],
            [LinkEvent::Unexpected {
                from: Side::Ecr,
                ..
            }]
        ));
        ev.clear();
        t.on_frame(Side::Pos, FrameType(0x33), 8, ms(5), ms(5), |e| ev.push(e));
        assert!(matches!(
            ev[0],
            LinkEvent::ErrorFrame {
                code: ErrorCode::DECRYPTION,
                from: Side::Pos,
                ..
            }
        ));
        assert!(matches!(
            ev[1],
            LinkEvent::Answered {
                answer: FrameType(0x33),
                ..
            }
        ));
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn fragments_extend_the_request_and_replacement_is_reported() {
        let mut t = LinkTracker::new();
        let mut ev = vec![];
        t.on_frame(Side::Ecr, FrameType::REQUEST, 2, ms(0), ms(900), |e| {
            ev.push(e)
        });
        t.on_frame(Side::Ecr, FrameType::REQUEST, 2, ms(1000), ms(1800), |e| {
            ev.push(e)
        });
        t.on_frame(Side::Pos, FrameType::ACK, 2, ms(2700), ms(2700), |e| {
            ev.push(e)
        });
        match ev[..] {
            [LinkEvent::Answered {
                request,
                latency_ms,
                late: false,
                ..
            }] => {
                assert_eq!(request.frames, 2);
                assert!((latency_ms - 900.0).abs() < 1e-9);
            }
            _ => panic!("{ev:?}"),
        }
        ev.clear();
        // A request timed out, then the same ref is used again: the old one is replaced.
        t.on_frame(Side::Ecr, FrameType::REQUEST, 3, ms(3000), ms(3000), |e| {
            ev.push(e)
        });
        t.on_frame(Side::Ecr, FrameType::REQUEST, 3, ms(4500), ms(4500), |e| {
            ev.push(e)
        });
        assert!(matches!(ev[0], LinkEvent::Timeout { .. }));
        assert!(matches!(ev[1], LinkEvent::Replaced { .. }));
        assert_eq!(t.outstanding(), 1);
    }
}
