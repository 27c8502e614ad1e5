//! The report's numbers, defined once. Every source (the embedded aggregation of an `analyze`
//! directory, the ClickHouse queries in `queries/`) fills a [`Report`], and every renderer
//! (terminal, Markdown, HTML, CSV, TLS-RPT) reads only a [`Report`], so a definition changed here
//! changes every output together. The SQL files restate these definitions; the test that runs
//! one capture through both sources holds them to the same numbers.

use serde::{Deserialize, Serialize};

/// Kinds whose presence makes a session count as *stripped*: the STARTTLS advertisement was
/// overwritten, or a server known to offer it did not offer it here (a deletion).
pub const STRIPPED_KINDS: [&str; 2] = ["starttls-stripped", "starttls-missing"];

/// Kinds whose presence makes a session count as *downgraded*: mail that should have been
/// protected in transit went, or could have gone, in cleartext because of something on the path
/// or a failed upgrade. A superset of [`STRIPPED_KINDS`].
pub const DOWNGRADE_KINDS: [&str; 8] = [
    "auth-in-cleartext",
    "starttls-stripped",
    "starttls-missing",
    "starttls-command-rejected",
    "tls-handshake-failed",
    "plaintext-fallback",
    "cleartext-after-starttls",
    "dane-required",
];

/// Verdicts that do not make a session a *problem session*: nothing to object to, or nothing
/// that could be judged (`certificate-not-observable` says only that TLS 1.3 hid the
/// certificate).
pub const NON_PROBLEM_VERDICTS: [&str; 4] = [
    "tls-ok",
    "plaintext",
    "incomplete",
    "certificate-not-observable",
];

/// How our finding kinds map to RFC 8460 result types (section 4.3), in the order a session's
/// findings are searched: a session's result is the mapping of its most severe finding that has
/// one (findings are stored most severe first). Our kind goes into `failure-reason-code`. Kinds
/// not listed (`tcp-overlap-conflict`, `smtp-to-unlisted-ip`, `plaintext-by-client`,
/// `certificate-changed`, `certificate-not-observable`) do not fail a session in TLS-RPT terms:
/// they say nothing about whether the TLS policy could be met. `auth-in-cleartext` is not listed
/// either: it always comes with the downgrade it followed (or after another session's failed
/// upgrade), and that downgrade's kind is the reason TLS-RPT gives.
pub const TLSRPT_RESULT_TYPES: [(&str, &str); 16] = [
    ("starttls-stripped", "starttls-not-supported"),
    ("cleartext-after-starttls", "validation-failure"),
    ("dane-required", "dane-required"),
    ("mta-sts-fetch-blocked", "sts-policy-fetch-error"),
    ("tlsa-invalid", "tlsa-invalid"),
    ("plaintext-fallback", "validation-failure"),
    ("starttls-missing", "starttls-not-supported"),
    ("tls-handshake-failed", "validation-failure"),
    ("starttls-command-rejected", "validation-failure"),
    ("certificate-host-mismatch", "certificate-host-mismatch"),
    ("certificate-not-trusted", "certificate-not-trusted"),
    ("certificate-expired", "certificate-expired"),
    ("certificate-self-signed", "certificate-not-trusted"),
    ("certificate-weak", "certificate-not-trusted"),
    ("starttls-not-supported", "starttls-not-supported"),
    ("certificate-absent", "certificate-not-trusted"),
];

/// The RFC 8460 result type for one of our kinds, if it fails a session.
pub fn tlsrpt_result_type(kind: &str) -> Option<&'static str> {
    TLSRPT_RESULT_TYPES
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, r)| *r)
}

/// The finding (our kind) that decides a session's TLS-RPT result: the first of `findings`
/// (most severe first) that maps to a result type.
pub fn tlsrpt_deciding_kind<'a, I: IntoIterator<Item = &'a str>>(findings: I) -> Option<&'a str> {
    findings
        .into_iter()
        .find(|k| tlsrpt_result_type(k).is_some())
}

