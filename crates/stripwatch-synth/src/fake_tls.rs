//! Plausible TLS records for synthetic sessions.
//!
//! The analyzer only needs TLS to look like TLS: a real ClientHello (with SNI) that parsers
//! accept, a ServerHello, then opaque records. The handshake modelled is a TLS 1.2 session
//! *resumption* (the ServerHello echoes the client's session id and goes straight to
//! ChangeCipherSpec + Finished): a real, well-formed exchange that carries no certificate, so
//! no certificate judgement can be made about these synthetic servers (and none should be).

use super::prng::Prng;

/// Record content types.
const CHANGE_CIPHER_SPEC: u8 = 0x14;
const ALERT: u8 = 0x15;
const HANDSHAKE: u8 = 0x16;
const APPLICATION_DATA: u8 = 0x17;

/// Bytes an AES-GCM record adds to its plaintext (explicit nonce + tag).
const AEAD_OVERHEAD: usize = 24;
/// Largest plaintext fragment of one record.
const MAX_FRAGMENT: usize = 16_384;

/// Appends one record: type, version, length, body.
fn push_record(out: &mut Vec<u8>, content_type: u8, version: u16, body: &[u8]) {
    out.push(content_type);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// Wraps a handshake body in its 4-byte header (type, 24-bit length).
fn handshake(msg_type: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + body.len());
    out.push(msg_type);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(body);
    out
}

