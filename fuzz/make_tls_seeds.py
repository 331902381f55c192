#!/usr/bin/env python3
"""Seeds for the `tls` fuzz target from the real captures in captures/tls/: each
capture's key log and the TLS payloads of both directions (extracted with tshark),
in the target's input format. Usage: python3 fuzz/make_tls_seeds.py"""
import os
import struct
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "captures/tls")
OUT = os.path.join(ROOT, "fuzz/corpus/tls")
os.makedirs(OUT, exist_ok=True)
for name in sorted(os.listdir(SRC)):
    # emu-* captures (port 9001, NAME.keys) are not in this format.
    if not name.endswith(".pcap") or name.startswith("emu-"):
        continue
    base = name[:-5]
    keylog = open(os.path.join(SRC, base + ".keylog"), "rb").read()
    rows = subprocess.run(
        ["tshark", "-n", "-r", os.path.join(SRC, name), "-Y", "tcp.port==29001 && tcp.len>0",
         "-T", "fields", "-e", "tcp.stream", "-e", "tcp.srcport", "-e", "tcp.payload"],
        capture_output=True, text=True, check=True).stdout.split("\n")
    seed = bytes([7]) + struct.pack(">H", len(keylog)) + keylog
    for row in rows:
        if not row.strip():
            continue
        stream, sport, payload = row.split("\t")
        if stream != "0":  # one connection per seed
            continue
        b = bytes.fromhex(payload.replace(":", ""))
        seed += bytes([1 if sport == "29001" else 0]) + struct.pack(">H", len(b)) + b
    open(os.path.join(OUT, "seed-" + base), "wb").write(seed)
