//! The certificate records stripwatch writes (`certificates.ndjson`): one per distinct
//! certificate, with the facts a report needs.

use super::Micros;
use serde::Serialize;

/// What stripwatch records about one certificate.
#[derive(Clone, Debug, Serialize)]
pub struct CertInfo {
    /// SHA-256 of the DER certificate, lowercase hex: the certificate's identity.
    pub fingerprint: String,
    /// SHA-256 of the SubjectPublicKeyInfo: the key's identity (what DANE `x 1 1` pins).
    pub spki_sha256: String,
    /// Subject distinguished name.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Subject common name.
    pub subject_cn: Option<String>,
    /// DNS names in the subject alternative name extension.
    pub san_dns: Vec<String>,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Start of validity, seconds since the epoch.
    #[serde(skip)]
    pub not_before_s: i64,
    /// End of validity, seconds since the epoch.
    #[serde(skip)]
    pub not_after_s: i64,
    /// Serial number, hex.
    pub serial: String,
    /// `RSA`, `EC`, `Ed25519`, `DSA` or the algorithm OID.
    pub key_type: String,
    /// Key size in bits, when known.
    pub key_bits: Option<u32>,
    /// Signature algorithm name (`sha256WithRSAEncryption`).
    pub signature_algorithm: String,
    /// Issuer equals subject and the certificate's own key verifies its signature.
    pub self_signed: bool,
    /// Basic constraints say CA.
    pub is_ca: bool,
}

/// One line of `certificates.ndjson`.
#[derive(Clone, Debug, Serialize)]
pub struct CertificateRecord {
    /// Parsed facts (fingerprint first).
    #[serde(flatten)]
    pub info: CertInfo,
    /// First session that presented it.
    pub first_seen: Micros,
    /// Last session that presented it.
    pub last_seen: Micros,
    /// Sessions that presented it.
    pub sessions: u64,
    /// `ip:port` of servers that presented it (bounded).
    pub servers: Vec<String>,
    /// Presented as the leaf (else as a CA certificate in a chain).
    pub leaf: bool,
}
