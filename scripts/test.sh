#!/usr/bin/env bash
# The whole test suite: formatting, lints, then three stages. Safe to run on a fresh machine.
#   fast: every crate's unit and property tests (the store contract on SQLite and on
#         PostgreSQL among them), and the API tests against a node in-process;
#   distributed: the API tests again, the node's records in PostgreSQL and its files in an S3
#         bucket (Garage);
#   slow: the real binary as a process (kill -9 and resume, SIGTERM, restarts, faults, memory,
#         the CLI, the README's quick start, the web console in headless chromium) and the
#         external oracles (Python packages in ./.venv).
# Tests that need PostgreSQL start a private server of their own from Debian's `postgresql`
# package (installed here when missing), or use BRCTI_TEST_DATABASE_URL when it is set. Tests
# that need S3 start a private Garage: `garage` on PATH, else ../shared/tools' build (unpacked
# with xz), else one built here with cargo (20-50 minutes, once: kept in ./.tools).
# `scripts/test.sh fast` runs the fast stage alone (no formatting, lints or Python).
set -euo pipefail
cd "$(dirname "$0")/.."

have_postgres() {
    [ -n "${BRCTI_TEST_DATABASE_URL:-}" ] && return 0
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && return 0
    command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1
}
if ! have_postgres; then
    echo "== installing postgresql (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

if ! command -v garage >/dev/null 2>&1 && [ -z "${BRCTI_GARAGE_BIN:-}" ]; then
    if ls ../shared/tools/garage-*.xz >/dev/null 2>&1; then
        if ! command -v xz >/dev/null 2>&1; then
            echo "== installing xz-utils (apt-get)"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xz-utils >/dev/null
        fi
    else
        if [ ! -x .tools/bin/garage ]; then
            echo "== building garage 2.5.0 (no build in ../shared/tools; this takes a while, once)"
            cargo install garage --version 2.5.0 --locked --root .tools
        fi
        export BRCTI_GARAGE_BIN="$PWD/.tools/bin/garage"
    fi
fi

if [ "${1:-}" = "fast" ]; then
    exec cargo test --workspace --locked -- --skip ::process:: --skip oracles::
fi

# The README's quick start (run by tests/first_run.rs) uses curl and jq; the console's browser
# test (tests/it/console.rs) Debian's chromium and chromedriver (never a downloaded browser).
missing=""
for tool in curl jq; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
[ -x /usr/bin/chromium ] || missing="$missing chromium"
[ -x /usr/bin/chromedriver ] || missing="$missing chromium-driver"
# A Chinese font, so that the browser test's screenshots show the Chinese pages.
dpkg -s fonts-wqy-zenhei >/dev/null 2>&1 || missing="$missing fonts-wqy-zenhei"
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
echo "== distributed stage: the API tests with the records in PostgreSQL and the files in S3"
BRCTI_TEST_BACKEND=postgres+s3 cargo test --locked --test it -- --skip ::process:: --skip oracles::
echo "== slow stage: the binary as a process, the external oracles"
cargo test --locked --test it -- ::process:: oracles::
