#!/usr/bin/env python3
"""Turns the raw measurements of bench/run.sh into results.json and Markdown tables.

Usage: report.py LOGS_DIR RESULTS_JSON

LOGS_DIR holds what run.sh wrote: meta.env, captures.tsv, tools.tsv, runs.tsv, headline.tsv,
stripwatch-summary.<capture>.json and suricata-events.<capture>.json.
"""

import datetime
import json
import os
import statistics
import sys

MB = 1e6  # throughput: bytes of the capture file per second / 10^6
MIB = 1024 * 1024  # memory: peak RSS in MiB


def read_tsv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fnum(x, digits=0):
    """1234567.8 -> '1,234,568' (digits=0) or '1,234,567.8' (digits=1)."""
    if x is None:
        return "—"
    return f"{x:,.{digits}f}"


def fratio(x):
    if x is None:
        return "—"
    return f"{x:.2f}×" if x < 10 else f"{x:.1f}×"


def main():
    logs, out_path = sys.argv[1], sys.argv[2]
    meta = {}
    with open(os.path.join(logs, "meta.env")) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    nproc = int(meta.get("nproc", "1"))

    captures = {}
    for key, path, size, packets, sessions in read_tsv(os.path.join(logs, "captures.tsv")):
        summary = read_json(os.path.join(logs, f"stripwatch-summary.{key}.json")) or {}
        pk = int(packets) if packets else summary.get("packets")
        captures[key] = {
            "path": os.path.relpath(path, os.path.dirname(os.path.dirname(logs))),
            "bytes": int(size),
            "packets": pk,
            "packets_source": "capinfos -c" if packets else "stripwatch summary.json",
            "packets_stripwatch": summary.get("packets"),
            "sessions_requested": int(sessions) if sessions else None,
            "sessions_stripwatch": summary.get("sessions"),
            "stripwatch_verdicts": summary.get("sessions_by_verdict"),
            "suricata_event_types": read_json(os.path.join(logs, f"suricata-events.{key}.json")),
        }

    labels = {
        "stripwatch-1": "stripwatch, 1 worker",
        "stripwatch-2": "stripwatch, 2 workers on 2 cores (`taskset -c {}`)".format(meta.get("cores2", "0,1")),
        "floor": "decode floor: pcap-parser + etherparse, nothing else",
        "stripwatch-1-held": "stripwatch, 1 worker, `--max-held-sessions {}`".format(meta.get("held", "?")),
        "suricata": "Suricata {}".format(
            meta.get("suricata_version", "").replace("This is Suricata version ", "").replace(" RELEASE", "")
        ).strip() + ", single runmode, no rules, EVE",
        "tshark": "tshark {}, `-q -z io,stat,0`".format(
            meta.get("tshark_version", "").split(" (Git")[0].replace("TShark (Wireshark) ", "")
        ),
        "tshark-smtp": "tshark {}, `-Y smtp -T fields`".format(
            meta.get("tshark_version", "").split(" (Git")[0].replace("TShark (Wireshark) ", "")
        ),
    }
    tools = {}
    order = []
    for tool, pinned, cmd in read_tsv(os.path.join(logs, "tools.tsv")):
        tools[tool] = {"tool": tool, "label": labels.get(tool, tool), "pinned": pinned == "yes", "command": cmd}
        order.append(tool)

    runs = {}
    for tool, key, run, wall, rss, user, sys_s, load in read_tsv(os.path.join(logs, "runs.tsv")):
        runs.setdefault((tool, key), []).append({
            "run": int(run), "wall_s": float(wall), "peak_rss_kib": int(rss), "user_s": float(user),
            "sys_s": float(sys_s), "load1_before": float(load),
        })
    headline = dict(read_tsv(os.path.join(logs, "headline.tsv")))

    def stats(tool, key):
        rs = runs.get((tool, key))
        if not rs:
            return None
        cap = captures[key]
        wall = statistics.median(r["wall_s"] for r in rs)
        rss = statistics.median(r["peak_rss_kib"] for r in rs) * 1024
        cpu = statistics.median(r["user_s"] + r["sys_s"] for r in rs)
        return {
            "capture": key,
            "runs": rs,
            "median_wall_s": round(wall, 4),
            "min_wall_s": min(r["wall_s"] for r in rs),
            "max_wall_s": max(r["wall_s"] for r in rs),
            "median_cpu_s": round(cpu, 3),
            # CPU seconds per wall second: close to 1 for a pinned single-threaded tool on an
            # idle machine; well below 1 means something else was using the same core.
            "cpu_per_wall": round(cpu / wall, 2),
            "mb_per_s": round(cap["bytes"] / wall / MB, 2),
            # Less sensitive to other processes on the machine than wall time.
            "mb_per_cpu_s": round(cap["bytes"] / cpu / MB, 2) if cpu > 0 else None,
            "packets_per_s": round(cap["packets"] / wall) if cap["packets"] else None,
            "peak_rss_mib": round(rss / MIB, 1),
        }

    results = []
    for tool in order:
        entry = dict(tools[tool])
        entry["by_capture"] = {k: stats(tool, k) for k in captures if stats(tool, k)}
        key = headline.get(tool)
        entry["headline_capture"] = key
        entry["headline"] = stats(tool, key) if key else None
        # Ratios against stripwatch (1 worker, pinned) on the same capture.
        base = stats("stripwatch-1", key) if key else None
        if entry["headline"] and base and not tool.startswith("stripwatch"):
            h = entry["headline"]
            entry["ratio_throughput_stripwatch_over_tool"] = round(base["mb_per_s"] / h["mb_per_s"], 3)
            entry["ratio_peak_rss_stripwatch_over_tool"] = round(base["peak_rss_mib"] / h["peak_rss_mib"], 3)
            if base["mb_per_cpu_s"] and h["mb_per_cpu_s"]:
                entry["ratio_cpu_throughput_stripwatch_over_tool"] = round(base["mb_per_cpu_s"] / h["mb_per_cpu_s"], 3)
        results.append(entry)

    # Memory growth with capture size, every tool measured on both captures.
    growth = []
    if "small" in captures and "main" in captures:
        for tool in order:
            s, m = stats(tool, "small"), stats(tool, "main")
            if s and m:
                growth.append({
                    "tool": tool,
                    "small_peak_rss_mib": s["peak_rss_mib"],
                    "main_peak_rss_mib": m["peak_rss_mib"],
                    "growth": round(m["peak_rss_mib"] / s["peak_rss_mib"], 3),
                })

    doc = {
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": meta.get("mode"),
        "machine": {
            "nproc": nproc,
            "cpu_model": meta.get("cpu_model"),
            "mem_total_mib": int(meta.get("mem_total_kib", "0")) // 1024,
            "kernel": meta.get("kernel"),
            "os": meta.get("os"),
        },
        "versions": {
            "stripwatch": meta.get("stripwatch_version"),
            "stripwatch_commit": meta.get("stripwatch_commit"),
            "stripwatch_binary_sha256_prefix": meta.get("stripwatch_sha256"),
            "stripwatch_uncommitted_changes": meta.get("stripwatch_dirty") == "yes",
            "suricata": meta.get("suricata_version"),
            "tshark": meta.get("tshark_version"),
        },
        "settings": {
            "runs": int(meta.get("runs", "0")),
            "pinned_core": int(meta.get("core", "0")),
            "peer_budget_s": int(meta.get("budget_s", "0")),
            "generator": meta.get("generator"),
            "units": "MB/s = capture file bytes / 10^6 / median wall seconds; peak RSS in MiB (median of runs)",
            "page_cache": "warm (captures read once before timing)",
            "load_average_start": meta.get("load_start"),
            "load_average_end": meta.get("load_end"),
        },
        "captures": captures,
        "results": results,
        "memory_growth": growth,
        "failed": meta.get("failed", "").split(),
        "elapsed_s": int(meta.get("elapsed_s", "0")),
    }
    with open(out_path, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")

    # ---- Markdown -------------------------------------------------------------------------
    def cap_desc(key):
        c = captures[key]
        s = f"{c['bytes'] / MB:,.0f} MB"
        return s

    main_cap = captures.get("main")
    p = print
    p()
    p(f"Machine: {nproc} cores, {meta.get('cpu_model')}, {doc['machine']['mem_total_mib'] // 1024} GiB RAM, "
      f"{meta.get('os')}, kernel {meta.get('kernel')}")
    if main_cap:
        p(f"Capture: {meta.get('generator')}; {main_cap['bytes'] / MB:,.0f} MB, "
          f"{fnum(main_cap['packets'])} packets"
          + (f", {fnum(main_cap['sessions_requested'])} SMTP sessions" if main_cap["sessions_requested"] else ""))
    p(f"Median of {meta.get('runs')} runs; single-threaded runs pinned with `taskset -c {meta.get('core')}`; "
      "warm page cache; " + (meta.get("stripwatch_version") or "stripwatch")
      + (f" ({meta.get('stripwatch_commit')}" + (", uncommitted changes" if meta.get("stripwatch_dirty") == "yes" else "") + ")"
         if meta.get("stripwatch_commit") else ""))
    p()
    p("| Tool | Capture | MB/s | packets/s | MB per CPU s | peak RSS (MiB) | throughput, stripwatch ÷ tool | peak RSS, stripwatch ÷ tool |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|")
    for e in results:
        h = e["headline"]
        if not h:
            p(f"| {e['label']} | — | failed | | | | | |")
            continue
        slice_note = " (slice)" if e["headline_capture"] == "small" and main_cap and "main" in captures else ""
        p(f"| {e['label']} | {cap_desc(e['headline_capture'])}{slice_note} | {fnum(h['mb_per_s'], 1)} | "
          f"{fnum(h['packets_per_s'])} | {fnum(h['mb_per_cpu_s'], 1)} | {fnum(h['peak_rss_mib'], 1)} | "
          f"{fratio(e.get('ratio_throughput_stripwatch_over_tool'))} | {fratio(e.get('ratio_peak_rss_stripwatch_over_tool'))} |")
    p()
    p("Ratios are stripwatch (1 worker, pinned) over the tool on the same capture: throughput above 1× means "
      "stripwatch is faster, peak RSS below 1× means stripwatch uses less memory. MB/s is file size over median "
      "wall time; MB per CPU s is file size over median user+sys CPU time.")
    for e in results:
        if e.get("headline_capture") == "small" and "main" in captures and not e["tool"].startswith("stripwatch"):
            p(f"Note: {e['label']} was measured on the {cap_desc('small')} capture (same generator, a tenth of the "
              f"sessions) because {meta.get('runs')} runs on the main capture would have exceeded the "
              f"{meta.get('budget_s')} s budget; its ratios compare it with stripwatch on that same capture.")
    if growth:
        p()
        p(f"Peak memory against capture size ({cap_desc('small')} vs {cap_desc('main')}):")
        p()
        p(f"| Tool | peak RSS, {cap_desc('small')} (MiB) | peak RSS, {cap_desc('main')} (MiB) | growth |")
        p("|---|---:|---:|---:|")
        for g in growth:
            p(f"| {tools[g['tool']]['label']} | {fnum(g['small_peak_rss_mib'], 1)} | {fnum(g['main_peak_rss_mib'], 1)} | "
              f"{g['growth']:.2f}× |")
    # ---- The session-dense set and the targets of issue 11 ---------------------------------
    def ratio(a, b, field):
        return round(a[field] / b[field], 3) if a and b and a.get(field) and b.get(field) else None

    targets = {}
    for key in ("dense", "main"):
        if key not in captures:
            continue
        one, two = stats("stripwatch-1", key), stats("stripwatch-2", key)
        suri, floor = stats("suricata", key), stats("floor", key)
        targets[key] = {
            "stripwatch_1_over_suricata_wall": ratio(one, suri, "mb_per_s"),
            "stripwatch_1_over_suricata_cpu": ratio(one, suri, "mb_per_cpu_s"),
            "stripwatch_2_over_1_wall": ratio(two, one, "mb_per_s"),
            "stripwatch_share_of_floor_wall": ratio(one, floor, "mb_per_s"),
            "stripwatch_share_of_floor_cpu": ratio(one, floor, "mb_per_cpu_s"),
        }
    doc["targets"] = targets
    doc["by_capture"] = {
        key: {t: stats(t, key) for t in order if stats(t, key)} for key in captures
    }
    with open(out_path, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")

    def cap_line(key):
        c = captures[key]
        return (f"{c['bytes'] / MB:,.0f} MB, {fnum(c['packets'])} packets"
                + (f", {fnum(c['sessions_requested'])} SMTP sessions" if c["sessions_requested"] else ""))

    if "dense" in captures:
        p()
        p(f"Session-dense capture (`stripwatch-synth mixed --dense --seed 1`): {cap_line('dense')}")
        p()
        p("| Tool | MB/s | packets/s | wall s | CPU s (user+sys) | MB per CPU s | peak RSS (MiB) | stripwatch (1 core) ÷ tool, wall | stripwatch ÷ tool, CPU |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        base = stats("stripwatch-1", "dense")
        for tool in order:
            h = stats(tool, "dense")
            if not h:
                continue
            mine = tool == "stripwatch-1"
            p(f"| {tools[tool]['label']} | {fnum(h['mb_per_s'], 1)} | {fnum(h['packets_per_s'])} | "
              f"{h['median_wall_s']:.3f} | {h['median_cpu_s']:.3f} | {fnum(h['mb_per_cpu_s'], 1)} | "
              f"{fnum(h['peak_rss_mib'], 1)} | {'—' if mine else fratio(ratio(base, h, 'mb_per_s'))} | "
              f"{'—' if mine else fratio(ratio(base, h, 'mb_per_cpu_s'))} |")

    if targets:
        p()
        p("Targets of issue 11 (≥ 15× Suricata on one core, ≥ 1.7× from the second core; aim 30× and 25% of the floor):")
        p()
        p("| capture | stripwatch 1 core ÷ Suricata (wall / CPU) | 2 cores ÷ 1 core (wall) | stripwatch share of the decode floor (wall / CPU) |")
        p("|---|---:|---:|---:|")
        for key, t in targets.items():
            def pct(x):
                return "—" if x is None else f"{100 * x:.1f}%"
            p(f"| {cap_desc(key)} {'dense' if key == 'dense' else 'mixed'} | "
              f"{fratio(t['stripwatch_1_over_suricata_wall'])} / {fratio(t['stripwatch_1_over_suricata_cpu'])} | "
              f"{fratio(t['stripwatch_2_over_1_wall'])} | "
              f"{pct(t['stripwatch_share_of_floor_wall'])} / {pct(t['stripwatch_share_of_floor_cpu'])} |")

    # Peak RSS at every input size measured, smallest first.
    sizes = sorted(captures, key=lambda k: captures[k]["bytes"])
    p()
    p("Peak RSS (MiB) against input size:")
    p()
    p("| Tool | " + " | ".join(f"{cap_desc(k)} {'dense' if k.startswith('dense') else 'mixed'}" for k in sizes) + " |")
    p("|---|" + "---:|" * len(sizes))
    for tool in order:
        cells = [stats(tool, k) for k in sizes]
        if any(cells):
            p(f"| {tools[tool]['label']} | " + " | ".join(fnum(c["peak_rss_mib"], 1) if c else "—" for c in cells) + " |")

    busy = [e for e in results if e["pinned"] and e["headline"] and e["headline"]["cpu_per_wall"] < 0.85
            and e["headline"]["median_wall_s"] >= 0.2 and e["tool"] != "stripwatch-2"]
    p()
    p(f"Load average at start {meta.get('load_start')}, at end {meta.get('load_end')}.")
    for e in busy:
        p(f"WARNING: {e['label']} got only {e['headline']['cpu_per_wall']:.2f} CPU s per wall s on its pinned core: "
          "other processes were competing for it, so its numbers are low; rerun on an idle machine.")
    p()
    p("Commands ($FILE is the capture):")
    for tool in order:
        p(f"  {tool}: {tools[tool]['command']}")
    p()
    p(f"Wrote {out_path} (total bench time {doc['elapsed_s']} s)")


if __name__ == "__main__":
    main()
