#!/usr/bin/env bash
# Hostile input at full size (issue 11 and later finds): every crafted capture of
# crates/ecr-capture/examples/hostile_captures.rs is analysed with the default
# memory budget, with one thread and with the default -j (the cores), and each run
# must stay under 64 MB of resident memory (the README's promise) and both must
# write the same records. Speed is not judged here (a shared machine); see README,
# Performance.
set -euo pipefail
cd "$(dirname "$0")/../.."
. .ci/lib.sh
install_missing /usr/bin/time:time
bash benches/hostile.sh --memory-only
