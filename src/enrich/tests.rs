//! Databases written with `mmdb-writer` in each layout, read back through the real reader.

use super::*;
use mmdb_writer::ipnet::IpNet;
use mmdb_writer::{IpVersion, Value, Writer};

fn maxmind_country(iso: &str) -> Value {
    Value::map([(
        "country",
        Value::map([
            ("iso_code", Value::from(iso)),
            ("geoname_id", Value::from(2_921_044_u32)),
            (
                "names",
                Value::map([
                    ("en", Value::from("Somewhere")),
                    ("de", Value::from("Irgendwo")),
                ]),
            ),
        ]),
    )])
}

fn maxmind_registered_only(iso: &str) -> Value {
    Value::map([(
        "registered_country",
        Value::map([("iso_code", Value::from(iso))]),
    )])
}

fn maxmind_asn(n: u32, org: &str) -> Value {
    Value::map([
        ("autonomous_system_number", Value::from(n)),
        ("autonomous_system_organization", Value::from(org)),
    ])
}

fn write(dir: &str, name: &str, version: IpVersion, entries: &[(&str, Value)]) -> PathBuf {
    let mut w = Writer::builder(name).ip_version(version).build();
    for (net, v) in entries {
        w.insert_value(net.parse::<IpNet>().unwrap(), v.clone())
            .unwrap();
    }
    let dir = std::env::temp_dir().join(format!("stripwatch-enrich-{dir}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.mmdb"));
    std::fs::write(&path, w.to_bytes().unwrap()).unwrap();
    path
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn enricher(country: &[PathBuf], asn: &[PathBuf]) -> Enricher {
    Enricher::new(Arc::new(Databases::open(country, asn).unwrap()))
}

#[test]
fn maxmind_layout_ipv4_and_ipv6() {
    let country = write(
        "mm",
        "GeoLite2-Country",
        IpVersion::V6,
        &[
            ("10.77.0.0/24", maxmind_country("DE")),
            ("10.79.0.0/24", maxmind_registered_only("FR")),
            ("2001:db8:c::/48", maxmind_country("JP")),
        ],
    );
    let asn = write(
        "mm",
        "GeoLite2-ASN",
        IpVersion::V6,
        &[
            ("10.77.0.0/24", maxmind_asn(64_500, "Example Transit")),
            ("2001:db8:c::/48", maxmind_asn(4_200_000_001, "Example Six")),
        ],
    );
    let mut e = enricher(&[country], &[asn]);
    assert_eq!(
        e.end(ip("10.77.0.1")),
        End {
            country: "DE".into(),
            asn: 64_500,
            as_org: "Example Transit".into()
        }
    );
    // registered_country is the fallback; no ASN entry leaves the ASN empty.
    assert_eq!(
        e.end(ip("10.79.0.53")),
        End {
            country: "FR".into(),
            asn: 0,
            as_org: String::new()
        }
    );
    assert_eq!(
        e.end(ip("2001:db8:c::a")),
        End {
            country: "JP".into(),
            asn: 4_200_000_001,
            as_org: "Example Six".into()
        }
    );
    // The IPv4-mapped form of an address answers like the address.
    assert_eq!(e.end(ip("::ffff:10.77.0.9")).country, "DE");
    // Not in either database: empty.
    assert_eq!(e.end(ip("192.0.2.1")), End::default());
    let s = e.stats();
    assert!(s.enabled);
    assert_eq!(
        (s.country.lookups, s.country.hits, s.country.misses),
        (5, 4, 1)
    );
    assert_eq!((s.asn.lookups, s.asn.hits, s.asn.misses), (5, 3, 2));
    assert_eq!(s.country.databases[0].layout, "maxmind");
    assert_eq!(s.country.databases[0].database_type, "GeoLite2-Country");
    assert_eq!(s.asn.databases[0].layout, "maxmind");
}

#[test]
fn ipinfo_lite_one_file_for_both() {
    let lite = write(
        "ipinfo",
        "ipinfo_lite",
        IpVersion::V6,
        &[
            (
                "198.51.100.0/24",
                Value::map([
                    ("country", Value::from("Switzerland")),
                    ("country_code", Value::from("CH")),
                    ("continent", Value::from("Europe")),
                    ("continent_code", Value::from("EU")),
                    ("asn", Value::from("AS64511")),
                    ("as_name", Value::from("Example Lite AG")),
                    ("as_domain", Value::from("example.ch")),
                ]),
            ),
            (
                "2001:db8:5::/48",
                Value::map([
                    ("country_code", Value::from("BR")),
                    ("asn", Value::from(64_512_u32)),
                    ("name", Value::from("Numeric AS")),
                ]),
            ),
        ],
    );
    let mut e = enricher(std::slice::from_ref(&lite), std::slice::from_ref(&lite));
    assert_eq!(
        e.end(ip("198.51.100.7")),
        End {
            country: "CH".into(),
            asn: 64_511,
            as_org: "Example Lite AG".into()
        }
    );
    assert_eq!(
        e.end(ip("2001:db8:5::19")),
        End {
            country: "BR".into(),
            asn: 64_512,
            as_org: "Numeric AS".into()
        }
    );
    assert_eq!(e.stats().country.databases[0].layout, "flat");
    assert_eq!(e.stats().asn.databases[0].layout, "flat");
}

#[test]
fn ipinfo_country_asn_has_the_code_in_country() {
    let db = write(
        "ipinfo-ca",
        "ipinfo country_asn.mmdb",
        IpVersion::V6,
        &[(
            "203.0.113.0/24",
            Value::map([
                ("country", Value::from("AU")),
                ("country_name", Value::from("Australia")),
                ("asn", Value::from("AS13335")),
                ("as_name", Value::from("Cloudflare, Inc.")),
            ]),
        )],
    );
    let mut e = enricher(std::slice::from_ref(&db), std::slice::from_ref(&db));
    assert_eq!(
        e.end(ip("203.0.113.1")),
        End {
            country: "AU".into(),
            asn: 13_335,
            as_org: "Cloudflare, Inc.".into()
        }
    );
}

#[test]
fn ip_location_db_split_ipv4_and_ipv6_files() {
    let v4 = write(
        "ild",
        "dbip-country-ipv4",
        IpVersion::V4,
        &[(
            "192.0.2.0/24",
            Value::map([("country_code", Value::from("US"))]),
        )],
    );
    let v6 = write(
        "ild",
        "dbip-country-ipv6",
        IpVersion::V6,
        &[(
            "2001:db8::/32",
            Value::map([("country_code", Value::from("CA"))]),
        )],
    );
    // The IPv4-only file is asked first and cannot hold IPv6: not an error, the next file
    // answers.
    let mut e = enricher(&[v4, v6], &[]);
    assert_eq!(e.end(ip("192.0.2.10")).country, "US");
    assert_eq!(e.end(ip("2001:db8:1::1")).country, "CA");
    assert_eq!(e.end(ip("2001:db9::1")).country, "");
    let s = e.stats();
    assert_eq!(
        (s.country.hits, s.country.misses, s.country.errors),
        (2, 1, 0)
    );
    // No ASN database: ASN look-ups are not counted.
    assert_eq!(s.asn.lookups, 0);
}

#[test]
fn wrong_kind_is_refused() {
    let asn = write(
        "wk",
        "GeoLite2-ASN",
        IpVersion::V6,
        &[("192.0.2.0/24", maxmind_asn(64_500, "X"))],
    );
    let country = write(
        "wk",
        "GeoLite2-Country",
        IpVersion::V6,
        &[("192.0.2.0/24", maxmind_country("DE"))],
    );
    let e = Databases::open(std::slice::from_ref(&asn), &[])
        .err()
        .unwrap();
    assert!(matches!(e, EnrichError::WrongKind { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.starts_with("--geoip-country "), "{msg}");
    assert!(msg.contains("GeoLite2-ASN"), "{msg}");
    assert!(!msg.contains('\n'));
    let e = Databases::open(&[], &[country]).err().unwrap();
    assert!(matches!(e, EnrichError::WrongKind { .. }), "{e}");
}

#[test]
fn missing_and_non_mmdb_files_are_errors() {
    let e = Databases::open(&[PathBuf::from("/nonexistent/x.mmdb")], &[])
        .err()
        .unwrap();
    assert!(matches!(e, EnrichError::Read { .. }), "{e}");
    let dir = std::env::temp_dir().join(format!("stripwatch-enrich-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.mmdb");
    std::fs::write(&junk, b"this is not a database\n").unwrap();
    let e = Databases::open(&[], &[junk]).err().unwrap();
    assert!(matches!(e, EnrichError::Invalid { .. }), "{e}");
    assert!(!e.to_string().contains('\n'));
}

fn dns_record(client: &str, server: &str) -> DnsRecord {
    let finding = Finding {
        finding_id: "t-0".into(),
        kind: crate::record::FindingKind::DnsInjection,
        session_id: None,
        ts: crate::record::Micros(0),
        sensor: String::new(),
        client: Endpoint::new(ip(client), 40000),
        server: Endpoint::new(ip(server), 53),
        community_id: String::new(),
        evidence: serde_json::Value::Null,
    };
    DnsRecord {
        transaction_id: "t".into(),
        ts: crate::record::Micros(0),
        sensor: String::new(),
        client: Endpoint::new(ip(client), 40000),
        server: Endpoint::new(ip(server), 53),
        transport: "udp",
        community_id: String::new(),
        id: 1,
        qname: "example.org".into(),
        qtype: "MX".into(),
        query_seen: true,
        query_do: false,
        rcode: None,
        aa: false,
        tc: false,
        ra: false,
        ad: false,
        rrsig: false,
        nsec: false,
        answers: Vec::new(),
        rtt_ms: None,
        responses: 2,
        response_ip_ttl: None,
        findings: vec![crate::record::FindingKind::DnsInjection],
        finding_details: vec![finding],
    }
}

#[test]
fn no_database_means_no_lookups() {
    let mut e = Enricher::new(Arc::new(Databases::default()));
    let mut rec = dns_record("192.0.2.10", "192.0.2.53");
    e.dns(&mut rec);
    assert_eq!(rec.client.country, "");
    assert_eq!(rec.server.asn, 0);
    assert!(!e.stats().enabled);
    assert_eq!(e.stats().country.lookups, 0);
    assert!(e.stats().render_line().contains("off"));
}

#[test]
fn dns_records_and_their_findings_get_both_ends() {
    let country = write(
        "dnsrec",
        "GeoLite2-Country",
        IpVersion::V6,
        &[
            ("192.0.2.10/32", maxmind_country("NO")),
            ("192.0.2.53/32", maxmind_country("FI")),
        ],
    );
    let asn = write(
        "dnsrec",
        "GeoLite2-ASN",
        IpVersion::V6,
        &[("192.0.2.53/32", maxmind_asn(64_496, "Resolver Co"))],
    );
    let mut e = enricher(&[country], &[asn]);
    let mut rec = dns_record("192.0.2.10", "192.0.2.53");
    e.dns(&mut rec);
    assert_eq!(
        (
            rec.client.country.as_str(),
            rec.client.asn,
            rec.client.as_org.as_str()
        ),
        ("NO", 0, "")
    );
    assert_eq!(
        (
            rec.server.country.as_str(),
            rec.server.asn,
            rec.server.as_org.as_str()
        ),
        ("FI", 64_496, "Resolver Co")
    );
    let f = &rec.finding_details[0];
    assert_eq!(
        (
            f.client.country.as_str(),
            f.server.country.as_str(),
            f.server.asn,
            f.server.as_org.as_str()
        ),
        ("NO", "FI", 64_496, "Resolver Co")
    );
    let line = e.stats().render_line();
    assert!(line.contains("country 2 of 2"), "{line}");
    assert!(line.contains("asn 1 of 2"), "{line}");
}

#[test]
fn cache_changes_nothing_but_speed() {
    let country = write(
        "cache",
        "GeoLite2-Country",
        IpVersion::V6,
        &[("10.0.0.0/8", maxmind_country("SE"))],
    );
    let asn = write(
        "cache",
        "GeoLite2-ASN",
        IpVersion::V6,
        &[("10.0.0.0/9", maxmind_asn(65_000, "Half"))],
    );
    let dbs = Arc::new(Databases::open(&[country], &[asn]).unwrap());
    let mut cached = Enricher::with_cache(dbs.clone(), 16);
    let mut uncached = Enricher::with_cache(dbs, 0);
    for i in 0..2000u32 {
        let a = IpAddr::from([10, (i % 256) as u8, (i / 256) as u8, 1]);
        assert_eq!(cached.end(a), uncached.end(a));
        // Some addresses again, to hit the cache.
        let b = IpAddr::from([10, 3, 0, 1]);
        assert_eq!(cached.end(b), uncached.end(b));
    }
    let (c, u) = (cached.stats(), uncached.stats());
    assert_eq!(c.country.hits, u.country.hits);
    assert_eq!(c.asn.hits, u.asn.hits);
    assert_eq!(c.asn.misses, u.asn.misses);
    assert!(c.asn.misses > 0 && c.asn.hits > 0);
    assert!(c.cache_hits >= 1999, "{}", c.cache_hits);
    assert_eq!(u.cache_hits, 0);
    assert!(cached.cached() <= 32);
}

/// Every truncation and many byte changes of a valid file: opening fails with an error or the
/// file opens and look-ups answer or fail; nothing panics.
#[test]
fn damaged_files_never_panic() {
    let mut entries = Vec::new();
    for i in 0..40u32 {
        entries.push((
            format!("10.{i}.0.0/16"),
            Value::map([
                (
                    "country",
                    Value::map([("iso_code", Value::from(["DE", "FR", "US"][i as usize % 3]))]),
                ),
                ("autonomous_system_number", Value::from(64_500 + i)),
                (
                    "autonomous_system_organization",
                    Value::from(format!("Org {i}")),
                ),
            ]),
        ));
    }
    let refs: Vec<(&str, Value)> = entries
        .iter()
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    let path = write("damage", "GeoIP2-City", IpVersion::V6, &refs);
    let good = std::fs::read(&path).unwrap();
    let probe: Vec<IpAddr> = (0..48u8)
        .map(|i| IpAddr::from([10, i, 1, 1]))
        .chain([ip("2001:db8::1"), ip("::1")])
        .collect();
    let (mut opened, mut refused, mut answers, mut failures) = (0u32, 0u32, 0u32, 0u32);
    let mut try_bytes = |bytes: Vec<u8>| {
        for kind in [Kind::Country, Kind::Asn] {
            match Database::from_bytes(bytes.clone(), Path::new("damaged.mmdb"), kind) {
                Ok(db) => {
                    opened += 1;
                    for a in &probe {
                        match db.lookup(*a) {
                            Ok(_) => answers += 1,
                            Err(_) => failures += 1,
                        }
                    }
                }
                Err(e) => {
                    refused += 1;
                    assert!(!e.to_string().contains('\n'), "{e}");
                }
            }
        }
    };
    for cut in 0..good.len() {
        try_bytes(good[..cut].to_vec());
    }
    // A deterministic xorshift picks positions and values.
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..3000 {
        let mut bytes = good.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % bytes.len();
            bytes[at] = next() as u8;
        }
        try_bytes(bytes);
    }
    // Both paths were exercised: damage found at start, and damage only a look-up meets.
    assert!(refused > 1000, "{refused} refused");
    assert!(opened > 100, "{opened} opened");
    assert!(
        answers > 0 && failures > 0,
        "{answers} answers, {failures} failures"
    );
}

/// Timing, not a check: opens the databases `write_benchmark_databases` (tests/enrich.rs) wrote
/// and prints the cost of an address look-up with and without the cache, for distinct
/// addresses and for a working set like a mail relay's.
/// `STRIPWATCH_ENRICH_BENCH_DIR=/tmp/x cargo test --release --lib enrich::tests::timing -- --ignored --nocapture`
#[test]
#[ignore]
fn timing() {
    let dir = PathBuf::from(std::env::var("STRIPWATCH_ENRICH_BENCH_DIR").expect("set it"));
    let t = std::time::Instant::now();
    let dbs = Arc::new(
        Databases::open(
            &[dir.join("bench-country.mmdb")],
            &[dir.join("bench-asn.mmdb")],
        )
        .unwrap(),
    );
    println!("open both: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    let mut x = 0x1234_5678_9abc_def1_u64;
    let distinct: Vec<IpAddr> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            IpAddr::from(((x >> 32) as u32).to_be_bytes())
        })
        .collect();
    let working: Vec<IpAddr> = (0..200_000).map(|i| distinct[i % 1000]).collect();
    for (name, addrs) in [
        ("distinct", &distinct),
        ("1000-address working set", &working),
    ] {
        for cache in [CACHE_PER_GENERATION, 0] {
            let mut e = Enricher::with_cache(dbs.clone(), cache);
            let t = std::time::Instant::now();
            let mut found = 0u64;
            for a in addrs.iter() {
                found += u64::from(e.end(*a).asn != 0);
            }
            let ns = t.elapsed().as_secs_f64() * 1e9 / addrs.len() as f64;
            println!(
                "{name}, cache {}: {ns:.0} ns per address (country + ASN), {found} found",
                if cache > 0 { "on" } else { "off" }
            );
        }
    }
}
