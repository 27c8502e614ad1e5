//! Reading what a long run (`live`, `analyze --follow`) wrote: the rotated parts
//! `KIND-<time>.ndjson` of an output directory, and the per-session judgements that must agree
//! with `analyze` on the same packets.

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

/// What must agree between a long run and `analyze`, per session (keyed by both ends).
pub fn judgements(sessions: &[Value]) -> BTreeMap<String, String> {
    sessions
        .iter()
        .map(|s| {
            let key = format!(
                "{}:{} -> {}:{}",
                s["client_ip"].as_str().unwrap_or(""),
                s["client_port"],
                s["server_ip"].as_str().unwrap_or(""),
                s["server_port"]
            );
            let value = format!(
                "{} {:?} end={} offered={} tls_completed={} mail={}",
                s["verdict"].as_str().unwrap_or(""),
                super::finding_kinds(s),
                s["end_reason"],
                s["starttls_offered"],
                s["tls_handshake_completed"],
                s["mail_transactions"],
            );
            (key, value)
        })
        .collect()
}
