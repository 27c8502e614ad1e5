//! The scenario generator (the `stripwatch-synth` crate): the committed captures in `pcaps/` are
//! exactly what it writes today (so the expectations cannot drift from the code that makes
//! them), and a mixed benchmark capture is analysed into as many sessions as it holds.

mod common;

#[test]
fn committed_scenarios_are_reproducible() {
    let dir = common::tempdir("synth-scenarios");
    stripwatch_synth::write_scenarios(&dir).unwrap();
    let mut compared = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        let committed = common::root().join("pcaps").join(&name);
        assert!(
            committed.exists(),
            "{name:?} is generated but not in pcaps/"
        );
        assert!(
            std::fs::read(&path).unwrap() == std::fs::read(&committed).unwrap(),
            "{name:?} differs from the generator's output: run `cargo run -p stripwatch-synth --release -- scenarios pcaps`"
        );
        compared += 1;
    }
    assert!(compared >= 90, "only {compared} files generated");
}

#[test]
fn mixed_capture_yields_every_session() {
    let dir = common::tempdir("synth-mixed");
    let pcap = dir.join("mixed.pcap");
    stripwatch_synth::write_mixed(&pcap, 2000, 7).unwrap();
    let out = dir.join("out");
    let summary = common::analyze(&[&pcap], &out, &[]);
    assert_eq!(summary["sessions"], 2000, "{summary}");
    let verdicts = &summary["sessions_by_verdict"];
    // The generated TLS is resumed (no certificate message): never a pass.
    assert!(
        verdicts["certificate-not-observable"].as_u64().unwrap() > 1000,
        "{verdicts}"
    );
    assert!(verdicts.get("tls-ok").is_none(), "{verdicts}");
    assert!(
        verdicts["starttls-stripped"].as_u64().unwrap_or(0) > 0,
        "{verdicts}"
    );
    assert_eq!(summary["flows"]["evicted_flows"], 0);
    assert_eq!(summary["flows"]["gaps"], 0);
}

/// Each worker's share is in the summary, and the shares add up to the run's counters.
#[test]
fn each_workers_share_is_counted_and_the_shares_add_up() {
    let dir = common::tempdir("synth-workers");
    let pcap = dir.join("mixed.pcap");
    stripwatch_synth::write_mixed(&pcap, 2000, 7).unwrap();
    let out = dir.join("out");
    let summary = common::analyze(&[&pcap], &out, &["--workers", "2"]);
    let workers = summary["workers"].as_array().expect("a workers array");
    assert_eq!(workers.len(), 2, "{summary}");
    let sum = |key: &str| -> u64 { workers.iter().map(|w| w[key].as_u64().unwrap()).sum() };
    assert_eq!(
        sum("sessions"),
        summary["flows"]["sessions"].as_u64().unwrap()
    );
    assert_eq!(sum("sessions"), 2000);
    assert_eq!(
        sum("dns_messages"),
        summary["dns"]["messages"].as_u64().unwrap()
    );
    let decoded = summary["flows"]["tcp_packets"].as_u64().unwrap()
        + summary["flows"]["udp_packets"].as_u64().unwrap();
    assert_eq!(sum("packets"), decoded, "{summary}");
    // 2,000 sessions from many clients: both workers have work.
    for w in workers {
        assert!(w["sessions"].as_u64() > Some(100), "{w}");
    }
}
