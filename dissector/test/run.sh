#!/bin/sh
# Golden tests for dissector/ecr.lua with tshark.
#   dissector/test/run.sh            compare with golden/ (exit 1 and print a diff on any difference)
#   dissector/test/run.sh --regen    rewrite golden/ (what regen.sh does)
# Environment: TSHARK (default tshark), CASES (default dissector/test/cases.txt plus
# dissector/test/cases-captures.txt when present).
# Exits 0 with "SKIP" when tshark is missing or has no Lua support.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT" || exit 1
TSHARK=${TSHARK:-tshark}
REGEN=0
[ "${1:-}" = "--regen" ] && REGEN=1
GOLDEN="$HERE/golden"
LUA="dissector/ecr.lua"

if ! command -v "$TSHARK" >/dev/null 2>&1; then
  echo "SKIP: tshark not found; install it (Debian: apt-get install tshark) to run the dissector tests"
  exit 0
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM
echo 'print("ECR_LUA_PROBE")' > "$TMP/probe.lua"
# a one-packet capture to load Lua scripts against
FIRST=$(sed -n 's/^[^#|]*| *\([^ |]*\) *|.*/\1/p' "$HERE/cases.txt" | head -n 1)
if ! "$TSHARK" -n -X "lua_script:$TMP/probe.lua" -r "$FIRST" -c 1 -q 2>/dev/null | grep -q ECR_LUA_PROBE; then
  echo "SKIP: $TSHARK has no Lua support (or cannot read $FIRST)"
  exit 0
fi
VERSION=$("$TSHARK" --version 2>/dev/null | head -n 1)
INFO_FIELD=_ws.col.Info
# Wireshark 4.2+ names column fields in lower case
if "$TSHARK" -G fields 2>/dev/null | grep -q "	_ws\.col\.info	"; then INFO_FIELD=_ws.col.info; fi

FIELDS="frame.number ecr.direction ecr.type ecr.ref ecr.total_len ecr.data_len ecr.fragmented ecr.reassembled_in
ecr.fragment.count ecr.framing ecr.kind ecr.dialect ecr.envelope_form ecr.key_interp ecr.func_type ecr.amt
ecr.channel ecr.paytype ecr.out_trade_no ecr.order_id ecr.refund_amount ecr.digest.status ecr.digest.variant
ecr.respcd ecr.respmsg ecr.resperr ecr.syssn ecr.txamt ecr.txcurrcd ecr.busicd $INFO_FIELD _ws.expert.message"
EARGS=""
for f in $FIELDS; do EARGS="$EARGS -e $f"; done

# Remove what may legitimately vary between runs or machines.
normalise() {
  grep -v -e '^Running as user' -e 'This could be dangerous' \
          -e 'Arrival Time' -e 'Epoch Time' -e 'Time since reference' |
  sed -E -e 's/[[:space:]]*$//' \
      -e 's/(Src Port|Dst Port): ([1-8][0-9]{3}|9[1-9][0-9]{2}|[1-9][0-9]{4})\b/\1: <port>/g' \
      -e 's/(Answer time \(ms\): )[0-9.]+/\1<ms>/' \
      -e 's/[0-9]+ ms since the previous fragment/<n> ms since the previous fragment/' \
      -e 's/Answer after [0-9]+ ms/Answer after <n> ms/'
}

fail=0; total=0; skipped=0
# Self-test of the pure-Lua AES / MD5 / parsers against the spec vectors.
ST=$(ECR_LUA_SELFTEST=1 "$TSHARK" -n -X "lua_script:$LUA" -X "lua_script:$HERE/selftest.lua" -r "$FIRST" -c 1 -q 2>&1 | grep SELFTEST)
echo "$ST"
case "$ST" in *"SELFTEST PASS"*) ;; *) echo "FAIL selftest"; fail=$((fail + 1));; esac

# Installed in the personal plugins folder and given with -X lua_script: as well, the
# dissector loads once and quietly (the second copy steps aside).
mkdir -p "$TMP/home/.local/lib/wireshark/plugins"
cp "$LUA" "$TMP/home/.local/lib/wireshark/plugins/"
DOUBLE=$(HOME="$TMP/home" "$TSHARK" -n -X "lua_script:$LUA" -r dissector/test/fixtures/tcp-frames.pcap -Y ecr 2>&1)
total=$((total + 1))
if printf '%s\n' "$DOUBLE" | grep -qi "lua.*error\|two protocols"; then
  echo "FAIL double load: $(printf '%s\n' "$DOUBLE" | grep -i -m 2 'lua.*error\|two protocols')"
  fail=$((fail + 1))
