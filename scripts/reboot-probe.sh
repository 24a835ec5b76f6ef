#!/bin/bash
# A deep-standby sandbox across a real host reboot (issue 3 §2), in two halves:
#
#   scripts/reboot-probe.sh prepare   # before the reboot: a sandbox with a counter process in
#                                     # deep standby, the server stopped, the boot id recorded
#   (reboot the host)
#   scripts/reboot-probe.sh verify    # after it: a new server adopts the sandbox; the request
#                                     # restores it; same pid, the counter goes on, files intact
#
# It runs its own `burrow serve` on its own data dir (BURROW_PROBE_DIR, default
# /var/lib/burrow-reboot-probe, runtime instance 9) and port (BURROW_PROBE_LISTEN, default
# 127.0.0.1:7429), so it neither touches the host's server nor collides with test suites.
# `verify` refuses to judge when the boot id has not changed (no reboot happened): exit 2.
# `verify --same-boot` runs the same checks anyway (a restart of burrow only).
# Needs: root, the installed `burrow` (scripts/setup.sh) and its `base` template.
set -euo pipefail

DIR=${BURROW_PROBE_DIR:-/var/lib/burrow-reboot-probe}
LISTEN=${BURROW_PROBE_LISTEN:-127.0.0.1:7429}
BURROW=${BURROW_BIN:-/usr/local/bin/burrow}
TEMPLATE=${BURROW_PROBE_TEMPLATE:-/var/lib/burrow/templates/base}
export BURROW_URL="http://$LISTEN" BURROW_DATA_DIR="$DIR"
STATE="$DIR/probe.env"
LOG="$DIR/serve.log"

die() { echo "reboot-probe: $*" >&2; exit 1; }

start_server() {
  setsid "$BURROW" serve --listen "$LISTEN" --data-dir "$DIR" >>"$LOG" 2>&1 </dev/null &
  echo $! >"$DIR/serve.pid"
  for _ in $(seq 300); do
    curl -fsS "$BURROW_URL/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "the server did not come up; see $LOG"
}

