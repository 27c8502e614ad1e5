//! DNS next to SMTP: forged answers (two responses to one query that disagree), and the tie
//! between an SMTP session and the MX lookup that led to it.

mod common;

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

#[test]
fn real_postfix_dane_delivery_over_udp() {
    common::check_real_dns(&common::root().join("pcaps"), "dns-mx-delivery");
}

#[test]
fn real_postfix_dane_delivery_over_tcp() {
    common::check_real_dns(&common::root().join("pcaps"), "dns-tcp");
}
