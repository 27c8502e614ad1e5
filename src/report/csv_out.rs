//! `csv/*.csv`: every table of the report in full, one file per table, named and laid out like
//! the query of the same name in `queries/` (same columns, same order of rows).

use super::ReportError;
use super::model::*;
use std::path::{Path, PathBuf};

/// One table: file stem, column names, rows.
pub struct Table {
    /// File stem (and query name).
    pub name: &'static str,
    /// Column names.
    pub header: Vec<&'static str>,
    /// Rows of cells.
    pub rows: Vec<Vec<String>>,
}

fn with_counts(keys: &[&'static str]) -> Vec<&'static str> {
    let mut h = keys.to_vec();
    h.extend(Counts::HEADER);
    h
}

fn keyed(key: Vec<String>, c: &Counts) -> Vec<String> {
    let mut v = key;
    v.extend(c.fields());
    v
}

/// Every table of a report.
pub fn tables(r: &Report) -> Vec<Table> {
    let country = |rows: &[CountryRow]| -> Vec<Vec<String>> {
        rows.iter()
            .map(|g| keyed(vec![g.country.clone()], &g.counts))
            .collect()
    };
    let asn = |rows: &[AsRow]| -> Vec<Vec<String>> {
        rows.iter()
            .map(|g| keyed(vec![g.asn.to_string(), g.as_org.clone()], &g.counts))
            .collect()
    };
    vec![
        Table {
            name: "totals",
            header: with_counts(&[]),
            rows: vec![r.totals.fields()],
        },
        Table {
            name: "by_day",
            header: with_counts(&["day"]),
            rows: r
                .by_day
                .iter()
                .map(|d| keyed(vec![d.day.clone()], &d.counts))
                .collect(),
        },
        Table {
            name: "by_client_country",
            header: with_counts(&["client_country"]),
            rows: country(&r.by_client_country),
        },
        Table {
            name: "by_server_country",
            header: with_counts(&["server_country"]),
            rows: country(&r.by_server_country),
        },
        Table {
            name: "by_client_as",
            header: with_counts(&["client_asn", "client_as_org"]),
            rows: asn(&r.by_client_as),
        },
        Table {
            name: "by_server_as",
            header: with_counts(&["server_asn", "server_as_org"]),
            rows: asn(&r.by_server_as),
        },
        Table {
            name: "verdicts_by_day",
            header: vec!["day", "verdict", "sessions"],
            rows: r
                .verdicts_by_day
                .iter()
                .map(|v| vec![v.day.clone(), v.verdict.clone(), v.sessions.to_string()])
                .collect(),
        },
        Table {
            name: "findings_by_kind",
            header: vec!["kind", "sessions", "servers"],
            rows: r
                .findings_by_kind
                .iter()
                .map(|k| {
                    vec![
                        k.kind.clone(),
                        k.sessions.to_string(),
                        k.servers.to_string(),
                    ]
                })
                .collect(),
        },
        Table {
            name: "top_servers",
            header: vec![
                "server_ip",
                "server_country",
                "server_asn",
                "server_as_org",
                "sessions",
                "problem_sessions",
            ],
            rows: r
                .top_servers
                .iter()
                .map(|s| {
                    vec![
                        s.server_ip.clone(),
                        s.server_country.clone(),
                        s.server_asn.to_string(),
                        s.server_as_org.clone(),
                        s.sessions.to_string(),
                        s.problem_sessions.to_string(),
                    ]
                })
                .collect(),
        },
        Table {
            name: "dns_injection_by_resolver_as",
            header: vec![
                "server_asn",
                "server_as_org",
                "transactions",
                "injected",
                "injection_rate",
            ],
            rows: r
                .dns_by_resolver_as
                .iter()
                .map(|d| {
                    vec![
                        d.asn.to_string(),
                        d.as_org.clone(),
                        d.transactions.to_string(),
                        d.injected.to_string(),
                        fmt_rate(d.injection_rate()),
                    ]
                })
                .collect(),
        },
        Table {
            name: "tlsrpt_policies",
            header: vec![
                "policy_domain",
                "mx_host",
                "policy_type",
                "successful",
                "failed",
            ],
            rows: r
                .tlsrpt_policies
                .iter()
                .map(|p| {
                    vec![
                        p.policy_domain.clone(),
                        p.mx_host.clone(),
                        p.policy_type.clone(),
                        p.successful.to_string(),
                        p.failed.to_string(),
                    ]
                })
                .collect(),
        },
        Table {
            name: "tlsrpt_failures",
            header: vec![
                "policy_domain",
                "mx_host",
                "result_type",
                "failure_reason_code",
                "sending_mta_ip",
                "receiving_ip",
                "failed_session_count",
            ],
            rows: r
                .tlsrpt_failures
                .iter()
                .map(|f| {
                    vec![
                        f.policy_domain.clone(),
                        f.mx_host.clone(),
                        f.result_type.clone(),
                        f.failure_reason_code.clone(),
                        f.sending_mta_ip.clone(),
                        f.receiving_ip.clone(),
                        f.failed_session_count.to_string(),
                    ]
                })
                .collect(),
        },
    ]
}

/// Writes every table to `dir/<name>.csv`.
pub fn write(r: &Report, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|e| ReportError::io("cannot create", dir, e))?;
    let mut written = Vec::new();
    for t in tables(r) {
        let path = dir.join(format!("{}.csv", t.name));
        let csv_err = |source| ReportError::Csv {
            path: path.clone(),
            source,
        };
        let mut w = csv::Writer::from_path(&path).map_err(csv_err)?;
        w.write_record(&t.header).map_err(csv_err)?;
        for row in &t.rows {
            w.write_record(row).map_err(csv_err)?;
        }
        w.flush()
            .map_err(|e| ReportError::io("cannot write", &path, e))?;
        written.push(path);
    }
    Ok(written)
}
