//! Outputs of judged records: newline-delimited JSON files (one set per run, or rotated for
//! long runs) and ClickHouse (with its disk spool), behind one trait. Several sinks can be combined with `Fanout`.

pub mod clickhouse;
pub mod json;
pub mod ndjson;
pub mod rotating;
pub mod rows;
pub mod shared_baseline;
pub mod spool;
pub mod target;

use crate::record::{CertificateRecord, DnsRecord, SessionRecord};
use thiserror::Error;

/// Where judged sessions go (files, ClickHouse, the in-process report).
pub trait SessionSink: Send {
    /// Takes one judged session (its findings are in `finding_details`).
    fn session(&mut self, rec: &SessionRecord) -> Result<(), SinkError>;
    /// Takes one DNS transaction of interest (its findings are in `finding_details`).
    fn dns(&mut self, _rec: &DnsRecord) -> Result<(), SinkError> {
        Ok(())
    }
    /// Takes one distinct certificate (called at the end of the run, before `finish`, and in a
    /// long run also before the files rotate).
    fn certificate(&mut self, _cert: &CertificateRecord) -> Result<(), SinkError> {
        Ok(())
    }

    /// Whether the next `flush` will close the current set of files (a long run's rotation):
    /// the output stage then writes the certificates seen since the last set first, so that the
    /// set that closes lists them.
    fn rotation_due(&mut self) -> bool {
        false
    }
    /// Flushes at the end of the run.
    fn finish(&mut self) -> Result<(), SinkError>;

    /// Pushes what is buffered to its destination without ending (live capture, where records
    /// must reach the files within seconds). Sinks that send on their own schedule need not.
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A sink failed; the run stops with this error.
#[derive(Debug, Error)]
#[error("{what}: {source}")]
pub struct SinkError {
    /// Which output.
    pub what: String,
    /// The cause.
    pub source: std::io::Error,
}

/// Hands every session to several sinks in turn.
pub struct Fanout(pub Vec<Box<dyn SessionSink>>);

impl SessionSink for Fanout {
    fn session(&mut self, rec: &SessionRecord) -> Result<(), SinkError> {
        self.0.iter_mut().try_for_each(|s| s.session(rec))
    }

    fn dns(&mut self, rec: &crate::record::DnsRecord) -> Result<(), SinkError> {
        self.0.iter_mut().try_for_each(|s| s.dns(rec))
    }

    fn certificate(&mut self, cert: &crate::record::CertificateRecord) -> Result<(), SinkError> {
        self.0.iter_mut().try_for_each(|s| s.certificate(cert))
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.0.iter_mut().try_for_each(|s| s.finish())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.0.iter_mut().try_for_each(|s| s.flush())
    }

    fn rotation_due(&mut self) -> bool {
        // Every sink is asked (not `any`, which stops at the first): each fixes its moment.
        self.0
            .iter_mut()
            .fold(false, |due, s| s.rotation_due() | due)
    }
}
