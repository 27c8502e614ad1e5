//! TLS after STARTTLS on real handshakes: Postfix 3.7 as the server with certificates from a test
//! CA (right name, self-signed, expired, wrong name, weak), TLS 1.3, an alert, no SNI, and DANE,
//! captured by `scripts/tls-captures/make.sh`. Every `tls-*.facts.json` states what tshark and
//! OpenSSL see on the wire and which findings a careful sending MTA would report.

mod common;

use serde_json::Value;
use std::path::Path;

fn pcaps() -> std::path::PathBuf {
    common::root().join("pcaps")
}

fn run_tls(name: &str, extra: &[&str]) -> Vec<Value> {
    common::analyze_tls_capture(&pcaps(), name, extra)
}

fn kinds(s: &Value) -> Vec<String> {
    common::finding_kinds(s)
}

#[test]
fn real_handshakes_match_the_wire_and_the_expected_findings() {
    let (checked, failures) = common::check_tls_facts(&pcaps());
    assert!(checked >= 10, "only {checked} TLS sessions checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn without_the_test_root_the_ca_signed_chain_is_not_trusted() {
    let out = common::tempdir("tls-no-anchor");
    common::analyze(&[&pcaps().join("tls-ca-signed-ok.pcap")], &out, &[]);
    let s = &common::ndjson(&out.join("sessions.ndjson"))[0];
    assert_eq!(kinds(s), vec!["certificate-not-trusted"]);
    let f = common::ndjson(&out.join("findings.ndjson"));
    assert_eq!(f[0]["evidence"]["reason"], "UnknownIssuer");
}

#[test]
fn dane_records_are_matched_per_usage() {
    let good = pcaps().join("tls-dane.tlsa");
    let bad = pcaps().join("tls-dane-mismatch.tlsa");
    for s in run_tls("tls-dane", &["--tlsa", good.to_str().unwrap()]) {
        assert!(kinds(&s).is_empty(), "{:?}", kinds(&s));
        assert_eq!(s["verdict"], "tls-ok");
    }
    // Only the 2 0 1 record (DANE-TA on the intermediate): still valid, chain and name checked.
    let dir = common::tempdir("tls-dane-ta");
    let ta_only: String = std::fs::read_to_string(&good)
        .unwrap()
        .lines()
        .filter(|l| l.contains(" 2 0 1 "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!ta_only.is_empty());
    let ta_file = dir.join("ta.tlsa");
    std::fs::write(&ta_file, ta_only).unwrap();
    for s in run_tls("tls-dane", &["--tlsa", ta_file.to_str().unwrap()]) {
        assert!(kinds(&s).is_empty(), "{:?}", kinds(&s));
    }
    for s in run_tls("tls-dane", &["--tlsa", bad.to_str().unwrap()]) {
        assert_eq!(kinds(&s), vec!["tlsa-invalid"]);
        assert_eq!(s["verdict"], "tlsa-invalid");
    }
}

#[test]
fn dane_protected_server_reached_in_plaintext_is_dane_required() {
    // The overwrite capture: STARTTLS stripped on the way to mx.swcap.test. With a TLSA record
    // for that host the session is also a DANE failure.
    let dir = common::tempdir("tls-dane-required");
    let tlsa = dir.join("swcap.tlsa");
    std::fs::write(
        &tlsa,
        "_25._tcp.mx.swcap.test. 300 IN TLSA 3 1 1 0000000000000000000000000000000000000000000000000000000000000000\n",
    )
    .unwrap();
    let out = dir.join("out");
    let capture = pcaps().join("real-postfix-overwrite.pcap");
    common::analyze(
        &[Path::new(&capture)],
        &out,
        &["--tlsa", tlsa.to_str().unwrap()],
    );
    let s = &common::ndjson(&out.join("sessions.ndjson"))[0];
    assert_eq!(kinds(s), vec!["dane-required", "starttls-stripped"]);
    assert_eq!(s["verdict"], "starttls-stripped");
}

#[test]
fn a_bad_tlsa_file_is_a_one_line_error() {
    let dir = common::tempdir("tls-bad-tlsa");
    let tlsa = dir.join("bad.tlsa");
    std::fs::write(&tlsa, "_25._tcp.mx. IN TLSA 3 1 1 nothex\n").unwrap();
    let capture = pcaps().join("tls-dane.pcap");
    let o = common::run(&[
        "analyze",
        capture.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--tlsa",
        tlsa.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("line 1"), "{err}");
}
