//! How many bytes a record occupies while it waits in memory (the capture-order merge, the
//! correlator's held and waiting sessions), for the memory budget (`crate::memory`).
//!
//! Every function destructures its record without `..`: a field added to a record does not
//! compile until it is counted here, so the budget cannot silently miss a growing field.
//! Capacities, not lengths, are counted, since that is what the allocator handed out.

use super::{
    AnswerText, CleartextAuth, CorrelationFacts, DnsRecord, Endpoint, Finding, SessionRecord, Tlsa,
};
use std::mem::size_of;

/// Heap bytes of a string.
fn text(s: &String) -> usize {
    s.capacity()
}

/// Heap bytes of an optional string.
fn opt_text(s: &Option<String>) -> usize {
    s.as_ref().map_or(0, String::capacity)
}

/// Heap bytes of a vector of strings.
fn texts(v: &Vec<String>) -> usize {
    v.capacity() * size_of::<String>() + v.iter().map(String::capacity).sum::<usize>()
}

/// Heap bytes of a vector whose elements own nothing on the heap.
fn flat<T>(v: &Vec<T>) -> usize {
    v.capacity() * size_of::<T>()
}

fn endpoint(e: &Endpoint) -> usize {
    let Endpoint {
        ip: _,
        port: _,
        country,
        asn: _,
        as_org,
    } = e;
    text(country) + text(as_org)
}

fn tlsa(t: &Tlsa) -> usize {
    let Tlsa {
        usage: _,
        selector: _,
        matching_type: _,
        data,
    } = t;
    data.capacity()
}

fn answer(a: &AnswerText) -> usize {
    let AnswerText {
        name,
        rtype: _,
        ttl: _,
        data,
    } = a;
    text(name) + text(data)
}

/// Heap bytes of a JSON value (evidence): strings, arrays and objects with their keys.
fn json(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        Value::String(s) => s.capacity(),
        Value::Array(a) => a.capacity() * size_of::<Value>() + a.iter().map(json).sum::<usize>(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| k.capacity() + size_of::<(String, Value)>() + 16 + json(v))
            .sum(),
    }
}

/// Bytes of a finding on the heap (its own struct not included).
fn finding_heap(f: &Finding) -> usize {
    let Finding {
        finding_id,
        kind: _,
        session_id,
        ts: _,
        sensor,
        client,
        server,
        community_id,
        evidence,
    } = f;
    text(finding_id)
        + opt_text(session_id)
        + text(sensor)
        + endpoint(client)
        + endpoint(server)
        + text(community_id)
        + json(evidence)
}

fn findings(v: &Vec<Finding>) -> usize {
    flat(v) + v.iter().map(finding_heap).sum::<usize>()
}

/// Bytes a finding occupies, its own struct included.
pub fn finding_bytes(f: &Finding) -> usize {
    size_of::<Finding>() + finding_heap(f)
}

fn correlation(c: &CorrelationFacts) -> usize {
    let CorrelationFacts {
        not_offered: _,
        failed_upgrade_at: _,
        plaintext_mail: _,
        cleartext_auth,
    } = c;
    cleartext_auth.as_ref().map_or(0, |a| {
        let CleartextAuth {
            mechanism,
            last_ts_us: _,
            credential_lines: _,
            reply_code: _,
        } = a;
        text(mechanism)
    })
}

