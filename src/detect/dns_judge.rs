//! Cross-client judgement of DNS answers, in the output stage where every worker's DNS records
//! meet in capture order:
//!
//! - `mx-mismatch`: an MX answer that disagrees with the operator's known MX set for the domain
//!   (`--known-mx`), with what other clients or resolvers received within a window, or with the
//!   sets remembered from earlier runs (`--state`).
//! - `dnssec-stripped`: a response to a query with DO set that lacks RRSIG for a name answered
//!   with RRSIG before, or lacks AD from a resolver that set AD for that name before.
//!
//! Everything is bounded: per map a cap on names, per domain a cap on distinct sets and
//! observers; the oldest entries go first and are counted.

use crate::memory::{Usage, evict_oldest_tenth};
use crate::record::DnsRecord;
use crate::record::FindingKind;
use crate::state::{Baseline, Fact, Learned, Seen, add_witness};
use crate::util::rfc3339_micros;
use ahash::AHashMap;
use serde::Serialize;
use serde_json::json;
use std::mem::size_of;
use std::net::IpAddr;

/// Windows and bounds of DNS judgement.
#[derive(Clone, Debug)]
pub struct DnsJudgeConfig {
    /// MX answers are compared with others received this long before.
    pub mx_window_us: i64,
    /// Domains (and names, and client/resolver pairs) remembered per map.
    pub max_names: usize,
    /// Bytes of all three maps together at most (the memory budget's share).
    pub max_bytes: usize,
}

impl Default for DnsJudgeConfig {
    fn default() -> Self {
        DnsJudgeConfig {
            mx_window_us: 86_400_000_000,
            max_names: 200_000,
            max_bytes: usize::MAX,
        }
    }
}

/// Counters for the summary.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct DnsJudgeStats {
    /// MX answers compared.
    pub mx_answers: u64,
    /// Domains, names or pairs forgotten to stay within bounds.
    pub evictions: u64,
}

/// An operator's list of the MX sets domains are known to have.
#[derive(Clone, Debug, Default)]
pub struct KnownMx(AHashMap<String, Vec<String>>);

impl KnownMx {
    /// Parses `domain mx1 mx2 ...` lines (`#` starts a comment; names are case-insensitive and
    /// may end in a dot). Returns the line number and text of the first bad line.
    pub fn parse(text: &str) -> Result<KnownMx, (usize, String)> {
        let mut map = AHashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line
                .split(|c: char| c.is_whitespace() || c == ',' || c == ':')
                .filter(|w| !w.is_empty());
            let domain = words.next().map(canonical).unwrap_or_default();
            let mut set: Vec<String> = words.map(canonical).collect();
            if set.is_empty() || !domain.contains('.') && domain.len() < 2 {
                return Err((n + 1, line.to_string()));
            }
            set.sort();
            set.dedup();
            map.insert(domain, set);
        }
        Ok(KnownMx(map))
    }

    /// Domains listed.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The MX set an answer to `qname` gives: the exchanges of its MX records for that name
/// (`answers` as name, type and data text), canonical, sorted, each once.
pub fn mx_set<'a>(
    qname: &str,
    answers: impl Iterator<Item = (&'a str, &'a str, &'a str)>,
) -> Vec<String> {
    let mut set: Vec<String> = answers
        .filter(|(name, rtype, _)| *rtype == "MX" && *name == qname)
        .filter_map(|(_, _, data)| data.split_whitespace().last().map(canonical))
        .collect();
    set.sort();
    set.dedup();
    set
}

/// A DNS name as the judges compare it: lower case, without the final dot (the shared baseline
/// reads names back from ClickHouse in the same form).
pub fn canonical(s: &str) -> String {
    s.trim_end_matches('.').to_ascii_lowercase()
}

/// Observers kept per MX set: enough to say "several clients saw it".
const OBSERVERS_PER_SET: usize = 16;
/// Distinct MX sets kept per domain.
const SETS_PER_DOMAIN: usize = 8;

struct MxSetSeen {
    set: Vec<String>,
    first_us: i64,
    last_us: i64,
    observers: Vec<(IpAddr, IpAddr)>,
    transaction_id: String,
}

struct DomainMx {
    last_us: i64,
    sets: Vec<MxSetSeen>,
}

struct Signed {
    last_us: i64,
    first_us: i64,
    transaction_id: String,
}

