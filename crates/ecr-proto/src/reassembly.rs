//! Joining the fragments of a split message (spec 10.7, docs/protocol.md D1).
//!
//! A frame whose data length is larger than the data it carries is a fragment. The
//! receiver collects same-ref fragments from one direction until the collected data
//! reaches the declared data length. More than 500 ms between the last byte of one
//! fragment and the first byte of the next is a timeout: a terminal discards the set
//! and answers 0x35. The analyzer still wants to see the message, so after reporting
//! the timeout the reassembler goes on collecting and marks the message as late.
//!
//! Memory is bounded: at most [`MAX_OPEN`] messages are open per direction and each
//! holds at most its declared data length (a 16-bit number, so at most 65535 bytes).
//! Buffers grow with the bytes that actually arrive, never by what a frame announces:
//! a 12-byte fragment that declares 65535 bytes holds 12 bytes (plus
//! [`PARTIAL_OVERHEAD`] of bookkeeping). [`Reassembler::held`] and
//! [`Reassembler::reserved`] report what is kept, for callers that enforce a memory
//! budget over many reassemblers. An unsplit frame is passed through without copying.

use std::borrow::Cow;

use crate::frame::FrameType;
use crate::stream::StreamFrame;
use crate::time::Timestamp;

/// Most messages open at once per direction (the number of valid refs).
pub const MAX_OPEN: usize = 127;
/// Bytes of bookkeeping counted per open message on top of its data (the struct and
/// the allocator's share), for [`Reassembler::held`].
pub const PARTIAL_OVERHEAD: usize = 96;
/// The spec's limit between fragments, in milliseconds.
pub const FRAGMENT_TIMEOUT_MS: i64 = 500;

/// A complete message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// The frame type of its frames (0x10 for a request).
    pub frame_type: FrameType,
    /// Its ref number.
    pub ref_num: u8,
    /// The whole data segment; borrowed from the frame when it was not split.
    pub data: Cow<'a, [u8]>,
    /// How many frames carried it.
    pub fragments: u16,
    /// Capture time of the first byte of the first frame.
    pub first_ts: Timestamp,
    /// Capture time of the last byte of the last frame.
    pub last_ts: Timestamp,
    /// Stream offset of the first frame.
    pub offset: u64,
    /// Whether some fragment came more than 500 ms after the one before it (a
    /// receiver following the spec would have discarded this message).
    pub late: bool,
}

/// Something the reassembler reports besides complete messages.
#[derive(Clone, Debug, PartialEq)]
pub enum ReassemblyEvent<'a> {
    /// A complete message.
    Message(Message<'a>),
    /// A fragment came more than 500 ms after the previous one of the same ref.
    Timeout {
        /// Ref number.
        ref_num: u8,
        /// Milliseconds between the previous fragment's last byte and this one's first.
        gap_ms: f64,
        /// Fragments collected before the late one.
        fragments: u16,
        /// Bytes collected before the late one.
        collected: usize,
        /// Declared data length.
        declared: u16,
        /// When the late fragment began.
        ts: Timestamp,
    },
    /// Fragments carried more data than the declared data length; the set is dropped.
    Overflow {
        /// Ref number.
        ref_num: u8,
        /// Bytes that would have been collected.
        collected: usize,
        /// Declared data length.
        declared: u16,
        /// When the overflowing fragment began.
        ts: Timestamp,
    },
    /// A fragment declared another data length than the earlier fragments of its ref;
    /// the earlier set is dropped and a new one begins.
    LengthChanged {
        /// Ref number.
        ref_num: u8,
        /// The earlier declared length.
        was: u16,
        /// The new one.
        now: u16,
        /// When.
        ts: Timestamp,
    },
    /// A message that never completed: superseded by an unsplit frame of the same ref,
    /// evicted because too many were open, or still open at the end.
    Incomplete {
        /// Ref number.
        ref_num: u8,
        /// Fragments collected.
        fragments: u16,
        /// Bytes collected.
        collected: usize,
        /// Declared data length.
        declared: u16,
        /// First byte of the first fragment.
        first_ts: Timestamp,
        /// Last byte of the last fragment.
        last_ts: Timestamp,
        /// Why it was given up.
        reason: IncompleteReason,
    },
}

/// Why an unfinished message was given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncompleteReason {
    /// An unsplit frame with the same ref came instead of the next fragment.
    Superseded,
    /// More than [`MAX_OPEN`] messages were open.
    Evicted,
    /// The stream ended (or had a gap) first.
    Ended,
}

#[derive(Debug)]
struct Partial {
    frame_type: FrameType,
    ref_num: u8,
    declared: u16,
    data: Vec<u8>,
    fragments: u16,
    first_ts: Timestamp,
    last_ts: Timestamp,
    offset: u64,
    late: bool,
}

