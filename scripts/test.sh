#!/usr/bin/env bash
# Set-up command 2: runs the whole test suite: formatting, lints, unit and integration tests
# (real server, real sandboxes, real SQLite), and the E2B SDK acceptance tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> build"
cargo build --workspace --locked

DATA_DIR=${BURROW_DATA_DIR:-/var/lib/burrow}
echo "==> default template 'base' in $DATA_DIR"
target/debug/burrow template build base --local --data-dir "$DATA_DIR" --if-missing

echo "==> cargo tests"
export BURROW_TEST_TEMPLATE_DIR="$DATA_DIR/templates/base"
# The runtime's own integration tests (isolation, lifecycle, checkpoint) run sandboxes straight from
# a rootfs: the base template's layer is one.
export BURROW_TEST_ROOTFS="$DATA_DIR/templates/base/layers/0"
# Builds the code-interpreter template from PyPI (~1 min) and drives e2b-code-interpreter against it.
export BURROW_TEST_CODE_INTERPRETER=1
cargo nextest run --workspace --locked --no-fail-fast

echo "==> E2B SDK acceptance tests"
tests/e2b/run.sh
