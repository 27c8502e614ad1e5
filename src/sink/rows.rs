//! The rows stripwatch inserts into ClickHouse, one struct per table of `queries/schema.sql`,
//! made from the same records the ndjson files are made from. Field names are the column names
//! (which are the JSON field names); times become DateTime seconds plus a microseconds column,
//! enumerations their JSON strings, lists of objects Nested columns. The rows also serialize to
//! the disk spool and back (serde), so a replayed row is the row that would have been sent.

use crate::record::CertificateRecord;
use crate::record::DnsRecord;
use crate::record::{Finding, SessionRecord};
use clickhouse::Row;
use serde::{Deserialize, Serialize};

/// A record's time as ClickHouse stores it: DateTime seconds (clamped to DateTime's range,
/// 1970..2106) and the microseconds within that second.
pub fn split_micros(ts_us: i64) -> (u32, u32) {
    let secs = ts_us.div_euclid(1_000_000);
    let usec = ts_us.rem_euclid(1_000_000) as u32;
    if secs < 0 {
        (0, 0)
    } else if secs > u32::MAX as i64 {
        (u32::MAX, 0)
    } else {
        (secs as u32, usec)
    }
}

/// Clamps seconds since the epoch to DateTime's range.
fn clamp_secs(s: i64) -> u32 {
    s.clamp(0, u32::MAX as i64) as u32
}

