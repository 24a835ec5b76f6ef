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

# The tests' own data dir, never an installed server's (/var/lib/burrow): it holds the real
# `base` template that the tests share. Every run starts it fresh, so the suite is proven from a
# clean state each time; only the debootstrap tarball (a package download) is kept.
TEST_DATA=${BURROW_TEST_DATA_DIR:-/var/tmp/burrow-test-data}
echo "==> fresh test data dir $TEST_DATA (keeping only its debootstrap cache)"
mkdir -p "$TEST_DATA/cache"
findmnt -rn -o TARGET | { grep -F "$TEST_DATA/" || true; } | sort -r | xargs -r umount -l
find "$TEST_DATA" -mindepth 1 -maxdepth 1 ! -name cache -exec rm -rf {} +
# An installed server's tarball saves the download: copied (never linked), so nothing the tests
# do can write into the operator's file.
for tarball in /var/lib/burrow/cache/debootstrap-*.tar; do
  [ -f "$tarball" ] || continue
  ours="$TEST_DATA/cache/$(basename "$tarball")"
  [ -e "$ours" ] || { cp "$tarball" "$ours.copying" && mv "$ours.copying" "$ours"; }
done

echo "==> default template 'base' in $TEST_DATA"
if ! target/debug/burrow template build base --local --data-dir "$TEST_DATA"; then
  echo "==> base build failed; retrying once with a fresh download" >&2
  rm -rf "$TEST_DATA/cache" "$TEST_DATA/templates"
  target/debug/burrow template build base --local --data-dir "$TEST_DATA"
fi

echo "==> cargo tests"
export BURROW_TEST_DATA_DIR="$TEST_DATA"
export BURROW_TEST_TEMPLATE_DIR="$TEST_DATA/templates/base"
# The runtime's own integration tests (isolation, lifecycle, checkpoint) run sandboxes straight from
# a rootfs: the base template's layer is one.
export BURROW_TEST_ROOTFS="$TEST_DATA/templates/base/layers/0"
# Builds the code-interpreter template from PyPI (~1 min) and drives e2b-code-interpreter against it.
export BURROW_TEST_CODE_INTERPRETER=1
cargo nextest run --workspace --locked --no-fail-fast

echo "==> E2B SDK acceptance tests"
tests/e2b/run.sh
