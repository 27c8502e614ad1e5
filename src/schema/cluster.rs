//! The schema on a ClickHouse cluster (`stripwatch schema apply --cluster NAME`), derived from
//! `queries/schema.sql` statement by statement, so that the single-server schema and the cluster
//! schema can never disagree on a column:
//!
//! - each table becomes a `Replicated*MergeTree` table `<name>_local` on every node
//!   (`ON CLUSTER`), replicated through ZooKeeper under `/clickhouse/tables/{shard}/<db>/…`;
//! - a `Distributed` table takes the table's own name, so that the sensors and every file in
//!   `queries/` use the same names on a cluster as on one server;
//! - each materialized view reads the local table and writes the local rollup: a view fires only
//!   on the node that received the INSERT, so the rollup must be replicated itself, and each
//!   shard rolls up its own rows.
//!
//! The event tables are sharded by a key computed from the row ([`SHARDING_KEYS`]): a replayed
//! row lands on the shard that holds its first copy (so `FINAL` and block deduplication see both
//! copies), and the rows of one server stay on one shard.

use super::SCHEMA_SQL;
use thiserror::Error;

/// The suffix of the replicated table behind each `Distributed` table.
pub const LOCAL_SUFFIX: &str = "_local";

/// The sharding key of each event table. Sessions and findings go by the server's address,
/// so that per-server questions (a server's history, `top_servers.sql`) are answered by one
/// shard; DNS transactions by the resolver's address; certificates by their fingerprint (their
/// row has no single server). The key depends only on the row, never on `rand()`: a batch sent
/// again is split into the same per-shard blocks, which block deduplication recognises.
pub const SHARDING_KEYS: [(&str, &str); 4] = [
    ("sessions", "cityHash64(server_ip)"),
    ("findings", "cityHash64(server_ip)"),
    ("dns", "cityHash64(server_ip)"),
    ("certificates", "cityHash64(fingerprint)"),
];

/// The schema file has a statement this translation does not know: a change to
/// `queries/schema.sql` that needs a change here too.
#[derive(Debug, Error)]
#[error("queries/schema.sql: cannot make a cluster statement of `{0}`")]
pub struct Untranslatable(pub String);

/// The statements that create `database` and the schema in it on every node of `cluster`, in
/// order. Every statement names its database, says `IF NOT EXISTS` and `ON CLUSTER`.
pub fn statements(database: &str, cluster: &str) -> Result<Vec<String>, Untranslatable> {
    let source = super::statements(SCHEMA_SQL);
    // Tables that a view writes: they are rollups, read through a Distributed table without a
    // sharding key (nothing inserts into them but their view).
    let mut rollups = Vec::new();
    for stmt in &source {
        if let Some(rest) = stmt.strip_prefix("CREATE MATERIALIZED VIEW IF NOT EXISTS ") {
            let view = split_view(rest).ok_or_else(|| untranslatable(stmt))?;
            rollups.push(view.target.to_string());
        }
    }
    let mut out = vec![format!(
        "CREATE DATABASE IF NOT EXISTS {database} ON CLUSTER {cluster}"
    )];
    for stmt in &source {
        if let Some(rest) = stmt.strip_prefix("CREATE TABLE IF NOT EXISTS ") {
            let (name, body) = rest
                .split_once(char::is_whitespace)
                .ok_or_else(|| untranslatable(stmt))?;
            let at = body.find("ENGINE = ").ok_or_else(|| untranslatable(stmt))?;
            let (columns, engine) = body.split_at(at);
            let (engine, tail) = engine["ENGINE = ".len()..]
                .split_once("()")
                .ok_or_else(|| untranslatable(stmt))?;
            let local = format!("{name}{LOCAL_SUFFIX}");
            out.push(format!(
                "CREATE TABLE IF NOT EXISTS {database}.{local} ON CLUSTER {cluster}\n{columns}\
                 ENGINE = Replicated{engine}('/clickhouse/tables/{{shard}}/{database}/{local}', \
                 '{{replica}}'){tail}"
            ));
            let key = match SHARDING_KEYS.iter().find(|(t, _)| *t == name) {
                Some((_, key)) => format!(", {key}"),
                None if rollups.iter().any(|r| r == name) => String::new(),
                None => return Err(untranslatable(stmt)),
            };
            out.push(format!(
                "CREATE TABLE IF NOT EXISTS {database}.{name} ON CLUSTER {cluster} AS \
                 {database}.{local}\nENGINE = Distributed({cluster}, {database}, {local}{key})"
            ));
        } else if let Some(rest) = stmt.strip_prefix("CREATE MATERIALIZED VIEW IF NOT EXISTS ") {
            let v = split_view(rest).ok_or_else(|| untranslatable(stmt))?;
            out.push(format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{} ON CLUSTER {cluster} \
                 TO {database}.{}{LOCAL_SUFFIX} AS{}\nFROM {database}.{}{LOCAL_SUFFIX}\n{}",
                v.name, v.target, v.select, v.source, v.rest
            ));
        } else {
            return Err(untranslatable(stmt));
        }
    }
    Ok(out)
}

