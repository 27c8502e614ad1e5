//! stripwatch: a passive monitor for the security of mail transport. See DESIGN.md for the flow
//! of a packet through these parts.

pub mod capture;
pub mod decode;
pub mod detect;
pub mod dns;
pub mod enrich;
pub mod event;
pub mod flow;
pub mod order;
pub mod pipeline;
pub mod report;
pub mod schema;
pub mod sink;
pub mod smtp;
pub mod state;
pub mod tls;
pub mod util;
