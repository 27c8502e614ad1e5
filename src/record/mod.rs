//! The records stripwatch writes and the words they are made of: one session record per SMTP
//! session, one finding record per finding, one DNS record per transaction of interest and one
//! certificate record per distinct certificate.
//!
//! This is the bottom layer: it uses nothing of stripwatch but `util`, and every other part may
//! use it. The parsers fill these records, the judges add findings to them, and the sinks and
//! reports read them, so one definition serves all of them (see `docs/DESIGN.md`).

mod certificate;
mod dns;
mod endpoint;
mod finding;
mod flow;
mod session;
mod size;
mod smtp;
mod sts;
mod time;

pub use certificate::{CertInfo, CertificateRecord};
pub use dns::{AnswerText, DnsRecord, Tlsa};
pub use endpoint::Endpoint;
pub(crate) use endpoint::{client_prefix, server_prefix};
pub use finding::{Finding, FindingKind, finding_id, verdict};
pub use flow::{EndReason, Side};
pub use session::{CorrelationFacts, SessionRecord};
pub use size::{dns_bytes, finding_bytes, session_bytes};
pub use smtp::{CleartextAuth, HandshakeFailure, Verb};
pub use sts::StsFetch;
pub use time::Micros;