/// RFC 8460 policy type for an MX host where a TLSA record was seen in DNS.
pub const POLICY_TLSA: &str = "tlsa";
/// RFC 8460 policy type for a domain whose MTA-STS policy fetch was seen to succeed
/// (`sts_fetch` `ok`) and no TLSA record: the policy was fetched, but its mode travels inside
/// HTTPS and stays unknown.
pub const POLICY_STS: &str = "sts";
/// RFC 8460 policy type when no policy was seen.
pub const POLICY_NONE: &str = "no-policy-found";

/// The per-session facts every number is made of. Sources build one per session record.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionFacts {
    /// The client sent EHLO and the capture shows the server's reply to it (any code).
    pub ehlo_complete: bool,
    /// The findings hold a kind of [`STRIPPED_KINDS`].
    pub stripped: bool,
    /// The findings hold a kind of [`DOWNGRADE_KINDS`].
    pub downgraded: bool,
    /// STARTTLS was in the EHLO reply.
    pub starttls_offered: bool,
    /// The TLS handshake completed (both Finished messages, or the TLS 1.3 equivalent).
    pub tls_completed: bool,
    /// The verdict is not one of [`NON_PROBLEM_VERDICTS`].
    pub problem: bool,
}

impl SessionFacts {
    /// Derives the facts from a session's verdict, findings and handshake fields.
    pub fn new<'a>(
        verdict: &str,
        findings: impl IntoIterator<Item = &'a str>,
        greeting_verb: Option<&str>,
        ehlo_reply_code: Option<u16>,
        starttls_offered: bool,
        tls_handshake_completed: bool,
    ) -> SessionFacts {
        let mut f = SessionFacts {
            ehlo_complete: greeting_verb == Some("EHLO") && ehlo_reply_code.is_some(),
            starttls_offered,
            tls_completed: tls_handshake_completed,
            problem: !NON_PROBLEM_VERDICTS.contains(&verdict),
            ..SessionFacts::default()
        };
        for k in findings {
            f.stripped |= STRIPPED_KINDS.contains(&k);
            f.downgraded |= DOWNGRADE_KINDS.contains(&k);
        }
        f
    }
}

/// Session counters of one group (a day, a country, an AS, or everything). Every rate is a
/// quotient of two of these, computed by the methods below and nowhere else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// All sessions.
    pub sessions: u64,
    /// Sessions with a complete EHLO exchange: the population of every rate.
    pub ehlo_sessions: u64,
    /// EHLO sessions with a stripped or missing STARTTLS advertisement.
    pub stripped: u64,
    /// EHLO sessions with any downgrade finding.
    pub downgraded: u64,
    /// EHLO sessions whose EHLO reply offered STARTTLS.
    pub starttls_offered: u64,
    /// EHLO sessions that were offered STARTTLS and completed the TLS handshake.
    pub tls_used: u64,
    /// All sessions whose verdict is a problem (see [`NON_PROBLEM_VERDICTS`]).
    pub problem_sessions: u64,
}

impl Counts {
    /// Adds one session.
    pub fn add(&mut self, f: &SessionFacts) {
        self.sessions += 1;
        self.problem_sessions += u64::from(f.problem);
        if f.ehlo_complete {
            self.ehlo_sessions += 1;
            self.stripped += u64::from(f.stripped);
            self.downgraded += u64::from(f.downgraded);
            self.starttls_offered += u64::from(f.starttls_offered);
            self.tls_used += u64::from(f.starttls_offered && f.tls_completed);
        }
    }

    /// Stripping rate: stripped / ehlo_sessions.
    pub fn stripping_rate(&self) -> f64 {
        rate(self.stripped, self.ehlo_sessions)
    }

    /// Downgrade rate: downgraded / ehlo_sessions.
    pub fn downgrade_rate(&self) -> f64 {
        rate(self.downgraded, self.ehlo_sessions)
    }

