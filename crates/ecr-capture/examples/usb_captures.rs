//! Writes the USB sample captures of `captures/usb/` from scripted serial byte
//! streams: a cash register (the USB host) talking through a PL2303 adapter
//! (bulk OUT 0x02, bulk IN 0x83, interrupt IN 0x81) to a terminal at 9600 baud.
//!
//! ```sh
//! cargo run -p ecr-capture --example usb_captures -- captures/usb
//! ```
//!
//! Every line byte becomes USB traffic the way the Linux and Windows stacks record
//! it: a host write is one bulk OUT URB whose submission carries the data and whose
//! completion (about 1 ms per byte later) carries none; bytes from the terminal come
//! back in small bulk IN completions (at most `in_chunk` bytes, each stamped when its
//! last byte has crossed the line at 9600 baud: 1.04 ms per byte), each preceded by
//! its empty submission. The adapter's line settings are set with SET_LINE_CODING,
//! and interrupt (serial state) and GET_LINE_CODING transfers are mixed in so the
//! reader must skip them. Output is deterministic (fixed clock, no randomness).

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use ecr_capture::source::PcapWriter;
use ecr_proto::cipher::PosKey;
use ecr_proto::envelope::{build_request, RequestDialect};
use ecr_proto::frame::{split_message, ErrorCode, FrameRepr, FrameType};
use ecr_proto::value::{Object, Value};
use ecr_proto::Timestamp;

const KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";
/// 2026-11-25 10:00:00 UTC.
const T0_MS: i64 = 1_795_600_800_000;
/// One byte on a 9600 8N1 line: 10 bits.
const BYTE_US: i64 = 10_000_000 / 9600;

#[derive(Clone, Copy, PartialEq)]
enum Fmt {
    Usbmon,
    UsbmonMmapped,
    UsbPcap,
}

impl Fmt {
    fn linktype(self) -> u32 {
        match self {
            Fmt::Usbmon => 189,
            Fmt::UsbmonMmapped => 220,
            Fmt::UsbPcap => 249,
        }
    }
}

/// One URB record before it is written.
struct Rec {
    ts_us: i64,
    seq: u64,
    bytes: Vec<u8>,
}

struct Cap {
    fmt: Fmt,
    recs: Vec<Rec>,
    urb: u64,
}

const EP_OUT: u8 = 0x02;
const EP_IN: u8 = 0x83;
const EP_INT: u8 = 0x81;

