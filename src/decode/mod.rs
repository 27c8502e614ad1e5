//! Link, IP and transport decoding. Turns a captured frame into a `Decoded` view that borrows the
//! payload from the capture buffer, keeping the IP TTL and IP ID for forensics (an injected
//! segment often betrays itself by a TTL that the rest of the flow does not have).
//!
//! Everything here treats its input as hostile: any length or field can lie, and the result of a
//! lie is a counter in `DecodeStats`, never a panic.

mod defrag;

pub use defrag::{DefragLimits, Defragmenter};

use crate::capture::{LinkType, RawPacket};
use etherparse::{IpNumber, IpSlice, TcpSlice, UdpSlice};
use std::net::IpAddr;

/// TCP header flags that the flow layer cares about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronise sequence numbers (connection open).
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// The acknowledgment field is valid.
    pub const ACK: u8 = 0x10;

    /// True when every bit of `mask` is set.
    pub fn has(self, mask: u8) -> bool {
        self.0 & mask == mask
    }
}

/// The transport header fields of one packet; the payload is carried beside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A TCP segment.
    Tcp {
        /// Sequence number of the first payload byte (or of the SYN/FIN).
        seq: u32,
        /// Acknowledgment number (meaningful when the ACK flag is set).
        ack: u32,
        /// Header flags.
        flags: TcpFlags,
    },
    /// A UDP datagram.
    Udp,
}

/// Everything the pipeline needs from one packet except its payload. It is `Copy` and fixed-size
/// so that batches of packets can be handed between threads without per-packet allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketMeta {
    /// Capture timestamp, microseconds since the Unix epoch.
    pub ts_us: i64,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IPv4 TTL or IPv6 hop limit.
    pub ip_ttl: u8,
    /// IPv4 identification (0 for IPv6).
    pub ip_id: u16,
    /// TCP or UDP specifics.
    pub transport: Transport,
    /// True when the payload was cut by the capture's snap length: bytes are missing.
    pub payload_truncated: bool,
    /// Payload bytes the snap length cut off the end of this packet, as its IP header tells:
    /// the reassembler knows them as a hole at once, not as capture loss.
    pub payload_missing: u32,
}

/// A decoded packet: header facts plus the payload, borrowed from the capture or defrag buffer.
#[derive(Clone, Copy, Debug)]
pub struct Decoded<'a> {
    /// Header facts.
    pub meta: PacketMeta,
    /// Transport payload.
    pub payload: &'a [u8],
}

/// Why a packet was not decoded into a TCP or UDP packet. Each reason is a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The link type is not one we read.
    UnknownLinkType,
    /// The link-layer header is shorter than it must be.
    MalformedLink,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...).
    NotIp,
    /// The IP header is inconsistent or truncated.
    MalformedIp,
    /// IP, but not TCP or UDP (ICMP, ESP, ...).
    OtherProtocol,
    /// The TCP or UDP header is inconsistent or truncated.
    MalformedTransport,
    /// An IP fragment was stored, waiting for the rest of its datagram.
    FragmentPending,
    /// An IP fragment was dropped (limits, overlap, inconsistent length).
    FragmentDropped,
}

/// Counters of what decoding saw, merged into the run's summary.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct DecodeStats {
    /// TCP packets decoded.
    pub tcp: u64,
    /// UDP packets decoded.
    pub udp: u64,
    /// Frames of a link type we do not read.
    pub unknown_link_type: u64,
    /// Frames with a broken link header.
    pub malformed_link: u64,
    /// Frames that carried something other than IP.
    pub not_ip: u64,
    /// Broken or truncated IP headers.
    pub malformed_ip: u64,
    /// IP packets of other protocols.
    pub other_protocol: u64,
    /// Broken or truncated TCP/UDP headers.
    pub malformed_transport: u64,
    /// Packets whose payload the snap length cut.
    pub truncated_payload: u64,
    /// IP fragments seen.
    pub fragments: u64,
    /// Datagrams rebuilt from fragments.
    pub fragments_reassembled: u64,
    /// Fragments dropped (limits, overlaps, timeouts).
    pub fragments_dropped: u64,
}

