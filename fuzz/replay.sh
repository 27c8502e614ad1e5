#!/usr/bin/env bash
# Re-runs every saved reproducer under fuzz/regressions/<target>/ once. Exits non-zero while any
# of them still crashes (so it passes once the bugs they record are fixed).
#
#   fuzz/replay.sh [TARGET...]
set -u -o pipefail
FUZZ_DIR="$(cd "$(dirname "$0")" && pwd)"
cd "$FUZZ_DIR/.." || exit 2
export RUSTC_BOOTSTRAP=1
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    for d in "$FUZZ_DIR"/regressions/*/; do
        [ -d "$d" ] && targets+=("$(basename "$d")")
    done
fi
cargo fuzz build -O -a || exit 2
failed=0
for t in "${targets[@]}"; do
    for f in "$FUZZ_DIR/regressions/$t"/*; do
        [ -f "$f" ] || continue
        case "$f" in *.md|*.txt|*.pcap|*.py) continue ;; esac
        if cargo fuzz run -O -a "$t" "$f" -- -runs=1 -rss_limit_mb=2048 -timeout=10 \
            >/tmp/stripwatch-replay.log 2>&1; then
            echo "fixed    $t/$(basename "$f")"
        else
            echo "REPRO    $t/$(basename "$f")"
            grep -E 'panicked at|ERROR: |SUMMARY' /tmp/stripwatch-replay.log | head -3 | sed 's/^/         /'
            failed=1
        fi
    done
done
exit "$failed"
