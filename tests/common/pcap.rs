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

/// A TCP segment's place in an Ethernet + IPv4 record: what `coalesce` needs to merge two.
struct Segment {
    /// Source and destination addresses and ports, as on the wire.
    flow: [u8; 12],
    seq: u32,
    /// Offset of the TCP payload in the record (its 16-byte header included).
    payload_at: usize,
    payload_len: usize,
    /// SYN, FIN or RST: such segments are never merged.
    control: bool,
}

fn segment(record: &[u8]) -> Option<Segment> {
    let frame = &record[16..];
    if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip[9] != 6 || ip.len() < ihl + 20 || total > ip.len() {
        return None;
    }
    let tcp = &ip[ihl..];
    let data_off = usize::from(tcp[12] >> 4) * 4;
    let mut flow = [0u8; 12];
    flow[..8].copy_from_slice(&ip[12..20]);
    flow[8..].copy_from_slice(&tcp[..4]);
    Some(Segment {
        flow,
        seq: u32::from_be_bytes(tcp[4..8].try_into().unwrap()),
        payload_at: 16 + 14 + ihl + data_off,
        payload_len: total - ihl - data_off,
        control: tcp[13] & 0x07 != 0,
    })
}

impl Pcap {
    /// The capture as a host with GRO (or a sender with TSO) hands it to a capture socket:
    /// back-to-back data segments of one direction, in sequence, become one frame larger than
    /// the MTU (Ethernet + IPv4 only; the first segment's time and headers, the last one's ACK,
    /// lengths fixed, the IP checksum recomputed).
    pub fn coalesce(&self) -> Pcap {
        let mut records: Vec<Vec<u8>> = Vec::new();
        for r in &self.records {
            let merged = records.last_mut().and_then(|last| {
                let (a, b) = (segment(last)?, segment(r)?);
                let fits = a.flow == b.flow
                    && !a.control
                    && !b.control
                    && a.payload_len > 0
                    && b.payload_len > 0
                    && a.seq.wrapping_add(a.payload_len as u32) == b.seq
                    && a.payload_at + a.payload_len == last.len()
                    && a.payload_len + b.payload_len <= 60_000;
                if !fits {
                    return None;
                }
                last.extend_from_slice(&r[b.payload_at..b.payload_at + b.payload_len]);
                let ip = 16 + 14;
                let ihl = usize::from(last[ip] & 0x0f) * 4;
                // The later segment's acknowledgment and window.
                let tcp_r = 16 + 14 + usize::from(r[ip] & 0x0f) * 4;
                let (ack, ack_r) = (ip + ihl + 8, tcp_r + 8);
                last[ack..ack + 4].copy_from_slice(&r[ack_r..ack_r + 4]);
                last[ack + 6..ack + 8].copy_from_slice(&r[ack_r + 6..ack_r + 8]);
                let frame_len = (last.len() - 16) as u32;
                last[8..12].copy_from_slice(&frame_len.to_le_bytes());
                last[12..16].copy_from_slice(&frame_len.to_le_bytes());
                let total = (last.len() - ip) as u16;
                last[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
                last[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
                let sum = last[ip..ip + ihl]
                    .chunks(2)
                    .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
                    .sum::<u32>();
                let sum = (sum & 0xffff) + (sum >> 16);
                let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
                last[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
                Some(())
            });
            if merged.is_none() {
                records.push(r.clone());
            }
        }
        Pcap {
            header: self.header.clone(),
            records,
        }
    }

    /// The largest frame's length on the wire.
    pub fn largest_frame(&self) -> usize {
        self.records
            .iter()
            .map(|r| u32::from_le_bytes(r[12..16].try_into().unwrap()) as usize)
            .max()
            .unwrap_or(0)
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
