//! One DNS message, parsed with `hickory-proto` into the facts stripwatch uses: header flags,
//! the question, every answer as text, and the typed records that steer mail (MX, A/AAAA,
//! TLSA, the MTA-STS and TLS-RPT TXT records), plus the DNSSEC signals (AD, DO, RRSIG, NSEC).

use crate::record::{AnswerText, Tlsa};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};
use std::net::IpAddr;

/// Answers kept per message (a larger answer is cut and flagged).
pub(super) const MAX_ANSWERS: usize = 64;

/// The facts of one DNS message. Codes are kept typed (`Copy`, no allocation per message) and
/// become text only where a record is written ([`rcode_text`], [`qtype_text`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DnsMessage {
    /// Transaction id.
    pub id: u16,
    /// A response (QR set).
    pub response: bool,
    /// Authoritative answer.
    pub aa: bool,
    /// Truncated.
    pub tc: bool,
    /// Recursion desired.
    pub rd: bool,
    /// Recursion available.
    pub ra: bool,
    /// Authentic data (the resolver validated it with DNSSEC).
    pub ad: bool,
    /// Checking disabled.
    pub cd: bool,
    /// Response code (written as `NoError`, `NXDomain`, ...: see [`rcode_text`]).
    pub rcode: ResponseCode,
    /// EDNS present.
    pub edns: bool,
    /// The DNSSEC OK bit of EDNS.
    pub dnssec_ok: bool,
    /// Question name, lowercase, no trailing dot.
    pub qname: String,
    /// Question type; `None` when the message has no question (written as "": [`qtype_text`]).
    pub qtype: Option<RecordType>,
    /// Answer section as text, in order.
    pub answers: Vec<AnswerText>,
    /// Answers beyond the limit.
    pub answers_truncated: bool,
    /// RRSIG records anywhere in the answer or authority section.
    pub rrsig: bool,
    /// NSEC or NSEC3 records in the authority section.
    pub nsec: bool,
    /// MX answers: (preference, exchange).
    pub mx: Vec<(u16, String)>,
    /// A and AAAA answers: (owner, address).
    pub addresses: Vec<(String, IpAddr)>,
    /// CNAME answers: (owner, target).
    pub cnames: Vec<(String, String)>,
    /// TLSA answers: (owner, record).
    pub tlsa: Vec<(String, Tlsa)>,
}

/// Lowercase, no trailing dot: the form names are compared in.
pub fn canonical_name(name: &hickory_proto::rr::Name) -> String {
    // Lowercased after writing, not before: the same text as `to_lowercase().to_ascii()` (only
    // ASCII letters change, and escapes are digits), without building a second `Name`.
    let mut s = name.to_ascii();
    s.make_ascii_lowercase();
    if s.len() > 1 && s.ends_with('.') {
        s.pop();
    }
    s
}

/// The text a response code is written as: its `Debug` name (`NoError`, `NXDomain`,
/// `Unknown(12)`), as records have always carried it.
pub fn rcode_text(code: ResponseCode) -> String {
    use ResponseCode as R;
    let name = match code {
        R::NoError => "NoError",
        R::FormErr => "FormErr",
        R::ServFail => "ServFail",
        R::NXDomain => "NXDomain",
        R::NotImp => "NotImp",
        R::Refused => "Refused",
        R::YXDomain => "YXDomain",
        R::YXRRSet => "YXRRSet",
        R::NXRRSet => "NXRRSet",
        R::NotAuth => "NotAuth",
        R::NotZone => "NotZone",
        R::BADVERS => "BADVERS",
        R::BADSIG => "BADSIG",
        R::BADKEY => "BADKEY",
        R::BADTIME => "BADTIME",
        R::BADMODE => "BADMODE",
        R::BADNAME => "BADNAME",
        R::BADALG => "BADALG",
        R::BADTRUNC => "BADTRUNC",
        R::BADCOOKIE => "BADCOOKIE",
        R::Unknown(_) => return format!("{code:?}"),
    };
    // One append to an empty String, as the derived `Debug` writes a unit variant through
    // `format!`: the same text and the same capacity (counted in the memory budget), without
    // the formatting machinery, for every transaction.
    let mut text = String::new();
    text.push_str(name);
    text
}

/// The text a question type is written as: hickory's name of the type (`MX`, `TXT`, `Unknown`
/// for a code it has no name for), "" for a message without a question. A `'static` name: no
/// allocation.
pub fn qtype_text(qtype: Option<RecordType>) -> &'static str {
    qtype.map_or("", <&'static str>::from)
}

/// Bytes of an answer's text kept in the record.
const MAX_ANSWER_TEXT: usize = 512;