elif ! printf '%s\n' "$DOUBLE" | grep -q " ECR "; then
  echo "FAIL double load: no ECR packets decoded"
  fail=$((fail + 1))
else
  echo "ok   double load (plugins folder + -X lua_script:) is quiet"
fi

CASEFILES="$HERE/cases.txt"
[ -f "$HERE/cases-captures.txt" ] && CASEFILES="$CASEFILES $HERE/cases-captures.txt"
[ -n "${CASES:-}" ] && CASEFILES=$CASES
mkdir -p "$GOLDEN"
for cf in $CASEFILES; do
  while IFS='|' read -r name cap key extra; do
    name=$(echo "$name" | tr -d ' ')
    case "$name" in ''|'#'*) continue;; esac
    cap=$(echo "$cap" | tr -d ' ')
    key=$(echo "$key" | tr -d ' ')
    total=$((total + 1))
    if [ ! -f "$cap" ]; then
      case "$cf" in
        *cases-captures.txt) echo "SKIP $name: sample capture $cap not present"; skipped=$((skipped + 1)); continue;;
      esac
      echo "FAIL $name: capture $cap is missing"
      fail=$((fail + 1)); continue
    fi
    # Keys reach the dissector through a key file (there is no key preference).
    KEYOPT="-o ecr.key_file:"
    case "$key" in
      -) ;;
      @*) KEYOPT="-o ecr.key_file:${key#@}" ;;   # a key file of the repository
      *) printf '%s\n' "$key" > "$TMP/keyfile"
         KEYOPT="-o ecr.key_file:$TMP/keyfile" ;;
    esac
    # shellcheck disable=SC2086
    ECR_POS_KEY= "$TSHARK" -2 -n -X "lua_script:$LUA" $KEYOPT $extra -r "$cap" -Y ecr \
      -T fields -E header=y -E separator='|' -E occurrence=a -E aggregator=',' $EARGS 2>&1 |
      normalise > "$TMP/$name.fields.txt"
    # shellcheck disable=SC2086
    ECR_POS_KEY= "$TSHARK" -2 -n -X "lua_script:$LUA" $KEYOPT $extra -r "$cap" -Y ecr -V -O ecr 2>&1 |
      normalise > "$TMP/$name.tree.txt"
    for kind in fields tree; do
      out="$TMP/$name.$kind.txt"; gold="$GOLDEN/$name.$kind.txt"
      if [ "$REGEN" = 1 ]; then
        cp "$out" "$gold"
      elif [ ! -f "$gold" ]; then
        echo "FAIL $name ($kind): no golden file $gold (run dissector/test/regen.sh)"
        fail=$((fail + 1))
      elif ! diff -u "$gold" "$out" > "$TMP/diff"; then
        echo "FAIL $name ($kind): output differs from $gold"
        head -n 200 "$TMP/diff"
        fail=$((fail + 1))
      fi
    done
    if grep -q "internal error\|Lua Error\|Dissector error" "$TMP/$name.tree.txt"; then
      echo "FAIL $name: Lua/dissector error in output"
      grep -m 5 "internal error\|Lua Error\|Dissector error" "$TMP/$name.tree.txt"
      fail=$((fail + 1))
    fi
  done < "$cf"
done

# HTTPS on the HTTP port (issue 13): without keys, Wireshark shows TLS exactly as it
# does without the dissector; with the key log, the decrypted bodies carry the same
# ECR fields as the same exchange over plain HTTP (frames 4, 5, 12, 13 of http-a1b2).
if [ "$REGEN" = 0 ] && [ -z "${CASES:-}" ]; then
  total=$((total + 2))
  TLSCAP=dissector/test/fixtures/https-9001.pcap
  "$TSHARK" -n -r "$TLSCAP" -V 2>&1 | normalise > "$TMP/tls-without.txt"
  ECR_POS_KEY= "$TSHARK" -n -X "lua_script:$LUA" -r "$TLSCAP" -V 2>&1 | normalise > "$TMP/tls-with.txt"
  if diff -u "$TMP/tls-without.txt" "$TMP/tls-with.txt" > "$TMP/diff"; then
    echo "ok   TLS without keys: identical with and without the dissector"
  else
    echo "FAIL TLS without keys: the dissector changes what Wireshark shows"
    head -n 40 "$TMP/diff"
    fail=$((fail + 1))
  fi
  cut -d'|' -f2- "$GOLDEN/https-keylog.fields.txt" | sed 1d > "$TMP/https.f"
  awk -F'|' 'NR == 1 || $1 == 4 || $1 == 5 || $1 == 12 || $1 == 13' "$GOLDEN/http-a1b2.fields.txt" | cut -d'|' -f2- | sed 1d > "$TMP/http.f"
  if [ -s "$TMP/https.f" ] && diff -u "$TMP/http.f" "$TMP/https.f" > "$TMP/diff"; then
    echo "ok   HTTPS with the key log: same ECR fields as plain HTTP"
  else
    echo "FAIL HTTPS with the key log: ECR fields differ from plain HTTP"
    head -n 40 "$TMP/diff"
    fail=$((fail + 1))
  fi
