#!/usr/bin/env bash
# Installs the Debian packages named on the command line that are not
# installed yet (`apt-get update` first), as root or through sudo. The one
# place the test scripts get a system package from (chromium for the docs
# pages' browser test, podman and its kin for the container test).
#
# Usage: scripts/apt-install.sh <package>...
set -euo pipefail

missing=()
for pkg in "$@"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)
echo "apt-get install ${missing[*]}"
# Another apt run (a second test script, unattended upgrades) holds the lock
# for a while at most: wait for it rather than fail.
"${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 \
  install -y -qq --no-install-recommends "${missing[@]}"
