//! The certificate judge: for every session that reached TLS, was the server authenticated, as a
//! careful sending MTA would have checked it at that moment? It runs in the correlator so that
//! intermediates learned from one session help validate another, keeps one record per distinct
//! certificate for `certificates.ndjson`, and remembers which keys each server presented.

use crate::memory::{Usage, evict_oldest_tenth};
use crate::record::{CertificateRecord, FindingKind, SessionRecord, Side, Tlsa};
use crate::state::{Baseline, Fact, Learned, Seen, add_witness};
use crate::tls::cert;
use crate::tls::dane::{self, DaneOutcome, TlsaStore};
use crate::tls::handshake::cipher_is_anonymous;
use crate::tls::names;
use crate::tls::verify::{Trust, Validator};
use crate::util::rfc3339_micros;
use ahash::AHashMap;
use serde::Serialize;
use serde_json::json;
use std::mem::size_of;
use std::net::IpAddr;

/// Distinct certificates remembered for `certificates.ndjson`.
const MAX_CERTS: usize = 200_000;
/// Servers listed per certificate.
const MAX_SERVERS_PER_CERT: usize = 16;
/// Keys remembered per server address.
const MAX_KEYS_PER_SERVER: usize = 8;
/// Server addresses whose keys are remembered.
const MAX_SERVERS: usize = 1_000_000;

/// What one server's entry in the key table costs: the entry and its keys.
fn server_keys_bytes(keys: &[KeySeen]) -> usize {
    ENTRY_OVERHEAD
        + size_of::<IpAddr>()
        + size_of::<Vec<KeySeen>>()
        + keys
            .iter()
            // Each key with its strings (its fingerprint counted at 64 hex digits).
            .map(|k| size_of::<KeySeen>() + k.spki.len() + k.session_id.len() + 2 * 64)
            .sum::<usize>()
}

/// Counters for the summary.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct CertStats {
    /// Sessions whose chain was judged.
    pub chains_judged: u64,
    /// Certificates that could not be parsed.
    pub unparseable: u64,
    /// Distinct certificates not recorded because the table was full.
    pub certificates_untracked: u64,
    /// Certificates already written and not seen for a while, forgotten to make room in a
    /// long run (`live`, `analyze --follow`); seen again, they start a new record.
    pub certificates_released: u64,
    /// Servers whose keys were forgotten (the least recently seen tenth at a time) to make room
    /// for new ones when the table was full: a later key change of theirs is not seen.
    pub servers_forgotten: u64,
}

/// A distinct certificate, with what its record costs and whether it changed since it was last
/// written.
struct Remembered {
    record: CertificateRecord,
    /// `cert::weaknesses` of its facts, found once rather than per session.
    weak: Vec<&'static str>,
    /// Its share of `Usage::bytes`, given back when it is forgotten.
    bytes: usize,
    /// Written, and not seen since.
    written: bool,
}

struct KeySeen {
    spki: String,
    first_us: i64,
    last_us: i64,
    sessions: u64,
    session_id: String,
    fingerprint: String,
}

/// Certificate state for one run.
pub struct CertJudge {
    validator: Validator,
    tlsa: TlsaStore,
    certs: AHashMap<String, Remembered>,
    /// The fingerprint of every remembered certificate by its DER, so that a certificate seen
    /// before costs an ahash of its bytes and an exact comparison instead of a SHA-256. Kept in
    /// step with `certs` (added and forgotten with its certificate, and counted in its `bytes`),
    /// so it is bounded by the same `MAX_CERTS` and `max_bytes`.
    by_der: AHashMap<Box<[u8]>, String>,
    keys: AHashMap<IpAddr, Vec<KeySeen>>,
    /// The key table's part of `usage.bytes`: forgetting servers can make room only when the
    /// certificates alone fit.
    key_bytes: usize,
    /// Bytes of both tables at most (the memory budget's share): beyond it, new certificates are
    /// not remembered, as when their table is full, and servers seen least recently make room
    /// for new ones.
    max_bytes: usize,
    usage: Usage,
    /// Counters.
    pub stats: CertStats,
}

/// A map entry's own bytes and the hash table's overhead, roughly.
const ENTRY_OVERHEAD: usize = 32;
/// A parsed certificate takes about this many times its DER size (names, extensions, strings).
const PARSED_PER_DER_BYTE: usize = 2;

/// A `by_der` entry's own bytes and the hash table's overhead, roughly (its DER and fingerprint
/// are counted by length).
const DER_INDEX_OVERHEAD: usize = ENTRY_OVERHEAD + size_of::<Box<[u8]>>() + size_of::<String>();

/// The `ip:port` text that `certificates.ndjson` lists a server by.
fn server_text(rec: &SessionRecord) -> String {
    format!("{}:{}", rec.server.ip, rec.server.port)
}

