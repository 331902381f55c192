//! Writes the dense benchmark capture of issue 15 and its key file.
//!
//!     cargo run --release -p ecr-emu --example dense_capture -- --size-mb 256 /tmp/dense.pcap
//!
//! writes /tmp/dense.pcap (every packet ECR traffic: HTTP keep-alive and close,
//! 9002 frames, json-value and newline framings, three dialects, 32 terminals) and
//! /tmp/dense.pcap.keys (`ADDRESS=KEY` per terminal), then prints what it wrote.
//! `--concurrent 4096` makes the same traffic as 4096 one-transaction connections
//! open at the same time (then the next 4096), for the cost of many connections.
//! Analyse it with
//!
//!     ecr-sniff analyze --key-file /tmp/dense.pcap.keys --format jsonl /tmp/dense.pcap

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::process::ExitCode;

use ecr_emu::dense::{key_file, write_dense, DenseOptions};

const USAGE: &str = "usage: dense_capture [--size-mb N (default 256)] [--terminals N (default 32)]
                     [--concurrent N (default 0)] OUT.pcap

  --concurrent N  keep N one-transaction connections open at the same time (the N
                  handshakes, then the N requests, the N responses and the N closes,
                  then the next N), shared out over the terminals; 0: each cash
                  register keeps one connection and the registers take turns";

fn main() -> ExitCode {
    let mut opts = DenseOptions {
        size_bytes: 256 << 20,
        terminals: 32,
        concurrent: 0,
    };
    let mut out: Option<PathBuf> = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        let a = a.to_string_lossy().into_owned();
        let mut number = |name: &str| -> Option<u64> {
            let v = args
                .next()
                .and_then(|v| v.to_str().and_then(|s| s.parse().ok()));
            if v.is_none() {
                eprintln!("dense_capture: {name} needs a whole number\n{USAGE}");
            }
            v
        };
        match a.as_str() {
            "--size-mb" => match number("--size-mb") {
                Some(mb) => opts.size_bytes = mb.saturating_mul(1 << 20),
                None => return ExitCode::from(2),
            },
            "--terminals" => match number("--terminals") {
                Some(n @ 1..=250) => opts.terminals = n as u8,
                _ => {
                    eprintln!("dense_capture: --terminals takes 1 to 250");
                    return ExitCode::from(2);
                }
            },
            "--concurrent" => match number("--concurrent") {
                Some(n @ 0..=1_000_000) => opts.concurrent = n as u32,
                Some(_) => {
                    eprintln!("dense_capture: --concurrent takes 0 to 1000000");
                    return ExitCode::from(2);
                }
                None => return ExitCode::from(2),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ if out.is_none() && !a.starts_with('-') => out = Some(PathBuf::from(a)),
            _ => {
                eprintln!("dense_capture: unexpected argument {a:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(out) = out else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let mut keys = out.clone().into_os_string();
    keys.push(".keys");
    let keys = PathBuf::from(keys);
    if let Err(e) = std::fs::write(&keys, key_file(&opts)) {
        eprintln!("dense_capture: cannot write {}: {e}", keys.display());
        return ExitCode::FAILURE;
    }
    let file = match File::create(&out) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("dense_capture: cannot create {}: {e}", out.display());
            return ExitCode::FAILURE;
        }
    };
    match write_dense(BufWriter::with_capacity(1 << 20, file), &opts) {
        Ok(s) => {
            println!(
                "{}: {} bytes, {} packets, {} messages, {} transactions, {} connections; keys in {}",
                out.display(),
                s.bytes,
                s.packets,
                s.messages,
                s.transactions,
                s.connections,
                keys.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dense_capture: writing {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}
