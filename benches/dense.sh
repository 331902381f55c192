#!/usr/bin/env bash
# Dense-traffic benchmark (issue 15): `analyze --format jsonl` (one thread, and -j 2
# beside it; `check` too) on a capture in which every packet is ECR traffic, against `cat`
# (reading the file), against tshark with the Lua dissector (on a slice) and against
# the machine's ceiling for the crypto (`openssl speed`, measured in the same run).
#
#   benches/dense.sh                 # 256 MB, 3 runs of each measurement
#   SIZE_MB=64 RUNS=1 benches/dense.sh
#   CONCURRENT=4096 benches/dense.sh # also the same traffic as 4096 one-transaction
#                                    # connections open at once (dense_capture --concurrent)
#
# Environment: SIZE_MB (256), SLICE_MB for tshark (8), RUNS (3), TMPDIR (where the
# captures go; /dev/shm keeps the disk out of the measurement when it has room),
# TSHARK=0 to leave tshark out, CONCURRENT=N (0: none) to time -j 1 and -j 2 on a
# capture of N concurrent connections too, beside the runs on the default one.
# Each run also times two -j 1 analyses at once: what two cores give work that shares
# nothing (2.00x when the cores are independent), the yardstick for -j 2.
# Prints each run, then the range (min-max) of each figure. Not a test: the machine's
# load decides the numbers, so run it on an idle machine and compare runs of the same
# session only.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-256}
SLICE_MB=${SLICE_MB:-8}
RUNS=${RUNS:-3}
TSHARK=${TSHARK:-1}
CONCURRENT=${CONCURRENT:-0}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] &&
    [ "$(df -Pm /dev/shm | awk 'NR==2{print $4}')" -gt $((SIZE_MB * 3 + 256)) ]; then
    TMPDIR=/dev/shm