impl DecodeStats {
    /// Counts a skipped packet under its reason.
    pub fn count_skip(&mut self, skip: Skip) {
        match skip {
            Skip::UnknownLinkType => self.unknown_link_type += 1,
            Skip::MalformedLink => self.malformed_link += 1,
            Skip::NotIp => self.not_ip += 1,
            Skip::MalformedIp => self.malformed_ip += 1,
            Skip::OtherProtocol => self.other_protocol += 1,
            Skip::MalformedTransport => self.malformed_transport += 1,
            Skip::FragmentPending => {}
            Skip::FragmentDropped => self.fragments_dropped += 1,
        }
    }

    /// Adds another set of counters (from another file or thread).
    pub fn merge(&mut self, o: &DecodeStats) {
        self.tcp += o.tcp;
        self.udp += o.udp;
        self.unknown_link_type += o.unknown_link_type;
        self.malformed_link += o.malformed_link;
        self.not_ip += o.not_ip;
        self.malformed_ip += o.malformed_ip;
        self.other_protocol += o.other_protocol;
        self.malformed_transport += o.malformed_transport;
        self.truncated_payload += o.truncated_payload;
        self.fragments += o.fragments;
        self.fragments_reassembled += o.fragments_reassembled;
        self.fragments_dropped += o.fragments_dropped;
    }

    /// Packets that could not be read at all, for the summary's "malformed" line.
    pub fn malformed(&self) -> u64 {
        self.malformed_link + self.malformed_ip + self.malformed_transport
    }
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
/// More stacked tags than this is not a real network; stop rather than loop on garbage.
const MAX_VLAN_TAGS: usize = 4;

/// Finds where the IP header starts in a frame, or why it cannot.
pub fn locate_ip(linktype: LinkType, data: &[u8]) -> Result<&[u8], Skip> {
    match linktype {
        LinkType::ETHERNET => {
            let mut ethertype = be16(data, 12).ok_or(Skip::MalformedLink)?;
            let mut offset = 14;
            let mut tags = 0;
            while matches!(
                ethertype,
                ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD
            ) {
                tags += 1;
                if tags > MAX_VLAN_TAGS {
                    return Err(Skip::MalformedLink);
                }
                ethertype = be16(data, offset + 2).ok_or(Skip::MalformedLink)?;
                offset += 4;
            }
            ip_by_ethertype(ethertype, data.get(offset..).ok_or(Skip::MalformedLink)?)
        }
        LinkType::LINUX_SLL => {
            let ethertype = be16(data, 14).ok_or(Skip::MalformedLink)?;
            ip_by_ethertype(ethertype, data.get(16..).ok_or(Skip::MalformedLink)?)
        }
        LinkType::LINUX_SLL2 => {
            let ethertype = be16(data, 0).ok_or(Skip::MalformedLink)?;
            ip_by_ethertype(ethertype, data.get(20..).ok_or(Skip::MalformedLink)?)
        }
        LinkType::NULL | LinkType::LOOP => {
            let family = data.get(..4).ok_or(Skip::MalformedLink)?;
            // The family is in the writer's byte order; accept either order.
            let le = u32::from_le_bytes([family[0], family[1], family[2], family[3]]);
            let be = u32::from_be_bytes([family[0], family[1], family[2], family[3]]);
            let is_ip = |f: u32| matches!(f, 2 | 10 | 24 | 28 | 30);
            if is_ip(le) || is_ip(be) {
                Ok(&data[4..])
            } else {
                Err(Skip::NotIp)
            }
        }
        LinkType::RAW | LinkType::IPV4 | LinkType::IPV6 | LinkType(12) | LinkType(14) => Ok(data),
        _ => Err(Skip::UnknownLinkType),
    }
}

fn ip_by_ethertype(ethertype: u16, rest: &[u8]) -> Result<&[u8], Skip> {
    match ethertype {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => Ok(rest),
        _ => Err(Skip::NotIp),
    }
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    let b = data.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Decodes frames, reassembling IP fragments (bounded) on the way. One per reading thread.
pub struct Decoder {
    defrag: Defragmenter,
    /// What has been decoded and skipped so far.
    pub stats: DecodeStats,
}

impl Decoder {
    /// A decoder whose fragment buffers respect `limits`.
    pub fn new(limits: DefragLimits) -> Decoder {
        Decoder {
            defrag: Defragmenter::new(limits),
            stats: DecodeStats::default(),
        }
    }

    /// Decodes one frame. The result borrows either the frame or, for a reassembled datagram, the
    /// decoder's own buffer (valid until the next call).
    pub fn decode<'a>(&'a mut self, pkt: &RawPacket<'a>) -> Result<Decoded<'a>, Skip> {
        let stats = &mut self.stats;
        let result = decode_frame(&mut self.defrag, stats, pkt);
        match &result {
            Ok(d) => {
                if matches!(d.meta.transport, Transport::Tcp { .. }) {
                    stats.tcp += 1;
                } else {
                    stats.udp += 1;
                }
                if d.meta.payload_truncated {
                    stats.truncated_payload += 1;
                }
            }
            Err(skip) => stats.count_skip(*skip),
        }
        result
    }

    /// Drops fragment buffers older than the timeout; call as capture time advances.
    pub fn expire(&mut self, now_us: i64) {
        self.stats.fragments_dropped += self.defrag.expire(now_us);
    }
}

fn decode_frame<'a>(
    defrag: &'a mut Defragmenter,
    stats: &mut DecodeStats,
    pkt: &RawPacket<'a>,
) -> Result<Decoded<'a>, Skip> {
    {
        let ip_bytes = locate_ip(pkt.linktype, pkt.data)?;
        let snapped = (pkt.orig_len as usize) > pkt.data.len();
        let ip = match IpSlice::from_slice(ip_bytes) {
            Ok(ip) => ip,
            Err(_) if snapped => {
                // The snap length cut the IP packet: read what headers there are, lax.
                return decode_snapped(pkt.ts_us, ip_bytes);
            }
            Err(_) => return Err(Skip::MalformedIp),
        };
        let (src, dst) = (ip.source_addr(), ip.destination_addr());
        let (ttl, ip_id) = match &ip {
            IpSlice::Ipv4(v4) => (v4.header().ttl(), v4.header().identification()),
            IpSlice::Ipv6(v6) => (v6.header().hop_limit(), 0),
        };
        let payload = ip.payload();
        if payload.fragmented {
            stats.fragments += 1;
            let datagram = defrag.add(pkt.ts_us, &ip)?;
            stats.fragments_reassembled += 1;
            return transport(
                pkt.ts_us,
                src,
                dst,
                ttl,
                ip_id,
                datagram.ip_number,
                datagram.bytes,
                (false, 0),
            );
        }
        transport(
            pkt.ts_us,
            src,
            dst,
            ttl,
            ip_id,
            payload.ip_number,
            payload.payload,
            // The IP packet is whole (only the link layer's trailer can have been cut).
            (snapped, 0),
        )
    }
}

