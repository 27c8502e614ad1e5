//! stripwatch against real captures nobody here made: the 61 third-party captures beside the
//! repository (`../shared/thirdparty-pcaps`) with tshark's view of each. Every column must agree
//! except for the disagreements explained in docs/thirdparty.md.
//!
//! The corpus lives outside the repository (its licences do not allow copying it in). When it is
//! absent the test fails with a clear message; `STRIPWATCH_SKIP_THIRDPARTY=1` skips it
//! explicitly.

mod common;

use std::collections::BTreeMap;

/// Files where stripwatch deliberately differs from tshark, with the reason (docs/thirdparty.md).
const EXPLAINED: &[(&str, &str)] = &[(
    "ntop_nDPI__openvpn_obfuscated.pcapng",
    "obfuscated OpenVPN on 465: not SMTP or TLS, so no session",
)];

#[test]
fn agrees_with_tshark_on_third_party_captures() {
    if std::env::var("STRIPWATCH_SKIP_THIRDPARTY").as_deref() == Ok("1") {
        eprintln!("STRIPWATCH_SKIP_THIRDPARTY=1: skipping");
        return;
    }
    let corpus = common::root().join("../shared/thirdparty-pcaps");
    let tsv = corpus.join("truth/summary.tsv");
    let text = std::fs::read_to_string(&tsv).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the third-party corpus must sit beside the repository; \
             STRIPWATCH_SKIP_THIRDPARTY=1 skips this test)",
            tsv.display()
        )
    });
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let mut disagreements = BTreeMap::new();
    let mut files = 0;
    for line in lines {
        let row: BTreeMap<&str, &str> = header.iter().copied().zip(line.split('\t')).collect();
        let name = row["file"];
        files += 1;
        let out = common::tempdir(&format!("thirdparty-{name}"));
        common::analyze(&[&corpus.join("pcaps").join(name)], &out, &[]);
        let sessions = common::ndjson(&out.join("sessions.ndjson"));
        let count =
            |f: &dyn Fn(&serde_json::Value) -> bool| sessions.iter().filter(|s| f(s)).count();
        let has = |s: &serde_json::Value, kind: &str| {
            s["findings"].as_array().unwrap().iter().any(|k| k == kind)
        };
        let ours = [
            ("smtp_sessions", sessions.len()),
            (
                "starttls_advertised",
                count(&|s| s["starttls_offered"] == true),
            ),
            ("starttls_sent", count(&|s| s["starttls_sent"] == true)),
            ("tls_handshakes", count(&|s| s["tls_client_hello"] == true)),
            ("stripped_markers", count(&|s| has(s, "starttls-stripped"))),
            (
                "starttls_then_cleartext",
                count(&|s| has(s, "cleartext-after-starttls")),
            ),
        ];
        let diffs: Vec<String> = ours
            .iter()
            .filter(|(col, n)| row[col].parse::<usize>().unwrap() != *n)
            .map(|(col, n)| format!("{col}: tshark {}, stripwatch {n}", row[col]))
            .collect();
        if !diffs.is_empty() {
            disagreements.insert(name.to_string(), diffs.join("; "));
        }
    }
    assert_eq!(files, 61, "the corpus should hold 61 captures");
    let unexplained: Vec<String> = disagreements
        .iter()
        .filter(|(name, _)| !EXPLAINED.iter().any(|(e, _)| e == name))
        .map(|(n, d)| format!("{n}: {d}"))
        .collect();
    assert!(
        unexplained.is_empty(),
        "unexplained disagreements:\n{}",
        unexplained.join("\n")
    );
    for (name, why) in EXPLAINED {
        assert!(
            disagreements.contains_key(*name),
            "{name} now agrees with tshark ({why} no longer holds): update EXPLAINED and docs"
        );
    }
}
