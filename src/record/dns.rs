//! The DNS records stripwatch writes (`dns.ndjson`) and the answer data that session records
//! carry: answers as text and TLSA records.

use super::{Endpoint, Finding, FindingKind, Micros};
use serde::Serialize;

/// An answer record as text, for evidence and `dns.ndjson`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct AnswerText {
    /// Owner name, lowercase, no trailing dot.
    pub name: String,
    /// Record type (`MX`, `A`, ...): hickory's `'static` name of the `RecordType` (what its
    /// `to_string()` writes), so that an answer costs no allocation for its type.
    pub rtype: &'static str,
    /// Time to live.
    pub ttl: u32,
    /// Record data in presentation form.
    pub data: String,
}

/// One TLSA record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Tlsa {
    /// 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE.
    pub usage: u8,
    /// 0 full certificate, 1 SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0 exact, 1 SHA-256, 2 SHA-512.
    pub matching_type: u8,
    /// The association data, hex.
    #[serde(serialize_with = "ser_hex")]
    pub data: Vec<u8>,
}

impl Tlsa {
    /// Usable for SMTP per RFC 7672 §3.1.3.
    pub fn usable(&self) -> bool {
        matches!(self.usage, 2 | 3) && self.selector <= 1 && self.matching_type <= 2
    }
}

fn ser_hex<S: serde::Serializer>(d: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(d))
}

/// One DNS transaction as written to `dns.ndjson`.
#[derive(Clone, Debug, Serialize)]
pub struct DnsRecord {
    /// Stable id.
    pub transaction_id: String,
    /// Time of the query (or of the first response when the query was not seen).
    pub ts: Micros,
    /// The sensor.
    pub sensor: String,
    /// The client (the side that opened the connection or asked the question).
    #[serde(flatten, with = "super::client_prefix")]
    pub client: Endpoint,
    /// The server.
    #[serde(flatten, with = "super::server_prefix")]
    pub server: Endpoint,
    /// `udp` or `tcp`.
    pub transport: &'static str,
    /// Community ID of the flow.
    pub community_id: String,
    /// DNS id.
    pub id: u16,
    /// Question name.
    pub qname: String,
    /// Question type.
    pub qtype: String,
    /// The query was seen.
    pub query_seen: bool,
    /// The query asked for DNSSEC records (DO bit).
    pub query_do: bool,
    /// Response code of the first response.
    pub rcode: Option<String>,
    /// Flags of the first response.
    pub aa: bool,
    /// Truncated.
    pub tc: bool,
    /// Recursion available.
    pub ra: bool,
    /// Authentic data.
    pub ad: bool,
    /// The first response carried RRSIG records.
    pub rrsig: bool,
    /// The first response carried NSEC/NSEC3 records.
    pub nsec: bool,
    /// Answers of the first response.
    pub answers: Vec<AnswerText>,
    /// Round-trip time of the first response, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Responses seen for this query.
    pub responses: u32,
    /// IP TTL of the first response (an injector is often at another hop distance).
    pub response_ip_ttl: Option<u8>,
    /// Finding kinds.
    pub findings: Vec<FindingKind>,
    /// The findings, written to `findings.ndjson`.
    #[serde(skip)]
    pub finding_details: Vec<Finding>,
}

impl DnsRecord {
    /// A finding on this transaction, seen at `ts_us`; `n` makes its id (`<transaction>-<n>`)
    /// unique per kind: 0 dns-injection, 1 mx-mismatch, 2 dnssec-stripped, 3 injected-segment.
    pub fn finding(
        &self,
        kind: FindingKind,
        n: u8,
        ts_us: i64,
        evidence: serde_json::Value,
    ) -> Finding {
        Finding {
            finding_id: super::finding_id(&self.transaction_id, usize::from(n)),
            kind,
            session_id: None,
            ts: Micros(ts_us),
            sensor: self.sensor.clone(),
            client: self.client.clone(),
            server: self.server.clone(),
            community_id: self.community_id.clone(),
            evidence,
        }
    }

    /// A bare answered MX transaction at `ts_us`, for unit tests elsewhere.
    #[cfg(test)]
    pub fn for_tests(ts_us: i64) -> DnsRecord {
        use std::net::IpAddr;
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let server: IpAddr = "192.0.2.53".parse().unwrap();
        DnsRecord {
            transaction_id: format!("D{ts_us:016x}"),
            ts: Micros(ts_us),
            sensor: "test".into(),
            client: Endpoint::new(client, 40000),
            server: Endpoint::new(server, 53),
            transport: "udp",
            community_id: String::new(),
            id: 1,
            qname: "example.com".into(),
            qtype: "MX".into(),
            query_seen: true,
            query_do: false,
            rcode: Some("NOERROR".into()),
            aa: false,
            tc: false,
            ra: true,
            ad: false,
            rrsig: false,
            nsec: false,
            answers: Vec::new(),
            rtt_ms: None,
            responses: 1,
            response_ip_ttl: Some(64),
            findings: Vec::new(),
            finding_details: Vec::new(),
        }
    }
}