/// Appends an extension (type, 16-bit length, data).
fn push_ext(out: &mut Vec<u8>, ext_type: u16, data: &[u8]) {
    out.extend_from_slice(&ext_type.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

/// A TLS 1.2 ClientHello record (record version 0x0301, as most clients send) naming `sni`
/// and offering to resume `session_id`.
pub fn client_hello(prng: &mut Prng, sni: &str, session_id: &[u8; 32]) -> Vec<u8> {
    client_hello_with(prng, sni, session_id, false)
}

/// A ClientHello as [`client_hello`]; with `tls13` it also offers TLS 1.3
/// (`supported_versions` and an X25519 `key_share`), as current MTAs do.
pub fn client_hello_with(
    prng: &mut Prng,
    sni: &str,
    session_id: &[u8; 32],
    tls13: bool,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(256);
    body.extend_from_slice(&[0x03, 0x03]);
    let mut random = [0u8; 32];
    prng.fill(&mut random);
    body.extend_from_slice(&random);
    body.push(32);
    body.extend_from_slice(session_id);
    let suites: [u16; 14] = [
        0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0x009e, 0x009f, 0xc013, 0xc014, 0x009c,
        0x009d, 0x002f, 0x00ff,
    ];
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null only

    let mut ext = Vec::with_capacity(128);
    let name = sni.as_bytes();
    let mut sni_data = Vec::with_capacity(name.len() + 5);
    sni_data.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni_data.push(0); // host_name
    sni_data.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni_data.extend_from_slice(name);
    push_ext(&mut ext, 0x0000, &sni_data);
    push_ext(&mut ext, 0x000b, &[3, 0, 1, 2]); // ec_point_formats
    push_ext(
        &mut ext,
        0x000a,
        &[0, 8, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18, 0x00, 0x19],
    ); // groups
    push_ext(&mut ext, 0x0023, &[]); // session_ticket
    push_ext(&mut ext, 0x0016, &[]); // encrypt_then_mac
    push_ext(&mut ext, 0x0017, &[]); // extended_master_secret
    push_ext(
        &mut ext,
        0x000d,
        &[
            0, 14, 0x04, 0x03, 0x05, 0x03, 0x06, 0x03, 0x08, 0x04, 0x08, 0x05, 0x08, 0x06, 0x04,
            0x01,
        ],
    ); // signature_algorithms
    if tls13 {
        push_ext(&mut ext, 0x002b, &[4, 0x03, 0x04, 0x03, 0x03]); // supported_versions
        push_ext(&mut ext, 0x0033, &key_share(prng, true)); // key_share
    }
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);

    let mut out = Vec::with_capacity(body.len() + 9);
    push_record(&mut out, HANDSHAKE, 0x0301, &handshake(1, &body));
    out
}

/// The server's flight of an abbreviated (resumed) TLS 1.2 handshake: ServerHello echoing
/// `session_id`, ChangeCipherSpec, encrypted Finished.
pub fn server_resume_flight(prng: &mut Prng, session_id: &[u8; 32]) -> Vec<u8> {
    let ext = tls12_server_extensions();
    let mut out = Vec::with_capacity(160);
    push_record(
        &mut out,
        HANDSHAKE,
        0x0303,
        &server_hello(prng, session_id, 0xc02f, &ext), // ECDHE-RSA-AES128-GCM-SHA256
    );
    out.extend_from_slice(&change_cipher_spec_and_finished(prng));
    out
}

/// renegotiation_info and extended_master_secret, as a TLS 1.2 server answers.
fn tls12_server_extensions() -> Vec<u8> {
    let mut ext = Vec::new();
    push_ext(&mut ext, 0xff01, &[0]); // renegotiation_info
    push_ext(&mut ext, 0x0017, &[]); // extended_master_secret
    ext
}

/// An X25519 key share: the client's list form, or the server's single entry.
fn key_share(prng: &mut Prng, client: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(38);
    if client {
        out.extend_from_slice(&36u16.to_be_bytes());
    }
    out.extend_from_slice(&[0x00, 0x1d, 0, 32]);
    let mut key = [0u8; 32];
    prng.fill(&mut key);
    out.extend_from_slice(&key);
    out
}

/// A ServerHello body: version field 1.2, a fresh random, `session_id`, `suite`, then `ext`.
fn server_hello(prng: &mut Prng, session_id: &[u8; 32], suite: u16, ext: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(80 + ext.len());
    body.extend_from_slice(&[0x03, 0x03]);
    let mut random = [0u8; 32];
    prng.fill(&mut random);
    body.extend_from_slice(&random);
    body.push(32);
    body.extend_from_slice(session_id);
    body.extend_from_slice(&suite.to_be_bytes());
    body.push(0);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(ext);
    handshake(2, &body)
}

/// The server's first flight of a full TLS 1.2 handshake: ServerHello with a new session id,
/// Certificate carrying `chain` (DER certificates, leaf first), ServerKeyExchange (a random
/// X25519 key and signature) and ServerHelloDone, in one handshake record.
pub fn server_full_flight(prng: &mut Prng, chain: &[&[u8]]) -> Vec<u8> {
    let mut sid = [0u8; 32];
    prng.fill(&mut sid);
    let ext = tls12_server_extensions();
    let mut msgs = server_hello(prng, &sid, 0xc02f, &ext);
    let mut list = Vec::new();
    for cert in chain {
        list.extend_from_slice(&(cert.len() as u32).to_be_bytes()[1..]);
        list.extend_from_slice(cert);
    }
    let mut certs = Vec::with_capacity(list.len() + 3);
    certs.extend_from_slice(&(list.len() as u32).to_be_bytes()[1..]);
    certs.extend_from_slice(&list);
    msgs.extend_from_slice(&handshake(11, &certs));
    // ServerKeyExchange: named curve x25519, the key, rsa_pss_rsae_sha256, a 256-byte signature.
    let mut ske = vec![3, 0x00, 0x1d, 32];
    let mut key = [0u8; 32];
    prng.fill(&mut key);
    ske.extend_from_slice(&key);
    ske.extend_from_slice(&[0x08, 0x04, 0x01, 0x00]);
    let start = ske.len();
    ske.resize(start + 256, 0);
    prng.fill(&mut ske[start..]);
    msgs.extend_from_slice(&handshake(12, &ske));
    msgs.extend_from_slice(&handshake(14, &[]));
    let mut out = Vec::with_capacity(msgs.len() + 5);
    push_record(&mut out, HANDSHAKE, 0x0303, &msgs);
    out
}

/// The client's second flight of a full TLS 1.2 handshake: ClientKeyExchange, then
/// ChangeCipherSpec and Finished.
pub fn client_key_exchange_and_finished(prng: &mut Prng) -> Vec<u8> {
    let mut cke = vec![32u8];
    let mut key = [0u8; 32];
    prng.fill(&mut key);
    cke.extend_from_slice(&key);
    let mut out = Vec::with_capacity(100);
    push_record(&mut out, HANDSHAKE, 0x0303, &handshake(16, &cke));
    out.extend_from_slice(&change_cipher_spec_and_finished(prng));
    out
}

/// The server's first flight of a TLS 1.3 handshake: ServerHello (echoing `session_id`, with
/// `supported_versions` 1.3 and a key share), the compatibility ChangeCipherSpec, then the
/// encrypted EncryptedExtensions/Certificate/CertificateVerify/Finished as application data of
/// about `encrypted_len` bytes. The certificate is not visible on the wire.
pub fn server_tls13_flight(
    prng: &mut Prng,
    session_id: &[u8; 32],
    encrypted_len: usize,
) -> Vec<u8> {
    let mut ext = Vec::new();
    push_ext(&mut ext, 0x002b, &[0x03, 0x04]); // supported_versions
    push_ext(&mut ext, 0x0033, &key_share(prng, false)); // key_share
    let mut out = Vec::with_capacity(encrypted_len + 200);
    push_record(
        &mut out,
        HANDSHAKE,
        0x0303,
        &server_hello(prng, session_id, 0x1301, &ext),
    );
    push_record(&mut out, CHANGE_CIPHER_SPEC, 0x0303, &[1]);
    out.extend_from_slice(&application_data(prng, encrypted_len));
    out
}

/// The client's TLS 1.3 Finished: compatibility ChangeCipherSpec and one encrypted record.
pub fn client_tls13_finished(prng: &mut Prng) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    push_record(&mut out, CHANGE_CIPHER_SPEC, 0x0303, &[1]);
    out.extend_from_slice(&application_data(prng, 33));
    out
}

