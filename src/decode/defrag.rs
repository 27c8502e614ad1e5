//! Bounded IP fragment reassembly. Fragments are rare in SMTP and DNS, but an attacker can send
//! them on purpose (to hide a forged answer from a monitor that ignores them), so they are rebuilt
//! rather than dropped, within hard limits on count, size and age.

use super::Skip;
use ahash::AHashMap;
use etherparse::{IpNumber, IpSlice, Ipv6ExtensionSlice};
use std::net::IpAddr;

/// Bounds on fragment state.
#[derive(Clone, Copy, Debug)]
pub struct DefragLimits {
    /// Datagrams being rebuilt at once; a new one beyond this is dropped.
    pub max_datagrams: usize,
    /// Fragments per datagram.
    pub max_fragments: usize,
    /// A datagram not complete after this much capture time is dropped.
    pub timeout_us: i64,
}

impl Default for DefragLimits {
    fn default() -> Self {
        DefragLimits {
            max_datagrams: 1024,
            max_fragments: 64,
            timeout_us: 30_000_000,
        }
    }
}

#[derive(Hash, PartialEq, Eq, Clone, Copy)]
struct FragKey {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    proto: u8,
}

struct Pending {
    first_ts: i64,
    ip_number: IpNumber,
    data: Vec<u8>,
    /// Byte ranges `[start, end)` received so far.
    covered: Vec<(usize, usize)>,
    /// Total length, known once the last fragment arrived.
    total: Option<usize>,
}

/// A rebuilt datagram, borrowed from the defragmenter until its next use.
pub struct Datagram<'a> {
    /// The transport protocol the fragments carried.
    pub ip_number: IpNumber,
    /// The transport header and payload.
    pub bytes: &'a [u8],
}

/// The fragment store of one reading thread.
pub struct Defragmenter {
    limits: DefragLimits,
    pending: AHashMap<FragKey, Pending>,
    done: Vec<u8>,
}

/// The largest datagram IP can carry.
const MAX_DATAGRAM: usize = 65_535;

impl Defragmenter {
    /// An empty store with the given limits.
    pub fn new(limits: DefragLimits) -> Defragmenter {
        Defragmenter {
            limits,
            pending: AHashMap::new(),
            done: Vec::new(),
        }
    }

    /// Adds one fragment; returns the datagram when it is complete, `FragmentPending` while it is
    /// not, and `FragmentDropped` when the fragment (or its datagram) had to be thrown away.
    pub fn add<'s>(&'s mut self, ts_us: i64, ip: &IpSlice<'_>) -> Result<Datagram<'s>, Skip> {
        let payload = ip.payload();
        let (id, offset, more) = match ip {
            IpSlice::Ipv4(v4) => {
                let h = v4.header();
                (
                    u32::from(h.identification()),
                    usize::from(h.fragments_offset().value()) * 8,
                    h.more_fragments(),
                )
            }
            IpSlice::Ipv6(v6) => {
                let mut found = None;
                for ext in v6.extensions().clone().into_iter() {
                    if let Ipv6ExtensionSlice::Fragment(f) = ext {
                        found = Some((
                            f.identification(),
                            usize::from(f.fragment_offset().value()) * 8,
                            f.more_fragments(),
                        ));
                        break;
                    }
                }
                found.ok_or(Skip::FragmentDropped)?
            }
        };
        let key = FragKey {
            src: ip.source_addr(),
            dst: ip.destination_addr(),
            id,
            proto: payload.ip_number.0,
        };
        let bytes = payload.payload;
        let end = offset + bytes.len();
        if end > MAX_DATAGRAM || (more && !bytes.len().is_multiple_of(8)) {
            self.pending.remove(&key);
            return Err(Skip::FragmentDropped);
        }
        if !self.pending.contains_key(&key) && self.pending.len() >= self.limits.max_datagrams {
            return Err(Skip::FragmentDropped);
        }
        let entry = self.pending.entry(key).or_insert_with(|| Pending {
            first_ts: ts_us,
            ip_number: payload.ip_number,
            data: Vec::new(),
            covered: Vec::new(),
            total: None,
        });
        if entry.covered.len() >= self.limits.max_fragments {
            self.pending.remove(&key);
            return Err(Skip::FragmentDropped);
        }
        if !more {
            if entry.total.is_some_and(|t| t != end) {
                self.pending.remove(&key);
                return Err(Skip::FragmentDropped);
            }
            entry.total = Some(end);
        }
        // Nothing may lie beyond the datagram's end: with every range inside [0, total) and no
        // overlaps, "received == total" below then means there is no hole.
        if let Some(total) = entry.total
            && (end > total || entry.covered.iter().any(|&(_, e)| e > total))
        {
            self.pending.remove(&key);
            return Err(Skip::FragmentDropped);
        }
        // Overlapping fragments are how reassembly-based evasion works: an exact duplicate is
        // a retransmission and ignored; any other overlap makes the datagram untrustworthy.
        for &(s, e) in &entry.covered {
            if offset < e && s < end {
                if s == offset && e == end && entry.data[s..e] == *bytes {
                    return Err(Skip::FragmentPending);
                }
                self.pending.remove(&key);
                return Err(Skip::FragmentDropped);
            }
        }
        if entry.data.len() < end {
            entry.data.resize(end, 0);
        }
        entry.data[offset..end].copy_from_slice(bytes);
        entry.covered.push((offset, end));
        let Some(total) = entry.total else {
            return Err(Skip::FragmentPending);
        };
        let received: usize = entry.covered.iter().map(|(s, e)| e - s).sum();
        if received != total {
            return Err(Skip::FragmentPending);
        }
        let done = self.pending.remove(&key).ok_or(Skip::FragmentDropped)?;
        self.done.clear();
        self.done.extend_from_slice(&done.data[..total]);
        Ok(Datagram {
            ip_number: done.ip_number,
            bytes: &self.done,
        })
    }

