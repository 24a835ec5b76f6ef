#!/bin/bash
# The API benchmarks on a release `burrow serve` with its own data dir (the test base template
# linked in): create, exec; RESUME=1 also warm and deep wake (WARM_ONLY=1: warm only); WS=1 runs
# them with a workspace member key instead of the operator key. BIN= for another build;
# BURROW_LOG=info,burrow_core=debug logs each wake's server-side time. See docs/performance.md.
set -u
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
D=/var/tmp/burrow-bench
pkill -f "burrow serve --listen 127.0.0.1:7431" ; sleep 1
mountpoint -q $D/sandboxes && umount -l $D/sandboxes
rm -rf $D; mkdir -p $D/templates
ln -s /var/tmp/burrow-test-data/templates/base $D/templates/base
$BIN/burrow serve --listen 127.0.0.1:7431 --data-dir $D --lib-dir $BIN > $D/server.log 2>&1 &
for i in $(seq 100); do curl -fs http://127.0.0.1:7431/healthz >/dev/null && break; sleep 0.1; done
export BURROW_URL=http://127.0.0.1:7431 BURROW_API_KEY=$(cat $D/client.key)
if [ -n "${WS:-}" ]; then
  $BIN/burrow workspace create bench --tier unlimited >/dev/null
  export BURROW_API_KEY=$($BIN/burrow key create --workspace bench --role member | tail -1)
  echo "(as a workspace member key)"
fi
$BIN/burrow bench create -n ${N:-200} --memory
$BIN/burrow bench exec -n ${N2:-300}
if [ -n "${RESUME:-}" ]; then $BIN/burrow bench resume -n 100; [ -n "${WARM_ONLY:-}" ] && { pkill -f "burrow serve --listen 127.0.0.1:7431"; exit; }; $BIN/burrow bench resume --deep -n 100; $BIN/burrow bench resume --deep -n 100; $BIN/burrow bench resume --deep -n 100 --asleep-ms 1500; fi
pkill -f "burrow serve --listen 127.0.0.1:7431"
