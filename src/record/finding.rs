//! Findings and their kinds: stable strings (RFC 8460 names where RFC 8460 has one) with a
//! severity order that decides a session's verdict.

use super::{Endpoint, Micros};
use serde::Serialize;

/// Every kind stripwatch can report. The string form is the contract (see DESIGN.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    // Declaration order is severity order: most severe first.
    /// The client sent AUTH in cleartext after a downgrade of this session (stripped, missing,
    /// refused or failed upgrade) or of an earlier one it fell back from: its credential went
    /// to the path.
    AuthInCleartext,
    /// The EHLO reply's STARTTLS token was overwritten.
    StarttlsStripped,
    /// Cleartext bytes where only TLS may be (command injection window).
    CleartextAfterStarttls,
    /// Two versions of the same TCP bytes.
    TcpOverlapConflict,
    /// A segment or DNS answer whose IP TTL or IP ID is out of line with the rest of its flow:
    /// an on-path injector at another hop distance.
    InjectedSegment,
    /// The client connected to an address that none of the MX hosts it just resolved has.
    SmtpToUnlistedIp,
    /// Two or more responses to one query with different answers; the first is the suspect.
    DnsInjection,
    /// An MX answer that disagrees with what other clients or resolvers received, with the
    /// operator's known MX sets, or with the baseline of earlier runs.
    MxMismatch,
    /// A response without RRSIG (DO set) or without AD for a name answered with them before.
    DnssecStripped,
    /// The domain published `v=STSv1` (in this run or the baseline), yet the client's answer
    /// for `_mta-sts.<domain>` held no such record. A DNS finding.
    MtaStsTxtMissing,
    /// TLSA records exist for the server but the session stayed plaintext (RFC 8460).
    DaneRequired,
    /// The client's MTA-STS policy fetch was reset, timed out or failed its handshake, and then
    /// it delivered to that domain in plaintext or with a certificate problem.
    MtaStsFetchBlocked,
    /// The presented chain matches none of the server's usable TLSA records (RFC 8460).
    TlsaInvalid,
    /// After a failed upgrade the same client sent the mail to the same server in plaintext.
    PlaintextFallback,
    /// A server known to offer STARTTLS did not offer it here.
    StarttlsMissing,
    /// 220 came, but no TLS handshake completed.
    TlsHandshakeFailed,
    /// The client sent STARTTLS and the reply was not 220.
    StarttlsCommandRejected,
    /// The certificate's names do not cover the host the client meant (RFC 8460).
    CertificateHostMismatch,
    /// No path to a trusted root (RFC 8460).
    CertificateNotTrusted,
    /// Expired or not yet valid at capture time (RFC 8460).
    CertificateExpired,
    /// The leaf certificate signs itself.
    CertificateSelfSigned,
    /// The server presented a different public key earlier in the run.
    CertificateChanged,
    /// RSA under 2048 bits, DSA, SHA-1 or MD5 signature.
    CertificateWeak,
    /// The client saw `v=STSv1` for the recipient domain (or the baseline did), yet delivered in
    /// plaintext or after a stripped or failed upgrade. A warning: the policy's mode travels
    /// inside HTTPS and cannot be seen.
    MtaStsPlaintext,
    /// The server offered STARTTLS; the client sent mail in plaintext.
    PlaintextByClient,
    /// The server does not offer STARTTLS and nothing says it ever did.
    StarttlsNotSupported,
    /// An anonymous cipher suite: encrypted, but no certificate authenticates the server.
    CertificateAbsent,
    /// The certificate could not be seen (TLS 1.3 encrypts it; a resumed session sends none).
    CertificateNotObservable,
}

