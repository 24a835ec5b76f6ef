#!/bin/bash
# A/B of scripts/bench-list.sh's measurement: the same 50,000 rows (10,000 in workspace `big`),
# listed with that workspace's viewer key, n=15 per server start, curl's time to the last byte.
# The builds take turns for ROUNDS rounds, so a noisy machine slows both alike.
#   scripts/bench-list-ab.sh ROUNDS DIR_A DIR_B ...   (each DIR holds burrow, burrow-agent,
#   burrow-launch; DIR:VAR=VALUE,VAR=VALUE runs that build with environment variables set)
# Uses its own port and data directory and stops only the servers it started.
set -u
ROUNDS=$1; shift
D=/var/tmp/burrow-listbench-ab; PORT=7491
mountpoint -q $D/sandboxes && umount -l $D/sandboxes
rm -rf $D; mkdir -p $D
start() {
  local b=${1%%:*} e=
  [[ $1 == *:* ]] && e=${1#*:}
  env ${e//,/ } "$b/burrow" serve --listen 127.0.0.1:$PORT --data-dir $D --lib-dir "$b" > $D/server.log 2>&1 &
  echo $! > $D/pid
  for _ in $(seq 100); do curl -fs http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
}
stop() { kill "$(cat $D/pid)"; while kill -0 "$(cat $D/pid)" 2>/dev/null; do sleep 0.1; done; }
start "$1"; stop
python3 - "$D/burrow.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("INSERT INTO workspaces (id, name, tier, created_at) VALUES ('ws_big','big','unlimited','2026-01-01T00:00:00.000Z')")
t = '2026-01-01T00:00:00.000Z'
c.executemany("INSERT INTO sandboxes (id, template, state, cpus, memory_mb, disk_mb, env_json, labels_json, created_at, updated_at, workspace_id) VALUES (?, 'base', 'stopped', 1, 512, 4096, '{\"LANG\":\"C.UTF-8\"}', '{\"team\":\"x\"}', ?, ?, ?)",
  [("i%019d" % i, t, t, 'ws_big' if i % 5 == 0 else 'ws_default') for i in range(50000)])
c.commit()
PY
start "$1"
export BURROW_URL=http://127.0.0.1:$PORT BURROW_API_KEY=$(cat $D/client.key)
KEY=$("${1%%:*}/burrow" key create --workspace big --role viewer | tail -1)
stop
for r in $(seq "$ROUNDS"); do
  for B in "$@"; do
    start "$B"
    for _ in $(seq 15); do
      curl -s -o /dev/null -w '%{time_total} %{size_download}\n' -H "Authorization: Bearer $KEY" http://127.0.0.1:$PORT/v1/sandboxes
    done | sort -n | awk -v b="$B" -v r="$r" -v l="$(cut -d' ' -f1 /proc/loadavg)" '{a[NR]=$1; s=$2} END {printf "round %d %s: n=%d min %.1f p50 %.1f max %.1f ms (%d bytes) load %s\n", r, b, NR, a[1]*1000, a[int((NR+1)/2)]*1000, a[NR]*1000, s, l}'
    stop
  done
done
