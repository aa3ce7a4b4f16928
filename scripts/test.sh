#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, API tests over real HTTP, and the external
# oracles (Python packages installed into ./.venv). Safe to run on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

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
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
