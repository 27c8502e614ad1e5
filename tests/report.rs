//! Reports end to end, with the real binary: the numbers equal what a plain count of the
//! session records gives (and the verdicts the bundled captures are known to have), every
//! format is written, `--since`/`--until` cut the window, TLS-RPT files carry RFC 8460's
//! required fields, the HTML page renders in headless Chromium with its charts, and ClickHouse
//! gives the same tables byte for byte as the embedded aggregation.

mod common;

use common::clickhouse::ClickHouse;
use common::{analyze, ndjson, report_files, root, run, tempdir};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The capture file of a bundled scenario (`NAME.pcap`, `.pcapng`, `.pcap.gz`, `.pcap.zst`).
fn capture_of(name: &str) -> PathBuf {
    for ext in ["pcap", "pcapng", "pcap.gz", "pcap.zst"] {
        let p = root().join("pcaps").join(format!("{name}.{ext}"));
        if p.is_file() {
            return p;
        }
    }
    panic!("no capture for {name}");
}

/// The report query files of `queries/` (every `.sql` but the schema): one CSV file each.
fn query_files() -> usize {
    std::fs::read_dir(root().join("queries"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|f| f.ends_with(".sql") && f != "schema.sql")
        .count()
}

/// A CSV table as rows of column → value.
fn csv_table(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            header
                .iter()
                .cloned()
                .zip(rec.iter().map(String::from))
                .collect()
        })
        .collect()
}

fn num(row: &BTreeMap<String, String>, col: &str) -> u64 {
    row[col]
        .parse()
        .unwrap_or_else(|_| panic!("{col}: {:?}", row[col]))
}

/// Counts made directly from `sessions.ndjson`, following the definitions in the README, not the
/// report code.
#[derive(Default, Debug, PartialEq, Clone)]
struct Plain {
    sessions: u64,
    ehlo: u64,
    stripped: u64,
    downgraded: u64,
    offered: u64,
    tls_used: u64,
    problem: u64,
    verdicts: BTreeMap<String, u64>,
    kinds: BTreeMap<String, u64>,
}

