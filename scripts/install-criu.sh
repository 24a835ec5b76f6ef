#!/usr/bin/env bash
# Installs CRIU >= 4.2 from Debian (sid) into /opt/burrow/criu without touching the host's libc:
# bookworm's CRIU 3.17 fails on current kernels ("Unexpected rt vDSO area bounds") and trixie's
# 4.1.1 fails on every TCP/UDP socket on kernels >= 6.16 ("Can't get 1:16 opt"). The whole
# dependency closure comes from that suite and runs through its own loader (see docs/standby.md).
# Idempotent.
set -euo pipefail

PREFIX=${BURROW_CRIU_PREFIX:-/opt/burrow/criu}
SUITE=${BURROW_CRIU_SUITE:-sid}
WRAPPER=$PREFIX/criu

version_ok() {
  # "Version: 4.2.1" -> accept 4.2 and later.
  "$WRAPPER" --version 2>/dev/null | awk '/^Version:/ { split($2, v, "."); exit !((v[1] > 4) || (v[1] == 4 && v[2] >= 2)) }'
}

if [ -x "$WRAPPER" ] && version_ok; then
  echo "==> CRIU present: $("$WRAPPER" --version | head -1)"
  exit 0
fi

echo "==> installing CRIU (Debian $SUITE) into $PREFIX"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{lists/partial,cache/archives/partial,etc,debs}
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $SUITE main" \
  > "$work/etc/sources.list"
cat > "$work/apt.conf" <<CONF
Dir::Etc::SourceList "$work/etc/sources.list";
Dir::Etc::SourceParts "/nonexistent";
Dir::State::Lists "$work/lists";
Dir::Cache "$work/cache";
Dir::State::status "/dev/null";
APT::Get::List-Cleanup "false";
APT::Sandbox::User "root";
CONF
export APT_CONFIG=$work/apt.conf
apt-get update -qq
mapfile -t pkgs < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
  --no-breaks --no-replaces --no-enhances criu | grep -v '^ ' | grep -v '^<' | sort -u)
(cd "$work/debs" && apt-get download -qq "${pkgs[@]}")
rm -rf "$PREFIX.new"
mkdir -p "$PREFIX.new"
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$PREFIX.new"; done
cat > "$PREFIX.new/criu" <<WRAP
#!/bin/sh
# CRIU from Debian $SUITE, run through that suite's loader and libraries.
exec $PREFIX/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path $PREFIX/usr/lib/x86_64-linux-gnu $PREFIX/usr/sbin/criu "\$@"
WRAP
chmod 0755 "$PREFIX.new/criu"
rm -rf "$PREFIX"
mv "$PREFIX.new" "$PREFIX"
"$WRAPPER" --version | head -1
version_ok || { echo "install-criu.sh: the installed CRIU is older than 4.2" >&2; exit 1; }
