#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, API tests over real HTTP, and the external
# oracles (Python packages installed into ./.venv). Safe to run on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

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
