//! DANE for SMTP (RFC 7672): TLSA records for `_25._tcp.<mx>` pin the server's certificate or
//! its issuing CA. Usages 3 (DANE-EE: the leaf, names and dates ignored) and 2 (DANE-TA: a CA in
//! the chain, with name and date checks) are the ones SMTP uses; 0 and 1 are unusable there.

use super::cert::spki_der;
use super::verify::Validator;
use crate::record::Tlsa;
use ahash::AHashMap;
use sha2::{Digest, Sha256, Sha512};

impl Tlsa {
    /// True when this record's association data matches `cert_der`.
    pub fn matches_cert(&self, cert_der: &[u8]) -> bool {
        let selected = match self.selector {
            0 => cert_der.to_vec(),
            1 => match spki_der(cert_der) {
                Some(s) => s,
                None => return false,
            },
            _ => return false,
        };
        match self.matching_type {
            0 => selected == self.data,
            1 => Sha256::digest(&selected).as_slice() == self.data.as_slice(),
            2 => Sha512::digest(&selected).as_slice() == self.data.as_slice(),
            _ => false,
        }
    }
}

/// TLSA records by owner name (`_25._tcp.mx.example.com`, lowercase, no trailing dot).
#[derive(Clone, Debug, Default)]
pub struct TlsaStore {
    by_owner: AHashMap<String, Vec<Tlsa>>,
}

/// A line of a TLSA file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct TlsaParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl TlsaStore {
    /// Reads zone-file lines: `_25._tcp.mx.example.com. [TTL] [IN] TLSA 3 1 1 <hex>`. Comments
    /// (`;`) and blank lines are skipped; any other line must be a TLSA record.
    pub fn parse(text: &str) -> Result<TlsaStore, TlsaParseError> {
        let mut store = TlsaStore::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split(';').next().unwrap_or("").trim();
            if line.is_empty() || line.starts_with('$') {
                continue;
            }
            let err = |reason: &str| TlsaParseError {
                line: i + 1,
                reason: reason.to_string(),
            };
            let tokens: Vec<&str> = line.split_whitespace().collect();
            let pos = tokens
                .iter()
                .position(|t| t.eq_ignore_ascii_case("TLSA"))
                .ok_or_else(|| err("not a TLSA record"))?;
            if pos == 0 || tokens.len() < pos + 5 {
                return Err(err(
                    "expected OWNER [TTL] [IN] TLSA USAGE SELECTOR TYPE DATA",
                ));
            }
            let num = |t: &str| {
                t.parse::<u8>()
                    .map_err(|_| err("usage, selector and type are numbers"))
            };
            let hexdata: String = tokens[pos + 4..].concat();
            let data = hex::decode(&hexdata).map_err(|_| err("association data is not hex"))?;
            let rec = Tlsa {
                usage: num(tokens[pos + 1])?,
                selector: num(tokens[pos + 2])?,
                matching_type: num(tokens[pos + 3])?,
                data,
            };
            let owner = tokens[0].trim_end_matches('.').to_ascii_lowercase();
            store.by_owner.entry(owner).or_default().push(rec);
        }
        Ok(store)
    }

    /// Adds one record (from DNS traffic, later).
    pub fn insert(&mut self, owner: &str, rec: Tlsa) {
        let owner = owner.trim_end_matches('.').to_ascii_lowercase();
        let list = self.by_owner.entry(owner).or_default();
        if !list.contains(&rec) && list.len() < 32 {
            list.push(rec);
        }
    }

    /// The records for a server host and port.
    pub fn lookup(&self, host: &str, port: u16) -> Option<&[Tlsa]> {
        // Most runs have no `--tlsa` file: no owner name to build per session.
        if self.by_owner.is_empty() {
            return None;
        }
        let owner = format!(
            "_{port}._tcp.{}",
            host.trim_end_matches('.').to_ascii_lowercase()
        );
        self.by_owner.get(&owner).map(Vec::as_slice)
    }

    /// Number of owner names.
    pub fn len(&self) -> usize {
        self.by_owner.len()
    }

    /// True when no record is loaded.
    pub fn is_empty(&self) -> bool {
        self.by_owner.is_empty()
    }
}

