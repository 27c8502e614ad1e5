//! Link/IP/transport decoding and IP fragment reassembly (`stripwatch::decode`).
//!
//! Input layout: byte 0 picks the link type (low 3 bits, one of the eight the decoder reads) and
//! the mode (bits 3-4); bit 5 selects tight defragmentation limits.
//!
//! - mode 0: the rest is one frame (bit 6 of byte 0: pretend the snap length cut it, which takes
//!   the lax path).
//! - mode 1: the rest is a sequence of frames `[flags u8][len u16 LE][len bytes]`, decoded in
//!   order with advancing timestamps and periodic `expire` (raw fragments, retransmissions,
//!   garbage, all through one decoder).
//! - mode 2/3: the rest is a script of well-formed IPv4/IPv6 *fragments* (built here, wrapped in
//!   the chosen link header) for a handful of datagram keys, with `expire` steps in between. A
//!   shadow model tracks which bytes of each datagram were sent since the decoder last finished
//!   or dropped it, and checks every datagram the decoder declares complete: every byte of it must
//!   have been sent (no hole silently filled), and a TCP payload must be the bytes that were sent.

#![no_main]

use etherparse::{IpFragOffset, IpNumber, Ipv4Header, Ipv6FragmentHeader, Ipv6Header};
use fuzz_util::Bytes;
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use stripwatch::capture::{LinkType, RawPacket};
use stripwatch::decode::{Decoder, DefragLimits, Skip, Transport};

const LINKTYPES: [LinkType; 8] = [
    LinkType::NULL,
    LinkType::ETHERNET,
    LinkType::RAW,
    LinkType::LOOP,
    LinkType::LINUX_SLL,
    LinkType::IPV4,
    LinkType::IPV6,
    LinkType::LINUX_SLL2,
];

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes::new(data);
    let sel = b.u8();
    let link = LINKTYPES[usize::from(sel & 7)];
    let limits = if sel & 0x20 != 0 {
        DefragLimits {
            max_datagrams: 4,
            max_fragments: 6,
            timeout_us: 2_000_000,
        }
    } else {
        DefragLimits::default()
    };
    let mut dec = Decoder::new(limits);
    match (sel >> 3) & 3 {
        0 => single_frame(&mut dec, link, sel & 0x40 != 0, b.take_rest()),
        1 => frame_sequence(&mut dec, link, &mut b),
        _ => fragments(&mut dec, link, limits, &mut b),
    }
});

fn check_decoded(d: &stripwatch::decode::Decoded<'_>, frame_len: usize) {
    // A payload can never be longer than the frame it came from (or than a rebuilt datagram).
    assert!(d.payload.len() <= frame_len.max(65_535));
}

fn single_frame(dec: &mut Decoder, link: LinkType, snapped: bool, frame: &[u8]) {
    let orig_len = if snapped {
        (frame.len() as u32).saturating_add(1000)
    } else {
        frame.len() as u32
    };
    let pkt = RawPacket {
        ts_us: 1_700_000_000_000_000,
        linktype: link,
        data: frame,
        orig_len,
    };
    if let Ok(d) = dec.decode(&pkt) {
        check_decoded(&d, frame.len());
        if !snapped {
            assert!(!d.meta.payload_truncated);
        }
    }
    dec.expire(i64::MAX);
}

fn frame_sequence(dec: &mut Decoder, link: LinkType, b: &mut Bytes<'_>) {
    let mut ts: i64 = 1_700_000_000_000_000;
    let (mut tcp, mut udp) = (0u64, 0u64);
    while !b.is_empty() {
        let flags = b.u8();
        let len = usize::from(b.u16());
        let frame = b.take(len);
        // Time moves on by up to ~16 s per frame, enough to cross the 30 s fragment timeout.
        ts = ts.saturating_add(i64::from(flags & 0x0f) * 1_000_000);
        let orig_len = if flags & 0x10 != 0 {
            frame.len() as u32 + u32::from(flags)
        } else {
            frame.len() as u32
        };
        let lt = if flags & 0x20 != 0 {
            LINKTYPES[usize::from(flags >> 6)]
        } else {
            link
        };
        let pkt = RawPacket {
            ts_us: ts,
            linktype: lt,
            data: frame,
            orig_len,
        };
        match dec.decode(&pkt) {
            Ok(d) => {
                check_decoded(&d, frame.len());
                match d.meta.transport {
                    Transport::Tcp { .. } => tcp += 1,
                    Transport::Udp => udp += 1,
                }
            }
            Err(_) => {}
        }
        if flags & 0x0f == 0x0f {
            dec.expire(ts);
        }
    }
    assert_eq!(dec.stats.tcp, tcp);
    assert_eq!(dec.stats.udp, udp);
    dec.expire(i64::MAX);
}

