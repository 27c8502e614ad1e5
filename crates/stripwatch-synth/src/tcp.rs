//! A TCP conversation builder: turns "the server sends these bytes" into correctly numbered,
//! checksummed IPv4/IPv6 + TCP frames, with the irregularities reassembly must survive.
//!
//! The builder keeps, per side, the next sequence number, the IP ID and the TTL, and lays out
//! each frame with a link header from [`Link`]. A [`SendPlan`] says how one payload is put on
//! the wire: split into N segments, reordered, retransmitted, overwritten by a conflicting
//! retransmission, partly lost from the capture, or carried in IPv4 fragments.

use std::net::IpAddr;

use super::link::Link;
use super::prng::Prng;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// Delay before a retransmission (a typical minimum RTO), in microseconds.
const RTO_US: u64 = 200_000;

/// Which end of the conversation sends a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The initiator (the SMTP client).
    Client,
    /// The responder (the SMTP server).
    Server,
}

impl Side {
    /// The other end.
    pub fn peer(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }

    fn index(self) -> usize {
        match self {
            Side::Client => 0,
            Side::Server => 1,
        }
    }
}

/// One captured frame, link header included, with the side that sent it.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Capture time in microseconds since the Unix epoch.
    pub ts_us: u64,
    /// Who sent it (lets a scenario keep one direction only).
    pub side: Side,
    /// The frame as written to the capture.
    pub data: Vec<u8>,
}

/// One end of a conversation: address, port, link address and the TTL its packets carry at
/// the capture point.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    /// IPv4 or IPv6 address (both ends must use the same version).
    pub ip: IpAddr,
    /// TCP port.
    pub port: u16,
    /// Link-layer address used by Ethernet and Linux cooked framing.
    pub mac: [u8; 6],
    /// IPv4 TTL / IPv6 hop limit as seen by the capture.
    pub ttl: u8,
}

/// How fast the clock runs between frames, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Gap between frames sent back to back by the same side.
    pub burst_us: (u64, u64),
    /// Gap when the other side speaks (half a round trip plus thinking time).
    pub turn_us: (u64, u64),
}

impl Timing {
    /// Leisurely timing for small scenario captures: a few milliseconds per packet.
    pub const SCENARIO: Timing = Timing {
        burst_us: (1_000, 3_000),
        turn_us: (6_000, 20_000),
    };
}

/// Everything fixed for one TCP connection.
#[derive(Debug, Clone, Copy)]
pub struct ConvConfig {
    /// The initiator.
    pub client: Endpoint,
    /// The responder.
    pub server: Endpoint,
    /// Framing for every frame.
    pub link: Link,
    /// Maximum segment size announced and used for splitting.
    pub mss: usize,
    /// Initial sequence numbers (client, server); random when `None`.
    pub isn: Option<(u32, u32)>,
    /// Clock behaviour.
    pub timing: Timing,
}

/// How one payload is put on the wire. The default is "split at the MSS, in order, once".
#[derive(Debug, Clone, Default)]
pub struct SendPlan {
    /// Split into exactly this many near-equal segments (at least as many as the MSS needs).
    pub parts: Option<usize>,
    /// Emit the segments in this order (indices into the split).
    pub order: Option<Vec<usize>>,
    /// Send these segments again, with identical bytes, after the others (retransmissions).
    pub retransmit: Vec<usize>,
    /// After the segments, send a retransmission covering `bytes.len()` bytes from this
    /// offset of the payload with these (possibly different) bytes: an overlap conflict.
    pub overlay: Option<(usize, Vec<u8>)>,
    /// Segments the capture never sees (the peer did receive them).
    pub drop: Vec<usize>,
    /// Carry segment `.0` in IPv4 fragments of at most `.1` bytes of IP payload each.
    pub fragment: Option<(usize, usize)>,
    /// Send the segments with this IP TTL and these IP IDs, as an on-path injector would
    /// (its own hop distance, its own counter); the sender's counter does not move.
    pub forged: Option<(u8, u16)>,
}

impl SendPlan {
    /// Split into `n` segments.
    pub fn parts(n: usize) -> SendPlan {
        SendPlan {
            parts: Some(n),
            ..SendPlan::default()
        }
    }
}

