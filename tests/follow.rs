//! `stripwatch analyze --follow DIR` on a real directory that the test fills over time, as a
//! rotating capture (dumpcap's ring names) would: the bundled real Postfix captures, each cut
//! into parts of a few packets (so sessions span parts), dropped in one by one, one of them
//! gzip-compressed, and the last one of the first run written in two halves while the follow
//! watches ("still being written"). Checked: every part is read exactly once over two runs
//! with one `--state`; records reach the files while it runs; SIGTERM ends each run with status
//! 0 and a summary; the sessions (none duplicated) carry the same verdicts and findings as
//! `analyze` gives on the uncut captures. Also the refusals of bad input.
//!
//! Needs nothing but the binary: the parts are cut by the test (`common::pcap`).

mod common;

use common::pcap::{Pcap, bundled};
use common::rotated::{judgements, records, terminate};

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::pcap::REAL_POSTFIX as CAPTURES;
/// The first run follows the parts of this many captures; the second run the rest.
const FIRST_RUN: usize = 5;
/// Packets per part.
const PER_PART: usize = 8;

/// One part of a cut capture: its name in the followed directory and its bytes.
struct Part {
    name: String,
    bytes: Vec<u8>,
}

/// The parts of every capture, named as dumpcap names a ring buffer's files
/// (`PREFIX_NNNNN_TIME.pcap`), per capture. The second part of the first capture is
/// gzip-compressed (`.pcap.gz`), as `tcpdump -z gzip` leaves them.
fn all_parts() -> Vec<Vec<Part>> {
    let mut seq = 0;
    CAPTURES
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Pcap::read(&bundled(c))
                .cut(PER_PART)
                .into_iter()
                .enumerate()
                .map(|(j, bytes)| {
                    seq += 1;
                    let name = format!("mail_{seq:05}_2026112215{i:02}{j:02}.pcap");
                    if i == 0 && j == 1 {
                        let mut gz =
                            flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                        gz.write_all(&bytes).unwrap();
                        Part {
                            name: format!("{name}.gz"),
                            bytes: gz.finish().unwrap(),
                        }
                    } else {
                        Part { name, bytes }
                    }
                })
                .collect()
        })
        .collect()
}

/// Puts a part into the directory whole: written under a hidden name, then renamed.
fn drop_in(dir: &Path, part: &Part) {
    let tmp = dir.join(format!(".{}.tmp", part.name));
    std::fs::write(&tmp, &part.bytes).unwrap();
    std::fs::rename(&tmp, dir.join(&part.name)).unwrap();
}

/// The files a run's JSON log says it read, in order.
fn files_read(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("follow: read "))
        })
        .map(|e| e["file"].as_str().unwrap().to_string())
        .collect()
}

/// A follow run in the background.
struct Follow {
    child: Child,
    log: PathBuf,
}

impl Follow {
    fn start(dir: &Path, out: &Path, state: &Path, log: &Path) -> Follow {
        Follow::start_with(dir, out, state, log, &[])
    }

