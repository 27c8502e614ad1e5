//! The ClickHouse source: runs the report queries of `queries/` (compiled in, so the binary runs
//! exactly the files users run with `clickhouse-client`) and fills the same [`Report`] as the
//! embedded source. The window is bound on the client side: ClickHouse 18.16 has no server-side
//! query parameters, so each file's two window literals become `?` placeholders for
//! `clickhouse::Query::bind`.

use super::model::*;
use super::window::clickhouse_literal;
use crate::sink::target::Target;
use std::collections::HashMap;

/// Why the ClickHouse source failed.
#[derive(Debug, thiserror::Error)]
pub enum ClickHouseReportError {
    /// The async runtime could not start.
    #[error("cannot start the ClickHouse client runtime: {0}")]
    Runtime(std::io::Error),
    /// A query failed (unreachable server, bad credentials, no schema ...).
    #[error("ClickHouse at {url}: query {query}: {source}")]
    Query {
        /// The server.
        url: String,
        /// The query file's name.
        query: &'static str,
        /// The client's error.
        source: clickhouse::error::Error,
    },
    /// A query's answer did not have the expected shape.
    #[error("ClickHouse query {query}: {message}")]
    Shape {
        /// The query file's name.
        query: &'static str,
        /// What was wrong.
        message: String,
    },
}

/// The report queries: name (also the CSV file's stem) and text.
pub const QUERIES: [(&str, &str); 13] = [
    ("totals", include_str!("../../queries/totals.sql")),
    ("by_day", include_str!("../../queries/by_day.sql")),
    (
        "by_client_country",
        include_str!("../../queries/by_client_country.sql"),
    ),
    (
        "by_server_country",
        include_str!("../../queries/by_server_country.sql"),
    ),
    (
        "by_client_as",
        include_str!("../../queries/by_client_as.sql"),
    ),
    (
        "by_server_as",
        include_str!("../../queries/by_server_as.sql"),
    ),
    (
        "verdicts_by_day",
        include_str!("../../queries/verdicts_by_day.sql"),
    ),
    (
        "findings_by_kind",
        include_str!("../../queries/findings_by_kind.sql"),
    ),
    ("top_servers", include_str!("../../queries/top_servers.sql")),
    (
        "dns_injection_by_resolver_as",
        include_str!("../../queries/dns_injection_by_resolver_as.sql"),
    ),
    (
        "tlsrpt_policies",
        include_str!("../../queries/tlsrpt_policies.sql"),
    ),
    (
        "tlsrpt_failures",
        include_str!("../../queries/tlsrpt_failures.sql"),
    ),
    (
        "mta_sts_domains",
        include_str!("../../queries/mta_sts_domains.sql"),
    ),
];

/// The literal each query file uses for the window's start (the epoch: everything).
pub const SINCE_LITERAL: &str = "'1970-01-01 00:00:00'";
/// The literal each query file uses for the window's end (the end of DateTime's range).
pub const UNTIL_LITERAL: &str = "'2105-12-31 23:59:59'";

/// Turns a query file into a template with two `?` placeholders (since, until) and the output
/// format. Fails when the file does not have exactly one of each literal, or has another `?`.
pub fn template(name: &'static str, sql: &str) -> Result<String, ClickHouseReportError> {
    let shape = |message: String| ClickHouseReportError::Shape {
        query: name,
        message,
    };
    if sql.contains('?') {
        return Err(shape("a query file must not contain '?'".into()));
    }
    for lit in [SINCE_LITERAL, UNTIL_LITERAL] {
        if sql.matches(lit).count() != 1 {
            return Err(shape(format!("needs exactly one {lit} window literal")));
        }
    }
    let body = sql.replace(SINCE_LITERAL, "?").replace(UNTIL_LITERAL, "?");
    let body = body.trim_end().trim_end_matches(';');
    Ok(format!("{body}\nFORMAT TabSeparatedWithNames"))
}

/// Reverses ClickHouse's TabSeparated escaping.
fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_string();
    }
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// One query's answer: rows of named fields.
struct Rows {
    query: &'static str,
    columns: HashMap<String, usize>,
    rows: Vec<Vec<String>>,
}

impl Rows {
    fn parse(query: &'static str, text: &str) -> Result<Rows, ClickHouseReportError> {
        let mut lines = text.lines();
        let header = lines.next().ok_or_else(|| ClickHouseReportError::Shape {
            query,
            message: "no header line".into(),
        })?;
        let columns: HashMap<String, usize> = header
            .split('\t')
            .enumerate()
            .map(|(i, c)| (unescape(c), i))
            .collect();
        let rows = lines
            .filter(|l| !l.is_empty())
            .map(|l| l.split('\t').map(unescape).collect())
            .collect();
        Ok(Rows {
            query,
            columns,
            rows,
        })
    }

