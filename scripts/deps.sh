#!/usr/bin/env bash
# Installs every system package burrow needs (idempotent; Debian 12, as root).
set -euo pipefail

PACKAGES=(
  debootstrap uidmap nftables btrfs-progs iproute2 conntrack procps
  util-linux e2fsprogs ca-certificates curl pkg-config gcc make
  python3 python3-venv python3-pip
)

if [ "$(id -u)" -ne 0 ]; then
  echo "deps.sh: run as root (it installs system packages)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing system packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "==> system packages present"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "deps.sh: cargo not found; install the Rust toolchain (rustup) first" >&2
  exit 1
fi

# CRIU 4 for deep standby (bookworm's 3.17 does not work on current kernels).
"$(dirname "$0")/install-criu.sh"

# Node.js >= 20.18.1 for the E2B JS SDK end-to-end test (crates/burrow-server/tests/e2b_sdk.rs;
# the pinned e2b 2.51.0 requires it). Debian 12's nodejs is 18.x: use NodeSource's nodejs 20.
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 18) ? 0 : 1)' 2>/dev/null; then
  echo "deps.sh: warning: Node.js >= 20.18.1 (with npm) is needed for the E2B JS SDK test;" \
    "Debian 12 ships 18.x: install the nodejs 20 package from https://deb.nodesource.com" >&2
fi
