//! The run summary: sessions by verdict, findings by kind, the servers with most findings, and
//! every counter that says something was lost or skipped. Printed for people, or as JSON.

use crate::pipeline::RunStats;
use crate::record::SessionRecord;
use crate::sink::{SessionSink, SinkError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Servers tracked for the "top servers" table; beyond this new servers are not added.
const MAX_SERVERS: usize = 1_000_000;

/// Aggregates judged sessions as they pass (cheap: a few counters per session).
#[derive(Clone, Default)]
pub struct Tally {
    /// Sessions by verdict.
    pub verdicts: BTreeMap<&'static str, u64>,
    /// Findings by kind.
    pub findings: BTreeMap<&'static str, u64>,
    /// Per server: (sessions, findings).
    pub servers: std::collections::HashMap<IpAddr, (u64, u64)>,
    /// Servers not tracked because the table was full.
    pub servers_untracked: u64,
    /// Sessions seen.
    pub sessions: u64,
    /// TLS sessions by negotiated version.
    pub tls_versions: BTreeMap<String, u64>,
    /// TLS sessions by negotiated cipher suite.
    pub tls_ciphers: BTreeMap<String, u64>,
    /// DNS transactions written.
    pub dns_transactions: u64,
}

/// Distinct versions or cipher names tracked (the rest are counted under `other`).
const MAX_TLS_KEYS: usize = 256;

fn count_bounded(map: &mut BTreeMap<String, u64>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n += 1;
    } else if map.len() < MAX_TLS_KEYS {
        map.insert(key.to_string(), 1);
    } else {
        *map.entry("other".to_string()).or_default() += 1;
    }
}

impl Tally {
    /// Counts one session.
    pub fn add(&mut self, rec: &SessionRecord) {
        self.sessions += 1;
        *self.verdicts.entry(rec.verdict).or_default() += 1;
        if let Some(v) = &rec.tls_version {
            count_bounded(&mut self.tls_versions, v);
        }
        if let Some(c) = &rec.tls_cipher {
            count_bounded(&mut self.tls_ciphers, c);
        }
        for f in &rec.finding_details {
            *self.findings.entry(f.kind.as_str()).or_default() += 1;
        }
        let n = rec.finding_details.len() as u64;
        if let Some(e) = self.servers.get_mut(&rec.server.ip) {
            e.0 += 1;
            e.1 += n;
        } else if self.servers.len() < MAX_SERVERS {
            self.servers.insert(rec.server.ip, (1, n));
        } else {
            self.servers_untracked += 1;
        }
    }
}

/// A sink that fills a shared tally, read by the CLI after the run.
pub struct TallySink(pub Arc<Mutex<Tally>>);

impl SessionSink for TallySink {
    fn session(&mut self, rec: &SessionRecord) -> Result<(), SinkError> {
        if let Ok(mut t) = self.0.lock() {
            t.add(rec);
        }
        Ok(())
    }

