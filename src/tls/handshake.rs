//! Reads TLS handshake messages of one direction with `tls-parser`: the hellos (versions, SNI,
//! ALPN, cipher), HelloRetryRequest and, up to TLS 1.2, the server's certificate chain. Handshake
//! bytes are collected across records and segments up to a bound; nothing after the switch to
//! encryption is read.

use tls_parser::{
    TlsCipherAu, TlsCipherSuite, TlsExtension, TlsMessage, TlsMessageHandshake,
    parse_tls_extension, parse_tls_message_handshake,
};

/// Handshake bytes held for one incomplete message; a certificate chain fits easily.
const MAX_HANDSHAKE_BUFFER: usize = 64 * 1024;
/// Certificates kept from one chain.
const MAX_CHAIN: usize = 10;
/// Letters kept in the history string.
pub const MAX_HISTORY: usize = 48;

/// The random value that marks a ServerHello as a HelloRetryRequest (RFC 8446 §4.1.3).
const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// What the handshake messages of one direction said.
#[derive(Clone, Debug, Default)]
pub struct HandshakeInfo {
    /// Versions the client offered (supported_versions, else the legacy field).
    pub offered_versions: Vec<u16>,
    /// Server name the client asked for.
    pub sni: Option<String>,
    /// ALPN protocols the client offered.
    pub alpn: Vec<String>,
    /// Cipher suites the client offered.
    pub offered_ciphers: u16,
    /// Version the server chose (supported_versions in TLS 1.3).
    pub version: Option<u16>,
    /// Cipher suite the server chose.
    pub cipher: Option<u16>,
    /// The server asked the client to retry (TLS 1.3 HelloRetryRequest).
    pub hello_retry: bool,
    /// The server's certificate chain, leaf first, DER (TLS 1.2 and earlier).
    pub chain: Vec<Vec<u8>>,
    /// Certificates dropped beyond the chain limit.
    pub chain_truncated: bool,
    /// A handshake message could not be parsed or was larger than the buffer.
    pub malformed: bool,
}

/// Collects and parses the handshake messages of one direction.
#[derive(Default)]
pub struct HandshakeReader {
    buf: Vec<u8>,
    /// Bytes of an oversized message still to skip.
    skip: usize,
    /// Parsed facts.
    pub info: HandshakeInfo,
}

impl HandshakeReader {
    /// Takes body bytes of a handshake record; `letter` is called with one history letter per
    /// complete message (uppercase: this is the client side).
    pub fn feed(&mut self, mut bytes: &[u8], client: bool, history: &mut Vec<u8>) {
        if self.skip > 0 {
            let n = self.skip.min(bytes.len());
            self.skip -= n;
            bytes = &bytes[n..];
        }
        if bytes.is_empty() {
            return;
        }
        if self.buf.len() + bytes.len() > MAX_HANDSHAKE_BUFFER {
            self.info.malformed = true;
            self.buf.clear();
            return;
        }
        // Messages are parsed where they lie: straight from `bytes` when nothing was waiting
        // (the usual case, one message or a flight per record), else from the buffer they
        // complete. Only the incomplete tail is kept, so a message is never copied to be read.
        let mut held = std::mem::take(&mut self.buf);
        let buffered = !held.is_empty();
        let data: &[u8] = if buffered {
            held.extend_from_slice(bytes);
            &held
        } else {
            bytes
        };
        let mut pos = 0;
        loop {
            let rest = &data[pos..];
            if rest.len() < 4 {
                break;
            }
            let len =
                (usize::from(rest[1]) << 16) | (usize::from(rest[2]) << 8) | usize::from(rest[3]);
            if len + 4 > MAX_HANDSHAKE_BUFFER {
                self.info.malformed = true;
                self.skip = (len + 4).saturating_sub(rest.len());
                pos = data.len();
                break;
            }
            if rest.len() < len + 4 {
                break;
            }
            let letter = self.message(&rest[..len + 4]);
            push_letter(
                history,
                if client {
                    letter.to_ascii_uppercase()
                } else {
                    letter
                },
            );
            pos += len + 4;
        }
        if buffered {
            held.drain(..pos);
        } else {
            held.extend_from_slice(&bytes[pos..]);
        }
        self.buf = held;
    }