/// Cuts an answer's text to [`MAX_ANSWER_TEXT`] bytes, back to the character boundary before
/// the limit when a multi-byte character straddles it (the text is hostile: `String::truncate`
/// at the limit itself panicked there and took the worker down).
pub(super) fn cut_answer_text(data: &mut String) {
    if data.len() > MAX_ANSWER_TEXT {
        let mut end = MAX_ANSWER_TEXT;
        while !data.is_char_boundary(end) {
            end -= 1;
        }
        data.truncate(end);
    }
}

fn answer_text(r: &Record) -> AnswerText {
    let mut data = r.data.to_string();
    cut_answer_text(&mut data);
    AnswerText {
        name: canonical_name(&r.name),
        // The same text as `RecordType::to_string()`, which writes this name.
        rtype: <&'static str>::from(r.record_type()),
        ttl: r.ttl,
        data,
    }
}

/// Parses a DNS message; `None` when it is not one (counted by the caller). Nearly every
/// message takes the borrowing fast path ([`super::fast::parse`]); what it does not handle
/// (and every malformed message) is parsed by hickory, which the fast path is checked against.
pub fn parse(bytes: &[u8]) -> Option<DnsMessage> {
    super::fast::parse(bytes).or_else(|| parse_hickory(bytes))
}

/// Parses a DNS message with hickory's full `Message` decoder: the reference for the fast
/// path, and the parser of whatever it leaves. `None` when it is not a message.
pub fn parse_hickory(bytes: &[u8]) -> Option<DnsMessage> {
    let msg = Message::from_vec(bytes).ok()?;
    let md = &msg.metadata;
    let mut out = DnsMessage {
        id: md.id,
        response: md.message_type == MessageType::Response,
        aa: md.authoritative,
        tc: md.truncation,
        rd: md.recursion_desired,
        ra: md.recursion_available,
        ad: md.authentic_data,
        cd: md.checking_disabled,
        rcode: md.response_code,
        edns: msg.edns.is_some(),
        dnssec_ok: msg.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
        ..DnsMessage::default()
    };
    if let Some(q) = msg.queries.first() {
        out.qname = canonical_name(&q.name);
        out.qtype = Some(q.query_type);
    }
    for r in msg.answers.iter().chain(&msg.authorities) {
        match r.record_type() {
            RecordType::RRSIG => out.rrsig = true,
            RecordType::NSEC | RecordType::NSEC3 => out.nsec = true,
            _ => {}
        }
    }
    for r in &msg.answers {
        if out.answers.len() >= MAX_ANSWERS {
            out.answers_truncated = true;
            break;
        }
        let text = answer_text(r);
        // The owner is the answer's name, already in canonical form: copied, not rebuilt, and
        // only for the types that keep it.
        let owner = || text.name.clone();
        match &r.data {
            RData::MX(mx) => out.mx.push((mx.preference, canonical_name(&mx.exchange))),
            RData::A(a) => out.addresses.push((owner(), IpAddr::V4(a.0))),
            RData::AAAA(a) => out.addresses.push((owner(), IpAddr::V6(a.0))),
            RData::CNAME(c) => out.cnames.push((owner(), canonical_name(&c.0))),
            RData::TLSA(t) => out.tlsa.push((
                owner(),
                Tlsa {
                    usage: u8::from(t.cert_usage),
                    selector: u8::from(t.selector),
                    matching_type: u8::from(t.matching),
                    data: t.cert_data.clone(),
                },
            )),
            _ => {}
        }
        out.answers.push(text);
    }
    Some(out)
}

