//! Damages a live capture the way no live exchange does, for the sample captures of
//! `captures/` (see `captures/regenerate.sh`, which records the live traffic with
//! `ecr-sniff emulate` and `send` and then runs this):
//!
//! ```sh
//! cargo run -p ecr-capture --example damaged_captures -- reorder live.pcap out.pcap
//! cargo run -p ecr-capture --example damaged_captures -- gap live.pcap out.pcap 2
//! ```
//!
//! - `reorder`: the first request (cash register to port 9001 or 9002) is cut into
//!   three segments (its head, and its body in two); the two body segments are
//!   swapped, an overlapping retransmission (the same bytes) and an exact
//!   retransmission of the head are added. Reassembly must give the clean request.
//! - `gap N`: the data segments the cash register sends on its N-th connection
//!   (from 1) are deleted: the request is lost, its answer stays, and the
//!   connection's close shows the hole.
//!
//! Input: a classic pcap (little-endian, microseconds, Ethernet or Linux loopback
//! as `tcpdump -i lo -w` writes it) with IPv4 TCP. This is a tool for making test
//! data: it stops with a message on anything else.

use std::collections::HashMap;
use std::process::ExitCode;

const PORTS: [u16; 2] = [9001, 9002];

/// One record of the capture.
struct Rec {
    secs: u32,
    usecs: u32,
    data: Vec<u8>,
}

fn read_pcap(bytes: &[u8]) -> Result<(Vec<u8>, Vec<Rec>), String> {
    let header = bytes.get(..24).ok_or("shorter than a pcap header")?;
    if header.get(..4) != Some(&[0xd4, 0xc3, 0xb2, 0xa1][..]) {
        return Err("not a little-endian microsecond pcap (as tcpdump -w writes)".into());
    }
    if u32_le(header, 20) != 1 {
        return Err("link type is not Ethernet".into());
    }
    let mut recs = vec![];
    let mut at = 24;
    while at < bytes.len() {
        let h = bytes.get(at..at + 16).ok_or("truncated record header")?;
        let caplen = u32_le(h, 8) as usize;
        let orig = u32_le(h, 12) as usize;
        if caplen != orig {
            return Err(format!("record at offset {at} is cut (snap length)"));
        }
        let data = bytes
            .get(at + 16..at + 16 + caplen)
            .ok_or("truncated record")?;
        recs.push(Rec {
            secs: u32_le(h, 0),
            usecs: u32_le(h, 4),
            data: data.to_vec(),
        });
        at += 16 + caplen;
    }
    Ok((header.to_vec(), recs))
}

