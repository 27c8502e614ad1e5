//! Server certificates: the facts a report needs (names, validity, key, signature) parsed with
//! `x509-parser`, and the fingerprints that identify a certificate and its key across sessions.

use serde::Serialize;
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;
use x509_parser::public_key::PublicKey;

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

/// Why a certificate is weak: RSA under 2048 bits, DSA, SHA-1 or MD5 signatures.
pub fn weaknesses(c: &CertInfo) -> Vec<&'static str> {
    let mut out = Vec::new();
    if c.key_type == "RSA" && c.key_bits.is_some_and(|b| b < 2048) {
        out.push("rsa-key-under-2048-bits");
    }
    if c.key_type == "DSA" {
        out.push("dsa-key");
    }
    let sig = c.signature_algorithm.to_ascii_lowercase();
    if sig.contains("sha1") || sig.contains("sha-1") {
        out.push("sha1-signature");
    }
    if sig.contains("md5") || sig.contains("md2") {
        out.push("md5-signature");
    }
    out
}

/// SHA-256 as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The DER SubjectPublicKeyInfo of a certificate (what DANE selector 1 hashes).
pub fn spki_der(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(cert.public_key().raw.to_vec())
}

/// Parses a DER certificate; `None` when it is not a certificate.
pub fn parse(der: &[u8]) -> Option<CertInfo> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let san_dns = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .take(256)
            .collect(),
        _ => Vec::new(),
    };
    let subject_cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let spki = cert.public_key();
    let (key_type, key_bits) = match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => ("RSA".to_string(), Some(rsa.key_size() as u32)),
        Ok(PublicKey::EC(ec)) => ("EC".to_string(), Some(ec.key_size() as u32)),
        Ok(PublicKey::DSA(_)) => ("DSA".to_string(), None),
        _ => {
            let oid = spki.algorithm.algorithm.to_id_string();
            let name = match oid.as_str() {
                "1.3.101.112" => "Ed25519".to_string(),
                "1.3.101.113" => "Ed448".to_string(),
                _ => oid,
            };
            let bits = (name == "Ed25519").then_some(256);
            (name, bits)
        }
    };
    let sig_oid = &cert.signature_algorithm.algorithm;
    let signature_algorithm = oid2sn(sig_oid, oid_registry())
        .map(str::to_string)
        .unwrap_or_else(|_| sig_oid.to_id_string());
    let same_name = cert.subject().as_raw() == cert.issuer().as_raw();
    let self_signed = same_name && cert.verify_signature(None).is_ok();
    let not_before_s = cert.validity().not_before.timestamp();
    let not_after_s = cert.validity().not_after.timestamp();
    Some(CertInfo {
        fingerprint: sha256_hex(der),
        spki_sha256: sha256_hex(spki.raw),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        subject_cn,
        san_dns,
        not_before: crate::util::rfc3339_micros(not_before_s.saturating_mul(1_000_000)),
        not_after: crate::util::rfc3339_micros(not_after_s.saturating_mul(1_000_000)),
        not_before_s,
        not_after_s,
        serial: cert.raw_serial_as_string().replace(':', ""),
        key_type,
        key_bits,
        signature_algorithm,
        self_signed,
        is_ca: cert.is_ca(),
    })
}
