//! The correlator sees finished session records from every worker and judges what one session
//! cannot show alone: whether a server that did not offer STARTTLS offered it in other sessions
//! (`starttls-missing` vs `starttls-not-supported`), and whether a plaintext session followed a
//! failed upgrade between the same two hosts (`plaintext-fallback`).
//!
//! Sessions that can still gain such a finding (no STARTTLS offered; mail sent in plaintext) are
//! held for a while, bounded by count and by capture time, so that evidence from sessions that
//! end later can still count; in offline analysis the window is the whole run. Every other
//! session is judged and released at once, which keeps memory flat on TLS-heavy traffic.

use super::certs::CertJudge;
use super::kinds::FindingKind;
use super::rules::{add_finding, finish_verdict};
use crate::event::SessionRecord;
use crate::util::rfc3339_micros;
use ahash::AHashMap;
use serde_json::json;
use std::collections::VecDeque;
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
}

impl Default for CorrelatorConfig {
    fn default() -> Self {
        CorrelatorConfig {
            max_held: 200_000,
            hold_us: i64::MAX,
            fallback_window_us: 3_600_000_000,
            max_baseline: 1_000_000,
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
}

struct Offer {
    first_us: i64,
    last_us: i64,
    session_id: String,
}

struct Failure {
    at_us: i64,
    session_id: String,
    kind: FindingKind,
}

/// Cross-session state.
pub struct Correlator {
    cfg: CorrelatorConfig,
    held: VecDeque<SessionRecord>,
    offers: AHashMap<IpAddr, Offer>,
    failures: AHashMap<(IpAddr, IpAddr), Vec<Failure>>,
    watermark_us: i64,
    /// Certificate judgement and the distinct-certificate table.
    pub certs: CertJudge,
    /// Counters.
    pub stats: CorrelatorStats,
}

/// Failed upgrades remembered per client/server pair.
const FAILURES_PER_PAIR: usize = 8;

impl Correlator {
    /// An empty correlator that judges certificates with `certs`.
    pub fn new(cfg: CorrelatorConfig, certs: CertJudge) -> Correlator {
        Correlator {
            cfg,
            held: VecDeque::new(),
            offers: AHashMap::new(),
            failures: AHashMap::new(),
            watermark_us: i64::MIN,
            certs,
            stats: CorrelatorStats::default(),
        }
    }

    /// Takes one finished session; hands judged sessions to `out`.
    pub fn push<F: FnMut(SessionRecord)>(&mut self, mut rec: SessionRecord, out: &mut F) {
        self.watermark_us = self.watermark_us.max(rec.ts_end_us);
        self.certs.judge(&mut rec);
        if rec.starttls_offered {
            self.bound_offers();
            let entry = self.offers.entry(rec.server_ip).or_insert_with(|| Offer {
                first_us: rec.ts_us,
                last_us: rec.ts_us,
                session_id: rec.session_id.clone(),
            });
            entry.first_us = entry.first_us.min(rec.ts_us);
            entry.last_us = entry.last_us.max(rec.ts_us);
        }
        if let Some(at_us) = rec.correlation.failed_upgrade_at {
            self.bound_failures();
            let kind = if rec.findings.contains(&FindingKind::StarttlsCommandRejected) {
                FindingKind::StarttlsCommandRejected
            } else {
                FindingKind::TlsHandshakeFailed
            };
            let list = self
                .failures
                .entry((rec.client_ip, rec.server_ip))
                .or_default();
            if list.len() >= FAILURES_PER_PAIR {
                list.remove(0);
            }
            list.push(Failure {
                at_us,
                session_id: rec.session_id.clone(),
                kind,
            });
        }
        if rec.correlation.not_offered || rec.correlation.plaintext_mail {
            // Only these can still gain a finding from sessions yet to come (an offer elsewhere
            // makes this one `starttls-missing`; a failed upgrade makes it a fallback).
            self.held.push_back(rec);
        } else {
            self.release(rec, out);
        }
        while self.held.len() > self.cfg.max_held {
            self.stats.released_early += 1;
            self.release_front(out);
        }
        while self
            .held
            .front()
            .is_some_and(|r| r.ts_end_us.saturating_add(self.cfg.hold_us) < self.watermark_us)
        {
            self.release_front(out);
        }
    }

    /// Judges every held session (end of input, or shutdown).
    pub fn flush<F: FnMut(SessionRecord)>(&mut self, out: &mut F) {
        while !self.held.is_empty() {
            self.release_front(out);
        }
    }

    fn release_front<F: FnMut(SessionRecord)>(&mut self, out: &mut F) {
        if let Some(rec) = self.held.pop_front() {
            self.release(rec, out);
        }
    }

    fn release<F: FnMut(SessionRecord)>(&mut self, mut rec: SessionRecord, out: &mut F) {
        self.judge(&mut rec);
        self.certs.judge_on_release(&mut rec);
        finish_verdict(&mut rec);
        out(rec);
    }

    fn judge(&self, rec: &mut SessionRecord) {
        if rec.correlation.not_offered {
            match self.offers.get(&rec.server_ip) {
                Some(offer) => add_finding(
                    rec,
                    FindingKind::StarttlsMissing,
                    rec.ts_us,
                    json!({
                        "offered_first_seen": rfc3339_micros(offer.first_us),
                        "offered_last_seen": rfc3339_micros(offer.last_us),
                        "offered_in_session": offer.session_id,
                        "ehlo_capabilities": rec.ehlo_capabilities,
                    }),
                ),
                None => {
                    let caps = rec.ehlo_capabilities.clone();
                    add_finding(
                        rec,
                        FindingKind::StarttlsNotSupported,
                        rec.ts_us,
                        json!({ "ehlo_capabilities": caps }),
                    )
                }
            }
        }
        if rec.correlation.plaintext_mail
            && let Some(list) = self.failures.get(&(rec.client_ip, rec.server_ip))
        {
            let window = self.cfg.fallback_window_us;
            let earlier = list.iter().rev().find(|f| {
                f.session_id != rec.session_id
                    && f.at_us <= rec.ts_us
                    && rec.ts_us - f.at_us <= window
            });
            if let Some(f) = earlier {
                add_finding(
                    rec,
                    FindingKind::PlaintextFallback,
                    rec.ts_us,
                    json!({
                        "same_session": false,
                        "failed_session": f.session_id,
                        "failed_upgrade": f.kind,
                        "delay_seconds": (rec.ts_us - f.at_us) as f64 / 1e6,
                        "mail_transactions": rec.mail_transactions,
                    }),
                );
            }
        }
    }

    fn bound_offers(&mut self) {
        if self.offers.len() >= self.cfg.max_baseline {
            // Forget the servers seen longest ago; amortised by dropping a tenth at a time.
            let mut ages: Vec<i64> = self.offers.values().map(|o| o.last_us).collect();
            let cut = ages.len() / 10;
            let (_, pivot, _) = ages.select_nth_unstable(cut);
            let pivot = *pivot;
            let before = self.offers.len();
            self.offers.retain(|_, o| o.last_us > pivot);
            self.stats.baseline_evictions += (before - self.offers.len()) as u64;
        }
    }

    fn bound_failures(&mut self) {
        if self.failures.len() >= self.cfg.max_baseline {
            let before = self.failures.len();
            let horizon = self
                .watermark_us
                .saturating_sub(self.cfg.fallback_window_us);
            self.failures
                .retain(|_, l| l.last().is_some_and(|f| f.at_us >= horizon));
            if self.failures.len() == before {
                self.failures.clear();
            }
            self.stats.baseline_evictions += (before - self.failures.len()) as u64;
        }
    }
}
