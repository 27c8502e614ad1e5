#!/usr/bin/env bash
# Insert throughput through a cluster's Distributed tables against a single server: the same
# generated capture is analysed into a database with the single-server schema and into one with
# the cluster schema (`schema apply --cluster`), and the rows/s while inserting
# (rows_sent / insert_seconds of summary.json) and the wall time are printed for both.
#
# Usage: bench/cluster.sh SINGLE_URL CLUSTER_URL CLUSTER_NAME [SESSIONS]
#   SINGLE_URL   a server for the single-server schema (database sw_bench_single)
#   CLUSTER_URL  a node of the cluster CLUSTER_NAME (database sw_bench_cluster)
#   SESSIONS     sessions in the generated capture (default 100000, about 2.2 GB)
# Both databases are dropped first. Needs target/release/stripwatch and stripwatch-synth.
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,11p' "$0" >&2; exit 2; }
single=$1 cluster_url=$2 cluster=$3 sessions=${4:-100000}
root=$(cd "$(dirname "$0")/.." && pwd)
sw="$root/target/release/stripwatch"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$root/target/release/stripwatch-synth" mixed --sessions "$sessions" "$work/mixed.pcap" >/dev/null
curl -sf "$single" --data-binary "DROP DATABASE IF EXISTS sw_bench_single" >/dev/null
curl -sf "$cluster_url" --data-binary "DROP DATABASE IF EXISTS sw_bench_cluster ON CLUSTER $cluster" >/dev/null
"$sw" schema apply --clickhouse "$single/sw_bench_single"
"$sw" schema apply --clickhouse "$cluster_url/sw_bench_cluster" --cluster "$cluster"
for run in "single $single/sw_bench_single" "cluster $cluster_url/sw_bench_cluster"; do
    set -- $run
    start=$(date +%s.%N)
    "$sw" analyze "$work/mixed.pcap" --out "$work/$1" --no-report --json --clickhouse "$2" \
        | python3 -c '
import json, sys
c = json.load(sys.stdin)["clickhouse"]
n = sum(c["rows_sent"].values())
t = c["insert_seconds"]
print("%s: %d rows in %d INSERTs, %.2f s inserting, %.0f rows/s, state %s"
      % (sys.argv[1], n, c["batches_sent"], t, n / t, c["state"]))' "$1"
    echo "  wall time $(echo "$(date +%s.%N) - $start" | bc) s"
done
