#!/usr/bin/env bash
# Makes the emu-* captures in captures/tls/: clients that this project did not write
# (curl with OpenSSL, Python's ssl) and `ecr-sniff send` talking HTTPS to
# `ecr-sniff emulate --tls` on 127.0.0.1:9001, captured with tcpdump on lo, with the
# CLIENT's key log (SSLKEYLOGFILE, as on a POS PC) beside each capture; and the same
# sessions over plain HTTP, so that decrypted captures can be compared with them.
#
#   emu-curl-tls13-<suite>.pcap   curl, TLS 1.3 with one suite: a CORS preflight, then
#                                 a payment posted as Odoo's pos_qfpay posts it
#                                 (Content-Type: application/json, the JSON-quoted
#                                 Base64 envelope), on one keep-alive connection
#   emu-curl-tls12-<suite>.pcap   the same with TLS 1.2 and one ECDHE suite (RSA
#                                 certificate for ECDHE-RSA, ECDSA for ECDHE-ECDSA)
#   emu-curl-tls12-resumed.pcap   preflight on one connection (Connection: close),
#   emu-curl-tls13-resumed.pcap   the payment on a second one that resumes the session
#                                 (TLS 1.2 session id, TLS 1.3 PSK ticket)
#   emu-python-tls12.pcap         Python http.client + ssl: preflight and payment on
#   emu-python-tls13.pcap         one connection
#   emu-chromium-tls13.pcap       headless Chromium: a POS page (tests/data/tls/pos-page.html,
#                                 served from another port) posts the payment with
#                                 fetch, so the browser sends its own preflight first
#                                 (skipped when chromium is not installed)
#   emu-send-tls13.pcap           ecr-sniff send --to https:// with every func_type
#                                 (pay, inquiry, receipt, refund, summary, cancel = 6001)
#   emu-http-curl.pcap            plain-HTTP twins of the curl, Python, Chromium and
#   emu-http-python.pcap          send sessions (the same requests; syssn, times and
#   emu-http-chromium.pcap        headers such as Origin differ)
#   emu-http-send.pcap
#   emu-http-no-cors.pcap         the curl session against a server without CORS
#                                 (Python's http.server: OPTIONS answered 501, the
#                                 POST's answer without Access-Control-Allow-Origin),
#                                 for the analyzer's cors-blocked finding
#
# Each TLS capture NAME.pcap has NAME.keys (NSS key log written by the client). The
# certificates are the fixed test ones in tests/data/tls/. The POS-KEY is
# a1b2c3d4e5f6a7b8 (the key of the spec's envelope-encrypted test vector).
#
# After making them, every TLS capture is decrypted with tshark and its key log, and
# the HTTP bodies tshark shows are compared with the plain-HTTP twin's requests.
#
# Usage (root, for tcpdump):  bash captures/tls/make.sh
# Needs: tcpdump, curl, python3, tshark, openssl (chromium optional); ports 9001 and
# 9080 free on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
KEY=a1b2c3d4e5f6a7b8
PORT=9001
OUT=captures/tls
DATA=tests/data/tls
BIN=${ECR_SNIFF:-target/debug/ecr-sniff}
if [ -z "${ECR_SNIFF:-}" ]; then
    cargo build -j2 --quiet
fi
for tool in tcpdump curl python3 tshark openssl; do
    command -v $tool >/dev/null || { echo "make.sh: $tool is needed" >&2; exit 2; }
done
# The spec's envelope-encrypted test vector for KEY: a payment of 10.1, card_payment,
# out_trade_no 456799999999, as the JSON string literal of the Base64 text.
BODY='"FsdWxnlrMG/4VA5z7ZNJefAFcvhTHHv1Bt3cusAxehI+WhfUjhX31+7NpUERXaidkEgy8/6sPOS0URYSe3n2jeNhfvo6L3dDi+J3Vr2tbIgaICj/Gh0Jqk/qtU132oMds55E6Gu+nskHGc9neDeaAUU3z/2ihOnboG5IFiEPoBLVbVgiI4jW+War2hGs7TjL"'
ORIGIN='https://pos.example.odoo.com'