/// The DNS judge.
pub struct DnsJudge {
    cfg: DnsJudgeConfig,
    known: KnownMx,
    mx: AHashMap<String, DomainMx>,
    rrsig: AHashMap<(String, String), Signed>,
    ad: AHashMap<(IpAddr, String, String), Signed>,
    /// Size of the three maps, kept as entries come and go.
    usage: Usage,
    /// Counters.
    pub stats: DnsJudgeStats,
}

impl DnsJudge {
    /// A judge with the operator's known MX sets.
    pub fn new(cfg: DnsJudgeConfig, known: KnownMx) -> DnsJudge {
        DnsJudge {
            cfg,
            known,
            mx: AHashMap::new(),
            rrsig: AHashMap::new(),
            ad: AHashMap::new(),
            usage: Usage::default(),
            stats: DnsJudgeStats::default(),
        }
    }

    /// Size and evictions of the remembered answers (the `mx_answers` window).
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Judges one finished DNS transaction, adding findings to it, and learns from it.
    /// `baseline` answers for earlier runs.
    pub fn judge(&mut self, rec: &mut DnsRecord, baseline: &dyn Baseline) {
        if rec.qtype == "MX" {
            self.judge_mx(rec, baseline);
        }
        self.judge_dnssec(rec, baseline);
    }

    /// What this run learned, for the persistent baseline: every MX set and signed name still
    /// remembered.
    pub fn learned(&self, into: &mut Learned) {
        for (domain, d) in &self.mx {
            for s in &d.sets {
                into.mx.push((
                    domain.clone(),
                    s.set.clone(),
                    Seen::span(s.first_us, s.last_us, s.observers.len() as u64),
                ));
            }
        }
        for ((name, qtype), s) in &self.rrsig {
            into.signed.push((
                name.clone(),
                qtype.clone(),
                Seen::span(s.first_us, s.last_us, 1),
            ));
        }
    }

    fn judge_mx(&mut self, rec: &mut DnsRecord, baseline: &dyn Baseline) {
        let set = mx_set(
            &rec.qname,
            rec.answers
                .iter()
                .map(|a| (a.name.as_str(), a.rtype, a.data.as_str())),
        );
        if set.is_empty() {
            return;
        }
        self.stats.mx_answers += 1;
        let domain = rec.qname.clone();
        let observer = (rec.client.ip, rec.server.ip);
        let now = rec.ts.0;
        if let Some(known) = self.known.0.get(&domain) {
            if *known != set {
                add_finding(
                    rec,
                    FindingKind::MxMismatch,
                    1,
                    json!({
                        "source": "known-mx",
                        "domain": domain,
                        "answered": set,
                        "expected": known,
                    }),
                );
            }
        } else if let Some(evidence) = self.disagreement(&domain, &set, observer, now) {
            add_finding(rec, FindingKind::MxMismatch, 1, evidence);
        } else {
            let earlier = baseline.mx_sets(&domain);
            let seen_here = self
                .mx
                .get(&domain)
                .is_some_and(|d| d.sets.iter().any(|s| s.set == set));
            if !earlier.is_empty() && !seen_here && !earlier.iter().any(|(s, _)| *s == set) {
                add_finding(
                    rec,
                    FindingKind::MxMismatch,
                    1,
                    json!({
                        "source": "baseline",
                        "domain": domain,
                        "answered": set,
                        "earlier_runs": earlier.iter().map(|(s, seen)| {
                            let mut run = json!({
                                "mx_set": s, "first_seen": rfc3339_micros(seen.first_us),
                                "last_seen": rfc3339_micros(seen.last_us), "answers": seen.count,
                            });
                            add_witness(&mut run, baseline.witness(Fact::Mx(&domain, s)));
                            run
                        }).collect::<Vec<_>>(),
                    }),
                );
            }
        }
        self.remember_mx(domain, set, observer, now, &rec.transaction_id);
    }

