#!/usr/bin/env bash
# GUI smoke test of the Wireshark dissector (issue 18): Wireshark (Qt) under Xvfb opens
# a USB capture with dissector/ecr.lua and a display filter, its main window appears
# with no Lua error dialog, and a screenshot is taken (target/dissector-gui.xwd, for a
# look with `display` or `convert`). Installs wireshark-qt and xvfb when missing.
# Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
. .ci/lib.sh
install_missing wireshark:wireshark-qt xvfb-run:xvfb xauth:xauth xwininfo:x11-utils xwd:x11-apps
root=$PWD
tmp=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
printf '%s\n' f46b1f08bec1f39104792cc79ec9aacd > "$tmp/keys.txt"
mkdir -p "$tmp/home" target
cat > "$tmp/run.sh" <<SH
set -u
cd "$root"
HOME="$tmp/home" wireshark -X lua_script:${ECR_LUA:-dissector/ecr.lua} -o ecr.key_file:$tmp/keys.txt \
    -r captures/usb/usbmon-clean.pcap -Y ecr > "$tmp/wireshark.log" 2>&1 &
pid=\$!
for _ in \$(seq 1 60); do
    xwininfo -root -tree 2>/dev/null | grep -q 'usbmon-clean' && break
    sleep 0.5
done
sleep 3
xwininfo -root -tree > "$tmp/windows.txt" 2>&1
xwd -root -silent > "$root/target/dissector-gui.xwd"
kill \$pid 2>/dev/null
wait \$pid 2>/dev/null
exit 0
SH
timeout 120 xvfb-run -a -s "-screen 0 1280x800x24" bash "$tmp/run.sh"
status=0
if ! grep -q 'usbmon-clean' "$tmp/windows.txt"; then
    echo "FAIL Wireshark did not show usbmon-clean.pcap"
    status=1
fi
# A Lua error opens a dialog titled "Wireshark" next to the main window.
if grep -q '"Wireshark": ("wireshark"' "$tmp/windows.txt"; then
    echo "FAIL Wireshark opened a dialog (a Lua error?); windows:"
    grep '"' "$tmp/windows.txt" | head -5
    status=1
fi
if grep -qi 'lua' "$tmp/windows.txt" || grep -qi 'lua.*error\|error.*lua' "$tmp/wireshark.log"; then
    echo "FAIL a Lua error in Wireshark:"
    grep -i 'lua' "$tmp/windows.txt" "$tmp/wireshark.log" | head -5
    status=1
fi
if [ ! -s target/dissector-gui.xwd ]; then
    echo "FAIL no screenshot"
    status=1
fi
[ $status = 0 ] && echo "dissector GUI smoke test: ok (Wireshark $(wireshark --version 2>/dev/null | head -n 1 | awk '{print $2}'), screenshot target/dissector-gui.xwd)"
exit $status
