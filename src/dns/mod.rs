//! DNS: messages over UDP and TCP, query/response matching into transactions, detection of
//! injected answers, and the per-client memory of MX, address and TLSA answers that ties an SMTP
//! session to the lookup that sent the client there.

pub mod fast;
pub mod message;
pub mod sts;
pub mod tracker;

pub use tracker::{DnsConfig, DnsPacket, DnsStats, DnsTracker};
