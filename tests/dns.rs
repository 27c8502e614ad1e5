//! DNS next to SMTP: forged answers (two responses to one query that disagree), and the tie
//! between an SMTP session and the MX lookup that led to it.

mod common;

use serde_json::{Value, json};
use std::collections::HashSet;

#[test]
fn injected_answer_is_found_and_linked_to_the_session_it_misled() {
    let out = common::tempdir("dns-injection");
    common::analyze(
        &[&common::root().join("pcaps/dns-injection.pcap")],
        &out,
        &[],
    );
    let findings = common::ndjson(&out.join("findings.ndjson"));
    let injection: Vec<_> = findings
        .iter()
        .filter(|f| f["kind"] == "dns-injection")
        .collect();
    assert_eq!(injection.len(), 1);
    let f = injection[0];
    assert!(f["session_id"].is_null());
    let responses = f["evidence"]["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 2);
    // The first to arrive is the forged one, from a different hop distance.
    assert!(
        responses[0]["answers"][0]
            .as_str()
            .unwrap()
            .contains("mx.attacker.example")
    );
    assert!(
        responses[1]["answers"][0]
            .as_str()
            .unwrap()
            .contains("mx.example.net")
    );
    assert_ne!(responses[0]["ip_ttl"], responses[1]["ip_ttl"]);
    let sessions = common::ndjson(&out.join("sessions.ndjson"));
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(s["mx_host"], "mx.attacker.example");
    assert_eq!(s["dns_finding_ids"][0], f["finding_id"]);
    // Every transaction the session points to is in dns.ndjson.
    let dns = common::ndjson(&out.join("dns.ndjson"));
    let ids: HashSet<&str> = dns
        .iter()
        .map(|d| d["transaction_id"].as_str().unwrap())
        .collect();
    for id in s["dns_transaction_ids"].as_array().unwrap() {
        assert!(ids.contains(id.as_str().unwrap()), "{id} not in dns.ndjson");
    }
    let mx = dns.iter().find(|d| d["qtype"] == "MX").unwrap();
    assert_eq!(mx["responses"], 2);
    assert_eq!(mx["findings"][0], "dns-injection");
}

#[test]
fn a_repeated_identical_response_is_not_an_injection() {
    // Zeek's two-responses trace: the same answer twice (a duplicate, not a race).
    let corpus =
        common::root().join("../shared/thirdparty-pcaps/pcaps/zeek_zeek__dns-two-responses.pcap");
    if !corpus.exists() && std::env::var("STRIPWATCH_SKIP_THIRDPARTY").as_deref() == Ok("1") {
        return;
    }
    let out = common::tempdir("dns-duplicate");
    let summary = common::analyze(&[&corpus], &out, &[]);
    assert_eq!(summary["dns"]["duplicate_responses"], 1);
    assert_eq!(summary["dns"]["conflicting_responses"], 0);
    assert!(summary["findings_by_kind"].get("dns-injection").is_none());
}

#[test]
fn the_mx_window_bounds_linkage() {
    let capture = common::root().join("pcaps/dns-unlisted-ip.pcap");
    let out = common::tempdir("dns-window");
    let summary = common::analyze(&[&capture], &out, &["--mx-window", "0"]);
    // With no window the lookup cannot have led to the session: no judgement either way.
    assert!(
        summary["findings_by_kind"]
            .get("smtp-to-unlisted-ip")
            .is_none(),
        "{summary}"
    );
    let summary = common::analyze(&[&capture], &out, &[]);
    assert_eq!(summary["findings_by_kind"]["smtp-to-unlisted-ip"], 1);
}

/// A client resolving more names than its memory holds: the oldest are forgotten (counted), the
/// newest link the session, and a session that could rest on a forgotten answer is not judged
/// (counted as a skipped judgement) rather than convicted of `smtp-to-unlisted-ip`.
#[test]
fn a_busy_clients_memory_forgets_its_oldest_answers_and_convicts_nothing_on_them() {
    for (capture, linked, skipped) in [
        ("dns-busy-client", 1, 0),
        ("dns-busy-client-forgot-address", 0, 1),
        ("dns-busy-client-forgot-mx", 0, 1),
    ] {
        let out = common::tempdir(capture);
        let pcap = common::root().join("pcaps").join(format!("{capture}.pcap"));
        let summary = common::analyze(&[&pcap], &out, &[]);
        assert_eq!(summary["sessions"], 1, "{capture}: {summary}");
        assert_eq!(summary["dns"]["sessions_linked"], linked, "{capture}");
        assert!(
            summary["dns"]["client_entries_forgotten"].as_u64() > Some(0),
            "{capture}: {}",
            summary["dns"]
        );
        assert_eq!(
            summary["memory"]["windows"]["dns_clients"]["skipped_judgements"], skipped,
            "{capture}"
        );
        assert!(
            summary["findings_by_kind"]
                .get("smtp-to-unlisted-ip")
                .is_none(),
            "{capture}: {summary}"
        );
    }
}

#[test]
fn real_postfix_dane_delivery_over_udp() {
    common::check_real_dns(&common::root().join("pcaps"), "dns-mx-delivery");
}

#[test]
fn real_postfix_dane_delivery_over_tcp() {
    common::check_real_dns(&common::root().join("pcaps"), "dns-tcp");
}

/// Sessions, findings and DNS records of one of the TLS 1.2 DANE captures, and its facts.
fn dane_tls12(capture: &str) -> (std::path::PathBuf, Value, Vec<Value>, Vec<Value>) {
    let pcaps = common::root().join("pcaps");
    let facts: Value = serde_json::from_str(
        &std::fs::read_to_string(pcaps.join(format!("{capture}.facts.json"))).unwrap(),
    )
    .unwrap();
    let out = common::tempdir(&format!("dns-{capture}"));
    common::analyze(&[&pcaps.join(format!("{capture}.pcap"))], &out, &[]);
    let sessions = common::ndjson(&out.join("sessions.ndjson"));
    assert_eq!(sessions.len(), 1, "{capture}: one delivery session");
    let s = sessions[0].clone();
    let link = &facts["linkage"][0];
    assert_eq!(s["mx_host"], link["mx_host"], "{capture}");
    assert_eq!(s["tls_version"], "TLSv1.2", "{capture}");
    // The chain stripwatch judged is the one on the wire.
    assert_eq!(
        s["cert_chain_fingerprints"], facts["smtp"][0]["tls"]["certificates_sha256"],
        "{capture}"
    );
    let findings = common::ndjson(&out.join("findings.ndjson"));
    let dns = common::ndjson(&out.join("dns.ndjson"));
    (out, s, findings, dns)
}

#[test]
fn real_postfix_dane_ee_match_authenticates_a_private_ca_certificate() {
    // Postfix verified mx3 by its TLSA 3 1 1 record from DNS (RFC 7672 §3.1.1): PKIX's
    // objections (a private CA) are facts in the record, not findings.
    let (out, s, findings, _) = dane_tls12("dns-dane-tls12-match");
    assert_eq!(s["verdict"], "tls-ok");
    assert_eq!(s["findings"], json!([]));
    assert!(findings.is_empty(), "{findings:?}");
    assert_eq!(s["pkix"], json!(["not-trusted"]));
    assert_eq!(s["dane"], "dane-ee");
    // TLS-RPT: a tlsa policy, and the session succeeded.
    let r: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("tlsrpt/ee-match.dns.test.json")).unwrap(),
    )
    .unwrap();
    let p = &r["policies"][0];
    assert_eq!(p["policy"]["policy-type"], "tlsa");
    assert_eq!(p["summary"]["total-successful-session-count"], 1);
    assert_eq!(p["summary"]["total-failure-session-count"], 0);
}

