//! The TLS path: key log parsing, then a TLS connection fed records of both
//! directions in input-chosen pieces, with the key log's secrets (so that seeds made
//! from real captures decrypt, and mutations reach every failure path).
//!
//! Input: [step] [keylog length, u16 BE] [keylog text] then blocks of
//! [direction byte (even: client, odd: server)] [length, u16 BE] [stream bytes].
//! Seeds: fuzz/corpus/tls, made by fuzz/make_tls_seeds.py from captures/tls/.
#![no_main]
use ecr_capture::keylog::KeyLog;
use ecr_capture::tcp::StreamDir;
use ecr_capture::tls::{SessionCache, TlsConn, TlsKeys, TlsOut, MAX_RECORD};
use ecr_proto::Timestamp;
use libfuzzer_sys::fuzz_target;

fn u16_at(d: &[u8]) -> Option<(usize, &[u8])> {
    match d {
        [a, b, rest @ ..] => Some((usize::from(u16::from_be_bytes([*a, *b])), rest)),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let Some((klen, rest)) = u16_at(rest) else {
        return;
    };
    let (text, mut rest) = rest.split_at(klen.min(rest.len()));
    let mut log = KeyLog::new();
    let _ = log.add_text(text);
    let mut sessions = SessionCache::default();
    let mut conn = TlsConn::new();
    let mut out = vec![];
    let mut plain = 0usize;
    let mut input = 0usize;
    let mut ts = 0i64;
    while let Some((&dir, r)) = rest.split_first() {
        let Some((len, r)) = u16_at(r) else { break };
        let (bytes, r) = r.split_at(len.min(r.len()));
        rest = r;
        input += bytes.len();
        let dir = if dir % 2 == 0 {
            StreamDir::ClientToServer
        } else {
            StreamDir::ServerToClient
        };
        let mut keys = TlsKeys {
            keylog: &log,
            sessions: &mut sessions,
            wait: step & 0x80 != 0,
        };
        for c in bytes.chunks(usize::from(step % 64) + 1) {
            ts += 1;
            conn.feed(dir, c, Timestamp(ts), &mut keys, &mut out);
        }
        if step & 0x40 != 0 {
            conn.gap(dir);
        }
    }
    let mut keys = TlsKeys {
        keylog: &log,
        sessions: &mut sessions,
        wait: false,
    };
    conn.finish(&mut keys, &mut out);
    for o in out {
        if let TlsOut::Plain { data, .. } = o {
            // Plaintext never exceeds the ciphertext it came from.
            assert!(data.len() <= MAX_RECORD);
            plain += data.len();
        }
    }
    assert!(plain <= input);
});
