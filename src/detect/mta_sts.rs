//! MTA-STS judgements (RFC 8461) over what the linker put on each session and what the DNS
//! records say: a blocked policy fetch followed by a plaintext or unauthenticated delivery
//! (`mta-sts-fetch-blocked`), plaintext delivery to a domain known to publish a policy
//! (`mta-sts-plaintext`, a warning: the policy's mode travels inside HTTPS), and a `_mta-sts`
//! TXT answer without `v=STSv1` for a domain that had one (`mta-sts-txt-missing`, a DNS
//! finding, like `dnssec-stripped`).
//!
//! It remembers, for this run, which domains published `v=STSv1` and with which ids (at most
//! [`MAX_DOMAINS`] and the `sts_domains` share of the memory budget; the least recently seen
//! tenth goes when either is reached), and hands them to the baseline at the end. A changed
//! id is a fact, counted in `policy_id_changes`, not a finding: domains change their policies.

use crate::dns::sts::sts_id;
use crate::memory::{Usage, evict_oldest_tenth};
use crate::record::{DnsRecord, FindingKind, SessionRecord};
use crate::state::{Baseline, Fact, Learned, Seen, add_witness};
use crate::util::rfc3339_micros;
use ahash::AHashMap;
use serde::Serialize;
use serde_json::json;
use std::mem::size_of;

/// Domains remembered in one run.
pub const MAX_DOMAINS: usize = 200_000;
/// Ids remembered per domain.
const IDS_PER_DOMAIN: usize = 8;
/// The finding number of `mta-sts-txt-missing` on a DNS transaction (see DESIGN.md, Records).
const TXT_MISSING_N: u8 = 4;
/// What the evidence says about the mode, which a passive sensor cannot see.
const MODE_NOT_OBSERVABLE: &str = "not observable: the policy (its mode and MX patterns) travels inside HTTPS. In mode testing or none, or with no valid cached policy, a sender may deliver this way by design; in mode enforce it must not";

/// The downgrades after which a session counts as delivered without the protection MTA-STS
/// asks for, besides mail sent in the clear.
const DOWNGRADES: [FindingKind; 6] = [
    FindingKind::StarttlsStripped,
    FindingKind::CleartextAfterStarttls,
    FindingKind::PlaintextFallback,
    FindingKind::StarttlsMissing,
    FindingKind::TlsHandshakeFailed,
    FindingKind::StarttlsCommandRejected,
];

/// Certificate problems an MTA-STS sender in enforce mode refuses (RFC 8461 §4.2).
const CERTIFICATE_PROBLEMS: [FindingKind; 6] = [
    FindingKind::TlsaInvalid,
    FindingKind::CertificateHostMismatch,
    FindingKind::CertificateNotTrusted,
    FindingKind::CertificateExpired,
    FindingKind::CertificateSelfSigned,
    FindingKind::CertificateAbsent,
];

/// Counters for the summary (`mta_sts`).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct StsStats {
    /// `_mta-sts` TXT transactions judged (answered NOERROR or NXDOMAIN).
    pub txt_answers: u64,
    /// Of them, answers with a valid `v=STSv1` record.
    pub policies_seen: u64,
    /// Answers whose id differs from the last one known for the domain (run or baseline).
    pub policy_id_changes: u64,
    /// `mta-sts-txt-missing` findings raised.
    pub txt_missing: u64,
    /// `mta-sts-fetch-blocked` findings raised.
    pub fetch_blocked: u64,
    /// `mta-sts-plaintext` findings raised.
    pub plaintext: u64,
    /// Domains forgotten to stay within the count or the bytes.
    pub evictions: u64,
}

/// The ids one domain published in this run.
struct DomainIds {
    /// (id, sightings), newest last.
    ids: Vec<(String, Seen)>,
    last_us: i64,
    /// What this entry costs, with its key.
    bytes: usize,
}