/// Reads a snapped IP packet in lax mode: the headers are there, the payload is short.
fn decode_snapped(ts_us: i64, ip_bytes: &[u8]) -> Result<Decoded<'_>, Skip> {
    let lax = etherparse::LaxIpSlice::from_slice(ip_bytes).map_err(|_| Skip::MalformedIp)?;
    let (lax, _) = lax;
    let (src, dst, ttl, ip_id) = match &lax {
        etherparse::LaxIpSlice::Ipv4(v4) => (
            IpAddr::V4(v4.header().source_addr()),
            IpAddr::V4(v4.header().destination_addr()),
            v4.header().ttl(),
            v4.header().identification(),
        ),
        etherparse::LaxIpSlice::Ipv6(v6) => (
            IpAddr::V6(v6.header().source_addr()),
            IpAddr::V6(v6.header().destination_addr()),
            v6.header().hop_limit(),
            0,
        ),
    };
    let payload = lax.payload();
    if payload.fragmented {
        return Err(Skip::FragmentDropped);
    }
    // What the IP header says its payload is, less what was captured.
    let on_wire =
        match &lax {
            etherparse::LaxIpSlice::Ipv4(v4) => usize::from(v4.header().total_len())
                .saturating_sub(usize::from(v4.header().ihl()) * 4),
            etherparse::LaxIpSlice::Ipv6(v6) => usize::from(v6.header().payload_length())
                .saturating_sub(v6.extensions().slice().len()),
        };
    let missing = u32::try_from(on_wire.saturating_sub(payload.payload.len())).unwrap_or(0);
    transport(
        ts_us,
        src,
        dst,
        ttl,
        ip_id,
        payload.ip_number,
        payload.payload,
        (true, missing),
    )
}

