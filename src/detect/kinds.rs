//! Finding kinds: stable strings (RFC 8460 names where RFC 8460 has one) with a severity order
//! that decides a session's verdict.

use serde::Serialize;

/// Every kind stripwatch can report. The string form is the contract (see DESIGN.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    // Declaration order is severity order: most severe first.
    /// The EHLO reply's STARTTLS token was overwritten.
    StarttlsStripped,
    /// Cleartext bytes where only TLS may be (command injection window).
    CleartextAfterStarttls,
    /// Two versions of the same TCP bytes.
    TcpOverlapConflict,
    /// After a failed upgrade the same client sent the mail to the same server in plaintext.
    PlaintextFallback,
    /// A server known to offer STARTTLS did not offer it here.
    StarttlsMissing,
    /// 220 came, but no TLS handshake completed.
    TlsHandshakeFailed,
    /// The client sent STARTTLS and the reply was not 220.
    StarttlsCommandRejected,
    /// The server offered STARTTLS; the client sent mail in plaintext.
    PlaintextByClient,
    /// The server does not offer STARTTLS and nothing says it ever did.
    StarttlsNotSupported,
}

impl FindingKind {
    /// The stable string.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::StarttlsStripped => "starttls-stripped",
            FindingKind::CleartextAfterStarttls => "cleartext-after-starttls",
            FindingKind::TcpOverlapConflict => "tcp-overlap-conflict",
            FindingKind::PlaintextFallback => "plaintext-fallback",
            FindingKind::StarttlsMissing => "starttls-missing",
            FindingKind::TlsHandshakeFailed => "tls-handshake-failed",
            FindingKind::StarttlsCommandRejected => "starttls-command-rejected",
            FindingKind::PlaintextByClient => "plaintext-by-client",
            FindingKind::StarttlsNotSupported => "starttls-not-supported",
        }
    }

    /// Every kind, most severe first.
    pub const ALL: [FindingKind; 9] = [
        FindingKind::StarttlsStripped,
        FindingKind::CleartextAfterStarttls,
        FindingKind::TcpOverlapConflict,
        FindingKind::PlaintextFallback,
        FindingKind::StarttlsMissing,
        FindingKind::TlsHandshakeFailed,
        FindingKind::StarttlsCommandRejected,
        FindingKind::PlaintextByClient,
        FindingKind::StarttlsNotSupported,
    ];
}

/// Verdicts for sessions without findings.
pub mod verdict {
    /// TLS started (the certificate is judged separately).
    pub const TLS_OK: &str = "tls-ok";
    /// Cleartext with nothing to object to (no mail sent, HELO-only, ...).
    pub const PLAINTEXT: &str = "plaintext";
    /// The capture does not show what matters.
    pub const INCOMPLETE: &str = "incomplete";
}