/// Bytes one domain's entry costs: its slot, its name and its ids.
fn domain_bytes(domain: &str, d: &DomainIds) -> usize {
    const SLOT: usize = 32 + size_of::<String>() + size_of::<DomainIds>();
    SLOT + domain.len()
        + d.ids.capacity() * size_of::<(String, Seen)>()
        + d.ids.iter().map(|(i, _)| i.len()).sum::<usize>()
}

/// MTA-STS judgements and this run's memory of published policies.
pub struct StsJudge {
    domains: AHashMap<String, DomainIds>,
    /// Domains and their bytes (the `sts_domains` window).
    usage: Usage,
    max_bytes: usize,
    /// Counters.
    pub stats: StsStats,
}

impl Default for StsJudge {
    fn default() -> Self {
        StsJudge {
            domains: AHashMap::new(),
            usage: Usage::default(),
            max_bytes: usize::MAX,
            stats: StsStats::default(),
        }
    }
}

/// The ids a domain published, from this run if any, else from the baseline, and which.
fn known_ids(
    run: Option<&DomainIds>,
    domain: &str,
    baseline: &dyn Baseline,
) -> Option<(Vec<(String, Seen)>, &'static str)> {
    match run {
        Some(d) => Some((d.ids.clone(), "run")),
        None => {
            let ids = baseline.sts_ids(domain);
            (!ids.is_empty()).then_some((ids, "baseline"))
        }
    }
}

impl StsJudge {
    /// A judge whose memory of published ids holds at most `max_bytes`.
    pub fn with_max_bytes(max_bytes: usize) -> StsJudge {
        StsJudge {
            max_bytes,
            ..StsJudge::default()
        }
    }

    /// Size and evictions of the memory of published ids (the `sts_domains` window).
    pub fn usage(&self) -> Usage {
        Usage {
            evictions: self.stats.evictions,
            ..self.usage
        }
    }

    /// Judges a `_mta-sts.<domain>` TXT transaction: remembers a published id (counting a
    /// change), or, for an answer without `v=STSv1` where the run or the baseline saw one,
    /// adds `mta-sts-txt-missing`. Other transactions are left alone.
    pub fn judge_dns(&mut self, rec: &mut DnsRecord, baseline: &dyn Baseline) {
        let Some(domain) = rec.qname.strip_prefix("_mta-sts.") else {
            return;
        };
        if rec.qtype != "TXT" || !matches!(rec.rcode.as_deref(), Some("NoError" | "NXDomain")) {
            return;
        }
        let id = sts_id(
            rec.answers
                .iter()
                .filter(|a| a.rtype == "TXT" && a.name == rec.qname)
                .map(|a| a.data.as_str()),
        );
        self.stats.txt_answers += 1;
        let domain = domain.to_string();
        let known = known_ids(self.domains.get(&domain), &domain, baseline);
        if id.is_empty() {
            if let Some((ids, source)) = known {
                let newest = ids.iter().max_by_key(|(_, s)| s.last_us);
                let mut evidence = json!({
                    "domain": domain,
                    "qname": rec.qname,
                    "rcode": rec.rcode,
                    "answers": rec.answers.len(),
                    "source": source,
                    "published_ids": ids.iter().map(|(i, _)| i).collect::<Vec<_>>(),
                    "published_last_seen": newest.map(|(_, s)| rfc3339_micros(s.last_us)),
                });
                if let (Some((newest, _)), "baseline") = (newest, source) {
                    add_witness(&mut evidence, baseline.witness(Fact::Sts(&domain, newest)));
                }
                rec.findings.push(FindingKind::MtaStsTxtMissing);
                rec.findings.sort();
                let f = rec.finding(
                    FindingKind::MtaStsTxtMissing,
                    TXT_MISSING_N,
                    rec.ts.0,
                    evidence,
                );
                rec.finding_details.push(f);
                self.stats.txt_missing += 1;
            }
            return;
        }
        self.stats.policies_seen += 1;
        if let Some((ids, _)) = &known
            && ids
                .iter()
                .max_by_key(|(_, s)| s.last_us)
                .is_some_and(|(last, _)| *last != id)
        {
            self.stats.policy_id_changes += 1;
        }
        self.remember(domain, id, rec.ts.0);
    }