impl Partial {
    fn incomplete(self, reason: IncompleteReason) -> ReassemblyEvent<'static> {
        ReassemblyEvent::Incomplete {
            ref_num: self.ref_num,
            fragments: self.fragments,
            collected: self.data.len(),
            declared: self.declared,
            first_ts: self.first_ts,
            last_ts: self.last_ts,
            reason,
        }
    }
}

/// The per-direction reassembler.
#[derive(Debug, Default)]
pub struct Reassembler {
    /// Open messages, oldest first. At most [`MAX_OPEN`], so a linear search is fine.
    open: Vec<Partial>,
}

impl Reassembler {
    /// An empty reassembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages still open.
    pub fn open(&self) -> usize {
        self.open.len()
    }

    /// Bytes held: the data collected so far by open messages plus
    /// [`PARTIAL_OVERHEAD`] per open message. Grows only with bytes that arrived.
    pub fn held(&self) -> usize {
        self.open
            .iter()
            .map(|p| p.data.len() + PARTIAL_OVERHEAD)
            .sum()
    }

    /// Bytes reserved from the allocator by open messages (capacity of their
    /// buffers, which may exceed [`Reassembler::held`] by the growth factor).
    pub fn reserved(&self) -> usize {
        self.open
            .iter()
            .map(|p| p.data.capacity() + PARTIAL_OVERHEAD)
            .sum()
    }

    /// Gives up every open message without reporting them (the caller reports why,
    /// e.g. a memory budget). Returns how many there were and the bytes they held.
    pub fn abandon(&mut self) -> (usize, usize) {
        let n = self.open.len();
        let bytes = self.open.iter().map(|p| p.data.len()).sum();
        self.open = Vec::new();
        (n, bytes)
    }

    /// Takes the next frame of this direction.
    pub fn push<'a, F: FnMut(ReassemblyEvent<'a>)>(&mut self, f: &StreamFrame<'a>, mut emit: F) {
        let frame = f.frame;
        let ref_num = frame.ref_num();
        let frame_type = frame.frame_type();
        let data: &'a [u8] = frame_data(f);
        let idx = self
            .open
            .iter()
            .position(|p| p.ref_num == ref_num && p.frame_type == frame_type);

        if !frame.is_fragment() {
            if let Some(i) = idx {
                emit(self.open.remove(i).incomplete(IncompleteReason::Superseded));
            }
            emit(ReassemblyEvent::Message(Message {
                frame_type,
                ref_num,
                data: Cow::Borrowed(data),
                fragments: 1,
                first_ts: f.first_ts,
                last_ts: f.last_ts,
                offset: f.offset,
                late: false,
            }));
            return;
        }

        let declared = frame.data_len();
        let i = match idx {
            Some(i) => {
                let Some(p) = self.open.get_mut(i) else {
                    return;
                };
                if p.declared != declared {
                    emit(ReassemblyEvent::LengthChanged {
                        ref_num,
                        was: p.declared,
                        now: declared,
                        ts: f.first_ts,
                    });
                    self.open.remove(i);
                    self.start(f, data, &mut emit)
                } else {
                    let gap_ns = f.first_ts - p.last_ts;
                    if gap_ns > FRAGMENT_TIMEOUT_MS * 1_000_000 {
                        emit(ReassemblyEvent::Timeout {
                            ref_num,
                            gap_ms: gap_ns as f64 / 1e6,
                            fragments: p.fragments,
                            collected: p.data.len(),
                            declared,
                            ts: f.first_ts,
                        });
                        p.late = true;
                    }
                    let collected = p.data.len() + data.len();
                    if collected > usize::from(declared) {
                        emit(ReassemblyEvent::Overflow {
                            ref_num,
                            collected,
                            declared,
                            ts: f.first_ts,
                        });
                        self.open.remove(i);
                        return;
                    }
                    p.data.extend_from_slice(data);
                    p.fragments = p.fragments.saturating_add(1);
                    p.last_ts = f.last_ts;
                    Some(i)
                }
            }
            None => self.start(f, data, &mut emit),
        };
        if let Some(i) = i {
            if self
                .open
                .get(i)
                .is_some_and(|p| p.data.len() >= usize::from(p.declared))
            {
                let p = self.open.remove(i);
                emit(ReassemblyEvent::Message(Message {
                    frame_type: p.frame_type,
                    ref_num: p.ref_num,
                    data: Cow::Owned(p.data),
                    fragments: p.fragments,
                    first_ts: p.first_ts,
                    last_ts: p.last_ts,
                    offset: p.offset,
                    late: p.late,
                }));
            }
        }
    }

    fn start<'a, F: FnMut(ReassemblyEvent<'a>)>(
        &mut self,
        f: &StreamFrame<'a>,
        data: &[u8],
        emit: &mut F,
    ) -> Option<usize> {
        if self.open.len() >= MAX_OPEN {
            let oldest = self.open.remove(0);
            emit(oldest.incomplete(IncompleteReason::Evicted));
        }
        let declared = f.frame.data_len();
        // Only what arrived: the declared length is the sender's claim.
        let buf = data.to_vec();
        self.open.push(Partial {
            frame_type: f.frame.frame_type(),
            ref_num: f.frame.ref_num(),
            declared,
            data: buf,
            fragments: 1,
            first_ts: f.first_ts,
            last_ts: f.last_ts,
            offset: f.offset,
            late: false,
        });
        Some(self.open.len() - 1)
    }

    /// Gives up every open message (at the end of the stream or at a gap).
    pub fn finish<F: FnMut(ReassemblyEvent<'static>)>(&mut self, mut emit: F) {
        for p in self.open.drain(..) {
            emit(p.incomplete(IncompleteReason::Ended));
        }
    }
}