/// Counts another sight of a remembered certificate, listing the session's server when it is
/// new for it (the text is made only while the list has room).
fn seen_again(
    entry: &mut Remembered,
    usage: &mut Usage,
    leaf: bool,
    rec: &SessionRecord,
    server: &mut Option<String>,
) {
    entry.written = false;
    let c = &mut entry.record;
    c.sessions += 1;
    c.leaf |= leaf;
    c.first_seen = c.first_seen.min(rec.ts);
    c.last_seen = c.last_seen.max(rec.ts);
    if c.servers.len() < MAX_SERVERS_PER_CERT {
        let server = server.get_or_insert_with(|| server_text(rec));
        if !c.servers.contains(server) {
            let more = size_of::<String>() + server.len();
            usage.bytes += more;
            entry.bytes += more;
            c.servers.push(server.clone());
        }
    }
}

/// The host the client meant, and where that name came from.
pub fn intended_host(rec: &SessionRecord) -> Option<(String, &'static str)> {
    if let Some(mx) = rec.mx_host.as_deref() {
        return Some((mx.to_string(), "mx"));
    }
    if let Some(sni) = rec.tls_sni.as_deref().filter(|s| !s.is_empty()) {
        return Some((sni.to_string(), "sni"));
    }
    let first_word = |s: &Option<String>| {
        s.as_deref()
            .and_then(|t| t.split_whitespace().next())
            .filter(|w| w.contains('.') && !w.starts_with('[') && !w.contains('*'))
            .map(str::to_string)
    };
    if let Some(h) = first_word(&rec.banner) {
        return Some((h, "banner"));
    }
    first_word(&rec.ehlo_reply_name).map(|h| (h, "ehlo"))
}

/// The TLSA records that apply to a session: the `--tlsa` records for `host` and the port,
/// then those the client received in DNS for its MX host (`mx_tlsa`). Returns the distinct
/// records, for the check, and every record with where it came from, for the evidence.
fn applicable_tlsa(
    store: &TlsaStore,
    rec: &SessionRecord,
    host: &str,
) -> (Vec<Tlsa>, Vec<serde_json::Value>) {
    let mut records: Vec<Tlsa> = Vec::new();
    let mut evidence = Vec::new();
    let mut add = |t: &Tlsa, source: serde_json::Value| {
        if !records.contains(t) {
            records.push(t.clone());
        }
        let mut e = json!(t);
        if let (Some(e), Some(source)) = (e.as_object_mut(), source.as_object()) {
            e.extend(source.clone());
        }
        evidence.push(e);
    };
    for t in store.lookup(host, rec.server.port).unwrap_or_default() {
        add(t, json!({"source": "file"}));
    }
    // `DnsTracker::link` pushes the TLSA lookup's id last, after the MX and address lookups,
    // and only when it fills `mx_tlsa`.
    let tlsa_tx = rec.dns_transaction_ids.last();
    for t in &rec.mx_tlsa {
        add(t, json!({"source": "dns", "transaction_id": tlsa_tx}));
    }
    (records, evidence)
}

impl CertJudge {
    /// A judge with the given validator and TLSA records.
    pub fn new(validator: Validator, tlsa: TlsaStore) -> CertJudge {
        CertJudge {
            validator,
            tlsa,
            certs: AHashMap::new(),
            by_der: AHashMap::new(),
            keys: AHashMap::new(),
            key_bytes: 0,
            max_bytes: usize::MAX,
            usage: Usage::default(),
            stats: CertStats::default(),
        }
    }

    /// Bounds both tables to `bytes` (the memory budget's share).
    pub fn with_max_bytes(mut self, bytes: usize) -> CertJudge {
        self.max_bytes = bytes;
        self
    }