    /// Evidence when `set` is not the best-supported set for `domain` among the answers received
    /// within the window, and another client or resolver received a different set. Support is
    /// the number of distinct client/resolver pairs that received a set; on a tie the set that
    /// appeared later is the suspect (the earlier one is the baseline).
    fn disagreement(
        &self,
        domain: &str,
        set: &[String],
        observer: (IpAddr, IpAddr),
        now: i64,
    ) -> Option<serde_json::Value> {
        let d = self.mx.get(domain)?;
        let horizon = now.saturating_sub(self.cfg.mx_window_us);
        let mine = d.sets.iter().find(|s| s.set == set && s.last_us >= horizon);
        let (my_support, my_first) = mine.map_or((0, now), |s| (s.observers.len(), s.first_us));
        let others: Vec<&MxSetSeen> = d
            .sets
            .iter()
            .filter(|s| s.set != set && s.last_us >= horizon)
            .filter(|s| s.observers.iter().any(|o| *o != observer))
            .collect();
        let best = others
            .iter()
            .max_by_key(|s| (s.observers.len(), std::cmp::Reverse(s.first_us)))?;
        let suspect = my_support < best.observers.len()
            || (my_support == best.observers.len() && my_first > best.first_us);
        if !suspect {
            return None;
        }
        Some(json!({
            "source": "other-observers",
            "domain": domain,
            "answered": set,
            "observers_of_this_set": my_support,
            "others": others.iter().map(|s| json!({
                "mx_set": s.set,
                "observers": s.observers.len(),
                "first_seen": rfc3339_micros(s.first_us),
                "last_seen": rfc3339_micros(s.last_us),
                "example_transaction": s.transaction_id,
                "example_client": s.observers.first().map(|o| o.0),
                "example_resolver": s.observers.first().map(|o| o.1),
            })).collect::<Vec<_>>(),
        }))
    }

    fn remember_mx(
        &mut self,
        domain: String,
        set: Vec<String>,
        observer: (IpAddr, IpAddr),
        now: i64,
        tx: &str,
    ) {
        if !self.mx.contains_key(&domain)
            && (self.mx.len() >= self.cfg.max_names || self.usage.bytes > self.cfg.max_bytes)
        {
            self.stats.evictions += evict_oldest_tenth(
                &mut self.mx,
                &mut self.usage,
                |d| d.last_us,
                |k, d| domain_bytes(k, d),
                |_, _| {},
            );
        }
        let usage = &mut self.usage;
        let key_len = domain.len();
        let d = self.mx.entry(domain).or_insert_with(|| {
            usage.entries += 1;
            DomainMx {
                last_us: now,
                sets: Vec::new(),
            }
        });
        usage.bytes = usage.bytes.saturating_sub(domain_bytes_len(key_len, d));
        d.last_us = d.last_us.max(now);
        if let Some(s) = d.sets.iter_mut().find(|s| s.set == set) {
            s.last_us = s.last_us.max(now);
            if !s.observers.contains(&observer) && s.observers.len() < OBSERVERS_PER_SET {
                s.observers.push(observer);
            }
        } else {
            if d.sets.len() >= SETS_PER_DOMAIN {
                let oldest = (0..d.sets.len())
                    .min_by_key(|&i| d.sets[i].last_us)
                    .unwrap_or(0);
                d.sets.remove(oldest);
                self.stats.evictions += 1;
            }
            d.sets.push(MxSetSeen {
                set,
                first_us: now,
                last_us: now,
                observers: vec![observer],
                transaction_id: tx.to_string(),
            });
        }
        usage.bytes += domain_bytes_len(key_len, d);
    }