fn u32_le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u16_be(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The TCP parts of an Ethernet/IPv4 frame.
struct Tcp {
    /// Ethernet + IPv4 + TCP header length.
    head: usize,
    ip_head: usize,
    sport: u16,
    dport: u16,
    seq: u32,
    flags: u8,
}

fn tcp(frame: &[u8]) -> Option<Tcp> {
    if frame.len() < 14 + 20 || u16_be(frame, 12) != 0x0800 || frame[23] != 6 {
        return None;
    }
    let ip_head = usize::from(frame[14] & 0x0f) * 4;
    let t = 14 + ip_head;
    if frame.len() < t + 20 {
        return None;
    }
    let tcp_head = usize::from(frame[t + 12] >> 4) * 4;
    Some(Tcp {
        head: t + tcp_head,
        ip_head,
        sport: u16_be(frame, t),
        dport: u16_be(frame, t + 2),
        seq: u32::from_be_bytes([frame[t + 4], frame[t + 5], frame[t + 6], frame[t + 7]]),
        flags: frame[t + 13],
    })
}

/// `frame`'s headers with `seq` and `payload` instead of its own (IPv4 length and
/// header checksum fixed; the TCP checksum is left as loopback captures have it).
fn resegment(frame: &[u8], t: &Tcp, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = frame[..t.head].to_vec();
    f.extend_from_slice(payload);
    let total = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f[24..26].copy_from_slice(&[0, 0]);
    let sum = checksum(&f[14..14 + t.ip_head]);
    f[24..26].copy_from_slice(&sum.to_be_bytes());
    let s = 14 + t.ip_head + 4;
    f[s..s + 4].copy_from_slice(&seq.to_be_bytes());
    f
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| (u32::from(c[0]) << 8) | u32::from(*c.get(1).unwrap_or(&0)))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn to_server(t: &Tcp) -> bool {
    PORTS.contains(&t.dport)
}

/// `reorder`: see the module comment.
fn reorder(recs: Vec<Rec>) -> Result<Vec<Rec>, String> {
    let i = recs
        .iter()
        .position(|r| tcp(&r.data).is_some_and(|t| to_server(&t) && r.data.len() > t.head))
        .ok_or("no request segment to a port 9001/9002")?;
    let r = &recs[i];
    let t = tcp(&r.data).ok_or("not TCP")?;
    let payload = &r.data[t.head..];
    let head_end = payload
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(payload.len() / 3, |p| p + 4);
    let body = payload.len() - head_end;
    if body < 4 {
        return Err("the request segment has no body to cut in two".into());
    }
    let mid = head_end + body / 2;
    let seg = |from: usize, to: usize| {
        resegment(
            &r.data,
            &t,
            t.seq.wrapping_add(from as u32),
            &payload[from..to],
        )
    };
    // In file order: head, second body half, first body half (swapped), an overlap
    // (end of the head and the first body half again), the head again.
    let pieces = [
        seg(0, head_end),
        seg(mid, payload.len()),
        seg(head_end, mid),
        seg(head_end / 2, mid),
        seg(0, head_end),
    ];
    let mut out = Vec::with_capacity(recs.len() + 4);
    let mut recs = recs.into_iter();
    out.extend(recs.by_ref().take(i));
    let Some(orig) = recs.next() else {
        return Err("request vanished".into());
    };
    for (k, data) in pieces.into_iter().enumerate() {
        let usecs = orig.usecs + k as u32 * 50;
        out.push(Rec {
            secs: orig.secs + usecs / 1_000_000,
            usecs: usecs % 1_000_000,
            data,
        });
    }
    out.extend(recs);
    Ok(out)
}

/// `gap N`: see the module comment.
fn gap(recs: Vec<Rec>, n: usize) -> Result<Vec<Rec>, String> {
    // Client connections in the order of their SYN.
    let mut conns: HashMap<u16, usize> = HashMap::new();
    let mut dropped = 0;
    let mut out = vec![];
    for r in recs {
        if let Some(t) = tcp(&r.data) {
            if to_server(&t) {
                if t.flags & 0x02 != 0 && !conns.contains_key(&t.sport) {
                    let k = conns.len() + 1;
                    conns.insert(t.sport, k);
                }
                if conns.get(&t.sport) == Some(&n) && r.data.len() > t.head {
                    dropped += 1;
                    continue;
                }
            }
        }
        out.push(r);
    }
    if dropped == 0 {
        return Err(format!("connection {n} sends no data"));
    }
    Ok(out)
}

fn run(args: &[String]) -> Result<(), String> {
    let usage = "usage: damaged_captures reorder|gap IN.pcap OUT.pcap [N]";
    let [op, input, output, rest @ ..] = args else {
        return Err(usage.into());
    };
    let bytes = std::fs::read(input).map_err(|e| format!("{input}: {e}"))?;
    let (header, recs) = read_pcap(&bytes).map_err(|e| format!("{input}: {e}"))?;
    let recs = match (op.as_str(), rest) {
        ("reorder", []) => reorder(recs),
        ("gap", [n]) => gap(
            recs,
            n.parse().map_err(|_| format!("gap: {n}: not a number"))?,
        ),
        _ => return Err(usage.into()),
    }
    .map_err(|e| format!("{input}: {e}"))?;
    let mut out = header;
    for r in recs {
        let len = r.data.len() as u32;
        for v in [r.secs, r.usecs, len, len] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&r.data);
    }
    std::fs::write(output, out).map_err(|e| format!("{output}: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("damaged_captures: {e}");
            ExitCode::from(2)
        }
    }
}