EMU_PID=
DUMP_PID=
PAGE_PID=
TMP=$(mktemp -d)
cleanup() {
    [ -n "$EMU_PID" ] && kill "$EMU_PID" 2>/dev/null || true
    [ -n "$PAGE_PID" ] && kill "$PAGE_PID" 2>/dev/null || true
    [ -n "$DUMP_PID" ] && kill "$DUMP_PID" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

# wait_grep PATTERN FILE WHAT: waits (20 s at most) until FILE has a line matching
# PATTERN.
wait_grep() {
    local i
    for i in $(seq 400); do
        if grep -q "$1" "$2" 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "make.sh: $3 did not start:" >&2
    cat "$2" >&2
    exit 1
}

# start_emu rsa|ecdsa|plain: the emulator on PORT, HTTPS with a test certificate or
# plain HTTP.
start_emu() {
    local log=$TMP/emu.log args=()
    case $1 in
        rsa | ecdsa) args=(--tls --cert "$DATA/$1-cert.pem" --cert-key "$DATA/$1-key.pem") ;;
    esac
    env -u SSLKEYLOGFILE "$BIN" emulate --key "$KEY" --http-port $PORT --no-tcp "${args[@]}" >"$log" &
    EMU_PID=$!
    wait_grep '^https\?: ' "$log" "the emulator"
}

stop_emu() {
    kill -TERM "$EMU_PID"
    wait "$EMU_PID" || true
    EMU_PID=
    sed 's/^/    emu: /' "$TMP/emu.log" | grep -v '^    emu: tls: ' || true
}

start_dump() {
    local file=$1 err=$TMP/dump.err
    tcpdump -i lo -U --immediate-mode -Z root -n -s 0 -w "$file" "tcp port $PORT" 2>"$err" &
    DUMP_PID=$!
    wait_grep listening "$err" tcpdump
}

stop_dump() {
    sleep 0.3
    kill -INT "$DUMP_PID"
    wait "$DUMP_PID" || true
    DUMP_PID=
}

# curl_session SCHEME KEYLOG CURL-OPTIONS...: preflight, then the payment, on one
# connection (curl's --next reuses it).
curl_session() {
    local scheme=$1 keys=$2; shift 2
    local url=$scheme://127.0.0.1:$PORT/api/pos/trade
    SSLKEYLOGFILE=$keys curl -sS --max-time 10 --cacert "$CERT" "$@" \
        -X OPTIONS -H "Origin: $ORIGIN" -H 'Access-Control-Request-Method: POST' \
        -H 'Access-Control-Request-Headers: content-type' "$url" -o /dev/null \
        --next --max-time 10 --cacert "$CERT" "$@" \
        -H 'Content-Type: application/json' -H "Origin: $ORIGIN" --data-binary "$BODY" "$url"
    echo
}

# curl_resumed SCHEME KEYLOG CURL-OPTIONS...: the preflight closes its connection, so
# the payment goes on a new one, which resumes the TLS session.
curl_resumed() {
    local scheme=$1 keys=$2; shift 2
    local url=$scheme://127.0.0.1:$PORT/api/pos/trade
    SSLKEYLOGFILE=$keys curl -sS --max-time 10 --cacert "$CERT" "$@" \
        -X OPTIONS -H 'Connection: close' -H "Origin: $ORIGIN" \
        -H 'Access-Control-Request-Method: POST' "$url" -o /dev/null \
        --next --max-time 10 --cacert "$CERT" "$@" \
        -H 'Content-Type: application/json' -H "Origin: $ORIGIN" --data-binary "$BODY" "$url"
    echo
}

PYTHON='
import http.client, json, ssl, sys
scheme, port, cafile, version, body, origin = sys.argv[1:7]
if scheme == "https":
    ctx = ssl.create_default_context(cafile=cafile)  # honours SSLKEYLOGFILE
    v = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.minimum_version = ctx.maximum_version = v
    c = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx, timeout=10)
else:
    c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
