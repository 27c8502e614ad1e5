//! The ClickHouse schema (`queries/schema.sql`, compiled in so the binary and the file can never
//! disagree) and `stripwatch schema apply`, which creates the database and every object in it.
//! Every statement says IF NOT EXISTS, so applying again is harmless.

use crate::sink::target::Target;
use thiserror::Error;

/// The schema file, verbatim.
pub const SCHEMA_SQL: &str = include_str!("../queries/schema.sql");

/// How long one statement may take (a server that hangs must not hang the command).
const STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Applying the schema failed.
#[derive(Debug, Error)]
pub enum SchemaError {
    /// The async runtime could not start.
    #[error("cannot start the ClickHouse client runtime: {0}")]
    Runtime(std::io::Error),
    /// A statement failed (unreachable server, bad credentials, a server too old ...).
    #[error("ClickHouse at {url}: {what}: {reason}")]
    Statement {
        /// The server.
        url: String,
        /// Which statement (its first line).
        what: String,
        /// The client's error and its causes.
        reason: String,
    },
}

/// Splits SQL text into statements: `;` ends a statement unless it is inside a quoted string,
/// a quoted identifier or a comment; `--` comments are dropped. Empty statements are skipped.
pub fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            cur.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' | '`' => {
                quote = Some(c);
                cur.push(c);
            }
            '-' if chars.peek() == Some(&'-') => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        cur.push('\n');
                        break;
                    }
                }
            }
            ';' => {
                let s = cur.trim();
                if !s.is_empty() {
                    out.push(s.to_string());
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    let s = cur.trim();
    if !s.is_empty() {
        out.push(s.to_string());
    }
    out
}

/// A short name for a statement in messages: its first line.
fn describe(stmt: &str) -> String {
    stmt.lines().next().unwrap_or("").trim().to_string()
}

/// Creates the database of `target` and every table and view of the schema in it. Returns the
/// number of statements run (the `CREATE DATABASE` included).
pub fn apply(target: &Target) -> Result<usize, SchemaError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SchemaError::Runtime)?;
    rt.block_on(async {
        let err = |what: String| {
            let url = target.base_url.clone();
            move |e: clickhouse::error::Error| SchemaError::Statement {
                url,
                what,
                reason: crate::sink::target::error_chain(&e),
            }
        };
        let run = |client: clickhouse::Client, stmt: String| async move {
            match tokio::time::timeout(STATEMENT_TIMEOUT, client.query_raw(&stmt).execute()).await {
                Ok(result) => result.map_err(err(describe(&stmt))),
                Err(_) => Err(SchemaError::Statement {
                    url: target.base_url.clone(),
                    what: describe(&stmt),
                    reason: format!("no answer within {} s", STATEMENT_TIMEOUT.as_secs()),
                }),
            }
        };
        let create_db = format!("CREATE DATABASE IF NOT EXISTS {}", target.database);
        run(target.server_client(), create_db).await?;
        let stmts = statements(SCHEMA_SQL);
        for stmt in &stmts {
            run(target.client(), stmt.clone()).await?;
        }
        Ok(stmts.len() + 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_semicolons_outside_quotes_and_comments() {
        let s = statements("-- a; comment\nSELECT 'x;y'; SELECT `a;b` -- c;\n;;SELECT 3");
        assert_eq!(s, vec!["SELECT 'x;y'", "SELECT `a;b`", "SELECT 3"]);
    }

    #[test]
    fn schema_has_every_table_and_view() {
        let stmts = statements(SCHEMA_SQL);
        for name in [
            "sessions",
            "findings",
            "dns",
            "certificates",
            "sessions_daily",
            "findings_daily",
            "dns_daily",
        ] {
            let create = format!("CREATE TABLE IF NOT EXISTS {name}\n");
            assert!(
                stmts.iter().any(|s| s.starts_with(&create)),
                "no table {name}"
            );
        }
        assert_eq!(
            stmts
                .iter()
                .filter(|s| s.starts_with("CREATE MATERIALIZED VIEW IF NOT EXISTS"))
                .count(),
            3
        );
        assert!(stmts.iter().all(|s| s.contains("IF NOT EXISTS")));
    }
}
