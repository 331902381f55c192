//! `ecr-sniff emulate` under slow and silent peers (issue 11 item 6) and idle
//! (issue 12 item 12), with real sockets on 127.0.0.1:
//!
//! - 200 slowloris connections on the HTTP port and 100 silent ones on the TCP
//!   port do not keep a normal request from being answered within a second;
//! - header, body and idle timeouts close what dawdles (408 for late headers);
//! - at --max-connections the connection idle longest is closed to make room;
//! - an idle emulator uses no CPU (utime + stime from /proc over 3 s);
//! - a megabyte dribbled onto the TCP port in small segments costs little CPU
//!   (the emulator's text framing is linear).
//!
//! Every count, wait and time here is bounded.

mod common;
use common::Emu;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ecr_proto::cipher::PosKey;
use ecr_proto::envelope::{build_request, RequestDialect};
use ecr_proto::value::Value;

const KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";

/// An emulator with the samples' key (see `common::Emu`).
fn emulator(extra: &[&str]) -> Emu {
    Emu::start(KEY, extra)
}

fn inquiry() -> Vec<u8> {
    let v = Value::parse_json(br#"{"func_type":4001,"out_trade_no":"X1"}"#).unwrap();
    build_request(
        RequestDialect::Plain,
        v.as_object().unwrap(),
        &PosKey::new(KEY).unwrap(),
    )
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// One HTTP request on a new connection: the status line and how long it took.
fn http_request(addr: &str) -> (String, Duration) {
    let body = inquiry();
    let t0 = Instant::now();
    let mut s = connect(addr);
    write!(
        s,
        "POST /api/pos/inquiry HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    (
        answer.lines().next().unwrap_or("").to_string(),
        t0.elapsed(),
    )
}

/// One TCP text request (newline framing): the answer line and the time taken.
fn tcp_request(addr: &str) -> (String, Duration) {
    let t0 = Instant::now();
    let mut s = connect(addr);
    s.write_all(&inquiry()).unwrap();
    s.write_all(b"\n").unwrap();
    let mut line = String::new();
    let _ = BufReader::new(s).read_line(&mut line);
    (line, t0.elapsed())
}

#[test]
fn slow_and_silent_peers_do_not_block_a_normal_request() {
    let emu = emulator(&[]);
    // 200 slowloris clients: a request line and part of the headers, then a byte
    // now and then; 100 connections on the TCP port that never send anything.
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut s = connect(&emu.http);
            write!(s, "POST /api/pos/pay HTTP/1.1\r\nHost: slow{i}\r\nX-a: ").unwrap();
            s
        })
        .collect();
    let silent: Vec<TcpStream> = (0..100).map(|_| connect(&emu.tcp)).collect();
    std::thread::sleep(Duration::from_millis(300));
    for s in &mut slow {
        s.write_all(b"a").unwrap();
    }
    for round in 0..3 {
        let (status, took) = http_request(&emu.http);
        assert_eq!(status, "HTTP/1.1 200 OK", "round {round}");
        assert!(took < Duration::from_secs(1), "HTTP answer took {took:?}");
        let (line, took) = tcp_request(&emu.tcp);
        assert!(line.contains("\"respcd\""), "round {round}: {line:?}");
        assert!(took < Duration::from_secs(1), "TCP answer took {took:?}");
        for s in &mut slow {
            s.write_all(b"b").unwrap();
        }
    }
    // Nobody was turned away or closed meanwhile (all limits are far off).
    let log = emu.log();
    assert!(
        !log.iter()
            .any(|l| l.contains("closed:") || l.contains("refused")),
        "{log:#?}"
    );
    drop((slow, silent));
}

