//! Server certificates: the facts a report needs (names, validity, key, signature) parsed with
//! `x509-parser`, and the fingerprints that identify a certificate and its key across sessions.

use crate::record::CertInfo;
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;
use x509_parser::public_key::PublicKey;

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
