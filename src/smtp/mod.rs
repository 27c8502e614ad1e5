//! SMTP: line splitting, reply and command parsing, the capability classifier and the session
//! state machine that turns a reassembled conversation into facts.

pub mod capability;
pub mod line;
pub mod reply;
pub mod sasl;
pub mod session;

pub use session::{SessionFacts, SmtpConfig, SmtpSession};