    fn judge_dnssec(&mut self, rec: &mut DnsRecord, baseline: &dyn Baseline) {
        // Only a positive answer to a query that asked for signatures can show them missing.
        if !rec.query_do || rec.answers.is_empty() || rec.tc {
            return;
        }
        let name = (rec.qname.clone(), rec.qtype.clone());
        let now = rec.ts.0;
        let mut missing: Vec<serde_json::Value> = Vec::new();
        if !rec.rrsig {
            if let Some(s) = self.rrsig.get(&name) {
                missing.push(json!({
                    "missing": "rrsig",
                    "signed_first_seen": rfc3339_micros(s.first_us),
                    "signed_last_seen": rfc3339_micros(s.last_us),
                    "signed_in_transaction": s.transaction_id,
                }));
            } else if let Some(seen) = baseline.signed_name(&name.0, &name.1) {
                let mut evidence = json!({
                    "missing": "rrsig",
                    "source": "baseline",
                    "signed_first_seen": rfc3339_micros(seen.first_us),
                    "signed_last_seen": rfc3339_micros(seen.last_us),
                });
                add_witness(
                    &mut evidence,
                    baseline.witness(Fact::Signed(&name.0, &name.1)),
                );
                missing.push(evidence);
            }
        }
        let ad_key = (rec.server.ip, name.0.clone(), name.1.clone());
        if !rec.ad
            && let Some(s) = self.ad.get(&ad_key)
        {
            missing.push(json!({
                "missing": "ad",
                "resolver": rec.server.ip,
                "validated_first_seen": rfc3339_micros(s.first_us),
                "validated_last_seen": rfc3339_micros(s.last_us),
                "validated_in_transaction": s.transaction_id,
            }));
        }
        if !missing.is_empty() {
            add_finding(
                rec,
                FindingKind::DnssecStripped,
                2,
                json!({
                    "qname": rec.qname, "qtype": rec.qtype, "query_do": true,
                    "ad": rec.ad, "rrsig": rec.rrsig, "what": missing,
                }),
            );
        }
        let tx = rec.transaction_id.clone();
        let max = self.cfg.max_names;
        let bounds = (max, self.cfg.max_bytes);
        if rec.rrsig {
            let key_len = name.0.len() + name.1.len();
            let counts = (&mut self.stats, &mut self.usage);
            remember_signed(&mut self.rrsig, name, key_len, now, &tx, bounds, counts);
        }
        if rec.ad {
            let key_len = ad_key.1.len() + ad_key.2.len();
            let counts = (&mut self.stats, &mut self.usage);
            remember_signed(&mut self.ad, ad_key, key_len, now, &tx, bounds, counts);
        }
    }
}

/// A map entry's own bytes and the hash table's overhead, roughly.
const ENTRY_OVERHEAD: usize = 32;

/// Bytes of one domain's remembered MX sets, its name included.
fn domain_bytes(domain: &str, d: &DomainMx) -> usize {
    domain_bytes_len(domain.len(), d)
}

fn domain_bytes_len(key_len: usize, d: &DomainMx) -> usize {
    let sets: usize = d
        .sets
        .iter()
        .map(|s| {
            size_of::<MxSetSeen>()
                + s.set
                    .iter()
                    .map(|n| size_of::<String>() + n.len())
                    .sum::<usize>()
                + s.observers.capacity() * size_of::<(IpAddr, IpAddr)>()
                + s.transaction_id.len()
        })
        .sum();
    ENTRY_OVERHEAD + size_of::<String>() + key_len + size_of::<DomainMx>() + sets
}

/// Bytes of one signed name's entry (`key_len`: the strings of its key).
fn signed_bytes<K>(key_len: usize, s: &Signed) -> usize {
    ENTRY_OVERHEAD + size_of::<K>() + key_len + size_of::<Signed>() + s.transaction_id.len()
}

/// Remembers a signed name; `bounds` are the entries per map and the bytes of all maps.
fn remember_signed<K: std::hash::Hash + Eq + SignedKey>(
    map: &mut AHashMap<K, Signed>,
    key: K,
    key_len: usize,
    now: i64,
    tx: &str,
    (max, max_bytes): (usize, usize),
    (stats, usage): (&mut DnsJudgeStats, &mut Usage),
) {
    if !map.contains_key(&key) && (map.len() >= max || usage.bytes > max_bytes) {
        stats.evictions += evict_oldest_tenth(
            map,
            usage,
            |s| s.last_us,
            |k, s| signed_bytes::<K>(k.strings_len(), s),
            |_, _| {},
        );
    }
    let s = map.entry(key).or_insert_with(|| {
        let s = Signed {
            last_us: now,
            first_us: now,
            transaction_id: tx.to_string(),
        };
        usage.entries += 1;
        usage.bytes += signed_bytes::<K>(key_len, &s);
        s
    });
    s.last_us = s.last_us.max(now);
}

/// The strings' length of a signed-name key, for its size.
trait SignedKey {
    fn strings_len(&self) -> usize;
}

impl SignedKey for (String, String) {
    fn strings_len(&self) -> usize {
        self.0.len() + self.1.len()
    }
}

impl SignedKey for (IpAddr, String, String) {
    fn strings_len(&self) -> usize {
        self.1.len() + self.2.len()
    }
}

