#!/usr/bin/env bash
# Runs stripwatch on bundled captures with the embedded default (no server needed): real Postfix
# deliveries through a box that overwrites STARTTLS, one that deletes it, and one that breaks the
# TLS handshake so that Postfix falls back to plaintext. Results go to out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --build-only   # a C compiler for the build; the tests' packages are not needed
cargo build --release --quiet
./target/release/stripwatch analyze \
    pcaps/real-postfix-starttls-ok.pcap pcaps/real-postfix-overwrite.pcap \
    pcaps/real-postfix-missing.pcap pcaps/real-postfix-break-tls.pcap \
    pcaps/real-postfix-reject.pcap \
    --out out/demo "$@"