/// An answer set: (name, type, data) of each answer, sorted (by the type's text, as before the
/// types were typed), each once.
pub type AnswerSet = Vec<(String, &'static str, String)>;

/// The answer set of `answers` as a sorted list of (name, type, data), TTLs and RRSIGs ignored:
/// two responses that differ here disagree about the world, not just about cache age.
pub fn answer_set(answers: &[AnswerText]) -> AnswerSet {
    let rrsig = <&'static str>::from(RecordType::RRSIG);
    let mut v: AnswerSet = answers
        .iter()
        .filter(|a| a.rtype != rrsig)
        .map(|a| (a.name.clone(), a.rtype, a.data.to_ascii_lowercase()))
        .collect();
    v.sort();
    v.dedup();
    v
}

impl DnsMessage {
    /// The answer set of this message ([`answer_set`]).
    pub fn answer_set(&self) -> AnswerSet {
        answer_set(&self.answers)
    }

    /// A question that matters for mail: MX, TLSA, the MTA-STS and TLS-RPT TXT names.
    pub fn mail_relevant_question(&self) -> bool {
        matches!(self.qtype, Some(RecordType::MX | RecordType::TLSA))
            || (self.qtype == Some(RecordType::TXT)
                && (self.qname.starts_with("_mta-sts.") || self.qname.starts_with("_smtp._tls.")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcode_text_is_the_debug_name_with_its_capacity() {
        // Every 12-bit code, and the extended ones an OPT record makes, through hickory's own
        // mapping (which folds unassigned codes into `Unknown`).
        for high in 0..=255u8 {
            for low in 0..=15u8 {
                let code = ResponseCode::from(high, low);
                let (fast, debug) = (rcode_text(code), format!("{code:?}"));
                assert_eq!(fast, debug);
                assert_eq!(fast.capacity(), debug.capacity(), "{debug}");
            }
        }
    }

    #[test]
    fn canonical_names_are_the_lowercased_text_of_the_name() {
        use hickory_proto::rr::Name;
        let labels: [&[u8]; 4] = [b"MX\\.x", b"caf\xc3\xa9", b"Ex\x00AMPLE", b"COM"];
        let odd = Name::from_labels(labels).unwrap();
        for name in [
            odd,
            Name::from_ascii("Mail.Example.ORG.").unwrap(),
            Name::root(),
        ] {
            let mut old = name.to_lowercase().to_ascii();
            if old.len() > 1 && old.ends_with('.') {
                old.pop();
            }
            assert_eq!(canonical_name(&name), old, "{name:?}");
        }
        assert_eq!(
            canonical_name(&Name::from_ascii("Mail.Example.ORG.").unwrap()),
            "mail.example.org"
        );
    }

    /// A response for `example.com MX` with one MX and its address in the additional section.
    fn mx_response() -> Vec<u8> {
        let mut m = vec![
            0x12, 0x34, 0x81, 0xa0, 0, 1, 0, 1, 0, 0, 0, 0, // header: QR RD RA AD
            7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 0, 15, 0, 1,
        ];
        // answer: pointer to the question name, MX, IN, TTL 300, rdlength, pref 10, mx.example.com
        m.extend_from_slice(&[
            0xc0, 12, 0, 15, 0, 1, 0, 0, 1, 44, 0, 7, 0, 10, 2, b'm', b'x', 0xc0, 12,
        ]);
        m
    }

    #[test]
    fn parses_an_mx_answer() {
        let m = parse(&mx_response()).unwrap();
        assert!(m.response && m.ad && m.rd && m.ra);
        assert_eq!(m.id, 0x1234);
        assert_eq!(m.qname, "example.com");
        assert_eq!(m.qtype, Some(RecordType::MX));
        assert_eq!(qtype_text(m.qtype), "MX");
        assert_eq!(rcode_text(m.rcode), "NoError");
        assert_eq!(m.answers[0].rtype, "MX");
        assert_eq!(m.mx, vec![(10, "mx.example.com".to_string())]);
        assert_eq!(m.answers[0].ttl, 300);
        assert!(m.mail_relevant_question());
    }

    /// A response whose TXT answer has 511 ASCII bytes of text and then a two-byte character
    /// across the 512-byte cut.
    fn txt_response_with_a_character_at_the_cut() -> Vec<u8> {
        let mut m = vec![
            0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, // header: QR RD RA
            1, b't', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0, 0, 16, 0, 1,
        ];
        let mut rdata = vec![255];
        rdata.extend(std::iter::repeat_n(b'x', 255));
        rdata.push(255);
        rdata.extend(std::iter::repeat_n(b'y', 255));
        rdata.extend([4, b'z', 0xc3, 0xa9, b'w']);
        m.extend_from_slice(&[0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 60]);
        m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        m.extend_from_slice(&rdata);
        m
    }

    #[test]
    fn a_text_cut_inside_a_character_is_cut_before_it() {
        let bytes = txt_response_with_a_character_at_the_cut();
        let m = parse(&bytes).expect("a message");
        let text = &m.answers[0].data;
        assert_eq!(text.len(), 511, "{text}");
        assert!(text.ends_with("yz"));
        // Both parsers agree, and the fast path no longer leaves this to hickory.
        assert_eq!(Some(&m), parse_hickory(&bytes).as_ref());
        assert_eq!(Some(&m), super::super::fast::parse(&bytes).as_ref());
    }

    #[test]
    fn garbage_is_not_a_message() {
        assert!(parse(&[]).is_none());
        assert!(parse(&[0u8; 5]).is_none());
        let mut cut = mx_response();
        cut.truncate(cut.len() - 3);
        assert!(parse(&cut).is_none());
    }
}
