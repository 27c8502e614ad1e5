//! Baselines that last (`--state`), the operator's known MX sets (`--known-mx`), and the DNS
//! judgements that compare clients: each through the real binary on bundled captures.

mod common;

use serde_json::Value;
use std::path::Path;
use stripwatch::state::{Baseline, Learned, Seen, StateStore};

fn pcap(name: &str) -> std::path::PathBuf {
    common::root().join("pcaps").join(name)
}

fn findings_of(out: &Path, kind: &str) -> Vec<Value> {
    common::ndjson(&out.join("findings.ndjson"))
        .into_iter()
        .filter(|f| f["kind"] == kind)
        .collect()
}

/// Microseconds since the epoch of an RFC 3339 UTC timestamp as stripwatch writes them.
fn micros_of(ts: &str) -> i64 {
    let n = |a: usize, b: usize| ts[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + n(11, 13) * 3600 + n(14, 16) * 60 + n(17, 19)) * 1_000_000
}

#[test]
fn a_server_that_offered_starttls_in_an_earlier_run_is_starttls_missing_now() {
    let dir = common::tempdir("state-missing");
    let state = dir.join("state.redb");
    let state_arg = state.display().to_string();
    // Without history the plaintext server is simply not supporting STARTTLS.
    let alone = dir.join("alone");
    common::analyze(&[&pcap("plaintext-no-starttls.pcap")], &alone, &[]);
    assert_eq!(findings_of(&alone, "starttls-missing").len(), 0);
    assert_eq!(findings_of(&alone, "starttls-not-supported").len(), 1);
    // Run 1 sees the same server offer STARTTLS; run 2 sees it without.
    let first = dir.join("first");
    let s1 = common::analyze(
        &[&pcap("clean-starttls.pcap")],
        &first,
        &["--state", &state_arg],
    );
    assert!(s1["baseline"]["written"].as_u64().unwrap() >= 1, "{s1}");
    let second = dir.join("second");
    let s2 = common::analyze(
        &[&pcap("plaintext-no-starttls.pcap")],
        &second,
        &["--state", &state_arg],
    );
    let missing = findings_of(&second, "starttls-missing");
    assert_eq!(missing.len(), 1, "{s2}");
    assert_eq!(missing[0]["evidence"]["source"], "baseline");
    assert_eq!(findings_of(&second, "starttls-not-supported").len(), 0);
    assert_eq!(s2["baseline"]["findings_from_earlier_runs"], 1);
    // The store can be inspected.
    let o = common::run(&["state", "dump", &state_arg]);
    assert!(o.status.success());
    let dump = String::from_utf8_lossy(&o.stdout);
    assert!(
        dump.lines()
            .any(|l| l.contains("\"table\":\"offered\"") && l.contains("198.51.100.25")),
        "{dump}"
    );
    let o = common::run(&["state", "show", &state_arg]);
    let show: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(show["offered"], 1);
}

#[test]
fn a_key_other_than_the_one_earlier_runs_saw_is_certificate_changed() {
    let dir = common::tempdir("state-key");
    let state = dir.join("state.redb");
    let server = "10.78.0.10".parse().unwrap();
    let plain = dir.join("plain");
    common::analyze(&[&pcap("tls-ca-signed-ok.pcap")], &plain, &[]);
    let ts = common::ndjson(&plain.join("sessions.ndjson"))[0]["ts"]
        .as_str()
        .expect("ts")
        .to_string();
    let capture_us = micros_of(&ts);
    {
        // An earlier run (a day before the capture) saw another key on this server.
        let mut store = StateStore::open(&state, i64::MAX).unwrap();
        let day_before = capture_us - 86_400_000_000;
        store
            .save(&Learned {
                keys: vec![(
                    server,
                    "00".repeat(32),
                    Seen::span(day_before, day_before, 3),
                )],
                ..Learned::default()
            })
            .unwrap();
    }
    let out = dir.join("out");
    let trust = pcap("tls-test-root-ca.pem").display().to_string();
    common::analyze(
        &[&pcap("tls-ca-signed-ok.pcap")],
        &out,
        &[
            "--state",
            &state.display().to_string(),
            "--trust-anchors",
            &trust,
        ],
    );
    let changed = findings_of(&out, "certificate-changed");
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["evidence"]["source"], "baseline");
    assert_eq!(
        changed[0]["evidence"]["earlier_runs"][0]["spki_sha256"],
        "00".repeat(32)
    );
    // The run added the key it saw, so the next run over the same capture is quiet.
    let again = dir.join("again");
    common::analyze(
        &[&pcap("tls-ca-signed-ok.pcap")],
        &again,
        &[
            "--state",
            &state.display().to_string(),
            "--trust-anchors",
            &trust,
        ],
    );
    assert_eq!(findings_of(&again, "certificate-changed").len(), 0);
    let store = StateStore::open(&state, i64::MAX).unwrap();
    assert_eq!(store.server_keys(server).len(), 2);
}