/// Bytes a session record occupies, its own struct included.
pub fn session_bytes(r: &SessionRecord) -> usize {
    let SessionRecord {
        session_id,
        ts: _,
        ts_end: _,
        sensor,
        client,
        server,
        community_id,
        verdict: _,
        findings: kinds,
        banner_code: _,
        banner,
        middlebox_traits,
        greeting_verb: _,
        ehlo_name,
        ehlo_reply_code: _,
        ehlo_reply_name,
        ehlo_capabilities,
        starttls_offered: _,
        starttls_sent: _,
        starttls_reply_code: _,
        starttls_reply_text,
        implicit_tls: _,
        tls_started: _,
        tls_client_hello: _,
        tls_server_hello: _,
        tls_alert,
        tls_version,
        tls_cipher,
        tls_sni,
        tls_client_versions,
        tls_alpn,
        tls_history,
        tls_handshake_completed: _,
        cert_fingerprint,
        cert_chain_fingerprints,
        handshake_failure: _,
        mail_transactions: _,
        rcpt_commands: _,
        data_commands: _,
        auth_commands: _,
        mail_from,
        rcpt_to,
        gaps: _,
        gap_bytes: _,
        dialog_gaps: _,
        mid_stream: _,
        end_reason: _,
        client_packets: _,
        server_packets: _,
        client_bytes: _,
        server_bytes: _,
        retransmissions: _,
        recipient_domain,
        mx_host,
        mx_addresses,
        dns_transaction_ids,
        dns_finding_ids,
        mx_tlsa,
        sts_txt,
        sts_fetch: _,
        sts_fetch_ids,
        pkix,
        dane: _,
        missing_side: _,
        truncated,
        cert_chain,
        tls_ids: _,
        finding_details,
        correlation: facts,
    } = r;
    size_of::<SessionRecord>()
        + text(session_id)
        + text(sensor)
        + endpoint(client)
        + endpoint(server)
        + text(community_id)
        + flat(kinds)
        + opt_text(banner)
        + flat(middlebox_traits)
        + opt_text(ehlo_name)
        + opt_text(ehlo_reply_name)
        + texts(ehlo_capabilities)
        + opt_text(starttls_reply_text)
        + opt_text(tls_alert)
        + opt_text(tls_version)
        + opt_text(tls_cipher)
        + opt_text(tls_sni)
        + texts(tls_client_versions)
        + texts(tls_alpn)
        + text(tls_history)
        + opt_text(cert_fingerprint)
        + texts(cert_chain_fingerprints)
        + texts(mail_from)
        + texts(rcpt_to)
        + opt_text(recipient_domain)
        + opt_text(mx_host)
        + flat(mx_addresses)
        + texts(dns_transaction_ids)
        + texts(dns_finding_ids)
        + flat(mx_tlsa)
        + mx_tlsa.iter().map(tlsa).sum::<usize>()
        + opt_text(sts_txt)
        + texts(sts_fetch_ids)
        + flat(pkix)
        + flat(truncated)
        + flat(cert_chain)
        + cert_chain.iter().map(Vec::capacity).sum::<usize>()
        + findings(finding_details)
        + correlation(facts)
}

/// Bytes a DNS record occupies, its own struct included.
pub fn dns_bytes(r: &DnsRecord) -> usize {
    let DnsRecord {
        transaction_id,
        ts: _,
        sensor,
        client,
        server,
        transport: _,
        community_id,
        id: _,
        qname,
        qtype,
        query_seen: _,
        query_do: _,
        rcode,
        aa: _,
        tc: _,
        ra: _,
        ad: _,
        rrsig: _,
        nsec: _,
        answers,
        rtt_ms: _,
        responses: _,
        response_ip_ttl: _,
        findings: kinds,
        finding_details,
    } = r;
    size_of::<DnsRecord>()
        + text(transaction_id)
        + text(sensor)
        + endpoint(client)
        + endpoint(server)
        + text(community_id)
        + text(qname)
        + text(qtype)
        + opt_text(rcode)
        + flat(answers)
        + answers.iter().map(answer).sum::<usize>()
        + flat(kinds)
        + findings(finding_details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_grow_with_the_data() {
        let mut r = DnsRecord::for_tests(1);
        let before = dns_bytes(&r);
        assert!(before >= size_of::<DnsRecord>());
        r.qname = "a-rather-long-name.example.org".to_string();
        r.answers.push(AnswerText {
            name: "x".repeat(100),
            rtype: "MX",
            ttl: 1,
            data: "10 mx.example.org".into(),
        });
        assert!(dns_bytes(&r) >= before + 130);
    }
}