    /// STARTTLS offer rate: starttls_offered / ehlo_sessions.
    pub fn offer_rate(&self) -> f64 {
        rate(self.starttls_offered, self.ehlo_sessions)
    }

    /// STARTTLS adoption: tls_used / ehlo_sessions.
    pub fn adoption_rate(&self) -> f64 {
        rate(self.tls_used, self.ehlo_sessions)
    }
}

/// A quotient that is 0 for an empty population (so no NaN reaches a table or chart).
pub fn rate(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Rates in files have six decimals: enough for one in a million, and stable across sources.
pub fn fmt_rate(r: f64) -> String {
    format!("{r:.6}")
}

/// A rate as a percentage for people.
pub fn fmt_percent(r: f64) -> String {
    format!("{:.2}%", r * 100.0)
}

/// How an unknown country or AS is shown to people.
pub const UNKNOWN: &str = "unknown";

/// A country for people.
pub fn country_label(c: &str) -> String {
    if c.is_empty() {
        UNKNOWN.to_string()
    } else {
        c.to_string()
    }
}

/// An AS for people (`AS64500 Example Org`).
pub fn as_label(asn: u32, org: &str) -> String {
    match (asn, org.is_empty()) {
        (0, _) => UNKNOWN.to_string(),
        (n, true) => format!("AS{n}"),
        (n, false) => format!("AS{n} {org}"),
    }
}

/// One UTC day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DayRow {
    /// `YYYY-MM-DD`, UTC, from the session's first packet.
    pub day: String,
    /// Its sessions.
    pub counts: Counts,
}

/// One country (ISO 3166 alpha-2, "" when unknown).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CountryRow {
    /// Country code, "" when unknown.
    pub country: String,
    /// Its sessions.
    pub counts: Counts,
}

/// One autonomous system (0 when unknown).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AsRow {
    /// AS number, 0 when unknown.
    pub asn: u32,
    /// Organisation name (the greatest string seen for the AS, so every source picks the same).
    pub as_org: String,
    /// Its sessions.
    pub counts: Counts,
}

/// Sessions of one verdict on one day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictDayRow {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    /// The verdict string.
    pub verdict: String,
    /// Sessions.
    pub sessions: u64,
}

/// Sessions carrying one finding kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindRow {
    /// The kind string.
    pub kind: String,
    /// Sessions whose findings hold it.
    pub sessions: u64,
    /// Distinct server addresses among those sessions.
    pub servers: u64,
}

/// One server with problem sessions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRow {
    /// Server address.
    pub server_ip: String,
    /// Its country ("" when unknown; the greatest seen).
    pub server_country: String,
    /// Its AS (0 when unknown; the greatest seen).
    pub server_asn: u32,
    /// Its AS organisation (the greatest seen).
    pub server_as_org: String,
    /// Sessions to it.
    pub sessions: u64,
    /// Problem sessions to it.
    pub problem_sessions: u64,
}

/// DNS transactions answered by resolvers of one AS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsAsRow {
    /// The resolver's AS number (0 when unknown); `server_asn` in the query's answer.
    #[serde(alias = "server_asn")]
    pub asn: u32,
    /// Its organisation (the greatest seen); `server_as_org` in the query's answer.
    #[serde(alias = "server_as_org")]
    pub as_org: String,
    /// DNS transactions of interest (those written to `dns.ndjson`).
    pub transactions: u64,
    /// Of those, transactions with a `dns-injection` finding.
    pub injected: u64,
}

impl DnsAsRow {
    /// injected / transactions.
    pub fn injection_rate(&self) -> f64 {
        rate(self.injected, self.transactions)
    }
}

