#!/usr/bin/env bash
# Installs CRIU 4 from Debian trixie into /opt/burrow/criu without touching the host's libc:
# bookworm's CRIU 3.17 fails on current kernels ("Unexpected rt vDSO area bounds"). The whole
# dependency closure comes from trixie and runs through trixie's own loader (see
# docs/standby.md). Idempotent.
set -euo pipefail

PREFIX=${BURROW_CRIU_PREFIX:-/opt/burrow/criu}
WRAPPER=$PREFIX/criu

if [ -x "$WRAPPER" ] && "$WRAPPER" --version >/dev/null 2>&1; then
  echo "==> CRIU present: $("$WRAPPER" --version | head -1)"
  exit 0
fi

echo "==> installing CRIU 4 (Debian trixie) into $PREFIX"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{lists/partial,cache/archives/partial,etc,debs}
echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main' \
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
# CRIU 4 from trixie, run through trixie's loader and libraries.
exec $PREFIX/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path $PREFIX/usr/lib/x86_64-linux-gnu $PREFIX/usr/sbin/criu "\$@"
WRAP
chmod 0755 "$PREFIX.new/criu"
rm -rf "$PREFIX"
mv "$PREFIX.new" "$PREFIX"
"$WRAPPER" --version | head -1
