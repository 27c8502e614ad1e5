//! `stripwatch schema`: print the ClickHouse schema, or apply it to a server or a cluster.

use super::SchemaCommand;
use anyhow::{Result, bail};

/// Runs `schema print` or `schema apply`.
pub fn run(what: SchemaCommand) -> Result<()> {
    match what {
        SchemaCommand::Print(args) => match args.cluster.as_deref() {
            None => print!("{}", stripwatch::schema::SCHEMA_SQL),
            Some(cluster) => {
                if !stripwatch::sink::target::valid_database(&args.database) {
                    bail!(
                        "database name {:?} must be letters, digits and '_' only",
                        args.database
                    );
                }
                let stmts = if args.rebuild_rollups {
                    stripwatch::schema::cluster::rollup_rebuild_statements(&args.database)?
                } else {
                    stripwatch::schema::statements_for(&args.database, Some(cluster))?
                };
                for stmt in stmts {
                    println!("{stmt};\n");
                }
            }
        },
        SchemaCommand::Apply(args) => {
            let t = args.server.access.target(&args.server.clickhouse)?;
            let n = stripwatch::schema::apply(&t, args.cluster.as_deref())?;
            match &args.cluster {
                None => eprintln!(
                    "schema applied to database {} at {} ({n} statements)",
                    t.database, t.base_url
                ),
                Some(c) => eprintln!(
                    "schema applied to database {} on cluster {c} through {} ({n} statements)",
                    t.database, t.base_url
                ),
            }
        }
    }
    Ok(())
}
