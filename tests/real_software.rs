//! End to end with real software: runs `scripts/real-captures/make.sh` and
//! `scripts/sender-captures/make.sh`, which deliver mail with real Postfix, Exim and OpenSMTPD
//! through a stripping proxy in network namespaces and capture it with tcpdump,
//! then checks the analyzer against the expected results that `expect.py` derives from each new
//! capture independently of stripwatch. `scripts/auth-captures/make.sh` does the same with swaks
//! authenticating to Postfix submission through that proxy; its test also proves that the
//! password, on the wire in clear, never reaches stripwatch's output.
//!
//! Needs root (namespaces, apt). `STRIPWATCH_SKIP_REAL=1` skips it explicitly; anything else
//! missing is a failure with a clear message, never a silent pass.

mod common;

use base64::Engine;
use std::path::Path;

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

/// Also the issue-12 test of `stripwatch live` with real software: make.sh runs `live` on the
/// veth its tcpdump listens on (same filter) across every delivery, and live's records must
/// equal those of `analyze` on the captures of the same traffic.
#[test]
fn fresh_postfix_captures_match_their_expected_results() {
    if !common::require_root() {
        return;
    }
    let live = common::tempdir("real-postfix-live").join("out");
    let out = common::make_captures_with(
        "real-captures",
        &[
            "--live".as_ref(),
            common::bin().as_os_str(),
            live.as_os_str(),
        ],
    );
    let (checked, failures) = check_expected_dir(&out);
    assert_eq!(checked, 10, "make.sh should produce ten captures");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    live_equals_analyze(&out, &live);
}

/// What must be equal per session between `live` and `analyze` on the same packets: the id
/// (derived from the flow and its first packet's time, so it is equal only if both saw the same
/// first packet at the same time), the judgement, the dialog and TLS facts, and what was seen.
/// Not `ts_end`: see `live_equals_analyze`.
fn session_facts(s: &serde_json::Value) -> String {
    let fields = [
        "session_id",
        "ts",
        "banner_code",
        "ehlo_reply_code",
        "ehlo_capabilities",
        "starttls_sent",
        "starttls_reply_code",
        "tls_started",
        "tls_client_hello",
        "tls_server_hello",
        "tls_version",
        "tls_cipher",
        "tls_history",
        "handshake_failure",
        "rcpt_commands",
        "data_commands",
        "client_packets",
        "server_packets",
        "client_bytes",
        "server_bytes",
        "gaps",
        "missing_side",
    ];
    let mut out = common::rotated::judged(s);
    for f in fields {
        out.push_str(&format!(" {f}={}", s[f]));
    }
    out
}

/// The first packet's time of a classic pcap (seconds and microseconds, as sortable numbers).
fn first_packet_time(path: &Path) -> (u32, u32) {
    let p = common::pcap::Pcap::read(path);
    let r = p.records.first().expect("a capture with packets");
    let word = |at: usize| u32::from_le_bytes(r[at..at + 4].try_into().unwrap());
    (word(0), word(4))
}

