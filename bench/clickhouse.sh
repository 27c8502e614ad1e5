#!/usr/bin/env bash
# Events per second into ClickHouse, end to end: `stripwatch analyze CAPTURE --clickhouse URL`
# on the bench capture (the one bench/run.sh makes: `stripwatch-synth mixed --seed 1`, ~1 GB),
# against a throwaway local clickhouse-server started here. "Events" are the rows ClickHouse
# acknowledged (sessions + findings + DNS transactions + certificates); the same run without
# --clickhouse is timed too, so the cost of the sink shows as a ratio. Measured, never asserted.
#
#   bench/clickhouse.sh              # the ~1 GB bench capture (reused from bench/work if there)
#   bench/clickhouse.sh --quick      # ~100 MB
#   bench/clickhouse.sh --sessions N
#
# Options:
#   --quick          ~100 MB capture instead of ~1 GB
#   --sessions N     sessions in the capture (default: calibrated to the target size)
#   --runs N         timed runs of each variant (default 3; the median is reported)
#   --batch-rows N   --clickhouse-batch-rows (default: stripwatch's, 50000)
#   --no-build       use the existing target/release/stripwatch and stripwatch-synth
# Environment: BENCH_SESSIONS, BENCH_RUNS, BENCH_TARGET_MB (default 1000, quick 100).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
WORK="$HERE/work/clickhouse"
SW="$ROOT/target/release/stripwatch"
SYNTH="$ROOT/target/release/stripwatch-synth"
SESSIONS="${BENCH_SESSIONS:-}"
RUNS="${BENCH_RUNS:-3}"
TARGET_MB="${BENCH_TARGET_MB:-}"
QUICK=0
BUILD=1
BATCH=()

die() { echo "bench/clickhouse: error: $*" >&2; exit 1; }
say() { echo "bench/clickhouse: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --sessions) SESSIONS="${2:?--sessions needs a number}"; shift ;;
        --runs) RUNS="${2:?--runs needs a number}"; shift ;;
        --batch-rows) BATCH=(--clickhouse-batch-rows "${2:?--batch-rows needs a number}"); shift ;;
        --no-build) BUILD=0 ;;
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
command -v curl >/dev/null || die "curl is needed"
command -v python3 >/dev/null || die "python3 is needed"
SERVER=$(command -v clickhouse-server || ls /usr/sbin/clickhouse-server 2>/dev/null || true)
SERVER_ARGS=()
if [ -z "$SERVER" ] && command -v clickhouse >/dev/null; then
    SERVER=$(command -v clickhouse); SERVER_ARGS=(server)
fi
[ -n "$SERVER" ] || die "clickhouse-server is not installed (scripts/install-deps.sh installs it)"

mkdir -p "$WORK"
if [ "$BUILD" = 1 ]; then
    say "cargo build --release --workspace"
    (cd "$ROOT" && cargo build --release --workspace --quiet) || die "cargo build --release failed"
fi
[ -x "$SW" ] || die "$SW not found"
cp "$SW" "$WORK/stripwatch"
SW="$WORK/stripwatch"

# The capture: bench/run.sh's when it exists and nothing else was asked for, else our own.
CAPTURE="$HERE/work/mixed.pcap"
if [ "$QUICK" = 1 ] || [ -n "$SESSIONS" ] || [ ! -f "$CAPTURE" ]; then
    CAPTURE="$WORK/mixed.pcap"
    [ -x "$SYNTH" ] || die "$SYNTH not found (cargo build --release --workspace builds it)"
    if [ -z "$SESSIONS" ]; then
        "$SYNTH" mixed "$WORK/calibrate.pcap" --sessions 2000 --seed 1 2>/dev/null
        per=$(( $(stat -c %s "$WORK/calibrate.pcap") / 2000 ))
        rm -f "$WORK/calibrate.pcap"
        SESSIONS=$(( TARGET_MB * 1000000 / per ))
    fi
    say "generating $CAPTURE ($SESSIONS sessions)"
    "$SYNTH" mixed "$CAPTURE" --sessions "$SESSIONS" --seed 1 >&2
fi
CAPTURE_BYTES=$(stat -c %s "$CAPTURE")

# A throwaway server: data in $WORK/server, HTTP on a free loopback port.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SDIR="$WORK/server"
rm -rf "$SDIR"; mkdir -p "$SDIR/data"
cat >"$SDIR/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>$SDIR/server.log</log><errorlog>$SDIR/server.err.log</errorlog></logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$PORT</http_port>
    <path>$SDIR/data/</path>
    <tmp_path>$SDIR/data/tmp/</tmp_path>
    <user_files_path>$SDIR/data/user_files/</user_files_path>
    <format_schema_path>$SDIR/data/format_schemas/</format_schema_path>
    <users_config>$SDIR/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>268435456</mark_cache_size>
