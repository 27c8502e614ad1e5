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
    /// How long before a session its client's lookups can have led to it (`--mx-window`): a
    /// seen lookup is remembered this long (plus `DNS_GRACE_US`) after it, then forgotten.
    pub dns_link_window_us: i64,
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
            dns_link_window_us: 600_000_000,
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
    rec: Box<SessionRecord>,
    /// `session_bytes` of `rec` when it began to wait (it does not change while waiting), so
    /// that what is counted in is what is counted out, without walking the record again.
    rec_bytes: usize,
    /// The lookups whose records have not arrived (at most the session's few transaction ids).
    missing: Vec<u64>,
}

impl Waiting {
    /// This session's cost in the DNS-wait window.
    fn bytes(&self) -> usize {
        self.rec_bytes + self.missing.len() * WAITER_SLOT_BYTES
    }
}

/// A held session with its `session_bytes` as counted when it was held.
struct Held {
    bytes: usize,
    rec: Box<SessionRecord>,
}

/// A transaction id as a 64-bit key: the seen-lookup and waiter tables then hold no string
/// per lookup (the ids are `D` and 16 hex digits of a hash already). Two ids with one key
/// would let a session be admitted without waiting for the second lookup; at 2^-64 per pair
/// that is accepted.
fn lookup_key(transaction_id: &str) -> u64 {
    const KEYS: ahash::RandomState = ahash::RandomState::with_seeds(0xd45, 0x5ee1, 0x100c, 0x0b5);
    KEYS.hash_one(transaction_id)
}

/// A seen lookup's cost in the DNS-wait window: its table slot, its place in the time order and
/// its finding ids.
fn seen_bytes(finding_ids: &[String]) -> usize {
    ENTRY_OVERHEAD
        + size_of::<u64>()
        + size_of::<Vec<String>>()
        + size_of::<(i64, u64)>()
        + finding_ids
            .iter()
            .map(|i| size_of::<String>() + i.len())
            .sum::<usize>()
}