    fn remember(&mut self, domain: String, id: String, ts_us: i64) {
        if !self.domains.contains_key(&domain)
            && (self.domains.len() >= MAX_DOMAINS || self.usage.bytes > self.max_bytes)
        {
            self.stats.evictions += evict_oldest_tenth(
                &mut self.domains,
                &mut self.usage,
                |d| d.last_us,
                |_, d| d.bytes,
                |_, _| {},
            );
        }
        let usage = &mut self.usage;
        let d = self.domains.entry(domain.clone()).or_insert_with(|| {
            usage.entries += 1;
            DomainIds {
                ids: Vec::new(),
                last_us: ts_us,
                bytes: 0,
            }
        });
        d.last_us = d.last_us.max(ts_us);
        match d.ids.iter_mut().find(|(i, _)| *i == id) {
            Some((_, seen)) => *seen = seen.merge(Seen::span(ts_us, ts_us, 1)),
            None => {
                if d.ids.len() >= IDS_PER_DOMAIN {
                    d.ids.remove(0);
                }
                d.ids.push((id, Seen::span(ts_us, ts_us, 1)));
            }
        }
        let bytes = domain_bytes(&domain, d);
        usage.bytes = usage.bytes - d.bytes + bytes;
        d.bytes = bytes;
    }

    /// Judges a session with a recipient domain, after the other rules (its findings decide
    /// whether it was delivered without protection).
    pub fn judge_session(&mut self, rec: &mut SessionRecord, baseline: &dyn Baseline) {
        let Some(domain) = rec.recipient_domain.clone() else {
            return;
        };
        let downgrades: Vec<FindingKind> = DOWNGRADES
            .into_iter()
            .filter(|k| rec.findings.contains(k))
            .collect();
        let plaintext = rec.correlation.plaintext_mail || !downgrades.is_empty();
        let cert_problems: Vec<FindingKind> = CERTIFICATE_PROBLEMS
            .into_iter()
            .filter(|k| rec.findings.contains(k))
            .collect();
        if let Some(fetch) = rec.sts_fetch
            && fetch.blocked()
            && (plaintext || !cert_problems.is_empty())
        {
            let evidence = json!({
                "recipient_domain": domain,
                "sts_fetch": fetch,
                "sts_fetch_ids": rec.sts_fetch_ids,
                "sts_txt": rec.sts_txt,
                "plaintext": plaintext,
                "mail_transactions": rec.mail_transactions,
                "downgrades": downgrades,
                "certificate_problems": cert_problems,
            });
            rec.add_finding(FindingKind::MtaStsFetchBlocked, rec.ts.0, evidence);
            self.stats.fetch_blocked += 1;
        }
        if !plaintext {
            return;
        }
        let published = match rec.sts_txt.as_deref() {
            Some(id) if !id.is_empty() => Some((vec![(id.to_string(), None)], "dns")),
            _ => known_ids(self.domains.get(&domain), &domain, baseline).map(|(ids, source)| {
                let ids = ids.into_iter().map(|(i, s)| (i, Some(s.last_us))).collect();
                (ids, source)
            }),
        };
        if let Some((ids, source)) = published {
            let newest = ids
                .iter()
                .max_by_key(|(_, last)| *last)
                .map(|(i, _)| i.clone());
            let mut evidence = json!({
                "recipient_domain": domain,
                "published_ids": ids.iter().map(|(i, _)| i).collect::<Vec<_>>(),
                "source": source,
                "sts_txt": rec.sts_txt,
                "sts_fetch": rec.sts_fetch,
                "mail_transactions": rec.mail_transactions,
                "downgrades": downgrades,
                "mode": MODE_NOT_OBSERVABLE,
            });
            if let (Some(newest), "baseline") = (newest, source) {
                add_witness(&mut evidence, baseline.witness(Fact::Sts(&domain, &newest)));
            }
            rec.add_finding(FindingKind::MtaStsPlaintext, rec.ts.0, evidence);
            self.stats.plaintext += 1;
        }
    }