    fn str(&self, row: &[String], col: &str) -> Result<String, ClickHouseReportError> {
        self.columns
            .get(col)
            .and_then(|&i| row.get(i))
            .cloned()
            .ok_or_else(|| ClickHouseReportError::Shape {
                query: self.query,
                message: format!("no column {col}"),
            })
    }

    fn num<T: std::str::FromStr>(
        &self,
        row: &[String],
        col: &str,
    ) -> Result<T, ClickHouseReportError> {
        let s = self.str(row, col)?;
        s.parse().map_err(|_| ClickHouseReportError::Shape {
            query: self.query,
            message: format!("column {col}: {s:?} is not a number"),
        })
    }

    fn counts(&self, row: &[String]) -> Result<Counts, ClickHouseReportError> {
        Ok(Counts {
            sessions: self.num(row, "sessions")?,
            ehlo_sessions: self.num(row, "ehlo_sessions")?,
            stripped: self.num(row, "stripped")?,
            downgraded: self.num(row, "downgraded")?,
            starttls_offered: self.num(row, "starttls_offered")?,
            tls_used: self.num(row, "tls_used")?,
            problem_sessions: self.num(row, "problem_sessions")?,
        })
    }
}

/// Runs every report query over `window` and fills a report.
pub fn load(target: &Target, window: Window) -> Result<Report, ClickHouseReportError> {
    let since = clickhouse_literal(window.since.unwrap_or(0));
    let until = window
        .until
        .map(clickhouse_literal)
        .unwrap_or_else(|| UNTIL_LITERAL.trim_matches('\'').to_string());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClickHouseReportError::Runtime)?;
    let client = target.client();
    let mut answers = HashMap::new();
    for (name, sql) in QUERIES {
        let template = template(name, sql)?;
        let bytes = rt
            .block_on(async {
                client
                    .query(&template)
                    .bind(since.as_str())
                    .bind(until.as_str())
                    .fetch_bytes("TabSeparatedWithNames")?
                    .collect()
                    .await
            })
            .map_err(|source| ClickHouseReportError::Query {
                url: target.base_url.clone(),
                query: name,
                source,
            })?;
        let text = String::from_utf8_lossy(&bytes);
        answers.insert(name, Rows::parse(name, &text)?);
    }
    fill(window, &answers)
}

