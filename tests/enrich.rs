//! Enrichment end to end: `.mmdb` files written here with `mmdb-writer` (MaxMind layout and
//! IPinfo Lite's flat layout, IPv4 and IPv6 networks), the real binary over bundled captures,
//! and the six fields read back from sessions.ndjson, findings.ndjson and dns.ndjson.

mod common;

use common::{analyze, ndjson, root, run, tempdir};
use mmdb_writer::ipnet::IpNet;
use mmdb_writer::{Value, Writer};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the test databases say about an address: (country, asn, organisation).
type Truth = BTreeMap<&'static str, (&'static str, u32, &'static str)>;

/// One network per address the captures contain, except 192.0.2.53 (the resolver in
/// dns-injection.pcap), which no database knows. 10.79.0.10 has only a registered country, to
/// show the MaxMind fallback; the IPv6 ends are /48 networks.
const NETWORKS: &[(&str, &str, &str, u32, &str)] = &[
    // (network, address in the captures, country, asn, organisation)
    ("10.77.0.1/32", "10.77.0.1", "DE", 64_501, "Client One GmbH"),
    ("10.77.0.2/32", "10.77.0.2", "NL", 64_502, "Server Two B.V."),
    ("10.79.0.10/32", "10.79.0.10", "FR", 64_510, "Lab Sender SA"),
    (
        "10.79.0.25/32",
        "10.79.0.25",
        "SE",
        64_511,
        "Lab Receiver AB",
    ),
    (
        "10.79.0.53/32",
        "10.79.0.53",
        "CH",
        64_512,
        "Lab Resolver AG",
    ),
    ("192.0.2.10/32", "192.0.2.10", "US", 64_496, "Victim Inc."),
    (
        "198.51.100.0/24",
        "198.51.100.66",
        "BR",
        64_497,
        "Destino Ltda",
    ),
    (
        "2001:db8:c::/48",
        "2001:db8:c::a",
        "JP",
        4_200_000_001,
        "Six Client KK",
    ),
    (
        "2001:db8:5::/48",
        "2001:db8:5::19",
        "CA",
        64_505,
        "Six Server Ltd",
    ),
];

const UNKNOWN: &str = "192.0.2.53";

fn truth() -> Truth {
    NETWORKS
        .iter()
        .map(|(_, a, c, n, o)| (*a, (*c, *n, *o)))
        .collect()
}

fn write_db(dir: &Path, name: &str, entries: Vec<(&str, Value)>) -> PathBuf {
    let mut w = Writer::new(name);
    for (net, v) in entries {
        w.insert_value(net.parse::<IpNet>().unwrap(), v).unwrap();
    }
    let path = dir.join(format!("{name}.mmdb"));
    std::fs::write(&path, w.to_bytes().unwrap()).unwrap();
    path
}

/// GeoLite2-Country and GeoLite2-ASN shaped files.
fn maxmind_dbs(dir: &Path) -> (PathBuf, PathBuf) {
    let country = NETWORKS
        .iter()
        .map(|(net, addr, c, _, _)| {
            let iso = Value::map([
                ("iso_code", Value::from(*c)),
                ("names", Value::map([("en", Value::from("Somewhere"))])),
            ]);
            let key = if *addr == "10.79.0.10" {
                "registered_country"
            } else {
                "country"
            };
            (*net, Value::map([(key, iso)]))
        })
        .collect();
    let asn = NETWORKS
        .iter()
        .map(|(net, _, _, n, o)| {
            (
                *net,
                Value::map([
                    ("autonomous_system_number", Value::from(*n)),
                    ("autonomous_system_organization", Value::from(*o)),
                ]),
            )
        })
        .collect();
    (
        write_db(dir, "GeoLite2-Country", country),
        write_db(dir, "GeoLite2-ASN", asn),
    )
}