#[test]
fn an_mx_set_earlier_runs_never_saw_is_mx_mismatch() {
    let dir = common::tempdir("state-mx");
    let state = dir.join("state.redb").display().to_string();
    common::analyze(
        &[&pcap("dns-mx-linked.pcap")],
        &dir.join("first"),
        &["--state", &state],
    );
    // The forged answer of dns-injection arrives first; no other client asked in that capture.
    let second = dir.join("second");
    let summary = common::analyze(
        &[&pcap("dns-injection.pcap")],
        &second,
        &["--state", &state],
    );
    let mm = findings_of(&second, "mx-mismatch");
    assert_eq!(mm.len(), 1);
    assert_eq!(mm[0]["evidence"]["source"], "baseline");
    // A DNS finding that rests on the baseline is counted as one, as a session's is.
    assert_eq!(
        summary["baseline"]["findings_from_earlier_runs"], 1,
        "{summary}"
    );
    assert_eq!(mm[0]["evidence"]["answered"][0], "mx.attacker.example");
    let sessions = common::ndjson(&second.join("sessions.ndjson"));
    let ids: Vec<&str> = sessions[0]["dns_finding_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&mm[0]["finding_id"].as_str().unwrap()),
        "{ids:?}"
    );
}

#[test]
fn known_mx_file_judges_every_answer_for_its_domains() {
    let dir = common::tempdir("known-mx");
    let good = dir.join("good.txt");
    std::fs::write(&good, "# operator list\nexample.net mx.example.net.\n").unwrap();
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, "example.net backup.example.net\n").unwrap();
    let ok = dir.join("ok");
    common::analyze(
        &[&pcap("dns-mx-linked.pcap")],
        &ok,
        &["--known-mx", &good.display().to_string()],
    );
    assert_eq!(findings_of(&ok, "mx-mismatch").len(), 0);
    let differs = dir.join("differs");
    common::analyze(
        &[&pcap("dns-mx-linked.pcap")],
        &differs,
        &["--known-mx", &bad.display().to_string()],
    );
    let mm = findings_of(&differs, "mx-mismatch");
    assert_eq!(mm.len(), 1);
    assert_eq!(mm[0]["evidence"]["source"], "known-mx");
    assert_eq!(mm[0]["evidence"]["expected"][0], "backup.example.net");
    // A malformed file is a one-line error.
    let broken = dir.join("broken.txt");
    std::fs::write(&broken, "example.net\n").unwrap();
    let o = common::run(&[
        "analyze",
        &pcap("dns-mx-linked.pcap").display().to_string(),
        "--out",
        &dir.join("x").display().to_string(),
        "--known-mx",
        &broken.display().to_string(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a bad file is a run-time error (exit 1)"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn a_state_file_that_is_not_a_store_is_a_one_line_error() {
    let dir = common::tempdir("state-junk");
    let junk = dir.join("junk");
    std::fs::write(&junk, "not a database").unwrap();
    let o = common::run(&[
        "analyze",
        &pcap("clean-starttls.pcap").display().to_string(),
        "--out",
        &dir.join("x").display().to_string(),
        "--state",
        &junk.display().to_string(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a bad file is a run-time error (exit 1)"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--state"), "{err}");
}

#[test]
fn answers_others_did_not_get_and_stripped_signatures_carry_their_evidence() {
    let dir = common::tempdir("dns-judge");
    let mm = dir.join("mm");
    common::analyze(&[&pcap("dns-mx-mismatch.pcap")], &mm, &[]);
    let f = findings_of(&mm, "mx-mismatch");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0]["client_ip"], "192.0.2.11");
    assert_eq!(f[0]["evidence"]["others"][0]["observers"], 2);
    let s = &common::ndjson(&mm.join("sessions.ndjson"))[0];
    assert_eq!(s["dns_finding_ids"][0], f[0]["finding_id"]);

    let st = dir.join("st");
    common::analyze(&[&pcap("dns-dnssec-stripped.pcap")], &st, &[]);
    let f = findings_of(&st, "dnssec-stripped");
    assert_eq!(f.len(), 1);
    let what: Vec<&str> = f[0]["evidence"]["what"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["missing"].as_str().unwrap())
        .collect();
    assert_eq!(what, ["rrsig", "ad"]);
    let dns = common::ndjson(&st.join("dns.ndjson"));
    let mx: Vec<&Value> = dns.iter().filter(|d| d["qtype"] == "MX").collect();
    assert_eq!(
        (mx[0]["rrsig"].clone(), mx[0]["ad"].clone()),
        (true.into(), true.into())
    );
    assert_eq!(mx[1]["findings"][0], "dnssec-stripped");

    let inj = dir.join("inj");
    common::analyze(&[&pcap("injected-starttls-reply.pcap")], &inj, &[]);
    let f = findings_of(&inj, "injected-segment");
    assert_eq!(f.len(), 1);
    let e = &f[0]["evidence"];
    assert_eq!(
        (e["direction"].clone(), e["ip_ttl"].clone()),
        ("server".into(), 61.into())
    );
    assert_eq!(e["flow_ip_ttl"], 52);
    assert_eq!(e["injector_hops"], 3);
    assert_eq!(e["sender_hops"], 12);
    let ans = dir.join("ans");
    common::analyze(&[&pcap("dns-injected-answer.pcap")], &ans, &[]);
    let f = findings_of(&ans, "injected-segment");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0]["evidence"]["ip_ttl"], 60);
    assert_eq!(f[0]["evidence"]["flow_ip_ttl"], 52);
}
