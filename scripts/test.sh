#!/usr/bin/env bash
# The whole test suite: formatting, lints, then two stages. Safe to run on a fresh machine.
#   fast: every crate's unit and property tests, and the API tests against a node in-process;
#   slow: the real binary as a process (kill -9 and resume, SIGTERM, restarts, faults, memory,
#         the CLI, the README's quick start) and the external oracles (Python packages in ./.venv).
# `scripts/test.sh fast` runs the fast stage alone (no formatting, lints or Python).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "fast" ]; then
    exec cargo test --workspace --locked -- --skip ::process:: --skip oracles::
fi

# The README's quick start (run by tests/first_run.rs) uses curl and jq.
missing=""
for tool in curl jq; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    echo "== installing$missing (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

# Python oracles (stix2-validator, stix2, taxii2-client, ...) in a local virtual environment.
if [ -s tests/oracles/requirements.txt ]; then
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/oracles/requirements.txt
    export BRCTI_TEST_PYTHON="$PWD/.venv/bin/python"
fi

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== fast stage: unit and property tests, API tests in-process"
cargo test --workspace --locked -- --skip ::process:: --skip oracles::
echo "== slow stage: the binary as a process, the external oracles"
cargo test --locked --test it -- ::process:: oracles::
