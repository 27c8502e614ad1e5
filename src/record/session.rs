//! The session record: one per SMTP session, with what it tells about the protection of the mail
//! in it. Field names are the contract with users, with ClickHouse and with later tools; they
//! only ever grow.

use super::{
    CleartextAuth, EndReason, Endpoint, Finding, FindingKind, HandshakeFailure, Micros, Side,
    StsFetch, Tlsa, Verb,
};
use serde::Serialize;
use std::net::IpAddr;

/// One SMTP session and what it tells about the protection of the mail in it.
#[derive(Clone, Debug, Serialize)]
pub struct SessionRecord {
    /// Stable id derived from the flow and its first packet time (same input, same id).
    pub session_id: String,
    /// First packet.
    pub ts: Micros,
    /// Last packet.
    pub ts_end: Micros,
    /// The sensor that saw it.
    pub sensor: String,
    /// The client (the side that opened the connection or asked the question).
    #[serde(flatten, with = "super::client_prefix")]
    pub client: Endpoint,
    /// The server.
    #[serde(flatten, with = "super::server_prefix")]
    pub server: Endpoint,
    /// Community ID v1 flow hash, as Zeek and Suricata print it.
    pub community_id: String,
    /// The most severe finding, else `tls-ok`, `plaintext` or `incomplete`.
    pub verdict: &'static str,
    /// Kinds of the findings on this session, most severe first.
    pub findings: Vec<FindingKind>,
    /// Greeting reply code.
    pub banner_code: Option<u16>,
    /// Greeting text (first line).
    pub banner: Option<String>,
    /// Traits of boxes in the path (`banner-masked`).
    pub middlebox_traits: Vec<&'static str>,
    /// `EHLO` or `HELO`.
    pub greeting_verb: Option<Verb>,
    /// The client's EHLO/HELO argument.
    pub ehlo_name: Option<String>,
    /// Code of the first reply to EHLO (5xx: the server refused ESMTP).
    pub ehlo_reply_code: Option<u16>,
    /// First line of the server's EHLO reply.
    pub ehlo_reply_name: Option<String>,
    /// Capability lines of the cleartext EHLO reply, verbatim.
    pub ehlo_capabilities: Vec<String>,
    /// STARTTLS was listed.
    pub starttls_offered: bool,
    /// The client sent STARTTLS.
    pub starttls_sent: bool,
    /// Reply code to STARTTLS.
    pub starttls_reply_code: Option<u16>,
    /// Reply text to STARTTLS.
    pub starttls_reply_text: Option<String>,
    /// TLS from the first byte (port 465).
    pub implicit_tls: bool,
    /// The client's first bytes after the 220 were TLS.
    pub tls_started: bool,
    /// A ClientHello was seen.
    pub tls_client_hello: bool,
    /// A ServerHello was seen.
    pub tls_server_hello: bool,
    /// First TLS alert from the server: `level/description`.
    pub tls_alert: Option<String>,
    /// Negotiated TLS version (`TLSv1.2`).
    pub tls_version: Option<String>,
    /// Negotiated cipher suite (IANA name).
    pub tls_cipher: Option<String>,
    /// Server name the client asked for.
    pub tls_sni: Option<String>,
    /// Versions the client offered.
    pub tls_client_versions: Vec<String>,
    /// ALPN protocols the client offered.
    pub tls_alpn: Vec<String>,
    /// Handshake messages in order, client upper case, server lower case (as Zeek's
    /// `ssl_history`: C/c hello, S/s server hello, V/v retry, X/x certificate, K/k key exchange,
    /// N/n hello done, G/g client key exchange, I/i change cipher spec, F/f finished, L/l alert,
    /// D/d application data, T/t ticket).
    pub tls_history: String,
    /// Both sides finished the handshake.
    pub tls_handshake_completed: bool,
    /// SHA-256 of the server's leaf certificate (hex), when it was visible.
    pub cert_fingerprint: Option<String>,
    /// SHA-256 of every certificate the server sent, leaf first.
    pub cert_chain_fingerprints: Vec<String>,
    /// Why the upgrade failed.
    pub handshake_failure: Option<HandshakeFailure>,
    /// MAIL commands in cleartext.
    pub mail_transactions: u32,
    /// RCPT commands in cleartext.
    pub rcpt_commands: u32,
    /// DATA and BDAT commands in cleartext.
    pub data_commands: u32,
    /// AUTH commands in cleartext.
    pub auth_commands: u32,
    /// Envelope senders (only with `--log-envelope`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mail_from: Vec<String>,
    /// Envelope recipients (only with `--log-envelope`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rcpt_to: Vec<String>,
    /// Holes in either direction's stream.
    pub gaps: u32,
    /// Bytes lost in holes.
    pub gap_bytes: u64,
    /// Holes inside the cleartext dialog (the ones that can hide what matters).
    pub dialog_gaps: u32,
    /// The capture started after the TCP handshake.
    pub mid_stream: bool,
    /// How the flow ended.
    pub end_reason: EndReason,
    /// Packets client to server.
    pub client_packets: u64,
    /// Packets server to client.
    pub server_packets: u64,
    /// Payload bytes client to server.
    pub client_bytes: u64,
    /// Payload bytes server to client.
    pub server_bytes: u64,
    /// Segments that repeated bytes.
    pub retransmissions: u32,
    /// The domain whose MX lookup led the client here (the recipient's domain).
    pub recipient_domain: Option<String>,
    /// The MX host the server address belongs to: the name the certificate must cover.
    pub mx_host: Option<String>,
    /// The addresses the client got for that MX host.
    pub mx_addresses: Vec<IpAddr>,
    /// The DNS transactions (MX, address, TLSA) behind this session, by `transaction_id`.
    pub dns_transaction_ids: Vec<String>,
    /// Findings on those transactions (`dns-injection`), by `finding_id`.
    pub dns_finding_ids: Vec<String>,
    /// TLSA records the client received for `_port._tcp.<mx_host>`.
    pub mx_tlsa: Vec<Tlsa>,
    /// The id of the `v=STSv1` TXT record the client received for `_mta-sts.<recipient_domain>`
    /// before the session; empty when its answer held no such record (NXDOMAIN, none, or not
    /// one valid record); None when no such lookup was seen.
    pub sts_txt: Option<String>,
    /// How the client's policy fetch(es) from `mta-sts.<recipient_domain>` over TCP/443 ended
    /// (the worst of them); None when the session has no recipient domain or fetches are not
    /// followed (`--no-mta-sts-fetches`).
    pub sts_fetch: Option<StsFetch>,
    /// The fetch connections behind `sts_fetch`: `F` + 16 hex digits of SHA-1(Community ID ‖
    /// first packet time), like `session_id`.
    pub sts_fetch_ids: Vec<String>,
    /// PKIX outcomes of the server's chain (`trusted`/`not-trusted`, then `expired`,
    /// `not-yet-valid`, `self-signed`, `host-mismatch`); empty when no chain was seen. Findings
    /// too, unless DANE authenticated the chain.
    pub pkix: Vec<&'static str>,
    /// DANE outcome: `dane-ee`, `dane-ta`, `tlsa-invalid`; None when no usable TLSA record
    /// applies or no chain was seen.
    pub dane: Option<&'static str>,
    /// The direction the capture does not show at all (`server` when the client sent data and
    /// not one packet of the server was seen; `client` the other way round): asymmetric
    /// routing or a one-way tap. The session is judged on what the other side shows.
    pub missing_side: Option<Side>,
    /// Fields whose value was cut at its limit (`ehlo_name`, `banner`, `ehlo_capabilities`,
    /// `starttls_reply_text`, `mail_from`, `rcpt_to`).
    pub truncated: Vec<&'static str>,
    /// The server's certificate chain (DER, leaf first), handed from the worker to the
    /// certificate judge and dropped there: records never carry certificates.
    #[serde(skip)]
    pub cert_chain: Vec<Vec<u8>>,
    /// Negotiated version and cipher numbers, for the judge.
    #[serde(skip)]
    pub tls_ids: (Option<u16>, Option<u16>),
    /// The full findings, written to their own file.
    #[serde(skip)]
    pub finding_details: Vec<Finding>,
    /// Facts the correlator needs.
    #[serde(skip)]
    pub correlation: CorrelationFacts,
}

