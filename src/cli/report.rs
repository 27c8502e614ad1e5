//! `stripwatch report`, and the report `analyze` writes into its output directory.

use super::{ReportArgs, ReportFormat};
use anyhow::{Result, bail};
use std::path::{Path, PathBuf};
use std::time::Instant;
use stripwatch::report::embedded::Aggregator;
use stripwatch::report::{self, Format, TlsrptIdentity};

/// Runs `report`: loads the events (from an analysis directory or ClickHouse) within the
/// window, then writes the files and prints the terminal summary the formats ask for.
pub fn run(args: ReportArgs) -> Result<()> {
    let window = report::window::parse_window(args.since.as_deref(), args.until.as_deref())?;
    let model = match (&args.clickhouse, &args.dir) {
        (Some(url), _) => report::clickhouse::load(&args.clickhouse_access.target(url)?, window)?,
        (None, Some(dir)) => report::embedded::from_dir(dir, window)?,
        (None, None) => bail!("give an analysis DIR or --clickhouse URL"),
    };
    let formats = formats(&args.format);
    let files = formats.iter().any(|f| *f != Format::Terminal);
    let out = match args.out.or(args.dir) {
        Some(out) => out,
        None if files => bail!("--out DIR is needed with --clickhouse (or --format terminal)"),
        None => PathBuf::new(),
    };
    let identity = TlsrptIdentity {
        organization: args.tlsrpt_organization,
        contact: args.tlsrpt_contact,
    };
    let written = if files {
        report::write_files(&model, &out, &formats, &identity)?
    } else {
        Vec::new()
    };
    if formats.contains(&Format::Terminal) {
        print!("{}", report::terminal::render(&model));
        if !written.is_empty() {
            println!("\nwrote {} files under {}", written.len(), out.display());
        }
    }
    Ok(())
}

/// The `--format` values as the library's formats, `all` expanded, each once, in the order
/// first asked for.
fn formats(asked: &[ReportFormat]) -> Vec<Format> {
    let mut formats = Vec::new();
    for f in asked {
        let add: &[Format] = match f {
            ReportFormat::Terminal => &[Format::Terminal],
            ReportFormat::Markdown => &[Format::Markdown],
            ReportFormat::Html => &[Format::Html],
            ReportFormat::Csv => &[Format::Csv],
            ReportFormat::Tlsrpt => &[Format::Tlsrpt],
            ReportFormat::All => &[
                Format::Terminal,
                Format::Markdown,
                Format::Html,
                Format::Csv,
                Format::Tlsrpt,
            ],
        };
        for a in add {
            if !formats.contains(a) {
                formats.push(*a);
            }
        }
    }
    formats
}

/// Writes the embedded report into an analysis directory (`analyze` without `--no-report`):
/// from what `aggregated` counted while the records were written, else by reading the directory
/// (rotated sets, which may hold earlier runs' parts). `quiet` (with `--json`) keeps standard
/// output to the summary JSON alone.
pub fn after_analyze(out: &Path, aggregated: Option<Aggregator>, quiet: bool) -> Result<()> {
    let started = Instant::now();
    let model = match aggregated {
        Some(a) => a.finish(),
        None => report::embedded::from_dir(out, Default::default())?,
    };
    let formats = [Format::Markdown, Format::Html, Format::Csv, Format::Tlsrpt];
    report::write_files(&model, out, &formats, &Default::default())?;
    if !quiet {
        println!(
            "wrote the report ({}/report.{{md,html}}, csv/, tlsrpt/) in {:.2} s",
            out.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
