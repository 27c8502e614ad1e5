//! The correlator sees finished session records from every worker and judges what one session
//! cannot show alone: whether a server that did not offer STARTTLS offered it in other sessions
//! (`starttls-missing` vs `starttls-not-supported`), and whether a plaintext session followed a
//! failed upgrade between the same two hosts (`plaintext-fallback`).
//!
//! It also judges DNS answers across clients (`DnsJudge`), gives each session the ids of the
//! findings on the lookups that led to it (a session waits for its lookups' records, which a
//! worker writes a few seconds after the answer), and asks the persistent baseline (`--state`)
//! what earlier runs saw.
//!
//! Sessions that can still gain such a finding (no STARTTLS offered; mail or AUTH sent in
//! plaintext: `auth-in-cleartext`, judged last by `auth.rs`) are
//! held for a while, bounded by count and by capture time, so that evidence from sessions that
//! end later can still count; in offline analysis the window is the whole run. Every other
//! session is judged and released at once, which keeps memory flat on TLS-heavy traffic.

use super::certs::CertJudge;
use super::dns_judge::DnsJudge;
use super::mta_sts::StsJudge;
use super::rules::finish_verdict;
use crate::memory::{Usage, Window, evict_oldest_tenth};
use crate::record::DnsRecord;
use crate::record::FindingKind;
use crate::record::{SessionRecord, session_bytes};
use crate::state::{Baseline, Fact, Learned, SaveStats, Seen, StateError, add_witness};
use crate::util::rfc3339_micros;
use ahash::AHashMap;
use serde_json::json;
use std::collections::VecDeque;
use std::mem::size_of;
use std::net::IpAddr;

/// Bounds and windows.
#[derive(Clone, Copy, Debug)]
pub struct CorrelatorConfig {
    /// Sessions held at most; the oldest is judged early beyond this.
    pub max_held: usize,
    /// How long (capture time) a session is held after it ended.
    pub hold_us: i64,
    /// A plaintext session this soon after a failed upgrade is a fallback.
    pub fallback_window_us: i64,
    /// Servers and client/server pairs remembered.
    pub max_baseline: usize,
    /// Bytes of held sessions at most (the memory budget's share); the oldest is judged early
    /// beyond this.
    pub held_bytes: usize,
    /// Bytes of sessions waiting for their lookups' records and of the lookups' finding ids.
    pub wait_bytes: usize,
    /// Bytes of per-server offers and per-pair failures.
    pub offers_bytes: usize,
    /// Bytes of the domains that published `v=STSv1` in this run (the MTA-STS judge).
    pub sts_domains_bytes: usize,
}

impl Default for CorrelatorConfig {
    fn default() -> Self {
        CorrelatorConfig {
            max_held: 200_000,
            hold_us: i64::MAX,
            fallback_window_us: 3_600_000_000,
            max_baseline: 1_000_000,
            held_bytes: usize::MAX,
            wait_bytes: usize::MAX,
            offers_bytes: usize::MAX,
            sts_domains_bytes: usize::MAX,
        }
    }
}

/// Counters for the summary.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct CorrelatorStats {
    /// Sessions judged before their hold window ended because too many were held.
    pub released_early: u64,
    /// Baseline entries forgotten to stay within bounds.
    pub baseline_evictions: u64,
    /// Sessions that waited for the records of the DNS lookups that led to them.
    pub waited_for_dns: u64,
    /// Sessions released before all their lookups' records arrived (bounds or time).
    pub dns_wait_gave_up: u64,
    /// Findings that rest on the persistent baseline of earlier runs.
    pub baseline_findings: u64,
}

/// Capture time after a session's end by which the records of its lookups must have arrived
/// (a worker writes a transaction a few seconds after its answer).
const DNS_GRACE_US: i64 = 60_000_000;

/// A session waiting for the records of its lookups.
struct Waiting {
    rec: SessionRecord,
    missing: usize,
}

struct Offer {
    first_us: i64,
    last_us: i64,
    sessions: u64,
    session_id: String,
}

struct Failure {
    at_us: i64,
    session_id: String,
    kind: FindingKind,
    finding_id: String,
}