    /// As `start`, with more options.
    fn start_with(dir: &Path, out: &Path, state: &Path, log: &Path, extra: &[&str]) -> Follow {
        let child = Command::new(common::bin())
            .args(["analyze", "--follow"])
            .arg(dir)
            .arg("--out")
            .arg(out)
            .arg("--state")
            .arg(state)
            .args([
                "--follow-settle",
                "1",
                "--workers",
                "2",
                "--no-report",
                "--json",
            ])
            .args(["--log-format", "json", "--sensor", "follow-test"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("cannot start stripwatch analyze --follow");
        Follow {
            child,
            log: log.to_path_buf(),
        }
    }

    /// Waits until `cond` holds, failing after `limit` or if the run ended.
    fn wait_for(&mut self, what: &str, limit: Duration, cond: impl Fn(&Follow) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "the follow ended while waiting for {what}: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            assert!(
                start.elapsed() < limit,
                "no {what} after {limit:?}: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then the exit status (0 within 30 s) and the summary printed on stdout.
    fn terminate(mut self) -> Value {
        terminate(&mut self.child, &self.log)
    }
}

#[test]
fn follow_reads_each_closed_file_once_across_a_restart_and_judges_as_analyze() {
    let work = common::tempdir("follow");
    let (dir, out, state) = (work.join("dir"), work.join("out"), work.join("state.redb"));
    std::fs::create_dir_all(&dir).unwrap();
    let pcaps: Vec<PathBuf> = CAPTURES.iter().map(|c| bundled(c)).collect();
    let refs: Vec<&Path> = pcaps.iter().map(PathBuf::as_path).collect();
    let reference = work.join("reference");
    common::analyze(&refs, &reference, &["--no-report", "--workers", "2"]);
    let want = judgements(&common::ndjson(&reference.join("sessions.ndjson")));
    let early = work.join("reference-early");
    common::analyze(&refs[..3], &early, &["--no-report"]);
    let early_sessions = common::ndjson(&early.join("sessions.ndjson")).len();

    let parts = all_parts();
    let first: Vec<&Part> = parts[..FIRST_RUN].iter().flatten().collect();
    let second: Vec<&Part> = parts[FIRST_RUN..].iter().flatten().collect();
    assert!(
        parts.iter().all(|p| p.len() >= 2),
        "every capture spans parts"
    );

    // Run 1: the parts arrive one by one; the last is still being written for a while.
    let mut run = Follow::start(&dir, &out, &state, &work.join("log-1"));
    let (last, rest) = first.split_last().unwrap();
    for part in rest {
        drop_in(&dir, part);
        std::thread::sleep(Duration::from_millis(150));
    }
    let half = last.bytes.len() / 2;
    let mut writing = std::fs::File::create(dir.join(&last.name)).unwrap();
    writing.write_all(&last.bytes[..half]).unwrap();
    writing.flush().unwrap();
    run.wait_for(
        "the parts before the one being written",
        Duration::from_secs(30),
        |r| files_read(&r.log).len() == rest.len(),
    );
    // Longer than --follow-settle (1 s) and than the 2 s of a file with a later one: only
    // the writer's open descriptor keeps it from being read half-way.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !files_read(&run.log).contains(&last.name),
        "a file still open for writing was read"
    );
    writing.write_all(&last.bytes[half..]).unwrap();
    drop(writing);
    run.wait_for("the last part, once closed", Duration::from_secs(20), |r| {
        files_read(&r.log).contains(&last.name)
    });
    // Records reach the files while it runs (the last second of packet time, and the sessions
    // held for --hold after it, wait for more packets or the stop).
    run.wait_for("records while running", Duration::from_secs(20), |_| {
        records(&out, "sessions").len() >= early_sessions
    });
    let summary = run.terminate();
    assert_eq!(summary["interrupted"], true, "{summary}");
    assert_eq!(summary["capture"]["files"], first.len(), "{summary}");
    assert!(out.join("summary.json").is_file());
    let after_first = records(&out, "sessions").len();

    // Run 2, same state: the old parts are still there and must not be read again.
    let mut run = Follow::start(&dir, &out, &state, &work.join("log-2"));
    for part in &second {
        drop_in(&dir, part);
    }
    run.wait_for("every new part", Duration::from_secs(30), |r| {
        files_read(&r.log).len() == second.len()
    });
    std::thread::sleep(Duration::from_secs(2));
    let summary = run.terminate();
    assert_eq!(summary["capture"]["files"], second.len(), "{summary}");

    let mut read = files_read(&work.join("log-1"));
    read.extend(files_read(&work.join("log-2")));
    let names: Vec<String> = first
        .iter()
        .chain(&second)
        .map(|p| p.name.trim_end_matches(".gz").to_string())
        .collect();
    assert_eq!(read, names, "each part once, in order");

    let sessions = records(&out, "sessions");
    let ids: BTreeSet<&str> = sessions
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), sessions.len(), "a session written twice");
    assert!(
        after_first < sessions.len(),
        "the second run added sessions"
    );
    assert_eq!(
        judgements(&sessions),
        want,
        "follow over the parts and analyze over the whole captures disagree"
    );
}

