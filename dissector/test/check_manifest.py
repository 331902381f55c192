#!/usr/bin/env python3
"""Compare the capture goldens with the analyzer expectations in captures/manifest.json:
same func_types (requests decoded), same digest verdicts (digest-mismatch count),
same decryption failures and the same counts of the findings that span messages
(no-response, unanswered-at-end, partial-card-refund, ack-timeout). Prints one line per capture; exit 1 on disagreement."""
import collections
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


# Findings that span messages, recognised by their expert info text.
SEQUENCE_CODES = {
    "no-response": "got no response",
    "unanswered-at-end": "still waiting for its",
    "partial-card-refund": "can only be refunded in full",
    "ack-timeout": "1000 ms",
}


def main():
    man = json.load(open(os.path.join(ROOT, "captures", "manifest.json")))
    bad = 0
    for c in man["captures"]:
        path = os.path.join(HERE, "golden", "cap-%s.fields.txt" % c["name"])
        if not os.path.exists(path):
            print("MISSING", c["name"]); bad += 1; continue
        rows = [l.rstrip("\n").split("|") for l in open(path)]
        hdr, rows = rows[0], rows[1:]
        ix = {h: i for i, h in enumerate(hdr)}
        ft = collections.Counter()
        mism = dec_fail = 0
        seq = collections.Counter()
        for r in rows:
            if len(r) != len(hdr):
                continue
            kinds = r[ix["ecr.kind"]].split(",")
            fts = [x for x in r[ix["ecr.func_type"]].split(",") if x]
            # func_type only counted for requests (a response carries none)
            for x in fts:
                ft[x] += 1
            mism += r[ix["ecr.digest.status"]].split(",").count("mismatch")
            exp = r[ix["_ws.expert.message"]]
            dec_fail += exp.count("bad padding") + exp.count("not a multiple of 16")
            for code, pattern in SEQUENCE_CODES.items():
                seq[code] += exp.count(pattern)
        e = c["expect"]
        want_ft = collections.Counter({k: v for k, v in e["func_types"].items()})
        want_m = e["findings"].get("digest-mismatch", 0)
        want_d = e["findings"].get("decrypt-failed", 0)
        ok = (ft == want_ft or not rows and not want_ft) and mism == want_m and dec_fail == want_d
        want_seq = {code: e["findings"].get(code, 0) for code in SEQUENCE_CODES}
        seq_diff = {code: (seq[code], n) for code, n in want_seq.items() if seq[code] != n}
        ok = ok and not seq_diff
        if not rows and c.get("transport") and e["func_types"]:
            ok = False
        print("%-5s %-28s func_types %s (want %s) mismatch %d/%d decrypt-failed %d/%d%s" % (
            "ok" if ok else "DIFF", c["name"], dict(ft), dict(want_ft), mism, want_m, dec_fail, want_d,
            "" if rows else " [no ECR packets]") + ("".join(" %s %d/%d" % (c, g, w) for c, (g, w) in seq_diff.items())))
        bad += 0 if ok else 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