/// An RFC 3339 record time in microseconds since the epoch.
fn micros(ts: &serde_json::Value) -> i128 {
    let t = time::OffsetDateTime::parse(
        ts.as_str().expect("a time"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("an RFC 3339 time");
    t.unix_timestamp_nanos() / 1000
}

/// The most a received frame's time may differ between two packet sockets on one interface.
const STAMP_SLACK_US: i128 = 50_000;

/// `stripwatch live` on the veth (records rotated in `live`) against `analyze` on the tcpdump
/// files of `out`. The files are analysed in one run, in the order of their first packets: live
/// judged all deliveries in one run too, and cross-session findings (an offer seen in an earlier
/// delivery to the same server makes a later missing one `starttls-missing`, a failed upgrade
/// makes a later plaintext delivery `plaintext-fallback`) span files. A one-sided capture
/// holds only part of what live saw, so its two-sided twin (`NAME.both.pcap`) stands for it.
///
/// Times: every session starts with the client's SYN, sent from the namespace where both
/// capture, and the kernel stamps a sent frame once for every packet socket while some socket
/// asks for timestamps (make.sh holds one), so `ts` and the session id are equal. A received
/// TCP frame keeps its sender's delivery time (monotonic clock, TCP pacing) across the veth,
/// which packet sockets do not use: each stamps its own copy when it takes it, microseconds
/// apart (5-30 µs measured). So `ts_end`, when the last frame was received, may differ by that.
fn live_equals_analyze(out: &Path, live: &Path) {
    let mut captures: Vec<std::path::PathBuf> = Vec::new();
    for entry in std::fs::read_dir(out).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let Some(stem) = name.strip_suffix(".pcap") else {
            continue;
        };
        let two_sided = stem.ends_with(".both");
        let delivery = out.join(format!("{stem}.expected.json")).exists()
            && !out.join(format!("{stem}.both.pcap")).exists();
        if two_sided || delivery {
            captures.push(path);
        }
    }
    assert_eq!(
        captures.len(),
        10,
        "one file per delivery run: {captures:?}"
    );
    captures.sort_by_key(|p| first_packet_time(p));
    let refs: Vec<&Path> = captures.iter().map(|p| p.as_path()).collect();
    let offline_dir = out.join("all-analysis");
    let summary = common::analyze(&refs, &offline_dir, &["--no-report"]);
    let offline = common::ndjson(&offline_dir.join("sessions.ndjson"));

    let live_summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(live.join("summary.json")).expect("live wrote summary.json"),
    )
    .unwrap();
    assert_eq!(
        live_summary["capture"]["packets"], summary["packets"],
        "live and tcpdump did not capture the same packets"
    );
    assert_eq!(live_summary["capture"]["kernel_drops"], 0);
    let got = common::rotated::records(live, "sessions");
    assert_eq!(
        got.len(),
        common::rotated::lines(live, "sessions"),
        "a line of live's output is not a record"
    );
    let facts = |sessions: &[serde_json::Value]| -> std::collections::BTreeMap<String, String> {
        sessions
            .iter()
            .map(|s| (common::rotated::session_key(s), session_facts(s)))
            .collect()
    };
    let (got_facts, want_facts) = (facts(&got), facts(&offline));
    assert_eq!(got.len(), got_facts.len(), "live wrote a session twice");
    assert_eq!(offline.len(), want_facts.len());
    for (key, want) in &want_facts {
        assert_eq!(
            got_facts.get(key),
            Some(want),
            "{key}: live and analyze disagree"
        );
    }
    assert_eq!(got_facts.len(), want_facts.len(), "live has more sessions");
    let ends: std::collections::BTreeMap<String, i128> = got
        .iter()
        .map(|s| (common::rotated::session_key(s), micros(&s["ts_end"])))
        .collect();
    let mut worst = 0;
    for s in &offline {
        let key = common::rotated::session_key(s);
        let skew = (ends[&key] - micros(&s["ts_end"])).abs();
        assert!(skew <= STAMP_SLACK_US, "{key}: ts_end {skew} µs apart");
        worst = worst.max(skew);
    }

    // Every case of the issue is among them: each capture's sessions (by both ends), judged by
    // live, carry the finding that capture is about.
    let by_key: std::collections::BTreeMap<String, &serde_json::Value> = got
        .iter()
        .map(|s| (common::rotated::session_key(s), s))
        .collect();
    for (capture, wanted) in [
        // TLS 1.3 hides the certificate: the clean upgrade's only finding says so.
        (
            "real-postfix-starttls-ok",
            &["certificate-not-observable"][..],
        ),
        ("real-postfix-overwrite", &["starttls-stripped"]),
        ("real-postfix-delete", &["starttls-missing"]),
        (
            "real-postfix-reject",
            &["starttls-command-rejected", "plaintext-fallback"],
        ),
        (
            "real-postfix-break-tls",
            &["tls-handshake-failed", "plaintext-fallback"],
        ),
    ] {
        let own = common::ndjson(&out.join(format!("{capture}-analysis/sessions.ndjson")));
        assert!(!own.is_empty(), "{capture}: no session");
        let mut seen: Vec<String> = Vec::new();
        for s in &own {
            let key = common::rotated::session_key(s);
            let l = by_key
                .get(&key)
                .unwrap_or_else(|| panic!("{capture}: live has no session {key}"));
            seen.push(l["verdict"].as_str().unwrap().to_string());
            seen.extend(common::finding_kinds(l));
            if capture == "real-postfix-starttls-ok" {
                assert_eq!(l["tls_handshake_completed"], true, "{l}");
                assert_eq!(common::finding_kinds(l), ["certificate-not-observable"]);
            }
        }
        for w in wanted {
            assert!(
                seen.iter().any(|s| s == w),
                "{capture}: live judged {seen:?}, expected {w}"
            );
        }
    }
    eprintln!(
        "live on the veth: {} sessions, {} packets, equal to analyze on the tcpdump files \
         (ts_end at most {worst} µs apart)",
        got.len(),
        live_summary["capture"]["packets"]
    );
}