/// What the cross-session rules need to know about a session.
#[derive(Clone, Debug, Default)]
pub struct CorrelationFacts {
    /// An EHLO reply without STARTTLS and without an overwritten token: missing or never
    /// supported, which only history can tell.
    pub not_offered: bool,
    /// The upgrade failed (command rejected or handshake failed): a later plaintext session is a
    /// fallback.
    pub failed_upgrade_at: Option<i64>,
    /// Mail went in cleartext.
    pub plaintext_mail: bool,
    /// The client sent AUTH in cleartext (mechanism and counts only, never the credential).
    pub cleartext_auth: Option<CleartextAuth>,
}

impl SessionRecord {
    /// Adds a finding to the session, with a stable id (the session id and the finding's
    /// position), so that a replay of the same capture gives the same ids.
    pub fn add_finding(&mut self, kind: FindingKind, ts_us: i64, evidence: serde_json::Value) {
        let finding = Finding {
            finding_id: super::finding_id(&self.session_id, self.finding_details.len()),
            kind,
            session_id: Some(self.session_id.clone()),
            ts: Micros(ts_us),
            sensor: self.sensor.clone(),
            client: Endpoint::new(self.client.ip, self.client.port),
            server: Endpoint::new(self.server.ip, self.server.port),
            community_id: self.community_id.clone(),
            evidence,
        };
        self.finding_details.push(finding);
        if !self.findings.contains(&kind) {
            self.findings.push(kind);
        }
    }
}
