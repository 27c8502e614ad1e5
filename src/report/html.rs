//! `report.html`: one self-contained page (inline CSS and SVG, no scripts, no external
//! resources) that can be mailed or archived as it is.

use super::ReportError;
use super::charts;
use super::model::*;
use super::table::Table;
use super::tables;
use std::fmt::Write as _;

/// Groups shown in the per-country and per-AS charts (the largest by EHLO sessions).
const CHART_GROUPS: usize = 20;
/// Rows shown in the ranked tables (the CSV files have them all).
const TABLE_ROWS: usize = 50;

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The few Markdown marks the definitions use (`**bold**`, `` `code` ``), on escaped text.
fn inline_md(s: &str) -> String {
    let mut out = String::new();
    let mut bold = false;
    let mut code = false;
    let text = esc(s);
    let mut rest = text.as_str();
    while let Some(c) = rest.chars().next() {
        if !code && rest.starts_with("**") {
            out.push_str(if bold { "</strong>" } else { "<strong>" });
            bold = !bold;
            rest = &rest[2..];
        } else if c == '`' {
            out.push_str(if code { "</code>" } else { "<code>" });
            code = !code;
            rest = &rest[1..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if code {
        out.push_str("</code>");
    }
    if bold {
        out.push_str("</strong>");
    }
    out
}

/// A table without a title (the page's layout heads it, or not).
fn table(out: &mut String, t: &Table) {
    let view = t.for_people(TABLE_ROWS);
    out.push_str("<table><thead><tr>");
    for h in &view.header {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for r in &view.rows {
        out.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            let class = if i == 0 { "" } else { " class=\"n\"" };
            let _ = write!(out, "<td{class}>{}</td>", esc(&c.for_people()));
        }
        out.push_str("</tr>");
    }
    if view.rows.is_empty() {
        let _ = write!(
            out,
            "<tr><td colspan=\"{}\" class=\"none\">none</td></tr>",
            view.header.len()
        );
    }
    out.push_str("</tbody></table>\n");
}

/// A table under its title, as a heading of `level` (2 for a section, 3 inside one).
fn titled(out: &mut String, level: u8, t: &Table) {
    if let Some(title) = t.title {
        let _ = writeln!(out, "<h{level}>{}</h{level}>", esc(title));
    }
    table(out, t);
}

fn figure(out: &mut String, id: &str, svg: &str) {
    let _ = writeln!(out, "<figure class=\"chart\" id=\"{id}\">{svg}</figure>");
}

/// Chart data: stripping rate of the largest groups with EHLO sessions, each label with its
/// number of EHLO sessions (a 50% rate of two sessions must not look like one of thousands).
fn rate_bars<'a>(rows: impl Iterator<Item = (String, &'a Counts)>) -> Vec<(String, f64)> {
    rows.filter(|(_, c)| c.ehlo_sessions > 0)
        .take(CHART_GROUPS)
        .map(|(k, c)| (format!("{k} ({})", c.ehlo_sessions), c.stripping_rate()))
        .collect()
}

/// Renders the page.
pub fn render(r: &Report) -> Result<String, ReportError> {
    let mut o = String::new();
    o.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>stripwatch report</title><style>\n",
    );
    o.push_str(
        "body{font-family:sans-serif;margin:2em auto;max-width:1000px;padding:0 1em;color:#222}\
         h1{margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ccc;padding-bottom:.2em}\
         table{border-collapse:collapse;margin:.6em 0;font-size:14px}\
         th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;white-space:nowrap}td.n{text-align:right}\
         th{background:#f2f2f2}td.none{color:#888;text-align:center}\
         figure.chart{margin:1em 0}figure.chart svg{max-width:100%;height:auto}\
         .kpi{display:flex;flex-wrap:wrap;gap:1em;margin:1em 0}\
         .kpi div{border:1px solid #ccc;border-radius:6px;padding:.6em 1em;min-width:9em}\
         .kpi b{display:block;font-size:1.6em}.muted{color:#666}.warn{color:#b03a2e}\n</style></head><body>\n",
    );
    o.push_str("<h1>stripwatch report</h1>\n");
    let _ = writeln!(o, "<p class=\"muted\">{}</p>", esc(&period(r)));
    let t = &r.totals;
    o.push_str("<div class=\"kpi\">");
    for (label, value) in [
        ("sessions", t.sessions.to_string()),
        ("EHLO sessions", t.ehlo_sessions.to_string()),
        ("stripping rate", fmt_percent(t.stripping_rate())),
        ("downgrade rate", fmt_percent(t.downgrade_rate())),
        ("STARTTLS offered", fmt_percent(t.offer_rate())),
        ("STARTTLS adoption", fmt_percent(t.adoption_rate())),
        ("problem sessions", t.problem_sessions.to_string()),
    ] {
        let _ = write!(o, "<div><b>{}</b>{}</div>", esc(&value), esc(label));
    }
    o.push_str("</div>\n");
    for note in notes(r) {
        let _ = writeln!(o, "<p class=\"warn\">{}</p>", esc(&note));
    }

    o.push_str("<h2>Stripping rate by country and AS</h2>\n");
    figure(
        &mut o,
        "chart-client-country",
        &charts::bars(
            "client country",
            "Stripping rate by client country",
            "stripping rate (stripped / EHLO sessions; EHLO sessions in brackets)",
            &rate_bars(
                r.by_client_country
                    .iter()
                    .map(|g| (country_label(&g.country), &g.counts)),
            ),
            true,
        )?,
    );
    figure(
        &mut o,
        "chart-server-as",
        &charts::bars(
            "server AS",
            "Stripping rate by server AS",
            "stripping rate (stripped / EHLO sessions; EHLO sessions in brackets)",
            &rate_bars(
                r.by_server_as
                    .iter()
                    .map(|g| (as_label(g.asn, &g.as_org), &g.counts)),
            ),
            true,
        )?,
    );
    figure(
        &mut o,
        "chart-client-as",
        &charts::bars(
            "client AS",
            "Stripping rate by client AS",
            "stripping rate (stripped / EHLO sessions; EHLO sessions in brackets)",
            &rate_bars(
                r.by_client_as
                    .iter()
                    .map(|g| (as_label(g.asn, &g.as_org), &g.counts)),
            ),
            true,
        )?,
    );
    for t in [
        tables::by_client_country(r),
        tables::by_server_country(r),
        tables::by_client_as(r),
        tables::by_server_as(r),
    ] {
        titled(&mut o, 3, &t);
    }

    o.push_str("<h2>Over time</h2>\n");
    let days: Vec<String> = r.by_day.iter().map(|d| d.day.clone()).collect();
    let series = verdict_series(r, &days);
    figure(
        &mut o,
        "chart-verdicts-per-day",
        &charts::stacked_days("verdicts", "Sessions per day by verdict", &days, &series)?,
    );
    let adoption = vec![
        (
            "STARTTLS offered".to_string(),
            r.by_day.iter().map(|d| d.counts.offer_rate()).collect(),
        ),
        (
            "adoption (TLS used)".to_string(),
            r.by_day.iter().map(|d| d.counts.adoption_rate()).collect(),
        ),
        (
            "stripping rate".to_string(),
            r.by_day.iter().map(|d| d.counts.stripping_rate()).collect(),
        ),
    ];
    figure(
        &mut o,
        "chart-adoption-per-day",
        &charts::rate_lines("adoption", "STARTTLS adoption per day", &days, &adoption)?,
    );
    table(&mut o, &tables::by_day(r));
    titled(&mut o, 3, &tables::verdict_totals(r));

    o.push_str("<h2>Certificate problems</h2>\n");
    let certs: Vec<(String, f64)> = r
        .certificate_problems()
        .iter()
        .map(|k| {
            (
                k.kind.trim_start_matches("certificate-").to_string(),
                k.sessions as f64,
            )
        })
        .collect();
    figure(
        &mut o,
        "chart-certificate-problems",
        &charts::bars(
            "certificate problems",
            "Sessions with certificate problems, by kind",
            "sessions",
            &certs,
            false,
        )?,
    );
    // Under the chart of certificate problems, "all" says that this table is not only them.
    o.push_str("<h3>All finding kinds</h3>\n");
    table(&mut o, &tables::findings_by_kind(r));

    for t in [
        tables::top_servers(r),
        tables::top_server_ases(r),
        tables::dns_injection_by_resolver_as(r),
        tables::tlsrpt_policies(r),
        tables::mta_sts_domains(r),
    ] {
        titled(&mut o, 2, &t);
    }

    o.push_str("<h2>Definitions</h2>\n<ul>\n");
    for line in DEFINITIONS.lines() {
        if let Some(item) = line.strip_prefix("- ") {
            let _ = writeln!(o, "<li>{}</li>", inline_md(item));
        }
    }
    o.push_str("</ul>\n</body></html>\n");
    Ok(o)
}

