//! The DNS fast path (`dns::fast::parse`) against hickory (`dns::message::parse_hickory`):
//! whenever the fast path answers, its message must be exactly hickory's. Fed with every DNS
//! payload of the bundled captures (and the third-party ones when present), tens of thousands of
//! deterministic mutations of them, and hand-built messages for the types and corners the fast
//! path handles (escapes, compression, EDNS, TXT, TLSA, SOA, DNSSEC types, the answer limit).

use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use stripwatch::capture::CaptureFile;
use stripwatch::dns::{fast, message};

/// What the differential check saw.
#[derive(Default, Debug)]
struct Tally {
    /// The fast path answered (and agreed with hickory).
    fast: usize,
    /// The fast path left it to hickory, which parsed it.
    fallback_parsed: usize,
    /// The fast path left it to hickory, which rejected it (or panicked, as its path does on a
    /// TXT text cut inside a character).
    fallback_rejected: usize,
}

/// The capacities of what a message hands on to records, which the memory budget counts
/// (`record::size`): they must be hickory's path's too, or the summary's `memory` differs.
fn capacities(m: &message::DnsMessage) -> Vec<usize> {
    let mut v = vec![m.qname.capacity(), m.answers.capacity()];
    for a in &m.answers {
        v.extend([a.name.capacity(), a.data.capacity()]);
    }
    for (_, t) in &m.tlsa {
        v.push(t.data.capacity());
    }
    for (_, e) in &m.mx {
        v.push(e.capacity());
    }
    for (a, t) in &m.cnames {
        v.extend([a.capacity(), t.capacity()]);
    }
    v
}

/// Checks one input: a fast-path answer must be hickory's answer.
fn check(bytes: &[u8], tally: &mut Tally) {
    let fast = fast::parse(bytes);
    let slow = catch_unwind(AssertUnwindSafe(|| message::parse_hickory(bytes)));
    match fast {
        Some(f) => {
            let slow = slow.unwrap_or_else(|_| panic!("hickory panicked on {bytes:02x?}"));
            assert_eq!(Some(&f), slow.as_ref(), "fast path differs on {bytes:02x?}");
            assert_eq!(
                capacities(&f),
                slow.as_ref().map(capacities).unwrap_or_default(),
                "capacities differ on {bytes:02x?}"
            );
            tally.fast += 1;
        }
        None if matches!(slow, Ok(Some(_))) => {
            if std::env::var("DNS_FAST_SHOW").is_ok() {
                eprintln!("FALLBACK {:02x?}", bytes);
            }
            tally.fallback_parsed += 1
        }
        None => tally.fallback_rejected += 1,
    }
}

