//! Certificates and the names and TLSA records they are judged by: `tls::cert::parse` and
//! `spki_der` on arbitrary DER, `tls::names::covers` on arbitrary names, and
//! `tls::dane::TlsaStore::parse` on arbitrary zone text. None may panic; a parsed certificate's
//! fingerprint must be the SHA-256 of the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stripwatch::tls::{cert, dane, names};

fuzz_target!(|data: &[u8]| {
    if let Some(info) = cert::parse(data) {
        assert_eq!(info.fingerprint, cert::sha256_hex(data));
        let _ = cert::weaknesses(&info);
        let _ = names::covers(&info.san_dns, info.subject_cn.as_deref(), "mx.example.com");
        let _ = serde_json::to_string(&info).unwrap();
    }
    let _ = cert::spki_der(data);
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(2, '\n');
    let (pattern, host) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let _ = names::covers(&[pattern.to_string()], Some(pattern), host);
    let _ = names::normalise(host);
    if let Ok(store) = dane::TlsaStore::parse(&text) {
        let _ = store.lookup(host, 25);
    }
});
