//! Every table of the report, each defined here and nowhere else: its title, its columns (named
//! as in the CSV file and the query of `queries/`, and headed for people) and its rows, built
//! from a [`Report`]. Each renderer picks the tables it shows; a table changed here changes in
//! every format that has it.

use super::model::*;
use super::table::{Cell, Column, Table};

/// The columns of a [`Counts`], in the order of the queries; people see the counts that make
/// the rates and the rates.
const COUNT_COLUMNS: [Column; 11] = [
    Column::both("sessions", "sessions"),
    Column::both("ehlo_sessions", "EHLO sessions"),
    Column::both("stripped", "stripped"),
    Column::file("downgraded"),
    Column::file("starttls_offered"),
    Column::file("tls_used"),
    Column::file("problem_sessions"),
    Column::both("stripping_rate", "stripping rate"),
    Column::both("downgrade_rate", "downgrade rate"),
    Column::both("offer_rate", "offer rate"),
    Column::both("adoption_rate", "STARTTLS adoption"),
];

/// The cells of [`COUNT_COLUMNS`].
fn count_cells(c: &Counts) -> [Cell; 11] {
    [
        Cell::text(c.sessions),
        Cell::text(c.ehlo_sessions),
        Cell::text(c.stripped),
        Cell::text(c.downgraded),
        Cell::text(c.starttls_offered),
        Cell::text(c.tls_used),
        Cell::text(c.problem_sessions),
        Cell::Rate(c.stripping_rate()),
        Cell::Rate(c.downgrade_rate()),
        Cell::Rate(c.offer_rate()),
        Cell::Rate(c.adoption_rate()),
    ]
}

/// Key columns followed by [`COUNT_COLUMNS`].
fn with_counts(keys: &[Column]) -> Vec<Column> {
    keys.iter().chain(&COUNT_COLUMNS).copied().collect()
}

/// Key cells followed by the cells of the counts.
fn keyed(keys: Vec<Cell>, c: &Counts) -> Vec<Cell> {
    keys.into_iter().chain(count_cells(c)).collect()
}

/// The headline numbers as measure and value (Markdown's summary).
pub fn summary(r: &Report) -> Table {
    let t = &r.totals;
    let row = |measure: &str, value: Cell| vec![Cell::text(measure), value];
    Table {
        title: Some("Summary"),
        columns: vec![Column::people("measure"), Column::people("value")],
        rows: vec![
            row("sessions", Cell::text(t.sessions)),
            row("EHLO sessions", Cell::text(t.ehlo_sessions)),
            row("stripped", Cell::text(t.stripped)),
            row("stripping rate", Cell::Rate(t.stripping_rate())),
            row("downgraded", Cell::text(t.downgraded)),
            row("downgrade rate", Cell::Rate(t.downgrade_rate())),
            row("STARTTLS offered", Cell::Rate(t.offer_rate())),
            row("STARTTLS adoption", Cell::Rate(t.adoption_rate())),
            row("problem sessions", Cell::text(t.problem_sessions)),
        ],
        ..Table::default()
    }
}

/// All sessions in the window, as one row of counts (`totals.csv`).
pub fn totals(r: &Report) -> Table {
    Table {
        file: Some("totals"),
        columns: with_counts(&[]),
        rows: vec![count_cells(&r.totals).to_vec()],
        ..Table::default()
    }
}

/// Counts per UTC day.
pub fn by_day(r: &Report) -> Table {
    Table {
        file: Some("by_day"),
        title: Some("Per day (UTC)"),
        columns: with_counts(&[Column::both("day", "day")]),
        rows: r
            .by_day
            .iter()
            .map(|d| keyed(vec![Cell::text(&d.day)], &d.counts))
            .collect(),
        ..Table::default()
    }
}

