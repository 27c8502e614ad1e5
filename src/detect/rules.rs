//! Per-session rules: the findings one SMTP session shows on its own, and the verdict.

use crate::flow::FlowSummary;
use crate::flow::lineage::{OutOfLine, hop_distance};
use crate::record::{
    CorrelationFacts, EndReason, Endpoint, FindingKind, Micros, SessionRecord, Side, verdict,
};
use crate::smtp::SessionFacts;
use crate::tls::handshake::{cipher_name, version_name};
use crate::util::{community_id, rfc3339_micros};
use serde_json::json;

/// Builds the session record with every finding that needs no other session. The cross-session
/// findings and the verdict are added by the correlator (`finish_verdict`). The facts' texts and
/// lists are moved into the record, not copied (a session has a dozen of them); evidence that
/// repeats one reads it from the record.
pub fn build_record(
    flow: &FlowSummary,
    mut facts: SessionFacts,
    end: EndReason,
    sensor: &str,
) -> SessionRecord {
    let cid = community_id(
        6,
        flow.client.0,
        flow.client.1,
        flow.server.0,
        flow.server.1,
    );
    let session_id = session_id(&cid, flow.first_us);
    let mut traits = Vec::new();
    if facts.banner_masked {
        traits.push("banner-masked");
    }
    let mut rec = SessionRecord {
        session_id,
        ts: Micros(flow.first_us),
        ts_end: Micros(flow.last_us),
        sensor: sensor.to_string(),
        client: Endpoint::new(flow.client.0, flow.client.1),
        server: Endpoint::new(flow.server.0, flow.server.1),
        community_id: cid,
        verdict: verdict::INCOMPLETE,
        findings: Vec::new(),
        banner_code: facts.banner_code,
        banner: facts.banner.take().map(exact),
        middlebox_traits: traits,
        greeting_verb: facts.greeting_verb,
        ehlo_name: facts.ehlo_name.take().map(exact),
        ehlo_reply_code: facts.ehlo_reply_code,
        ehlo_reply_name: facts.ehlo_reply_name.take().map(exact),
        ehlo_capabilities: exact_texts(std::mem::take(&mut facts.ehlo_capabilities)),
        starttls_offered: facts.starttls_offered,
        starttls_sent: facts.starttls_sent,
        starttls_reply_code: facts.starttls_reply_code,
        starttls_reply_text: facts.starttls_reply_text.take().map(exact),
        implicit_tls: facts.implicit_tls,
        tls_started: facts.tls_started,
        tls_client_hello: facts.tls_client.client_hello,
        tls_server_hello: facts.tls_server.server_hello,
        tls_alert: facts
            .tls_server
            .alert
            .map(|(l, d)| format!("server {l}/{d}"))
            .or_else(|| {
                facts
                    .tls_client
                    .alert
                    .map(|(l, d)| format!("client {l}/{d}"))
            }),
        tls_version: facts.tls_server_hello_info.version.map(version_name),
        tls_cipher: facts.tls_server_hello_info.cipher.map(cipher_name),
        tls_sni: facts.tls_client_hello_info.sni.take().map(exact),
        tls_client_versions: facts
            .tls_client_hello_info
            .offered_versions
            .iter()
            .map(|v| version_name(*v))
            .collect(),
        tls_alpn: exact_texts(std::mem::take(&mut facts.tls_client_hello_info.alpn)),
        tls_history: exact(std::mem::take(&mut facts.tls_history)),
        tls_handshake_completed: facts.tls_handshake_completed,
        cert_fingerprint: None,
        cert_chain_fingerprints: Vec::new(),
        handshake_failure: facts.handshake_failure,
        mail_transactions: facts.mail_transactions,
        rcpt_commands: facts.rcpt_commands,
        data_commands: facts.data_commands + facts.bdat_commands,
        auth_commands: facts.auth_commands,
        mail_from: exact_texts(std::mem::take(&mut facts.mail_from)),
        rcpt_to: exact_texts(std::mem::take(&mut facts.rcpt_to)),
        gaps: flow.gaps,
        gap_bytes: flow.gap_bytes,
        dialog_gaps: facts.dialog_gaps,
        mid_stream: flow.mid_stream,
        end_reason: end,
        client_packets: flow.packets[0],
        server_packets: flow.packets[1],
        client_bytes: flow.bytes[0],
        server_bytes: flow.bytes[1],
        retransmissions: flow.retransmissions,
        recipient_domain: None,
        mx_host: None,
        mx_addresses: Vec::new(),
        dns_transaction_ids: Vec::new(),
        dns_finding_ids: Vec::new(),
        mx_tlsa: Vec::new(),
        sts_txt: None,
        sts_fetch: None,
        sts_fetch_ids: Vec::new(),
        pkix: Vec::new(),
        dane: None,
        missing_side: missing_side(flow),
        truncated: std::mem::take(&mut facts.truncated),
        cert_chain: std::mem::take(&mut facts.tls_server_hello_info.chain),
        tls_ids: (
            facts.tls_server_hello_info.version,
            facts.tls_server_hello_info.cipher,
        ),
        finding_details: Vec::new(),
        correlation: CorrelationFacts::default(),
    };
    let at = |ts: Option<i64>| ts.unwrap_or(flow.first_us);

    if !facts.starttls_offered && !facts.overwritten_tokens.is_empty() {
        rec.add_finding(
            FindingKind::StarttlsStripped,
            at(facts.ehlo_reply_ts),
            json!({
                "overwritten": facts.overwritten_tokens,
                "banner_masked": facts.banner_masked,
                "ehlo_capabilities": rec.ehlo_capabilities,
            }),
        );
    }
    if !facts.cleartext.is_empty() {
        let first_ts = facts.cleartext[0].ts_us;
        rec.add_finding(
            FindingKind::CleartextAfterStarttls,
            first_ts,
            json!({
                "events": facts.cleartext.iter().map(|e| json!({
                    "side": e.side, "phase": e.phase, "what": e.what, "bytes": e.bytes,
                    "ts": rfc3339_micros(e.ts_us),
                })).collect::<Vec<_>>(),
                "starttls_reply_code": facts.starttls_reply_code,
            }),
        );
    }
    for c in &facts.conflicts {
        rec.add_finding(
            FindingKind::TcpOverlapConflict,
            c.ts_us,
            json!({
                "direction": c.side,
                "original": {"offset": c.conflict.original_offset, "len": c.conflict.original_len},
                "retransmission": {"offset": c.conflict.new_offset, "len": c.conflict.new_len},
                "differing_bytes": c.conflict.differing_bytes,
                "further_conflicts_not_listed": facts.conflicts_dropped,
            }),
        );
    }
    for (direction, lineage) in ["client", "server"].iter().zip(&flow.lineage) {
        if let Some(first) = lineage.first {
            rec.add_finding(
                FindingKind::InjectedSegment,
                first.ts_us,
                injected_evidence(direction, &first, lineage.count),
            );
        }
    }
    let rejected = facts.starttls_sent && facts.starttls_reply_code.is_some_and(|c| c != 220);
    if rejected {
        rec.add_finding(
            FindingKind::StarttlsCommandRejected,
            at(facts.starttls_ts),
            json!({
                "reply_code": facts.starttls_reply_code,
                "reply_text": rec.starttls_reply_text,
                "starttls_offered": facts.starttls_offered,
            }),
        );
        if facts.mail_transactions > 0 {
            // The refusal did not stop the client: it sent the mail in the same connection.
            rec.add_finding(
                FindingKind::PlaintextFallback,
                at(facts.starttls_ts),
                json!({
                    "same_session": true,
                    "failed_upgrade": "starttls-command-rejected",
                    "mail_transactions": facts.mail_transactions,
                }),
            );
        }
    }
    if let Some(reason) = facts.handshake_failure {
        rec.add_finding(FindingKind::TlsHandshakeFailed,
            at(facts.starttls_ts),
            json!({
                "reason": reason,
                "implicit_tls": facts.implicit_tls,
                "client_hello_seen": facts.tls_client.client_hello,
                "server_records": facts.tls_server.records,
                "alert": facts.tls_server.alert.map(|(level, description)| json!({"level": level, "description": description})),
                "end_reason": end,
            }),
        );
    }
    if facts.starttls_offered && !facts.starttls_sent && facts.mail_transactions > 0 {
        rec.add_finding(
            FindingKind::PlaintextByClient,
            at(facts.ehlo_reply_ts),
            json!({
                "mail_transactions": facts.mail_transactions,
                "rcpt_commands": facts.rcpt_commands,
            }),
        );
    }
    rec.correlation = CorrelationFacts {
        // A refused EHLO offers no extension either: the client falls back to HELO.
        not_offered: (facts.ehlo_reply_seen || facts.ehlo_reply_code.is_some_and(|c| c >= 400))
            && !facts.starttls_offered
            && facts.overwritten_tokens.is_empty(),
        failed_upgrade_at: (rejected || facts.handshake_failure.is_some())
            .then(|| at(facts.starttls_ts)),
        plaintext_mail: facts.mail_transactions > 0 && !rejected,
        cleartext_auth: facts.cleartext_auth.take(),
    };
    rec.verdict = base_verdict(&facts, rec.missing_side);
    rec
}

