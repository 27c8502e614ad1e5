//! The terminal summary: the headline rates and the worst groups, in one screen.

use super::html::{as_label, country_label, notes, period};
use super::model::*;
use std::fmt::Write as _;

/// Rows per list.
const ROWS: usize = 10;

/// Renders the summary.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let t = &r.totals;
    let _ = writeln!(o, "stripwatch report: {}", period(r));
    for n in notes(r) {
        let _ = writeln!(o, "note: {n}");
    }
    let _ = writeln!(
        o,
        "\nsessions {}  EHLO sessions {}  problem sessions {}",
        t.sessions, t.ehlo_sessions, t.problem_sessions
    );
    let _ = writeln!(
        o,
        "stripping rate {} ({} stripped)  downgrade rate {}  STARTTLS offered {}  adoption {}",
        fmt_percent(t.stripping_rate()),
        t.stripped,
        fmt_percent(t.downgrade_rate()),
        fmt_percent(t.offer_rate()),
        fmt_percent(t.adoption_rate())
    );
    let worst = |rows: Vec<(String, Counts)>| -> Vec<(String, Counts)> {
        let mut v: Vec<(String, Counts)> = rows.into_iter().filter(|r| r.1.stripped > 0).collect();
        v.sort_by(|a, b| {
            b.1.stripping_rate()
                .total_cmp(&a.1.stripping_rate())
                .then(b.1.stripped.cmp(&a.1.stripped))
                .then(a.0.cmp(&b.0))
        });
        v.truncate(ROWS);
        v
    };
    let sections = [
        (
            "client countries",
            worst(
                r.by_client_country
                    .iter()
                    .map(|g| (country_label(&g.country), g.counts))
                    .collect(),
            ),
        ),
        (
            "server ASes",
            worst(
                r.by_server_as
                    .iter()
                    .map(|g| (as_label(g.asn, &g.as_org), g.counts))
                    .collect(),
            ),
        ),
    ];
    for (what, rows) in sections {
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(o, "\nhighest stripping rate, {what}:");
        for (k, c) in rows {
            let _ = writeln!(
                o,
                "  {:<32} {:>8} of {:>8} EHLO sessions  {:>8}",
                k,
                c.stripped,
                c.ehlo_sessions,
                fmt_percent(c.stripping_rate())
            );
        }
    }
    let verdicts = r.verdict_totals();
    if !verdicts.is_empty() {
        let _ = writeln!(o, "\nsessions by verdict:");
        for (v, n) in verdicts {
            let _ = writeln!(o, "  {v:<32} {n:>10}");
        }
    }
    let certs = r.certificate_problems();
    if !certs.is_empty() {
        let _ = writeln!(o, "\ncertificate problems (sessions, servers):");
        for k in certs {
            let _ = writeln!(o, "  {:<32} {:>10} {:>8}", k.kind, k.sessions, k.servers);
        }
    }
    if !r.top_servers.is_empty() {
        let _ = writeln!(o, "\nservers with most problem sessions:");
        for s in r.top_servers.iter().take(ROWS) {
            let _ = writeln!(
                o,
                "  {:<40} {:>8} of {:>8} sessions  {}",
                s.server_ip,
                s.problem_sessions,
                s.sessions,
                as_label(s.server_asn, &s.server_as_org)
            );
        }
    }
    let injected: u64 = r.dns_by_resolver_as.iter().map(|d| d.injected).sum();
    if injected > 0 {
        let _ = writeln!(o, "\nDNS injection: {injected} transactions");
    }
    if !r.tlsrpt_policies.is_empty() {
        let failed: u64 = r.tlsrpt_policies.iter().map(|p| p.failed).sum();
        let ok: u64 = r.tlsrpt_policies.iter().map(|p| p.successful).sum();
        let domains: std::collections::BTreeSet<&str> = r
            .tlsrpt_policies
            .iter()
            .map(|p| p.policy_domain.as_str())
            .collect();
        let _ = writeln!(
            o,
            "\nTLS-RPT: {} recipient domains, {ok} successful and {failed} failed sessions",
            domains.len()
        );
    }
    o
}
