//! Walks TLS record headers in one direction of a stream. Bodies of application data are skipped
//! without being copied; handshake bodies before the switch to encryption go to the handshake
//! reader; the first bytes of alert records are peeked at as they pass.

use super::handshake::{HandshakeReader, push_letter};

/// TLS content types (RFC 8446 §5.1).
pub mod content_type {
    /// ChangeCipherSpec.
    pub const CHANGE_CIPHER_SPEC: u8 = 20;
    /// Alert.
    pub const ALERT: u8 = 21;
    /// Handshake.
    pub const HANDSHAKE: u8 = 22;
    /// Application data.
    pub const APPLICATION_DATA: u8 = 23;
    /// Heartbeat.
    pub const HEARTBEAT: u8 = 24;
}

/// Handshake message types that decide whether a handshake started.
pub mod handshake_type {
    /// ClientHello.
    pub const CLIENT_HELLO: u8 = 1;
    /// ServerHello (also HelloRetryRequest in TLS 1.3).
    pub const SERVER_HELLO: u8 = 2;
}

/// The largest record body TLS allows (2^14 plus expansion).
const MAX_RECORD_BODY: usize = 16384 + 2048;

/// True when `bytes` begin like a TLS record (or an SSLv2-framed ClientHello). Used to decide
/// whether the first bytes after a STARTTLS `220` are TLS at all.
pub fn looks_like_tls(bytes: &[u8]) -> bool {
    match bytes {
        [ct, 3, minor, ..] => (20..=24).contains(ct) && *minor <= 4,
        [ct] => (20..=24).contains(ct),
        [ct, 3] => (20..=24).contains(ct),
        // SSLv2 record header with a ClientHello (message type 1).
        [hi, _, 1, ..] => hi & 0x80 != 0,
        _ => false,
    }
}

/// What the walk has seen in this direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordSummary {
    /// Records whose header was read.
    pub records: u32,
    /// A ClientHello handshake message started a record.
    pub client_hello: bool,
    /// A ServerHello handshake message started a record.
    pub server_hello: bool,
    /// ChangeCipherSpec seen.
    pub change_cipher_spec: bool,
    /// Application data seen.
    pub application_data: bool,
    /// The first alert: (level, description).
    pub alert: Option<(u8, u8)>,
    /// The stream stopped being TLS (a header that is not a record header).
    pub malformed: bool,
    /// The legacy record version of the first record (e.g. 0x0301).
    pub first_version: Option<u16>,
    /// A handshake record came after ChangeCipherSpec (the encrypted Finished).
    pub finished: bool,
}

/// Record-header walker for one direction.
#[derive(Default)]
pub struct RecordScanner {
    /// This is the client's direction (history letters in upper case).
    client: bool,
    /// Handshake messages read so far.
    pub handshake: HandshakeReader,
    header: [u8; 5],
    header_len: usize,
    /// Body bytes of the current record not yet passed.
    body_left: usize,
    /// Offset inside the current record body.
    body_pos: usize,
    current_type: u8,
    /// The stream opened with an SSLv2-framed hello (not parsed further).
    sslv2: bool,
    alert_bytes: [u8; 2],
    /// What has been seen.
    pub summary: RecordSummary,
}

impl RecordScanner {
    /// A walker positioned at a record boundary, for the client's or the server's direction.
    pub fn new(client: bool) -> RecordScanner {
        RecordScanner {
            client,
            ..RecordScanner::default()
        }
    }

    fn letter(&self, history: &mut Vec<u8>, letter: u8) {
        push_letter(
            history,
            if self.client {
                letter.to_ascii_uppercase()
            } else {
                letter
            },
        );
    }