/// A text moved from the facts into a record, without the spare capacity it may have grown:
/// the record holds (and the memory budget counts, `record::size`) what a copy would, and a
/// string that is already exact, as most are, costs nothing.
fn exact(mut s: String) -> String {
    s.shrink_to_fit();
    s
}

/// A list of texts moved into a record, each and the list without spare capacity (see
/// [`exact`]).
fn exact_texts(mut v: Vec<String>) -> Vec<String> {
    v.shrink_to_fit();
    for s in &mut v {
        s.shrink_to_fit();
    }
    v
}

/// The direction of which not one packet was seen although the other side sent data: the
/// other side can only send data once the TCP handshake has been answered.
fn missing_side(flow: &FlowSummary) -> Option<Side> {
    match (flow.packets, flow.bytes) {
        ([_, 0], [sent, _]) if sent > 0 => Some(Side::Server),
        ([0, _], [_, sent]) if sent > 0 => Some(Side::Client),
        _ => None,
    }
}

/// The verdict a session has when no finding applies.
fn base_verdict(facts: &SessionFacts, missing: Option<Side>) -> &'static str {
    if facts.tls_started && facts.tls_handshake_completed && facts.handshake_failure.is_none() {
        verdict::TLS_OK
    } else if facts.tls_expected {
        verdict::INCOMPLETE
    } else if facts.ehlo_reply_code.is_some()
        || (facts.greeting_verb == Some(crate::record::Verb::Helo) && facts.banner_code.is_some())
        // Only the client's side was captured, and it sent mail in the clear.
        || (missing == Some(Side::Server) && facts.mail_transactions > 0)
    {
        verdict::PLAINTEXT
    } else {
        verdict::INCOMPLETE
    }
}

/// Orders the findings by severity and sets the verdict to the most severe one.
pub fn finish_verdict(rec: &mut SessionRecord) {
    rec.findings.sort();
    if let Some(first) = rec.findings.first() {
        rec.verdict = first.as_str();
    }
}

/// A session id that is the same for the same flow in the same capture, so that re-running over
/// a capture (or replaying into ClickHouse) does not create new ids.
fn session_id(community_id: &str, first_us: i64) -> String {
    crate::util::flow_id('S', community_id, first_us)
}

/// Evidence of an out-of-line packet: what differed and how far away its sender probably is.
pub fn injected_evidence(direction: &str, o: &OutOfLine, count: u32) -> serde_json::Value {
    json!({
        "direction": direction,
        "anomaly": o.anomaly,
        "ts": rfc3339_micros(o.ts_us),
        "ip_ttl": o.ttl,
        "flow_ip_ttl": o.expected_ttl,
        "injector_hops": hop_distance(o.ttl),
        "sender_hops": hop_distance(o.expected_ttl),
        "ip_id": o.ip_id,
        "flow_previous_ip_id": o.previous_ip_id,
        "payload_bytes": o.payload_len,
        "reset": o.reset,
        "packets_out_of_line": count,
    })
}
