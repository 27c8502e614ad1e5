//! Detection: per-session rules that turn facts into findings, and the correlator that judges
//! what only several sessions together can show (a server that offered STARTTLS before; a
//! plaintext retry after a failed upgrade).

pub mod auth;
pub mod certs;
pub mod correlator;
pub mod dns_injection;
pub mod dns_judge;
pub mod mta_sts;
pub mod rules;

pub use correlator::{Correlator, CorrelatorConfig, CorrelatorStats};
