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

/// Compares the analyzer with the facts tshark derived from a real capture (Unbound validating,
/// NSD authoritative with a signed zone, Postfix sending with DANE).
fn check_real_dns(capture: &str) {
    let pcaps = common::root().join("pcaps");
    let facts: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(pcaps.join(format!("{capture}.facts.json"))).unwrap(),
    )
    .unwrap();
    let out = common::tempdir(&format!("dns-real-{capture}"));
    common::analyze(&[&pcaps.join(format!("{capture}.pcap"))], &out, &[]);
    let dns = common::ndjson(&out.join("dns.ndjson"));
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
        let want: HashSet<String> = tx["answers"]
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
        let got: HashSet<String> = ours["answers"]
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
    let sessions = common::ndjson(&out.join("sessions.ndjson"));
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
    assert_eq!(common::finding_kinds(s), vec!["certificate-not-observable"]);
}

#[test]
fn real_postfix_dane_delivery_over_udp() {
    check_real_dns("dns-mx-delivery");
}

#[test]
fn real_postfix_dane_delivery_over_tcp() {
    check_real_dns("dns-tcp");
}