impl Cap {
    fn new(fmt: Fmt) -> Self {
        Cap {
            fmt,
            recs: vec![],
            urb: 0xffff_8880_1234_0000,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn rec(
        &mut self,
        ts_us: i64,
        submit: bool,
        transfer: u8,
        ep: u8,
        dev: (u16, u8),
        setup: Option<[u8; 8]>,
        urb_len: u32,
        data: &[u8],
        stage: Option<u8>,
    ) {
        let ts_us = T0_MS * 1000 + ts_us;
        let mut b = vec![];
        match self.fmt {
            Fmt::Usbmon | Fmt::UsbmonMmapped => {
                b.extend_from_slice(&self.urb.to_le_bytes());
                b.push(if submit { b'S' } else { b'C' });
                b.push(transfer);
                b.push(ep);
                b.push(dev.1);
                b.extend_from_slice(&dev.0.to_le_bytes());
                b.push(if setup.is_some() { 0 } else { b'-' });
                b.push(if !data.is_empty() {
                    0
                } else if ep & 0x80 != 0 {
                    b'<'
                } else {
                    b'>'
                });
                b.extend_from_slice(&(ts_us / 1_000_000).to_le_bytes());
                b.extend_from_slice(&((ts_us % 1_000_000) as i32).to_le_bytes());
                let status: i32 = if submit { -115 } else { 0 };
                b.extend_from_slice(&status.to_le_bytes());
                b.extend_from_slice(&urb_len.to_le_bytes());
                b.extend_from_slice(&(data.len() as u32).to_le_bytes());
                b.extend_from_slice(&setup.unwrap_or([0; 8]));
                if self.fmt == Fmt::UsbmonMmapped {
                    let interval: i32 = if transfer == 1 { 1 } else { 0 };
                    b.extend_from_slice(&interval.to_le_bytes());
                    b.extend_from_slice(&(-1i32).to_le_bytes());
                    let flags: u32 = if ep & 0x80 != 0 { 0x200 } else { 0 };
                    b.extend_from_slice(&flags.to_le_bytes());
                    b.extend_from_slice(&0u32.to_le_bytes());
                }
                b.extend_from_slice(data);
            }
            Fmt::UsbPcap => {
                let hl: u16 = if stage.is_some() { 28 } else { 27 };
                b.extend_from_slice(&hl.to_le_bytes());
                b.extend_from_slice(&self.urb.to_le_bytes());
                b.extend_from_slice(&0u32.to_le_bytes());
                let function: u16 = if transfer == 2 { 0x0008 } else { 0x0009 };
                b.extend_from_slice(&function.to_le_bytes());
                b.push(u8::from(!submit));
                b.extend_from_slice(&dev.0.to_le_bytes());
                b.extend_from_slice(&u16::from(dev.1).to_le_bytes());
                b.push(ep);
                b.push(transfer);
                let mut payload = vec![];
                if let Some(s) = setup {
                    payload.extend_from_slice(&s);
                }
                payload.extend_from_slice(data);
                b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                if let Some(st) = stage {
                    b.push(st);
                }
                b.extend_from_slice(&payload);
            }
        }
        let seq = self.recs.len() as u64;
        self.recs.push(Rec {
            ts_us,
            seq,
            bytes: b,
        });
    }

    fn next_urb(&mut self) {
        self.urb += 0x40;
    }

    /// The host writes `bytes` at `t_us` (one OUT URB).
    fn out(&mut self, t_us: i64, dev: (u16, u8), bytes: &[u8]) {
        let n = bytes.len() as u32;
        self.rec(t_us, true, 3, EP_OUT, dev, None, n, bytes, None);
        let done = t_us + bytes.len() as i64 * BYTE_US;
        self.rec(done, false, 3, EP_OUT, dev, None, n, &[], None);
        self.next_urb();
    }

    /// Like [`Cap::out`], but the URB's completion is missing from the capture (the
    /// capture started or stopped in between, or usbmon dropped the record).
    fn out_no_completion(&mut self, t_us: i64, dev: (u16, u8), bytes: &[u8]) {
        let n = bytes.len() as u32;
        self.rec(t_us, true, 3, EP_OUT, dev, None, n, bytes, None);
        self.next_urb();
    }

    /// The terminal sends `bytes` starting at `t_us`; the host reads them in IN
    /// transfers of at most `chunk` bytes. Returns when the last byte arrived.
    fn inn(&mut self, t_us: i64, dev: (u16, u8), bytes: &[u8], chunk: usize) -> i64 {
        let mut at = t_us;
        for c in bytes.chunks(chunk.max(1)) {
            self.rec(at, true, 3, EP_IN, dev, None, 256, &[], None);
            at += c.len() as i64 * BYTE_US;
            self.rec(at, false, 3, EP_IN, dev, None, c.len() as u32, c, None);
            self.next_urb();
        }
        at
    }

    /// SET_LINE_CODING, then a GET_LINE_CODING and a serial-state interrupt, all
    /// of which carry no line data.
    fn line_coding(&mut self, t_us: i64, dev: (u16, u8), baud: u32) {
        let mut lc = baud.to_le_bytes().to_vec();
        lc.extend_from_slice(&[0, 0, 8]);
        let set = [0x21, 0x20, 0, 0, 0, 0, 7, 0];
        if self.fmt == Fmt::UsbPcap {
            // USBPcap: setup stage, data stage, then the completion.
            self.rec(t_us, true, 2, 0x00, dev, Some(set), 0, &[], Some(0));
            self.rec(t_us + 10, true, 2, 0x00, dev, None, 0, &lc, Some(1));
            self.rec(t_us + 500, false, 2, 0x00, dev, None, 0, &[], Some(3));
        } else {
            self.rec(t_us, true, 2, 0x00, dev, Some(set), 7, &lc, None);
            self.rec(t_us + 500, false, 2, 0x00, dev, None, 7, &[], None);
        }
        self.next_urb();
        let get = [0xa1, 0x21, 0, 0, 0, 0, 7, 0];
        if self.fmt == Fmt::UsbPcap {
            self.rec(t_us + 1000, true, 2, 0x80, dev, Some(get), 0, &[], Some(0));
            self.rec(t_us + 1500, false, 2, 0x80, dev, None, 0, &lc, Some(1));
            self.rec(t_us + 1510, false, 2, 0x80, dev, None, 0, &[], Some(3));
        } else {
            self.rec(t_us + 1000, true, 2, 0x80, dev, Some(get), 7, &[], None);
            self.rec(t_us + 1500, false, 2, 0x80, dev, None, 7, &lc, None);
        }
        self.next_urb();
        self.rec(t_us + 2000, true, 1, EP_INT, dev, None, 10, &[], None);
        let state = [0xa1, 0x20, 0, 0, 0, 0, 2, 0, 0x03, 0x00];
        self.rec(t_us + 3000, false, 1, EP_INT, dev, None, 10, &state, None);
        self.next_urb();
    }

    fn write(mut self, path: &Path) {
        self.recs.sort_by_key(|r| (r.ts_us, r.seq));
        let f = BufWriter::new(File::create(path).expect("create capture"));
        let mut w = PcapWriter::new(f, self.fmt.linktype(), 65535, false, false).expect("header");
        for r in &self.recs {
            let ts = Timestamp::from_parts(
                r.ts_us.div_euclid(1_000_000),
                (r.ts_us.rem_euclid(1_000_000) * 1000) as u32,
            );
            w.write_packet(ts, &r.bytes, r.bytes.len() as u32)
                .expect("write");
        }
        let mut f = w.into_inner();
        std::io::Write::flush(&mut f).expect("flush");
        println!("wrote {} ({} URB records)", path.display(), self.recs.len());
    }
}

fn obj(json: &str) -> Object {
    match Value::parse_json(json.as_bytes()) {
        Ok(Value::Object(o)) => o,
        other => panic!("not an object: {other:?}"),
    }
}

fn key() -> PosKey {
    PosKey::new(KEY).expect("key")
}

fn payment(dialect: RequestDialect) -> Vec<u8> {
    build_request(
        dialect,
        &obj(
            r#"{"amt":10.1,"channel":"card_payment","func_type":1001,"out_trade_no":"456700000101"}"#,
        ),
        &key(),
    )
}

fn summary_request() -> Vec<u8> {
    build_request(RequestDialect::Plain, &obj(r#"{"func_type":5001}"#), &key())
}

/// A business result: `pad` extra characters of receipt text make it long.
fn result(pad: usize) -> Vec<u8> {
    let data = format!(
        r#"{{"out_trade_no":"456700000101","respcd":"0000","syssn":"20261125100000020061880001","txamt":"1010","txcurrcd":"344","receipt":"{}"}}"#,
        "=".repeat(pad)
    );
    let mut s = String::from(
        r#"{"respcd":"6000","respmsg":"AUTHORISED","resperr":"trade success","data":"#,
    );
    ecr_proto::value::write_json_string(&data, &mut s);
    s.push('}');
    s.into_bytes()
}

fn frame(t: FrameType, r: u8, data: &[u8]) -> Vec<u8> {
    FrameRepr::new(t, r, data).to_bytes().expect("frame")
}

fn ack(r: u8) -> Vec<u8> {
    FrameRepr::ack(r).to_bytes().expect("ack")
}

const DEV: (u16, u8) = (1, 5);

/// Request, ack, business result as a POS request, ack; then an encrypted
/// payment the same way.
fn clean(c: &mut Cap, dev: (u16, u8), t_ms: i64) {
    let t = t_ms * 1000;
    c.line_coding(t, dev, 9600);
    let req = frame(FrameType::REQUEST, 1, &payment(RequestDialect::Plain));
    c.out(t + 50_000, dev, &req);
    let sent = t + 50_000 + req.len() as i64 * BYTE_US;
    c.inn(sent + 40_000, dev, &ack(1), 11);
    let res = frame(FrameType::REQUEST, 1, &result(0));
    let end = c.inn(sent + 3_000_000, dev, &res, 16);
    c.out(end + 30_000, dev, &ack(1));
    let req2 = frame(
        FrameType::REQUEST,
        2,
        &payment(RequestDialect::EnvelopeEncrypted),
    );
    let t2 = end + 2_000_000;
    c.out(t2, dev, &req2);
    let sent2 = t2 + req2.len() as i64 * BYTE_US;
    c.inn(sent2 + 35_000, dev, &ack(2), 4);
    let res2 = frame(FrameType::REQUEST, 2, &result(0));
    let end2 = c.inn(sent2 + 4_000_000, dev, &res2, 32);
    c.out(end2 + 25_000, dev, &ack(2));
}

/// The clean exchange of [`clean`], but no OUT completion was captured: the
/// host's bytes are known from the submissions alone.
fn missing_out_completions(c: &mut Cap) {
    let t = 1000 * 1000;
    c.line_coding(t, DEV, 9600);
    let req = frame(FrameType::REQUEST, 1, &payment(RequestDialect::Plain));
    c.out_no_completion(t + 50_000, DEV, &req);
    let sent = t + 50_000 + req.len() as i64 * BYTE_US;
    c.inn(sent + 40_000, DEV, &ack(1), 11);
    let res = frame(FrameType::REQUEST, 1, &result(0));
    let end = c.inn(sent + 3_000_000, DEV, &res, 16);
    c.out_no_completion(end + 30_000, DEV, &ack(1));
    let req2 = frame(FrameType::REQUEST, 2, &summary_request());
    let t2 = end + 2_000_000;
    c.out_no_completion(t2, DEV, &req2);
    let sent2 = t2 + req2.len() as i64 * BYTE_US;
    c.inn(sent2 + 35_000, DEV, &ack(2), 4);
    let res2 = frame(FrameType::REQUEST, 2, &result(0));
    let end2 = c.inn(sent2 + 1_500_000, DEV, &res2, 32);
    c.out_no_completion(end2 + 25_000, DEV, &ack(2));
    // The line stays up: serial-state interrupts go on after the exchange.
    for k in 1..=3 {
        c.rec(
            end2 + k * 1_000_000,
            true,
            1,
            EP_INT,
            DEV,
            None,
            10,
            &[],
            None,
        );
        let state = [0xa1, 0x20, 0, 0, 0, 0, 2, 0, 0x03, 0x00];
        c.rec(
            end2 + k * 1_000_000 + 500,
            false,
            1,
            EP_INT,
            DEV,
            None,
            10,
            &state,
            None,
        );
        c.next_urb();
    }
}

/// A request and a result both split into 1024-byte fragments; the result comes in
/// 16-byte IN transfers (about 1 s per fragment), the request in 64-byte writes.
fn split(c: &mut Cap) {
    let t = 1000 * 1000;
    c.line_coding(t, DEV, 9600);
    let mut body = obj(r#"{"amt":10.1,"channel":"card_payment","func_type":1001}"#);
    body.push("description", Value::from("x".repeat(1500)));
    let req_body = build_request(RequestDialect::Plain, &body, &key());
    let req = split_message(FrameType::REQUEST, 7, &req_body, 1024).expect("split");
    let mut at = t + 100_000;
    for w in req.chunks(64) {
        c.out(at, DEV, w);
        at += w.len() as i64 * BYTE_US;
    }
    c.inn(at + 30_000, DEV, &ack(7), 11);
    let res = split_message(FrameType::REQUEST, 7, &result(2200), 1024).expect("split");
    let end = c.inn(at + 2_000_000, DEV, &res, 16);
    c.out(end + 30_000, DEV, &ack(7));
}

/// A request whose second fragment starts `gap_ms` after the first one's last byte.
fn fragment_gap(c: &mut Cap, gap_ms: i64) {
    let t = 1000 * 1000;
    c.line_coding(t, DEV, 9600);
    let mut body = obj(r#"{"func_type":5001}"#);
    body.push("note", Value::from("y".repeat(1200)));
    let data = build_request(RequestDialect::Plain, &body, &key());
    let (first, rest) = data.split_at(1024);
    let f1 = FrameRepr {
        frame_type: FrameType::REQUEST,
        ref_num: 3,
        data_len: data.len() as u16,
        data: first,
    }
    .to_bytes()
    .expect("fragment");
    let f2 = FrameRepr {
        frame_type: FrameType::REQUEST,
        ref_num: 3,
        data_len: data.len() as u16,
        data: rest,
    }
    .to_bytes()
    .expect("fragment");
    let t1 = t + 100_000;
    c.out(t1, DEV, &f1);
    // The gap runs from the first fragment's last byte on the line (its OUT
    // completion) to the second fragment's write.
    let t2 = t1 + f1.len() as i64 * BYTE_US + gap_ms * 1000;
    c.out(t2, DEV, &f2);
    let sent = t2 + f2.len() as i64 * BYTE_US;
    if gap_ms <= 500 {
        c.inn(sent + 30_000, DEV, &ack(3), 11);
    } else {
        // The terminal dropped the set and says so.
        let err = FrameRepr::error(ErrorCode::CONCATENATION, 3)
            .to_bytes()
            .expect("error frame");
        c.inn(sent + 30_000, DEV, &err, 11);
    }
}

/// Noise between frames: line noise at power-up and a stray modem command.
fn garbage(c: &mut Cap) {
    let t = 1000 * 1000;
    c.line_coding(t, DEV, 9600);
    c.inn(t + 10_000, DEV, &[0x00, 0xff, 0xfe, 0x00], 4);
    let req = frame(FrameType::REQUEST, 1, &summary_request());
    let mut w = b"AT\r\n".to_vec();
    w.extend_from_slice(&req);
    c.out(t + 100_000, DEV, &w);
    let sent = t + 100_000 + w.len() as i64 * BYTE_US;
    let mut a = ack(1);
    a.extend_from_slice(b"\r\n\x00");
    c.inn(sent + 20_000, DEV, &a, 8);
}

/// Two adapters in one capture (1:5 and 1:7 at 115200 baud, which the summary flags),
/// and a USB disk (1:3) whose bulk traffic must be ignored. The capture of 1:7 starts
/// with the terminal's business result, so its sides are told by content.
fn two_devices(c: &mut Cap) {
    clean(c, DEV, 1000);
    let dev2 = (1, 7);
    let t = 1_500 * 1000;
    c.line_coding(t, dev2, 115_200);
    let res = frame(FrameType::REQUEST, 9, &result(0));
    let end = c.inn(t + 200_000, dev2, &res, 64);
    c.out(end + 20_000, dev2, &ack(9));
    let req = frame(FrameType::REQUEST, 10, &summary_request());
    c.out(end + 900_000, dev2, &req);
    let sent = end + 900_000 + req.len() as i64 * BYTE_US;
    c.inn(sent + 25_000, dev2, &ack(10), 11);
    // The disk: SCSI commands and sectors.
    let disk = (1, 3);
    for i in 0..20i64 {
        let cbw = [
            0x55u8, 0x53, 0x42, 0x43, i as u8, 0, 2, 0, 0, 0, 0x80, 0, 10, 0x28,
        ];
        c.out(1_200_000 + i * 50_000, disk, &cbw);
        c.inn(1_200_000 + i * 50_000 + 500, disk, &[0x5a; 512], 512);
    }
}

/// One serial fault: the frame(s) the cash register sends and the terminal's answer.
fn fault(c: &mut Cap, name: &str) {
    let t = 1000 * 1000;
    c.line_coding(t, DEV, 9600);
    let body = summary_request();
    let good = frame(FrameType::REQUEST, 4, &body);
    let format_error = FrameRepr::error(ErrorCode::FORMAT, 4)
        .to_bytes()
        .expect("error frame");
    // (ECR bytes, POS answer, delay of the answer after the ECR bytes in ms)
    let (ecr, pos, delay_ms): (Vec<u8>, Vec<u8>, i64) = match name {
        "bad-end-marker" => {
            let mut f = good.clone();
            let n = f.len();
            f[n - 1] = 0x6f;
            (f, format_error, 40)
        }
        "unsupported-version" => {
            let mut f = good.clone();
            f[2] = 0x02;
            (f, format_error, 40)
        }
        "unknown-frame-type" => {
            let mut f = good.clone();
            f[3] = 0x40;
            (f, format_error, 40)
        }
        "bad-ref" => (frame(FrameType::REQUEST, 0x80, &body), ack(0x80), 40),
        "bad-length" => {
            // data length one less than the frame carries
            let mut f = good.clone();
            let dl = u16::from_be_bytes([f[7], f[8]]) - 1;
            f[7..9].copy_from_slice(&dl.to_be_bytes());
            (f, format_error, 40)
        }
        "oversize-frame" => {
            let mut b = obj(r#"{"func_type":5001}"#);
            b.push("note", Value::from("z".repeat(1100)));
            let data = build_request(RequestDialect::Plain, &b, &key());
            (frame(FrameType::REQUEST, 4, &data), ack(4), 40)
        }
        "ack-timeout" => (good.clone(), ack(4), 1200),
        "unexpected-ack" => (good.clone(), [ack(4), ack(9)].concat(), 40),
        "error-frame" => (
            good.clone(),
            FrameRepr::error(ErrorCode::VALIDATION, 4)
                .to_bytes()
                .expect("error frame"),
            40,
        ),
        other => panic!("unknown fault {other}"),
    };
    let t1 = t + 100_000;
    c.out(t1, DEV, &ecr);
    let sent = t1 + ecr.len() as i64 * BYTE_US;
    c.inn(sent + delay_ms * 1000, DEV, &pos, 11);
    // The link goes on: a later good exchange shows the tracker recovers.
    let t2 = sent + 3_000_000;
    let next = frame(FrameType::REQUEST, 5, &body);
    c.out(t2, DEV, &next);
    c.inn(t2 + next.len() as i64 * BYTE_US + 30_000, DEV, &ack(5), 11);
}

const FAULTS: [&str; 9] = [
    "bad-end-marker",
    "unsupported-version",
    "unknown-frame-type",
    "bad-ref",
    "bad-length",
    "oversize-frame",
    "ack-timeout",
    "unexpected-ack",
    "error-frame",
];

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "captures/usb".into());
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir).expect("output directory");
    let mut c = Cap::new(Fmt::Usbmon);
    clean(&mut c, DEV, 1000);
    c.write(&dir.join("usbmon-clean.pcap"));
    let mut c = Cap::new(Fmt::UsbmonMmapped);
    clean(&mut c, DEV, 1000);
    c.write(&dir.join("usbmon-mmapped-clean.pcap"));
    let mut c = Cap::new(Fmt::UsbPcap);
    clean(&mut c, DEV, 1000);
    c.write(&dir.join("usbpcap-clean.pcap"));
    let mut c = Cap::new(Fmt::UsbmonMmapped);
    split(&mut c);
    c.write(&dir.join("usbmon-mmapped-split-tiny-transfers.pcap"));
    let mut c = Cap::new(Fmt::UsbPcap);
    split(&mut c);
    c.write(&dir.join("usbpcap-split-tiny-transfers.pcap"));
    let mut c = Cap::new(Fmt::Usbmon);
    two_devices(&mut c);
    c.write(&dir.join("usbmon-two-devices.pcap"));
    let mut c = Cap::new(Fmt::Usbmon);
    missing_out_completions(&mut c);
    c.write(&dir.join("usbmon-missing-out-completions.pcap"));
    let mut c = Cap::new(Fmt::Usbmon);
    garbage(&mut c);
    c.write(&dir.join("usbmon-garbage-bytes.pcap"));
    for gap in [499, 501] {
        let mut c = Cap::new(Fmt::Usbmon);
        fragment_gap(&mut c, gap);
        c.write(&dir.join(format!("usbmon-fragment-gap-{gap}ms.pcap")));
    }
    for name in FAULTS {
        let mut c = Cap::new(Fmt::Usbmon);
        fault(&mut c, name);
        c.write(&dir.join(format!("usbmon-{name}.pcap")));
    }
}
