//! The project's serial capture format (docs/protocol.md D9).
//!
//! pcapng, link type 147 (USER0). Each packet's data begins with one direction byte
//! (0x00 cash register to POS, 0x01 POS to cash register), followed by the bytes seen
//! on the line; the pcapng packet flags carry the direction too (outbound = ECR to
//! POS). Every byte seen lands in exactly one packet, in order: one packet per
//! complete frame when frames parse, raw chunks otherwise. A packet's timestamp is
//! the arrival of its first byte.
//!
//! [`SerialCaptureWriter`] writes chunks as they are; [`FrameSplitter`] sits in front
//! of it and regroups the bytes of each direction into one packet per frame, using
//! the same stream decoder as the analyzer.

use std::collections::VecDeque;
use std::io::{self, Write};

use ecr_proto::link::Side;
use ecr_proto::stream::{StreamDecoder, StreamEvent};
use ecr_proto::Timestamp;

use crate::source::{Direction, PcapngWriter};

/// LINKTYPE_USER0.
pub const LINKTYPE_SERIAL: u32 = 147;
/// Direction byte: cash register to terminal.
pub const DIR_ECR_TO_POS: u8 = 0x00;
/// Direction byte: terminal to cash register.
pub const DIR_POS_TO_ECR: u8 = 0x01;

/// Splits a D9 packet into its direction and line bytes. `None` for an empty packet
/// or an unknown direction byte.
pub fn parse_packet(data: &[u8]) -> Option<(Side, &[u8])> {
    let (&dir, rest) = data.split_first()?;
    match dir {
        DIR_ECR_TO_POS => Some((Side::Ecr, rest)),
        DIR_POS_TO_ECR => Some((Side::Pos, rest)),
        _ => None,
    }
}

fn dir_byte(side: Side) -> u8 {
    match side {
        Side::Ecr => DIR_ECR_TO_POS,
        Side::Pos => DIR_POS_TO_ECR,
    }
}

/// Writes D9 packets.
pub struct SerialCaptureWriter<W: Write> {
    out: PcapngWriter<W>,
    iface: u32,
    scratch: Vec<u8>,
}

impl<W: Write> SerialCaptureWriter<W> {
    /// Starts a file with one USER0 interface named `name` (e.g. "ttyUSB0<->ttyUSB1").
    pub fn new(w: W, name: Option<&str>) -> io::Result<Self> {
        let mut out = PcapngWriter::new(w)?;
        let iface = out.add_interface(LINKTYPE_SERIAL, 0, name)?;
        Ok(SerialCaptureWriter {
            out,
            iface,
            scratch: Vec::new(),
        })
    }

    /// Writes one packet: `bytes` sent by `from`, first byte seen at `ts`.
    pub fn write(&mut self, ts: Timestamp, from: Side, bytes: &[u8]) -> io::Result<()> {
        self.scratch.clear();
        self.scratch.push(dir_byte(from));
        self.scratch.extend_from_slice(bytes);
        let len = u32::try_from(self.scratch.len()).unwrap_or(u32::MAX);
        let dir = match from {
            Side::Ecr => Direction::Outbound,
            Side::Pos => Direction::Inbound,
        };
        self.out
            .write_packet(self.iface, ts, &self.scratch, len, Some(dir))
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out.into_inner()
    }
}

/// One direction's bytes not yet written, with the arrival time of each chunk.
#[derive(Debug, Default)]
struct Pending {
    bytes: VecDeque<u8>,
    /// Stream offset of `bytes[0]`.
    base: u64,
    /// (stream offset, time) where each chunk began.
    marks: VecDeque<(u64, Timestamp)>,
}

impl Pending {
    fn ts_at(&self, offset: u64) -> Timestamp {
        let mut ts = self.marks.front().map_or(Timestamp::default(), |m| m.1);
        for &(o, t) in &self.marks {
            if o <= offset {
                ts = t;
            } else {
                break;
            }
        }
        ts
    }

    /// Takes `len` bytes from the front (they must start at `offset`).
    fn take(&mut self, offset: u64, len: u64) -> (Timestamp, Vec<u8>) {
        let ts = self.ts_at(offset);
        let skip = offset.saturating_sub(self.base) as usize;
        self.bytes.drain(..skip.min(self.bytes.len()));
        let n = (len as usize).min(self.bytes.len());
        let out: Vec<u8> = self.bytes.drain(..n).collect();
        self.base = offset + n as u64;
        while self.marks.len() > 1 && self.marks.get(1).is_some_and(|m| m.0 <= self.base) {
            self.marks.pop_front();
        }
        (ts, out)
    }
}

