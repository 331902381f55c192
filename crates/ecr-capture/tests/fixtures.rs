//! End-to-end over real captures made on loopback (see tests/data/make_fixtures.sh):
//! capture file -> link layer -> IP -> TCP reassembly -> HTTP messages.

use std::collections::HashMap;
use std::path::PathBuf;

use ecr_capture::http::{HttpEvent, HttpKind, HttpMessage, HttpParser};
use ecr_capture::ip::{self, Defragmenter, PROTO_TCP};
use ecr_capture::linklayer::{self, Network};
use ecr_capture::source::CaptureReader;
use ecr_capture::tcp::{
    self, CloseReason, PortPeek, StreamDir, TcpConfig, TcpEvent, TcpReassembler,
};

#[derive(Debug, Default)]
struct Result {
    linktypes: Vec<u32>,
    packets: u64,
    requests: Vec<HttpMessage>,
    responses: Vec<HttpMessage>,
    other_http_events: Vec<HttpEvent>,
    closes: Vec<CloseReason>,
    gaps: u64,
    ts: Vec<i64>,
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn analyze(name: &str) -> Result {
    let mut reader = CaptureReader::open(data(name)).unwrap();
    let mut defrag = Defragmenter::default();
    let mut reasm = TcpReassembler::new(TcpConfig::default(), |p| p == 9001);
    let mut parsers: HashMap<(u64, StreamDir), HttpParser> = HashMap::new();
    let mut res = Result::default();
    let mut http = Vec::new();
    let mut on_event = |e: TcpEvent<'_>| match e {
        TcpEvent::Data {
            conn,
            dir,
            ts,
            bytes,
            ..
        } => parsers
            .entry((conn, dir))
            .or_default()
            .feed(ts, bytes, &mut http),
        TcpEvent::Gap {
            conn,
            dir,
            ts,
            missing_bytes,
            ..
        } => {
            res.gaps += missing_bytes;
            parsers
                .entry((conn, dir))
                .or_default()
                .gap(ts, missing_bytes, &mut http)
        }
        TcpEvent::Fin { conn, dir, ts } => parsers
            .entry((conn, dir))
            .or_default()
            .finish(ts, &mut http),
        TcpEvent::Closed { reason, .. } => res.closes.push(reason),
        TcpEvent::Opened { server, .. } => assert_eq!(server.port(), 9001),
    };
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.unwrap();
        res.packets += 1;
        res.ts.push(pkt.ts.0);
        if !res.linktypes.contains(&pkt.linktype) {
            res.linktypes.push(pkt.linktype);
        }
        match tcp::peek_tcp_ports(pkt.linktype, pkt.data) {
            PortPeek::Tcp { src, dst } => assert!(src == 9001 || dst == 9001),
            other => panic!("packet {}: {other:?}", pkt.index),
        }
        let Network::Ipv4(l3) = linklayer::network_layer(pkt.linktype, pkt.data).unwrap() else {
            panic!("not IPv4");
        };
        let Some(ipp) = defrag.process(pkt.ts, ip::parse(l3).unwrap()) else {
            continue;
        };
        assert_eq!(ipp.protocol, PROTO_TCP);
        let seg = tcp::parse_tcp(&ipp.payload).unwrap();
        reasm.process(pkt.ts, pkt.index, ipp.src, ipp.dst, &seg, &mut on_event);
    }
    reasm.flush_all(&mut on_event);
    for e in http {
        match e {
            HttpEvent::Message(m) if m.is_request() => res.requests.push(m),
            HttpEvent::Message(m) => res.responses.push(m),
            other => res.other_http_events.push(other),
        }
    }
    res
}

fn check(name: &str, linktype: u32) -> Result {
    let r = analyze(name);
    assert_eq!(r.linktypes, vec![linktype], "{name}");
    assert!(
        r.other_http_events.is_empty(),
        "{name}: {:?}",
        r.other_http_events
    );
    assert_eq!(r.gaps, 0);
    assert_eq!(r.closes, vec![CloseReason::Fin]);
    assert_eq!(r.requests.len(), 3, "{name}");
    for m in &r.requests {
        assert_eq!(
            m.kind,
            HttpKind::Request {
                method: "POST".into(),
                path: "/api/payment".into()
            }
        );
        assert_eq!(m.header("content-type"), Some("application/json"));
    }
    assert_eq!(r.requests[0].body, br#"{"func_type":1001,"amt":"100"}"#);
    assert_eq!(r.requests[1].body, br#"{"func_type":1002}"#);
    assert_eq!(
        r.requests[2].body,
        format!(r#"{{"func_type":1003,"x":"{}"}}"#, "y".repeat(40)).as_bytes()
    );
    // the third request was sent in 7-byte pieces: it spans many packets and time
    assert!(r.requests[2].ts_last_byte > r.requests[2].ts_first_byte);
    assert_eq!(r.responses.len(), 3);
    assert_eq!(r.responses[0].body, br#"{"respcd":"0000"}"#);
    assert_eq!(r.responses[1].body, br#"{"respcd":"6000"}"#);
    assert!(r.responses[1].chunked);
    assert_eq!(r.responses[2].body, b"ok");
    for m in &r.responses {
        assert_eq!(
            m.kind,
            HttpKind::Response {
                status: 200,
                reason: "OK".into()
            }
        );
    }
    r
}

#[test]
fn tcpdump_loopback_ethernet_pcap() {
    check("lo-http.pcap", 1);
}

#[test]
fn tcpdump_any_sll2() {
    check("any-sll2-http.pcap", 276);
}

#[test]
fn dumpcap_pcapng_and_gzip() {
    let a = check("lo-http.pcapng", 1);
    let b = check("lo-http.pcapng.gz", 1);
    assert_eq!(a.ts, b.ts);
    assert_eq!(a.packets, b.packets);
}

#[test]
fn nanosecond_pcap_matches_microsecond_original() {
    let us = check("lo-http.pcap", 1);
    let ns = check("lo-http-ns.pcap", 1);
    assert_eq!(us.ts, ns.ts);
    assert!(us.ts.iter().all(|t| t % 1000 == 0));
}