</yandex>
EOF
cat >"$SDIR/users.xml" <<'EOF'
<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>8000000000</max_memory_usage></default></profiles>
    <users><default><password></password><networks><ip>127.0.0.1</ip></networks>
        <profile>default</profile><quota>default</quota></default></users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
        <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
    </interval></default></quotas>
</yandex>
EOF
"$SERVER" "${SERVER_ARGS[@]}" --config-file="$SDIR/config.xml" >"$SDIR/stdout.log" 2>&1 &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$PORT/ping" >/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "clickhouse-server exited: $(tail -5 "$SDIR/stdout.log")"
    sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/ping" >/dev/null || die "clickhouse-server did not answer /ping"
URL="http://127.0.0.1:$PORT"
q() { curl -sfS "$URL/" --data-binary "$1"; }
VERSION=$(q "SELECT version()")
say "clickhouse-server $VERSION on port $PORT; capture $(( CAPTURE_BYTES / 1000000 )) MB"
cat "$CAPTURE" >/dev/null  # page cache: time the pipeline, not the disk

TIME=()
[ -x /usr/bin/time ] && TIME=(/usr/bin/time -f '%M' -o "$WORK/rss")
RESULTS="$WORK/runs.tsv"
: >"$RESULTS"
for ((r = 1; r <= RUNS; r++)); do
    for variant in files clickhouse; do
        rm -rf "$WORK/out"
        args=(analyze "$CAPTURE" --out "$WORK/out" --no-progress --json)
        if [ "$variant" = clickhouse ]; then
            q "DROP DATABASE IF EXISTS stripwatch" >/dev/null
            "$SW" schema apply --clickhouse "$URL" 2>/dev/null
            args+=(--clickhouse "$URL" "${BATCH[@]}")
        fi
        t0=$(date +%s%N)
        "${TIME[@]}" "$SW" "${args[@]}" >"$WORK/summary.json" || die "stripwatch ${args[*]} failed"
        t1=$(date +%s%N)
        rss=0; [ -f "$WORK/rss" ] && rss=$(cat "$WORK/rss")
        read -r events waits state ins < <(python3 - "$WORK/summary.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
c = s.get("clickhouse")
if c:
    print(sum(c["rows_sent"].values()), c["queue_full_waits"], c["state"], c["insert_seconds"])
else:
    n = s["sessions"] + sum(s["findings_by_kind"].values()) + s["dns_transactions"]
    print(n, 0, "-", 0)
EOF
)
        if [ "$variant" = clickhouse ]; then
            [ "$state" = delivered ] || die "run $r: ClickHouse state $state"
            lines=$(cat "$WORK/out"/{sessions,findings,dns,certificates}.ndjson | wc -l)
            stored=$(q "SELECT (SELECT count() FROM stripwatch.sessions FINAL) + (SELECT count() FROM stripwatch.findings FINAL) + (SELECT count() FROM stripwatch.dns FINAL) + (SELECT count() FROM stripwatch.certificates FINAL)")
            [ "$stored" = "$lines" ] || die "run $r: $stored rows in ClickHouse, $lines in the ndjson files"
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$variant" "$r" "$(( (t1 - t0) / 1000000 ))" "$events" "$waits" "$rss" "$ins" >>"$RESULTS"
        say "  run $r $variant: $(( (t1 - t0) / 1000000 )) ms, $events events"
    done
done

python3 - "$RESULTS" "$CAPTURE_BYTES" "$VERSION" "$(nproc)" <<'EOF'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
size, version, cores = int(sys.argv[2]), sys.argv[3], sys.argv[4]
def med(variant, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == variant)
files_ms, ch_ms = med("files", 2), med("clickhouse", 2)
events = med("clickhouse", 3)
print(f"ClickHouse {version}, {cores} cores, capture {size / 1e6:.0f} MB, "
      f"median of {len(rows) // 2} runs\n")
print("| run | wall | events/s | MB/s | peak RSS | queue-full waits |")
print("|---|---|---|---|---|---|")
for name, v, ms in [("ndjson files only", "files", files_ms), ("ndjson + ClickHouse", "clickhouse", ch_ms)]:
    print(f"| {name} | {ms / 1000:.2f} s | {med(v, 3) / (ms / 1000):,.0f} | "
          f"{size / 1e6 / (ms / 1000):.0f} | {med(v, 5) / 1024:.0f} MiB | {med(v, 4):.0f} |")
ins = med("clickhouse", 6)
print(f"\n{events:,.0f} events (rows acknowledged by ClickHouse) per run; "
      f"ClickHouse costs x{ch_ms / files_ms:.2f} wall time. The INSERTs themselves took "
      f"{ins:.2f} s: {events / max(ins, 1e-9):,.0f} rows/s while inserting.")
print(f"Load average at the end: {open('/proc/loadavg').read().split()[0]}")
EOF
