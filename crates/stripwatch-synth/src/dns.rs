//! DNS messages and UDP frames for scenarios: MX and A answers on the wire format, written
//! by hand so that a forged answer can be exactly as an on-path injector would send it.

use std::net::{IpAddr, Ipv4Addr};

/// Record data the scenarios need.
#[derive(Clone, Debug)]
pub enum Rdata<'a> {
    /// Preference and exchange.
    Mx(u16, &'a str),
    /// An IPv4 address.
    A(Ipv4Addr),
    /// A signature over the records of this type, by this signer (the signature bytes are
    /// filler: the analyzer only notes that signatures are present).
    Rrsig(u16, &'a str),
}

fn push_name(out: &mut Vec<u8>, name: &str) {
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

fn qtype_of(r: &Rdata<'_>) -> u16 {
    match r {
        Rdata::Mx(..) => 15,
        Rdata::A(_) => 1,
        Rdata::Rrsig(..) => 46,
    }
}

/// A query for `name`/`qtype` with id `id` (RD set).
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    query_with(id, name, qtype, false)
}

/// An EDNS OPT record (4096-byte payload) with the DNSSEC OK bit.
fn push_opt_do(m: &mut Vec<u8>) {
    m.extend_from_slice(&[0, 0, 41, 0x10, 0x00, 0, 0, 0x80, 0, 0, 0]);
}

/// A query; with `dnssec_ok` it carries EDNS with the DO bit, asking for signatures.
pub fn query_with(id: u16, name: &str, qtype: u16, dnssec_ok: bool) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(dnssec_ok)]);
    push_name(&mut m, name);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    if dnssec_ok {
        push_opt_do(&mut m);
    }
    m
}

/// A response to `query(id, name, qtype)` with the given answers (owner, TTL, data).
pub fn response(id: u16, name: &str, qtype: u16, answers: &[(&str, u32, Rdata<'_>)]) -> Vec<u8> {
    response_with(id, name, qtype, answers, false, false)
}

/// A response; `ad` sets the Authentic Data bit (the resolver validated it), `dnssec_ok`
/// echoes EDNS with DO.
pub fn response_with(
    id: u16,
    name: &str,
    qtype: u16,
    answers: &[(&str, u32, Rdata<'_>)],
    ad: bool,
    dnssec_ok: bool,
) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x81, if ad { 0xa0 } else { 0x80 }, 0, 1]);
    m.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, u8::from(dnssec_ok)]);
    push_name(&mut m, name);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    for (owner, ttl, data) in answers {
        push_name(&mut m, owner);
        m.extend_from_slice(&qtype_of(data).to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m.extend_from_slice(&ttl.to_be_bytes());
        let mut rd = Vec::new();
        match data {
            Rdata::Mx(pref, ex) => {
                rd.extend_from_slice(&pref.to_be_bytes());
                push_name(&mut rd, ex);
            }
            Rdata::A(a) => rd.extend_from_slice(&a.octets()),
            Rdata::Rrsig(covered, signer) => {
                rd.extend_from_slice(&covered.to_be_bytes());
                // Algorithm 13 (ECDSA P-256), labels, original TTL, expiration, inception,
                // key tag, signer, then 64 bytes of signature.
                rd.extend_from_slice(&[13, 2, 0, 0, 0x0e, 0x10]);
                rd.extend_from_slice(&0x7000_0000u32.to_be_bytes());
                rd.extend_from_slice(&0x6000_0000u32.to_be_bytes());
                rd.extend_from_slice(&[0x12, 0x34]);
                push_name(&mut rd, signer);
                rd.extend_from_slice(&[0x5a; 64]);
            }
        }
        m.extend_from_slice(&(rd.len() as u16).to_be_bytes());
        m.extend_from_slice(&rd);
    }
    if dnssec_ok {
        push_opt_do(&mut m);
    }
    m
}

/// An Ethernet/IPv4/UDP frame carrying `payload`.
pub fn udp_frame(
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    ttl: u8,
    ip_id: u16,
    payload: &[u8],
) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.0, dst.0) else {
        return Vec::new();
    };
    let mut frame = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    let mut ip = etherparse::Ipv4Header::new(
        (8 + payload.len()) as u16,
        ttl,
        etherparse::IpNumber::UDP,
        s.octets(),
        d.octets(),
    )
    .unwrap_or_default();
    ip.identification = ip_id;
    ip.header_checksum = ip.calc_header_checksum();
    let udp =
        etherparse::UdpHeader::with_ipv4_checksum(src.1, dst.1, &ip, payload).unwrap_or_default();
    let _ = ip.write(&mut frame);
    let _ = udp.write(&mut frame);
    frame.extend_from_slice(payload);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_analyzer_reads_what_we_write() {
        let r = response(
            7,
            "example.net",
            15,
            &[("example.net", 300, Rdata::Mx(10, "mx.example.net"))],
        );
        let m = stripwatch::dns::message::parse(&r).unwrap();
        assert_eq!(m.mx, vec![(10, "mx.example.net".to_string())]);
        let q = stripwatch::dns::message::parse(&query(7, "example.net", 15)).unwrap();
        assert!(!q.response && stripwatch::dns::message::qtype_text(q.qtype) == "MX");
    }
}
