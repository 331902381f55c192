#!/usr/bin/env bash
# Makes the sample captures of captures/ that the project's own Rust code produces:
# `ecr-sniff emulate` (the terminal) and `ecr-sniff send` (the cash register) over
# the loopback interface on the default ports 9001 (HTTP, HTTPS) and 9002 (TCP),
# captured with tcpdump; and, for damage no live exchange produces (a lost request,
# reordered and retransmitted segments), the `damaged_captures` example of
# ecr-capture applied to such a live capture.
#
# Every fault made live here can be reproduced by a user with the same commands.
# The captures whose exact bytes no live exchange gives (pipelining, rare body and
# key forms, the cash register's malformed frames) are crafted by the
# `crafted_captures` example of ecr-emu from the project's builders and the
# emulator's terminal; this script runs it for them too.
#
# Usage (root, for tcpdump):  bash captures/regenerate.sh [FILE...]
#   (no FILE: all of them; FILE: only these, e.g. http-tcp-gap.pcap)
# Needs: tcpdump, dumpcap (wireshark-common; the .pcapng files), gzip, and unshare (util-linux) to run in a network namespace of its own
# (without it: ports 9001 and 9002 free on 127.0.0.1, and no other traffic on them).
# Then: ECR_SNIFF_BLESS=1 cargo test --test captures   (the golden outputs), and
#       dissector/test/regen.sh                        (the dissector's goldens).
set -euo pipefail
cd "$(dirname "$0")/.."
KEY=f46b1f08bec1f39104792cc79ec9aacd
WRONG_KEY=9d8c7b6a5f4e3d2c1b0a99887766554f
OUT=captures
BIN=${ECR_SNIFF:-target/release/ecr-sniff}
if [ -z "${ECR_SNIFF:-}" ]; then
    cargo build --release -j2 --quiet
fi
CRAFT=${CRAFT:-}
if [ -z "$CRAFT" ]; then
    cargo build --release -j2 --quiet -p ecr-emu --example crafted_captures
    CRAFT=target/release/examples/crafted_captures
fi
DAMAGE=${DAMAGE:-}
if [ -z "$DAMAGE" ]; then
    cargo build --release -j2 --quiet -p ecr-capture --example damaged_captures
    DAMAGE=target/release/examples/damaged_captures
fi
command -v tcpdump >/dev/null || { echo "regenerate.sh: tcpdump is needed" >&2; exit 2; }
# In a network namespace of its own (root): a loopback interface that carries only
# this script's traffic, whatever else runs on the machine's ports 9001 and 9002.
if [ -z "${ECR_REGEN_NETNS:-}" ] && command -v unshare >/dev/null; then
    exec unshare --net env ECR_REGEN_NETNS=1 ECR_SNIFF="$BIN" DAMAGE="$DAMAGE" CRAFT="$CRAFT" bash "$0" "$@"
fi
if [ -n "${ECR_REGEN_NETNS:-}" ]; then
    ip link set lo up
fi

