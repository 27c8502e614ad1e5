//! `csv/*.csv`: every table of the report that has a file, in full, one file per table, named
//! and laid out like the query of the same name in `queries/` (same columns, same order of
//! rows).

use super::ReportError;
use super::model::Report;
use super::tables;
use std::path::{Path, PathBuf};

/// Writes every table with a file to `dir/<file>.csv`.
pub fn write(r: &Report, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|e| ReportError::io("cannot create", dir, e))?;
    let mut written = Vec::new();
    for t in tables::with_files(r) {
        let Some(name) = t.file else { continue };
        let path = dir.join(format!("{name}.csv"));
        let csv_err = |source| ReportError::Csv {
            path: path.clone(),
            source,
        };
        let view = t.for_file();
        let mut w = csv::Writer::from_path(&path).map_err(csv_err)?;
        w.write_record(&view.header).map_err(csv_err)?;
        for row in &view.rows {
            w.write_record(row.iter().map(|c| c.for_file()))
                .map_err(csv_err)?;
        }
        w.flush()
            .map_err(|e| ReportError::io("cannot write", &path, e))?;
        written.push(path);
    }
    Ok(written)
}
