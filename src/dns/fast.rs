//! A borrowing fast path for [`super::message::parse`]: the header, the questions and the three
//! record sections read straight from the packet, names decoded into the strings the message
//! keeps, without hickory's owned `Message` (a `Vec` and a `Name` per record) and without
//! going through `Display` for every answer.
//!
//! hickory stays the reference: [`parse`] answers only for messages it understands completely
//! and returns `None` ("not mine") for everything else (a type it does not write in any
//! section, SOA in the answers, EDNS options hickory decodes (NSID, DAU, Client Subnet), a
//! non-QUERY opcode, an IDNA label in answer data, and every message hickory would reject),
//! and the caller then hands the bytes to hickory. So a `Some` here must be exactly what
//! hickory's path makes of the same bytes, down to the capacity of its strings (the memory
//! budget counts capacities); the differential fuzz target `dns_fast_vs_hickory` and
//! `tests/dns_fast_path.rs` check that.
//!
//! No recursion, no panic, and nothing allocated beyond the strings and vectors the message
//! keeps: names are decoded into a buffer on the stack, compression pointers are followed at
//! most [`MAX_HOPS`] times and only backwards, every read is bounds-checked.

use super::message::{DnsMessage, MAX_ANSWERS};
use crate::record::{AnswerText, Tlsa};
use base64::Engine as _;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Compression pointers followed per name at most. hickory has no limit (a chain must point
/// strictly backwards, so it ends), but real names use one or two; a longer chain is left to
/// hickory rather than walked here.
const MAX_HOPS: usize = 16;

/// A name hickory writes in its IDNA (Unicode) form when it is record data: left to hickory.
const IDNA_PREFIX: &[u8] = b"xn--";

/// A big-endian `u16` at `pos`, if the packet has it.
fn u16_at(buf: &[u8], pos: usize) -> Option<u16> {
    let b = buf.get(pos..pos.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// A big-endian `u32` at `pos`, if the packet has it.
fn u32_at(buf: &[u8], pos: usize) -> Option<u32> {
    let b = buf.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// How a decoded name is written, if at all.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NameText {
    /// Validated only.
    Skip,
    /// In the form names are compared in (owner and question names): hickory's
    /// `Name::to_ascii`, lowercased, without the trailing dot (the root stays "."), as
    /// `canonical_name` makes it.
    Canonical,
    /// As hickory's `Name` `Display` writes it (names in record data): `to_ascii`'s text, case
    /// kept, trailing dot; except that a label starting with `xn--` is written in Unicode
    /// there, so such a name is not handled here.
    Display,
}

/// The longest text of a name: at most 254 bytes on the wire, each written as at most four
/// characters (an octal escape), and the dots.
const NAME_TEXT_MAX: usize = 1024;

/// A name's text, built on the stack (one per message, reused) and copied into its `String`
/// once: pushing onto a `String` character by character reallocates it several times per name.
struct NameBuf {
    bytes: [u8; NAME_TEXT_MAX],
    len: usize,
}

impl NameBuf {
    fn new() -> NameBuf {
        NameBuf {
            bytes: [0; NAME_TEXT_MAX],
            len: 0,
        }
    }

    fn push(&mut self, b: u8) -> Option<()> {
        *self.bytes.get_mut(self.len)? = b;
        self.len += 1;
        Some(())
    }

    /// The text written (only ASCII is ever written).
    fn text(&self) -> &str {
        self.bytes
            .get(..self.len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }

    /// Writes one label as hickory's `Label::write_ascii` does: letters, digits and `_` as
    /// they are, `-` except first, `*` only first; other printable ASCII behind a backslash;
    /// any other byte as a backslash and three octal digits. `lower` lowercases the letters
    /// (escapes hold no letters, so this is the same as lowercasing the text afterwards).
    fn push_label(&mut self, label: &[u8], lower: bool) -> Option<()> {
        for (i, &b) in label.iter().enumerate() {
            let safe = b.is_ascii_alphanumeric()
                || b == b'_'
                || (b == b'-' && i > 0)
                || (b == b'*' && i == 0);
            if safe {
                self.push(if lower { b.to_ascii_lowercase() } else { b })?;
            } else if b > 0x20 && b < 0x7f {
                self.push(b'\\')?;
                self.push(b)?;
            } else {
                self.push(b'\\')?;
                self.push(b'0' + (b >> 6))?;
                self.push(b'0' + ((b >> 3) & 7))?;
                self.push(b'0' + (b & 7))?;
            }
        }
        Some(())
    }
}

/// What [`read_name`] found.
#[derive(Clone, Copy)]
struct NameRead {
    /// The position after the name in the message (after its first pointer, if it has one).
    end: usize,
    /// Labels.
    labels: usize,
    /// Bytes of the labels, without their length bytes.
    label_bytes: usize,
}

impl NameRead {
    /// What hickory's `Name::len` says, the capacity `Name::to_ascii` starts its `String` with.
    fn ascii_len(&self) -> usize {
        self.labels.max(1) + self.label_bytes
    }
}

/// Reads the name at `start` under exactly hickory's rules (`Name::read`): labels of at most
/// 63 bytes, a name of at most 254 bytes on the wire (labels and their length bytes), a
/// pointer only to an offset before the start of the labels being read, and no label read
/// from at or beyond that start. Writes its text into `text` (emptied first) as `mode` says.
/// `None` when hickory would reject the name or when it is not handled here.
fn read_name(buf: &[u8], start: usize, mode: NameText, text: &mut NameBuf) -> Option<NameRead> {
    text.len = 0;
    let mut pos = start;
    let mut name_start = start;
    // Once a pointer was followed: reading must stay before the labels that pointed here.
    let mut limit = usize::MAX;
    let mut end = None;
    let mut wire = 0usize;
    let mut labels = 0usize;
    let mut hops = 0usize;
    loop {
        if pos >= limit {
            return None;
        }
        let b = *buf.get(pos)?;
        match b & 0xc0 {
            0x00 if b == 0 => {
                pos += 1;
                break;
            }
            0x00 => {
                let len = usize::from(b);
                let label = buf.get(pos + 1..pos + 1 + len)?;
                wire += len + 1;
                if wire > 254 {
                    return None;
                }
                match mode {
                    NameText::Skip => {}
                    NameText::Canonical => {
                        if labels > 0 {
                            text.push(b'.')?;
                        }
                        text.push_label(label, true)?;
                    }
                    NameText::Display => {
                        if label.starts_with(IDNA_PREFIX) {
                            return None;
                        }
                        text.push_label(label, false)?;
                        text.push(b'.')?;
                    }
                }
                labels += 1;
                pos += 1 + len;
            }
            0xc0 => {
                let ptr = usize::from(u16_at(buf, pos)? & 0x3fff);
                if ptr >= name_start {
                    return None;
                }
                hops += 1;
                if hops > MAX_HOPS {
                    return None;
                }
                if end.is_none() {
                    end = Some(pos + 2);
                }
                limit = name_start;
                name_start = ptr;
                pos = ptr;
            }
            _ => return None,
        }
    }
    if mode != NameText::Skip && labels == 0 {
        text.push(b'.')?;
    }
    Some(NameRead {
        end: end.unwrap_or(pos),
        labels,
        label_bytes: wire - labels,
    })
}

/// A `String`'s length and capacity as it grows by appends: the standard library's rule
/// (`RawVec::grow_amortized`: at least double, at least what is needed, at least 8 bytes).
///
/// The strings of a message are counted by capacity in the memory budget (`record::size`, the
/// summary's `memory` windows), so they must end with the capacity hickory's path leaves them
/// with, which is that of its appends (one per character, escape and dot of a name). The
/// capacity is computed here, the `String` allocated once at that size.
#[derive(Clone, Copy)]
struct Growth {
    len: usize,
    cap: usize,
}

impl Growth {
    fn of(s: &str, cap: usize) -> Growth {
        Growth { len: s.len(), cap }
    }

    /// One append of `n` bytes.
    fn append(&mut self, n: usize) {
        if self.cap - self.len < n {
            self.cap = (self.cap * 2).max(self.len + n).max(8);
        }
        self.len += n;
    }

    /// The appends hickory's `Label::write_ascii` and `Name::write_labels` make for `text`:
    /// one per character, escape (`\c`, `\ooo`) and dot.
    fn append_name(&mut self, text: &str) {
        let t = text.as_bytes();
        let mut i = 0;
        while i < t.len() {
            let n = match t.get(i..i + 2) {
                Some([b'\\', d]) if d.is_ascii_digit() => 4,
                Some([b'\\', _]) => 2,
                _ => 1,
            };
            self.append(n);
            i += n;
        }
    }
}

/// A name's text with the capacity `canonical_name` leaves it with: `to_ascii` allocates
/// `Name::len` bytes and grows by its appends (the trailing dot, popped after, is one of them:
/// `with_final_dot` says whether `text` still has it).
fn canonical_string(text: &str, name: NameRead, with_final_dot: bool) -> String {
    let mut g = Growth::of("", name.ascii_len());
    g.append_name(text);
    if name.labels > 0 && !with_final_dot {
        g.append(1);
    }
    let mut s = String::with_capacity(g.cap);
    s.push_str(text);
    s
}

/// The canonical form of a name's `Display` text (as `canonical_name` makes it: lowercase, no
/// trailing dot, the root stays "."), with `canonical_name`'s capacity.
fn canonical_of_display(text: &str, name: NameRead) -> String {
    let mut s = canonical_string(text, name, true);
    s.make_ascii_lowercase();
    if s.len() > 1 && s.ends_with('.') {
        s.pop();
    }
    s
}

/// Appends a name's `Display` text to `data` as hickory's appends would grow it.
fn append_display(data: &mut String, text: &str) {
    let mut g = Growth::of(data, data.capacity());
    g.append_name(text);
    if g.cap > data.capacity() {
        data.reserve_exact(g.cap - data.len());
    }
    data.push_str(text);
}

/// Record data this path understands, borrowed from the packet.
enum Rdata<'a> {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// CNAME, NS, PTR: the position of the name.
    Name(usize),
    /// Preference and the position of the exchange.
    Mx(u16, usize),
    Tlsa(u8, u8, u8, &'a [u8]),
    /// The character strings, length bytes included.
    Txt(&'a [u8]),
    /// Validated, never written here (SOA).
    Silent,
    /// Types hickory keeps as opaque bytes (`NULL`, and the DNSSEC types without its DNSSEC
    /// feature) and writes in base64.
    Opaque(&'a [u8]),
}

/// Types hickory reads as opaque bytes in this build (its `RData::read` has no arm for them and
/// the DNSSEC feature is off): written as base64, valid whatever their content.
fn opaque(rt: RecordType) -> bool {
    matches!(
        rt,
        RecordType::NULL
            | RecordType::RRSIG
            | RecordType::NSEC
            | RecordType::NSEC3
            | RecordType::NSEC3PARAM
            | RecordType::DS
            | RecordType::DNSKEY
            | RecordType::CDS
            | RecordType::CDNSKEY
    )
}

/// Validates the data of a record (`rt`, non-empty, `buf[start..end]`) as hickory's
/// `RData::read` would read it, including that the data read is exactly `end - start` bytes.
fn rdata<'a>(
    buf: &'a [u8],
    rt: RecordType,
    start: usize,
    end: usize,
    nb: &mut NameBuf,
) -> Option<Rdata<'a>> {
    let data = buf.get(start..end)?;
    let name_ends_at = |at: usize, nb: &mut NameBuf| {
        read_name(buf, at, NameText::Skip, nb).is_some_and(|n| n.end == end)
    };
    Some(match rt {
        RecordType::A => Rdata::A(Ipv4Addr::from(<[u8; 4]>::try_from(data).ok()?)),
        RecordType::AAAA => Rdata::Aaaa(Ipv6Addr::from(<[u8; 16]>::try_from(data).ok()?)),
        RecordType::CNAME | RecordType::NS | RecordType::PTR => {
            if !name_ends_at(start, nb) {
                return None;
            }
            Rdata::Name(start)
        }
        RecordType::MX => {
            if data.len() < 3 || !name_ends_at(start + 2, nb) {
                return None;
            }
            Rdata::Mx(u16::from_be_bytes([data[0], data[1]]), start + 2)
        }
        RecordType::TLSA => match data {
            [u, s, m, cert @ ..] => Rdata::Tlsa(*u, *s, *m, cert),
            _ => return None,
        },
        RecordType::TXT => {
            // hickory reads strings while it has read less than the data's length: the last one
            // must end exactly at the end.
            let mut p = 0;
            while p < data.len() {
                p += 1 + usize::from(data[p]);
            }
            if p != data.len() {
                return None;
            }
            Rdata::Txt(data)
        }
        RecordType::SOA => {
            let mname = read_name(buf, start, NameText::Skip, nb)?;
            let rname = read_name(buf, mname.end, NameText::Skip, nb)?;
            if rname.end.checked_add(20) != Some(end) {
                return None;
            }
            Rdata::Silent
        }
        rt if opaque(rt) => Rdata::Opaque(data),
        _ => return None,
    })
}

/// Whether EDNS options are ones hickory reads without judging them: each (code, length,
/// data) complete and the last ending with the record, and none of the codes hickory decodes
/// (NSID 3, DAU 5, Client Subnet 8), whose content could make it reject the message. A cookie
/// or padding, say, is kept as opaque bytes.
fn plain_edns_options(mut options: &[u8]) -> bool {
    while let [c0, c1, l0, l1, rest @ ..] = options {
        let code = u16::from_be_bytes([*c0, *c1]);
        let Some(next) = rest.get(usize::from(u16::from_be_bytes([*l0, *l1]))..) else {
            return false;
        };
        if matches!(code, 3 | 5 | 8) {
            return false;
        }
        options = next;
    }
    options.is_empty()
}

/// Appends `pieces` one `push_str` each: what `write!` does with a format string's literal
/// pieces and its arguments' digits (an integer's `Display` is one `write_str`), so the text and
/// the capacity it grows to are `write!`'s, without the formatting machinery.
fn push_pieces(data: &mut String, pieces: &[&str]) {
    for p in pieces {
        data.push_str(p);
    }
}

/// Appends an IPv4 address as its `Display` does: `write!(f, "{}.{}.{}.{}", ...)`, seven
/// pieces.
fn push_ipv4(data: &mut String, a: Ipv4Addr) {
    let [o0, o1, o2, o3] = a.octets();
    let mut b = [
        itoa::Buffer::new(),
        itoa::Buffer::new(),
        itoa::Buffer::new(),
        itoa::Buffer::new(),
    ];
    let [b0, b1, b2, b3] = &mut b;
    push_pieces(
        data,
        &[
            b0.format(o0),
            ".",
            b1.format(o1),
            ".",
            b2.format(o2),
            ".",
            b3.format(o3),
        ],
    );
}

/// Writes `bytes` in lowercase hex, as hickory writes TLSA data.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
}

/// The sections of a message, in order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Answer,
    Authority,
    Additional,
}

/// Parses a DNS message as [`super::message::parse_hickory`] would, or returns `None` when this
/// path does not handle it (the caller then asks hickory, which also judges malformed messages).
pub fn parse(buf: &[u8]) -> Option<DnsMessage> {
    let header = buf.get(..12)?;
    let (f1, f2) = (header[2], header[3]);
    // Only QUERY: hickory checks records differently for UPDATE, and other opcodes are rare.
    if (f1 >> 3) & 0x0f != 0 {
        return None;
    }
    let count = |i: usize| usize::from(u16::from_be_bytes([header[i], header[i + 1]]));
    let (qdcount, ancount, nscount, arcount) = (count(4), count(6), count(8), count(10));
    let mut out = DnsMessage {
        id: u16::from_be_bytes([header[0], header[1]]),
        response: f1 & 0x80 != 0,
        aa: f1 & 0x04 != 0,
        tc: f1 & 0x02 != 0,
        rd: f1 & 0x01 != 0,
        ra: f2 & 0x80 != 0,
        ad: f2 & 0x20 != 0,
        cd: f2 & 0x10 != 0,
        rcode: ResponseCode::from_low(f2 & 0x0f),
        ..DnsMessage::default()
    };
    let mut pos = 12;
    let mut nb = NameBuf::new();
    // The first question's name as read, for the answers whose owner points at it.
    let mut qname_read = None;
    for i in 0..qdcount {
        let mode = if i == 0 {
            NameText::Canonical
        } else {
            NameText::Skip
        };
        let name = read_name(buf, pos, mode, &mut nb)?;
        pos = name.end;
        let qtype = u16_at(buf, pos)?;
        u16_at(buf, pos + 2)?;
        pos += 4;
        if i == 0 {
            out.qname = canonical_string(nb.text(), name, false);
            out.qtype = Some(RecordType::from(qtype));
            qname_read = Some(name);
        }
    }
    let mut rcode_high = None;
    for (section, n) in [
        (Section::Answer, ancount),
        (Section::Authority, nscount),
        (Section::Additional, arcount),
    ] {
        for _ in 0..n {
            let text = section == Section::Answer && out.answers.len() < MAX_ANSWERS;
            let mut owner = String::new();
            let name;
            match qname_read {
                // An owner that points at the first question's name (nearly every answer) is
                // that name: the same bytes read under the same rules, so its text (and its
                // capacity) is copied.
                Some(q) if text && buf.get(pos..pos + 2) == Some(&[0xc0, 12]) => {
                    owner = String::with_capacity(out.qname.capacity());
                    owner.push_str(&out.qname);
                    name = q;
                    pos += 2;
                }
                _ => {
                    let mode = if text {
                        NameText::Canonical
                    } else {
                        NameText::Skip
                    };
                    name = read_name(buf, pos, mode, &mut nb)?;
                    pos = name.end;
                    if text {
                        owner = canonical_string(nb.text(), name, false);
                    }
                }
            }
            let code = u16_at(buf, pos)?;
            u16_at(buf, pos + 2)?; // class
            let ttl = u32_at(buf, pos + 4)?;
            let rdlength = usize::from(u16_at(buf, pos + 8)?);
            let start = pos + 10;
            let end = start + rdlength;
            if end > buf.len() {
                return None;
            }
            pos = end;
            let rt = RecordType::from(code);
            if rt == RecordType::OPT {
                // EDNS: only in the additional section, once, owned by the root, with options
                // hickory takes as they are.
                if section != Section::Additional
                    || rcode_high.is_some()
                    || name.labels != 0
                    || !plain_edns_options(buf.get(start..end)?)
                {
                    return None;
                }
                rcode_high = Some((ttl >> 24) as u8);
                out.dnssec_ok = ttl & 0x8000 != 0;
                continue;
            }
            // hickory takes empty data as an UPDATE prerequisite and rejects it in a QUERY.
            if rdlength == 0 {
                return None;
            }
            let rd = rdata(buf, rt, start, end, &mut nb)?;
            if section != Section::Additional {
                match rt {
                    RecordType::RRSIG => out.rrsig = true,
                    RecordType::NSEC | RecordType::NSEC3 => out.nsec = true,
                    _ => {}
                }
            }
            if section == Section::Answer {
                if text {
                    answer(buf, &mut nb, &mut out, owner, rt, ttl, rd)?;
                } else {
                    out.answers_truncated = true;
                }
            }
        }
    }
    if let Some(high) = rcode_high {
        out.edns = true;
        out.rcode = ResponseCode::from(high, f2 & 0x0f);
    }
    Some(out)
}

/// Adds one answer: its text as hickory's `RData` `Display` writes it (cut at 512 bytes) and
/// the typed facts of MX, A, AAAA, CNAME and TLSA answers. `None` when the text is not written
/// here. The text is written by the same appends as hickory's (`to_string` starts from an empty
/// `String`), so that it ends with the same capacity.
fn answer(
    buf: &[u8],
    nb: &mut NameBuf,
    out: &mut DnsMessage,
    name: String,
    rt: RecordType,
    ttl: u32,
    rd: Rdata<'_>,
) -> Option<()> {
    let mut data = String::new();
    match rd {
        Rdata::A(a) => {
            push_ipv4(&mut data, a);
            out.addresses.push((name.clone(), IpAddr::V4(a)));
        }
        Rdata::Aaaa(a) => {
            let _ = write!(data, "{a}");
            out.addresses.push((name.clone(), IpAddr::V6(a)));
        }
        Rdata::Name(at) => {
            let target = read_name(buf, at, NameText::Display, nb)?;
            append_display(&mut data, nb.text());
            if rt == RecordType::CNAME {
                out.cnames
                    .push((name.clone(), canonical_of_display(nb.text(), target)));
            }
        }
        Rdata::Mx(pref, at) => {
            let exchange = read_name(buf, at, NameText::Display, nb)?;
            push_pieces(&mut data, &[itoa::Buffer::new().format(pref), " "]);
            append_display(&mut data, nb.text());
            out.mx
                .push((pref, canonical_of_display(nb.text(), exchange)));
        }
        Rdata::Tlsa(usage, selector, matching_type, cert) => {
            let (mut u, mut s, mut m) = (
                itoa::Buffer::new(),
                itoa::Buffer::new(),
                itoa::Buffer::new(),
            );
            push_pieces(
                &mut data,
                &[
                    u.format(usage),
                    " ",
                    s.format(selector),
                    " ",
                    m.format(matching_type),
                    " ",
                ],
            );
            // hickory appends the hex in one piece.
            data.reserve(2 * cert.len());
            push_hex(&mut data, cert);
            out.tlsa.push((
                name.clone(),
                Tlsa {
                    usage,
                    selector,
                    matching_type,
                    data: cert.to_vec(),
                },
            ));
        }
        Rdata::Txt(mut strings) => {
            // Each string converted and appended on its own (a character split across two
            // becomes two replacement characters), without separator: hickory's text.
            while let [len, rest @ ..] = strings {
                let (s, next) = rest.split_at_checked(usize::from(*len))?;
                data.push_str(&String::from_utf8_lossy(s));
                strings = next;
            }
        }
        Rdata::Opaque(bytes) => {
            data.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
        }
        Rdata::Silent => return None,
    }
    super::message::cut_answer_text(&mut data);
    out.answers.push(AnswerText {
        name,
        rtype: <&'static str>::from(rt),
        ttl,
        data,
    });
    Some(())
}