/// A TCP connection under construction; frames accumulate in order of capture.
pub struct Conversation {
    forging: Option<(u8, u16)>,
    cfg: ConvConfig,
    next_seq: [u32; 2],
    ip_id: [u16; 2],
    flow_label: [u32; 2],
    clock_us: u64,
    last_side: Option<Side>,
    prng: Prng,
    frames: Vec<Frame>,
}

impl Conversation {
    /// Starts a connection whose first frame is captured at `start_us`; `prng` decides ISNs,
    /// IP IDs and jitter.
    pub fn new(cfg: ConvConfig, start_us: u64, mut prng: Prng) -> Conversation {
        let (isn_c, isn_s) = cfg
            .isn
            .unwrap_or_else(|| (prng.next_u32(), prng.next_u32()));
        let ip_id = [prng.next_u32() as u16, prng.next_u32() as u16];
        let flow_label = [prng.next_u32() & 0xf_ffff, prng.next_u32() & 0xf_ffff];
        Conversation {
            forging: None,
            cfg,
            next_seq: [isn_c, isn_s],
            ip_id,
            flow_label,
            clock_us: start_us,
            last_side: None,
            prng,
            frames: Vec::new(),
        }
    }

    /// The capture time of the last frame (or the start time before any).
    pub fn clock_us(&self) -> u64 {
        self.clock_us
    }

    /// Lets time pass without traffic (thinking, queueing, a retry timer).
    pub fn wait(&mut self, us: u64) {
        self.clock_us += us;
    }

    /// The next sequence number `side` will use.
    pub fn next_seq(&self, side: Side) -> u32 {
        self.next_seq[side.index()]
    }

    /// How many frames have been produced so far (a mark for cutting captures mid-stream).
    pub fn frame_count(&self) -> usize {
        self.frames.len()
    }

    /// The frames produced so far.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// Hands over the frames.
    pub fn into_frames(self) -> Vec<Frame> {
        self.frames
    }

    /// The three-way handshake (SYN, SYN/ACK, ACK) with MSS and SACK-permitted options.
    pub fn handshake(&mut self) {
        let mss = (self.cfg.mss.min(usize::from(u16::MAX)) as u16).to_be_bytes();
        let opts = [2, 4, mss[0], mss[1], 1, 1, 4, 2];
        let (c, s) = (Side::Client, Side::Server);
        self.first_packet_or_turn(c);
        self.emit(c, self.seq(c), None, SYN, &[], &opts, None);
        self.bump(c, 1);
        self.advance(s, false);
        self.emit(
            s,
            self.seq(s),
            Some(self.seq(c)),
            SYN | ACK,
            &[],
            &opts,
            None,
        );
        self.bump(s, 1);
        self.advance(c, false);
        self.emit(c, self.seq(c), Some(self.seq(s)), ACK, &[], &[], None);
    }

    /// Sends `payload` from `side`, split at the MSS, in order.
    pub fn send(&mut self, side: Side, payload: &[u8]) {
        self.send_with(side, payload, &SendPlan::default());
    }

    /// Sends `payload` from `side` as `plan` says. Sequence numbers always describe the
    /// payload as the sender meant it, whatever order the capture shows.
    pub fn send_with(&mut self, side: Side, payload: &[u8], plan: &SendPlan) {
        if payload.is_empty() {
            return;
        }
        let pieces = self.cut(payload.len(), plan.parts);
        let base = self.seq(side);
        let peer = side.peer();
        let ack = self.seq(peer);
        let natural = plan.order.is_none() && plan.drop.is_empty();
        let order: Vec<usize> = plan
            .order
            .clone()
            .unwrap_or_else(|| (0..pieces.len()).collect());
        self.first_packet_or_turn(side);
        for (k, &i) in order.iter().enumerate() {
            let (start, end) = pieces[i];
            if k > 0 {
                self.advance(side, true);
            }
            if !plan.drop.contains(&i) {
                let flags = if end == payload.len() { ACK | PSH } else { ACK };
                let frag = plan.fragment.filter(|f| f.0 == i).map(|f| f.1);
                if let Some((ttl, id)) = plan.forged {
                    self.forging = Some((ttl, id.wrapping_add(k as u16).wrapping_sub(1)));
                }
                self.emit(
                    side,
                    base.wrapping_add(start as u32),
                    Some(ack),
                    flags,
                    &payload[start..end],
                    &[],
                    frag,
                );
                self.forging = None;
            }
            // The receiver acknowledges every second full segment (delayed ACK).
            if natural && k % 2 == 1 && k + 1 < order.len() {
                self.advance(peer, true);
                self.emit(
                    peer,
                    self.seq(peer),
                    Some(base.wrapping_add(end as u32)),
                    ACK,
                    &[],
                    &[],
                    None,
                );
                self.last_side = Some(side);
            }
        }
        for &i in &plan.retransmit {
            let (start, end) = pieces[i];
            self.wait(RTO_US);
            let flags = if end == payload.len() { ACK | PSH } else { ACK };
            self.emit(
                side,
                base.wrapping_add(start as u32),
                Some(ack),
                flags,
                &payload[start..end],
                &[],
                None,
            );
        }
        if let Some((offset, bytes)) = &plan.overlay {
            self.wait(RTO_US);
            self.emit(
                side,
                base.wrapping_add(*offset as u32),
                Some(ack),
                ACK | PSH,
                bytes,
                &[],
                None,
            );
        }
        self.bump(side, payload.len() as u32);
    }

