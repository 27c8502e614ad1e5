#!/usr/bin/env bash
# Runs every fuzz target for SECONDS_PER_TARGET seconds (default 60) and exits non-zero if any
# target found a crash, panic, timeout or out-of-memory input.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]
#
# Environment:
#   FUZZ_JOBS=2         targets run at once (default 1; the fuzzing itself is single-threaded)
#   FUZZ_TARGETS="a b"  only these targets (default: all)
#   FUZZ_NICE=10        niceness of the fuzzing processes (0 to disable)
#   FUZZ_TIMEOUT=10     seconds one input may take before it counts as a hang
#
# Only a stable toolchain is needed: cargo-fuzz's nightly flags are enabled with
# RUSTC_BOOTSTRAP=1. New corpus entries go to fuzz/corpus/<target>/ (not committed), crashes to
# fuzz/artifacts/<target>/, logs to fuzz/logs/<target>.log. Minimise a crash with
#   RUSTC_BOOTSTRAP=1 cargo fuzz tmin -O -a <target> fuzz/artifacts/<target>/crash-...
# and keep the reproducer under fuzz/regressions/<target>/ (fuzz/replay.sh re-runs them).
set -u -o pipefail

SECONDS_PER_TARGET="${1:-60}"
case "$SECONDS_PER_TARGET" in
    ''|*[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET]" >&2; exit 2 ;;
esac
JOBS="${FUZZ_JOBS:-1}"
NICE="${FUZZ_NICE:-10}"
TIMEOUT="${FUZZ_TIMEOUT:-10}"
ALL_TARGETS="decode reassembly smtp_session smtp_lines tls_records capture_file certificates dns sts_fetch json_writer dns_fast_vs_hickory"
TARGETS="${FUZZ_TARGETS:-$ALL_TARGETS}"

FUZZ_DIR="$(cd "$(dirname "$0")" && pwd)"
cd "$FUZZ_DIR/.." || exit 2
export RUSTC_BOOTSTRAP=1
# -O: optimised; -a: debug assertions and overflow checks on, so that arithmetic that would
# panic in a debug build is found too. Every target uses the same flags: one build serves all.
BUILD_FLAGS=(-O -a)

max_len() {
    case "$1" in
        decode) echo 8192 ;;
        reassembly) echo 4096 ;;
        smtp_session) echo 16384 ;;
        smtp_lines) echo 4096 ;;
        tls_records) echo 4096 ;;
        capture_file) echo 32768 ;;
        *) echo 4096 ;;
    esac
}

extra_args() {
    case "$1" in
        smtp_session|smtp_lines) echo "-dict=$FUZZ_DIR/dicts/smtp.dict" ;;
    esac
}

nice_cmd=()
if [ "$NICE" != 0 ]; then nice_cmd=(nice -n "$NICE"); fi

echo "== building fuzz targets (cargo fuzz build ${BUILD_FLAGS[*]})"
if ! "${nice_cmd[@]}" cargo fuzz build "${BUILD_FLAGS[@]}"; then
    echo "build failed" >&2
    exit 2
fi

mkdir -p "$FUZZ_DIR/logs"

run_target() {
    local t="$1"
    local log="$FUZZ_DIR/logs/$t.log"
    mkdir -p "$FUZZ_DIR/corpus/$t" "$FUZZ_DIR/artifacts/$t"
    local seeds=()
    [ -d "$FUZZ_DIR/seeds/$t" ] && seeds=("$FUZZ_DIR/seeds/$t")
    # shellcheck disable=SC2046
    "${nice_cmd[@]}" cargo fuzz run "${BUILD_FLAGS[@]}" "$t" \
        "$FUZZ_DIR/corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$SECONDS_PER_TARGET" \
        -rss_limit_mb=2048 \
        -malloc_limit_mb=2048 \
        -max_len="$(max_len "$t")" \
        -timeout="$TIMEOUT" \
        -print_final_stats=1 \
        $(extra_args "$t") >"$log" 2>&1
    local rc=$?
    local final
    final="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1)"
    [ -z "$final" ] && final="$(grep -E '^#[0-9]+' "$log" | tail -1)"
    local execs rate
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
    if [ "$rc" -eq 0 ]; then
        echo "ok    $t: runs=${execs:-?} exec/s=${rate:-?} | $final"
    else
        echo "FAIL  $t (exit $rc): see $log"
        grep -E 'ERROR: libFuzzer|ERROR: AddressSanitizer|panicked at|^SUMMARY|Test unit written to' "$log" \
            | head -8 | sed 's/^/      /'
    fi
    return "$rc"
}

failed=0
pids=()
names=()
for t in $TARGETS; do
    run_target "$t" &
    pids+=($!)
    names+=("$t")
    if [ "${#pids[@]}" -ge "$JOBS" ]; then
        wait "${pids[0]}" || failed=1
        pids=("${pids[@]:1}")
        names=("${names[@]:1}")
    fi
done
for p in "${pids[@]}"; do
    wait "$p" || failed=1
done

if [ "$failed" -ne 0 ]; then
    echo "== at least one target failed" >&2
    exit 1
fi
echo "== all targets ran ${SECONDS_PER_TARGET}s without a finding"