/// The decoder's datagram key as far as this target varies it.
#[derive(Clone, Copy, Hash, PartialEq, Eq, Debug)]
struct Key {
    v6: bool,
    src: u8,
    id: u8,
    proto: u8,
}

/// What has been sent for one datagram since the decoder last completed or dropped it.
#[derive(Debug)]
struct Shadow {
    first_ts: i64,
    bytes: Vec<Option<u8>>,
    total: Option<usize>,
}

const PROTOS: [IpNumber; 3] = [IpNumber::TCP, IpNumber::UDP, IpNumber::ICMP];

fn fragments(dec: &mut Decoder, link: LinkType, limits: DefragLimits, b: &mut Bytes<'_>) {
    let mut ts: i64 = 1_700_000_000_000_000;
    let mut shadows: HashMap<Key, Shadow> = HashMap::new();
    while !b.is_empty() {
        let op = b.u8();
        if op & 0xe0 == 0xe0 {
            // Let time pass and expire old datagrams, in the decoder and in the model.
            ts = ts.saturating_add(i64::from(op & 0x1f) * 2_000_000);
            dec.expire(ts);
            shadows.retain(|_, s| ts.saturating_sub(s.first_ts) <= limits.timeout_us);
            continue;
        }
        ts += 1;
        let sel = b.u8();
        let key = Key {
            v6: op & 0x01 != 0,
            src: (op >> 1) & 1,
            id: sel & 3,
            proto: (sel >> 2) % 3,
        };
        let mut more = op & 0x04 != 0;
        let offset_units: u16 = if op & 0x08 != 0 {
            b.u16() & 0x1fff
        } else {
            u16::from(b.u8())
        };
        if offset_units == 0 {
            // Offset 0 without "more fragments" is not a fragment at all.
            more = true;
        }
        let len_byte = usize::from(b.u8());
        let len = if op & 0x10 != 0 { len_byte * 8 } else { len_byte };
        let payload: Vec<u8> = if sel & 0x80 != 0 {
            // A cheap long payload: a pattern seeded by one byte.
            let seed = b.u8();
            (0..len).map(|i| seed.wrapping_add((i * 7) as u8)).collect()
        } else {
            b.take(len).to_vec()
        };
        let offset = usize::from(offset_units) * 8;
        let Some(frame) = build_fragment(link, key, more, offset_units, &payload) else {
            continue;
        };
        let pkt = RawPacket {
            ts_us: ts,
            linktype: link,
            data: &frame,
            orig_len: frame.len() as u32,
        };
        let result = dec.decode(&pkt);
        if fuzz_util::verbose() {
            eprintln!(
                "fragment {key:?} offset {offset} len {} more {more}: {:?}",
                payload.len(),
                result.as_ref().map(|d| (d.meta.transport, d.payload.len()))
            );
        }
        match result {
            Err(Skip::FragmentDropped) => {
                shadows.remove(&key);
            }
            Err(
                Skip::UnknownLinkType | Skip::MalformedLink | Skip::NotIp | Skip::MalformedIp,
            ) => {
                panic!("a well-formed fragment was not read as IP: {result:?}");
            }
            other => {
                // Pending, or complete (decoded or not: the transport header may be garbage).
                let s = shadows.entry(key).or_insert_with(|| Shadow {
                    first_ts: ts,
                    bytes: Vec::new(),
                    total: None,
                });
                let end = offset + payload.len();
                if s.bytes.len() < end {
                    s.bytes.resize(end, None);
                }
                for (i, byte) in payload.iter().enumerate() {
                    s.bytes[offset + i] = Some(*byte);
                }
                if !more {
                    s.total = Some(end);
                }
                if matches!(other, Err(Skip::FragmentPending)) {
                    continue;
                }
                let s = shadows.remove(&key).expect("just inserted");
                let total = s
                    .total
                    .expect("a datagram completed before its last fragment was sent");
                let holes: Vec<usize> = (0..total).filter(|i| s.bytes[*i].is_none()).collect();
                if !holes.is_empty() && fuzz_util::allow_known() {
                    // KNOWN (reported): completeness is judged by the sum of fragment lengths, so
                    // fragments beyond the end make up for a hole (src/decode/defrag.rs, add).
                    continue;
                }
                assert!(
                    holes.is_empty(),
                    "datagram {key:?} declared complete (total {total} bytes) but {} of its \
                     bytes were never sent, first at offset {}; decode result {other:?}",
                    holes.len(),
                    holes[0]
                );
                if let Ok(d) = other
                    && matches!(d.meta.transport, Transport::Tcp { .. })
                {
                    let sent: Vec<u8> = s.bytes[total - d.payload.len()..total]
                        .iter()
                        .map(|b| b.unwrap())
                        .collect();
                    assert_eq!(d.payload, &sent[..], "rebuilt TCP payload differs");
                }
            }
        }
    }
    dec.expire(i64::MAX);
}