    fn dns(&mut self, rec: &crate::record::DnsRecord) -> Result<(), SinkError> {
        if let Ok(mut t) = self.0.lock() {
            t.dns_transactions += 1;
            for f in &rec.finding_details {
                *t.findings.entry(f.kind.as_str()).or_default() += 1;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// One row of the top-servers table.
#[derive(Serialize)]
pub struct ServerRow {
    /// Server address.
    pub server_ip: IpAddr,
    /// Sessions to it.
    pub sessions: u64,
    /// Findings on those sessions.
    pub findings: u64,
}

/// The summary as printed with `--json` and written to `summary.json`.
#[derive(Serialize)]
pub struct Summary {
    /// Inputs read, with their counters.
    pub inputs: Vec<InputRow>,
    /// Packets read.
    pub packets: u64,
    /// Captured bytes read.
    pub bytes: u64,
    /// Wall-clock seconds the run took.
    pub elapsed_seconds: f64,
    /// Sessions written.
    pub sessions: u64,
    /// Sessions by verdict.
    pub sessions_by_verdict: BTreeMap<&'static str, u64>,
    /// Findings by kind.
    pub findings_by_kind: BTreeMap<&'static str, u64>,
    /// Servers with the most findings.
    pub top_servers: Vec<ServerRow>,
    /// TLS sessions by negotiated version.
    pub tls_versions: BTreeMap<String, u64>,
    /// TLS sessions by negotiated cipher suite.
    pub tls_ciphers: BTreeMap<String, u64>,
    /// Counters: certificates.
    pub certificates: crate::detect::certs::CertStats,
    /// DNS transactions written to `dns.ndjson`.
    pub dns_transactions: u64,
    /// Counters: DNS.
    pub dns: crate::dns::DnsStats,
    /// Counters: decoding.
    pub decode: crate::decode::DecodeStats,
    /// Counters: flows and reassembly.
    pub flows: crate::pipeline::FlowStats,
    /// Each worker's share of the work (packets, sessions, DNS messages), in worker order:
    /// clients are sharded by address, so heavy clients can load one worker more than others.
    pub workers: Vec<crate::pipeline::WorkerRow>,
    /// Loss before the sensor, estimated from acknowledgments above holes.
    pub capture_loss: CaptureLossRow,
    /// Counters: the correlator.
    pub correlator: crate::detect::CorrelatorStats,
    /// Counters: DNS answers judged across clients.
    pub dns_judge: crate::detect::dns_judge::DnsJudgeStats,
    /// Counters: MTA-STS (TXT answers, policy fetches by outcome, linked deliveries, findings,
    /// what was dropped to stay within bounds).
    pub mta_sts: StsRow,
    /// The persistent baseline: what saving it did (absent without `--state`) and lookups
    /// that failed.
    pub baseline: Option<BaselineRow>,
    /// Servers left out of the top-servers table's bookkeeping.
    pub servers_untracked: u64,
    /// Country/ASN enrichment: databases, look-ups, hits, misses.
    pub enrichment: crate::enrich::EnrichStats,
    /// The run was interrupted by a signal.
    pub interrupted: bool,
    /// The memory budget: per window entries, bytes, peak, limit and evictions.
    pub memory: crate::memory::MemoryStats,
    /// What happened to the rows sent to ClickHouse (with `--clickhouse`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clickhouse: Option<crate::sink::clickhouse::ClickHouseStats>,
}

/// The capture-loss estimate (Zeek's `capture_loss.log`): acknowledgments of new data in SMTP
/// flows, those that acknowledged data the capture never saw, and their ratio. A file can carry
/// loss from where it was captured; live, it is loss the kernel's counters cannot see.
#[derive(Serialize)]
pub struct CaptureLossRow {
    /// Acknowledgments of new data.
    pub acks: u64,
    /// Of them, those above a hole.
    pub acked_gaps: u64,
    /// `acked_gaps / acks` (0 without acknowledgments).
    pub ratio: f64,
}

/// The `mta_sts` object of the summary: what the linker (workers) and the judge (output stage)
/// counted.
#[derive(Serialize)]
pub struct StsRow {
    /// `_mta-sts` TXT transactions judged (answered NOERROR or NXDOMAIN).
    pub txt_answers: u64,
    /// Of them, with a valid `v=STSv1` record.
    pub txt_sts_v1: u64,
    /// Answers whose policy id differs from the last one known for the domain.
    pub policy_id_changes: u64,
    /// Policy-fetch connections that ended, by outcome (`ok`, `reset`, `timeout`,
    /// `handshake-failed`).
    pub fetches: BTreeMap<&'static str, u64>,
    /// TCP/443 connections followed that proved not to be policy fetches.
    pub other_https_connections: u64,
    /// Sessions that got a TXT answer or a fetch linked (`sts_txt` set or `sts_fetch_ids`).
    pub sessions_linked: u64,
    /// MTA-STS findings raised, by kind.
    pub findings: BTreeMap<&'static str, u64>,
    /// What was dropped to stay within bounds: clients of the linker (count or bytes), entries
    /// of a client beyond 64 of a kind, domains of the judge.
    pub dropped: StsDroppedRow,
}

/// MTA-STS state dropped to stay within bounds.
#[derive(Serialize)]
pub struct StsDroppedRow {
    /// Clients forgotten by the workers' linkers.
    pub clients: u64,
    /// TXT answers, policy-host addresses and fetches dropped from a full client.
    pub client_entries: u64,
    /// Domains with published ids forgotten by the judge.
    pub domains: u64,
}

impl StsRow {
    fn new(stats: &RunStats) -> StsRow {
        let (l, j) = (&stats.dns.sts, &stats.sts);
        StsRow {
            txt_answers: j.txt_answers,
            txt_sts_v1: j.policies_seen,
            policy_id_changes: j.policy_id_changes,
            fetches: BTreeMap::from([
                ("ok", l.fetches_ok),
                ("reset", l.fetches_reset),
                ("timeout", l.fetches_timeout),
                ("handshake-failed", l.fetches_handshake_failed),
            ]),
            other_https_connections: l.other_https_connections,
            sessions_linked: l.sessions_linked,
            findings: BTreeMap::from([
                ("mta-sts-fetch-blocked", j.fetch_blocked),
                ("mta-sts-plaintext", j.plaintext),
                ("mta-sts-txt-missing", j.txt_missing),
            ]),
            dropped: StsDroppedRow {
                clients: l.clients_evicted,
                client_entries: l.entries_dropped,
                domains: j.evictions,
            },
        }
    }

    /// Fetches of every outcome.
    fn fetches(&self) -> u64 {
        self.fetches.values().sum()
    }
}

/// What the persistent baseline did in this run.
#[derive(Serialize)]
pub struct BaselineRow {
    /// Entries written or updated.
    pub written: u64,
    /// Entries dropped by retention.
    pub expired: u64,
    /// Lookups that failed (answered as "nothing known").
    pub lookup_errors: u64,
    /// Findings resting on earlier runs.
    pub findings_from_earlier_runs: u64,
}

/// One input's counters.
#[derive(Serialize)]
pub struct InputRow {
    /// The name given.
    pub name: String,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Packets cut by the snap length.
    pub snapped: u64,
    /// The file ended inside a record.
    pub truncated: bool,
    /// Corrupt blocks (reading stopped there).
    pub corrupt_blocks: u64,
}

impl Summary {
    /// Assembles the summary of a run.
    pub fn new(stats: &RunStats, tally: &Tally, elapsed_seconds: f64) -> Summary {
        let mut top: Vec<ServerRow> = tally
            .servers
            .iter()
            .filter(|(_, (_, f))| *f > 0)
            .map(|(ip, (s, f))| ServerRow {
                server_ip: *ip,
                sessions: *s,
                findings: *f,
            })
            .collect();
        top.sort_by(|a, b| {
            b.findings
                .cmp(&a.findings)
                .then(a.server_ip.cmp(&b.server_ip))
        });
        top.truncate(10);
        Summary {
            inputs: stats
                .sources
                .iter()
                .map(|(name, s)| InputRow {
                    name: name.clone(),
                    packets: s.packets,
                    bytes: s.bytes,
                    snapped: s.snapped,
                    truncated: s.truncated,
                    corrupt_blocks: s.corrupt_blocks,
                })
                .collect(),
            packets: stats.sources.iter().map(|(_, s)| s.packets).sum(),
            bytes: stats.sources.iter().map(|(_, s)| s.bytes).sum(),
            elapsed_seconds,
            sessions: tally.sessions,
            sessions_by_verdict: tally.verdicts.clone(),
            findings_by_kind: tally.findings.clone(),
            top_servers: top,
            tls_versions: tally.tls_versions.clone(),
            tls_ciphers: tally.tls_ciphers.clone(),
            certificates: stats.certs,
            dns_transactions: tally.dns_transactions,
            dns: stats.dns,
            decode: stats.decode,
            flows: stats.flow,
            workers: stats.workers.clone(),
            capture_loss: CaptureLossRow {
                acks: stats.flow.acks,
                acked_gaps: stats.flow.acked_gaps,
                ratio: crate::pipeline::loss_ratio(stats.flow.acks, stats.flow.acked_gaps),
            },
            correlator: stats.correlator,
            dns_judge: stats.dns_judge,
            mta_sts: StsRow::new(stats),
            baseline: stats.baseline_saved.map(|b| BaselineRow {
                written: b.written,
                expired: b.expired,
                lookup_errors: stats.baseline_lookup_errors,
                findings_from_earlier_runs: stats.correlator.baseline_findings,
            }),
            servers_untracked: tally.servers_untracked,
            enrichment: stats.enrichment.clone(),
            interrupted: stats.interrupted,
            memory: stats.memory.clone(),
            clickhouse: None,
        }
    }

    /// The human form.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mb = self.bytes as f64 / 1e6;
        let rate = if self.elapsed_seconds > 0.0 {
            mb / self.elapsed_seconds
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            "stripwatch: {} packets, {:.1} MB from {} input(s) in {:.2}s ({:.0} MB/s){}",
            self.packets,
            mb,
            self.inputs.len(),
            self.elapsed_seconds,
            rate,
            if self.interrupted {
                " [interrupted]"
            } else {
                ""
            }
        );
        let _ = writeln!(s, "{}", self.enrichment.render_line());
        let m = &self.memory;
        let peak: u64 = m.windows.values().map(|w| w.peak_bytes).sum();
        let _ = writeln!(
            s,
            "Memory: limit {} MiB, state peak {:.1} MiB, {} evictions",
            m.limit_bytes >> 20,
            peak as f64 / 1048576.0,
            m.evictions()
        );
        for (name, w) in m
            .windows
            .iter()
            .filter(|(_, w)| w.evictions + w.skipped_judgements > 0)
        {
            let _ = writeln!(
                s,
                "  {name:<14} {} evicted (peak {:.1} of {:.1} MiB){}",
                w.evictions,
                w.peak_bytes as f64 / 1048576.0,
                w.limit_bytes as f64 / 1048576.0,
                if w.skipped_judgements > 0 {
                    format!(", {} judgements skipped", w.skipped_judgements)
                } else {
                    String::new()
                }
            );
        }
        let _ = writeln!(s, "\nSMTP sessions: {}", self.sessions);
        for (v, n) in &self.sessions_by_verdict {
            let _ = writeln!(s, "  {v:<28} {n:>10}");
        }
        let total: u64 = self.findings_by_kind.values().sum();
        let _ = writeln!(s, "\nFindings: {total}");
        for (k, n) in &self.findings_by_kind {
            let _ = writeln!(s, "  {k:<28} {n:>10}");
        }
        if !self.tls_versions.is_empty() {
            let _ = writeln!(s, "\nTLS versions:");
            for (v, n) in &self.tls_versions {
                let _ = writeln!(s, "  {v:<28} {n:>10}");
            }
            let mut ciphers: Vec<_> = self.tls_ciphers.iter().collect();
            ciphers.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let _ = writeln!(s, "\nTLS ciphers (top 10):");
            for (c, n) in ciphers.into_iter().take(10) {
                let _ = writeln!(s, "  {c:<44} {n:>10}");
            }
        }
        let cert_problems: Vec<_> = self
            .findings_by_kind
            .iter()
            .filter(|(k, _)| {
                k.starts_with("certificate-") || k.starts_with("tlsa-") || k.starts_with("dane-")
            })
            .collect();
        if !cert_problems.is_empty() {
            let _ = writeln!(s, "\nCertificate problems:");
            for (k, n) in cert_problems {
                let _ = writeln!(s, "  {k:<28} {n:>10}");
            }
        }
        if !self.top_servers.is_empty() {
            let _ = writeln!(s, "\nTop servers with findings:");
            for r in &self.top_servers {
                let _ = writeln!(
                    s,
                    "  {:<40} {:>6} findings in {:>6} sessions",
                    r.server_ip.to_string(),
                    r.findings,
                    r.sessions
                );
            }
        }
        let d = &self.decode;
        let f = &self.flows;
        let _ = writeln!(s, "\nCounters:");
        let rows: [(&str, u64); 27] = [
            ("dns messages", self.dns.messages),
            ("dns transactions written", self.dns_transactions),
            ("dns unanswered queries", self.dns.unanswered),
            ("sessions linked to an mx lookup", self.dns.sessions_linked),
            (
                "dns answers a busy client forgot",
                self.dns.client_entries_forgotten,
            ),
            ("tcp packets", d.tcp),
            ("udp packets", d.udp),
            ("smtp flows (mail ports)", f.smtp_flows),
            ("recognised by content", f.recognised_by_content),
            ("flows on mail ports, not smtp", f.not_smtp_flows),
            ("flows evicted (table full)", f.evicted_flows),
            ("sessions cut by eviction", f.evicted_sessions),
            ("flows timed out", f.timed_out_flows),
            ("tcp gaps", f.gaps),
            ("tcp gap bytes", f.gap_bytes),
            ("tcp overlap conflicts", f.overlap_conflicts),
            ("tcp retransmissions", f.retransmissions),
            ("tcp acks of new data", f.acks),
            ("tcp acks above a hole (loss)", f.acked_gaps),
            ("malformed packets", d.malformed()),
            ("truncated payloads", d.truncated_payload),
            ("ip fragments (rebuilt)", d.fragments_reassembled),
            ("ip fragments dropped", d.fragments_dropped),
            ("overlong smtp lines", f.overlong_lines),
            ("sessions judged early", self.correlator.released_early),
            ("dns waits given up", self.correlator.dns_wait_gave_up),
            ("dns judge evictions", self.dns_judge.evictions),
        ];
        for (name, n) in rows {
            let _ = writeln!(s, "  {name:<32} {n:>12}");
        }
        let _ = writeln!(
            s,
            "  {:<32} {:>12.6}",
            "capture loss estimate", self.capture_loss.ratio
        );
        let m = &self.mta_sts;
        if m.txt_answers + m.fetches() + m.other_https_connections + m.sessions_linked > 0 {
            let fetches: Vec<String> = m
                .fetches
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            let findings: u64 = m.findings.values().sum();
            let dropped = m.dropped.clients + m.dropped.client_entries + m.dropped.domains;
            let _ = writeln!(
                s,
                "  {:<32} {:>12}\n  {:<32} {:>12}\n  {:<32} {:>12}{}\n  {:<32} {:>12}\n  {:<32} {:>12}\n  {:<32} {:>12}",
                "mta-sts txt answers",
                m.txt_answers,
                "mta-sts txt with v=STSv1",
                m.txt_sts_v1,
                "mta-sts policy fetches",
                m.fetches(),
                if fetches.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", fetches.join(", "))
                },
                "sessions linked to mta-sts",
                m.sessions_linked,
                "mta-sts findings",
                findings,
                "mta-sts state dropped (bounds)",
                dropped
            );
        }
        if let Some(b) = &self.baseline {
            let _ = writeln!(
                s,
                "  {:<32} {:>12}\n  {:<32} {:>12}\n  {:<32} {:>12}",
                "baseline entries saved",
                b.written,
                "baseline entries expired",
                b.expired,
                "findings from earlier runs",
                b.findings_from_earlier_runs
            );
        }
        let other = d.not_ip + d.other_protocol + d.unknown_link_type;
        let _ = writeln!(s, "  {:<32} {:>12}", "non-tcp/udp frames (skipped)", other);
        for i in &self.inputs {
            if i.truncated || i.corrupt_blocks > 0 {
                let _ = writeln!(
                    s,
                    "  warning: {} ended early ({})",
                    i.name,
                    if i.truncated {
                        "truncated"
                    } else {
                        "corrupt block"
                    }
                );
            }
        }
        if let Some(ch) = &self.clickhouse {
            s.push_str(&ch.render());
        }
        s
    }
}