/// Regroups each direction's bytes into one packet per frame (and one per run of
/// bytes that are not a frame) before writing them. Bytes are never changed,
/// dropped or reordered within a direction.
pub struct FrameSplitter<W: Write> {
    writer: SerialCaptureWriter<W>,
    decoders: [StreamDecoder; 2],
    pending: [Pending; 2],
}

/// Most bytes held back per direction before they are written as a raw chunk.
const MAX_PENDING: usize = 1 << 17;

fn idx(side: Side) -> usize {
    match side {
        Side::Ecr => 0,
        Side::Pos => 1,
    }
}

impl<W: Write> FrameSplitter<W> {
    /// Wraps a writer.
    pub fn new(writer: SerialCaptureWriter<W>) -> Self {
        FrameSplitter {
            writer,
            decoders: Default::default(),
            pending: Default::default(),
        }
    }

    /// Bytes sent by `from`, seen at `ts`.
    pub fn push(&mut self, ts: Timestamp, from: Side, bytes: &[u8]) -> io::Result<()> {
        let i = idx(from);
        let (Some(dec), Some(p)) = (self.decoders.get_mut(i), self.pending.get_mut(i)) else {
            return Ok(());
        };
        p.marks.push_back((dec.offset(), ts));
        p.bytes.extend(bytes);
        let mut units = vec![];
        dec.feed(bytes, ts, |ev| units.push(unit(&ev)));
        self.write_units(from, units)?;
        if self
            .pending
            .get(i)
            .is_some_and(|p| p.bytes.len() > MAX_PENDING)
        {
            self.flush_side(from)?;
        }
        Ok(())
    }

    fn write_units(&mut self, from: Side, units: Vec<(u64, u64)>) -> io::Result<()> {
        for (offset, len) in units {
            let Some(p) = self.pending.get_mut(idx(from)) else {
                break;
            };
            let (ts, bytes) = p.take(offset, len);
            if !bytes.is_empty() {
                self.writer.write(ts, from, &bytes)?;
            }
        }
        Ok(())
    }

    /// Writes everything held back for `from` (e.g. when the line goes quiet), as
    /// frames where they are complete and a raw chunk for the rest.
    pub fn flush_side(&mut self, from: Side) -> io::Result<()> {
        let i = idx(from);
        let mut units = vec![];
        if let Some(dec) = self.decoders.get_mut(i) {
            dec.flush(|ev| units.push(unit(&ev)));
        }
        self.write_units(from, units)?;
        // Whatever is still held (an unfinished frame) goes out raw; the decoder
        // starts over after it.
        if let Some(p) = self.pending.get_mut(i) {
            if !p.bytes.is_empty() {
                let (base, len) = (p.base, p.bytes.len() as u64);
                let (ts, bytes) = p.take(base, len);
                self.writer.write(ts, from, &bytes)?;
                if let Some(dec) = self.decoders.get_mut(i) {
                    let mut fresh = StreamDecoder::new();
                    // Keep offsets continuous: account the raw bytes as a gap.
                    fresh.gap(dec.offset(), |_| {});
                    *dec = fresh;
                }
                if let Some(p) = self.pending.get_mut(i) {
                    p.base = base + len;
                    p.marks.clear();
                }
            }
        }
        self.writer.flush()
    }

    /// Writes everything held back and returns the writer.
    pub fn finish(mut self) -> io::Result<SerialCaptureWriter<W>> {
        self.flush_side(Side::Ecr)?;
        self.flush_side(Side::Pos)?;
        Ok(self.writer)
    }
}