#[test]
fn real_postfix_dane_mismatch_from_dns_is_tlsa_invalid() {
    // The TLSA record the client got in DNS pins another key: tlsa-invalid, although no
    // --tlsa file was given. The evidence says the record came from DNS, and from which
    // transaction.
    let (out, s, findings, dns) = dane_tls12("dns-dane-tls12-mismatch");
    assert_eq!(s["verdict"], "tlsa-invalid");
    assert_eq!(s["dane"], "tlsa-invalid");
    assert_eq!(s["pkix"], json!(["not-trusted"]));
    let f = findings
        .iter()
        .find(|f| f["kind"] == "tlsa-invalid")
        .expect("a tlsa-invalid finding");
    let tlsa_tx = dns
        .iter()
        .find(|d| d["qtype"] == "TLSA")
        .expect("the TLSA lookup");
    let records = f["evidence"]["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["source"], "dns");
    assert_eq!(records[0]["transaction_id"], tlsa_tx["transaction_id"]);
    assert_eq!(records[0]["usage"], 3);
    assert_eq!(
        records[0]["data"],
        json!(common::ndjson(&out.join("sessions.ndjson"))[0]["mx_tlsa"][0]["data"])
    );
    let r: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("tlsrpt/ee-mismatch.dns.test.json")).unwrap(),
    )
    .unwrap();
    let p = &r["policies"][0];
    assert_eq!(p["policy"]["policy-type"], "tlsa");
    assert_eq!(p["summary"]["total-failure-session-count"], 1);
    assert_eq!(p["failure-details"][0]["result-type"], "tlsa-invalid");
}
