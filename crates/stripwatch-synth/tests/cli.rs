//! The `stripwatch-synth` binary as scripts use it: names listed, scenarios written by name
//! exactly as committed in the repository's `pcaps/`, a mixed capture reported, and a mistake
//! refused with a non-zero exit.

use std::path::PathBuf;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stripwatch-synth"))
        .args(args)
        .output()
        .expect("cannot run stripwatch-synth")
}

/// A fresh directory under the workspace's target/ (kept on failure for inspection).
fn tempdir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/test-out")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_binary_lists_writes_and_refuses() {
    let o = run(&["scenarios", "--list", "unused"]);
    assert!(o.status.success());
    let names = String::from_utf8(o.stdout).unwrap();
    assert!(names.lines().any(|n| n == "clean-starttls"), "{names}");

    let dir = tempdir("synth-cli");
    let o = run(&[
        "scenarios",
        dir.to_str().unwrap(),
        "--scenario",
        "clean-starttls",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let committed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../pcaps");
    for file in ["clean-starttls.pcap", "clean-starttls.expected.json"] {
        assert!(
            std::fs::read(dir.join(file)).unwrap() == std::fs::read(committed.join(file)).unwrap(),
            "{file} differs from pcaps/"
        );
    }

    let mixed = dir.join("mixed.pcap.zst");
    let o = run(&["mixed", mixed.to_str().unwrap(), "--sessions", "50"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("50 sessions"));
    assert!(mixed.is_file());

    let o = run(&["scenarios", dir.to_str().unwrap(), "--scenario", "no-such"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown scenario \"no-such\""));
    std::fs::remove_dir_all(&dir).unwrap();
}
