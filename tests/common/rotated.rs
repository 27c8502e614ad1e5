//! Long runs (`live`, `analyze --follow`) in tests: stopping one, and reading what it wrote (the
//! rotated parts `KIND-<time>.ndjson` of an output directory, and the per-session judgements
//! that must agree with `analyze` on the same packets).

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The rotated parts `KIND-*.ndjson` in `out`, in name order.
pub fn parts(out: &Path, kind: &str) -> Vec<PathBuf> {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(out)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    parts.retain(|p| {
        let name = p.file_name().unwrap().to_string_lossy();
        name.starts_with(&format!("{kind}-")) && name.ends_with(".ndjson")
    });
    parts.sort();
    parts
}

/// The records in every part of `kind` in `out` (a line being written is left out).
pub fn records(out: &Path, kind: &str) -> Vec<Value> {
    parts(out, kind)
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// A session's key: both ends.
pub fn session_key(s: &Value) -> String {
    format!(
        "{}:{} -> {}:{}",
        s["client_ip"].as_str().unwrap_or(""),
        s["client_port"],
        s["server_ip"].as_str().unwrap_or(""),
        s["server_port"]
    )
}

/// What must agree between a long run and `analyze` in one session.
pub fn judged(s: &Value) -> String {
    format!(
        "{} {:?} end={} offered={} tls_completed={} mail={}",
        s["verdict"].as_str().unwrap_or(""),
        super::finding_kinds(s),
        s["end_reason"],
        s["starttls_offered"],
        s["tls_handshake_completed"],
        s["mail_transactions"],
    )
}

/// What must agree between a long run and `analyze`, per session (keyed by both ends).
pub fn judgements(sessions: &[Value]) -> BTreeMap<String, String> {
    sessions
        .iter()
        .map(|s| (session_key(s), judged(s)))
        .collect()
}

/// Lines in every part of `kind` in `out` (0 while there is none).
pub fn lines(out: &Path, kind: &str) -> usize {
    parts(out, kind)
        .iter()
        .map(|p| std::fs::read_to_string(p).map_or(0, |s| s.lines().count()))
        .sum()
}

/// Stops a long run with SIGTERM: insists on status 0 within 30 s (the log in `log` says why
/// not) and returns the summary it printed on standard output (`--json`).
pub fn terminate(child: &mut std::process::Child, log: &Path) -> Value {
    let log = || std::fs::read_to_string(log).unwrap_or_default();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(sent, "kill -TERM failed");
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "no exit within 30 s of SIGTERM: {}",
            log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "exit {status}: {}", log());
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    serde_json::from_str(&stdout).expect("the summary on stdout")
}
