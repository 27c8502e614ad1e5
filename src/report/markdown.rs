//! `report.md`: the tables and the definitions, for papers and issue trackers.

use super::html::{as_label, country_label, notes, period};
use super::model::*;
use std::fmt::Write as _;

/// Rows per group table (the CSV files have them all).
const ROWS: usize = 25;

/// Escapes a table cell (pipes would split it).
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn table(out: &mut String, header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let align: Vec<&str> = (0..header.len())
        .map(|i| if i == 0 { "---" } else { "---:" })
        .collect();
    let _ = writeln!(out, "| {} |", align.join(" | "));
    let mut any = false;
    for r in rows {
        any = true;
        let cells: Vec<String> = r.iter().map(|c| cell(c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    if !any {
        let _ = writeln!(out, "| none |{}", " |".repeat(header.len() - 1));
    }
    out.push('\n');
}

const GROUP_HEADER: [&str; 7] = [
    "sessions",
    "EHLO sessions",
    "stripped",
    "stripping rate",
    "downgrade rate",
    "offer rate",
    "STARTTLS adoption",
];

fn group_cells(key: String, c: &Counts) -> Vec<String> {
    vec![
        key,
        c.sessions.to_string(),
        c.ehlo_sessions.to_string(),
        c.stripped.to_string(),
        fmt_percent(c.stripping_rate()),
        fmt_percent(c.downgrade_rate()),
        fmt_percent(c.offer_rate()),
        fmt_percent(c.adoption_rate()),
    ]
}

/// Renders the report.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# stripwatch report\n\n{}.\n", period(r));
    for n in notes(r) {
        let _ = writeln!(o, "> **Note:** {n}\n");
    }
    let t = &r.totals;
    o.push_str("## Summary\n\n");
    table(
        &mut o,
        &["measure", "value"],
        [
            vec!["sessions".into(), t.sessions.to_string()],
            vec!["EHLO sessions".into(), t.ehlo_sessions.to_string()],
            vec!["stripped".into(), t.stripped.to_string()],
            vec!["stripping rate".into(), fmt_percent(t.stripping_rate())],
            vec!["downgraded".into(), t.downgraded.to_string()],
            vec!["downgrade rate".into(), fmt_percent(t.downgrade_rate())],
            vec!["STARTTLS offered".into(), fmt_percent(t.offer_rate())],
            vec!["STARTTLS adoption".into(), fmt_percent(t.adoption_rate())],
            vec!["problem sessions".into(), t.problem_sessions.to_string()],
        ],
    );
    for (title, rows) in [
        ("By client country", &r.by_client_country),
        ("By server country", &r.by_server_country),
    ] {
        let _ = writeln!(o, "## {title}\n");
        let mut h = vec!["country"];
        h.extend(GROUP_HEADER);
        table(
            &mut o,
            &h,
            rows.iter()
                .take(ROWS)
                .map(|g| group_cells(country_label(&g.country), &g.counts)),
        );
    }
    for (title, rows) in [
        ("By client AS", &r.by_client_as),
        ("By server AS", &r.by_server_as),
    ] {
        let _ = writeln!(o, "## {title}\n");
        let mut h = vec!["AS"];
        h.extend(GROUP_HEADER);
        table(
            &mut o,
            &h,
            rows.iter()
                .take(ROWS)
                .map(|g| group_cells(as_label(g.asn, &g.as_org), &g.counts)),
        );
    }
    o.push_str("## Per day (UTC)\n\n");
    let mut h = vec!["day"];
    h.extend(GROUP_HEADER);
    table(
        &mut o,
        &h,
        r.by_day
            .iter()
            .map(|d| group_cells(d.day.clone(), &d.counts)),
    );
    o.push_str("## Sessions by verdict\n\n");
    table(
        &mut o,
        &["verdict", "sessions"],
        r.verdict_totals()
            .into_iter()
            .map(|(v, n)| vec![format!("`{v}`"), n.to_string()]),
    );
    o.push_str("## Finding kinds\n\nCertificate problems are marked with *.\n\n");
    table(
        &mut o,
        &["kind", "sessions", "servers"],
        r.findings_by_kind.iter().map(|k| {
            let mark = if is_certificate_problem(&k.kind) {
                " *"
            } else {
                ""
            };
            vec![
                format!("`{}`{mark}", k.kind),
                k.sessions.to_string(),
                k.servers.to_string(),
            ]
        }),
    );
    o.push_str("## Servers with most problem sessions\n\n");
    table(
        &mut o,
        &["server", "country", "AS", "sessions", "problem sessions"],
        r.top_servers.iter().map(|s| {
            vec![
                s.server_ip.clone(),
                country_label(&s.server_country),
                as_label(s.server_asn, &s.server_as_org),
                s.sessions.to_string(),
                s.problem_sessions.to_string(),
            ]
        }),
    );
    o.push_str("## Server ASes with most problem sessions\n\n");
    table(
        &mut o,
        &["AS", "sessions", "problem sessions", "stripping rate"],
        r.top_server_ases().into_iter().map(|a| {
            vec![
                as_label(a.asn, &a.as_org),
                a.counts.sessions.to_string(),
                a.counts.problem_sessions.to_string(),
                fmt_percent(a.counts.stripping_rate()),
            ]
        }),
    );
    o.push_str("## DNS injection by resolver AS\n\n");
    table(
        &mut o,
        &[
            "resolver AS",
            "DNS transactions",
            "injected",
            "injection rate",
        ],
        r.dns_by_resolver_as.iter().map(|d| {
            vec![
                as_label(d.asn, &d.as_org),
                d.transactions.to_string(),
                d.injected.to_string(),
                fmt_percent(d.injection_rate()),
            ]
        }),
    );
    o.push_str("## TLS-RPT (RFC 8460) per recipient domain\n\n");
    table(
        &mut o,
        &[
            "policy domain",
            "MX host",
            "policy type",
            "successful",
            "failed",
        ],
        r.tlsrpt_policies.iter().map(|p| {
            vec![
                p.policy_domain.clone(),
                p.mx_host.clone(),
                format!("`{}`", p.policy_type),
                p.successful.to_string(),
                p.failed.to_string(),
            ]
        }),
    );
    o.push_str("## Definitions\n\n");
    o.push_str(DEFINITIONS);
    o
}