/// The frame's data with the frame's lifetime.
fn frame_data<'a>(f: &StreamFrame<'a>) -> &'a [u8] {
    let bytes: &'a [u8] = f.frame.into_inner();
    let len = bytes.len();
    bytes
        .get(crate::frame::HEADER_LEN..len.saturating_sub(crate::frame::TRAILER_LEN))
        .unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{self, split_message, FrameRepr};

    fn frames(bytes: &[u8]) -> Vec<&[u8]> {
        let mut out = vec![];
        let mut rest = bytes;
        while !rest.is_empty() {
            let (f, r) = frame::parse(rest).unwrap();
            out.push(f.into_inner());
            rest = r;
        }
        out
    }

    fn sf(bytes: &[u8], first_ms: i64, last_ms: i64) -> StreamFrame<'_> {
        StreamFrame {
            frame: frame::parse(bytes).unwrap().0,
            offset: 0,
            first_ts: Timestamp::from_millis(first_ms),
            last_ts: Timestamp::from_millis(last_ms),
        }
    }

    fn push_all<'a>(r: &mut Reassembler, fs: &[StreamFrame<'a>]) -> Vec<ReassemblyEvent<'a>> {
        let mut out = vec![];
        for f in fs {
            r.push(f, |e| out.push(e));
        }
        out
    }

    #[test]
    fn unsplit_frame_is_borrowed() {
        let b = FrameRepr::new(FrameType::REQUEST, 1, b"abc")
            .to_bytes()
            .unwrap();
        let mut r = Reassembler::new();
        let ev = push_all(&mut r, &[sf(&b, 0, 0)]);
        match &ev[..] {
            [ReassemblyEvent::Message(m)] => {
                assert!(matches!(m.data, Cow::Borrowed(b"abc")));
                assert_eq!(m.fragments, 1);
            }
            _ => panic!("{ev:?}"),
        }
    }

    #[test]
    fn vector_split_message_reassembles() {
        let data: Vec<u8> = (0..2500u32).map(|i| (i * 7) as u8).collect();
        let bytes = split_message(FrameType::REQUEST, 0x11, &data, 1024).unwrap();
        let fs: Vec<_> = frames(&bytes)
            .into_iter()
            .enumerate()
            .map(|(i, b)| sf(b, i as i64 * 500, i as i64 * 500 + 400))
            .collect();
        let mut r = Reassembler::new();
        let ev = push_all(&mut r, &fs);
        match &ev[..] {
            [ReassemblyEvent::Message(m)] => {
                assert_eq!(&m.data[..], &data[..]);
                assert_eq!(m.fragments, 3);
                assert_eq!(m.first_ts, Timestamp::from_millis(0));
                assert_eq!(m.last_ts, Timestamp::from_millis(1400));
                assert!(!m.late);
            }
            _ => panic!("expected one message, got {} events", ev.len()),
        }
        assert_eq!(r.open(), 0);
    }

    fn two_fragments_with_gap(gap_ms: i64) -> Vec<ReassemblyEvent<'static>> {
        let data = vec![b'x'; 1500];
        let bytes = split_message(FrameType::REQUEST, 2, &data, 1024).unwrap();
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        let fs = frames(bytes);
        let mut r = Reassembler::new();
        push_all(
            &mut r,
            &[sf(fs[0], 0, 1000), sf(fs[1], 1000 + gap_ms, 1500 + gap_ms)],
        )
    }

    #[test]
    fn fragment_at_499_ms_is_in_time() {
        let ev = two_fragments_with_gap(499);
        assert_eq!(ev.len(), 1);
        assert!(matches!(&ev[0], ReassemblyEvent::Message(m) if !m.late));
    }

    #[test]
    fn fragment_at_500_ms_is_in_time() {
        let ev = two_fragments_with_gap(500);
        assert!(matches!(&ev[..], [ReassemblyEvent::Message(m)] if !m.late));
    }

    #[test]
    fn fragment_at_501_ms_times_out_but_message_is_kept() {
        let ev = two_fragments_with_gap(501);
        assert_eq!(ev.len(), 2);
        match &ev[0] {
            ReassemblyEvent::Timeout {
                ref_num,
                gap_ms,
                fragments,
                collected,
                declared,
                ..
            } => {
                assert_eq!(
                    (*ref_num, *fragments, *collected, *declared),
                    (2, 1, 1024, 1500)
                );
                assert!((gap_ms - 501.0).abs() < 1e-9);
            }
            e => panic!("{e:?}"),
        }
        assert!(matches!(&ev[1], ReassemblyEvent::Message(m) if m.late && m.data.len() == 1500));
    }

    #[test]
    fn overflow_and_length_change_and_supersede() {
        // Two fragments declaring 20 bytes, carrying 12 + 12.
        let a = FrameRepr {
            frame_type: FrameType::REQUEST,
            ref_num: 3,
            data_len: 20,
            data: &[1; 12],
        }
        .to_bytes()
        .unwrap();
        let mut r = Reassembler::new();
        let ev = push_all(&mut r, &[sf(&a, 0, 0), sf(&a, 10, 10)]);
        assert!(matches!(
            ev[..],
            [ReassemblyEvent::Overflow {
                ref_num: 3,
                collected: 24,
                declared: 20,
                ..
            }]
        ));
        assert_eq!(r.open(), 0);

        let b = FrameRepr {
            frame_type: FrameType::REQUEST,
            ref_num: 3,
            data_len: 30,
            data: &[1; 12],
        }
        .to_bytes()
        .unwrap();
        let ev = push_all(&mut r, &[sf(&a, 0, 0), sf(&b, 10, 10)]);
        assert!(matches!(
            ev[..],
            [ReassemblyEvent::LengthChanged {
                ref_num: 3,
                was: 20,
                now: 30,
                ..
            }]
        ));
        assert_eq!(r.open(), 1);

        let whole = FrameRepr::new(FrameType::REQUEST, 3, b"hi")
            .to_bytes()
            .unwrap();
        let ev = push_all(&mut r, &[sf(&whole, 20, 20)]);
        assert!(matches!(
            ev[0],
            ReassemblyEvent::Incomplete {
                ref_num: 3,
                reason: IncompleteReason::Superseded,
                collected: 12,
                declared: 30,
                ..
            }
        ));
        assert!(matches!(&ev[1], ReassemblyEvent::Message(m) if &m.data[..] == b"hi"));
    }

    #[test]
    fn open_messages_are_bounded_and_finished() {
        let mut owned = vec![];
        for r in 0..=255u8 {
            owned.push(
                FrameRepr {
                    frame_type: FrameType::REQUEST,
                    ref_num: r,
                    data_len: 100,
                    data: &[0; 10],
                }
                .to_bytes()
                .unwrap(),
            );
        }
        let fs: Vec<_> = owned.iter().map(|b| sf(b, 0, 0)).collect();
        let mut r = Reassembler::new();
        let ev = push_all(&mut r, &fs);
        assert_eq!(r.open(), MAX_OPEN);
        let evicted = ev
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    ReassemblyEvent::Incomplete {
                        reason: IncompleteReason::Evicted,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(evicted, 256 - MAX_OPEN);
        let mut ended = 0;
        r.finish(|e| {
            assert!(matches!(
                e,
                ReassemblyEvent::Incomplete {
                    reason: IncompleteReason::Ended,
                    ..
                }
            ));
            ended += 1;
        });
        assert_eq!(ended, MAX_OPEN);
    }

    #[test]
    fn buffers_grow_with_arriving_bytes_not_the_declared_length() {
        let mut owned = vec![];
        for r in 0..MAX_OPEN as u8 {
            owned.push(
                FrameRepr {
                    frame_type: FrameType::REQUEST,
                    ref_num: r,
                    data_len: u16::MAX,
                    data: &[7; 2],
                }
                .to_bytes()
                .unwrap(),
            );
        }
        let fs: Vec<_> = owned.iter().map(|b| sf(b, 0, 0)).collect();
        let mut r = Reassembler::new();
        let ev = push_all(&mut r, &fs);
        assert!(ev.is_empty());
        assert_eq!(r.open(), MAX_OPEN);
        assert_eq!(r.held(), MAX_OPEN * (2 + PARTIAL_OVERHEAD));
        // 127 announced 64 KiB buffers would reserve 8 MB; a few bytes each do.
        assert!(
            r.reserved() < MAX_OPEN * (64 + PARTIAL_OVERHEAD),
            "{}",
            r.reserved()
        );
        assert_eq!(r.abandon(), (MAX_OPEN, MAX_OPEN * 2));
        assert_eq!((r.open(), r.held()), (0, 0));
    }
}
