#!/usr/bin/env bash
# docs/ci.md's jobs, run here on the sample captures: install ecr-sniff without libpcap
# (cargo install --no-default-features, from this checkout), run `check` with the key
# from the environment and with a key file, and read the JUnit report with Python's XML
# parser. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Same target dir as the rest of CI, debug profile: reuses `cargo build --no-default-features`.
echo "== cargo install --locked --no-default-features (debug, into $work/bin)"
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}" \
    cargo install -q --locked --no-default-features --debug --path . --root "$work" -j2
export PATH="$work/bin:$PATH"
[ "$(command -v ecr-sniff)" = "$work/bin/ecr-sniff" ]

# The check line of docs/ci.md, as written there.
line=$(grep -E '^ECR_POS_KEY=f46b[0-9a-f]+ ecr-sniff check captures/\*\.pcap --expect captures/expected\.json --junit ecr-check\.xml$' docs/ci.md)
[ -n "$line" ] || { echo "docs/ci.md lost its check command"; exit 1; }

junit_ok() { # FILE COUNT: one test case per capture, no failures
    python3 - "$1" "$2" <<'PY'
import sys, xml.etree.ElementTree as ET
suite = ET.parse(sys.argv[1]).getroot()
cases = suite.findall("testcase")
want = int(sys.argv[2])
assert suite.tag == "testsuite", suite.tag
assert len(cases) == want == int(suite.get("tests")), (len(cases), want, suite.get("tests"))
bad = [c.get("name") for c in cases if c.find("failure") is not None]
assert not bad and suite.get("failures") == "0", bad
print(f"junit: {len(cases)} test cases, 0 failures")
PY
}

echo "== $line"
(cd "$work" && cp -r "$root/captures" . && eval "$line") | tail -1
junit_ok "$work/ecr-check.xml" "$(ls captures/*.pcap | wc -l)"

echo "== key file variant over captures/*.pcap*"
keyfile="$work/ecr-keys.txt"
(umask 077; printf '%s\n' "f46b1f08bec1f39104792cc79ec9aacd" > "$keyfile")
(cd "$work" && env -u ECR_POS_KEY ecr-sniff check captures/*.pcap* --expect captures/expected.json \
    --key-file "$keyfile" --junit ecr-check-all.xml) | tail -1
junit_ok "$work/ecr-check-all.xml" "$(ls captures/*.pcap* | wc -l)"

echo "== a difference fails the job and shows in the report"
set +e
(cd "$work" && env -u ECR_POS_KEY ecr-sniff check captures/http-digest-mismatch.pcap \
    --expect captures/expected.json --junit ecr-check-fail.xml) >/dev/null
status=$?
set -e
[ "$status" = 1 ] || { echo "expected exit status 1, got $status"; exit 1; }
python3 - "$work/ecr-check-fail.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
suite = ET.parse(sys.argv[1]).getroot()
assert suite.get("failures") == "1", suite.attrib
assert suite.find("testcase/failure") is not None
print("junit: the difference is a failure")
PY
echo "ci jobs: ok"
