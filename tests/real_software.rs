//! End to end with real software: runs `scripts/real-captures/make.sh` and
//! `scripts/sender-captures/make.sh`, which deliver mail with real Postfix, Exim and OpenSMTPD
//! through a stripping proxy in network namespaces and capture it with tcpdump,
//! then checks the analyzer against the expected results that `expect.py` derives from each new
//! capture independently of stripwatch.
//!
//! Needs root (namespaces, apt). `STRIPWATCH_SKIP_REAL=1` skips it explicitly; anything else
//! missing is a failure with a clear message, never a silent pass.

mod common;

use std::process::Command;

/// Runs `scripts/NAME/make.sh --out DIR` into a fresh directory and returns the directory.
fn make_captures(name: &str) -> std::path::PathBuf {
    let out = common::tempdir(&format!("real-{name}"));
    let script = common::root().join(format!("scripts/{name}/make.sh"));
    let status = Command::new("bash")
        .arg(&script)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(status.success(), "{} failed", script.display());
    out
}

/// Analyses every `NAME.pcap` in `out` that has a `NAME.expected.json` and compares; returns
/// the number of captures checked and the differences.
fn check_expected_dir(out: &std::path::Path) -> (usize, Vec<String>) {
    let mut checked = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(out).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let Some(stem) = name.strip_suffix(".expected.json") else {
            continue;
        };
        let capture = out.join(format!("{stem}.pcap"));
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let result = out.join(format!("{stem}-analysis"));
        common::analyze(&[&capture], &result, &[]);
        let diffs = common::compare_expected(&expected, &result);
        if !diffs.is_empty() {
            failures.push(format!("{stem}: {}", diffs.join("; ")));
        }
        checked += 1;
    }
    (checked, failures)
}

#[test]
fn fresh_postfix_captures_match_their_expected_results() {
    if !common::require_root() {
        return;
    }
    let out = make_captures("real-captures");
    let (checked, failures) = check_expected_dir(&out);
    assert_eq!(checked, 9, "make.sh should produce nine captures");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fresh_exim_and_opensmtpd_captures_match_their_expected_results() {
    if !common::require_root() {
        return;
    }
    let out = make_captures("sender-captures");
    let (checked, failures) = check_expected_dir(&out);
    assert_eq!(
        checked, 12,
        "sender-captures/make.sh should produce twelve captures"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fresh_tls_handshakes_match_their_facts() {
    if !common::require_root() {
        return;
    }
    let out = make_captures("tls-captures");
    let (checked, failures) = common::check_tls_facts(&out);
    assert!(checked >= 10, "only {checked} TLS sessions checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fresh_dns_and_dane_deliveries_match_their_facts() {
    if !common::require_root() {
        return;
    }
    let out = make_captures("dns-captures");
    common::check_real_dns(&out, "dns-mx-delivery");
    common::check_real_dns(&out, "dns-tcp");
}
