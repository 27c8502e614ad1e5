//! The embedded source: reads an `analyze` output directory line by line (one record in memory
//! at a time) and aggregates it into a [`Report`]; or, after `analyze`, aggregates the records
//! as they are written ([`Aggregator`]), so the run does not read back and parse what it has
//! just written. Both go through the same view of a record, so they give the same report. Memory is bounded by the number of groups,
//! and every grouping is capped at [`MAX_GROUPS`] keys; a session that would need a key beyond
//! the cap is counted in `ungrouped_sessions` instead.

use super::ReportError;
use super::model::*;
use super::window::record_secs;
use crate::record::{DnsRecord, SessionRecord};
use crate::sink::{SessionSink, SinkError};
use crate::util::{IpText, Rfc3339, Rfc3339Text};
use serde::Deserialize;
use serde::de::IgnoredAny;
use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::Hash;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Keys one grouping may hold before new keys are refused (and counted).
pub const MAX_GROUPS: usize = 1_000_000;

/// The fields of a session record the report reads. Enrichment fields are absent in
/// directories written before enrichment existed: they read as unknown.
#[derive(Deserialize)]
struct SessionLine<'a> {
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(borrow)]
    verdict: Cow<'a, str>,
    #[serde(borrow, default)]
    findings: Vec<Cow<'a, str>>,
    #[serde(borrow, default)]
    greeting_verb: Option<Cow<'a, str>>,
    #[serde(default)]
    ehlo_reply_code: Option<u16>,
    #[serde(default)]
    starttls_offered: bool,
    #[serde(default)]
    tls_handshake_completed: bool,
    #[serde(borrow)]
    client_ip: Cow<'a, str>,
    #[serde(borrow)]
    server_ip: Cow<'a, str>,
    #[serde(borrow, default)]
    recipient_domain: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    mx_host: Option<Cow<'a, str>>,
    #[serde(default)]
    mx_tlsa: Vec<IgnoredAny>,
    #[serde(borrow, default)]
    sts_txt: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    sts_fetch: Option<Cow<'a, str>>,
    // Country and AS of both ends (the shared enrichment contract); inlined, not flattened,
    // because serde's flatten would buffer every other field of the record.
    #[serde(borrow, default)]
    client_country: Cow<'a, str>,
    #[serde(default)]
    client_asn: u32,
    #[serde(borrow, default)]
    client_as_org: Cow<'a, str>,
    #[serde(borrow, default)]
    server_country: Cow<'a, str>,
    #[serde(default)]
    server_asn: u32,
    #[serde(borrow, default)]
    server_as_org: Cow<'a, str>,
}

/// The fields of a DNS record the report reads.
#[derive(Deserialize)]
struct DnsLine<'a> {
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(borrow, default)]
    findings: Vec<Cow<'a, str>>,
    // The resolver is the server end of a DNS record.
    #[serde(borrow, default)]
    server_as_org: Cow<'a, str>,
    #[serde(default)]
    server_asn: u32,
}

/// The texts of a record's time and addresses, as its NDJSON line has them, on the stack.
struct RecordTexts {
    ts: Rfc3339Text,
    client_ip: IpText,
    server_ip: IpText,
}

impl<'a> SessionLine<'a> {
    /// The report's view of a record being written (what its NDJSON line would read as), with
    /// the texts of its time and addresses made by the caller (on its stack).
    fn of(r: &'a SessionRecord, texts: &'a RecordTexts) -> SessionLine<'a> {
        let (client, server) = (&r.client, &r.server);
        SessionLine {
            ts: Cow::Borrowed(texts.ts.as_str()),
            verdict: Cow::Borrowed(r.verdict),
            findings: r
                .findings
                .iter()
                .map(|k| Cow::Borrowed(k.as_str()))
                .collect(),
            greeting_verb: r.greeting_verb.map(|v| Cow::Borrowed(v.as_str())),
            ehlo_reply_code: r.ehlo_reply_code,
            starttls_offered: r.starttls_offered,
            tls_handshake_completed: r.tls_handshake_completed,
            client_ip: Cow::Borrowed(texts.client_ip.as_str()),
            server_ip: Cow::Borrowed(texts.server_ip.as_str()),
            recipient_domain: r.recipient_domain.as_deref().map(Cow::Borrowed),
            mx_host: r.mx_host.as_deref().map(Cow::Borrowed),
            mx_tlsa: vec![IgnoredAny; r.mx_tlsa.len()],
            sts_txt: r.sts_txt.as_deref().map(Cow::Borrowed),
            sts_fetch: r.sts_fetch.map(|f| Cow::Borrowed(f.as_str())),
            client_country: Cow::Borrowed(&client.country),
            client_asn: client.asn,
            client_as_org: Cow::Borrowed(&client.as_org),
            server_country: Cow::Borrowed(&server.country),
            server_asn: server.asn,
            server_as_org: Cow::Borrowed(&server.as_org),
        }
    }
}

