//! The ClickHouse schema (`queries/schema.sql`, compiled in so the binary and the file can never
//! disagree) and `stripwatch schema apply`, which creates the database and every object in it,
//! on one server or, derived from the same file ([`cluster`]), on every node of a cluster.
//! Every statement says IF NOT EXISTS, so applying again is harmless.

pub mod cluster;

use crate::sink::target::Target;
use thiserror::Error;

/// The schema file, verbatim.
pub const SCHEMA_SQL: &str = include_str!("../../queries/schema.sql");

/// How long one statement may take (a server that hangs must not hang the command).
const STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Applying the schema failed.
#[derive(Debug, Error)]
pub enum SchemaError {
    /// The async runtime could not start.
    #[error("cannot start the ClickHouse client runtime: {0}")]
    Runtime(std::io::Error),
    /// The schema file cannot be translated for a cluster.
    #[error(transparent)]
    Untranslatable(#[from] cluster::Untranslatable),
    /// The cluster name is not a plain identifier.
    #[error("cluster name {0:?} must be letters, digits and '_' only")]
    ClusterName(String),
    /// The server does not know the cluster.
    #[error("ClickHouse at {url} has no cluster {cluster} in its remote_servers")]
    NoCluster {
        /// The server.
        url: String,
        /// The cluster asked for.
        cluster: String,
    },
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

/// How long a node may take to run an `ON CLUSTER` statement before the server reports which
/// nodes did not (below [`STATEMENT_TIMEOUT`], so the server's answer names them).
const CLUSTER_DDL_TIMEOUT_SECS: &str = "50";

/// The statements `apply` runs: for one server, `CREATE DATABASE` and the schema file (whose
/// names are unqualified: the client's database is `target`'s); with `cluster`, the cluster
/// form, every name qualified.
pub fn statements_for(database: &str, cluster: Option<&str>) -> Result<Vec<String>, SchemaError> {
    match cluster {
        None => {
            let mut out = vec![format!("CREATE DATABASE IF NOT EXISTS {database}")];
            out.extend(statements(SCHEMA_SQL));
            Ok(out)
        }
        Some(c) if !crate::sink::target::valid_database(c) => {
            Err(SchemaError::ClusterName(c.to_string()))
        }
        Some(c) => Ok(cluster::statements(database, c)?),
    }
}

/// Creates the database of `target` and every table and view of the schema in it: on that
/// server, or with `cluster` on every node of that cluster (`ON CLUSTER`, replicated local
/// tables, Distributed tables under the schema's names). Returns the number of statements run
/// (the `CREATE DATABASE` included).
pub fn apply(target: &Target, cluster: Option<&str>) -> Result<usize, SchemaError> {
    let stmts = statements_for(&target.database, cluster)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SchemaError::Runtime)?;
    rt.block_on(async {
        let failed = |what: &str, reason: String| SchemaError::Statement {
            url: target.base_url.clone(),
            what: describe(what),
            reason,
        };
        let run = |client: clickhouse::Client, stmt: String| async move {
            match tokio::time::timeout(STATEMENT_TIMEOUT, client.query_raw(&stmt).execute()).await {
                Ok(result) => {
                    result.map_err(|e| failed(&stmt, crate::sink::target::error_chain(&e)))
                }
                Err(_) => Err(failed(
                    &stmt,
                    format!("no answer within {} s", STATEMENT_TIMEOUT.as_secs()),
                )),
            }
        };
        let server = target
            .server_client()
            .with_setting("distributed_ddl_task_timeout", CLUSTER_DDL_TIMEOUT_SECS);
        if let Some(c) = cluster {
            let ask = "SELECT count() FROM system.clusters WHERE cluster = ?";
            let nodes = tokio::time::timeout(
                STATEMENT_TIMEOUT,
                server.query(ask).bind(c).fetch_one::<u64>(),
            )
            .await
            .map_err(|_| failed(ask, "no answer".into()))?
            .map_err(|e| failed(ask, crate::sink::target::error_chain(&e)))?;
            if nodes == 0 {
                return Err(SchemaError::NoCluster {
                    url: target.base_url.clone(),
                    cluster: c.to_string(),
                });
            }
        }
        for (i, stmt) in stmts.iter().enumerate() {
            // The database is created without one; on a single server the schema file's
            // unqualified names land in the client's database.
            let client = if i == 0 || cluster.is_some() {
                server.clone()
            } else {
                target.client()
            };
            run(client, stmt.clone()).await?;
        }
        Ok(stmts.len())
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
