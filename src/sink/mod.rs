//! Outputs of judged sessions: newline-delimited JSON files, the run summary, and ClickHouse
//! (with its disk spool). Several sinks can be combined with `Fanout`.

pub mod clickhouse;
pub mod ndjson;
pub mod rows;
pub mod spool;
pub mod summary;
pub mod target;

use crate::event::SessionRecord;
use crate::pipeline::{SessionSink, SinkError};

/// Hands every session to several sinks in turn.
pub struct Fanout(pub Vec<Box<dyn SessionSink>>);

impl SessionSink for Fanout {
    fn session(&mut self, rec: &SessionRecord) -> Result<(), SinkError> {
        self.0.iter_mut().try_for_each(|s| s.session(rec))
    }

    fn dns(&mut self, rec: &crate::dns::DnsRecord) -> Result<(), SinkError> {
        self.0.iter_mut().try_for_each(|s| s.dns(rec))
    }

    fn certificate(
        &mut self,
        cert: &crate::detect::certs::CertificateRecord,
    ) -> Result<(), SinkError> {
        self.0.iter_mut().try_for_each(|s| s.certificate(cert))
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.0.iter_mut().try_for_each(|s| s.finish())
    }
}