EMU_PID=
DUMP_PID=
TMP=$(mktemp -d)
cleanup() {
    [ -n "$EMU_PID" ] && kill "$EMU_PID" 2>/dev/null || true
    [ -n "$DUMP_PID" ] && kill "$DUMP_PID" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

# start_emu ARGS...: the terminal on 9001/9002, once it has announced its addresses.
start_emu() {
    "$BIN" emulate --key "${EMU_KEY:-$KEY}" "$@" >"$TMP/emu.log" &
    EMU_PID=$!
    for _ in $(seq 100); do
        grep -q '^tcp: ' "$TMP/emu.log" 2>/dev/null && return
        sleep 0.05
    done
    echo "regenerate.sh: the emulator did not start (ports 9001/9002 busy?)" >&2
    exit 1
}

stop_emu() {
    kill -TERM "$EMU_PID"
    wait "$EMU_PID" || true
    EMU_PID=
}

# start_dump FILE [TCPDUMP ARGS...]
start_dump() {
    local file=$1; shift
    tcpdump -i lo -U --immediate-mode -Z root -n -s 0 "$@" -w "$file" \
        "tcp port 9001 or tcp port 9002 or tcp port 19002" 2>"$TMP/dump.err" &
    DUMP_PID=$!
    for _ in $(seq 100); do
        grep -q listening "$TMP/dump.err" && return
        sleep 0.05
    done
}

# start_dumpcap FILE: the same with dumpcap, which writes pcapng.
start_dumpcap() {
    local file=$1; shift
    dumpcap -i lo -q -w "$file" -f "tcp port 9001 or tcp port 9002" 2>"$TMP/dump.err" &
    DUMP_PID=$!
    for _ in $(seq 100); do
        grep -q -i "capturing on" "$TMP/dump.err" && break
        sleep 0.05
    done
    sleep 0.2
}

stop_dumpcap() { stop_dump; }

stop_dump() {
    sleep 0.3
    kill -INT "$DUMP_PID"
    wait "$DUMP_PID" || true
    DUMP_PID=
}

HTTP=http://127.0.0.1:9001
TCP=tcp://127.0.0.1:9002

# send TARGET ARGS...: one request; refusals are part of the scenarios.
send() {
    local to=$1; shift
    "$BIN" send --to "$to" --key "$KEY" --format jsonl --timeout 5 "$@" || true
}

# Each scenario: a function named after its file, writing "$1".
scenario_http_wrong_method() {
    start_emu; start_dump "$1"
    send $HTTP --dialect plain --method GET pay --amt 10.10 --channel wx --out-trade-no ECR-GET >/dev/null
    stop_dump; stop_emu
}

scenario_http_unknown_channel() {
    start_emu; start_dump "$1"
    send $HTTP pay --amt 5 --channel bitcoin --out-trade-no ECR-BTC >/dev/null
    stop_dump; stop_emu
}

scenario_http_missing_field() {
    start_emu; start_dump "$1"
    send $HTTP --json '{"func_type":1001,"channel":"wx","out_trade_no":"ECR-NOAMT"}' >/dev/null
    stop_dump; stop_emu
}

scenario_http_path_mismatch() {
    start_emu; start_dump "$1"
    local syssn
    syssn=$(send $HTTP pay --amt 20 --channel wx --out-trade-no ECR-PATH |
        sed -n 's/.*"syssn":"\([0-9]*\)".*/\1/p' | head -1)
    send $HTTP --path /api/pos/trade refund --order-id "$syssn" >/dev/null
    stop_dump; stop_emu
}

# Signing mistakes (the digests of vectors.json signing_mistakes, AES-128 key): the
# content of the vectors, the digest given with `send --digest`; the terminal answers 4003.
KEY_128=a1b2c3d4e5f6a7b8
VECTOR_CONTENT='{"func_type":1001,"amt":10.1,"channel":"card_payment","out_trade_no":"456799999999"}'
mistake() {
    EMU_KEY=$KEY_128 start_emu; start_dump "$1"
    "$BIN" send --to $HTTP --key $KEY_128 --dialect plain --format jsonl --timeout 5 \
        --digest "$2" --json "$VECTOR_CONTENT" >/dev/null || true
    stop_dump; stop_emu
}
scenario_http_digest_mismatch_double_quotes() { mistake "$1" 4472fcdc61975ab051cabe0cf152ab00; }
scenario_http_digest_mismatch_unsorted_keys() { mistake "$1" 94653711566c4cd076ecd958f4dce23a; }
scenario_http_digest_mismatch_amount_reformatted() { mistake "$1" f9c08aa7a68521b7c7a8f55587cea692; }
scenario_http_digest_mismatch_key_not_appended() { mistake "$1" 4c56244027ce9b14d1bcbeeccbd95192; }

# A digest that matches no known mistake (made with another key).
scenario_http_digest_mismatch() {
    start_emu; start_dump "$1"
    send $HTTP --dialect plain --digest 5d41402abc4b2a76b9719d911017c592 \
        pay --amt 10.10 --channel wx --out-trade-no ECR-BADSIG >/dev/null
    stop_dump; stop_emu
}

# Latency: a payment the customer takes 2.5 s over (`emulate --delay 2.5`), then a
# quick inquiry.
scenario_http_slow_terminal() {
    start_emu --delay 2.5; start_dump "$1"
    local syssn
    syssn=$(send $HTTP pay --amt 33 --channel card_payment --out-trade-no ECR-SLOW |
        sed -n 's/.*"syssn":"\([0-9]*\)".*/\1/p' | head -1)
    send $HTTP inquiry --order-id "$syssn" >/dev/null
    stop_dump; stop_emu
}

# JSON that is no ECR envelope at all.
scenario_http_bad_envelope() {
    start_emu; start_dump "$1"
    send $HTTP --raw-body '{"amount":"10.10","type":"sale","ref":"456799999999","currency":"HKD"}' \
        pay --amt 10.10 --channel wx >/dev/null
    stop_dump; stop_emu
}

# A PayMe payment allowed 180 s (spec: at most 120).
scenario_http_payme_timeout() {
    start_emu; start_dump "$1"
    send $HTTP pay --amt 18 --channel payme --payment-timeout 180 --out-trade-no ECR-PAYME >/dev/null
    stop_dump; stop_emu
}

# 0x2f6e frames on a port the analyzer does not watch by default.
scenario_tcp_frames_other_port_19002() {
    start_emu --tcp-port 19002; start_dump "$1"
    send tcp://127.0.0.1:19002 --tcp-framing frames pay --amt 10.10 --channel wx \
        --out-trade-no ECR-19002 >/dev/null
    stop_dump; stop_emu
}

scenario_tcp_unknown_func_type() {
    start_emu; start_dump "$1"
    send $TCP --json '{"func_type":9999}' >/dev/null
    stop_dump; stop_emu
}

scenario_http_decrypt_failed() {
    start_emu; start_dump "$1"
    "$BIN" send --to $HTTP --key "$WRONG_KEY" --format jsonl --timeout 5 \
        pay --amt 12 --channel wx --out-trade-no ECR-WRONGKEY >/dev/null || true
    stop_dump; stop_emu
}

scenario_http_no_response() {
    start_emu --fault close-early; start_dump "$1"
    send $HTTP pay --amt 25 --channel wx --out-trade-no ECR-NORESP >/dev/null
    stop_dump; stop_emu
}

scenario_http_unanswered_at_end() {
    start_emu --delay 10; start_dump "$1"
    "$BIN" send --to $HTTP --key "$KEY" --timeout 5 \
        pay --amt 30 --channel card_payment --out-trade-no ECR-WAIT >/dev/null 2>&1 &
    local pid=$!
    sleep 1
    stop_dump
    kill "$pid" 2>/dev/null || true
    wait "$pid" || true
    stop_emu
}

scenario_https_tls_encrypted() {
    start_emu --tls; start_dump "$1"
    send https://127.0.0.1:9001 --insecure pay --amt 10.10 --channel wx --out-trade-no ECR-TLS >/dev/null
    stop_dump; stop_emu
}

scenario_http_truncated_snaplen80() {
    start_emu; start_dump "$1" -s 80
    send $HTTP --dialect plain pay --amt 10.10 --channel wx --out-trade-no ECR-SNAP >/dev/null
    stop_dump; stop_emu
}

scenario_http_reordered_retransmitted() {
    start_emu; start_dump "$TMP/live.pcap"
    send $HTTP --dialect plain pay --amt 10.10 --channel wx --out-trade-no ECR-REORDER >/dev/null
    stop_dump; stop_emu
    "$DAMAGE" reorder "$TMP/live.pcap" "$1"
}

scenario_http_tcp_gap() {
    start_emu; start_dump "$TMP/live.pcap"
    local syssn
    syssn=$(send $HTTP pay --amt 40 --channel wx --out-trade-no ECR-GAP |
        sed -n 's/.*"syssn":"\([0-9]*\)".*/\1/p' | head -1)
    send $HTTP inquiry --order-id "$syssn" >/dev/null
    send $HTTP receipt --order-id "$syssn" >/dev/null
    stop_dump; stop_emu
    "$DAMAGE" gap "$TMP/live.pcap" "$1" 2
}

# syssn_of: the syssn of a `send --format jsonl` answer on standard input.
syssn_of() { sed -n 's/.*"syssn":"\([0-9]*\)".*/\1/p' | head -1; }

# Every func_type in the plain dialect over HTTP, one connection each; the cancel
# is answered 6001 (cancelled, information).
scenario_http_plain_all_functypes() {
    start_emu; start_dump "$1"
    local syssn
    syssn=$(send $HTTP --dialect plain pay --amt 10.1 --channel card_payment --out-trade-no ECR-PLAIN | syssn_of)
    send $HTTP --dialect plain inquiry --order-id "$syssn" >/dev/null
    send $HTTP --dialect plain receipt --order-id "$syssn" >/dev/null
    send $HTTP --dialect plain refund --order-id "$syssn" >/dev/null
    send $HTTP --dialect plain summary >/dev/null
    send $HTTP --dialect plain cancel >/dev/null
    stop_dump; stop_emu
}

# IPv6 loopback with nanosecond timestamps (tcpdump --time-stamp-precision nano).
scenario_http_plain_ipv6_nanosecond() {
    start_emu --listen ::1; start_dump "$1" --time-stamp-precision nano
    local syssn
    syssn=$(send "http://[::1]:9001" --dialect plain pay --amt 45.0 --channel fps --out-trade-no ECR-V6 | syssn_of)
    send "http://[::1]:9001" --dialect plain inquiry --order-id "$syssn" >/dev/null
    stop_dump; stop_emu
}

# TCP 9002 newline framing (D6); the cancel ends with a half-close instead.
scenario_tcp_newline_envelope_encrypted() {
    start_emu; start_dump "$1"
    local syssn
    syssn=$(send $TCP pay --amt 56.0 --channel union --out-trade-no ECR-NL | syssn_of)
    send $TCP inquiry --order-id "$syssn" >/dev/null
    send $TCP receipt --order-id "$syssn" >/dev/null
    send $TCP --tcp-framing half-close cancel >/dev/null
    stop_dump; stop_emu
}

# Linux cooked v2 headers (tcpdump -i any -y LINUX_SLL2), then gzip.
scenario_tcp_newline_any_interface_sll2() {
    start_emu; start_dump "$TMP/sll2.pcap" -i any -y LINUX_SLL2
    local syssn
    syssn=$(send $TCP pay --amt 23.4 --channel unionpay_card --out-trade-no ECR-SLL2 | syssn_of)
    send $TCP inquiry --order-id "$syssn" >/dev/null
    stop_dump; stop_emu
    gzip -9 -n -c "$TMP/sll2.pcap" >"$1"
}

# Refusals by the terminal: the emulator restarted with other faults between them.
scenario_http_error_responses() {
    start_dump "$1"
    start_emu --fault wrong-digest
    send $HTTP pay --amt 10 --channel wx --out-trade-no ECR-BUSY >/dev/null
    stop_emu
    start_emu
    send $HTTP refund --order-id 99999999999999999999999999 >/dev/null
    stop_emu
    start_emu --fault wrong-key
    send $HTTP pay --amt 11 --channel wx --out-trade-no ECR-KEY >/dev/null
    stop_emu
    # A payment waiting for the customer, cancelled from a second connection.
    start_emu --delay 10
    send $HTTP pay --amt 12 --channel wx --out-trade-no ECR-CANCEL >/dev/null &
    local pid=$!
    sleep 0.5
    send $HTTP cancel >/dev/null
    wait "$pid" || true
    stop_dump; stop_emu
}

# A partial refund of a same-day card payment (the terminal refuses it, 4005).
scenario_http_partial_card_refund() {
    start_emu; start_dump "$1"
    local syssn
    syssn=$(send $HTTP pay --amt 88.8 --channel card_payment --out-trade-no ECR-CARD | syssn_of)
    send $HTTP refund --order-id "$syssn" --refund-amount 20.00 >/dev/null
    stop_dump; stop_emu
}

# 0x2f6e frames over TCP (send --tcp-framing frames), written by dumpcap (pcapng).
scenario_tcp_frames_envelope_encrypted() {
    start_emu; start_dumpcap "$1"
    local syssn
    syssn=$(send $TCP --tcp-framing frames pay --amt 10.1 --channel card_payment --out-trade-no ECR-FRAMES | syssn_of)
    send $TCP --tcp-framing frames inquiry --order-id "$syssn" >/dev/null
    send $TCP --tcp-framing frames receipt --order-id "$syssn" >/dev/null
    send $TCP --tcp-framing frames cancel >/dev/null
    stop_dumpcap; stop_emu
}

# The result split in two fragments 100 ms apart (emulate --fault split=100).
scenario_tcp_frames_split_summary() {
    start_emu --fault split=100; start_dump "$1"
    send $TCP --tcp-framing frames pay --amt 10.1 --channel wx --out-trade-no ECR-SPLIT >/dev/null
    send $TCP --tcp-framing frames summary >/dev/null
    stop_dump; stop_emu
}

# Fragments 600 ms apart (> 500 ms, spec 10.7): emulate --fault split=600.
scenario_tcp_frames_reassembly_timeout() {
    start_emu --fault split=600; start_dump "$1"
    send $TCP --tcp-framing frames summary >/dev/null
    stop_dump; stop_emu
}

# The ack 1200 ms after the request (> 1000 ms, spec 10.6): emulate --fault delay-ack=1200;
# send waits up to 3 s for it.
scenario_tcp_frames_ack_timeout() {
    start_emu --fault delay-ack=1200; start_dump "$1"
    send $TCP --tcp-framing frames --ack-timeout 3000 pay --amt 10.1 --channel wx --out-trade-no ECR-LATEACK >/dev/null
    stop_dump; stop_emu
}

# The terminal has another POS-KEY (emulate --fault wrong-key): error frame 0x33.
scenario_tcp_frames_error_frame() {
    start_emu --fault wrong-key; start_dump "$1"
    send $TCP --tcp-framing frames pay --amt 10.1 --channel wx --out-trade-no ECR-ERRFRAME >/dev/null
    stop_dump; stop_emu
}

# Clean traffic of four kinds at once, written by dumpcap (pcapng).
scenario_mixed_http_tcp() {
    start_emu; start_dumpcap "$1"
    local pids=
    (
        s=$(send $HTTP --dialect plain pay --amt 30.0 --channel fps --out-trade-no ECR-MIX-1 | syssn_of)
        send $HTTP --dialect plain inquiry --order-id "$s" >/dev/null
    ) &
    pids="$pids $!"
    (
        s=$(send $HTTP pay --amt 15.5 --channel wx --out-trade-no ECR-MIX-2 | syssn_of)
        send $HTTP refund --order-id "$s" --refund-amount 15.50 >/dev/null
    ) &
    pids="$pids $!"
    (
        s=$(send $TCP pay --amt 8.8 --channel alipay --out-trade-no ECR-MIX-3 | syssn_of)
        send $TCP inquiry --order-id "$s" >/dev/null
    ) &
    pids="$pids $!"
    (
        send $TCP --tcp-framing frames pay --amt 50.0 --channel octopus --out-trade-no ECR-MIX-4 >/dev/null
        send $TCP --tcp-framing frames summary >/dev/null
    ) &
    pids="$pids $!"
    # Only these four: a bare `wait` would wait for tcpdump and the emulator too.
    wait $pids
    stop_dumpcap; stop_emu
}

# The cash register's damaged request frames (`send --frame-fault`), between two
# clean payments, one connection each: the terminal answers error frame 0x31.
frame_fault() {
    start_emu; start_dump "$1"
    send $TCP --tcp-framing frames pay --amt 10.1 --channel wx --out-trade-no ECR-F1 >/dev/null
    send $TCP --tcp-framing frames --frame-fault "$2" pay --amt 10.2 --channel wx --out-trade-no ECR-F2 >/dev/null
    send $TCP --tcp-framing frames pay --amt 10.3 --channel wx --out-trade-no ECR-F3 >/dev/null
    stop_dump; stop_emu
}
scenario_tcp_frames_unknown_frame_type() { frame_fault "$1" type; }
scenario_tcp_frames_bad_length() { frame_fault "$1" length; }

# Refs outside 1..127 (`send --frame-fault ref=0`, `ref=0x80`); the terminal echoes them.
scenario_tcp_frames_bad_ref() {
    start_emu; start_dump "$1"
    local syssn
    syssn=$(send $TCP --tcp-framing frames --frame-fault ref=0 pay --amt 10.1 --channel wx --out-trade-no ECR-REF | syssn_of)
    send $TCP --tcp-framing frames --frame-fault ref=0x80 inquiry --order-id "$syssn" >/dev/null
    stop_dump; stop_emu
}

# Envelope-encrypted Base64 without its JSON string quotes over HTTP (`send
# --bare`), AES-128 text key.
scenario_http_envelope_encrypted_aes128_bare() {
    EMU_KEY=$KEY_128 start_emu; start_dump "$1"
    local syssn
    syssn=$("$BIN" send --to $HTTP --key $KEY_128 --bare --format jsonl --timeout 5 \
        pay --amt 25.5 --channel octopus --out-trade-no ECR-BARE | syssn_of)
    "$BIN" send --to $HTTP --key $KEY_128 --bare --format jsonl --timeout 5 \
        inquiry --order-id "$syssn" >/dev/null
    stop_dump; stop_emu
}

# Encrypted with the hex-decoded key (D3; `send --key-reading hex-128`).
scenario_http_envelope_encrypted_hexkey() {
    start_emu; start_dump "$1"
    send $HTTP --key-reading hex-128 pay --amt 66.6 --channel wx --out-trade-no ECR-HEXKEY >/dev/null
    stop_dump; stop_emu
}

# Encrypted answers (D5): the whole body (`emulate --fault encrypt-response=body`),
# then only the data field (`encrypt-response=data`); a payment each.
scenario_http_envelope_encrypted_responses() {
    start_dump "$1"
    start_emu --fault encrypt-response=body
    send $HTTP pay --amt 12.3 --channel union --out-trade-no ECR-ENCRESP-1 >/dev/null
    stop_emu
    start_emu --fault encrypt-response=data
    send $HTTP pay --amt 12.4 --channel union --out-trade-no ECR-ENCRESP-2 >/dev/null
    stop_dump; stop_emu
}

# An ack no request asked for, after the result (`emulate --fault stray-ack`).
scenario_tcp_frames_unexpected_ack() {
    start_emu --fault stray-ack; start_dump "$1"
    send $TCP --tcp-framing frames pay --amt 10.1 --channel wx --out-trade-no ECR-UNACK >/dev/null
    stop_dump; stop_emu
}

# TCP 9002 JSON-value framing (D6; `send --tcp-framing json`): the request is one
# JSON value with no delimiter, in three dialects.
scenario_tcp_json_values() {
    start_emu; start_dump "$1"
    local syssn
    syssn=$(send $TCP --tcp-framing json --dialect content-encrypted pay --amt 120.5 --channel fps --out-trade-no ECR-JSONV | syssn_of)
    send $TCP --tcp-framing json --dialect content-encrypted inquiry --order-id "$syssn" >/dev/null
    send $TCP --tcp-framing json receipt --order-id "$syssn" >/dev/null
    send $TCP --tcp-framing json --dialect plain summary >/dev/null
    stop_dump; stop_emu
}

# Plain dialect with content as a JSON string (`send --content-string`) over
# frames, AES-128 text key.
scenario_tcp_frames_plain_string_content() {
    EMU_KEY=$KEY_128 start_emu; start_dump "$1"
    local syssn
    syssn=$("$BIN" send --to $TCP --key $KEY_128 --tcp-framing frames --dialect plain --content-string \
        --format jsonl --timeout 5 pay --amt 10.1 --channel amex_card --out-trade-no ECR-STR | syssn_of)
    "$BIN" send --to $TCP --key $KEY_128 --tcp-framing frames --dialect plain --content-string \
        --format jsonl --timeout 5 inquiry --order-id "$syssn" >/dev/null
    stop_dump; stop_emu
}

ALL="http-digest-mismatch.pcap http-digest-mismatch-double-quotes.pcap
http-digest-mismatch-unsorted-keys.pcap http-digest-mismatch-amount-reformatted.pcap
http-digest-mismatch-key-not-appended.pcap http-slow-terminal.pcap http-bad-envelope.pcap http-payme-timeout.pcap tcp-frames-other-port-19002.pcap
http-wrong-method.pcap http-unknown-channel.pcap
http-missing-field.pcap http-path-mismatch.pcap tcp-unknown-func-type.pcap
http-decrypt-failed.pcap http-no-response.pcap http-unanswered-at-end.pcap
https-tls-encrypted.pcap http-truncated-snaplen80.pcap
http-reordered-retransmitted.pcap http-tcp-gap.pcap
http-plain-all-functypes.pcap http-plain-ipv6-nanosecond.pcap
tcp-newline-envelope-encrypted.pcap tcp-newline-any-interface-sll2.pcap.gz
http-error-responses.pcap http-partial-card-refund.pcap
tcp-frames-envelope-encrypted.pcapng tcp-frames-split-summary.pcap
tcp-frames-reassembly-timeout.pcap tcp-frames-ack-timeout.pcap
tcp-frames-error-frame.pcap mixed-http-tcp.pcapng
tcp-frames-unknown-frame-type.pcap tcp-frames-bad-length.pcap
tcp-frames-bad-ref.pcap
http-envelope-encrypted-aes128-bare.pcap http-envelope-encrypted-hexkey.pcap
http-envelope-encrypted-responses.pcap tcp-frames-unexpected-ack.pcap
tcp-json-values.pcap tcp-frames-plain-string-content.pcap"

CRAFTED=$("$CRAFT" --list)

for file in ${*:-$ALL $CRAFTED}; do
    file=$(basename "$file")
    if echo "$CRAFTED" | grep -qx "$file"; then
        "$CRAFT" "$OUT" "$file"
        continue
    fi
    base=${file%.gz}; base=${base%.pcapng}; base=${base%.pcap}
    fn=scenario_$(echo "$base" | tr - _)
    if ! declare -F "$fn" >/dev/null; then
        echo "regenerate.sh: $file is not made here (see captures/README.md)" >&2
        exit 2
    fi
    echo "== $OUT/$file"
    # A capture without packets (tcpdump not ready in time) is made again, once.
    for try in 1 2; do
        "$fn" "$OUT/$file"
        [ "$(stat -c %s "$OUT/$file")" -gt 24 ] && break
        [ "$try" = 2 ] && { echo "regenerate.sh: $file: no packets captured" >&2; exit 1; }
        echo "   (no packets captured; again)"
    done
done
