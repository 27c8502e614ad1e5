#!/usr/bin/env bash
# Throughput and peak memory of stripwatch, Suricata 7 and tshark on the same generated
# capture. Prints Markdown tables (ready for the README) and writes bench/work/results.json.
# See bench/README.md for what is measured and why.
#
#   bench/run.sh                 # ~1 GB capture (plus a ~100 MB one for the memory check)
#   bench/run.sh --quick         # ~100 MB capture (plus a ~10 MB one)
#   bench/run.sh --sessions N    # N SMTP sessions in the main capture (or BENCH_SESSIONS=N)
#
# Two capture sets, each at two sizes: `mixed` (stripwatch-synth mixed, ~22 kB/session) and
# `dense` (stripwatch-synth mixed --dense, ~5 kB and ~28 packets per session, issue 11's
# shape; BENCH_DENSE_MB, default 256, quick 25). Every tool runs on all four captures.
#
# Options:
#   --quick            ~100 MB instead of ~1 GB
#   --sessions N       sessions in the main capture (default: calibrated to the target size)
#   --runs N           timed runs per tool and capture (default 3; median is reported)
#   --core C           core to pin single-threaded runs to (default 1; 0 on a 1-core machine)
#   --budget S         seconds a peer may spend on its timed runs of the main capture; a
#                      slower peer is measured on the ~100 MB capture instead (default 300)
#   --fallback         build the capture by repeating pcaps/real-*.pcap (mergecap/editcap)
#                      instead of `stripwatch-synth mixed` (used automatically if that
#                      binary was not built)
#   --no-install       do not apt-get anything; missing peers are skipped
#   --no-build         use the existing target/release/stripwatch (and stripwatch-synth)
#   --no-tshark-filter skip the second tshark variant (-Y smtp -T fields)
#   --clean            delete the generated captures at the end
#   --wait-idle M      before timing, wait up to M minutes for the machine to be idle (other
#                      processes using under 10% of the CPUs for 5 s); the bench then runs anyway
#
# Environment: BENCH_SESSIONS, BENCH_RUNS, BENCH_CORE, BENCH_BUDGET, BENCH_TARGET_MB (main
# capture size when --sessions is not given; default 1000, quick 100), BENCH_HELD (the
# --max-held-sessions of the bounded stripwatch run, default 1000).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
WORK="$HERE/work"
SW="$ROOT/target/release/stripwatch"
SYNTH="$ROOT/target/release/stripwatch-synth"
FLOOR="$ROOT/target/release/examples/floor"

QUICK=0
SESSIONS="${BENCH_SESSIONS:-}"
RUNS="${BENCH_RUNS:-3}"
CORE="${BENCH_CORE:-}"
BUDGET="${BENCH_BUDGET:-300}"
TARGET_MB="${BENCH_TARGET_MB:-}"
DENSE_MB="${BENCH_DENSE_MB:-}"
FALLBACK=0
INSTALL=1
BUILD=1
TSHARK_FILTER=1
CLEAN=0
WAIT_IDLE=0
SEED=1

die() { echo "bench: error: $*" >&2; exit 1; }
say() { echo "bench: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --sessions) SESSIONS="${2:?--sessions needs a number}"; shift ;;
        --sessions=*) SESSIONS="${1#*=}" ;;
        --runs) RUNS="${2:?--runs needs a number}"; shift ;;
        --core) CORE="${2:?--core needs a number}"; shift ;;
        --budget) BUDGET="${2:?--budget needs seconds}"; shift ;;
        --fallback) FALLBACK=1 ;;
        --no-install) INSTALL=0 ;;
        --no-build) BUILD=0 ;;
        --no-tshark-filter) TSHARK_FILTER=0 ;;
        --clean) CLEAN=1 ;;
        --wait-idle) WAIT_IDLE="${2:?--wait-idle needs minutes}"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive number"
