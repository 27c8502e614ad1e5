#!/usr/bin/env bash
# The full test suite on a fresh machine: installs what it needs, checks formatting and lints,
# then runs every test (unit tests, the scenario captures, and end-to-end captures made with real
# Postfix in network namespaces). Set STRIPWATCH_SKIP_REAL=1 to skip the namespace test where you
# are not root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# The end-to-end tests run the capture scripts at once; install what they need first, one at a
# time, so that they never race for apt's lock.
if [ "$(id -u)" = 0 ] && [ "${STRIPWATCH_SKIP_REAL:-}" != 1 ]; then
    for script in real-captures tls-captures dns-captures auth-captures sts-captures; do
        bash "scripts/$script/make.sh" --install-only
    done
fi
command -v cargo >/dev/null || { echo "test.sh: cargo not found (install Rust with rustup)" >&2; exit 1; }
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings
# The fuzz targets are their own workspace (cargo fuzz needs nightly to run them, but not to
# build them): checking them here keeps them from rotting when the library's types change.
cargo check --manifest-path fuzz/Cargo.toml --bins
cargo test --release --workspace
