//! `stripwatch live` when things stop in the middle (issue 12, tests 3 and 5): a SIGTERM while
//! packets still flow, and a ClickHouse server killed with SIGKILL during the run and started
//! again on the same data directory and port. Also the shared-baseline refresh thread, which
//! must start without the capabilities `live --user` dropped.
//!
//! The bundled real Postfix captures are replayed with tcpreplay into a veth pair whose capture
//! end is in the test's namespace (`common::netns`), so that `live` also reaches the ClickHouse
//! server the test starts on 127.0.0.1. Needs root, ip, ethtool, tcpreplay and
//! clickhouse-server; `STRIPWATCH_SKIP_REAL=1` skips the whole file, `STRIPWATCH_SKIP_CLICKHOUSE=1`
//! the ClickHouse parts; a missing tool is a failure.

mod common;

use common::clickhouse::ClickHouse;
use common::netns::Veth;
use common::pcap::{Pcap, bundled};
use common::rotated::{judgements, parts, records, terminate};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::pcap::REAL_POSTFIX as CAPTURES;

/// A `stripwatch live` in the background, its standard error in a file.
struct Live {
    child: Child,
    stderr: PathBuf,
}

impl Live {
    /// Starts `live -i IFACE --out OUT --workers 2 ARGS` and waits until it captures (privileges
    /// dropped by then).
    fn start(interface: &str, out: &Path, args: &[&str]) -> Live {
        Live::start_with_workers(interface, out, "2", args)
    }

    /// As `start`, with `workers` workers.
    fn start_with_workers(interface: &str, out: &Path, workers: &str, args: &[&str]) -> Live {
        let stderr = out.with_extension("stderr");
        let child = Command::new(common::bin())
            .args(["live", "-i", interface, "--out"])
            .arg(out)
            .args([
                "--workers",
                workers,
                "--no-report",
                "--json",
                "--sensor",
                "outage",
            ])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("cannot start stripwatch live");
        let mut live = Live { child, stderr };
        let wanted = format!("capturing on {interface}");
        live.wait_for("the start", Duration::from_secs(20), || {
            std::fs::read_to_string(out.with_extension("stderr"))
                .unwrap_or_default()
                .contains(&wanted)
        });
        live
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until `cond`, failing after `limit` or when live ended.
    fn wait_for(&mut self, what: &str, limit: Duration, cond: impl Fn() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "stripwatch live ended while waiting for {what}: {}",
                self.log()
            );
            assert!(
                start.elapsed() < limit,
                "no {what} after {limit:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM; insists on status 0 within 30 s and returns the summary it printed.
    fn terminate(mut self) -> Value {
        terminate(&mut self.child, &self.stderr)
    }
}

/// No session id twice in the files, and the sessions as a list.
fn sessions_once(out: &Path) -> Vec<Value> {
    let sessions = records(out, "sessions");
    let ids: BTreeSet<&str> = sessions
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), sessions.len(), "a session written twice");
    sessions
}

