//! Runs the real binary over every capture in `pcaps/` (generated scenarios and captures of real
//! Postfix through a stripping proxy) and compares its sessions and findings with the capture's
//! expected-results file.

mod common;

use std::path::PathBuf;

fn captures() -> Vec<(PathBuf, PathBuf)> {
    let dir = common::root().join("pcaps");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("pcaps/ exists") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let Some(stem) = name.strip_suffix(".expected.json") else {
            continue;
        };
        let capture = ["pcap", "pcapng", "pcap.gz", "pcap.zst"]
            .iter()
            .map(|ext| dir.join(format!("{stem}.{ext}")))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("no capture for {name}"));
        out.push((capture, path));
    }
    out.sort();
    out
}

#[test]
fn every_capture_matches_its_expected_results() {
    let all = captures();
    assert!(
        all.len() >= 6,
        "expected scenario captures in pcaps/, found {}",
        all.len()
    );
    let mut failures = Vec::new();
    for (capture, expected_path) in &all {
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(expected_path).unwrap()).unwrap();
        let name = capture.file_name().unwrap().to_string_lossy().to_string();
        let out = common::tempdir(&format!("scenario-{name}"));
        common::analyze(&[capture], &out, &[]);
        let diffs = common::compare_expected(&expected, &out);
        if !diffs.is_empty() {
            failures.push(format!("{name}:\n    {}", diffs.join("\n    ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} captures disagree:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn real_postfix_captures_are_present() {
    // The real-software captures are the ground truth that the generator cannot fake.
    for name in [
        "real-postfix-starttls-ok",
        "real-postfix-overwrite",
        "real-postfix-delete",
        "real-postfix-missing",
        "real-postfix-break-tls",
        "real-postfix-reject",
    ] {
        let p = common::root().join("pcaps").join(format!("{name}.pcap"));
        assert!(p.exists(), "{} is missing", p.display());
    }
}
