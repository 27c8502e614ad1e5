#!/usr/bin/env bash
# Live capture at rising rates: the session-dense bench capture is replayed with tcpreplay into a
# veth pair inside a network namespace while `stripwatch live` captures on the other end, once
# per rate. Per run it prints what tcpreplay sent (packets/s, Mbit/s), what stripwatch captured
# and dropped (kernel and interface drops from pcap_stats), its CPU time, packets/s and Mbit/s
# per second of CPU, and its peak RSS; at the end, the highest rate with 0 drops. Not a test:
# the numbers depend on the machine and on what else runs (see bench/README.md).
#
#   sudo bench/live.sh                        # 20000 dense sessions, rates 25k 50k 100k 200k pps and top speed
#   sudo bench/live.sh --rates "10000 topspeed" --sessions 5000 --workers 2
#
# Options:
#   --sessions N   dense sessions in the capture (stripwatch-synth mixed --dense; default 20000,
#                  about 110 MB and 570 k frames)
#   --rates LIST   packets/s to replay at, in order; `topspeed` is tcpreplay --topspeed
#                  (default "25000 50000 100000 200000 topspeed")
#   --workers N    stripwatch live --workers (default 1; 2 uses PACKET_FANOUT)
#   --keep         keep bench/work/live (the capture and each run's output)
# Needs root, ip (iproute2), ethtool, tcpreplay, python3, GNU time (/usr/bin/time), and
# target/release/stripwatch and stripwatch-synth (cargo build --release --workspace).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
WORK="$HERE/work/live"
SW="$ROOT/target/release/stripwatch"
SYNTH="$ROOT/target/release/stripwatch-synth"
SESSIONS=20000
RATES="25000 50000 100000 200000 topspeed"
WORKERS=1
KEEP=0

die() { echo "bench/live: error: $*" >&2; exit 1; }
say() { echo "bench/live: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --sessions) SESSIONS=${2:?--sessions needs a number}; shift 2 ;;
        --rates) RATES=${2:?--rates needs a list}; shift 2 ;;
        --workers) WORKERS=${2:?--workers needs a number}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
for tool in ip ethtool tcpreplay python3 /usr/bin/time; do
    command -v "$tool" >/dev/null || die "$tool not found (scripts/install-deps.sh installs it)"
done
[ -x "$SW" ] && [ -x "$SYNTH" ] || die "build first: cargo build --release --workspace"

NS="swbench-$$"
cleanup() {
    ip netns pids "$NS" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    [ "$KEEP" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

mkdir -p "$WORK"
CAP="$WORK/dense-$SESSIONS.pcap"
[ -s "$CAP" ] || "$SYNTH" mixed "$CAP" --sessions "$SESSIONS" --dense >/dev/null
FRAMES=$(python3 - "$CAP" <<'EOF'
import struct, sys
# Counts the records of a classic pcap (what stripwatch-synth writes).
with open(sys.argv[1], "rb") as f:
    head = f.read(24)
    endian = "<" if head[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    n = 0
    while True:
        rec = f.read(16)
        if len(rec) < 16:
            break
        incl = struct.unpack(endian + "IIII", rec)[2]
        f.seek(incl, 1)
        n += 1
print(n)
EOF
)
say "capture $CAP: $FRAMES frames, $(stat -c %s "$CAP") bytes"

# One namespace: the replay end swb0 and the capture end swb1, offloads off so that frames
# arrive as captured, IPv6 off so that the link carries nothing but the replay.
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add swb0 type veth peer name swb1
for dev in swb0 swb1; do
    ip netns exec "$NS" ethtool -K "$dev" tso off gso off gro off tx off rx off >/dev/null 2>&1 || true
    ip netns exec "$NS" sysctl -qw "net.ipv6.conf.$dev.disable_ipv6=1"
    ip -n "$NS" link set "$dev" up
done

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
for rate in $RATES; do
    out="$WORK/run-$rate"
    rm -rf "$out"
    mkdir -p "$out"
    ip netns exec "$NS" /usr/bin/time -f "%U %S %M" -o "$out/time" \
        "$SW" live -i swb1 --out "$out/records" --workers "$WORKERS" --allow-root \
        --hold 3600 --no-report --json --log-interval 1 >"$out/summary.json" 2>"$out/stderr" &
    live=$!
    for _ in $(seq 200); do
        grep -q "capturing on swb1" "$out/stderr" 2>/dev/null && break
        kill -0 "$live" 2>/dev/null || die "stripwatch live ended at start: $(cat "$out/stderr")"
        sleep 0.1
    done
    if [ "$rate" = topspeed ]; then speed=(--topspeed); else speed=(--pps "$rate"); fi
    ip netns exec "$NS" tcpreplay -i swb0 "${speed[@]}" "$CAP" >"$out/tcpreplay" 2>&1 ||
        die "tcpreplay failed: $(tail -3 "$out/tcpreplay")"
    sleep 2
    # $live is GNU time (ip netns exec execs it); the signal is for stripwatch, its child.
    pkill -TERM -P "$live"
    wait "$live" || die "stripwatch live failed: $(tail -3 "$out/stderr")"
    python3 - "$rate" "$out" "$FRAMES" >>"$RESULTS" <<'EOF'
import json, re, sys
rate, out, frames = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = json.load(open(out + "/summary.json"))
cap = s["capture"]
text = open(out + "/tcpreplay").read()
pps = re.search(r"Rated: [\d.]+ Bps, ([\d.]+) Mbps, ([\d.]+) pps", text)
mbps, sent_pps = (float(pps.group(1)), float(pps.group(2))) if pps else (0.0, 0.0)
user, sys_, rss_kb = open(out + "/time").read().split()[-3:]
cpu = float(user) + float(sys_)
per_core_pps = cap["packets"] / cpu if cpu else 0.0
per_core_mbps = cap["bytes"] * 8 / 1e6 / cpu if cpu else 0.0
print("\t".join(str(v) for v in [
    rate, round(sent_pps), round(mbps, 1), cap["packets"], frames, cap["kernel_drops"],
    cap["interface_drops"], round(cpu, 2), round(per_core_pps), round(per_core_mbps, 1),
    int(rss_kb) // 1024, s["sessions"]]))
EOF
    say "rate $rate done: $(tail -1 "$RESULTS" | cut -f2,4,6 | tr '\t' ' ') (sent pps, captured, kernel drops)"
done

echo
echo "stripwatch live --workers $WORKERS, $FRAMES frames of $SESSIONS dense sessions per run"
echo
echo "| asked | sent pkt/s | sent Mbit/s | captured | of | kernel drops | if drops | CPU s | pkt/s per CPU s | Mbit/s per CPU s | peak RSS MiB | sessions |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
while IFS=$'\t' read -r asked sent mbps got of kd ifd cpu ppc mpc rss sessions; do
    echo "| $asked | $sent | $mbps | $got | $of | $kd | $ifd | $cpu | $ppc | $mpc | $rss | $sessions |"
done <"$RESULTS"
best=$(awk -F'\t' '$6 == 0 && $4 == $5 { if ($2 > b) b = $2 } END { print b + 0 }' "$RESULTS")
echo
echo "highest rate with 0 drops and every frame captured: $best pkt/s"
