#!/usr/bin/env bash
# Regenerates the captures in captures/emu/ with `ecr-sniff emulate` (the terminal)
# and `ecr-sniff send` (the cash register): real traffic on the loopback interface,
# captured with tcpdump (HTTP on port 19001, raw TCP on 19002), and serial traffic
# over a pseudo-terminal written by the emulator itself in the project's serial
# capture format (D9, --serial-capture).
#
#   clean-<transport>-<dialect>.*   every func_type (pay, inquiry, receipt, refund,
#                                   summary, cancel) in one dialect over one transport
#   fault-<fault>-<transport>.*     one emulator fault each, and the refusals 4004/4006
#
# Then writes the golden `analyze --format jsonl` outputs in captures/emu/expected/,
# which `cargo test --test emulate` checks.
#
# Usage (root, for tcpdump):  bash captures/emu/regenerate.sh
# Needs: tcpdump; ports 19001 and 19002 free on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
KEY=f46b1f08bec1f39104792cc79ec9aacd
HTTP_PORT=19001
TCP_PORT=19002
OUT=captures/emu
BIN=${ECR_SNIFF:-target/release/ecr-sniff}
if [ -z "${ECR_SNIFF:-}" ]; then
    cargo build --release -j2 --quiet
fi
command -v tcpdump >/dev/null || { echo "regenerate.sh: tcpdump is needed" >&2; exit 2; }

EMU_PID=
DUMP_PID=
cleanup() {
    [ -n "$EMU_PID" ] && kill "$EMU_PID" 2>/dev/null || true
    [ -n "$DUMP_PID" ] && kill "$DUMP_PID" 2>/dev/null || true
}
trap cleanup EXIT

# start_emu LOG ARGS...: starts the emulator and waits until it has announced its
# addresses (and serial pty, if asked for).
start_emu() {
    local log=$1; shift
    "$BIN" emulate --key "$KEY" --http-port $HTTP_PORT --tcp-port $TCP_PORT "$@" >"$log" &
    EMU_PID=$!
    for _ in $(seq 100); do
        grep -q '^tcp: ' "$log" 2>/dev/null && break
        sleep 0.05
    done
    SERIAL=$(sed -n 's/^serial: //p' "$log")
}

stop_emu() {
    kill -TERM "$EMU_PID"
    wait "$EMU_PID" || true
    EMU_PID=
}

start_dump() {
    local file=$1 err
    err=$(mktemp)
    tcpdump -i lo -U --immediate-mode -Z root -n -s 0 -w "$file" \
        "tcp port $HTTP_PORT or tcp port $TCP_PORT" 2>"$err" &
    DUMP_PID=$!
    for _ in $(seq 100); do
        grep -q listening "$err" && break
        sleep 0.05
    done
    rm -f "$err"
}

stop_dump() {
    sleep 0.3
    kill -INT "$DUMP_PID"
    wait "$DUMP_PID" || true
    DUMP_PID=
}

# send TARGET ARGS...: one request; failures are part of the scenarios.
send() {
    local to=$1; shift
    "$BIN" send --to "$to" --key "$KEY" --format jsonl --timeout 5 "$@" || true
}

# every_func_type TARGET ARGS...: the six instructions, refund and receipt referring
# to the payment.
every_func_type() {
    local to=$1; shift
    local syssn
    syssn=$(send "$to" "$@" pay --amt 10.10 --channel card_payment --out-trade-no EMU-1001 |
        sed -n 's/.*"syssn":"\([0-9]*\)".*/\1/p' | head -1)
    send "$to" "$@" inquiry --out-trade-no EMU-1001 >/dev/null
    send "$to" "$@" receipt --order-id "$syssn" >/dev/null
    send "$to" "$@" refund --order-id "$syssn" >/dev/null
    send "$to" "$@" summary >/dev/null
    send "$to" "$@" cancel >/dev/null
}

rm -f "$OUT"/*.pcap "$OUT"/*.pcapng "$OUT"/expected/*.jsonl
log=$(mktemp)

for dialect in plain content-encrypted envelope-encrypted; do
    for transport in http tcp tcp-frames; do
        file="$OUT/clean-$transport-$dialect.pcap"
        echo "== $file"
        start_emu "$log"
        start_dump "$file"
        case $transport in
            http) every_func_type "http://127.0.0.1:$HTTP_PORT" --dialect $dialect ;;
            tcp) every_func_type "tcp://127.0.0.1:$TCP_PORT" --dialect $dialect ;;
            tcp-frames) every_func_type "tcp://127.0.0.1:$TCP_PORT" --dialect $dialect --tcp-framing frames ;;
        esac
        stop_dump
        stop_emu
    done
    file="$OUT/clean-serial-$dialect.pcapng"
    echo "== $file"
    start_emu "$log" --no-http --no-tcp --serial pty --serial-capture "$file"
    every_func_type "serial:$SERIAL" --dialect $dialect
    stop_emu
done

# fault_net NAME FAULT TRANSPORT: one payment under a fault, captured with tcpdump.
fault_net() {
    local name=$1 fault=$2 transport=$3
    local file="$OUT/fault-$name-$transport.pcap"
    echo "== $file"
    start_emu "$log" --fault "$fault"
    start_dump "$file"
    case $transport in
        http) send "http://127.0.0.1:$HTTP_PORT" pay --amt 25 --channel wx --out-trade-no EMU-F >/dev/null ;;
        tcp) send "tcp://127.0.0.1:$TCP_PORT" pay --amt 25 --channel wx --out-trade-no EMU-F >/dev/null ;;
    esac
    stop_dump
    stop_emu
}

# fault_serial NAME FAULT: one payment under a fault on the serial line.
fault_serial() {
    local name=$1 fault=$2
    local file="$OUT/fault-$name-serial.pcapng"
    echo "== $file"
    start_emu "$log" --no-http --no-tcp --serial pty --serial-capture "$file" --fault "$fault"
    send "serial:$SERIAL" --ack-timeout 3000 pay --amt 25 --channel wx --out-trade-no EMU-F >/dev/null
    sleep 0.5
    stop_emu
}

fault_net wrong-digest wrong-digest http
fault_net wrong-key wrong-key http
fault_net close-early close-early http
fault_net close-early close-early tcp
fault_net corrupt corrupt http
fault_net split split=650 tcp
fault_serial drop-ack drop-ack
fault_serial delay-ack delay-ack=1300
fault_serial split split=650
fault_serial corrupt corrupt
fault_serial wrong-key wrong-key
fault_serial close-early close-early

# Refusals: a GET (4004), an unknown channel and a refund without orderId (4006),
# an unknown order (4005).
file="$OUT/fault-refusals-http.pcap"
echo "== $file"
start_emu "$log"
start_dump "$file"
send "http://127.0.0.1:$HTTP_PORT" --method GET summary >/dev/null
send "http://127.0.0.1:$HTTP_PORT" pay --amt 1 --channel bitcoin >/dev/null
send "http://127.0.0.1:$HTTP_PORT" --json '{"func_type":1002}' >/dev/null
send "http://127.0.0.1:$HTTP_PORT" inquiry --order-id 42 >/dev/null
stop_dump
stop_emu
rm -f "$log"

echo "== golden outputs"
for f in "$OUT"/*.pcap "$OUT"/*.pcapng; do
    "$BIN" analyze "$f" --key "$KEY" --http-port $HTTP_PORT --tcp-port $TCP_PORT --format jsonl \
        >"$OUT/expected/$(basename "$f").jsonl"
done
ls -l "$OUT"
