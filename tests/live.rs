//! `stripwatch live` on a real interface: a veth pair in a network namespace, the bundled Postfix
//! captures replayed onto one end with tcpreplay, `stripwatch live` on the other. The sessions it
//! writes must carry the same verdicts and findings as `analyze` gives on the same files, they
//! must reach sessions.ndjson within 5 s of the last packet while live keeps running on the now
//! silent link (the wall-clock tick), the metrics endpoint scraped meanwhile must count the same
//! packets and sessions, and SIGTERM must end it with status 0, the summary, every packet counted
//! and none dropped. Other tests check the switch to `--user` and the dropped capabilities from
//! outside (/proc/PID/status), the refusals at start, a whole run with one reader after the
//! kernel really refused the fanout group, and frames cut by `--snaplen` (counted, judged as
//! `analyze` judges the same cut frames, never evidence).
//!
//! Needs root (namespaces) and tcpreplay, ethtool, ip and python3 (`scripts/install-deps.sh`
//! installs them), and unshare (util-linux, essential on Debian). `STRIPWATCH_SKIP_REAL=1` skips it explicitly; a missing tool is a failure.

mod common;

use common::netns::{need_tool, sh};
use common::pcap::{REAL_POSTFIX, bundled};
use common::rotated::{judged, judgements, lines, parts, records, session_key};

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The longest a finished session may take to reach the files on a silent link.
const FLUSH_BOUND: Duration = Duration::from_secs(5);

/// True when the replay tests can run: root (or skipped explicitly), and the tools they need
/// (a missing one fails).
fn veth_ready() -> bool {
    if !common::require_root() {
        return false;
    }
    need_tool("tcpreplay", "tcpreplay");
    need_tool("ethtool", "ethtool");
    need_tool("ip", "iproute2");
    true
}

/// Replays `pcap` into `swl0` as fast as tcpreplay can.
fn replay(ns: &Namespace, pcap: &Path) {
    let o = ns
        .exec()
        .args(["tcpreplay", "-q", "--topspeed", "-i", "swl0"])
        .arg(pcap)
        .output()
        .expect("cannot run tcpreplay");
    assert!(
        o.status.success(),
        "tcpreplay {}: {}",
        pcap.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A network namespace holding the veth pair `swl0` (replay) – `swl1` (capture), deleted (with
/// whatever still runs in it) when dropped.
struct Namespace(String);

impl Namespace {
    fn new() -> Namespace {
        // One namespace per test: the tests of this file run in parallel.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("swlive-{}-{n}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        let ns = Namespace(name);
        sh(&["ip", "-n", &ns.0, "link", "set", "lo", "up"]);
        sh(&[
            "ip", "-n", &ns.0, "link", "add", "swl0", "type", "veth", "peer", "name", "swl1",
        ]);
        for dev in ["swl0", "swl1"] {
            // Offloads off, so that frames arrive as they were captured (DESIGN.md, live
            // capture); IPv6 off, so the link carries nothing but the replay.
            sh(&[
                "ip", "netns", "exec", &ns.0, "ethtool", "-K", dev, "tso", "off", "gso", "off",
                "gro", "off", "tx", "off", "rx", "off",
            ]);
            sh(&[
                "ip",
                "netns",
                "exec",
                &ns.0,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{dev}.disable_ipv6=1"),
            ]);
            sh(&["ip", "-n", &ns.0, "link", "set", dev, "up"]);
        }
        ns
    }

    /// Sets both ends' MTU (frames larger than 1500 bytes need it to pass the veth).
    fn set_mtu(&self, mtu: u32) {
        for dev in ["swl0", "swl1"] {
            sh(&[
                "ip",
                "-n",
                &self.0,
                "link",
                "set",
                dev,
                "mtu",
                &mtu.to_string(),
            ]);
        }
    }

    fn exec(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]);
        c
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.0])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            });
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Waits for `child` to end, at most `limit`.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Scrapes `http://ADDR/metrics` inside the namespace (python3, which the tests need anyway) and
/// parses the exposition text: every line is a comment or `name{labels} value`.
fn scrape(ns: &Namespace, addr: &str) -> BTreeMap<String, f64> {
    let o = ns
        .exec()
        .args([
            "python3",
            "-c",
            "import sys, urllib.request; \
             sys.stdout.write(urllib.request.urlopen('http://' + sys.argv[1] + '/metrics', \
             timeout=10).read().decode())",
            addr,
        ])
        .output()
        .expect("cannot run python3");
    assert!(
        o.status.success(),
        "scraping {addr}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8(o.stdout).expect("UTF-8 metrics");
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').expect("`name value`");
        let value = value
            .parse()
            .unwrap_or_else(|_| panic!("not a sample value: {line}"));
        assert!(
            samples.insert(name.to_string(), value).is_none(),
            "twice: {line}"
        );
    }
    samples
}