impl<'a> DnsLine<'a> {
    /// The report's view of a DNS record being written.
    fn of(r: &'a DnsRecord, ts: &'a Rfc3339Text) -> DnsLine<'a> {
        DnsLine {
            ts: Cow::Borrowed(ts.as_str()),
            findings: r
                .findings
                .iter()
                .map(|k| Cow::Borrowed(k.as_str()))
                .collect(),
            server_as_org: Cow::Borrowed(&r.server.as_org),
            server_asn: r.server.asn,
        }
    }
}

/// The report of a run's records, aggregated as they are written. `analyze` makes its report
/// from this instead of reading its output back: the same numbers as [`from_dir`] over the
/// files it wrote, without parsing every line again.
pub struct Aggregator(Acc);

impl Aggregator {
    /// An empty report over `window`.
    pub fn new(window: Window) -> Aggregator {
        Aggregator(Acc::new(window))
    }

    /// Counts one written session.
    pub fn session(&mut self, rec: &SessionRecord) {
        let texts = RecordTexts {
            ts: Rfc3339(rec.ts.0).text(),
            client_ip: IpText::of(rec.client.ip),
            server_ip: IpText::of(rec.server.ip),
        };
        self.0.session(&SessionLine::of(rec, &texts));
    }

    /// Counts one written DNS transaction.
    pub fn dns(&mut self, rec: &DnsRecord) {
        self.0.dns(&DnsLine::of(rec, &Rfc3339(rec.ts.0).text()));
    }

    /// The report.
    pub fn finish(self) -> Report {
        self.0.finish()
    }
}

/// A sink that feeds an [`Aggregator`] shared with the CLI, which makes the report after the run.
pub struct ReportSink(pub Arc<Mutex<Aggregator>>);

impl SessionSink for ReportSink {
    fn session(&mut self, rec: &SessionRecord) -> Result<(), SinkError> {
        if let Ok(mut a) = self.0.lock() {
            a.session(rec);
        }
        Ok(())
    }