/// One TLS-RPT policy: a recipient domain and the MX host its sessions went to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRow {
    /// The recipient domain (the MX question that led to the sessions).
    pub policy_domain: String,
    /// The MX host ("" when unknown).
    pub mx_host: String,
    /// [`POLICY_TLSA`] when any of its sessions saw a TLSA record, else [`POLICY_STS`] when
    /// any saw its MTA-STS policy fetch succeed, else [`POLICY_NONE`].
    pub policy_type: String,
    /// Sessions with a completed handshake and no failure.
    pub successful: u64,
    /// Sessions with a finding that maps to an RFC 8460 result type.
    pub failed: u64,
}

/// One TLS-RPT failure-details entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRow {
    /// The policy's domain.
    pub policy_domain: String,
    /// The policy's MX host ("" when unknown).
    pub mx_host: String,
    /// RFC 8460 result type.
    pub result_type: String,
    /// Our kind that decided it.
    pub failure_reason_code: String,
    /// The SMTP client.
    pub sending_mta_ip: String,
    /// The server address the client connected to.
    pub receiving_ip: String,
    /// Sessions.
    pub failed_session_count: u64,
}

/// One recipient domain with MTA-STS evidence: the sessions to it and what the wire showed of
/// its policy, so a reader sees which domains publish MTA-STS and where that policy was defeated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StsDomainRow {
    /// The recipient domain (the MX question that led to the sessions).
    pub recipient_domain: String,
    /// Sessions to the domain, with or without MTA-STS evidence of their own.
    pub sessions: u64,
    /// Sessions whose client saw `v=STSv1` for the domain (`sts_txt` not empty).
    pub sts_seen: u64,
    /// Sessions whose client's policy fetch was seen to succeed (`sts_fetch` `ok`).
    pub fetch_ok: u64,
    /// Sessions with an `mta-sts-fetch-blocked` finding.
    pub fetch_blocked: u64,
    /// Sessions with an `mta-sts-plaintext` finding.
    pub plaintext: u64,
}

/// The findings that make a recipient domain an MTA-STS domain for the report even when its
/// session's `sts_txt` and `sts_fetch` are empty (the evidence may come from the baseline).
pub const STS_DOMAIN_KINDS: [&str; 2] = ["mta-sts-fetch-blocked", "mta-sts-plaintext"];

/// The window the report covers (whole seconds since the epoch, UTC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Sessions from this second on (inclusive).
    pub since: Option<i64>,
    /// Sessions before this second (exclusive).
    pub until: Option<i64>,
}

impl Window {
    /// Whether a record first seen at `secs` is inside.
    pub fn contains(&self, secs: i64) -> bool {
        self.since.is_none_or(|s| secs >= s) && self.until.is_none_or(|u| secs < u)
    }
}

/// Everything a report shows. Rows are in a canonical order (see [`Report::normalize`]), so
/// two sources with the same data give equal reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// The window asked for.
    pub window: Window,
    /// All sessions in the window.
    pub totals: Counts,
    /// Per UTC day.
    pub by_day: Vec<DayRow>,
    /// Per client country.
    pub by_client_country: Vec<CountryRow>,
    /// Per server country.
    pub by_server_country: Vec<CountryRow>,
    /// Per client AS.
    pub by_client_as: Vec<AsRow>,
    /// Per server AS.
    pub by_server_as: Vec<AsRow>,
    /// Sessions per day and verdict.
    pub verdicts_by_day: Vec<VerdictDayRow>,
    /// Sessions per finding kind.
    pub findings_by_kind: Vec<KindRow>,
    /// Servers with most problem sessions (at most [`TOP_N`]).
    pub top_servers: Vec<ServerRow>,
    /// DNS transactions per resolver AS.
    pub dns_by_resolver_as: Vec<DnsAsRow>,
    /// TLS-RPT policies.
    pub tlsrpt_policies: Vec<PolicyRow>,
    /// TLS-RPT failure details.
    pub tlsrpt_failures: Vec<FailureRow>,
    /// Recipient domains with MTA-STS evidence.
    pub mta_sts_domains: Vec<StsDomainRow>,
    /// Records the source could not use (malformed lines), shown so nothing is lost silently.
    pub skipped_records: u64,
    /// Sessions left out of a grouping because it reached its size cap (embedded source only).
    pub ungrouped_sessions: u64,
}

