//! ClickHouse end to end, against a real server started by the test (Debian's 18.16 here, any
//! release elsewhere) and against a current release embedded in Python (chdb): the schema
//! applies (twice), every record of the bundled captures arrives with every field equal to the
//! ndjson files, a server killed in the middle of an ingest loses nothing and counts nothing
//! twice, a spool left by one run is replayed by the next, and a full spool is counted and
//! fails the run.

mod common;

use common::clickhouse::{ClickHouse, WRITER_PASSWORD, WRITER_USER, free_port};
use common::{bin, ndjson, root, tempdir};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs stripwatch as the password-protected writer user: the user in the environment, the
/// password in a file (never on the command line).
fn stripwatch(ch: &ClickHouse, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .arg("--clickhouse-password-file")
        .arg(ch.password_file())
        .env("STRIPWATCH_CLICKHOUSE_USER", WRITER_USER)
        .env_remove("STRIPWATCH_CLICKHOUSE_PASSWORD")
        .output()
        .expect("run stripwatch")
}

fn apply_schema(ch: &ClickHouse, database: &str) {
    let o = stripwatch(
        ch,
        &[
            "schema",
            "apply",
            "--clickhouse",
            &ch.url(),
            "--clickhouse-database",
            database,
        ],
    );
    assert!(
        o.status.success(),
        "schema apply failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn analyze_into(ch: &ClickHouse, captures: &[PathBuf], out: &Path, extra: &[&str]) -> Value {
    let mut args: Vec<String> = vec!["analyze".into()];
    args.extend(captures.iter().map(|p| p.display().to_string()));
    for a in [
        "--out",
        &out.display().to_string(),
        "--json",
        "--clickhouse",
    ] {
        args.push(a.to_string());
    }
    args.push(ch.url());
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = stripwatch(ch, &refs);
    assert!(
        o.status.success(),
        "stripwatch {refs:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("summary is JSON")
}

/// The tables, their ndjson files and their id columns.
const TABLES: [(&str, &str); 4] = [
    ("sessions", "session_id"),
    ("findings", "finding_id"),
    ("dns", "transaction_id"),
    ("certificates", "fingerprint"),
];

/// Distinct ids of a table as ClickHouse has them after deduplication (FINAL).
fn ch_ids(ch: &ClickHouse, db: &str, table: &str, id: &str) -> BTreeSet<String> {
    ch.query(&format!("SELECT {id} FROM {db}.{table} FINAL"))
        .lines()
        .map(String::from)
        .collect()
}

fn ndjson_ids(out: &Path, table: &str, id: &str) -> BTreeSet<String> {
    ndjson(&out.join(format!("{table}.ndjson")))
        .iter()
        .map(|r| r[id].as_str().expect("id is a string").to_string())
        .collect()
}

/// Every id in the ndjson files is in ClickHouse exactly once, and nothing else is; the
/// rollups count each event once.
fn assert_exactly_once(ch: &ClickHouse, db: &str, out: &Path) {
    for (table, id) in TABLES {
        let want = ndjson_ids(out, table, id);
        let got = ch_ids(ch, db, table, id);
        let rows = ch.count(&format!("SELECT count() FROM {db}.{table} FINAL"));
        assert_eq!(
            rows,
            got.len() as u64,
            "{table}: FINAL still has duplicate ids"
        );
        let missing: Vec<_> = want.difference(&got).take(5).collect();
        let extra: Vec<_> = got.difference(&want).take(5).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{table}: {} ids missing in ClickHouse (e.g. {missing:?}), {} unexpected (e.g. {extra:?})",
            want.difference(&got).count(),
            got.difference(&want).count()
        );
    }
    // Rollups: per verdict and per kind, the same numbers as the files.
    let mut verdicts = BTreeMap::<String, u64>::new();
    let mut seen = BTreeSet::new();
    for s in ndjson(&out.join("sessions.ndjson")) {
        if seen.insert(s["session_id"].as_str().unwrap().to_string()) {
            *verdicts
                .entry(s["verdict"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    let got: BTreeMap<String, u64> = ch
        .rows(&format!(
            "SELECT verdict, uniqExactMerge(sessions) FROM {db}.sessions_daily GROUP BY verdict"
        ))
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect();
    assert_eq!(got, verdicts, "sessions_daily per verdict");
    let mut kinds = BTreeMap::<String, u64>::new();
    let mut seen = BTreeSet::new();
    for f in ndjson(&out.join("findings.ndjson")) {
        if seen.insert(f["finding_id"].as_str().unwrap().to_string()) {
            *kinds
                .entry(f["kind"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    let got: BTreeMap<String, u64> = ch
        .rows(&format!(
            "SELECT kind, uniqExactMerge(findings) FROM {db}.findings_daily GROUP BY kind"
        ))
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect();
    assert_eq!(got, kinds, "findings_daily per kind");
}

/// A ClickHouse JSONEachRow row in the ndjson shape: `X` + `X_usec` back to RFC 3339 with
/// microseconds, Nested columns (`answers.name`, ...) back to lists of objects.
fn ch_to_json(row: &Value) -> Map<String, Value> {
    let obj = row.as_object().expect("row object");
    let mut out = Map::new();
    let mut nested: BTreeMap<String, Vec<(String, Vec<Value>)>> = BTreeMap::new();
    for (k, v) in obj {
        if k.ends_with("_usec") {
            continue;
        }
        if let Some((parent, child)) = k.split_once('.') {
            nested
                .entry(parent.to_string())
                .or_default()
                .push((child.to_string(), v.as_array().cloned().unwrap_or_default()));
            continue;
        }
        let is_datetime = v
            .as_str()
            .is_some_and(|s| s.len() == 19 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b' ');
        if is_datetime {
            let usec = obj
                .get(&format!("{k}_usec"))
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let s = v.as_str().unwrap().replace(' ', "T");
            out.insert(k.clone(), Value::String(format!("{s}.{usec:06}Z")));
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    for (parent, cols) in nested {
        let n = cols.first().map_or(0, |c| c.1.len());
        let list: Vec<Value> = (0..n)
            .map(|i| {
                Value::Object(
                    cols.iter()
                        .map(|(name, vals)| (name.clone(), vals[i].clone()))
                        .collect(),
                )
            })
            .collect();
        out.insert(parent, Value::Array(list));
    }
    out
}

/// ndjson value `a` and ClickHouse value `b` say the same thing (booleans are UInt8, 64-bit
/// numbers come quoted, JSON evidence is a String column).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Bool(x), Value::Number(n)) => n.as_u64() == Some(*x as u64),
        (Value::Number(x), Value::String(s)) => s.parse::<f64>().ok() == x.as_f64(),
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Object(_), Value::String(s)) => {
            serde_json::from_str::<Value>(s).is_ok_and(|parsed| same(a, &parsed))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Country and ASN databases (MaxMind layout) for some of the bundled captures' networks, so
/// the six enrichment fields carry real values.
fn geo_databases(dir: &Path) -> (PathBuf, PathBuf) {
    use mmdb_writer::ipnet::IpNet;
    use mmdb_writer::{Value as Mmdb, Writer};
    let nets: [(&str, &str, u32, &str); 5] = [
        ("192.0.2.0/24", "US", 64_496, "Documentation One"),
        ("198.51.100.0/24", "BR", 64_497, "Documentation Two"),
        ("10.77.0.0/16", "DE", 64_501, "Lab Net GmbH"),
        ("10.79.0.0/16", "SE", 64_511, "Lab Receiver AB"),
        ("2001:db8::/32", "JP", 4_200_000_001, "Six KK"),
    ];
    let mut country = Writer::new("GeoLite2-Country");
    let mut asn = Writer::new("GeoLite2-ASN");
    for (net, c, n, org) in nets {
        let net: IpNet = net.parse().unwrap();
        country
            .insert_value(
                net,
                Mmdb::map([("country", Mmdb::map([("iso_code", Mmdb::from(c))]))]),
            )
            .unwrap();
        asn.insert_value(
            net,
            Mmdb::map([
                ("autonomous_system_number", Mmdb::from(n)),
                ("autonomous_system_organization", Mmdb::from(org)),
            ]),
        )
        .unwrap();
    }
    let (c, a) = (dir.join("country.mmdb"), dir.join("asn.mmdb"));
    std::fs::write(&c, country.to_bytes().unwrap()).unwrap();
    std::fs::write(&a, asn.to_bytes().unwrap()).unwrap();
    (c, a)
}

#[test]
fn bundled_captures_arrive_with_every_field_equal_to_the_ndjson_files() {
    let dir = tempdir("ch-bundled");
    let Some(ch) = ClickHouse::start(&dir.join("server")) else {
        return;
    };
    // Applying twice is harmless (IF NOT EXISTS everywhere).
    apply_schema(&ch, "bundled");
    apply_schema(&ch, "bundled");
    let objects =
        ch.query("SELECT name FROM system.tables WHERE database = 'bundled' ORDER BY name");
    assert_eq!(
        objects.lines().collect::<Vec<_>>(),
        [
            "certificates",
            "dns",
            "dns_daily",
            "dns_daily_mv",
            "findings",
            "findings_daily",
            "findings_daily_mv",
            "sessions",
            "sessions_daily",
            "sessions_daily_mv"
        ]
    );
    let mut captures: Vec<PathBuf> = std::fs::read_dir(root().join("pcaps"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.contains(".pcap")
        })
        .collect();
    captures.sort();
    let out = dir.join("out");
    let (country_db, asn_db) = geo_databases(&dir);
    let summary = analyze_into(
        &ch,
        &captures,
        &out,
        &[
            "--clickhouse-database",
            "bundled",
            "--trust-anchors",
            root().join("pcaps/tls-test-root-ca.pem").to_str().unwrap(),
            "--geoip-country",
            country_db.to_str().unwrap(),
            "--geoip-asn",
            asn_db.to_str().unwrap(),
        ],
    );
    let chs = &summary["clickhouse"];
    assert_eq!(chs["state"], "delivered", "{chs}");
    assert_eq!(chs["rows_dropped"], 0);
    assert_exactly_once(&ch, "bundled", &out);
    let mut compared = 0;
    for (table, id) in TABLES {
        let records = ndjson(&out.join(format!("{table}.ndjson")));
        assert!(!records.is_empty(), "the bundled captures have no {table}");
        assert_eq!(
            chs["rows_sent"][table].as_u64(),
            Some(records.len() as u64),
            "rows sent to {table}"
        );
        // The same flow in several encapsulations (gzip, pcapng, VLAN ...) is the same session
        // with the same id; only ids that occur once are compared field by field.
        let mut counts = BTreeMap::<String, usize>::new();
        for r in &records {
            *counts
                .entry(r[id].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        let rows: BTreeMap<String, Map<String, Value>> = ch
            .query(&format!(
                "SELECT * FROM bundled.{table} FINAL FORMAT JSONEachRow"
            ))
            .lines()
            .map(|l| {
                let m = ch_to_json(&serde_json::from_str(l).expect("JSONEachRow"));
                (m[id].as_str().unwrap().to_string(), m)
            })
            .collect();
        for r in &records {
            let key = r[id].as_str().unwrap();
            if counts[key] > 1 {
                continue;
            }
            let row = &rows[key];
            for (field, want) in r.as_object().unwrap() {
                let got = row.get(field).unwrap_or_else(|| {
                    panic!("{table}: the ndjson field {field} has no column in ClickHouse")
                });
                assert!(
                    same(want, got),
                    "{table} {key}: {field} is {want} in the ndjson file, {got} in ClickHouse"
                );
            }
            compared += 1;
        }
    }
    assert!(compared > 100, "only {compared} records compared");
    // The rollups per country and AS of both ends hold the files' numbers.
    let mut want = BTreeMap::<String, u64>::new();
    let mut seen = BTreeSet::new();
    for s in ndjson(&out.join("sessions.ndjson")) {
        if seen.insert(s["session_id"].as_str().unwrap().to_string()) {
            let key = format!(
                "{}/{}/{}/{}",
                s["client_country"].as_str().unwrap(),
                s["client_asn"],
                s["server_country"].as_str().unwrap(),
                s["server_asn"]
            );
            *want.entry(key).or_default() += 1;
        }
    }
    let got: BTreeMap<String, u64> = ch
        .rows(
            "SELECT concat(client_country, '/', toString(client_asn), '/', server_country, '/', \
             toString(server_asn)) AS k, uniqExactMerge(sessions) FROM bundled.sessions_daily \
             GROUP BY k",
        )
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect();
    assert_eq!(got, want, "sessions_daily per country and AS");
    assert!(
        want.keys().any(|k| k.contains("US/64496")) && want.keys().any(|k| k.contains("BR/64497")),
        "the test databases matched nothing: {want:?}"
    );
}

/// The mixed capture the ingest tests share, 20,000 sessions (about 420 MB): made once and
/// kept under target/test-out between runs (the generator is deterministic).
fn mixed_capture() -> PathBuf {
    static CAPTURE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let dir = root().join("target").join("test-out");
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("ch-mixed-20000-11.pcap");
            if !path.exists() {
                let tmp = dir.join(format!("ch-mixed-20000-11.{}.tmp", std::process::id()));
                stripwatch_synth::write_mixed(&tmp, 20_000, 11).unwrap();
                std::fs::rename(&tmp, &path).unwrap();
            }
            path
        })
        .clone()
}

/// Starts `analyze` on the shared capture in the background, writing to `out` as the writer
/// user, in batches of 1,000 rows.
fn spawn_ingest(ch: &ClickHouse, out: &Path) -> std::process::Child {
    Command::new(bin())
        .args([
            "analyze",
            mixed_capture().to_str().unwrap(),
            "--json",
            "--no-progress",
        ])
        .arg("--out")
        .arg(out)
        .args(["--clickhouse", &ch.url(), "--clickhouse-batch-rows", "1000"])
        .arg("--clickhouse-password-file")
        .arg(ch.password_file())
        .env("STRIPWATCH_CLICKHOUSE_USER", WRITER_USER)
        .env_remove("STRIPWATCH_CLICKHOUSE_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start stripwatch analyze")
}

/// Waits until the first batch of sessions is in the server; returns how many rows it has.
fn wait_first_batch(ch: &ClickHouse, child: &mut std::process::Child) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = ch
            .try_query("SELECT count() FROM stripwatch.sessions")
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if n > 0 {
            return n;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the ingest ended before any batch reached the server"
        );
        assert!(Instant::now() < deadline, "no batch arrived within 120 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for the ingest and returns its summary.
fn finish_ingest(child: std::process::Child) -> Value {
    let o = child.wait_with_output().expect("wait for stripwatch");
    assert!(
        o.status.success(),
        "analyze failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("summary JSON")
}

#[test]
fn a_server_killed_during_the_ingest_loses_nothing_and_counts_nothing_twice() {
    let dir = tempdir("ch-kill");
    let Some(mut ch) = ClickHouse::start(&dir.join("server")) else {
        return;
    };
    apply_schema(&ch, "stripwatch");
    let out = dir.join("out");
    let mut child = spawn_ingest(&ch, &out);
    // Kill the server as soon as the first batch has landed.
    let before_kill = wait_first_batch(&ch, &mut child);
    ch.kill();
    std::thread::sleep(Duration::from_millis(1500));
    ch.restart();
    let summary = finish_ingest(child);
    let chs = &summary["clickhouse"];
    let sessions = ndjson(&out.join("sessions.ndjson")).len() as u64;
    assert!(
        before_kill < sessions,
        "the kill came after the whole ingest ({before_kill} of {sessions})"
    );
    assert_eq!(chs["state"], "delivered", "{chs}");
    assert!(chs["insert_errors"].as_u64().unwrap() > 0, "{chs}");
    assert!(chs["rows_spooled"].as_u64().unwrap() > 0, "{chs}");
    assert!(chs["rows_replayed"].as_u64().unwrap() > 0, "{chs}");
    assert_eq!(chs["rows_dropped"], 0, "{chs}");
    assert_eq!(chs["spool_rows_left"], 0, "{chs}");
    assert_exactly_once(&ch, "stripwatch", &out);
    let raw = ch.count("SELECT count() FROM stripwatch.sessions");
    eprintln!(
        "killed after {before_kill} of {sessions} sessions; {} rows spooled and replayed; \
         {} raw session rows before deduplication",
        chs["rows_spooled"], raw
    );
}

#[test]
fn a_stalled_server_makes_the_pipeline_wait_and_loses_nothing() {
    let dir = tempdir("ch-stall");
    let Some(ch) = ClickHouse::start(&dir.join("server")) else {
        return;
    };
    apply_schema(&ch, "stripwatch");
    let out = dir.join("out");
    let mut child = spawn_ingest(&ch, &out);
    wait_first_batch(&ch, &mut child);
    // SIGSTOP: connections are accepted by the kernel but nothing answers, as with an
    // overloaded server. The queue to the writer fills and the pipeline must wait.
    ch.pause();
    std::thread::sleep(Duration::from_secs(3));
    ch.resume();
    let summary = finish_ingest(child);
    let chs = &summary["clickhouse"];
    assert!(chs["queue_full_waits"].as_u64().unwrap() > 0, "{chs}");
    assert_eq!(
        chs["rows_spooled"], 0,
        "a stall shorter than the timeouts spools nothing: {chs}"
    );
    assert_eq!(chs["insert_errors"], 0, "{chs}");
    assert_eq!(chs["state"], "delivered", "{chs}");
    assert_exactly_once(&ch, "stripwatch", &out);
}

#[test]
fn a_spool_left_by_one_run_is_replayed_by_the_next() {
    let dir = tempdir("ch-next-start");
    let Some(ch) = ClickHouse::start(&dir.join("server")) else {
        return;
    };
    apply_schema(&ch, "stripwatch");
    let spool = dir.join("spool");
    let spool_arg = spool.to_str().unwrap().to_string();
    // First run: nothing listens at this address, and the run does not wait at the end.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let out1 = dir.join("out1");
    let o = Command::new(bin())
        .args(["analyze", "--json", "--out", out1.to_str().unwrap()])
        .arg(root().join("pcaps/real-postfix-overwrite.pcap"))
        .arg(root().join("pcaps/dns-mx-delivery.pcap"))
        .args(["--clickhouse", &dead, "--spool", &spool_arg])
        .args(["--clickhouse-drain-timeout", "0"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let first: Value = serde_json::from_slice(&o.stdout).unwrap();
    let c1 = &first["clickhouse"];
    let rows1: u64 = ["sessions", "findings", "dns", "certificates"]
        .iter()
        .map(|t| ndjson(&out1.join(format!("{t}.ndjson"))).len() as u64)
        .sum();
    assert_eq!(c1["state"], "spooled", "{c1}");
    assert_eq!(c1["spool_rows_left"].as_u64(), Some(rows1), "{c1}");
    assert_eq!(c1["rows_spooled"].as_u64(), Some(rows1), "{c1}");
    assert!(c1["last_error"].as_str().is_some(), "{c1}");
    // Second run, other capture, server up: the old spool goes first.
    let out2 = dir.join("out2");
    let second = analyze_into(
        &ch,
        &[root().join("pcaps/real-postfix-starttls-ok.pcap")],
        &out2,
        &["--spool", &spool_arg],
    );
    let c2 = &second["clickhouse"];
    assert_eq!(c2["state"], "delivered", "{c2}");
    assert_eq!(c2["spool_rows_at_start"].as_u64(), Some(rows1), "{c2}");
    assert_eq!(c2["rows_replayed"].as_u64(), Some(rows1), "{c2}");
    for (table, id) in TABLES {
        let mut want = ndjson_ids(&out1, table, id);
        want.extend(ndjson_ids(&out2, table, id));
        assert_eq!(ch_ids(&ch, "stripwatch", table, id), want, "{table}");
    }
    let left = std::fs::read_dir(&spool)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".zst")
        })
        .count();
    assert_eq!(left, 0, "spool files left behind");
}

#[test]
fn a_full_spool_is_counted_and_fails_the_run() {
    let dir = tempdir("ch-spool-full");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let out = dir.join("out");
    let o = Command::new(bin())
        .args(["analyze", "--json", "--out", out.to_str().unwrap()])
        .arg(root().join("pcaps/real-postfix-overwrite.pcap"))
        .args(["--clickhouse", &dead, "--spool-max-bytes", "64"])
        .args(["--clickhouse-drain-timeout", "0"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "a dropped row must fail the run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("rows were dropped"), "{err}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let c = &summary["clickhouse"];
    let rows: u64 = ["sessions", "findings", "dns", "certificates"]
        .iter()
        .map(|t| ndjson(&out.join(format!("{t}.ndjson"))).len() as u64)
        .sum();
    assert!(rows > 0);
    assert_eq!(c["rows_dropped"].as_u64(), Some(rows), "{c}");
    assert_eq!(c["state"], "rows-dropped");
}

#[test]
fn bad_credentials_or_a_missing_schema_stop_the_run_before_it_starts() {
    let dir = tempdir("ch-refused");
    let Some(ch) = ClickHouse::start(&dir.join("server")) else {
        return;
    };
    let capture = root().join("pcaps/real-postfix-overwrite.pcap");
    let cap = capture.to_str().unwrap();
    let out = dir.join("out");
    let o = stripwatch(
        &ch,
        &[
            "analyze",
            cap,
            "--out",
            out.to_str().unwrap(),
            "--clickhouse",
            &ch.url(),
        ],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("schema apply"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // A wrong password (from the environment this time) is refused, and never printed.
    apply_schema(&ch, "stripwatch");
    let o = Command::new(bin())
        .args([
            "analyze",
            cap,
            "--out",
            out.to_str().unwrap(),
            "--clickhouse",
            &ch.url(),
        ])
        .env("STRIPWATCH_CLICKHOUSE_USER", WRITER_USER)
        .env("STRIPWATCH_CLICKHOUSE_PASSWORD", "not-the-password")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("not-the-password"), "{err}");
    // The right one from the environment works.
    let o = Command::new(bin())
        .args([
            "analyze",
            cap,
            "--out",
            out.to_str().unwrap(),
            "--clickhouse",
            &ch.url(),
        ])
        .env("STRIPWATCH_CLICKHOUSE_USER", WRITER_USER)
        .env("STRIPWATCH_CLICKHOUSE_PASSWORD", WRITER_PASSWORD)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A password in the URL is refused before anything happens.
    let url = format!(
        "http://{WRITER_USER}:{WRITER_PASSWORD}@127.0.0.1:{}",
        ch.http_port
    );
    let o = common::run(&["schema", "apply", "--clickhouse", &url]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("password in the URL"));
}

/// The Python program that applies queries/schema.sql to a current ClickHouse (chdb), twice,
/// and checks that duplicate rows collapse and the rollups count ids once.
const CHDB_SCRIPT: &str = r#"
import sys, tempfile
try:
    from chdb import session
except ImportError as e:
    print("chdb is not installed (pip install chdb-core): %s" % e)
    sys.exit(3)
sql = open(sys.argv[1]).read()
stmts = [s.strip() for s in "\n".join(l.split("--")[0] for l in sql.splitlines()).split(";")]
stmts = [s for s in stmts if s]
s = session.Session(tempfile.mkdtemp())
s.query("CREATE DATABASE IF NOT EXISTS stripwatch")
s.query("USE stripwatch")
for _ in range(2):
    for st in stmts:
        s.query(st)
for _ in range(2):
    s.query("INSERT INTO sessions (session_id, ts, verdict, client_ip, server_ip) "
            "VALUES ('S1', 1772445600, 'plaintext', '192.0.2.1', '198.51.100.1')")
    s.query("INSERT INTO findings (finding_id, kind, ts, evidence) "
            "VALUES ('S1-0', 'starttls-stripped', 1772445600, '{}')")
    s.query("INSERT INTO dns (transaction_id, ts, qname, qtype, answers.name, answers.rtype, "
            "answers.ttl, answers.data) VALUES ('D1', 1772445600, 'example.net', 'MX', "
            "['example.net'], ['MX'], [300], ['10 mx.example.net.'])")
    s.query("INSERT INTO certificates (fingerprint, first_seen) VALUES ('ab', 1772445600)")
def one(q):
    return s.query(q, "CSV").bytes().decode().strip()
checks = {
    "sessions FINAL": one("SELECT count() FROM sessions FINAL"),
    "findings FINAL": one("SELECT count() FROM findings FINAL"),
    "dns FINAL": one("SELECT count() FROM dns FINAL"),
    "certificates FINAL": one("SELECT count() FROM certificates FINAL"),
    "sessions_daily": one("SELECT uniqExactMerge(sessions) FROM sessions_daily"),
    "findings_daily": one("SELECT uniqExactMerge(findings) FROM findings_daily"),
    "dns_daily": one("SELECT uniqExactMerge(transactions) FROM dns_daily"),
}
bad = {k: v for k, v in checks.items() if v != "1"}
if bad:
    print("wrong counts on %s: %s" % (one("SELECT version()"), bad))
    sys.exit(1)
print("ok", one("SELECT version()"), len(stmts))
"#;

#[test]
fn the_schema_runs_on_a_current_clickhouse_too() {
    if std::env::var("STRIPWATCH_SKIP_CHDB").is_ok_and(|v| v == "1") {
        eprintln!("STRIPWATCH_SKIP_CHDB=1: skipping the chdb check");
        return;
    }
    let o = Command::new("python3")
        .arg("-c")
        .arg(CHDB_SCRIPT)
        .arg(root().join("queries/schema.sql"))
        .output()
        .unwrap_or_else(|e| {
            panic!("python3 is needed for the chdb check ({e}); set STRIPWATCH_SKIP_CHDB=1 to skip")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success(),
        "schema on current ClickHouse (chdb) failed; install it with \
         `pip install chdb-core` or set STRIPWATCH_SKIP_CHDB=1:\n{text}"
    );
    assert!(text.starts_with("ok "), "{text}");
    eprintln!("{}", text.trim());
}

#[test]
fn the_same_events_sent_twice_count_once() {
    // What a replay does when the server stored a batch but died before saying so: the rows
    // arrive again. Raw tables hold them twice until a merge; FINAL and the rollups must not.
    let dir = tempdir("ch-twice");
    let Some(ch) = ClickHouse::start(&dir.join("server")) else {
        return;
    };
    apply_schema(&ch, "stripwatch");
    let captures = [
        root().join("pcaps/real-postfix-overwrite.pcap"),
        root().join("pcaps/dns-mx-delivery.pcap"),
        root().join("pcaps/tls-self-signed.pcap"),
    ];
    let mut sent = 0;
    for run in ["out1", "out2"] {
        let s = analyze_into(&ch, &captures, &dir.join(run), &[]);
        sent += s["clickhouse"]["rows_sent"]["sessions"].as_u64().unwrap();
    }
    let sessions = ndjson(&dir.join("out1/sessions.ndjson")).len() as u64;
    assert_eq!(sent, 2 * sessions, "both runs sent every session");
    assert_exactly_once(&ch, "stripwatch", &dir.join("out1"));
    assert_exactly_once(&ch, "stripwatch", &dir.join("out2"));
}

#[test]
fn https_with_a_private_ca_works_and_an_untrusted_certificate_stops_the_run() {
    let dir = tempdir("ch-https");
    let Some(ch) = ClickHouse::start_with(&dir.join("server"), true) else {
        return;
    };
    let url = ch.https_url();
    // The server's certificate comes from a test CA: trusted through SSL_CERT_FILE (as an
    // operator's private CA in the system store would be).
    let with_ca = |args: &[&str]| {
        Command::new(bin())
            .args(args)
            .env("SSL_CERT_FILE", ch.ca_file())
            .output()
            .unwrap()
    };
    let o = with_ca(&["schema", "apply", "--clickhouse", &url]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let capture = root().join("pcaps/real-postfix-overwrite.pcap");
    let out = dir.join("out");
    let o = with_ca(&[
        "analyze",
        capture.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
        "--clickhouse",
        &url,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["clickhouse"]["state"], "delivered");
    assert_exactly_once(&ch, "stripwatch", &out);
    // Without the CA the certificate is not trusted: a configuration error, not an outage.
    let o = Command::new(bin())
        .args(["analyze", capture.to_str().unwrap(), "--out"])
        .arg(dir.join("out2"))
        .args(["--clickhouse", &url])
        .env("SSL_CERT_FILE", root().join("pcaps/tls-test-root-ca.pem"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("certificate"), "{err}");
}

#[test]
fn a_signal_ends_the_wait_for_an_absent_server_and_keeps_the_spool() {
    let dir = tempdir("ch-signal");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let out = dir.join("out");
    let started = Instant::now();
    let child = Command::new(bin())
        .args(["analyze", "--json", "--out", out.to_str().unwrap()])
        .arg(root().join("pcaps/real-postfix-overwrite.pcap"))
        .args(["--clickhouse", &dead, "--clickhouse-drain-timeout", "600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The capture takes milliseconds; after that the run waits for the server to come back.
    std::thread::sleep(Duration::from_millis(1500));
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -INT failed");
    let o = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the run kept waiting after the signal"
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    let c = &summary["clickhouse"];
    assert_eq!(c["state"], "spooled", "{c}");
    assert!(c["spool_rows_left"].as_u64().unwrap() > 0, "{c}");
    assert_eq!(c["rows_dropped"], 0, "{c}");
}