/// Cross-session state.
pub struct Correlator {
    cfg: CorrelatorConfig,
    held: VecDeque<SessionRecord>,
    offers: AHashMap<IpAddr, Offer>,
    failures: AHashMap<(IpAddr, IpAddr), Vec<Failure>>,
    watermark_us: i64,
    /// Finding ids of the DNS transactions seen, by transaction id (bounded, oldest first out).
    dns_seen: AHashMap<String, Vec<String>>,
    dns_seen_order: VecDeque<String>,
    waiting: AHashMap<u64, Waiting>,
    waiting_order: VecDeque<u64>,
    waiters: AHashMap<String, Vec<u64>>,
    next_slot: u64,
    /// Sizes and evictions of the windows, kept as entries come and go.
    held_usage: Usage,
    wait_usage: Usage,
    offers_usage: Usage,
    baseline: Box<dyn Baseline>,
    /// Certificate judgement and the distinct-certificate table.
    pub certs: CertJudge,
    /// Cross-client DNS judgement.
    pub dns: DnsJudge,
    /// MTA-STS judgement and the policies published in this run.
    pub sts: StsJudge,
    /// Counters.
    pub stats: CorrelatorStats,
}

/// Failed upgrades remembered per client/server pair.
const FAILURES_PER_PAIR: usize = 8;
/// A map entry's own bytes and the hash table's overhead, roughly.
const ENTRY_OVERHEAD: usize = 32;
/// A client/server pair's entry without its failures.
const PAIR_BYTES: usize = ENTRY_OVERHEAD + 2 * size_of::<IpAddr>() + size_of::<Vec<Failure>>();
/// A failure without its strings.
const FAILURE_BYTES: usize = size_of::<Failure>();

/// How many of `findings` rest on the persistent baseline of earlier runs (their evidence says
/// `"source": "baseline"`), sessions' and DNS transactions' alike.
fn from_earlier_runs(findings: &[crate::record::Finding]) -> u64 {
    findings
        .iter()
        .filter(|f| f.evidence.get("source").is_some_and(|s| s == "baseline"))
        .count() as u64
}

fn offer_bytes(session_id: &str) -> usize {
    ENTRY_OVERHEAD + size_of::<IpAddr>() + size_of::<Offer>() + session_id.len()
}

fn failure_bytes(f: &Failure) -> usize {
    FAILURE_BYTES + f.session_id.len() + f.finding_id.len()
}

/// A seen lookup's entry: its id twice (map and order) and its finding ids.
fn seen_bytes(tx: &str, ids: &[String]) -> usize {
    ENTRY_OVERHEAD
        + 2 * (size_of::<String>() + tx.len())
        + ids
            .iter()
            .map(|i| size_of::<String>() + i.len())
            .sum::<usize>()
}

impl Correlator {
    /// An empty correlator that judges certificates with `certs`, DNS answers with `dns`, and
    /// asks `baseline` about earlier runs.
    pub fn new(
        cfg: CorrelatorConfig,
        certs: CertJudge,
        dns: DnsJudge,
        baseline: Box<dyn Baseline>,
    ) -> Correlator {
        Correlator {
            cfg,
            held: VecDeque::new(),
            offers: AHashMap::new(),
            failures: AHashMap::new(),
            watermark_us: i64::MIN,
            dns_seen: AHashMap::new(),
            dns_seen_order: VecDeque::new(),
            waiting: AHashMap::new(),
            waiting_order: VecDeque::new(),
            waiters: AHashMap::new(),
            next_slot: 0,
            held_usage: Usage::default(),
            wait_usage: Usage::default(),
            offers_usage: Usage::default(),
            baseline,
            certs,
            dns,
            sts: StsJudge::with_max_bytes(cfg.sts_domains_bytes),
            stats: CorrelatorStats::default(),
        }
    }

    /// Takes one finished DNS transaction: judges it across clients and releases the sessions
    /// that waited for it.
    pub fn push_dns<F: FnMut(SessionRecord)>(&mut self, rec: &mut DnsRecord, out: &mut F) {
        self.watermark_us = self.watermark_us.max(rec.ts.0);
        self.dns.judge(rec, self.baseline.as_ref());
        self.sts.judge_dns(rec, self.baseline.as_ref());
        self.stats.baseline_findings += from_earlier_runs(&rec.finding_details);
        let ids: Vec<String> = rec
            .finding_details
            .iter()
            .map(|f| f.finding_id.clone())
            .collect();
        let cap = self.cfg.max_held.max(1024);
        while (self.dns_seen_order.len() >= cap || self.wait_usage.bytes > self.cfg.wait_bytes)
            && let Some(old) = self.dns_seen_order.pop_front()
        {
            if let Some(ids) = self.dns_seen.remove(&old) {
                self.wait_usage.bytes -= seen_bytes(&old, &ids);
                self.wait_usage.entries -= 1;
            }
            // A session that names this lookup later waits for it until the grace ends and
            // lacks its finding ids.
            self.wait_usage.evictions += 1;
        }
        let bytes = seen_bytes(&rec.transaction_id, &ids);
        if let Some(old) = self.dns_seen.insert(rec.transaction_id.clone(), ids) {
            self.wait_usage.bytes -= seen_bytes(&rec.transaction_id, &old);
        } else {
            self.wait_usage.entries += 1;
            self.dns_seen_order.push_back(rec.transaction_id.clone());
        }
        self.wait_usage.bytes += bytes;
        if let Some(slots) = self.waiters.remove(&rec.transaction_id) {
            for slot in slots {
                let ready = self.waiting.get_mut(&slot).is_some_and(|w| {
                    w.missing = w.missing.saturating_sub(1);
                    w.missing == 0
                });
                if ready && let Some(w) = self.take_waiting(slot) {
                    self.admit(w.rec, out);
                }
            }
        }
        self.release_overdue(out);
    }