/// Waits until `live` logged that it captures on `interface` (its privileges are dropped by
/// then), failing if it ended or took more than 20 s.
fn wait_started(live: &mut Child, stderr_path: &Path, interface: &str) {
    let started = Instant::now();
    let wanted = format!("capturing on {interface}");
    while !std::fs::read_to_string(stderr_path)
        .unwrap_or_default()
        .contains(&wanted)
    {
        assert!(
            live.try_wait().unwrap().is_none(),
            "stripwatch live ended at start: {}",
            std::fs::read_to_string(stderr_path).unwrap_or_default()
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "stripwatch live did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Frames in a capture, as the file reader counts them.
fn frames(capture: &Path) -> u64 {
    let out = common::tempdir("live-count");
    let summary = common::analyze(&[capture], &out, &["--no-report"]);
    summary["packets"].as_u64().expect("packets in the summary")
}

#[test]
fn live_on_a_veth_judges_as_analyze_flushes_on_a_silent_link_and_stops_cleanly() {
    if !veth_ready() {
        return;
    }
    let pcaps: Vec<PathBuf> = REAL_POSTFIX.iter().map(|c| bundled(c)).collect();

    // The offline judgement of the same files in the same order.
    let offline = common::tempdir("live-offline");
    let refs: Vec<&Path> = pcaps.iter().map(PathBuf::as_path).collect();
    common::analyze(&refs, &offline, &["--no-report", "--workers", "2"]);
    let want = judgements(&common::ndjson(&offline.join("sessions.ndjson")));
    let want_packets: u64 = pcaps.iter().map(|p| frames(p)).sum();

    let ns = Namespace::new();
    // Made by stripwatch itself, so that it hands it to `--user nobody`.
    let out = common::tempdir("live-out").join("out");
    let stderr_path = out.with_extension("stderr");
    let mut live = ns
        .exec()
        .arg(common::bin())
        .args(["live", "-i", "swl1", "--out"])
        .arg(&out)
        .args([
            "--workers",
            "2",
            "--sensor",
            "live-test",
            "--user",
            "nobody",
            "--no-report",
            "--json",
            "--metrics",
            "127.0.0.1:9187",
            "--log-format",
            "json",
            "--log-interval",
            "1",
            "--state",
        ])
        .arg(out.with_extension("redb"))
        .args(["--state-interval", "1"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("cannot start stripwatch live");
    wait_started(&mut live, &stderr_path, "swl1");

    for pcap in &pcaps {
        replay(&ns, pcap);
    }
    let replayed = Instant::now();

    // The link is silent now: only the wall-clock tick can bring the last sessions out.
    let mut appeared = None;
    while replayed.elapsed() < Duration::from_secs(20) {
        if lines(&out, "sessions") >= want.len() {
            appeared = Some(replayed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        live.try_wait().unwrap().is_none(),
        "stripwatch live ended by itself"
    );
    let appeared = appeared.unwrap_or_else(|| {
        panic!(
            "{} of {} sessions written 20 s after the replay",
            lines(&out, "sessions"),
            want.len()
        )
    });
    eprintln!("every session was in sessions.ndjson {appeared:?} after the last packet");
    assert!(
        appeared <= FLUSH_BOUND,
        "the last session took {appeared:?} to reach the files (bound {FLUSH_BOUND:?})"
    );
    let before_stop = judgements(&records(&out, "sessions"));

    // SIGHUP: the set of files is closed and a new one started; the sensor goes on.
    // (More than one only if the hour turned during the test.)
    let sets = parts(&out, "sessions").len();
    let first_set = parts(&out, "sessions")[0].clone();
    let first_len = std::fs::metadata(&first_set).unwrap().len();
    sh(&["kill", "-HUP", &live.id().to_string()]);
    let hup = Instant::now();
    while parts(&out, "sessions").len() <= sets {
        assert!(
            hup.elapsed() < Duration::from_secs(5),
            "no new files 5 s after SIGHUP"
        );
        assert!(
            live.try_wait().unwrap().is_none(),
            "SIGHUP stopped stripwatch live"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for kind in ["sessions", "findings", "dns", "certificates"] {
        assert_eq!(
            parts(&out, kind).len(),
            sets + 1,
            "{kind}: a new part after SIGHUP"
        );
    }

    // The metrics endpoint, scraped while live runs, says the same.
    let metrics = scrape(&ns, "127.0.0.1:9187");
    // Per interface and worker: one capture handle per worker (PACKET_FANOUT).
    let per_worker = |name: &str| -> Vec<u64> {
        (0..2)
            .map(|w| {
                let key = format!("{name}{{interface=\"swl1\",worker=\"{w}\"}}");
                metrics
                    .get(&key)
                    .map(|v| *v as u64)
                    .unwrap_or_else(|| panic!("no {key}: {metrics:?}"))
            })
            .collect()
    };
    let packets = per_worker("stripwatch_capture_packets_total");
    assert_eq!(packets.iter().sum::<u64>(), want_packets, "{metrics:?}");
    assert_eq!(per_worker("stripwatch_capture_kernel_drops_total"), [0, 0]);
    assert_eq!(per_worker("stripwatch_capture_snapped_total"), [0, 0]);
    // The capture-loss estimate per worker: acknowledgments seen, none above a hole.
    let loss = |name: &str| -> Vec<u64> {
        (0..2)
            .map(|w| {
                metrics
                    .get(&format!("{name}{{worker=\"{w}\"}}"))
                    .map_or(u64::MAX, |v| *v as u64)
            })
            .collect()
    };
    assert!(
        loss("stripwatch_capture_loss_acks_total")
            .iter()
            .sum::<u64>()
            > 0,
        "{metrics:?}"
    );
    assert_eq!(
        loss("stripwatch_capture_loss_gaps_total"),
        [0, 0],
        "{metrics:?}"
    );
    assert_eq!(metrics.get("stripwatch_capture_loss_ratio"), Some(&0.0));
    // Each worker's share of the work, while it runs.
    let packets_by_worker = loss("stripwatch_worker_packets_total");
    assert!(
        packets_by_worker.iter().all(|p| *p != u64::MAX)
            && packets_by_worker.iter().sum::<u64>() > 0,
        "{metrics:?}"
    );
    assert!(
        loss("stripwatch_worker_sessions_total")
            .iter()
            .all(|s| *s != u64::MAX),
        "{metrics:?}"
    );
    assert!(
        loss("stripwatch_worker_dns_messages_total")
            .iter()
            .all(|d| *d != u64::MAX),
        "{metrics:?}"
    );
    assert!(metrics.contains_key("stripwatch_state_entries{window=\"flows\"}"));
    let by_verdict: u64 = metrics
        .iter()
        .filter(|(k, _)| k.starts_with("stripwatch_sessions_total{"))
        .map(|(_, v)| *v as u64)
        .sum();
    assert_eq!(by_verdict, want.len() as u64, "{metrics:?}");
    assert!(
        metrics.contains_key("stripwatch_findings_total{kind=\"starttls-stripped\"}"),
        "{metrics:?}"
    );
    assert!(
        metrics
            .keys()
            .any(|k| k.starts_with("stripwatch_build_info{"))
    );

    sh(&["kill", "-TERM", &live.id().to_string()]);
    let status = wait_bounded(&mut live, Duration::from_secs(30))
        .expect("stripwatch live did not stop within 30 s of SIGTERM");
    let mut stdout = String::new();
    std::io::Read::read_to_string(live.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert!(
        status.success(),
        "stripwatch live exited with {status}: {}",
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );

    // Same judgements as offline, nothing added or duplicated by the stop.
    let got = judgements(&records(&out, "sessions"));
    assert_eq!(
        lines(&out, "sessions"),
        got.len(),
        "a session written twice"
    );
    assert_eq!(got, before_stop, "the stop changed or added sessions");
    assert_eq!(got, want, "live and analyze disagree");
    assert_eq!(
        std::fs::metadata(&first_set).unwrap().len(),
        first_len,
        "a closed file was written again"
    );

    // The report reads every part of the rotated directory.
    let o = common::run(&["report", out.to_str().unwrap(), "--format", "csv"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_dir(out.join("csv"))
        .expect("csv/ written")
        .count();
    assert!(csv > 0);

    // The summary: printed (--json) and written, with the capture's own counters.
    let printed: Value = serde_json::from_str(&stdout).expect("the summary on stdout is JSON");
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(printed, written);
    let capture = &written["capture"];
    assert_eq!(capture["interfaces"], "swl1");
    assert_eq!(capture["kernel_drops"], 0, "{capture}");
    assert_eq!(
        capture["packets"].as_u64(),
        Some(want_packets),
        "every replayed frame captured: {capture}"
    );
    assert_eq!(written["packets"].as_u64(), Some(want_packets));

    // The log: one JSON object per line, and the periodic event carries the counters as fields.
    let log = std::fs::read_to_string(&stderr_path).unwrap();
    let events: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON log line: {l}")))
        .collect();
    // Per worker, the latest counters event after the replay adds up to every frame.
    let mut latest: BTreeMap<String, &Value> = BTreeMap::new();
    for e in events.iter().filter(|e| e["message"] == "capture counters") {
        assert_eq!(e["interface"], "swl1", "{e}");
        assert_eq!(e["kernel_drops"], 0, "{e}");
        latest.insert(e["worker"].to_string(), e);
    }
    assert_eq!(latest.len(), 2, "{log}");
    let logged: u64 = latest.values().filter_map(|e| e["packets"].as_u64()).sum();
    assert_eq!(
        logged, want_packets,
        "no counters event after the replay: {log}"
    );
    assert!(
        latest
            .values()
            .all(|e| e["sessions"].as_u64() == Some(want.len() as u64)),
        "{log}"
    );
    // --state-interval 1: what the run learned was saved while it ran, not only at the end.
    assert!(
        events
            .iter()
            .any(|e| e["message"] == "state saved" && e["written"].as_u64() > Some(0)),
        "no periodic state save: {log}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["message"] == "output files rotated"),
        "{log}"
    );
}

#[test]
fn live_refuses_a_bad_interface_or_metrics_address_in_one_line_with_status_2() {
    let out = common::tempdir("live-bad");
    let out_arg = out.to_str().unwrap();
    refused_in_one_line(
        &[
            "live",
            "-i",
            "swnosuchif0",
            "--allow-root",
            "--out",
            out_arg,
        ],
        "swnosuchif0",
    );
    let o = common::run(&["live", "--out", out_arg]);
    assert_eq!(o.status.code(), Some(2), "no interface");

    // A metrics address already in use, before any capture starts.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    refused_in_one_line(
        &[
            "live",
            "-i",
            "lo",
            "--metrics",
            &addr,
            "--allow-root",
            "--out",
            out_arg,
        ],
        "--metrics",
    );
}

#[test]
fn live_says_once_why_the_kernel_refused_the_fanout() {
    if !common::require_root() {
        return;
    }
    // libpcap's `nflog` device is a netlink socket, not a packet socket: PACKET_FANOUT is
    // refused there, and the run goes on with one reader (until libpcap refuses the default
    // filter on NFLOG frames, which ends it at start).
    let out = common::tempdir("live-nofanout");
    let o = common::run(&[
        "live",
        "-i",
        "nflog",
        "--workers",
        "2",
        "--allow-root",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("PACKET_FANOUT unavailable"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("nflog: PACKET_FANOUT:"), "{stderr}");
}

/// `stripwatch ARGS` exits 2 with one line on standard error that names `what`.
fn refused_in_one_line(args: &[&str], what: &str) {
    let o = common::run(args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(what), "{stderr}");
}

/// The lines of /proc/PID/status (or of a thread's) as name -> value.
fn proc_status(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn live_switches_to_the_user_and_drops_every_capability_in_every_thread() {
    if !common::require_root() {
        return;
    }
    need_tool("ip", "iproute2");
    need_tool("ethtool", "ethtool");
    let ns = Namespace::new();
    let dir = common::tempdir("live-user");
    let out = dir.join("out");
    let state = dir.join("state.redb");
    let stderr_path = dir.join("stderr");
    let mut live = ns
        .exec()
        .arg(common::bin())
        .args(["live", "-i", "swl1", "--user", "nobody", "--no-report"])
        .args(["--metrics", "127.0.0.1:9188", "--out"])
        .arg(&out)
        .arg("--state")
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("cannot start stripwatch live");
    wait_started(&mut live, &stderr_path, "swl1");

    // Checked from outside, for the process and each of its threads (capabilities and ids are
    // per thread): nobody's ids, no capability in any set, no way back.
    let nobody = "65534\t65534\t65534\t65534";
    let tasks: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{}/task", live.id()))
        .unwrap()
        .map(|t| t.unwrap().path().join("status"))
        .collect();
    assert!(tasks.len() > 2, "the workers run: {tasks:?}");
    for status in std::iter::once(PathBuf::from(format!("/proc/{}/status", live.id()))).chain(tasks)
    {
        let s = proc_status(&status);
        let ids = |k: &str| s[k].split_whitespace().collect::<Vec<_>>().join("\t");
        assert_eq!(ids("Uid"), nobody, "{}: {s:?}", status.display());
        assert_eq!(ids("Gid"), nobody, "{}: {s:?}", status.display());
        assert_eq!(s["Groups"], "65534", "{}", status.display());
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(s[set], "0000000000000000", "{set} of {}", status.display());
        }
        assert_eq!(s["NoNewPrivs"], "1", "{}", status.display());
    }

    sh(&["kill", "-TERM", &live.id().to_string()]);
    let status = wait_bounded(&mut live, Duration::from_secs(30)).expect("stopped");
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    // What it made before the switch was handed to the user, and it could write there after.
    use std::os::unix::fs::MetadataExt;
    for path in [out.clone(), out.join("summary.json"), state] {
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.uid(), 65534, "{}", path.display());
    }
}

#[test]
fn live_refuses_root_without_user_an_unknown_user_and_an_unwritable_out() {
    if !common::require_root() {
        return;
    }
    let dir = common::tempdir("live-root");
    let out = dir.join("out");
    let out = out.to_str().unwrap();
    let refused = |args: &[&str], wanted: &str| {
        let o = common::run(args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(wanted), "{args:?}: {stderr}");
    };
    refused(
        &["live", "-i", "lo", "--out", out],
        "refusing to run as root",
    );
    refused(
        &["live", "-i", "lo", "--user", "swnosuchuser", "--out", out],
        "no such user",
    );
    // A directory root made before (not stripwatch) stays root's: nobody cannot write it.
    std::fs::create_dir_all(out).unwrap();
    refused(
        &["live", "-i", "lo", "--user", "nobody", "--out", out],
        "not writable",
    );
}

/// What must agree per session between runs that saw both directions alike: the verdict and
/// findings, and which side's packets, greeting and EHLO were seen, and the DNS lookup it was
/// linked to (the link needs the client's lookups on the session's worker).
fn sides(sessions: &[Value]) -> BTreeMap<String, String> {
    sessions
        .iter()
        .map(|s| {
            let value = format!(
                "{} packets={}/{} banner={} greeting={} mx={} lookups={}",
                judged(s),
                s["client_packets"],
                s["server_packets"],
                s["banner_code"],
                s["greeting_verb"],
                s["mx_host"],
                s["dns_transaction_ids"].as_array().map_or(0, Vec::len),
            );
            (session_key(s), value)
        })
        .collect()
}

/// Sessions that saw only one direction.
fn one_sided(sessions: &[Value]) -> usize {
    sessions
        .iter()
        .filter(|s| s["client_packets"] == 0 || s["server_packets"] == 0)
        .count()
}

/// Runs `live --workers N` on a fresh veth, replays `pcap` into it, waits until every frame was
/// read, stops it and returns its sessions and summary.
fn live_run(pcap: &Path, workers: &str, frames: u64) -> (Vec<Value>, Value) {
    let ns = Namespace::new();
    let run = live_run_in(&ns, pcap, workers, frames, &[], &[]);
    (run.sessions, run.summary)
}

/// What one `live_run_in` left behind.
struct LiveRun {
    sessions: Vec<Value>,
    summary: Value,
    /// Its output directory.
    out: PathBuf,
    /// Its log (JSON lines).
    log: String,
}

/// The process a wrapper such as `unshare --fork` started: its only child, found through
/// /proc. `unshare --fork` ignores SIGTERM itself while it waits, so the signal goes there.
fn only_child(pid: u32) -> u32 {
    let path = format!("/proc/{pid}/task/{pid}/children");
    let started = Instant::now();
    loop {
        let children = std::fs::read_to_string(&path).unwrap_or_default();
        let pids: Vec<u32> = children
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if let [child] = pids[..] {
            return child;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path}: not one child: {children:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `WRAPPER stripwatch live --workers N EXTRA` in `ns` (the wrapper, such as `unshare`,
/// must exec or fork stripwatch as its only child), replays `pcap` into it, waits until every
/// frame was read, stops it with SIGTERM and returns what it wrote.
fn live_run_in(
    ns: &Namespace,
    pcap: &Path,
    workers: &str,
    frames: u64,
    wrapper: &[&str],
    extra: &[&str],
) -> LiveRun {
    let out = common::tempdir(&format!("live-run-{}-{workers}", ns.0));
    let stderr_path = out.join("stderr");
    let mut live = ns
        .exec()
        .args(wrapper)
        .arg(common::bin())
        .args(["live", "-i", "swl1", "--out"])
        .arg(out.join("out"))
        // Offline a session waits for the whole run for an offer seen later; so it does here.
        .args(["--workers", workers, "--hold", "3600", "--allow-root"])
        .args(["--no-report", "--json", "--log-format", "json"])
        .args(["--log-interval", "1"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("cannot start stripwatch live");
    wait_started(&mut live, &stderr_path, "swl1");
    let target = if wrapper.is_empty() {
        live.id()
    } else {
        only_child(live.id())
    };
    replay(ns, pcap);
    // Every frame read (per handle, the latest periodic counters) before the stop.
    let started = Instant::now();
    loop {
        let mut latest: BTreeMap<String, u64> = BTreeMap::new();
        for l in std::fs::read_to_string(&stderr_path).unwrap().lines() {
            let e: Value = serde_json::from_str(l).unwrap_or_default();
            if e["message"] == "capture counters" {
                let worker = e["worker"].to_string();
                latest.insert(worker, e["packets"].as_u64().unwrap_or(0));
            }
        }
        if latest.values().sum::<u64>() >= frames {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{latest:?} of {frames} frames read 20 s after the replay"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    sh(&["kill", "-TERM", &target.to_string()]);
    let status = wait_bounded(&mut live, Duration::from_secs(30)).expect("no stop after SIGTERM");
    let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(status.success(), "{status}: {log}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("out/summary.json")).unwrap())
            .unwrap();
    LiveRun {
        sessions: records(&out.join("out"), "sessions"),
        summary,
        out: out.join("out"),
        log,
    }
}

#[test]
fn live_with_fanout_gives_each_worker_both_directions_and_the_judgements_of_analyze() {
    if !veth_ready() {
        return;
    }
    // Many clients, each with MX, A and TLSA lookups before its deliveries.
    let dir = common::tempdir("live-fanout");
    let pcap = dir.join("dense.pcap");
    stripwatch_synth::write_mixed_profile(&pcap, 400, 7, stripwatch_synth::Profile::Dense).unwrap();
    let offline = dir.join("offline");
    let summary = common::analyze(&[&pcap], &offline, &["--no-report", "--workers", "2"]);
    let frames = summary["packets"].as_u64().unwrap();
    let offline = common::ndjson(&offline.join("sessions.ndjson"));
    assert!(
        summary["dns"]["sessions_linked"].as_u64() > Some(100),
        "the capture links sessions to lookups: {}",
        summary["dns"]
    );

    let (one, one_summary) = live_run(&pcap, "1", frames);
    let (two, two_summary) = live_run(&pcap, "2", frames);
    assert_eq!(one_summary["capture"]["fanout"], false);
    assert_eq!(two_summary["capture"]["fanout_refused"], Value::Null);
    let capture = &two_summary["capture"];
    assert_eq!(capture["fanout"], true, "{capture}");
    assert_eq!(capture["packets"].as_u64(), Some(frames), "{capture}");
    assert_eq!(capture["kernel_drops"], 0, "{capture}");
    let handles = capture["handles"].as_array().unwrap();
    assert_eq!(handles.len(), 2, "{capture}");
    for h in handles {
        assert!(
            h["packets"].as_u64() > Some(0),
            "a worker got nothing: {capture}"
        );
    }
    eprintln!(
        "fanout: {} and {} of {frames} frames",
        handles[0]["packets"], handles[1]["packets"]
    );

    // Symmetry: no session lost a direction that one reader saw, and each equals analyze's,
    // down to the DNS lookups it was linked to.
    assert_eq!(one_sided(&two), one_sided(&one));
    assert_eq!(one_sided(&two), 0);
    assert_eq!(two.len(), offline.len());
    assert_eq!(sides(&two), sides(&one), "fanout and one reader disagree");
    assert_eq!(sides(&two), sides(&offline), "fanout and analyze disagree");
    assert_eq!(
        two_summary["dns"]["sessions_linked"], summary["dns"]["sessions_linked"],
        "links to lookups"
    );
}

/// The bundled real Postfix captures (`REAL_POSTFIX`, in order) as one file in `dir`, each
/// moved in time to start one second after the previous one ended, and the number of its
/// frames. The bundled files were made on different days: joined as they are, the first packet
/// after the jump is a lone timestamp far ahead, which `analyze` does not believe at once
/// (DESIGN.md, capture time), while live stamps the replay with the current time and never
/// sees a jump.
fn real_postfix_joined(dir: &Path) -> (PathBuf, u64) {
    let us = |r: &[u8]| {
        let word = |at: usize| i64::from(u32::from_le_bytes(r[at..at + 4].try_into().unwrap()));
        word(0) * 1_000_000 + word(4)
    };
    let mut joined: Option<common::pcap::Pcap> = None;
    for name in REAL_POSTFIX {
        let mut next = common::pcap::Pcap::read(&bundled(name));
        if let Some(all) = &joined {
            let end = us(all.records.last().unwrap());
            let shift = end + 1_000_000 - us(&next.records[0]);
            for r in &mut next.records {
                let t = us(r) + shift;
                r[0..4].copy_from_slice(&u32::try_from(t / 1_000_000).unwrap().to_le_bytes());
                r[4..8].copy_from_slice(&u32::try_from(t % 1_000_000).unwrap().to_le_bytes());
            }
        }
        match &mut joined {
            Some(all) => {
                assert_eq!(all.header, next.header, "{name}: another link type");
                all.records.extend(next.records);
            }
            None => joined = Some(next),
        }
    }
    let joined = joined.unwrap();
    let path = dir.join("real-postfix.pcap");
    std::fs::write(&path, joined.bytes(0..joined.records.len())).unwrap();
    (path, joined.records.len() as u64)
}

/// The fanout group id `capture/fanout.rs` `Group::new` gives the first interface of a process
/// with this pid.
fn fanout_group_id(pid: u32) -> u16 {
    (pid.wrapping_mul(0x9E37) & 0xffff) as u16
}

/// Holds the fanout group `id` in `ns` with `PACKET_FANOUT_HASH` on a packet socket of its own
/// (python3), until it is killed; returns once the kernel accepted the join. Fanout groups are
/// per network namespace, and a socket that joins an existing id with another mode or other
/// flags is refused with EINVAL: that is the refusal `live` must survive.
fn hold_fanout_group(ns: &Namespace, id: u16) -> Child {
    let mut holder = ns
        .exec()
        .args([
            "python3",
            "-c",
            "import socket, sys\n\
             s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))\n\
             SOL_PACKET, PACKET_FANOUT, PACKET_FANOUT_HASH = 263, 18, 0\n\
             s.setsockopt(SOL_PACKET, PACKET_FANOUT, int(sys.argv[1]) | PACKET_FANOUT_HASH << 16)\n\
             print('held', flush=True)\n\
             sys.stdin.read()\n",
            &id.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    if line.trim() != "held" {
        let _ = holder.kill();
        let mut err = String::new();
        std::io::Read::read_to_string(holder.stderr.as_mut().unwrap(), &mut err).unwrap();
        panic!("python3 could not hold fanout group {id}: {err}");
    }
    holder
}

#[test]
fn live_runs_whole_with_one_reader_after_the_kernel_refused_the_fanout() {
    if !veth_ready() {
        return;
    }
    need_tool("unshare", "util-linux");
    let dir = common::tempdir("live-refused");
    let (pcap, frames) = real_postfix_joined(&dir);
    let offline = dir.join("offline");
    common::analyze(&[&pcap], &offline, &["--no-report", "--workers", "2"]);
    let offline = common::ndjson(&offline.join("sessions.ndjson"));

    // stripwatch as pid 1 of a new pid namespace derives a known group id; another socket in
    // the same network namespace holds that id first, in hash mode: the kernel refuses the
    // sensor's join (EINVAL), as it would for any other sensor that happened to share the id.
    let ns = Namespace::new();
    let mut holder = hold_fanout_group(&ns, fanout_group_id(1));
    let run = live_run_in(
        &ns,
        &pcap,
        "2",
        frames,
        &["unshare", "--pid", "--fork", "--mount-proc"],
        &[],
    );
    let _ = holder.kill();
    let _ = holder.wait();

    let warnings: Vec<&str> = run
        .log
        .lines()
        .filter(|l| l.contains("PACKET_FANOUT unavailable"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", run.log);
    assert!(
        warnings[0].contains("swl1: PACKET_FANOUT: Invalid argument"),
        "{}",
        run.log
    );
    let capture = &run.summary["capture"];
    assert_eq!(capture["fanout"], false, "{capture}");
    assert!(
        capture["fanout_refused"]
            .as_str()
            .is_some_and(|r| r.contains("Invalid argument")),
        "{capture}"
    );
    // One reader: one handle, which saw every frame.
    let handles = capture["handles"].as_array().unwrap();
    assert_eq!(handles.len(), 1, "{capture}");
    assert_eq!(handles[0]["worker"], Value::Null, "{capture}");
    assert_eq!(capture["packets"].as_u64(), Some(frames), "{capture}");
    assert_eq!(capture["kernel_drops"], 0, "{capture}");
    // And it sharded to both workers as analyze does: the same sessions, judged the same.
    assert_eq!(run.sessions.len(), offline.len());
    assert_eq!(one_sided(&run.sessions), 0);
    assert_eq!(
        sides(&run.sessions),
        sides(&offline),
        "one reader after the refusal and analyze disagree"
    );
}

/// The snap length of the snapped-frames test: the Ethernet, IP and TCP headers (66 bytes with
/// TCP timestamps) and the first 30 bytes of payload.
const SNAP: usize = 96;

/// `pcap` as a capture with `snaplen` would hold it: every record cut to `snaplen` bytes, its
/// length on the wire kept. Returns the frames that were longer.
fn snap_capture(pcap: &common::pcap::Pcap, snaplen: usize, dst: &Path) -> usize {
    let mut out = pcap.header.clone();
    let mut cut = 0;
    for r in &pcap.records {
        let word = |at: usize| u32::from_le_bytes(r[at..at + 4].try_into().unwrap()) as usize;
        let (caplen, wire) = (word(8), word(12));
        assert_eq!(caplen, wire, "the bundled capture is not snapped already");
        let keep = caplen.min(snaplen);
        cut += usize::from(keep < wire);
        out.extend_from_slice(&r[..8]);
        out.extend_from_slice(&(keep as u32).to_le_bytes());
        out.extend_from_slice(&r[12..16 + keep]);
    }
    std::fs::write(dst, out).unwrap();
    cut
}

#[test]
fn live_counts_frames_cut_by_the_snap_length_and_does_not_judge_them_as_whole() {
    if !veth_ready() {
        return;
    }
    let dir = common::tempdir("live-snapped");
    let (pcap, frames) = real_postfix_joined(&dir);
    let snapped = dir.join("snapped.pcap");
    let longer = snap_capture(&common::pcap::Pcap::read(&pcap), SNAP, &snapped) as u64;
    assert!(longer > 50, "the captures carry frames longer than {SNAP}");
    // analyze on the same frames as cut by the kernel: live must judge them alike.
    let offline_dir = dir.join("offline");
    let offline_summary = common::analyze(
        &[&snapped],
        &offline_dir,
        &["--no-report", "--workers", "2"],
    );
    let offline = common::ndjson(&offline_dir.join("sessions.ndjson"));

    let ns = Namespace::new();
    let snaplen = SNAP.to_string();
    let run = live_run_in(&ns, &pcap, "2", frames, &[], &["--snaplen", &snaplen]);
    let capture = &run.summary["capture"];
    assert_eq!(capture["packets"].as_u64(), Some(frames), "{capture}");
    assert_eq!(capture["snapped"].as_u64(), Some(longer), "{capture}");
    assert_eq!(capture["kernel_drops"], 0, "{capture}");
    // The periodic log event counts them too (per handle, the latest event of each).
    let mut latest: BTreeMap<String, u64> = BTreeMap::new();
    for e in run
        .log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        if e["message"] == "capture counters" {
            latest.insert(e["worker"].to_string(), e["snapped"].as_u64().unwrap_or(0));
        }
    }
    assert_eq!(latest.values().sum::<u64>(), longer, "{}", run.log);
    // Every cut frame carried TCP payload past the headers: each is a truncated payload.
    assert_eq!(
        run.summary["decode"]["truncated_payload"].as_u64(),
        Some(longer)
    );
    assert_eq!(
        offline_summary["decode"]["truncated_payload"].as_u64(),
        Some(longer)
    );
    assert_eq!(run.sessions.len(), offline.len());
    assert_eq!(
        sides(&run.sessions),
        sides(&offline),
        "live and analyze disagree"
    );
    // A cut tail is a hole known from the IP header, not loss before the sensor: the
    // capture-loss estimate (acknowledgments above a hole) stays at 0.
    for summary in [&run.summary, &offline_summary] {
        let loss = &summary["capture_loss"];
        assert!(loss["acks"].as_u64() > Some(0), "{loss}");
        assert_eq!(loss["acked_gaps"], 0, "{loss}");
        assert_eq!(loss["ratio"], 0.0, "{loss}");
    }

    // What the cut hides is a hole, never evidence: a session that lost bytes says so
    // (`dialog_gaps`), and a cut never adds a finding the whole frames do not give.
    let whole_dir = dir.join("whole");
    common::analyze(&[&pcap], &whole_dir, &["--no-report", "--workers", "2"]);
    let whole: BTreeMap<String, Vec<String>> = common::ndjson(&whole_dir.join("sessions.ndjson"))
        .iter()
        .map(|s| (session_key(s), common::finding_kinds(s)))
        .collect();
    for s in &run.sessions {
        assert!(s["dialog_gaps"].as_u64() > Some(0), "{s}");
        let had = &whole[&session_key(s)];
        for kind in common::finding_kinds(s) {
            assert!(
                had.contains(&kind),
                "{kind} only because bytes were cut: {s}"
            );
        }
    }
    // The clean upgrade: its EHLO reply cut after 30 bytes is no EHLO reply without STARTTLS
    // (the 220 after the hole answers STARTTLS, not EHLO), and its cut handshake, which then
    // ends with the client's reset, is no failed handshake.
    let clean = common::tempdir("live-snapped-clean");
    common::analyze(
        &[&bundled("real-postfix-starttls-ok")],
        &clean,
        &["--no-report"],
    );
    let clean = common::ndjson(&clean.join("sessions.ndjson"));
    assert_eq!(clean.len(), 1);
    let cut = run
        .sessions
        .iter()
        .find(|s| session_key(s) == session_key(&clean[0]))
        .expect("the clean session");
    assert_eq!(cut["ehlo_reply_code"], Value::Null, "{cut}");
    assert_eq!(cut["starttls_offered"], false, "{cut}");
    assert_eq!(cut["starttls_reply_code"], 220, "{cut}");
    assert_eq!(cut["handshake_failure"], Value::Null, "{cut}");
    assert_eq!(
        common::finding_kinds(cut),
        common::finding_kinds(&clean[0]),
        "{cut}"
    );
    eprintln!(
        "{longer} of {frames} frames cut at {SNAP} bytes; verdicts {:?}",
        run.sessions
            .iter()
            .map(|s| s["verdict"].as_str().unwrap_or(""))
            .collect::<Vec<_>>()
    );
}

/// Copies the classic little-endian pcap `src` (Ethernet, IPv4) to `dst` without its first TCP
/// segment that carries data to port 25: the loss of one frame between the wire and the sensor,
/// while the server's acknowledgment of that segment is still captured.
fn drop_first_client_segment(src: &Path, dst: &Path) {
    let d = std::fs::read(src).unwrap();
    assert_eq!(
        d[..4],
        [0xd4, 0xc3, 0xb2, 0xa1],
        "a little-endian classic pcap"
    );
    assert_eq!(d[20..24], [1, 0, 0, 0], "Ethernet");
    let mut out = d[..24].to_vec();
    let (mut off, mut dropped) = (24, false);
    while off + 16 <= d.len() {
        let incl = u32::from_le_bytes(d[off + 8..off + 12].try_into().unwrap()) as usize;
        let frame = &d[off + 16..off + 16 + incl];
        let tcp = 14 + usize::from(frame[14] & 0xf) * 4;
        let to_25 = frame[23] == 6 && frame[tcp + 2..tcp + 4] == [0, 25];
        let payload = frame.len() - tcp - usize::from(frame[tcp + 12] >> 4) * 4;
        if !dropped && to_25 && payload > 0 {
            dropped = true;
        } else {
            out.extend_from_slice(&d[off..off + 16 + incl]);
        }
        off += 16 + incl;
    }
    assert!(dropped, "no client data segment in {}", src.display());
    std::fs::write(dst, out).unwrap();
}

#[test]
fn capture_loss_counts_acks_above_a_segment_the_capture_lost_and_none_when_intact() {
    let intact = common::root().join("pcaps/real-postfix-starttls-ok.pcap");
    let dir = common::tempdir("capture-loss");
    let lossy = dir.join("lost-ehlo.pcap");
    drop_first_client_segment(&intact, &lossy);

    let whole = common::analyze(&[&intact], &dir.join("intact"), &["--no-report"]);
    let loss = &whole["capture_loss"];
    assert!(loss["acks"].as_u64() > Some(0), "{loss}");
    assert_eq!(loss["acked_gaps"], 0, "{loss}");
    assert_eq!(loss["ratio"], 0.0, "{loss}");

    let cut = common::analyze(&[&lossy], &dir.join("lossy"), &["--no-report"]);
    let loss = &cut["capture_loss"];
    assert!(loss["acked_gaps"].as_u64() >= Some(1), "{loss}");
    let ratio = loss["ratio"].as_f64().unwrap();
    assert!(ratio > 0.0 && ratio <= 1.0, "{loss}");
    assert_eq!(cut["flows"]["acked_gaps"], loss["acked_gaps"]);
    // And in the text summary.
    let o = common::run(&[
        "analyze",
        lossy.to_str().unwrap(),
        "--out",
        dir.join("text").to_str().unwrap(),
        "--no-report",
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("tcp acks above a hole (loss)") && !l.trim().ends_with(" 0")),
        "{text}"
    );
}

/// Frames larger than the MTU, as GRO on the capture host (or TSO on a sender captured on its
/// own host) delivers them, are taken whole: the TLS 1.2 captures with their certificate flight
/// merged into one frame of more than 1,500 bytes (`Pcap::coalesce`), replayed through a veth
/// with a 9,000-byte MTU, give the sessions and certificates of `analyze` on the original
/// segments, with nothing cut by the snap length.
#[test]
fn live_takes_frames_larger_than_the_mtu_whole() {
    if !veth_ready() {
        return;
    }
    let dir = common::tempdir("live-gro");
    let names = ["tls-ca-signed-ok", "tls-expired", "tls-wrong-name"];
    let paths: Vec<PathBuf> = names.iter().map(|n| bundled(n)).collect();
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let original = common::pcap::Pcap::join(&refs);
    let merged = original.coalesce();
    assert!(
        merged.largest_frame() > 1514 && merged.records.len() < original.records.len(),
        "the certificate flights merge into frames above the MTU: {} frames, largest {}",
        merged.records.len(),
        merged.largest_frame()
    );
    let pcap = dir.join("gro.pcap");
    std::fs::write(&pcap, merged.bytes(0..merged.records.len())).unwrap();
    let offline = dir.join("offline");
    common::analyze(&refs, &offline, &["--no-report"]);
    let want = judgements(&common::ndjson(&offline.join("sessions.ndjson")));
    let fingerprints = |certs: Vec<Value>| -> Vec<String> {
        let mut v: Vec<String> = certs
            .iter()
            .map(|c| c["fingerprint"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let want_certs = fingerprints(common::ndjson(&offline.join("certificates.ndjson")));
    assert!(!want_certs.is_empty());

    let ns = Namespace::new();
    ns.set_mtu(9000);
    let frames = merged.records.len() as u64;
    let run = live_run_in(&ns, &pcap, "1", frames, &[], &[]);
    let capture = &run.summary["capture"];
    assert_eq!(capture["packets"].as_u64(), Some(frames), "{capture}");
    assert_eq!(capture["snapped"], 0, "{capture}");
    assert_eq!(capture["kernel_drops"], 0, "{capture}");
    assert_eq!(judgements(&run.sessions), want);
    assert_eq!(fingerprints(records(&run.out, "certificates")), want_certs);
}
