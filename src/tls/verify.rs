//! Certificate path validation with `rustls-webpki` against the Mozilla root set
//! (`webpki-roots`) plus any anchors the user adds, evaluated at the capture time. Intermediates a
//! server failed to send are taken from other sessions of the run, as a browser's cache would.
//! Results are cached per chain and day, so a busy server costs one validation.

use ahash::AHashMap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use std::time::Duration;
use webpki::{EndEntityCert, KeyUsage};

/// Intermediates remembered from other sessions.
const MAX_LEARNED: usize = 10_000;
/// Cached validation results.
const MAX_CACHE: usize = 100_000;
/// Learned intermediates tried for one chain.
const MAX_EXTRA_INTERMEDIATES: usize = 8;

/// The verdict on a chain's trust (expiry is judged separately from the leaf's dates).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// A path to a trust anchor exists.
    Trusted {
        /// Intermediates taken from other sessions to build it.
        learned_intermediates: usize,
    },
    /// No path: the reason as webpki states it.
    NotTrusted(String),
}

/// Path validation state for one run.
pub struct Validator {
    anchors: Vec<TrustAnchor<'static>>,
    /// Learned CA certificates (DER) by subject DN (DER).
    learned: AHashMap<Vec<u8>, Vec<u8>>,
    /// Verdicts by chain (its certificates' fingerprints, leaf first) and by day: looked up by
    /// the caller's fingerprints as they are, without building a key per session.
    cache: AHashMap<Vec<String>, Vec<(i64, Trust)>>,
    /// (chain, day) verdicts in `cache`.
    cached: usize,
}

impl Validator {
    /// The Mozilla roots plus the PEM certificates in `extra_pem` (private PKIs, test CAs).
    pub fn new(extra_pem: &[Vec<u8>]) -> Result<Validator, String> {
        let mut anchors: Vec<TrustAnchor<'static>> = webpki_roots::TLS_SERVER_ROOTS.to_vec();
        for pem in extra_pem {
            let mut found = 0;
            for der in CertificateDer::pem_slice_iter(pem) {
                let der = der.map_err(|e| format!("bad PEM: {e}"))?;
                let anchor = webpki::anchor_from_trusted_cert(&der)
                    .map_err(|e| format!("not a usable CA certificate: {e}"))?
                    .to_owned();
                anchors.push(anchor);
                found += 1;
            }
            if found == 0 {
                return Err("no certificate in PEM input".into());
            }
        }
        Ok(Validator {
            anchors,
            learned: AHashMap::new(),
            cache: AHashMap::new(),
            cached: 0,
        })
    }

    /// Remembers the CA certificates of a chain (everything after the leaf).
    pub fn learn(&mut self, chain: &[Vec<u8>]) {
        for der in chain.iter().skip(1) {
            if self.learned.len() >= MAX_LEARNED {
                return;
            }
            if let Ok((_, c)) = x509_parser::parse_x509_certificate(der) {
                let subject = c.subject().as_raw().to_vec();
                self.learned.entry(subject).or_insert_with(|| der.clone());
            }
        }
    }

    /// Judges whether `chain` (leaf first) leads to a trust anchor at `at_s` (seconds). The
    /// caller picks a time inside the leaf's validity so that expiry is not mistaken for
    /// distrust.
    /// `fingerprints` identify the chain (SHA-256 of each certificate, in order): the verdict is
    /// cached per chain and day, the first one of the day standing for the rest of it.
    pub fn trust(&mut self, chain: &[Vec<u8>], fingerprints: &[String], at_s: i64) -> &Trust {
        let day = at_s.div_euclid(86_400);
        let known = self
            .cache
            .get(fingerprints)
            .and_then(|days| days.iter().position(|(d, _)| *d == day));
        if known.is_none() {
            let t = self
                .validate(chain, at_s, None)
                .map_or_else(Trust::NotTrusted, |learned| Trust::Trusted {
                    learned_intermediates: learned,
                });
            if self.cached >= MAX_CACHE {
                self.cache.clear();
                self.cached = 0;
            }
            self.cached += 1;
            let days = match self.cache.get_mut(fingerprints) {
                Some(days) => days,
                None => self.cache.entry(fingerprints.to_vec()).or_default(),
            };
            days.push((day, t));
        }
        let days = &self.cache[fingerprints];
        &days[known.unwrap_or(days.len() - 1)].1
    }