/// Rows kept in the top-servers table.
pub const TOP_N: usize = 25;

impl Report {
    /// Sorts every table into its canonical order and trims the top tables.
    pub fn normalize(&mut self) {
        self.by_day.sort_by(|a, b| a.day.cmp(&b.day));
        let by_size = |a: &Counts, b: &Counts| {
            b.ehlo_sessions
                .cmp(&a.ehlo_sessions)
                .then(b.sessions.cmp(&a.sessions))
        };
        for t in [&mut self.by_client_country, &mut self.by_server_country] {
            t.sort_by(|a, b| by_size(&a.counts, &b.counts).then(a.country.cmp(&b.country)));
        }
        for t in [&mut self.by_client_as, &mut self.by_server_as] {
            t.sort_by(|a, b| by_size(&a.counts, &b.counts).then(a.asn.cmp(&b.asn)));
        }
        self.verdicts_by_day
            .sort_by(|a, b| a.day.cmp(&b.day).then(a.verdict.cmp(&b.verdict)));
        self.findings_by_kind.sort_by(|a, b| {
            kind_rank(&a.kind)
                .cmp(&kind_rank(&b.kind))
                .then(a.kind.cmp(&b.kind))
        });
        self.top_servers.retain(|s| s.problem_sessions > 0);
        self.top_servers.sort_by(|a, b| {
            b.problem_sessions
                .cmp(&a.problem_sessions)
                .then(b.sessions.cmp(&a.sessions))
                .then(a.server_ip.cmp(&b.server_ip))
        });
        self.top_servers.truncate(TOP_N);
        self.dns_by_resolver_as.sort_by(|a, b| {
            b.injected
                .cmp(&a.injected)
                .then(b.transactions.cmp(&a.transactions))
                .then(a.asn.cmp(&b.asn))
        });
        self.tlsrpt_policies
            .sort_by(|a, b| (&a.policy_domain, &a.mx_host).cmp(&(&b.policy_domain, &b.mx_host)));
        self.mta_sts_domains
            .sort_by(|a, b| a.recipient_domain.cmp(&b.recipient_domain));
        self.tlsrpt_failures.sort_by(|a, b| {
            (
                &a.policy_domain,
                &a.mx_host,
                &a.result_type,
                &a.failure_reason_code,
                &a.sending_mta_ip,
                &a.receiving_ip,
            )
                .cmp(&(
                    &b.policy_domain,
                    &b.mx_host,
                    &b.result_type,
                    &b.failure_reason_code,
                    &b.sending_mta_ip,
                    &b.receiving_ip,
                ))
        });
    }