fn unit(ev: &StreamEvent<'_>) -> (u64, u64) {
    match ev {
        StreamEvent::Frame(f) => (f.offset, f.frame.as_bytes().len() as u64),
        StreamEvent::Rejected(r) => (r.offset, r.bytes.len() as u64),
        StreamEvent::Skipped(s) => (s.offset, s.len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::CaptureReader;
    use ecr_proto::frame::{FrameRepr, FrameType};

    fn read_back(bytes: Vec<u8>) -> Vec<(i64, Side, Vec<u8>)> {
        let mut r = CaptureReader::from_reader(std::io::Cursor::new(bytes)).unwrap();
        let mut out = vec![];
        while let Some(p) = r.next_packet() {
            let p = p.unwrap();
            assert_eq!(p.linktype, LINKTYPE_SERIAL);
            let (side, data) = parse_packet(p.data).unwrap();
            out.push((p.ts.as_nanos(), side, data.to_vec()));
        }
        out
    }

    #[test]
    fn one_packet_per_frame_and_every_byte_once() {
        let req = FrameRepr::new(FrameType::REQUEST, 1, b"hello")
            .to_bytes()
            .unwrap();
        let ack = FrameRepr::ack(1).to_bytes().unwrap();
        let mut ecr_stream = b"xx".to_vec();
        ecr_stream.extend(&req);
        ecr_stream.extend(&req);
        let w = SerialCaptureWriter::new(Vec::new(), Some("test")).unwrap();
        let mut s = FrameSplitter::new(w);
        // The ECR side dribbles in 3-byte chunks, the POS acks in one.
        for (i, c) in ecr_stream.chunks(3).enumerate() {
            s.push(Timestamp::from_millis(i as i64), Side::Ecr, c)
                .unwrap();
        }
        s.push(Timestamp::from_millis(100), Side::Pos, &ack)
            .unwrap();
        s.push(Timestamp::from_millis(101), Side::Ecr, b"/n\x01")
            .unwrap();
        let out = read_back(s.finish().unwrap().into_inner());
        let ecr: Vec<&Vec<u8>> = out
            .iter()
            .filter(|p| p.1 == Side::Ecr)
            .map(|p| &p.2)
            .collect();
        assert_eq!(ecr, vec![&b"xx".to_vec(), &req, &req, &b"/n\x01".to_vec()]);
        let joined: Vec<u8> = ecr.iter().flat_map(|v| v.iter().copied()).collect();
        assert_eq!(joined, [ecr_stream.clone(), b"/n\x01".to_vec()].concat());
        // Timestamps are those of each packet's first byte: the first request starts in
        // the chunk at index 0 (bytes 0..3), the second at byte 18 (chunk 6).
        let first_req = out.iter().find(|p| p.1 == Side::Ecr && p.2 == req).unwrap();
        assert_eq!(first_req.0, 0);
        let pos: Vec<&(i64, Side, Vec<u8>)> = out.iter().filter(|p| p.1 == Side::Pos).collect();
        assert_eq!(pos.len(), 1);
        assert_eq!(pos[0].2, ack);
        assert_eq!(pos[0].0, 100_000_000);
    }

    #[test]
    fn analyzer_reads_the_format() {
        use crate::analyzer::{Analyzer, Config};
        use crate::keys::KeySet;
        use crate::record::{Record, Role, Transport};
        let body = br#"{"content":{"func_type":5001},"digest":"77760cafee81dc33c720c90b75787b5f"}"#;
        let req = FrameRepr::new(FrameType::REQUEST, 3, body)
            .to_bytes()
            .unwrap();
        let ack = FrameRepr::ack(3).to_bytes().unwrap();
        let mut w = SerialCaptureWriter::new(Vec::new(), None).unwrap();
        w.write(Timestamp::from_millis(0), Side::Ecr, &req).unwrap();
        w.write(Timestamp::from_millis(50), Side::Pos, &ack)
            .unwrap();
        let bytes = w.into_inner();
        let mut records = vec![];
        let mut sink = |r: Record| records.push(r);
        let mut a = Analyzer::new(Config::default(), KeySet::new(), &mut sink);
        let mut r = CaptureReader::from_reader(std::io::Cursor::new(bytes)).unwrap();
        while let Some(p) = r.next_packet() {
            a.packet(&p.unwrap());
        }
        let (summary, _) = a.finish(0, vec![]);
        assert_eq!(summary.packets, 2);
        let msgs: Vec<_> = records
            .iter()
            .filter_map(|r| match r {
                Record::Message(m) => Some(m),
                _ => None,
            })
            .collect();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].transport, Transport::Serial);
        assert_eq!(msgs[0].func_type, Some(5001));
        assert_eq!(msgs[0].ref_num, Some(3));
        assert_eq!(msgs[1].role, Role::Ack);
        // The ack answers the link; the business result never came.
        let codes: Vec<_> = summary.findings.keys().map(|c| c.as_str()).collect();
        assert_eq!(codes, vec!["unanswered-at-end"]);
    }
}