#[test]
fn fresh_exim_and_opensmtpd_captures_match_their_expected_results() {
    if !common::require_root() {
        return;
    }
    let out = common::make_captures("sender-captures");
    let (checked, failures) = check_expected_dir(&out);
    assert_eq!(
        checked, 12,
        "sender-captures/make.sh should produce twelve captures"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every file below `dir`.
fn files_below(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_below(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn fresh_auth_captures_match_their_expected_results() {
    if !common::require_root() {
        return;
    }
    let out = common::make_captures("auth-captures");
    let (_, failures) = check_expected_dir(&out);
    let mut checked: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            name.strip_suffix(".expected.json").map(str::to_string)
        })
        .collect();
    checked.sort();
    // name -> the mechanism and the downgrade its auth-in-cleartext finding must name
    let cleartext = [
        (
            "auth-swaks-break-tls-retry",
            "LOGIN",
            "tls-handshake-failed",
        ),
        ("auth-swaks-missing", "LOGIN", "starttls-missing"),
        ("auth-swaks-overwrite", "LOGIN", "starttls-stripped"),
        ("auth-swaks-reject", "PLAIN", "starttls-command-rejected"),
    ];
    let mut names: Vec<&str> = cleartext.iter().map(|c| c.0).collect();
    names.push("auth-swaks-tls");
    names.sort();
    assert_eq!(
        checked, names,
        "the captures auth-captures/make.sh should make"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The password as make.sh sets it, and the forms it takes on the wire: LOGIN sends it in
    // base64, PLAIN sends base64 of "authzid NUL user NUL password".
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let password = "Sw-Secret-Pa55";
    let mut secrets = vec![
        password.to_string(),
        b64(password),
        b64(&format!("\0alice\0{password}")),
        b64(&format!("alice\0alice\0{password}")),
    ];
    secrets.extend(
        secrets
            .clone()
            .iter()
            .map(|s| s.trim_end_matches('=').to_string()),
    );
    let holds =
        |bytes: &[u8], secret: &str| bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
    for stem in &checked {
        let pcap = std::fs::read(out.join(format!("{stem}.pcap"))).unwrap();
        let in_clear = cleartext.iter().find(|c| c.0 == stem);
        // The credential really went over the wire in clear (else the next check proves
        // nothing), and only where the scenario says so.
        assert_eq!(
            secrets.iter().any(|s| holds(&pcap, s)),
            in_clear.is_some(),
            "{stem}: the password in base64 on the wire"
        );
        let analysis = out.join(format!("{stem}-analysis"));
        for file in files_below(&analysis) {
            let bytes = std::fs::read(&file).unwrap();
            for secret in &secrets {
                assert!(
                    !holds(&bytes, secret),
                    "{} holds the credential ({secret})",
                    file.display()
                );
            }
        }
        let auth: Vec<serde_json::Value> = common::ndjson(&analysis.join("findings.ndjson"))
            .into_iter()
            .filter(|f| f["kind"] == "auth-in-cleartext")
            .collect();
        match in_clear {
            Some((_, mechanism, downgrade)) => {
                assert_eq!(auth.len(), 1, "{stem}: {auth:?}");
                assert_eq!(auth[0]["evidence"]["mechanism"], *mechanism, "{stem}");
                assert_eq!(auth[0]["evidence"]["downgrade"], *downgrade, "{stem}");
                assert_eq!(auth[0]["evidence"]["credential_sent"], true, "{stem}");
                assert_eq!(auth[0]["evidence"]["auth_reply_code"], 235, "{stem}");
            }
            None => assert!(auth.is_empty(), "{stem}: {auth:?}"),
        }
    }
}

#[test]
fn fresh_tls_handshakes_match_their_facts() {
    if !common::require_root() {
        return;
    }
    let out = common::make_captures("tls-captures");
    let (checked, failures) = common::check_tls_facts(&out);
    assert!(checked >= 10, "only {checked} TLS sessions checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fresh_dns_and_dane_deliveries_match_their_facts() {
    if !common::require_root() {
        return;
    }
    let out = common::make_captures("dns-captures");
    common::check_real_dns(&out, "dns-mx-delivery");
    common::check_real_dns(&out, "dns-tcp");
}
