#!/usr/bin/env python3
"""Checks a report's DOM as Chromium left it after the page's script ran.

Usage: check_dom.py REPORT.html DOM.html DOM_AT_M1.html SCREENSHOT.png

The expectations come from the report's own data block (the analyzer's records):
one ladder arrow (g.arrow with id m-N) per message, one table row per transaction
and per finding, the script's status line, and with #m-1 in the address the
message view showing message 1 as `ecr-sniff analyze` prints it.
"""
import json
import struct
import sys
from html.parser import HTMLParser


class Dom(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack = []
        self.arrows = []
        self.tx_rows = 0
        self.finding_rows = 0
        self.markers = 0
        self.ladders = 0
        self.text = {}  # id -> text
        self.data = None
        self.ready = False
        self._capture = None
        self._buf = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "html" and a.get("data-ready") == "1":
            self.ready = True
        if tag == "g" and "arrow" in classes:
            self.arrows.append(a.get("id"))
        if tag == "g" and "marker" in classes:
            self.markers += 1
        if tag == "svg" and "ladder" in classes:
            self.ladders += 1
        if tag == "tr":
            table = next((t for t in reversed(self.stack) if t[0] == "table"), None)
            inbody = any(t[0] == "tbody" for t in self.stack)
            if table and inbody and table[1] == "tx":
                self.tx_rows += 1
            if table and inbody and table[1] == "findings-table":
                self.finding_rows += 1
        if a.get("id") in ("js-status", "detail-text", "detail-title", "report-data"):
            self._capture = a.get("id")
            self._buf = []
        if tag not in ("meta", "br", "input", "link"):
            self.stack.append((tag, a.get("id")))

    def handle_endtag(self, tag):
        if self._capture and self.stack and self.stack[-1][1] == self._capture:
            self.text[self._capture] = "".join(self._buf)
            self._capture = None
        while self.stack:
            t = self.stack.pop()
            if t[0] == tag:
                break

    def handle_data(self, data):
        if self._capture:
            self._buf.append(data)


def parse(path):
    d = Dom()
    with open(path, encoding="utf-8") as f:
        d.feed(f.read())
    return d


def main():
    report, dom_path, m1_path, png = sys.argv[1:5]
    src = parse(report)
    data = json.loads(src.text["report-data"])
    dom = parse(dom_path)
    problems = []
    if not dom.ready:
        problems.append("the page's script did not run (no data-ready)")
    want = sorted(m["index"] for m in data["messages"])
    got = sorted(int(a[2:]) for a in dom.arrows if a and a.startswith("m-"))
    if got != want or len(dom.arrows) != len(want):
        problems.append(f"arrows {got} != messages {want}")
    if data["truncated"]:
        # A big capture: fewer drawn, and the page says so.
        if len(want) >= data["header"]["messages"]:
            problems.append("summarised, yet every message drawn")
        if "Summarised: " not in open(dom_path, encoding="utf-8").read():
            problems.append("summarised without saying so")
    elif len(want) != data["header"]["messages"]:
        problems.append(f"{len(want)} messages drawn of {data['header']['messages']}")
    if dom.ladders != len(data["links"]):
        problems.append(f"{dom.ladders} ladders for {len(data['links'])} links")
    if dom.tx_rows != len(data["transactions"]):
        problems.append(f"{dom.tx_rows} transaction rows for {len(data['transactions'])}")
    if dom.finding_rows != len(data["findings"]):
        problems.append(f"{dom.finding_rows} finding rows for {len(data['findings'])}")
    unplaced = sum(1 for f in data["findings"] if f["arrow"] is None and f["link"] is not None)
    if dom.markers != unplaced:
        problems.append(f"{dom.markers} finding markers for {unplaced} findings off arrows")
    status = dom.text.get("js-status", "")
    expect = f"Script ran: {len(want)} arrows in {len(data['links'])} ladders, "
    if not status.startswith(expect):
        problems.append(f"status line {status!r}, expected {expect!r}...")
    m1 = parse(m1_path)
    shown = m1.text.get("detail-text", "")
    if not shown.startswith("Message 1 "):
        problems.append(f"#m-1 shows {shown[:60]!r}")
    if m1.text.get("detail-title") != "Message 1":
        problems.append(f"#m-1 title {m1.text.get('detail-title')!r}")
    with open(png, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        problems.append("no PNG screenshot")
    else:
        w, h = struct.unpack(">II", head[16:24])
        if (w, h) != (1400, 1000):
            problems.append(f"screenshot is {w}x{h}")
    for p in problems:
        print(f"  {report}: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