    /// An orderly close started by `side`: FIN, the peer's FIN, the last ACK.
    pub fn close(&mut self, side: Side) {
        let peer = side.peer();
        self.advance(side, false);
        self.emit(
            side,
            self.seq(side),
            Some(self.seq(peer)),
            FIN | ACK,
            &[],
            &[],
            None,
        );
        self.bump(side, 1);
        self.advance(peer, false);
        self.emit(
            peer,
            self.seq(peer),
            Some(self.seq(side)),
            FIN | ACK,
            &[],
            &[],
            None,
        );
        self.bump(peer, 1);
        self.advance(side, false);
        self.emit(
            side,
            self.seq(side),
            Some(self.seq(peer)),
            ACK,
            &[],
            &[],
            None,
        );
    }

    /// An abort: RST/ACK from `side`.
    pub fn reset(&mut self, side: Side) {
        self.advance(side, false);
        self.emit(
            side,
            self.seq(side),
            Some(self.seq(side.peer())),
            RST | ACK,
            &[],
            &[],
            None,
        );
    }

    fn seq(&self, side: Side) -> u32 {
        self.next_seq[side.index()]
    }

    fn bump(&mut self, side: Side, n: u32) {
        let s = &mut self.next_seq[side.index()];
        *s = s.wrapping_add(n);
    }

    /// Segment boundaries for a payload of `len` bytes.
    fn cut(&self, len: usize, parts: Option<usize>) -> Vec<(usize, usize)> {
        let mss = self.cfg.mss.max(1);
        let n = parts.unwrap_or(1).max(len.div_ceil(mss)).clamp(1, len);
        (0..n).map(|i| (len * i / n, len * (i + 1) / n)).collect()
    }

    /// The very first frame keeps the start time; later ones advance the clock.
    fn first_packet_or_turn(&mut self, side: Side) {
        if self.last_side.is_some() || !self.frames.is_empty() {
            self.advance(side, false);
        } else {
            self.last_side = Some(side);
        }
    }

    /// Moves the clock forward before `side` sends: a short gap inside a burst, a longer
    /// one when the turn changes.
    fn advance(&mut self, side: Side, burst: bool) {
        let t = self.cfg.timing;
        let (lo, hi) = if burst || self.last_side == Some(side) {
            t.burst_us
        } else {
            t.turn_us
        };
        self.clock_us += self.prng.range(lo, hi);
        self.last_side = Some(side);
    }

