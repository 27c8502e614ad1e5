//! The ClickHouse source: runs the report queries of `queries/` (compiled in, so the binary runs
//! exactly the files users run with `clickhouse-client`) and fills the same [`Report`] as the
//! embedded source. The window is bound on the client side: ClickHouse 18.16 has no server-side
//! query parameters, so each file's two window literals become `?` placeholders for
//! `clickhouse::Query::bind`.

use super::model::*;
use super::window::clickhouse_literal;
use crate::sink::target::Target;
use serde::de::DeserializeOwned;
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

/// The answers' format: one JSON object per row, so that rows deserialize into the model's
/// row types by column name (with `output_format_json_quote_64bit_integers = 0`).
const FORMAT: &str = "JSONEachRow";

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
    Ok(format!("{body}\nFORMAT {FORMAT}"))
}

/// One query's answer: one JSON object per row, its keys the query's column names.
struct Answer {
    query: &'static str,
    rows: Vec<serde_json::Value>,
}

impl Answer {
    /// Reads `JSONEachRow` text (64-bit integers unquoted).
    fn parse(query: &'static str, text: &str) -> Result<Answer, ClickHouseReportError> {
        let rows = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|e| shape(query, e)))
            .collect::<Result<_, _>>()?;
        Ok(Answer { query, rows })
    }

    /// Every row as a `T` whose fields are named as the columns.
    fn all<T: DeserializeOwned>(&self) -> Result<Vec<T>, ClickHouseReportError> {
        self.rows.iter().map(|row| self.one(row)).collect()
    }

    /// One row as a `T` (the columns it does not name are left alone).
    fn one<T: DeserializeOwned>(
        &self,
        row: &serde_json::Value,
    ) -> Result<T, ClickHouseReportError> {
        T::deserialize(row).map_err(|e| shape(self.query, e))
    }

    /// One column of a row as a `T`.
    fn column<T: DeserializeOwned>(
        &self,
        row: &serde_json::Value,
        col: &str,
    ) -> Result<T, ClickHouseReportError> {
        let value = row
            .get(col)
            .ok_or_else(|| shape(self.query, format!("no column {col}")))?;
        T::deserialize(value).map_err(|e| shape(self.query, format!("column {col}: {e}")))
    }
}

/// An answer that does not have the shape its query promises.
fn shape(query: &'static str, message: impl std::fmt::Display) -> ClickHouseReportError {
    ClickHouseReportError::Shape {
        query,
        message: message.to_string(),
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
    let client = target
        .client()
        .with_setting("output_format_json_quote_64bit_integers", "0");
    let mut answers = HashMap::new();
    for (name, sql) in QUERIES {
        let template = template(name, sql)?;
        let bytes = rt
            .block_on(async {
                client
                    .query(&template)
                    .bind(since.as_str())
                    .bind(until.as_str())
                    .fetch_bytes(FORMAT)?
                    .collect()
                    .await
            })
            .map_err(|source| ClickHouseReportError::Query {
                url: target.base_url.clone(),
                query: name,
                source,
            })?;
        let text = String::from_utf8_lossy(&bytes);
        answers.insert(name, Answer::parse(name, &text)?);
    }
    fill(window, &answers)
}

fn fill(
    window: Window,
    a: &HashMap<&'static str, Answer>,
) -> Result<Report, ClickHouseReportError> {
    let get = |name: &'static str| a.get(name).ok_or_else(|| shape(name, "not run"));
    let mut r = Report {
        window,
        ..Report::default()
    };
    let t = get("totals")?;
    if let Some(row) = t.rows.first() {
        r.totals = t.one(row)?;
    }
    let t = get("by_day")?;
    for row in &t.rows {
        r.by_day.push(DayRow {
            day: t.column(row, "day")?,
            counts: t.one(row)?,
        });
    }
    // Per end of the connection: its two queries and the column names they carry.
    for (end, (country_query, as_query), countries, systems) in [
        (
            "client",
            ("by_client_country", "by_client_as"),
            &mut r.by_client_country,
            &mut r.by_client_as,
        ),
        (
            "server",
            ("by_server_country", "by_server_as"),
            &mut r.by_server_country,
            &mut r.by_server_as,
        ),
    ] {
        let t = get(country_query)?;
        for row in &t.rows {
            countries.push(CountryRow {
                country: t.column(row, &format!("{end}_country"))?,
                counts: t.one(row)?,
            });
        }
        let t = get(as_query)?;
        for row in &t.rows {
            systems.push(AsRow {
                asn: t.column(row, &format!("{end}_asn"))?,
                as_org: t.column(row, &format!("{end}_as_org"))?,
                counts: t.one(row)?,
            });
        }
    }
    r.verdicts_by_day = get("verdicts_by_day")?.all()?;
    r.findings_by_kind = get("findings_by_kind")?.all()?;
    r.top_servers = get("top_servers")?.all()?;
    r.dns_by_resolver_as = get("dns_injection_by_resolver_as")?.all()?;
    r.tlsrpt_policies = get("tlsrpt_policies")?.all()?;
    r.tlsrpt_failures = get("tlsrpt_failures")?.all()?;
    r.mta_sts_domains = get("mta_sts_domains")?.all()?;
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
            assert!(t.ends_with("FORMAT JSONEachRow"));
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
    fn answers_deserialize_by_column_name_and_say_what_is_missing() {
        let a = Answer::parse(
            "findings_by_kind",
            "{\"kind\":\"a\\tb\",\"sessions\":3,\"servers\":1,\"extra\":0}\n\n",
        )
        .unwrap();
        let rows: Vec<KindRow> = a.all().unwrap();
        assert_eq!(rows[0].kind, "a\tb");
        assert_eq!((rows[0].sessions, rows[0].servers), (3, 1));
        assert_eq!(a.column::<u64>(&a.rows[0], "sessions").unwrap(), 3);
        assert!(a.column::<u64>(&a.rows[0], "nope").is_err());
        let quoted = Answer::parse("x", r#"{"kind":"a","sessions":"3","servers":1}"#).unwrap();
        assert!(
            quoted.all::<KindRow>().is_err(),
            "a quoted 64-bit integer is refused"
        );
        assert!(Answer::parse("x", "not json").is_err());
    }
}