#[test]
fn timeouts_close_what_dawdles() {
    let emu = emulator(&[
        "--header-timeout",
        "300ms",
        "--body-timeout",
        "400ms",
        "--idle-timeout",
        "600ms",
    ]);
    // Headers a byte at a time, every 100 ms: 408 after the header timeout.
    let mut slow = connect(&emu.http);
    let t0 = Instant::now();
    let mut got = vec![];
    for b in b"POST /api/pos/pay HTTP/1.1\r\nHost: x\r\n".iter() {
        if slow.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        slow.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 256];
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        slow.set_nonblocking(false).unwrap();
        if t0.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let took = t0.elapsed();
    let got = String::from_utf8_lossy(&got).into_owned();
    assert!(got.starts_with("HTTP/1.1 408 "), "{got:?}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );

    // A body that stops short of its Content-Length: 408 after the body timeout.
    let mut s = connect(&emu.http);
    s.write_all(b"POST /api/pos/pay HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\"")
        .unwrap();
    let mut answer = String::new();
    let t0 = Instant::now();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));

    // Silent connections are closed after the idle timeout, on both ports; so is a
    // TCP message that never ends.
    for (addr, what) in [
        (&emu.http, "http"),
        (&emu.tcp, "tcp"),
        (&emu.tcp, "tcp part"),
    ] {
        let mut s = connect(addr);
        if what == "tcp part" {
            s.write_all(b"{\"content\":").unwrap();
        }
        let t0 = Instant::now();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        let took = t0.elapsed();
        assert_eq!(n, 0, "{what}: closed without an answer");
        assert!(
            took >= Duration::from_millis(350) && took < Duration::from_secs(2),
            "{what}: closed after {took:?}"
        );
    }
    std::thread::sleep(Duration::from_millis(100));
    let log = emu.log().join("\n");
    assert!(
        log.contains("request headers not complete within 0.3 s"),
        "{log}"
    );
    assert!(
        log.contains("request body not complete within 0.4 s"),
        "{log}"
    );
    assert!(log.contains("idle for 0.6 s: connection closed"), "{log}");
    assert!(log.contains("message not complete within 0.4 s"), "{log}");
    // A normal request is still answered.
    assert_eq!(http_request(&emu.http).0, "HTTP/1.1 200 OK");
}

#[test]
fn when_full_the_connection_idle_longest_makes_room() {
    let emu = emulator(&["--max-connections", "4"]);
    let mut idle: Vec<TcpStream> = vec![];
    for _ in 0..4 {
        idle.push(connect(&emu.tcp));
        std::thread::sleep(Duration::from_millis(50));
    }
    let (line, took) = tcp_request(&emu.tcp);
    assert!(line.contains("\"respcd\""), "{line:?}");
    assert!(took < Duration::from_secs(1));
    // The first one (idle longest) was closed; the others are still open.
    let mut buf = [0u8; 8];
    assert_eq!(idle[0].read(&mut buf).unwrap_or(99), 0);
    idle[1]
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(
        idle[1].read(&mut buf).is_err(),
        "still open: the read times out"
    );
    let log = emu.log().join("\n");
    assert!(log.contains("closed: the connection idle longest"), "{log}");
}

#[test]
fn idle_emulator_uses_no_cpu() {
    let emu = emulator(&["--serial", "pty"]);
    // Let it settle, with one open idle connection on each port.
    let _h = connect(&emu.http);
    let _t = connect(&emu.tcp);
    std::thread::sleep(Duration::from_millis(500));
    let before = emu.cpu_ticks();
    std::thread::sleep(Duration::from_secs(3));
    let used = emu.cpu_ticks() - before;
    // The emulator that polled every 20-100 ms used 2 ticks in 3 s.
    assert!(used <= 1, "{used} clock ticks of CPU in 3 s of idling");
}

#[test]
fn a_megabyte_dribbled_onto_the_tcp_port_costs_little_cpu() {
    let emu = emulator(&[]);
    let before = emu.cpu_ticks();
    let mut s = connect(&emu.tcp);
    s.set_nodelay(true).unwrap();
    // 1 MB of Base64 text without a newline, in 100-byte writes, then a newline.
    let chunk = b"QUJD".repeat(25);
    for _ in 0..10_000 {
        s.write_all(&chunk).unwrap();
    }
    s.write_all(b"\n").unwrap();
    let mut line = String::new();
    let _ = BufReader::new(s).read_line(&mut line);
    assert!(line.contains("\"respcd\""), "{line:?}");
    let used = emu.cpu_ticks() - before;
    // Once through the bytes (no rescans): well under a second of CPU even in a
    // debug build; the quadratic framer took seconds.
    assert!(used < 100, "{used} clock ticks of CPU for 1 MB");
}

#[test]
fn oversized_requests_are_refused_at_once() {
    // A body announced beyond 1 MiB is refused before any of it is read, so a
    // connection cannot make the emulator hold more than that.
    let emu = emulator(&[]);
    let mut s = connect(&emu.http);
    s.write_all(b"POST /api/pos/pay HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer:?}");
    std::thread::sleep(Duration::from_millis(100));
    let log = emu.log().join("\n");
    assert!(log.contains("exceeds the limit of 1048576"), "{log}");
}
