//! Writes the crafted hostile captures of issue 11 at full size (or scaled by
//! `--scale`), for `benches/hostile.sh` and for fuzz seeds:
//!
//! ```sh
//! cargo run --release -p ecr-capture --example hostile_captures -- OUT_DIR [--scale 0.01]
//! ```
//!
//! Prints one line per file: its name and size in bytes.
use std::path::PathBuf;

use ecr_capture::craft::{self, TextShape};

/// Builds one capture's bytes.
type Maker<'a> = Box<dyn Fn() -> Vec<u8> + 'a>;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: hostile_captures OUT_DIR [--scale FACTOR]");
        std::process::exit(2);
    };
    let mut scale = 1.0f64;
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().and_then(|v| v.parse::<f64>().ok())) {
            ("--scale", Some(s)) if s > 0.0 => scale = s,
            _ => {
                eprintln!("hostile_captures: expected --scale FACTOR (a positive number)");
                std::process::exit(2);
            }
        }
    }
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("hostile_captures: cannot create {}: {e}", dir.display());
        std::process::exit(2);
    }
    let n = |full: usize| ((full as f64 * scale).round() as usize).max(1);
    let files: Vec<(&str, Maker<'_>)> = vec![
        // Issue 11 item 1: 1000 connections x 127 open refs (1.8 MB).
        (
            "open_refs.pcap",
            Box::new(move || craft::open_refs(n(1000), 127)),
        ),
        // Requests with every ref value from both sides, never answered, on more
        // connections than the default budget tracks (found after issue 15).
        (
            "waiting_refs.pcap",
            Box::new(move || craft::waiting_refs(n(5000))),
        ),
        // Requests whose 1 MB bodies are arrays of empty objects (found after
        // issue 15): a tree of hundreds of thousands of values per message.
        (
            "tiny_values.pcap",
            Box::new(move || craft::tiny_values(n(60), 1 << 20)),
        ),
        // A pcapng of 65,000 serial links, one per interface (found after issue 15).
        (
            "serial_links.pcapng",
            Box::new(move || craft::serial_links(n(65_000) as u32)),
        ),
        // Item 2: 1.7 MB of Base64 in 100-byte segments (analysed with a key).
        (
            "base64_100.pcap",
            Box::new(move || craft::text_stream(TextShape::Base64, n(1_700_000), 100)),
        ),
        // Item 2: 7.7 MB of unterminated JSON in 10-byte segments.
        (
            "open_json_10.pcap",
            Box::new(move || craft::text_stream(TextShape::OpenJson, n(7_700_000), 10)),
        ),
        // Item 3: pipelined requests never answered on one connection (the issue
        // used 297 MB; 200,000 requests make about 60 MB).
        (
            "pipelined.pcap",
            Box::new(move || craft::pipelined_unanswered(n(200_000), 40)),
        ),
        // Item 3: 2,000 payments with 30 KB ids.
        (
            "payments.pcap",
            Box::new(move || craft::payments(n(2000), 30_000)),
        ),
        // More connections than the default limit, each with an unfinished request.
        (
            "connections.pcap",
            Box::new(move || craft::unfinished_connections(n(50_000))),
        ),
        // IP fragments that never complete.
        (
            "fragments.pcap",
            Box::new(move || craft::fragment_flood(n(50_000))),
        ),
        // One-byte segments ahead of a hole.
        (
            "out_of_order.pcap",
            Box::new(move || craft::out_of_order_flood(n(500_000))),
        ),
        // TLS handshakes that never finish: 115 KB held per connection.
        (
            "tls_handshakes.pcap",
            Box::new(move || craft::tls_unfinished_handshakes(n(600))),
        ),
        // ClientHellos with 4 KiB tickets and long server names, on more
        // connections than the default budget tracks.
        (
            "tls_facts.pcap",
            Box::new(move || craft::tls_hellos_with_large_facts(n(6000))),
        ),
    ];
    for (name, make) in files {
        let bytes = make();
        let path = dir.join(name);
        if let Err(e) = std::fs::write(&path, &bytes) {
            eprintln!("hostile_captures: cannot write {}: {e}", path.display());
            std::process::exit(2);
        }
        println!("{name} {}", bytes.len());
    }
}