[ -z "$SESSIONS" ] || [[ "$SESSIONS" =~ ^[1-9][0-9]*$ ]] || die "--sessions must be a positive number"
if [ -z "$TARGET_MB" ]; then
    if [ "$QUICK" = 1 ]; then TARGET_MB=100; else TARGET_MB=1000; fi
fi
if [ -z "$DENSE_MB" ]; then
    if [ "$QUICK" = 1 ]; then DENSE_MB=25; else DENSE_MB=256; fi
fi
if [ -z "$CORE" ]; then
    if [ "$(nproc)" -ge 2 ]; then CORE=1; else CORE=0; fi
fi

T_START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p "$WORK/logs"
rm -f "$WORK"/logs/*

# ---------------------------------------------------------------------------------------------
# 1. Tools
# ---------------------------------------------------------------------------------------------
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

apt_retry() {
    local attempt
    for attempt in 1 2; do
        if $SUDO env DEBIAN_FRONTEND=noninteractive "$@" >&2; then return 0; fi
        say "'$*' failed (attempt $attempt)"
        [ "$attempt" = 2 ] || sleep 5
    done
    return 1
}

install_tools() {
    local base=() want_suricata=0 codename=""
    command -v tshark >/dev/null || base+=(tshark)
    { command -v capinfos && command -v mergecap && command -v editcap; } >/dev/null || base+=(wireshark-common)
    [ -x /usr/bin/time ] || base+=(time)
    command -v python3 >/dev/null || base+=(python3)
    command -v suricata >/dev/null || want_suricata=1
    if [ ${#base[@]} -eq 0 ] && [ "$want_suricata" = 0 ]; then return 0; fi
    say "installing: ${base[*]} $([ "$want_suricata" = 1 ] && echo suricata)"
    codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    if [ "$want_suricata" = 1 ] && [ "$codename" = bookworm ]; then
        # Suricata 7 is not in bookworm main, only in bookworm-backports.
        if ! grep -rEqs '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
            echo 'deb http://deb.debian.org/debian bookworm-backports main' |
                $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
        fi
    fi
    echo "wireshark-common wireshark-common/install-setuid boolean false" |
        $SUDO debconf-set-selections 2>/dev/null || true
    apt_retry apt-get update -qq || say "apt-get update failed twice; trying the install anyway"
    if [ ${#base[@]} -gt 0 ]; then
        apt_retry apt-get install -y -qq "${base[@]}" || say "could not install ${base[*]}"
    fi
    if [ "$want_suricata" = 1 ]; then
        if [ "$codename" = bookworm ]; then
            apt_retry apt-get install -y -qq -t bookworm-backports suricata ||
                say "could not install suricata from bookworm-backports"
        else
            apt_retry apt-get install -y -qq suricata || say "could not install suricata"
        fi
    fi
}

[ "$INSTALL" = 1 ] && install_tools
[ -x /usr/bin/time ] || die "GNU time (/usr/bin/time) is needed for peak RSS: apt-get install time"
command -v python3 >/dev/null || die "python3 is needed for the report"
command -v taskset >/dev/null || die "taskset (util-linux) is needed"
HAVE_SURICATA=0; command -v suricata >/dev/null && HAVE_SURICATA=1
HAVE_TSHARK=0; command -v tshark >/dev/null && HAVE_TSHARK=1
[ "$HAVE_SURICATA" = 1 ] || say "suricata not available: it will be missing from the tables"
[ "$HAVE_TSHARK" = 1 ] || say "tshark not available: it will be missing from the tables"

# ---------------------------------------------------------------------------------------------
# 2. stripwatch and the captures
# ---------------------------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    say "cargo build --release --workspace"
    (cd "$ROOT" && cargo build --release --workspace --quiet &&
        cargo build --release -p stripwatch-synth --example floor --quiet) ||
        die "cargo build --release failed (use --no-build to bench the existing binary)"
fi
[ -x "$SW" ] || die "$SW not found (build it, or drop --no-build)"
# Bench a private copy: other people may rebuild target/release while this runs.
rm -f "$WORK/stripwatch"
cp "$SW" "$WORK/stripwatch"
SW="$WORK/stripwatch"
HAVE_FLOOR=0
if [ -x "$FLOOR" ]; then
    cp "$FLOOR" "$WORK/floor"; FLOOR="$WORK/floor"; HAVE_FLOOR=1
else
    say "no $FLOOR (cargo build --release -p stripwatch-synth --example floor): no decode floor"
fi

if [ "$FALLBACK" = 0 ] && ! "$SYNTH" mixed --help >/dev/null 2>&1; then
    say "no $SYNTH: using the fallback capture (repeated pcaps/real-*.pcap)"
    FALLBACK=1
fi

file_size() { stat -c %s "$1"; }

# Writes $1 with about $2 sessions (synth) or about $3 bytes (fallback); $4 may be --dense.
make_capture() {
    local out=$1 sessions=$2 target_bytes=$3 extra=${4:-}
    rm -f "$out"
    if [ "$FALLBACK" = 0 ]; then
        "$SYNTH" mixed "$out" --sessions "$sessions" --seed "$SEED" $extra 2>>"$WORK/logs/synth.log" ||
            die "stripwatch-synth mixed failed: $(tail -3 "$WORK/logs/synth.log")"
    else
        make_fallback_capture "$out" "$target_bytes"
    fi
}

# Fallback capture: the real captures concatenated, then doubled (each copy shifted in time
# past the end of the last one) until the target size is reached. The same 5-tuples repeat,
# one connection after another; every tool sees the same file, which is all a comparison needs.
make_fallback_capture() {
    local out=$1 target=$2 base="$WORK/fb-base.pcap" shifted="$WORK/fb-shift.pcap" tmp="$WORK/fb-tmp.pcap"
    local reals=("$ROOT"/pcaps/real-*.pcap)
    [ -e "${reals[0]}" ] || die "no pcaps/real-*.pcap for the fallback capture"
    mergecap -a -F pcap -w "$base" "${reals[@]}"
    while [ "$(file_size "$base")" -lt "$target" ]; do
        local span
        span=$(capinfos -T -r -a -e -S "$base" | awk -F'\t' '{printf "%d", $3 - $2 + 2}')
        editcap -t "$span" "$base" "$shifted"
        mergecap -a -F pcap -w "$tmp" "$base" "$shifted"
        mv "$tmp" "$base"
    done
    rm -f "$shifted"
    mv "$base" "$out"
}

MAIN_CAP="$WORK/mixed.pcap"
SMALL_CAP="$WORK/mixed-small.pcap"
# The small capture is a tenth of the main one (100 MB for the default ~1 GB).
SMALL_MB=$(( TARGET_MB / 10 ))
[ "$SMALL_MB" -ge 1 ] || SMALL_MB=1
if [ "$FALLBACK" = 0 ]; then
    if [ -z "$SESSIONS" ]; then
        # Calibrate: bytes per session of this generator, from 2000 sessions.
        make_capture "$WORK/calibrate.pcap" 2000 0
        per=$(( $(file_size "$WORK/calibrate.pcap") / 2000 ))
        rm -f "$WORK/calibrate.pcap"
        SESSIONS=$(( TARGET_MB * 1000000 / per ))
        [ "$SESSIONS" -ge 1 ] || SESSIONS=1
        SMALL_SESSIONS=$(( SMALL_MB * 1000000 / per ))
        say "generator writes ~$per bytes/session: $SESSIONS sessions for ~$TARGET_MB MB"
    else
        SMALL_SESSIONS=$(( SESSIONS / 10 ))
        [ "$SMALL_SESSIONS" -ge 1 ] || SMALL_SESSIONS=1
    fi
    GENERATOR="stripwatch-synth mixed --seed $SEED"
else
    SESSIONS=""; SMALL_SESSIONS=""
    GENERATOR="fallback: pcaps/real-*.pcap repeated with mergecap/editcap"
fi

say "generating $MAIN_CAP"
make_capture "$MAIN_CAP" "$SESSIONS" $(( TARGET_MB * 1000000 ))
MAIN_BYTES=$(file_size "$MAIN_CAP")
# The small capture is needed for the memory-growth check (and as the slice for slow peers).
say "generating $SMALL_CAP"
make_capture "$SMALL_CAP" "$SMALL_SESSIONS" $(( SMALL_MB * 1000000 ))
HAVE_SMALL=1

packets_of() {
    local n
    n=$(capinfos -M -c -T -r "$1" 2>/dev/null | awk -F'\t' 'NF>=2 {print $2; exit}') || true
    echo "${n:-}"
}

# The session-dense set (issue 11's shape), calibrated the same way.
declare -A CAPFILE=([main]="$MAIN_CAP" [small]="$SMALL_CAP")
HAVE_DENSE=0
if [ "$FALLBACK" = 0 ]; then
    make_capture "$WORK/calibrate.pcap" 2000 0 --dense
    per=$(( $(file_size "$WORK/calibrate.pcap") / 2000 ))
    rm -f "$WORK/calibrate.pcap"
    DENSE_SESSIONS=$(( DENSE_MB * 1000000 / per ))
    DENSE_SMALL_SESSIONS=$(( DENSE_SESSIONS / 8 ))
    [ "$DENSE_SMALL_SESSIONS" -ge 1 ] || DENSE_SMALL_SESSIONS=1
    say "dense generator writes ~$per bytes/session: $DENSE_SESSIONS sessions for ~$DENSE_MB MB"
    CAPFILE[dense]="$WORK/dense.pcap"
    CAPFILE[dense-small]="$WORK/dense-small.pcap"
    say "generating ${CAPFILE[dense]} and ${CAPFILE[dense-small]}"
    make_capture "${CAPFILE[dense]}" "$DENSE_SESSIONS" 0 --dense
    make_capture "${CAPFILE[dense-small]}" "$DENSE_SMALL_SESSIONS" 0 --dense
    HAVE_DENSE=1
fi

# Captures table: key, path, bytes, packets (capinfos), sessions.
CAPS="$WORK/logs/captures.tsv"
printf 'main\t%s\t%s\t%s\t%s\n' "$MAIN_CAP" "$MAIN_BYTES" "$(packets_of "$MAIN_CAP")" "$SESSIONS" >"$CAPS"
if [ "$HAVE_SMALL" = 1 ]; then
    printf 'small\t%s\t%s\t%s\t%s\n' "$SMALL_CAP" "$(file_size "$SMALL_CAP")" "$(packets_of "$SMALL_CAP")" "$SMALL_SESSIONS" >>"$CAPS"
fi
if [ "$HAVE_DENSE" = 1 ]; then
    printf 'dense\t%s\t%s\t%s\t%s\n' "${CAPFILE[dense]}" "$(file_size "${CAPFILE[dense]}")" \
        "$(packets_of "${CAPFILE[dense]}")" "$DENSE_SESSIONS" >>"$CAPS"
    printf 'dense-small\t%s\t%s\t%s\t%s\n' "${CAPFILE[dense-small]}" "$(file_size "${CAPFILE[dense-small]}")" \
        "$(packets_of "${CAPFILE[dense-small]}")" "$DENSE_SMALL_SESSIONS" >>"$CAPS"
fi

# ---------------------------------------------------------------------------------------------
# 3. Timed runs
# ---------------------------------------------------------------------------------------------
: >"$WORK/empty.rules"
RUNS_TSV="$WORK/logs/runs.tsv"
TOOLS_TSV="$WORK/logs/tools.tsv"
: >"$RUNS_TSV"
: >"$TOOLS_TSV"

# Command line of tool $1 on capture file $2, one word per line of the array CMD; STDOUT_TO says
# where its standard output goes.
build_cmd() {
    local tool=$1 file=$2
    STDOUT_TO="$WORK/logs/$tool.stdout"
    case "$tool" in
        stripwatch-1)
            CMD=(taskset -c "$CORE" "$SW" analyze "$file" --out "$WORK/sw-out" --workers 1 --no-progress) ;;
        stripwatch-2)
            CMD=(taskset -c "$CORES2" "$SW" analyze "$file" --out "$WORK/sw-out-2" --workers 2 --no-progress) ;;
        floor)
            CMD=(taskset -c "$CORE" "$FLOOR" "$file") ;;
        stripwatch-1-held)
            CMD=(taskset -c "$CORE" "$SW" analyze "$file" --out "$WORK/sw-out-held" --workers 1 --no-progress
                 --max-held-sessions "$HELD") ;;
        suricata)
            CMD=(taskset -c "$CORE" suricata -c "$HERE/suricata.yaml" -r "$file" --runmode single
                 -k none -l "$WORK/suri-out" -S "$WORK/empty.rules") ;;
        tshark)
            CMD=(taskset -c "$CORE" tshark -r "$file" -q -z io,stat,0) ;;
        tshark-smtp)
            CMD=(taskset -c "$CORE" tshark -r "$file" -Y smtp -T fields -e smtp.req.command)
            STDOUT_TO=/dev/null ;;
        *) die "unknown tool $tool" ;;
    esac
}

prepare() {
    case "$1" in
        stripwatch-1) rm -rf "$WORK/sw-out" ;;
        stripwatch-2) rm -rf "$WORK/sw-out-2" ;;
        stripwatch-1-held) rm -rf "$WORK/sw-out-held" ;;
        suricata) rm -rf "$WORK/suri-out"; mkdir -p "$WORK/suri-out" ;;
    esac
}

# measure TOOL CAPKEY RUN: one timed run; appends a line to runs.tsv.
measure() {
    local tool=$1 key=$2 run=$3 file t0 t1 tfile rc=0
    file=${CAPFILE[$key]}
    build_cmd "$tool" "$file"
    prepare "$tool"
    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    tfile="$WORK/logs/$tool.$key.$run.time"
    t0=$(date +%s%N)
    /usr/bin/time -v -o "$tfile" "${CMD[@]}" >"$STDOUT_TO" 2>"$WORK/logs/$tool.$key.$run.stderr" || rc=$?
    t1=$(date +%s%N)
    if [ "$rc" != 0 ]; then
        say "$tool on $key capture failed (exit $rc): ${CMD[*]}"
        tail -5 "$WORK/logs/$tool.$key.$run.stderr" >&2
        return 1
    fi
    local rss user sys
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tfile")
    user=$(awk -F': ' '/User time \(seconds\)/ {print $2}' "$tfile")
    sys=$(awk -F': ' '/System time \(seconds\)/ {print $2}' "$tfile")
    local wall
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.4f", (b - a) / 1e9}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$key" "$run" "$wall" "$rss" "$user" "$sys" "$load" >>"$RUNS_TSV"
    say "  $tool [$key] run $run: ${wall}s, peak RSS $(( rss / 1024 )) MiB"
    # The stripwatch summary (packets, sessions) of the single-worker run, for the report.
    if [ "$tool" = stripwatch-1 ] && [ -f "$WORK/sw-out/summary.json" ]; then
        cp "$WORK/sw-out/summary.json" "$WORK/logs/stripwatch-summary.$key.json"
    fi
    if [ "$tool" = suricata ] && [ -f "$WORK/suri-out/eve.json" ]; then
        python3 - "$WORK/suri-out/eve.json" >"$WORK/logs/suricata-events.$key.json" <<'EOF'
import collections, json, sys
c = collections.Counter()
with open(sys.argv[1], "rb") as f:
    for line in f:
        try:
            c[json.loads(line).get("event_type", "?")] += 1
        except ValueError:
            c["unparsable"] += 1
print(json.dumps(dict(sorted(c.items()))))
EOF
    fi
    return 0
}

# Each tool: label, the command as it is run (for the record), pinned or not.
# Two cores for the two-worker run: the pinned core and one other.
CORES2="${BENCH_CORES2:-0,1}"
TOOLS=(stripwatch-1)
[ "$(nproc)" -ge 2 ] && TOOLS+=(stripwatch-2)
[ "$HAVE_FLOOR" = 1 ] && TOOLS+=(floor)
# The correlator holds finished sessions for cross-session judgement (offline: for the whole
# run, up to --max-held-sessions, 200,000 by default), so stripwatch's memory grows with the
# session count up to that cap. A run with a small cap shows what the rest of the pipeline needs.
HELD="${BENCH_HELD:-1000}"
if "$SW" analyze --help 2>/dev/null | grep -q -- --max-held-sessions; then
    TOOLS+=(stripwatch-1-held)
fi
[ "$HAVE_SURICATA" = 1 ] && TOOLS+=(suricata)
[ "$HAVE_TSHARK" = 1 ] && TOOLS+=(tshark)
[ "$HAVE_TSHARK" = 1 ] && [ "$TSHARK_FILTER" = 1 ] && TOOLS+=(tshark-smtp)
for t in "${TOOLS[@]}"; do
    build_cmd "$t" '$FILE'
    pinned=yes; [ "${CMD[0]}" = taskset ] || pinned=no
    cmdline="${CMD[*]}"
    [ "$STDOUT_TO" = /dev/null ] && cmdline="$cmdline > /dev/null"
    printf '%s\t%s\t%s\n' "$t" "$pinned" "${cmdline//$ROOT\//}" >>"$TOOLS_TSV"
done

# Share of all CPUs busy over the next 5 seconds, in percent (from /proc/stat).
cpu_busy_pct() {
    local a b
    a=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $5+$6; exit}' /proc/stat)
    sleep 5
    b=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $5+$6; exit}' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN {split(a, x, " "); split(b, y, " ");
        busy = y[1] - x[1]; idle = y[2] - x[2];
        printf "%d", (busy + idle > 0) ? 100 * busy / (busy + idle) : 0}'
}
if [ "$WAIT_IDLE" != 0 ]; then
    deadline=$(( $(date +%s) + WAIT_IDLE * 60 ))
    while :; do
        busy=$(cpu_busy_pct)
        if [ "$busy" -lt 10 ]; then say "machine idle (${busy}% busy)"; break; fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            say "machine still ${busy}% busy after $WAIT_IDLE min: measuring anyway"; break
        fi
        say "machine ${busy}% busy: waiting for it to be idle"
        sleep 25
    done
fi

# Warm the page cache: every tool then reads from memory, so the numbers are CPU, not disk.
for key in "${!CAPFILE[@]}"; do cat "${CAPFILE[$key]}" >/dev/null; done

# Which capture each tool's headline numbers come from (main, unless it would take too long).
HEADLINE_TSV="$WORK/logs/headline.tsv"
: >"$HEADLINE_TSV"
FAILED=()

if [ "$HAVE_SMALL" = 1 ]; then
    # Pass 1, small capture: stripwatch $RUNS times (memory-growth check and the like-for-like
    # baseline for any peer measured on the slice), each peer once (its own growth check and
    # the projection of its time on the main capture).
    say "small capture ($(( $(file_size "$SMALL_CAP") / 1000000 )) MB)"
    for t in "${TOOLS[@]}"; do
        n=1; case "$t" in stripwatch-*) n=$RUNS ;; esac
        for ((r = 1; r <= n; r++)); do
            measure "$t" small "$r" || { FAILED+=("$t"); break; }
        done
    done
fi

say "main capture ($(( MAIN_BYTES / 1000000 )) MB)"
for t in "${TOOLS[@]}"; do
    if [[ " ${FAILED[*]:-} " == *" $t "* ]]; then continue; fi
    key=main
    if [ "$HAVE_SMALL" = 1 ] && [[ "$t" != stripwatch-* ]]; then
        small_wall=$(awk -F'\t' -v t="$t" '$1 == t && $2 == "small" {print $4; exit}' "$RUNS_TSV")
        projected=$(awk -v w="$small_wall" -v a="$MAIN_BYTES" -v b="$(file_size "$SMALL_CAP")" -v n="$RUNS" \
            'BEGIN {printf "%d", w * a / b * n}')
        if [ "$projected" -gt "$BUDGET" ]; then
            say "  $t: $RUNS runs on the main capture would take ~${projected}s (> ${BUDGET}s budget): measured on the small capture instead"
            key=small
            for ((r = 2; r <= RUNS; r++)); do measure "$t" small "$r" || { FAILED+=("$t"); break; }; done
        fi
    fi
    if [ "$key" = main ]; then
        for ((r = 1; r <= RUNS; r++)); do measure "$t" main "$r" || { FAILED+=("$t"); break; }; done
    fi
    printf '%s\t%s\n' "$t" "$key" >>"$HEADLINE_TSV"
done

if [ "$HAVE_DENSE" = 1 ]; then
    # The dense set: every tool on both sizes (small once for peers, for the memory table).
    for key in dense-small dense; do
        say "$key capture ($(( $(file_size "${CAPFILE[$key]}") / 1000000 )) MB)"
        for t in "${TOOLS[@]}"; do
            if [[ " ${FAILED[*]:-} " == *" $t "* ]]; then continue; fi
            n=$RUNS
            [ "$key" = dense-small ] && case "$t" in stripwatch-*) ;; *) n=1 ;; esac
            for ((r = 1; r <= n; r++)); do measure "$t" "$key" "$r" || { FAILED+=("$t"); break; }; done
        done
    done
fi

# ---------------------------------------------------------------------------------------------
# 4. Report
# ---------------------------------------------------------------------------------------------
{
    echo "nproc=$(nproc)"
    echo "cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "mem_total_kib=$(awk '/^MemTotal/ {print $2}' /proc/meminfo)"
    echo "kernel=$(uname -r)"
    echo "os=$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-}")"
    echo "stripwatch_version=$("$SW" --version 2>/dev/null | head -1)"
    echo "stripwatch_sha256=$(sha256sum "$SW" | cut -c1-16)"
    echo "stripwatch_commit=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || true)"
    echo "stripwatch_dirty=$(cd "$ROOT" && [ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ] && echo yes || echo no)"
    [ "$HAVE_SURICATA" = 1 ] && echo "suricata_version=$(suricata -V 2>/dev/null | head -1)"
    [ "$HAVE_TSHARK" = 1 ] && echo "tshark_version=$(tshark --version 2>/dev/null | head -1)"
    echo "mode=$([ "$QUICK" = 1 ] && echo quick || echo full)"
    echo "runs=$RUNS"
    echo "held=$HELD"
    echo "core=$CORE"
    echo "cores2=$CORES2"
    echo "budget_s=$BUDGET"
    echo "generator=$GENERATOR"
    echo "failed=${FAILED[*]:-}"
    echo "elapsed_s=$(( $(date +%s) - T_START ))"
    echo "load_start=$LOAD_START"
    echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$WORK/logs/meta.env"

python3 "$HERE/report.py" "$WORK/logs" "$WORK/results.json"

if [ "$CLEAN" = 1 ]; then
    for key in "${!CAPFILE[@]}"; do rm -f "${CAPFILE[$key]}"; done
    rm -rf "$WORK/sw-out" "$WORK/sw-out-2" "$WORK/sw-out-held" "$WORK/suri-out"
fi
[ ${#FAILED[@]} -eq 0 ] || die "failed: ${FAILED[*]} (logs in $WORK/logs)"