    /// Size of the tables, and certificates or keys not remembered for their bounds.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    fn full(&self) -> bool {
        self.usage.bytes > self.max_bytes
    }

    /// Judges the session's certificate (if it reached TLS) and drops the DER chain.
    pub fn judge(&mut self, rec: &mut SessionRecord) {
        let chain = std::mem::take(&mut rec.cert_chain);
        let (version, cipher) = rec.tls_ids;
        if rec.tls_server_hello {
            if chain.is_empty() {
                if cipher.is_some_and(cipher_is_anonymous) {
                    rec.add_finding(
                        FindingKind::CertificateAbsent,
                        rec.ts.0,
                        json!({"cipher": rec.tls_cipher}),
                    );
                } else if rec.handshake_failure.is_none() {
                    let reason = if version == Some(0x0304) {
                        "tls-1.3-encrypts-the-certificate"
                    } else {
                        "no-certificate-message (resumed session)"
                    };
                    rec.add_finding(
                        FindingKind::CertificateNotObservable,
                        rec.ts.0,
                        json!({"reason": reason, "tls_version": rec.tls_version}),
                    );
                }
            } else {
                self.judge_chain(rec, &chain);
            }
        } else if rec.missing_side == Some(Side::Server)
            && rec.tls_handshake_completed
            && rec.handshake_failure.is_none()
        {
            // A client-only capture of a completed upgrade: the certificate went by on the
            // direction the capture does not show.
            rec.add_finding(
                FindingKind::CertificateNotObservable,
                rec.ts.0,
                json!({"reason": "server-side-not-captured", "tls_version": rec.tls_version}),
            );
        }
    }

    fn judge_chain(&mut self, rec: &mut SessionRecord, chain: &[Vec<u8>]) {
        self.stats.chains_judged += 1;
        self.validator.learn(chain);
        let at_s = rec.ts.0.div_euclid(1_000_000);
        // `ip:port`, made once per session and only when a certificate lists a new server.
        let mut server = None;
        let fingerprints: Vec<String> = chain
            .iter()
            .enumerate()
            .map(|(i, der)| self.remember(der, i == 0, rec, &mut server))
            .collect();
        rec.cert_fingerprint = fingerprints.first().cloned();
        rec.cert_chain_fingerprints = fingerprints;
        // The leaf's facts are borrowed from its record (fields of `self` other than `certs` are
        // changed below); parsed again only when the table had no room for it.
        let parsed;
        let (leaf, leaf_weak) = match self.certs.get(&rec.cert_chain_fingerprints[0]) {
            Some(c) => (&c.record.info, c.weak.as_slice()),
            None => match cert::parse(&chain[0]) {
                Some(info) => {
                    parsed = (cert::weaknesses(&info), info);
                    (&parsed.1, parsed.0.as_slice())
                }
                None => {
                    self.stats.unparseable += 1;
                    rec.pkix = vec!["unparseable"];
                    let fingerprint = rec.cert_chain_fingerprints[0].clone();
                    rec.add_finding(FindingKind::CertificateNotTrusted,
                        rec.ts.0,
                        json!({"fingerprint": fingerprint, "reason": "the leaf certificate cannot be parsed"}),
                    );
                    return;
                }
            },
        };
        // Keys per server, for certificate-changed (judged when the session is released).
        let known_server = self.keys.contains_key(&rec.server.ip);
        // The servers seen least recently make room when the key table is what fills the
        // bounds (their earlier keys are forgotten, so a change of theirs goes unseen): refusing
        // every new server once full froze a long run's table on the servers of its first days.
        let certificates_fit = self.usage.bytes - self.key_bytes <= self.max_bytes;
        if !known_server && (self.keys.len() >= MAX_SERVERS || (self.full() && certificates_fit)) {
            let held = self.usage.bytes;
            self.stats.servers_forgotten += evict_oldest_tenth(
                &mut self.keys,
                &mut self.usage,
                |list| list.iter().map(|k| k.last_us).max().unwrap_or(i64::MIN),
                |_, list| server_keys_bytes(list),
                |_, _| {},
            );
            self.key_bytes -= held - self.usage.bytes;
        }
        if known_server || (self.keys.len() < MAX_SERVERS && !self.full()) {
            // A new server counts nothing before (its entry is added with its first key).
            let (list, before) = match self.keys.entry(rec.server.ip) {
                std::collections::hash_map::Entry::Occupied(o) => {
                    let list = o.into_mut();
                    let before = server_keys_bytes(list);
                    (list, before)
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    self.usage.entries += 1;
                    (v.insert(Vec::new()), 0)
                }
            };
            if let Some(k) = list.iter_mut().find(|k| k.spki == leaf.spki_sha256) {
                k.sessions += 1;
                k.last_us = k.last_us.max(rec.ts.0);
                if rec.ts.0 < k.first_us {
                    k.first_us = rec.ts.0;
                    k.session_id = rec.session_id.clone();
                }
            } else if list.len() < MAX_KEYS_PER_SERVER {
                list.push(KeySeen {
                    spki: leaf.spki_sha256.clone(),
                    first_us: rec.ts.0,
                    last_us: rec.ts.0,
                    sessions: 1,
                    session_id: rec.session_id.clone(),
                    fingerprint: leaf.fingerprint.clone(),
                });
            }
            let after = server_keys_bytes(list);
            self.usage.bytes = self.usage.bytes - before + after;
            self.key_bytes = self.key_bytes - before + after;
        } else {
            // The certificates alone fill the budget.
            self.usage.evictions += 1;
        }
        // DANE first (RFC 7672 §3.1.1): a usable TLSA record that authenticates the chain makes
        // the PKIX outcomes below facts (`pkix`), not findings.
        let host = intended_host(rec);
        let dane_outcome = host.as_ref().map(|(h, _)| {
            let (records, evidence) = applicable_tlsa(&self.tlsa, rec, h);
            let outcome = dane::check(&records, chain, h, at_s, &self.validator);
            (outcome, evidence)
        });
        let dane_valid = match &dane_outcome {
            Some((DaneOutcome::Valid { record }, _)) => Some(record.usage),
            _ => None,
        };
        rec.dane = match &dane_outcome {
            Some((DaneOutcome::Valid { record }, _)) if record.usage == 3 => Some("dane-ee"),
            Some((DaneOutcome::Valid { .. }, _)) => Some("dane-ta"),
            Some((DaneOutcome::Invalid { .. }, _)) => Some("tlsa-invalid"),
            _ => None,
        };
        let pkix_findings = dane_valid.is_none();
        // PKIX outcomes, in the order of the findings below.
        let mut pkix: Vec<&'static str> = Vec::new();
        let expired = at_s > leaf.not_after_s || at_s < leaf.not_before_s;
        if expired {
            pkix.push(if at_s > leaf.not_after_s {
                "expired"
            } else {
                "not-yet-valid"
            });
        }
        if expired && pkix_findings {
            rec.add_finding(FindingKind::CertificateExpired,
                rec.ts.0,
                json!({
                    "fingerprint": leaf.fingerprint, "state": if at_s > leaf.not_after_s { "expired" } else { "not-yet-valid" },
                    "not_before": leaf.not_before, "not_after": leaf.not_after, "capture_time": rfc3339_micros(rec.ts.0),
                }),
            );
        }
        if leaf.self_signed {
            pkix.push("self-signed");
        }
        if leaf.self_signed && pkix_findings {
            rec.add_finding(
                FindingKind::CertificateSelfSigned,
                rec.ts.0,
                json!({"fingerprint": leaf.fingerprint, "subject": leaf.subject}),
            );
        }
        // Trust is judged inside the leaf's validity so that expiry is not counted twice.
        let trust_at = at_s.clamp(leaf.not_before_s, leaf.not_after_s.max(leaf.not_before_s));
        let trust = self
            .validator
            .trust(chain, &rec.cert_chain_fingerprints, trust_at);
        pkix.insert(
            0,
            if matches!(trust, Trust::Trusted { .. }) {
                "trusted"
            } else {
                "not-trusted"
            },
        );
        if let Trust::NotTrusted(reason) = trust
            && pkix_findings
        {
            rec.add_finding(
                FindingKind::CertificateNotTrusted,
                rec.ts.0,
                json!({
                    "fingerprint": leaf.fingerprint, "subject": leaf.subject, "issuer": leaf.issuer,
                    "reason": reason, "chain_length": chain.len(),
                }),
            );
        }
        // DANE-EE never checks the leaf's signature: only a weak key still matters.
        let weak: Vec<&'static str> = leaf_weak
            .iter()
            .copied()
            .filter(|w| dane_valid != Some(3) || !w.ends_with("-signature"))
            .collect();
        if !weak.is_empty() {
            rec.add_finding(
                FindingKind::CertificateWeak,
                rec.ts.0,
                json!({
                    "fingerprint": leaf.fingerprint, "reasons": weak, "key_type": leaf.key_type,
                    "key_bits": leaf.key_bits, "signature_algorithm": leaf.signature_algorithm,
                }),
            );
        }
        let host_mismatch = host.as_ref().is_some_and(|(host, _)| {
            !names::covers(&leaf.san_dns, leaf.subject_cn.as_deref(), host)
        });
        if host_mismatch {
            pkix.push("host-mismatch");
        }
        if let Some((host, source)) = &host
            && host_mismatch
            && pkix_findings
        {
            rec.add_finding(
                FindingKind::CertificateHostMismatch,
                rec.ts.0,
                json!({
                    "host": host, "host_source": source, "san_dns": leaf.san_dns,
                    "subject_cn": leaf.subject_cn, "fingerprint": leaf.fingerprint,
                }),
            );
        }
        rec.pkix = pkix;
        if let Some((host, source)) = host
            && let Some((DaneOutcome::Invalid { reasons }, records)) = dane_outcome
        {
            rec.add_finding(FindingKind::TlsaInvalid,
                rec.ts.0,
                json!({
                    "host": host, "host_source": source, "tlsa_owner": format!("_{}._tcp.{host}", rec.server.port),
                    "records": records, "reasons": reasons, "fingerprint": leaf.fingerprint,
                }),
            );
        }
    }

    /// Counts a sight of `der` in this session's chain and returns its SHA-256 fingerprint:
    /// from `by_der` when it is remembered, else computed, and the certificate remembered when
    /// there is room. `server` is the session's `ip:port`, made on first need.
    fn remember(
        &mut self,
        der: &[u8],
        leaf: bool,
        rec: &SessionRecord,
        server: &mut Option<String>,
    ) -> String {
        if let Some(fingerprint) = self.by_der.get(der)
            && let Some(entry) = self.certs.get_mut(fingerprint)
        {
            seen_again(entry, &mut self.usage, leaf, rec, server);
            return fingerprint.clone();
        }
        let fingerprint = cert::sha256_hex(der);
        if let Some(entry) = self.certs.get_mut(&fingerprint) {
            // Not reached while `by_der` is kept in step with `certs`; should the two ever differ,
            // the certificate is still counted once, under its fingerprint.
            seen_again(entry, &mut self.usage, leaf, rec, server);
            return fingerprint;
        }
        if self.certs.len() >= MAX_CERTS || self.full() {
            self.stats.certificates_untracked += 1;
            self.usage.evictions += 1;
            return fingerprint;
        }
        let server = server.get_or_insert_with(|| server_text(rec)).clone();
        let bytes = ENTRY_OVERHEAD
            + size_of::<Remembered>()
            + 2 * fingerprint.len()
            + der.len() * PARSED_PER_DER_BYTE
            + size_of::<String>()
            + server.len()
            + DER_INDEX_OVERHEAD
            + der.len()
            + fingerprint.len();
        let Some(info) = cert::parse(der) else {
            self.stats.unparseable += u64::from(!leaf);
            return fingerprint;
        };
        // Counted only once kept: a certificate that does not parse is not remembered, and
        // would otherwise be counted again at every sight.
        let weak = cert::weaknesses(&info);
        let bytes = bytes + weak.len() * size_of::<&str>();
        self.usage.entries += 1;
        self.usage.bytes += bytes;
        self.by_der.insert(der.into(), fingerprint.clone());
        self.certs.insert(
            fingerprint.clone(),
            Remembered {
                weak,
                record: CertificateRecord {
                    info,
                    first_seen: rec.ts,
                    last_seen: rec.ts,
                    sessions: 1,
                    servers: vec![server],
                    leaf,
                },
                bytes,
                written: false,
            },
        );
        fingerprint
    }

    /// Keys each server presented in this run, for the persistent baseline.
    pub fn learned(&self, into: &mut Learned) {
        for (ip, list) in &self.keys {
            for k in list {
                into.keys.push((
                    *ip,
                    k.spki.clone(),
                    Seen::span(k.first_us, k.last_us, k.sessions),
                ));
            }
        }
    }

    /// Findings that need the whole window: a key that changed, and DANE-protected servers
    /// reached without TLS. Called when the session is released.
    /// `baseline` holds the keys servers presented in earlier runs.
    pub fn judge_on_release(&self, rec: &mut SessionRecord, baseline: &dyn Baseline) {
        let spki = rec
            .cert_fingerprint
            .as_ref()
            .and_then(|fp| self.certs.get(fp))
            .map(|c| c.record.info.spki_sha256.clone());
        let earlier_here = spki.as_ref().and_then(|spki| {
            self.keys.get(&rec.server.ip).and_then(|list| {
                list.iter()
                    .filter(|k| k.spki != *spki && k.first_us < rec.ts.0)
                    .min_by_key(|k| k.first_us)
            })
        });
        if earlier_here.is_none()
            && let Some(spki) = &spki
        {
            let known = baseline.server_keys(rec.server.ip);
            let seen_here_before = self
                .keys
                .get(&rec.server.ip)
                .is_some_and(|l| l.iter().any(|k| k.spki == *spki && k.first_us < rec.ts.0));
            if !known.is_empty() && !seen_here_before && !known.iter().any(|(k, _)| k == spki) {
                let fp = rec.cert_fingerprint.clone();
                rec.add_finding(
                    FindingKind::CertificateChanged,
                    rec.ts.0,
                    json!({
                        "source": "baseline",
                        "spki_sha256": spki, "fingerprint": fp,
                        "earlier_runs": known.iter().map(|(k, seen)| {
                            let mut run = json!({
                                "spki_sha256": k, "first_seen": rfc3339_micros(seen.first_us),
                                "last_seen": rfc3339_micros(seen.last_us), "sessions": seen.count,
                            });
                            let witness = baseline.witness(Fact::Key(rec.server.ip, k));
                            add_witness(&mut run, witness);
                            run
                        }).collect::<Vec<_>>(),
                    }),
                );
            }
        }
        if let Some(fp) = rec.cert_fingerprint.clone()
            && let Some(spki) = spki
            && let Some(earlier) = earlier_here
        {
            rec.add_finding(FindingKind::CertificateChanged,
                rec.ts.0,
                json!({
                    "spki_sha256": spki, "fingerprint": fp,
                    "previous_spki_sha256": earlier.spki, "previous_fingerprint": earlier.fingerprint,
                    "previous_first_seen": rfc3339_micros(earlier.first_us), "previous_session": earlier.session_id,
                }),
            );
        }
        let plaintext = !rec.tls_started;
        let stripped = rec.findings.contains(&FindingKind::StarttlsStripped);
        if (plaintext || stripped)
            && (rec.ehlo_reply_code.is_some() || rec.mail_transactions > 0)
            && let Some((host, source)) = intended_host(rec)
            && let (usable, records) = applicable_tlsa(&self.tlsa, rec, &host)
            && usable.iter().any(|r| r.usable())
        {
            rec.add_finding(
                FindingKind::DaneRequired,
                rec.ts.0,
                json!({
                    "host": host, "host_source": source, "records": records,
                    "starttls_offered": rec.starttls_offered, "stripped": stripped,
                    "mail_transactions": rec.mail_transactions,
                }),
            );
        }
    }

    /// The certificates seen since they were last taken (all of them, the first time), in the
    /// order of their first sight, for `certificates.ndjson`; they count as written from now on.
    /// A long run takes them whenever its output files rotate, so that each set of files lists
    /// the certificates seen while it was current, with the counts of the run so far.
    pub fn take_unwritten(&mut self) -> Vec<CertificateRecord> {
        let mut out: Vec<CertificateRecord> = self
            .certs
            .values_mut()
            .filter(|c| !c.written)
            .map(|c| {
                c.written = true;
                c.record.clone()
            })
            .collect();
        out.sort_by(|a, b| {
            a.first_seen
                .cmp(&b.first_seen)
                .then(a.info.fingerprint.cmp(&b.info.fingerprint))
        });
        out
    }

    /// Forgets the certificates that were written and not seen since `before_us`, so that a long
    /// run keeps room for new ones instead of refusing every certificate once the table is full.
    /// Only sessions released long before may name them (see `judge_on_release`), and those are
    /// gone. Returns how many were forgotten.
    pub fn forget_written(&mut self, before_us: i64) -> usize {
        let mut freed = (0usize, 0usize);
        self.certs.retain(|_, c| {
            let keep = !c.written || c.record.last_seen.0 >= before_us;
            if !keep {
                freed.0 += 1;
                freed.1 += c.bytes;
            }
            keep
        });
        if freed.0 > 0 {
            let certs = &self.certs;
            self.by_der
                .retain(|_, fingerprint| certs.contains_key(fingerprint));
        }
        self.usage.entries = self.usage.entries.saturating_sub(freed.0);
        self.usage.bytes = self.usage.bytes.saturating_sub(freed.1);
        self.stats.certificates_released += freed.0 as u64;
        freed.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::FlowSummary;
    use crate::record::EndReason;
    use crate::smtp::SessionFacts;
    use rcgen::{CertificateParams, KeyPair};

    fn session(ts_s: i64, chain: Vec<Vec<u8>>, version: u16, cipher: u16) -> SessionRecord {
        let flow = FlowSummary::for_test(
            ("192.0.2.1".parse().unwrap(), 40000 + ts_s as u16),
            ("198.51.100.7".parse().unwrap(), 25),
            ts_s * 1_000_000,
            ts_s * 1_000_000 + 1,
        );
        let mut rec = crate::detect::rules::build_record(
            &flow,
            SessionFacts::default(),
            EndReason::Fin,
            "test",
        );
        rec.tls_started = true;
        rec.tls_server_hello = true;
        rec.tls_sni = Some("mx.example.com".into());
        rec.cert_chain = chain;
        rec.tls_ids = (Some(version), Some(cipher));
        rec
    }

    fn self_signed() -> Vec<u8> {
        let params = CertificateParams::new(vec!["mx.example.com".to_string()]).unwrap();
        params
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .to_vec()
    }

    fn kinds(rec: &SessionRecord) -> Vec<&'static str> {
        rec.finding_details
            .iter()
            .map(|f| f.kind.as_str())
            .collect()
    }

    #[test]
    fn written_certificates_come_again_only_when_seen_again_and_old_ones_are_forgotten() {
        let mut judge = CertJudge::new(Validator::new(&[]).unwrap(), TlsaStore::default());
        let (a, b) = (self_signed(), self_signed());
        let t = 1_780_000_000;
        judge.judge(&mut session(t, vec![a.clone()], 0x0303, 0xc030));
        judge.judge(&mut session(t + 10, vec![b], 0x0303, 0xc030));
        let full = judge.usage();
        let first = judge.take_unwritten();
        assert_eq!(first.len(), 2);
        assert!(
            first[0].first_seen < first[1].first_seen,
            "in order of first sight"
        );
        assert!(judge.take_unwritten().is_empty(), "nothing new since");
        judge.judge(&mut session(t + 20, vec![a], 0x0303, 0xc030));
        let again = judge.take_unwritten();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].sessions, 2, "the counts of the run so far");
        assert_eq!(again[0].info.fingerprint, first[0].info.fingerprint);
        // Both written; `b` was last seen at t + 10, `a` at t + 20.
        assert_eq!(judge.forget_written((t + 15) * 1_000_000), 1);
        assert_eq!(judge.usage().entries, full.entries - 1);
        assert!(judge.usage().bytes < full.bytes);
        assert_eq!(judge.stats.certificates_released, 1);
        // Not written since it was seen: kept, however old.
        judge.judge(&mut session(t + 30, vec![self_signed()], 0x0303, 0xc030));
        assert_eq!(judge.forget_written(i64::MAX), 1, "only the written one");
        assert_eq!(judge.take_unwritten().len(), 1);
    }

    #[test]
    fn a_certificate_seen_again_is_known_by_its_der_until_its_record_is_forgotten() {
        let mut judge = CertJudge::new(Validator::new(&[]).unwrap(), TlsaStore::default());
        let a = self_signed();
        let fp = cert::sha256_hex(&a);
        let t = 1_780_000_000;
        let mut first = session(t, vec![a.clone()], 0x0303, 0xc030);
        judge.judge(&mut first);
        assert_eq!(first.cert_fingerprint.as_deref(), Some(fp.as_str()));
        assert_eq!(judge.by_der.len(), 1);
        let mut again = session(t + 10, vec![a.clone(), a.clone()], 0x0303, 0xc030);
        judge.judge(&mut again);
        assert_eq!(again.cert_chain_fingerprints, vec![fp.clone(), fp.clone()]);
        assert_eq!(kinds(&again), kinds(&first));
        assert_eq!(judge.by_der.len(), 1);
        let written = judge.take_unwritten();
        assert_eq!(
            written[0].sessions, 3,
            "every sight counts, from the index too"
        );
        assert_eq!(judge.forget_written(i64::MAX), 1);
        assert!(judge.by_der.is_empty(), "forgotten with its record");
        let mut later = session(t + 20, vec![a], 0x0303, 0xc030);
        judge.judge(&mut later);
        assert_eq!(later.cert_fingerprint.as_deref(), Some(fp.as_str()));
        let renewed = judge.take_unwritten();
        assert_eq!(renewed[0].sessions, 1, "a new record");
        assert_eq!(renewed[0].info.fingerprint, fp);
    }

    #[test]
    fn a_full_key_table_forgets_the_servers_seen_least_recently() {
        let mut judge = CertJudge::new(Validator::new(&[]).unwrap(), TlsaStore::default());
        let cert = self_signed();
        let t = 1_780_000_000;
        let ip = |i: u32| IpAddr::V4(std::net::Ipv4Addr::from(0xc633_6400 + i));
        let at = |i: u32| {
            let mut rec = session(t + i64::from(i), vec![cert.clone()], 0x0303, 0xc030);
            rec.server.ip = ip(i);
            rec
        };
        judge.judge(&mut at(0));
        let per_server = judge.key_bytes;
        // Room for the certificate and about 50 servers' keys.
        judge.max_bytes = judge.usage().bytes + 50 * per_server;
        for i in 1..500 {
            judge.judge(&mut at(i));
            assert!(judge.keys.contains_key(&ip(i)), "server {i} is remembered");
            assert!(judge.usage().bytes <= judge.max_bytes + per_server, "{i}");
            let walked: usize = judge.keys.values().map(|l| server_keys_bytes(l)).sum();
            assert_eq!(judge.key_bytes, walked, "{i}");
        }
        assert!(!judge.keys.contains_key(&ip(1)), "the oldest is forgotten");
        assert!(judge.keys.len() > 40, "{}", judge.keys.len());
        assert!(judge.stats.servers_forgotten > 400, "{:?}", judge.stats);
        assert_eq!(judge.usage().entries, 1 + judge.keys.len());
        assert!(judge.usage().evictions >= judge.stats.servers_forgotten);
    }

    #[test]
    fn a_new_key_for_the_same_server_is_a_change() {
        let mut judge = CertJudge::new(Validator::new(&[]).unwrap(), TlsaStore::default());
        let (a, b) = (self_signed(), self_signed());
        let mut first = session(1_780_000_000, vec![a.clone()], 0x0303, 0xc030);
        let mut second = session(1_780_000_100, vec![b], 0x0303, 0xc030);
        let mut third = session(1_780_000_200, vec![a], 0x0303, 0xc030);
        for r in [&mut first, &mut second, &mut third] {
            judge.judge(r);
        }
        for r in [&mut first, &mut second, &mut third] {
            judge.judge_on_release(r, &crate::state::NoBaseline);
        }
        assert!(
            !kinds(&first).contains(&"certificate-changed"),
            "{:?}",
            kinds(&first)
        );
        assert!(kinds(&second).contains(&"certificate-changed"));
        // Back to the first key: different from the second one seen earlier, so also a change.
        assert!(kinds(&third).contains(&"certificate-changed"));
        assert!(kinds(&first).contains(&"certificate-self-signed"));
        assert!(kinds(&first).contains(&"certificate-not-trusted"));
        assert!(!kinds(&first).contains(&"certificate-host-mismatch"));
        assert_eq!(judge.take_unwritten().len(), 2);
        assert!(
            first.cert_chain.is_empty(),
            "the DER chain is dropped after judging"
        );
    }

    /// A `3 1 1` record for `der`'s key.
    fn dane_ee(der: &[u8]) -> Tlsa {
        use sha2::Digest;
        Tlsa {
            usage: 3,
            selector: 1,
            matching_type: 1,
            data: sha2::Sha256::digest(cert::spki_der(der).unwrap()).to_vec(),
        }
    }

    /// A session linked to the client's lookups, the TLSA answer among them.
    fn linked(chain: Vec<Vec<u8>>, tlsa: Vec<Tlsa>) -> SessionRecord {
        let mut rec = session(1_780_000_000, chain, 0x0303, 0xc030);
        rec.mx_host = Some("mx.example.com".into());
        rec.dns_transaction_ids = vec!["Dmx".into(), "Daddr".into(), "Dtlsa".into()];
        rec.mx_tlsa = tlsa;
        rec
    }

    #[test]
    fn a_dane_ee_match_from_dns_turns_pkix_outcomes_into_facts() {
        let mut judge = CertJudge::new(Validator::new(&[]).unwrap(), TlsaStore::default());
        // Self-signed, not trusted and for another name: all waived by DANE-EE.
        let params = CertificateParams::new(vec!["other.example.net".to_string()]).unwrap();
        let der = params
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .to_vec();
        let mut rec = linked(vec![der.clone()], vec![dane_ee(&der)]);
        judge.judge(&mut rec);
        assert_eq!(kinds(&rec), Vec::<&str>::new());
        assert_eq!(rec.dane, Some("dane-ee"));
        assert_eq!(
            rec.pkix,
            vec!["not-trusted", "self-signed", "host-mismatch"]
        );
        // Without the record, the same chain gets the PKIX findings as before.
        let mut plain = linked(vec![der], Vec::new());
        judge.judge(&mut plain);
        assert_eq!(plain.dane, None);
        assert_eq!(
            kinds(&plain),
            vec![
                "certificate-self-signed",
                "certificate-not-trusted",
                "certificate-host-mismatch"
            ]
        );
    }

    #[test]
    fn tlsa_records_from_the_file_and_from_dns_both_apply() {
        let (der, other) = (self_signed(), self_signed());
        let store = TlsaStore::parse(&format!(
            "_25._tcp.mx.example.com. IN TLSA 3 1 1 {}\n",
            hex::encode(dane_ee(&other).data)
        ))
        .unwrap();
        let mut judge = CertJudge::new(Validator::new(&[]).unwrap(), store);
        // Neither matches: tlsa-invalid, each record with its source.
        let mut rec = linked(
            vec![der.clone()],
            vec![dane_ee(&other), dane_ee(&self_signed())],
        );
        judge.judge(&mut rec);
        assert!(kinds(&rec).contains(&"tlsa-invalid"), "{:?}", kinds(&rec));
        assert_eq!(rec.dane, Some("tlsa-invalid"));
        let f = rec
            .finding_details
            .iter()
            .find(|f| f.kind == FindingKind::TlsaInvalid)
            .unwrap();
        let sources: Vec<(String, Option<String>)> = f.evidence["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["source"].as_str().unwrap().to_string(),
                    r["transaction_id"].as_str().map(str::to_string),
                )
            })
            .collect();
        assert_eq!(
            sources,
            vec![
                ("file".to_string(), None),
                ("dns".to_string(), Some("Dtlsa".to_string())),
                ("dns".to_string(), Some("Dtlsa".to_string())),
            ]
        );
        // The DNS record matches although the file's does not: DANE-EE authenticates.
        let mut rec = linked(vec![der.clone()], vec![dane_ee(&der)]);
        judge.judge(&mut rec);
        assert_eq!(rec.dane, Some("dane-ee"));
        assert!(
            !kinds(&rec)
                .iter()
                .any(|k| k.starts_with("certificate-") || *k == "tlsa-invalid"),
            "{:?}",
            kinds(&rec)
        );
    }

    #[test]
    fn unseen_certificates_are_never_a_pass() {
        let mut judge = CertJudge::new(Validator::new(&[]).unwrap(), TlsaStore::default());
        let mut tls13 = session(1_780_000_000, Vec::new(), 0x0304, 0x1302);
        judge.judge(&mut tls13);
        assert_eq!(kinds(&tls13), vec!["certificate-not-observable"]);
        let mut anon = session(1_780_000_000, Vec::new(), 0x0303, 0x0034);
        judge.judge(&mut anon);
        assert_eq!(kinds(&anon), vec!["certificate-absent"]);
    }
}