#[test]
fn sigterm_while_packets_flow_writes_every_session_seen_once_and_exits_0() {
    if !common::require_root() {
        return;
    }
    let work = common::tempdir("outage-term");
    let all = Pcap::join(
        &CAPTURES
            .iter()
            .map(|c| bundled(c))
            .collect::<Vec<_>>()
            .iter()
            .map(PathBuf::as_path)
            .collect::<Vec<_>>(),
    );
    let joined = work.join("all.pcap");
    std::fs::write(&joined, all.bytes(0..all.records.len())).unwrap();
    let veth = Veth::new();
    let out = work.join("out");
    // One worker, so one socket reads the packets in the order they were sent: then the packets
    // live counted are the first ones of the file. With a fanout each worker's socket stops at
    // its own packet when the stop comes, so what was seen is a prefix of each flow but not of
    // the file, and no `analyze` run can be the reference.
    let live = Live::start_with_workers(&veth.capture, &out, "1", &["--allow-root"]);

    // About 6 s of packets at 40 per second; the stop comes in the middle.
    let mut replay = veth
        .tcpreplay(&["--pps", "40"], &joined)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot run tcpreplay");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        replay.try_wait().unwrap().is_none(),
        "the replay ended before the stop"
    );
    let summary = live.terminate();
    let _ = replay.wait();
    assert_eq!(summary["interrupted"], true, "{summary}");
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(written, summary, "summary.json is the printed summary");
    let seen = summary["capture"]["packets"].as_u64().unwrap() as usize;
    // A packet the kernel dropped would shift the window the reference is made from.
    assert_eq!(
        (
            &summary["capture"]["kernel_drops"],
            &summary["capture"]["interface_drops"]
        ),
        (&Value::from(0), &Value::from(0)),
        "drops make the first {seen} packets the wrong reference: {summary}"
    );
    assert!(
        seen > 0 && seen < all.records.len(),
        "{seen} of {} packets: the stop was not mid-stream",
        all.records.len()
    );

    // Exactly what `analyze` makes of the packets live saw before the stop: every session that
    // finished is there once with its judgement, the one cut by the stop ends `capture-end`.
    let first = work.join("first.pcap");
    std::fs::write(&first, all.bytes(0..seen)).unwrap();
    let reference = work.join("reference");
    common::analyze(&[&first], &reference, &["--no-report", "--workers", "2"]);
    let want = judgements(&common::ndjson(&reference.join("sessions.ndjson")));
    assert!(!want.is_empty(), "sessions finished before the stop");
    assert_eq!(judgements(&sessions_once(&out)), want);
}

