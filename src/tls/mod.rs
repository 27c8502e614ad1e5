//! TLS as seen from the outside: record boundaries, handshake message types and alerts. This is
//! the seam where the full handshake and certificate analysis plugs in; for now it decides
//! whether a TLS handshake started and how it ended, without buffering record bodies.

pub mod handshake;
pub mod record;