stop_server() {
  local pid
  pid=$(cat "$DIR/serve.pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  die "the server ($pid) did not stop within 60 s"
}

# After a pass: the probe's data dir and what its runtime instance left on the host (the network
# slots kept for reuse, the nftables table, the cgroup parents, the sandboxes file system's mount).
forget_instance() {
  local n ns controller
  n=$(cat "$DIR/instance")
  for ns in $(ip netns list | awk '{print $1}' | grep "^burrow$n-" || true); do ip netns del "$ns"; done
  nft delete table inet "burrow$n" 2>/dev/null || true
  for controller in /sys/fs/cgroup/*/; do rmdir "$controller/burrow$n" 2>/dev/null || true; done
  umount "$DIR/sandboxes" 2>/dev/null || true
  rm -rf "$DIR"
}

# The counter: a python process holding a count and a random marker in memory only, bumping the
# count every 0.1 s, answering "pid count marker" on 127.0.0.1:7000, and appending every 10th
# count to a file.
COUNTER='
import os, socket, threading, time
marker = os.urandom(8).hex()
count = 0
def tick():
    global count
    while True:
        count += 1
        if count % 10 == 0:
            with open("/home/user/counter.log", "a") as f:
                f.write(f"{count}\n")
        time.sleep(0.1)
threading.Thread(target=tick, daemon=True).start()
srv = socket.create_server(("127.0.0.1", 7000))
while True:
    conn, _ = srv.accept()
    conn.sendall(f"{os.getpid()} {count} {marker}\n".encode())
    conn.close()
'
ASK='import socket; print(socket.create_connection(("127.0.0.1", 7000)).makefile().readline().strip())'

ask_counter() { "$BURROW" exec "$1" -- python3 -c "$ASK"; }

prepare() {
  [ "$(id -u)" = 0 ] || die "run as root"
  [ -e "$STATE" ] && die "$STATE exists: run verify (or remove $DIR)"
  [ -f "$TEMPLATE/template.json" ] || die "no template at $TEMPLATE (run scripts/setup.sh)"
  mkdir -p "$DIR/templates"
  [ -e "$DIR/instance" ] || echo 9 >"$DIR/instance"
  ln -sfn "$TEMPLATE" "$DIR/templates/base"
  start_server
  local id answer
  id=$("$BURROW" create --idle-timeout 0 --label burrow=reboot-probe)
  "$BURROW" exec "$id" -- sh -c 'setsid python3 -c "$1" >/dev/null 2>&1 </dev/null &' sh "$COUNTER"
  for _ in $(seq 50); do answer=$(ask_counter "$id" 2>/dev/null) && break; sleep 0.1; done
  [ -n "${answer:-}" ] || die "the counter never answered"
  sleep 1
  answer=$(ask_counter "$id")
  "$BURROW" standby --deep "$id" >/dev/null
  "$BURROW" info "$id" --json | grep -q '"tier": *"deep"' || die "not in deep standby"
  stop_server
  {
    echo "ID=$id"
    echo "BOOT_ID=$(cat /proc/sys/kernel/random/boot_id)"
    echo "ANSWER='$answer'"
  } >"$STATE"
  echo "prepared: sandbox $id in deep standby, counter answered '$answer'; server stopped"
  echo "now reboot the host, then run: $0 verify"
}

verify() {
  [ "$(id -u)" = 0 ] || die "run as root"
  [ -f "$STATE" ] || die "no $STATE: run prepare first"
  # shellcheck disable=SC1090
  . "$STATE"
  local boot same_boot=${1:-}
  boot=$(cat /proc/sys/kernel/random/boot_id)
  if [ "$boot" = "$BOOT_ID" ] && [ "$same_boot" != --same-boot ]; then
    echo "reboot-probe: the host has not rebooted since prepare (boot id $boot); nothing to judge" >&2
    exit 2
  fi
  local event=reboot
  [ "$boot" = "$BOOT_ID" ] && event="restart of burrow (same boot)"
  local pid0 count0 marker0 answer pid count marker
  read -r pid0 count0 marker0 <<<"$ANSWER"
  start_server
  "$BURROW" info "$ID" --json | grep -q '"tier": *"deep"' || die "not adopted in deep standby: $("$BURROW" info "$ID" --json)"
  answer=$(ask_counter "$ID") || die "the request after the $event failed"
  read -r pid count marker <<<"$answer"
  sleep 0.5
  local later
  later=$(ask_counter "$ID" | cut -d' ' -f2)
  local lines
  lines=$("$BURROW" exec "$ID" -- sh -c 'wc -l </home/user/counter.log')
  echo "before the $event (boot $BOOT_ID): pid $pid0, count $count0, marker $marker0"
  echo "after the $event (boot $boot): pid $pid, count $count then $later, marker $marker; counter.log has $lines lines"
  local ok=1
  [ "$pid" = "$pid0" ] || { echo "FAIL: the pid changed"; ok=0; }
  [ "$marker" = "$marker0" ] || { echo "FAIL: the in-memory marker changed"; ok=0; }
  [ "$count" -ge "$count0" ] || { echo "FAIL: the count went back"; ok=0; }
  [ "$later" -gt "$count" ] || { echo "FAIL: the counter thread does not run"; ok=0; }
  [ "$lines" -ge $((count0 / 10)) ] || { echo "FAIL: counter.log lost lines"; ok=0; }
  "$BURROW" rm "$ID" >/dev/null || echo "warning: could not delete $ID"
  stop_server
  if [ $ok = 1 ]; then
    forget_instance
    echo "PASS: the sandbox came back after the $event with its process, memory and files"
  else
    die "see $LOG (the data dir $DIR is kept)"
  fi
}

case "${1:-}" in
  prepare) prepare ;;
  verify) verify "${2:-}" ;;
  *) echo "usage: $0 prepare | verify [--same-boot]" >&2; exit 2 ;;
esac