/// Adds a finding to a DNS transaction; `n` makes its id (`<transaction>-<n>`) unique per kind.
fn add_finding(rec: &mut DnsRecord, kind: FindingKind, n: u8, evidence: serde_json::Value) {
    if rec.findings.contains(&kind) {
        return;
    }
    rec.findings.push(kind);
    rec.findings.sort();
    let finding = rec.finding(kind, n, rec.ts.0, evidence);
    rec.finding_details.push(finding);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::AnswerText;
    use crate::state::NoBaseline;

    fn mx(ts_s: i64, client: &str, resolver: &str, set: &[&str]) -> DnsRecord {
        let mut r = DnsRecord::for_tests(ts_s * 1_000_000);
        r.client.ip = client.parse().unwrap();
        r.server.ip = resolver.parse().unwrap();
        r.answers = set
            .iter()
            .map(|h| AnswerText {
                name: "example.com".into(),
                rtype: "MX",
                ttl: 300,
                data: format!("10 {h}."),
            })
            .collect();
        r
    }

    fn judge(j: &mut DnsJudge, mut r: DnsRecord) -> Vec<FindingKind> {
        j.judge(&mut r, &NoBaseline);
        r.findings
    }

    #[test]
    fn known_mx_file_decides_first() {
        let known =
            KnownMx::parse("# ours\nexample.com mx1.example.com. MX2.example.com\n").unwrap();
        let mut j = DnsJudge::new(DnsJudgeConfig::default(), known);
        let ok = mx(
            1,
            "192.0.2.1",
            "192.0.2.53",
            &["mx2.example.com", "mx1.example.com"],
        );
        assert!(judge(&mut j, ok).is_empty());
        let bad = mx(2, "192.0.2.1", "192.0.2.53", &["mail.attacker.test"]);
        assert_eq!(judge(&mut j, bad), vec![FindingKind::MxMismatch]);
        assert!(KnownMx::parse("example.com\n").is_err());
    }

    #[test]
    fn an_answer_others_did_not_get_is_a_mismatch() {
        let mut j = DnsJudge::new(DnsJudgeConfig::default(), KnownMx::default());
        assert!(
            judge(
                &mut j,
                mx(1, "192.0.2.1", "192.0.2.53", &["mx.example.com"])
            )
            .is_empty()
        );
        assert!(
            judge(
                &mut j,
                mx(2, "192.0.2.2", "192.0.2.53", &["mx.example.com"])
            )
            .is_empty()
        );
        let forged = mx(3, "192.0.2.3", "192.0.2.53", &["mx.attacker.test"]);
        assert_eq!(judge(&mut j, forged), vec![FindingKind::MxMismatch]);
        // The same client asking the same resolver again with the same answer is no evidence.
        assert!(
            judge(
                &mut j,
                mx(4, "192.0.2.1", "192.0.2.53", &["mx.example.com"])
            )
            .is_empty()
        );
    }

    #[test]
    fn answers_outside_the_window_are_not_compared() {
        let cfg = DnsJudgeConfig {
            mx_window_us: 10_000_000,
            ..DnsJudgeConfig::default()
        };
        let mut j = DnsJudge::new(cfg, KnownMx::default());
        assert!(
            judge(
                &mut j,
                mx(1, "192.0.2.1", "192.0.2.53", &["old.example.com"])
            )
            .is_empty()
        );
        assert!(
            judge(
                &mut j,
                mx(100, "192.0.2.2", "192.0.2.53", &["new.example.com"])
            )
            .is_empty()
        );
    }

    #[test]
    fn signatures_missing_after_they_were_seen() {
        let mut j = DnsJudge::new(DnsJudgeConfig::default(), KnownMx::default());
        let mut signed = mx(1, "192.0.2.1", "192.0.2.53", &["mx.example.com"]);
        signed.query_do = true;
        signed.rrsig = true;
        signed.ad = true;
        assert!(judge(&mut j, signed.clone()).is_empty());
        let mut stripped = signed.clone();
        stripped.ts.0 += 5_000_000;
        stripped.rrsig = false;
        stripped.ad = false;
        assert_eq!(
            judge(&mut j, stripped.clone()),
            vec![FindingKind::DnssecStripped]
        );
        // Without DO nothing can be missing.
        stripped.query_do = false;
        assert!(judge(&mut j, stripped).is_empty());
    }
}
