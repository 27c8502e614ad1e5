//! The terminal summary: the headline rates and the worst groups, in one screen.

use super::html::{notes, period};
use super::model::*;
use super::table::Table;
use super::tables;
use std::fmt::Write as _;

/// Rows per ranked list.
const ROWS: usize = 10;

/// A title as a heading of the summary: lower case like its other lines, unless it starts with
/// an acronym (`DNS`, `TLS-RPT`).
fn heading(title: &str) -> String {
    let mut chars = title.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if second.is_lowercase() => {
            first.to_lowercase().chain(title.chars().skip(1)).collect()
        }
        _ => title.to_string(),
    }
}

/// A table as a list under its heading, one line per row, or nothing when it has no rows.
/// `line` writes a row's line from its cells, looked up by column heading: the summary reads
/// as sentences (`12 of 40 sessions`), not as a grid.
fn list(o: &mut String, t: &Table, line: impl Fn(&dyn Fn(&str) -> String) -> String) {
    let view = t.for_people(ROWS);
    if view.rows.is_empty() {
        return;
    }
    let _ = writeln!(o, "\n{}:", heading(t.title.unwrap_or_default()));
    for row in &view.rows {
        let cell = |label: &str| row[view.column(label)].for_people();
        let _ = writeln!(o, "  {}", line(&cell));
    }
}

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
    for (table, key) in [
        (
            tables::highest_stripping_rate_by_client_country(r),
            "country",
        ),
        (tables::highest_stripping_rate_by_server_as(r), "AS"),
    ] {
        list(&mut o, &table, |c| {
            format!(
                "{:<32} {:>8} of {:>8} EHLO sessions  {:>8}",
                c(key),
                c("stripped"),
                c("EHLO sessions"),
                c("stripping rate")
            )
        });
    }
    list(&mut o, &tables::verdict_totals(r), |c| {
        format!("{:<32} {:>10}", c("verdict"), c("sessions"))
    });
    list(&mut o, &tables::certificate_problems(r), |c| {
        format!(
            "{:<32} {:>10} {:>8}",
            c("kind"),
            c("sessions"),
            c("servers")
        )
    });
    list(&mut o, &tables::top_servers(r), |c| {
        format!(
            "{:<40} {:>8} of {:>8} sessions  {}",
            c("server"),
            c("problem sessions"),
            c("sessions"),
            c("AS")
        )
    });
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
    if !r.mta_sts_domains.is_empty() {
        let sum = |f: fn(&StsDomainRow) -> u64| r.mta_sts_domains.iter().map(f).sum::<u64>();
        let _ = writeln!(
            o,
            "MTA-STS: {} domains, {} sessions with a policy fetch blocked, {} in plaintext to an STS domain",
            r.mta_sts_domains.len(),
            sum(|d| d.fetch_blocked),
            sum(|d| d.plaintext)
        );
    }
    o
}
