//! Helpers shared by the integration tests: run the real binary, read its outputs.

#![allow(dead_code)]

pub mod clickhouse;
pub mod cluster;
pub mod netns;
pub mod pcap;
pub mod rotated;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary cargo built for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stripwatch"))
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Skips (explicitly) or insists on root; true when the test should run.
pub fn require_root() -> bool {
    if std::env::var("STRIPWATCH_SKIP_REAL").as_deref() == Ok("1") {
        eprintln!("STRIPWATCH_SKIP_REAL=1: skipping a real-software end-to-end test");
        return false;
    }
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .expect("cannot run id");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "real-software tests need root (network namespaces); set STRIPWATCH_SKIP_REAL=1 to skip them"
    );
    true
}

/// A fresh temporary directory under target/ (kept on failure for inspection).
pub fn tempdir(name: &str) -> PathBuf {
    let dir = root()
        .join("target")
        .join("test-out")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `stripwatch` with `args`.
pub fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("cannot run the stripwatch binary")
}

/// Runs `stripwatch analyze CAPTURES --out DIR --json` and checks it succeeded.
pub fn analyze(captures: &[&Path], out: &Path, extra: &[&str]) -> Value {
    let mut args: Vec<String> = vec!["analyze".into()];
    args.extend(captures.iter().map(|p| p.display().to_string()));
    args.extend(["--out".into(), out.display().to_string(), "--json".into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&refs);
    assert!(
        o.status.success(),
        "stripwatch {refs:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("summary is JSON")
}

/// Reads an NDJSON file.
pub fn ndjson(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

/// Compares the analyzer's output in `out` with an expected-results file. Returns a list of
/// differences (empty when they agree).
pub fn compare_expected(expected: &Value, out: &Path) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut sessions = ndjson(&out.join("sessions.ndjson"));
    sessions.sort_by(|a, b| {
        a["ts"]
            .as_str()
            .cmp(&b["ts"].as_str())
            .then(a["client_port"].as_u64().cmp(&b["client_port"].as_u64()))
    });
    let want = expected["sessions"].as_array().expect("sessions array");
    if want.len() != sessions.len() {
        diffs.push(format!(
            "{} sessions expected, {} found (verdicts: {:?})",
            want.len(),
            sessions.len(),
            sessions
                .iter()
                .map(|s| s["verdict"].clone())
                .collect::<Vec<_>>()
        ));
        return diffs;
    }
    for (i, (w, got)) in want.iter().zip(&sessions).enumerate() {
        for (field, value) in w.as_object().expect("session object") {
            let actual = if field == "findings" {
                let mut kinds: Vec<String> = got["findings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| k.as_str().unwrap().to_string())
                    .collect();
                kinds.sort();
                kinds.dedup();
                serde_json::json!(kinds)
            } else {
                got[field].clone()
            };
            if &actual != value {
                diffs.push(format!(
                    "session {i}: {field} expected {value}, found {actual}"
                ));
            }
        }
    }
    let findings = ndjson(&out.join("findings.ndjson"));
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for f in &findings {
        *counts
            .entry(f["kind"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let want_counts: std::collections::BTreeMap<String, u64> = expected["finding_counts"]
        .as_object()
        .expect("finding_counts object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    if counts != want_counts {
        diffs.push(format!(
            "finding counts expected {want_counts:?}, found {counts:?}"
        ));
    }
    diffs
}

/// Analyses `DIR/NAME.pcap` with `DIR/tls-test-root-ca.pem` as an extra trust anchor; returns
/// the sessions in time order.
pub fn analyze_tls_capture(dir: &Path, name: &str, extra: &[&str]) -> Vec<Value> {
    let out = tempdir(&format!("tls-{name}-{}", extra.len()));
    let root_ca = dir.join("tls-test-root-ca.pem");
    let mut args = vec!["--trust-anchors", root_ca.to_str().unwrap()];
    args.extend_from_slice(extra);
    analyze(&[&dir.join(format!("{name}.pcap"))], &out, &args);
    let mut sessions = ndjson(&out.join("sessions.ndjson"));
    sessions.sort_by(|a, b| a["ts"].as_str().cmp(&b["ts"].as_str()));
    sessions
}

/// The sorted finding kinds of a session record.
pub fn finding_kinds(s: &Value) -> Vec<String> {
    let mut k: Vec<String> = s["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    k.sort();
    k
}

/// Compares every `tls-*.facts.json` in `dir` with the analyzer's view of its capture: the
/// handshake fields seen on the wire and the expected certificate findings. Returns the number
/// of sessions checked and the differences.
pub fn check_tls_facts(dir: &Path) -> (usize, Vec<String>) {
    let mut checked = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let Some(name) = file
            .strip_suffix(".facts.json")
            .filter(|n| n.starts_with("tls-"))
        else {
            continue;
        };
        let facts: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let sessions = analyze_tls_capture(dir, name, &[]);
        let want = facts["sessions"].as_array().unwrap();
        if sessions.len() != want.len() {
            failures.push(format!(
                "{name}: {} sessions, expected {}",
                sessions.len(),
                want.len()
            ));
            continue;
        }
        for (i, (got, w)) in sessions.iter().zip(want).enumerate() {
            let mut check = |field: &str, actual: &Value, expected: &Value| {
                if actual != expected {
                    failures.push(format!(
                        "{name} session {i}: {field} {actual} != expected {expected}"
                    ));
                }
            };
            check("tls_version", &got["tls_version"], &w["tls_version"]);
            check("tls_cipher", &got["tls_cipher"], &w["tls_cipher"]);
            check("tls_sni", &got["tls_sni"], &w["tls_sni"]);
            check(
                "tls_handshake_completed",
                &got["tls_handshake_completed"],
                &w["handshake_completed"],
            );
            check(
                "cert_fingerprint",
                &got["cert_fingerprint"],
                &w["leaf_sha256"],
            );
            if w["chain_sha256"].is_array() {
                check(
                    "cert_chain_fingerprints",
                    &got["cert_chain_fingerprints"],
                    &w["chain_sha256"],
                );
            }
            let mut expected: Vec<String> = w["expected_findings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            expected.sort();
            check(
                "findings",
                &serde_json::json!(finding_kinds(got)),
                &serde_json::json!(expected),
            );
            let verdict = got["verdict"].as_str().unwrap().to_string();
            let verdict_ok = if expected.is_empty() {
                verdict == "tls-ok"
            } else {
                expected.contains(&verdict)
            };
            if !verdict_ok {
                failures.push(format!("{name} session {i}: verdict {verdict}"));
            }
            checked += 1;
        }
    }
    (checked, failures)
}

/// Compares the analyzer with the facts tshark derived from a real capture (Unbound validating,
/// NSD authoritative with a signed zone, Postfix sending with DANE).
pub fn check_real_dns(pcaps: &std::path::Path, capture: &str) {
    let facts: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(pcaps.join(format!("{capture}.facts.json"))).unwrap(),
    )
    .unwrap();
    let out = tempdir(&format!(
        "dns-real-{capture}-{}",
        pcaps.display().to_string().len()
    ));
    analyze(&[&pcaps.join(format!("{capture}.pcap"))], &out, &[]);
    let dns = ndjson(&out.join("dns.ndjson"));
    for tx in facts["dns"].as_array().unwrap() {
        let qtype = tx["qtype"].as_str().unwrap();
        if !matches!(qtype, "MX" | "TLSA" | "A" | "AAAA") {
            continue;
        }
        let ours = dns
            .iter()
            .find(|d| d["id"] == tx["id"] && d["qname"] == tx["qname"] && d["qtype"] == tx["qtype"])
            .unwrap_or_else(|| panic!("{capture}: no record for {} {qtype}", tx["qname"]));
        assert_eq!(ours["transport"], tx["transport"], "{capture} {qtype}");
        assert_eq!(ours["ad"], tx["flags"]["ad"], "{capture} {qtype}");
        assert_eq!(ours["query_do"], tx["do"], "{capture} {qtype}");
        let want_rrsig = tx["answers"]
            .as_array()
            .unwrap()
            .iter()
            .chain(tx["authority"].as_array().unwrap())
            .any(|a| a[1] == "RRSIG");
        assert_eq!(ours["rrsig"], want_rrsig, "{capture} {qtype}");
        let want: std::collections::HashSet<String> = tx["answers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a[1] != "RRSIG")
            .map(|a| {
                format!(
                    "{} {} {}",
                    a[0].as_str().unwrap(),
                    a[1].as_str().unwrap(),
                    a[3].as_str().unwrap().to_lowercase()
                )
            })
            .collect();
        let got: std::collections::HashSet<String> = ours["answers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["rtype"] != "RRSIG")
            .map(|a| {
                format!(
                    "{} {} {}",
                    a["name"].as_str().unwrap(),
                    a["rtype"].as_str().unwrap(),
                    a["data"].as_str().unwrap().to_lowercase()
                )
            })
            .collect();
        assert_eq!(got, want, "{capture} {qtype} answers");
    }
    let sessions = ndjson(&out.join("sessions.ndjson"));
    let link = &facts["linkage"][0];
    let s = sessions
        .iter()
        .find(|s| s["server_ip"] == link["server"])
        .expect("the delivery session");
    assert_eq!(s["recipient_domain"], link["mx_qname"]);
    assert_eq!(s["mx_host"], link["mx_host"]);
    let tlsa = link["tlsa"][0][3].as_str().unwrap();
    let ours = &s["mx_tlsa"][0];
    assert_eq!(
        format!(
            "{} {} {} {}",
            ours["usage"],
            ours["selector"],
            ours["matching_type"],
            ours["data"].as_str().unwrap()
        ),
        tlsa
    );
    // The TLSA record pins the server's key, but TLS 1.3 hides the certificate: not observable,
    // never a DANE pass or failure.
    assert_eq!(finding_kinds(s), vec!["certificate-not-observable"]);
}

/// The CSV and TLS-RPT files of a report directory, by relative path.
pub fn report_files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut m = std::collections::BTreeMap::new();
    for sub in ["csv", "tlsrpt"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            let p = e.unwrap().path();
            m.insert(
                format!("{sub}/{}", p.file_name().unwrap().to_string_lossy()),
                std::fs::read(&p).unwrap(),
            );
        }
    }
    m
}

/// Runs `scripts/NAME/make.sh --out DIR` into a fresh directory and returns the directory.
pub fn make_captures(name: &str) -> std::path::PathBuf {
    make_captures_with(name, &[])
}

/// Runs `scripts/NAME/make.sh --out DIR EXTRA` into a fresh directory and returns the directory.
pub fn make_captures_with(name: &str, extra: &[&std::ffi::OsStr]) -> std::path::PathBuf {
    let out = tempdir(&format!("real-{name}"));
    let script = root().join(format!("scripts/{name}/make.sh"));
    let status = Command::new("bash")
        .arg(&script)
        .arg("--out")
        .arg(&out)
        .args(extra)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(status.success(), "{} failed", script.display());
    out
}

/// `GET /metrics` at `addr` (`127.0.0.1:PORT`) over loopback, parsed: every sample line as
/// `name{labels}` and its value. The endpoint may take a moment to open after the run starts:
/// connecting is retried for 10 s. A non-200 answer or a sample that is not a number fails.
pub fn scrape(addr: &str) -> std::collections::BTreeMap<String, f64> {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let started = Instant::now();
    let mut stream = loop {
        match std::net::TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) if started.elapsed() > Duration::from_secs(10) => {
                panic!("no metrics at {addr}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("`name value`");
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("not a sample value: {l}"));
            (name.to_string(), value)
        })
        .collect()
}