    fn dns(&mut self, rec: &DnsRecord) -> Result<(), SinkError> {
        if let Ok(mut a) = self.0.lock() {
            a.dns(rec);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A map that refuses new keys beyond [`MAX_GROUPS`]. hashbrown's, for lookups by borrowed
/// pairs of texts ([`TextPair`]): a session looks up a dozen keys, nearly always ones seen
/// before, and none of them should cost an allocation.
struct Capped<K, V> {
    map: hashbrown::HashMap<K, V>,
}

impl<K: Hash + Eq, V: Default> Capped<K, V> {
    fn new() -> Self {
        Capped {
            map: hashbrown::HashMap::new(),
        }
    }

    /// The value for `key` (created if there is room), else `None` after counting the refusal.
    fn get(&mut self, key: K, refused: &mut u64) -> Option<&mut V> {
        let len = self.map.len();
        match self.map.entry(key) {
            hashbrown::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
            hashbrown::hash_map::Entry::Vacant(e) => {
                if len >= MAX_GROUPS {
                    *refused += 1;
                    None
                } else {
                    Some(e.insert(V::default()))
                }
            }
        }
    }
}

/// A `(String, String)` key looked up by borrowed texts. It hashes as the owned pair does
/// (a tuple hashes its fields in order, a `String` as its `str`).
#[derive(Hash)]
struct TextPair<'a>(&'a str, &'a str);

impl hashbrown::Equivalent<(String, String)> for TextPair<'_> {
    fn equivalent(&self, key: &(String, String)) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

impl<V: Default> Capped<(String, String), V> {
    /// [`Capped::get`] by borrowed texts: the key is copied only when it is new.
    fn get_pair(&mut self, a: &str, b: &str, refused: &mut u64) -> Option<&mut V> {
        if self.map.contains_key(&TextPair(a, b)) {
            return self.map.get_mut(&TextPair(a, b));
        }
        self.get((a.to_string(), b.to_string()), refused)
    }
}

impl<V: Default> Capped<String, V> {
    /// [`Capped::get`] by a borrowed key: the key is copied only when it is new (a session
    /// looks up half a dozen text keys, nearly always ones seen before).
    fn get_str(&mut self, key: &str, refused: &mut u64) -> Option<&mut V> {
        if self.map.contains_key(key) {
            return self.map.get_mut(key);
        }
        self.get(key.to_string(), refused)
    }
}

/// Keeps the greatest string seen (so every source picks the same organisation name).
fn keep_max(slot: &mut String, s: &str) {
    if s > slot.as_str() {
        slot.clear();
        slot.push_str(s);
    }
}

#[derive(Default)]
struct AsAgg {
    org: String,
    counts: Counts,
}

#[derive(Default)]
struct ServerAgg {
    country: String,
    asn: u32,
    org: String,
    sessions: u64,
    problems: u64,
}

#[derive(Default)]
struct PolicyAgg {
    tlsa: bool,
    sts: bool,
    successful: u64,
    failed: u64,
}

/// The MTA-STS counts of one recipient domain; `evidence` decides whether it becomes a row.
#[derive(Default)]
struct StsAgg {
    evidence: bool,
    sessions: u64,
    sts_seen: u64,
    fetch_ok: u64,
    fetch_blocked: u64,
    plaintext: u64,
}

#[derive(Default)]
struct DnsAgg {
    org: String,
    transactions: u64,
    injected: u64,
}

/// Everything being aggregated.
struct Acc {
    window: Window,
    totals: Counts,
    by_day: Capped<String, Counts>,
    client_country: Capped<String, Counts>,
    server_country: Capped<String, Counts>,
    client_as: Capped<u32, AsAgg>,
    server_as: Capped<u32, AsAgg>,
    verdict_day: Capped<(String, String), u64>,
    kinds: Capped<String, u64>,
    kind_servers: Capped<(String, String), ()>,
    servers: Capped<String, ServerAgg>,
    policies: Capped<(String, String), PolicyAgg>,
    failures: Capped<(String, String, &'static str, String, String, String), u64>,
    sts_domains: Capped<String, StsAgg>,
    dns: Capped<u32, DnsAgg>,
    skipped: u64,
    refused: u64,
}

impl Acc {
    fn new(window: Window) -> Acc {
        Acc {
            window,
            totals: Counts::default(),
            by_day: Capped::new(),
            client_country: Capped::new(),
            server_country: Capped::new(),
            client_as: Capped::new(),
            server_as: Capped::new(),
            verdict_day: Capped::new(),
            kinds: Capped::new(),
            kind_servers: Capped::new(),
            servers: Capped::new(),
            policies: Capped::new(),
            failures: Capped::new(),
            sts_domains: Capped::new(),
            dns: Capped::new(),
            skipped: 0,
            refused: 0,
        }
    }

    /// The UTC day of a record timestamp, if the record is inside the window; `Err` when the
    /// timestamp is malformed.
    fn day_of<'a>(&self, ts: &'a str) -> Result<Option<&'a str>, ()> {
        let day = ts.get(..10).filter(|d| d.as_bytes()[4] == b'-').ok_or(())?;
        if self.window == Window::default() {
            return Ok(Some(day));
        }
        let secs = record_secs(ts).ok_or(())?;
        Ok(self.window.contains(secs).then_some(day))
    }

    fn session(&mut self, s: &SessionLine<'_>) {
        let day = match self.day_of(&s.ts) {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(()) => {
                self.skipped += 1;
                return;
            }
        };
        let facts = SessionFacts::new(
            &s.verdict,
            s.findings.iter().map(|k| k.as_ref()),
            s.greeting_verb.as_deref(),
            s.ehlo_reply_code,
            s.starttls_offered,
            s.tls_handshake_completed,
        );
        let r = &mut self.refused;
        self.totals.add(&facts);
        if let Some(c) = self.by_day.get_str(day, r) {
            c.add(&facts);
        }
        let e = s;
        if let Some(c) = self.client_country.get_str(&e.client_country, r) {
            c.add(&facts);
        }
        if let Some(c) = self.server_country.get_str(&e.server_country, r) {
            c.add(&facts);
        }
        if let Some(a) = self.client_as.get(e.client_asn, r) {
            keep_max(&mut a.org, &e.client_as_org);
            a.counts.add(&facts);
        }
        if let Some(a) = self.server_as.get(e.server_asn, r) {
            keep_max(&mut a.org, &e.server_as_org);
            a.counts.add(&facts);
        }
        if let Some(n) = self.verdict_day.get_pair(day, &s.verdict, r) {
            *n += 1;
        }
        for (i, k) in s.findings.iter().enumerate() {
            if s.findings[..i].contains(k) {
                continue;
            }
            if let Some(n) = self.kinds.get_str(k, r) {
                *n += 1;
            }
            self.kind_servers.get_pair(k, &s.server_ip, r);
        }
        if let Some(sv) = self.servers.get_str(&s.server_ip, r) {
            keep_max(&mut sv.country, &e.server_country);
            sv.asn = sv.asn.max(e.server_asn);
            keep_max(&mut sv.org, &e.server_as_org);
            sv.sessions += 1;
            sv.problems += u64::from(facts.problem);
        }
        if let Some(domain) = s.recipient_domain.as_deref().filter(|d| !d.is_empty()) {
            let mx = s.mx_host.as_deref().unwrap_or("");
            let deciding = tlsrpt_deciding_kind(s.findings.iter().map(|k| k.as_ref()));
            if let Some(p) = self.policies.get_pair(domain, mx, r) {
                p.tlsa |= !s.mx_tlsa.is_empty();
                p.sts |= s.sts_fetch.as_deref() == Some("ok");
                match deciding {
                    Some(_) => p.failed += 1,
                    None if s.tls_handshake_completed => p.successful += 1,
                    None => {}
                }
            }
            if let Some(d) = self.sts_domains.get_str(domain, r) {
                let has = |kind: &str| s.findings.iter().any(|k| k == kind);
                let seen = s.sts_txt.as_deref().is_some_and(|t| !t.is_empty());
                let fetch = s.sts_fetch.as_deref();
                d.evidence |= seen
                    || fetch.is_some_and(|f| f != "not-seen")
                    || STS_DOMAIN_KINDS.iter().any(|k| has(k));
                d.sessions += 1;
                d.sts_seen += u64::from(seen);
                d.fetch_ok += u64::from(fetch == Some("ok"));
                d.fetch_blocked += u64::from(has(STS_DOMAIN_KINDS[0]));
                d.plaintext += u64::from(has(STS_DOMAIN_KINDS[1]));
            }
            if let Some(kind) = deciding {
                let result = tlsrpt_result_type(kind).unwrap_or("validation-failure");
                let key = (
                    domain.to_string(),
                    mx.to_string(),
                    result,
                    kind.to_string(),
                    s.client_ip.to_string(),
                    s.server_ip.to_string(),
                );
                if let Some(n) = self.failures.get(key, r) {
                    *n += 1;
                }
            }
        }
    }

    fn dns(&mut self, d: &DnsLine<'_>) {
        match self.day_of(&d.ts) {
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(()) => {
                self.skipped += 1;
                return;
            }
        }
        if let Some(a) = self.dns.get(d.server_asn, &mut self.refused) {
            keep_max(&mut a.org, &d.server_as_org);
            a.transactions += 1;
            a.injected += u64::from(d.findings.iter().any(|k| k == "dns-injection"));
        }
    }

    fn finish(self) -> Report {
        let mut servers_per_kind = HashMap::<String, u64>::new();
        for (k, _) in self.kind_servers.map.into_keys() {
            *servers_per_kind.entry(k).or_default() += 1;
        }
        let as_rows = |m: Capped<u32, AsAgg>| -> Vec<AsRow> {
            m.map
                .into_iter()
                .map(|(asn, a)| AsRow {
                    asn,
                    as_org: a.org,
                    counts: a.counts,
                })
                .collect()
        };
        let country_rows = |m: Capped<String, Counts>| -> Vec<CountryRow> {
            m.map
                .into_iter()
                .map(|(country, counts)| CountryRow { country, counts })
                .collect()
        };
        let mut report = Report {
            window: self.window,
            totals: self.totals,
            by_day: self
                .by_day
                .map
                .into_iter()
                .map(|(day, counts)| DayRow { day, counts })
                .collect(),
            by_client_country: country_rows(self.client_country),
            by_server_country: country_rows(self.server_country),
            by_client_as: as_rows(self.client_as),
            by_server_as: as_rows(self.server_as),
            verdicts_by_day: self
                .verdict_day
                .map
                .into_iter()
                .map(|((day, verdict), sessions)| VerdictDayRow {
                    day,
                    verdict,
                    sessions,
                })
                .collect(),
            findings_by_kind: self
                .kinds
                .map
                .into_iter()
                .map(|(kind, sessions)| KindRow {
                    servers: servers_per_kind.get(&kind).copied().unwrap_or(0),
                    kind,
                    sessions,
                })
                .collect(),
            top_servers: self
                .servers
                .map
                .into_iter()
                .filter(|(_, s)| s.problems > 0)
                .map(|(ip, s)| ServerRow {
                    server_ip: ip,
                    server_country: s.country,
                    server_asn: s.asn,
                    server_as_org: s.org,
                    sessions: s.sessions,
                    problem_sessions: s.problems,
                })
                .collect(),
            dns_by_resolver_as: self
                .dns
                .map
                .into_iter()
                .map(|(asn, a)| DnsAsRow {
                    asn,
                    as_org: a.org,
                    transactions: a.transactions,
                    injected: a.injected,
                })
                .collect(),
            tlsrpt_policies: self
                .policies
                .map
                .into_iter()
                .map(|((policy_domain, mx_host), p)| PolicyRow {
                    policy_domain,
                    mx_host,
                    policy_type: match (p.tlsa, p.sts) {
                        (true, _) => POLICY_TLSA,
                        (false, true) => POLICY_STS,
                        _ => POLICY_NONE,
                    }
                    .to_string(),
                    successful: p.successful,
                    failed: p.failed,
                })
                .collect(),
            tlsrpt_failures: self
                .failures
                .map
                .into_iter()
                .map(
                    |((policy_domain, mx_host, result, kind, client, server), n)| FailureRow {
                        policy_domain,
                        mx_host,
                        result_type: result.to_string(),
                        failure_reason_code: kind,
                        sending_mta_ip: client,
                        receiving_ip: server,
                        failed_session_count: n,
                    },
                )
                .collect(),
            mta_sts_domains: self
                .sts_domains
                .map
                .into_iter()
                .filter(|(_, d)| d.evidence)
                .map(|(recipient_domain, d)| StsDomainRow {
                    recipient_domain,
                    sessions: d.sessions,
                    sts_seen: d.sts_seen,
                    fetch_ok: d.fetch_ok,
                    fetch_blocked: d.fetch_blocked,
                    plaintext: d.plaintext,
                })
                .collect(),
            skipped_records: self.skipped,
            ungrouped_sessions: self.refused,
        };
        report.normalize();
        report
    }
}

/// Calls `each` for every line of an NDJSON file, reusing one buffer.
fn for_each_line(
    path: &Path,
    mut each: impl FnMut(&str) -> Result<(), ()>,
) -> Result<u64, ReportError> {
    let file = std::fs::File::open(path).map_err(|e| ReportError::io("cannot read", path, e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = String::new();
    let mut bad = 0;
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| ReportError::io("cannot read", path, e))?;
        if n == 0 {
            return Ok(bad);
        }
        let text = line.trim_end();
        if !text.is_empty() && each(text).is_err() {
            bad += 1;
        }
    }
}

/// The files of one record type in an output directory, in name order: `KIND.ndjson` (what
/// `analyze` writes) and the rotated parts `KIND-<time>.ndjson` (what `live` and
/// `analyze --follow` write), whatever runs left them there.
pub fn parts(dir: &Path, kind: &str) -> Result<Vec<std::path::PathBuf>, ReportError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ReportError::io("cannot read", dir, e))?;
    let rotated = format!("{kind}-");
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ReportError::io("cannot read", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let part = name == format!("{kind}.ndjson")
            || (name.starts_with(&rotated) && name.ends_with(".ndjson"));
        if part && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Aggregates the session and DNS records of an output directory over `window`: every part
/// (see [`parts`]), so a sensor's rotated directory reads as one.
pub fn from_dir(dir: &Path, window: Window) -> Result<Report, ReportError> {
    let sessions = if dir.is_dir() {
        parts(dir, "sessions")?
    } else {
        Vec::new()
    };
    if sessions.is_empty() {
        return Err(ReportError::NotAnAnalysis(dir.to_path_buf()));
    }
    let mut acc = Acc::new(window);
    for path in &sessions {
        let bad = for_each_line(path, |text| {
            let s: SessionLine = serde_json::from_str(text).map_err(|_| ())?;
            acc.session(&s);
            Ok(())
        })?;
        acc.skipped += bad;
    }
    for path in &parts(dir, "dns")? {
        let bad = for_each_line(path, |text| {
            let d: DnsLine = serde_json::from_str(text).map_err(|_| ())?;
            acc.dns(&d);
            Ok(())
        })?;
        acc.skipped += bad;
    }
    Ok(acc.finish())
}