    /// Sessions per verdict over the whole window, most frequent first.
    pub fn verdict_totals(&self) -> Vec<(String, u64)> {
        let mut m = std::collections::BTreeMap::<&str, u64>::new();
        for r in &self.verdicts_by_day {
            *m.entry(&r.verdict).or_default() += r.sessions;
        }
        let mut v: Vec<(String, u64)> = m.into_iter().map(|(k, n)| (k.to_string(), n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// Certificate problems: the `certificate-*` kinds and `tlsa-invalid`, except
    /// `certificate-not-observable` (not a problem, a blind spot).
    pub fn certificate_problems(&self) -> Vec<&KindRow> {
        self.findings_by_kind
            .iter()
            .filter(|k| is_certificate_problem(&k.kind))
            .collect()
    }

    /// Server ASes with problem sessions, most first (at most [`TOP_N`]): the "top ASes with
    /// findings" view of `by_server_as`.
    pub fn top_server_ases(&self) -> Vec<&AsRow> {
        let mut v: Vec<&AsRow> = self
            .by_server_as
            .iter()
            .filter(|a| a.counts.problem_sessions > 0)
            .collect();
        v.sort_by(|a, b| {
            b.counts
                .problem_sessions
                .cmp(&a.counts.problem_sessions)
                .then(b.counts.sessions.cmp(&a.counts.sessions))
                .then(a.asn.cmp(&b.asn))
        });
        v.truncate(TOP_N);
        v
    }

    /// First and last day with sessions.
    pub fn day_span(&self) -> Option<(&str, &str)> {
        Some((
            self.by_day.first()?.day.as_str(),
            self.by_day.last()?.day.as_str(),
        ))
    }
}

/// Whether a kind is a certificate problem (see [`Report::certificate_problems`]).
pub fn is_certificate_problem(kind: &str) -> bool {
    (kind.starts_with("certificate-") && kind != "certificate-not-observable")
        || kind == "tlsa-invalid"
}

/// Severity rank of a kind string (unknown kinds last).
fn kind_rank(kind: &str) -> usize {
    crate::record::FindingKind::ALL
        .iter()
        .position(|k| k.as_str() == kind)
        .unwrap_or(usize::MAX)
}

/// The definitions, in words, for the Markdown report and the README (keep the three in step).
pub const DEFINITIONS: &str = "\
- **Session**: one SMTP connection (a line of `sessions.ndjson`), counted on the UTC day of its first packet (`ts`).
- **EHLO session**: the client sent `EHLO` and the capture shows the server's reply (any code). This is the population of every rate; HELO-only, implicit-TLS (port 465) and incomplete sessions are not in it.
- **Stripped**: an EHLO session whose findings include `starttls-stripped` (the advertisement was overwritten) or `starttls-missing` (a server that offered STARTTLS in other sessions did not here). **Stripping rate** = stripped / EHLO sessions.
- **Downgraded**: an EHLO session whose findings include any of `auth-in-cleartext`, `starttls-stripped`, `starttls-missing`, `starttls-command-rejected`, `tls-handshake-failed`, `plaintext-fallback`, `cleartext-after-starttls`, `dane-required`. **Downgrade rate** = downgraded / EHLO sessions.
- **STARTTLS offered**: an EHLO session whose EHLO reply listed STARTTLS. **Offer rate** = offered / EHLO sessions.
- **TLS used**: an EHLO session that was offered STARTTLS and completed the TLS handshake. **STARTTLS adoption** = TLS used / EHLO sessions.
- **Problem session**: any session whose verdict is not `tls-ok`, `plaintext`, `incomplete` or `certificate-not-observable`.
- **Country / AS**: of the client or the server address (`client_country`, `client_asn`, `server_country`, `server_asn`); unknown is shown as `unknown` (country \"\", AS 0 in the CSV files). An AS's name is the greatest `*_as_org` string seen for it.
- **Finding kinds**: sessions whose findings include the kind, and the distinct server addresses among them. Certificate problems are the `certificate-*` kinds (except `certificate-not-observable`) and `tlsa-invalid`.
- **DNS injection by resolver AS**: DNS transactions in `dns.ndjson` grouped by the AS of the resolver asked; injected = transactions with a `dns-injection` finding.
- **TLS-RPT**: sessions with a `recipient_domain` (linked to the client's MX lookup), per recipient domain and MX host. A session fails when one of its findings maps to an RFC 8460 result type (the most severe such finding decides; our kind goes into `failure-reason-code`); it succeeds when it has no such finding and completed the TLS handshake; other sessions (plaintext by the client's choice, incomplete) are in neither count. The policy type is `tlsa` when a TLSA record for the MX host was seen in DNS, else `sts` when a session's MTA-STS policy fetch was seen to succeed (`sts_fetch` `ok`; the policy's mode travels inside HTTPS and stays unknown), else `no-policy-found`.
- **MTA-STS domains**: recipient domains with MTA-STS evidence in any of their sessions (`sts_txt` not empty, `sts_fetch` other than `not-seen`, or an `mta-sts-fetch-blocked` or `mta-sts-plaintext` finding); sessions = all sessions to the domain, STS seen = sessions whose client saw `v=STSv1` (`sts_txt` not empty), fetch OK = `sts_fetch` `ok`, fetch blocked and plaintext = sessions with those findings.
- **Window**: `--since` (inclusive) and `--until` (exclusive), on the session's first packet; a date means its midnight UTC, and a date given to `--until` includes that whole day.
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::FindingKind;

    #[test]
    fn every_kind_has_a_tlsrpt_decision_and_the_table_is_in_severity_order() {
        let kinds: Vec<&str> = FindingKind::ALL.iter().map(|k| k.as_str()).collect();
        let mapped: Vec<&str> = TLSRPT_RESULT_TYPES.iter().map(|(k, _)| *k).collect();
        let mut positions: Vec<usize> = mapped
            .iter()
            .map(|m| kinds.iter().position(|k| k == m).expect("a real kind"))
            .collect();
        let sorted = {
            let mut p = positions.clone();
            p.sort();
            p
        };
        assert_eq!(positions, sorted, "mapping must follow severity order");
        positions.dedup();
        assert_eq!(positions.len(), mapped.len());
        let rfc = [
            "starttls-not-supported",
            "certificate-host-mismatch",
            "certificate-expired",
            "certificate-not-trusted",
            "validation-failure",
            "tlsa-invalid",
            "dnssec-invalid",
            "dane-required",
            "sts-policy-fetch-error",
        ];
        for (_, r) in TLSRPT_RESULT_TYPES {
            assert!(rfc.contains(&r), "{r} is not an RFC 8460 type");
        }
        assert_eq!(tlsrpt_result_type("certificate-not-observable"), None);
        assert_eq!(tlsrpt_result_type("tcp-overlap-conflict"), None);
        assert_eq!(
            tlsrpt_deciding_kind(["tcp-overlap-conflict", "starttls-missing"]),
            Some("starttls-missing")
        );
    }

    #[test]
    fn facts_and_counts_follow_the_definitions() {
        let mut c = Counts::default();
        let stripped = SessionFacts::new(
            "plaintext-fallback",
            ["plaintext-fallback", "starttls-missing"],
            Some("EHLO"),
            Some(250),
            false,
            false,
        );
        let tls = SessionFacts::new("tls-ok", [], Some("EHLO"), Some(250), true, true);
        let helo = SessionFacts::new("plaintext", [], Some("HELO"), None, false, false);
        let implicit = SessionFacts::new(
            "certificate-not-observable",
            ["certificate-not-observable"],
            None,
            None,
            false,
            true,
        );
        for f in [&stripped, &tls, &helo, &implicit] {
            c.add(f);
        }
        assert_eq!(c.sessions, 4);
        assert_eq!(c.ehlo_sessions, 2);
        assert_eq!(c.stripped, 1);
        assert_eq!(c.downgraded, 1);
        assert_eq!(c.starttls_offered, 1);
        assert_eq!(c.tls_used, 1);
        assert_eq!(c.problem_sessions, 1);
        assert_eq!(c.stripping_rate(), 0.5);
        assert_eq!(rate(1, 0), 0.0);
        assert_eq!(fmt_rate(1.0 / 3.0), "0.333333");
    }

    #[test]
    fn the_readme_states_the_same_definitions() {
        let readme = include_str!("../../README.md");
        for line in DEFINITIONS.lines() {
            assert!(readme.contains(line), "README lacks: {line}");
        }
    }

    #[test]
    fn window_is_half_open() {
        let w = Window {
            since: Some(10),
            until: Some(20),
        };
        assert!(!w.contains(9));
        assert!(w.contains(10));
        assert!(w.contains(19));
        assert!(!w.contains(20));
        assert!(Window::default().contains(i64::MIN));
    }
}