/// Counts per country of `key` (`client_country`, `server_country`), largest first.
fn by_country(
    file: &'static str,
    key: &'static str,
    title: &'static str,
    rows: &[CountryRow],
) -> Table {
    Table {
        file: Some(file),
        title: Some(title),
        ranked: true,
        columns: with_counts(&[Column::file(key), Column::people("country")]),
        rows: rows
            .iter()
            .map(|g| {
                let keys = vec![
                    Cell::text(&g.country),
                    Cell::text(country_label(&g.country)),
                ];
                keyed(keys, &g.counts)
            })
            .collect(),
        ..Table::default()
    }
}

/// Counts per client country, largest first.
pub fn by_client_country(r: &Report) -> Table {
    let rows = &r.by_client_country;
    by_country(
        "by_client_country",
        "client_country",
        "By client country",
        rows,
    )
}

/// Counts per server country, largest first.
pub fn by_server_country(r: &Report) -> Table {
    let rows = &r.by_server_country;
    by_country(
        "by_server_country",
        "server_country",
        "By server country",
        rows,
    )
}

/// Counts per AS, largest first; the file has the AS number and name (`asn`, `org`), people
/// see one label.
fn by_as(
    file: &'static str,
    [asn, org]: [&'static str; 2],
    title: &'static str,
    rows: &[AsRow],
) -> Table {
    Table {
        file: Some(file),
        title: Some(title),
        ranked: true,
        columns: with_counts(&[Column::file(asn), Column::file(org), Column::people("AS")]),
        rows: rows
            .iter()
            .map(|g| {
                let keys = vec![
                    Cell::text(g.asn),
                    Cell::text(&g.as_org),
                    Cell::text(as_label(g.asn, &g.as_org)),
                ];
                keyed(keys, &g.counts)
            })
            .collect(),
        ..Table::default()
    }
}

/// Counts per client AS, largest first.
pub fn by_client_as(r: &Report) -> Table {
    let columns = ["client_asn", "client_as_org"];
    by_as("by_client_as", columns, "By client AS", &r.by_client_as)
}

/// Counts per server AS, largest first.
pub fn by_server_as(r: &Report) -> Table {
    let columns = ["server_asn", "server_as_org"];
    by_as("by_server_as", columns, "By server AS", &r.by_server_as)
}

/// The groups with stripped sessions, highest stripping rate first (the terminal's lists).
fn highest_stripping_rate(
    title: &'static str,
    key: &'static str,
    groups: Vec<(String, Counts)>,
) -> Table {
    let mut groups: Vec<(String, Counts)> =
        groups.into_iter().filter(|g| g.1.stripped > 0).collect();
    groups.sort_by(|a, b| {
        b.1.stripping_rate()
            .total_cmp(&a.1.stripping_rate())
            .then(b.1.stripped.cmp(&a.1.stripped))
            .then(a.0.cmp(&b.0))
    });
    Table {
        title: Some(title),
        ranked: true,
        columns: vec![
            Column::people(key),
            Column::people("stripped"),
            Column::people("EHLO sessions"),
            Column::people("stripping rate"),
        ],
        rows: groups
            .into_iter()
            .map(|(k, c)| {
                vec![
                    Cell::Text(k),
                    Cell::text(c.stripped),
                    Cell::text(c.ehlo_sessions),
                    Cell::Rate(c.stripping_rate()),
                ]
            })
            .collect(),
        ..Table::default()
    }
}

/// Client countries with stripped sessions, highest stripping rate first.
pub fn highest_stripping_rate_by_client_country(r: &Report) -> Table {
    let groups = r.by_client_country.iter();
    highest_stripping_rate(
        "Highest stripping rate, client countries",
        "country",
        groups
            .map(|g| (country_label(&g.country), g.counts))
            .collect(),
    )
}

/// Server ASes with stripped sessions, highest stripping rate first.
pub fn highest_stripping_rate_by_server_as(r: &Report) -> Table {
    let groups = r.by_server_as.iter();
    highest_stripping_rate(
        "Highest stripping rate, server ASes",
        "AS",
        groups
            .map(|g| (as_label(g.asn, &g.as_org), g.counts))
            .collect(),
    )
}

/// Sessions per day and verdict (`verdicts_by_day.csv`).
pub fn verdicts_by_day(r: &Report) -> Table {
    Table {
        file: Some("verdicts_by_day"),
        columns: vec![
            Column::file("day"),
            Column::file("verdict"),
            Column::file("sessions"),
        ],
        rows: r
            .verdicts_by_day
            .iter()
            .map(|v| {
                vec![
                    Cell::text(&v.day),
                    Cell::text(&v.verdict),
                    Cell::text(v.sessions),
                ]
            })
            .collect(),
        ..Table::default()
    }
}

/// Sessions per verdict over the whole window, most frequent first.
pub fn verdict_totals(r: &Report) -> Table {
    Table {
        title: Some("Sessions by verdict"),
        columns: vec![Column::people("verdict"), Column::people("sessions")],
        rows: r
            .verdict_totals()
            .into_iter()
            .map(|(v, n)| vec![Cell::code(v), Cell::text(n)])
            .collect(),
        ..Table::default()
    }
}

/// Sessions and distinct servers per finding kind, most severe first; certificate problems
/// are marked.
pub fn findings_by_kind(r: &Report) -> Table {
    Table {
        file: Some("findings_by_kind"),
        title: Some("Finding kinds"),
        note: Some("Certificate problems are marked with *."),
        columns: vec![
            Column::both("kind", "kind"),
            Column::both("sessions", "sessions"),
            Column::both("servers", "servers"),
        ],
        rows: r
            .findings_by_kind
            .iter()
            .map(|k| {
                let kind = Cell::Code {
                    text: k.kind.clone(),
                    marked: is_certificate_problem(&k.kind),
                };
                vec![kind, Cell::text(k.sessions), Cell::text(k.servers)]
            })
            .collect(),
        ..Table::default()
    }
}

/// The certificate problems among the finding kinds (the terminal's list; HTML draws them).
pub fn certificate_problems(r: &Report) -> Table {
    Table {
        title: Some("Certificate problems (sessions, servers)"),
        columns: vec![
            Column::people("kind"),
            Column::people("sessions"),
            Column::people("servers"),
        ],
        rows: r
            .certificate_problems()
            .into_iter()
            .map(|k| {
                vec![
                    Cell::code(&k.kind),
                    Cell::text(k.sessions),
                    Cell::text(k.servers),
                ]
            })
            .collect(),
        ..Table::default()
    }
}

/// The servers with most problem sessions.
pub fn top_servers(r: &Report) -> Table {
    Table {
        file: Some("top_servers"),
        title: Some("Servers with most problem sessions"),
        ranked: true,
        columns: vec![
            Column::both("server_ip", "server"),
            Column::file("server_country"),
            Column::people("country"),
            Column::file("server_asn"),
            Column::file("server_as_org"),
            Column::people("AS"),
            Column::both("sessions", "sessions"),
            Column::both("problem_sessions", "problem sessions"),
        ],
        rows: r
            .top_servers
            .iter()
            .map(|s| {
                vec![
                    Cell::text(&s.server_ip),
                    Cell::text(&s.server_country),
                    Cell::text(country_label(&s.server_country)),
                    Cell::text(s.server_asn),
                    Cell::text(&s.server_as_org),
                    Cell::text(as_label(s.server_asn, &s.server_as_org)),
                    Cell::text(s.sessions),
                    Cell::text(s.problem_sessions),
                ]
            })
            .collect(),
        ..Table::default()
    }
}

/// The server ASes with most problem sessions.
pub fn top_server_ases(r: &Report) -> Table {
    Table {
        title: Some("Server ASes with most problem sessions"),
        ranked: true,
        columns: vec![
            Column::people("AS"),
            Column::people("sessions"),
            Column::people("problem sessions"),
            Column::people("stripping rate"),
        ],
        rows: r
            .top_server_ases()
            .into_iter()
            .map(|a| {
                vec![
                    Cell::text(as_label(a.asn, &a.as_org)),
                    Cell::text(a.counts.sessions),
                    Cell::text(a.counts.problem_sessions),
                    Cell::Rate(a.counts.stripping_rate()),
                ]
            })
            .collect(),
        ..Table::default()
    }
}

/// DNS transactions and injections per resolver AS.
pub fn dns_injection_by_resolver_as(r: &Report) -> Table {
    Table {
        file: Some("dns_injection_by_resolver_as"),
        title: Some("DNS injection by resolver AS"),
        columns: vec![
            Column::file("server_asn"),
            Column::file("server_as_org"),
            Column::people("resolver AS"),
            Column::both("transactions", "DNS transactions"),
            Column::both("injected", "injected"),
            Column::both("injection_rate", "injection rate"),
        ],
        rows: r
            .dns_by_resolver_as
            .iter()
            .map(|d| {
                vec![
                    Cell::text(d.asn),
                    Cell::text(&d.as_org),
                    Cell::text(as_label(d.asn, &d.as_org)),
                    Cell::text(d.transactions),
                    Cell::text(d.injected),
                    Cell::Rate(d.injection_rate()),
                ]
            })
            .collect(),
        ..Table::default()
    }
}

/// The TLS-RPT policies (recipient domain and MX host) with their session counts.
pub fn tlsrpt_policies(r: &Report) -> Table {
    Table {
        file: Some("tlsrpt_policies"),
        title: Some("TLS-RPT (RFC 8460) per recipient domain"),
        columns: vec![
            Column::both("policy_domain", "policy domain"),
            Column::both("mx_host", "MX host"),
            Column::both("policy_type", "policy type"),
            Column::both("successful", "successful"),
            Column::both("failed", "failed"),
        ],
        rows: r
            .tlsrpt_policies
            .iter()
            .map(|p| {
                vec![
                    Cell::text(&p.policy_domain),
                    Cell::text(&p.mx_host),
                    Cell::code(&p.policy_type),
                    Cell::text(p.successful),
                    Cell::text(p.failed),
                ]
            })
            .collect(),
        ..Table::default()
    }
}

/// The recipient domains with MTA-STS evidence: where a policy was published, fetched, blocked
/// or ignored.
pub fn mta_sts_domains(r: &Report) -> Table {
    Table {
        file: Some("mta_sts_domains"),
        title: Some("MTA-STS domains"),
        columns: vec![
            Column::both("recipient_domain", "recipient domain"),
            Column::both("sessions", "sessions"),
            Column::both("sts_seen", "STS seen"),
            Column::both("fetch_ok", "fetch OK"),
            Column::both("fetch_blocked", "fetch blocked"),
            Column::both("plaintext", "plaintext"),
        ],
        rows: r
            .mta_sts_domains
            .iter()
            .map(|d| {
                vec![
                    Cell::text(&d.recipient_domain),
                    Cell::text(d.sessions),
                    Cell::text(d.sts_seen),
                    Cell::text(d.fetch_ok),
                    Cell::text(d.fetch_blocked),
                    Cell::text(d.plaintext),
                ]
            })
            .collect(),
        ..Table::default()
    }
}

/// The TLS-RPT failure details (`tlsrpt_failures.csv`).
pub fn tlsrpt_failures(r: &Report) -> Table {
    Table {
        file: Some("tlsrpt_failures"),
        columns: vec![
            Column::file("policy_domain"),
            Column::file("mx_host"),
            Column::file("result_type"),
            Column::file("failure_reason_code"),
            Column::file("sending_mta_ip"),
            Column::file("receiving_ip"),
            Column::file("failed_session_count"),
        ],
        rows: r
            .tlsrpt_failures
            .iter()
            .map(|f| {
                vec![
                    Cell::text(&f.policy_domain),
                    Cell::text(&f.mx_host),
                    Cell::text(&f.result_type),
                    Cell::text(&f.failure_reason_code),
                    Cell::text(&f.sending_mta_ip),
                    Cell::text(&f.receiving_ip),
                    Cell::text(f.failed_session_count),
                ]
            })
            .collect(),
        ..Table::default()
    }
}

/// The tables with a CSV file, in the order the files are written.
pub fn with_files(r: &Report) -> Vec<Table> {
    vec![
        totals(r),
        by_day(r),
        by_client_country(r),
        by_server_country(r),
        by_client_as(r),
        by_server_as(r),
        verdicts_by_day(r),
        findings_by_kind(r),
        top_servers(r),
        dns_injection_by_resolver_as(r),
        tlsrpt_policies(r),
        tlsrpt_failures(r),
        mta_sts_domains(r),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(ehlo: u64, stripped: u64) -> Counts {
        Counts {
            sessions: ehlo + 1,
            ehlo_sessions: ehlo,
            stripped,
            problem_sessions: stripped,
            ..Counts::default()
        }
    }

    fn report() -> Report {
        let country = |c: &str, n| CountryRow {
            country: c.to_string(),
            counts: counts(n, 1),
        };
        Report {
            totals: counts(60, 30),
            by_day: vec![DayRow {
                day: "2026-03-02".to_string(),
                counts: counts(60, 30),
            }],
            by_client_country: (0..30).map(|i| country(&format!("C{i}"), 60 - i)).collect(),
            by_server_as: vec![AsRow {
                asn: 0,
                as_org: String::new(),
                counts: counts(2, 1),
            }],
            findings_by_kind: vec![KindRow {
                kind: "certificate-expired".to_string(),
                sessions: 1,
                servers: 1,
            }],
            ..Report::default()
        }
    }

    #[test]
    fn every_row_has_a_cell_per_column_and_files_have_the_query_columns() {
        let r = report();
        let mut all = with_files(&r);
        all.extend([
            summary(&r),
            verdict_totals(&r),
            certificate_problems(&r),
            top_server_ases(&r),
            highest_stripping_rate_by_client_country(&r),
            highest_stripping_rate_by_server_as(&r),
        ]);
        for t in &all {
            for row in &t.rows {
                assert_eq!(row.len(), t.columns.len(), "{:?}", t.file.or(t.title));
            }
        }
        let files: Vec<&str> = with_files(&r).iter().filter_map(|t| t.file).collect();
        let queries: Vec<&str> = crate::report::clickhouse::QUERIES
            .iter()
            .map(|(name, _)| *name)
            .collect();
        assert_eq!(files, queries, "one CSV file per query, in the same order");
        let view = by_client_as(&r).for_file().header;
        assert_eq!(view[..3], ["client_asn", "client_as_org", "sessions"]);
        assert_eq!(view.len(), 13);
    }

    #[test]
    fn people_see_labels_percentages_and_the_first_rows_of_ranked_tables() {
        let r = report();
        let t = by_client_country(&r);
        assert_eq!(t.for_file().rows.len(), 30);
        let people = t.for_people(25);
        assert_eq!(people.rows.len(), 25);
        assert_eq!(
            people.header,
            [
                "country",
                "sessions",
                "EHLO sessions",
                "stripped",
                "stripping rate",
                "downgrade rate",
                "offer rate",
                "STARTTLS adoption"
            ]
        );
        let servers = by_server_as(&r);
        let row = &servers.for_people(25).rows[0];
        assert_eq!(row[0].for_people(), "unknown");
        assert_eq!(row[4].for_people(), "50.00%");
        assert_eq!(servers.for_file().rows[0][0].for_file(), "0");
        assert_eq!(servers.for_file().rows[0][9].for_file(), "0.500000");
        let kinds = findings_by_kind(&r);
        assert!(matches!(kinds.rows[0][0], Cell::Code { marked: true, .. }));
        assert_eq!(
            by_day(&r).for_people(0).rows.len(),
            1,
            "not ranked: every row"
        );
    }
}