/// An IPinfo Lite shaped file: country name and code, `asn` as "AS123", `as_name`.
fn ipinfo_lite_db(dir: &Path) -> PathBuf {
    let entries = NETWORKS
        .iter()
        .map(|(net, _, c, n, o)| {
            (
                *net,
                Value::map([
                    ("country", Value::from("Some Country")),
                    ("country_code", Value::from(*c)),
                    ("continent_code", Value::from("EU")),
                    ("asn", Value::from(format!("AS{n}"))),
                    ("as_name", Value::from(*o)),
                    ("as_domain", Value::from("example.net")),
                ]),
            )
        })
        .collect();
    write_db(dir, "ipinfo_lite", entries)
}

const CAPTURES: &[&str] = &[
    "real-postfix-overwrite.pcap",
    "real-postfix-break-tls.pcap",
    "dns-mx-delivery.pcap",
    "dns-injection.pcap",
    "stripped-xxxxxxxa-ipv6-pcapng.pcapng",
];

/// Checks the six fields of one record against what the databases say about its addresses.
fn check_ends(what: &str, rec: &Json, truth: &Truth) {
    for side in ["client", "server"] {
        let ip = rec[format!("{side}_ip")].as_str().unwrap();
        let (c, n, o) = if ip == UNKNOWN {
            ("", 0, "")
        } else {
            *truth
                .get(ip)
                .unwrap_or_else(|| panic!("{what}: address {ip} is not in the test databases"))
        };
        assert_eq!(rec[format!("{side}_country")], c, "{what} {side} {ip}");
        assert_eq!(rec[format!("{side}_asn")], n, "{what} {side} {ip}");
        assert_eq!(rec[format!("{side}_as_org")], o, "{what} {side} {ip}");
    }
}

/// Runs every capture with `extra` options and checks every record; returns how many records of
/// each file were checked and whether the unknown address was met.
fn run_all(name: &str, extra: &[&str]) -> (BTreeMap<&'static str, usize>, bool) {
    let truth = truth();
    let mut counts = BTreeMap::new();
    let mut met_unknown = false;
    for cap in CAPTURES {
        let out = tempdir(&format!("enrich-{name}-{cap}"));
        let summary = analyze(&[&root().join("pcaps").join(cap)], &out, extra);
        let mut records = 0u64;
        for file in ["sessions", "findings", "dns"] {
            let recs = ndjson(&out.join(format!("{file}.ndjson")));
            for r in &recs {
                check_ends(&format!("{cap} {file}"), r, &truth);
                met_unknown |= r["server_ip"] == UNKNOWN || r["client_ip"] == UNKNOWN;
            }
            if file != "findings" {
                records += recs.len() as u64;
            }
            *counts.entry(file).or_default() += recs.len();
        }
        // Two addresses per session and DNS record, each looked up for country and for ASN.
        let e = &summary["enrichment"];
        assert_eq!(e["enabled"], true);
        for kind in ["country", "asn"] {
            let k = &e[kind];
            assert_eq!(k["lookups"], 2 * records, "{cap} {kind}: {e}");
            assert_eq!(
                k["hits"].as_u64().unwrap() + k["misses"].as_u64().unwrap(),
                2 * records,
                "{cap} {kind}: {e}"
            );
            assert_eq!(k["errors"], 0);
            assert_eq!(k["databases"].as_array().unwrap().len(), 1);
        }
    }
    (counts, met_unknown)
}

#[test]
fn maxmind_layout_fills_sessions_findings_and_dns() {
    let dir = tempdir("enrich-mm-dbs");
    let (country, asn) = maxmind_dbs(&dir);
    let (counts, met_unknown) = run_all(
        "mm",
        &[
            "--geoip-country",
            country.to_str().unwrap(),
            "--geoip-asn",
            asn.to_str().unwrap(),
        ],
    );
    // The captures hold sessions, findings (session and DNS ones) and DNS transactions, over
    // IPv4 and IPv6: every kind of record was checked.
    assert!(counts["sessions"] >= 6, "{counts:?}");
    assert!(counts["findings"] >= 6, "{counts:?}");
    assert!(counts["dns"] >= 8, "{counts:?}");
    assert!(
        met_unknown,
        "no record had the address missing from the databases"
    );
}