    /// Builds one TCP segment and appends its frame(s).
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        side: Side,
        seq: u32,
        ack: Option<u32>,
        flags: u8,
        payload: &[u8],
        opts: &[u8],
        fragment: Option<usize>,
    ) {
        let (src, dst) = match side {
            Side::Client => (self.cfg.client, self.cfg.server),
            Side::Server => (self.cfg.server, self.cfg.client),
        };
        let i = side.index();
        let (src, id) = match self.forging.as_mut() {
            Some((ttl, id)) => {
                *id = id.wrapping_add(1);
                (Endpoint { ttl: *ttl, ..src }, *id)
            }
            None => {
                let id = self.ip_id[i];
                self.ip_id[i] = id.wrapping_add(1);
                (src, id)
            }
        };
        let tcp_len = 20 + opts.len().div_ceil(4) * 4 + payload.len();

        if let (Some(max), IpAddr::V4(s), IpAddr::V4(d)) = (fragment, src.ip, dst.ip) {
            let mut seg = Vec::with_capacity(tcp_len);
            push_tcp_header(&mut seg, src.port, dst.port, seq, ack, flags, opts);
            seg.extend_from_slice(payload);
            let sum = tcp_checksum(src.ip, dst.ip, &seg);
            seg[16..18].copy_from_slice(&sum.to_be_bytes());
            let step = (max / 8).max(1) * 8;
            let mut off = 0;
            while off < seg.len() {
                let end = (off + step).min(seg.len());
                let more = end < seg.len();
                let mut frame = self.link_header(side, false, 20 + end - off);
                let ip = ipv4_header(
                    s.octets(),
                    d.octets(),
                    id,
                    src.ttl,
                    end - off,
                    false,
                    more,
                    off,
                );
                frame.extend_from_slice(&ip);
                frame.extend_from_slice(&seg[off..end]);
                self.frames.push(Frame {
                    ts_us: self.clock_us,
                    side,
                    data: frame,
                });
                off = end;
                if more {
                    self.clock_us += 1;
                }
            }
            return;
        }

        // The usual case: one allocation, the payload copied once, checksummed in place.
        let mut frame;
        match (src.ip, dst.ip) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                frame = self.link_header(side, false, 20 + tcp_len);
                frame.extend_from_slice(&ipv4_header(
                    s.octets(),
                    d.octets(),
                    id,
                    src.ttl,
                    tcp_len,
                    true,
                    false,
                    0,
                ));
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                frame = self.link_header(side, true, 40 + tcp_len);
                frame.extend_from_slice(&ipv6_header(
                    s.octets(),
                    d.octets(),
                    self.flow_label[i],
                    src.ttl,
                    tcp_len,
                ));
            }
            _ => panic!("client and server must use the same IP version"),
        }
        let t = frame.len();
        push_tcp_header(&mut frame, src.port, dst.port, seq, ack, flags, opts);
        frame.extend_from_slice(payload);
        let sum = tcp_checksum(src.ip, dst.ip, &frame[t..]);
        frame[t + 16..t + 18].copy_from_slice(&sum.to_be_bytes());
        self.frames.push(Frame {
            ts_us: self.clock_us,
            side,
            data: frame,
        });
    }

    fn link_header(&self, side: Side, ipv6: bool, ip_len: usize) -> Vec<u8> {
        let link = self.cfg.link;
        let mut frame = Vec::with_capacity(link.header_len() + ip_len);
        link.push_header(
            &mut frame,
            ipv6,
            side == Side::Client,
            self.cfg.client.mac,
            self.cfg.server.mac,
        );
        frame
    }
}

/// Appends a TCP header (checksum zero, to be filled in) with `opts` padded to 32 bits.
fn push_tcp_header(
    buf: &mut Vec<u8>,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: Option<u32>,
    flags: u8,
    opts: &[u8],
) {
    let opt_len = opts.len().div_ceil(4) * 4;
    buf.extend_from_slice(&sport.to_be_bytes());
    buf.extend_from_slice(&dport.to_be_bytes());
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend_from_slice(&ack.unwrap_or(0).to_be_bytes());
    buf.push((((20 + opt_len) / 4) as u8) << 4);
    buf.push(flags);
    buf.extend_from_slice(&64_240u16.to_be_bytes()); // window
    buf.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    buf.extend_from_slice(opts);
    buf.resize(buf.len() + (opt_len - opts.len()), 1); // NOP padding
}

/// An IPv4 header (no options) with its checksum. `frag_offset` is in bytes.
#[allow(clippy::too_many_arguments)]
fn ipv4_header(
    src: [u8; 4],
    dst: [u8; 4],
    id: u16,
    ttl: u8,
    payload_len: usize,
    dont_fragment: bool,
    more_fragments: bool,
    frag_offset: usize,
) -> [u8; 20] {
    let mut flags_frag = (frag_offset / 8) as u16;
    if dont_fragment {
        flags_frag |= 0x4000;
    }
    if more_fragments {
        flags_frag |= 0x2000;
    }
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&((20 + payload_len) as u16).to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[6..8].copy_from_slice(&flags_frag.to_be_bytes());
    h[8] = ttl;
    h[9] = 6;
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&dst);
    let sum = fold(sum_words(&h, 0));
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h
}

