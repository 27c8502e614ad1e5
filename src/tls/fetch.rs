//! An MTA-STS policy fetch seen from the wire (RFC 8461 §3.3): a TLS connection to
//! `mta-sts.<domain>` on TCP/443, recognised by the ClientHello's SNI, followed only far enough
//! to say how it ended. The policy travels inside TLS, so nothing of the exchange is read or
//! kept: each direction's record headers are walked until both sides sent application data,
//! and then the flow gets no more bytes. Everything on the wire is hostile: the walk is the
//! bounded record scanner STARTTLS uses.

use super::record::RecordScanner;
use crate::record::{EndReason, StsFetch};

/// The label a policy host starts with (RFC 8461 §3.3).
pub const POLICY_HOST_PREFIX: &str = "mta-sts.";

/// What one TCP/443 connection has shown so far.
pub struct PolicyFetch {
    /// When the connection's first packet was seen.
    pub first_us: i64,
    scanners: [RecordScanner; 2],
    /// History letters (bounded, and not written anywhere).
    history: Vec<u8>,
}

/// What the connection is, once its ClientHello was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchKind {
    /// No ClientHello yet (or never: a reset SYN, a dropped SYN).
    Unknown,
    /// A ClientHello naming `mta-sts.<domain>`: the domain, lower case.
    Policy(String),
    /// Anything else: a ClientHello with another name or none, or bytes that are not TLS.
    Other,
}

impl PolicyFetch {
    /// A connection whose first packet came at `first_us`.
    pub fn new(first_us: i64) -> PolicyFetch {
        PolicyFetch {
            first_us,
            scanners: [RecordScanner::new(true), RecordScanner::new(false)],
            history: Vec::new(),
        }
    }

    /// Walks bytes of one direction (`client`: the side that opened the connection).
    pub fn feed(&mut self, client: bool, bytes: &[u8]) {
        let s = &mut self.scanners[usize::from(!client)];
        s.feed(bytes, &mut self.history);
        // Certificates are not judged here: let the chain go as soon as it was read.
        s.handshake.info.chain = Vec::new();
        self.history.clear();
    }

    /// Whether bytes of this direction are still of use: until both sides sent application
    /// data, and only while the connection may still be a policy fetch.
    pub fn wants_bytes(&self, client: bool) -> bool {
        let s = &self.scanners[usize::from(!client)];
        !s.summary.malformed && !self.exchanged() && self.kind() != FetchKind::Other
    }

    fn exchanged(&self) -> bool {
        self.scanners.iter().all(|s| s.summary.application_data)
    }

    /// What the ClientHello said.
    pub fn kind(&self) -> FetchKind {
        let c = &self.scanners[0];
        let info = &c.handshake.info;
        if c.summary.malformed || info.malformed {
            return FetchKind::Other;
        }
        match info.sni.as_deref().map(str::to_ascii_lowercase) {
            Some(name) => match name.strip_prefix(POLICY_HOST_PREFIX) {
                Some(domain) if !domain.trim_end_matches('.').is_empty() => {
                    FetchKind::Policy(domain.trim_end_matches('.').to_string())
                }
                _ => FetchKind::Other,
            },
            // A hello is parsed once whole (it may span records and segments): until then its
            // versions are unknown.
            None if info.offered_versions.is_empty() => FetchKind::Unknown,
            None => FetchKind::Other,
        }
    }

    /// How the connection ended, or how far it got while still open (`end` None: the client
    /// delivered before it finished).
    pub fn outcome(&self, end: Option<EndReason>) -> StsFetch {
        let [c, s] = &self.scanners;
        let alert = c.summary.alert.is_some() || s.summary.alert.is_some();
        let not_tls = c.summary.malformed || s.summary.malformed;
        match end {
            Some(EndReason::Fin) if self.exchanged() => StsFetch::Ok,
            Some(EndReason::Reset) => StsFetch::Reset,
            _ if (alert || not_tls) && !self.exchanged() => StsFetch::HandshakeFailed,
            Some(EndReason::Fin) => StsFetch::HandshakeFailed,
            // Still open when the client went on, idle, or cut by the end of the capture or by
            // eviction: never completed while it was seen.
            _ if self.exchanged() => StsFetch::Ok,
            _ => StsFetch::Timeout,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ClientHello record naming `name` (TLS 1.2, one cipher, SNI only).
    pub(crate) fn client_hello(name: &str) -> Vec<u8> {
        let n = name.as_bytes();
        let mut sni = vec![0u8];
        sni.extend_from_slice(&(n.len() as u16).to_be_bytes());
        sni.extend_from_slice(n);
        let mut ext = vec![0, 0];
        ext.extend_from_slice(&((sni.len() + 2) as u16).to_be_bytes());
        ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        ext.extend_from_slice(&sni);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0u8; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 2, 0xc0, 0x2f, 1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1, 0];
        hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
        hs.extend_from_slice(&body);
        let mut rec = vec![22, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn the_sni_names_the_policy_domain_however_the_hello_is_cut() {
        let hello = client_hello("MTA-STS.Example.org");
        for split in 0..hello.len() {
            let mut f = PolicyFetch::new(0);
            f.feed(true, &hello[..split]);
            f.feed(true, &hello[split..]);
            assert_eq!(f.kind(), FetchKind::Policy("example.org".into()), "{split}");
        }
        let mut f = PolicyFetch::new(0);
        f.feed(true, &client_hello("www.example.org"));
        assert_eq!(f.kind(), FetchKind::Other);
        assert!(!f.wants_bytes(true));
    }

    #[test]
    fn outcomes() {
        let mut f = PolicyFetch::new(0);
        assert_eq!(f.kind(), FetchKind::Unknown);
        assert_eq!(f.outcome(Some(EndReason::Reset)), StsFetch::Reset);
        assert_eq!(f.outcome(None), StsFetch::Timeout);
        f.feed(true, &client_hello("mta-sts.example.org"));
        f.feed(false, &[21, 3, 3, 0, 2, 2, 40]);
        assert_eq!(f.outcome(Some(EndReason::Fin)), StsFetch::HandshakeFailed);
        let mut f = PolicyFetch::new(0);
        f.feed(true, &client_hello("mta-sts.example.org"));
        f.feed(true, &[23, 3, 3, 0, 1, 0]);
        f.feed(false, &[23, 3, 3, 0, 1, 0]);
        assert!(!f.wants_bytes(true) && !f.wants_bytes(false));
        assert_eq!(f.outcome(Some(EndReason::Fin)), StsFetch::Ok);
        assert_eq!(f.outcome(Some(EndReason::Reset)), StsFetch::Reset);
    }
}
