//! MTA-STS end to end with real software: the captures `scripts/sts-captures/make.sh` made with
//! Postfix, postfix-mta-sts-resolver, nginx and NSD behind an on-path box, each with a
//! `.facts.json` that tshark and the software's own logs wrote (never stripwatch). The real
//! binary runs over each capture, and every session's MTA-STS fields and findings must follow
//! from those facts: the TXT id, the fetch's outcome, and what the box did.
//!
//! The committed captures are checked always; `fresh_sts_captures_match_their_facts` makes them
//! again in network namespaces (root; `STRIPWATCH_SKIP_REAL=1` skips it).

mod common;

use serde_json::Value;
use std::path::Path;

/// The captures, in the order the script makes them (the second run of the baseline pair,
/// `sts-txt-removed`, follows its first, `sts-enforce-clean`).
const CAPTURES: [&str; 6] = [
    "sts-enforce-clean",
    "sts-fetch-reset",
    "sts-txt-removed",
    "sts-testing-stripped",
    "sts-fetch-timeout",
    "sts-fetch-bad-cert",
];

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The fetch outcome the facts give: the worst of the connections (stripwatch's order:
/// ok < reset < timeout < handshake-failed), `not-seen` without one.
fn expected_fetch(facts: &Value) -> &str {
    let order = ["ok", "reset", "timeout", "handshake-failed"];
    facts["fetches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["outcome"].as_str().unwrap())
        .max_by_key(|o| order.iter().position(|x| x == o))
        .unwrap_or("not-seen")
}

/// The id in the last `_mta-sts` TXT answer of the facts, `""` when it held none.
fn expected_txt(facts: &Value) -> String {
    let answers = facts["txt_answers"].as_array().unwrap();
    let last = answers.last().expect("facts hold a TXT answer");
    last["id"].as_str().unwrap_or("").to_string()
}

/// Checks one analysed capture against its facts; `baseline_had` says whether an earlier run
/// (the `--state` given) saw the domain publish `v=STSv1`. Returns the differences.
fn check(name: &str, facts: &Value, analysis: &Path, baseline_had: bool) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut expect = |what: &str, got: Value, want: Value| {
        if got != want {
            diffs.push(format!("{name}: {what}: got {got}, want {want}"));
        }
    };
    let sessions = common::ndjson(&analysis.join("sessions.ndjson"));
    let findings = common::ndjson(&analysis.join("findings.ndjson"));
    let dns = common::ndjson(&analysis.join("dns.ndjson"));
    let smtp = facts["smtp_sessions"].as_array().unwrap();
    expect("sessions", sessions.len().into(), smtp.len().into());
    let txt = expected_txt(facts);
    let fetch = expected_fetch(facts);
    let fetches = facts["fetches"].as_array().unwrap().len();
    let blocked = matches!(fetch, "reset" | "timeout" | "handshake-failed");
    // The TXT transaction and whether it must carry mta-sts-txt-missing.
    let txt_record = dns.iter().rev().find(|d| {
        d["qtype"] == "TXT"
            && d["qname"]
                .as_str()
                .is_some_and(|q| q.starts_with("_mta-sts."))
    });
    let Some(txt_record) = txt_record else {
        diffs.push(format!("{name}: no _mta-sts TXT transaction in dns.ndjson"));
        return diffs;
    };
    let missing = txt.is_empty() && baseline_had;
    // The summary's counters say the same as the records and the facts.
    let summary = read_json(&analysis.join("summary.json"));
    let m = &summary["mta_sts"];
    let answers = facts["txt_answers"].as_array().unwrap();
    expect(
        "summary txt_answers",
        m["txt_answers"].clone(),
        answers.len().into(),
    );
    expect(
        "summary txt_sts_v1",
        m["txt_sts_v1"].clone(),
        answers
            .iter()
            .filter(|a| a["id"].is_string())
            .count()
            .into(),
    );
    for outcome in ["ok", "reset", "timeout", "handshake-failed"] {
        let n = facts["fetches"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["outcome"] == outcome)
            .count();
        expect(
            &format!("summary fetches {outcome}"),
            m["fetches"][outcome].clone(),
            n.into(),
        );
    }
    expect(
        "summary sessions_linked",
        m["sessions_linked"].clone(),
        smtp.len().into(),
    );
    for kind in [
        "mta-sts-fetch-blocked",
        "mta-sts-plaintext",
        "mta-sts-txt-missing",
    ] {
        let n = findings.iter().filter(|f| f["kind"] == kind).count();
        expect(
            &format!("summary findings {kind}"),
            m["findings"][kind].clone(),
            n.into(),
        );
    }
    for what in ["clients", "client_entries", "domains"] {
        expect(
            &format!("summary dropped {what}"),
            m["dropped"][what].clone(),
            0.into(),
        );
    }
    let published = answers.iter().any(|a| a["id"].is_string());
    for (window, holds) in [("sts_clients", true), ("sts_domains", published)] {
        let w = &summary["memory"]["windows"][window];
        expect(
            &format!("memory window {window} has a limit"),
            (w["limit_bytes"].as_u64().unwrap_or(0) > 0).into(),
            true.into(),
        );
        expect(
            &format!("memory window {window} holds what was learned"),
            (w["entries"].as_u64().unwrap_or(0) > 0).into(),
            holds.into(),
        );
    }
    let txt_kinds: Vec<Value> = txt_record["findings"].as_array().unwrap().clone();
    expect(
        "TXT transaction has mta-sts-txt-missing",
        txt_kinds.contains(&"mta-sts-txt-missing".into()).into(),
        missing.into(),
    );
    for (s, f) in sessions.iter().zip(smtp) {
        expect("server_ip", s["server_ip"].clone(), f["server"].clone());
        expect(
            "recipient_domain",
            s["recipient_domain"].clone(),
            facts["domain"].clone(),
        );
        expect("sts_txt", s["sts_txt"].clone(), txt.clone().into());
        expect("sts_fetch", s["sts_fetch"].clone(), fetch.into());
        expect(
            "sts_fetch_ids",
            s["sts_fetch_ids"].as_array().map_or(0, Vec::len).into(),
            fetches.into(),
        );
        let plaintext = f["mail_in_clear"] == true;
        let kinds: Vec<&str> = s["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        let has = |k: &str| Value::from(kinds.contains(&k));
        expect(
            "starttls-stripped",
            has("starttls-stripped"),
            (f["starttls_overwritten"] == true).into(),
        );
        expect(
            "mta-sts-fetch-blocked",
            has("mta-sts-fetch-blocked"),
            (blocked && plaintext).into(),
        );
        let published = !txt.is_empty() || baseline_had;
        expect(
            "mta-sts-plaintext",
            has("mta-sts-plaintext"),
            (plaintext && published).into(),
        );
        let txt_finding = format!("{}-4", txt_record["transaction_id"].as_str().unwrap());
        expect(
            "dns_finding_ids has the TXT finding",
            s["dns_finding_ids"]
                .as_array()
                .unwrap()
                .contains(&txt_finding.clone().into())
                .into(),
            missing.into(),
        );
        // TLS-RPT: policy type `sts` exactly when the fetch was seen to succeed (no TLSA here).
        let domain = facts["domain"].as_str().unwrap();
        let report = read_json(&analysis.join("tlsrpt").join(format!("{domain}.json")));
        let types: Vec<Value> = report["policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["policy"]["policy-type"].clone())
            .collect();
        let want = if fetch == "ok" {
            "sts"
        } else {
            "no-policy-found"
        };
        expect("TLS-RPT policy types", types.into(), vec![want].into());
        // Every session finding is in findings.ndjson, with the evidence the README promises.
        for f in findings
            .iter()
            .filter(|f| f["session_id"] == s["session_id"])
        {
            if f["kind"] == "mta-sts-plaintext" {
                let mode = f["evidence"]["mode"].as_str().unwrap_or("");
                expect(
                    "mta-sts-plaintext evidence says the mode is not observable",
                    mode.starts_with("not observable").into(),
                    true.into(),
                );
            }
            if f["kind"] == "mta-sts-fetch-blocked" {
                expect(
                    "fetch-blocked evidence",
                    f["evidence"]["sts_fetch"].clone(),
                    fetch.into(),
                );
            }
        }
    }
    diffs
}

/// Analyses the captures in `dir` as the script means them (the baseline pair with one
/// `--state` file) and checks each against its facts.
fn check_dir(dir: &Path, out: &Path) -> Vec<String> {
    let state = out.join("state.redb");
    let mut diffs = Vec::new();
    for name in CAPTURES {
        let facts = read_json(&dir.join(format!("{name}.facts.json")));
        let analysis = out.join(name);
        let pcap = dir.join(format!("{name}.pcap"));
        let pair = matches!(name, "sts-enforce-clean" | "sts-txt-removed");
        let state_arg = state.display().to_string();
        let extra: Vec<&str> = if pair {
            vec!["--state", &state_arg]
        } else {
            vec![]
        };
        common::analyze(&[&pcap], &analysis, &extra);
        diffs.extend(check(name, &facts, &analysis, name == "sts-txt-removed"));
        if name == "sts-txt-removed" {
            // Alone, the run cannot know the domain ever published a policy.
            let alone = out.join(format!("{name}-alone"));
            common::analyze(&[&pcap], &alone, &[]);
            diffs.extend(check(&format!("{name} alone"), &facts, &alone, false));
        }
    }
    diffs
}

#[test]
fn committed_sts_captures_match_their_facts() {
    let out = common::tempdir("mta-sts");
    let diffs = check_dir(&common::root().join("pcaps"), &out);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn without_fetch_following_the_fetch_is_null() {
    let out = common::tempdir("mta-sts-off");
    let pcap = common::root().join("pcaps/sts-fetch-reset.pcap");
    common::analyze(&[&pcap], &out, &["--no-mta-sts-fetches"]);
    let sessions = common::ndjson(&out.join("sessions.ndjson"));
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["sts_fetch"], Value::Null);
    assert_eq!(sessions[0]["sts_txt"], "20261207T0850");
    let kinds = sessions[0]["findings"].as_array().unwrap();
    assert!(
        !kinds.contains(&"mta-sts-fetch-blocked".into()),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"mta-sts-plaintext".into()), "{kinds:?}");
}

#[test]
fn fresh_sts_captures_match_their_facts() {
    if !common::require_root() {
        return;
    }
    let dir = common::make_captures("sts-captures");
    let out = common::tempdir("real-sts-analysis");
    let diffs = check_dir(&dir, &out);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn https_that_is_not_a_policy_fetch_is_released_and_changes_nothing_else() {
    let out = common::tempdir("mta-sts-release");
    let mixed = out.join("mixed.pcap");
    // Background HTTPS to www.example.com among the mail: none of it is a policy fetch.
    stripwatch_synth::write_mixed(&mixed, 300, 7).unwrap();
    let follow = out.join("follow");
    let summary = common::analyze(&[&mixed], &follow, &["--workers", "1"]);
    let released = summary["flows"]["released_flows"].as_u64().unwrap();
    let other = summary["mta_sts"]["other_https_connections"]
        .as_u64()
        .unwrap();
    assert!(released > 10, "{}", summary["flows"]);
    assert_eq!(released, other, "each named connection released once");
    assert_eq!(summary["mta_sts"]["fetches"]["ok"], 0);
    // The sessions are those of a run that does not look at TCP/443, but for sts_fetch.
    let off = out.join("off");
    common::analyze(&[&mixed], &off, &["--workers", "1", "--no-mta-sts-fetches"]);
    let strip = |dir: &Path| -> Vec<Value> {
        common::ndjson(&dir.join("sessions.ndjson"))
            .into_iter()
            .map(|mut s| {
                s.as_object_mut().unwrap().remove("sts_fetch");
                s
            })
            .collect()
    };
    let (a, b) = (strip(&follow), strip(&off));
    assert!(a.len() > 100);
    assert!(a == b, "sessions differ");
}
