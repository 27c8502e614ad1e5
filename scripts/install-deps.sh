#!/usr/bin/env bash
# Installs the system packages stripwatch's build and tests need (Debian/Ubuntu, as root or via
# sudo), and chdb-core (a current ClickHouse engine embedded in Python, for the test that checks
# queries/ on a modern release). Safe to run again: installed packages are skipped. Retries once,
# because apt mirrors and the package index have been seen to fail transiently.
#
#   scripts/install-deps.sh               # build and tests (scripts/test.sh)
#   scripts/install-deps.sh --build-only  # build and run only (scripts/demo.sh)
set -euo pipefail

build_only=""
case "${1:-}" in
    "") ;;
    --build-only) build_only=1 ;;
    *) echo "install-deps: unknown argument: $1 (only --build-only)" >&2; exit 2 ;;
esac

# The build: a C compiler and linker (ring and zstd-sys compile bundled C sources with the cc
# crate), and libpcap for `stripwatch live`: the pcap crate links the system libpcap and finds
# it with pkg-config. Running stripwatch needs only libpcap's shared library, which libpcap-dev
# brings.
packages=(build-essential libpcap-dev pkg-config)
if [ -z "$build_only" ]; then
    # the tests: tcpdump, ip and openssl in the end-to-end captures; python3 for their scripts;
    # clickhouse-server/-client because the tests start a real server (Debian ships 18.16);
    # tcpreplay and ethtool for the live-capture test (tests/live.rs)
    packages+=(tcpdump iproute2 openssl python3 clickhouse-server clickhouse-client)
    packages+=(tcpreplay ethtool)
    # tests/cluster.rs runs ZooKeeper (zookeeperd's jar, started as a plain java process, not
    # as the service) under four ClickHouse servers
    packages+=(zookeeperd)
    packages+=(systemd)  # tests/packaging.rs checks the unit with systemd-analyze verify
    packages+=(chromium)  # tests/report.rs renders report.html in headless Chromium
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    ok=0
    for attempt in 1 2; do
        if $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
            ok=1
            break
        fi
        echo "install-deps: apt-get failed (attempt $attempt), retrying" >&2
        sleep 5
    done
    if [ "$ok" != 1 ]; then
        echo "install-deps: could not install: ${missing[*]}" >&2
        exit 1
    fi
fi

[ -z "$build_only" ] || exit 0

# chdb-core from PyPI, for the python3 the tests run.
if ! python3 -c 'import chdb' 2>/dev/null; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
        $SUDO apt-get install -y -qq --no-install-recommends python3-pip ||
            { echo "install-deps: python3-pip is missing and could not be installed" >&2; exit 1; }
    fi
    ok=0
    for attempt in 1 2; do
        # Debian's own python3 refuses pip installs outside a venv (PEP 668) unless told.
        if python3 -m pip install -q chdb-core 2>/dev/null ||
            python3 -m pip install -q --break-system-packages chdb-core; then
            ok=1
            break
        fi
        echo "install-deps: pip install chdb-core failed (attempt $attempt), retrying" >&2
        sleep 5
    done
    if [ "$ok" != 1 ] || ! python3 -c 'import chdb' 2>/dev/null; then
        echo "install-deps: could not install chdb-core (pip install chdb-core)" >&2
        exit 1
    fi
fi