/// `stripwatch ARGS` exits 2 with one line on standard error that names `what`.
fn refused_in_one_line(args: &[&str], what: &str) {
    let o = common::run(args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(what), "{stderr}");
}

#[test]
fn follow_refuses_a_missing_directory_and_captures_beside_it() {
    let work = common::tempdir("follow-bad");
    let out = work.join("out");
    let out = out.to_str().unwrap();
    let missing = work.join("no-such-dir");
    refused_in_one_line(
        &[
            "analyze",
            "--follow",
            missing.to_str().unwrap(),
            "--out",
            out,
        ],
        "--follow",
    );
    let pcap = common::root().join("pcaps/real-postfix-delete.pcap");
    refused_in_one_line(
        &[
            "analyze",
            pcap.to_str().unwrap(),
            "--follow",
            work.to_str().unwrap(),
            "--out",
            out,
        ],
        "--follow",
    );
    refused_in_one_line(
        &[
            "analyze",
            pcap.to_str().unwrap(),
            "--hold",
            "5",
            "--out",
            out,
        ],
        "--follow",
    );
    refused_in_one_line(
        &[
            "analyze",
            pcap.to_str().unwrap(),
            "--metrics",
            "127.0.0.1:0",
            "--out",
            out,
        ],
        "--follow",
    );
    refused_in_one_line(
        &[
            "analyze",
            "--follow",
            work.to_str().unwrap(),
            "--metrics",
            "not-an-address",
            "--out",
            out,
        ],
        "--metrics",
    );
}

/// `--follow --metrics`: while the follow runs, the endpoint counts the files, packets and bytes
/// read, the sessions written by verdict and the state windows, and agrees with the summary
/// printed at the end.
#[test]
fn follow_serves_metrics_while_it_runs() {
    let work = common::tempdir("follow-metrics");
    let (dir, out, state) = (work.join("dir"), work.join("out"), work.join("state.redb"));
    std::fs::create_dir_all(&dir).unwrap();
    // Four captures about a second apart: enough packet time for the first sessions to be
    // released while the follow runs.
    let parts: Vec<Part> = all_parts().into_iter().take(4).flatten().collect();
    // What the parts hold: the records of those captures, and their captured bytes.
    let whole: Vec<Pcap> = CAPTURES[..4]
        .iter()
        .map(|c| Pcap::read(&bundled(c)))
        .collect();
    let packets: usize = whole.iter().map(|p| p.records.len()).sum();
    let bytes: usize = whole
        .iter()
        .flat_map(|p| &p.records)
        .map(|r| r.len() - 16)
        .sum();
    let port = common::clickhouse::free_port();
    let scrape = || common::scrape(&format!("127.0.0.1:{port}"));
    let log = work.join("log");
    let directory = dir.to_str().unwrap().to_string();
    let mut run = Follow::start_with(
        &dir,
        &out,
        &state,
        &log,
        &["--metrics", &port.to_string(), "--hold", "0"],
    );
    for part in &parts {
        drop_in(&dir, part);
    }
    let label = format!("{{directory=\"{directory}\"}}");
    let files = format!("stripwatch_follow_files_total{label}");
    run.wait_for("every file read", Duration::from_secs(60), |_| {
        scrape().get(&files).copied() == Some(parts.len() as f64)
    });
    // A session is written once later packets move time on (the last waits for the end).
    let written = |m: &std::collections::BTreeMap<String, f64>| -> f64 {
        m.iter()
            .filter(|(k, _)| k.starts_with("stripwatch_sessions_total{"))
            .map(|(_, v)| v)
            .sum()
    };
    run.wait_for("a session counted", Duration::from_secs(30), |_| {
        written(&scrape()) >= 1.0
    });
    let m = scrape();
    assert_eq!(
        m[&format!("stripwatch_capture_packets_total{label}")],
        packets as f64,
        "{m:?}"
    );
    assert_eq!(
        m[&format!("stripwatch_follow_skipped_files_total{label}")],
        0.0
    );
    assert_eq!(
        m[&format!("stripwatch_capture_bytes_total{label}")],
        bytes as f64
    );
    assert!(
        written(&m) >= 1.0 && written(&m) <= records(&out, "sessions").len() as f64,
        "{m:?}"
    );
    assert!(
        m.keys()
            .any(|k| k.starts_with("stripwatch_state_entries{window=\"flows\"")),
        "{m:?}"
    );
    assert!(m.contains_key("stripwatch_capture_loss_ratio"), "{m:?}");
    let summary = run.terminate();
    assert_eq!(summary["capture"]["files"], parts.len(), "{summary}");
    let reference = work.join("reference");
    let uncut: Vec<PathBuf> = CAPTURES[..4].iter().map(|c| bundled(c)).collect();
    let uncut: Vec<&Path> = uncut.iter().map(PathBuf::as_path).collect();
    common::analyze(&uncut, &reference, &["--no-report"]);
    assert_eq!(
        records(&out, "sessions").len(),
        common::ndjson(&reference.join("sessions.ndjson")).len(),
        "{summary}"
    );
    assert_eq!(
        summary["capture"]["packets"].as_f64(),
        Some(packets as f64),
        "{summary}"
    );
    assert_eq!(
        summary["capture"]["bytes"].as_f64(),
        Some(bytes as f64),
        "{summary}"
    );
}