#[allow(clippy::too_many_arguments)]
fn transport(
    ts_us: i64,
    src: IpAddr,
    dst: IpAddr,
    ip_ttl: u8,
    ip_id: u16,
    proto: IpNumber,
    bytes: &[u8],
    (snapped, missing): (bool, u32),
) -> Result<Decoded<'_>, Skip> {
    match proto {
        IpNumber::TCP => {
            let tcp = TcpSlice::from_slice(bytes).map_err(|_| Skip::MalformedTransport)?;
            let mut flags = 0u8;
            for (set, bit) in [
                (tcp.fin(), TcpFlags::FIN),
                (tcp.syn(), TcpFlags::SYN),
                (tcp.rst(), TcpFlags::RST),
                (tcp.ack(), TcpFlags::ACK),
            ] {
                if set {
                    flags |= bit;
                }
            }
            Ok(Decoded {
                meta: PacketMeta {
                    ts_us,
                    src,
                    dst,
                    sport: tcp.source_port(),
                    dport: tcp.destination_port(),
                    ip_ttl,
                    ip_id,
                    transport: Transport::Tcp {
                        seq: tcp.sequence_number(),
                        ack: tcp.acknowledgment_number(),
                        flags: TcpFlags(flags),
                    },
                    payload_truncated: snapped,
                    payload_missing: missing,
                },
                payload: tcp.payload(),
            })
        }
        IpNumber::UDP => {
            let udp = UdpSlice::from_slice_lax(bytes).map_err(|_| Skip::MalformedTransport)?;
            Ok(Decoded {
                meta: PacketMeta {
                    ts_us,
                    src,
                    dst,
                    sport: udp.source_port(),
                    dport: udp.destination_port(),
                    ip_ttl,
                    ip_id,
                    transport: Transport::Udp,
                    payload_truncated: snapped,
                    payload_missing: missing,
                },
                payload: udp.payload(),
            })
        }
        _ => Err(Skip::OtherProtocol),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_tcp(payload: &[u8]) -> Vec<u8> {
        let builder = etherparse::PacketBuilder::ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
            .tcp(40000, 25, 1000, 65535)
            .ack(77);
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn decodes_every_link_type_to_the_same_segment() {
        let ip = ipv4_tcp(b"EHLO x\r\n");
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x08, 0x00]);
        eth.extend_from_slice(&ip);
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(&ip);
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend_from_slice(&[0u8; 18]);
        sll2.extend_from_slice(&ip);
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend_from_slice(&ip);
        for (lt, frame) in [
            (LinkType::ETHERNET, &eth),
            (LinkType::LINUX_SLL, &sll),
            (LinkType::LINUX_SLL2, &sll2),
            (LinkType::NULL, &null),
            (LinkType::RAW, &ip),
        ] {
            let mut dec = Decoder::new(DefragLimits::default());
            let raw = RawPacket {
                ts_us: 1,
                linktype: lt,
                data: frame,
                orig_len: frame.len() as u32,
            };
            let d = dec.decode(&raw).unwrap_or_else(|e| panic!("{lt:?}: {e:?}"));
            assert_eq!(d.payload, b"EHLO x\r\n");
            assert_eq!(d.meta.dport, 25);
            assert!(matches!(d.meta.transport, Transport::Tcp { seq: 1000, .. }));
        }
    }

    #[test]
    fn hostile_frames_are_counted_not_fatal() {
        let mut dec = Decoder::new(DefragLimits::default());
        for len in 0..60 {
            let frame = vec![0x45u8; len];
            let raw = RawPacket {
                ts_us: 0,
                linktype: LinkType::ETHERNET,
                data: &frame,
                orig_len: len as u32,
            };
            assert!(dec.decode(&raw).is_err());
        }
        assert!(dec.stats.malformed() + dec.stats.not_ip > 0);
    }

    #[test]
    fn snapped_packet_keeps_headers() {
        let ip = ipv4_tcp(&[b'a'; 100]);
        let cut = &ip[..60];
        let mut dec = Decoder::new(DefragLimits::default());
        let raw = RawPacket {
            ts_us: 0,
            linktype: LinkType::RAW,
            data: cut,
            orig_len: ip.len() as u32,
        };
        let d = dec.decode(&raw).unwrap();
        assert!(d.meta.payload_truncated);
        assert_eq!(d.payload.len(), 20);
        assert_eq!(d.meta.payload_missing, 80);
    }
}
