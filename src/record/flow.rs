//! Words about a TCP flow that records and every layer above the flow table share: which end
//! spoke, and how the flow ended.

/// Which end of the connection bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The SMTP client (the sending MTA).
    Client,
    /// The SMTP server.
    Server,
}

/// How a flow ended, which decides how an unfinished upgrade is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    /// Both sides closed with FIN.
    Fin,
    /// A side reset the connection.
    Reset,
    /// Nothing was seen for the idle timeout.
    Timeout,
    /// The input ended with the flow open.
    CaptureEnd,
    /// The flow table was full and this flow was the oldest.
    Evicted,
}
