//! The memory budget (`--memory-limit`): a tiny budget forces evictions in every window that
//! grows with a mixed capture, the run still completes and loses no session, and a generous
//! budget changes nothing.

mod common;

use common::{analyze, ndjson, run, tempdir};

fn mixed(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("mixed.pcap");
    stripwatch_synth::write_mixed(&path, 1_500, 3).unwrap();
    path
}

#[test]
fn a_tiny_budget_evicts_counts_and_loses_no_session() {
    let dir = tempdir("memory-tiny");
    let pcap = mixed(&dir);
    let (tiny, big) = (dir.join("tiny"), dir.join("big"));
    let s_tiny = analyze(&[&pcap], &tiny, &["--memory-limit", "64K", "--no-report"]);
    let s_big = analyze(&[&pcap], &big, &["--memory-limit", "8G", "--no-report"]);
    let windows = &s_tiny["memory"]["windows"];
    for w in [
        "flows",
        "held_sessions",
        "dns_clients",
        "dns_wait",
        "mx_answers",
    ] {
        assert!(
            windows[w]["evictions"].as_u64().unwrap_or(0) > 0,
            "{w} evicted nothing: {windows}"
        );
        assert!(windows[w]["limit_bytes"].as_u64().unwrap_or(0) > 0);
    }
    // An evicted flow is written with `end_reason: evicted`; its later packets may start a new
    // mid-stream record, so there can be more records, but every connection is still there.
    assert!(s_tiny["sessions"].as_u64() >= s_big["sessions"].as_u64());
    let conns = |d: &std::path::Path| {
        let mut v: Vec<String> = ndjson(&d.join("sessions.ndjson"))
            .iter()
            .map(|s| format!("{} {} {}", s["client_ip"], s["client_port"], s["server_ip"]))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    assert_eq!(conns(&tiny), conns(&big), "a session was lost");
    assert!(
        ndjson(&tiny.join("sessions.ndjson"))
            .iter()
            .any(|s| s["end_reason"] == "evicted")
    );
}

#[test]
fn a_generous_budget_changes_nothing() {
    let dir = tempdir("memory-generous");
    let pcap = mixed(&dir);
    let (a, b) = (dir.join("default"), dir.join("generous"));
    analyze(&[&pcap], &a, &["--no-report"]);
    analyze(&[&pcap], &b, &["--memory-limit", "16G", "--no-report"]);
    for f in ["sessions.ndjson", "findings.ndjson", "dns.ndjson"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs"
        );
    }
}

#[test]
fn bad_limits_are_one_line_errors() {
    for bad in ["0", "abc", "10Q"] {
        let o = run(&[
            "analyze",
            "x.pcap",
            "--out",
            "/tmp/x",
            "--memory-limit",
            bad,
        ]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("--memory-limit"), "{err}");
    }
}
