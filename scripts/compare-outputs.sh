#!/usr/bin/env bash
# Proves that a change left stripwatch's outputs unchanged: runs two binaries over every capture
# in pcaps/ and in ../shared/thirdparty-pcaps, one capture at a time, and once over all of
# pcaps/ together (so cross-session judgements and the report see many sessions), with one and
# with two workers, and compares sessions, findings, DNS, certificates and the CSV report byte
# for byte. summary.json is compared without its wall-clock field (elapsed_seconds), and with
# two workers without the capture-order merge's peaks (they vary with thread scheduling).
# COMPARE_SORT_KEYS=1 rewrites every .ndjson line with its keys sorted before comparing, for a
# change that only reorders keys (values and lines must still match exactly).
# COMPARE_IGNORE_SUMMARY_KEYS=a,b leaves those top-level keys out of summary.json on both sides,
# for a change that adds a summary object (e.g. `memory`).
#
# Usage: scripts/compare-outputs.sh BEFORE_BINARY AFTER_BINARY [WORKDIR]
# Exit status 0 and "identical" when every output matches; otherwise the differing files are
# listed and the status is 1.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 BEFORE_BINARY AFTER_BINARY [WORKDIR]" >&2; exit 2; }
before=$1
after=$2
root="$(cd "$(dirname "$0")/.." && pwd)"
work=${3:-$(mktemp -d)}
corpus="$root/../shared/thirdparty-pcaps/pcaps"
mkdir -p "$work"

# Options some bundled captures are judged with (their TLSA files and test root), as the
# scenario tests pass them.
extra_for() {
    local base=$1
    case "$base" in
        tls-dane-mismatch) echo "--tlsa $root/pcaps/tls-dane-mismatch.tlsa --trust-anchors $root/pcaps/tls-test-root-ca.pem" ;;
        tls-dane) echo "--tlsa $root/pcaps/tls-dane.tlsa --trust-anchors $root/pcaps/tls-test-root-ca.pem" ;;
        tls-*) echo "--trust-anchors $root/pcaps/tls-test-root-ca.pem" ;;
        *) echo "" ;;
    esac
}

run_one() { # BINARY OUTDIR WORKERS CAPTURE... -- EXTRA...
    local bin=$1 out=$2 workers=$3
    shift 3
    # shellcheck disable=SC2086
    "$bin" analyze "$@" --out "$out" --workers "$workers" --sensor compare >/dev/null 2>"$out.stderr" ||
        echo "exit $?" >>"$out.stderr"
    if [ -f "$out/summary.json" ]; then
        python3 - "$out/summary.json" "$workers" <<'EOF'
import json, os, sys
p = sys.argv[1]
s = json.load(open(p))
s.pop("elapsed_seconds", None)
# With more than one worker, how many records wait in the capture-order merge at its fullest
# depends on how the workers' outputs interleave (thread scheduling): the same binary gives
# different peaks from run to run. What is released, and in which order, does not change.
if int(sys.argv[2]) > 1:
    order = s.get("memory", {}).get("windows", {}).get("order", {})
    for key in [k for k in order if k.startswith("peak")]:
        order.pop(key)
for key in filter(None, os.environ.get("COMPARE_IGNORE_SUMMARY_KEYS", "").split(",")):
    s.pop(key, None)
json.dump(s, open(p + ".stable", "w"), indent=1, sort_keys=True)
EOF
        rm "$out/summary.json"
    fi
    rm -rf "$out/report.html" "$out/report.md"
    if [ "${COMPARE_SORT_KEYS:-}" = 1 ]; then
        python3 - "$out" <<'EOF'
import glob, json, sys
for p in glob.glob(sys.argv[1] + "/*.ndjson"):
    lines = [json.dumps(json.loads(l), sort_keys=True) for l in open(p)]
    open(p, "w").write("".join(l + "\n" for l in lines))
EOF
    fi
}

captures=()
for f in "$root"/pcaps/*.pcap "$root"/pcaps/*.pcapng "$root"/pcaps/*.pcap.gz "$root"/pcaps/*.pcap.zst; do
    [ -e "$f" ] && captures+=("$f")
done
if [ -d "$corpus" ]; then
    for f in "$corpus"/*; do captures+=("$f"); done
else
    echo "compare-outputs: $corpus not found; comparing pcaps/ only" >&2
fi

n=0
for side in before after; do
    bin=$before
    [ "$side" = after ] && bin=$after
    mkdir -p "$work/$side"
    for f in "${captures[@]}"; do
        name=$(basename "$f")
        base=${name%%.*}
        # shellcheck disable=SC2046
        run_one "$bin" "$work/$side/$name" 1 "$f" $(extra_for "$base")
    done
    bundled=()
    for f in "${captures[@]}"; do
        case "$f" in "$root"/pcaps/*) bundled+=("$f") ;; esac
    done
    run_one "$bin" "$work/$side/all-bundled-1" 1 "${bundled[@]}"
    run_one "$bin" "$work/$side/all-bundled-2" 2 "${bundled[@]}"
done
n=${#captures[@]}
# The stderr files name the output directory, which differs between the two sides.
sed -i "s#$work/before#WORK#g" "$work"/before/*.stderr
sed -i "s#$work/after#WORK#g" "$work"/after/*.stderr
if diff -r "$work/before" "$work/after" >"$work/diff.txt"; then
    echo "identical: $n captures one at a time and all of pcaps/ with 1 and 2 workers ($work)"
else
    echo "DIFFERENT ($work/diff.txt):"
    grep -E '^(diff|Only in)' "$work/diff.txt" | head -40
    exit 1
fi