fi
work=$(mktemp -d -p "${TMPDIR:-/tmp}" ecr-dense.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "== building (release)"
cargo build -q -j2 --release --bin ecr-sniff
cargo build -q -j2 --release -p ecr-emu --example dense_capture
bin="$CARGO_TARGET_DIR/release/ecr-sniff"
gen="$CARGO_TARGET_DIR/release/examples/dense_capture"

echo "== generating ${SIZE_MB} MB of dense ECR traffic in $work"
"$gen" --size-mb "$SIZE_MB" "$work/dense.pcap"
bytes=$(stat -c %s "$work/dense.pcap")
if [ "$CONCURRENT" -gt 0 ]; then
    "$gen" --size-mb "$SIZE_MB" --concurrent "$CONCURRENT" "$work/conc.pcap"
    cbytes=$(stat -c %s "$work/conc.pcap")
fi

# Runs "$@" under /usr/bin/time -v; prints "wall_seconds max_rss_kb cpu_seconds"
# (cpu = user + system: less sensitive than wall time to other load on the machine).
timed() {
    local log="$work/time.log"
    /usr/bin/time -v "$@" 2>"$log" >/dev/null || {
        cat "$log" >&2
        return 1
    }
    awk -F': ' '
        /Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; wall = s }
        /Maximum resident set size/ { rss = $2 }
        /User time \(seconds\)|System time \(seconds\)/ { cpu += $2 }
        END { printf "%.3f %d %.3f\n", wall, rss, cpu }' "$log"
}
range() { sort -g | awk 'NR==1{lo=$1} {hi=$1} END{ if (NR) printf "%s-%s", lo, hi; else printf "n/a" }'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN{ printf "%.0f", b / s / 1e6 }'; }
mbps1() { awk -v b="$1" -v s="$2" 'BEGIN{ printf "%.2f", b / s / 1e6 }'; }

# One untimed run: warms the page cache and counts the messages.
"$bin" analyze --key-file "$work/dense.pcap.keys" --format jsonl "$work/dense.pcap" \
    >"$work/out.jsonl"
summary=$(tail -n 1 "$work/out.jsonl")
messages=$(printf '%s' "$summary" | sed -n 's/.*"messages":\([0-9]*\).*/\1/p')
findings=$(printf '%s' "$summary" | sed -n 's/.*"findings":\({[^}]*}\).*/\1/p')
echo "   $bytes bytes, $messages messages decoded, findings: $findings"
rm -f "$work/out.jsonl"
if [ "$CONCURRENT" -gt 0 ]; then
    csummary=$("$bin" analyze --key-file "$work/conc.pcap.keys" --format jsonl "$work/conc.pcap" | tail -n 1)
    cmessages=$(printf '%s' "$csummary" | sed -n 's/.*"messages":\([0-9]*\).*/\1/p')
    echo "   concurrent: $cbytes bytes, $cmessages messages decoded, findings: $(printf '%s' "$csummary" | sed -n 's/.*"findings":\({[^}]*}\).*/\1/p')"
fi

: >"$work/cat" >"$work/an" >"$work/anm" >"$work/rss" >"$work/ancpu" >"$work/anmcpu"
: >"$work/j2" >"$work/j2m" >"$work/j2x" >"$work/j2rss" >"$work/pair"
: >"$work/c1" >"$work/c1m" >"$work/c1rss" >"$work/c2" >"$work/c2rss" >"$work/cx"
: >"$work/chk" >"$work/chkm" >"$work/chkx"
for i in $(seq "$RUNS"); do
    read -r cw _ < <(timed cat "$work/dense.pcap")
    read -r aw rss acpu < <(timed "$bin" analyze -j 1 --key-file "$work/dense.pcap.keys" \
        --format jsonl "$work/dense.pcap")
    echo "   run $i: cat $cw s, analyze $aw s wall ($(mbps "$bytes" "$aw") MB/s), $acpu s CPU ($(mbps "$bytes" "$acpu") MB/s), max RSS $((rss / 1024)) MB"
    mbps "$bytes" "$acpu" >>"$work/ancpu"
    echo >>"$work/ancpu"
    awk -v m="$messages" -v s="$acpu" 'BEGIN{ printf "%.0f\n", m / s / 1e3 }' >>"$work/anmcpu"
    mbps "$bytes" "$cw" >>"$work/cat"
    echo >>"$work/cat"
    mbps "$bytes" "$aw" >>"$work/an"
    echo >>"$work/an"
    awk -v m="$messages" -v s="$aw" 'BEGIN{ printf "%.0f\n", m / s / 1e3 }' >>"$work/anm"
    echo $((rss / 1024)) >>"$work/rss"
    # `check` on the same capture: the same analysis, no records written (its
    # verdict line only), by CPU time against the analyze run above.
    read -r _ _ kcpu < <(timed "$bin" check -j 1 --key-file "$work/dense.pcap.keys" \
        "$work/dense.pcap")
    echo "   run $i: check $kcpu s CPU ($(mbps "$bytes" "$kcpu") MB/s, $(awk -v a="$acpu" -v k="$kcpu" 'BEGIN{printf "%.2f", a / k}')x analyze)"
    mbps "$bytes" "$kcpu" >>"$work/chk"
    echo >>"$work/chk"
    awk -v m="$messages" -v s="$kcpu" 'BEGIN{ printf "%.0f\n", m / s / 1e3 }' >>"$work/chkm"
    awk -v a="$acpu" -v k="$kcpu" 'BEGIN{ printf "%.2f\n", a / k }' >>"$work/chkx"
    # Both cores (-j 2: a helper thread decodes and writes; docs/architecture.md).
    read -r jw jrss jcpu < <(timed "$bin" analyze -j 2 --key-file "$work/dense.pcap.keys" \
        --format jsonl "$work/dense.pcap")
    echo "   run $i: analyze -j 2 $jw s wall ($(mbps "$bytes" "$jw") MB/s, $(awk -v a="$aw" -v j="$jw" 'BEGIN{printf "%.2f", a / j}')x -j 1), $jcpu s CPU, max RSS $((jrss / 1024)) MB"
    mbps "$bytes" "$jw" >>"$work/j2"
    echo >>"$work/j2"
    awk -v m="$messages" -v s="$jw" 'BEGIN{ printf "%.0f\n", m / s / 1e3 }' >>"$work/j2m"
    awk -v a="$aw" -v j="$jw" 'BEGIN{ printf "%.2f\n", a / j }' >>"$work/j2x"
    echo $((jrss / 1024)) >>"$work/j2rss"
    # What two cores give work that shares nothing: two -j 1 analyses at once, the
    # wall time of the pair against two runs one after the other (2.00x: the cores
    # are independent). -j 2 above can be compared with this.
    start=$(date +%s.%N)
    "$bin" analyze -j 1 --key-file "$work/dense.pcap.keys" --format jsonl "$work/dense.pcap" >/dev/null &
    "$bin" analyze -j 1 --key-file "$work/dense.pcap.keys" --format jsonl "$work/dense.pcap" >/dev/null
    wait
    pw=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN{ printf "%.3f", e - s }')
    echo "   run $i: two analyze -j 1 at once: $pw s wall ($(awk -v a="$aw" -v p="$pw" 'BEGIN{printf "%.2f", 2 * a / p}')x the work of one run per second)"
    awk -v a="$aw" -v p="$pw" 'BEGIN{ printf "%.2f\n", 2 * a / p }' >>"$work/pair"
    if [ "$CONCURRENT" -gt 0 ]; then
        # The same traffic as $CONCURRENT connections open at once, right beside.
        for j in 1 2; do
            read -r w r c < <(timed "$bin" analyze -j "$j" --key-file "$work/conc.pcap.keys" \
                --format jsonl "$work/conc.pcap")
            echo "   run $i: concurrent $CONCURRENT, analyze -j $j $w s wall ($(mbps "$cbytes" "$w") MB/s), $c s CPU ($(mbps "$cbytes" "$c") MB/s, $(awk -v m="$cmessages" -v s="$c" 'BEGIN{ printf "%.0f", m / s / 1e3 }') K messages/s), max RSS $((r / 1024)) MB"
            echo $((r / 1024)) >>"$work/c${j}rss"
            if [ "$j" = 1 ]; then
                mbps "$cbytes" "$c" >>"$work/c1"
                echo >>"$work/c1"
                awk -v m="$cmessages" -v s="$c" 'BEGIN{ printf "%.0f\n", m / s / 1e3 }' >>"$work/c1m"
                # CPU per message against the default capture's run above.
                awk -v cm="$cmessages" -v cs="$c" -v m="$messages" -v s="$acpu" \
                    'BEGIN{ printf "%.2f\n", (cs / cm) / (s / m) }' >>"$work/cx"
            else
                mbps "$cbytes" "$w" >>"$work/c2"
                echo >>"$work/c2"
            fi
        done
    fi
done
# The same output with both cores (checked once, untimed).
if ! cmp -s <("$bin" analyze -j 1 --key-file "$work/dense.pcap.keys" --format jsonl "$work/dense.pcap") \
    <("$bin" analyze -j 2 --key-file "$work/dense.pcap.keys" --format jsonl "$work/dense.pcap"); then
    echo "analyze -j 2 wrote other output than -j 1" >&2
    exit 1
fi

echo "== openssl speed (the ceiling for AES-CBC decryption and MD5 digests, 1 KiB blocks)"
: >"$work/aes" >"$work/md5"
for i in $(seq "$RUNS"); do
    # The "1024 bytes" column is in thousands of bytes per second.
    a=$(openssl speed -seconds 1 -bytes 1024 -evp aes-128-cbc -decrypt 2>/dev/null |
        awk '/^AES-128-CBC|^aes-128-cbc/ { v = $NF } END { sub("k", "", v); printf "%.0f", v / 1000 }')
    m=$(openssl speed -seconds 1 -bytes 1024 -evp md5 2>/dev/null |
        awk '/^md5/ { v = $NF } END { sub("k", "", v); printf "%.0f", v / 1000 }')
    echo "   run $i: aes-128-cbc decrypt $a MB/s, md5 $m MB/s"
    echo "$a" >>"$work/aes"
    echo "$m" >>"$work/md5"
done

if [ "$TSHARK" = 1 ] && command -v tshark >/dev/null; then
    echo "== tshark with dissector/ecr.lua on a ${SLICE_MB} MB slice (one terminal, so its one key decrypts all)"
    "$gen" --size-mb "$SLICE_MB" --terminals 1 "$work/slice.pcap" >/dev/null
    sbytes=$(stat -c %s "$work/slice.pcap")
    key=$(sed -n 's/^[^#=]*=//p' "$work/slice.pcap.keys" | head -n 1)
    : >"$work/ts" >"$work/sl"
    for i in $(seq "$RUNS"); do
        # The dissector takes its key from ECR_POS_KEY (it keeps no key preference).
        read -r tw _ < <(ECR_POS_KEY="$key" timed tshark -n -X lua_script:dissector/ecr.lua \
            -V -r "$work/slice.pcap")
        read -r sw _ < <(timed "$bin" analyze -j 1 --key-file "$work/slice.pcap.keys" \
            --format jsonl "$work/slice.pcap")
        echo "   run $i: tshark -V $tw s, analyze $sw s ($(awk -v t="$tw" -v s="$sw" 'BEGIN{printf "%.0f", t / s}')x)"
        mbps1 "$sbytes" "$tw" >>"$work/ts"
        echo >>"$work/ts"
        awk -v t="$tw" -v s="$sw" 'BEGIN{ printf "%.0f\n", t / s }' >>"$work/sl"
    done
fi

cat_r=$(range <"$work/cat")
an_r=$(range <"$work/an")
best_an=$(sort -g "$work/an" | tail -n 1)
best_cpu=$(sort -g "$work/ancpu" | tail -n 1)
best_cat=$(sort -g "$work/cat" | tail -n 1)
best_aes=$(sort -g "$work/aes" | tail -n 1)
best_md5=$(sort -g "$work/md5" | tail -n 1)
# Ceiling: every byte of the file read once, decrypted once and digested once
# (more than the real work: headers are neither decrypted nor digested).
ceiling=$(awk -v c="$best_cat" -v a="$best_aes" -v m="$best_md5" 'BEGIN{ printf "%.0f", 1 / (1/c + 1/a + 1/m) }')
echo
echo "== summary ($RUNS runs each; ranges are min-max; $SIZE_MB MB, $messages messages)"
echo "cat:                         $cat_r MB/s"
echo "analyze --format jsonl:      $an_r MB/s, $(range <"$work/anm") K messages/s (wall), max RSS $(range <"$work/rss") MB"
echo "  by CPU time (user+sys):    $(range <"$work/ancpu") MB/s, $(range <"$work/anmcpu") K messages/s"
echo "check, by CPU time:          $(range <"$work/chk") MB/s, $(range <"$work/chkm") K messages/s, $(range <"$work/chkx")x analyze's speed by CPU"
echo "analyze -j 2 (both cores):   $(range <"$work/j2") MB/s, $(range <"$work/j2m") K messages/s (wall), $(range <"$work/j2x")x the -j 1 run beside it, max RSS $(range <"$work/j2rss") MB"
echo "two -j 1 analyses at once:   $(range <"$work/pair")x the work per second of one (what two cores give work that shares nothing)"
if [ "$CONCURRENT" -gt 0 ]; then
    echo "$CONCURRENT concurrent connections ($cmessages messages):"
    echo "  analyze -j 1, by CPU time: $(range <"$work/c1") MB/s, $(range <"$work/c1m") K messages/s, max RSS $(range <"$work/c1rss") MB; CPU per message $(range <"$work/cx")x the default capture's"
    echo "  analyze -j 2, wall:        $(range <"$work/c2") MB/s, max RSS $(range <"$work/c2rss") MB"
fi
echo "openssl aes-128-cbc decrypt: $(range <"$work/aes") MB/s"
echo "openssl md5:                 $(range <"$work/md5") MB/s"
echo "ceiling (read+AES+MD5 of every byte, best runs): $ceiling MB/s"
awk -v a="$best_an" -v u="$best_cpu" -v c="$best_cat" -v x="$ceiling" 'BEGIN{
    printf "analyze by CPU time / ceiling: %.3f (the ceiling is %.1fx faster)\n", u / x, x / u
    printf "analyze / cat:     %.3f (cat is %.1fx faster)\n", a / c, c / a
    printf "analyze / ceiling: %.3f (the ceiling is %.1fx faster)\n", a / x, x / a }'
if [ -s "$work/ts" ]; then
    echo "tshark -V + ecr.lua:         $(range <"$work/ts") MB/s; analyze is $(range <"$work/sl")x faster on the slice"
fi
