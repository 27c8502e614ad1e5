//! Judgements on one worker's DNS transactions and on the link between a session and its
//! lookups: `dns-injection` (two responses to one query that disagree), `injected-segment` (a
//! response whose IP TTL is out of line with the resolver's earlier responses to this client)
//! and `smtp-to-unlisted-ip` (a connection to an address none of the just-resolved MX hosts
//! has). The DNS layer (`dns::tracker`) matches queries and responses and keeps the facts;
//! the findings are made here.

use crate::dns::message::rcode_text;
use crate::dns::tracker::{ClosedTransaction, UnlistedAddress};
use crate::flow::lineage::hop_distance;
use crate::record::{DnsRecord, FindingKind, SessionRecord};
use serde_json::json;

/// The record of a closed transaction with its findings. Finding ids are the transaction id
/// and a number per kind (0 `dns-injection`, 3 `injected-segment`; see `DnsRecord::finding`).
pub fn judge_transaction(t: ClosedTransaction) -> DnsRecord {
    let ClosedTransaction {
        ttl_out,
        mut record,
        query_ts,
        responses,
    } = t;
    if let Some((ttl, settled, order)) = ttl_out {
        let evidence = json!({
            "direction": "server",
            "anomaly": "ttl",
            "response": order,
            "ip_ttl": ttl,
            "flow_ip_ttl": settled,
            "injector_hops": hop_distance(ttl),
            "sender_hops": hop_distance(settled),
        });
        record.findings.push(FindingKind::InjectedSegment);
        let finding = record.finding(FindingKind::InjectedSegment, 3, record.ts.0, evidence);
        record.finding_details.push(finding);
    }
    let first = &responses[0];
    let differs = responses[1..]
        .iter()
        .any(|r| r.answer_set != first.answer_set || r.rcode != first.rcode);
    if differs {
        let base = query_ts.unwrap_or(first.ts_us);
        let evidence = json!({
            "qname": record.qname, "qtype": record.qtype,
            "suspect": "first response (the injector wins the race)",
            "responses": responses.iter().enumerate().map(|(i, r)| json!({
                "order": i + 1,
                "delay_ms": (r.ts_us - base) as f64 / 1000.0,
                "ip_ttl": r.ip_ttl,
                "rcode": rcode_text(r.rcode),
                "answers": r.answer_set.iter().map(|(n, t, d)| format!("{n} {t} {d}")).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        let finding = record.finding(FindingKind::DnsInjection, 0, first.ts_us, evidence);
        record.findings.push(FindingKind::DnsInjection);
        record.findings.sort();
        record.finding_details.push(finding);
    }
    record
}

/// `smtp-to-unlisted-ip` on a session whose client connected to an address none of the MX
/// hosts it had just resolved has.
pub fn unlisted_address(rec: &mut SessionRecord, u: &UnlistedAddress) {
    rec.add_finding(
        FindingKind::SmtpToUnlistedIp,
        rec.ts.0,
        json!({
            "recipient_domain": u.recipient_domain, "mx_hosts": u.mx_hosts,
            "mx_addresses": u.mx_addresses, "mx_transaction": u.mx_transaction,
            "connected_to": rec.server.ip,
        }),
    );
}
