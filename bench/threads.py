#!/usr/bin/env python3
"""Where a run's threads spend their time: runs a command and prints, for every 100 ms of wall
clock, the CPU milliseconds each of its threads used, with the total as a share of one core.

The per-thread times are the kernel's own (`/proc/PID/task/TID/schedstat`, nanoseconds on the
CPU), sampled every 20 ms, so nothing is added to the program. This is how issue 11's tail was
found: on two cores the first 90% of a dense capture runs at 190-200%, then the output thread
works alone on what was queued for it when the input ended, then the report.

    bench/threads.py -- taskset -c 0,1 target/release/stripwatch analyze bench/work/dense.pcap \\
        --out /tmp/threads-out --workers 2 --no-progress

Options before `--`: `--interval S` (sampling, default 0.02), `--bucket S` (rows, default 0.1).
Measured, never asserted: nothing in the test suite reads this.
"""

import argparse
import collections
import os
import subprocess
import sys
import time


def thread_times(pid):
    """{tid: (name, cpu ns)} for every live thread of `pid`."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
        except (OSError, ValueError, IndexError):
            continue
        out[tid] = (name, ns)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--bucket", type=float, default=0.1)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")
    if args.interval <= 0 or args.bucket < args.interval:
        parser.error("--interval must be positive and --bucket at least --interval")

    start = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    names = {}
    last = {}
    used = collections.defaultdict(collections.Counter)  # bucket -> tid -> ns
    while proc.poll() is None:
        now = time.monotonic() - start
        bucket = int(now / args.bucket)
        for tid, (name, ns) in thread_times(proc.pid).items():
            names[tid] = name
            used[bucket][tid] += ns - last.get(tid, 0)
            last[tid] = ns
        time.sleep(args.interval)
    wall = time.monotonic() - start

    tids = sorted(names, key=int)
    width = max([8] + [len(f"{names[t]}/{t}") for t in tids])
    print(f"wall {wall:.2f} s, exit status {proc.returncode}; CPU ms per {args.bucket:g} s")
    print("    t(s) " + " ".join(f"{names[t] + '/' + t:>{width}}" for t in tids) + "    total")
    for bucket in sorted(used):
        row = used[bucket]
        total = sum(row.values())
        cells = " ".join(f"{row[t] / 1e6:>{width}.0f}" for t in tids)
        share = total / 1e9 / args.bucket * 100
        print(f"{bucket * args.bucket:8.1f} {cells} {share:7.0f}%")
    totals = {t: last.get(t, 0) for t in tids}
    print(
        "   total "
        + " ".join(f"{totals[t] / 1e6:>{width}.0f}" for t in tids)
        + f" {sum(totals.values()) / 1e9 / max(wall, 1e-9) * 100:7.0f}%"
    )
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
