#!/usr/bin/env bash
# Hostile-input benchmark (issue 11): builds the crafted captures at full size and
# runs `ecr-sniff analyze` on each, printing wall and CPU time, peak RSS and MB/s
# against the targets (at least 10 MB/s on one thread, under 64 MB of memory with
# the default budget, with one thread and with the default -j; the same records).
# MB/s is computed from the one-thread run's CPU time (user + sys), which a machine
# shared with other jobs distorts far less than wall time.
#
#   bash benches/hostile.sh [--scale FACTOR] [--keep DIR] [--memory-only] [-- EXTRA ANALYZE ARGS]
#
# --scale 0.1 builds smaller captures (a quick check); --keep writes them to DIR and
# leaves them there; --memory-only judges memory and the records alone (CI: a shared
# machine's speed is no verdict). Needs /usr/bin/time (Debian package `time`). Exits 1 when a
# capture misses a target.
set -euo pipefail
cd "$(dirname "$0")/.."

scale=1
dir=""
memory_only=0
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --scale) scale="$2"; shift 2 ;;
        --keep) dir="$2"; shift 2 ;;
        --memory-only) memory_only=1; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "hostile.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ ! -x /usr/bin/time ]; then
    echo "hostile.sh: /usr/bin/time is missing (apt-get install time)" >&2
    exit 2
fi
if [ -z "$dir" ]; then
    dir="$(mktemp -d)"
    trap 'rm -rf "$dir"' EXIT
fi

cargo build -j2 --release --quiet --bin ecr-sniff
cargo build -j2 --release --quiet -p ecr-capture --example hostile_captures
bin=target/release/ecr-sniff
./target/release/examples/hostile_captures "$dir" --scale "$scale" >/dev/null

# The key decrypts nothing here; it makes the TCP 9002 framer try its `decrypts`
# rule on every segment, the once-quadratic path.
key=(--key my_qfpay_pos_key)
floor_mbs=10
max_rss_kb=$((64 * 1024))
fail=0
# Each capture twice: with one thread (`-j 1`), which the speed is judged on (CPU
# time), and as a user runs it (no -j: the cores), which must stay under the memory
# target too and write the same records.
printf '%-20s %7s %7s %7s %7s %9s %9s %8s  %s\n' capture MB wall_s cpu_s MB/s RSS_j1_MB RSS_MB findings verdict
measure() { # FILE OUT-PREFIX ARGS...: runs analyze, leaves OUT.jsonl and OUT.time
    local f="$1" o="$2"; shift 2
    /usr/bin/time -v -o "$o.time" "$bin" analyze "${key[@]}" --format jsonl "$@" "${extra[@]}" "$f" \
        > "$o.jsonl" || true
}
rss_of() { awk -F': ' '/Maximum resident set size/ {print $2}' "$1"; }
for f in "$dir"/*.pcap "$dir"/*.pcapng; do
    name="$(basename "$f")"
    bytes=$(stat -c %s "$f")
    measure "$f" "$dir/$name.j1" -j 1
    measure "$f" "$dir/$name.default"
    out="$dir/$name.j1.time"
    secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$out")
    rss=$(rss_of "$out")
    rss_default=$(rss_of "$dir/$name.default.time")
    cpu=$(awk -F': ' '/User time|System time/ {s += $2} END {printf "%.2f", s}' "$out")
    findings=$(grep -c '"kind":"finding"' "$dir/$name.j1.jsonl" || true)
    read -r mb mbs <<<"$(awk -v b="$bytes" -v s="$cpu" 'BEGIN {
        m = b / 1e6; if (s < 0.01) s = 0.01; printf "%.1f %.0f", m, m / s }')"
    verdict=ok
    if [ "$memory_only" = 0 ] && awk -v r="$mbs" -v f="$floor_mbs" 'BEGIN {exit !(r < f)}'; then
        verdict="SLOW"; fail=1
    fi
    if [ "$rss" -gt "$max_rss_kb" ] || [ "$rss_default" -gt "$max_rss_kb" ]; then
        verdict="$verdict BIG"; fail=1
    fi
    if ! cmp -s "$dir/$name.j1.jsonl" "$dir/$name.default.jsonl"; then
        verdict="$verdict DIFFERENT"; fail=1
    fi
    printf '%-20s %7s %7s %7s %7s %9.1f %9.1f %8s  %s\n' "$name" "$mb" "$secs" "$cpu" "$mbs" \
        "$(awk -v k="$rss" 'BEGIN {print k / 1024}')" \
        "$(awk -v k="$rss_default" 'BEGIN {print k / 1024}')" "$findings" "$verdict"
done
exit $fail