    /// Forgets datagrams older than the timeout; returns how many were dropped.
    pub fn expire(&mut self, now_us: i64) -> u64 {
        let before = self.pending.len();
        let timeout = self.limits.timeout_us;
        self.pending
            .retain(|_, p| now_us.saturating_sub(p.first_ts) <= timeout);
        (before - self.pending.len()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IpFragOffset, Ipv4Header};

    fn fragment(id: u16, offset_bytes: usize, more: bool, data: &[u8]) -> Vec<u8> {
        let mut h = Ipv4Header::new(
            data.len() as u16,
            64,
            IpNumber::TCP,
            [1, 1, 1, 1],
            [2, 2, 2, 2],
        )
        .unwrap();
        h.identification = id;
        h.more_fragments = more;
        h.fragment_offset = IpFragOffset::try_new((offset_bytes / 8) as u16).unwrap();
        h.header_checksum = h.calc_header_checksum();
        let mut out = Vec::new();
        h.write(&mut out).unwrap();
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn rebuilds_out_of_order_fragments() {
        let mut d = Defragmenter::new(DefragLimits::default());
        let payload: Vec<u8> = (0..40u8).collect();
        let second = fragment(7, 16, false, &payload[16..]);
        let first = fragment(7, 0, true, &payload[..16]);
        let ip2 = IpSlice::from_slice(&second).unwrap();
        assert_eq!(d.add(0, &ip2).err(), Some(Skip::FragmentPending));
        let ip1 = IpSlice::from_slice(&first).unwrap();
        let dg = d.add(1, &ip1).ok().unwrap();
        assert_eq!(dg.bytes, &payload[..]);
    }

    #[test]
    fn conflicting_overlap_drops_the_datagram() {
        let mut d = Defragmenter::new(DefragLimits::default());
        let a = fragment(9, 0, true, &[1u8; 16]);
        let b = fragment(9, 8, false, &[2u8; 16]);
        assert_eq!(
            d.add(0, &IpSlice::from_slice(&a).unwrap()).err(),
            Some(Skip::FragmentPending)
        );
        assert_eq!(
            d.add(0, &IpSlice::from_slice(&b).unwrap()).err(),
            Some(Skip::FragmentDropped)
        );
    }

    #[test]
    fn a_fragment_past_the_end_cannot_fill_a_hole() {
        let mut d = Defragmenter::new(DefragLimits::default());
        let first = fragment(5, 0, true, &[1u8; 8]);
        let last = fragment(5, 16, false, &[2u8; 8]);
        let beyond = fragment(5, 24, true, &[3u8; 8]);
        for f in [&first, &last] {
            assert_eq!(
                d.add(0, &IpSlice::from_slice(f).unwrap()).err(),
                Some(Skip::FragmentPending)
            );
        }
        // 8 + 8 + 8 bytes = the total of 24, but [8, 16) was never sent.
        assert_eq!(
            d.add(0, &IpSlice::from_slice(&beyond).unwrap()).err(),
            Some(Skip::FragmentDropped)
        );
    }

    #[test]
    fn limits_hold() {
        let limits = DefragLimits {
            max_datagrams: 2,
            ..DefragLimits::default()
        };
        let mut d = Defragmenter::new(limits);
        for id in 0..10 {
            let f = fragment(id, 0, true, &[0u8; 8]);
            let _ = d.add(0, &IpSlice::from_slice(&f).unwrap());
        }
        assert_eq!(d.pending.len(), 2);
        assert_eq!(d.expire(60_000_000), 2);
    }
}