    /// Passes bytes of this direction through the walker; history letters go to `history`.
    pub fn feed(&mut self, mut bytes: &[u8], history: &mut Vec<u8>) {
        while !bytes.is_empty() && !self.summary.malformed {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.peek(&bytes[..n], history);
                self.body_left -= n;
                self.body_pos += n;
                bytes = &bytes[n..];
                continue;
            }
            // The first record's first three bytes are read on their own: they decide between
            // an SSLv2-framed hello and a TLS record header, whatever the segmentation.
            let upto = if self.summary.records == 0 && self.header_len < 3 {
                3
            } else {
                5
            };
            let need = upto - self.header_len;
            let n = need.min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.summary.records == 0 && self.header_len == 3 {
                // SSLv2-framed ClientHello: a 2-byte length with the top bit set, then type 1.
                let [hi, lo, kind, ..] = self.header;
                if hi & 0x80 != 0 && kind == 1 {
                    let len = (usize::from(hi & 0x7f) << 8) | usize::from(lo);
                    if len == 0 {
                        // Shorter than the bytes already read as its own body: not a hello.
                        self.summary.malformed = true;
                        return;
                    }
                    self.summary.records = 1;
                    self.sslv2 = true;
                    self.summary.client_hello = true;
                    self.summary.first_version = Some(0x0002);
                    self.handshake.info.offered_versions = vec![0x0002];
                    self.letter(history, b'c');
                    self.current_type = content_type::HANDSHAKE;
                    // The bytes after the length already read belong to the body; the rest of
                    // the hello is skipped, not parsed.
                    // One byte of the body (the message type) is already read.
                    self.body_left = len - 1;
                    self.body_pos = usize::MAX / 2;
                    self.header_len = 0;
                    continue;
                }
            }
            if self.header_len < 5 {
                continue;
            }
            self.header_len = 0;
            let [ct, major, minor, hi, lo] = self.header;
            let len = usize::from(u16::from_be_bytes([hi, lo]));
            if !(20..=24).contains(&ct) || major != 3 || minor > 4 || len > MAX_RECORD_BODY {
                self.summary.malformed = true;
                return;
            }
            if self.summary.first_version.is_none() {
                self.summary.first_version = Some(u16::from_be_bytes([major, minor]));
            }
            self.summary.records = self.summary.records.saturating_add(1);
            self.current_type = ct;
            self.body_left = len;
            self.body_pos = 0;
            match ct {
                content_type::CHANGE_CIPHER_SPEC => {
                    self.summary.change_cipher_spec = true;
                    self.letter(history, b'i');
                }
                content_type::APPLICATION_DATA => {
                    if !self.summary.application_data {
                        self.letter(history, b'd');
                    }
                    self.summary.application_data = true;
                }
                content_type::ALERT => self.letter(history, b'l'),
                content_type::HEARTBEAT => self.letter(history, b'b'),
                content_type::HANDSHAKE if self.summary.change_cipher_spec => {
                    if !self.summary.finished {
                        self.letter(history, b'f');
                    }
                    self.summary.finished = true;
                }
                _ => {}
            }
        }
    }

    fn peek(&mut self, body: &[u8], history: &mut Vec<u8>) {
        if self.current_type == content_type::HANDSHAKE
            && !self.summary.change_cipher_spec
            && !self.sslv2
        {
            self.handshake.feed(body, self.client, history);
        }
        match self.current_type {
            // Once ChangeCipherSpec passed, handshake records are encrypted: do not read them.
            content_type::HANDSHAKE if self.body_pos == 0 && !self.summary.change_cipher_spec => {
                match body[0] {
                    handshake_type::CLIENT_HELLO => self.summary.client_hello = true,
                    handshake_type::SERVER_HELLO => self.summary.server_hello = true,
                    _ => {}
                }
            }
            content_type::ALERT if self.summary.alert.is_none() && self.body_pos < 2 => {
                for (i, b) in body.iter().take(2 - self.body_pos).enumerate() {
                    self.alert_bytes[self.body_pos + i] = *b;
                }
                if self.body_pos + body.len() >= 2 && !self.summary.change_cipher_spec {
                    self.summary.alert = Some((self.alert_bytes[0], self.alert_bytes[1]));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_records_split_anywhere() {
        let mut stream = vec![22, 3, 1, 0, 4, 1, 0, 0, 0];
        stream.extend_from_slice(&[21, 3, 3, 0, 2, 2, 40]);
        for split in 0..stream.len() {
            let mut s = RecordScanner::new(true);
            let mut h = Vec::new();
            s.feed(&stream[..split], &mut h);
            s.feed(&stream[split..], &mut h);
            assert!(s.summary.client_hello, "split {split}");
            assert_eq!(s.summary.alert, Some((2, 40)), "split {split}");
            assert_eq!(s.summary.records, 2);
            assert!(!s.summary.malformed);
        }
    }

    #[test]
    fn sslv2_hello_is_found_however_it_is_cut() {
        let hello = [0x80u8, 0x2e, 0x01, 0x00, 0x02, 0, 0, 0, 0, 0];
        for split in 0..hello.len() {
            let mut s = RecordScanner::new(true);
            let mut h = Vec::new();
            s.feed(&hello[..split], &mut h);
            s.feed(&hello[split..], &mut h);
            assert!(s.summary.client_hello, "split {split}");
            assert!(!s.summary.malformed, "split {split}");
            assert!(!s.handshake.info.malformed, "split {split}");
        }
        // Not after the stream already proved not to be TLS.
        let mut s = RecordScanner::new(true);
        let mut h = Vec::new();
        s.feed(&[0x01, 0x05, 0x80], &mut h);
        s.feed(&[0x03, 0, 0, 0, 0xc0, 0x2f, 0x01], &mut h);
        assert!(s.summary.malformed);
        assert!(!s.summary.client_hello);
    }

    #[test]
    fn plaintext_is_not_tls() {
        assert!(!looks_like_tls(b"EHLO client\r\n"));
        assert!(!looks_like_tls(b"250 OK\r\n"));
        assert!(looks_like_tls(&[22, 3, 1, 0, 200]));
        let mut s = RecordScanner::new(false);
        s.feed(b"EHLO x\r\n", &mut Vec::new());
        assert!(s.summary.malformed);
    }
}