fn fill(window: Window, a: &HashMap<&'static str, Rows>) -> Result<Report, ClickHouseReportError> {
    let get = |name: &'static str| {
        a.get(name).ok_or(ClickHouseReportError::Shape {
            query: name,
            message: "not run".into(),
        })
    };
    let mut r = Report {
        window,
        ..Report::default()
    };
    let t = get("totals")?;
    if let Some(row) = t.rows.first() {
        r.totals = t.counts(row)?;
    }
    let t = get("by_day")?;
    for row in &t.rows {
        r.by_day.push(DayRow {
            day: t.str(row, "day")?,
            counts: t.counts(row)?,
        });
    }
    for (name, key, out) in [
        (
            "by_client_country",
            "client_country",
            &mut r.by_client_country,
        ),
        (
            "by_server_country",
            "server_country",
            &mut r.by_server_country,
        ),
    ] {
        let t = get(name)?;
        for row in &t.rows {
            out.push(CountryRow {
                country: t.str(row, key)?,
                counts: t.counts(row)?,
            });
        }
    }
    for (name, end, out) in [
        ("by_client_as", "client", &mut r.by_client_as),
        ("by_server_as", "server", &mut r.by_server_as),
    ] {
        let t = get(name)?;
        for row in &t.rows {
            out.push(AsRow {
                asn: t.num(row, &format!("{end}_asn"))?,
                as_org: t.str(row, &format!("{end}_as_org"))?,
                counts: t.counts(row)?,
            });
        }
    }
    let t = get("verdicts_by_day")?;
    for row in &t.rows {
        r.verdicts_by_day.push(VerdictDayRow {
            day: t.str(row, "day")?,
            verdict: t.str(row, "verdict")?,
            sessions: t.num(row, "sessions")?,
        });
    }
    let t = get("findings_by_kind")?;
    for row in &t.rows {
        r.findings_by_kind.push(KindRow {
            kind: t.str(row, "kind")?,
            sessions: t.num(row, "sessions")?,
            servers: t.num(row, "servers")?,
        });
    }
    let t = get("top_servers")?;
    for row in &t.rows {
        r.top_servers.push(ServerRow {
            server_ip: t.str(row, "server_ip")?,
            server_country: t.str(row, "server_country")?,
            server_asn: t.num(row, "server_asn")?,
            server_as_org: t.str(row, "server_as_org")?,
            sessions: t.num(row, "sessions")?,
            problem_sessions: t.num(row, "problem_sessions")?,
        });
    }
    let t = get("dns_injection_by_resolver_as")?;
    for row in &t.rows {
        r.dns_by_resolver_as.push(DnsAsRow {
            asn: t.num(row, "server_asn")?,
            as_org: t.str(row, "server_as_org")?,
            transactions: t.num(row, "transactions")?,
            injected: t.num(row, "injected")?,
        });
    }
    let t = get("tlsrpt_policies")?;
    for row in &t.rows {
        r.tlsrpt_policies.push(PolicyRow {
            policy_domain: t.str(row, "policy_domain")?,
            mx_host: t.str(row, "mx_host")?,
            policy_type: t.str(row, "policy_type")?,
            successful: t.num(row, "successful")?,
            failed: t.num(row, "failed")?,
        });
    }
    let t = get("tlsrpt_failures")?;
    for row in &t.rows {
        r.tlsrpt_failures.push(FailureRow {
            policy_domain: t.str(row, "policy_domain")?,
            mx_host: t.str(row, "mx_host")?,
            result_type: t.str(row, "result_type")?,
            failure_reason_code: t.str(row, "failure_reason_code")?,
            sending_mta_ip: t.str(row, "sending_mta_ip")?,
            receiving_ip: t.str(row, "receiving_ip")?,
            failed_session_count: t.num(row, "failed_session_count")?,
        });
    }
    let t = get("mta_sts_domains")?;
    for row in &t.rows {
        r.mta_sts_domains.push(StsDomainRow {
            recipient_domain: t.str(row, "recipient_domain")?,
            sessions: t.num(row, "sessions")?,
            sts_seen: t.num(row, "sts_seen")?,
            fetch_ok: t.num(row, "fetch_ok")?,
            fetch_blocked: t.num(row, "fetch_blocked")?,
            plaintext: t.num(row, "plaintext")?,
        });
    }
    r.normalize();
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_file_is_a_valid_template() {
        for (name, sql) in QUERIES {
            let t = template(name, sql).unwrap();
            assert_eq!(t.matches('?').count(), 2, "{name}");
            assert!(t.ends_with("FORMAT TabSeparatedWithNames"));
        }
        assert!(template("x", "SELECT 1").is_err());
    }

    #[test]
    fn the_sql_restates_the_model() {
        // The kind lists in the SQL are the model's (a drift would show in the two-source test
        // too, but only for kinds the test capture has).
        let quoted = |xs: &[&str]| -> Vec<String> { xs.iter().map(|x| format!("'{x}'")).collect() };
        let totals = QUERIES[0].1;
        for k in quoted(&DOWNGRADE_KINDS)
            .iter()
            .chain(&quoted(&STRIPPED_KINDS))
            .chain(&quoted(&NON_PROBLEM_VERDICTS))
        {
            assert!(totals.contains(k.as_str()), "totals.sql lacks {k}");
        }
        let failures = QUERIES[11].1;
        let kinds: Vec<&str> = TLSRPT_RESULT_TYPES.iter().map(|(k, _)| *k).collect();
        let types: Vec<&str> = TLSRPT_RESULT_TYPES.iter().map(|(_, t)| *t).collect();
        let flat: String = failures.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(flat.contains(&format!("[{}]", quoted(&kinds).join(", "))));
        assert!(flat.contains(&format!("[{}]", quoted(&types).join(", "))));
        let sts = QUERIES[12].1;
        for k in quoted(&STS_DOMAIN_KINDS) {
            assert!(sts.contains(k.as_str()), "mta_sts_domains.sql lacks {k}");
        }
    }

    #[test]
    fn tab_separated_escapes() {
        assert_eq!(unescape(r"a\tb\\c\nd"), "a\tb\\c\nd");
        let rows = Rows::parse("t", "a\tb\n1\tx\\ty\n").unwrap();
        assert_eq!(rows.str(&rows.rows[0], "b").unwrap(), "x\ty");
        assert_eq!(rows.num::<u64>(&rows.rows[0], "a").unwrap(), 1);
        assert!(rows.str(&rows.rows[0], "c").is_err());
    }
}