#[test]
fn ipinfo_flat_layout_one_file_for_both_options() {
    let dir = tempdir("enrich-flat-dbs");
    let db = ipinfo_lite_db(&dir);
    let db = db.to_str().unwrap();
    let (counts, _) = run_all("flat", &["--geoip-country", db, "--geoip-asn", db]);
    assert!(counts["sessions"] >= 6 && counts["dns"] >= 8, "{counts:?}");
    let out = tempdir("enrich-flat-summary");
    let s = analyze(
        &[&root().join("pcaps/dns-mx-delivery.pcap")],
        &out,
        &["--geoip-country", db, "--geoip-asn", db],
    );
    assert_eq!(
        s["enrichment"]["country"]["databases"][0]["layout"], "flat",
        "{s}"
    );
    assert_eq!(
        s["enrichment"]["country"]["databases"][0]["database_type"],
        "ipinfo_lite"
    );
}

#[test]
fn without_databases_the_fields_are_empty_and_the_summary_says_so_once() {
    let out = tempdir("enrich-off");
    let cap = root().join("pcaps/dns-injection.pcap");
    let o = run(&[
        "analyze",
        cap.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.matches("enrichment: off").count(), 1, "{text}");
    assert!(!String::from_utf8_lossy(&o.stderr).contains("enrichment"));
    let mut seen = 0;
    for file in ["sessions", "findings", "dns"] {
        for r in ndjson(&out.join(format!("{file}.ndjson"))) {
            seen += 1;
            for side in ["client", "server"] {
                assert_eq!(r[format!("{side}_country")], "", "{file}");
                assert_eq!(r[format!("{side}_asn")], 0, "{file}");
                assert_eq!(r[format!("{side}_as_org")], "", "{file}");
            }
        }
    }
    assert!(seen >= 4);
    let summary: Json =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["enrichment"]["enabled"], false);
    assert_eq!(summary["enrichment"]["country"]["lookups"], 0);
}