    /// Takes one finished session; hands judged sessions to `out`.
    pub fn push<F: FnMut(SessionRecord)>(&mut self, rec: SessionRecord, out: &mut F) {
        self.watermark_us = self.watermark_us.max(rec.ts_end.0);
        let missing: Vec<String> = rec
            .dns_transaction_ids
            .iter()
            .filter(|tx| !self.dns_seen.contains_key(*tx))
            .cloned()
            .collect();
        if missing.is_empty() {
            self.admit(rec, out);
        } else {
            self.stats.waited_for_dns += 1;
            let slot = self.next_slot;
            self.next_slot += 1;
            for tx in &missing {
                self.waiters.entry(tx.clone()).or_default().push(slot);
            }
            self.wait_usage.entries += 1;
            self.wait_usage.bytes += session_bytes(&rec);
            self.waiting.insert(
                slot,
                Waiting {
                    rec,
                    missing: missing.len(),
                },
            );
            self.waiting_order.push_back(slot);
        }
        self.release_overdue(out);
    }

    /// Admits waiting sessions whose lookups should long have arrived, or beyond the bound.
    fn release_overdue<F: FnMut(SessionRecord)>(&mut self, out: &mut F) {
        while let Some(&slot) = self.waiting_order.front() {
            let Some(w) = self.waiting.get(&slot) else {
                self.waiting_order.pop_front();
                continue;
            };
            let overdue = w.rec.ts_end.0.saturating_add(DNS_GRACE_US) < self.watermark_us;
            let too_many = self.waiting.len() > self.cfg.max_held;
            let too_big = self.wait_usage.bytes > self.cfg.wait_bytes;
            if !overdue && !too_many && !too_big {
                break;
            }
            self.waiting_order.pop_front();
            if let Some(w) = self.take_waiting(slot) {
                self.stats.dns_wait_gave_up += 1;
                if !overdue {
                    self.wait_usage.evictions += 1;
                }
                self.admit(w.rec, out);
            }
        }
        if self.waiting.is_empty() {
            self.waiters.clear();
        }
    }

    /// A session whose lookups are known: gets their finding ids, then the session rules.
    fn admit<F: FnMut(SessionRecord)>(&mut self, mut rec: SessionRecord, out: &mut F) {
        for tx in &rec.dns_transaction_ids {
            if let Some(ids) = self.dns_seen.get(tx) {
                for id in ids {
                    if !rec.dns_finding_ids.contains(id) {
                        rec.dns_finding_ids.push(id.clone());
                    }
                }
            }
        }
        self.certs.judge(&mut rec);
        if rec.starttls_offered {
            self.bound_offers();
            let usage = &mut self.offers_usage;
            let entry = self.offers.entry(rec.server.ip).or_insert_with(|| {
                usage.entries += 1;
                usage.bytes += offer_bytes(&rec.session_id);
                Offer {
                    first_us: rec.ts.0,
                    last_us: rec.ts.0,
                    sessions: 0,
                    session_id: rec.session_id.clone(),
                }
            });
            entry.sessions += 1;
            entry.first_us = entry.first_us.min(rec.ts.0);
            entry.last_us = entry.last_us.max(rec.ts.0);
        }
        if let Some(at_us) = rec.correlation.failed_upgrade_at {
            self.bound_failures();
            let kind = if rec.findings.contains(&FindingKind::StarttlsCommandRejected) {
                FindingKind::StarttlsCommandRejected
            } else {
                FindingKind::TlsHandshakeFailed
            };
            let usage = &mut self.offers_usage;
            let list = self
                .failures
                .entry((rec.client.ip, rec.server.ip))
                .or_insert_with(|| {
                    usage.entries += 1;
                    usage.bytes += PAIR_BYTES;
                    Vec::new()
                });
            if list.len() >= FAILURES_PER_PAIR {
                usage.bytes -= failure_bytes(&list.remove(0));
            }
            let finding_id = rec
                .finding_details
                .iter()
                .find(|f| f.kind == kind)
                .map(|f| f.finding_id.clone())
                .unwrap_or_default();
            usage.bytes += FAILURE_BYTES + rec.session_id.len() + finding_id.len();
            list.push(Failure {
                at_us,
                session_id: rec.session_id.clone(),
                kind,
                finding_id,
            });
        }
        if rec.correlation.not_offered
            || rec.correlation.plaintext_mail
            || rec.correlation.cleartext_auth.is_some()
        {
            // Only these can still gain a finding from sessions yet to come (an offer elsewhere
            // makes this one `starttls-missing`; a failed upgrade makes it a fallback, and its
            // cleartext AUTH `auth-in-cleartext`).
            self.held_usage.entries += 1;
            self.held_usage.bytes += session_bytes(&rec);
            self.held.push_back(rec);
        } else {
            self.release(rec, out);
        }
        while self.held.len() > self.cfg.max_held || self.held_usage.bytes > self.cfg.held_bytes {
            self.stats.released_early += 1;
            self.held_usage.evictions += 1;
            self.release_front(out);
        }
        self.release_held(out);
    }