impl FindingKind {
    /// The stable string.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::AuthInCleartext => "auth-in-cleartext",
            FindingKind::StarttlsStripped => "starttls-stripped",
            FindingKind::CleartextAfterStarttls => "cleartext-after-starttls",
            FindingKind::TcpOverlapConflict => "tcp-overlap-conflict",
            FindingKind::InjectedSegment => "injected-segment",
            FindingKind::SmtpToUnlistedIp => "smtp-to-unlisted-ip",
            FindingKind::DnsInjection => "dns-injection",
            FindingKind::MxMismatch => "mx-mismatch",
            FindingKind::DnssecStripped => "dnssec-stripped",
            FindingKind::MtaStsTxtMissing => "mta-sts-txt-missing",
            FindingKind::DaneRequired => "dane-required",
            FindingKind::MtaStsFetchBlocked => "mta-sts-fetch-blocked",
            FindingKind::TlsaInvalid => "tlsa-invalid",
            FindingKind::PlaintextFallback => "plaintext-fallback",
            FindingKind::StarttlsMissing => "starttls-missing",
            FindingKind::TlsHandshakeFailed => "tls-handshake-failed",
            FindingKind::StarttlsCommandRejected => "starttls-command-rejected",
            FindingKind::CertificateHostMismatch => "certificate-host-mismatch",
            FindingKind::CertificateNotTrusted => "certificate-not-trusted",
            FindingKind::CertificateExpired => "certificate-expired",
            FindingKind::CertificateSelfSigned => "certificate-self-signed",
            FindingKind::CertificateChanged => "certificate-changed",
            FindingKind::CertificateWeak => "certificate-weak",
            FindingKind::MtaStsPlaintext => "mta-sts-plaintext",
            FindingKind::PlaintextByClient => "plaintext-by-client",
            FindingKind::StarttlsNotSupported => "starttls-not-supported",
            FindingKind::CertificateAbsent => "certificate-absent",
            FindingKind::CertificateNotObservable => "certificate-not-observable",
        }
    }

    /// Every kind, most severe first.
    pub const ALL: [FindingKind; 28] = [
        FindingKind::AuthInCleartext,
        FindingKind::StarttlsStripped,
        FindingKind::CleartextAfterStarttls,
        FindingKind::TcpOverlapConflict,
        FindingKind::InjectedSegment,
        FindingKind::SmtpToUnlistedIp,
        FindingKind::DnsInjection,
        FindingKind::MxMismatch,
        FindingKind::DnssecStripped,
        FindingKind::MtaStsTxtMissing,
        FindingKind::DaneRequired,
        FindingKind::MtaStsFetchBlocked,
        FindingKind::TlsaInvalid,
        FindingKind::PlaintextFallback,
        FindingKind::StarttlsMissing,
        FindingKind::TlsHandshakeFailed,
        FindingKind::StarttlsCommandRejected,
        FindingKind::CertificateHostMismatch,
        FindingKind::CertificateNotTrusted,
        FindingKind::CertificateExpired,
        FindingKind::CertificateSelfSigned,
        FindingKind::CertificateChanged,
        FindingKind::CertificateWeak,
        FindingKind::MtaStsPlaintext,
        FindingKind::PlaintextByClient,
        FindingKind::StarttlsNotSupported,
        FindingKind::CertificateAbsent,
        FindingKind::CertificateNotObservable,
    ];
}

/// One finding.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// Stable id (session id plus kind plus index): replays are idempotent.
    pub finding_id: String,
    /// The kind string (see DESIGN.md).
    pub kind: FindingKind,
    /// The session it belongs to, when there is one.
    pub session_id: Option<String>,
    /// When the evidence was seen.
    pub ts: Micros,
    /// The sensor.
    pub sensor: String,
    /// The client (the side that opened the connection or asked the question).
    #[serde(flatten, with = "super::client_prefix")]
    pub client: Endpoint,
    /// The server.
    #[serde(flatten, with = "super::server_prefix")]
    pub server: Endpoint,
    /// Community ID of the flow.
    pub community_id: String,
    /// Kind-specific proof.
    pub evidence: serde_json::Value,
}

/// The id of a record's finding: `<record id>-<n>`. Written piece by piece (`format!` was most
/// of the cost of adding a finding), into the capacity `format!` reaches, which the memory
/// budget counts (`record::size`): the same estimates, the same early releases.
pub fn finding_id(record_id: &str, n: usize) -> String {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(n);
    let mut capacity = 0;
    let mut len = 0;
    // `format!` starts empty here (its literal pieces are shorter than 16 bytes and the first is
    // empty) and appends the three pieces one after another.
    for piece in [record_id.len(), 1, digits.len()] {
        len += piece;
        capacity = grown_capacity(capacity, len);
    }
    let mut id = String::with_capacity(capacity);
    id.push_str(record_id);
    id.push('-');
    id.push_str(digits);
    id
}

/// A `String`'s capacity after growing from `capacity` to hold `needed` bytes, as `Vec` grows:
/// at least doubling, and never below 8 bytes.
fn grown_capacity(capacity: usize, needed: usize) -> usize {
    if needed <= capacity {
        capacity
    } else {
        (capacity * 2).max(needed).max(8)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_ids_are_what_format_makes_to_the_byte_and_the_capacity() {
        for len in 0..70 {
            let record_id: String = "S0123456789abcdef".chars().cycle().take(len).collect();
            for n in [0, 1, 7, 9, 10, 99, 100, 12_345, usize::MAX] {
                let made = finding_id(&record_id, n);
                let formatted = format!("{record_id}-{n}");
                assert_eq!(made, formatted);
                assert_eq!(made.capacity(), formatted.capacity(), "{len} {n}");
            }
        }
    }

    #[test]
    fn serialised_names_are_the_stable_strings() {
        for k in FindingKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        let mut sorted = FindingKind::ALL;
        sorted.sort();
        assert_eq!(
            sorted,
            FindingKind::ALL,
            "ALL must be in severity (declaration) order"
        );
    }
}
