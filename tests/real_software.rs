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

#[test]
fn fresh_postfix_captures_match_their_expected_results() {
    if !common::require_root() {
        return;
    }
    let out = common::make_captures("real-captures");
    let (checked, failures) = check_expected_dir(&out);
    assert_eq!(checked, 10, "make.sh should produce ten captures");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
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