    /// Moves capture time to `now_us` without a record (live capture, where the output stage's
    /// watermark moves with the wall clock on a quiet link): held sessions whose hold has passed,
    /// and sessions that waited too long for their lookups, are released.
    pub fn advance<F: FnMut(SessionRecord)>(&mut self, now_us: i64, out: &mut F) {
        if now_us <= self.watermark_us {
            return;
        }
        self.watermark_us = now_us;
        self.release_overdue(out);
        self.release_held(out);
    }

    /// Releases the held sessions whose hold (`hold_us` after their end) has passed.
    fn release_held<F: FnMut(SessionRecord)>(&mut self, out: &mut F) {
        while self
            .held
            .front()
            .is_some_and(|r| r.ts_end.0.saturating_add(self.cfg.hold_us) < self.watermark_us)
        {
            self.release_front(out);
        }
    }

    /// Judges every held session (end of input, or shutdown).
    pub fn flush<F: FnMut(SessionRecord)>(&mut self, out: &mut F) {
        while let Some(slot) = self.waiting_order.pop_front() {
            if let Some(w) = self.take_waiting(slot) {
                self.stats.dns_wait_gave_up += 1;
                self.admit(w.rec, out);
            }
        }
        self.waiters.clear();
        while !self.held.is_empty() {
            self.release_front(out);
        }
    }

    fn release_front<F: FnMut(SessionRecord)>(&mut self, out: &mut F) {
        if let Some(rec) = self.held.pop_front() {
            self.held_usage.entries -= 1;
            self.held_usage.bytes -= session_bytes(&rec);
            self.release(rec, out);
        }
    }

    fn release<F: FnMut(SessionRecord)>(&mut self, mut rec: SessionRecord, out: &mut F) {
        self.judge(&mut rec);
        self.certs
            .judge_on_release(&mut rec, self.baseline.as_ref());
        self.sts.judge_session(&mut rec, self.baseline.as_ref());
        self.stats.baseline_findings += from_earlier_runs(&rec.finding_details);
        let earlier = self
            .earlier_failure(&rec)
            .map(|f| (f.kind, f.finding_id.as_str()));
        super::auth::judge(&mut rec, earlier);
        finish_verdict(&mut rec);
        out(rec);
    }

