#!/usr/bin/env python3
"""Runs stripwatch over the third-party captures in ../shared/thirdparty-pcaps (real traffic
from other projects' test suites) and compares per-file counts with tshark's view of them
(truth/summary.tsv). Prints one row per file where the two disagree; the disagreements are
explained in docs/thirdparty.md. Usage: scripts/thirdparty-compare.py [STRIPWATCH_BINARY]"""

import csv
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(os.path.dirname(ROOT), "shared", "thirdparty-pcaps")
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "release", "stripwatch")

# (truth column, function of our sessions)
COLUMNS = [
    ("smtp_sessions", lambda s: len(s)),
    ("starttls_advertised", lambda s: sum(1 for x in s if x["starttls_offered"])),
    ("starttls_sent", lambda s: sum(1 for x in s if x["starttls_sent"])),
    ("tls_handshakes", lambda s: sum(1 for x in s if x["tls_client_hello"])),
    ("stripped_markers", lambda s: sum(1 for x in s if "starttls-stripped" in x["findings"])),
    ("starttls_then_cleartext", lambda s: sum(1 for x in s if "cleartext-after-starttls" in x["findings"])),
]


def main():
    rows = list(csv.DictReader(open(os.path.join(CORPUS, "truth", "summary.tsv")), delimiter="\t"))
    disagreements = 0
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            name = row["file"]
            out = os.path.join(tmp, name)
            r = subprocess.run([BIN, "analyze", os.path.join(CORPUS, "pcaps", name), "--out", out, "--json"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                print(f"{name}: stripwatch failed: {r.stderr.strip()}")
                disagreements += 1
                continue
            sessions = [json.loads(l) for l in open(os.path.join(out, "sessions.ndjson"))]
            diffs = []
            for col, f in COLUMNS:
                ours, theirs = f(sessions), int(row[col])
                if ours != theirs:
                    diffs.append(f"{col}: tshark {theirs}, stripwatch {ours}")
            verdicts = {}
            for s in sessions:
                verdicts[s["verdict"]] = verdicts.get(s["verdict"], 0) + 1
            if diffs:
                disagreements += 1
                print(f"{name}: " + "; ".join(diffs) + f"  [verdicts {verdicts}]")
            elif "-v" in sys.argv:
                print(f"{name}: agree  [verdicts {verdicts}]")
    print(f"{len(rows)} captures, {disagreements} with disagreements")


if __name__ == "__main__":
    main()