/// ChangeCipherSpec followed by an encrypted Finished handshake record.
pub fn change_cipher_spec_and_finished(prng: &mut Prng) -> Vec<u8> {
    let mut out = Vec::with_capacity(6 + 45);
    push_record(&mut out, CHANGE_CIPHER_SPEC, 0x0303, &[1]);
    let mut finished = [0u8; 16 + AEAD_OVERHEAD];
    prng.fill(&mut finished);
    push_record(&mut out, HANDSHAKE, 0x0303, &finished);
    out
}

/// A fatal `handshake_failure` alert in the clear, as a server sends instead of ServerHello.
pub fn handshake_failure_alert() -> Vec<u8> {
    let mut out = Vec::with_capacity(7);
    push_record(&mut out, ALERT, 0x0303, &[2, 40]);
    out
}

/// Application-data records that would carry `plaintext_len` bytes (split at 16 KiB),
/// filled with random "ciphertext".
pub fn application_data(prng: &mut Prng, plaintext_len: usize) -> Vec<u8> {
    let records = plaintext_len.div_ceil(MAX_FRAGMENT).max(1);
    let mut out = Vec::with_capacity(plaintext_len + records * (5 + AEAD_OVERHEAD));
    let mut left = plaintext_len.max(1);
    while left > 0 {
        let n = left.min(MAX_FRAGMENT);
        left -= n;
        let len = n + AEAD_OVERHEAD;
        out.push(APPLICATION_DATA);
        out.extend_from_slice(&0x0303u16.to_be_bytes());
        out.extend_from_slice(&(len as u16).to_be_bytes());
        let start = out.len();
        out.resize(start + len, 0);
        prng.fill(&mut out[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits a byte stream into (type, version, body) records, insisting it parses exactly.
    fn records(mut b: &[u8]) -> Vec<(u8, u16, Vec<u8>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let len = usize::from(u16::from_be_bytes([b[3], b[4]]));
            out.push((
                b[0],
                u16::from_be_bytes([b[1], b[2]]),
                b[5..5 + len].to_vec(),
            ));
            b = &b[5 + len..];
        }
        out
    }

    #[test]
    fn synth_client_hello_is_well_formed_and_names_the_server() {
        let mut p = Prng::new(1);
        let ch = client_hello(&mut p, "mx.example.net", &[7; 32]);
        let recs = records(&ch);
        assert_eq!(recs.len(), 1);
        let (t, v, body) = &recs[0];
        assert_eq!((*t, *v), (0x16, 0x0301));
        assert_eq!(body[0], 1);
        let hs_len = u32::from_be_bytes([0, body[1], body[2], body[3]]) as usize;
        assert_eq!(hs_len + 4, body.len());
        assert_eq!(&body[4..6], &[3, 3]);
        // Walk to the extensions and check their lengths add up.
        let mut i = 4 + 2 + 32;
        i += 1 + usize::from(body[i]);
        i += 2 + usize::from(u16::from_be_bytes([body[i], body[i + 1]]));
        i += 1 + usize::from(body[i]);
        let ext_len = usize::from(u16::from_be_bytes([body[i], body[i + 1]]));
        assert_eq!(i + 2 + ext_len, body.len());
        assert!(body.windows(14).any(|w| w == b"mx.example.net"));
    }

    #[test]
    fn synth_server_flight_and_app_data_are_records() {
        let mut p = Prng::new(2);
        let flight = records(&server_resume_flight(&mut p, &[9; 32]));
        let types: Vec<u8> = flight.iter().map(|r| r.0).collect();
        assert_eq!(types, vec![0x16, 0x14, 0x16]);
        assert_eq!(flight[0].2[0], 2);
        assert_eq!(&flight[0].2[4 + 2 + 32 + 1..4 + 2 + 32 + 1 + 32], &[9; 32]);
        let data = records(&application_data(&mut p, 40_000));
        assert_eq!(
            data.iter().map(|r| r.2.len()).collect::<Vec<_>>(),
            vec![16_408, 16_408, 7_256]
        );
        assert!(data.iter().all(|r| r.0 == 0x17));
        assert_eq!(
            records(&handshake_failure_alert()),
            vec![(0x15, 0x0303, vec![2, 40])]
        );
    }
}
