//! `report.md`: the tables and the definitions, for papers and issue trackers.

use super::html::{notes, period};
use super::model::*;
use super::table::{Cell, Table};
use super::tables;
use std::fmt::Write as _;

/// Rows per ranked table (the CSV files have them all).
const ROWS: usize = 25;

/// A cell as Markdown: words of the data's vocabulary as code, marked rows with `*`, and
/// escaped (pipes would split the cell).
fn cell(c: &Cell) -> String {
    let text = match c {
        Cell::Code { text, marked } => format!("`{text}`{}", if *marked { " *" } else { "" }),
        _ => c.for_people(),
    };
    text.replace('|', "\\|").replace('\n', " ")
}

/// A table under its title, with the note about its marked rows.
fn table(out: &mut String, t: &Table) {
    if let Some(title) = t.title {
        let _ = writeln!(out, "## {title}\n");
    }
    if let Some(note) = t.note {
        let _ = writeln!(out, "{note}\n");
    }
    let view = t.for_people(ROWS);
    let _ = writeln!(out, "| {} |", view.header.join(" | "));
    let align: Vec<&str> = (0..view.header.len())
        .map(|i| if i == 0 { "---" } else { "---:" })
        .collect();
    let _ = writeln!(out, "| {} |", align.join(" | "));
    for r in &view.rows {
        let cells: Vec<String> = r.iter().map(|c| cell(c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    if view.rows.is_empty() {
        let _ = writeln!(out, "| none |{}", " |".repeat(view.header.len() - 1));
    }
    out.push('\n');
}

/// Renders the report.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# stripwatch report\n\n{}.\n", period(r));
    for n in notes(r) {
        let _ = writeln!(o, "> **Note:** {n}\n");
    }
    for t in [
        tables::summary(r),
        tables::by_client_country(r),
        tables::by_server_country(r),
        tables::by_client_as(r),
        tables::by_server_as(r),
        tables::by_day(r),
        tables::verdict_totals(r),
        tables::findings_by_kind(r),
        tables::top_servers(r),
        tables::top_server_ases(r),
        tables::dns_injection_by_resolver_as(r),
        tables::tlsrpt_policies(r),
        tables::mta_sts_domains(r),
    ] {
        table(&mut o, &t);
    }
    o.push_str("## Definitions\n\n");
    o.push_str(DEFINITIONS);
    o
}
