//! Reports: per-day, per-country and per-AS roll-ups of an analysis, for people (terminal,
//! Markdown, HTML with charts), for spreadsheets (CSV) and for mail operators (RFC 8460 TLS-RPT
//! JSON). Sources (the embedded aggregation of an `analyze` directory, the ClickHouse queries)
//! fill one [`model::Report`]; renderers only read it.

pub mod charts;
pub mod clickhouse;
pub mod csv_out;
pub mod embedded;
pub mod html;
pub mod markdown;
pub mod model;
pub mod summary;
pub mod table;
pub mod tables;
pub mod terminal;
pub mod tlsrpt;
pub mod window;

use std::path::{Path, PathBuf};

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done (`cannot read`, `cannot write`, ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The directory is not an `analyze` output directory.
    #[error("{} has no sessions.ndjson: not a `stripwatch analyze` output directory", .0.display())]
    NotAnAnalysis(PathBuf),
    /// A `--since`/`--until` value is not a date or RFC 3339 time.
    #[error("{0}")]
    BadTime(String),
    /// A chart could not be drawn.
    #[error("cannot draw the {chart} chart: {message}")]
    Chart {
        /// Which chart.
        chart: &'static str,
        /// The plotting library's message.
        message: String,
    },
    /// The ClickHouse source failed.
    #[error(transparent)]
    ClickHouse(#[from] clickhouse::ClickHouseReportError),
    /// A CSV table could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: csv::Error,
    },
}

impl ReportError {
    /// An I/O error with its file.
    pub fn io(what: &'static str, path: &Path, source: std::io::Error) -> ReportError {
        ReportError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Which outputs to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The summary for a terminal, on standard output.
    Terminal,
    /// `report.md`.
    Markdown,
    /// `report.html`.
    Html,
    /// `csv/*.csv`.
    Csv,
    /// `tlsrpt/<domain>.json`.
    Tlsrpt,
}

/// Settings of the TLS-RPT reports (RFC 8460 requires an organisation and a contact).
#[derive(Clone, Debug)]
pub struct TlsrptIdentity {
    /// `organization-name`.
    pub organization: String,
    /// `contact-info`.
    pub contact: String,
}

impl Default for TlsrptIdentity {
    fn default() -> Self {
        TlsrptIdentity {
            organization: "stripwatch".to_string(),
            contact: "postmaster@localhost".to_string(),
        }
    }
}

/// Writes the file outputs among `formats` into `out` (created if missing) and returns the
/// paths written, in the order of `formats`. The terminal format is the caller's (it prints).
/// Each format is rendered on a thread of its own: they only read the model, and at the end of
/// an `analyze` run this is the one step nothing else overlaps.
pub fn write_files(
    report: &model::Report,
    out: &Path,
    formats: &[Format],
    identity: &TlsrptIdentity,
) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(out).map_err(|e| ReportError::io("cannot create", out, e))?;
    let write_one = |f: Format| -> Result<Vec<PathBuf>, ReportError> {
        let write = |name: &str, text: String| {
            let path = out.join(name);
            std::fs::write(&path, text).map_err(|e| ReportError::io("cannot write", &path, e))?;
            Ok(vec![path])
        };
        match f {
            // Printed by the caller; not given a thread.
            Format::Terminal => Ok(Vec::new()),
            Format::Markdown => write("report.md", markdown::render(report)),
            Format::Html => write("report.html", html::render(report)?),
            Format::Csv => csv_out::write(report, &out.join("csv")),
            Format::Tlsrpt => tlsrpt::write(report, identity, &out.join("tlsrpt")),
        }
    };
    let results: Vec<Result<Vec<PathBuf>, ReportError>> = std::thread::scope(|scope| {
        let running: Vec<_> = formats
            .iter()
            .filter(|&&f| f != Format::Terminal)
            .map(|&f| {
                std::thread::Builder::new()
                    .name("sw-report".to_string())
                    .spawn_scoped(scope, move || write_one(f))
                    .unwrap_or_else(|e| panic!("cannot start a thread: {e}"))
            })
            .collect();
        running
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut written = Vec::new();
    for r in results {
        written.extend(r?);
    }
    Ok(written)
}