/// Days since 1970-01-01 of a proleptic Gregorian date (inverse of `util::civil_from_days`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses the RFC 3339 UTC form every record uses (`2026-03-02T10:00:00.123456Z`, fraction
/// optional) into microseconds since the epoch. `None` for anything else.
pub fn parse_rfc3339_micros(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let rest = s.get(19..)?;
    let rest = rest.strip_suffix('Z')?;
    let micros = match rest.strip_prefix('.') {
        None if rest.is_empty() => 0,
        Some(frac) if !frac.is_empty() && frac.len() <= 9 => {
            let digits: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
            if !frac.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            digits.parse::<i64>().ok()?
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    Some((days * 86_400 + h * 3600 + mi * 60 + se) * 1_000_000 + micros)
}

/// The JSON string form of a serde enum (`EndReason::CaptureEnd` -> `capture-end`).
fn text<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn ips(v: &[std::net::IpAddr]) -> Vec<String> {
    v.iter().map(|ip| ip.to_string()).collect()
}

/// The country and AS of both ends (the shared enrichment fields; "" and 0 when unknown).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Geo {
    /// ISO 3166 alpha-2 of the client, "" when unknown.
    pub client_country: String,
    /// AS number of the client, 0 when unknown.
    pub client_asn: u32,
    /// AS organisation of the client.
    pub client_as_org: String,
    /// ISO 3166 alpha-2 of the server.
    pub server_country: String,
    /// AS number of the server.
    pub server_asn: u32,
    /// AS organisation of the server.
    pub server_as_org: String,
}

/// A row of `sessions`.
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct SessionRow {
    pub session_id: String,
    pub ts: u32,
    pub ts_usec: u32,
    pub ts_end: u32,
    pub ts_end_usec: u32,
    pub sensor: String,
    pub client_ip: String,
    pub client_port: u16,
    pub server_ip: String,
    pub server_port: u16,
    pub community_id: String,
    pub verdict: String,
    pub findings: Vec<String>,
    pub banner_code: Option<u16>,
    pub banner: Option<String>,
    pub middlebox_traits: Vec<String>,
    pub greeting_verb: Option<String>,
    pub ehlo_name: Option<String>,
    pub ehlo_reply_code: Option<u16>,
    pub ehlo_reply_name: Option<String>,
    pub ehlo_capabilities: Vec<String>,
    pub starttls_offered: bool,
    pub starttls_sent: bool,
    pub starttls_reply_code: Option<u16>,
    pub starttls_reply_text: Option<String>,
    pub implicit_tls: bool,
    pub tls_started: bool,
    pub tls_client_hello: bool,
    pub tls_server_hello: bool,
    pub tls_alert: Option<String>,
    pub tls_version: Option<String>,
    pub tls_cipher: Option<String>,
    pub tls_sni: Option<String>,
    pub tls_client_versions: Vec<String>,
    pub tls_alpn: Vec<String>,
    pub tls_history: String,
    pub tls_handshake_completed: bool,
    pub cert_fingerprint: Option<String>,
    pub cert_chain_fingerprints: Vec<String>,
    pub handshake_failure: Option<String>,
    pub mail_transactions: u32,
    pub rcpt_commands: u32,
    pub data_commands: u32,
    pub auth_commands: u32,
    pub mail_from: Vec<String>,
    pub rcpt_to: Vec<String>,
    pub gaps: u32,
    pub gap_bytes: u64,
    pub dialog_gaps: u32,
    pub mid_stream: bool,
    pub end_reason: String,
    pub client_packets: u64,
    pub server_packets: u64,
    pub client_bytes: u64,
    pub server_bytes: u64,
    pub retransmissions: u32,
    pub recipient_domain: Option<String>,
    pub mx_host: Option<String>,
    pub mx_addresses: Vec<String>,
    pub dns_transaction_ids: Vec<String>,
    pub dns_finding_ids: Vec<String>,
    #[serde(rename = "mx_tlsa.usage")]
    pub mx_tlsa_usage: Vec<u8>,
    #[serde(rename = "mx_tlsa.selector")]
    pub mx_tlsa_selector: Vec<u8>,
    #[serde(rename = "mx_tlsa.matching_type")]
    pub mx_tlsa_matching_type: Vec<u8>,
    #[serde(rename = "mx_tlsa.data")]
    pub mx_tlsa_data: Vec<String>,
    pub pkix: Vec<String>,
    pub dane: Option<String>,
    pub client_country: String,
    pub client_asn: u32,
    pub client_as_org: String,
    pub server_country: String,
    pub server_asn: u32,
    pub server_as_org: String,
}

impl SessionRow {
    /// The row of one judged session.
    pub fn new(r: &SessionRecord, geo: Geo) -> SessionRow {
        let (ts, ts_usec) = split_micros(r.ts_us);
        let (ts_end, ts_end_usec) = split_micros(r.ts_end_us);
        SessionRow {
            session_id: r.session_id.clone(),
            ts,
            ts_usec,
            ts_end,
            ts_end_usec,
            sensor: r.sensor.clone(),
            client_ip: r.client_ip.to_string(),
            client_port: r.client_port,
            server_ip: r.server_ip.to_string(),
            server_port: r.server_port,
            community_id: r.community_id.clone(),
            verdict: r.verdict.to_string(),
            findings: r.findings.iter().map(|k| k.as_str().to_string()).collect(),
            banner_code: r.banner_code,
            banner: r.banner.clone(),
            middlebox_traits: r.middlebox_traits.iter().map(|t| t.to_string()).collect(),
            greeting_verb: r.greeting_verb.as_ref().map(text),
            ehlo_name: r.ehlo_name.clone(),
            ehlo_reply_code: r.ehlo_reply_code,
            ehlo_reply_name: r.ehlo_reply_name.clone(),
            ehlo_capabilities: r.ehlo_capabilities.clone(),
            starttls_offered: r.starttls_offered,
            starttls_sent: r.starttls_sent,
            starttls_reply_code: r.starttls_reply_code,
            starttls_reply_text: r.starttls_reply_text.clone(),
            implicit_tls: r.implicit_tls,
            tls_started: r.tls_started,
            tls_client_hello: r.tls_client_hello,
            tls_server_hello: r.tls_server_hello,
            tls_alert: r.tls_alert.clone(),
            tls_version: r.tls_version.clone(),
            tls_cipher: r.tls_cipher.clone(),
            tls_sni: r.tls_sni.clone(),
            tls_client_versions: r.tls_client_versions.clone(),
            tls_alpn: r.tls_alpn.clone(),
            tls_history: r.tls_history.clone(),
            tls_handshake_completed: r.tls_handshake_completed,
            cert_fingerprint: r.cert_fingerprint.clone(),
            cert_chain_fingerprints: r.cert_chain_fingerprints.clone(),
            handshake_failure: r.handshake_failure.as_ref().map(text),
            mail_transactions: r.mail_transactions,
            rcpt_commands: r.rcpt_commands,
            data_commands: r.data_commands,
            auth_commands: r.auth_commands,
            mail_from: r.mail_from.clone(),
            rcpt_to: r.rcpt_to.clone(),
            gaps: r.gaps,
            gap_bytes: r.gap_bytes,
            dialog_gaps: r.dialog_gaps,
            mid_stream: r.mid_stream,
            end_reason: text(&r.end_reason),
            client_packets: r.client_packets,
            server_packets: r.server_packets,
            client_bytes: r.client_bytes,
            server_bytes: r.server_bytes,
            retransmissions: r.retransmissions,
            recipient_domain: r.recipient_domain.clone(),
            mx_host: r.mx_host.clone(),
            mx_addresses: ips(&r.mx_addresses),
            dns_transaction_ids: r.dns_transaction_ids.clone(),
            dns_finding_ids: r.dns_finding_ids.clone(),
            mx_tlsa_usage: r.mx_tlsa.iter().map(|t| t.usage).collect(),
            mx_tlsa_selector: r.mx_tlsa.iter().map(|t| t.selector).collect(),
            mx_tlsa_matching_type: r.mx_tlsa.iter().map(|t| t.matching_type).collect(),
            mx_tlsa_data: r.mx_tlsa.iter().map(|t| hex::encode(&t.data)).collect(),
            pkix: r.pkix.iter().map(|p| p.to_string()).collect(),
            dane: r.dane.map(str::to_string),
            client_country: geo.client_country,
            client_asn: geo.client_asn,
            client_as_org: geo.client_as_org,
            server_country: geo.server_country,
            server_asn: geo.server_asn,
            server_as_org: geo.server_as_org,
        }
    }
}

/// A row of `findings`.
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct FindingRow {
    pub finding_id: String,
    pub kind: String,
    pub session_id: Option<String>,
    pub ts: u32,
    pub ts_usec: u32,
    pub sensor: String,
    pub client_ip: String,
    pub client_port: u16,
    pub server_ip: String,
    pub server_port: u16,
    pub community_id: String,
    pub evidence: String,
    pub client_country: String,
    pub client_asn: u32,
    pub client_as_org: String,
    pub server_country: String,
    pub server_asn: u32,
    pub server_as_org: String,
}

impl FindingRow {
    /// The row of one finding. Its time is the record's RFC 3339 text (findings carry no
    /// number); an unreadable text falls back to `fallback_us`, the session's or transaction's
    /// time.
    pub fn new(f: &Finding, fallback_us: i64, geo: Geo) -> FindingRow {
        let (ts, ts_usec) = split_micros(parse_rfc3339_micros(&f.ts).unwrap_or(fallback_us));
        FindingRow {
            finding_id: f.finding_id.clone(),
            kind: f.kind.as_str().to_string(),
            session_id: f.session_id.clone(),
            ts,
            ts_usec,
            sensor: f.sensor.clone(),
            client_ip: f.client_ip.to_string(),
            client_port: f.client_port,
            server_ip: f.server_ip.to_string(),
            server_port: f.server_port,
            community_id: f.community_id.clone(),
            evidence: f.evidence.to_string(),
            client_country: geo.client_country,
            client_asn: geo.client_asn,
            client_as_org: geo.client_as_org,
            server_country: geo.server_country,
            server_asn: geo.server_asn,
            server_as_org: geo.server_as_org,
        }
    }
}

/// A row of `dns`.
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct DnsRow {
    pub transaction_id: String,
    pub ts: u32,
    pub ts_usec: u32,
    pub sensor: String,
    pub client_ip: String,
    pub client_port: u16,
    pub server_ip: String,
    pub server_port: u16,
    pub transport: String,
    pub community_id: String,
    pub id: u16,
    pub qname: String,
    pub qtype: String,
    pub query_seen: bool,
    pub query_do: bool,
    pub rcode: Option<String>,
    pub aa: bool,
    pub tc: bool,
    pub ra: bool,
    pub ad: bool,
    pub rrsig: bool,
    pub nsec: bool,
    #[serde(rename = "answers.name")]
    pub answers_name: Vec<String>,
    #[serde(rename = "answers.rtype")]
    pub answers_rtype: Vec<String>,
    #[serde(rename = "answers.ttl")]
    pub answers_ttl: Vec<u32>,
    #[serde(rename = "answers.data")]
    pub answers_data: Vec<String>,
    pub rtt_ms: Option<f64>,
    pub responses: u32,
    pub response_ip_ttl: Option<u8>,
    pub findings: Vec<String>,
    pub client_country: String,
    pub client_asn: u32,
    pub client_as_org: String,
    pub server_country: String,
    pub server_asn: u32,
    pub server_as_org: String,
}

impl DnsRow {
    /// The row of one DNS transaction.
    pub fn new(r: &DnsRecord, geo: Geo) -> DnsRow {
        let (ts, ts_usec) = split_micros(r.ts_us);
        DnsRow {
            transaction_id: r.transaction_id.clone(),
            ts,
            ts_usec,
            sensor: r.sensor.clone(),
            client_ip: r.client_ip.to_string(),
            client_port: r.client_port,
            server_ip: r.server_ip.to_string(),
            server_port: r.server_port,
            transport: r.transport.to_string(),
            community_id: r.community_id.clone(),
            id: r.id,
            qname: r.qname.clone(),
            qtype: r.qtype.clone(),
            query_seen: r.query_seen,
            query_do: r.query_do,
            rcode: r.rcode.clone(),
            aa: r.aa,
            tc: r.tc,
            ra: r.ra,
            ad: r.ad,
            rrsig: r.rrsig,
            nsec: r.nsec,
            answers_name: r.answers.iter().map(|a| a.name.clone()).collect(),
            answers_rtype: r.answers.iter().map(|a| a.rtype.clone()).collect(),
            answers_ttl: r.answers.iter().map(|a| a.ttl).collect(),
            answers_data: r.answers.iter().map(|a| a.data.clone()).collect(),
            rtt_ms: r.rtt_ms,
            responses: r.responses,
            response_ip_ttl: r.response_ip_ttl,
            findings: r.findings.iter().map(|k| k.as_str().to_string()).collect(),
            client_country: geo.client_country,
            client_asn: geo.client_asn,
            client_as_org: geo.client_as_org,
            server_country: geo.server_country,
            server_asn: geo.server_asn,
            server_as_org: geo.server_as_org,
        }
    }
}

/// A row of `certificates`.
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct CertificateRow {
    pub fingerprint: String,
    pub spki_sha256: String,
    pub subject: String,
    pub issuer: String,
    pub subject_cn: Option<String>,
    pub san_dns: Vec<String>,
    pub not_before: u32,
    pub not_after: u32,
    pub serial: String,
    pub key_type: String,
    pub key_bits: Option<u32>,
    pub signature_algorithm: String,
    pub self_signed: bool,
    pub is_ca: bool,
    pub first_seen: u32,
    pub first_seen_usec: u32,
    pub last_seen: u32,
    pub last_seen_usec: u32,
    pub sessions: u64,
    pub servers: Vec<String>,
    pub leaf: bool,
    pub sensor: String,
}

impl CertificateRow {
    /// The row of one distinct certificate seen by `sensor`.
    pub fn new(c: &CertificateRecord, sensor: &str) -> CertificateRow {
        let (first_seen, first_seen_usec) =
            split_micros(parse_rfc3339_micros(&c.first_seen).unwrap_or(0));
        let (last_seen, last_seen_usec) =
            split_micros(parse_rfc3339_micros(&c.last_seen).unwrap_or(0));
        let i = &c.info;
        CertificateRow {
            fingerprint: i.fingerprint.clone(),
            spki_sha256: i.spki_sha256.clone(),
            subject: i.subject.clone(),
            issuer: i.issuer.clone(),
            subject_cn: i.subject_cn.clone(),
            san_dns: i.san_dns.clone(),
            not_before: clamp_secs(i.not_before_s),
            not_after: clamp_secs(i.not_after_s),
            serial: i.serial.clone(),
            key_type: i.key_type.clone(),
            key_bits: i.key_bits,
            signature_algorithm: i.signature_algorithm.clone(),
            self_signed: i.self_signed,
            is_ca: i.is_ca,
            first_seen,
            first_seen_usec,
            last_seen,
            last_seen_usec,
            sessions: c.sessions,
            servers: c.servers.clone(),
            leaf: c.leaf,
            sensor: sensor.to_string(),
        }
    }
}

/// One table's worth of rows: a batch as inserted and as spooled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "table", content = "rows", rename_all = "snake_case")]
pub enum Rows {
    /// Rows of `sessions`.
    Sessions(Vec<SessionRow>),
    /// Rows of `findings`.
    Findings(Vec<FindingRow>),
    /// Rows of `dns`.
    Dns(Vec<DnsRow>),
    /// Rows of `certificates`.
    Certificates(Vec<CertificateRow>),
}

/// The tables, in the order counters are kept.
pub const TABLES: [&str; 4] = ["sessions", "findings", "dns", "certificates"];

impl Rows {
    /// The table these rows go to.
    pub fn table(&self) -> &'static str {
        TABLES[self.index()]
    }

    /// Position of the table in `TABLES`.
    pub fn index(&self) -> usize {
        match self {
            Rows::Sessions(_) => 0,
            Rows::Findings(_) => 1,
            Rows::Dns(_) => 2,
            Rows::Certificates(_) => 3,
        }
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        match self {
            Rows::Sessions(v) => v.len(),
            Rows::Findings(v) => v.len(),
            Rows::Dns(v) => v.len(),
            Rows::Certificates(v) => v.len(),
        }
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_with_the_record_format() {
        for us in [
            0i64,
            1,
            999_999,
            1_700_000_000_123_456,
            951_782_400_000_000, // 2000-02-29
            4_102_444_800_000_001,
        ] {
            let s = crate::util::rfc3339_micros(us);
            assert_eq!(parse_rfc3339_micros(&s), Some(us), "{s}");
        }
        assert_eq!(
            parse_rfc3339_micros("2026-03-02T10:00:00Z"),
            parse_rfc3339_micros("2026-03-02T10:00:00.000000Z")
        );
        for bad in [
            "",
            "2026-03-02",
            "2026-13-02T10:00:00Z",
            "2026-03-02T10:00:00.x1Z",
        ] {
            assert_eq!(parse_rfc3339_micros(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_are_clamped_to_datetime() {
        assert_eq!(split_micros(-5), (0, 0));
        assert_eq!(split_micros(1_500_000), (1, 500_000));
        assert_eq!(split_micros(i64::MAX), (u32::MAX, 0));
        assert_eq!(clamp_secs(-1), 0);
    }
}
