//! One end of a `0x2f6e` frame link (D1, D2): the serial line, or a TCP 9002
//! connection that carries frames (D6). Outgoing messages are split into frames of
//! at most 1024 data bytes with one ref; incoming bytes go through the protocol
//! crate's stream decoder and reassembler and come out as link events.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use ecr_proto::frame::{split_message, ErrorCode, FrameRepr, FrameType};
use ecr_proto::link::Side;
use ecr_proto::reassembly::{Reassembler, ReassemblyEvent};
use ecr_proto::stream::{StreamDecoder, StreamEvent};
use ecr_proto::Timestamp;

use crate::line::{Line, ReadOutcome};

/// Bytes seen on a line, with who sent them and when they arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireChunk {
    /// Arrival (or sending) time.
    pub ts: Timestamp,
    /// Who sent them.
    pub from: Side,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// What the other end sent, at the link level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A 0x20 ack.
    Ack {
        /// Ref of the acknowledged frame.
        ref_num: u8,
    },
    /// An error frame (0x30..0x35).
    ErrorFrame {
        /// Ref of the rejected frame.
        ref_num: u8,
        /// The error type.
        code: ErrorCode,
    },
    /// A complete 0x10 message (reassembled if it was split).
    Message {
        /// Its ref.
        ref_num: u8,
        /// Its data segment.
        data: Vec<u8>,
        /// A fragment came more than 500 ms after the previous one.
        late: bool,
    },
    /// Fragments of a split message carried more data than declared: spec 10.7
    /// says to answer 0x35.
    Concatenation {
        /// The ref of the message.
        ref_num: u8,
    },
    /// A frame-shaped unit with a bad field or end marker (answer 0x31).
    BadFrame {
        /// Its ref, as far as the header shows.
        ref_num: u8,
    },
}

/// Observer of every byte on the line (for writing a capture).
pub type Tap = Box<dyn FnMut(Timestamp, Side, &[u8]) + Send>;

/// One end of a frame link.
pub struct FrameEndpoint<L: Line> {
    line: L,
    me: Side,
    decoder: StreamDecoder,
    reassembler: Reassembler,
    queue: VecDeque<LinkEvent>,
    next_ref: u8,
    log: Vec<WireChunk>,
    keep_log: bool,
    tap: Option<Tap>,
    /// Stream offset of the broken frame last answered while its skipped run was
    /// still open (see [`FrameEndpoint::feed`]): not answered again when the run
    /// is reported.
    answered_skip: Option<u64>,
}

impl<L: Line> FrameEndpoint<L> {
    /// An endpoint speaking as `me` on `line`. With `keep_log`, every chunk is kept
    /// for [`FrameEndpoint::take_log`] (a client's single exchange; an emulator
    /// running for hours uses a tap instead).
    pub fn new(line: L, me: Side, keep_log: bool, tap: Option<Tap>) -> Self {
        FrameEndpoint {
            line,
            me,
            decoder: StreamDecoder::new(),
            reassembler: Reassembler::new(),
            queue: VecDeque::new(),
            next_ref: 1,
            log: vec![],
            keep_log,
            tap,
            answered_skip: None,
        }
    }

    /// The ref for the next message: 0x01..0x7f, wrapping (D2).
    pub fn next_ref(&mut self) -> u8 {
        let r = self.next_ref;
        self.next_ref = if r >= 0x7f { 1 } else { r + 1 };
        r
    }

    /// The chunks seen so far (when kept).
    pub fn take_log(&mut self) -> Vec<WireChunk> {
        std::mem::take(&mut self.log)
    }

    fn record(&mut self, from: Side, bytes: &[u8]) {
        let ts = crate::now();
        if let Some(tap) = self.tap.as_mut() {
            tap(ts, from, bytes);
        }
        if self.keep_log {
            self.log.push(WireChunk {
                ts,
                from,
                bytes: bytes.to_vec(),
            });
        }
    }

