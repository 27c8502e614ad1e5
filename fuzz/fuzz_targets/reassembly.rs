//! TCP reassembly of one direction (`stripwatch::flow::reassembly::Reassembler`).
//!
//! Input layout: byte 0 is the configuration (bit 0: limits from the next 5 bytes instead of the
//! defaults; bit 1: "consistent" content, where every payload byte is a function of its sequence
//! number, so that retransmissions always agree), then a base sequence number (u32 LE), then a
//! script of operations, each starting with an opcode byte:
//!
//! - `op % 8` in 0..=3: a segment. Sequence number = base ± (u16, or u32 when bit 7), SYN when
//!   bit 3 and bits 0-1 are 0, FIN when bit 4; payload length from a u8 (or a u16 when bit 5);
//!   payload bytes from the input (or generated from the sequence number in consistent mode).
//! - 4, 5: `peer_ack` of base ± (u16 or u32).
//! - 6: `set_keep_recent(bit 4)`.
//! - 7: `flush`.
//!
//! The sink checks that events form one stream: every Data/Gap starts where the previous one
//! ended (the first at offset 0), Data is never empty, gaps are never empty, conflicts are
//! well-formed, and no more bytes come out than went in. In consistent mode there must be no
//! conflict at all and every delivered byte must be the byte of its sequence number.

#![no_main]

use fuzz_util::Bytes;
use libfuzzer_sys::fuzz_target;
use stripwatch::flow::reassembly::{Reassembler, ReassemblyLimits, StreamEvent};

/// The byte a consistent sender sends at sequence number `seq`.
fn content(seq: u32) -> u8 {
    (seq.wrapping_mul(2_654_435_761) >> 24) as u8
}

struct Checker {
    consistent: bool,
    /// Where the next Data or Gap must start.
    next: u64,
    delivered: u64,
    gap_bytes: u64,
    fed: u64,
    /// Sequence number of stream offset 0, once the stream started.
    start_seq: Option<u32>,
}

impl Checker {
    fn event(&mut self, e: StreamEvent<'_>) {
        match e {
            StreamEvent::Data { offset, bytes } => {
                assert_eq!(offset, self.next, "data does not continue the stream");
                assert!(!bytes.is_empty(), "empty data event");
                if self.consistent {
                    let start = self.start_seq.expect("data before the stream started");
                    for (i, b) in bytes.iter().enumerate() {
                        let seq = start.wrapping_add((offset + i as u64) as u32);
                        assert_eq!(*b, content(seq), "wrong byte at stream offset {}", offset + i as u64);
                    }
                }
                self.next += bytes.len() as u64;
                self.delivered += bytes.len() as u64;
                assert!(
                    self.delivered <= self.fed,
                    "delivered {} bytes but only {} were fed",
                    self.delivered,
                    self.fed
                );
            }
            StreamEvent::Gap { offset, len } => {
                assert_eq!(offset, self.next, "gap does not continue the stream");
                assert!(len > 0, "empty gap");
                // Offsets come from sequence numbers at most 2^31 apart.
                assert!(len <= 1 << 32, "absurd gap length {len}");
                self.next += len;
                self.gap_bytes += len;
            }
            StreamEvent::Conflict(c) => {
                assert!(!self.consistent, "conflict although every copy agreed: {c:?}");
                assert!(c.differing_bytes > 0, "conflict without differing bytes: {c:?}");
                assert!(c.original_len > 0, "{c:?}");
                assert!(c.differing_bytes <= c.original_len, "{c:?}");
                assert!(c.original_offset >= c.new_offset, "{c:?}");
                assert!(
                    c.original_offset + c.original_len <= c.new_offset + c.new_len,
                    "conflict range outside the new segment: {c:?}"
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes::new(data);
    let cfg = b.u8();
    let limits = if cfg & 1 != 0 {
        ReassemblyLimits {
            max_pending_bytes: usize::from(b.u16()) * 4,
            max_pending_segments: usize::from(b.u8()),
            recent_window: usize::from(b.u16()) % 16_385,
        }
    } else {
        ReassemblyLimits::default()
    };
    let consistent = cfg & 2 != 0;
    let base = b.u32();
    let mut r = Reassembler::new(limits);
    let mut ck = Checker {
        consistent,
        next: 0,
        delivered: 0,
        gap_bytes: 0,
        fed: 0,
        start_seq: None,
    };
    let rel = |b: &mut Bytes<'_>, op: u8| -> u32 {
        let d = if op & 0x80 != 0 {
            b.u32()
        } else {
            u32::from(b.u16())
        };
        if op & 0x40 != 0 {
            base.wrapping_sub(d)
        } else {
            base.wrapping_add(d)
        }
    };
    let mut payload = Vec::new();
    while !b.is_empty() {
        let op = b.u8();
        match op % 8 {
            0..=3 => {
                let seq = rel(&mut b, op);
                let syn = op & 0x0b == 0x08;
                let fin = op & 0x10 != 0;
                let len = if op & 0x20 != 0 {
                    usize::from(b.u16()) % 8192
                } else {
                    usize::from(b.u8())
                };
                payload.clear();
                let data_seq = if syn { seq.wrapping_add(1) } else { seq };
                if consistent {
                    payload.extend((0..len).map(|i| content(data_seq.wrapping_add(i as u32))));
                } else {
                    payload.extend_from_slice(b.take(len));
                }
                // Mirror how the reassembler fixes stream offset 0.
                if ck.start_seq.is_none() && (syn || !payload.is_empty()) {
                    ck.start_seq = Some(data_seq);
                }
                ck.fed += payload.len() as u64;
                r.segment(seq, syn, fin, &payload, &mut |e| ck.event(e));
            }
            4 | 5 => {
                let ack = rel(&mut b, op);
                r.peer_ack(ack, &mut |e| ck.event(e));
            }
            6 => r.set_keep_recent(op & 0x10 != 0),
            _ => r.flush(&mut |e| ck.event(e)),
        }
        assert_eq!(r.offset(), ck.next, "offset() disagrees with the events");
        assert_eq!(r.stats.bytes, ck.delivered);
        assert_eq!(r.stats.gap_bytes, ck.gap_bytes);
        assert_eq!(r.started(), ck.start_seq.is_some());
    }
    r.flush(&mut |e| ck.event(e));
    assert_eq!(r.offset(), ck.next);
});
