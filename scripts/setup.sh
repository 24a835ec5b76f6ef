#!/usr/bin/env bash
# Set-up command 1: installs everything burrow needs on a fresh Debian 12 host (system packages,
# the build, the default `base` template) and starts `burrow serve` with embedded defaults
# (SQLite + local disk under /var/lib/burrow). Idempotent: run it again to rebuild and restart.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_DIR=${BURROW_DATA_DIR:-/var/lib/burrow}
LISTEN=${BURROW_LISTEN:-127.0.0.1:7420}
PREFIX=${BURROW_PREFIX:-/usr/local}

scripts/deps.sh

echo "==> building burrow (release)"
cargo build --release --locked -p burrow-cli -p burrow-agent -p burrow-launch

echo "==> installing binaries into $PREFIX"
install -d "$PREFIX/bin" "$PREFIX/lib/burrow"
install -m 0755 target/release/burrow "$PREFIX/bin/burrow"
install -m 0755 target/release/burrow-agent "$PREFIX/lib/burrow/burrow-agent"
install -m 0755 target/release/burrow-launch "$PREFIX/lib/burrow/burrow-launch"

echo "==> default template 'base' (debootstrap; cached after the first build)"
"$PREFIX/bin/burrow" template build base --local --data-dir "$DATA_DIR" --if-missing

if pid=$(pgrep -x -f "$PREFIX/bin/burrow serve.*" 2>/dev/null); then
  echo "==> stopping the running server ($pid)"
  kill $pid || true
  # A graceful stop checkpoints sleeping sandboxes to disk (deep standby): up to ~60 s.
  for _ in $(seq 700); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
fi

if [ -d /run/systemd/system ]; then
  # A systemd host: burrow starts at boot, and a shutdown checkpoints every sandbox (awake ones
  # too) so it comes back after the reboot (dist/burrow.service.in).
  echo "==> installing and starting burrow.service (systemd; log: /var/log/burrow.log)"
  sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@LISTEN@|$LISTEN|g" -e "s|@DATA_DIR@|$DATA_DIR|g" \
    dist/burrow.service.in >/etc/systemd/system/burrow.service
  systemctl daemon-reload
  systemctl enable burrow.service
  systemctl restart burrow.service
else
  echo "==> starting burrow serve on $LISTEN (log: /var/log/burrow.log; no systemd: not started at boot)"
  setsid "$PREFIX/bin/burrow" serve --listen "$LISTEN" --data-dir "$DATA_DIR" \
    >>/var/log/burrow.log 2>&1 < /dev/null &
fi
for _ in $(seq 100); do
  curl -fsS "http://$LISTEN/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://$LISTEN/healthz" >/dev/null || { echo "server did not come up; see /var/log/burrow.log" >&2; exit 1; }

echo
echo "burrow is running at http://$LISTEN"
echo "The CLI finds the API key in $DATA_DIR/client.key (root only) or BURROW_API_KEY."
echo "Try:  burrow create        # prints a sandbox id"
echo "      burrow exec <id> -- python3 -c 'print(6*7)'"