    /// Interprets one complete handshake message; returns its history letter (lowercase).
    fn message(&mut self, msg: &[u8]) -> u8 {
        let Ok((_, TlsMessage::Handshake(hs))) = parse_tls_message_handshake(msg) else {
            self.info.malformed = true;
            return b'z';
        };
        match hs {
            TlsMessageHandshake::ClientHello(ch) => {
                self.info.offered_versions = vec![ch.version.0];
                self.info.offered_ciphers = ch.ciphers.len().min(usize::from(u16::MAX)) as u16;
                let (mut sni, mut versions, mut alpn) = (None, None, None);
                let whole = ch.ext.is_some_and(|ext| {
                    walk_extensions(ext, |ext| match ext {
                        TlsExtension::SNI(names) => {
                            if let Some((_, name)) = names.first() {
                                sni = Some(printable_name(name));
                            }
                        }
                        TlsExtension::SupportedVersions(v) => {
                            versions =
                                Some(v.iter().map(|v| v.0).filter(|v| !is_grease(*v)).collect());
                        }
                        TlsExtension::ALPN(protos) => {
                            alpn = Some(protos.iter().take(8).map(|p| printable_name(p)).collect());
                        }
                        _ => {}
                    })
                });
                if whole {
                    // The last of each kind counts, as when they were set one after another.
                    if sni.is_some() {
                        self.info.sni = sni;
                    }
                    if let Some(v) = versions {
                        self.info.offered_versions = v;
                    }
                    if let Some(a) = alpn {
                        self.info.alpn = a;
                    }
                }
                b'c'
            }
            TlsMessageHandshake::ServerHello(sh) => {
                if sh.random == HRR_RANDOM {
                    self.info.hello_retry = true;
                    self.info.cipher = Some(sh.cipher.0);
                    return b'v';
                }
                self.info.version = Some(sh.version.0);
                self.info.cipher = Some(sh.cipher.0);
                let mut chosen_version = None;
                let whole = sh.ext.is_some_and(|ext| {
                    walk_extensions(ext, |ext| {
                        if let TlsExtension::SupportedVersions(v) = ext
                            && let Some(chosen) = v.first()
                        {
                            chosen_version = Some(chosen.0);
                        }
                    })
                });
                if whole && chosen_version.is_some() {
                    self.info.version = chosen_version;
                }
                b's'
            }
            TlsMessageHandshake::ServerHelloV13Draft18(sh) => {
                self.info.version = Some(sh.version.0);
                self.info.cipher = Some(sh.cipher.0);
                b's'
            }
            TlsMessageHandshake::HelloRetryRequest(hrr) => {
                self.info.hello_retry = true;
                self.info.cipher = Some(hrr.cipher.0);
                b'v'
            }
            TlsMessageHandshake::Certificate(c) => {
                if self.info.chain.is_empty() {
                    for cert in c.cert_chain.iter().take(MAX_CHAIN) {
                        self.info.chain.push(cert.data.to_vec());
                    }
                    self.info.chain_truncated = c.cert_chain.len() > MAX_CHAIN;
                }
                b'x'
            }
            TlsMessageHandshake::ServerKeyExchange(_) => b'k',
            TlsMessageHandshake::CertificateRequest(_) => b'r',
            TlsMessageHandshake::ServerDone(_) => b'n',
            TlsMessageHandshake::CertificateVerify(_) => b'y',
            TlsMessageHandshake::ClientKeyExchange(_) => b'g',
            TlsMessageHandshake::Finished(_) => b'f',
            TlsMessageHandshake::NewSessionTicket(_) => b't',
            TlsMessageHandshake::CertificateStatus(_) => b'u',
            TlsMessageHandshake::HelloRequest => b'j',
            TlsMessageHandshake::EndOfEarlyData => b'e',
            TlsMessageHandshake::KeyUpdate(_) => b'p',
            TlsMessageHandshake::NextProtocol(_) => b'w',
        }
    }
}