/// Statements that rebuild each rollup from its event table, for one replica of each shard
/// (the rollups are replicated, so the other replica fetches the result).
///
/// Needed after a node died between storing a block in an event table and storing its view's
/// block in the rollup: the sensor sends the batch again, the event table recognises the block
/// (block deduplication), and ClickHouse 18.16 then skips the views for it, so the rollup stays
/// short. Running these is harmless at any time: the rollups hold `uniqExact` states of ids,
/// and adding ids that are already there changes no count. On large tables add a `WHERE` on
/// `ts` for the days concerned.
pub fn rollup_rebuild_statements(database: &str) -> Result<Vec<String>, Untranslatable> {
    let mut out = Vec::new();
    for stmt in super::statements(SCHEMA_SQL) {
        if let Some(rest) = stmt.strip_prefix("CREATE MATERIALIZED VIEW IF NOT EXISTS ") {
            let v = split_view(rest).ok_or_else(|| untranslatable(&stmt))?;
            out.push(format!(
                "INSERT INTO {database}.{}{LOCAL_SUFFIX}{}\nFROM {database}.{}{LOCAL_SUFFIX}\n{}",
                v.target, v.select, v.source, v.rest
            ));
        }
    }
    Ok(out)
}

/// A materialized view of the schema file: `NAME TO TARGET AS\nSELECT …\nFROM SOURCE\nREST`.
struct View<'a> {
    name: &'a str,
    target: &'a str,
    /// From the newline before `SELECT` up to (not including) the newline before `FROM`.
    select: &'a str,
    source: &'a str,
    /// What follows the source table's line (`GROUP BY …`).
    rest: &'a str,
}

/// Splits a view statement after its `CREATE MATERIALIZED VIEW IF NOT EXISTS `.
fn split_view(text: &str) -> Option<View<'_>> {
    let (name, text) = text.split_once(" TO ")?;
    let (target, select) = text.split_once(" AS")?;
    let from = select.find("\nFROM ")?;
    let (source, rest) = select[from + "\nFROM ".len()..].split_once('\n')?;
    Some(View {
        name,
        target,
        select: &select[..from],
        source,
        rest,
    })
}

fn untranslatable(stmt: &str) -> Untranslatable {
    Untranslatable(stmt.lines().next().unwrap_or("").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_object_has_its_cluster_form() {
        let stmts = statements("sw", "mail").expect("the schema translates");
        assert!(stmts.iter().all(|s| s.contains(" ON CLUSTER mail")));
        assert!(
            stmts
                .iter()
                .skip(1)
                .all(|s| s.contains("IF NOT EXISTS sw."))
        );
        for (table, key) in SHARDING_KEYS {
            let dist = format!(
                "CREATE TABLE IF NOT EXISTS sw.{table} ON CLUSTER mail AS sw.{table}_local\nENGINE = Distributed(mail, sw, {table}_local, {key})"
            );
            assert!(stmts.contains(&dist), "no Distributed table {table}");
        }
        for rollup in ["sessions_daily", "findings_daily", "dns_daily"] {
            let dist = format!("ENGINE = Distributed(mail, sw, {rollup}_local)");
            assert!(stmts.iter().any(|s| s.ends_with(&dist)), "{rollup}");
            let view = format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS sw.{rollup}_mv ON CLUSTER mail TO sw.{rollup}_local AS"
            );
            assert!(stmts.iter().any(|s| s.starts_with(&view)), "{rollup}_mv");
        }
        let replicated = stmts
            .iter()
            .filter(|s| s.contains("ENGINE = Replicated"))
            .count();
        assert_eq!(replicated, 7);
        assert!(stmts.iter().any(|s| s.contains(
            "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/sw/sessions_local', '{replica}')\nPARTITION BY toYYYYMM(ts)"
        )));
        assert!(
            stmts
                .iter()
                .any(|s| s.contains("\nFROM sw.findings_local\nGROUP BY"))
        );
    }

    #[test]
    fn rollups_rebuild_from_the_local_event_tables() {
        let stmts = rollup_rebuild_statements("sw").expect("the schema translates");
        assert_eq!(stmts.len(), 3);
        assert!(stmts[0].starts_with("INSERT INTO sw.sessions_daily_local\nSELECT"));
        assert!(stmts[0].contains("\nFROM sw.sessions_local\nGROUP BY day,"));
    }
}