/// A well-formed IPv4 or IPv6 fragment wrapped in `link`'s header; `None` when it cannot be
/// encoded (too long for the IP length field).
fn build_fragment(
    link: LinkType,
    key: Key,
    more: bool,
    offset_units: u16,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let proto = PROTOS[usize::from(key.proto)];
    let mut ip = Vec::with_capacity(payload.len() + 48);
    if !key.v6 {
        let mut h = Ipv4Header::new(
            u16::try_from(payload.len()).ok()?,
            64,
            proto,
            [192, 0, 2, 1 + key.src],
            [198, 51, 100, 7],
        )
        .ok()?;
        h.identification = u16::from(key.id) + 1000;
        h.more_fragments = more;
        h.fragment_offset = IpFragOffset::try_new(offset_units).ok()?;
        h.header_checksum = h.calc_header_checksum();
        h.write(&mut ip).ok()?;
    } else {
        let mut src = [0u8; 16];
        src[0] = 0x20;
        src[1] = 0x01;
        src[15] = 1 + key.src;
        let mut dst = [0u8; 16];
        dst[0] = 0x20;
        dst[1] = 0x01;
        dst[15] = 0x99;
        let frag = Ipv6FragmentHeader::new(
            proto,
            IpFragOffset::try_new(offset_units).ok()?,
            more,
            u32::from(key.id) + 77_000,
        );
        let h = Ipv6Header {
            traffic_class: 0,
            flow_label: Default::default(),
            payload_length: u16::try_from(payload.len() + 8).ok()?,
            next_header: IpNumber::IPV6_FRAGMENTATION_HEADER,
            hop_limit: 64,
            source: src,
            destination: dst,
        };
        h.write(&mut ip).ok()?;
        frag.write(&mut ip).ok()?;
    }
    ip.extend_from_slice(payload);
    let ethertype: [u8; 2] = if key.v6 { [0x86, 0xdd] } else { [0x08, 0x00] };
    let mut frame = Vec::with_capacity(ip.len() + 20);
    match link {
        LinkType::ETHERNET => {
            frame.extend_from_slice(&[0u8; 12]);
            // One 802.1Q tag on every other datagram id, to cross the VLAN path too.
            if key.id & 1 == 1 {
                frame.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
            }
            frame.extend_from_slice(&ethertype);
        }
        LinkType::LINUX_SLL => {
            frame.extend_from_slice(&[0u8; 14]);
            frame.extend_from_slice(&ethertype);
        }
        LinkType::LINUX_SLL2 => {
            frame.extend_from_slice(&ethertype);
            frame.extend_from_slice(&[0u8; 18]);
        }
        LinkType::NULL => {
            let family: u32 = if key.v6 { 30 } else { 2 };
            frame.extend_from_slice(&family.to_le_bytes());
        }
        LinkType::LOOP => {
            let family: u32 = if key.v6 { 24 } else { 2 };
            frame.extend_from_slice(&family.to_be_bytes());
        }
        _ => {}
    }
    frame.extend_from_slice(&ip);
    Some(frame)
}
