//! `--config FILE` and `stripwatch config check`: the file's keys are the long options, the
//! command line wins over the file, and a bad file (unreadable, not TOML, an unknown key, a
//! value of the wrong type or one the option refuses) is one line and exit status 2.

mod common;

use std::path::Path;

/// Runs stripwatch and insists on one line on standard error and status 2; returns the line.
fn refused(args: &[&str]) -> String {
    let o = common::run(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    err
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn the_sample_configuration_passes_its_check() {
    let sample = common::root().join("packaging").join("stripwatch.toml");
    let o = common::run(&["config", "check", sample.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("valid for stripwatch live"));
}

#[test]
fn bad_files_are_one_line_and_status_2() {
    let dir = common::tempdir("config-bad");
    let unknown = write(
        &dir,
        "unknown.toml",
        "interface = [\"lo\"]\nfrobnicate = 1\n",
    );
    let e = refused(&["config", "check", &unknown]);
    assert!(e.contains("line 2") && e.contains("frobnicate"), "{e}");
    let wrong_type = write(&dir, "type.toml", "workers = \"two\"\n");
    let e = refused(&["config", "check", &wrong_type]);
    assert!(e.contains("workers") || e.contains("usize"), "{e}");
    let bad_value = write(&dir, "value.toml", "buffer-size = \"1X\"\n");
    let e = refused(&["config", "check", &bad_value]);
    assert!(
        e.contains("--buffer-size") && e.contains("value.toml"),
        "{e}"
    );
    let not_toml = write(&dir, "broken.toml", "workers = [\n");
    refused(&["config", "check", &not_toml]);
    let missing = dir.join("missing.toml");
    let e = refused(&["config", "check", missing.to_str().unwrap()]);
    assert!(e.contains("missing.toml"), "{e}");
    // A key of `live` is not one of `analyze`.
    let live_only = write(&dir, "live.toml", "bpf = \"tcp\"\n");
    let e = refused(&["config", "check", &live_only, "--command", "analyze"]);
    assert!(e.contains("`bpf` is not an option"), "{e}");

    // The same files stop `live` and `analyze` before they start.
    let out = dir.join("out");
    let out = out.to_str().unwrap();
    let pcap = common::root()
        .join("pcaps")
        .join("real-postfix-delete.pcap");
    let pcap = pcap.to_str().unwrap();
    refused(&["analyze", pcap, "--out", out, "--config", &wrong_type]);
    refused(&["analyze", pcap, "--out", out, "--config", &live_only]);
    refused(&["live", "-i", "lo", "--out", out, "--config", &unknown]);
    refused(&["live", "-i", "lo", "--out", out, "--config", &bad_value]);
    refused(&[
        "live",
        "-i",
        "lo",
        "--out",
        out,
        "--config",
        missing.to_str().unwrap(),
    ]);
}

#[test]
fn the_command_line_wins_over_the_file() {
    let dir = common::tempdir("config-override");
    let out = dir.join("from-file");
    let config = write(
        &dir,
        "analyze.toml",
        &format!(
            "out = \"{}\"\nsensor = \"from-file\"\nworkers = 1\nno-report = true\njson = true\n",
            out.display()
        ),
    );
    let pcap = common::root()
        .join("pcaps")
        .join("real-postfix-delete.pcap");
    let sensors = |dir: &Path| -> Vec<String> {
        common::ndjson(&dir.join("sessions.ndjson"))
            .iter()
            .map(|s| s["sensor"].as_str().unwrap().to_string())
            .collect()
    };
    // Everything from the file: its output directory, its sensor name, no report.
    let o = common::run(&["analyze", pcap.to_str().unwrap(), "--config", &config]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("--json from the file");
    assert_eq!(summary["sessions"], 1);
    assert_eq!(sensors(&out), vec!["from-file"]);
    assert!(!out.join("report.md").exists(), "no-report from the file");

    // The command line's --sensor and --out win; the rest still comes from the file.
    let other = dir.join("from-cli");
    let o = common::run(&[
        "analyze",
        pcap.to_str().unwrap(),
        "--config",
        &config,
        "--sensor",
        "from-cli",
        "--out",
        other.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(sensors(&other), vec!["from-cli"]);
    assert_eq!(
        sensors(&out),
        vec!["from-file"],
        "the file's directory untouched"
    );
}