/// Hands `each` the extensions tls-parser's `parse_tls_extensions` would return, in order,
/// without collecting them into a vector (which cost as much as parsing them): that function is
/// `many0(complete(parse_tls_extension))`, so it keeps those before the first extension that
/// does not parse, and fails as a whole on a `Failure` or a parse that consumes nothing.
/// Returns false where it fails as a whole: then what `each` saw must be ignored.
fn walk_extensions<'a>(mut rest: &'a [u8], mut each: impl FnMut(TlsExtension<'a>)) -> bool {
    loop {
        match parse_tls_extension(rest) {
            Ok((next, ext)) => {
                if next.len() == rest.len() {
                    return false;
                }
                each(ext);
                rest = next;
            }
            Err(tls_parser::Err::Error(_) | tls_parser::Err::Incomplete(_)) => return true,
            Err(tls_parser::Err::Failure(_)) => return false,
        }
    }
}

/// Appends a history letter, bounded.
pub fn push_letter(history: &mut Vec<u8>, letter: u8) {
    if history.len() < MAX_HISTORY {
        history.push(letter);
    }
}

/// GREASE values (RFC 8701) are noise in version lists.
fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && (v >> 8) == (v & 0xff)
}

/// The name as text, at most 255 bytes, control characters replaced.
fn printable_name(bytes: &[u8]) -> String {
    let bytes = &bytes[..bytes.len().min(255)];
    // A server name or ALPN id is nearly always printable ASCII: then it is its own text, one
    // copy without decoding (the same string the lossy path below gives).
    if bytes
        .iter()
        .fold(true, |ok, &b| ok & (0x20..0x7f).contains(&b))
        && let Ok(text) = std::str::from_utf8(bytes)
    {
        return text.to_owned();
    }
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

/// `TLSv1.2`-style name of a protocol version.
pub fn version_name(v: u16) -> String {
    match v {
        0x0002 => "SSLv2".into(),
        0x0300 => "SSLv3".into(),
        0x0301 => "TLSv1.0".into(),
        0x0302 => "TLSv1.1".into(),
        0x0303 => "TLSv1.2".into(),
        0x0304 => "TLSv1.3".into(),
        other => format!("0x{other:04x}"),
    }
}

/// IANA name of a cipher suite, or its number.
pub fn cipher_name(id: u16) -> String {
    TlsCipherSuite::from_id(id).map_or_else(|| format!("0x{id:04x}"), |c| c.name.to_string())
}

/// True for anonymous suites (aNULL): encryption without any certificate.
pub fn cipher_is_anonymous(id: u16) -> bool {
    TlsCipherSuite::from_id(id).is_some_and(|c| c.au == TlsCipherAu::Null)
        && TlsCipherSuite::from_id(id).is_some_and(|c| c.name.contains("anon"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(version_name(0x0303), "TLSv1.2");
        assert_eq!(cipher_name(0xc030), "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384");
        assert!(cipher_is_anonymous(0x0034)); // TLS_DH_anon_WITH_AES_128_CBC_SHA
        assert!(!cipher_is_anonymous(0xc030));
        assert!(is_grease(0x1a1a) && !is_grease(0x0303));
    }

    #[test]
    fn oversized_messages_are_bounded() {
        let mut r = HandshakeReader::default();
        let mut h = Vec::new();
        r.feed(&[11, 0xff, 0xff, 0xff], false, &mut h);
        for _ in 0..1000 {
            r.feed(&[0u8; 1000], false, &mut h);
        }
        assert!(r.info.malformed);
        assert!(r.buf.len() <= MAX_HANDSHAKE_BUFFER);
    }

    /// Messages read straight from the record bytes, from a buffer that completes them, or
    /// after a cut inside a header give the same facts and letters however the bytes come.
    #[test]
    fn messages_read_the_same_however_cut() {
        // ServerHello (TLS 1.2, cipher 0xc02f), ServerHelloDone, Finished (12 bytes).
        let mut flight = vec![2, 0, 0, 38, 3, 3];
        flight.extend_from_slice(&[7; 32]);
        flight.extend_from_slice(&[0, 0xc0, 0x2f, 0]);
        flight.extend_from_slice(&[14, 0, 0, 0]);
        flight.extend_from_slice(&[20, 0, 0, 12]);
        flight.extend_from_slice(&[9; 12]);
        for cut in 0..=flight.len() {
            for cut2 in cut..=flight.len() {
                let mut r = HandshakeReader::default();
                let mut h = Vec::new();
                r.feed(&flight[..cut], false, &mut h);
                r.feed(&flight[cut..cut2], false, &mut h);
                r.feed(&flight[cut2..], false, &mut h);
                assert_eq!(h, b"snf", "cut at {cut}, {cut2}");
                assert_eq!(
                    (r.info.version, r.info.cipher),
                    (Some(0x0303), Some(0xc02f))
                );
                assert!(!r.info.malformed && r.buf.is_empty());
            }
        }
    }

    #[test]
    fn printable_names() {
        assert_eq!(printable_name(b"mx.example.org"), "mx.example.org");
        assert_eq!(printable_name(b"a\x1bb\x7f"), "a\u{FFFD}b\u{FFFD}");
        assert_eq!(printable_name("\u{85}x".as_bytes()), "\u{FFFD}x");
        assert_eq!(printable_name(b"\xffz"), "\u{FFFD}z");
        assert_eq!(printable_name(&[b'a'; 300]).len(), 255);
    }

    /// `walk_extensions` sees what `parse_tls_extensions` returns, and fails where it fails,
    /// on a real extension block and on cut and mutated copies of it.
    #[test]
    fn walk_equals_parse_tls_extensions() {
        use tls_parser::parse_tls_extensions;
        // server_name mx.example, supported_groups, ec_point_formats, ALPN smtp,
        // supported_versions (GREASE, 1.3, 1.2), key_share (x25519, 4 bytes), an unknown one.
        let mut block: Vec<u8> = vec![0, 0, 0, 15, 0, 13, 0, 0, 10];
        block.extend_from_slice(b"mx.example");
        block.extend_from_slice(&[0, 10, 0, 6, 0, 4, 0, 0x1d, 0, 0x17]);
        block.extend_from_slice(&[0, 11, 0, 2, 1, 0]);
        block.extend_from_slice(&[0, 16, 0, 7, 0, 5, 4]);
        block.extend_from_slice(b"smtp");
        block.extend_from_slice(&[0, 43, 0, 7, 6, 0x2a, 0x2a, 3, 4, 3, 3]);
        block.extend_from_slice(&[0, 51, 0, 10, 0, 8, 0, 0x1d, 0, 4, 1, 2, 3, 4]);
        block.extend_from_slice(&[0x12, 0x34, 0, 1, 0]);
        let check = |bytes: &[u8]| {
            let mut seen = Vec::new();
            let whole = walk_extensions(bytes, |e| seen.push(format!("{e:?}")));
            match parse_tls_extensions(bytes) {
                Ok((_, exts)) => {
                    assert!(whole, "{bytes:?}");
                    let want: Vec<String> = exts.iter().map(|e| format!("{e:?}")).collect();
                    assert_eq!(seen, want, "{bytes:?}");
                }
                Err(_) => assert!(!whole, "{bytes:?}"),
            }
        };
        for cut in 0..=block.len() {
            check(&block[..cut]);
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut copy = block.clone();
            for _ in 0..3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state % copy.len() as u64) as usize;
                copy[at] = (state >> 32) as u8;
            }
            check(&copy);
        }
    }
}
