//! Reads a capture and prints packet and byte counts: a throughput check for the
//! reader and the port pre-filter (`cargo run --release --example capture_stats -- FILE`).
use ecr_capture::source::CaptureReader;
use ecr_capture::tcp::{peek_tcp_ports, PortPeek};

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: capture_stats FILE");
        std::process::exit(2);
    };
    let start = std::time::Instant::now();
    let mut r = match CaptureReader::open(&path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(2);
        }
    };
    let (mut packets, mut bytes, mut errors, mut ecr, mut full) = (0u64, 0u64, 0u64, 0u64, 0u64);
    while let Some(p) = r.next_packet() {
        match p {
            Ok(p) => {
                packets += 1;
                bytes += p.data.len() as u64;
                match peek_tcp_ports(p.linktype, p.data) {
                    PortPeek::Tcp { src, dst }
                        if [9001, 9002].contains(&src) || [9001, 9002].contains(&dst) =>
                    {
                        ecr += 1
                    }
                    PortPeek::NeedsFullParse => full += 1,
                    _ => {}
                }
            }
            Err(e) => {
                errors += 1;
                eprintln!("{e}");
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{packets} packets ({ecr} on 9001/9002, {full} need a full parse), {bytes} data bytes, {errors} errors, {} file bytes in {secs:.3}s ({:.0} MB/s)",
        r.bytes_read(),
        r.bytes_read() as f64 / secs / 1e6
    );
}