/// The captures to read: the bundled ones and, when present, the third-party corpus.
fn captures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut v = Vec::new();
    for dir in [
        root.join("pcaps"),
        root.join("../shared/thirdparty-pcaps/pcaps"),
    ] {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = p.to_string_lossy();
            if name.contains(".pcap") {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

/// The UDP and TCP payloads to or from port 53 in one capture. A TCP segment is taken both
/// whole and without its first two bytes (the length prefix of a message that starts it).
fn dns_payloads(path: &Path, out: &mut Vec<Vec<u8>>) {
    let Ok(cap) = CaptureFile::open(&path.to_string_lossy()) else {
        return;
    };
    let _ = cap.for_each_packet(|p| {
        let Ok(ip) = stripwatch::decode::locate_ip(p.linktype, p.data) else {
            return ControlFlow::Continue(());
        };
        let Ok(ip) = etherparse::IpSlice::from_slice(ip) else {
            return ControlFlow::Continue(());
        };
        let payload = ip.payload();
        match payload.ip_number {
            etherparse::IpNumber::UDP => {
                if let Ok(udp) = etherparse::UdpSlice::from_slice(payload.payload)
                    && (udp.source_port() == 53 || udp.destination_port() == 53)
                {
                    out.push(udp.payload().to_vec());
                }
            }
            etherparse::IpNumber::TCP => {
                if let Ok(tcp) = etherparse::TcpSlice::from_slice(payload.payload)
                    && (tcp.source_port() == 53 || tcp.destination_port() == 53)
                    && !tcp.payload().is_empty()
                {
                    out.push(tcp.payload().to_vec());
                    if tcp.payload().len() > 2 {
                        out.push(tcp.payload()[2..].to_vec());
                    }
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    });
}

/// A small deterministic PRNG (xorshift64*), so that every run checks the same cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to three random edits of `m`: bit flips, byte writes (often a pointer or a length),
/// truncation, insertion and removal of bytes, changed counts.
fn mutate(m: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = m.to_vec();
    for _ in 0..1 + rng.below(3) {
        if v.is_empty() {
            v.push(0);
        }
        let at = rng.below(v.len());
        match rng.below(8) {
            0 | 1 => v[at] ^= 1 << rng.below(8),
            2 => v[at] = rng.next() as u8,
            3 => v[at] = 0xc0 | (rng.below(4) as u8),
            4 => v.truncate(at),
            5 => {
                let b = rng.next() as u8;
                v.insert(at, b);
            }
            6 => {
                v.remove(at);
            }
            _ => {
                // A count in the header.
                if v.len() >= 12 {
                    let i = 4 + 2 * rng.below(4);
                    v[i + 1] = v[i + 1].wrapping_add(rng.below(3) as u8).wrapping_sub(1);
                }
            }
        }
    }
    v
}

/// A name on the wire from its labels.
fn name(labels: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for l in labels {
        v.push(l.len() as u8);
        v.extend_from_slice(l);
    }
    v.push(0);
    v
}

/// A resource record: owner (wire form), type, TTL, data.
fn rr(owner: &[u8], rtype: u16, ttl: u32, data: &[u8]) -> Vec<u8> {
    let mut v = owner.to_vec();
    v.extend_from_slice(&rtype.to_be_bytes());
    v.extend_from_slice(&1u16.to_be_bytes());
    v.extend_from_slice(&ttl.to_be_bytes());
    v.extend_from_slice(&(data.len() as u16).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// A response to `qname qtype` with the given sections (records already on the wire).
fn response(
    flags: u16,
    qname: &[u8],
    qtype: u16,
    an: &[Vec<u8>],
    ns: &[Vec<u8>],
    ar: &[Vec<u8>],
) -> Vec<u8> {
    let mut v = vec![0xab, 0xcd];
    v.extend_from_slice(&flags.to_be_bytes());
    for n in [1, an.len(), ns.len(), ar.len()] {
        v.extend_from_slice(&(n as u16).to_be_bytes());
    }
    v.extend_from_slice(qname);
    v.extend_from_slice(&qtype.to_be_bytes());
    v.extend_from_slice(&1u16.to_be_bytes());
    for r in an.iter().chain(ns).chain(ar) {
        v.extend_from_slice(r);
    }
    v
}

/// The OPT record of EDNS: extended rcode, DO bit, options.
fn opt(rcode_high: u8, dnssec_ok: bool, options: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 41, 0x04, 0xd0, rcode_high, 0];
    v.extend_from_slice(&(if dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
    v.extend_from_slice(&(options.len() as u16).to_be_bytes());
    v.extend_from_slice(options);
    v
}

/// Hand-built messages covering what the fast path handles and some of what it leaves.
fn built() -> Vec<Vec<u8>> {
    const QR_RD_RA: u16 = 0x8180;
    let q = name(&[b"Example", b"COM"]);
    let ptr_q = [0xc0, 12];
    let mx = {
        let mut d = vec![0, 10];
        d.extend(name(&[b"MX1", b"example", b"com"]));
        d
    };
    let mx_compressed = {
        let mut d = vec![0, 20];
        d.extend([2, b'm', b'x', 0xc0, 12]);
        d
    };
    let tlsa = {
        let mut d = vec![3, 1, 1];
        d.extend((0..32u8).map(|i| i.wrapping_mul(37)));
        d
    };
    let txt = {
        let mut d = Vec::new();
        for s in [
            &b"v=STSv1; id=20240101"[..],
            b"",
            b"quote\" back\\slash",
            b"caf\xc3\xa9",
            b"bad \xf0\x90\x80 utf8",
        ] {
            d.push(s.len() as u8);
            d.extend_from_slice(s);
        }
        d
    };
    let long_txt = {
        let mut d = Vec::new();
        for i in 0..4u8 {
            d.push(200);
            d.extend((0..200u8).map(|j| b'a' + (i + j) % 26));
        }
        d
    };
    let utf8_at_512 = {
        // 511 ASCII bytes, then a two-byte character across byte 512: both paths cut before
        // it (`message::cut_answer_text`; `String::truncate` panicked there).
        let mut d = vec![255];
        d.extend(std::iter::repeat_n(b'x', 255));
        d.push(255);
        d.extend(std::iter::repeat_n(b'y', 255));
        d.extend([4, b'z', 0xc3, 0xa9, b'w']);
        d
    };
    let odd = name(&[
        b"-dash",
        b"*",
        b"a*b",
        b"dot.in",
        b"sp ace",
        b"\x00\x7f\xff",
        b"_srv",
    ]);
    let idna = name(&[b"xn--caf-dma", b"example"]);
    let soa = {
        let mut d = name(&[b"ns1", b"example", b"com"]);
        d.extend([0xc0, 12]);
        d.extend([0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5]);
        d
    };
    let mut v = vec![
        response(QR_RD_RA, &q, 15, &[rr(&ptr_q, 15, 300, &mx)], &[], &[]),
        response(
            QR_RD_RA | 0x20,
            &q,
            15,
            &[
                rr(&ptr_q, 15, 300, &mx_compressed),
                rr(&ptr_q, 46, 300, b"signature bytes"),
            ],
            &[],
            &[
                rr(&name(&[b"mx", b"example", b"com"]), 1, 60, &[192, 0, 2, 1]),
                opt(0, true, &[]),
            ],
        ),
        response(
            QR_RD_RA,
            &q,
            1,
            &[
                rr(&ptr_q, 5, 60, &name(&[b"Alias", b"example", b"net"])),
                rr(
                    &name(&[b"alias", b"example", b"net"]),
                    1,
                    60,
                    &[10, 0, 0, 1],
                ),
                rr(
                    &ptr_q,
                    28,
                    60,
                    &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                ),
                rr(
                    &ptr_q,
                    28,
                    60,
                    &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4],
                ),
            ],
            &[],
            &[],
        ),
        response(
            QR_RD_RA,
            &name(&[b"_25", b"_tcp", b"mx", b"example", b"com"]),
            52,
            &[rr(&ptr_q, 52, 60, &tlsa)],
            &[],
            &[],
        ),
        response(
            QR_RD_RA,
            &name(&[b"_25", b"_tcp", b"mx"]),
            52,
            &[rr(&ptr_q, 52, 60, &[3, 1, 1])],
            &[],
            &[],
        ),
        response(
            QR_RD_RA,
            &name(&[b"_mta-sts", b"example", b"com"]),
            16,
            &[rr(&ptr_q, 16, 60, &txt)],
            &[],
            &[],
        ),
        response(QR_RD_RA, &q, 16, &[rr(&ptr_q, 16, 60, &long_txt)], &[], &[]),
        response(
            QR_RD_RA,
            &q,
            16,
            &[rr(&ptr_q, 16, 60, &utf8_at_512)],
            &[],
            &[],
        ),
        response(QR_RD_RA, &odd, 12, &[rr(&ptr_q, 12, 60, &odd)], &[], &[]),
        response(QR_RD_RA, &q, 2, &[rr(&ptr_q, 2, 60, &idna)], &[], &[]),
        response(
            QR_RD_RA,
            &q,
            15,
            &[rr(&ptr_q, 15, 60, &{
                let mut d = vec![0, 5];
                d.extend(&idna);
                d
            })],
            &[],
            &[],
        ),
        // NXDOMAIN with SOA and NSEC in the authority section, EDNS with an extended rcode.
        response(
            0x8183,
            &q,
            15,
            &[],
            &[
                rr(&ptr_q, 6, 60, &soa),
                rr(&ptr_q, 47, 60, b"\x00\x00\x06\x40"),
                rr(&ptr_q, 46, 60, b"sig"),
            ],
            &[opt(1, false, &[])],
        ),
        // SOA in the answer section: left to hickory.
        response(QR_RD_RA, &q, 6, &[rr(&ptr_q, 6, 60, &soa)], &[], &[]),
        // EDNS with a Client Subnet option: left to hickory.
        response(
            QR_RD_RA,
            &q,
            1,
            &[rr(&ptr_q, 1, 60, &[1, 2, 3, 4])],
            &[],
            &[opt(0, true, &[0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2])],
        ),
        // Two OPT records, OPT in the answer section, OPT not owned by the root.
        response(
            QR_RD_RA,
            &q,
            1,
            &[],
            &[],
            &[opt(0, true, &[]), opt(0, false, &[])],
        ),
        response(QR_RD_RA, &q, 1, &[opt(0, true, &[])], &[], &[]),
        response(QR_RD_RA, &q, 1, &[], &[], &[rr(&ptr_q, 41, 0, &[])]),
        // Empty data (an UPDATE prerequisite, rejected in a query) and wrong lengths.
        response(QR_RD_RA, &q, 1, &[rr(&ptr_q, 1, 60, &[])], &[], &[]),
        response(QR_RD_RA, &q, 1, &[rr(&ptr_q, 1, 60, &[1, 2, 3])], &[], &[]),
        response(
            QR_RD_RA,
            &q,
            1,
            &[rr(&ptr_q, 1, 60, &[1, 2, 3, 4, 5])],
            &[],
            &[],
        ),
        // Opaque types: NULL, DNSKEY, DS, NSEC3, and an unassigned code (left to hickory).
        response(
            QR_RD_RA,
            &q,
            48,
            &[
                rr(&ptr_q, 10, 60, b"\x00"),
                rr(&ptr_q, 48, 60, b"key"),
                rr(&ptr_q, 43, 60, b"ds!!"),
                rr(&ptr_q, 50, 60, b"n3"),
            ],
            &[],
            &[],
        ),
        response(QR_RD_RA, &q, 1, &[rr(&ptr_q, 999, 60, b"??")], &[], &[]),
        // SRV: a type the fast path does not write.
        response(
            QR_RD_RA,
            &q,
            33,
            &[rr(&ptr_q, 33, 60, &{
                let mut d = vec![0, 1, 0, 2, 0, 25];
                d.extend(&q);
                d
            })],
            &[],
            &[],
        ),
    ];
    // More answers than are kept.
    let many: Vec<Vec<u8>> = (0..70u8)
        .map(|i| rr(&ptr_q, 1, 60, &[10, 0, 0, i]))
        .collect();
    v.push(response(QR_RD_RA, &q, 1, &many, &[], &[]));
    // A query with EDNS and DO, and a query for the root.
    v.push(response(0x0100, &q, 15, &[], &[], &[opt(0, true, &[])]));
    v.push(response(0x0100, &idna, 15, &[], &[], &[]));
    // EDNS options: a cookie and padding (taken), a cut option, an empty NSID, a bad subnet.
    for options in [
        &[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 12, 0, 0][..],
        &[0, 10, 0, 8, 1, 2, 3],
        &[0, 10, 0],
        &[0, 3, 0, 0],
        &[0, 8, 0, 2, 0, 9],
    ] {
        v.push(response(
            QR_RD_RA,
            &q,
            1,
            &[rr(&ptr_q, 1, 60, &[1, 2, 3, 4])],
            &[],
            &[opt(0, true, options)],
        ));
    }
    v.push(response(0x0100, &[0], 2, &[], &[], &[]));
    // Pointers: forward, to itself, into the header, a chain.
    v.push(response(
        QR_RD_RA,
        &q,
        1,
        &[rr(&[0xc0, 40], 1, 60, &[1, 1, 1, 1])],
        &[],
        &[],
    ));
    v.push(response(QR_RD_RA, &[0xc0, 12], 1, &[], &[], &[]));
    v.push(response(QR_RD_RA, &[0xc0, 2], 1, &[], &[], &[]));
    let mut chain = response(QR_RD_RA, &q, 1, &[], &[], &[]);
    let base = chain.len();
    chain[7] = 1; // one answer: a chain of pointers, each to the one before
    chain.extend([0xc0, 12]);
    for i in 0..20 {
        chain.extend([0xc0, (base + 2 * i) as u8]);
    }
    chain.extend(rr(&[0xc0, (base + 40) as u8], 1, 60, &[9, 9, 9, 9]));
    v.push(chain);
    // A name of 254 bytes on the wire and one of 255.
    let l63 = [b'a'; 63];
    let l62 = [b'b'; 62];
    v.push(response(
        QR_RD_RA,
        &name(&[&l63, &l63, &l63, &l62]),
        1,
        &[],
        &[],
        &[],
    ));
    v.push(response(
        QR_RD_RA,
        &name(&[&l63, &l63, &l63, &l63]),
        1,
        &[],
        &[],
        &[],
    ));
    v
}

#[test]
fn the_fast_path_agrees_with_hickory_on_captures_and_mutations() {
    let mut payloads = Vec::new();
    for c in captures() {
        dns_payloads(&c, &mut payloads);
    }
    assert!(
        payloads.len() > 100,
        "only {} DNS payloads found",
        payloads.len()
    );
    let mut real = Tally::default();
    for p in &payloads {
        check(p, &mut real);
    }
    // Nearly every real message takes the fast path.
    assert!(
        real.fast * 10 >= (real.fast + real.fallback_parsed) * 9,
        "{real:?}"
    );
    let mut mutated = Tally::default();
    let mut rng = Rng(0x5eed_d250_fa57);
    let per = (60_000 / payloads.len()).max(4);
    for p in &payloads {
        for _ in 0..per {
            check(&mutate(p, &mut rng), &mut mutated);
        }
    }
    eprintln!(
        "captures: {} payloads {real:?}; mutations: {mutated:?}",
        payloads.len()
    );
    assert!(mutated.fast > 1000, "{mutated:?}");
}

#[test]
fn the_fast_path_agrees_with_hickory_on_built_messages() {
    let mut tally = Tally::default();
    let mut rng = Rng(0xb1a5_7ed0);
    let msgs = built();
    for m in &msgs {
        check(m, &mut tally);
        for _ in 0..5_000 {
            check(&mutate(m, &mut rng), &mut tally);
        }
        // Every truncation.
        for n in 0..m.len() {
            check(&m[..n], &mut tally);
        }
    }
    eprintln!("built: {} messages, {tally:?}", msgs.len());
    assert!(tally.fast > 10_000, "{tally:?}");
}

#[test]
fn the_fast_path_writes_what_hickory_writes() {
    let msgs = built();
    // The MX response with DNSSEC: compressed exchange, RRSIG as base64, EDNS DO.
    let m = fast::parse(&msgs[1]).expect("fast path");
    assert_eq!(m.mx, vec![(20, "mx.example.com".to_string())]);
    assert_eq!(m.answers[0].data, "20 mx.Example.COM.");
    assert_eq!(m.answers[1].rtype, "RRSIG");
    assert!(m.rrsig && m.edns && m.dnssec_ok && m.ad);
    // Escapes in owner and data names.
    let m = fast::parse(&msgs[8]).expect("fast path");
    assert_eq!(
        m.answers[0].data,
        "\\-dash.*.a\\*b.dot\\.in.sp\\040ace.\\000\\177\\377._srv."
    );
    assert_eq!(
        m.qname,
        "\\-dash.*.a\\*b.dot\\.in.sp\\040ace.\\000\\177\\377._srv"
    );
    // Extended rcode from EDNS, NSEC and RRSIG in the authority section.
    let m = fast::parse(&msgs[11]).expect("fast path");
    assert_eq!(m.rcode, hickory_proto::op::ResponseCode::from(1, 3));
    assert!(m.nsec && m.rrsig && m.answers.is_empty());
    // The answer limit.
    let m = fast::parse(&msgs[23]).expect("fast path");
    assert_eq!(m.answers.len(), 64);
    assert!(m.answers_truncated);
}

#[test]
fn types_the_fast_path_does_not_write_fall_back_to_hickory() {
    let msgs = built();
    for (i, what) in [
        (9, "an IDNA label in NS data"),
        (10, "an IDNA label in MX data"),
        (12, "SOA in the answer section"),
        (13, "an EDNS Client Subnet option"),
        (21, "an unassigned type"),
        (22, "SRV"),
    ] {
        assert!(fast::parse(&msgs[i]).is_none(), "{what}");
        let m = message::parse(&msgs[i]).unwrap_or_else(|| panic!("{what}: hickory parses it"));
        assert_eq!(Some(m), message::parse_hickory(&msgs[i]), "{what}");
    }
}

/// How many messages of a capture take the fast path: `DNS_FAST_CAPTURE=file cargo test
/// --release --test dns_fast_path -- --ignored --nocapture`.
#[test]
#[ignore]
fn count_the_fast_path_on_a_capture() {
    let Ok(path) = std::env::var("DNS_FAST_CAPTURE") else {
        return;
    };
    let mut payloads = Vec::new();
    dns_payloads(Path::new(&path), &mut payloads);
    let mut tally = Tally::default();
    for p in &payloads {
        check(p, &mut tally);
    }
    eprintln!("{path}: {} payloads, {tally:?}", payloads.len());
}
