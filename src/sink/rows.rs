//! The rows stripwatch inserts into ClickHouse, one struct per table of `queries/schema.sql`,
//! made from the same records the ndjson files are made from. Field names are the column names
//! (which are the JSON field names); times become DateTime seconds plus a microseconds column,
//! taken from the integer times the records carry (`ts`, `first_seen`, ... are `Micros`), never parsed back
//! from their text; enumerations become their JSON strings, lists of objects Nested columns. The rows also serialize to
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
    pub sts_txt: Option<String>,
    pub sts_fetch: Option<String>,
    pub sts_fetch_ids: Vec<String>,
    pub pkix: Vec<String>,
    pub dane: Option<String>,
    pub missing_side: Option<String>,
    pub truncated: Vec<String>,
    pub client_country: String,
    pub client_asn: u32,
    pub client_as_org: String,
    pub server_country: String,
    pub server_asn: u32,
    pub server_as_org: String,
}

impl SessionRow {
    /// The row of one judged session.
    pub fn new(r: &SessionRecord) -> SessionRow {
        let (ts, ts_usec) = split_micros(r.ts.0);
        let (ts_end, ts_end_usec) = split_micros(r.ts_end.0);
        SessionRow {
            session_id: r.session_id.clone(),
            ts,
            ts_usec,
            ts_end,
            ts_end_usec,
            sensor: r.sensor.clone(),
            client_ip: r.client.ip.to_string(),
            client_port: r.client.port,
            server_ip: r.server.ip.to_string(),
            server_port: r.server.port,
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
            sts_txt: r.sts_txt.clone(),
            sts_fetch: r.sts_fetch.map(|f| f.as_str().to_string()),
            sts_fetch_ids: r.sts_fetch_ids.clone(),
            pkix: r.pkix.iter().map(|p| p.to_string()).collect(),
            dane: r.dane.map(str::to_string),
            missing_side: r.missing_side.as_ref().map(text),
            truncated: r.truncated.iter().map(|t| t.to_string()).collect(),
            client_country: r.client.country.clone(),
            client_asn: r.client.asn,
            client_as_org: r.client.as_org.clone(),
            server_country: r.server.country.clone(),
            server_asn: r.server.asn,
            server_as_org: r.server.as_org.clone(),
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
    /// The row of one finding.
    pub fn new(f: &Finding) -> FindingRow {
        let (ts, ts_usec) = split_micros(f.ts.0);
        FindingRow {
            finding_id: f.finding_id.clone(),
            kind: f.kind.as_str().to_string(),
            session_id: f.session_id.clone(),
            ts,
            ts_usec,
            sensor: f.sensor.clone(),
            client_ip: f.client.ip.to_string(),
            client_port: f.client.port,
            server_ip: f.server.ip.to_string(),
            server_port: f.server.port,
            community_id: f.community_id.clone(),
            evidence: f.evidence.to_string(),
            client_country: f.client.country.clone(),
            client_asn: f.client.asn,
            client_as_org: f.client.as_org.clone(),
            server_country: f.server.country.clone(),
            server_asn: f.server.asn,
            server_as_org: f.server.as_org.clone(),
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
    pub fn new(r: &DnsRecord) -> DnsRow {
        let (ts, ts_usec) = split_micros(r.ts.0);
        DnsRow {
            transaction_id: r.transaction_id.clone(),
            ts,
            ts_usec,
            sensor: r.sensor.clone(),
            client_ip: r.client.ip.to_string(),
            client_port: r.client.port,
            server_ip: r.server.ip.to_string(),
            server_port: r.server.port,
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
            answers_rtype: r.answers.iter().map(|a| a.rtype.to_string()).collect(),
            answers_ttl: r.answers.iter().map(|a| a.ttl).collect(),
            answers_data: r.answers.iter().map(|a| a.data.clone()).collect(),
            rtt_ms: r.rtt_ms,
            responses: r.responses,
            response_ip_ttl: r.response_ip_ttl,
            findings: r.findings.iter().map(|k| k.as_str().to_string()).collect(),
            client_country: r.client.country.clone(),
            client_asn: r.client.asn,
            client_as_org: r.client.as_org.clone(),
            server_country: r.server.country.clone(),
            server_asn: r.server.asn,
            server_as_org: r.server.as_org.clone(),
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
        let (first_seen, first_seen_usec) = split_micros(c.first_seen.0);
        let (last_seen, last_seen_usec) = split_micros(c.last_seen.0);
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
    use crate::record::{
        AnswerText, CertInfo, EndReason, Endpoint, FindingKind, HandshakeFailure, Micros, Side,
        StsFetch, Tlsa, Verb, verdict,
    };
    use serde_json::{Value, json};
    use std::collections::BTreeSet;

    // One key set for each table: the keys of the ndjson record, the columns of the row struct
    // (what the insert names) and the columns of `CREATE TABLE` in queries/schema.sql must agree,
    // up to the differences listed here. A field added in one place only fails
    // `records_rows_and_schema_have_one_key_set`.

    /// Columns only ClickHouse has: `(table, column, why)`.
    const CLICKHOUSE_ONLY: &[(&str, &str, &str)] = &[
        // Times: ClickHouse 18.16's DateTime holds whole seconds, so the microseconds of each
        // time get a column of their own; the ndjson text carries them in the RFC 3339 string.
        ("sessions", "ts_usec", "microseconds of ts"),
        ("sessions", "ts_end_usec", "microseconds of ts_end"),
        ("findings", "ts_usec", "microseconds of ts"),
        ("dns", "ts_usec", "microseconds of ts"),
        (
            "certificates",
            "first_seen_usec",
            "microseconds of first_seen",
        ),
        (
            "certificates",
            "last_seen_usec",
            "microseconds of last_seen",
        ),
        // certificates.ndjson is the output of one run of one sensor; the table gathers the
        // certificates of every sensor and keys on the sensor (ORDER BY fingerprint, sensor, ...).
        ("certificates", "sensor", "one table for every sensor"),
    ];

    /// Record keys holding a list of objects, which ClickHouse stores as a Nested column: the
    /// key `name` of the record is the columns `name.<key>` for every key of its objects
    /// (schema.sql: "lists of objects: Nested"). `(table, key)`.
    const NESTED: &[(&str, &str)] = &[("sessions", "mx_tlsa"), ("dns", "answers")];

    // No key exists only in the ndjson records: every record key is a column.

    /// The keys a record writes, with the lists of objects named in `NESTED` spelled as their
    /// Nested columns. Any other list of objects fails: it needs a decision (Nested or a JSON
    /// string) and an entry in `NESTED`.
    fn record_keys(table: &str, record: &impl Serialize) -> BTreeSet<String> {
        let Value::Object(map) = serde_json::to_value(record).unwrap() else {
            panic!("{table}: a record serializes to a JSON object");
        };
        let mut keys = BTreeSet::new();
        for (k, v) in &map {
            let objects = match v {
                Value::Array(items) if items.iter().any(Value::is_object) => Some(items),
                _ => None,
            };
            match (objects, NESTED.contains(&(table, k.as_str()))) {
                (None, false) => {
                    keys.insert(k.clone());
                }
                (Some(items), true) => {
                    let Some(Value::Object(first)) = items.first() else {
                        panic!("{table}.{k}: a list of objects");
                    };
                    keys.extend(first.keys().map(|sub| format!("{k}.{sub}")));
                }
                (None, true) => panic!("{table}.{k} is in NESTED: give the sample one object"),
                (Some(_), false) => panic!("{table}.{k} is a list of objects: add it to NESTED"),
            }
        }
        keys
    }

    /// The column names of a row struct: what the insert sends (`Row::COLUMN_NAMES`, from the
    /// derive, which reads the serde names) and, checked equal, the keys its serde form has
    /// (what the spool writes).
    fn row_columns<R: Row + Serialize>(table: &str, row: &R) -> BTreeSet<String> {
        let names: BTreeSet<String> = R::COLUMN_NAMES.iter().map(|c| c.to_string()).collect();
        let Value::Object(map) = serde_json::to_value(row).unwrap() else {
            panic!("{table}: a row serializes to a JSON object");
        };
        let serde_names: BTreeSet<String> = map.keys().cloned().collect();
        assert_eq!(
            names, serde_names,
            "{table}: COLUMN_NAMES and the row's serde keys differ"
        );
        names
    }

    /// The columns of `CREATE TABLE IF NOT EXISTS <table>` in queries/schema.sql, Nested
    /// columns as `name.<sub>`.
    fn schema_columns(table: &str) -> BTreeSet<String> {
        let sql = include_str!("../../queries/schema.sql");
        let head = format!("CREATE TABLE IF NOT EXISTS {table}\n(");
        let start = sql
            .find(&head)
            .unwrap_or_else(|| panic!("schema.sql has no `{head}`"))
            + head.len();
        let mut items = Vec::new();
        let mut item = String::new();
        let mut depth = 1;
        for c in sql[start..].chars() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                ',' if depth == 1 => {
                    items.push(std::mem::take(&mut item));
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        items.push(item);
        let mut columns = BTreeSet::new();
        for item in items {
            let item: String = item
                .lines()
                .map(|l| l.split("--").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join(" ");
            let (name, ty) = item
                .trim()
                .split_once(char::is_whitespace)
                .unwrap_or_else(|| panic!("{table}: no column in {item:?}"));
            match ty.trim().strip_prefix("Nested(") {
                Some(inner) => {
                    for sub in inner.trim_end_matches(')').split(',') {
                        let sub = sub.split_whitespace().next().unwrap();
                        columns.insert(format!("{name}.{sub}"));
                    }
                }
                None => {
                    columns.insert(name.to_string());
                }
            }
        }
        columns
    }

    /// What keeps one table's three key sets from being one, as sentences (empty: in step).
    fn key_set_problems(
        table: &str,
        record: BTreeSet<String>,
        row: BTreeSet<String>,
        schema: BTreeSet<String>,
    ) -> Vec<String> {
        let diff = |a: &BTreeSet<String>, b: &BTreeSet<String>| -> Vec<String> {
            a.difference(b).cloned().collect()
        };
        let mut problems = Vec::new();
        if row != schema {
            problems.push(format!(
                "{table}: row struct and schema.sql differ: only in the row {:?}, only in schema.sql {:?}",
                diff(&row, &schema),
                diff(&schema, &row)
            ));
        }
        let only_ch: BTreeSet<String> = CLICKHOUSE_ONLY
            .iter()
            .filter(|(t, _, _)| *t == table)
            .map(|(_, c, _)| c.to_string())
            .collect();
        let stale = diff(&only_ch, &schema);
        if !stale.is_empty() {
            problems.push(format!(
                "{table}: CLICKHOUSE_ONLY names columns schema.sql lacks: {stale:?}"
            ));
        }
        let both: Vec<&String> = only_ch.intersection(&record).collect();
        if !both.is_empty() {
            problems.push(format!(
                "{table}: CLICKHOUSE_ONLY names keys the record has: {both:?}"
            ));
        }
        let expected: BTreeSet<String> = schema.difference(&only_ch).cloned().collect();
        if record != expected {
            problems.push(format!(
                "{table}: record and schema.sql differ (beyond CLICKHOUSE_ONLY): only in the record {:?}, only in schema.sql {:?}",
                diff(&record, &expected),
                diff(&expected, &record)
            ));
        }
        problems
    }

    fn ip(s: &str) -> std::net::IpAddr {
        s.parse().unwrap()
    }

    /// An enriched client end, so that the enrichment columns are filled too.
    fn client_end() -> Endpoint {
        Endpoint {
            ip: ip("192.0.2.1"),
            port: 40000,
            country: "DE".into(),
            asn: 1,
            as_org: "a".into(),
        }
    }

    /// An enriched server end.
    fn server_end(addr: &str, port: u16) -> Endpoint {
        Endpoint {
            ip: ip(addr),
            port,
            country: "FR".into(),
            asn: 2,
            as_org: "b".into(),
        }
    }

    // The samples are struct literals with every optional field set and every list filled, so
    // that a new record field must be written here (the test does not compile otherwise) and
    // shows up in the record's keys.

    fn sample_finding() -> Finding {
        Finding {
            finding_id: "S-0".into(),
            kind: FindingKind::StarttlsStripped,
            session_id: Some("S".into()),
            ts: Micros(1_772_445_600_000_000),
            sensor: "t".into(),
            client: client_end(),
            server: server_end("198.51.100.7", 25),
            community_id: "1:x".into(),
            evidence: json!({"k": "v"}),
        }
    }

    fn sample_session() -> SessionRecord {
        SessionRecord {
            session_id: "S".into(),
            ts: Micros(1_772_445_600_000_000),
            ts_end: Micros(1_772_445_601_000_000),
            sensor: "t".into(),
            client: client_end(),
            server: server_end("198.51.100.7", 25),
            community_id: "1:x".into(),
            verdict: verdict::TLS_OK,
            findings: vec![FindingKind::StarttlsStripped],
            banner_code: Some(220),
            banner: Some("mx".into()),
            middlebox_traits: vec!["banner-masked"],
            greeting_verb: Some(Verb::Ehlo),
            ehlo_name: Some("client".into()),
            ehlo_reply_code: Some(250),
            ehlo_reply_name: Some("mx".into()),
            ehlo_capabilities: vec!["STARTTLS".into()],
            starttls_offered: true,
            starttls_sent: true,
            starttls_reply_code: Some(220),
            starttls_reply_text: Some("go".into()),
            implicit_tls: false,
            tls_started: true,
            tls_client_hello: true,
            tls_server_hello: true,
            tls_alert: Some("fatal/handshake_failure".into()),
            tls_version: Some("TLSv1.2".into()),
            tls_cipher: Some("TLS_AES_128_GCM_SHA256".into()),
            tls_sni: Some("mx.example".into()),
            tls_client_versions: vec!["TLSv1.2".into()],
            tls_alpn: vec!["smtp".into()],
            tls_history: "Cs".into(),
            tls_handshake_completed: true,
            cert_fingerprint: Some("ab".into()),
            cert_chain_fingerprints: vec!["ab".into()],
            handshake_failure: Some(HandshakeFailure::Alert),
            pkix: vec!["not-trusted", "expired"],
            dane: Some("dane-ee"),
            missing_side: Some(Side::Server),
            truncated: vec!["ehlo_name"],
            mail_transactions: 1,
            rcpt_commands: 1,
            data_commands: 1,
            auth_commands: 1,
            mail_from: vec!["a@example".into()],
            rcpt_to: vec!["b@example".into()],
            gaps: 1,
            gap_bytes: 1,
            dialog_gaps: 1,
            mid_stream: true,
            end_reason: EndReason::Fin,
            client_packets: 1,
            server_packets: 1,
            client_bytes: 1,
            server_bytes: 1,
            retransmissions: 1,
            recipient_domain: Some("example".into()),
            mx_host: Some("mx.example".into()),
            mx_addresses: vec![ip("198.51.100.7")],
            dns_transaction_ids: vec!["D".into()],
            dns_finding_ids: vec!["D-0".into()],
            mx_tlsa: vec![Tlsa {
                usage: 3,
                selector: 1,
                matching_type: 1,
                data: vec![0xab],
            }],
            sts_txt: Some("20260302".into()),
            sts_fetch: Some(StsFetch::Reset),
            sts_fetch_ids: vec!["F".into()],
            cert_chain: vec![vec![0]],
            tls_ids: (Some(0x0303), Some(0x1301)),
            finding_details: vec![sample_finding()],
            correlation: Default::default(),
        }
    }

    fn sample_dns() -> DnsRecord {
        DnsRecord {
            transaction_id: "D".into(),
            ts: Micros(1_772_445_600_000_000),
            sensor: "t".into(),
            client: client_end(),
            server: server_end("192.0.2.53", 53),
            transport: "udp",
            community_id: "1:x".into(),
            id: 1,
            qname: "example".into(),
            qtype: "MX".into(),
            query_seen: true,
            query_do: true,
            rcode: Some("NOERROR".into()),
            aa: true,
            tc: true,
            ra: true,
            ad: true,
            rrsig: true,
            nsec: true,
            answers: vec![AnswerText {
                name: "example".into(),
                rtype: "MX",
                ttl: 60,
                data: "10 mx.example".into(),
            }],
            rtt_ms: Some(1.5),
            responses: 1,
            response_ip_ttl: Some(64),
            findings: vec![FindingKind::DnsInjection],
            finding_details: vec![sample_finding()],
        }
    }

    fn sample_certificate() -> CertificateRecord {
        CertificateRecord {
            info: CertInfo {
                fingerprint: "ab".into(),
                spki_sha256: "cd".into(),
                subject: "CN=mx.example".into(),
                issuer: "CN=ca".into(),
                subject_cn: Some("mx.example".into()),
                san_dns: vec!["mx.example".into()],
                not_before: "2026-01-01T00:00:00.000000Z".into(),
                not_after: "2027-01-01T00:00:00.000000Z".into(),
                not_before_s: 1_767_225_600,
                not_after_s: 1_798_761_600,
                serial: "01".into(),
                key_type: "EC".into(),
                key_bits: Some(256),
                signature_algorithm: "ecdsa-with-SHA256".into(),
                self_signed: true,
                is_ca: true,
            },
            first_seen: Micros(1_772_445_600_000_000),
            last_seen: Micros(1_772_445_601_000_000),
            sessions: 2,
            servers: vec!["198.51.100.7:25".into()],
            leaf: true,
        }
    }

    #[test]
    fn records_rows_and_schema_have_one_key_set() {
        let (s, f, d, c) = (
            sample_session(),
            sample_finding(),
            sample_dns(),
            sample_certificate(),
        );
        let tables = [
            (
                "sessions",
                record_keys("sessions", &s),
                row_columns("sessions", &SessionRow::new(&s)),
            ),
            (
                "findings",
                record_keys("findings", &f),
                row_columns("findings", &FindingRow::new(&f)),
            ),
            (
                "dns",
                record_keys("dns", &d),
                row_columns("dns", &DnsRow::new(&d)),
            ),
            (
                "certificates",
                record_keys("certificates", &c),
                row_columns("certificates", &CertificateRow::new(&c, "t")),
            ),
        ];
        assert_eq!(tables.each_ref().map(|t| t.0), TABLES);
        let problems: Vec<String> = tables
            .into_iter()
            .flat_map(|(table, record, row)| {
                key_set_problems(table, record, row, schema_columns(table))
            })
            .collect();
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn the_schema_parser_reads_nested_columns() {
        let dns = schema_columns("dns");
        for c in [
            "answers.name",
            "answers.rtype",
            "answers.ttl",
            "answers.data",
            "ts",
        ] {
            assert!(dns.contains(c), "{c} in {dns:?}");
        }
        assert!(!dns.contains("answers"));
        assert!(
            !schema_columns("sessions").contains("day"),
            "sessions_daily is not sessions"
        );
    }

    #[test]
    fn times_are_clamped_to_datetime() {
        assert_eq!(split_micros(-5), (0, 0));
        assert_eq!(split_micros(1_500_000), (1, 500_000));
        assert_eq!(split_micros(i64::MAX), (u32::MAX, 0));
        assert_eq!(clamp_secs(-1), 0);
    }
}