/// A waiting session's slot in the waiter list of one missing lookup.
const WAITER_SLOT_BYTES: usize =
    ENTRY_OVERHEAD + size_of::<u64>() + size_of::<Vec<u64>>() + size_of::<u64>();

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
    held: VecDeque<Held>,
    offers: AHashMap<IpAddr, Offer>,
    failures: AHashMap<(IpAddr, IpAddr), Vec<Failure>>,
    watermark_us: i64,
    /// The finding ids (usually none) of the DNS transactions seen, by [`lookup_key`] (bounded,
    /// oldest first out, forgotten after the link window).
    dns_seen: AHashMap<u64, Vec<String>>,
    /// (lookup time, key) in the order the lookups arrived.
    dns_seen_order: VecDeque<(i64, u64)>,
    waiting: AHashMap<u64, Waiting>,
    waiting_order: VecDeque<u64>,
    /// The waiting sessions' slots by the key of each lookup they miss. A session leaving the
    /// wait, however it leaves, takes its slots out, so nothing here outlives its session.
    waiters: AHashMap<u64, Vec<u64>>,
    /// The waiting sessions' part of `wait_usage.bytes`.
    waiting_bytes: usize,
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
            waiting_bytes: 0,
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
    pub fn push_dns<F: FnMut(Box<SessionRecord>)>(&mut self, rec: &mut DnsRecord, out: &mut F) {
        self.watermark_us = self.watermark_us.max(rec.ts.0);
        self.dns.judge(rec, self.baseline.as_ref());
        self.sts.judge_dns(rec, self.baseline.as_ref());
        self.stats.baseline_findings += from_earlier_runs(&rec.finding_details);
        let finding_ids: Vec<String> = rec
            .finding_details
            .iter()
            .map(|f| f.finding_id.clone())
            .collect();
        let cap = self.cfg.max_held.max(1024);
        let horizon = self.seen_horizon();
        while let Some(&(ts, _)) = self.dns_seen_order.front() {
            let full = self.dns_seen_order.len() >= cap;
            if !full && ts >= horizon {
                break;
            }
            self.forget_oldest_seen();
            if full {
                // A session that names this lookup later waits for it until the grace ends and
                // lacks its finding ids.
                self.wait_usage.evictions += 1;
            }
        }
        let key = lookup_key(&rec.transaction_id);
        let bytes = seen_bytes(&finding_ids);
        if let Some(old) = self.dns_seen.insert(key, finding_ids) {
            self.wait_usage.bytes -= seen_bytes(&old);
        } else {
            self.wait_usage.entries += 1;
            self.dns_seen_order.push_back((rec.ts.0, key));
        }
        self.wait_usage.bytes += bytes;
        if let Some(slots) = self.waiters.remove(&key) {
            for slot in slots {
                let ready = self.waiting.get_mut(&slot).is_some_and(|w| {
                    w.missing.retain(|k| *k != key);
                    self.wait_usage.bytes -= WAITER_SLOT_BYTES;
                    self.waiting_bytes -= WAITER_SLOT_BYTES;
                    w.missing.is_empty()
                });
                if ready && let Some(w) = self.take_waiting(slot) {
                    self.admit(w.rec, out);
                }
            }
        }
        self.release_overdue(out);
    }

    /// Takes one finished session; hands judged sessions to `out`.
    pub fn push<F: FnMut(Box<SessionRecord>)>(&mut self, rec: Box<SessionRecord>, out: &mut F) {
        self.watermark_us = self.watermark_us.max(rec.ts_end.0);
        let mut missing: Vec<u64> = rec
            .dns_transaction_ids
            .iter()
            .map(|tx| lookup_key(tx))
            .filter(|key| !self.dns_seen.contains_key(key))
            .collect();
        missing.dedup();
        if missing.is_empty() {
            self.admit(rec, out);
        } else {
            self.stats.waited_for_dns += 1;
            let slot = self.next_slot;
            self.next_slot += 1;
            for key in &missing {
                self.waiters.entry(*key).or_default().push(slot);
            }
            let waiting = Waiting {
                rec_bytes: session_bytes(&rec),
                rec,
                missing,
            };
            let bytes = waiting.bytes();
            self.wait_usage.entries += 1;
            self.wait_usage.bytes += bytes;
            self.waiting_bytes += bytes;
            self.waiting.insert(slot, waiting);
            self.waiting_order.push_back(slot);
        }
        self.release_overdue(out);
    }

    /// Admits waiting sessions whose lookups should long have arrived, or beyond the bound.
    fn release_overdue<F: FnMut(Box<SessionRecord>)>(&mut self, out: &mut F) {
        while let Some(&slot) = self.waiting_order.front() {
            let Some(w) = self.waiting.get(&slot) else {
                self.waiting_order.pop_front();
                continue;
            };
            let overdue = w.rec.ts_end.0.saturating_add(DNS_GRACE_US) < self.watermark_us;
            let too_many = self.waiting.len() > self.cfg.max_held;
            if !overdue && !too_many {
                break;
            }
            self.waiting_order.pop_front();
            self.give_up_waiting(slot, !overdue, out);
        }
        // Over the byte share. Waiting sessions may fill half of it: a record they wait for
        // usually comes within seconds, while the oldest seen lookups are minutes old and rarely
        // named again. Beyond their half the longest waiting session goes; below it, the oldest
        // seen lookup.
        while self.wait_usage.bytes > self.cfg.wait_bytes {
            if self.waiting_bytes > self.cfg.wait_bytes / 2 || self.dns_seen_order.is_empty() {
                let Some(slot) = self.waiting_order.pop_front() else {
                    break;
                };
                self.give_up_waiting(slot, true, out);
            } else {
                // A session that names this lookup later waits for it until the grace ends and
                // lacks its finding ids.
                self.forget_oldest_seen();
                self.wait_usage.evictions += 1;
            }
        }
    }

    /// Admits a waiting session without the records it still misses (`evicted` when the
    /// budget, not the grace, ended the wait).
    fn give_up_waiting<F: FnMut(Box<SessionRecord>)>(
        &mut self,
        slot: u64,
        evicted: bool,
        out: &mut F,
    ) {
        if let Some(w) = self.take_waiting(slot) {
            self.stats.dns_wait_gave_up += 1;
            if evicted {
                self.wait_usage.evictions += 1;
            }
            self.admit(w.rec, out);
        }
    }

    /// A session whose lookups are known: gets their finding ids, then the session rules.
    fn admit<F: FnMut(Box<SessionRecord>)>(&mut self, mut rec: Box<SessionRecord>, out: &mut F) {
        for tx in &rec.dns_transaction_ids {
            if let Some(ids) = self.dns_seen.get(&lookup_key(tx)) {
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
            let bytes = session_bytes(&rec);
            self.held_usage.entries += 1;
            self.held_usage.bytes += bytes;
            self.held.push_back(Held { bytes, rec });
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
    pub fn advance<F: FnMut(Box<SessionRecord>)>(&mut self, now_us: i64, out: &mut F) {
        if now_us <= self.watermark_us {
            return;
        }
        self.watermark_us = now_us;
        self.release_overdue(out);
        self.release_held(out);
    }

    /// Releases the held sessions whose hold (`hold_us` after their end) has passed.
    fn release_held<F: FnMut(Box<SessionRecord>)>(&mut self, out: &mut F) {
        while self
            .held
            .front()
            .is_some_and(|h| h.rec.ts_end.0.saturating_add(self.cfg.hold_us) < self.watermark_us)
        {
            self.release_front(out);
        }
    }

    /// Judges every held session (end of input, or shutdown).
    pub fn flush<F: FnMut(Box<SessionRecord>)>(&mut self, out: &mut F) {
        while let Some(slot) = self.waiting_order.pop_front() {
            self.give_up_waiting(slot, false, out);
        }
        while !self.held.is_empty() {
            self.release_front(out);
        }
    }

    fn release_front<F: FnMut(Box<SessionRecord>)>(&mut self, out: &mut F) {
        if let Some(Held { bytes, rec }) = self.held.pop_front() {
            self.held_usage.entries -= 1;
            self.held_usage.bytes -= bytes;
            self.release(rec, out);
        }
    }

    fn release<F: FnMut(Box<SessionRecord>)>(&mut self, mut rec: Box<SessionRecord>, out: &mut F) {
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

    /// Takes a session out of the wait, and its slot out of the waiter list of every lookup it
    /// still misses.
    fn take_waiting(&mut self, slot: u64) -> Option<Waiting> {
        let w = self.waiting.remove(&slot)?;
        for key in &w.missing {
            if let Some(slots) = self.waiters.get_mut(key) {
                slots.retain(|s| *s != slot);
                if slots.is_empty() {
                    self.waiters.remove(key);
                }
            }
        }
        let bytes = w.bytes();
        self.wait_usage.entries -= 1;
        self.wait_usage.bytes -= bytes;
        self.waiting_bytes -= bytes;
        Some(w)
    }

    /// Lookups older than this (capture time) can no longer be named by a session still to
    /// come: the link window before the session's start, and the grace for the session's length
    /// and the workers' delay.
    fn seen_horizon(&self) -> i64 {
        self.watermark_us
            .saturating_sub(self.cfg.dns_link_window_us)
            .saturating_sub(DNS_GRACE_US)
    }

    /// Forgets the seen lookup that arrived first.
    fn forget_oldest_seen(&mut self) {
        if let Some((_, key)) = self.dns_seen_order.pop_front()
            && let Some(ids) = self.dns_seen.remove(&key)
        {
            self.wait_usage.bytes -= seen_bytes(&ids);
            self.wait_usage.entries -= 1;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::certs::CertJudge;
    use crate::detect::dns_judge::{DnsJudge, DnsJudgeConfig, KnownMx};
    use crate::detect::rules::build_record;
    use crate::flow::FlowSummary;
    use crate::record::EndReason;
    use crate::smtp::{SmtpConfig, SmtpSession};
    use crate::tls::dane::TlsaStore;
    use crate::tls::verify::Validator;

    fn correlator(wait_bytes: usize) -> Correlator {
        Correlator::new(
            CorrelatorConfig {
                wait_bytes,
                ..CorrelatorConfig::default()
            },
            CertJudge::new(Validator::new(&[]).unwrap(), TlsaStore::default()),
            DnsJudge::new(DnsJudgeConfig::default(), KnownMx::default()),
            Box::new(crate::state::NoBaseline),
        )
    }

    /// An empty session of one second ending at `end_us` that names `lookups`.
    fn session(client_port: u16, end_us: i64, lookups: &[&str]) -> SessionRecord {
        let mut s = SmtpSession::new(SmtpConfig::default(), false);
        s.finish(EndReason::Fin);
        let flow = FlowSummary::for_test(
            ("192.0.2.1".parse().unwrap(), client_port),
            ("198.51.100.7".parse().unwrap(), 25),
            end_us - 1_000_000,
            end_us,
        );
        let mut rec = build_record(&flow, s.facts, EndReason::Fin, "test");
        rec.dns_transaction_ids = lookups.iter().map(|s| s.to_string()).collect();
        rec
    }

    /// A lookup at `ts_us` (id `D` and `ts_us` in hex), with an injection finding if `injected`.
    fn lookup(ts_us: i64, injected: bool) -> DnsRecord {
        let mut rec = DnsRecord::for_tests(ts_us);
        if injected {
            let f = rec.finding(FindingKind::DnsInjection, 0, ts_us, json!({}));
            rec.findings.push(FindingKind::DnsInjection);
            rec.finding_details.push(f);
        }
        rec
    }

    #[test]
    fn a_session_waiting_for_its_lookup_is_not_crowded_out_by_the_lookups_seen_before() {
        // A share that a few hundred seen lookups fill, and room for one waiting session.
        let one_session = session_bytes(&session(1, 0, &["D0"])) + WAITER_SLOT_BYTES;
        let mut c = correlator(2 * one_session + 300 * seen_bytes(&[]));
        let mut out = Vec::new();
        for i in 0..2_000 {
            c.push_dns(&mut lookup(i * 1_000, false), &mut |r| out.push(*r));
        }
        assert!(c.wait_usage.bytes <= c.cfg.wait_bytes);
        // The session's lookup (with a finding) arrives after the session.
        let late = lookup(2_000_000, true);
        let rec = session(2, 2_100_000, &[late.transaction_id.as_str()]);
        c.push(Box::new(rec), &mut |r| out.push(*r));
        assert!(out.is_empty(), "the session waits for its lookup");
        c.push_dns(&mut late.clone(), &mut |r| out.push(*r));
        assert_eq!(out.len(), 1, "the lookup's record releases the session");
        assert_eq!(
            out[0].dns_finding_ids,
            [format!("{}-0", late.transaction_id)]
        );
        assert_eq!(c.stats.dns_wait_gave_up, 0);
        assert!(c.wait_usage.bytes <= c.cfg.wait_bytes);
    }

    #[test]
    fn a_session_that_stops_waiting_leaves_nothing_behind() {
        let mut c = correlator(usize::MAX);
        let mut out = Vec::new();
        // Two sessions wait, each for a lookup that never comes; the first gives up when its
        // grace has passed, while the second still waits.
        c.push(Box::new(session(1, 1_000_000, &["Dlost-1"])), &mut |r| {
            out.push(*r)
        });
        c.push(
            Box::new(session(2, 1_000_000 + DNS_GRACE_US, &["Dlost-2"])),
            &mut |r| out.push(*r),
        );
        c.push_dns(&mut lookup(2 * DNS_GRACE_US, false), &mut |r| out.push(*r));
        assert_eq!(out.len(), 1);
        assert_eq!(c.stats.dns_wait_gave_up, 1);
        assert_eq!(c.waiting.len(), 1);
        assert_eq!(
            c.waiters.keys().copied().collect::<Vec<_>>(),
            [lookup_key("Dlost-2")],
            "the first session's lookup is no longer waited for"
        );
        let entries = c.wait_usage.entries;
        let expected = session_bytes(&c.waiting.values().next().unwrap().rec)
            + WAITER_SLOT_BYTES
            + c.dns_seen
                .values()
                .map(|ids| seen_bytes(ids))
                .sum::<usize>();
        assert_eq!(c.wait_usage.bytes, expected);
        assert_eq!(entries, 1 + c.dns_seen.len());
        c.flush(&mut |r| out.push(*r));
        assert!(c.waiters.is_empty() && c.waiting.is_empty());
        assert_eq!(
            c.wait_usage.bytes,
            c.dns_seen
                .values()
                .map(|ids| seen_bytes(ids))
                .sum::<usize>()
        );
    }

    #[test]
    fn seen_lookups_are_forgotten_once_no_session_can_name_them() {
        let mut c = correlator(usize::MAX);
        let mut out = Vec::new();
        let window = c.cfg.dns_link_window_us + DNS_GRACE_US;
        for i in 0..10 {
            c.push_dns(&mut lookup(i * 1_000_000, false), &mut |r| out.push(*r));
        }
        assert_eq!(c.dns_seen.len(), 10);
        // Time moves on past the window of the first five.
        c.push_dns(&mut lookup(window + 4_500_000, false), &mut |r| {
            out.push(*r)
        });
        assert_eq!(c.dns_seen.len(), 6, "five forgotten, one new");
        assert_eq!(
            c.wait_usage.evictions, 0,
            "forgetting by age is not an eviction"
        );
    }
}