    /// Validates `chain` at `at_s` against `anchor` when given (DANE-TA), else against the
    /// configured anchors. Returns the number of learned intermediates used.
    pub fn validate(
        &self,
        chain: &[Vec<u8>],
        at_s: i64,
        anchor: Option<&[u8]>,
    ) -> Result<usize, String> {
        let leaf_der = chain.first().ok_or("no certificate")?;
        let leaf_cert = CertificateDer::from(leaf_der.as_slice());
        let leaf = EndEntityCert::try_from(&leaf_cert).map_err(|e| format!("leaf: {e}"))?;
        let mut intermediates: Vec<CertificateDer<'_>> = chain
            .iter()
            .skip(1)
            .map(|d| CertificateDer::from(d.as_slice()))
            .collect();
        let sent = intermediates.len();
        // Add learned CA certificates whose subject is the issuer of a certificate we have.
        let mut wanted: Vec<Vec<u8>> = Vec::new();
        for der in chain {
            if let Ok((_, c)) = x509_parser::parse_x509_certificate(der) {
                wanted.push(c.issuer().as_raw().to_vec());
            }
        }
        let mut i = 0;
        while i < wanted.len() && intermediates.len() < sent + MAX_EXTRA_INTERMEDIATES {
            if let Some(der) = self.learned.get(&wanted[i])
                && !chain.contains(der)
            {
                intermediates.push(CertificateDer::from(der.as_slice()));
                if let Ok((_, c)) = x509_parser::parse_x509_certificate(der)
                    && c.issuer().as_raw() != c.subject().as_raw()
                {
                    wanted.push(c.issuer().as_raw().to_vec());
                }
            }
            i += 1;
        }
        let time = UnixTime::since_unix_epoch(Duration::from_secs(at_s.max(0) as u64));
        let custom;
        let anchors: &[TrustAnchor<'_>] = match anchor {
            Some(der) => {
                let der = CertificateDer::from(der);
                custom = [webpki::anchor_from_trusted_cert(&der)
                    .map_err(|e| format!("TLSA anchor: {e}"))?
                    .to_owned()];
                &custom
            }
            None => &self.anchors,
        };
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            anchors,
            &intermediates,
            time,
            KeyUsage::server_auth(),
            None,
            None,
        )
        .map(|_| intermediates.len() - sent)
        .map_err(|e| format!("{e}"))
    }

    /// Trust anchors configured (Mozilla plus extra).
    pub fn anchor_count(&self) -> usize {
        self.anchors.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, date_time_ymd,
    };

    /// A leaf for `mx.example.com` valid 2025 to 2028 and its CA's PEM.
    fn pki() -> (Vec<u8>, String) {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "verify test CA");
        ca.not_before = date_time_ymd(2020, 1, 1);
        ca.not_after = date_time_ymd(2040, 1, 1);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let mut leaf = CertificateParams::new(vec!["mx.example.com".to_string()]).unwrap();
        leaf.not_before = date_time_ymd(2025, 1, 1);
        leaf.not_after = date_time_ymd(2028, 1, 1);
        let leaf = leaf.signed_by(&KeyPair::generate().unwrap(), &ca).unwrap();
        (leaf.der().to_vec(), ca.pem())
    }

    #[test]
    fn verdicts_are_cached_per_chain_and_day() {
        let (leaf, ca_pem) = pki();
        let mut v = Validator::new(&[ca_pem.into_bytes()]).unwrap();
        let chain = vec![leaf];
        let fps = vec!["a".repeat(64)];
        // 2026-06-01 and 2030-06-01 (the leaf has expired by then).
        let (inside, after) = (1_780_272_000, 1_906_502_400);
        assert!(matches!(
            v.trust(&chain, &fps, inside),
            Trust::Trusted { .. }
        ));
        assert!(matches!(v.trust(&chain, &fps, after), Trust::NotTrusted(_)));
        // Later the same day: the day's first verdict stands.
        assert!(matches!(
            v.trust(&chain, &fps, inside + 3_600),
            Trust::Trusted { .. }
        ));
        assert!(matches!(
            v.trust(&chain, &fps, after + 3_600),
            Trust::NotTrusted(_)
        ));
        // Another chain (other fingerprints) is judged on its own.
        let other = vec!["b".repeat(64)];
        assert!(matches!(
            v.trust(&chain, &other, after),
            Trust::NotTrusted(_)
        ));
        assert_eq!(v.cached, 3);
        assert_eq!(v.cache.len(), 2);
    }
}
