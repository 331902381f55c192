//! Capture reader and everything above it, over arbitrary bytes: pcap/pcapng/gzip
//! reading (pcap-parser's streaming readers under the project's bounds and
//! resynchronisation), link layers, IP (with defragmentation), TCP reassembly and
//! HTTP parsing. Must never panic, allocate without bound or hang. The packets read
//! are also written with the pcapng writer (pcap-parser's serialisation) and read
//! back: the same data, link types and directions must come out.
#![no_main]

use std::collections::HashMap;
use std::io::Cursor;

use ecr_capture::http::{HttpConfig, HttpParser};
use ecr_capture::ip::{self, DefragConfig, Defragmenter, PROTO_TCP};
use ecr_capture::linklayer::{self, Network};
use ecr_capture::source::{CaptureReader, Direction, PcapngWriter, ReaderOptions};
use ecr_capture::tcp::{self, StreamDir, TcpConfig, TcpEvent, TcpReassembler};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let opts = ReaderOptions {
        max_block_len: 1 << 20,
    };
    let Ok(mut reader) = CaptureReader::with_options(Cursor::new(data.to_vec()), opts) else {
        return;
    };
    let mut defrag = Defragmenter::new(DefragConfig {
        max_pending: 16,
        max_bytes: 1 << 20,
        ..Default::default()
    });
    let cfg = TcpConfig {
        max_connections: 64,
        max_ooo_bytes_per_dir: 64 << 10,
        max_ooo_bytes_total: 256 << 10,
        ..Default::default()
    };
    let mut reasm = TcpReassembler::new(cfg, |p| p == 9001 || p == 9002);
    let http_cfg = HttpConfig {
        max_header_bytes: 4096,
        max_body_bytes: 64 << 10,
    };
    let mut parsers: HashMap<(u64, StreamDir), HttpParser> = HashMap::new();
    let mut http_events = Vec::new();
    let mut on_event = |e: TcpEvent<'_>| {
        // Only "does not crash" matters here; keep the event list small.
        http_events.clear();
        match e {
            TcpEvent::Data {
                conn,
                dir,
                ts,
                bytes,
                ..
            } => {
                let _ = tcp::looks_like_tls(bytes);
                parsers
                    .entry((conn, dir))
                    .or_insert_with(|| HttpParser::new(http_cfg))
                    .feed(ts, bytes, &mut http_events);
            }
            TcpEvent::Gap {
                conn,
                dir,
                ts,
                missing_bytes,
                ..
            } => {
                parsers
                    .entry((conn, dir))
                    .or_insert_with(|| HttpParser::new(http_cfg))
                    .gap(ts, missing_bytes, &mut http_events);
            }
            TcpEvent::Fin { conn, dir, ts } => {
                if let Some(p) = parsers.get_mut(&(conn, dir)) {
                    p.finish(ts, &mut http_events);
                }
            }
            TcpEvent::Closed { conn, ts, .. } => {
                for dir in [StreamDir::ClientToServer, StreamDir::ServerToClient] {
                    if let Some(mut p) = parsers.remove(&(conn, dir)) {
                        p.finish(ts, &mut http_events);
                    }
                }
            }
            TcpEvent::Opened { .. } => {}
        }
    };
    let mut guard = 0u32;
    let mut writer = PcapngWriter::new(Vec::new()).expect("writing to memory");
    let mut written: Vec<(u32, Vec<u8>, Option<Direction>)> = Vec::new();
    while let Some(pkt) = reader.next_packet() {
        guard += 1;
        assert!(guard < 1_000_000, "reader does not terminate");
        let Ok(pkt) = pkt else { continue };
        // Link types above 65535 (classic pcap) have no pcapng interface.
        if let Ok(iface) = writer.interface_for(pkt.linktype) {
            writer
                .write_packet(iface, pkt.ts, pkt.data, pkt.orig_len, pkt.direction)
                .expect("writing to memory");
            written.push((pkt.linktype, pkt.data.to_vec(), pkt.direction));
        }
        let _ = tcp::peek_tcp_ports(pkt.linktype, pkt.data);
        let l3 = match linklayer::network_layer(pkt.linktype, pkt.data) {
            Ok(Network::Ipv4(d) | Network::Ipv6(d)) => d,
            _ => continue,
        };
        let Ok(ipp) = ip::parse(l3) else { continue };
        let Some(ipp) = defrag.process(pkt.ts, ipp) else {
            continue;
        };
        if ipp.protocol != PROTO_TCP {
            continue;
        }
        let Ok(seg) = tcp::parse_tcp(&ipp.payload) else {
            continue;
        };
        reasm.process(pkt.ts, pkt.index, ipp.src, ipp.dst, &seg, &mut on_event);
    }
    reasm.flush_all(&mut on_event);
    assert!(reasm.buffered_bytes() == 0);

    let bytes = writer.into_inner();
    let mut again = CaptureReader::from_reader(Cursor::new(bytes)).expect("own pcapng");
    let mut n = 0;
    while let Some(pkt) = again.next_packet() {
        let pkt = pkt.expect("own pcapng packet");
        let (linktype, data, direction) = written.get(n).expect("no extra packets");
        assert_eq!(
            (pkt.linktype, pkt.data, pkt.direction),
            (*linktype, &data[..], *direction)
        );
        n += 1;
    }
    assert_eq!(n, written.len());
});
