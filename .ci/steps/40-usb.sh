#!/usr/bin/env bash
# USB captures (issue 4): the sample captures in captures/usb/ must be exactly what
# the generator writes, and tshark must decode their USB layers without complaint
# (no "Malformed" packet, no error-level expert info). Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo run -q -j2 -p ecr-capture --example usb_captures -- "$tmp" >/dev/null
status=0
for f in captures/usb/*.pcap; do
    if ! cmp -s "$f" "$tmp/$(basename "$f")"; then
        echo "FAIL $f differs from what crates/ecr-capture/examples/usb_captures.rs writes"
        status=1
    fi
done
if command -v tshark >/dev/null 2>&1; then
    for f in captures/usb/*.pcap; do
        out=$(tshark -n -r "$f" -V 2>&1)
        if grep -q "Malformed\|Expert Info (Error" <<<"$out"; then
            echo "FAIL tshark reports problems in $f:"
            grep "Malformed\|Expert Info (Error" <<<"$out" | head -5
            status=1
        fi
        # Every record must decode as USB (URB).
        n=$(tshark -n -r "$f" -T fields -e frame.protocols 2>/dev/null | grep -vc '^usb' || true)
        if [ "$n" != 0 ]; then
            echo "FAIL $f: $n record(s) not decoded as USB"
            status=1
        fi
    done
else
    echo "SKIP tshark validation (tshark not installed)"
fi
[ $status = 0 ] && echo "usb captures: ok ($(ls captures/usb/*.pcap | wc -l) files)"
exit $status
