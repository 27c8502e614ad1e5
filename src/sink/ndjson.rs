//! `sessions.ndjson`, `findings.ndjson`, `dns.ndjson` and `certificates.ndjson`: one JSON object per line, the form every log
//! pipeline (jq, Vector, ClickHouse's JSONEachRow) reads.

use crate::record::SessionRecord;
use crate::sink::{SessionSink, SinkError};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Writes the two files of an output directory.
pub struct NdjsonSink {
    sessions: BufWriter<File>,
    findings: BufWriter<File>,
    certificates: BufWriter<File>,
    dns: BufWriter<File>,
    /// One line, written here first ([`super::json`]) and then into its file in one call.
    line: Vec<u8>,
    dns_path: PathBuf,
    sessions_path: PathBuf,
    findings_path: PathBuf,
    certificates_path: PathBuf,
}

impl NdjsonSink {
    /// Creates (truncates) `DIR/sessions.ndjson`, `DIR/findings.ndjson`, `DIR/dns.ndjson` and
    /// `DIR/certificates.ndjson`.
    pub fn create(dir: &Path) -> Result<NdjsonSink, SinkError> {
        Self::open(dir, |kind| format!("{kind}.ndjson"), false)
    }

    /// Creates `DIR/<kind>-<suffix>.ndjson` for each kind, refusing to touch a file that
    /// exists: a rotated part, once closed, is never written again (see `sink::rotating`).
    pub fn create_part(dir: &Path, suffix: &str) -> Result<NdjsonSink, SinkError> {
        Self::open(dir, |kind| format!("{kind}-{suffix}.ndjson"), true)
    }

    /// The four files, named by `name(kind)`; `new` refuses existing ones.
    fn open(dir: &Path, name: impl Fn(&str) -> String, new: bool) -> Result<NdjsonSink, SinkError> {
        let open = |kind: &str| -> Result<(BufWriter<File>, PathBuf), SinkError> {
            let path = dir.join(name(kind));
            let file = if new {
                File::options().write(true).create_new(true).open(&path)
            } else {
                File::create(&path)
            };
            let file = file.map_err(|source| SinkError {
                what: format!("cannot create {}", path.display()),
                source,
            })?;
            Ok((BufWriter::with_capacity(1 << 20, file), path))
        };
        let (sessions, sessions_path) = open("sessions")?;
        let (findings, findings_path) = open("findings")?;
        let (certificates, certificates_path) = open("certificates")?;
        let (dns, dns_path) = open("dns")?;
        Ok(NdjsonSink {
            sessions,
            findings,
            certificates,
            dns,
            line: Vec::with_capacity(4096),
            dns_path,
            sessions_path,
            findings_path,
            certificates_path,
        })
    }
}

impl NdjsonSink {
    /// The largest of the four files in bytes, counting what is still buffered.
    pub fn largest(&self) -> u64 {
        [
            &self.sessions,
            &self.findings,
            &self.certificates,
            &self.dns,
        ]
        .iter()
        .map(|w| w.get_ref().metadata().map_or(0, |m| m.len()) + w.buffer().len() as u64)
        .max()
        .unwrap_or(0)
    }

    /// The paths of the four files.
    pub fn paths(&self) -> [&Path; 4] {
        [
            &self.sessions_path,
            &self.findings_path,
            &self.dns_path,
            &self.certificates_path,
        ]
    }
}

fn write_line<T: serde::Serialize>(
    w: &mut BufWriter<File>,
    line: &mut Vec<u8>,
    value: &T,
    path: &Path,
) -> Result<(), SinkError> {
    let err = |source: std::io::Error| SinkError {
        what: format!("cannot write {}", path.display()),
        source,
    };
    line.clear();
    if super::json::write(line, value).is_err() {
        // A shape the fast writer leaves to serde_json (none of the records has one today).
        line.clear();
        serde_json::to_writer(&mut *line, value).map_err(|e| err(std::io::Error::other(e)))?;
    }
    line.push(b'\n');
    w.write_all(line).map_err(err)
}

impl SessionSink for NdjsonSink {
    fn session(&mut self, rec: &SessionRecord) -> Result<(), SinkError> {
        write_line(&mut self.sessions, &mut self.line, rec, &self.sessions_path)?;
        for f in &rec.finding_details {
            write_line(&mut self.findings, &mut self.line, f, &self.findings_path)?;
        }
        Ok(())
    }

    fn dns(&mut self, rec: &crate::record::DnsRecord) -> Result<(), SinkError> {
        write_line(&mut self.dns, &mut self.line, rec, &self.dns_path)?;
        for f in &rec.finding_details {
            write_line(&mut self.findings, &mut self.line, f, &self.findings_path)?;
        }
        Ok(())
    }

    fn certificate(&mut self, cert: &crate::record::CertificateRecord) -> Result<(), SinkError> {
        write_line(
            &mut self.certificates,
            &mut self.line,
            cert,
            &self.certificates_path,
        )
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.flush()
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.dns.flush().map_err(|source| SinkError {
            what: format!("cannot write {}", self.dns_path.display()),
            source,
        })?;
        self.certificates.flush().map_err(|source| SinkError {
            what: format!("cannot write {}", self.certificates_path.display()),
            source,
        })?;
        self.sessions.flush().map_err(|source| SinkError {
            what: format!("cannot write {}", self.sessions_path.display()),
            source,
        })?;
        self.findings.flush().map_err(|source| SinkError {
            what: format!("cannot write {}", self.findings_path.display()),
            source,
        })
    }
}
