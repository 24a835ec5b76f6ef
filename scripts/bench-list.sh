#!/bin/bash
# 10,000 sandboxes of one workspace among 50,000 rows (rows only), listed through a release
# `burrow serve` with that workspace's key; curl's time to the last byte, n=15. Needs python3.
# See docs/performance.md.
set -u
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
D=/var/tmp/burrow-listbench
pkill -f "serve --listen 127.0.0.1:7434"; sleep 0.5
mountpoint -q $D/sandboxes && umount -l $D/sandboxes
rm -rf $D; mkdir -p $D
start() { $BIN/burrow serve --listen 127.0.0.1:7434 --data-dir $D --lib-dir $BIN > $D/server.log 2>&1 & echo $! > $D/pid; for i in $(seq 100); do curl -fs http://127.0.0.1:7434/healthz >/dev/null && break; sleep 0.1; done; }
stop() { kill $(cat $D/pid); while kill -0 $(cat $D/pid) 2>/dev/null; do sleep 0.1; done; }
start; stop
python3 - "$D/burrow.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("INSERT INTO workspaces (id, name, tier, created_at) VALUES ('ws_big','big','unlimited','2026-01-01T00:00:00.000Z')")
t = '2026-01-01T00:00:00.000Z'
c.executemany("INSERT INTO sandboxes (id, template, state, cpus, memory_mb, disk_mb, env_json, labels_json, created_at, updated_at, workspace_id) VALUES (?, 'base', 'stopped', 1, 512, 4096, '{\"LANG\":\"C.UTF-8\"}', '{\"team\":\"x\"}', ?, ?, ?)",
  [("i%019d" % i, t, t, 'ws_big' if i % 5 == 0 else 'ws_default') for i in range(50000)])
c.commit()
PY
start
export BURROW_URL=http://127.0.0.1:7434 BURROW_API_KEY=$(cat $D/client.key)
KEY=$($BIN/burrow key create --workspace big --role viewer | tail -1)
[ -n "${PERF:-}" ] && { perf record -F 2000 -g -o /var/tmp/list.perf -p $(cat $D/pid) -- sleep 4 > /dev/null 2>&1 & sleep 0.5; }
for i in $(seq 15); do curl -s -o /dev/null -w '%{time_total} %{size_download} %{time_starttransfer}\n' -H "Authorization: Bearer $KEY" http://127.0.0.1:7434/v1/sandboxes; done | sort -n | awk '{a[NR]=$1; s=$2; t[NR]=$3} END {printf "list 10000 of 50000 rows: n=%d min %.1f ms p50 %.1f ms max %.1f ms (%d bytes; first byte at p50-row %.1f ms)\n", NR, a[1]*1000, a[int((NR+1)/2)]*1000, a[NR]*1000, s, t[int((NR+1)/2)]*1000}'
stop