#[test]
fn follow_refreshes_the_shared_baseline_while_it_runs() {
    let work = common::tempdir("follow-shared");
    let Some(ch) = common::clickhouse::ClickHouse::start(&work.join("ch")) else {
        return;
    };
    let o = common::run(&["schema", "apply", "--clickhouse", &ch.url()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (dir, out) = (work.join("dir"), work.join("b"));
    std::fs::create_dir_all(&dir).unwrap();

    // Sensor B follows from the start, when the shared history is still empty.
    let log = work.join("log-b");
    let child = Command::new(common::bin())
        .args(["analyze", "--follow"])
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .args([
            "--follow-settle",
            "1",
            "--no-report",
            "--json",
            "--log-format",
            "json",
        ])
        .args(["--sensor", "sensor-b", "--clickhouse", &ch.url()])
        .args(["--shared-baseline", "--shared-baseline-refresh", "1"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("cannot start stripwatch analyze --follow");
    let mut run = Follow { child, log };

    // Sensor A then sees the server offer STARTTLS, and its rows reach ClickHouse.
    let a = work.join("a");
    common::analyze(
        &[&bundled("real-postfix-starttls-ok")],
        &a,
        &[
            "--no-report",
            "--sensor",
            "sensor-a",
            "--clickhouse",
            &ch.url(),
        ],
    );
    std::thread::sleep(Duration::from_secs(3));

    // B sees the same server with the line deleted: A's history, read since the start,
    // convicts it.
    let deleted = Part {
        name: "mail_00001_20261122154024.pcap".into(),
        bytes: std::fs::read(bundled("real-postfix-delete")).unwrap(),
    };
    drop_in(&dir, &deleted);
    run.wait_for("the file", Duration::from_secs(20), |r| {
        files_read(&r.log).len() == 1
    });
    run.terminate();
    let missing: Vec<Value> = records(&out, "findings")
        .into_iter()
        .filter(|f| f["kind"] == "starttls-missing")
        .collect();
    assert_eq!(missing.len(), 1, "{:?}", records(&out, "findings"));
    assert_eq!(missing[0]["evidence"]["seen_by_sensor"], "sensor-a");
}

/// The certificates in one rotated part: fingerprint -> (sessions, first_seen).
fn certificates_in(part: &Path) -> std::collections::BTreeMap<String, (u64, String)> {
    common::ndjson(part)
        .iter()
        .map(|c| {
            (
                c["fingerprint"].as_str().unwrap().to_string(),
                (
                    c["sessions"].as_u64().unwrap(),
                    c["first_seen"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

/// In a long run, `certificates-*.ndjson` of a set of files that closes lists the certificates
/// seen while it was open (before the run ends, which is what a shipper that takes closed files
/// needs), with the counts of the run so far; a certificate seen again later is listed again.
/// Three TLS 1.2 captures, 5 to 8 s apart, whose leaves share one intermediate CA. A session
/// reaches the judge (which remembers its certificates) once the packets after it let it out of
/// the capture-order merge, and the files after `--hold` more. So once the first session is
/// written, the first set closes (SIGHUP) with the first capture's certificates (and the
/// second's, if that session was judged by then). The last set has the third leaf and the CA
/// from all 3 sessions, and not the first leaf, unseen since.
#[test]
fn a_rotation_writes_the_certificates_seen_while_the_set_was_open() {
    let work = common::tempdir("follow-certs");
    let (dir, out, state) = (work.join("dir"), work.join("out"), work.join("state.redb"));
    std::fs::create_dir_all(&dir).unwrap();
    let captures = ["tls-ca-signed-ok", "tls-expired", "tls-wrong-name"];
    let reference: Vec<_> = captures
        .iter()
        .map(|c| {
            let o = work.join(format!("reference-{c}"));
            common::analyze(&[&bundled(c)], &o, &["--no-report"]);
            certificates_in(&o.join("certificates.ndjson"))
        })
        .collect();
    let shared: Vec<&String> = reference[0]
        .keys()
        .filter(|k| reference[1].contains_key(*k) && reference[2].contains_key(*k))
        .collect();
    assert_eq!(
        shared.len(),
        1,
        "the captures share their CA: {reference:?}"
    );
    let ca = shared[0].clone();
    let ca_since = reference[0][&ca].1.clone();

    let log = work.join("log");
    let mut run = Follow::start_with(&dir, &out, &state, &log, &["--log-interval", "1"]);
    let part = |i: usize| Part {
        name: format!("mail_{i:05}_2026112216190{i}.pcap"),
        bytes: std::fs::read(bundled(captures[i])).unwrap(),
    };
    drop_in(&dir, &part(0));
    drop_in(&dir, &part(1));
    run.wait_for("the first session", Duration::from_secs(30), |_| {
        records(&out, "sessions").len() == 1
    });
    // The rest of the second capture (a few packets) reaches the judge.
    std::thread::sleep(Duration::from_secs(1));
    let _ = Command::new("kill")
        .args(["-HUP", &run.child.id().to_string()])
        .status();
    run.wait_for("a second set of files", Duration::from_secs(20), |_| {
        common::rotated::parts(&out, "sessions").len() == 2
    });
    let sets = common::rotated::parts(&out, "certificates");
    assert_eq!(sets.len(), 2, "{sets:?}");
    // Still running: the closed set already lists the certificates seen so far.
    assert!(run.child.try_wait().unwrap().is_none());
    let closed = certificates_in(&sets[0]);
    let second_judged = closed.len() == 3;
    let mut want = reference[0].clone();
    if second_judged {
        want.extend(reference[1].clone());
    }
    want.insert(ca.clone(), (1 + u64::from(second_judged), ca_since.clone()));
    assert_eq!(closed, want, "the closed set");

    drop_in(&dir, &part(2));
    run.wait_for("the second session", Duration::from_secs(30), |_| {
        records(&out, "sessions").len() == 2
    });
    // The periodic counters (--log-interval 1) come while it runs, and follow the files read.
    run.wait_for("the counters of 3 files", Duration::from_secs(10), |r| {
        counted_files(&r.log).contains(&3)
    });
    let summary = run.terminate();
    assert_eq!(summary["capture"]["files"], 3, "{summary}");
    let files = counted_files(&log);
    assert_eq!(records(&out, "sessions").len(), 3, "{summary}");
    let last = certificates_in(&common::rotated::parts(&out, "certificates")[1]);
    let mut want = reference[2].clone();
    if !second_judged {
        want.extend(reference[1].clone());
    }
    want.insert(ca.clone(), (3, ca_since));
    assert_eq!(
        last, want,
        "the last set: the later leaves, and the CA again"
    );

    assert!(files.windows(2).all(|w| w[0] <= w[1]), "{files:?}");
    assert!(files.first() < Some(&3), "{files:?}");
}

/// The `files` of every periodic "follow counters" log event so far.
fn counted_files(log: &Path) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["message"] == "follow counters")
        .filter_map(|e| e["files"].as_u64())
        .collect()
}
