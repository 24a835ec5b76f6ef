#!/usr/bin/env bash
# E2B SDK acceptance: the official `e2b` Python SDK in debug mode (E2B_DEBUG=true, which talks to
# localhost:49983) drives ONE real burrow sandbox: a real `burrow serve` (temporary data dir, the
# shared `base` template), a real sandbox, and `burrow forward <id> 49983` in front of it.
# Set BURROW_E2B_MODE=host to run the same suite against a bare agent on this host instead.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=${BURROW_BIN_DIR:-$repo/target/debug}
template=${BURROW_TEST_TEMPLATE_DIR:-/var/tmp/burrow-test-data/templates/base}

venv=$here/.venv
if [ ! -x "$venv/bin/pytest" ] || ! "$venv/bin/pip" freeze 2>/dev/null | grep -qx 'e2b==2.63.0'; then
  echo "==> creating $venv (pinned SDK from PyPI)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r "$here/requirements.txt"
fi

if [ "${BURROW_E2B_MODE:-sandbox}" = host ]; then
  exec "$venv/bin/pytest" -q "$here"
fi

for b in burrow burrow-agent burrow-launch; do
  [ -x "$bin/$b" ] || { echo "run.sh: $bin/$b missing; build the workspace first" >&2; exit 1; }
done
[ -f "$template/template.json" ] || { echo "run.sh: no base template at $template" >&2; exit 1; }

data=$(mktemp -d /var/tmp/burrow-e2b.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
server_pid=""; forward_pid=""
cleanup() {
  set +e
  [ -n "$forward_pid" ] && kill "$forward_pid" 2>/dev/null
  if [ -n "$server_pid" ]; then
    [ -n "${id:-}" ] && "$bin/burrow" rm "$id" >/dev/null 2>&1
    kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null
  fi
  mountpoint -q "$data/sandboxes" && umount -l "$data/sandboxes"
  rm -rf "$data"
}
trap cleanup EXIT

mkdir -p "$data/templates/base"
cp "$template/template.json" "$data/templates/base/template.json"
"$bin/burrow" serve --listen "127.0.0.1:$port" --data-dir "$data" --lib-dir "$bin" \
  >"$data/server.log" 2>&1 &
server_pid=$!
export BURROW_URL="http://127.0.0.1:$port"
for _ in $(seq 200); do [ -s "$data/client.key" ] && curl -fs "$BURROW_URL/healthz" >/dev/null && break; sleep 0.05; done
export BURROW_API_KEY=$(cat "$data/client.key")

id=$("$bin/burrow" create --env BURROW_GLOBAL=yes --label suite=e2b-debug)
echo "==> sandbox $id; forwarding localhost:49983 into it"
"$bin/burrow" forward "$id" 49983 &
forward_pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/49983) 2>/dev/null && break; sleep 0.05; done

BURROW_E2B_TARGET=external "$venv/bin/pytest" -q "$here" || { tail -50 "$data/server.log"; exit 1; }