fi

if [ "$REGEN" = 1 ]; then
  echo "regenerated golden files for $total cases with $VERSION; review them with git diff"
  exit 0
fi
# The capture goldens must agree with the analyzer's expectations (captures/manifest.json).
if [ -f captures/manifest.json ] && [ -f "$HERE/cases-captures.txt" ] && [ "$skipped" = 0 ] && [ -z "${CASES:-}" ]; then
  if command -v python3 >/dev/null 2>&1; then
    if ! python3 "$HERE/check_manifest.py" > "$TMP/manifest.txt"; then
      grep -v '^ok' "$TMP/manifest.txt"
      echo "FAIL goldens disagree with captures/manifest.json"
      fail=$((fail + 1))
    fi
  else
    echo "SKIP manifest cross-check: python3 not found"
  fi
fi
# Serial captures name their ends: Source/Destination columns "ECR (port)"/"POS (port)"
# from the interface name, and two Flow Graph nodes (0.0.0.1 = ECR, 0.0.0.2 = POS).
if [ "$REGEN" = 0 ] && [ -z "${CASES:-}" ]; then
  total=$((total + 1))
  SER=dissector/test/fixtures/export-usbmon-clean.pcapng
  COLS=$("$TSHARK" -n -X "lua_script:$LUA" -r "$SER" -T fields -e _ws.col.Source -e _ws.col.Destination 2>/dev/null |
    sort -u | tr '\t\n' '>;')
  [ -n "$COLS" ] || COLS=$("$TSHARK" -n -X "lua_script:$LUA" -r "$SER" -T fields -e _ws.col.def_src -e _ws.col.def_dst 2>/dev/null |
    sort -u | tr '\t\n' '>;')
  NODES=$("$TSHARK" -n -X "lua_script:$LUA" -r "$SER" -q -z flow,any,standard 2>/dev/null | sed -n 1p)
  if [ "$COLS" = "ECR (usb1:5)>POS (usb1:5);POS (usb1:5)>ECR (usb1:5);" ] &&
     printf '%s' "$NODES" | grep -q '0\.0\.0\.1'; then
    echo "ok   serial ends named in the columns and the Flow Graph"
  else
    echo "FAIL serial ends: columns '$COLS', flow graph '$NODES'"
    fail=$((fail + 1))
  fi
fi
# Key files with a BOM and CRLF lines, or with a key bound to the terminal, read the
# same as the plain key.
if [ "$REGEN" = 0 ] && [ -z "${CASES:-}" ]; then
  for k in keyfile-bom-crlf keyfile-bound; do
    total=$((total + 1))
    if cmp -s "$GOLDEN/http-a1b2.fields.txt" "$GOLDEN/$k.fields.txt"; then
      echo "ok   $k decodes as with the plain key"
    else
      echo "FAIL $k differs from http-a1b2"
      fail=$((fail + 1))
    fi
  done
fi
# The USB goldens must agree with the analyzer's (captures/usb/expected/*.jsonl):
# same messages in the same packets, same directions, kinds, func_types, digests.
if [ -z "${CASES:-}" ] && ls captures/usb/expected/*.jsonl >/dev/null 2>&1; then
  if command -v python3 >/dev/null 2>&1; then
    total=$((total + 1))
    if python3 "$HERE/check_usb.py" > "$TMP/usb.txt"; then
      echo "ok   USB goldens agree with captures/usb/expected ($(grep -c '^ok' "$TMP/usb.txt") captures)"
    else
      grep -v '^ok' "$TMP/usb.txt"
      echo "FAIL USB goldens disagree with captures/usb/expected"
      fail=$((fail + 1))
    fi
  else
    echo "SKIP USB cross-check: python3 not found"
  fi
fi
if [ "$fail" -ne 0 ]; then
  echo "dissector tests: $fail failure(s) over $total cases ($VERSION)"
  exit 1
fi
echo "dissector tests: $((total - skipped)) cases passed, $skipped skipped ($VERSION)"
exit 0