fn plain_counts(sessions: &[Value]) -> Plain {
    let mut p = Plain::default();
    for s in sessions {
        p.sessions += 1;
        let verdict = s["verdict"].as_str().unwrap().to_string();
        let findings: Vec<&str> = s["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        let ehlo = s["greeting_verb"] == "EHLO" && !s["ehlo_reply_code"].is_null();
        if ehlo {
            p.ehlo += 1;
            if findings
                .iter()
                .any(|k| *k == "starttls-stripped" || *k == "starttls-missing")
            {
                p.stripped += 1;
            }
            if findings.iter().any(|k| {
                matches!(
                    *k,
                    "starttls-stripped"
                        | "starttls-missing"
                        | "starttls-command-rejected"
                        | "tls-handshake-failed"
                        | "plaintext-fallback"
                        | "cleartext-after-starttls"
                        | "dane-required"
                )
            }) {
                p.downgraded += 1;
            }
            if s["starttls_offered"] == true {
                p.offered += 1;
                if s["tls_handshake_completed"] == true {
                    p.tls_used += 1;
                }
            }
        }
        if !matches!(
            verdict.as_str(),
            "tls-ok" | "plaintext" | "incomplete" | "certificate-not-observable"
        ) {
            p.problem += 1;
        }
        *p.verdicts.entry(verdict).or_default() += 1;
        let mut unique = findings.clone();
        unique.sort();
        unique.dedup();
        for k in unique {
            *p.kinds.entry(k.to_string()).or_default() += 1;
        }
    }
    p
}

/// The same counts read back from a report's CSV tables.
fn report_counts(csv_dir: &Path) -> Plain {
    let totals = &csv_table(&csv_dir.join("totals.csv"))[0];
    let mut p = Plain {
        sessions: num(totals, "sessions"),
        ehlo: num(totals, "ehlo_sessions"),
        stripped: num(totals, "stripped"),
        downgraded: num(totals, "downgraded"),
        offered: num(totals, "starttls_offered"),
        tls_used: num(totals, "tls_used"),
        problem: num(totals, "problem_sessions"),
        ..Plain::default()
    };
    for row in csv_table(&csv_dir.join("verdicts_by_day.csv")) {
        *p.verdicts.entry(row["verdict"].clone()).or_default() += num(&row, "sessions");
    }
    for row in csv_table(&csv_dir.join("findings_by_kind.csv")) {
        p.kinds.insert(row["kind"].clone(), num(&row, "sessions"));
    }
    p
}

#[test]
fn bundled_captures_give_report_counts_equal_to_counting_their_sessions() {
    let mut names: Vec<String> = std::fs::read_dir(root().join("pcaps"))
        .unwrap()
        .filter_map(|e| {
            let f = e.unwrap().file_name().to_string_lossy().to_string();
            f.strip_suffix(".expected.json").map(String::from)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 50, "bundled captures missing");
    let mut all = Plain::default();
    for name in &names {
        let out = tempdir(&format!("report-bundled-{name}"));
        analyze(&[&capture_of(name)], &out, &[]);
        let sessions = ndjson(&out.join("sessions.ndjson"));
        let plain = plain_counts(&sessions);
        let reported = report_counts(&out.join("csv"));
        assert_eq!(reported, plain, "{name}: report differs from a plain count");
        // The verdicts the capture is known to have.
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(root().join(format!("pcaps/{name}.expected.json"))).unwrap(),
        )
        .unwrap();
        let mut known = BTreeMap::<String, u64>::new();
        for s in expected["sessions"].as_array().unwrap() {
            *known
                .entry(s["verdict"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        assert_eq!(reported.verdicts, known, "{name}: verdicts");
        // The stripping rate is the quotient of the two counts, in every file.
        let totals = &csv_table(&out.join("csv/totals.csv"))[0];
        let rate: f64 = totals["stripping_rate"].parse().unwrap();
        let want = if plain.ehlo == 0 {
            0.0
        } else {
            plain.stripped as f64 / plain.ehlo as f64
        };
        assert!((rate - want).abs() < 1e-6, "{name}: rate {rate} vs {want}");
        all.sessions += plain.sessions;
        all.stripped += plain.stripped;
        all.downgraded += plain.downgraded;
        all.tls_used += plain.tls_used;
        for (v, n) in plain.verdicts {
            *all.verdicts.entry(v).or_default() += n;
        }
    }
    // Not vacuous: the captures cover stripping, downgrades, TLS and many verdicts.
    assert!(all.stripped >= 8, "{all:?}");
    assert!(all.downgraded > all.stripped, "{all:?}");
    assert!(all.tls_used >= 20, "{all:?}");
    assert!(all.verdicts.len() >= 10, "{all:?}");
}

/// `analyze` aggregates its report while it writes the records; `report DIR` reads them back.
/// Over every bundled capture in one run (sessions and DNS records of every kind, enrichment
/// off), the two give the same files byte for byte.
#[test]
fn the_report_after_analyze_equals_reading_its_records_back() {
    let mut captures: Vec<PathBuf> = std::fs::read_dir(root().join("pcaps"))
        .unwrap()
        .filter_map(|e| {
            let f = e.unwrap().file_name().to_string_lossy().to_string();
            f.strip_suffix(".expected.json").map(capture_of)
        })
        .collect();
    captures.sort();
    let refs: Vec<&Path> = captures.iter().map(PathBuf::as_path).collect();
    let dir = tempdir("report-aggregated");
    analyze(&refs, &dir, &[]);
    assert!(
        ndjson(&dir.join("dns.ndjson")).len() >= 10,
        "too few DNS records for the comparison to mean much"
    );
    let back = tempdir("report-read-back");
    let o = run(&[
        "report",
        dir.to_str().unwrap(),
        "--out",
        back.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let aggregated = report_files(&dir);
    assert!(aggregated.len() >= 5, "{:?}", aggregated.keys());
    assert_eq!(
        aggregated.keys().collect::<Vec<_>>(),
        report_files(&back).keys().collect::<Vec<_>>()
    );
    for (name, bytes) in report_files(&back) {
        assert!(
            aggregated[&name] == bytes,
            "{name} differs:\n{}\n---\n{}",
            String::from_utf8_lossy(&aggregated[&name]),
            String::from_utf8_lossy(&bytes)
        );
    }
    for f in ["report.md", "report.html"] {
        assert_eq!(
            std::fs::read_to_string(dir.join(f)).unwrap(),
            std::fs::read_to_string(back.join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn report_dir_writes_every_format_and_the_window_cuts_by_day() {
    let dir = tempdir("report-formats");
    // Two days: the generated scenarios are on 2026-03-02, the real Postfix captures later.
    let clean = capture_of("clean-starttls");
    let overwrite = capture_of("real-postfix-overwrite");
    let delete = capture_of("real-postfix-delete");
    analyze(&[&clean, &overwrite, &delete], &dir, &["--no-report"]);
    assert!(
        !dir.join("report.html").exists(),
        "--no-report wrote a report"
    );
    assert!(!dir.join("csv").exists());
    let sessions = ndjson(&dir.join("sessions.ndjson"));
    let days: std::collections::BTreeSet<String> = sessions
        .iter()
        .map(|s| s["ts"].as_str().unwrap()[..10].to_string())
        .collect();
    assert_eq!(days.len(), 2, "{days:?}");
    let first = days.iter().next().unwrap().clone();
    let last = days.iter().last().unwrap().clone();

    let out = tempdir("report-formats-out");
    let o = run(&[
        "report",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let plain = plain_counts(&sessions);
    assert!(
        text.contains(&format!(
            "sessions {}  EHLO sessions {}",
            plain.sessions, plain.ehlo
        )),
        "{text}"
    );
    assert!(text.contains("stripping rate"), "{text}");
    for f in ["report.md", "report.html"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let csvs = std::fs::read_dir(out.join("csv")).unwrap().count();
    assert_eq!(csvs, query_files(), "one CSV file per query file");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Definitions") && md.contains("**Stripping rate**"));
    assert!(md.contains(&format!("| {first} |")) && md.contains(&format!("| {last} |")));
    assert_eq!(report_counts(&out.join("csv")), plain);

    // --since the last day keeps only its sessions; --until the first day (a date: that day
    // included) only the first day's.
    let on_day = |day: &str| -> Vec<Value> {
        sessions
            .iter()
            .filter(|s| s["ts"].as_str().unwrap().starts_with(day))
            .cloned()
            .collect()
    };
    for (flag, day) in [("--since", &last), ("--until", &first)] {
        let w = tempdir(&format!("report-window{flag}"));
        let o = run(&[
            "report",
            dir.to_str().unwrap(),
            "--out",
            w.to_str().unwrap(),
            "--format",
            "csv",
            flag,
            day,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(o.stdout.is_empty(), "csv only: nothing on the terminal");
        let got = report_counts(&w.join("csv"));
        assert_eq!(got, plain_counts(&on_day(day)), "{flag} {day}");
        assert!(got.sessions > 0 && got.sessions < plain.sessions);
        let by_day = csv_table(&w.join("csv/by_day.csv"));
        assert_eq!(by_day.len(), 1);
        assert_eq!(&by_day[0]["day"], day);
    }
    // An RFC 3339 bound with a time cuts inside a day.
    let stripped = sessions
        .iter()
        .find(|s| s["verdict"] == "starttls-stripped")
        .expect("the overwrite capture has a stripped session");
    let ts = stripped["ts"].as_str().unwrap();
    let second = format!("{}Z", &ts[..19]);
    let w = tempdir("report-window-rfc3339");
    let o = run(&[
        "report",
        dir.to_str().unwrap(),
        "--out",
        w.to_str().unwrap(),
        "--format",
        "csv",
        "--until",
        &second,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before: Vec<Value> = sessions
        .iter()
        .filter(|s| s["ts"].as_str().unwrap()[..19] < ts[..19])
        .cloned()
        .collect();
    assert_eq!(report_counts(&w.join("csv")), plain_counts(&before));

    // Bad input: one line, non-zero exit.
    for args in [
        vec!["report", dir.to_str().unwrap(), "--since", "yesterday"],
        vec![
            "report",
            dir.to_str().unwrap(),
            "--since",
            "2026-03-03",
            "--until",
            "2026-03-02",
        ],
        vec!["report", "/nonexistent/stripwatch-dir"],
        vec!["report", dir.to_str().unwrap(), "--format", "pdf"],
        vec!["report"],
    ] {
        let o = run(&args);
        assert!(!o.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}

/// A pcap of `a`'s packets followed by `b`'s, `b` shifted by `shift_s` seconds: a linked DNS
/// lookup and a stripped session by the same client (both captures from the generator, same
/// link type).
fn merged_pcap(a: &Path, b: &Path, shift_s: u32, out: &Path) -> PathBuf {
    let read = |p: &Path| std::fs::read(p).unwrap();
    let (ra, rb) = (read(a), read(b));
    assert_eq!(&ra[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian µs pcap");
    assert_eq!(ra[20..24], rb[20..24], "same link type");
    let mut merged = ra.clone();
    let mut i = 24;
    while i + 16 <= rb.len() {
        let mut rec = rb[i..i + 16].to_vec();
        let sec = u32::from_le_bytes(rec[0..4].try_into().unwrap()) + shift_s;
        rec[0..4].copy_from_slice(&sec.to_le_bytes());
        let len = u32::from_le_bytes(rb[i + 8..i + 12].try_into().unwrap()) as usize;
        merged.extend_from_slice(&rec);
        merged.extend_from_slice(&rb[i + 16..i + 16 + len]);
        i += 16 + len;
    }
    let path = out.join("linked-then-stripped.pcap");
    std::fs::write(&path, merged).unwrap();
    path
}

/// The result types RFC 8460 (section 4.3) defines.
const RFC8460_RESULT_TYPES: [&str; 11] = [
    "starttls-not-supported",
    "certificate-host-mismatch",
    "certificate-expired",
    "certificate-not-trusted",
    "validation-failure",
    "tlsa-invalid",
    "dnssec-invalid",
    "dane-required",
    "sts-policy-fetch-error",
    "sts-policy-invalid",
    "sts-webpki-invalid",
];

/// Checks one TLS-RPT report against RFC 8460's required fields and types; returns it.
fn check_rfc8460(path: &Path) -> Value {
    let r: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let name = path.display();
    for f in ["organization-name", "contact-info", "report-id"] {
        assert!(
            r[f].as_str().is_some_and(|s| !s.is_empty()),
            "{name}: {f} missing"
        );
    }
    let start = r["date-range"]["start-datetime"].as_str().expect("start");
    let end = r["date-range"]["end-datetime"].as_str().expect("end");
    let parse = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{name}: {t}: {e}"))
    };
    assert!(parse(start) < parse(end), "{name}: date range");
    let policies = r["policies"].as_array().expect("policies");
    assert!(!policies.is_empty());
    for p in policies {
        let t = p["policy"]["policy-type"].as_str().unwrap();
        assert!(["tlsa", "sts", "no-policy-found"].contains(&t), "{t}");
        assert!(p["policy"]["policy-domain"].as_str().is_some());
        if let Some(mx) = p["policy"].get("mx-host") {
            assert!(mx.as_array().unwrap().iter().all(|h| h.is_string()));
        }
        assert!(p["summary"]["total-successful-session-count"].is_u64());
        assert!(p["summary"]["total-failure-session-count"].is_u64());
        let mut failed = 0;
        for d in p["failure-details"].as_array().into_iter().flatten() {
            let rt = d["result-type"].as_str().unwrap();
            assert!(RFC8460_RESULT_TYPES.contains(&rt), "{rt}");
            failed += d["failed-session-count"].as_u64().expect("count");
            for ip in ["sending-mta-ip", "receiving-ip"] {
                d[ip]
                    .as_str()
                    .unwrap()
                    .parse::<std::net::IpAddr>()
                    .unwrap_or_else(|_| panic!("{name}: {ip}"));
            }
        }
        assert_eq!(
            failed,
            p["summary"]["total-failure-session-count"]
                .as_u64()
                .unwrap(),
            "{name}: failure details add up to the failure count"
        );
    }
    r
}

#[test]
fn tlsrpt_reports_carry_rfc_8460_fields_and_the_right_counts() {
    let work = tempdir("report-tlsrpt");
    let merged = merged_pcap(
        &capture_of("dns-mx-linked"),
        &capture_of("stripped-xxxxxxxa"),
        60,
        &work,
    );
    let out = work.join("linked");
    analyze(&[&merged], &out, &[]);
    let sessions = ndjson(&out.join("sessions.ndjson"));
    let linked: Vec<&Value> = sessions
        .iter()
        .filter(|s| s["recipient_domain"] == "example.net")
        .collect();
    assert_eq!(
        linked.len(),
        2,
        "both sessions follow the lookup: {sessions:?}"
    );
    let r = check_rfc8460(&out.join("tlsrpt/example.net.json"));
    let p = &r["policies"][0];
    assert_eq!(p["policy"]["policy-type"], "no-policy-found");
    assert_eq!(p["policy"]["policy-domain"], "example.net");
    assert_eq!(p["policy"]["mx-host"][0], "mx.example.net");
    // Independently: a session fails when it has a finding with an RFC 8460 result type.
    let failing = |s: &Value| {
        s["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k != "certificate-not-observable")
    };
    let failed = linked.iter().filter(|s| failing(s)).count() as u64;
    let ok = linked
        .iter()
        .filter(|s| !failing(s) && s["tls_handshake_completed"] == true)
        .count() as u64;
    assert_eq!((ok, failed), (1, 1));
    assert_eq!(p["summary"]["total-successful-session-count"], ok);
    assert_eq!(p["summary"]["total-failure-session-count"], failed);
    let d = &p["failure-details"][0];
    assert_eq!(d["result-type"], "starttls-not-supported");
    assert_eq!(d["failure-reason-code"], "starttls-stripped");
    let stripped = linked.iter().find(|s| failing(s)).unwrap();
    assert_eq!(d["sending-mta-ip"], stripped["client_ip"]);
    assert_eq!(d["receiving-ip"], stripped["server_ip"]);
    assert_eq!(d["receiving-mx-hostname"], "mx.example.net");
    assert_eq!(d["failed-session-count"], 1);

    // A real DANE delivery: TLSA seen for the MX, so the policy type is tlsa.
    let dane = work.join("dane");
    analyze(&[&capture_of("dns-mx-delivery")], &dane, &[]);
    let r = check_rfc8460(&dane.join("tlsrpt/dns.test.json"));
    assert_eq!(r["policies"][0]["policy"]["policy-type"], "tlsa");
    assert_eq!(
        r["policies"][0]["summary"]["total-successful-session-count"],
        1
    );
    // Captures without DNS linkage have no TLS-RPT report.
    let none = work.join("none");
    analyze(&[&capture_of("stripped-xxxxxxxa")], &none, &[]);
    assert_eq!(std::fs::read_dir(none.join("tlsrpt")).unwrap().count(), 0);
    // A window without the domain leaves no stale report of it behind.
    let o = run(&[
        "report",
        out.to_str().unwrap(),
        "--format",
        "tlsrpt",
        "--until",
        "2000-01-01",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.join("tlsrpt/example.net.json").exists());
}

/// Test databases (MaxMind GeoLite2 layout, written with `mmdb-writer`) that give the
/// addresses of the bundled and generated captures several countries and ASes.
fn geo_dbs(dir: &Path) -> [String; 4] {
    use mmdb_writer::ipnet::IpNet;
    use mmdb_writer::{Value as Mmdb, Writer};
    const NETS: [(&str, &str, u32, &str); 11] = [
        ("192.0.2.0/26", "TN", 64_496, "Client Net TN"),
        ("192.0.2.64/26", "DE", 64_497, "Client Net DE"),
        ("192.0.2.128/26", "US", 64_498, "Client Net US"),
        ("192.0.2.192/26", "BR", 64_499, "Client Net BR"),
        ("2001:db8:c::/48", "JP", 4_200_000_001, "Six Client KK"),
        ("198.51.100.0/25", "NL", 64_510, "Hosting One"),
        ("198.51.100.128/25", "FR", 64_511, "Hosting Two"),
        ("2001:db8:5::/48", "CA", 64_505, "Six Server Ltd"),
        ("10.77.0.0/16", "SE", 64_520, "Lab Postfix"),
        ("10.79.0.0/16", "CH", 64_521, "Lab TLS"),
        ("10.80.0.0/16", "AT", 64_522, "Lab DNS"),
    ];
    let write = |name: &str, value: &dyn Fn(&str, u32, &str) -> Mmdb| -> String {
        let mut w = Writer::new(name);
        for (net, c, n, o) in NETS {
            w.insert_value(net.parse::<IpNet>().unwrap(), value(c, n, o))
                .unwrap();
        }
        let path = dir.join(format!("{name}.mmdb"));
        std::fs::write(&path, w.to_bytes().unwrap()).unwrap();
        path.display().to_string()
    };
    let country = write("GeoLite2-Country", &|c, _, _| {
        Mmdb::map([("country", Mmdb::map([("iso_code", Mmdb::from(c))]))])
    });
    let asn = write("GeoLite2-ASN", &|_, n, o| {
        Mmdb::map([
            ("autonomous_system_number", Mmdb::from(n)),
            ("autonomous_system_organization", Mmdb::from(o)),
        ])
    });
    ["--geoip-country".into(), country, "--geoip-asn".into(), asn]
}

/// Sessions, EHLO sessions and stripped sessions per client country, counted from the records.
fn plain_by_client_country(sessions: &[Value]) -> BTreeMap<String, (u64, u64, u64)> {
    let mut m = BTreeMap::<String, (u64, u64, u64)>::new();
    for s in sessions {
        let e = m
            .entry(s["client_country"].as_str().unwrap_or("").to_string())
            .or_default();
        let p = plain_counts(std::slice::from_ref(s));
        e.0 += p.sessions;
        e.1 += p.ehlo;
        e.2 += p.stripped;
    }
    m
}

/// The same from `csv/by_client_country.csv`.
fn report_by_client_country(csv_dir: &Path) -> BTreeMap<String, (u64, u64, u64)> {
    csv_table(&csv_dir.join("by_client_country.csv"))
        .iter()
        .map(|r| {
            (
                r["client_country"].clone(),
                (
                    num(r, "sessions"),
                    num(r, "ehlo_sessions"),
                    num(r, "stripped"),
                ),
            )
        })
        .collect()
}

/// Headless Chromium, or `None` when STRIPWATCH_SKIP_CHROMIUM=1; panics with instructions when
/// it is missing.
fn chromium() -> Option<PathBuf> {
    if std::env::var("STRIPWATCH_SKIP_CHROMIUM").is_ok_and(|v| v == "1") {
        eprintln!("STRIPWATCH_SKIP_CHROMIUM=1: skipping the browser check");
        return None;
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in ["/usr/bin", "/usr/local/bin", "/snap/bin"] {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    panic!(
        "chromium is not installed (scripts/install-deps.sh installs it: apt-get install \
         chromium); set STRIPWATCH_SKIP_CHROMIUM=1 to skip the browser check"
    );
}

#[test]
fn the_html_report_renders_in_chromium_with_its_charts() {
    let Some(browser) = chromium() else { return };
    let work = tempdir("report-html");
    let mixed = work.join("mixed.pcap");
    stripwatch_synth::write_mixed(&mixed, 3000, 7).unwrap();
    let out = work.join("out");
    let geo = geo_dbs(&work);
    let geo: Vec<&str> = geo.iter().map(String::as_str).collect();
    analyze(
        &[
            &mixed,
            &capture_of("real-postfix-overwrite"),
            &capture_of("real-postfix-delete"),
            &capture_of("tls-expired"),
            &capture_of("tls-self-signed"),
            &capture_of("tls-wrong-name"),
        ],
        &out,
        &geo,
    );
    let sessions = ndjson(&out.join("sessions.ndjson"));
    let countries = plain_by_client_country(&sessions);
    assert!(countries.len() >= 4, "{countries:?}");
    assert_eq!(report_by_client_country(&out.join("csv")), countries);
    let html_path = out.join("report.html");
    let html = std::fs::read_to_string(&html_path).unwrap();
    // Self-contained: no scripts, no links, no external references.
    for bad in ["<script", "<link", "src=", "url(", "@import"] {
        assert!(!html.contains(bad), "report.html contains {bad}");
    }
    let external = html
        .match_indices("http")
        .filter(|(i, _)| !html[*i..].starts_with("http://www.w3.org/2000/svg"))
        .count();
    assert_eq!(external, 0, "report.html refers to an external resource");

    let url = format!("file://{}", html_path.display());
    let dom = Command::new(&browser)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--dump-dom",
            &url,
        ])
        .output()
        .expect("run chromium");
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout).to_string();
    // Every chart is an inline SVG with data elements the browser parsed.
    let figure = |id: &str| -> String {
        let start = dom
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no chart {id} in the DOM"));
        let end = dom[start..].find("</figure>").unwrap() + start;
        dom[start..end].to_string()
    };
    let days: std::collections::BTreeSet<&str> = sessions
        .iter()
        .map(|s| &s["ts"].as_str().unwrap()[..10])
        .collect();
    let verdicts: std::collections::BTreeSet<&str> = sessions
        .iter()
        .map(|s| s["verdict"].as_str().unwrap())
        .collect();
    for (id, at_least) in [
        ("chart-client-country", countries.len().min(20)),
        ("chart-server-as", 3),
        ("chart-client-as", 4),
        // One stacked segment per day and verdict at least for the busiest verdict.
        ("chart-verdicts-per-day", days.len()),
        ("chart-certificate-problems", 3),
    ] {
        let f = figure(id);
        assert!(f.contains("<svg"), "{id}: no svg");
        // The white background is a rect too: data rects are the coloured ones, with a size.
        let rects = f
            .split("<rect")
            .skip(1)
            .filter(|r| {
                let tag = &r[..r.find('>').unwrap()];
                !tag.contains("#FFFFFF") && !tag.contains("height=\"-")
            })
            .count();
        assert!(rects >= at_least, "{id}: {rects} data rects");
    }
    let verdict_chart = figure("chart-verdicts-per-day");
    for v in &verdicts {
        assert!(verdict_chart.contains(v), "legend lacks {v}");
    }
    let adoption = figure("chart-adoption-per-day");
    assert!(
        adoption.matches("<polyline").count() >= 3,
        "three rate lines"
    );
    assert!(adoption.matches("<circle").count() >= 3 * days.len());
    for c in [
        "certificate-expired",
        "certificate-self-signed",
        "certificate-host-mismatch",
    ] {
        let short = c.trim_start_matches("certificate-");
        assert!(
            figure("chart-certificate-problems").contains(short),
            "certificate chart lacks {c}"
        );
    }

    let png = work.join("report.png");
    let o = Command::new(&browser)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--hide-scrollbars",
            &format!("--screenshot={}", png.display()),
            "--window-size=1200,3000",
            &url,
        ])
        .output()
        .expect("run chromium");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1200, 3000));
    let px = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(px).collect();
    let white = pixels
        .iter()
        .filter(|p| p.iter().take(3).all(|c| *c > 245))
        .count();
    // The bar colour of the rate charts (#c0392b) and of the count charts (#2e86c1).
    let near = |p: &[u8], c: [u8; 3]| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) < 12);
    let red = pixels
        .iter()
        .filter(|p| near(p, [0xc0, 0x39, 0x2b]))
        .count();
    let distinct: std::collections::HashSet<&[u8]> = pixels.iter().copied().collect();
    assert!(white < pixels.len() * 97 / 100, "the page is nearly blank");
    assert!(red > 2_000, "no red bars on the screenshot ({red} pixels)");
    assert!(distinct.len() > 50, "only {} colours", distinct.len());
}

#[test]
fn clickhouse_gives_the_same_report_as_the_embedded_aggregation() {
    let work = tempdir("report-clickhouse");
    let Some(ch) = ClickHouse::start(&work.join("server")) else {
        return;
    };
    let db = "reports";
    let o = run(&[
        "schema",
        "apply",
        "--clickhouse",
        &ch.url(),
        "--clickhouse-database",
        db,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let merged = merged_pcap(
        &capture_of("dns-mx-linked"),
        &capture_of("stripped-xxxxxxxa"),
        60,
        &work,
    );
    let mixed = work.join("mixed.pcap");
    stripwatch_synth::write_mixed(&mixed, 2000, 3).unwrap();
    let mut captures: Vec<PathBuf> = vec![merged, mixed];
    for name in [
        "real-postfix-overwrite",
        "real-postfix-delete",
        "real-postfix-reject",
        "real-postfix-break-tls",
        "tls-expired",
        "tls-self-signed",
        "tls-wrong-name",
        "dns-mx-delivery",
        "dns-injection",
        "fallback-after-reject",
        // MTA-STS: TLS-RPT policy type `sts`, the sts_fetch column and the MTA-STS domains
        // table on both sides
        "sts-enforce-clean",
        "sts-fetch-reset",
        "sts-testing-stripped",
        "sts-txt-removed",
    ] {
        captures.push(capture_of(name));
    }
    let analysis = work.join("analysis");
    let refs: Vec<&Path> = captures.iter().map(PathBuf::as_path).collect();
    let mut extra: Vec<String> = geo_dbs(&work).to_vec();
    extra.extend([
        "--clickhouse".into(),
        ch.url(),
        "--clickhouse-database".into(),
        db.into(),
    ]);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    analyze(&refs, &analysis, &extra);
    let stored = ch.count(&format!("SELECT count() FROM {db}.sessions FINAL"));
    assert_eq!(
        stored as usize,
        ndjson(&analysis.join("sessions.ndjson")).len()
    );

    let windows: [&[&str]; 3] = [
        &[],
        &["--since", "2026-03-02", "--until", "2026-03-02"],
        &["--since", "2026-03-02T10:00:30Z"],
    ];
    for (i, window) in windows.iter().enumerate() {
        let embedded = work.join(format!("embedded-{i}"));
        let from_ch = work.join(format!("clickhouse-{i}"));
        let mut a = vec![
            "report",
            analysis.to_str().unwrap(),
            "--out",
            embedded.to_str().unwrap(),
            "--format",
            "csv,tlsrpt",
        ];
        a.extend_from_slice(window);
        let o = run(&a);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let url = ch.url();
        let mut b = vec![
            "report",
            "--clickhouse",
            &url,
            "--clickhouse-database",
            db,
            "--out",
            from_ch.to_str().unwrap(),
            "--format",
            "csv,tlsrpt",
        ];
        b.extend_from_slice(window);
        let o = run(&b);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let (x, y) = (report_files(&embedded), report_files(&from_ch));
        assert_eq!(
            x.keys().collect::<Vec<_>>(),
            y.keys().collect::<Vec<_>>(),
            "window {window:?}: different files"
        );
        for (name, bytes) in &x {
            assert!(
                bytes == &y[name],
                "window {window:?}: {name} differs\nembedded:\n{}\nclickhouse:\n{}",
                String::from_utf8_lossy(bytes),
                String::from_utf8_lossy(&y[name])
            );
        }
        // Not vacuous: the full window has stripping, several days, TLS-RPT failures,
        // certificate problems and a DNS injection.
        if window.is_empty() {
            let t = &csv_table(&embedded.join("csv/totals.csv"))[0];
            assert!(num(t, "stripped") > 10, "{t:?}");
            assert!(csv_table(&embedded.join("csv/by_day.csv")).len() >= 2);
            assert!(!csv_table(&embedded.join("csv/tlsrpt_failures.csv")).is_empty());
            let kinds = csv_table(&embedded.join("csv/findings_by_kind.csv"));
            assert!(kinds.iter().any(|k| k["kind"] == "certificate-expired"));
            let dns = csv_table(&embedded.join("csv/dns_injection_by_resolver_as.csv"));
            assert!(dns.iter().any(|d| num(d, "injected") > 0));
            let sessions = ndjson(&analysis.join("sessions.ndjson"));
            let countries = plain_by_client_country(&sessions);
            assert!(countries.len() >= 4, "{countries:?}");
            assert_eq!(report_by_client_country(&embedded.join("csv")), countries);
            assert!(csv_table(&embedded.join("csv/by_server_as.csv")).len() >= 4);
        } else {
            let t = &csv_table(&embedded.join("csv/totals.csv"))[0];
            let all = &csv_table(&work.join("embedded-0/csv/totals.csv"))[0];
            assert!(num(t, "sessions") > 0 && num(t, "sessions") < num(all, "sessions"));
        }
    }
}

/// Loads an analysis directory into a current ClickHouse embedded in Python (chdb), with the
/// schema of `queries/schema.sql`, runs every report query file as it is, and writes each
/// answer to `OUT/<query>.tsv`.
const CHDB_SCRIPT: &str = r#"
import sys, json, tempfile, os
from chdb import session
schema, data_dir, queries_dir, out_dir = sys.argv[1:5]
s = session.Session(tempfile.mkdtemp())
s.query("CREATE DATABASE IF NOT EXISTS stripwatch")
s.query("USE stripwatch")
sql = open(schema).read()
stmts = [x.strip() for x in "\n".join(l.split("--")[0] for l in sql.splitlines()).split(";")]
for st in stmts:
    if st:
        s.query(st)
def load(table, fname, nested):
    path = os.path.join(data_dir, fname)
    if not os.path.exists(path):
        return 0
    rows = []
    for line in open(path):
        r = json.loads(line)
        for col, fields in nested.items():
            items = r.pop(col, None) or []
            for f in fields:
                r[col + "." + f] = [it[f] for it in items]
        rows.append(json.dumps(r))
    if rows:
        s.query("INSERT INTO " + table + " SETTINGS input_format_skip_unknown_fields=1, "
                "date_time_input_format='best_effort' FORMAT JSONEachRow\n" + "\n".join(rows))
    return len(rows)
n = load("sessions", "sessions.ndjson", {"mx_tlsa": ["usage", "selector", "matching_type", "data"]})
m = load("dns", "dns.ndjson", {"answers": ["name", "rtype", "ttl", "data"]})
stored = s.query("SELECT count() FROM sessions FINAL", "CSV").bytes().decode().strip()
if int(stored) != n:
    print("stored %s of %d sessions" % (stored, n)); sys.exit(1)
done = 0
for f in sorted(os.listdir(queries_dir)):
    if not f.endswith(".sql") or f == "schema.sql":
        continue
    text = open(os.path.join(queries_dir, f)).read()
    out = s.query(text, "TSVWithNames").bytes()
    open(os.path.join(out_dir, f[:-4] + ".tsv"), "wb").write(out)
    done += 1
print("ok", s.query("SELECT version()", "CSV").bytes().decode().strip(), n, m, done)
"#;

/// A table's rows as sorted lists of cells, rates normalised to six decimals.
fn normalised(header: &[String], rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| {
            r.into_iter()
                .zip(header)
                .map(|(cell, col)| {
                    if col.ends_with("_rate") {
                        format!("{:.6}", cell.parse::<f64>().unwrap())
                    } else {
                        cell
                    }
                })
                .collect()
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_report_queries_give_the_same_numbers_on_a_current_clickhouse() {
    if std::env::var("STRIPWATCH_SKIP_CHDB").is_ok_and(|v| v == "1") {
        eprintln!("STRIPWATCH_SKIP_CHDB=1: skipping the chdb check");
        return;
    }
    let work = tempdir("report-chdb");
    let merged = merged_pcap(
        &capture_of("dns-mx-linked"),
        &capture_of("stripped-xxxxxxxa"),
        60,
        &work,
    );
    let mut captures = vec![merged];
    for name in [
        "real-postfix-overwrite",
        "real-postfix-delete",
        "tls-expired",
        "tls-wrong-name",
        "dns-mx-delivery",
        "dns-injection",
        "fallback-after-reject",
        "missing-after-offer",
        "sts-fetch-reset",
        "sts-testing-stripped",
    ] {
        captures.push(capture_of(name));
    }
    let analysis = work.join("analysis");
    let refs: Vec<&Path> = captures.iter().map(PathBuf::as_path).collect();
    let geo = geo_dbs(&work);
    let geo: Vec<&str> = geo.iter().map(String::as_str).collect();
    analyze(&refs, &analysis, &geo);
    assert!(csv_table(&analysis.join("csv/by_client_as.csv")).len() >= 3);
    let tsv = work.join("tsv");
    std::fs::create_dir_all(&tsv).unwrap();
    let o = Command::new("python3")
        .arg("-c")
        .arg(CHDB_SCRIPT)
        .arg(root().join("queries/schema.sql"))
        .arg(&analysis)
        .arg(root().join("queries"))
        .arg(&tsv)
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
        o.status.success() && text.starts_with("ok "),
        "report queries on current ClickHouse (chdb) failed; install it with \
         `pip install chdb-core` or set STRIPWATCH_SKIP_CHDB=1:\n{text}"
    );
    eprintln!("{}", text.trim());
    let mut compared = 0;
    for e in std::fs::read_dir(analysis.join("csv")).unwrap() {
        let path = e.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let mut r = csv::Reader::from_path(&path).unwrap();
        let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
        let ours: Vec<Vec<String>> = r
            .records()
            .map(|x| x.unwrap().iter().map(String::from).collect())
            .collect();
        let answer = std::fs::read_to_string(tsv.join(format!("{stem}.tsv")))
            .unwrap_or_else(|_| panic!("no query answer for {stem}"));
        let mut lines = answer.lines();
        let theirs_header: Vec<String> = lines
            .next()
            .unwrap()
            .split('\t')
            .map(String::from)
            .collect();
        assert_eq!(theirs_header, header, "{stem}: columns");
        let theirs: Vec<Vec<String>> = lines
            .map(|l| {
                l.split('\t')
                    .map(|c| {
                        c.replace("\\t", "\t")
                            .replace("\\n", "\n")
                            .replace("\\\\", "\\")
                    })
                    .collect()
            })
            .collect();
        assert_eq!(
            normalised(&header, theirs),
            normalised(&header, ours),
            "{stem}: chdb and the embedded report differ"
        );
        compared += 1;
    }
    assert_eq!(compared, query_files(), "one CSV file per query file");
    let failures = csv_table(&analysis.join("csv/tlsrpt_failures.csv"));
    assert!(!failures.is_empty(), "the data has TLS-RPT failures");
}

/// The MTA-STS counts of one recipient domain, in the column order of `mta_sts_domains.csv`
/// after `recipient_domain`.
const STS_COLUMNS: [&str; 5] = [
    "sessions",
    "sts_seen",
    "fetch_ok",
    "fetch_blocked",
    "plaintext",
];

/// The MTA-STS domains counted straight from session records, following the README's
/// definition rather than the report code: per non-empty recipient domain, kept when a session
/// shows any MTA-STS evidence.
fn plain_sts_domains(sessions: &[Value]) -> BTreeMap<String, [u64; 5]> {
    let mut all: BTreeMap<String, (bool, [u64; 5])> = BTreeMap::new();
    for s in sessions {
        let Some(domain) = s["recipient_domain"].as_str().filter(|d| !d.is_empty()) else {
            continue;
        };
        let has = |kind: &str| {
            s["findings"]
                .as_array()
                .is_some_and(|f| f.iter().any(|k| k == kind))
        };
        let seen = s["sts_txt"].as_str().is_some_and(|t| !t.is_empty());
        let fetch = s["sts_fetch"].as_str();
        let (blocked, plain) = (has("mta-sts-fetch-blocked"), has("mta-sts-plaintext"));
        let e = all.entry(domain.to_string()).or_default();
        e.0 |= seen || fetch.is_some_and(|f| f != "not-seen") || blocked || plain;
        for (n, yes) in
            e.1.iter_mut()
                .zip([true, seen, fetch == Some("ok"), blocked, plain])
        {
            *n += u64::from(yes);
        }
    }
    all.into_iter()
        .filter(|(_, (evidence, _))| *evidence)
        .map(|(d, (_, n))| (d, n))
        .collect()
}

/// The MTA-STS domains table on the real captures of a blocked fetch and a stripped `testing`
/// delivery: its numbers must be the sessions' own, not something only the two sources agree on.
#[test]
fn the_mta_sts_domains_of_the_real_captures_equal_a_plain_count_of_their_sessions() {
    for name in ["sts-fetch-reset", "sts-testing-stripped"] {
        let out = tempdir(&format!("report-{name}"));
        analyze(&[&capture_of(name)], &out, &[]);
        let plain = plain_sts_domains(&ndjson(&out.join("sessions.ndjson")));
        let rows = csv_table(&out.join("csv/mta_sts_domains.csv"));
        let report: BTreeMap<String, [u64; 5]> = rows
            .iter()
            .map(|r| {
                let n = STS_COLUMNS.map(|c| num(r, c));
                (r["recipient_domain"].clone(), n)
            })
            .collect();
        assert_eq!(report.len(), rows.len(), "{name}: one row per domain");
        assert_eq!(report, plain, "{name}: {STS_COLUMNS:?}");
        // Not vacuous: what the capture's facts say the on-path box did shows in its domain's row.
        let facts: Value = serde_json::from_str(
            &std::fs::read_to_string(root().join(format!("pcaps/{name}.facts.json"))).unwrap(),
        )
        .unwrap();
        let row = report
            .get(facts["domain"].as_str().unwrap())
            .unwrap_or_else(|| panic!("{name}: no row for its domain: {report:?}"));
        if facts["on_path"]["policy_fetch_reset"] == true {
            assert!(row[3] > 0, "{name}: no blocked fetch: {row:?}");
        }
        if facts["on_path"]["starttls"] == "overwrite" && facts["postfix"]["policy_secure"] == false
        {
            assert!(row[4] > 0, "{name}: no plaintext to an STS domain: {row:?}");
        }
    }
}
