#!/usr/bin/env python3
"""Builds a large pcap of mixed traffic in which ECR flows are a small part, for the
end-to-end performance run documented in README.md.

    python3 benches/make_big_capture.py /tmp/big.pcap --size-mb 1024

Noise: Ethernet/IPv4/TCP segments of 60..1500 bytes between random hosts on ports 443,
80 and 22, plus some UDP. Every ~2000 noise packets the packets of one of the sample
captures in captures/ (all Ethernet, 9001/9002) are inserted with shifted timestamps,
so the analyzer has real ECR conversations to decode among the noise.
"""
import argparse
import glob
import os
import random
import struct


def read_pcap(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = data[:4]
    if magic == b"\xd4\xc3\xb2\xa1":
        endian, nano = "<", False
    elif magic == b"\x4d\x3c\xb2\xa1":
        endian, nano = "<", True
    else:
        return None
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    if linktype != 1:
        return None
    pkts = []
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, orig = struct.unpack(endian + "IIII", data[off:off + 16])
        off += 16
        usec = frac // 1000 if nano else frac
        pkts.append((sec + usec / 1e6, data[off:off + incl], orig))
        off += incl
    t0 = pkts[0][0] if pkts else 0
    return [(t - t0, d, o) for t, d, o in pkts]


def checksum_free_ipv4(src, dst, proto, payload_len):
    total = 20 + payload_len
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, proto, 0, src, dst)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    here = os.path.dirname(os.path.abspath(__file__))
    ecr = [p for p in (read_pcap(f) for f in sorted(glob.glob(os.path.join(here, "..", "captures", "*.pcap")))) if p]
    payloads = [bytes(rnd.getrandbits(8) for _ in range(1460)) for _ in range(8)]
    target = args.size_mb << 20
    t = 1_700_000_000.0
    written = 24
    n = 0
    ecr_pkts = 0
    with open(args.out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        def put(ts, frame, orig=None):
            nonlocal written
            sec = int(ts)
            usec = int((ts - sec) * 1e6)
            f.write(struct.pack("<IIII", sec, usec, len(frame), orig or len(frame)))
            f.write(frame)
            written += 16 + len(frame)
        eth = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"
        while written < target:
            n += 1
            t += 0.0001
            src = bytes([10, rnd.randrange(256), rnd.randrange(256), rnd.randrange(1, 255)])
            dst = bytes([10, rnd.randrange(256), rnd.randrange(256), rnd.randrange(1, 255)])
            size = rnd.choice([40, 200, 600, 1200, 1460, 1460, 1460])
            body = payloads[n % len(payloads)][:size]
            if n % 10 == 0:
                udp = struct.pack("!HHHH", rnd.randrange(1024, 65535), 53, 8 + size, 0) + body
                put(t, eth + checksum_free_ipv4(src, dst, 17, len(udp)) + udp)
            else:
                port = rnd.choice([443, 443, 80, 22])
                tcp = struct.pack("!HHIIBBHHH", rnd.randrange(1024, 65535), port, n, 0, 0x50, 0x18, 65535, 0, 0) + body
                put(t, eth + checksum_free_ipv4(src, dst, 6, len(tcp)) + tcp)
            if n % 2000 == 0 and ecr:
                conv = ecr[(n // 2000) % len(ecr)]
                base = t
                for dt, frame, orig in conv:
                    put(base + dt, frame, orig)
                    ecr_pkts += 1
                t = base + (conv[-1][0] if conv else 0) + 0.001
    print(f"{args.out}: {written >> 20} MiB, {n} noise packets, {ecr_pkts} ECR packets")


if __name__ == "__main__":
    main()