    /// Writes raw bytes (already framed).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.record(self.me, bytes);
        self.line.send(bytes)
    }

    /// Sends `data` as a 0x10 message with `ref_num`, in frames of at most
    /// `max_fragment` data bytes, pausing `pause` between frames; `corrupt`
    /// damages the last frame's end marker (fault injection).
    pub fn send_message(
        &mut self,
        ref_num: u8,
        data: &[u8],
        max_fragment: usize,
        pause: Option<Duration>,
        corrupt: bool,
    ) -> io::Result<()> {
        let bytes = split_message(FrameType::REQUEST, ref_num, data, max_fragment)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let step = max_fragment.max(1) + ecr_proto::frame::OVERHEAD;
        let mut frames: Vec<Vec<u8>> = bytes.chunks(step).map(<[u8]>::to_vec).collect();
        if corrupt {
            if let Some(last) = frames.last_mut().and_then(|f| f.last_mut()) {
                *last ^= 0xff;
            }
        }
        let n = frames.len();
        for (i, f) in frames.iter().enumerate() {
            self.send_raw(f)?;
            if let (Some(p), true) = (pause, i + 1 < n) {
                std::thread::sleep(p);
            }
        }
        Ok(())
    }

    /// Sends a 0x20 ack for `ref_num`.
    pub fn send_ack(&mut self, ref_num: u8) -> io::Result<()> {
        let b = FrameRepr::ack(ref_num)
            .to_bytes()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.send_raw(&b)
    }

    /// Sends an error frame for `ref_num`.
    pub fn send_error(&mut self, code: ErrorCode, ref_num: u8) -> io::Result<()> {
        let b = FrameRepr::error(code, ref_num)
            .to_bytes()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.send_raw(&b)
    }

    /// Feeds bytes read from the line into the decoder (also usable for bytes
    /// read before the link was recognised as frames).
    pub fn feed(&mut self, bytes: &[u8]) {
        let other = match self.me {
            Side::Ecr => Side::Pos,
            Side::Pos => Side::Ecr,
        };
        self.record(other, bytes);
        let ts = crate::now();
        let (decoder, reassembler, queue, answered) = (
            &mut self.decoder,
            &mut self.reassembler,
            &mut self.queue,
            self.answered_skip,
        );
        decoder.feed(bytes, ts, |ev| match ev {
            StreamEvent::Frame(sf) => {
                let t = sf.frame.frame_type();
                let ref_num = sf.frame.ref_num();
                if t == FrameType::ACK {
                    queue.push_back(LinkEvent::Ack { ref_num });
                } else if let Some(code) = t.error_code() {
                    queue.push_back(LinkEvent::ErrorFrame { ref_num, code });
                } else {
                    reassembler.push(&sf, |rev| match rev {
                        ReassemblyEvent::Message(m) => queue.push_back(LinkEvent::Message {
                            ref_num: m.ref_num,
                            data: m.data.into_owned(),
                            late: m.late,
                        }),
                        // A late fragment still completes the message, marked
                        // `late`; only an overflow loses it.
                        ReassemblyEvent::Overflow { ref_num, .. } => {
                            queue.push_back(LinkEvent::Concatenation { ref_num })
                        }
                        _ => {}
                    });
                }
            }
            StreamEvent::Rejected(r) => queue.push_back(LinkEvent::BadFrame {
                ref_num: r.header.ref_num,
            }),
            StreamEvent::Skipped(s) => {
                if let (Some(h), false) = (s.header, answered == Some(s.offset)) {
                    queue.push_back(LinkEvent::BadFrame { ref_num: h.ref_num });
                }
            }
        });
        // A frame whose end marker is wrong opens a skipped run that the decoder
        // reports only when the next frame (or the end) shows where it stops; the
        // sender waits for an answer now (spec 10.6: 1000 ms).
        if let Some(s) = self.decoder.pending_skip() {
            if let (Some(h), false) = (s.header, self.answered_skip == Some(s.offset)) {
                self.queue
                    .push_back(LinkEvent::BadFrame { ref_num: h.ref_num });
                self.answered_skip = Some(s.offset);
            }
        }
    }

    /// The next event, waiting at most `timeout`. `Ok(None)` on timeout; an
    /// `UnexpectedEof` error when the other end closed.
    pub fn poll(&mut self, timeout: Duration) -> io::Result<Option<LinkEvent>> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Ok(Some(ev));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self.line.read_within(&mut buf, left)? {
                ReadOutcome::Data(n) => {
                    let chunk = buf.get(..n).unwrap_or(&[]).to_vec();
                    self.feed(&chunk);
                }
                ReadOutcome::Timeout => {}
                ReadOutcome::Closed => {
                    self.decoder.flush(|_| {});
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the other end closed the line",
                    ));
                }
            }
        }
    }

    /// The line (to wait on its descriptor).
    pub fn line(&self) -> &L {
        &self.line
    }

    /// An event already decoded, without reading.
    pub fn next_event(&mut self) -> Option<LinkEvent> {
        self.queue.pop_front()
    }

    /// Reads what the line has (call it when the line is readable) and decodes it;
    /// false when the other end closed.
    pub fn pump(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; 4096];
        match self.line.read_within(&mut buf, Duration::from_millis(1))? {
            ReadOutcome::Data(n) => {
                let chunk = buf.get(..n).unwrap_or(&[]).to_vec();
                self.feed(&chunk);
                Ok(true)
            }
            ReadOutcome::Timeout => Ok(true),
            ReadOutcome::Closed => {
                self.decoder.flush(|_| {});
                Ok(false)
            }
        }
    }

    /// Puts an event back to be returned first by the next [`FrameEndpoint::poll`].
    pub fn unread(&mut self, ev: LinkEvent) {
        self.queue.push_front(ev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::PtyLine;
    use crate::line::SerialLine;

    #[test]
    fn split_message_reassembles_with_ack() {
        let a = PtyLine::create().unwrap();
        let b = SerialLine::open(a.path()).unwrap();
        let mut ecr = FrameEndpoint::new(b, Side::Ecr, true, None);
        let mut pos = FrameEndpoint::new(a, Side::Pos, false, None);
        let data: Vec<u8> = (0..2500u32).map(|i| b'a' + (i % 26) as u8).collect();
        let r = ecr.next_ref();
        ecr.send_message(r, &data, 1024, None, false).unwrap();
        match pos.poll(Duration::from_secs(3)).unwrap() {
            Some(LinkEvent::Message {
                ref_num,
                data: got,
                late,
            }) => {
                assert_eq!(ref_num, 1);
                assert_eq!(got, data);
                assert!(!late);
            }
            other => panic!("{other:?}"),
        }
        pos.send_ack(1).unwrap();
        assert_eq!(
            ecr.poll(Duration::from_secs(3)).unwrap(),
            Some(LinkEvent::Ack { ref_num: 1 })
        );
        let log = ecr.take_log();
        assert_eq!(log.first().map(|c| c.bytes.len()), Some(1035));
        assert_eq!(log.last().map(|c| c.from), Some(Side::Pos));
    }

    #[test]
    fn corrupt_frame_is_reported() {
        let a = PtyLine::create().unwrap();
        let b = SerialLine::open(a.path()).unwrap();
        let mut ecr = FrameEndpoint::new(b, Side::Ecr, false, None);
        let mut pos = FrameEndpoint::new(a, Side::Pos, false, None);
        ecr.send_message(5, b"{\"x\":1}", 1024, None, true).unwrap();
        ecr.send_message(6, b"{\"x\":2}", 1024, None, false)
            .unwrap();
        let mut seen = vec![];
        while let Some(ev) = pos.poll(Duration::from_millis(500)).unwrap() {
            seen.push(ev);
        }
        assert!(
            seen.contains(&LinkEvent::BadFrame { ref_num: 5 }),
            "{seen:?}"
        );
        assert!(seen
            .iter()
            .any(|e| matches!(e, LinkEvent::Message { ref_num: 6, .. })));
    }

    #[test]
    fn refs_wrap() {
        let a = PtyLine::create().unwrap();
        let mut e = FrameEndpoint::new(a, Side::Ecr, false, None);
        let refs: Vec<u8> = (0..128).map(|_| e.next_ref()).collect();
        assert_eq!(refs.first(), Some(&1));
        assert_eq!(refs.get(126), Some(&0x7f));
        assert_eq!(refs.get(127), Some(&1));
    }
}
