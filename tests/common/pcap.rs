//! Classic pcap files cut and joined by the tests (a 24-byte header, then records of a 16-byte
//! header and the captured bytes), so that a test can drop a capture into a directory part by
//! part, or know exactly which packets a run saw, without another tool.

use std::path::Path;

/// A little-endian microsecond pcap: its header and its records (header and bytes each).
pub struct Pcap {
    /// The 24-byte file header.
    pub header: Vec<u8>,
    /// Each packet's record, its 16-byte header included.
    pub records: Vec<Vec<u8>>,
}

impl Pcap {
    /// Reads `path`, which must be a little-endian classic pcap.
    pub fn read(path: &Path) -> Pcap {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            &data[..4],
            &[0xd4, 0xc3, 0xb2, 0xa1],
            "a little-endian pcap"
        );
        let mut records = Vec::new();
        let mut at = 24;
        while at + 16 <= data.len() {
            let caplen = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
            records.push(data[at..at + 16 + caplen].to_vec());
            at += 16 + caplen;
        }
        Pcap {
            header: data[..24].to_vec(),
            records,
        }
    }

    /// The captures one after the other (they must share the link type).
    pub fn join(paths: &[&Path]) -> Pcap {
        let mut all = Pcap::read(paths[0]);
        for p in &paths[1..] {
            let next = Pcap::read(p);
            assert_eq!(
                next.header,
                all.header,
                "{}: another link type",
                p.display()
            );
            all.records.extend(next.records);
        }
        all
    }

    /// The file's bytes with the records `range` only.
    pub fn bytes(&self, range: std::ops::Range<usize>) -> Vec<u8> {
        let mut out = self.header.clone();
        for r in &self.records[range] {
            out.extend_from_slice(r);
        }
        out
    }

    /// Files of `per_part` packets each (the last may be shorter).
    pub fn cut(&self, per_part: usize) -> Vec<Vec<u8>> {
        (0..self.records.len())
            .step_by(per_part)
            .map(|start| self.bytes(start..(start + per_part).min(self.records.len())))
            .collect()
    }
}

/// The bundled real Postfix captures (through the stripping proxy: the clean upgrade and every
/// attack, to one server), in the order of their own timestamps, so that cross-session
/// judgements come out as `analyze` gives them on the files in this order.
pub const REAL_POSTFIX: &[&str] = &[
    "real-postfix-starttls-ok",
    "real-postfix-overwrite",
    "real-postfix-delete",
    "real-postfix-missing",
    "real-postfix-break-tls",
    "real-postfix-reject",
    "real-postfix-garbage-after-220",
    "real-postfix-answer-clienthello-421",
];

/// The path of the bundled capture `pcaps/NAME.pcap`.
pub fn bundled(name: &str) -> std::path::PathBuf {
    super::root().join("pcaps").join(format!("{name}.pcap"))
}