/// An IPv6 header carrying TCP directly.
fn ipv6_header(
    src: [u8; 16],
    dst: [u8; 16],
    flow_label: u32,
    hop_limit: u8,
    payload_len: usize,
) -> [u8; 40] {
    let mut h = [0u8; 40];
    h[0..4].copy_from_slice(&((6u32 << 28) | (flow_label & 0xf_ffff)).to_be_bytes());
    h[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    h[6] = 6;
    h[7] = hop_limit;
    h[8..24].copy_from_slice(&src);
    h[24..40].copy_from_slice(&dst);
    h
}

/// The TCP checksum of `segment` (header with a zero checksum field, plus payload).
pub fn tcp_checksum(src: IpAddr, dst: IpAddr, segment: &[u8]) -> u16 {
    let mut acc = 6u64 + segment.len() as u64;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum_words(&s.octets(), acc);
            acc = sum_words(&d.octets(), acc);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            acc = sum_words(&s.octets(), acc);
            acc = sum_words(&d.octets(), acc);
        }
        _ => panic!("mixed IP versions"),
    }
    fold(sum_words(segment, acc))
}

/// Adds `data` as big-endian 16-bit words (odd byte padded) to a wide one's-complement sum.
/// Summing 32-bit words and folding later gives the same result as summing 16-bit words.
fn sum_words(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a wide sum to 16 bits and complements it.
fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{CLIENT_MAC, SERVER_MAC};
    use etherparse::{Ipv4HeaderSlice, TcpSlice};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn cfg(link: Link, v6: bool, isn: Option<(u32, u32)>) -> ConvConfig {
        let (c, s): (IpAddr, IpAddr) = if v6 {
            (
                Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10).into(),
                Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x25).into(),
            )
        } else {
            (
                Ipv4Addr::new(192, 0, 2, 10).into(),
                Ipv4Addr::new(198, 51, 100, 25).into(),
            )
        };
        ConvConfig {
            client: Endpoint {
                ip: c,
                port: 40_001,
                mac: CLIENT_MAC,
                ttl: 64,
            },
            server: Endpoint {
                ip: s,
                port: 25,
                mac: SERVER_MAC,
                ttl: 52,
            },
            link,
            mss: 1460,
            isn,
            timing: Timing::SCENARIO,
        }
    }

    /// Parses an Ethernet/IPv4 frame: (ip id, fragment offset bytes, more fragments, ip payload).
    fn ipv4(frame: &[u8]) -> (u16, usize, bool, &[u8]) {
        let ip = &frame[14..];
        let h = Ipv4HeaderSlice::from_slice(ip).unwrap();
        assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
        (
            h.identification(),
            usize::from(h.fragments_offset().value()) * 8,
            h.more_fragments(),
            &ip[20..usize::from(h.total_len())],
        )
    }

    #[test]
    fn synth_tcp_checksums_match_etherparse() {
        let mut conv = Conversation::new(cfg(Link::Ethernet, false, None), 0, Prng::new(3));
        conv.handshake();
        conv.send(Side::Server, b"220 mx.example.net ESMTP\r\n");
        conv.send(Side::Client, b"EHLO x\r\n");
        conv.close(Side::Client);
        for f in conv.frames() {
            let (_, _, _, seg) = ipv4(&f.data);
            let tcp = TcpSlice::from_slice(seg).unwrap();
            let (s, d) = (
                f.data[14 + 12..14 + 16].try_into().unwrap(),
                f.data[14 + 16..14 + 20].try_into().unwrap(),
            );
            assert_eq!(tcp.calc_checksum_ipv4(s, d).unwrap(), tcp.checksum());
        }

        let mut conv = Conversation::new(cfg(Link::RawIp, true, None), 0, Prng::new(3));
        conv.handshake();
        conv.send(Side::Server, b"220 odd length\r\n!");
        for f in conv.frames() {
            let s: [u8; 16] = f.data[8..24].try_into().unwrap();
            let d: [u8; 16] = f.data[24..40].try_into().unwrap();
            let tcp = TcpSlice::from_slice(&f.data[40..]).unwrap();
            assert_eq!(tcp.calc_checksum_ipv6(s, d).unwrap(), tcp.checksum());
        }
    }

    #[test]
    fn synth_tcp_sequence_numbers_wrap_and_stay_continuous() {
        let isn_s = u32::MAX - 10;
        let mut conv = Conversation::new(
            cfg(Link::Ethernet, false, Some((7, isn_s))),
            0,
            Prng::new(1),
        );
        conv.handshake();
        let payload: Vec<u8> = (0..40u8).collect();
        conv.send_with(Side::Server, &payload, &SendPlan::parts(4));
        let mut expect = isn_s.wrapping_add(1);
        let mut got = Vec::new();
        for f in conv.frames().iter().filter(|f| f.side == Side::Server) {
            let (_, _, _, seg) = ipv4(&f.data);
            let tcp = TcpSlice::from_slice(seg).unwrap();
            if tcp.payload().is_empty() {
                continue;
            }
            assert_eq!(tcp.sequence_number(), expect);
            expect = expect.wrapping_add(tcp.payload().len() as u32);
            got.extend_from_slice(tcp.payload());
        }
        assert_eq!(got, payload);
        assert!(expect < isn_s, "sequence space wrapped");
        assert_eq!(conv.next_seq(Side::Server), expect);
    }

    #[test]
    fn synth_tcp_mss_splitting_reordering_and_overlay() {
        let mut conv = Conversation::new(
            cfg(Link::Ethernet, false, Some((100, 5000))),
            0,
            Prng::new(1),
        );
        let payload = vec![b'a'; 3000];
        conv.send(Side::Client, &payload);
        let lens: Vec<usize> = conv
            .frames()
            .iter()
            .filter(|f| f.side == Side::Client)
            .map(|f| ipv4(&f.data).3.len() - 20)
            .collect();
        assert_eq!(lens, vec![1000, 1000, 1000]);

        let mut conv = Conversation::new(
            cfg(Link::Ethernet, false, Some((100, 5000))),
            0,
            Prng::new(1),
        );
        let plan = SendPlan {
            parts: Some(3),
            order: Some(vec![2, 0, 1]),
            retransmit: vec![0],
            overlay: Some((4, b"XY".to_vec())),
            ..SendPlan::default()
        };
        conv.send_with(Side::Client, b"abcdefghi", &plan);
        let segs: Vec<(u32, Vec<u8>)> = conv
            .frames()
            .iter()
            .map(|f| {
                let t = TcpSlice::from_slice(ipv4(&f.data).3).unwrap();
                (t.sequence_number(), t.payload().to_vec())
            })
            .collect();
        assert_eq!(
            segs,
            vec![
                (106, b"ghi".to_vec()),
                (100, b"abc".to_vec()),
                (103, b"def".to_vec()),
                (100, b"abc".to_vec()),
                (104, b"XY".to_vec())
            ]
        );
        let ts: Vec<u64> = conv.frames().iter().map(|f| f.ts_us).collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn synth_tcp_ipv4_fragments_reassemble_to_the_segment() {
        let mut conv = Conversation::new(cfg(Link::Ethernet, false, Some((1, 2))), 0, Prng::new(1));
        let payload: Vec<u8> = (0..200u8).collect();
        conv.send_with(
            Side::Server,
            &payload,
            &SendPlan {
                fragment: Some((0, 64)),
                ..SendPlan::default()
            },
        );
        let frags: Vec<_> = conv.frames().iter().map(|f| ipv4(&f.data)).collect();
        assert_eq!(frags.len(), 4); // 220 bytes of TCP in 64-byte pieces
        let mut whole = Vec::new();
        for (k, (id, off, more, data)) in frags.iter().enumerate() {
            assert_eq!(*id, frags[0].0);
            assert_eq!(*off, whole.len());
            assert_eq!(*more, k + 1 < frags.len());
            whole.extend_from_slice(data);
        }
        let tcp = TcpSlice::from_slice(&whole).unwrap();
        assert_eq!(tcp.payload(), &payload[..]);
        let (s, d) = ([198, 51, 100, 25], [192, 0, 2, 10]);
        assert_eq!(tcp.calc_checksum_ipv4(s, d).unwrap(), tcp.checksum());
    }
}