/// One series per verdict (most frequent first) with a value per day.
pub fn verdict_series(r: &Report, days: &[String]) -> Vec<(String, Vec<u64>)> {
    let index: std::collections::HashMap<&str, usize> = days
        .iter()
        .enumerate()
        .map(|(i, d)| (d.as_str(), i))
        .collect();
    r.verdict_totals()
        .into_iter()
        .map(|(v, _)| {
            let mut values = vec![0u64; days.len()];
            for row in r.verdicts_by_day.iter().filter(|x| x.verdict == v) {
                if let Some(&i) = index.get(row.day.as_str()) {
                    values[i] += row.sessions;
                }
            }
            (v, values)
        })
        .collect()
}

/// What the report covers, in words.
pub fn period(r: &Report) -> String {
    let bound = |s: Option<i64>| s.map(super::window::rfc3339_secs);
    let asked = match (bound(r.window.since), bound(r.window.until)) {
        (None, None) => "all sessions".to_string(),
        (Some(s), None) => format!("sessions from {s}"),
        (None, Some(u)) => format!("sessions before {u}"),
        (Some(s), Some(u)) => format!("sessions from {s} to before {u}"),
    };
    match r.day_span() {
        Some((a, b)) if a == b => format!("{asked}; data on {a} (UTC)"),
        Some((a, b)) => format!("{asked}; data from {a} to {b} (UTC)"),
        None => format!("{asked}; no sessions"),
    }
}

/// Warnings that belong on every rendering (nothing lost silently).
pub fn notes(r: &Report) -> Vec<String> {
    let mut v = Vec::new();
    if r.skipped_records > 0 {
        v.push(format!(
            "{} records could not be read (malformed lines or timestamps) and are not counted.",
            r.skipped_records
        ));
    }
    if r.ungrouped_sessions > 0 {
        v.push(format!(
            "{} rows were left out of a grouping that reached its cap of {} keys; totals are complete.",
            r.ungrouped_sessions,
            super::embedded::MAX_GROUPS
        ));
    }
    v
}
