#!/usr/bin/env python3
"""Compare the dissector's USB goldens (golden/usb-*.fields.txt) with the analyzer's
golden outputs in captures/usb/expected/*.jsonl: every message the analyzer reports
must appear in the dissector's row for the same packet with the same direction
(ECR -> POS or POS -> ECR), the same kind and, for requests, the same func_type and
digest verdict; and the same line-settings findings. Prints one line per capture; exit 1 on disagreement."""
import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
KIND = {"request": "request", "response": "response", "ack": "ack", "error-frame": "error"}


def rows_of(path):
    lines = [l.rstrip("\n").split("|") for l in open(path)]
    hdr, rows = lines[0], lines[1:]
    ix = {h: i for i, h in enumerate(hdr)}
    out = {}
    for r in rows:
        if len(r) != len(hdr) or not r[0].isdigit():
            continue
        out[int(r[0])] = {k: [x for x in r[ix[k]].split(",") if x] for k in
                          ("ecr.direction", "ecr.kind", "ecr.func_type", "ecr.digest.status")}
    return out


def main():
    bad = 0
    for exp in sorted(glob.glob(os.path.join(ROOT, "captures", "usb", "expected", "*.pcap.jsonl"))):
        name = os.path.basename(exp)[:-len(".pcap.jsonl")]
        gold = os.path.join(HERE, "golden", "usb-%s.fields.txt" % name)
        if not os.path.exists(gold):
            print("MISSING", name)
            bad += 1
            continue
        rows = rows_of(gold)
        problems, n = [], 0
        for line in open(exp):
            rec = json.loads(line)
            if rec.get("kind") != "message" or rec.get("role") not in KIND:
                continue
            n += 1
            p = rec["packet"]
            row = rows.get(p)
            want_dir = "0" if rec["direction"] == "ecr-to-pos" else "1"
            if row is None:
                problems.append("packet %d: no ECR row" % p)
                continue
            if want_dir not in row["ecr.direction"]:
                problems.append("packet %d: direction %s, want %s" % (p, row["ecr.direction"], want_dir))
            if KIND[rec["role"]] not in row["ecr.kind"]:
                problems.append("packet %d: kind %s, want %s" % (p, row["ecr.kind"], rec["role"]))
            if rec["role"] == "request" and rec.get("func_type") is not None:
                if str(rec["func_type"]) not in row["ecr.func_type"]:
                    problems.append("packet %d: func_type %s, want %s" % (p, row["ecr.func_type"], rec["func_type"]))
                if rec.get("digest") and rec["digest"] not in row["ecr.digest.status"]:
                    problems.append("packet %d: digest %s, want %s" % (p, row["ecr.digest.status"], rec["digest"]))
        want_ls = sum(1 for l in open(exp) if '"code":"line-settings"' in l)
        got_ls = open(gold).read().count("spec 10.9: 9600 8N1")
        if want_ls != got_ls:
            problems.append("line-settings %d, want %d" % (got_ls, want_ls))
        print("%-5s usb-%-36s %d messages%s" % ("ok" if not problems else "DIFF", name, n,
                                               "" if not problems else ": " + "; ".join(problems[:4])))
        bad += bool(problems)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
