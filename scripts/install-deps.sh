#!/usr/bin/env bash
# Installs the system packages stripwatch's build and tests need (Debian/Ubuntu, as root or via
# sudo). Safe to run again: installed packages are skipped. Retries once, because apt mirrors
# have been seen to fail transiently.
set -euo pipefail

packages=(build-essential pkg-config libpcap-dev tcpdump iproute2 openssl python3)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
for attempt in 1 2; do
    if $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
        exit 0
    fi
    echo "install-deps: apt-get failed (attempt $attempt), retrying" >&2
    sleep 5
done
echo "install-deps: could not install: ${missing[*]}" >&2
exit 1