/// What DANE says about a presented chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaneOutcome {
    /// No usable record: DANE does not apply (RFC 7672 §2.2).
    NoUsableRecords,
    /// A usable record matched (and, for DANE-TA, the chain, name and dates checked out).
    Valid {
        /// The matching record.
        record: Tlsa,
    },
    /// Usable records exist and none authenticates the chain.
    Invalid {
        /// Why each usable record failed.
        reasons: Vec<String>,
    },
}

/// Checks a chain (leaf first) against the records for `host`, at `at_s`.
pub fn check(
    records: &[Tlsa],
    chain: &[Vec<u8>],
    host: &str,
    at_s: i64,
    validator: &Validator,
) -> DaneOutcome {
    let usable: Vec<&Tlsa> = records.iter().filter(|r| r.usable()).collect();
    if usable.is_empty() {
        return DaneOutcome::NoUsableRecords;
    }
    let mut reasons = Vec::new();
    for rec in usable {
        match rec.usage {
            3 => {
                if chain.first().is_some_and(|leaf| rec.matches_cert(leaf)) {
                    return DaneOutcome::Valid {
                        record: rec.clone(),
                    };
                }
                reasons.push(format!(
                    "3 {} {}: leaf does not match",
                    rec.selector, rec.matching_type
                ));
            }
            2 => {
                let Some(ta) = chain.iter().skip(1).find(|c| rec.matches_cert(c)) else {
                    reasons.push(format!(
                        "2 {} {}: no certificate in the chain matches",
                        rec.selector, rec.matching_type
                    ));
                    continue;
                };
                // The chain up to (not including) the trust anchor, validated against it.
                let upto: Vec<Vec<u8>> = chain.iter().take_while(|c| *c != ta).cloned().collect();
                match validator.validate(&upto, at_s, Some(ta)) {
                    Ok(_) => {
                        let name_ok = chain
                            .first()
                            .and_then(|l| super::cert::parse(l))
                            .is_some_and(|l| {
                                super::names::covers(&l.san_dns, l.subject_cn.as_deref(), host)
                            });
                        if name_ok {
                            return DaneOutcome::Valid {
                                record: rec.clone(),
                            };
                        }
                        reasons.push(format!(
                            "2 {} {}: chain valid but the leaf does not name {host}",
                            rec.selector, rec.matching_type
                        ));
                    }
                    Err(e) => {
                        reasons.push(format!("2 {} {}: {e}", rec.selector, rec.matching_type))
                    }
                }
            }
            _ => {}
        }
    }
    DaneOutcome::Invalid { reasons }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_zone_lines() {
        let s = TlsaStore::parse(
            "; comment\n_25._tcp.MX.example.com. 3600 IN TLSA 3 1 1 ( 0a0b\n\n_25._tcp.mx.example.com. TLSA 2 0 2 ff ee\n",
        );
        assert!(s.is_err(), "parentheses are not hex");
        let s = TlsaStore::parse("_25._tcp.MX.example.com. 3600 IN TLSA 3 1 1 0a0b\n_25._tcp.mx.example.com. TLSA 2 0 2 ff ee\n").unwrap();
        let recs = s.lookup("mx.example.com.", 25).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].data, vec![0xff, 0xee]);
        assert!(s.lookup("mx.example.com", 587).is_none());
        assert!(TlsaStore::parse("mx.example.com. IN A 192.0.2.1").is_err());
        assert!(TlsaStore::parse("_25._tcp.x. TLSA 3 1 1 zz").is_err());
    }

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, date_time_ymd,
    };

    /// A CA and a leaf for `name` valid in `years`; returns (leaf DER, CA DER).
    fn pki(name: &str, years: (i32, i32)) -> (Vec<u8>, Vec<u8>) {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "dane test CA");
        ca.not_before = date_time_ymd(2020, 1, 1);
        ca.not_after = date_time_ymd(2040, 1, 1);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let mut leaf = CertificateParams::new(vec![name.to_string()]).unwrap();
        leaf.not_before = date_time_ymd(years.0, 1, 1);
        leaf.not_after = date_time_ymd(years.1, 1, 1);
        let leaf = leaf.signed_by(&KeyPair::generate().unwrap(), &ca).unwrap();
        (leaf.der().to_vec(), ca.der().to_vec())
    }

    fn association(cert: &[u8], selector: u8, matching_type: u8) -> Vec<u8> {
        let selected = if selector == 0 {
            cert.to_vec()
        } else {
            spki_der(cert).unwrap()
        };
        match matching_type {
            0 => selected,
            1 => Sha256::digest(&selected).to_vec(),
            _ => Sha512::digest(&selected).to_vec(),
        }
    }

    /// 2026-06-01, inside the valid leaf's dates.
    const AT: i64 = 1_780_272_000;

    #[test]
    fn every_usage_selector_and_matching_type() {
        let v = Validator::new(&[]).unwrap();
        let (leaf, ca) = pki("mx.example.com", (2025, 2028));
        let (other_leaf, other_ca) = pki("mx.example.com", (2025, 2028));
        let chain = vec![leaf.clone(), ca.clone()];
        for usage in [2u8, 3] {
            let target = if usage == 3 { &leaf } else { &ca };
            let wrong = if usage == 3 { &other_leaf } else { &other_ca };
            for selector in [0u8, 1] {
                for matching_type in [0u8, 1, 2] {
                    let good = Tlsa {
                        usage,
                        selector,
                        matching_type,
                        data: association(target, selector, matching_type),
                    };
                    let outcome = check(
                        std::slice::from_ref(&good),
                        &chain,
                        "mx.example.com",
                        AT,
                        &v,
                    );
                    assert_eq!(
                        outcome,
                        DaneOutcome::Valid {
                            record: good.clone()
                        },
                        "{usage} {selector} {matching_type}"
                    );
                    let bad = Tlsa {
                        data: association(wrong, selector, matching_type),
                        ..good
                    };
                    let outcome = check(&[bad], &chain, "mx.example.com", AT, &v);
                    assert!(
                        matches!(outcome, DaneOutcome::Invalid { .. }),
                        "{usage} {selector} {matching_type}: {outcome:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn dane_ee_ignores_names_and_dates_dane_ta_does_not() {
        let v = Validator::new(&[]).unwrap();
        let (leaf, ca) = pki("other.example.net", (2021, 2022));
        let chain = vec![leaf.clone(), ca.clone()];
        let ee = Tlsa {
            usage: 3,
            selector: 1,
            matching_type: 1,
            data: association(&leaf, 1, 1),
        };
        assert!(matches!(
            check(&[ee], &chain, "mx.example.com", AT, &v),
            DaneOutcome::Valid { .. }
        ));
        let ta = Tlsa {
            usage: 2,
            selector: 0,
            matching_type: 1,
            data: association(&ca, 0, 1),
        };
        // Expired leaf: the chain does not validate at the capture time.
        assert!(matches!(
            check(
                std::slice::from_ref(&ta),
                &chain,
                "other.example.net",
                AT,
                &v
            ),
            DaneOutcome::Invalid { .. }
        ));
        // Valid dates but the wrong name.
        let (leaf, ca) = pki("other.example.net", (2025, 2028));
        let ta = Tlsa {
            usage: 2,
            selector: 0,
            matching_type: 1,
            data: association(&ca, 0, 1),
        };
        let chain = vec![leaf, ca];
        assert!(matches!(
            check(std::slice::from_ref(&ta), &chain, "mx.example.com", AT, &v),
            DaneOutcome::Invalid { .. }
        ));
        assert!(matches!(
            check(&[ta], &chain, "other.example.net", AT, &v),
            DaneOutcome::Valid { .. }
        ));
    }

    #[test]
    fn unusable_usages_are_ignored() {
        let v = Validator::new(&[]).unwrap();
        let recs = [Tlsa {
            usage: 1,
            selector: 1,
            matching_type: 1,
            data: vec![0; 32],
        }];
        assert_eq!(check(&recs, &[], "mx", 0, &v), DaneOutcome::NoUsableRecords);
    }
}
