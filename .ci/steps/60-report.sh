#!/usr/bin/env bash
# HTML report (issue 16) in a real browser: Debian's headless Chromium opens reports of
# sample captures (HTTP, TCP frames, USB with fragments and timeouts), and the DOM
# after the page's script ran must hold one ladder arrow per message, the transactions
# and the findings, and show a message when its #m-N is opened. A screenshot of each
# is taken and checked to be a real image. Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

. .ci/lib.sh
install_missing chromium:chromium
cargo build -q -j2
bin="$CARGO_TARGET_DIR/debug/ecr-sniff"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

chrome() {
    # Own profile per run; no network, no updates, no first-run UI.
    timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
        --disable-component-update --disable-sync --no-first-run --disable-extensions \
        --user-data-dir="$(mktemp -d -p "$tmp")" "$@" 2>/dev/null
}

key=f46b1f08bec1f39104792cc79ec9aacd
status=0
for cap in captures/http-plain-all-functypes.pcap captures/http-digest-mismatch.pcap \
    captures/mixed-http-tcp.pcapng captures/tcp-frames-split-summary.pcap \
    captures/tcp-frames-ack-timeout.pcap captures/usb/usbmon-fragment-gap-501ms.pcap \
    captures/usb/usbmon-ack-timeout.pcap captures/usb/usbmon-two-devices.pcap \
    captures/usb/usbpcap-split-tiny-transfers.pcap captures/usb/usbmon-garbage-bytes.pcap \
    captures/emu/fault-drop-ack-serial.pcapng captures/http-tcp-gap.pcap; do
    name=$(basename "$cap")
    html="$tmp/$name.html"
    "$bin" report "$cap" --key "$key" -o "$html" 2>/dev/null
    chrome --dump-dom "file://$html" >"$tmp/$name.dom"
    chrome --dump-dom "file://$html#m-1" >"$tmp/$name.m1.dom"
    chrome --screenshot="$tmp/$name.png" --window-size=1400,1000 "file://$html" >/dev/null
    # Sorting, filtering and clicking, driven from a harness page.
    chrome --allow-file-access-from-files --virtual-time-budget=5000 \
        --dump-dom "file://$PWD/tests/browser/harness.html?report=file://$html" >"$tmp/$name.harness"
    harness=$(sed -n '/<pre id="out">/,/<\/pre>/p' "$tmp/$name.harness")
    if ! grep -q "PASS click-shows-message" <<<"$harness" || grep -q "FAIL" <<<"$harness"; then
        echo "FAIL $name: page script in use:"
        echo "$harness" | sed 's/<[^>]*>//g; s/^/  /'
        status=1
    fi
    if python3 tests/browser/check_dom.py "$html" "$tmp/$name.dom" "$tmp/$name.m1.dom" "$tmp/$name.png"; then
        echo "ok   $name"
    else
        echo "FAIL $name"
        status=1
    fi
done
# 10,000 messages (the same serial capture 420 times, as one capture): summarised,
# bounded, and still loads with its script run.
html="$tmp/big.html"
"$bin" report $(for _ in $(seq 420); do echo captures/emu/clean-serial-plain.pcapng; done) \
    --key "$key" -o "$html" 2>/dev/null
size=$(stat -c %s "$html")
start=$(date +%s)
chrome --dump-dom "file://$html" >"$tmp/big.dom"
chrome --dump-dom "file://$html#m-1" >"$tmp/big.m1.dom"
chrome --screenshot="$tmp/big.png" --window-size=1400,1000 "file://$html" >/dev/null
took=$(($(date +%s) - start))
if [ "$size" -lt $((8 << 20)) ] && python3 tests/browser/check_dom.py "$html" "$tmp/big.dom" "$tmp/big.m1.dom" "$tmp/big.png"; then
    echo "ok   10,000 messages: $((size >> 10)) KiB, three Chromium runs in ${took} s"
else
    echo "FAIL 10,000 messages ($size bytes)"
    status=1
fi
[ $status = 0 ] && echo "report in chromium ($(chromium --version 2>/dev/null)): ok"
exit $status
