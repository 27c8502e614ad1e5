//! Many sensors, one ClickHouse cluster, on real servers: ZooKeeper and four 18.16 nodes
//! (2 shards × 2 replicas) started by the test on loopback. `schema apply --cluster` creates the
//! replicated schema; two sensors write concurrently, each through a different node; a replica
//! that one of them writes through is killed with SIGKILL in the middle of the ingest and
//! restarted. Then every row is in the cluster exactly once, the replicas agree, the report read
//! from the cluster equals the embedded report over both runs byte for byte, and every query in
//! queries/ runs on the cluster.

mod common;

use common::cluster::{CLUSTER, Cluster};
use common::{bin, ndjson, report_files, root, run, tempdir};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The event tables, their ndjson files' names and their id columns.
const TABLES: [(&str, &str); 4] = [
    ("sessions", "session_id"),
    ("findings", "finding_id"),
    ("dns", "transaction_id"),
    ("certificates", "fingerprint"),
];

/// The database the tests write.
const DB: &str = "stripwatch";

fn apply_cluster_schema(url: &str) {
    let o = run(&["schema", "apply", "--clickhouse", url, "--cluster", CLUSTER]);
    assert!(
        o.status.success(),
        "schema apply --cluster failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The bundled captures whose sessions are all distinct. The robustness variants of
/// `clean-starttls` (VLAN, SLL, fragments, reordering ...) carry the very same session (same
/// Community ID and first packet), so only the plain ones stay: the same session twice would
/// be one row in ClickHouse and two lines in the files.
fn distinct_captures() -> Vec<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(root().join("pcaps"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .filter(|p| {
            let n = p.file_stem().unwrap().to_string_lossy();
            !n.starts_with("clean-starttls-") || n == "clean-starttls-ipv6"
        })
        .collect();
    names.sort();
    names
}

/// `stripwatch analyze` as a child writing through `url` as `sensor`: one row per INSERT, so the
/// ingest lasts long enough to be interrupted.
fn sensor(captures: &[PathBuf], out: &Path, sensor: &str, url: &str) -> Child {
    Command::new(bin())
        .arg("analyze")
        .args(captures)
        .args(["--out", out.to_str().unwrap(), "--json", "--no-report"])
        .args(["--sensor", sensor, "--clickhouse", url])
        .args(["--clickhouse-batch-rows", "1"])
        .args(["--clickhouse-drain-timeout", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start stripwatch analyze")
}

fn summary(child: Child, name: &str) -> Value {
    let o = child.wait_with_output().expect("wait for stripwatch");
    assert!(
        o.status.success(),
        "sensor {name} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("summary is JSON")
}

/// The number a query through `node` gives, or None while it fails.
fn number(node: &common::clickhouse::ClickHouse, sql: &str) -> Option<u64> {
    node.try_query(sql).ok().and_then(|s| s.trim().parse().ok())
}

#[test]
fn two_sensors_write_one_cluster_through_a_replica_kill_exactly_once() {
    let work = tempdir("cluster");
    let Some(mut cluster) = Cluster::start(&work.join("cluster")) else {
        return;
    };
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    apply_cluster_schema(&urls[0]);
    apply_cluster_schema(&urls[2]); // idempotent, from any node
    let o = run(&[
        "schema",
        "apply",
        "--clickhouse",
        &urls[0],
        "--cluster",
        "nope",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("no cluster nope"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    for n in &cluster.nodes {
        let engines = n.query(&format!(
            "SELECT name, engine FROM system.tables WHERE database = '{DB}' ORDER BY name"
        ));
        assert!(
            engines.contains("sessions\tDistributed\n")
                && engines.contains("sessions_local\tReplicatedReplacingMergeTree\n")
                && engines.contains("sessions_daily_local\tReplicatedAggregatingMergeTree\n")
                && engines.contains("sessions_daily_mv\tMaterializedView\n"),
            "{engines}"
        );
    }

    // Two sensors, half of the captures each, A through node 1 (shard 1), B through node 3.
    let captures = distinct_captures();
    let (half_a, half_b): (Vec<_>, Vec<_>) = captures
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let half_a: Vec<PathBuf> = half_a.into_iter().map(|(_, p)| p).collect();
    let half_b: Vec<PathBuf> = half_b.into_iter().map(|(_, p)| p).collect();
    let (out_a, out_b) = (work.join("sensor-a"), work.join("sensor-b"));
    let a = sensor(&half_a, &out_a, "sensor-a", &urls[0]);
    let b = sensor(&half_b, &out_b, "sensor-b", &urls[2]);

    // SIGKILL node 1 (a shard-1 replica, and sensor A's way in) as soon as rows arrive.
    let deadline = Instant::now() + Duration::from_secs(60);
    while number(
        &cluster.nodes[2],
        &format!("SELECT count() FROM {DB}.sessions"),
    )
    .unwrap_or(0)
        == 0
    {
        assert!(Instant::now() < deadline, "no rows arrived within 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    cluster.nodes[0].kill();
    std::thread::sleep(Duration::from_secs(1));
    cluster.nodes[0].restart();

    let (sa, sb) = (summary(a, "A"), summary(b, "B"));
    let ch_a = &sa["clickhouse"];
    assert!(
        ch_a["insert_errors"].as_u64().unwrap() > 0,
        "the kill came after sensor A's ingest, so it tested nothing: {ch_a}"
    );
    for (name, s) in [("A", &sa), ("B", &sb)] {
        let ch = &s["clickhouse"];
        assert_eq!(ch["state"], "delivered", "sensor {name}: {ch}");
        assert_eq!(ch["rows_dropped"], 0, "sensor {name}: {ch}");
    }

    // The restarted replica catches up: both replicas of each shard hold the same rows.
    let locals: Vec<String> = TABLES
        .iter()
        .map(|(t, _)| format!("{t}_local"))
        .chain(
            ["sessions_daily", "findings_daily", "dns_daily"]
                .iter()
                .map(|t| format!("{t}_local")),
        )
        .collect();
    cluster.wait_replicas_agree(DB, &locals, Duration::from_secs(120));

    // Every row of both runs' files is in the cluster once: count() through the Distributed
    // tables (no FINAL) equals the files' lines, and the ids are the files' ids.
    let both = work.join("both");
    std::fs::create_dir_all(&both).unwrap();
    for (table, id) in TABLES {
        let mut lines = String::new();
        // `id|sensor` of every record (certificates carry the sensor in ClickHouse only).
        let mut want = BTreeSet::new();
        let mut records = 0;
        for (out, name) in [(&out_a, "sensor-a"), (&out_b, "sensor-b")] {
            let file = out.join(format!("{table}.ndjson"));
            lines.push_str(&std::fs::read_to_string(&file).unwrap());
            for r in ndjson(&file) {
                let sensor = r["sensor"].as_str().unwrap_or(name);
                want.insert(format!("{}|{sensor}", r[id].as_str().unwrap()));
                records += 1;
            }
        }
        std::fs::write(both.join(format!("{table}.ndjson")), &lines).unwrap();
        assert_eq!(want.len(), records, "{table}: the files repeat an id");
        for node in &cluster.nodes {
            let rows = number(node, &format!("SELECT count() FROM {DB}.{table}")).unwrap();
            assert_eq!(
                rows,
                records as u64,
                "{table} through {}: count() differs from the files' lines",
                node.url()
            );
        }
        let got: BTreeSet<String> = cluster.nodes[1]
            .query(&format!(
                "SELECT concat({id}, '|', sensor) FROM {DB}.{table}"
            ))
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(got, want, "{table}: the ids differ");
    }
    // Both shards hold rows: the sharding key spread them.
    for shard in [0, 2] {
        let n = number(
            &cluster.nodes[shard],
            &format!("SELECT count() FROM {DB}.sessions_local"),
        )
        .unwrap();
        assert!(n > 0, "shard of node {} got no sessions", shard + 1);
    }
    // The rollups count each session at most once per verdict. A block whose event part was
    // stored before the kill but whose rollup part was not is recognised when it comes again,
    // and 18.16 skips the views for it: the rollup may be short until it is rebuilt, and the
    // rebuild (idempotent: the states are sets of ids) makes it equal to the files.
    let mut verdicts = BTreeMap::<String, u64>::new();
    for s in ndjson(&both.join("sessions.ndjson")) {
        *verdicts
            .entry(s["verdict"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let rollup = |node: &common::clickhouse::ClickHouse| -> BTreeMap<String, u64> {
        node.rows(&format!(
            "SELECT verdict, uniqExactMerge(sessions) FROM {DB}.sessions_daily GROUP BY verdict"
        ))
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect()
    };
    let before = rollup(&cluster.nodes[3]);
    for (verdict, n) in &before {
        assert!(
            *n <= verdicts.get(verdict).copied().unwrap_or(0),
            "sessions_daily counts {verdict} {n} times: {before:?} against {verdicts:?}"
        );
    }
    let rebuild = run(&["schema", "print", "--cluster", CLUSTER, "--rebuild-rollups"]);
    assert!(rebuild.status.success());
    let rebuild = String::from_utf8(rebuild.stdout).unwrap();
    for stmt in rebuild.split(";\n").filter(|s| !s.trim().is_empty()) {
        for shard in [0, 2] {
            cluster.nodes[shard].query(stmt);
        }
    }
    cluster.wait_replicas_agree(DB, &locals, Duration::from_secs(60));
    for node in &cluster.nodes {
        assert_eq!(
            rollup(node),
            verdicts,
            "sessions_daily per verdict, rebuilt"
        );
    }
    eprintln!("sessions_daily before the rebuild: {before:?}");

    // The report from the cluster equals the embedded report over both runs, byte for byte.
    let embedded = work.join("report-embedded");
    let from_cluster = work.join("report-cluster");
    let o = run(&[
        "report",
        both.to_str().unwrap(),
        "--out",
        embedded.to_str().unwrap(),
        "--format",
        "csv,tlsrpt",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&[
        "report",
        "--clickhouse",
        &urls[1],
        "--out",
        from_cluster.to_str().unwrap(),
        "--format",
        "csv,tlsrpt",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (x, y) = (report_files(&embedded), report_files(&from_cluster));
    assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
    for (name, bytes) in &x {
        assert!(
            bytes == &y[name],
            "{name} differs\nembedded:\n{}\ncluster:\n{}",
            String::from_utf8_lossy(bytes),
            String::from_utf8_lossy(&y[name])
        );
    }
    assert!(
        x.len() > 10 && x.keys().any(|k| k.starts_with("tlsrpt/")),
        "{:?}",
        x.keys()
    );

    // Every report query in queries/ runs, as it is, on every node.
    let mut ran = 0;
    for e in std::fs::read_dir(root().join("queries")).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".sql") || name == "schema.sql" {
            continue;
        }
        let sql = std::fs::read_to_string(&path).unwrap();
        for node in &cluster.nodes {
            let body =
                common::clickhouse::http(node.http_port, "POST", &format!("/?database={DB}"), &sql)
                    .expect("query the node");
            assert_eq!(body.0, 200, "{name} on {}: {}", node.url(), body.1);
            assert!(!body.1.trim().is_empty(), "{name} gave nothing");
        }
        ran += 1;
    }
    assert_eq!(
        ran,
        stripwatch::report::clickhouse::QUERIES.len(),
        "report queries in queries/: the ones the binary runs"
    );
}

/// The findings of a run, as (kind, evidence).
fn findings(out: &Path) -> Vec<(String, Value)> {
    ndjson(&out.join("findings.ndjson"))
        .into_iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_string(),
                f["evidence"].clone(),
            )
        })
        .collect()
}

#[test]
fn another_sensors_history_convicts_a_deleted_starttls_line_and_a_removed_mta_sts_record() {
    let work = tempdir("cluster-baseline");
    let Some(cluster) = Cluster::start(&work.join("cluster")) else {
        return;
    };
    let (a_url, b_url) = (cluster.nodes[0].url(), cluster.nodes[3].url());
    apply_cluster_schema(&a_url);
    let capture = |name: &str| root().join("pcaps").join(format!("{name}.pcap"));
    let analyze = |pcap: &str, out: &Path, sensor: &str, url: &str, extra: &[&str]| {
        let mut args = vec![
            "analyze",
            pcap,
            "--out",
            out.to_str().unwrap(),
            "--no-report",
            "--json",
            "--sensor",
            sensor,
            "--clickhouse",
            url,
        ];
        args.extend_from_slice(extra);
        let o = run(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    // Sensor A sees Postfix offer STARTTLS (and use it).
    let offered = capture("real-postfix-starttls-ok");
    let out_a = work.join("a");
    analyze(offered.to_str().unwrap(), &out_a, "sensor-a", &a_url, &[]);
    let a_sessions = ndjson(&out_a.join("sessions.ndjson"));
    assert!(a_sessions.iter().all(|s| s["starttls_offered"] == true));
    let server = a_sessions[0]["server_ip"].as_str().unwrap().to_string();

    // Sensor B, later, sees the same server with the line deleted. Alone it cannot tell that
    // from a server that never offered STARTTLS.
    let deleted = capture("real-postfix-delete");
    let alone = work.join("b-alone");
    analyze(deleted.to_str().unwrap(), &alone, "sensor-b", &b_url, &[]);
    let kinds: Vec<String> = findings(&alone).into_iter().map(|(k, _)| k).collect();
    assert!(
        kinds.contains(&"starttls-not-supported".to_string())
            && !kinds.contains(&"starttls-missing".to_string()),
        "{kinds:?}"
    );

    // With the shared baseline, A's history convicts it, and the finding names A and when.
    let shared = work.join("b-shared");
    analyze(
        deleted.to_str().unwrap(),
        &shared,
        "sensor-b",
        &b_url,
        &["--shared-baseline", "--shared-baseline-refresh", "1"],
    );
    let b_sessions = ndjson(&shared.join("sessions.ndjson"));
    assert_eq!(b_sessions[0]["server_ip"], server.as_str());
    let missing: Vec<Value> = findings(&shared)
        .into_iter()
        .filter(|(k, _)| k == "starttls-missing")
        .map(|(_, e)| e)
        .collect();
    assert_eq!(missing.len(), 1, "{:?}", findings(&shared));
    let e = &missing[0];
    assert_eq!(e["source"], "baseline", "{e}");
    assert_eq!(e["seen_by_sensor"], "sensor-a", "{e}");
    let a_ts = a_sessions[0]["ts"].as_str().unwrap();
    assert_eq!(e["seen_by_sensor_at"].as_str().unwrap(), a_ts, "{e}");
    assert_eq!(e["offered_sessions"], 1, "{e}");

    // MTA-STS from shared history. Sensor A sees swcap.test and testing.swcap.test publish
    // `v=STSv1` (the real Postfix + postfix-mta-sts-resolver captures).
    let sts_a = work.join("sts-a");
    let enforce = capture("sts-enforce-clean");
    let testing = capture("sts-testing-stripped");
    let (enforce, testing) = (enforce.to_str().unwrap(), testing.to_str().unwrap());
    let o = run(&[
        "analyze",
        enforce,
        testing,
        "--out",
        sts_a.to_str().unwrap(),
        "--no-report",
        "--sensor",
        "sensor-a",
        "--clickhouse",
        &a_url,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a_txt: Vec<Value> = ndjson(&sts_a.join("dns.ndjson"))
        .into_iter()
        .filter(|d| d["qtype"] == "TXT")
        .collect();
    let a_ts = |qname: &str| {
        a_txt
            .iter()
            .find(|d| d["qname"] == qname)
            .unwrap_or_else(|| panic!("A's {qname} TXT: {a_txt:?}"))["ts"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Sensor B sees the TXT record removed on its path (NXDOMAIN): alone it knows nothing...
    let removed = capture("sts-txt-removed");
    let removed = removed.to_str().unwrap();
    let txt_missing = |out: &Path| -> Vec<Value> {
        findings(out)
            .into_iter()
            .filter(|(k, _)| k == "mta-sts-txt-missing")
            .map(|(_, e)| e)
            .collect()
    };
    let alone = work.join("sts-b-alone");
    analyze(removed, &alone, "sensor-b", &b_url, &[]);
    assert!(txt_missing(&alone).is_empty(), "{:?}", findings(&alone));
    // ...with the shared baseline, A's history convicts the removal, naming A and when.
    let shared = work.join("sts-b-shared");
    analyze(removed, &shared, "sensor-b", &b_url, &["--shared-baseline"]);
    let missing = txt_missing(&shared);
    assert_eq!(missing.len(), 1, "{:?}", findings(&shared));
    let e = &missing[0];
    assert_eq!(e["source"], "baseline", "{e}");
    assert_eq!(e["domain"], "swcap.test", "{e}");
    assert_eq!(
        e["published_ids"],
        serde_json::json!(["20261207T0850"]),
        "{e}"
    );
    assert_eq!(e["seen_by_sensor"], "sensor-a", "{e}");
    assert_eq!(
        e["seen_by_sensor_at"].as_str().unwrap(),
        a_ts("_mta-sts.swcap.test"),
        "{e}"
    );
    let b_sessions = ndjson(&shared.join("sessions.ndjson"));
    let txt_record = ndjson(&shared.join("dns.ndjson"))
        .into_iter()
        .find(|d| d["qname"] == "_mta-sts.swcap.test")
        .expect("B's TXT transaction");
    let finding_id = format!("{}-4", txt_record["transaction_id"].as_str().unwrap());
    assert!(
        b_sessions[0]["dns_finding_ids"]
            .as_array()
            .unwrap()
            .contains(&finding_id.into()),
        "{}",
        b_sessions[0]
    );
    // Sensor B sees a stripped delivery to testing.swcap.test whose TXT lookup it did not
    // capture (the same capture with the `_mta-sts` packets cut out): only A's history says the
    // domain publishes a policy, so `mta-sts-plaintext` rests on the shared baseline.
    let no_txt = work.join("sts-testing-no-txt.pcap");
    drop_packets_containing(testing, &no_txt, b"\x08_mta-sts");
    let no_txt = no_txt.to_str().unwrap();
    let plaintext = |out: &Path| -> Vec<Value> {
        findings(out)
            .into_iter()
            .filter(|(k, _)| k == "mta-sts-plaintext")
            .map(|(_, e)| e)
            .collect()
    };
    let alone = work.join("sts-b-plain-alone");
    analyze(no_txt, &alone, "sensor-b", &b_url, &[]);
    let s = &ndjson(&alone.join("sessions.ndjson"))[0];
    assert_eq!(s["recipient_domain"], "testing.swcap.test", "{s}");
    assert_eq!(s["sts_txt"], Value::Null, "{s}");
    assert!(plaintext(&alone).is_empty(), "{:?}", findings(&alone));
    let shared = work.join("sts-b-plain-shared");
    analyze(no_txt, &shared, "sensor-b", &b_url, &["--shared-baseline"]);
    let p = plaintext(&shared);
    assert_eq!(p.len(), 1, "{:?}", findings(&shared));
    let e = &p[0];
    assert_eq!(e["source"], "baseline", "{e}");
    assert_eq!(e["published_ids"], serde_json::json!(["testing1"]), "{e}");
    assert_eq!(e["seen_by_sensor"], "sensor-a", "{e}");
    assert_eq!(
        e["seen_by_sensor_at"].as_str().unwrap(),
        a_ts("_mta-sts.testing.swcap.test"),
        "{e}"
    );

    // Bad use: one line, non-zero status.
    let o = run(&[
        "analyze",
        deleted.to_str().unwrap(),
        "--out",
        work.join("bad").to_str().unwrap(),
        "--shared-baseline",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("required"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// Copies the classic pcap `from` to `to` without the packets whose bytes contain `needle`.
fn drop_packets_containing(from: &str, to: &Path, needle: &[u8]) {
    let data = std::fs::read(from).unwrap();
    assert_eq!(
        &data[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "a little-endian pcap"
    );
    let mut out = data[..24].to_vec();
    let (mut at, mut dropped) = (24, 0);
    while at + 16 <= data.len() {
        let caplen = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        let record = &data[at..at + 16 + caplen];
        if record[16..].windows(needle.len()).any(|w| w == needle) {
            dropped += 1;
        } else {
            out.extend_from_slice(record);
        }
        at += 16 + caplen;
    }
    assert!(dropped >= 2, "the TXT query and answer were cut out");
    std::fs::write(to, out).unwrap();
}
