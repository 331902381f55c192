#!/usr/bin/env bash
# Live tap benchmark (issue 15): replays the dense capture on the loopback interface
# with tcpreplay at rising packet rates, finds the highest rate at which
# `tcpdump -i lo -w /dev/null` drops nothing, and checks that `ecr-sniff -i lo` at
# that rate drops nothing and decodes every message (its summary against `analyze`
# of the same file). ecr-sniff is run at every rate too, so the table shows where
# it starts losing packets, if it does. tcpreplay's count of packets it failed to
# send is read for every replay: a rate whose replays were not sent whole is shown
# with that count and not taken as clean (a send failure is not a capture loss).
#
#   sudo benches/live.sh
#   SIZE_MB=16 RATES="20000 80000" sudo benches/live.sh
#
# Needs root (capturing and injecting on lo), tcpdump and tcpreplay (installed with
# apt-get when missing). Not a test: the figures depend on the machine's load.
# Exits 1 when ecr-sniff loses packets or messages at tcpdump's highest clean rate.
#
# The packets are addressed to 127.0.1.0/24 and 127.0.2.0/24 with unicast Ethernet
# addresses that are not lo's (00:00:00:00:00:00): captures see them, and the IP
# layer drops them as not for this host, so nothing answers them and nothing else
# on the machine sees them. Both captures filter on those addresses, so other
# loopback traffic does not count.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-32}
RATES=${RATES:-"10000 20000 40000 80000 160000 320000"}
FILTER="tcp and (net 127.0.1.0/24 or net 127.0.2.0/24)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
if [ "$(id -u)" != 0 ]; then
    echo "live.sh: needs root (capturing and replaying on lo)" >&2
    exit 2
fi
if ! command -v tcpreplay >/dev/null || ! command -v tcpdump >/dev/null; then
    echo "== installing tcpreplay and tcpdump"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends tcpreplay tcpdump >/dev/null
fi
work=$(mktemp -d -p "${TMPDIR:-/tmp}" ecr-live.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

echo "== building (release)"
cargo build -q -j2 --release --bin ecr-sniff
cargo build -q -j2 --release -p ecr-emu --example dense_capture
bin="$CARGO_TARGET_DIR/release/ecr-sniff"
"$CARGO_TARGET_DIR/release/examples/dense_capture" --size-mb "$SIZE_MB" "$work/dense.pcap"
keys="$work/dense.pcap.keys"
field() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }
offline=$("$bin" analyze --key-file "$keys" --format jsonl "$work/dense.pcap" | tail -n 1)
want_msgs=$(field messages <<<"$offline")
want_pkts=$(field packets <<<"$offline")
echo "   offline analysis: $want_pkts packets, $want_msgs messages"

# Waits (up to 10 s) until file $1 contains $2. The file must not exist before the
# program that writes it starts (see `fresh`): a shell redirection `2>FILE &` truncates
# FILE only once the background child runs, so a stale FILE from the previous rate can
# be matched first, and the replay would then start before the capture is open. That
# race, not the capture, lost the first packets of a replay in runs 4-9 of the README.
wait_for() {
    for _ in $(seq 100); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "live.sh: timed out waiting for '$2' in $1:" >&2
    cat "$1" >&2
    return 1
}
# Removes the files $@ (the stderr logs waited on) before their writer starts.
fresh() { rm -f "$@"; }
# Stops process $1 with SIGINT and waits for it.
stop() {
    kill -INT "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
# Replays the capture on lo at $1 packets/s; prints the achieved rate and the
# packets tcpreplay could not send (its "Failed packets": neither capture can see
# those, so a run with any is not a fair test of either).
replay() {
    tcpreplay -i lo --pps="$1" "$work/dense.pcap" >"$work/replay.log" 2>&1 || {
        cat "$work/replay.log" >&2
        return 1
    }
    local rate failed
    rate=$(sed -n 's/.*Rated: .* \([0-9.]*\) pps.*/\1/p' "$work/replay.log" | head -n 1 | cut -d. -f1)
    failed=$(sed -n 's/.*Failed packets: *\([0-9]*\).*/\1/p' "$work/replay.log" | head -n 1)
    echo "${rate:-?} ${failed:-?}"
}

best=""
printf '%-10s %-10s | %-24s | %s\n' "asked pps" "sent pps" "tcpdump (got/dropped)" "ecr-sniff (packets, messages, drops)"
for rate in $RATES; do
    # tcpdump with its defaults, as a user would run it.
    fresh "$work/tcpdump.err"
    tcpdump -i lo -n -w /dev/null "$FILTER" 2>"$work/tcpdump.err" &
    tp=$!
    pids+=("$tp")
    wait_for "$work/tcpdump.err" "listening on"
    read -r sent t_fail <<<"$(replay "$rate")"
    # tcpdump hands a kernel block over 1 s after its first packet.
    sleep 1.5
    stop "$tp"
    t_got=$(sed -n 's/^\([0-9]*\) packets captured.*/\1/p' "$work/tcpdump.err")
    t_drop=$(sed -n 's/^\([0-9]*\) packets dropped by kernel.*/\1/p' "$work/tcpdump.err")

    fresh "$work/live.err"
    "$bin" -i lo --filter "$FILTER" --key-file "$keys" --format jsonl \
        >"$work/live.jsonl" 2>"$work/live.err" &
    ep=$!
    pids+=("$ep")
    wait_for "$work/live.err" "Ctrl-C to stop"
    read -r _ l_fail <<<"$(replay "$rate")"
    sleep 1
    stop "$ep"
    summary=$(tail -n 1 "$work/live.jsonl")
    l_pkts=$(field packets <<<"$summary")
    l_msgs=$(field messages <<<"$summary")
    l_drops=$(sed -n 's/.*"drops":\({[^}]*}\).*/\1/p' <<<"$summary")
    notes=""
    [ "$t_fail" = 0 ] || notes+="; tcpreplay failed to send $t_fail packets in tcpdump's run"
    [ "$l_fail" = 0 ] || notes+="; tcpreplay failed to send $l_fail packets in ecr-sniff's run"
    printf '%-10s %-10s | %-24s | %s%s\n' "$rate" "${sent:-?}" "${t_got:-?}/${t_drop:-?}" \
        "$l_pkts, $l_msgs/$want_msgs, $l_drops" "$notes"
    # A rate counts only when both replays sent every packet and tcpdump kept all.
    if [ "$t_fail" = 0 ] && [ "$l_fail" = 0 ] && [ "${t_drop:-1}" = 0 ] &&
        [ "${t_got:-0}" = "$want_pkts" ]; then
        best=$rate
        eval "best_line_$rate=\"\$l_pkts \$l_msgs \$l_drops\""
    fi
done

echo
if [ -z "$best" ]; then
    echo "tcpdump dropped packets at every rate tried: no clean rate to compare with"
    exit 1
fi
eval "read -r b_pkts b_msgs b_drops <<<\"\$best_line_$best\""
echo "highest rate at which tcpdump -i lo -w /dev/null dropped nothing: $best packets/s"
echo "ecr-sniff -i lo at $best packets/s: $b_pkts of $want_pkts packets, $b_msgs of $want_msgs messages, drops $b_drops"
if [ "$b_pkts" = "$want_pkts" ] && [ "$b_msgs" = "$want_msgs" ]; then
    echo "PASS: ecr-sniff kept up at tcpdump's highest clean rate"
else
    echo "FAIL: ecr-sniff lost packets or messages at tcpdump's highest clean rate"
    exit 1
fi