c.request("OPTIONS", "/api/pos/trade", headers={"Origin": origin,
          "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
r = c.getresponse(); r.read()
c.request("POST", "/api/pos/trade", body=body.encode(),
          headers={"Content-Type": "application/json", "Origin": origin})
r = c.getresponse(); print(r.status, r.read().decode())
c.close()
'

python_session() {
    local scheme=$1 keys=$2 version=${3:-1.3}
    SSLKEYLOGFILE=$keys python3 -c "$PYTHON" "$scheme" $PORT "$CERT" "$version" "$BODY" "$ORIGIN"
}

CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
PAGE_PORT=9080
# chromium_session SCHEME KEYLOG: the POS page posts to the terminal; Chromium
# trusts the test certificate by its key hash (as if the shop had installed it).
chromium_session() {
    local scheme=$1 keys=$2 spki
    spki=$(openssl x509 -in "$DATA/rsa-cert.pem" -pubkey -noout | openssl pkey -pubin -outform der |
        openssl dgst -sha256 -binary | base64)
    SSLKEYLOGFILE=$keys "$CHROMIUM" --headless --no-sandbox --disable-gpu --no-first-run \
        --user-data-dir="$TMP/chromium-profile-$scheme" --ignore-certificate-errors-spki-list="$spki" \
        --virtual-time-budget=10000 --dump-dom \
        "http://127.0.0.1:$PAGE_PORT/pos-page.html?to=$scheme://127.0.0.1:$PORT" 2>/dev/null |
        grep -o '<pre id="out">.\{0,60\}'
}

# send_session SCHEME KEYLOG: every func_type with ecr-sniff send.
send_session() {
    local scheme=$1 keys=$2 to syssn
    to=$scheme://127.0.0.1:$PORT
    local tls=()
    [ "$scheme" = https ] && tls=(--cert "$CERT")
    s() { SSLKEYLOGFILE=$keys "$BIN" send --to "$to" --key "$KEY" --format jsonl --timeout 5 "${tls[@]}" "$@" || true; }
    syssn=$(s pay --amt 10.10 --channel card_payment --out-trade-no EMU-TLS-1 |
        sed -n 's/.*"syssn":"\([0-9]*\)".*/\1/p' | head -1)
    s inquiry --out-trade-no EMU-TLS-1 >/dev/null
    s receipt --order-id "$syssn" >/dev/null
    s refund --order-id "$syssn" >/dev/null
    s summary >/dev/null
    s cancel >/dev/null
}

rm -f "$OUT"/emu-*.pcap "$OUT"/emu-*.keys

# capture NAME CERT SCHEME FUNCTION ARGS...: one session, captured, with its key log.
capture() {
    local name=$1 cert=$2 scheme=$3; shift 3
    local file=$OUT/$name.pcap keys=$TMP/keys.log
    echo "== $file"
    rm -f "$keys"
    CERT=$DATA/${cert/plain/rsa}-cert.pem
    start_emu "$cert"
    start_dump "$file"
    "$@" "$scheme" "$keys"
    stop_dump
    stop_emu
    if [ "$scheme" = https ]; then
        [ -s "$keys" ] || { echo "make.sh: the client wrote no key log for $name" >&2; exit 1; }
        # Only the secrets: no comments.
        grep -v '^#' "$keys" >"$OUT/$name.keys"
    fi
}

tls13() { curl_session "$1" "$2" --tlsv1.3 --tls13-ciphers "$SUITE"; }
tls12() { curl_session "$1" "$2" --tlsv1.2 --tls-max 1.2 --ciphers "$SUITE"; }
for SUITE in TLS_AES_128_GCM_SHA256 TLS_AES_256_GCM_SHA384 TLS_CHACHA20_POLY1305_SHA256; do
    capture "emu-curl-tls13-$SUITE" rsa https tls13
done
for SUITE in ECDHE-RSA-AES128-GCM-SHA256 ECDHE-RSA-AES256-GCM-SHA384 ECDHE-RSA-CHACHA20-POLY1305; do
    capture "emu-curl-tls12-$SUITE" rsa https tls12
done
for SUITE in ECDHE-ECDSA-AES128-GCM-SHA256 ECDHE-ECDSA-AES256-GCM-SHA384 ECDHE-ECDSA-CHACHA20-POLY1305; do
    capture "emu-curl-tls12-$SUITE" ecdsa https tls12
done
resumed12() { curl_resumed "$1" "$2" --tlsv1.2 --tls-max 1.2; }
resumed13() { curl_resumed "$1" "$2" --tlsv1.3; }
capture emu-curl-tls12-resumed rsa https resumed12
capture emu-curl-tls13-resumed rsa https resumed13
py12() { python_session "$1" "$2" 1.2; }
py13() { python_session "$1" "$2" 1.3; }
capture emu-python-tls12 rsa https py12
capture emu-python-tls13 rsa https py13
if [ -n "$CHROMIUM" ]; then
    python3 -m http.server $PAGE_PORT --bind 127.0.0.1 --directory "$DATA" >/dev/null 2>&1 &
    PAGE_PID=$!
    sleep 1
    capture emu-chromium-tls13 rsa https chromium_session
    capture emu-http-chromium plain http chromium_session
    kill "$PAGE_PID"; wait "$PAGE_PID" 2>/dev/null || true
else
    echo "== SKIP emu-chromium-*: chromium not installed"
fi
capture emu-send-tls13 rsa https send_session
plain_curl() { curl_session "$1" "$2"; }
capture emu-http-curl plain http plain_curl
capture emu-http-python plain http py13
capture emu-http-send plain http send_session

# A terminal without CORS: Python's http.server answers OPTIONS 501 (no do_OPTIONS)
# and the POST with a 6000 that lacks Access-Control-Allow-Origin.
NOCORS='
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"{\"respcd\":\"6000\",\"respmsg\":\"SUCCESS\",\"resperr\":\"\",\"data\":\"\"}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
print("http: listening", flush=True)
s.serve_forever()
'
file=$OUT/emu-http-no-cors.pcap
echo "== $file"
python3 -c "$NOCORS" $PORT >"$TMP/nocors.log" 2>&1 &
EMU_PID=$!
wait_grep listening "$TMP/nocors.log" "the Python server"
start_dump "$file"
CERT=$DATA/rsa-cert.pem curl_session http ""
stop_dump
kill "$EMU_PID"; wait "$EMU_PID" 2>/dev/null || true
EMU_PID=

echo "== checks: tshark decrypts every TLS capture with its key log"
bodies() { # FILE [KEYS]: the HTTP request lines and bodies tshark sees, one per line
    local opts=(-d tcp.port==$PORT,http)
    [ -n "${2:-}" ] && opts=(-d tcp.port==$PORT,tls -o "tls.keylog_file:$2")
    tshark -r "$1" "${opts[@]}" -Y 'http.request' \
        -T fields -e http.request.method -e http.request.uri -e http.file_data 2>/dev/null
}
fail=0
for f in "$OUT"/emu-curl-*.pcap "$OUT"/emu-python-*.pcap "$OUT"/emu-chromium-*.pcap "$OUT"/emu-send-*.pcap; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .pcap)
    case $name in
        emu-curl-*) twin=$OUT/emu-http-curl.pcap ;;
        emu-python-*) twin=$OUT/emu-http-python.pcap ;;
        emu-chromium-*) twin=$OUT/emu-http-chromium.pcap ;;
        emu-send-*) twin=$OUT/emu-http-send.pcap ;;
    esac
    got=$(bodies "$f" "$OUT/$name.keys" | cut -f1,2)
    want=$(bodies "$twin" | cut -f1,2)
    n=$(printf '%s\n' "$got" | grep -c . || true)
    if [ "$got" != "$want" ] || [ "$n" -lt 2 ]; then
        echo "   $name: tshark shows other requests than in $twin:" >&2
        diff <(echo "$want") <(echo "$got") >&2 || true
        fail=1
    else
        echo "   $name: $n requests decrypted, as in $(basename "$twin")"
    fi
done
# The curl and python bodies are the fixed vector, so they must be byte-equal.
for f in "$OUT"/emu-curl-*.pcap "$OUT"/emu-python-*.pcap "$OUT"/emu-chromium-*.pcap; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .pcap)
    if bodies "$f" "$OUT/$name.keys" | cut -f3 | grep -q . &&
        ! bodies "$f" "$OUT/$name.keys" | awk -F'\t' '$1=="POST"' | cut -f3 |
            grep -qvF "$BODY"; then
        :
    else
        echo "   $name: a POST body differs from the vector" >&2
        fail=1
    fi
done
exit $fail
