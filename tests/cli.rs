//! The command line as a user meets it: inputs in every accepted form, and clear one-line errors
//! with a non-zero exit for everything else.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

fn real(name: &str) -> std::path::PathBuf {
    common::root().join("pcaps").join(name)
}

fn one_line_error(args: &[&str]) -> (i32, String) {
    let o = common::run(args);
    assert!(!o.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "error for {args:?} is not one line: {err}"
    );
    (o.status.code().unwrap_or(-1), err)
}

#[test]
fn bad_input_gets_one_line_and_nonzero_exit() {
    let out = common::tempdir("cli-errors");
    let out = out.to_str().unwrap();
    let (_, e) = one_line_error(&["analyze", "/nonexistent.pcap", "--out", out]);
    assert!(e.contains("/nonexistent.pcap"), "{e}");
    assert_eq!(e.matches("No such file").count(), 1, "the reason once: {e}");
    let not_capture = common::root().join("Cargo.toml");
    let (_, e) = one_line_error(&["analyze", not_capture.to_str().unwrap(), "--out", out]);
    assert!(e.contains("not a pcap or pcapng"), "{e}");
    let (code, e) = one_line_error(&["analyze", "--frobnicate", "x.pcap", "--out", out]);
    assert_eq!(code, 2);
    assert!(e.contains("--frobnicate"), "{e}");
    let (code, _) = one_line_error(&[
        "analyze",
        "x.pcap",
        "--out",
        out,
        "--smtp-ports",
        "25,notaport",
    ]);
    assert_eq!(code, 2);
    let (_, e) = one_line_error(&["analyze", "-", "-", "--out", out]);
    assert!(e.contains("standard input"), "{e}");
}

#[test]
fn compressed_and_stdin_inputs_give_the_same_sessions() {
    let pcap = real("real-postfix-missing.pcap");
    let bytes = std::fs::read(&pcap).unwrap();
    let dir = common::tempdir("cli-compressed");
    let gz = dir.join("capture.bin1");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&bytes).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let zst = dir.join("capture.bin2");
    std::fs::write(&zst, zstd::encode_all(&bytes[..], 3).unwrap()).unwrap();

    let verdicts = |out: &std::path::Path| -> Vec<String> {
        common::ndjson(&out.join("sessions.ndjson"))
            .iter()
            .map(|s| s["verdict"].as_str().unwrap().to_string())
            .collect()
    };
    let plain = dir.join("plain");
    common::analyze(&[&pcap], &plain, &[]);
    let want = verdicts(&plain);
    assert_eq!(want, vec!["certificate-not-observable", "starttls-missing"]);
    for (name, input) in [("gz", &gz), ("zst", &zst)] {
        let out = dir.join(name);
        common::analyze(&[input], &out, &[]);
        assert_eq!(verdicts(&out), want, "{name}");
    }
    let out = dir.join("stdin");
    let mut child = Command::new(common::bin())
        .args(["analyze", "-", "--out", out.to_str().unwrap(), "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(verdicts(&out), want);
}

#[test]
fn summary_reports_counters_and_several_inputs_are_one_run() {
    let a = real("real-postfix-starttls-ok.pcap");
    let b = real("real-postfix-delete.pcap");
    let out = common::tempdir("cli-two-inputs");
    let summary = common::analyze(&[&a, &b], &out, &[]);
    assert_eq!(summary["inputs"].as_array().unwrap().len(), 2);
    assert_eq!(summary["sessions"], 2);
    // The same server offered STARTTLS in the first capture: the second is not "not supported".
    assert_eq!(summary["findings_by_kind"]["starttls-missing"], 1);
    assert!(summary["packets"].as_u64().unwrap() > 10);
    assert!(summary["flows"]["tcp_packets"].as_u64().unwrap() > 10);
    assert!(out.join("summary.json").exists());
    // The human form names the verdicts and the counters.
    let o = common::run(&[
        "analyze",
        a.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("certificate-not-observable") && text.contains("tcp gaps"),
        "{text}"
    );
}

/// A capture cut while it was being written ends inside a record: the packets before the cut
/// count, and the input is reported `truncated`, not corrupt (pcap and pcapng alike).
#[test]
fn a_capture_cut_inside_a_record_is_truncated_not_corrupt() {
    let work = common::tempdir("cut-capture");
    let pcaps = common::root().join("pcaps");
    for name in ["clean-starttls.pcap", "clean-starttls-pcapng.pcapng"] {
        let whole_path = pcaps.join(name);
        let whole = common::analyze(&[&whole_path], &work.join(format!("whole-{name}")), &[]);
        let packets = whole["inputs"][0]["packets"].as_u64().unwrap();
        assert_eq!(whole["inputs"][0]["truncated"], false, "{whole}");

        let bytes = std::fs::read(&whole_path).unwrap();
        let cut_path = work.join(format!("cut-{name}"));
        std::fs::write(&cut_path, &bytes[..bytes.len() - 10]).unwrap();
        let cut = common::analyze(&[&cut_path], &work.join(format!("cut-out-{name}")), &[]);
        let input = &cut["inputs"][0];
        assert_eq!(input["truncated"], true, "{name}: {input}");
        assert_eq!(input["corrupt_blocks"], 0, "{name}: {input}");
        assert_eq!(
            input["packets"].as_u64(),
            Some(packets - 1),
            "{name}: every record but the cut one: {input}"
        );
    }
}