    /// What this run learned, for the baseline: each domain's published ids.
    pub fn learned(&self, l: &mut Learned) {
        for (domain, d) in &self.domains {
            for (id, seen) in &d.ids {
                l.sts.push((domain.clone(), id.clone(), *seen));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::AnswerText;
    use crate::state::NoBaseline;

    /// A `_mta-sts.example.com` TXT answer at `ts_s` holding `records`.
    fn txt(ts_s: i64, rcode: &str, records: &[&str]) -> DnsRecord {
        let mut r = DnsRecord::for_tests(ts_s * 1_000_000);
        r.transaction_id = format!("D{ts_s}");
        r.qname = "_mta-sts.example.com".into();
        r.qtype = "TXT".into();
        r.rcode = Some(rcode.into());
        r.answers = records
            .iter()
            .map(|t| AnswerText {
                name: "_mta-sts.example.com".into(),
                rtype: "TXT",
                ttl: 300,
                data: t.to_string(),
            })
            .collect();
        r
    }

    #[test]
    fn a_removed_record_is_missing_only_after_one_was_seen() {
        let mut j = StsJudge::default();
        let mut first = txt(1, "NXDomain", &[]);
        j.judge_dns(&mut first, &NoBaseline);
        assert!(first.findings.is_empty(), "nothing known yet");
        let mut published = txt(2, "NoError", &["v=STSv1; id=a1"]);
        j.judge_dns(&mut published, &NoBaseline);
        assert!(published.findings.is_empty());
        let mut removed = txt(3, "NXDomain", &[]);
        j.judge_dns(&mut removed, &NoBaseline);
        assert_eq!(removed.findings, vec![FindingKind::MtaStsTxtMissing]);
        assert_eq!(removed.finding_details[0].finding_id, "D3-4");
        assert_eq!(removed.finding_details[0].evidence["source"], "run");
        // A failed lookup says nothing about the record.
        let mut failed = txt(4, "ServFail", &[]);
        j.judge_dns(&mut failed, &NoBaseline);
        assert!(failed.findings.is_empty());
    }

    #[test]
    fn a_changed_id_is_a_fact_not_a_finding() {
        let mut j = StsJudge::default();
        for (ts, id) in [(1, "a1"), (2, "a1"), (3, "b2")] {
            let mut r = txt(ts, "NoError", &[&format!("v=STSv1; id={id}")]);
            j.judge_dns(&mut r, &NoBaseline);
            assert!(r.findings.is_empty());
        }
        assert_eq!(j.stats.policies_seen, 3);
        assert_eq!(j.stats.policy_id_changes, 1);
        let mut l = Learned::default();
        j.learned(&mut l);
        let mut ids: Vec<&str> = l.sts.iter().map(|(_, id, _)| id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["a1", "b2"]);
    }

    #[test]
    fn the_byte_share_bounds_the_published_domains() {
        let mut one = StsJudge::default();
        let mut r = txt(1, "NoError", &["v=STSv1; id=a1"]);
        one.judge_dns(&mut r, &NoBaseline);
        let per_domain = one.usage().bytes;
        let limit = per_domain * 20;
        let mut j = StsJudge::with_max_bytes(limit);
        for i in 0..500 {
            let mut r = txt(i, "NoError", &["v=STSv1; id=a1"]);
            let q = format!("_mta-sts.d{i:03}.example");
            r.qname = q.clone();
            r.answers[0].name = q;
            j.judge_dns(&mut r, &NoBaseline);
            assert!(j.usage().bytes <= limit + per_domain);
        }
        let u = j.usage();
        assert!(u.entries <= 21, "{}", u.entries);
        assert_eq!(u.evictions as usize + u.entries, 500);
        assert_eq!(j.stats.txt_answers, 500);
        assert_eq!(j.stats.policies_seen, 500);
    }
}
