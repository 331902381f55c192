#!/usr/bin/env bash
# Python bindings (issue 8): clippy for crates/ecr-py, then build it with maturin into
# a throwaway virtual environment and run the pytest suite in python/tests; then the
# conventional route, `pip install ./python`, into a second, clean environment, which
# imports the package and runs README's example.
# The crate is not a default workspace member, so nothing else here needs Python.
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

# Own target dir (and 2 jobs) so the build does not collide with the main one.
export CARGO_TARGET_DIR="${ECR_PY_TARGET_DIR:-$root/target/py}"
export CARGO_BUILD_JOBS=2
venv="${ECR_PY_VENV:-/tmp/ecr-sniff-py-venv}"
python="${PYTHON:-python3}"

if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "== installing python3-venv"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-venv python3-dev >/dev/null
fi

echo "== python venv $venv"
"$python" -m venv --clear "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "maturin>=1.5,<2" "pytest>=7" pandas
# The same interpreter for clippy and maturin, so pyo3 is built once.
export PYO3_PYTHON="$venv/bin/python"

echo "== cargo clippy -p ecr-py"
cargo clippy -j2 -p ecr-py --all-targets -- -D warnings

echo "== maturin develop"
(cd python && VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" "$venv/bin/maturin" develop -q)

# Compare records with the binary's own jsonl output when `cargo test` has built it.
if [ -x "$root/target/debug/ecr-sniff" ]; then
    export ECR_SNIFF_BIN="$root/target/debug/ecr-sniff"
fi

echo "== pytest python/tests"
cd "$root/python"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests

# The conventional install, as README shows it: `pip install ./python` into a fresh
# environment with nothing else in it (pip fetches maturin into an isolated build
# environment). A debug build in the same target dir, so it reuses the one above.
echo "== pip install ./python (second venv)"
venv2="${ECR_PY_VENV2:-/tmp/ecr-sniff-py-venv-pip}"
"$python" -m venv --clear "$venv2"
cd "$root"
MATURIN_PEP517_ARGS="--profile dev" \
    "$venv2/bin/python" -m pip install -q --disable-pip-version-check ./python
"$venv2/bin/python" -c 'import ecr_sniff; print("imported", ecr_sniff.__name__, "from", ecr_sniff.__file__)'
"$venv2/bin/python" -m pip install -q --disable-pip-version-check "pytest>=7"
"$venv2/bin/python" -m pytest -q -p no:cacheprovider python/tests/test_readme.py