#[test]
fn with_databases_the_summary_line_counts_hits() {
    let dir = tempdir("enrich-line-dbs");
    let (country, asn) = maxmind_dbs(&dir);
    let out = tempdir("enrich-line");
    let cap = root().join("pcaps/dns-injection.pcap");
    let o = run(&[
        "analyze",
        cap.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--geoip-country",
        country.to_str().unwrap(),
        "--geoip-asn",
        asn.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("enrichment:"))
        .unwrap_or_else(|| panic!("no enrichment line in {text}"));
    // One session (192.0.2.10 -> 198.51.100.66, both known) and two DNS transactions
    // (192.0.2.10 -> the unknown 192.0.2.53): 6 addresses, 4 known.
    assert_eq!(
        line,
        "enrichment: country 4 of 6 addresses, asn 4 of 6 addresses"
    );
}

/// Runs analyze with a bad database and checks: exit status 2, one line on stderr naming the
/// option and the file, nothing written.
fn refused(name: &str, option: &str, db: &Path) -> String {
    let out = tempdir(&format!("enrich-bad-{name}"));
    let out = out.join("not-created");
    let cap = root().join("pcaps/real-postfix-overwrite.pcap");
    let o = run(&[
        "analyze",
        cap.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        option,
        db.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(2), "{name}: {err}");
    assert_eq!(err.lines().count(), 1, "{name}: {err}");
    assert!(
        err.contains(option) && err.contains(db.to_str().unwrap()),
        "{err}"
    );
    assert!(o.stdout.is_empty());
    assert!(
        !out.exists(),
        "{name}: the run started before the database was checked"
    );
    err
}

#[test]
fn unusable_databases_stop_the_run_with_status_2() {
    let dir = tempdir("enrich-bad-dbs");
    let (country, asn) = maxmind_dbs(&dir);
    let junk = dir.join("junk.mmdb");
    std::fs::write(&junk, b"not a database at all\n").unwrap();
    let err = refused("junk", "--geoip-country", &junk);
    assert!(err.contains("MaxMind DB"), "{err}");

    let good = std::fs::read(&country).unwrap();
    let truncated = dir.join("truncated.mmdb");
    std::fs::write(&truncated, &good[..good.len() - 40]).unwrap();
    refused("truncated", "--geoip-country", &truncated);

    // The metadata survives but the tree and data are overwritten.
    let mut scrambled = good.clone();
    let meta = good
        .windows(14)
        .position(|w| w == b"\xab\xcd\xefMaxMind.com")
        .expect("metadata marker");
    for b in &mut scrambled[..meta] {
        *b = 0xff;
    }
    let scrambled_path = dir.join("scrambled.mmdb");
    std::fs::write(&scrambled_path, &scrambled).unwrap();
    refused("scrambled", "--geoip-asn", &scrambled_path);

    // Readable, but the wrong kind.
    let err = refused("asn-as-country", "--geoip-country", &asn);
    assert!(err.contains("not a country database"), "{err}");
    let err = refused("country-as-asn", "--geoip-asn", &country);
    assert!(err.contains("not an ASN database"), "{err}");

    refused("missing", "--geoip-asn", &dir.join("does-not-exist.mmdb"));
}

/// Writes two databases of realistic size for timing enrichment (not a check): a City-shaped
/// country file (about 400,000 networks, names in eight languages) and an ASN file (about
/// 400,000 networks, 60,000 organisations), both also covering the documentation ranges that
/// `stripwatch-synth mixed` uses, so every look-up is a hit that decodes a record.
/// `STRIPWATCH_ENRICH_BENCH_DIR=/tmp/x cargo test --release --test enrich -- --ignored`.
#[test]
#[ignore]
fn write_benchmark_databases() {
    let Ok(dir) = std::env::var("STRIPWATCH_ENRICH_BENCH_DIR") else {
        panic!("set STRIPWATCH_ENRICH_BENCH_DIR to the directory to write into");
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let codes = [
        "US", "DE", "FR", "JP", "BR", "CN", "RU", "GB", "NL", "SE", "IN", "ZA",
    ];
    let langs = ["en", "de", "es", "fr", "ja", "pt-BR", "ru", "zh-CN"];
    let country_value = |i: usize| {
        let code = codes[i % codes.len()];
        let names = Value::map(
            langs
                .iter()
                .map(|l| (*l, Value::from(format!("{code} in {l}")))),
        );
        let c = Value::map([
            ("iso_code", Value::from(code)),
            ("geoname_id", Value::from(1_000_000 + i as u32 % 250)),
            ("names", names),
        ]);
        Value::map([
            ("continent", Value::map([("code", Value::from("EU"))])),
            ("country", c.clone()),
            ("registered_country", c),
        ])
    };
    let asn_value = |i: usize| {
        let n = 1 + (i % 60_000) as u32;
        Value::map([
            ("autonomous_system_number", Value::from(n)),
            (
                "autonomous_system_organization",
                Value::from(format!("Organisation number {n}, Ltd")),
            ),
        ])
    };
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let mut nets: Vec<String> = Vec::new();
    for _ in 0..400_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let a = (x >> 32) as u32 & 0xffff_ff00;
        let len = 16 + (x % 9) as u8;
        let a = std::net::Ipv4Addr::from(a & (!0u32 << (32 - len)));
        nets.push(format!("{a}/{len}"));
    }
    for i in 0..50_000u32 {
        nets.push(format!("2a{:02x}:{:x}::/32", i % 256, i / 256 + 1));
    }
    nets.extend(
        [
            "192.0.2.0/24",
            "198.51.100.0/24",
            "2001:db8:c::/48",
            "2001:db8:5::/48",
        ]
        .map(String::from),
    );
    for (name, value) in [
        ("bench-country", &country_value as &dyn Fn(usize) -> Value),
        ("bench-asn", &asn_value),
    ] {
        let mut w = Writer::new(name);
        for (i, n) in nets.iter().enumerate() {
            w.insert_value(n.parse::<IpNet>().unwrap(), value(i))
                .unwrap();
        }
        let path = dir.join(format!("{name}.mmdb"));
        std::fs::write(&path, w.to_bytes().unwrap()).unwrap();
        eprintln!("wrote {}", path.display());
    }
}