/// `stripwatch schema apply` on the server (default user).
fn apply_schema(ch: &ClickHouse) {
    let o = common::run(&["schema", "apply", "--clickhouse", &ch.url()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A work directory, a ClickHouse server with the schema, and a veth pair; `None` when told to
/// skip ClickHouse.
fn with_clickhouse(name: &str) -> Option<(PathBuf, ClickHouse, Veth)> {
    let work = common::tempdir(name);
    let ch = ClickHouse::start(&work.join("ch"))?;
    apply_schema(&ch);
    Some((work, ch, Veth::new()))
}

/// Replays `names` at top speed, one file after the other.
fn replay(veth: &Veth, names: &[&str]) {
    for name in names {
        let o = veth
            .tcpreplay(&["--topspeed"], &bundled(name))
            .output()
            .expect("cannot run tcpreplay");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

/// A loopback `ADDR:PORT` nobody listens on now, for `--metrics`.
fn free_loopback_port() -> String {
    format!("127.0.0.1:{}", common::clickhouse::free_port())
}

#[test]
fn clickhouse_killed_during_a_live_run_loses_nothing_and_duplicates_nothing() {
    if !common::require_root() {
        return;
    }
    let Some((work, mut ch, veth)) = with_clickhouse("outage-ch") else {
        return;
    };
    let out = work.join("out");
    let metrics = free_loopback_port();
    let mut live = Live::start(
        &veth.capture,
        &out,
        &[
            "--allow-root",
            "--clickhouse",
            &ch.url(),
            "--metrics",
            &metrics,
        ],
    );
    let sessions_in_ch = |ch: &ClickHouse| {
        ch.try_query("SELECT count() FROM stripwatch.sessions FINAL")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(0)
    };

    replay(&veth, &CAPTURES[..4]);
    live.wait_for(
        "the first rows in ClickHouse",
        Duration::from_secs(20),
        || sessions_in_ch(&ch) > 0,
    );
    ch.kill();
    replay(&veth, &CAPTURES[4..]);
    let offline = work.join("offline");
    let pcaps: Vec<PathBuf> = CAPTURES.iter().map(|c| bundled(c)).collect();
    let refs: Vec<&Path> = pcaps.iter().map(PathBuf::as_path).collect();
    common::analyze(&refs, &offline, &["--no-report", "--workers", "2"]);
    let total = common::ndjson(&offline.join("sessions.ndjson")).len();
    live.wait_for(
        "every session in the files",
        Duration::from_secs(20),
        || records(&out, "sessions").len() >= total,
    );
    // The batches of the outage fail their tries and wait in the spool.
    let spool = out.join("clickhouse-spool");
    live.wait_for("batches in the spool", Duration::from_secs(20), || {
        std::fs::read_dir(&spool).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".json.zst"))
        })
    });

    // The outage shows in the metrics while it lasts: the spool holds bytes, and the writer's
    // queue reports its depth against its capacity.
    let m = common::scrape(&metrics);
    assert!(m["stripwatch_clickhouse_spool_bytes"] > 0.0, "{m:?}");
    assert_eq!(
        m["stripwatch_clickhouse_queue_capacity_rows"], 16_384.0,
        "{m:?}"
    );
    assert!(m["stripwatch_clickhouse_queue_rows"] <= 16_384.0, "{m:?}");
    assert!(m["stripwatch_clickhouse_rows_spooled_total"] > 0.0, "{m:?}");

    ch.restart();
    live.wait_for("the spool replayed", Duration::from_secs(30), || {
        sessions_in_ch(&ch) >= total
    });
    let summary = live.terminate();
    let report = &summary["clickhouse"];
    assert!(report["rows_spooled"].as_u64() > Some(0), "{report}");
    assert_eq!(report["rows_dropped"], 0, "{report}");
    assert_eq!(report["spool_rows_left"], 0, "{report}");

    // Every table: as many rows as the files have lines, each id once.
    sessions_once(&out);
    for (table, id) in [
        ("sessions", "session_id"),
        ("findings", "finding_id"),
        ("dns", "transaction_id"),
        ("certificates", "fingerprint"),
    ] {
        let files: BTreeSet<String> = records(&out, table)
            .iter()
            .map(|r| r[id].as_str().unwrap().to_string())
            .collect();
        let lines: usize = parts(&out, table)
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap().lines().count())
            .sum();
        assert_eq!(files.len(), lines, "{table}: an id twice in the files");
        let rows = ch.count(&format!("SELECT count() FROM stripwatch.{table} FINAL"));
        let distinct = ch.count(&format!(
            "SELECT uniqExact({id}) FROM stripwatch.{table} FINAL"
        ));
        assert_eq!(rows, distinct, "{table}: duplicated in ClickHouse");
        assert_eq!(
            rows as usize, lines,
            "{table}: ClickHouse and the files differ"
        );
        let got: BTreeSet<String> = ch
            .query(&format!("SELECT {id} FROM stripwatch.{table} FINAL"))
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(got, files, "{table}: other ids");
    }
    assert_eq!(records(&out, "sessions").len(), total);
}

#[test]
fn the_shared_baseline_refresh_thread_runs_without_capabilities_under_user() {
    if !common::require_root() {
        return;
    }
    let Some((work, ch, veth)) = with_clickhouse("outage-user") else {
        return;
    };
    let out = work.join("out");
    let mut live = Live::start(
        &veth.capture,
        &out,
        &[
            "--user",
            "nobody",
            "--clickhouse",
            &ch.url(),
            "--shared-baseline",
            "--shared-baseline-refresh",
            "1",
        ],
    );
    // A session without a STARTTLS offer, and no offer earlier in the run: the judges ask the
    // baseline, which starts the refresh thread.
    replay(&veth, &["real-postfix-delete"]);
    live.wait_for("the session", Duration::from_secs(20), || {
        !records(&out, "sessions").is_empty()
    });
    let pid = live.child.id();
    let tasks: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| t.unwrap().path())
        .collect();
    let names: Vec<String> = tasks
        .iter()
        .map(|t| {
            std::fs::read_to_string(t.join("comm"))
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .collect();
    assert!(
        names.iter().any(|n| n == "shared-baseline"),
        "no refresh thread among {names:?}"
    );
    for task in &tasks {
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}:")))
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            field("Uid"),
            "65534 65534 65534 65534",
            "{}",
            task.display()
        );
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(
                field(set),
                "0000000000000000",
                "{set} of {}",
                task.display()
            );
        }
    }
    live.terminate();
}
