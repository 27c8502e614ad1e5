//! `stripwatch schema`: print the ClickHouse schema, or apply it to a server.

use super::SchemaCommand;
use anyhow::Result;

/// Runs `schema print` or `schema apply`.
pub fn run(what: SchemaCommand) -> Result<()> {
    match what {
        SchemaCommand::Print => print!("{}", stripwatch::schema::SCHEMA_SQL),
        SchemaCommand::Apply(args) => {
            let t = args.access.target(&args.clickhouse)?;
            let n = stripwatch::schema::apply(&t)?;
            eprintln!(
                "schema applied to database {} at {} ({n} statements)",
                t.database, t.base_url
            );
        }
    }
    Ok(())
}