    fn judge(&mut self, rec: &mut SessionRecord) {
        if rec.correlation.not_offered {
            let earlier_run = if self.offers.contains_key(&rec.server.ip) {
                None
            } else {
                self.baseline.starttls_offered(rec.server.ip)
            };
            if let Some(seen) = earlier_run {
                let mut evidence = json!({
                    "source": "baseline",
                    "offered_first_seen": rfc3339_micros(seen.first_us),
                    "offered_last_seen": rfc3339_micros(seen.last_us),
                    "offered_sessions": seen.count,
                    "ehlo_capabilities": rec.ehlo_capabilities,
                });
                add_witness(
                    &mut evidence,
                    self.baseline.witness(Fact::Offered(rec.server.ip)),
                );
                rec.add_finding(FindingKind::StarttlsMissing, rec.ts.0, evidence);
            } else {
                match self.offers.get(&rec.server.ip) {
                    Some(offer) => rec.add_finding(
                        FindingKind::StarttlsMissing,
                        rec.ts.0,
                        json!({
                            "offered_first_seen": rfc3339_micros(offer.first_us),
                            "offered_last_seen": rfc3339_micros(offer.last_us),
                            "offered_in_session": offer.session_id,
                            "ehlo_capabilities": rec.ehlo_capabilities,
                        }),
                    ),
                    None => {
                        let caps = rec.ehlo_capabilities.clone();
                        rec.add_finding(
                            FindingKind::StarttlsNotSupported,
                            rec.ts.0,
                            json!({ "ehlo_capabilities": caps }),
                        )
                    }
                }
            }
        }
        if rec.correlation.plaintext_mail
            && let Some(f) = self.earlier_failure(rec)
        {
            rec.add_finding(
                FindingKind::PlaintextFallback,
                rec.ts.0,
                json!({
                    "same_session": false,
                    "failed_session": f.session_id,
                    "failed_upgrade": f.kind,
                    "delay_seconds": (rec.ts.0 - f.at_us) as f64 / 1e6,
                    "mail_transactions": rec.mail_transactions,
                }),
            );
        }
    }

    /// The newest failed upgrade of another session between the same two addresses that
    /// started at most `--fallback-window` before this session.
    fn earlier_failure(&self, rec: &SessionRecord) -> Option<&Failure> {
        let window = self.cfg.fallback_window_us;
        self.failures
            .get(&(rec.client.ip, rec.server.ip))?
            .iter()
            .rev()
            .find(|f| {
                f.session_id != rec.session_id
                    && f.at_us <= rec.ts.0
                    && rec.ts.0 - f.at_us <= window
            })
    }

    /// What this run learned, for the persistent baseline.
    pub fn learned(&self) -> Learned {
        let mut l = Learned::default();
        for (ip, o) in &self.offers {
            l.offered
                .push((*ip, Seen::span(o.first_us, o.last_us, o.sessions)));
        }
        self.certs.learned(&mut l);
        self.dns.learned(&mut l);
        self.sts.learned(&mut l);
        l
    }

    /// Saves what this run learned into the persistent baseline.
    pub fn save_baseline(&mut self) -> Result<SaveStats, StateError> {
        let learned = self.learned();
        self.baseline.save(&learned)
    }

    /// Baseline lookups that failed (answered as "nothing known").
    pub fn baseline_lookup_errors(&self) -> u64 {
        self.baseline.lookup_errors()
    }

    fn bound_offers(&mut self) {
        if self.offers.len() >= self.cfg.max_baseline
            || self.offers_usage.bytes > self.cfg.offers_bytes
        {
            // Forget the servers seen longest ago; amortised by dropping a tenth at a time.
            self.stats.baseline_evictions += evict_oldest_tenth(
                &mut self.offers,
                &mut self.offers_usage,
                |o| o.last_us,
                |_, o| offer_bytes(&o.session_id),
                |_, _| {},
            );
        }
    }

    fn bound_failures(&mut self) {
        if self.failures.len() >= self.cfg.max_baseline
            || self.offers_usage.bytes > self.cfg.offers_bytes
        {
            let before = self.failures.len();
            let horizon = self
                .watermark_us
                .saturating_sub(self.cfg.fallback_window_us);
            let usage = &mut self.offers_usage;
            let mut forget = |l: &Vec<Failure>| {
                usage.entries -= 1;
                usage.bytes -= PAIR_BYTES + l.iter().map(failure_bytes).sum::<usize>();
            };
            self.failures.retain(|_, l| {
                let keep = l.last().is_some_and(|f| f.at_us >= horizon);
                if !keep {
                    forget(l);
                }
                keep
            });
            if self.failures.len() == before {
                for l in self.failures.values() {
                    forget(l);
                }
                self.failures.clear();
            }
            let gone = (before - self.failures.len()) as u64;
            self.stats.baseline_evictions += gone;
            usage.evictions += gone;
        }
    }

    fn take_waiting(&mut self, slot: u64) -> Option<Waiting> {
        let w = self.waiting.remove(&slot)?;
        self.wait_usage.entries -= 1;
        self.wait_usage.bytes -= session_bytes(&w.rec);
        Some(w)
    }

    /// Size and evictions of one of the correlator's windows (None for windows it does not own).
    pub fn usage(&self, window: Window) -> Option<Usage> {
        match window {
            Window::Held => Some(self.held_usage),
            Window::DnsWait => Some(self.wait_usage),
            Window::Offers => Some(self.offers_usage),
            Window::StsDomains => Some(self.sts.usage()),
            _ => None,
        }
    }
}
